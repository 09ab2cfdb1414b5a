//! Section 10 of `make bench`: scheduling and flow control (issue #25), each figure beside its
//! baseline in the same run.
//!
//! (a) Start lag: tasks scheduled to run over the next few seconds (`delay`), how late each
//!     started against its `run_at`; beside it, the same tasks submitted to start now, how late
//!     each started against its acceptance. One release host on the memory store, then on
//!     SQLite (`--store-sync full`), paced submissions.
//! (b) Memory: 100,000 tasks scheduled an hour ahead, the host's RSS per task; beside it,
//!     20,000 live sleeping tasks of the default worker.
//! (c) Priorities: a backlog of priority-5 tasks waiting for one place, then a stream of
//!     priority-9 tasks: where each priority-9 task started among the backlog's.
//! (d) Concurrency keys: accepted/s and host CPU per task with 1,000 keys against a worker's
//!     `per_key_running`, beside the same load with no key on a worker without limits.
//!
//! Alone: `./target/release/http-spawn-bench --only 10` (about a minute and a half on 2 cores),
//! `--quick` for fewer tasks. It needs `make build-guest` and the release host built.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http_spawn_bench::loadgen::{self, Plan};
use http_spawn_bench::procfs::Holdings;
use serde_json::{Value, json};

use super::{Report, Server, get, median, post};

/// The generator's connections.
const CONNECTIONS: usize = 16;

pub(super) fn section(report: &mut Report, quick: bool) -> anyhow::Result<Value> {
    report.line("\n## 10. Scheduling and flow control (issue #25)\n");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut figures = serde_json::Map::new();

    let tasks = if quick { 1_000 } else { 4_000 };
    report.line(&format!(
        "(a) Start lag: {tasks} tasks of duration 0 submitted at 1,000/s over {CONNECTIONS} \
         connections, each with `delay` 1 to 3 s (their `run_at` spread over the load), against \
         the same submitted to start at once. Lag: `started_at` − `run_at` for a scheduled \
         task, `started_at` − `spawned_at` for the others (the records' milliseconds).\n"
    ));
    report.line(
        "| store | tasks | scheduled p50 ms | p99 ms | max ms | at once p50 ms | p99 ms | max ms |",
    );
    report.line("|---|---|---|---|---|---|---|---|");
    let dir = tempdir()?;
    for (label, store) in [
        ("memory", None),
        (
            "SQLite full",
            Some(format!("sqlite:{}", dir.join("lag.db").display())),
        ),
    ] {
        let mut args = vec!["--max-history", "100000"];
        if let Some(store) = &store {
            args.extend(["--store", store.as_str()]);
        }
        let server = Server::start("host", &args)?;
        let accepted = (
            runtime.block_on(submit(&server, tasks, true))?,
            runtime.block_on(submit(&server, tasks, false))?,
        );
        server.drain(Duration::from_secs(30));
        let scheduled = lags(&server, "lag-later", tasks)?;
        let at_once = lags(&server, "lag-now", tasks)?;
        let row = |lags: &[f64]| {
            let mut sorted = lags.to_vec();
            sorted.sort_by(f64::total_cmp);
            let at = |p: f64| sorted.get(((sorted.len().saturating_sub(1)) as f64 * p) as usize);
            (
                at(0.5).copied().unwrap_or(f64::NAN),
                at(0.99).copied().unwrap_or(f64::NAN),
                sorted.last().copied().unwrap_or(f64::NAN),
            )
        };
        let (s50, s99, smax) = row(&scheduled);
        let (n50, n99, nmax) = row(&at_once);
        report.line(&format!(
            "| {label} | {}/{} | {s50:.0} | {s99:.0} | {smax:.0} | {n50:.0} | {n99:.0} | {nmax:.0} |",
            scheduled.len(),
            at_once.len()
        ));
        figures.insert(
            format!(
                "lag_{}",
                label.split(' ').next().unwrap_or(label).to_lowercase()
            ),
            json!({"scheduled_p50_ms": s50, "scheduled_p99_ms": s99, "scheduled_max_ms": smax,
                "at_once_p50_ms": n50, "at_once_p99_ms": n99, "at_once_max_ms": nmax,
                "accepted": [accepted.0, accepted.1], "started": [scheduled.len(), at_once.len()],
                "submitted": [tasks, tasks]}),
        );
    }

    let (scheduled_n, live_n) = if quick {
        (20_000, 5_000)
    } else {
        (100_000, 20_000)
    };
    let scheduled = holding(
        &runtime,
        scheduled_n,
        "{\"name\":\"far\",\"duration\":0,\"delay\":3600}",
    )?;
    let live = holding(&runtime, live_n, "{\"name\":\"sleeper\",\"duration\":3600}")?;
    report.line(&format!(
        "\n(b) Memory: the host's RSS per task with {scheduled_n} tasks scheduled an hour ahead, \
         against {live_n} live sleeping tasks of the default worker (memory store, one host \
         each):\n"
    ));
    report.line("| tasks | held | RSS before MiB | RSS holding MiB | KiB per task |");
    report.line("|---|---|---|---|---|");
    for (label, held) in [("scheduled", &scheduled), ("live sleeping", &live)] {
        report.line(&format!(
            "| {label} | {} | {:.1} | {:.1} | {:.2} |",
            held.count,
            held.before as f64 / 1048576.0,
            held.after as f64 / 1048576.0,
            held.after.saturating_sub(held.before) as f64 / 1024.0 / held.count.max(1) as f64
        ));
    }
    figures.insert(
        "memory".into(),
        json!({"scheduled": scheduled.json(), "live_sleeping": live.json()}),
    );

    let backlog = if quick { 200 } else { 1_000 };
    let urgent = 20;
    let order = priorities(backlog, urgent)?;
    report.line(&format!(
        "\n(c) Priorities: one place; a 2-s task holds it while {backlog} priority-5 tasks \
         (duration 0) queue, then {urgent} priority-9 tasks arrive. Where the priority-9 tasks \
         started among all {} (1 = first):\n",
        backlog + urgent
    ));
    report.line("| priority-9 tasks | first started at | last started at | priority-5 tasks started before the last priority-9 |");
    report.line("|---|---|---|---|");
    report.line(&format!(
        "| {urgent} | {} | {} | {} |",
        order.first_urgent, order.last_urgent, order.backlog_before_last
    ));
    let keys = keyed(&runtime, quick)?;
    report.line(&format!(
        "\n(d) Concurrency keys: duration 0, {CONNECTIONS_KEYED} connections, closed loop, \
         {} s a round, the setups alternating, medians of {ROUNDS} rounds; one host on the \
         memory store each. Keyed: the default worker with `per_key_running = 100`, each \
         task one of 1,000 `concurrency_key`s; plain: no limits, no key.\n",
        keys.secs
    ));
    report.line("| setup | accepted/s | host CPU µs per task |");
    report.line("|---|---|---|");
    for (label, (rate, cpu)) in [("plain", keys.plain), ("1,000 keys", keys.keyed)] {
        report.line(&format!("| {label} | {rate:.0} | {cpu:.1} |"));
    }
    report.line(&format!(
        "| keyed ÷ plain | {:.2}× | {:.2}× |",
        keys.keyed.0 / keys.plain.0,
        keys.keyed.1 / keys.plain.1
    ));
    figures.insert(
        "keys".into(),
        json!({"plain_per_sec": keys.plain.0, "plain_cpu_us": keys.plain.1,
            "keyed_per_sec": keys.keyed.0, "keyed_cpu_us": keys.keyed.1}),
    );
    figures.insert(
        "priorities".into(),
        json!({"backlog": backlog, "urgent": urgent, "first_urgent": order.first_urgent,
            "last_urgent": order.last_urgent, "backlog_before_last": order.backlog_before_last}),
    );
    Ok(Value::Object(figures))
}

fn tempdir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("http-spawn-bench-10-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Submits `count` tasks at 1,000/s: scheduled 1 to 3 s ahead, or to start at once.
async fn submit(server: &Server, count: u64, later: bool) -> anyhow::Result<u64> {
    let plan = Plan {
        headers: None,
        addr: server.addr,
        connections: CONNECTIONS,
        duration: Duration::from_secs(count / 500 + 10),
        rate: Some(1_000.0),
        count: Some(count),
        keep_pids: false,
        stop: None,
        target: None,
        body: Arc::new(move |index| {
            let body = if later {
                let delay = 1.0 + (index % 21) as f64 * 0.1;
                format!("{{\"name\":\"lag-later\",\"duration\":0,\"delay\":{delay}}}")
            } else {
                "{\"name\":\"lag-now\",\"duration\":0}".to_owned()
            };
            (0, body)
        }),
    };
    let run = loadgen::run_plan(plan).await;
    Ok(run.count(202))
}

/// The start lags, in ms, of the ended tasks named `name`: against `run_at` when they had
/// one, else against `spawned_at`.
fn lags(server: &Server, name: &str, most: u64) -> anyhow::Result<Vec<f64>> {
    let mut lags = Vec::new();
    let mut before = String::new();
    loop {
        let path = format!("/api/tasks?name={name}&limit=1000{before}");
        let page: Value = serde_json::from_str(&get(server.addr, &path).unwrap_or_default())?;
        let Some(tasks) = page["tasks"].as_array() else {
            break;
        };
        for task in tasks {
            let at = |field: &str| {
                task[field]
                    .as_str()
                    .and_then(|at| humantime::parse_rfc3339(at).ok())
            };
            let (Some(started), Some(from)) = (at("started_at"), at("run_at").or(at("spawned_at")))
            else {
                continue;
            };
            let lag = started.duration_since(from).map_or_else(
                |early| -early.duration().as_secs_f64(),
                |late| late.as_secs_f64(),
            );
            lags.push(lag * 1000.0);
        }
        match page["next"].as_str() {
            Some(next) if (lags.len() as u64) < most => before = format!("&before={next}"),
            _ => break,
        }
    }
    Ok(lags)
}

/// What a host held: its RSS before and once `count` tasks were accepted.
struct Held {
    count: u64,
    before: u64,
    after: u64,
}

impl Held {
    fn json(&self) -> Value {
        json!({"tasks": self.count, "rss_before_bytes": self.before, "rss_after_bytes": self.after})
    }
}

/// A fresh host (memory store) holding `count` tasks of `body`: its RSS before and after.
fn holding(
    runtime: &tokio::runtime::Runtime,
    count: u64,
    body: &'static str,
) -> anyhow::Result<Held> {
    let capacity = (count + 1000).to_string();
    let server = Server::start(
        "host",
        &[
            "--capacity",
            &capacity,
            "--max-scheduled",
            &capacity,
            "--max-start-lag",
            "0ms",
        ],
    )?;
    std::thread::sleep(Duration::from_millis(500));
    let before = Holdings::of(server.child.id())?.rss_bytes;
    let plan = Plan {
        headers: None,
        addr: server.addr,
        connections: CONNECTIONS,
        duration: Duration::from_secs(120),
        rate: None,
        count: Some(count),
        keep_pids: false,
        stop: None,
        target: None,
        body: Arc::new(move |_| (0, body.to_owned())),
    };
    let accepted = runtime.block_on(loadgen::run_plan(plan)).count(202);
    // Let the instances of live tasks settle into their first sleep.
    std::thread::sleep(Duration::from_secs(2));
    let after = Holdings::of(server.child.id())?.rss_bytes;
    Ok(Held {
        count: accepted,
        before,
        after,
    })
}

/// Where priority-9 tasks started among a priority-5 backlog.
struct Order {
    first_urgent: usize,
    last_urgent: usize,
    backlog_before_last: usize,
}

fn priorities(backlog: usize, urgent: usize) -> anyhow::Result<Order> {
    let server = Server::start("host", &["--capacity", "1", "--max-history", "100000"])?;
    let (status, _) = post(
        server.addr,
        "/api/tasks",
        "{\"name\":\"holder\",\"duration\":2}",
    )?;
    anyhow::ensure!(status == 202, "the holder was refused: {status}");
    let begun = Instant::now();
    for _ in 0..backlog {
        post(
            server.addr,
            "/api/tasks",
            "{\"name\":\"backlog\",\"duration\":0}",
        )?;
    }
    for _ in 0..urgent {
        post(
            server.addr,
            "/api/tasks",
            "{\"name\":\"urgent\",\"duration\":0,\"priority\":9}",
        )?;
    }
    anyhow::ensure!(
        begun.elapsed() < Duration::from_secs(2),
        "the backlog took longer to submit than the holder runs"
    );
    server.drain(Duration::from_secs(60));
    let mut started: Vec<(SystemTime, u64, bool)> = Vec::new();
    for name in ["backlog", "urgent"] {
        let mut before = String::new();
        loop {
            let path = format!("/api/tasks?name={name}&limit=1000{before}");
            let page: Value = serde_json::from_str(&get(server.addr, &path).unwrap_or_default())?;
            for task in page["tasks"].as_array().into_iter().flatten() {
                let at = task["started_at"]
                    .as_str()
                    .and_then(|at| humantime::parse_rfc3339(at).ok());
                // Pids are `<boot>-<seq hex>`: the sequence orders tasks started in one ms.
                let seq = task["pid"]
                    .as_str()
                    .and_then(|pid| pid.split('-').nth(1))
                    .and_then(|seq| u64::from_str_radix(seq, 16).ok())
                    .unwrap_or(0);
                if let Some(at) = at {
                    started.push((at, seq, name == "urgent"));
                }
            }
            match page["next"].as_str() {
                Some(next) => before = format!("&before={next}"),
                None => break,
            }
        }
    }
    // By start; within one millisecond, one place starts them in the order it takes them:
    // the urgent ones (highest priority) first, then by acceptance.
    started.sort_by_key(|&(at, seq, urgent)| (at, !urgent, seq));
    let places: Vec<usize> = started
        .iter()
        .enumerate()
        .filter(|(_, (_, _, urgent))| *urgent)
        .map(|(index, _)| index + 1)
        .collect();
    let last = places.last().copied().unwrap_or(0);
    Ok(Order {
        first_urgent: places.first().copied().unwrap_or(0),
        last_urgent: last,
        backlog_before_last: last.saturating_sub(places.len()),
    })
}

/// Connections and rounds of (d).
const CONNECTIONS_KEYED: usize = 64;
const ROUNDS: usize = 3;

/// (d)'s medians: (accepted/s, host CPU µs per task), plain and keyed.
struct Keys {
    secs: u64,
    plain: (f64, f64),
    keyed: (f64, f64),
}

fn keyed(runtime: &tokio::runtime::Runtime, quick: bool) -> anyhow::Result<Keys> {
    let secs = if quick { 2 } else { 4 };
    let dir = tempdir()?;
    let file = dir.join("http-spawn.toml");
    let module = super::guest("default");
    std::fs::write(
        &file,
        format!(
            "[workers.default]\nmodule = {:?}\nper_key_running = 100\n",
            module.display().to_string()
        ),
    )?;
    let file = file.display().to_string();
    let mut plain = (Vec::new(), Vec::new());
    let mut keyed = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        for with_keys in [false, true] {
            let args: Vec<&str> = if with_keys {
                vec!["--config", &file]
            } else {
                Vec::new()
            };
            let server = Server::start("host", &args)?;
            let cpu = server.cpu_secs();
            let plan = Plan {
                headers: None,
                addr: server.addr,
                connections: CONNECTIONS_KEYED,
                duration: Duration::from_secs(secs),
                rate: None,
                count: None,
                keep_pids: false,
                stop: None,
                target: None,
                body: Arc::new(move |index| {
                    let body = if with_keys {
                        format!(
                            "{{\"name\":\"k\",\"duration\":0,\"concurrency_key\":\"tenant-{}\"}}",
                            index % 1000
                        )
                    } else {
                        "{\"name\":\"k\",\"duration\":0}".to_owned()
                    };
                    (0, body)
                }),
            };
            let run = runtime.block_on(loadgen::run_plan(plan));
            server.drain(Duration::from_secs(30));
            let accepted = run.count(202) as f64;
            let figures = if with_keys { &mut keyed } else { &mut plain };
            figures.0.push(accepted / run.elapsed.as_secs_f64());
            figures
                .1
                .push((server.cpu_secs() - cpu) * 1e6 / accepted.max(1.0));
        }
    }
    Ok(Keys {
        secs,
        plain: (median(&mut plain.0), median(&mut plain.1)),
        keyed: (median(&mut keyed.0), median(&mut keyed.1)),
    })
}
