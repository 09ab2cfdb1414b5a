//! Section 9 of `make bench`: clients waiting for a task's end (issue #24), each figure beside
//! its baseline in the same run.
//!
//! (a) A submission with `Prefer: wait=10` beside a plain one: the default worker with
//!     duration 0, the generator's 64 connections, closed loop, one release host on the memory
//!     store; the setups alternate, medians of 3 rounds. A waiting submission is answered
//!     `200` once its task has ended, a plain one `202` once it is accepted.
//! (b) 10,000 clients long-polling one task (`GET /api/tasks/{pid}/result?wait=60`, each on a
//!     connection of its own): the host's RSS and threads before and while they wait, then the
//!     task killed and every client's answer counted.
//!
//! Alone: `./target/release/http-spawn-bench --only 9` (about 40 s on 2 cores), `--quick` for
//! fewer clients and shorter loads. It needs `make build-guest` and the release host built.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use http_spawn_bench::loadgen::{self, Plan};
use http_spawn_bench::procfs::Holdings;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Report, Server, median, post, request};

/// The generator's connections, as in sections 3 and 6.
const CONNECTIONS: usize = 64;
/// Rounds of (a), each setup once a round.
const ROUNDS: usize = 3;
/// The wait a submission of (a) prefers: far more than a task of duration 0 takes.
const PREFERRED_WAIT: &str = "Prefer: wait=10\r\n";

pub(super) fn section(report: &mut Report, quick: bool) -> anyhow::Result<Value> {
    report.line("\n## 9. Waiting for a task's end (issue #24)\n");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let load = if quick {
        Duration::from_secs(2)
    } else {
        Duration::from_secs(4)
    };
    let server = Server::start("host", &["--max-wait-secs", "60"])?;
    let mut rows: Vec<(&str, Vec<Round>)> = vec![("plain", Vec::new()), ("prefer", Vec::new())];
    for _ in 0..ROUNDS {
        for (setup, rounds) in &mut rows {
            let headers = (*setup == "prefer").then(|| Arc::<str>::from(PREFERRED_WAIT));
            rounds.push(round(&runtime, &server, load, headers)?);
        }
    }
    report.line(&format!(
        "(a) A submission with `Prefer: wait=10` beside a plain one: the default worker, duration \
         0, {CONNECTIONS} connections, closed loop, {} s, one host on the memory store; the \
         setups alternating, medians of {ROUNDS} rounds. Answered: `202` for a plain \
         submission, `200` (its task ended) for a waiting one. CPU: the host's user + system per \
         answered request.\n",
        load.as_secs()
    ));
    report.line(
        "| submission | answered/s | 200 | 202 | other | p50 ms | p99 ms | host CPU µs/request |",
    );
    report.line("|---|---|---|---|---|---|---|---|");
    let mut figures = serde_json::Map::new();
    for (setup, rounds) in &rows {
        let pick =
            |f: &dyn Fn(&Round) -> f64| median(&mut rounds.iter().map(f).collect::<Vec<_>>());
        let (per_sec, p50, p99, cpu) = (
            pick(&|r| r.answered_per_sec),
            pick(&|r| r.p50_ms),
            pick(&|r| r.p99_ms),
            pick(&|r| r.cpu_us),
        );
        let sum = |f: &dyn Fn(&Round) -> u64| rounds.iter().map(f).sum::<u64>();
        report.line(&format!(
            "| {} | {per_sec:.0} | {} | {} | {} | {p50:.2} | {p99:.2} | {cpu:.1} |",
            if *setup == "plain" {
                "plain"
            } else {
                "`Prefer: wait=10`"
            },
            sum(&|r| r.ok),
            sum(&|r| r.accepted),
            sum(&|r| r.other),
        ));
        figures.insert(
            (*setup).to_owned(),
            json!({"answered_per_sec": per_sec, "p50_ms": p50, "p99_ms": p99, "host_cpu_us": cpu}),
        );
    }
    let ratio = |key: &str| {
        figures["prefer"][key].as_f64().unwrap_or(f64::NAN)
            / figures["plain"][key].as_f64().unwrap_or(f64::NAN)
    };
    report.line(&format!(
        "| waiting ÷ plain | {:.2}× |  |  |  | {:.2}× | {:.2}× | {:.2}× |",
        ratio("answered_per_sec"),
        ratio("p50_ms"),
        ratio("p99_ms"),
        ratio("host_cpu_us")
    ));
    drop(server);

    let clients = if quick { 1_000 } else { 10_000 };
    let waiting = runtime.block_on(long_polls(clients))?;
    report.line(&format!(
        "\n(b) {clients} clients long-polling one sleeping task (`/result?wait=60`, a connection \
         each) on one host (memory store), then the task killed. The host's RSS and threads \
         before the clients connect and once every one waits:\n"
    ));
    report.line("| clients | RSS before MiB | RSS waiting MiB | KiB per waiting client | threads before | threads waiting | answered 200 after the kill | all answered after ms |");
    report.line("|---|---|---|---|---|---|---|---|");
    report.line(&format!(
        "| {clients} | {:.1} | {:.1} | {:.2} | {} | {} | {} | {:.0} |",
        waiting.before.rss_bytes as f64 / 1048576.0,
        waiting.during.rss_bytes as f64 / 1048576.0,
        waiting
            .during
            .rss_bytes
            .saturating_sub(waiting.before.rss_bytes) as f64
            / 1024.0
            / clients as f64,
        waiting.before.threads,
        waiting.during.threads,
        waiting.answered,
        waiting.all_answered.as_secs_f64() * 1000.0,
    ));
    figures.insert(
        "long_polls".into(),
        json!({
            "clients": clients,
            "rss_before_bytes": waiting.before.rss_bytes,
            "rss_waiting_bytes": waiting.during.rss_bytes,
            "threads_before": waiting.before.threads,
            "threads_waiting": waiting.during.threads,
            "answered": waiting.answered,
            "all_answered_ms": waiting.all_answered.as_secs_f64() * 1000.0,
        }),
    );
    Ok(Value::Object(figures))
}

/// One round of (a).
#[derive(Debug)]
struct Round {
    answered_per_sec: f64,
    ok: u64,
    accepted: u64,
    other: u64,
    p50_ms: f64,
    p99_ms: f64,
    cpu_us: f64,
}

fn round(
    runtime: &tokio::runtime::Runtime,
    server: &Server,
    load: Duration,
    headers: Option<Arc<str>>,
) -> anyhow::Result<Round> {
    let cpu = server.cpu_secs();
    let run = runtime.block_on(loadgen::run_plan(Plan {
        addr: server.addr,
        connections: CONNECTIONS,
        duration: load,
        rate: None,
        count: None,
        keep_pids: false,
        stop: None,
        target: None,
        headers,
        body: Arc::new(|_| (0, r#"{"name":"waited","duration":0}"#.to_owned())),
    }));
    let cpu = server.cpu_secs() - cpu;
    // The host ends what was accepted before the next round.
    server.drain(Duration::from_secs(60));
    let (ok, accepted) = (run.count(200), run.count(202));
    let answered = ok + accepted;
    let latencies = run.latencies_us();
    Ok(Round {
        answered_per_sec: answered as f64 / run.elapsed.as_secs_f64(),
        ok,
        accepted,
        other: run.samples.len() as u64 - answered,
        p50_ms: loadgen::percentile_ms(latencies.clone(), 0.5),
        p99_ms: loadgen::percentile_ms(latencies, 0.99),
        cpu_us: cpu * 1e6 / answered.max(1) as f64,
    })
}

/// What (b) saw.
struct LongPolls {
    before: Holdings,
    during: Holdings,
    answered: u64,
    all_answered: Duration,
}

/// `clients` connections each long-polling one task's end on a fresh host, until it is killed.
async fn long_polls(clients: usize) -> anyhow::Result<LongPolls> {
    let server = Server::start(
        "host",
        &["--max-wait-secs", "60", "--max-connections", "20000"],
    )?;
    let addr = server.addr;
    let (status, body) = post(addr, "/api/tasks", r#"{"name":"awaited","duration":600}"#)?;
    anyhow::ensure!(
        status == 202,
        "the awaited task was not accepted: {status} {body}"
    );
    let pid = serde_json::from_str::<Value>(&body)?["pid"]
        .as_str()
        .context("a pid")?
        .to_owned();
    let before = Holdings::of(server.child.id())?;
    let poll = Arc::<str>::from(format!(
        "GET /api/tasks/{pid}/result?wait=60 HTTP/1.1\r\nHost: {addr}\r\n\r\n"
    ));
    let mut waits = Vec::with_capacity(clients);
    for _ in 0..clients {
        let request = Arc::clone(&poll);
        waits.push(tokio::spawn(async move {
            let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
            stream.write_all(request.as_bytes()).await.ok()?;
            let mut head = [0u8; 16];
            stream.read_exact(&mut head).await.ok()?;
            // `HTTP/1.1 200 OK`
            std::str::from_utf8(&head[9..12]).ok()?.parse::<u16>().ok()
        }));
    }
    // Every request read and waiting: a second is ample on loopback for 10,000.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let during = Holdings::of(server.child.id())?;
    let killed = Instant::now();
    let (status, body) = tokio::task::spawn_blocking(move || {
        request(addr, "DELETE", &format!("/api/tasks/{pid}"), None)
    })
    .await??;
    anyhow::ensure!(
        status == 200,
        "the awaited task was not killed: {status} {body}"
    );
    let mut answered = 0;
    for wait in waits {
        if wait.await.ok().flatten() == Some(200) {
            answered += 1;
        }
    }
    Ok(LongPolls {
        before,
        during,
        answered,
        all_answered: killed.elapsed(),
    })
}
