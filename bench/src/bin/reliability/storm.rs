//! Case 8, storm (issue #21): other clients' good tasks at a steady rate while a few requests
//! try to take the host, each in one of the ways the security review found: the `supervisor`
//! storm (restarts without bound in a period of 0 s), the strongest supervisor it accepts, a
//! task that spawns as fast as it can, one that floods the mailboxes of the pids below its own
//! (pids are sequential), and one that fails with a 1 MB error. Every request must be bounded
//! (refused, cut, or told `full`), every good task must exit 0 and keep its record in the
//! history, the host must stay up, its mailboxes within their byte bound and its peak RSS
//! within that bound of a clean round's, and good submissions' p99 latency stay within 2× of
//! the same load with no attack. The host before the bounds fails it: the storm evicted
//! about 3,100 good records a round and took the host to 554 MiB (115 MiB clean). Clean and attacked rounds
//! alternate, each on a fresh host, and the medians of their p99s are compared, as in the
//! hostile case.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use http_spawn_bench::loadgen::{self, Plan, Run};
use serde_json::json;

use crate::api::{self, Record};
use crate::host::Host;
use crate::mixed::{self, median};
use crate::{Args, Verdict, guest, mib, progress};

/// Good submissions' p99 under attack may be at most this many times the clean p99.
const MAX_P99_RATIO: f64 = 2.0;
/// Keep-alive connections the load is spread over.
const CONNECTIONS: usize = 32;
/// Clean and attacked loads alternate this many times.
const ROUNDS: usize = 3;
/// What all mailboxes together may hold: the host's default `--max-mailboxes-bytes`.
const MAILBOXES_CAP: u64 = 256 << 20;
/// The longest error a record may show: 4 KiB and the note saying it was cut.
const MAX_ERROR_BYTES: usize = 4096 + 64;

/// The attacks, one request each, spread over an attacked round.
#[derive(Debug, Clone, Copy)]
enum Attack {
    Storm,
    Strongest,
    SpawnLoop,
    Flood,
    BigError,
}

const ATTACKS: [Attack; 5] = [
    Attack::Storm,
    Attack::Strongest,
    Attack::SpawnLoop,
    Attack::Flood,
    Attack::BigError,
];

impl Attack {
    fn body(self) -> String {
        let failing: Vec<_> = (0..4)
            .map(|i| json!({"name": format!("c{i}"), "duration": 0, "payload": {"exit_code": 1}}))
            .collect();
        let actor = |ops: serde_json::Value| json!({"name": "attack", "worker": "actor", "duration": 0, "payload": {"script": ops}});
        match self {
            Self::Storm => json!({"name": "storm", "worker": "supervisor", "duration": 60,
                "payload": {"intensity": 1_000_000_000u64, "period_secs": 0, "children": failing}}),
            Self::Strongest => json!({"name": "strongest", "worker": "supervisor", "duration": 60,
                "payload": {"intensity": 100, "period_secs": 3600, "backoff_ms": 0,
                    "children": failing}}),
            Self::SpawnLoop => actor(json!([{"op": "spawn_many", "count": 1_000_000,
                "worker": "default", "name": "loop", "duration": 1}])),
            Self::Flood => actor(json!([{"op": "flood", "count": 12_000, "pad": 16_000}])),
            Self::BigError => actor(json!([{"op": "fail", "message": "e".repeat(1000),
                "repeat": 1000}])),
        }
        .to_string()
    }

    /// Whether its task ended bounded, as the host's bounds say it must.
    fn ended_right(self, record: &Record) -> bool {
        let error = record.error.as_deref().unwrap_or("");
        match self {
            Self::Storm => {
                record.status == "failed" && error.contains("intensity must be at most 100")
            }
            // It gives up once its children failed more than `intensity` times.
            Self::Strongest => record.status == "failed",
            // It stops at its tree's first refusal.
            Self::SpawnLoop | Self::Flood => record.exited_0(),
            Self::BigError => {
                record.status == "failed" && error.len() <= MAX_ERROR_BYTES && error.contains("cut")
            }
        }
    }
}

/// The registry: the shipped workers a client can name, and the scriptable actor.
fn registry() -> String {
    let module = |name: &str| {
        crate::repo_root()
            .join("target/wasm32-wasip2/guest")
            .join(name)
            .display()
            .to_string()
    };
    format!(
        "[workers.default]\nmodule = {:?}\n\n[workers.supervisor]\nmodule = {:?}\n\n\
         [workers.actor]\nmodule = {:?}\nmax_memory = \"16MiB\"\n",
        guest("default").display().to_string(),
        module("http_spawn_supervisor.wasm"),
        guest("actor").display().to_string(),
    )
}

/// What one load found.
struct Figures {
    good: u64,
    good_p99_ms: f64,
    peak_rss: u64,
    peak_mailboxes: u64,
    refused_spawns: f64,
    tasks: u64,
}

pub fn run(args: &Args, dir: &Path) -> anyhow::Result<Verdict> {
    let round_secs = args.scaled(5.0, 2.0);
    let rate = args.hostile_rate.min(1000.0);
    let count = (rate * round_secs) as u64;
    let registry_path = dir.join("http-spawn.toml");
    std::fs::write(&registry_path, registry())?;
    // The history as shipped (10,000 ended tasks): the good tasks of a round must keep theirs
    // whatever the attacks start.
    let host_args: Vec<String> = [
        "--config",
        &registry_path.display().to_string(),
        "--store",
        "memory",
    ]
    .map(String::from)
    .to_vec();
    let runtime = crate::runtime()?;
    let mut verdict = Verdict::default();
    let mut load = |attacked: bool, round: usize| -> anyhow::Result<Figures> {
        let label = format!("{}-{round}", if attacked { "attacked" } else { "clean" });
        let label = label.as_str();
        let sub = dir.join(label);
        std::fs::create_dir_all(&sub)?;
        progress(
            "storm",
            &format!("{label} load: {rate}/s for {round_secs} s on a fresh host"),
        );
        let mut host = Host::start(&sub, &host_args, args.host_args.as_deref())?;
        let watch = Watch::start(host.addr, host.pid());
        let plan = Plan {
            headers: None,
            addr: host.addr,
            connections: CONNECTIONS,
            duration: Duration::from_secs_f64(round_secs),
            rate: Some(rate),
            count: Some(count),
            keep_pids: true,
            stop: None,
            target: None,
            body: Arc::new(move |index| body(index, count, attacked)),
        };
        let run = runtime.block_on(loadgen::run_plan(plan));
        let figures = check(label, &host, &run, watch, &mut verdict)?;
        verdict.check(host.up(), || {
            format!("{label}: the host went down: {}", host.log_tail())
        });
        if attacked {
            verdict.check(figures.refused_spawns > 0.0, || {
                format!("{label}: no spawn was refused: the spawn loop met no budget")
            });
            verdict.check(figures.peak_mailboxes <= MAILBOXES_CAP, || {
                format!(
                    "{label}: mailboxes held {} (> {})",
                    mib(figures.peak_mailboxes),
                    mib(MAILBOXES_CAP)
                )
            });
        }
        Ok(figures)
    };
    let (mut clean, mut attacked) = (Vec::new(), Vec::new());
    for round in 1..=ROUNDS {
        clean.push(load(false, round)?);
        attacked.push(load(true, round)?);
    }
    let median_of =
        |loads: &[Figures], field: fn(&Figures) -> f64| median(loads.iter().map(field).collect());
    let (clean_p99, attacked_p99) = (
        median_of(&clean, |f| f.good_p99_ms),
        median_of(&attacked, |f| f.good_p99_ms),
    );
    let ratio = attacked_p99 / clean_p99;
    let rounds = |loads: &[Figures]| {
        loads
            .iter()
            .map(|f| format!("{:.2}", f.good_p99_ms))
            .collect::<Vec<_>>()
            .join("/")
    };
    verdict.figure(format!(
        "good p99 median {attacked_p99:.2} ms under attack / {clean_p99:.2} ms clean = \
         {ratio:.2}× (≤ {MAX_P99_RATIO}×; rounds {} vs {} ms)",
        rounds(&attacked),
        rounds(&clean)
    ));
    let sum = |loads: &[Figures], field: fn(&Figures) -> u64| loads.iter().map(field).sum::<u64>();
    verdict.figure(format!(
        "{rate}/s × {round_secs} s in {ROUNDS} rounds each: {} good tasks exited 0 clean, {} \
         under attack, every one still listed; {} tasks in all under attack, {} clean",
        sum(&clean, |f| f.good),
        sum(&attacked, |f| f.good),
        sum(&attacked, |f| f.tasks),
        sum(&clean, |f| f.tasks),
    ));
    verdict.figure(format!(
        "spawns refused {:.0} per attacked round (median); mailboxes peak {} (≤ {}); peak RSS \
         median {} attacked, {} clean",
        median_of(&attacked, |f| f.refused_spawns),
        mib(attacked.iter().map(|f| f.peak_mailboxes).max().unwrap_or(0)),
        mib(MAILBOXES_CAP),
        mib(median_of(&attacked, |f| f.peak_rss as f64) as u64),
        mib(median_of(&clean, |f| f.peak_rss as f64) as u64),
    ));
    verdict.check(ratio <= MAX_P99_RATIO, || {
        format!("good p99 ratio {ratio:.2}× > {MAX_P99_RATIO}×")
    });
    // What the attacks may add to the host's memory: at most what all mailboxes may hold.
    let clean_rss = median_of(&clean, |f| f.peak_rss as f64) as u64;
    for (round, figures) in attacked.iter().enumerate() {
        verdict.check(figures.peak_rss <= clean_rss + MAILBOXES_CAP, || {
            format!(
                "attacked-{}: peak RSS {} > {} clean + {} for the mailboxes",
                round + 1,
                mib(figures.peak_rss),
                mib(clean_rss),
                mib(MAILBOXES_CAP)
            )
        });
    }
    Ok(verdict)
}

/// Request `index` of `count`: label 0 and a good task (duration 0 or 1), or in an attacked
/// load, at evenly spread places, label 1 + the attack and its request.
fn body(index: u64, count: u64, attacked: bool) -> (u8, String) {
    let every = count / (ATTACKS.len() as u64 + 1);
    if attacked && every > 0 && index.is_multiple_of(every) && index > 0 {
        let n = (index / every - 1) as usize;
        if let Some(attack) = ATTACKS.get(n) {
            return (n as u8 + 1, attack.body());
        }
    }
    (
        0,
        format!("{{\"name\":\"good-task\",\"duration\":{}}}", index % 2),
    )
}

/// What a thread watching the host saw while the load ran: its peak RSS and the most all
/// mailboxes held, from `/metrics` every 100 ms.
struct Watch {
    stop: Arc<AtomicBool>,
    peak_mailboxes: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
    pid: u32,
}

impl Watch {
    fn start(addr: SocketAddr, pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let peak_mailboxes = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, peak) = (Arc::clone(&stop), Arc::clone(&peak_mailboxes));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(bytes) = metric(addr, "http_spawn_mailboxes_bytes") {
                        peak.fetch_max(bytes as u64, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        Self {
            stop,
            peak_mailboxes,
            thread: Some(thread),
            pid,
        }
    }

    /// Stops watching: the most all mailboxes held, and the host's peak RSS (`VmHWM`).
    fn finish(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let hwm = std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .ok()
            .and_then(|status| {
                status
                    .lines()
                    .find_map(|line| line.strip_prefix("VmHWM:"))
                    .and_then(|rest| rest.split_whitespace().next())
                    .and_then(|kib| kib.parse::<u64>().ok())
            })
            .unwrap_or(0);
        (self.peak_mailboxes.load(Ordering::Relaxed), hwm * 1024)
    }
}

/// The sum of every series of the metric `name` in the host's `/metrics`.
fn metric(addr: SocketAddr, name: &str) -> Option<f64> {
    let (status, text) = api::get(addr, "/metrics").ok()?;
    (status == 200).then(|| {
        text.lines()
            .filter(|line| {
                line.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with([' ', '{']))
            })
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .fold(0.0, |sum, value| sum + value)
    })
}

/// Checks one load's answers and every accepted task's end; returns the figures.
fn check(
    label: &str,
    host: &Host,
    run: &Run,
    watch: Watch,
    verdict: &mut Verdict,
) -> anyhow::Result<Figures> {
    let judged = mixed::judge(
        "storm",
        label,
        host,
        run,
        20_000,
        verdict,
        |n, record| match n {
            0 => record.exited_0(),
            n => ATTACKS[usize::from(n - 1)].ended_right(record),
        },
    )?;
    let (peak_mailboxes, peak_rss) = watch.finish();
    Ok(Figures {
        good: judged.good,
        good_p99_ms: mixed::good_p99_ms(run),
        peak_rss,
        peak_mailboxes,
        refused_spawns: metric(host.addr, "http_spawn_spawns_refused_total").unwrap_or(0.0),
        tasks: judged.listed,
    })
}
