//! Case 7, store-lock: issue #20's locked store, for minutes. A release host on PostgreSQL
//! (`DATABASE_URL`'s server, or one `scripts/postgres.sh` runs under target/postgres-reliability)
//! runs two thousand sleeping default workers, each logging a line a second, while another
//! connection holds `LOCK TABLE log_parts` (where a running task's lines go) for three minutes
//! and a steady stream of submissions goes on. Every commit then waits on the lock until the
//! writer's timeout: the store is unavailable, new tasks are refused (`503`), and what running
//! tasks write piles up in the writer's backlog.
//!
//! Criteria: the backlog stays within twice `--store-backlog` (its bound, plus what is never
//! shed), the host's resident memory grows by less than 128 MiB, log lines are shed; once the
//! lock goes, the backlog drains, every task answered `202` ends exited 0 on its one attempt,
//! and new tasks are accepted again.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use http_spawn_bench::loadgen::{self, Plan};
use http_spawn_bench::procfs::Holdings;

use crate::host::Host;
use crate::{Args, DRAIN_PATIENCE, Verdict, api, mib, progress, repo_root};

/// The writer's backlog bound the host runs with: small, so that three minutes go past it.
const BACKLOG: &str = "16MiB";
const BACKLOG_BYTES: f64 = 16.0 * 1024.0 * 1024.0;
/// Sleeping tasks running through the lock, and how long each sleeps.
const SLEEPERS: u64 = 2000;
const SLEEP_SECS: u64 = 240;
/// Submissions per second while the lock is held (refused, once the store has failed).
const RATE: f64 = 100.0;

pub fn run(args: &Args, dir: &Path) -> anyhow::Result<Verdict> {
    let held = Duration::from_secs_f64(args.scaled(180.0, 10.0));
    let sleepers = (SLEEPERS as f64 * args.scaled(1.0, 0.1)) as u64;
    let runtime = crate::runtime()?;
    let url = database(&runtime, dir)?;
    let host_args: Vec<String> = [
        "--module",
        &crate::guest("default").display().to_string(),
        "--store",
        &url,
        "--node-name",
        "reliability",
        "--store-backlog",
        BACKLOG,
        "--max-history",
        "1000000",
        // The lease outlives the lock: the host keeps its tasks through it.
        "--lease",
        "600s",
    ]
    .map(String::from)
    .to_vec();
    let host = Host::start(dir, &host_args, args.host_args.as_deref())?;
    let plan = |duration, count, rate, secs: u64| Plan {
        headers: None,
        addr: host.addr,
        connections: 16,
        duration,
        rate,
        count,
        keep_pids: true,
        stop: None,
        target: None,
        body: Arc::new(move |_| (0, format!("{{\"name\":\"sleeper\",\"duration\":{secs}}}"))),
    };
    let started = runtime.block_on(loadgen::run_plan(plan(
        Duration::from_secs(120),
        Some(sleepers),
        None,
        SLEEP_SECS.min(held.as_secs() + 60),
    )));
    let before = Holdings::of(host.pid())?.rss_bytes;
    progress(
        "store-lock",
        &format!(
            "{} sleepers accepted; holding LOCK TABLE log_parts for {held:?}",
            started.count(202)
        ),
    );
    let lock = runtime.spawn(hold_lock(url.clone(), held));
    let during = runtime.spawn(loadgen::run_plan(plan(held, None, Some(RATE), 1)));
    let (mut backlog, mut resident) = (0f64, before);
    let begun = Instant::now();
    while begun.elapsed() < held {
        if let Some(bytes) = metric(&host, "http_spawn_store_backlog_bytes") {
            backlog = backlog.max(bytes);
        }
        resident = resident.max(Holdings::of(host.pid())?.rss_bytes);
        std::thread::sleep(Duration::from_millis(500));
    }
    runtime.block_on(lock)??;
    let during = runtime.block_on(during)?;
    let shed = metric(&host, "http_spawn_store_log_lines_shed_total").unwrap_or(0.0);
    progress(
        "store-lock",
        &format!(
            "released; backlog at most {:.1} MiB, resident {} -> {}",
            backlog / f64::from(1 << 20),
            mib(before),
            mib(resident)
        ),
    );
    host.wait_idle(DRAIN_PATIENCE + Duration::from_secs(SLEEP_SECS))?;
    drain(&host)?;
    let after = runtime.block_on(loadgen::run_plan(plan(
        Duration::from_secs(2),
        Some(20),
        None,
        0,
    )));
    // The twenty just accepted run, and their ends are written, before the records are read
    // from the database: idle says they ended here, the drained backlog that the store has it.
    host.wait_idle(DRAIN_PATIENCE)?;
    drain(&host)?;

    let mut verdict = Verdict::default();
    verdict.figure(format!(
        "{} sleepers through a {}-s lock; backlog at most {:.1} MiB (bound {BACKLOG}); \
         resident +{}; {shed} log lines shed; {} of {} submissions refused meanwhile",
        started.count(202),
        held.as_secs(),
        backlog / f64::from(1 << 20),
        mib(resident.saturating_sub(before)),
        during.samples.len() as u64 - during.count(202),
        during.samples.len()
    ));
    verdict.check(backlog <= 2.0 * BACKLOG_BYTES, || {
        format!("the backlog grew to {backlog} bytes")
    });
    verdict.check(resident < before + (128 << 20), || {
        format!(
            "resident memory grew from {} to {}",
            mib(before),
            mib(resident)
        )
    });
    verdict.check(shed > 0.0, || "no log line was shed".into());
    verdict.check(after.count(202) == 20, || {
        "new tasks were not accepted after the lock".into()
    });
    let accepted: Vec<&str> = started
        .samples
        .iter()
        .chain(&during.samples)
        .chain(&after.samples)
        .filter_map(|sample| sample.pid.as_deref())
        .collect();
    let records = api::list_tasks(host.addr, accepted.len() + 10_000)?;
    let by_pid: HashMap<&str, &api::Record> = records.iter().map(|r| (r.pid.as_str(), r)).collect();
    let wrong: Vec<String> = accepted
        .iter()
        .filter_map(|pid| match by_pid.get(pid) {
            Some(record) if record.exited_0() && record.attempt == 1 => None,
            Some(record) => Some(record.summary()),
            None => Some(format!("{pid} lost")),
        })
        .collect();
    verdict.check(wrong.is_empty(), || {
        format!(
            "{} accepted tasks did not end exited 0 on their one attempt, e.g. {}",
            wrong.len(),
            wrong[..wrong.len().min(3)].join(", ")
        )
    });
    Ok(verdict)
}

/// Waits until the host's store has written every change it holds.
fn drain(host: &Host) -> anyhow::Result<()> {
    let drained = Instant::now() + DRAIN_PATIENCE;
    while metric(host, "http_spawn_store_backlog_changes") != Some(0.0) {
        if Instant::now() > drained {
            bail!("the backlog did not drain within {DRAIN_PATIENCE:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

/// One value of the host's metrics.
fn metric(host: &Host, series: &str) -> Option<f64> {
    let (_, text) = api::get(host.addr, "/metrics").ok()?;
    text.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.trim().parse().ok()
    })
}

/// A fresh database: on `DATABASE_URL`'s server, or on one this suite runs with
/// `scripts/postgres.sh` under target/postgres-reliability, apart from the tests'.
fn database(runtime: &tokio::runtime::Runtime, dir: &Path) -> anyhow::Result<String> {
    let server = match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => {
            let output = Command::new(repo_root().join("scripts/postgres.sh"))
                .arg("start")
                .env(
                    "POSTGRES_DIR",
                    repo_root().join("target/postgres-reliability"),
                )
                .env("POSTGRES_DURABLE", "1")
                .stderr(Stdio::inherit())
                .output()
                .context("running scripts/postgres.sh start")?;
            if !output.status.success() {
                bail!("scripts/postgres.sh could not start PostgreSQL");
            }
            String::from_utf8(output.stdout)?.trim().to_owned()
        }
    };
    let name = format!(
        "hs_reliability_{}_{}",
        std::process::id(),
        dir.file_name()
            .and_then(|name| name.to_str())
            .unwrap_or("x")
            .replace('-', "_")
    );
    runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(&server, tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        client
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await?;
        anyhow::Ok(())
    })?;
    let (base, query) = server.split_once('?').unwrap_or((&server, ""));
    let (base, _) = base.rsplit_once('/').context("a database URL")?;
    Ok(if query.is_empty() {
        format!("{base}/{name}")
    } else {
        format!("{base}/{name}?{query}")
    })
}

/// Holds `LOCK TABLE log_parts` on the database at `url` for `held`.
async fn hold_lock(url: String, held: Duration) -> anyhow::Result<()> {
    let (mut client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let tx = client.transaction().await?;
    tx.batch_execute("LOCK TABLE log_parts IN ACCESS EXCLUSIVE MODE")
        .await?;
    tokio::time::sleep(held).await;
    tx.rollback().await?;
    Ok(())
}
