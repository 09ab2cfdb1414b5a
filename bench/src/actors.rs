//! Section 7 of `make bench`: tasks as actors (issue #13), each figure beside its baseline in
//! the same run.
//!
//! (a) Ping-pong between two tasks on one host (the `actor` example's `ping` against its
//!     `echo`, timed inside the pinging guest), beside two tokio tasks over `tokio::sync::mpsc`
//!     in this process. HTTP only starts the tasks: what is measured is task-to-task messaging.
//! (b) `POST /api/tasks/{pid}/messages` accepted/s beside `POST /api/tasks`, one release host,
//!     the same generator, connections and duration; the messages go to actors draining their
//!     mailboxes, with a mailbox bound far above what a run can fill.
//! (c) Memory per live task (section 2's method, each in a fresh process): the SDK default
//!     worker sleeping, the `actor` example waiting in `receive` and the 0.1.0 `legacy` example
//!     sleeping, beside the 0.1.0 default worker's figure as BENCHMARKS.md recorded it.
//! (d) One task spawning 10,000 children, beside 10,000 tasks submitted over HTTP by the
//!     generator, each on a fresh host.
//!
//! Alone: `./target/release/http-spawn-bench --only 7` (about 30 s on 2 cores), `--quick` for
//! smaller counts and shorter loads. It needs `make build-guest` and the release host built.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use http_spawn_bench::loadgen::{self, Durations, Load, Plan};
use serde_json::{Value, json};

use super::{
    LiveMode, LiveResult, Report, Server, get, guest, health, live_in_fresh_process, post,
};

/// The generator's connections, as in sections 3 and 6.
const CONNECTIONS: usize = 64;
/// Actors draining the mailboxes of (b), each sent to by every fourth connection.
const SINKS: usize = 4;
/// A mailbox bound no run of (b) comes near, so that the host's answer, not the bound, is
/// what is measured; the backlog left at the end of the load is reported beside it.
const SINK_MAILBOX_MESSAGES: &str = "1000000";
/// Children in (d), as the issue asks.
const CHILDREN: u64 = 10_000;
/// (d)'s bounds of a task tree, raised past what the spawner does at once.
const FAN_SPAWNS_PER_SEC: &str = "1000000";
const FAN_DESCENDANTS: &str = "20000";
/// Round trips a pinger makes before the measured ones: first-use costs stay out of the
/// percentiles.
const WARM_UP_ROUNDS: u32 = 1_000;
/// The 0.1.0 default worker's memory per sleeping task as BENCHMARKS.md recorded it
/// (2026-11-30, 10,000 tasks live): RSS and page tables, KiB.
const RECORDED_V1_DEFAULT_KIB: (f64, f64) = (20.0, 2.1);
/// How long the bench waits for any one thing here (a task's end, a drain, a fan of
/// children) before it gives up.
const PATIENCE: Duration = Duration::from_secs(120);

pub(super) fn section(report: &mut Report, quick: bool) -> anyhow::Result<Value> {
    report.line("\n## 7. Actors: messages, mailboxes, children (issue #13)\n");
    let dir = std::env::temp_dir().join(format!("http-spawn-bench-actors-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let registry = registry(&dir)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;

    let rounds = if quick { 5_000 } else { 20_000 };
    let secs = if quick { 3 } else { 8 };
    let live_tasks = if quick { 2_000 } else { 10_000 };

    let ping = ping_pong(report, &registry, rounds)?;
    let host = Server::start("host", &host_args(&registry))?;
    let messages = messages_vs_tasks(report, &runtime, &host, secs)?;
    drop(host);
    let memory = memory(report, live_tasks)?;
    let spawn = spawn_children(report, &runtime, &registry)?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(json!({"ping_pong": ping, "messages": messages, "memory": memory, "spawn": spawn}))
}

/// The registry the hosts here start with: the default worker, and the `actor` example with
/// the memory its `std` needs and the fuel to spawn 10,000 children in one step.
fn registry(dir: &Path) -> anyhow::Result<PathBuf> {
    let path = dir.join("workers.toml");
    std::fs::write(
        &path,
        format!(
            "[workers.default]\nmodule = {:?}\n\n[workers.actor]\nmodule = {:?}\n\
             max_memory = \"16MiB\"\nfuel_per_step = 4_000_000_000\n",
            guest("default"),
            guest("actor"),
        ),
    )?;
    Ok(path)
}

fn host_args(registry: &Path) -> Vec<&str> {
    vec![
        "--config",
        registry.to_str().unwrap_or_default(),
        "--max-mailbox-messages",
        SINK_MAILBOX_MESSAGES,
    ]
}

/// Starts an `actor` task with `script` over HTTP; its pid.
pub(super) fn start_actor(addr: SocketAddr, name: &str, script: &Value) -> anyhow::Result<String> {
    // The actor ignores its duration; it only sets the deadline (duration + 30 s grace).
    let body =
        json!({"name": name, "worker": "actor", "duration": 600, "payload": {"script": script}});
    let (status, answer) = post(addr, "/api/tasks", &body.to_string())?;
    if status != 202 {
        bail!("starting the {name} actor: {status} {answer}");
    }
    let answer: Value = serde_json::from_str(&answer)?;
    answer["pid"]
        .as_str()
        .map(str::to_owned)
        .context("a 202 without a pid")
}

/// Task `pid`'s record, over HTTP.
fn record(addr: SocketAddr, pid: &str) -> Option<Value> {
    serde_json::from_str(&get(addr, &format!("/api/tasks/{pid}"))?).ok()
}

/// Waits until task `pid` has ended; its record.
pub(super) fn wait_ended(addr: SocketAddr, pid: &str) -> anyhow::Result<Value> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(record) = record(addr, pid)
            && ["exited", "failed", "killed"].contains(&record["status"].as_str().unwrap_or(""))
        {
            return Ok(record);
        }
        if Instant::now() > deadline {
            bail!("task {pid} did not end");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The actor's log lines (each a JSON object), over HTTP.
pub(super) fn actor_lines(addr: SocketAddr, pid: &str) -> anyhow::Result<Vec<Value>> {
    let logs: Value = serde_json::from_str(
        &get(addr, &format!("/api/tasks/{pid}/logs")).context("reading a task's logs")?,
    )?;
    Ok(logs["lines"]
        .as_array()
        .map(|lines| {
            lines
                .iter()
                .filter_map(|line| serde_json::from_str(line["message"].as_str()?).ok())
                .collect()
        })
        .unwrap_or_default())
}

// ---------------------------------------------------------------------------------------------
// (a) Ping-pong

/// One ping-pong run's figures: `rounds` round trips, after a warm-up.
#[derive(Debug)]
struct PingPong {
    rounds: u32,
    elapsed_us: f64,
    p50_us: f64,
    p99_us: f64,
    max_us: f64,
}

impl PingPong {
    fn per_sec(&self) -> f64 {
        f64::from(self.rounds) * 1e6 / self.elapsed_us
    }

    fn json(&self) -> Value {
        json!({
            "rounds": self.rounds, "elapsed_us": self.elapsed_us,
            "round_trips_per_sec": self.per_sec(),
            "p50_us": self.p50_us, "p99_us": self.p99_us, "max_us": self.max_us,
        })
    }

    fn row(&self, label: &str) -> Vec<String> {
        vec![
            label.to_owned(),
            self.rounds.to_string(),
            format!("{:.0}", self.per_sec()),
            format!("{:.1}", self.p50_us),
            format!("{:.1}", self.p99_us),
            format!("{:.0}", self.max_us),
        ]
    }
}

fn ping_pong(report: &mut Report, registry: &Path, rounds: u32) -> anyhow::Result<Value> {
    report.line(&format!(
        "(a) Ping-pong, {rounds} round trips after {WARM_UP_ROUNDS} of warm-up: two tasks on one \
         host (the `actor` example's `ping` against its `echo`, a JSON message each way, timed \
         inside the pinging guest with its monotonic clock), beside two tokio tasks passing the \
         same strings over `tokio::sync::mpsc` in the bench's process; with as many scheduler \
         threads as runtime threads. With two, the host places the two tasks on different \
         threads (round robin by pid), so every message wakes the other thread. The calls row: \
         the same, each round a call (`ctx.call`, answered by the `serve` op's `ctx.reply`) \
         instead of a message each way.\n"
    ));
    let mut rows = Vec::new();
    let mut results = Vec::new();
    for threads in [2, 1] {
        let tasks = ping_tasks(registry, threads, rounds, false)?;
        let calls = ping_tasks(registry, threads, rounds, true)?;
        let tokio = tokio_ping_pong(threads, rounds)?;
        let plural = if threads == 1 { "" } else { "s" };
        rows.push(tasks.row(&format!(
            "two tasks on one host, {threads} scheduler thread{plural}"
        )));
        rows.push(calls.row(&format!(
            "the same with calls, {threads} scheduler thread{plural}"
        )));
        rows.push(tokio.row(&format!(
            "two tokio tasks, mpsc, {threads} runtime thread{plural}"
        )));
        rows.push(vec![
            format!("tokio ÷ tasks, {threads} thread{plural}"),
            String::new(),
            format!("{:.1}×", tokio.per_sec() / tasks.per_sec()),
            String::new(),
            String::new(),
            String::new(),
        ]);
        results.push(json!({
            "threads": threads, "tasks": tasks.json(), "calls": calls.json(), "tokio": tokio.json(),
        }));
    }
    report.table(
        &[
            "ping-pong",
            "rounds",
            "round trips/s",
            "p50 µs",
            "p99 µs",
            "max µs",
        ],
        &rows,
    );
    Ok(Value::Array(results))
}

/// (a) on a fresh host with `threads` scheduler threads: the pinger's own figures, its rounds
/// messages each way, or calls (`calls`).
fn ping_tasks(
    registry: &Path,
    threads: usize,
    rounds: u32,
    calls: bool,
) -> anyhow::Result<PingPong> {
    let threads = threads.to_string();
    let mut args = host_args(registry);
    args.extend(["--worker-threads", &threads]);
    let host = Server::start("host", &args)?;
    let answer = if calls { "serve" } else { "echo" };
    let echo = start_actor(
        host.addr,
        "echo",
        &json!([{"op": answer, "timeout_ms": 60_000}]),
    )?;
    let pinger = start_actor(
        host.addr,
        "ping",
        &json!([
            {"op": "ping", "to": echo, "rounds": WARM_UP_ROUNDS, "call": calls},
            {"op": "ping", "to": echo, "rounds": rounds, "call": calls},
        ]),
    )?;
    wait_ended(host.addr, &pinger)?;
    let line = actor_lines(host.addr, &pinger)?
        .into_iter()
        .rfind(|line| line["op"] == "ping")
        .context("the pinger logged no ping line")?;
    if line["ok"] != true || line["rounds"] != rounds {
        bail!("the pinger failed: {line}");
    }
    let micros = |field: &str| line[field].as_f64().unwrap_or(f64::NAN);
    Ok(PingPong {
        rounds,
        elapsed_us: micros("elapsed_us"),
        p50_us: micros("p50_us"),
        p99_us: micros("p99_us"),
        max_us: micros("max_us"),
    })
}

/// The baseline of (a): two tokio tasks, each spawned on a runtime of `threads` threads,
/// passing `{"ping": i}` strings over bounded channels.
fn tokio_ping_pong(threads: usize, rounds: u32) -> anyhow::Result<PingPong> {
    use tokio::sync::mpsc;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?;
    let (elapsed, mut round_trips) = runtime.block_on(async move {
        let (to_echo, mut echo_inbox) = mpsc::channel::<String>(1024);
        let (to_pinger, mut inbox) = mpsc::channel::<String>(1024);
        tokio::spawn(async move {
            while let Some(message) = echo_inbox.recv().await {
                if to_pinger.send(message).await.is_err() {
                    break;
                }
            }
        });
        let pinger = tokio::spawn(async move {
            let mut round_trips = Vec::with_capacity(rounds as usize);
            let mut begun = Instant::now();
            for round in 0..WARM_UP_ROUNDS + rounds {
                if round == WARM_UP_ROUNDS {
                    begun = Instant::now();
                    round_trips.clear();
                }
                let sent_at = Instant::now();
                let ping = json!({"ping": round}).to_string();
                if to_echo.send(ping).await.is_err() || inbox.recv().await.is_none() {
                    break;
                }
                round_trips.push(sent_at.elapsed().as_secs_f64() * 1e6);
            }
            (begun.elapsed(), round_trips)
        });
        pinger.await
    })?;
    round_trips.sort_by(f64::total_cmp);
    let quantile = |q: f64| {
        let last = round_trips.len().saturating_sub(1);
        round_trips
            .get((last as f64 * q).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    Ok(PingPong {
        rounds,
        elapsed_us: elapsed.as_secs_f64() * 1e6,
        p50_us: quantile(0.5),
        p99_us: quantile(0.99),
        max_us: quantile(1.0),
    })
}

// ---------------------------------------------------------------------------------------------
// (b) Messages over HTTP beside task submissions

fn messages_vs_tasks(
    report: &mut Report,
    runtime: &tokio::runtime::Runtime,
    host: &Server,
    secs: u64,
) -> anyhow::Result<Value> {
    report.line(&format!(
        "\n(b) `POST /api/tasks/{{pid}}/messages` beside `POST /api/tasks` on one release host, \
         the bench's generator ({CONNECTIONS} keep-alive connections, closed loop, {secs} s \
         each). Tasks: the default worker, duration 0. Messages: `{{\"seq\": n}}` to {SINKS} \
         `actor` tasks in `receive_all`, with --max-mailbox-messages {SINK_MAILBOX_MESSAGES}. \
         Calls: the same bodies as calls (`POST /api/tasks/{{pid}}/calls?timeout=5`) to {SINKS} \
         `actor` tasks in `serve`, each answered with its own body (a `200` is an answer). \
         Server CPU is counted until every task has ended or every message has been received.\n"
    ));
    let sinks: Vec<String> = (0..SINKS)
        .map(|i| {
            start_actor(
                host.addr,
                &format!("sink-{i}"),
                &json!([{"op": "receive_all", "timeout_ms": 60_000}]),
            )
        })
        .collect::<anyhow::Result<_>>()?;

    let cpu_before = host.cpu_secs();
    let tasks = runtime.block_on(loadgen::run(Load {
        addr: host.addr,
        connections: CONNECTIONS,
        duration: Duration::from_secs(secs),
        rate: None,
        durations: Durations::Fixed(0),
    }));
    let deadline = Instant::now() + PATIENCE;
    while health(host.addr).is_none_or(|health| health["live"].as_u64() > Some(SINKS as u64))
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let tasks_cpu_us = (host.cpu_secs() - cpu_before) * 1e6 / tasks.accepted.max(1) as f64;

    let cpu_before = host.cpu_secs();
    let paths = sinks
        .iter()
        .map(|pid| format!("/api/tasks/{pid}/messages"))
        .collect();
    let run = runtime.block_on(loadgen::run_plan(sequenced(host, secs, paths)));
    let backlog = mailboxes(host.addr, &sinks)?;
    let drained_at = Instant::now();
    let deadline = drained_at + PATIENCE;
    while mailboxes(host.addr, &sinks)? > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let drain_secs = drained_at.elapsed().as_secs_f64();
    let accepted = run.count(202);
    let full = run.count(429);
    let other = run.samples.len() as u64 - accepted - full + run.connect_errors;
    let messages_cpu_us = (host.cpu_secs() - cpu_before) * 1e6 / accepted.max(1) as f64;
    let messages_per_sec = accepted as f64 / run.elapsed.as_secs_f64();
    let latencies = run.latencies_us();
    let messages_p50 = loadgen::percentile_ms(latencies.clone(), 0.5);
    let messages_p99 = loadgen::percentile_ms(latencies, 0.99);
    // After the messages' CPU is read: the calls' is their own.
    let calls = http_calls(runtime, host, secs)?;

    report.table(
        &[
            "request",
            "answered/s (202, calls 200)",
            "202 (calls 200)",
            "429",
            "other",
            "p50 ms",
            "p99 ms",
            "server CPU µs/answer",
        ],
        &[
            vec![
                "POST /api/tasks".into(),
                format!("{:.0}", tasks.accepted_per_sec()),
                tasks.accepted.to_string(),
                tasks.rejected.to_string(),
                tasks.errors.to_string(),
                format!("{:.2}", tasks.percentile_ms(0.5)),
                format!("{:.2}", tasks.percentile_ms(0.99)),
                format!("{tasks_cpu_us:.1}"),
            ],
            vec![
                "POST /api/tasks/{pid}/messages".into(),
                format!("{messages_per_sec:.0}"),
                accepted.to_string(),
                full.to_string(),
                other.to_string(),
                format!("{messages_p50:.2}"),
                format!("{messages_p99:.2}"),
                format!("{messages_cpu_us:.1}"),
            ],
            vec![
                "POST /api/tasks/{pid}/calls".into(),
                format!("{:.0}", calls.per_sec),
                calls.answered.to_string(),
                calls.full.to_string(),
                calls.other.to_string(),
                format!("{:.2}", calls.p50_ms),
                format!("{:.2}", calls.p99_ms),
                format!("{:.1}", calls.cpu_us),
            ],
            vec![
                "messages ÷ tasks".into(),
                format!("{:.2}", messages_per_sec / tasks.accepted_per_sec()),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
            ],
        ],
    );
    report.line(&format!(
        "\nmessages still in the {SINKS} mailboxes when the load stopped: {backlog}; all \
         received {drain_secs:.1} s later"
    ));
    Ok(json!({
        "secs": secs,
        "tasks": {
            "accepted_per_sec": tasks.accepted_per_sec(), "accepted": tasks.accepted,
            "rejected": tasks.rejected, "errors": tasks.errors,
            "p50_ms": tasks.percentile_ms(0.5), "p99_ms": tasks.percentile_ms(0.99),
            "cpu_us_per_accepted": tasks_cpu_us,
        },
        "messages": {
            "accepted_per_sec": messages_per_sec, "accepted": accepted, "mailbox_full": full,
            "other": other, "p50_ms": messages_p50, "p99_ms": messages_p99,
            "cpu_us_per_accepted": messages_cpu_us, "backlog_at_end": backlog,
            "drain_secs": drain_secs,
        },
        "calls": {
            "answered_per_sec": calls.per_sec, "answered": calls.answered,
            "mailbox_full": calls.full, "other": calls.other, "p50_ms": calls.p50_ms,
            "p99_ms": calls.p99_ms, "cpu_us_per_answer": calls.cpu_us,
        },
    }))
}

/// (b)'s load: `{"seq": n}` bodies posted to `paths` in turn, closed loop, for `secs`.
fn sequenced(host: &Server, secs: u64, paths: Vec<String>) -> Plan {
    let paths = Arc::new(paths);
    Plan {
        headers: None,
        addr: host.addr,
        connections: CONNECTIONS,
        duration: Duration::from_secs(secs),
        rate: None,
        count: None,
        keep_pids: false,
        stop: None,
        target: Some(Arc::new(move |index| {
            paths[index as usize % paths.len()].clone()
        })),
        body: Arc::new(|index| (0, format!("{{\"seq\":{index}}}"))),
    }
}

/// What the calls of (b) measured.
struct HttpCalls {
    per_sec: f64,
    answered: u64,
    full: u64,
    other: u64,
    p50_ms: f64,
    p99_ms: f64,
    cpu_us: f64,
}

/// (b)'s calls: the generator's requests as calls to {SINKS} `actor` tasks in `serve`, each
/// answered with its own body.
fn http_calls(
    runtime: &tokio::runtime::Runtime,
    host: &Server,
    secs: u64,
) -> anyhow::Result<HttpCalls> {
    let servers: Vec<String> = (0..SINKS)
        .map(|i| {
            start_actor(
                host.addr,
                &format!("server-{i}"),
                &json!([{"op": "serve", "timeout_ms": 60_000}]),
            )
        })
        .collect::<anyhow::Result<_>>()?;
    let cpu_before = host.cpu_secs();
    let paths = servers
        .iter()
        .map(|pid| format!("/api/tasks/{pid}/calls?timeout=5"))
        .collect();
    let run = runtime.block_on(loadgen::run_plan(sequenced(host, secs, paths)));
    let answered = run.count(200);
    let full = run.count(429);
    let latencies = run.latencies_us();
    Ok(HttpCalls {
        per_sec: answered as f64 / run.elapsed.as_secs_f64(),
        answered,
        full,
        other: run.samples.len() as u64 - answered - full + run.connect_errors,
        p50_ms: loadgen::percentile_ms(latencies.clone(), 0.5),
        p99_ms: loadgen::percentile_ms(latencies, 0.99),
        cpu_us: (host.cpu_secs() - cpu_before) * 1e6 / answered.max(1) as f64,
    })
}

/// Messages waiting in the mailboxes of `pids`, from their records; an error if one of them
/// has no mailbox (it ended).
fn mailboxes(addr: SocketAddr, pids: &[String]) -> anyhow::Result<u64> {
    pids.iter()
        .map(|pid| {
            record(addr, pid)
                .and_then(|record| record["actor"]["mailbox"].as_u64())
                .with_context(|| format!("sink {pid} has no mailbox"))
        })
        .sum()
}

// ---------------------------------------------------------------------------------------------
// (c) Memory per waiting task

fn memory(report: &mut Report, n: u32) -> anyhow::Result<Value> {
    report.line(&format!(
        "\n(c) Memory per live task, {n} tasks, each kind in a fresh process (section 2's \
         method: the host library, measured after every task has run its first step and \
         waits):\n"
    ));
    let kinds = [
        (
            LiveMode::Wasm,
            "default worker (SDK, no_std)",
            "0.3.0",
            "sleep",
            "1 MiB",
        ),
        (
            LiveMode::ActorReceive,
            "`actor` example (SDK, std)",
            "0.3.0",
            "receive",
            "16 MiB",
        ),
        (
            LiveMode::Legacy,
            "`legacy` example (hand-written, std)",
            "0.1.0",
            "sleep",
            "16 MiB",
        ),
    ];
    let mut rows = Vec::new();
    let mut results = Vec::new();
    for (mode, worker, contract, waits_in, cap) in kinds {
        let live: LiveResult = live_in_fresh_process(mode, n)?;
        let (rss, pte) = (
            live.rss_bytes_per_task / 1024.0,
            live.pte_bytes_per_task / 1024.0,
        );
        rows.push(vec![
            worker.to_owned(),
            contract.to_owned(),
            waits_in.to_owned(),
            cap.to_owned(),
            format!("{rss:.1}"),
            format!("{pte:.1}"),
            format!("{:.1}", rss + pte),
            format!("{:.2}", live.secs_to_live),
        ]);
        results.push(
            json!({"worker": worker, "contract": contract, "waits_in": waits_in,
            "live": live}),
        );
        if mode == LiveMode::Wasm && crate::baseline_guest().is_some() {
            let live: LiveResult = live_in_fresh_process(LiveMode::Baseline, n)?;
            let (rss, pte) = (
                live.rss_bytes_per_task / 1024.0,
                live.pte_bytes_per_task / 1024.0,
            );
            rows.push(vec![
                "default worker before the SDK (hand-written, no_std), built from git".into(),
                "0.1.0".into(),
                "sleep".into(),
                "1 MiB".into(),
                format!("{rss:.1}"),
                format!("{pte:.1}"),
                format!("{:.1}", rss + pte),
                format!("{:.2}", live.secs_to_live),
            ]);
            results.push(
                json!({"worker": "default before the SDK", "contract": "0.1.0",
                "waits_in": "sleep", "live": live}),
            );
        } else if mode == LiveMode::Wasm {
            let (rss, pte) = RECORDED_V1_DEFAULT_KIB;
            rows.push(vec![
                "default worker before the SDK (no_std), recorded in BENCHMARKS.md".into(),
                "0.1.0".into(),
                "sleep".into(),
                "1 MiB".into(),
                format!("{rss:.1}"),
                format!("{pte:.1}"),
                format!("{:.1}", rss + pte),
                String::new(),
            ]);
        }
    }
    report.table(
        &[
            "worker",
            "contract",
            "waits in",
            "memory cap",
            "RSS KiB/task",
            "PTE KiB/task",
            "RSS+PTE KiB/task",
            "s to all live",
        ],
        &rows,
    );
    Ok(json!({
        "n": n,
        "kinds": results,
        "recorded_v1_default": {"rss_kib": RECORDED_V1_DEFAULT_KIB.0,
            "pte_kib": RECORDED_V1_DEFAULT_KIB.1},
    }))
}

// ---------------------------------------------------------------------------------------------
// (d) One task spawning 10,000 children

/// When a host's totals first showed every task accepted, and every task ended.
#[derive(Debug)]
struct Fan {
    accepted_secs: f64,
    ended_secs: f64,
    exited_ok: u64,
}

impl Fan {
    fn row(&self, label: &str) -> Vec<String> {
        vec![
            label.to_owned(),
            format!("{:.2}", self.accepted_secs),
            format!("{:.0}", CHILDREN as f64 / self.accepted_secs),
            format!("{:.2}", self.ended_secs),
            format!("{:.0}", CHILDREN as f64 / self.ended_secs),
            format!("{}/{CHILDREN}", self.exited_ok),
        ]
    }

    fn json(&self) -> Value {
        json!({
            "accepted_secs": self.accepted_secs, "ended_secs": self.ended_secs,
            "accepted_per_sec": CHILDREN as f64 / self.accepted_secs,
            "ended_per_sec": CHILDREN as f64 / self.ended_secs,
            "exited_ok": self.exited_ok,
        })
    }
}

/// Polls the host's totals from `begun` until `total` tasks are accepted and every accepted
/// one has ended.
fn watch_fan(addr: SocketAddr, begun: Instant, total: u64) -> anyhow::Result<(f64, f64, u64)> {
    let deadline = begun + PATIENCE;
    let mut accepted_secs = None;
    loop {
        let tasks = health(addr).map(|health| health["tasks"].clone());
        let count = |field: &str| {
            tasks
                .as_ref()
                .and_then(|tasks| tasks[field].as_u64())
                .unwrap_or(0)
        };
        let (spawned, ended) = (count("spawned"), count("ended"));
        if spawned >= total && accepted_secs.is_none() {
            accepted_secs = Some(begun.elapsed().as_secs_f64());
        }
        if let Some(accepted_secs) = accepted_secs
            && ended >= spawned
        {
            return Ok((
                accepted_secs,
                begun.elapsed().as_secs_f64(),
                count("exited_ok"),
            ));
        }
        if Instant::now() > deadline {
            bail!("{spawned} of {total} tasks accepted and {ended} ended in {PATIENCE:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn spawn_children(
    report: &mut Report,
    runtime: &tokio::runtime::Runtime,
    registry: &Path,
) -> anyhow::Result<Value> {
    report.line(&format!(
        "\n(d) {CHILDREN} tasks of the default worker with duration 0, each way on a fresh \
         release host: spawned by one `actor` task (`spawn_many`, one host call per child, all \
         in one step), beside submitted over HTTP by the generator ({CONNECTIONS} connections, \
         closed loop). Times from the first request, read from the host's totals every 10 ms. \
         Both hosts with a task tree's bounds raised (`--max-spawns-per-sec {FAN_SPAWNS_PER_SEC} \
         --max-descendants {FAN_DESCENDANTS}`; by default a tree spawns 100 a second, issue \
         #21): what is measured is the spawn path, not the bound.\n"
    ));
    let mut args = host_args(registry);
    args.extend([
        "--max-spawns-per-sec",
        FAN_SPAWNS_PER_SEC,
        "--max-descendants",
        FAN_DESCENDANTS,
    ]);
    let host = Server::start("host", &args)?;
    let begun = Instant::now();
    start_actor(
        host.addr,
        "spawner",
        &json!([{"op": "spawn_many", "count": CHILDREN, "name": "child", "duration": 0}]),
    )?;
    let (accepted_secs, ended_secs, exited_ok) = watch_fan(host.addr, begun, CHILDREN + 1)?;
    let spawned = Fan {
        accepted_secs,
        ended_secs,
        // Less the spawner itself.
        exited_ok: exited_ok.saturating_sub(1),
    };
    drop(host);

    let host = Server::start("host", &args)?;
    let begun = Instant::now();
    // A submission the host pushes back (`429`: it accepts only what it can start soon) is
    // sent again, as a client would, until all are accepted; the refusals are counted.
    let (mut accepted, mut refused) = (0, 0);
    while accepted < CHILDREN && begun.elapsed() < PATIENCE {
        let run = runtime.block_on(loadgen::run_plan(Plan {
            headers: None,
            addr: host.addr,
            connections: CONNECTIONS,
            duration: PATIENCE,
            rate: None,
            count: Some(CHILDREN - accepted),
            keep_pids: false,
            stop: None,
            target: None,
            body: Arc::new(|_| (0, r#"{"name":"child","duration":0}"#.to_owned())),
        }));
        accepted += run.count(202);
        refused += run.samples.len() as u64 - run.count(202);
    }
    // The generator's last answer, not the first look at the totals after it.
    let accepted_secs = begun.elapsed().as_secs_f64();
    if accepted != CHILDREN {
        bail!("the generator got {accepted} of {CHILDREN} tasks accepted");
    }
    if refused > 0 {
        report.line(&format!(
            "The host pushed back {refused} submission(s) over HTTP; each was sent again.\n"
        ));
    }
    let (_, ended_secs, exited_ok) = watch_fan(host.addr, begun, CHILDREN)?;
    let submitted = Fan {
        accepted_secs,
        ended_secs,
        exited_ok,
    };
    drop(host);

    report.table(
        &[
            "how",
            "all accepted after s",
            "accepted/s",
            "all ended after s",
            "ended/s",
            "exit 0",
        ],
        &[
            spawned.row("one task, spawn_many"),
            submitted.row("HTTP, the generator"),
            vec![
                "spawn ÷ HTTP".into(),
                String::new(),
                format!("{:.2}", submitted.accepted_secs / spawned.accepted_secs),
                String::new(),
                format!("{:.2}", submitted.ended_secs / spawned.ended_secs),
                String::new(),
            ],
        ],
    );
    Ok(json!({"children": CHILDREN, "spawned": spawned.json(), "http": submitted.json()}))
}
