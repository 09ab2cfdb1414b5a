//! The journal's form: what one commit of the writer appends, as one value.
//!
//! A commit's task changes are written as one row of the `journal` table, appended at its end,
//! instead of as rows of `tasks` and `log_parts` spread over their B-trees: the task rows are
//! written later, many at a time and in pid order ([`super::unwritten`]). The value holds, in
//! the order they came, the tasks the commit accepted, each as its whole row (an [`Image`]),
//! and the changes of the others' lives, each as its event with the lines it added. Reading
//! the journal back (after a crash) takes each task's row (from the journal's image of it, or
//! from `tasks`) and folds its later events in, with [`fold`], as the writer did.
//!
//! The value is `FORM` (one byte), then the entries, each a kind (one byte) and its body. An
//! image's body: the pid; the record's fields; what the task needs to run again
//! ([`TaskSpec`]); lines in [`lines_blob`] form. An event's: the pid and the event's fields, a
//! `Logs` event's lines in [`lines_blob`] form. Integers are little-endian; strings are a
//! `u32` length and UTF-8; an optional value is a byte, 0 or 1, and the value; statuses,
//! outcomes and the loss policy are written by name, and the attempts before the current one
//! as the `attempts` column holds them.
//!
//! A value of form 1, which a host before this one wrote (each entry an image, with no kind),
//! is still read: after a crash its journal is read back by the host that follows.
//!
//! [`lines_blob`]: super::super::columns::lines_blob

use std::ops::Range;
use std::time::SystemTime;

use super::super::columns::{append_lines, attempts_json, attempts_of, nanos, status_of, time};
use crate::model::{
    DEFAULT_PRIORITY, JsonText, OnHostLoss, Outcome, Pid, TaskEnd, TaskEvent, TaskRecord, TaskSpec,
};

/// The form written; a value of another form than these two is refused when read.
const FORM: u8 = 2;

/// The form before, read only: every entry an image, with no kind.
const FORM_IMAGES: u8 = 1;

/// The kinds of entry.
const IMAGE: u8 = 0;
const STARTED: u8 = 1;
const PROGRESS: u8 = 2;
const LOGS: u8 = 3;
const RESTARTING: u8 = 4;
const ENDED: u8 = 5;
/// An end that carries a result: `ENDED`'s body, then the result's text. Its own kind, so a
/// journal written before results existed reads as it did.
const RETURNED: u8 = 6;
/// An image of a task with more than the image's fields (issue #25): when it may start, its
/// priority, the task it retries, the schedule and tick that created it and its concurrency
/// key, then `IMAGE`'s body. Written only for a task that has
/// one of them, so a journal written before them reads as it did.
const IMAGE_SCHEDULED: u8 = 7;

/// A task's row as the store holds it: its record and what it needs to run again.
#[derive(Debug, Clone)]
pub(super) struct Image {
    pub record: TaskRecord,
    pub spec: TaskSpec,
}

/// One entry read back.
pub(super) enum Entry {
    /// A task's whole row, and lines (in `lines_blob` form) its commit added.
    Image { image: Box<Image>, lines: Vec<u8> },
    /// A change of a task's life: its event (a `Logs` event without its lines) and the lines
    /// it added, in `lines_blob` form.
    Event {
        pid: Pid,
        event: TaskEvent,
        lines: Vec<u8>,
    },
}

/// Starts a journal value.
pub(super) fn begin() -> Vec<u8> {
    vec![FORM]
}

/// Folds `event` into `image` with [`TaskRecord::apply`], with what the row holds beside the
/// record: the lines it added (`added`, in `lines_blob` form; a `Logs` event's own lines are
/// not read), appended to `lines`, and when a restart waiting out its backoff is due. Whether
/// it changed the task: an event the record ignores (the task has ended, or it is of another
/// attempt) changes nothing.
pub(super) fn fold(
    image: &mut Image,
    lines: &mut Vec<u8>,
    event: &TaskEvent,
    added: &[u8],
) -> bool {
    let Image { record, spec } = image;
    if !record.apply(event) {
        return false;
    }
    match event {
        TaskEvent::Logs { .. } => lines.extend_from_slice(added),
        TaskEvent::Restarting { ready_at, .. } => spec.ready_at = Some(*ready_at),
        TaskEvent::Started { .. } | TaskEvent::Ended { .. } => spec.ready_at = None,
        TaskEvent::Progress { .. } => {}
    }
    true
}

/// Appends `event` of task `pid`; where the lines of a `Logs` event are in `out`, in
/// `lines_blob` form (an empty range for any other event).
pub(super) fn put_event(out: &mut Vec<u8>, pid: Pid, event: &TaskEvent) -> Range<usize> {
    let kind = match event {
        TaskEvent::Started { .. } => STARTED,
        TaskEvent::Progress { .. } => PROGRESS,
        TaskEvent::Logs { .. } => LOGS,
        TaskEvent::Restarting { .. } => RESTARTING,
        TaskEvent::Ended { end, .. } if end.result.is_some() => RETURNED,
        TaskEvent::Ended { .. } => ENDED,
    };
    out.push(kind);
    put_pid(out, pid);
    match event {
        &TaskEvent::Started { at, steps, fuel } => {
            put_time(out, at);
            out.extend_from_slice(&steps.to_le_bytes());
            out.extend_from_slice(&fuel.to_le_bytes());
        }
        &TaskEvent::Progress { step, steps, fuel } => {
            out.extend_from_slice(&step.to_le_bytes());
            out.extend_from_slice(&steps.to_le_bytes());
            out.extend_from_slice(&fuel.to_le_bytes());
        }
        TaskEvent::Logs {
            lines,
            dropped_bytes,
        } => {
            out.extend_from_slice(&dropped_bytes.to_le_bytes());
            let at = out.len();
            out.extend_from_slice(&[0; 4]);
            append_lines(out, lines);
            let len = u32::try_from(out.len() - at - 4).unwrap_or(u32::MAX);
            out[at..at + 4].copy_from_slice(&len.to_le_bytes());
            return at + 4..out.len();
        }
        TaskEvent::Restarting {
            at,
            fuel,
            end,
            next_attempt,
            ready_at,
        } => {
            put_time(out, *at);
            out.extend_from_slice(&fuel.to_le_bytes());
            put_end(out, end);
            out.extend_from_slice(&next_attempt.to_le_bytes());
            put_time(out, *ready_at);
        }
        TaskEvent::Ended {
            at,
            fuel,
            end,
            attempt,
        } => {
            put_time(out, *at);
            out.extend_from_slice(&fuel.to_le_bytes());
            put_end(out, end);
            out.extend_from_slice(&attempt.to_le_bytes());
            if let Some(result) = &end.result {
                put_str(out, result.as_str());
            }
        }
    }
    out.len()..out.len()
}

fn put_end(out: &mut Vec<u8>, end: &TaskEnd) {
    put_str(out, end.status.as_str());
    put_str(out, end.outcome.as_str());
    put_opt(out, end.exit_code, |out, code| {
        out.extend_from_slice(&code.to_le_bytes());
    });
    put_opt(out, end.error.as_deref(), put_str);
}

fn put_pid(out: &mut Vec<u8>, pid: Pid) {
    out.extend_from_slice(&pid.boot().to_le_bytes());
    out.extend_from_slice(&pid.seq().to_le_bytes());
}

/// Appends `image` with the `lines` (in `lines_blob` form) its commit added: a test's journal.
#[cfg(test)]
pub(super) fn put(out: &mut Vec<u8>, image: &Image, lines: &[u8]) {
    put_accepted(out, &image.record, &image.spec, lines);
}

/// Appends the image of a task as `record` and `spec` hold it, with `lines`.
pub(super) fn put_accepted(out: &mut Vec<u8>, record: &TaskRecord, spec: &TaskSpec, lines: &[u8]) {
    if record.run_at.is_none()
        && record.retry_of.is_none()
        && record.schedule.is_none()
        && record.concurrency_key.is_none()
        && spec.priority == DEFAULT_PRIORITY
    {
        out.push(IMAGE);
    } else {
        out.push(IMAGE_SCHEDULED);
        put_opt(out, record.run_at, put_time);
        out.push(spec.priority);
        put_opt(out, record.retry_of, put_pid);
        put_opt(out, record.schedule.as_deref(), put_str);
        put_opt(out, record.schedule_tick, put_time);
        put_opt(out, record.concurrency_key.as_deref(), put_str);
    }
    put_image(out, record, spec, lines);
}

/// An image's body, as form 1 wrote each entry.
fn put_image(out: &mut Vec<u8>, record: &TaskRecord, spec: &TaskSpec, lines: &[u8]) {
    put_pid(out, record.pid);
    put_opt(out, record.parent, put_pid);
    put_str(out, &record.name);
    put_str(out, &record.worker);
    put_str(out, &record.version);
    put_str(out, record.status.as_str());
    out.extend_from_slice(&record.duration.to_le_bytes());
    out.extend_from_slice(&record.step.to_le_bytes());
    out.extend_from_slice(&record.steps.to_le_bytes());
    put_opt(out, record.exit_code, |out, code| {
        out.extend_from_slice(&code.to_le_bytes());
    });
    put_opt(out, record.outcome, |out, outcome| {
        put_str(out, outcome.as_str())
    });
    put_opt(out, record.error.as_deref(), put_str);
    put_time(out, record.spawned_at);
    put_opt(out, record.started_at, put_time);
    put_opt(out, record.ended_at, put_time);
    out.extend_from_slice(&record.fuel_consumed.to_le_bytes());
    out.extend_from_slice(&record.attempt.to_le_bytes());
    if record.attempts.is_empty() {
        put_str(out, "");
    } else {
        put_str(out, &attempts_json(&record.attempts));
    }
    out.extend_from_slice(&record.logs_dropped_bytes.to_le_bytes());
    put_str(out, &spec.module_sha256);
    put_opt(out, spec.payload.as_deref(), put_str);
    out.extend_from_slice(&spec.deadline_secs.to_le_bytes());
    out.extend_from_slice(&spec.max_attempts.to_le_bytes());
    put_str(out, spec.on_host_loss.as_str());
    put_opt(out, spec.ready_at, put_time);
    out.extend_from_slice(&u32::try_from(lines.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(lines);
}

fn put_str(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(&u32::try_from(text.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(text.as_bytes());
}

fn put_time(out: &mut Vec<u8>, at: SystemTime) {
    out.extend_from_slice(&nanos(at).to_le_bytes());
}

fn put_opt<T>(out: &mut Vec<u8>, value: Option<T>, put: impl FnOnce(&mut Vec<u8>, T)) {
    match value {
        Some(value) => {
            out.push(1);
            put(out, value);
        }
        None => out.push(0),
    }
}

/// The entries of a journal value, in the order they were written; why not, for a value cut
/// short or not of this form.
pub(super) fn entries(value: &[u8]) -> Result<Vec<Entry>, String> {
    let mut take = Take { rest: value };
    let form = take.array::<1>()?[0];
    if form != FORM && form != FORM_IMAGES {
        return Err("a journal entry of an unknown form".into());
    }
    let mut entries = Vec::new();
    while !take.rest.is_empty() {
        let kind = if form == FORM {
            take.array::<1>()?[0]
        } else {
            IMAGE
        };
        entries.push(take.entry(kind)?);
    }
    Ok(entries)
}

struct Take<'a> {
    rest: &'a [u8],
}

impl<'a> Take<'a> {
    fn bytes(&mut self, len: usize) -> Result<&'a [u8], String> {
        if self.rest.len() < len {
            return Err("a journal entry cut short".into());
        }
        let (taken, rest) = self.rest.split_at(len);
        self.rest = rest;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut array = [0; N];
        array.copy_from_slice(self.bytes(N)?);
        Ok(array)
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn i32(&mut self) -> Result<i32, String> {
        Ok(i32::from_le_bytes(self.array()?))
    }

    fn time(&mut self) -> Result<SystemTime, String> {
        Ok(time(i64::from_le_bytes(self.array()?)))
    }

    fn string(&mut self) -> Result<String, String> {
        let len = self.u32()? as usize;
        let bytes = self.bytes(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| "a journal entry's text is not UTF-8".into())
    }

    fn opt<T>(
        &mut self,
        take: impl FnOnce(&mut Self) -> Result<T, String>,
    ) -> Result<Option<T>, String> {
        match self.array::<1>()? {
            [0] => Ok(None),
            [1] => take(self).map(Some),
            _ => Err("a journal entry's optional value is neither absent nor present".into()),
        }
    }

    fn pid(&mut self) -> Result<Pid, String> {
        let boot = self.u32()?;
        Ok(Pid::new(boot, self.u64()?))
    }

    fn entry(&mut self, kind: u8) -> Result<Entry, String> {
        if kind == IMAGE {
            return self.image();
        }
        if kind == IMAGE_SCHEDULED {
            let run_at = self.opt(Self::time)?;
            let [priority] = self.array::<1>()?;
            let retry_of = self.opt(Self::pid)?;
            let schedule = self.opt(Self::string)?;
            let schedule_tick = self.opt(Self::time)?;
            let concurrency_key = self.opt(Self::string)?;
            let mut entry = self.image()?;
            if let Entry::Image { image, .. } = &mut entry {
                image.record.run_at = run_at;
                image.record.priority = priority;
                image.record.retry_of = retry_of;
                image.record.schedule = schedule;
                image.record.schedule_tick = schedule_tick;
                image.record.concurrency_key = concurrency_key;
                image.spec.priority = priority;
            }
            return Ok(entry);
        }
        let pid = self.pid()?;
        let mut lines = Vec::new();
        let event = match kind {
            STARTED => TaskEvent::Started {
                at: self.time()?,
                steps: self.u32()?,
                fuel: self.u64()?,
            },
            PROGRESS => TaskEvent::Progress {
                step: self.u32()?,
                steps: self.u32()?,
                fuel: self.u64()?,
            },
            LOGS => {
                let dropped_bytes = self.u64()?;
                let len = self.u32()? as usize;
                lines = self.bytes(len)?.to_vec();
                TaskEvent::Logs {
                    lines: Vec::new(),
                    dropped_bytes,
                }
            }
            RESTARTING => TaskEvent::Restarting {
                at: self.time()?,
                fuel: self.u64()?,
                end: self.end()?,
                next_attempt: self.u32()?,
                ready_at: self.time()?,
            },
            ENDED | RETURNED => {
                let (at, fuel, mut end, attempt) =
                    (self.time()?, self.u64()?, self.end()?, self.u32()?);
                if kind == RETURNED {
                    let result = JsonText::parse(self.string()?)
                        .map_err(|_| "a journal entry's result is not JSON")?;
                    end.result = Some(result);
                }
                TaskEvent::Ended {
                    at,
                    fuel,
                    end,
                    attempt,
                }
            }
            _ => return Err("a journal entry of an unknown kind".into()),
        };
        Ok(Entry::Event { pid, event, lines })
    }

    fn outcome(&mut self) -> Result<Outcome, String> {
        let name = self.string()?;
        Outcome::parse(&name).ok_or_else(|| "a journal entry's outcome is unknown".into())
    }

    fn end(&mut self) -> Result<TaskEnd, String> {
        Ok(TaskEnd {
            status: status_of(&self.string()?),
            outcome: self.outcome()?,
            exit_code: self.opt(Self::i32)?,
            error: self.opt(Self::string)?,
            result: None,
        })
    }

    fn image(&mut self) -> Result<Entry, String> {
        let pid = self.pid()?;
        let parent = self.opt(Self::pid)?;
        let name = self.string()?;
        let worker = self.string()?;
        let version = self.string()?;
        let mut record = TaskRecord::spawned(pid, name, 0, worker.into(), version.into());
        record.parent = parent;
        record.status = status_of(&self.string()?);
        record.duration = self.u32()?;
        record.step = self.u32()?;
        record.steps = self.u32()?;
        record.exit_code = self.opt(Self::i32)?;
        record.outcome = self.opt(Self::outcome)?;
        record.error = self.opt(Self::string)?;
        record.spawned_at = self.time()?;
        record.started_at = self.opt(Self::time)?;
        record.ended_at = self.opt(Self::time)?;
        record.fuel_consumed = self.u64()?;
        record.attempt = self.u32()?;
        let attempts = self.string()?;
        if !attempts.is_empty() {
            record.attempts = attempts_of(&attempts);
        }
        record.logs_dropped_bytes = self.u64()?;
        let spec = TaskSpec {
            module_sha256: self.string()?,
            payload: self.opt(Self::string)?,
            deadline_secs: self.u32()?,
            max_attempts: self.u32()?,
            on_host_loss: OnHostLoss::parse(&self.string()?).unwrap_or(OnHostLoss::Restart),
            ready_at: self.opt(Self::time)?,
            priority: DEFAULT_PRIORITY,
        };
        let len = self.u32()? as usize;
        let lines = self.bytes(len)?.to_vec();
        Ok(Entry::Image {
            image: Box::new(Image { record, spec }),
            lines,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::model::{Attempt, LogLine, LogSource, Status};
    use crate::store::columns::{lines_blob, lines_of};

    fn image(seq: u64) -> Image {
        let at = UNIX_EPOCH + Duration::from_nanos(1_700_000_000_000_000_007 + seq);
        let mut record = TaskRecord::spawned(
            Pid::new(3, seq),
            format!("t{seq} é"),
            5,
            "w".into(),
            "v".into(),
        );
        record.spawned_at = at;
        Image {
            record,
            spec: TaskSpec {
                module_sha256: "ab".repeat(32),
                payload: None,
                deadline_secs: 30,
                max_attempts: 1,
                on_host_loss: OnHostLoss::Restart,
                ready_at: None,
                priority: DEFAULT_PRIORITY,
            },
        }
    }

    /// Every field of a record and spec, set and unset, reads back as written; a value cut
    /// anywhere short is refused, never read as something else.
    #[test]
    fn entries_read_back_as_written_and_a_cut_value_is_refused() {
        let plain = image(1);
        let mut full = image(2);
        let at = full.record.spawned_at;
        let record = &mut full.record;
        record.parent = Some(Pid::new(9, u64::MAX));
        record.status = Status::Failed;
        record.step = 4;
        record.steps = 7;
        record.exit_code = Some(-3);
        record.outcome = Some(Outcome::GuestError);
        record.error = Some("boom\nbang".into());
        record.started_at = Some(at + Duration::from_millis(1));
        record.ended_at = Some(at + Duration::from_millis(2));
        record.fuel_consumed = u64::MAX;
        record.attempt = 2;
        record.attempts = vec![Attempt {
            attempt: 1,
            status: Status::Failed,
            outcome: Outcome::Trap,
            exit_code: None,
            error: Some("trap".into()),
            ended_at: at,
        }];
        record.logs_dropped_bytes = 12;
        full.spec.payload = Some("{\"a\":1}".into());
        full.spec.on_host_loss = OnHostLoss::Fail;
        full.spec.ready_at = Some(at + Duration::from_secs(3));
        let line = LogLine {
            at,
            source: LogSource::Stderr,
            message: "a line".into(),
        };
        let lines = lines_blob([&line, &line]);
        let mut value = begin();
        put(&mut value, &plain, &[]);
        put(&mut value, &full, &lines);
        let read = images(entries(&value).expect("read back"));
        assert_eq!(read.len(), 2);
        for (read, (written, lines)) in read.iter().zip([(&plain, &[][..]), (&full, &lines[..])]) {
            assert_eq!(
                format!("{:?}", read.0.record),
                format!("{:?}", written.record)
            );
            assert_eq!(read.0.spec, written.spec);
            assert_eq!(read.1, lines);
        }
        let mut back = Vec::new();
        lines_of(&read[1].1, &mut back);
        assert_eq!(back.len(), 2);
        // The form before, each entry an image with no kind, reads back the same.
        let mut before = vec![FORM_IMAGES];
        put_image(&mut before, &plain.record, &plain.spec, &[]);
        put_image(&mut before, &full.record, &full.spec, &lines);
        let before = images(entries(&before).expect("form 1 read back"));
        assert_eq!(format!("{before:?}"), format!("{read:?}"));
        // A value cut between entries holds those before; cut anywhere else, it is refused.
        let mut first = begin();
        put(&mut first, &plain, &[]);
        for cut in 1..value.len() {
            match entries(&value[..cut]) {
                Ok(read) => assert!(
                    (cut == 1 && read.is_empty()) || (cut == first.len() && read.len() == 1),
                    "cut at {cut}"
                ),
                Err(_) => assert!(cut != 1 && cut != first.len(), "cut at {cut}"),
            }
        }
        assert!(entries(&[]).is_err());
        assert!(entries(&[FORM + 1]).is_err());
        assert!(entries(&[FORM, ENDED + 1]).is_err());
    }

    fn images(entries: Vec<Entry>) -> Vec<(Image, Vec<u8>)> {
        entries
            .into_iter()
            .map(|entry| match entry {
                Entry::Image { image, lines } => (*image, lines),
                Entry::Event { .. } => panic!("an event where an image was written"),
            })
            .collect()
    }

    /// Every kind of event reads back as written, a `Logs` event's lines apart from it; and
    /// folded in order into the image accepted, as reading the journal back does, they give
    /// the task as the writer held it: its end, its attempts, its lines in order.
    #[test]
    fn events_read_back_as_written_and_fold_into_the_task() {
        let accepted = image(5);
        let pid = accepted.record.pid;
        let at = accepted.record.spawned_at;
        let line = |message: &str| LogLine {
            at,
            source: LogSource::Stdout,
            message: message.into(),
        };
        let failed = crate::model::TaskEnd {
            status: Status::Failed,
            outcome: Outcome::Trap,
            exit_code: None,
            error: Some("trap é".into()),
            result: None,
        };
        let events = [
            TaskEvent::Started {
                at: at + Duration::from_millis(1),
                steps: 3,
                fuel: 10,
            },
            TaskEvent::Logs {
                lines: vec![line("one"), line("two")],
                dropped_bytes: 0,
            },
            TaskEvent::Restarting {
                at: at + Duration::from_millis(2),
                fuel: 20,
                end: failed.clone(),
                next_attempt: 2,
                ready_at: at + Duration::from_secs(1),
            },
            TaskEvent::Progress {
                step: 2,
                steps: 3,
                fuel: 30,
            },
            TaskEvent::Logs {
                lines: vec![line("three")],
                dropped_bytes: 7,
            },
            TaskEvent::Ended {
                at: at + Duration::from_millis(3),
                fuel: 40,
                // An end with a result is an entry of its own kind.
                end: crate::model::TaskEnd::returned(
                    0,
                    Some(JsonText::parse(r#"{"é": [1, null]}"#.into()).expect("JSON")),
                ),
                attempt: 2,
            },
            // After the end: changes nothing.
            TaskEvent::Logs {
                lines: vec![line("late")],
                dropped_bytes: 7,
            },
        ];
        let mut value = begin();
        put(&mut value, &accepted, &[]);
        let mut ranges = Vec::new();
        for event in &events {
            ranges.push(put_event(&mut value, pid, event));
        }
        // The writer's own fold, from the events it holds and the lines as journaled.
        let mut held = accepted.clone();
        let mut held_lines = Vec::new();
        let mut changed = Vec::new();
        for (event, range) in events.iter().zip(&ranges) {
            changed.push(fold(
                &mut held,
                &mut held_lines,
                event,
                &value[range.clone()],
            ));
        }
        assert_eq!(changed, [true, true, true, true, true, true, false]);
        // Read back and folded as after a crash.
        let read = entries(&value).expect("read back");
        assert_eq!(read.len(), 1 + events.len());
        let mut read = read.into_iter();
        let Some(Entry::Image {
            image: back,
            lines: mut back_lines,
        }) = read.next()
        else {
            panic!("the acceptance first");
        };
        let mut back = *back;
        for (entry, written) in read.zip(&events) {
            let Entry::Event {
                pid: read_pid,
                event,
                lines,
            } = entry
            else {
                panic!("an image where an event was written");
            };
            assert_eq!(read_pid, pid);
            assert_eq!(
                std::mem::discriminant(&event),
                std::mem::discriminant(written)
            );
            fold(&mut back, &mut back_lines, &event, &lines);
        }
        assert_eq!(format!("{:?}", back.record), format!("{:?}", held.record));
        assert_eq!(
            back.record.result.as_ref().map(JsonText::as_str),
            Some(r#"{"é": [1, null]}"#)
        );
        assert_eq!(back.spec, held.spec);
        assert_eq!(back_lines, held_lines);
        let record = &back.record;
        assert_eq!(record.status, Status::Exited);
        assert_eq!((record.attempt, record.attempts.len()), (2, 2));
        assert_eq!(record.attempts[0].error.as_deref(), Some("trap é"));
        assert_eq!((record.step, record.fuel_consumed), (2, 40));
        assert_eq!(record.logs_dropped_bytes, 7);
        assert_eq!(back.spec.ready_at, None);
        let mut lines = Vec::new();
        lines_of(&back_lines, &mut lines);
        let messages: Vec<&str> = lines.iter().map(|line| line.message.as_str()).collect();
        assert_eq!(messages, ["one", "two", "three"]);
        // Cut anywhere inside the last event, the value is refused.
        let last = ranges[ranges.len() - 2].end;
        for cut in last + 1..value.len() {
            assert!(entries(&value[..cut]).is_err(), "cut at {cut}");
        }
    }
}
