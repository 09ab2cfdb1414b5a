//! How a task's fields are written in a SQL store's columns, the same in SQLite and
//! PostgreSQL: times as nanoseconds since the Unix epoch, statuses, outcomes and log sources by
//! name, the attempts before the current one as a JSON array, and log lines written together
//! as one value ([`lines_blob`]).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::StoreError;
use crate::model::{
    Attempt, Carried, CarriedKind, CheckpointPolicy, LogLine, LogSource, Outcome, Pid, Resumed,
    Status, StoredCheckpoint, Taken, TaskEnd, Waiting,
};

pub(super) fn nanos(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |since| {
        i64::try_from(since.as_nanos()).unwrap_or(i64::MAX)
    })
}

pub(super) fn time(nanos: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(u64::try_from(nanos).unwrap_or(0))
}

pub(super) fn unavailable(error: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(error.to_string())
}

pub(super) fn attempt_json(attempt: u32, end: &TaskEnd, at: SystemTime) -> String {
    attempt_value(
        attempt,
        end.status,
        end.outcome,
        end.exit_code,
        &end.error,
        at,
    )
    .to_string()
}

/// The attempts before the current one, as the `attempts` column holds them.
pub(super) fn attempts_json(attempts: &[Attempt]) -> String {
    let entries = attempts.iter().map(|attempt| {
        attempt_value(
            attempt.attempt,
            attempt.status,
            attempt.outcome,
            attempt.exit_code,
            &attempt.error,
            attempt.ended_at,
        )
    });
    serde_json::Value::Array(entries.collect()).to_string()
}

fn attempt_value(
    attempt: u32,
    status: Status,
    outcome: Outcome,
    exit_code: Option<i32>,
    error: &Option<String>,
    at: SystemTime,
) -> serde_json::Value {
    serde_json::json!({
        "attempt": attempt,
        "status": status.as_str(),
        "outcome": outcome.as_str(),
        "exit_code": exit_code,
        "error": error,
        "ended_at": nanos(at),
    })
}

/// Log sources by their code in [`lines_blob`]: a code is never reused.
const SOURCES: [LogSource; 7] = [
    LogSource::Trace,
    LogSource::Debug,
    LogSource::Info,
    LogSource::Warn,
    LogSource::Error,
    LogSource::Stdout,
    LogSource::Stderr,
];

/// Bytes of a line in [`lines_blob`] beside its message: its time, source and length.
const LINE_HEADER: usize = 8 + 1 + 4;

/// Log lines of one task written together, as one value: per line, its time (nanoseconds
/// since the Unix epoch, `i64` little-endian), its source's code in [`SOURCES`] (one byte),
/// its message's length (`u32` little-endian) and its message (UTF-8). One row per write
/// rather than one per line is most of what makes a chatty task cheap to store.
pub(super) fn lines_blob<'a>(lines: impl IntoIterator<Item = &'a LogLine>) -> Vec<u8> {
    let mut blob = Vec::new();
    append_lines(&mut blob, lines);
    blob
}

/// Appends `lines` to `blob`, in [`lines_blob`]'s form: the lines of two values one after the
/// other are one value.
pub(super) fn append_lines<'a>(blob: &mut Vec<u8>, lines: impl IntoIterator<Item = &'a LogLine>) {
    for line in lines {
        let message = line.message.as_bytes();
        let len = u32::try_from(message.len()).unwrap_or(u32::MAX);
        let code = SOURCES
            .iter()
            .position(|source| *source == line.source)
            .unwrap_or(2);
        blob.reserve(LINE_HEADER + message.len());
        blob.extend_from_slice(&nanos(line.at).to_le_bytes());
        blob.push(code as u8);
        blob.extend_from_slice(&len.to_le_bytes());
        blob.extend_from_slice(&message[..len as usize]);
    }
}

/// The lines of a [`lines_blob`], appended to `into`; a value cut short ends at its last whole
/// line, and a message that is not UTF-8 is read lossily.
pub(super) fn lines_of(mut blob: &[u8], into: &mut Vec<LogLine>) {
    while blob.len() >= LINE_HEADER {
        let (header, rest) = blob.split_at(LINE_HEADER);
        let at = i64::from_le_bytes(header[..8].try_into().unwrap_or_default());
        let source = SOURCES
            .get(usize::from(header[8]))
            .copied()
            .unwrap_or(LogSource::Info);
        let len = u32::from_le_bytes(header[9..].try_into().unwrap_or_default()) as usize;
        let Some(message) = rest.get(..len) else {
            return;
        };
        into.push(LogLine {
            at: time(at),
            source,
            message: String::from_utf8_lossy(message).into_owned(),
        });
        blob = &rest[len..];
    }
}

pub(super) fn source_of(name: &str) -> LogSource {
    match name {
        "trace" => LogSource::Trace,
        "debug" => LogSource::Debug,
        "warn" => LogSource::Warn,
        "error" => LogSource::Error,
        "stdout" => LogSource::Stdout,
        "stderr" => LogSource::Stderr,
        _ => LogSource::Info,
    }
}

pub(super) fn status_of(name: &str) -> Status {
    Status::parse(name).unwrap_or(Status::Spawned)
}

pub(super) fn attempts_of(json: &str) -> Vec<Attempt> {
    let Ok(serde_json::Value::Array(entries)) = serde_json::from_str(json) else {
        return Vec::new();
    };
    entries
        .iter()
        .filter_map(|entry| {
            Some(Attempt {
                attempt: u32::try_from(entry["attempt"].as_u64()?).ok()?,
                status: status_of(entry["status"].as_str()?),
                outcome: Outcome::parse(entry["outcome"].as_str()?)?,
                exit_code: entry["exit_code"]
                    .as_i64()
                    .and_then(|code| i32::try_from(code).ok()),
                error: entry["error"].as_str().map(str::to_owned),
                ended_at: time(entry["ended_at"].as_i64()?),
            })
        })
        .collect()
}

/// A checkpoint's row without its image, as the `meta` column holds it: JSON, times as
/// nanoseconds since the Unix epoch.
pub(super) fn checkpoint_meta(row: &StoredCheckpoint) -> String {
    let taken = row.taken.as_ref().map(|taken| {
        let (kind, ticket) = match taken.waiting {
            Waiting::Sleep { .. } => ("sleep", None),
            Waiting::Receive { .. } => ("receive", None),
            Waiting::Await { ticket, .. } => ("await", Some(ticket)),
        };
        serde_json::json!({
            "step": taken.step,
            "at": nanos(taken.at),
            "fuel": taken.fuel,
            "waiting": kind,
            "ticket": ticket,
            "until": nanos(taken.waiting.until()),
            "bytes": taken.bytes,
            "handed_over": taken.handed_over,
            "name": taken.name,
            "trap_exits": taken.trap_exits,
            "links": taken.links.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "monitors": taken.monitors.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "mailbox": taken.mailbox.iter().map(|entry| serde_json::json!({
                "kind": entry.kind.as_str(),
                "from": entry.from.map(|from| from.to_string()),
                "body": entry.body,
            })).collect::<Vec<_>>(),
        })
    });
    serde_json::json!({
        "policy": row.policy.map(|policy| policy.to_string()),
        "attempt": row.attempt,
        "taken": taken,
        "refused": row.refused,
        "resumes": row.resumes,
        "crash_resumes": row.crash_resumes,
        "resumed": row.resumed.map(|resumed| serde_json::json!({
            "from_step": resumed.from_step,
            "at": nanos(resumed.at),
            "lost_ns": u64::try_from(resumed.lost.as_nanos()).unwrap_or(u64::MAX),
        })),
    })
    .to_string()
}

/// Pids written as an array of their text; none when absent (a row written before them),
/// `None` if one does not read.
fn pids_of(value: &serde_json::Value) -> Option<Vec<Pid>> {
    match value {
        serde_json::Value::Array(items) => items
            .iter()
            .map(|item| item.as_str()?.parse().ok())
            .collect(),
        _ => Some(Vec::new()),
    }
}

/// A mailbox written as an array of `{kind, from, body}`; empty when absent (a row written
/// before mailboxes were carried). An entry that does not read (a kind a newer version wrote)
/// is left out rather than the whole checkpoint.
fn mailbox_of(value: &serde_json::Value) -> Vec<Carried> {
    let serde_json::Value::Array(entries) = value else {
        return Vec::new();
    };
    let read: Vec<Carried> = entries
        .iter()
        .filter_map(|entry| {
            Some(Carried {
                kind: CarriedKind::parse(entry["kind"].as_str()?)?,
                from: match &entry["from"] {
                    serde_json::Value::Null => None,
                    from => Some(from.as_str()?.parse().ok()?),
                },
                body: entry["body"].as_str()?.to_owned(),
            })
        })
        .collect();
    if read.len() < entries.len() {
        tracing::warn!(
            left_out = entries.len() - read.len(),
            "entries of a checkpoint's mailbox that do not read are left out"
        );
    }
    read
}

/// A checkpoint's row from its `meta` column and its image; `None` if `meta` does not read as
/// [`checkpoint_meta`] writes it.
pub(super) fn checkpoint_of(
    pid: Pid,
    meta: &str,
    image: Option<Vec<u8>>,
) -> Option<StoredCheckpoint> {
    let meta: serde_json::Value = serde_json::from_str(meta).ok()?;
    let u64_of = |value: &serde_json::Value| value.as_u64();
    let u32_of = |value: &serde_json::Value| value.as_u64().and_then(|n| u32::try_from(n).ok());
    let time_of = |value: &serde_json::Value| value.as_i64().map(time);
    let policy = match meta.get("policy") {
        Some(serde_json::Value::String(policy)) => Some(CheckpointPolicy::parse(policy).ok()?),
        _ => None,
    };
    let taken = match meta.get("taken") {
        Some(taken @ serde_json::Value::Object(_)) => {
            let until = time_of(&taken["until"])?;
            let waiting = match taken["waiting"].as_str()? {
                "sleep" => Waiting::Sleep { until },
                "receive" => Waiting::Receive { until },
                "await" => Waiting::Await {
                    ticket: u64_of(&taken["ticket"])?,
                    until,
                },
                _ => return None,
            };
            Some(Taken {
                step: u32_of(&taken["step"])?,
                at: time_of(&taken["at"])?,
                fuel: u64_of(&taken["fuel"])?,
                waiting,
                image: image.map(Arc::from),
                bytes: u64_of(&taken["bytes"])?,
                handed_over: taken["handed_over"].as_bool().unwrap_or(false),
                name: taken["name"].as_str().map(str::to_owned),
                trap_exits: taken["trap_exits"].as_bool().unwrap_or(false),
                links: pids_of(&taken["links"])?,
                monitors: pids_of(&taken["monitors"])?,
                mailbox: mailbox_of(&taken["mailbox"]),
            })
        }
        _ => None,
    };
    let resumed = match meta.get("resumed") {
        Some(resumed @ serde_json::Value::Object(_)) => Some(Resumed {
            from_step: u32_of(&resumed["from_step"])?,
            at: time_of(&resumed["at"])?,
            lost: Duration::from_nanos(u64_of(&resumed["lost_ns"])?),
        }),
        _ => None,
    };
    Some(StoredCheckpoint {
        pid,
        policy,
        attempt: u32_of(&meta["attempt"])?,
        taken,
        refused: meta["refused"].as_str().map(str::to_owned),
        resumes: u32_of(&meta["resumes"])?,
        crash_resumes: u32_of(&meta["crash_resumes"]).unwrap_or(0),
        resumed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_through_one_value() {
        let at = UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789);
        let lines: Vec<LogLine> = SOURCES
            .iter()
            .enumerate()
            .map(|(index, source)| LogLine {
                at: at + Duration::from_millis(index as u64),
                source: *source,
                message: format!("line {index}: é\u{1F600}").repeat(index),
            })
            .collect();
        let blob = lines_blob(&lines);
        let mut read = Vec::new();
        lines_of(&blob, &mut read);
        assert_eq!(read.len(), lines.len());
        for (read, line) in read.iter().zip(&lines) {
            assert_eq!(
                (read.at, read.source, &read.message),
                (line.at, line.source, &line.message)
            );
        }
        // A value cut short keeps its whole lines.
        let mut cut = Vec::new();
        lines_of(&blob[..blob.len() - 1], &mut cut);
        assert_eq!(cut.len(), lines.len() - 1);
        lines_of(&[], &mut cut);
        assert_eq!(cut.len(), lines.len() - 1);
    }

    #[test]
    fn attempts_read_back_as_written() {
        let at = UNIX_EPOCH + Duration::from_secs(5);
        let attempts = vec![Attempt {
            attempt: 1,
            status: Status::Failed,
            outcome: Outcome::Trap,
            exit_code: None,
            error: Some("boom".into()),
            ended_at: at,
        }];
        let read = attempts_of(&attempts_json(&attempts));
        // Every field, as `Debug` shows them.
        assert_eq!(format!("{read:?}"), format!("{attempts:?}"));
    }

    #[test]
    fn a_checkpoint_row_reads_back_as_written() {
        use crate::model::{CheckpointPolicy, Resumed, StoredCheckpoint, Taken, Waiting};
        let at = time(nanos(SystemTime::now()));
        let row = StoredCheckpoint {
            pid: Pid::new(3, 9),
            policy: Some(CheckpointPolicy::Every(Duration::from_secs(30))),
            attempt: 2,
            taken: Some(Taken {
                step: 4,
                at,
                fuel: 77,
                waiting: Waiting::Await {
                    ticket: 5,
                    until: at,
                },
                image: Some(Arc::from(&b"image"[..])),
                bytes: 5,
                handed_over: true,
                name: Some("cache".into()),
                trap_exits: true,
                links: vec![Pid::new(3, 1)],
                monitors: vec![Pid::new(3, 2), Pid::new(4, 7)],
                mailbox: vec![
                    Carried {
                        kind: CarriedKind::Message,
                        from: None,
                        body: "{\"n\": \"é\"}".into(),
                    },
                    Carried {
                        kind: CarriedKind::Down,
                        from: Some(Pid::new(3, 2)),
                        body: "{\"status\":\"exited\"}".into(),
                    },
                ],
            }),
            refused: Some("why".into()),
            resumes: 1,
            crash_resumes: 1,
            resumed: Some(Resumed {
                from_step: 3,
                at,
                lost: Duration::from_millis(1500),
            }),
        };
        let meta = checkpoint_meta(&row);
        assert_eq!(
            checkpoint_of(row.pid, &meta, Some(b"image".to_vec())),
            Some(row.clone())
        );
        let mut bare = StoredCheckpoint::policy(row.pid, CheckpointPolicy::EveryStep, 1);
        bare.policy = None;
        assert_eq!(
            checkpoint_of(bare.pid, &checkpoint_meta(&bare), None),
            Some(bare)
        );
        assert_eq!(checkpoint_of(row.pid, "{}", None), None);
        assert_eq!(checkpoint_of(row.pid, "not json", None), None);
    }
}
