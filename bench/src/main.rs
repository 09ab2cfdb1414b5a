//! `make bench`: http-spawn measured side by side with its baselines, in one run, on one
//! machine. Every figure is a median over repeated batches or a ratio against a baseline
//! measured in the same run; machines are shared and noisy, so no single absolute time is
//! meant to be compared across runs.
//!
//! Sections (see BENCHMARKS.md for what each target means):
//! 1. instantiate + run + drop, in-process: ours against a naive embedding, 1 and 2 threads;
//! 2. live sleeping tasks: RSS and page tables per task, against plain `tokio::spawn`;
//! 3. HTTP accept rate: the host against a floor server, with a light load generator;
//! 4. fuel: compute kernels with fuel metering on and off;
//! 5. the seed's k6 profile at rising arrival rates, and past capacity;
//! 6. durability: the stores side by side, and recovery;
//! 7. actors: task-to-task messages, `POST …/messages`, memory per task waiting in `receive`,
//!    one task spawning 10,000 children (see actors.rs);
//! 8. cluster: one, two and three hosts on one PostgreSQL beside one host on SQLite, what each
//!    task costs the database, kills and messages across hosts (see cluster.rs);
//! 9. waiting for a task's end (see waits.rs); 10. scheduling and flow control (see
//!    scheduling.rs);
//! 11. checkpoints: capture and restore, and the seed load with each policy (see
//!     checkpoints.rs).

mod actors;
mod checkpoints;
mod cluster;
mod naive;
mod plot;
mod scheduling;
mod waits;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use http_spawn::{Config, Embedded, EmbeddedConfig, NewTask};
use http_spawn_bench::{loadgen, procfs};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use http_spawn_bench::loadgen::{Durations, Load};

use http_spawn::EngineLayout;

#[derive(Debug, Parser)]
#[command(about = "http-spawn benchmarks, side by side with their baselines")]
struct Args {
    #[command(subcommand)]
    command: Option<Section>,
    /// Where results, plots and the report go.
    #[arg(long, global = true, default_value = "bench-out")]
    out: PathBuf,
    /// Smaller counts and shorter runs, for a quick look.
    #[arg(long, global = true)]
    quick: bool,
    /// Run only these sections (1-11), e.g. `--only 1,3`; `--only 7` is the actors alone,
    /// `--only 8` the cluster, `--only 9` waiting for a task's end, `--only 11` checkpoints.
    #[arg(long, global = true, value_delimiter = ',')]
    only: Vec<u8>,
}

#[derive(Debug, Subcommand)]
enum Section {
    /// Every section (the default).
    All,
    /// One live-tasks measurement in this process: prints a JSON line. Used by `all`, which
    /// runs each in a fresh process so that one measurement's heap does not hide another's.
    Live {
        #[arg(long)]
        mode: LiveMode,
        #[arg(long)]
        n: u32,
        /// Keep the tasks live this long after measuring, to inspect the process by hand.
        #[arg(long, default_value_t = 0)]
        hold_secs: u64,
    },
    /// Load a running server with the bench's generator, for profiling by hand.
    Load {
        #[arg(long)]
        addr: std::net::SocketAddr,
        #[arg(long, default_value_t = 5)]
        secs: u64,
        /// Requests per second; unpaced when absent.
        #[arg(long)]
        rate: Option<f64>,
        /// Task duration in seconds; the seed's 1-5 s when absent.
        #[arg(long)]
        duration: Option<u32>,
    },
}

/// What a live-tasks measurement keeps live.
#[derive(Debug, Clone, Copy, clap::ValueEnum, Serialize, Deserialize, PartialEq)]
enum LiveMode {
    /// The default worker, sleeping.
    Wasm,
    /// `tokio::spawn`ed futures, sleeping.
    Tokio,
    /// The `legacy` example (the 0.1.0 contract, `std`), sleeping.
    Legacy,
    /// The `actor` example (the SDK, `std`), waiting in `receive`.
    ActorReceive,
    /// The default worker as it was before the SDK (0.1.0, `no_std`), sleeping: built from
    /// git by `scripts/build-baseline-guest.sh`, found through `HTTP_SPAWN_BASELINE_GUEST`.
    Baseline,
}

impl LiveMode {
    /// The mode as the `live` subcommand spells it.
    fn arg(self) -> &'static str {
        match self {
            Self::Wasm => "wasm",
            Self::Tokio => "tokio",
            Self::Legacy => "legacy",
            Self::ActorReceive => "actor-receive",
            Self::Baseline => "baseline",
        }
    }
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn guest(name: &str) -> PathBuf {
    let dir = repo_root().join("target/wasm32-wasip2/guest");
    if name == "default" {
        dir.join("http_spawn_guest.wasm")
    } else {
        dir.join("examples").join(format!("{name}.wasm"))
    }
}

/// The default worker as it was before the SDK, if `make bench` built it (see
/// `scripts/build-baseline-guest.sh`).
fn baseline_guest() -> Option<PathBuf> {
    std::env::var_os("HTTP_SPAWN_BASELINE_GUEST")
        .map(PathBuf::from)
        .filter(|path| path.is_file())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match args.command.unwrap_or(Section::All) {
        Section::Live { mode, n, hold_secs } => {
            let result = live(mode, n, Duration::from_secs(hold_secs))?;
            println!("{}", serde_json::to_string(&result)?);
            Ok(())
        }
        Section::All => all(&args.out, args.quick, &args.only),
        Section::Load {
            addr,
            secs,
            rate,
            duration,
        } => {
            let outcome = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()?
                .block_on(loadgen::run(Load {
                    addr,
                    connections: 64,
                    duration: Duration::from_secs(secs),
                    rate,
                    durations: duration.map_or(Durations::Seed, Durations::Fixed),
                }));
            println!(
                "accepted {} ({:.0}/s), rejected {}, errors {}, p50 {:.2} ms, p99 {:.2} ms",
                outcome.accepted,
                outcome.accepted_per_sec(),
                outcome.rejected,
                outcome.errors,
                outcome.percentile_ms(0.5),
                outcome.percentile_ms(0.99)
            );
            Ok(())
        }
    }
}

fn all(out: &Path, quick: bool, only: &[u8]) -> anyhow::Result<()> {
    let wanted = |section: u8| only.is_empty() || only.contains(&section);
    std::fs::create_dir_all(out)?;
    let started = Instant::now();
    let mut report = Report::default();
    report.line(&format!(
        "machine: {} CPUs, {}; RUST_BACKTRACE={}; run {}",
        std::thread::available_parallelism().map_or(0, usize::from),
        procfs::mem_total().unwrap_or_else(|| "memory unknown".into()),
        std::env::var("RUST_BACKTRACE").unwrap_or_else(|_| "unset".into()),
        humantime_now(),
    ));
    let mut results = serde_json::Map::new();
    if wanted(1) {
        let figures = section_instantiate(&mut report, quick)?;
        results.insert("instantiate".into(), figures);
    }
    if wanted(2) {
        results.insert("live".into(), section_live(&mut report, out, quick)?);
    }
    if wanted(3) {
        results.insert("http".into(), section_http(&mut report, quick)?);
        results.insert("console".into(), section_console(&mut report, out, quick)?);
    }
    if wanted(4) {
        results.insert("fuel".into(), section_fuel(&mut report, quick)?);
    }
    if wanted(5) {
        results.insert("k6".into(), section_k6(&mut report, out, quick)?);
    }
    if wanted(6) {
        results.insert("store".into(), section_store(&mut report, quick)?);
    }
    if wanted(7) {
        results.insert("actors".into(), actors::section(&mut report, quick)?);
    }
    if wanted(8) {
        results.insert("cluster".into(), cluster::section(&mut report, quick)?);
    }
    if wanted(9) {
        results.insert("waits".into(), waits::section(&mut report, quick)?);
    }
    if wanted(10) {
        results.insert(
            "scheduling".into(),
            scheduling::section(&mut report, quick)?,
        );
    }
    if wanted(11) {
        results.insert(
            "checkpoints".into(),
            checkpoints::section(&mut report, quick)?,
        );
    }
    report.line(&format!(
        "\nbench finished in {:.0} s",
        started.elapsed().as_secs_f64()
    ));
    std::fs::write(
        out.join("results.json"),
        serde_json::to_string_pretty(&Value::Object(results))?,
    )?;
    std::fs::write(out.join("report.md"), &report.text)?;
    println!(
        "\nwrote {}/report.md, results.json and plots",
        out.display()
    );
    Ok(())
}

fn humantime_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!("at unix time {secs}")
}

/// Collects the printed report so it can also be written to a file.
#[derive(Debug, Default)]
struct Report {
    text: String,
}

impl Report {
    fn line(&mut self, line: &str) {
        println!("{line}");
        let _ = std::io::stdout().flush();
        self.text.push_str(line);
        self.text.push('\n');
    }

    fn table(&mut self, header: &[&str], rows: &[Vec<String>]) {
        self.line(&format!("| {} |", header.join(" | ")));
        self.line(&format!("|{}", "---|".repeat(header.len())));
        for row in rows {
            self.line(&format!("| {} |", row.join(" | ")));
        }
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Instantiate + run + drop

/// Runs `task` on `threads` threads, `per_batch` times each, `batches` times; returns the median
/// µs per task per thread and the median tasks/s over all threads.
fn measure(
    threads: usize,
    batches: usize,
    per_batch: usize,
    task: &(dyn Fn() + Sync),
) -> (f64, f64) {
    let mut per_task_us = Vec::new();
    let mut rates = Vec::new();
    for _ in 0..batches {
        let begun = Instant::now();
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| {
                    for _ in 0..per_batch {
                        task();
                    }
                });
            }
        });
        let wall = begun.elapsed().as_secs_f64();
        per_task_us.push(wall * 1e6 / per_batch as f64);
        rates.push((threads * per_batch) as f64 / wall);
    }
    (median(&mut per_task_us), median(&mut rates))
}

/// The memory cap, and slot size, of the sandboxes the bench runs workers in: enough for the
/// std-based workers and the compute kernels too; the default worker's own cap is smaller.
const BENCH_MAX_MEMORY_BYTES: usize = 16 << 20;

/// Our sandbox with `module` loaded, as a worker with all the fuel it wants.
fn our_sandbox(module: &Path, capacity: u32, epoch_interruption: bool) -> anyhow::Result<Embedded> {
    let config = EmbeddedConfig {
        capacity,
        max_memory_bytes: BENCH_MAX_MEMORY_BYTES,
        fuel_per_step: u64::MAX / 4,
        epoch_interruption,
        max_log_bytes: 16 * 1024,
    };
    Ok(Embedded::load(&std::fs::read(module)?, &config)?)
}

/// One task on our sandbox, start to end, no sleeping between steps.
fn run_ours(ours: &Embedded, payload: Option<&str>) -> i32 {
    ours.run(payload).unwrap_or(-1)
}

fn section_instantiate(report: &mut Report, quick: bool) -> anyhow::Result<Value> {
    report.line("\n## 1. Instantiate + run + drop, in-process (median of batches)\n");
    let (batches, per_batch) = if quick { (5, 300) } else { (15, 2000) };
    let mut rows = Vec::new();
    let mut results = Vec::new();
    for worker in ["empty", "default"] {
        let module = guest(worker);
        let ours = our_sandbox(&module, 64, true)?;
        let naive = naive::Naive::new(&module, true)?;
        for threads in [1, 2] {
            let (ours_us, ours_rate) = measure(threads, batches, per_batch, &|| {
                std::hint::black_box(run_ours(&ours, None));
            });
            let (naive_us, naive_rate) = measure(threads, batches, per_batch / 4, &|| {
                std::hint::black_box(naive.run(None).unwrap_or(-1));
            });
            rows.push(vec![
                worker.to_owned(),
                threads.to_string(),
                format!("{ours_us:.1}"),
                format!("{ours_rate:.0}"),
                format!("{naive_us:.1}"),
                format!("{naive_rate:.0}"),
                format!("{:.1}×", naive_us / ours_us),
            ]);
            results.push(json!({
                "worker": worker, "threads": threads,
                "ours_us": ours_us, "ours_per_sec": ours_rate,
                "naive_us": naive_us, "naive_per_sec": naive_rate,
            }));
        }
    }
    report.table(
        &[
            "worker",
            "threads",
            "ours µs/task",
            "ours tasks/s",
            "naive µs/task",
            "naive tasks/s",
            "naive ÷ ours",
        ],
        &rows,
    );
    Ok(Value::Array(results))
}

// ---------------------------------------------------------------------------------------------
// 2. Live sleeping tasks

#[derive(Debug, Serialize, Deserialize)]
struct LiveResult {
    mode: LiveMode,
    n: u32,
    rss_bytes_per_task: f64,
    pte_bytes_per_task: f64,
    secs_to_live: f64,
    maps_per_task: f64,
    maps_total: u64,
}

/// Gets `n` tasks of `mode` waiting (sleeping, or in `receive`) in this process and measures
/// what they hold.
fn live(mode: LiveMode, n: u32, hold: Duration) -> anyhow::Result<LiveResult> {
    // The worker, its memory cap (the `std` examples need more than the default 1 MiB for
    // their 1 MiB stack), and the payload that keeps it waiting.
    let (worker, max_memory, payload) = match mode {
        LiveMode::Wasm => ("default", "1MiB", None),
        LiveMode::Baseline => ("baseline", "1MiB", None),
        LiveMode::Legacy => ("legacy", "16MiB", None),
        LiveMode::ActorReceive => (
            "actor",
            "16MiB",
            Some(r#"{"script": [{"op": "receive", "timeout_ms": 86400000}]}"#),
        ),
        LiveMode::Tokio => return live_tokio(n),
    };
    let module = if mode == LiveMode::Baseline {
        baseline_guest().context("the default worker before the SDK is not built")?
    } else {
        guest(worker)
    }
    .display()
    .to_string();
    let capacity = n.to_string();
    let config = Config::from_args([
        "http-spawn",
        "--module",
        &module,
        "--max-memory",
        max_memory,
        "--capacity",
        &capacity,
        "--max-duration-secs",
        "86400",
        "--store",
        "memory",
    ])?;
    let host = http_spawn::Host::start(&config)?;
    let before = procfs::Status::read()?;
    let begun = Instant::now();
    for _ in 0..n {
        let task = || NewTask {
            name: "sleeper".into(),
            duration: 86_400,
            payload: payload.map(str::to_owned),
            ..NewTask::default()
        };
        // Past a few hundred thousand tasks stepping each second, the scheduler threads fall
        // behind and the host holds new tasks back (`--max-start-lag`): wait, as a client
        // would on its 429, then offer the task again.
        loop {
            match host.spawn(task(), None) {
                Ok(accepting) => {
                    accepting.wait()?;
                    break;
                }
                Err(http_spawn::SpawnError::Behind { .. }) => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(error) => return Err(error.into()),
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    while host.totals().started < u64::from(n) {
        if Instant::now() > deadline {
            bail!("only {} of {n} tasks started", host.totals().started);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let secs = begun.elapsed().as_secs_f64();
    // Past the first wake-up, so every task has slept and stepped once (or, in `receive`,
    // has run its first step and waits).
    std::thread::sleep(Duration::from_millis(1200));
    let after = procfs::Status::read()?;
    eprintln!("{n} tasks live; holding them {hold:?}");
    std::thread::sleep(hold);
    Ok(LiveResult::new(mode, n, &before, &after, secs))
}

/// `n` `tokio::spawn`ed futures sleeping: the floor of a live task.
fn live_tokio(n: u32) -> anyhow::Result<LiveResult> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let before = procfs::Status::read()?;
    let begun = Instant::now();
    let live = Arc::new(std::sync::atomic::AtomicU32::new(0));
    runtime.block_on(async {
        for _ in 0..n {
            let live = Arc::clone(&live);
            tokio::spawn(async move {
                live.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_secs(86_400)).await;
            });
        }
        while live.load(std::sync::atomic::Ordering::Relaxed) < n {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    let secs = begun.elapsed().as_secs_f64();
    let after = procfs::Status::read()?;
    Ok(LiveResult::new(LiveMode::Tokio, n, &before, &after, secs))
}

/// One live-tasks measurement in a fresh process (this binary's `live` subcommand), so that
/// one measurement's heap does not hide another's.
fn live_in_fresh_process(mode: LiveMode, n: u32) -> anyhow::Result<LiveResult> {
    let output = Command::new(std::env::current_exe()?)
        .args(["live", "--mode", mode.arg(), "--n", &n.to_string()])
        .stderr(Stdio::inherit())
        .output()
        .context("running a live-tasks measurement")?;
    if !output.status.success() {
        bail!("live {} {n} failed", mode.arg());
    }
    Ok(serde_json::from_slice(&output.stdout)?)
}

impl LiveResult {
    fn new(
        mode: LiveMode,
        n: u32,
        before: &procfs::Status,
        after: &procfs::Status,
        secs: f64,
    ) -> Self {
        let per = |a: u64, b: u64| a.saturating_sub(b) as f64 / f64::from(n);
        Self {
            mode,
            n,
            rss_bytes_per_task: per(after.rss_bytes, before.rss_bytes),
            pte_bytes_per_task: per(after.pte_bytes, before.pte_bytes),
            secs_to_live: secs,
            maps_per_task: per(after.maps, before.maps),
            maps_total: after.maps,
        }
    }
}

fn section_live(report: &mut Report, out: &Path, quick: bool) -> anyhow::Result<Value> {
    report.line("\n## 2. Live sleeping tasks (each count in a fresh process)\n");
    let counts: &[u32] = if quick {
        &[1_000, 10_000]
    } else {
        &[1_000, 10_000, 100_000, 250_000]
    };
    let mut rows = Vec::new();
    let mut results = Vec::new();
    for &n in counts {
        let wasm = &live_in_fresh_process(LiveMode::Wasm, n)?;
        let tokio = &live_in_fresh_process(LiveMode::Tokio, n)?;
        rows.push(vec![
            n.to_string(),
            format!("{:.1}", wasm.rss_bytes_per_task / 1024.0),
            format!("{:.1}", wasm.pte_bytes_per_task / 1024.0),
            format!(
                "{:.1}",
                (wasm.rss_bytes_per_task + wasm.pte_bytes_per_task) / 1024.0
            ),
            format!("{:.3}", wasm.maps_per_task),
            format!("{:.2}", wasm.secs_to_live),
            format!("{:.2}", tokio.rss_bytes_per_task / 1024.0),
            format!("{:.2}", tokio.secs_to_live),
        ]);
        results.push(json!({"n": n, "wasm": wasm, "tokio": tokio}));
    }
    report.table(
        &[
            "live tasks",
            "wasm RSS KiB/task",
            "wasm PTE KiB/task",
            "wasm RSS+PTE KiB/task",
            "wasm maps/task",
            "wasm s to all live",
            "tokio RSS KiB/task",
            "tokio s to all live",
        ],
        &rows,
    );
    let series = |f: &dyn Fn(&Value) -> f64| -> Vec<(f64, f64)> {
        results
            .iter()
            .map(|r| (r["n"].as_f64().unwrap_or(0.0), f(r)))
            .collect()
    };
    plot::write_svg(
        &out.join("rss-per-task.svg"),
        "Memory per live sleeping task",
        "live tasks",
        "KiB per task",
        true,
        &[
            (
                "wasm RSS + PTE",
                series(&|r| {
                    (r["wasm"]["rss_bytes_per_task"].as_f64().unwrap_or(0.0)
                        + r["wasm"]["pte_bytes_per_task"].as_f64().unwrap_or(0.0))
                        / 1024.0
                }),
            ),
            (
                "wasm RSS",
                series(&|r| r["wasm"]["rss_bytes_per_task"].as_f64().unwrap_or(0.0) / 1024.0),
            ),
            (
                "tokio::spawn RSS",
                series(&|r| r["tokio"]["rss_bytes_per_task"].as_f64().unwrap_or(0.0) / 1024.0),
            ),
        ],
    )?;
    Ok(Value::Array(results))
}

// ---------------------------------------------------------------------------------------------
// 3. HTTP accept rate

/// A server under test, in its own process, stopped when dropped.
struct Server {
    child: Child,
    addr: std::net::SocketAddr,
}

impl Server {
    fn start(kind: &str, extra: &[&str]) -> anyhow::Result<Self> {
        Self::start_logging(kind, extra, "warn", None)
    }

    /// A server whose log, filtered by `rust_log`, goes to the file `console` (none: nowhere).
    fn start_logging(
        kind: &str,
        extra: &[&str],
        rust_log: &str,
        console: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let port = free_port()?;
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let release = repo_root().join("target/release");
        let mut command = match kind {
            "host" => {
                let mut command = Command::new(release.join("http-spawn"));
                command.arg("--module").arg(guest("default"));
                if !extra.contains(&"--store") {
                    // The in-memory store, unless a section measures another.
                    command.args(["--store", "memory"]);
                }
                command
            }
            _ => Command::new(release.join("floor-server")),
        };
        command
            .arg("--listen")
            .arg(addr.to_string())
            .args(extra)
            .env("RUST_LOG", rust_log)
            .stdout(match console {
                Some(path) => Stdio::from(
                    std::fs::File::create(path)
                        .with_context(|| format!("creating {}", path.display()))?,
                ),
                None => Stdio::null(),
            })
            .stderr(Stdio::inherit());
        let child = command
            .spawn()
            .with_context(|| format!("starting the {kind} server"))?;
        let server = Self { child, addr };
        // Long enough for a host to recover a store of 100,000 unfinished tasks.
        let deadline = Instant::now() + Duration::from_secs(600);
        while health(addr).is_none() {
            if Instant::now() > deadline {
                bail!("the {kind} server did not come up");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(server)
    }

    fn cpu_secs(&self) -> f64 {
        procfs::cpu_secs(self.child.id()).unwrap_or(f64::NAN)
    }

    /// Waits until no task is live (bounded), then returns the server's totals.
    fn drain(&self, patience: Duration) -> Value {
        let deadline = Instant::now() + patience;
        loop {
            let health = health(self.addr).unwrap_or(Value::Null);
            if health["live"] == 0 || Instant::now() > deadline {
                return health;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// GET /api/health, with a plain blocking socket.
fn health(addr: std::net::SocketAddr) -> Option<Value> {
    serde_json::from_str(&get(addr, "/api/health")?).ok()
}

/// The body of GET `path`, with a plain blocking socket.
fn get(addr: std::net::SocketAddr, path: &str) -> Option<String> {
    use std::io::Read as _;
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response.split_once("\r\n\r\n")?.1.to_owned())
}

/// POSTs `body` (JSON) to `path` with a plain blocking socket: the status and the body.
fn post(addr: std::net::SocketAddr, path: &str, body: &str) -> anyhow::Result<(u16, String)> {
    request(addr, "POST", path, Some(body))
}

/// `method` on `path`, with `body` (JSON) if any, with a plain blocking socket: the status and
/// the body.
fn request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> anyhow::Result<(u16, String)> {
    use std::io::Read as _;
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let body = body.unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|status| status.parse().ok())
        .context("an HTTP answer without a status")?;
    let body = response.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    Ok((status, body.to_owned()))
}

/// A metric's value in a Prometheus exposition (the first series of that name).
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|line| line.starts_with(name) && !line.starts_with('#'))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or(f64::NAN)
}

struct HttpRun {
    label: &'static str,
    durations: Durations,
    rate: Option<f64>,
    secs: u64,
    patience_secs: u64,
}

fn section_http(report: &mut Report, quick: bool) -> anyhow::Result<Value> {
    report
        .line("\n## 3. HTTP accept rate: the host against the floor server, same load generator\n");
    let secs = if quick { 3 } else { 8 };
    let runs = [
        HttpRun {
            label: "(a) duration 0, closed loop",
            durations: Durations::Fixed(0),
            rate: None,
            secs,
            patience_secs: 10,
        },
        HttpRun {
            label: "(b) seed durations 1-5 s, closed loop",
            durations: Durations::Seed,
            rate: None,
            secs,
            patience_secs: 15,
        },
        HttpRun {
            label: "(c) duration 3, 5,000/s paced",
            durations: Durations::Fixed(3),
            rate: Some(5000.0),
            secs: secs.min(5),
            patience_secs: 10,
        },
    ];
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let mut rows = Vec::new();
    let mut results = Vec::new();
    for run in &runs {
        let mut pair = Vec::new();
        for kind in ["host", "floor"] {
            let extra: &[&str] = if kind == "host" {
                &["--capacity", "200000"]
            } else {
                &[]
            };
            let server = Server::start(kind, extra)?;
            let cpu_before = server.cpu_secs();
            let outcome = runtime.block_on(loadgen::run(Load {
                addr: server.addr,
                connections: 64,
                duration: Duration::from_secs(run.secs),
                rate: run.rate,
                durations: run.durations,
            }));
            let totals = server.drain(Duration::from_secs(run.patience_secs));
            let cpu = server.cpu_secs() - cpu_before;
            let completed_ok = totals["tasks"]["exited_ok"].as_u64().unwrap_or(0);
            let row = json!({
                "server": kind,
                "accepted": outcome.accepted,
                "rejected": outcome.rejected,
                "errors": outcome.errors,
                "accepted_per_sec": outcome.accepted_per_sec(),
                "p50_ms": outcome.percentile_ms(0.5),
                "p99_ms": outcome.percentile_ms(0.99),
                "cpu_us_per_task": cpu * 1e6 / outcome.accepted.max(1) as f64,
                "completed_ok": completed_ok,
                "still_live": totals["live"],
            });
            pair.push(row);
        }
        let ratio = pair[0]["accepted_per_sec"].as_f64().unwrap_or(0.0)
            / pair[1]["accepted_per_sec"].as_f64().unwrap_or(f64::NAN);
        for row in &pair {
            rows.push(vec![
                run.label.to_owned(),
                row["server"].as_str().unwrap_or("").to_owned(),
                format!("{:.0}", row["accepted_per_sec"].as_f64().unwrap_or(0.0)),
                format!("{:.2}", row["p50_ms"].as_f64().unwrap_or(0.0)),
                format!("{:.2}", row["p99_ms"].as_f64().unwrap_or(0.0)),
                format!("{:.1}", row["cpu_us_per_task"].as_f64().unwrap_or(0.0)),
                format!("{}/{}", row["completed_ok"], row["accepted"]),
                format!("{}", row["rejected"]),
                format!("{}", row["errors"]),
            ]);
        }
        rows.push(vec![
            run.label.to_owned(),
            "host ÷ floor".into(),
            format!("{ratio:.2}"),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
        ]);
        results.push(json!({"run": run.label, "host": pair[0], "floor": pair[1], "ratio": ratio}));
    }
    report.table(
        &[
            "load",
            "server",
            "accepted/s",
            "p50 ms",
            "p99 ms",
            "server CPU µs/task",
            "exit 0 / accepted",
            "503s",
            "errors",
        ],
        &rows,
    );
    Ok(Value::Array(results))
}

/// Section 3 (d): what the console costs, the default `RUST_LOG=info` against `warn` on the
/// same release host, the seed's tasks paced, output to a file as a service manager would take
/// it. Rounds alternate (info, warn, info, ...) so that the machine's drift hits both; the
/// median of the rounds' differences is the cost. Issue #22's budget: at most 15 µs of host CPU per task over `warn`.
fn section_console(report: &mut Report, out: &Path, quick: bool) -> anyhow::Result<Value> {
    const BUDGET_US: f64 = 15.0;
    let (secs, rate, rounds) = if quick {
        (3, 2000.0, 1)
    } else {
        (6, 4000.0, 7)
    };
    report.line(&format!(
        "\n(d) The console: seed durations 1-5 s at {rate:.0}/s paced for {secs} s, the default \
         worker (a log line a step), output to a file; `RUST_LOG=info` (the default) against \
         `warn`, {rounds} alternating rounds each. Host CPU over the load and the drain, per \
         completed task; the cost is the median of each round's info − warn. Budget: ≤ \
         {BUDGET_US} µs.\n"
    ));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let mut measured: BTreeMap<&str, Vec<(f64, f64)>> = BTreeMap::new();
    for round in 0..rounds {
        for level in ["info", "warn"] {
            let console = out.join(format!("console-{level}-{round}.log"));
            let server =
                Server::start_logging("host", &["--capacity", "200000"], level, Some(&console))?;
            let cpu_before = server.cpu_secs();
            let outcome = runtime.block_on(loadgen::run(Load {
                addr: server.addr,
                connections: 64,
                duration: Duration::from_secs(secs),
                rate: Some(rate),
                durations: Durations::Seed,
            }));
            let totals = server.drain(Duration::from_secs(15));
            let cpu = server.cpu_secs() - cpu_before;
            drop(server);
            let completed = totals["tasks"]["ended"].as_u64().unwrap_or(0).max(1) as f64;
            let bytes = std::fs::metadata(&console).map_or(0, |m| m.len()) as f64;
            let _ = std::fs::remove_file(&console);
            measured
                .entry(level)
                .or_default()
                .push((cpu * 1e6 / completed, bytes / completed));
            eprintln!(
                "  console {level} round {}: {} accepted, {:.1} µs/task, {:.0} B/task",
                round + 1,
                outcome.accepted,
                cpu * 1e6 / completed,
                bytes / completed
            );
        }
    }
    let median_of = |level: &str, pick: fn(&(f64, f64)) -> f64| {
        let mut values: Vec<f64> = measured[level].iter().map(pick).collect();
        median(&mut values)
    };
    let (info_us, warn_us) = (median_of("info", |m| m.0), median_of("warn", |m| m.0));
    let (info_bytes, warn_bytes) = (median_of("info", |m| m.1), median_of("warn", |m| m.1));
    // Each round's pair ran back to back, so the machine's drift cancels in its difference.
    let mut differences: Vec<f64> = measured["info"]
        .iter()
        .zip(&measured["warn"])
        .map(|(info, warn)| info.0 - warn.0)
        .collect();
    // Sorted by `median`, as the table shows them.
    let extra = median(&mut differences);
    let rounds_of = |level: &str| {
        measured[level]
            .iter()
            .map(|m| format!("{:.1}", m.0))
            .collect::<Vec<_>>()
            .join("/")
    };
    report.table(
        &[
            "RUST_LOG",
            "host CPU µs/task",
            "rounds",
            "console bytes/task",
        ],
        &[
            vec![
                "info (default)".into(),
                format!("{info_us:.1}"),
                rounds_of("info"),
                format!("{info_bytes:.0}"),
            ],
            vec![
                "warn".into(),
                format!("{warn_us:.1}"),
                rounds_of("warn"),
                format!("{warn_bytes:.0}"),
            ],
            vec![
                "info − warn".into(),
                format!("{extra:+.1}"),
                format!(
                    "{}; budget ≤ {BUDGET_US} µs: {}",
                    differences
                        .iter()
                        .map(|d| format!("{d:+.1}"))
                        .collect::<Vec<_>>()
                        .join("/"),
                    if extra <= BUDGET_US { "met" } else { "missed" }
                ),
                String::new(),
            ],
        ],
    );
    Ok(json!({
        "rate": rate,
        "secs": secs,
        "info": {"cpu_us_per_task": info_us, "bytes_per_task": info_bytes},
        "warn": {"cpu_us_per_task": warn_us, "bytes_per_task": warn_bytes},
        "extra_cpu_us_per_task": extra,
        "round_differences_us": differences,
        "budget_us": BUDGET_US,
    }))
}

// ---------------------------------------------------------------------------------------------
// 6. Durability

fn section_store(report: &mut Report, quick: bool) -> anyhow::Result<Value> {
    report.line("\n## 6. Durability: the stores side by side, seed durations 1-5 s, closed loop\n");
    let secs = if quick { 3 } else { 5 };
    // The machine's speed drifts between runs: the stores take turns, in a rotating order,
    // and each figure is the median over the rounds, each ratio the median of the rounds'.
    let rounds = if quick { 1 } else { 3 };
    let dir = std::env::temp_dir().join(format!("http-spawn-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let sqlite = |name: &str| format!("sqlite:{}", dir.join(name).display());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let stores = ["memory", "sqlite, normal", "sqlite, full"];
    let args_of = |store: &str, file: &str| -> Vec<String> {
        match store {
            "memory" => vec!["--store".into(), "memory".into()],
            "sqlite, normal" => vec![
                "--store".into(),
                sqlite(&format!("normal-{file}.db")),
                "--store-sync".into(),
                "normal".into(),
            ],
            _ => vec![
                "--store".into(),
                sqlite(&format!("full-{file}.db")),
                "--store-sync".into(),
                "full".into(),
            ],
        }
    };
    let floor = measure_store(&runtime, "floor", &[], secs)?;
    let mut runs: Vec<Vec<Measured>> = stores.iter().map(|_| Vec::new()).collect();
    for round in 0..rounds {
        for turn in 0..stores.len() {
            let at = (turn + round) % stores.len();
            let args = args_of(stores[at], &round.to_string());
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            runs[at].push(measure_store(&runtime, "host", &args, secs)?);
        }
    }
    let med = |mut values: Vec<f64>| median(&mut values);
    let spread = |values: &[f64]| {
        let min = values.iter().copied().fold(f64::INFINITY, f64::min);
        let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (min, max)
    };
    let mut rows = vec![vec![
        "floor".to_owned(),
        format!("{:.0}", floor.rate),
        format!("{:.0}", floor.completed),
        format!("{:.2}", floor.outcome.percentile_ms(0.5)),
        format!("{:.2}", floor.outcome.percentile_ms(0.99)),
        format!("{:.1}", floor.cpu_us),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
        format!(
            "{}/{}",
            floor.totals["tasks"]["exited_ok"], floor.outcome.accepted
        ),
    ]];
    let mut results = Vec::new();
    // Accepted and completed per second with two threads each (the defaults here), by store.
    let mut two_threads = Vec::new();
    for (at, store) in stores.iter().enumerate() {
        let these = &runs[at];
        let of = |field: fn(&Measured) -> f64| med(these.iter().map(field).collect());
        let rate = of(|run| run.rate);
        let completed = of(|run| run.completed);
        let cpu_us = of(|run| run.cpu_us);
        let writer: Vec<f64> = these.iter().filter_map(|run| run.writer_us).collect();
        let writer_us = (!writer.is_empty()).then(|| med(writer));
        let commits = of(|run| run.commits) / secs as f64;
        let per_commit = of(|run| run.outcome.accepted as f64 / run.commits.max(1.0));
        let ratios: Vec<f64> = these
            .iter()
            .zip(&runs[0])
            .map(|(run, memory)| run.rate / memory.rate.max(1.0))
            .collect();
        let completed_ratios: Vec<f64> = these
            .iter()
            .zip(&runs[0])
            .map(|(run, memory)| run.completed / memory.completed.max(1.0))
            .collect();
        let extra: Vec<f64> = these
            .iter()
            .zip(&runs[0])
            .map(|(run, memory)| run.cpu_us - memory.cpu_us)
            .collect();
        let (low, high) = spread(&ratios);
        let ok: u64 = these
            .iter()
            .map(|run| run.totals["tasks"]["exited_ok"].as_u64().unwrap_or(0))
            .sum();
        let accepted: u64 = these.iter().map(|run| run.outcome.accepted).sum();
        two_threads.push((*store, rate, completed));
        rows.push(vec![
            (*store).to_owned(),
            format!("{rate:.0}"),
            format!("{completed:.0}"),
            format!("{:.2}", of(|run| run.outcome.percentile_ms(0.5))),
            format!("{:.2}", of(|run| run.outcome.percentile_ms(0.99))),
            format!("{cpu_us:.1}"),
            writer_us.map_or(String::new(), |us| format!("{us:.1}")),
            if at == 0 {
                "1.00×".to_owned()
            } else {
                format!("{:.2}× ({low:.2}–{high:.2})", med(ratios.clone()))
            },
            format!("{:+.1}", med(extra.clone())),
            if commits.is_nan() {
                String::new()
            } else {
                format!("{commits:.0}")
            },
            if commits.is_nan() {
                String::new()
            } else {
                format!("{per_commit:.1}")
            },
            format!("{ok}/{accepted}"),
        ]);
        results.push(json!({
            "store": store, "accepted_per_sec": rate, "cpu_us_per_task": cpu_us,
            "completed_per_sec": completed, "writer_cpu_us_per_task": writer_us,
            "vs_memory": ratios, "completed_vs_memory": completed_ratios,
            "cpu_us_vs_memory": extra,
            "rounds": these.iter().map(|run| json!({
                "accepted_per_sec": run.rate, "completed_per_sec": run.completed,
                "cpu_us_per_task": run.cpu_us, "writer_cpu_us_per_task": run.writer_us,
                "p50_ms": run.outcome.percentile_ms(0.5), "p99_ms": run.outcome.percentile_ms(0.99),
                "commits": run.commits, "batches": run.batches, "accepted": run.outcome.accepted,
                "completed_ok": run.totals["tasks"]["exited_ok"],
                "drain_secs": run.drained.as_secs_f64(),
            })).collect::<Vec<_>>(),
        }));
    }
    report.line(&format!(
        "{rounds} round(s) of {secs} s per store, the stores in turn (the order rotating), \
         64 connections; medians over the rounds, each ratio and difference against the memory \
         store the median of the rounds' (range in brackets):\n"
    ));
    report.table(
        &[
            "store",
            "accepted/s",
            "completed/s (load and drain)",
            "p50 ms",
            "p99 ms",
            "server CPU µs/task",
            "of it, the store's writer thread",
            "÷ memory",
            "CPU µs vs memory",
            "commits/s (whole run)",
            "tasks per commit",
            "exit 0 / accepted",
        ],
        &rows,
    );
    // Issue #23, item 2: how each store grows from one HTTP and one scheduler thread to two
    // (the machine's cores, the defaults above), the same load each time.
    report.line(
        "\nOne thread against two (`--http-threads N --worker-threads N`; two is the table \
         above), each store on a fresh file:\n",
    );
    let (normal_1, full_1) = (sqlite("normal-1.db"), sqlite("full-1.db"));
    let one_thread: [(&str, Vec<&str>); 3] = [
        ("memory", vec!["--store", "memory"]),
        (
            "sqlite, normal",
            vec!["--store", &normal_1, "--store-sync", "normal"],
        ),
        (
            "sqlite, full",
            vec!["--store", &full_1, "--store-sync", "full"],
        ),
    ];
    let mut scaling_rows = Vec::new();
    let mut scaling = Vec::new();
    for (label, args) in &one_thread {
        let mut args = args.clone();
        args.extend(["--http-threads", "1", "--worker-threads", "1"]);
        let one = measure_store(&runtime, "host", &args, secs)?;
        let Some(&(_, rate_2, completed_2)) = two_threads.iter().find(|(l, _, _)| l == label)
        else {
            continue;
        };
        scaling_rows.push(vec![
            (*label).to_owned(),
            format!("{:.0}", one.rate),
            format!("{rate_2:.0}"),
            format!("{:.2}×", rate_2 / one.rate.max(1.0)),
            format!("{:.0}", one.completed),
            format!("{completed_2:.0}"),
            format!("{:.2}×", completed_2 / one.completed.max(1.0)),
            one.writer_us.map_or(String::new(), |us| format!("{us:.1}")),
        ]);
        scaling.push(json!({
            "store": label, "accepted_per_sec_1": one.rate, "accepted_per_sec_2": rate_2,
            "completed_per_sec_1": one.completed, "completed_per_sec_2": completed_2,
            "writer_cpu_us_per_task_1": one.writer_us,
        }));
    }
    report.table(
        &[
            "store",
            "accepted/s, 1 thread",
            "2 threads",
            "2 ÷ 1",
            "completed/s, 1 thread",
            "2 threads",
            "2 ÷ 1",
            "writer µs/task, 1 thread",
        ],
        &scaling_rows,
    );
    let recovery = recovery(&runtime, &dir, if quick { 10_000 } else { 100_000 })?;
    report.line(&format!(
        "\nRecovery: {} unfinished tasks (sleeping, `sqlite, full`) in the store of a host killed \
         with SIGKILL; the host started again on it answered after {:.1} s, with {} live again.",
        recovery["unfinished"],
        recovery["secs"].as_f64().unwrap_or(f64::NAN),
        recovery["live_after"]
    ));
    let _ = std::fs::remove_dir_all(&dir);
    Ok(json!({"stores": results, "threads": scaling, "recovery": recovery}))
}

/// One store's run of section 6's load.
struct Measured {
    rate: f64,
    /// Tasks that exited 0 per second, over the load and the drain after it.
    completed: f64,
    cpu_us: f64,
    /// The store's writer thread's CPU per accepted task, for a store with one.
    writer_us: Option<f64>,
    outcome: loadgen::Outcome,
    totals: Value,
    commits: f64,
    batches: f64,
    drained: Duration,
}

/// Starts `kind` (`floor` or `host`, with `args`), loads it for `secs`, and drains it.
fn measure_store(
    runtime: &tokio::runtime::Runtime,
    kind: &str,
    args: &[&str],
    secs: u64,
) -> anyhow::Result<Measured> {
    let mut extra = args.to_vec();
    if kind == "host" {
        extra.extend(["--capacity", "200000"]);
    }
    let server = Server::start(kind, &extra)?;
    let cpu_before = server.cpu_secs();
    // The durable stores' one writer thread (issue #23: it must not be the ceiling).
    let writer_cpu = || procfs::threads_cpu_secs(server.child.id(), "store-writer");
    let writer_before = writer_cpu();
    let outcome = runtime.block_on(loadgen::run(Load {
        addr: server.addr,
        connections: 64,
        duration: Duration::from_secs(secs),
        rate: None,
        durations: Durations::Seed,
    }));
    let metrics = get(server.addr, "/metrics").unwrap_or_default();
    let drain_began = Instant::now();
    let totals = server.drain(Duration::from_secs(15));
    let drained = drain_began.elapsed();
    // What a user gets done: tasks that exited 0, over the load and the drain after it
    // (issue #23, item 7: accepting more than can start only lengthens the drain).
    let completed = totals["tasks"]["exited_ok"].as_f64().unwrap_or(0.0)
        / (outcome.elapsed + drained).as_secs_f64();
    let cpu = server.cpu_secs() - cpu_before;
    let writer_us = writer_before
        .zip(writer_cpu())
        .map(|(before, after)| (after - before) * 1e6 / outcome.accepted.max(1) as f64);
    Ok(Measured {
        rate: outcome.accepted_per_sec(),
        completed,
        cpu_us: cpu * 1e6 / outcome.accepted.max(1) as f64,
        writer_us,
        commits: metric(&metrics, "http_spawn_store_commits_total"),
        batches: metric(&metrics, "http_spawn_store_batches_total"),
        totals,
        outcome,
        drained,
    })
}

/// Fills a SQLite store with about `n` long sleeping tasks, kills its host, and times how long
/// a new host takes on it until it answers, every task recovered.
fn recovery(runtime: &tokio::runtime::Runtime, dir: &Path, n: u32) -> anyhow::Result<Value> {
    let store = format!("sqlite:{}", dir.join("recovery.db").display());
    let capacity = n.to_string();
    let args = [
        "--store",
        store.as_str(),
        "--capacity",
        &capacity,
        "--max-queue",
        "0",
    ];
    let server = Server::start("host", &args)?;
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut live = 0;
    while live < u64::from(n) && Instant::now() < deadline {
        runtime.block_on(loadgen::run(Load {
            addr: server.addr,
            connections: 64,
            duration: Duration::from_secs(2),
            rate: None,
            durations: Durations::Fixed(3600),
        }));
        live = health(server.addr).map_or(0, |health| health["live"].as_u64().unwrap_or(0));
    }
    drop(server);
    let begun = Instant::now();
    let server = Server::start("host", &args)?;
    let secs = begun.elapsed().as_secs_f64();
    let live_after = health(server.addr).map_or(0, |health| health["live"].as_u64().unwrap_or(0));
    Ok(json!({"unfinished": live, "secs": secs, "live_after": live_after}))
}

// ---------------------------------------------------------------------------------------------
// 4. Fuel

/// One run of the compute worker on one engine, from its payload to its exit code (-1 for a
/// failure).
type RunKernel<'a> = dyn Fn(&str) -> i32 + 'a;

/// Instances held live at once to count what one costs in kernel mappings, as the host's own
/// start-up probe does.
const MAPPING_PROBE_INSTANCES: usize = 64;

/// The host's engine in the layouts section 4 compares, as its tables name them: the host's
/// own, and the two with signal-based traps it does not run.
const LAYOUTS: [(EngineLayout, &str); 3] = [
    (EngineLayout::Host, "signals off"),
    (EngineLayout::SignalsOn, "signals on"),
    (EngineLayout::Guarded, "signals on, guarded"),
];

fn section_fuel(report: &mut Report, quick: bool) -> anyhow::Result<Value> {
    report.line("\n## 4. Fuel metering: compute kernels, median of runs\n");
    let module = guest("compute");
    let fuel_on = naive::Naive::new(&module, true)?;
    let fuel_off = naive::Naive::new(&module, false)?;
    let ours = our_sandbox(&module, 8, true)?;
    let ours_no_epoch = our_sandbox(&module, 8, false)?;
    let copy = |layout, capacity| {
        naive::Naive::host_like(&module, layout, capacity, BENCH_MAX_MEMORY_BYTES)
    };
    // Pools the size of `ours`: 8 task places.
    let [copy_off, copy_on, copy_guarded] = LAYOUTS.map(|(layout, _)| copy(layout, 8));
    let (copy_off, copy_on, copy_guarded) = (copy_off?, copy_on?, copy_guarded?);
    let kernels = [
        ("integer hash", 0, 20_000_000),
        ("prime sieve", 1, 4_000_000),
        ("recursive fib", 2, 30),
        ("insertion sort", 3, 6_000),
        ("JSON parse + serialise", 4, 500),
    ];
    let naive_run = |naive: &naive::Naive, payload: &str| naive.run(Some(payload)).unwrap_or(-1);
    let engines: [(&str, &RunKernel); 7] = [
        ("fuel off", &|p| naive_run(&fuel_off, p)),
        ("fuel on", &|p| naive_run(&fuel_on, p)),
        ("ours, no epochs", &|p| run_ours(&ours_no_epoch, Some(p))),
        ("ours", &|p| run_ours(&ours, Some(p))),
        (LAYOUTS[0].1, &|p| naive_run(&copy_off, p)),
        (LAYOUTS[1].1, &|p| naive_run(&copy_on, p)),
        (LAYOUTS[2].1, &|p| naive_run(&copy_guarded, p)),
    ];
    let rounds = if quick { 3 } else { 9 };
    let mut rows = Vec::new();
    let mut signal_rows = Vec::new();
    let mut results = Vec::new();
    let mut fuel_ratios = Vec::new();
    let mut ours_ratios = Vec::new();
    let mut on_ratios = Vec::new();
    let mut guarded_ratios = Vec::new();
    let mut guarded_fuel = Vec::new();
    for (name, kernel, n) in kernels {
        let payload = format!("{{\"kernel\":{kernel},\"n\":{n}}}");
        // A run that failed would time only its failure: every engine must compute the same
        // checksum. This first run also faults in each engine's memory before the timed ones.
        let codes = engines.map(|(engine, run)| (engine, run(&payload)));
        if codes
            .iter()
            .any(|&(_, code)| code < 0 || code != codes[0].1)
        {
            bail!("{name}: the engines' exit codes differ or show a failure: {codes:?}");
        }
        // One run of every engine a round, so that a burst of load from elsewhere on the
        // machine slows them alike rather than one engine's whole series.
        let mut samples = engines.map(|_| Vec::new());
        for _ in 0..rounds {
            for ((_, run), samples) in engines.iter().zip(&mut samples) {
                let begun = Instant::now();
                std::hint::black_box(run(&payload));
                samples.push(begun.elapsed().as_secs_f64() * 1e3);
            }
        }
        let [
            off,
            on,
            no_epoch_ms,
            ours_ms,
            copy_off_ms,
            on_ms,
            guarded_ms,
        ] = samples.map(|mut samples| median(&mut samples));
        fuel_ratios.push(on / off);
        ours_ratios.push(ours_ms / off);
        on_ratios.push(on_ms / copy_off_ms);
        guarded_ratios.push(guarded_ms / copy_off_ms);
        guarded_fuel.push(guarded_ms / off);
        rows.push(vec![
            name.to_owned(),
            format!("{off:.1}"),
            format!("{on:.1}"),
            format!("{:.2}×", on / off),
            format!("{no_epoch_ms:.1}"),
            format!("{:.2}×", no_epoch_ms / off),
            format!("{ours_ms:.1}"),
            format!("{:.2}×", ours_ms / off),
        ]);
        signal_rows.push(vec![
            name.to_owned(),
            format!("{copy_off_ms:.1}"),
            format!("{:.2}×", copy_off_ms / ours_ms),
            format!("{on_ms:.1}"),
            format!("{:.2}×", on_ms / copy_off_ms),
            format!("{guarded_ms:.1}"),
            format!("{:.2}×", guarded_ms / copy_off_ms),
            format!("{:.2}×", guarded_ms / off),
        ]);
        results.push(json!({
            "kernel": name,
            "fuel_off_ms": off,
            "fuel_on_ms": on,
            "ours_no_epoch_ms": no_epoch_ms,
            "ours_ms": ours_ms,
            "signals_off_ms": copy_off_ms,
            "signals_on_ms": on_ms,
            "signals_on_guarded_ms": guarded_ms,
        }));
    }
    report.table(
        &[
            "kernel",
            "fuel off ms",
            "fuel on ms",
            "fuel on ÷ off",
            "ours, no epochs, ms",
            "÷ fuel off",
            "ours ms",
            "ours ÷ fuel off",
        ],
        &rows,
    );
    let median_fuel = median(&mut fuel_ratios);
    let median_ours = median(&mut ours_ratios);
    report.line(&format!(
        "\nmedian across kernels: fuel overhead {median_fuel:.2}×; ours ÷ fuel off {median_ours:.2}× \
         (the target: ≤ 1.3×)"
    ));
    report.line(
        "(fuel off / on = wasmtime's default configuration; ours = the host's engine: fuel, epoch \
         interruption, explicit bounds checks, no signal handlers; \"no epochs\" = the same with \
         --epoch-interruption false)",
    );

    report.line(
        "\nSignal-based traps: the host's engine (fuel, epochs, its pool) run by the bench's \
         driver, with signals off as the host has them (\"÷ ours\" checks the driver against \
         the host's own), on with the host's slots, and on with wasmtime's default reservation \
         and guard regions (bounds checks elided):\n",
    );
    report.table(
        &[
            "kernel",
            "signals off ms",
            "÷ ours",
            "signals on ms",
            "÷ signals off",
            "on, guarded, ms",
            "÷ signals off",
            "÷ fuel off",
        ],
        &signal_rows,
    );
    let median_on = median(&mut on_ratios);
    let median_guarded = median(&mut guarded_ratios);
    let median_guarded_fuel = median(&mut guarded_fuel);
    report.line(&format!(
        "\nmedian across kernels: signals on ÷ off {median_on:.2}×; on, guarded ÷ off \
         {median_guarded:.2}× (÷ fuel off {median_guarded_fuel:.2}×)"
    ));

    // What forced signals off: with them on, live instances split the pool's mapping. Each
    // engine is built afresh here, so that what its pool costs up front is counted too.
    drop((copy_off, copy_on, copy_guarded));
    let live = MAPPING_PROBE_INSTANCES;
    let capacity = live as u32;
    let mut mappings = vec![(
        "plain wasmtime",
        naive::Naive::mapping_cost(|| naive::Naive::new(&module, false), live)?,
    )];
    for (layout, name) in LAYOUTS {
        let cost = naive::Naive::mapping_cost(|| copy(layout, capacity), live)?;
        mappings.push((name, cost));
    }
    report.line(&format!(
        "\nkernel mappings per live instance, {live} of the compute worker held live at once, \
         counted from before the instances and (in brackets) from before the engine: {}",
        mappings
            .iter()
            .map(|(engine, cost)| format!(
                "{engine} {:.2} ({:.2})",
                cost.per_live_instance, cost.per_instance_in_all
            ))
            .collect::<Vec<_>>()
            .join("; ")
    ));
    let mappings: serde_json::Map<_, _> = mappings
        .into_iter()
        .map(|(engine, cost)| {
            (
                engine.to_owned(),
                json!({
                    "per_live_instance": cost.per_live_instance,
                    "per_instance_in_all": cost.per_instance_in_all,
                }),
            )
        })
        .collect();
    Ok(json!({
        "kernels": results,
        "median_fuel_ratio": median_fuel,
        "median_ours_ratio": median_ours,
        "median_signals_on_ratio": median_on,
        "median_signals_on_guarded_ratio": median_guarded,
        "median_signals_on_guarded_fuel_off_ratio": median_guarded_fuel,
        "mappings_per_instance": mappings,
    }))
}

// ---------------------------------------------------------------------------------------------
// 5. k6

fn k6_binary() -> anyhow::Result<PathBuf> {
    let output = Command::new(repo_root().join("scripts/ensure-k6.sh"))
        .stderr(Stdio::inherit())
        .output()
        .context("finding k6")?;
    if !output.status.success() {
        bail!("k6 is not available");
    }
    Ok(PathBuf::from(String::from_utf8(output.stdout)?.trim()))
}

fn k6_run(k6: &Path, server: &Server, rate: u32, out: &Path, hold: &str) -> anyhow::Result<Value> {
    let summary = out.join(format!("k6-{rate}.json"));
    let status = Command::new(k6)
        .arg("run")
        .arg("--quiet")
        .arg(repo_root().join("k6.js"))
        .env("BASE_URL", format!("http://{}", server.addr))
        .env("START_RATE", (rate / 2).max(1).to_string())
        .env("PEAK_RATE", rate.to_string())
        .env("RAMP", "3s")
        .env("HOLD", hold)
        .env("COOL", "1s")
        .env("SUMMARY_JSON", &summary)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    let data: Value = serde_json::from_str(&std::fs::read_to_string(&summary)?)?;
    let metric = |name: &str, field: &str| {
        data["metrics"][name]["values"][field]
            .as_f64()
            .unwrap_or(0.0)
    };
    let thresholds_ok = data["metrics"]
        .as_object()
        .map(|metrics| {
            metrics.values().all(|m| {
                m["thresholds"]
                    .as_object()
                    .is_none_or(|t| t.values().all(|r| r["ok"].as_bool().unwrap_or(false)))
            })
        })
        .unwrap_or(false);
    Ok(json!({
        "rate": rate,
        "p50_ms": metric("spawn_response_time", "med"),
        "p95_ms": metric("spawn_response_time", "p(95)"),
        "p99_ms": metric("spawn_response_time", "p(99)"),
        "failure_rate": metric("task_failures", "rate"),
        "spawned": metric("tasks_spawned", "count"),
        "rejected": metric("tasks_rejected", "count"),
        "errored": metric("tasks_errored", "count"),
        "achieved_per_sec": metric("http_reqs", "rate"),
        "dropped": metric("dropped_iterations", "count"),
        "thresholds_ok": thresholds_ok && status.success(),
    }))
}

fn section_k6(report: &mut Report, out: &Path, quick: bool) -> anyhow::Result<Value> {
    report.line("\n## 5. The seed's k6 profile (k6.js) against the host, k6 on the same 2 cores\n");
    let k6 = k6_binary()?;
    let rates: &[u32] = if quick {
        &[500, 2000]
    } else {
        &[1000, 2000, 4000, 6000, 8000, 10_000, 12_000]
    };
    let hold = if quick { "3s" } else { "8s" };
    let mut rows = Vec::new();
    let mut results = Vec::new();
    for &rate in rates {
        let server = Server::start("host", &["--capacity", "200000"])?;
        let result = k6_run(&k6, &server, rate, out, hold)?;
        let alive = health(server.addr).is_some();
        rows.push(k6_row(&result, alive));
        results.push(result);
    }
    report.table(&K6_HEADER, &rows);

    report.line(
        "\nPast capacity: the host with --capacity 2000 --max-queue 1000 under 2,000/s of 1-5 s \
         tasks (~6,000 would be live):\n",
    );
    let server = Server::start("host", &["--capacity", "2000", "--max-queue", "1000"])?;
    let past = k6_run(&k6, &server, 2000, out, hold)?;
    let alive = health(server.addr).is_some();
    let totals = server.drain(Duration::from_secs(10));
    report.table(&K6_HEADER, &[k6_row(&past, alive)]);
    report.line(&format!(
        "accepted tasks that exited 0 afterwards: {} of {}",
        totals["tasks"]["exited_ok"], totals["tasks"]["spawned"]
    ));

    let points = |field: &str| -> Vec<(f64, f64)> {
        results
            .iter()
            .map(|r| {
                (
                    r["rate"].as_f64().unwrap_or(0.0),
                    r[field].as_f64().unwrap_or(0.0),
                )
            })
            .collect()
    };
    plot::write_svg(
        &out.join("latency-vs-rate.svg"),
        "k6.js response time against arrival rate",
        "peak arrival rate (requests/s)",
        "ms",
        false,
        &[
            ("p50", points("p50_ms")),
            ("p95", points("p95_ms")),
            ("p99", points("p99_ms")),
        ],
    )?;
    Ok(json!({"rates": results, "past_capacity": past, "past_capacity_totals": totals}))
}

const K6_HEADER: [&str; 12] = [
    "peak rate/s",
    "k6 sent/s (whole run)",
    "k6 dropped",
    "p50 ms",
    "p95 ms",
    "p99 ms",
    "failures",
    "spawned",
    "429/503",
    "errors",
    "thresholds",
    "host up after",
];

fn k6_row(result: &Value, alive: bool) -> Vec<String> {
    vec![
        result["rate"].to_string(),
        format!("{:.0}", result["achieved_per_sec"].as_f64().unwrap_or(0.0)),
        format!("{:.0}", result["dropped"].as_f64().unwrap_or(0.0)),
        format!("{:.2}", result["p50_ms"].as_f64().unwrap_or(0.0)),
        format!("{:.2}", result["p95_ms"].as_f64().unwrap_or(0.0)),
        format!("{:.2}", result["p99_ms"].as_f64().unwrap_or(0.0)),
        format!(
            "{:.2} %",
            result["failure_rate"].as_f64().unwrap_or(0.0) * 100.0
        ),
        format!("{:.0}", result["spawned"].as_f64().unwrap_or(0.0)),
        format!("{:.0}", result["rejected"].as_f64().unwrap_or(0.0)),
        format!("{:.0}", result["errored"].as_f64().unwrap_or(0.0)),
        if result["thresholds_ok"] == true {
            "met".into()
        } else {
            "missed".into()
        },
        if alive { "yes".into() } else { "NO".into() },
    ]
}
