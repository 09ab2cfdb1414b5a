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
/// Linear memory per task. The default worker needs 128 KiB; a worker built on Rust's `std`
/// for wasm32-wasip2 reserves a 1 MiB stack and needs `--max-memory 16MiB` or so. Below 2 MiB,
/// neighbouring tasks' memory slots share the kernel's page-table pages.
pub const DEFAULT_MAX_MEMORY: &str = "1MiB";
/// Linear memory is allotted in wasm pages of 64 KiB.
pub const WASM_PAGE_BYTES: u64 = 64 * 1024;
pub const DEFAULT_MAX_DURATION_SECS: u32 = 3_600;
/// The seed's duration when a request names none.
pub const DEFAULT_DURATION_SECS: u32 = 3;
pub const DEFAULT_CAPACITY: u32 = 100_000;
pub const DEFAULT_MAX_HISTORY: usize = 10_000;
pub const DEFAULT_MAX_LOG_BYTES: usize = 16 * 1024;
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;
pub const DEFAULT_MAX_NAME_BYTES: usize = 256;
/// How long running tasks get to end on SIGTERM or ctrl-c before they are killed.
pub const DEFAULT_SHUTDOWN_GRACE_SECS: u64 = 10;
/// What a task's wall-clock limit adds to its duration when the request names none.
pub const DEFAULT_DEADLINE_GRACE_SECS: u32 = 30;
/// Tasks that may wait for a place when every place is taken; more get 429.
pub const DEFAULT_MAX_QUEUE: usize = 10_000;
/// Live event streams (SSE) open at once; more get 429.
pub const DEFAULT_MAX_SUBSCRIBERS: usize = 256;
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

    /// Linear memory cap per task: bytes, or with a unit (`512KiB`, `1MiB`, `16MiB`), a whole
    /// number of 64 KiB wasm pages, at most 4 GiB.
    #[arg(long, env = "HTTP_SPAWN_MAX_MEMORY", default_value = DEFAULT_MAX_MEMORY,
          value_parser = parse_memory_size)]
    pub max_memory: u64,

    /// Longest duration a request may ask for, in seconds.
    #[arg(long, env = "HTTP_SPAWN_MAX_DURATION_SECS", default_value_t = DEFAULT_MAX_DURATION_SECS)]
    pub max_duration_secs: u32,

    /// Most tasks live at once; further ones wait in the queue (--max-queue). Lowered at start if the kernel's
    /// vm.max_map_count could not hold that many instances.
    #[arg(long, env = "HTTP_SPAWN_CAPACITY", default_value_t = DEFAULT_CAPACITY,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub capacity: u32,

    /// Accepted tasks that may wait for a place, first in first out; past it, 429.
    #[arg(long, env = "HTTP_SPAWN_MAX_QUEUE", default_value_t = DEFAULT_MAX_QUEUE)]
    pub max_queue: usize,

    /// Ended tasks kept for GET /api/tasks/{pid}.
    #[arg(long, env = "HTTP_SPAWN_MAX_HISTORY", default_value_t = DEFAULT_MAX_HISTORY)]
    pub max_history: usize,

    /// Bytes of log and output kept per task.
    #[arg(long, env = "HTTP_SPAWN_MAX_LOG_BYTES", default_value_t = DEFAULT_MAX_LOG_BYTES)]
    pub max_log_bytes: usize,

    /// On SIGTERM or ctrl-c: seconds running tasks get to end before they are killed. New
    /// submissions get 503 meanwhile.
    #[arg(long, env = "HTTP_SPAWN_SHUTDOWN_GRACE_SECS", default_value_t = DEFAULT_SHUTDOWN_GRACE_SECS)]
    pub shutdown_grace_secs: u64,

    /// Check running steps every 2 ms for kills and deadlines (epoch interruption). With
    /// `false`, a kill or deadline lands when the step returns (within its fuel budget) and
    /// loop-heavy guest code runs faster; see BENCHMARKS.md.
    #[arg(long, env = "HTTP_SPAWN_EPOCH_INTERRUPTION", default_value_t = true,
          action = clap::ArgAction::Set)]
    pub epoch_interruption: bool,

    /// A task's default wall-clock limit is its duration plus this; a request may ask for a
    /// limit of at most --max-duration-secs plus this.
    #[arg(long, env = "HTTP_SPAWN_DEADLINE_GRACE_SECS", default_value_t = DEFAULT_DEADLINE_GRACE_SECS)]
    pub deadline_grace_secs: u32,

    /// Event streams (`/api/events`, `/api/tasks/{pid}/events`) open at once; more get 429.
    #[arg(long, env = "HTTP_SPAWN_MAX_SUBSCRIBERS", default_value_t = DEFAULT_MAX_SUBSCRIBERS)]
    pub max_subscribers: usize,

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
        usize::try_from(self.max_memory).unwrap_or(usize::MAX)
    }
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// Parses a memory size: `65536`, `64KiB`, `1MiB`, `2GiB` (also `K`, `M`, `G`, `KB`…, all
/// binary), which must be a whole number of wasm pages between one page and 4 GiB.
pub fn parse_memory_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size such as 1MiB"))?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => return Err(format!("unknown unit {other:?}; use KiB, MiB or GiB")),
    };
    let bytes = number
        .checked_mul(scale)
        .filter(|&bytes| (WASM_PAGE_BYTES..=4 << 30).contains(&bytes))
        .ok_or_else(|| format!("{text:?} is outside 64KiB..=4GiB"))?;
    if bytes % WASM_PAGE_BYTES != 0 {
        return Err(format!(
            "{text:?} is not a whole number of 64 KiB wasm pages"
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_memory_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_memory_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_memory_size("16M"), Ok(16 << 20));
        assert_eq!(parse_memory_size("65536"), Ok(65_536));
        assert_eq!(parse_memory_size("4GiB"), Ok(4 << 30));
        for bad in ["", "MiB", "1.5MiB", "100KiB", "0", "5GiB", "1 parsec"] {
            assert!(parse_memory_size(bad).is_err(), "{bad:?} accepted");
        }
    }
}
