//! The host's configuration: one clap struct, every option also settable as `HTTP_SPAWN_*` in
//! the environment, parsed once in `main` and passed down.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

/// The module `make build-guest` produces, relative to the repository root.
pub const DEFAULT_MODULE: &str = "target/wasm32-wasip2/guest/http_spawn_guest.wasm";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// About 10 ms of guest compute per step on this class of machine.
pub const DEFAULT_FUEL_PER_STEP: u64 = 20_000_000;
pub const DEFAULT_MAX_MEMORY_MIB: u32 = 16;
pub const DEFAULT_MAX_DURATION_SECS: u32 = 3_600;
/// The seed's duration when a request names none.
pub const DEFAULT_DURATION_SECS: u32 = 3;
pub const DEFAULT_CAPACITY: u32 = 100_000;
pub const DEFAULT_MAX_HISTORY: usize = 10_000;
pub const DEFAULT_MAX_LOG_BYTES: usize = 16 * 1024;
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;
pub const DEFAULT_MAX_NAME_BYTES: usize = 256;
/// How long a client refused for capacity is asked to wait.
pub const DEFAULT_RETRY_AFTER_SECS: u32 = 1;

/// A WebAssembly-sandboxed task host: every task runs in its own wasmtime instance.
#[derive(Debug, Clone, Parser)]
#[command(name = "http-spawn", version, about)]
pub struct Config {
    /// Address the HTTP API listens on.
    #[arg(long, env = "HTTP_SPAWN_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,

    /// The worker component every task runs.
    #[arg(long, env = "HTTP_SPAWN_MODULE", default_value = DEFAULT_MODULE)]
    pub module: PathBuf,

    /// Scheduler threads running guest code [default: the number of CPUs].
    #[arg(long, env = "HTTP_SPAWN_WORKERS")]
    pub workers: Option<usize>,

    /// Threads serving HTTP [default: the number of CPUs].
    #[arg(long, env = "HTTP_SPAWN_HTTP_THREADS")]
    pub http_threads: Option<usize>,

    /// Fuel (about one wasm instruction each) a task may burn per step before it is stopped.
    #[arg(long, env = "HTTP_SPAWN_FUEL_PER_STEP", default_value_t = DEFAULT_FUEL_PER_STEP)]
    pub fuel_per_step: u64,

    /// Linear memory cap per task, in MiB.
    #[arg(long, env = "HTTP_SPAWN_MAX_MEMORY_MIB", default_value_t = DEFAULT_MAX_MEMORY_MIB,
          value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub max_memory_mib: u32,

    /// Longest duration a request may ask for, in seconds.
    #[arg(long, env = "HTTP_SPAWN_MAX_DURATION_SECS", default_value_t = DEFAULT_MAX_DURATION_SECS)]
    pub max_duration_secs: u32,

    /// Most tasks live at once; further requests get 503. Lowered at start if the kernel's
    /// vm.max_map_count could not hold that many instances.
    #[arg(long, env = "HTTP_SPAWN_CAPACITY", default_value_t = DEFAULT_CAPACITY,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub capacity: u32,

    /// Ended tasks kept for GET /api/tasks/{pid}.
    #[arg(long, env = "HTTP_SPAWN_MAX_HISTORY", default_value_t = DEFAULT_MAX_HISTORY)]
    pub max_history: usize,

    /// Bytes of log and output kept per task.
    #[arg(long, env = "HTTP_SPAWN_MAX_LOG_BYTES", default_value_t = DEFAULT_MAX_LOG_BYTES)]
    pub max_log_bytes: usize,

    /// Largest request body accepted, in bytes.
    #[arg(long, env = "HTTP_SPAWN_MAX_BODY_BYTES", default_value_t = DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,
}

impl Config {
    /// The scheduler threads to start.
    pub fn workers(&self) -> usize {
        self.workers.unwrap_or_else(cpus).max(1)
    }

    /// The HTTP runtime's worker threads.
    pub fn http_threads(&self) -> usize {
        self.http_threads.unwrap_or_else(cpus).max(1)
    }

    /// The memory cap per task, in bytes.
    pub fn max_memory_bytes(&self) -> usize {
        self.max_memory_mib as usize * 1024 * 1024
    }
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}
