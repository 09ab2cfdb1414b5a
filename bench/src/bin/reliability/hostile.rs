//! Case 1, hostile: a few thousand submissions a second for a minute, one in ten to a hostile
//! worker from guest/examples, the rest good short tasks on the default worker. The host must
//! stay up, every good task exit 0, every hostile one end as host/tests/sandbox.rs expects of
//! its kind, and good submissions' p99 latency stay within 2× of the same load with no hostile
//! guest. The machine is shared and noisy, so the minute is cut into rounds, clean and mixed
//! alternating, each on a fresh host with the same registry, and the medians of their p99s are
//! compared.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use http_spawn_bench::loadgen::{self, Plan, Run};
use http_spawn_bench::procfs;

use crate::api::Record;
use crate::host::Host;
use crate::mixed::{self, median};
use crate::{Args, Verdict, guest, progress};

/// Good submissions' p99 with hostile guests may be at most this many times the clean p99.
const MAX_P99_RATIO: f64 = 2.0;
/// Keep-alive connections the load is spread over.
const CONNECTIONS: usize = 64;
/// One submission in this many goes to a hostile worker.
const HOSTILE_EVERY: u64 = 10;
/// Clean and mixed loads alternate this many times, each a share of the case's minute.
const ROUNDS: usize = 3;

/// A hostile worker, how it is configured in the registry, and the end its tasks must have.
struct Hostile {
    worker: &'static str,
    fuel_per_step: u64,
    status: &'static str,
    outcome: &'static str,
    /// What the recorded error must contain.
    error: Option<&'static str>,
    /// Whether the log cap must have dropped bytes (the flood of output).
    logs_dropped: bool,
}

/// The kinds, in the order the mix cycles through them; the limits and expected ends are
/// host/tests/sandbox.rs's.
const HOSTILE: [Hostile; 7] = [
    Hostile {
        worker: "spin",
        fuel_per_step: 2_000_000,
        status: "failed",
        outcome: "out_of_fuel",
        error: Some("out of fuel in step 0"),
        logs_dropped: false,
    },
    Hostile {
        worker: "membomb",
        fuel_per_step: 500_000_000,
        status: "failed",
        outcome: "memory_limit",
        error: Some("16777216"),
        logs_dropped: false,
    },
    Hostile {
        worker: "recurse",
        fuel_per_step: 500_000_000,
        status: "failed",
        outcome: "stack_overflow",
        error: None,
        logs_dropped: false,
    },
    Hostile {
        worker: "panic",
        fuel_per_step: 20_000_000,
        status: "failed",
        outcome: "panic",
        error: Some("the worker gave up on purpose"),
        logs_dropped: false,
    },
    Hostile {
        worker: "abort",
        fuel_per_step: 20_000_000,
        status: "failed",
        outcome: "trap",
        error: Some("unreachable"),
        logs_dropped: false,
    },
    Hostile {
        worker: "sleeper",
        fuel_per_step: 20_000_000,
        status: "failed",
        outcome: "trap",
        error: Some("next::sleep"),
        logs_dropped: false,
    },
    Hostile {
        worker: "chatty",
        fuel_per_step: 500_000_000,
        status: "exited",
        outcome: "exit",
        error: None,
        logs_dropped: true,
    },
];

impl Hostile {
    fn ended_right(&self, record: &Record) -> bool {
        record.worker == self.worker
            && record.status == self.status
            && record.outcome.as_deref() == Some(self.outcome)
            && (self.status != "exited" || record.exit_code == Some(0))
            && self
                .error
                .is_none_or(|part| record.error.as_deref().unwrap_or("").contains(part))
            && (!self.logs_dropped || record.logs_dropped_bytes > 0)
    }
}

/// The registry: the default worker and every hostile one, with a 16 MiB cap (their Rust std
/// reserves a 1 MiB stack) and the fuel sandbox.rs gives each.
fn registry() -> String {
    let mut text = format!(
        "[workers.default]\nmodule = {:?}\n",
        guest("default").display().to_string()
    );
    for kind in &HOSTILE {
        text.push_str(&format!(
            "\n[workers.{}]\nmodule = {:?}\nmax_memory = \"16MiB\"\nfuel_per_step = {}\n",
            kind.worker,
            guest(kind.worker).display().to_string(),
            kind.fuel_per_step
        ));
    }
    text
}

/// What one load found.
struct Figures {
    good: u64,
    hostile: u64,
    good_p99_ms: f64,
    host_cpu_cores: f64,
}

pub fn run(args: &Args, dir: &Path) -> anyhow::Result<Verdict> {
    let secs = args.scaled(60.0, 3.0);
    let round_secs = secs / ROUNDS as f64;
    let rate = args.hostile_rate;
    let registry_path = dir.join("http-spawn.toml");
    std::fs::write(&registry_path, registry())?;
    let count = (rate * round_secs) as u64;
    let host_args: Vec<String> = [
        "--config",
        &registry_path.display().to_string(),
        // Sandbox isolation is what is tried here; the store has cases of its own. Every
        // record is kept, to be read back.
        "--store",
        "memory",
        "--max-history",
        &(2 * count + 10_000).to_string(),
        // Room for the good tasks sleeping their second (about rate / 2 at once).
        "--capacity",
        "4000",
    ]
    .map(String::from)
    .to_vec();
    let kinds: Vec<usize> = if args.hostile_kinds.is_empty() {
        (0..HOSTILE.len()).collect()
    } else {
        args.hostile_kinds
            .iter()
            .map(|name| {
                HOSTILE
                    .iter()
                    .position(|kind| kind.worker == name)
                    .with_context(|| format!("no hostile kind {name:?}"))
            })
            .collect::<anyhow::Result<_>>()?
    };
    let kinds = Arc::new(kinds);
    let runtime = crate::runtime()?;
    let mut verdict = Verdict::default();
    let load = |mixed: bool, round: usize, verdict: &mut Verdict| -> anyhow::Result<Figures> {
        let label = format!("{}-{round}", if mixed { "mixed" } else { "clean" });
        let label = label.as_str();
        let sub = dir.join(label);
        std::fs::create_dir_all(&sub)?;
        progress(
            "hostile",
            &format!("{label} load: {rate}/s for {round_secs} s on a fresh host"),
        );
        let mut host = Host::start(&sub, &host_args, args.host_args.as_deref())?;
        let cpu_before = procfs::cpu_secs(host.pid()).unwrap_or(f64::NAN);
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
            body: {
                let kinds = Arc::clone(&kinds);
                Arc::new(move |index| body(index, mixed.then_some(kinds.as_slice())))
            },
        };
        let run = runtime.block_on(loadgen::run_plan(plan));
        let cpu = procfs::cpu_secs(host.pid()).unwrap_or(f64::NAN) - cpu_before;
        let figures = check(label, &mut host, &run, verdict)?;
        verdict.check(host.up(), || {
            format!("{label}: the host went down: {}", host.log_tail())
        });
        Ok(Figures {
            host_cpu_cores: cpu / run.elapsed.as_secs_f64(),
            ..figures
        })
    };
    let (mut clean, mut mixed) = (Vec::new(), Vec::new());
    for round in 1..=ROUNDS {
        clean.push(load(false, round, &mut verdict)?);
        mixed.push(load(true, round, &mut verdict)?);
    }
    let median_p99 = |loads: &[Figures]| median(loads.iter().map(|f| f.good_p99_ms).collect());
    let (clean_p99, mixed_p99) = (median_p99(&clean), median_p99(&mixed));
    let ratio = mixed_p99 / clean_p99;
    let rounds = |loads: &[Figures]| {
        loads
            .iter()
            .map(|f| format!("{:.2}", f.good_p99_ms))
            .collect::<Vec<_>>()
            .join("/")
    };
    verdict.figure(format!(
        "good p99 median {mixed_p99:.2} ms with hostile guests / {clean_p99:.2} ms clean = \
         {ratio:.2}× (≤ {MAX_P99_RATIO}×; rounds {} vs {} ms)",
        rounds(&mixed),
        rounds(&clean)
    ));
    let sum = |loads: &[Figures], field: fn(&Figures) -> u64| loads.iter().map(field).sum::<u64>();
    verdict.figure(format!(
        "{rate}/s × {secs} s in {ROUNDS} rounds each: clean {} exited 0; mixed {} good exited 0, \
         {} hostile ended right",
        sum(&clean, |f| f.good),
        sum(&mixed, |f| f.good),
        sum(&mixed, |f| f.hostile)
    ));
    let cores = |loads: &[Figures]| median(loads.iter().map(|f| f.host_cpu_cores).collect());
    verdict.figure(format!(
        "host CPU {:.2} cores clean, {:.2} mixed; host up",
        cores(&clean),
        cores(&mixed)
    ));
    verdict.check(ratio <= MAX_P99_RATIO, || {
        format!("good p99 ratio {ratio:.2}× > {MAX_P99_RATIO}×")
    });
    Ok(verdict)
}

/// Request `index`'s label (0 for good, 1 + the kind for hostile) and body; hostile ones, of
/// `kinds` in turn, only in a mixed load.
fn body(index: u64, kinds: Option<&[usize]>) -> (u8, String) {
    if let Some(kinds) = kinds
        && index % HOSTILE_EVERY == HOSTILE_EVERY - 1
    {
        let kind = kinds[((index / HOSTILE_EVERY) % kinds.len() as u64) as usize];
        (
            kind as u8 + 1,
            format!(
                "{{\"name\":\"hostile\",\"duration\":0,\"worker\":\"{}\"}}",
                HOSTILE[kind].worker
            ),
        )
    } else {
        (
            0,
            format!("{{\"name\":\"good-task\",\"duration\":{}}}", index % 2),
        )
    }
}

/// Checks one load's answers and every accepted task's end; returns the figures.
fn check(
    label: &str,
    host: &mut Host,
    run: &Run,
    verdict: &mut Verdict,
) -> anyhow::Result<Figures> {
    let accepted = run.count(202) as usize;
    let judged = mixed::judge(
        "hostile",
        label,
        host,
        run,
        accepted + 1000,
        verdict,
        |kind, record| match kind {
            0 => record.exited_0(),
            kind => HOSTILE[usize::from(kind - 1)].ended_right(record),
        },
    )?;
    Ok(Figures {
        good: judged.good,
        hostile: judged.bad,
        good_p99_ms: mixed::good_p99_ms(run),
        host_cpu_cores: f64::NAN,
    })
}
