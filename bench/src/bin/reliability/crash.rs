//! Case 4, crash: host/tests/durability.rs's crash test under load. A release host on a SQLite
//! store takes a steady stream of submissions (durations 0–3 s) and is killed with SIGKILL
//! mid-stream, then started again on the same store while the stream goes on. Every task that
//! got a 202, before the kill or after, must reach a recorded end, exited 0, exactly once:
//! none lost, none listed twice, none that ran to its end run again.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use http_spawn_bench::loadgen::{self, Plan, Run};

use crate::api;
use crate::host::Host;
use crate::{Args, DRAIN_PATIENCE, Verdict, guest, progress};

/// Submissions per second, before the kill and after the restart.
const RATE: f64 = 1000.0;
const CONNECTIONS: usize = 32;

pub fn run(args: &Args, dir: &Path) -> anyhow::Result<Verdict> {
    let before_kill = Duration::from_secs_f64(args.scaled(8.0, 3.0));
    let after_restart = Duration::from_secs_f64(args.scaled(5.0, 2.0));
    let store = dir.join("tasks.db");
    let host_args: Vec<String> = [
        "--module",
        &guest("default").display().to_string(),
        "--store",
        &format!("sqlite:{}", store.display()),
        // Every accepted task is read back; none is forgotten before.
        "--max-history",
        "1000000",
    ]
    .map(String::from)
    .to_vec();
    let runtime = crate::runtime()?;
    let plan = |addr, duration, stop| Plan {
        headers: None,
        addr,
        connections: CONNECTIONS,
        duration,
        rate: Some(RATE),
        count: None,
        keep_pids: true,
        stop,
        target: None,
        body: Arc::new(|index| {
            (
                0,
                format!("{{\"name\":\"crash\",\"duration\":{}}}", index % 4),
            )
        }),
    };

    let host = Host::start(dir, &host_args, args.host_args.as_deref())?;
    progress(
        "crash",
        &format!("{RATE}/s of 0-3 s tasks; SIGKILL after {before_kill:?}"),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let load = runtime.spawn(loadgen::run_plan(plan(
        host.addr,
        before_kill * 2,
        Some(Arc::clone(&stop)),
    )));
    std::thread::sleep(before_kill);
    host.crash()?;
    stop.store(true, Ordering::Relaxed);
    let before: Run = runtime.block_on(load)?;
    let begun = Instant::now();
    let mut host = Host::start(dir, &host_args, args.host_args.as_deref())?;
    let restart_secs = begun.elapsed().as_secs_f64();
    progress(
        "crash",
        &format!(
            "{} accepted before the kill; restarted in {restart_secs:.1} s; {after_restart:?} more load",
            before.count(202)
        ),
    );
    let after: Run = runtime.block_on(loadgen::run_plan(plan(host.addr, after_restart, None)));
    host.wait_idle(DRAIN_PATIENCE)?;

    let mut verdict = Verdict::default();
    let unanswered = before.samples.iter().filter(|s| s.status == 0).count();
    let others = before
        .samples
        .iter()
        .chain(&after.samples)
        .filter(|s| !matches!(s.status, 0 | 202))
        .count();
    verdict.check(others == 0, || format!("{others} answers other than 202"));
    verdict.check(
        after.connect_errors == 0 && after.samples.iter().all(|s| s.status == 202),
        || "a submission to the restarted host was not accepted".into(),
    );
    let accepted: Vec<&str> = before
        .samples
        .iter()
        .chain(&after.samples)
        .filter_map(|s| s.pid.as_deref())
        .collect();
    let records = api::list_tasks(host.addr, accepted.len() + unanswered + 10_000)?;
    let listed: HashSet<&str> = records.iter().map(|r| r.pid.as_str()).collect();
    verdict.check(listed.len() == records.len(), || {
        format!(
            "{} pids listed more than once",
            records.len() - listed.len()
        )
    });
    let by_pid: HashMap<&str, &api::Record> = records.iter().map(|r| (r.pid.as_str(), r)).collect();
    let (mut lost, mut wrong, mut reran) = (Vec::new(), Vec::new(), 0);
    for pid in &accepted {
        let Some(record) = by_pid.get(pid) else {
            lost.push(*pid);
            continue;
        };
        // Every attempt before the last lost its host; only the last ran to an end. A task
        // run again after its end would show a second attempt behind an `exit`.
        let (last, earlier) = record
            .attempts
            .split_last()
            .map_or((None, &[][..]), |(last, earlier)| (Some(last), earlier));
        let once = earlier.iter().all(|a| a.outcome == "host_lost")
            && last.is_none_or(|a| a.outcome == "exit")
            && record.attempt as usize == record.attempts.len().max(1);
        if record.exited_0() && once {
            reran += usize::from(!earlier.is_empty());
        } else {
            wrong.push(record.summary());
        }
    }
    verdict.check(lost.is_empty(), || {
        format!(
            "{} accepted tasks lost, e.g. {}",
            lost.len(),
            lost[..lost.len().min(3)].join(", ")
        )
    });
    verdict.check(wrong.is_empty(), || {
        format!(
            "{} tasks did not exit 0 exactly once, e.g. {}",
            wrong.len(),
            wrong[..wrong.len().min(3)].join(" / ")
        )
    });
    verdict.check(reran > 0, || {
        "no task was running at the kill: the crash proved nothing".into()
    });
    verdict.check(host.up(), || {
        format!("the restarted host went down: {}", host.log_tail())
    });
    verdict.figure(format!(
        "SIGKILL after {:.0} s of {RATE}/s (0-3 s tasks): {} accepted before, {unanswered} in \
         flight unanswered; restarted on the store in {restart_secs:.1} s, {} accepted after",
        before_kill.as_secs_f64(),
        before.count(202),
        after.count(202)
    ));
    verdict.figure(format!(
        "{} of {} accepted ended exited 0 exactly once, {} lost, {reran} ran again after host_lost",
        accepted.len() - lost.len() - wrong.len(),
        accepted.len(),
        lost.len()
    ));
    Ok(verdict)
}
