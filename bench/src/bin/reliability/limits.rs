//! Case 11, limits: issue #25's concurrency limits across crashes. A release host on a SQLite
//! store runs a worker with `max_running = 12` and `per_key_running = 3` and takes a stream of
//! one-second tasks over eight concurrency keys (and some with none), faster than the limits
//! let them run, so that a backlog is held; it is killed with SIGKILL twice mid-stream, each
//! time left down for two seconds and started again on the same store. Every task that got a
//! `202` must reach a recorded end, exited 0; and no moment may have seen more than 12 of the
//! worker's tasks running, nor more than 3 of one key, judged from every ended task's last
//! attempt (its start and end as the store recorded them). The attempts lost with the host ran
//! before its crash, and a crash ends them all: after a restart the limits count again from
//! the tasks recovered.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::api;
use crate::kills::{self, Stream, Streamed};
use crate::{Args, DRAIN_PATIENCE, Verdict, guest, progress};

/// Submissions per second: more than the 12 a second the limits let run.
const RATE: f64 = 30.0;
const CONNECTIONS: usize = 4;
const MAX_RUNNING: usize = 12;
const PER_KEY: usize = 3;
const KEYS: usize = 8;
/// How long the host stays down at each kill.
const DOWN: Duration = Duration::from_secs(2);

pub fn run(args: &Args, dir: &Path) -> anyhow::Result<Verdict> {
    let phase = Duration::from_secs_f64(args.scaled(3.0, 1.5));
    let module = guest("default").display().to_string();
    let registry = format!(
        "[workers.default]\nmodule = {module:?}\n\n\
         [workers.limited]\nmodule = {module:?}\nmax_running = {MAX_RUNNING}\n\
         per_key_running = {PER_KEY}\n"
    );
    progress(
        "limits",
        &format!(
            "{RATE}/s one-second tasks over {KEYS} keys, at most {MAX_RUNNING} running and \
             {PER_KEY} of a key; two SIGKILLs, {DOWN:?} down each"
        ),
    );
    let Streamed { runs, mut host, .. } = Stream {
        registry,
        rate: RATE,
        connections: CONNECTIONS,
        phase,
        down: DOWN,
        body: Arc::new(|index| {
            // One in nine without a key.
            let key = if index % 9 == 0 {
                String::new()
            } else {
                format!(",\"concurrency_key\":\"k{}\"", index % KEYS as u64)
            };
            (
                0,
                format!("{{\"name\":\"limited\",\"duration\":1,\"worker\":\"limited\"{key}}}"),
            )
        }),
    }
    .run(args, dir)?;
    let begun = Instant::now();
    host.wait_idle(DRAIN_PATIENCE)?;

    let mut verdict = Verdict::default();
    let accepted = kills::accepted(&runs, &mut verdict);
    let records = api::list_tasks(host.addr, accepted.len() + 1_000)?;
    let by_pid: std::collections::HashMap<&str, &api::Record> =
        records.iter().map(|r| (r.pid.as_str(), r)).collect();
    let at = |text: &Option<String>| {
        text.as_deref()
            .and_then(|text| humantime::parse_rfc3339(text).ok())
    };
    let (mut lost, mut wrong) = (Vec::new(), Vec::new());
    let mut runs_at: Vec<(SystemTime, SystemTime, String)> = Vec::new();
    let mut rerun = 0;
    for pid in &accepted {
        let Some(record) = by_pid.get(pid) else {
            lost.push(*pid);
            continue;
        };
        if !record.exited_0() {
            wrong.push(record.summary());
            continue;
        }
        if record.attempts.iter().any(|a| a.outcome == "host_lost") {
            rerun += 1;
        }
        if let (Some(start), Some(end)) = (at(&record.started_at), at(&record.ended_at)) {
            runs_at.push((
                start,
                end,
                record.concurrency_key.clone().unwrap_or_default(),
            ));
        }
    }
    verdict.none(&lost, "accepted tasks lost");
    verdict.none(&wrong, "tasks did not exit 0");
    let most = most_at_once(&runs_at, |_| true);
    verdict.check(most <= MAX_RUNNING, || {
        format!("{most} ran at once (at most {MAX_RUNNING})")
    });
    let most_of_a_key = (0..KEYS)
        .map(|k| {
            let key = format!("k{k}");
            most_at_once(&runs_at, |other| other == key)
        })
        .max()
        .unwrap_or(0);
    verdict.check(most_of_a_key <= PER_KEY, || {
        format!("{most_of_a_key} of one key ran at once (at most {PER_KEY})")
    });
    verdict.check(host.up(), || {
        format!("the restarted host went down: {}", host.log_tail())
    });
    verdict.figure(format!(
        "{} tasks accepted over three runs of {:.0} s and two SIGKILLs: {} ended exited 0 \
         ({rerun} run again after a crash), {} lost; at most {most} ran at once and \
         {most_of_a_key} of one key; drained {:.1} s after the last run",
        accepted.len(),
        phase.as_secs_f64(),
        accepted.len() - lost.len() - wrong.len(),
        lost.len(),
        begun.elapsed().as_secs_f64()
    ));
    Ok(verdict)
}

/// The most of `runs` (those `keep` keeps) that ran at one moment.
fn most_at_once(runs: &[(SystemTime, SystemTime, String)], keep: impl Fn(&str) -> bool) -> usize {
    runs.iter()
        .filter(|(_, _, key)| keep(key))
        .map(|(start, _, _)| {
            runs.iter()
                .filter(|(s, e, key)| keep(key) && s <= start && start < e)
                .count()
        })
        .max()
        .unwrap_or(0)
}
