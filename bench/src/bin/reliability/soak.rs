//! Case 2, soak: a million short tasks (duration 0) through HTTP against one release host on
//! the default SQLite store, with a short retention. A baseline is taken after a warm-up (a
//! twentieth of the tasks) once the host is idle again; the rest follow; once idle again, the
//! host must hold what it held: RSS within +10 %, the same open files and threads, and a store
//! that retention keeps bounded. Every task must have exited 0.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use http_spawn_bench::loadgen::{self, Plan, Run};
use http_spawn_bench::procfs::Holdings;

use crate::api;
use crate::host::Host;
use crate::{Args, DRAIN_PATIENCE, Verdict, guest, mib, progress};

/// `--history-ttl`: ended tasks older than this are deleted.
const HISTORY_TTL_SECS: u64 = 10;
/// `--max-history`: at most this many ended tasks are kept.
const MAX_HISTORY: usize = 10_000;
/// How long the host is left idle before it is measured: past the retention time, so that
/// retention has had its chance, and past tokio's 10 s keep-alive of idle blocking threads.
const SETTLE: Duration = Duration::from_secs(HISTORY_TTL_SECS + 5);
/// RSS at the end may exceed the baseline by at most this fraction.
const MAX_RSS_GROWTH: f64 = 0.10;
/// The store's files (database + WAL) at the end may be at most this many times their size at
/// the baseline. After the warm-up, the files already hold pages for as many rows as retention
/// lets live at this rate (SQLite reuses the pages of deleted rows and never shrinks the
/// file); the margin is for the B-trees' fragmentation, not for growth with the task count.
const MAX_STORE_GROWTH: f64 = 1.5;
const CONNECTIONS: usize = 64;

/// What the host holds at one moment.
struct Snapshot {
    holdings: Holdings,
    store_bytes: u64,
    /// Ended tasks the API lists, counted up to `MAX_HISTORY + 1`.
    rows: usize,
}

impl Snapshot {
    fn take(host: &Host, store: &Path) -> anyhow::Result<Self> {
        // Rows first: a reader connection the listing opens is then in both snapshots alike.
        let rows = api::list_tasks(host.addr, MAX_HISTORY + 1)?.len();
        std::thread::sleep(Duration::from_secs(1));
        let size = |suffix: &str| {
            let mut path = store.as_os_str().to_owned();
            path.push(suffix);
            std::fs::metadata(path).map_or(0, |m| m.len())
        };
        Ok(Self {
            holdings: Holdings::of(host.pid())?,
            store_bytes: size("") + size("-wal"),
            rows,
        })
    }

    fn rows_text(&self) -> String {
        if self.rows > MAX_HISTORY {
            format!("> {MAX_HISTORY}")
        } else {
            self.rows.to_string()
        }
    }
}

pub fn run(args: &Args, dir: &Path) -> anyhow::Result<Verdict> {
    let total = args.scaled(1_000_000.0, 50_000.0) as u64;
    // Long enough for retention to reach its steady state (its most rows) before the
    // baseline, which the store's bound is relative to.
    let warm_up = (total / 20).max(3 * MAX_HISTORY as u64);
    let rate = args.soak_rate;
    let store = dir.join("tasks.db");
    let host_args: Vec<String> = [
        "--module",
        &guest("default").display().to_string(),
        "--store",
        &format!("sqlite:{}", store.display()),
        "--history-ttl",
        &format!("{HISTORY_TTL_SECS}s"),
        "--max-history",
        &MAX_HISTORY.to_string(),
    ]
    .map(String::from)
    .to_vec();
    let mut host = Host::start(dir, &host_args, args.host_args.as_deref())?;
    let runtime = crate::runtime()?;
    let addr = host.addr;
    let submit = |count: u64| -> Run {
        runtime.block_on(loadgen::run_plan(Plan {
            headers: None,
            addr,
            connections: CONNECTIONS,
            // A bound, should the host fall far behind the rate.
            duration: Duration::from_secs_f64(count as f64 / rate * 2.0 + 30.0),
            rate: Some(rate),
            count: Some(count),
            keep_pids: false,
            stop: None,
            target: None,
            body: Arc::new(|_| (0, "{\"name\":\"soak\",\"duration\":0}".to_owned())),
        }))
    };
    progress(
        "soak",
        &format!("warm-up: {warm_up} tasks at {rate}/s, then idle"),
    );
    let warm = submit(warm_up);
    settle(&host)?;
    let baseline = Snapshot::take(&host, &store)?;
    progress(
        "soak",
        &format!(
            "baseline: RSS {}, {} fds, {} threads, store {}, {} rows; now {} tasks at {rate}/s",
            mib(baseline.holdings.rss_bytes),
            baseline.holdings.fds,
            baseline.holdings.threads,
            mib(baseline.store_bytes),
            baseline.rows_text(),
            total - warm_up
        ),
    );
    let main = submit(total - warm_up);
    settle(&host)?;
    let end = Snapshot::take(&host, &store)?;
    let health = api::health(host.addr)?;

    let mut verdict = Verdict::default();
    let accepted = warm.count(202) + main.count(202);
    let answers = (warm.samples.len() + main.samples.len()) as u64;
    verdict.check(accepted == total && answers == total, || {
        format!("{accepted} of {total} submissions accepted ({answers} answered)")
    });
    verdict.check(
        health.tasks.spawned == accepted
            && health.tasks.ended == accepted
            && health.tasks.exited_ok == accepted,
        || {
            format!(
                "the host counts {} spawned, {} ended, {} exited 0 of {accepted} accepted",
                health.tasks.spawned, health.tasks.ended, health.tasks.exited_ok
            )
        },
    );
    let (before, after) = (baseline.holdings, end.holdings);
    let growth = after.rss_bytes as f64 / before.rss_bytes as f64 - 1.0;
    verdict.check(growth <= MAX_RSS_GROWTH, || {
        format!(
            "RSS grew {:+.1} % (> +{:.0} %)",
            growth * 100.0,
            MAX_RSS_GROWTH * 100.0
        )
    });
    verdict.check(after.fds == before.fds, || {
        format!("open fds {} → {}", before.fds, after.fds)
    });
    verdict.check(after.threads == before.threads, || {
        format!("threads {} → {}", before.threads, after.threads)
    });
    verdict.check(end.rows <= MAX_HISTORY, || {
        format!(
            "the store still lists {} ended tasks, {:.0} s after the last ended (retention: \
             at most {MAX_HISTORY}, none older than {HISTORY_TTL_SECS} s)",
            end.rows_text(),
            SETTLE.as_secs_f64()
        )
    });
    let store_growth = end.store_bytes as f64 / baseline.store_bytes as f64;
    verdict.check(store_growth <= MAX_STORE_GROWTH, || {
        format!(
            "store files grew {store_growth:.1}× (> {MAX_STORE_GROWTH}×): {} → {}",
            mib(baseline.store_bytes),
            mib(end.store_bytes)
        )
    });
    let elapsed = warm.elapsed + main.elapsed;
    let mut latencies: Vec<u32> = warm.samples.iter().map(|s| s.latency_us).collect();
    latencies.extend(main.samples.iter().map(|s| s.latency_us));
    verdict.figure(format!(
        "{accepted} tasks at {rate}/s ({:.0}/s achieved, p99 {:.1} ms), {} exited 0",
        accepted as f64 / elapsed.as_secs_f64(),
        loadgen::percentile_ms(latencies, 0.99),
        health.tasks.exited_ok
    ));
    verdict.figure(format!(
        "after warm-up → end: RSS {} → {} ({:+.1} %, ≤ +{:.0} %), fds {} → {}, threads {} → {}",
        mib(before.rss_bytes),
        mib(after.rss_bytes),
        growth * 100.0,
        MAX_RSS_GROWTH * 100.0,
        before.fds,
        after.fds,
        before.threads,
        after.threads
    ));
    verdict.figure(format!(
        "store (db + WAL) {} → {} ({store_growth:.2}×, ≤ {MAX_STORE_GROWTH}×), ended rows {} → {} \
         (≤ {MAX_HISTORY}; --history-ttl {HISTORY_TTL_SECS}s)",
        mib(baseline.store_bytes),
        mib(end.store_bytes),
        baseline.rows_text(),
        end.rows_text()
    ));
    verdict.check(host.up(), || {
        format!("the host went down: {}", host.log_tail())
    });
    if !args.keep {
        // Hundreds of MiB when retention falls behind: the figures above say what they held.
        drop(host);
        for suffix in ["", "-wal", "-shm"] {
            let mut path = store.as_os_str().to_owned();
            path.push(suffix);
            let _ = std::fs::remove_file(path);
        }
    }
    Ok(verdict)
}

/// Waits until every task has ended, then leaves the host idle for [`SETTLE`].
fn settle(host: &Host) -> anyhow::Result<()> {
    host.wait_idle(DRAIN_PATIENCE)
        .context("the tasks did not end")?;
    std::thread::sleep(SETTLE);
    Ok(())
}
