//! `make reliability`: the host under hostile guests, a soak of a million tasks, overload past
//! its capacity and a crash under load, each against the release binary on a free loopback
//! port, bounded in time and count. Prints one line per case with its figures and PASS, FAIL
//! or SKIP, and exits non-zero if any case failed. Progress goes to stderr. RELIABILITY.md says
//! what each case tries and why its criteria are what they are.

mod api;
mod crash;
mod hooks;
mod host;
mod hostile;
mod kills;
mod lag;
mod limits;
mod mixed;
mod overload;
mod schedules;
mod soak;
mod store_lock;
mod storm;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Parser;

#[derive(Debug, Parser)]
#[command(about = "http-spawn's reliability suite (make reliability)")]
pub struct Args {
    /// Scales every case's counts and durations: 1 is the full suite, 0.05 a quick look.
    #[arg(long, env = "RELIABILITY_SCALE", default_value_t = 1.0)]
    pub scale: f64,
    /// The same as `--scale 0.05`.
    #[arg(long)]
    pub quick: bool,
    /// Run only these cases (comma-separated): hostile, storm, soak, overload, lag, crash,
    /// fuzz-api, http, store-lock, schedules, limits.
    #[arg(long, env = "RELIABILITY_ONLY", value_delimiter = ',')]
    pub only: Vec<String>,
    /// Submissions per second in the hostile case (both its loads); the storm case takes at
    /// most 1,000 of them.
    #[arg(long, env = "RELIABILITY_HOSTILE_RATE", default_value_t = 3000.0)]
    pub hostile_rate: f64,
    /// The hostile workers the hostile case mixes in, in turn (all seven by default): spin,
    /// membomb, recurse, panic, abort, sleeper, chatty. Fewer, to find which one hurts.
    #[arg(long, env = "RELIABILITY_HOSTILE_KINDS", value_delimiter = ',')]
    pub hostile_kinds: Vec<String>,
    /// Submissions per second in the soak.
    #[arg(long, env = "RELIABILITY_SOAK_RATE", default_value_t = 4000.0)]
    pub soak_rate: f64,
    /// Longest each hook (fuzz-api, the HTTP tests) may run before it is stopped and fails.
    #[arg(long, env = "RELIABILITY_HOOK_TIMEOUT_SECS", default_value_t = 600)]
    pub hook_timeout_secs: u64,
    /// Extra flags for every host the suite starts (space-separated), e.g. `--worker-threads
    /// 1`, to see what a setting changes.
    #[arg(long, env = "RELIABILITY_HOST_ARGS", allow_hyphen_values = true)]
    pub host_args: Option<String>,
    /// Keep every case's directory (host logs, stores, k6 summaries), not only a failed one's.
    #[arg(long)]
    pub keep: bool,
}

impl Args {
    fn scale(&self) -> f64 {
        if self.quick { 0.05 } else { self.scale }
    }

    /// `full` scaled, never below `least`.
    pub fn scaled(&self, full: f64, least: f64) -> f64 {
        (full * self.scale()).max(least)
    }

    fn wants(&self, case: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|name| name == case)
    }
}

/// What a case found: its figures, and each criterion it missed. No misses is a pass.
#[derive(Debug, Default)]
pub struct Verdict {
    figures: Vec<String>,
    misses: Vec<String>,
    skipped: bool,
}

impl Verdict {
    /// A figure for the case's line.
    pub fn figure(&mut self, text: impl Into<String>) {
        self.figures.push(text.into());
    }

    /// A criterion: `ok`, or `miss` says what went wrong.
    pub fn check(&mut self, ok: bool, miss: impl FnOnce() -> String) {
        if !ok {
            self.misses.push(miss());
        }
    }

    /// A criterion that `found` is empty; else a miss: how many were `what`, and the first
    /// three.
    pub fn none<T: std::fmt::Debug>(&mut self, found: &[T], what: &str) {
        self.check(found.is_empty(), || {
            format!(
                "{} {what}, e.g. {:?}",
                found.len(),
                &found[..found.len().min(3)]
            )
        });
    }

    pub fn skip(reason: impl Into<String>) -> Self {
        Self {
            figures: vec![reason.into()],
            skipped: true,
            ..Self::default()
        }
    }

    fn passed(&self) -> bool {
        self.misses.is_empty()
    }
}

/// A new empty scratch directory for `case`: removed when the case passes, kept (and named on
/// its line) when it fails or `--keep` asks.
fn case_dir(case: &str) -> anyhow::Result<PathBuf> {
    let path = suite_dir().join(case);
    let _ = std::fs::remove_dir_all(&path);
    std::fs::create_dir_all(&path)?;
    Ok(path)
}

/// Where this run's case directories go.
fn suite_dir() -> PathBuf {
    std::env::temp_dir().join(format!("http-spawn-reliability-{}", std::process::id()))
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A test worker component `make build-guest` builds: `default` or one of guest/examples.
pub fn guest(name: &str) -> PathBuf {
    let dir = repo_root().join("target/wasm32-wasip2/guest");
    if name == "default" {
        dir.join("http_spawn_guest.wasm")
    } else {
        dir.join("examples").join(format!("{name}.wasm"))
    }
}

/// A progress line on stderr, apart from the case lines on stdout.
pub fn progress(case: &str, text: &str) {
    eprintln!("[{case}] {text}");
}

/// The runtime the load generator runs on: one thread, which sends thousands of requests a
/// second and leaves the rest of the machine to the host.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?)
}

/// `bytes` in MiB with one decimal, for a figure.
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}

/// How long a case waits for its tasks to end once the load stops: a bound against a hang,
/// not a timing criterion.
pub const DRAIN_PATIENCE: Duration = Duration::from_secs(120);

type Case = fn(&Args, &Path) -> anyhow::Result<Verdict>;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let cases: [(&str, Case); 11] = [
        ("hostile", hostile::run),
        ("storm", storm::run),
        ("soak", soak::run),
        ("overload", overload::run),
        ("lag", lag::run),
        ("crash", crash::run),
        ("fuzz-api", hooks::fuzz_api),
        ("http", hooks::http_tests),
        ("store-lock", store_lock::run),
        ("schedules", schedules::run),
        ("limits", limits::run),
    ];
    for name in &args.only {
        anyhow::ensure!(
            cases.iter().any(|(case, _)| case == name),
            "no case {name:?}: the cases are {}",
            cases.map(|(case, _)| case).join(", ")
        );
    }
    let started = Instant::now();
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    for (name, case) in cases {
        if !args.wants(name) {
            continue;
        }
        let dir = case_dir(name)?;
        let begun = Instant::now();
        progress(name, &format!("starting (scale {})", args.scale()));
        let verdict = case(&args, &dir).unwrap_or_else(|error| Verdict {
            misses: vec![format!("error: {error:#}")],
            ..Verdict::default()
        });
        let secs = begun.elapsed().as_secs();
        let status = if verdict.skipped {
            skipped += 1;
            "SKIP"
        } else if verdict.passed() {
            passed += 1;
            "PASS"
        } else {
            failed += 1;
            "FAIL"
        };
        let mut line = format!(
            "{name:<9} {status}  {} ({secs} s)",
            verdict.figures.join("; ")
        );
        if !verdict.passed() {
            line.push_str(&format!(
                " -- missed: {}; kept {}",
                verdict.misses.join("; "),
                dir.display()
            ));
        } else if !args.keep {
            let _ = std::fs::remove_dir_all(&dir);
        }
        println!("{line}");
        let _ = std::io::stdout().flush();
    }
    // Removed only when empty: a failed case's directory stays.
    let _ = std::fs::remove_dir(suite_dir());
    println!(
        "reliability: {passed} passed, {failed} failed, {skipped} skipped in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    if failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}
