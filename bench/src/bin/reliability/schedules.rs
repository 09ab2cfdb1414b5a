//! Case 10, schedules: issue #25's promises across crashes. A release host on a SQLite store
//! runs two schedules from its registry file (every second with `catch_up = "latest"`, every two
//! seconds with `"none"`) and takes a stream of tasks scheduled 0.5 to 3 s ahead; it is killed
//! with SIGKILL twice mid-stream, each time left down for two seconds and started again on the
//! same store. Every task that got a `202` must reach a recorded end, exited 0, and none may
//! start before its `run_at`; no schedule's tick may make two tasks; of the ticks that passed
//! while the host was down, `none` fires none and `latest` at most one.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::api;
use crate::kills::{self, Stream, Streamed};
use crate::{Args, DRAIN_PATIENCE, Verdict, guest, progress};

/// Submissions per second.
const RATE: f64 = 200.0;
const CONNECTIONS: usize = 8;
/// How long the host stays down at each kill.
const DOWN: Duration = Duration::from_secs(2);
/// The longest `delay` submitted, and a margin.
const LONGEST_DELAY: Duration = Duration::from_millis(3_500);

pub fn run(args: &Args, dir: &Path) -> anyhow::Result<Verdict> {
    let phase = Duration::from_secs_f64(args.scaled(4.0, 2.0));
    let module = guest("default").display().to_string();
    let registry = format!(
        "[workers.default]\nmodule = {module:?}\n\n\
         [schedules.second]\ncron = \"* * * * * *\"\noverlap = \"allow\"\n\
         catch_up = \"latest\"\ntask = {{ name = \"second\", duration = 0 }}\n\n\
         [schedules.pair]\ncron = \"*/2 * * * * *\"\noverlap = \"allow\"\n\
         catch_up = \"none\"\ntask = {{ name = \"pair\", duration = 0 }}\n"
    );
    progress(
        "schedules",
        &format!("{RATE}/s scheduled 0.5-3 s ahead; two SIGKILLs, {DOWN:?} down each"),
    );
    let Streamed {
        runs,
        mut host,
        downtimes,
    } = Stream {
        registry,
        rate: RATE,
        connections: CONNECTIONS,
        phase,
        down: DOWN,
        body: Arc::new(|index| {
            let delay = 0.5 + (index % 26) as f64 * 0.1;
            (
                0,
                format!("{{\"name\":\"later\",\"duration\":0,\"delay\":{delay}}}"),
            )
        }),
    }
    .run(args, dir)?;
    // No more ticks; then every scheduled task's time passes.
    for name in ["second", "pair"] {
        let (status, body) = crate::api::delete(host.addr, &format!("/api/schedules/{name}"))?;
        anyhow::ensure!(status == 204, "DELETE schedule {name}: {status} {body}");
    }
    std::thread::sleep(LONGEST_DELAY);
    let begun = Instant::now();
    host.wait_idle(DRAIN_PATIENCE)?;

    let mut verdict = Verdict::default();
    let accepted = kills::accepted(&runs, &mut verdict);
    let records = api::list_tasks(host.addr, accepted.len() + 100_000)?;
    let by_pid: HashMap<&str, &api::Record> = records.iter().map(|r| (r.pid.as_str(), r)).collect();
    let at = |text: &Option<String>| {
        text.as_deref()
            .and_then(|text| humantime::parse_rfc3339(text).ok())
    };
    let (mut lost, mut wrong, mut early) = (Vec::new(), Vec::new(), Vec::new());
    for pid in &accepted {
        let Some(record) = by_pid.get(pid) else {
            lost.push(*pid);
            continue;
        };
        if !record.exited_0() {
            wrong.push(record.summary());
        }
        if let (Some(started), Some(run_at)) = (at(&record.started_at), at(&record.run_at))
            && started < run_at
        {
            early.push(record.pid.clone());
        }
    }
    verdict.none(&lost, "accepted scheduled tasks lost");
    verdict.none(&wrong, "scheduled tasks did not exit 0");
    verdict.none(&early, "tasks started before their run_at");
    let mut per_schedule = Vec::new();
    for name in ["second", "pair"] {
        let ticks: Vec<SystemTime> = records
            .iter()
            .filter(|r| r.schedule.as_deref() == Some(name))
            .filter_map(|r| at(&r.schedule_tick))
            .collect();
        let distinct: HashSet<SystemTime> = ticks.iter().copied().collect();
        verdict.check(distinct.len() == ticks.len(), || {
            format!(
                "schedule {name}: {} ticks made two tasks",
                ticks.len() - distinct.len()
            )
        });
        let ended = records
            .iter()
            .filter(|r| r.schedule.as_deref() == Some(name))
            .all(api::Record::exited_0);
        verdict.check(ended, || {
            format!("a task of schedule {name} did not exit 0")
        });
        let mut in_downtime = Vec::new();
        for (killed, starting) in &downtimes {
            // A moment after the kill: a tick fired just before it may be recorded late.
            let after = *killed + Duration::from_millis(200);
            in_downtime.push(
                ticks
                    .iter()
                    .filter(|t| **t > after && **t < *starting)
                    .count(),
            );
        }
        let most = if name == "pair" { 0 } else { 1 };
        verdict.check(in_downtime.iter().all(|n| *n <= most), || {
            format!("schedule {name}: ticks of the downtimes fired {in_downtime:?} (at most {most} each)")
        });
        per_schedule.push(format!(
            "{name}: {} ticks, {in_downtime:?} from the downtimes",
            ticks.len()
        ));
    }
    verdict.check(host.up(), || {
        format!("the restarted host went down: {}", host.log_tail())
    });
    verdict.figure(format!(
        "{} scheduled tasks accepted over three runs of {:.0} s and two SIGKILLs: {} ended \
         exited 0 no sooner than their run_at, {} lost; drained {:.1} s after the last was due",
        accepted.len(),
        phase.as_secs_f64(),
        accepted.len() - lost.len() - wrong.len() - early.len(),
        lost.len(),
        begun.elapsed().as_secs_f64()
    ));
    verdict.figure(format!("schedules: {}", per_schedule.join("; ")));
    Ok(verdict)
}
