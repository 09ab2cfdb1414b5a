//! The host's configuration: one clap struct, every option also settable as `HTTP_SPAWN_*` in
//! the environment, and optionally a registry file (`--config http-spawn.toml`) declaring the
//! server and the named workers. Parsed once in `main` and passed down.
//!
//! Precedence: a flag or environment variable given explicitly beats the file, which beats the
//! built-in default. The per-worker limit flags (`--fuel-per-step`, `--max-memory`,
//! `--max-duration-secs`) are the defaults of every worker; given explicitly, they override
//! every worker's own value, and `--module` overrides the default worker's module.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::builder::TypedValueParser as _;
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser};

mod file;

use file::{RegistryFile, WorkerName};

use std::time::Duration;

use crate::actor::ActorScope;
use crate::model::{CheckpointPolicy, OnHostLoss, RestartPolicy, parse_memory_size, parse_size};
use crate::store::StoreSync;

/// The worker tasks get when a request names none; always configured.
pub const DEFAULT_WORKER: &str = "default";

/// The module `make build-guest` produces, relative to the repository root.
pub const DEFAULT_MODULE: &str = "target/wasm32-wasip2/guest/http_spawn_guest.wasm";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// About 10 ms of guest compute per step on this class of machine.
pub const DEFAULT_FUEL_PER_STEP: u64 = 20_000_000;
/// Linear memory per task. The default worker needs 128 KiB; a worker built on Rust's `std`
/// for wasm32-wasip2 reserves a 1 MiB stack and needs `--max-memory 16MiB` or so. Below 2 MiB,
/// neighbouring tasks' memory slots share the kernel's page-table pages.
pub const DEFAULT_MAX_MEMORY: &str = "1MiB";
pub const DEFAULT_MAX_DURATION_SECS: u32 = 3_600;
pub const DEFAULT_CAPACITY: u32 = 100_000;
pub const DEFAULT_MAX_HISTORY: usize = 10_000;
pub const DEFAULT_MAX_LOG_BYTES: usize = 16 * 1024;
/// The start lag past which new tasks are held back (`--max-start-lag`).
const DEFAULT_MAX_START_LAG: &str = "100ms";
/// How long the SQLite store keeps running tasks' log lines before it writes them.
const DEFAULT_STORE_LOG_FLUSH: &str = "5s";
const DEFAULT_STORE_COMMIT_SPACING: &str = "2ms";

/// The bound on what waits for a durable store's writer (`--store-backlog`).
pub const DEFAULT_STORE_BACKLOG: &str = "64MiB";
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;
/// Niceness of the threads running guest code: below HTTP and the store's writer.
pub const DEFAULT_GUEST_NICE: u8 = 10;
/// HTTP connections open at once; lowered at start to what the file-descriptor limit allows.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// How long a client may take to send a request's head, or pause while sending its body.
/// `--max-wait-secs`: a minute, as long as a client may long-poll a task's end.
const DEFAULT_MAX_WAIT_SECS: u32 = 60;
pub const DEFAULT_READ_TIMEOUT_SECS: u64 = 10;
/// Largest request head (request line and headers) accepted; past it, 431. Servers people
/// trust refuse somewhere between 8 and 16 KiB.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 16 * 1024;
/// How much of a refused request's unread body the host reads and throws away so that a
/// client writing its whole body before reading gets the answer instead of a reset.
pub const DEFAULT_MAX_DISCARD_BYTES: usize = 16 * 1024 * 1024;
/// How long running tasks get to end on SIGTERM or ctrl-c before they are killed.
pub const DEFAULT_SHUTDOWN_GRACE_SECS: u64 = 10;
/// What a task's wall-clock limit adds to its duration when the request names none.
pub const DEFAULT_DEADLINE_GRACE_SECS: u32 = 30;
/// Tasks that may wait for a place when every place is taken; more get 429.
pub const DEFAULT_MAX_QUEUE: usize = 10_000;
/// Tasks accepted to run later that a host holds at once, by default.
pub const DEFAULT_MAX_SCHEDULED: usize = 100_000;
/// How far ahead a task may be scheduled, by default.
pub const DEFAULT_MAX_SCHEDULE_AHEAD: &str = "365d";
/// Messages one mailbox holds.
pub const DEFAULT_MAX_MAILBOX_MESSAGES: usize = 1024;
/// Largest message body.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Links plus monitors one task holds: enough for a task that watches 10,000 children.
pub const DEFAULT_MAX_WATCHES: usize = 16 * 1024;
/// The bytes one mailbox holds (`--max-mailbox-bytes`).
pub const DEFAULT_MAX_MAILBOX_BYTES: &str = "1MiB";
/// The bytes every mailbox holds together (`--max-mailboxes-bytes`).
pub const DEFAULT_MAX_MAILBOXES_BYTES: &str = "256MiB";
/// Live descendants of one task tree (`--max-descendants`).
pub const DEFAULT_MAX_DESCENDANTS: usize = 10_000;
/// Spawns of one task tree a second (`--max-spawns-per-sec`): a hundredth or so of what the
/// host can run, so that one request churns the default history (10,000 ended tasks) in no
/// less than about two minutes.
pub const DEFAULT_MAX_SPAWNS_PER_SEC: u32 = 100;
/// The largest result a task may return (`--max-result-bytes`).
pub const DEFAULT_MAX_RESULT_BYTES: &str = "1MiB";
/// Sends of one task in one step (`--max-sends-per-step`).
pub const DEFAULT_MAX_SENDS_PER_STEP: u32 = 10_000;
/// Live event streams (SSE) open at once; more get 429.
pub const DEFAULT_MAX_SUBSCRIBERS: usize = 256;
/// Of those, what one client holds.
pub const DEFAULT_MAX_SUBSCRIBERS_PER_CLIENT: usize = 32;
/// How long a stream may go without an event.
pub const DEFAULT_EVENT_STREAM_IDLE: &str = "5m";
/// Largest worker module an upload may carry.
pub const DEFAULT_MAX_MODULE_BYTES: usize = 16 * 1024 * 1024;
/// How often module files are checked for changes.
pub const DEFAULT_WATCH_INTERVAL_MS: u64 = 1_000;
/// The shortest admin token accepted: anything shorter is guessable.
pub const MIN_ADMIN_TOKEN_BYTES: usize = 16;
/// The shortest API token accepted, as for the admin token.
pub const MIN_API_TOKEN_BYTES: usize = 16;
/// How long ended tasks are kept at most.
pub const DEFAULT_HISTORY_TTL: &str = "7d";
/// How long a host of a cluster keeps its tasks without renewing its lease.
pub const DEFAULT_LEASE: &str = "10s";
/// How often a host of a cluster renews its lease.
pub const DEFAULT_HEARTBEAT: &str = "1s";
/// How often a host of a cluster looks at the shared queue and at commands for its tasks.
pub const DEFAULT_CLUSTER_POLL: &str = "100ms";
/// How long an idempotency key is remembered.
pub const DEFAULT_IDEMPOTENCY_TTL: &str = "24h";
/// How long a dashboard sign-in lasts.
pub const DEFAULT_SESSION_TTL: &str = "12h";

/// A size flag, as a number of bytes.
fn parse_size_usize(text: &str) -> Result<usize, String> {
    parse_size(text).and_then(|bytes| usize::try_from(bytes).map_err(|error| error.to_string()))
}

/// `--store-commit-spacing`: a duration of at most a second, since every acceptance may wait
/// for it.
fn parse_commit_spacing(text: &str) -> Result<Duration, String> {
    let spacing = humantime::parse_duration(text).map_err(|error| error.to_string())?;
    if spacing > Duration::from_secs(1) {
        return Err("at most 1s: every acceptance may wait this long for its commit".into());
    }
    Ok(spacing)
}

/// `--store-backlog`: a size, as a number of bytes.
fn parse_backlog_size(text: &str) -> Result<usize, String> {
    parse_size(text).and_then(|bytes| usize::try_from(bytes).map_err(|error| error.to_string()))
}
/// The `--store` value that keeps nothing across restarts.
pub const STORE_MEMORY: &str = "memory";
/// The `--cache-dir` value that turns the compiled-module cache off.
pub const CACHE_OFF: &str = "off";

/// A WebAssembly-sandboxed task host: every task runs in its own wasmtime instance.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "http-spawn",
    version,
    about,
    after_help = "Client subcommands talk to a running host: spawn, ps, get, logs, kill, send, \
                  call, events, workers, schedules, cluster, health, top, completions. See \
                  `http-spawn help`."
)]
pub struct Config {
    /// Address the HTTP API listens on.
    #[arg(long, env = "HTTP_SPAWN_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,

    /// A registry file (TOML) declaring the server and named workers; see http-spawn.toml.
    #[arg(long, env = "HTTP_SPAWN_CONFIG")]
    pub config: Option<PathBuf>,

    /// The default worker's component: what tasks run when they name no worker.
    #[arg(long, env = "HTTP_SPAWN_MODULE", default_value = DEFAULT_MODULE)]
    pub module: PathBuf,

    /// Scheduler threads running guest code [default: the number of CPUs].
    #[arg(long, env = "HTTP_SPAWN_WORKER_THREADS")]
    pub worker_threads: Option<usize>,

    /// Niceness of the scheduler threads (0-19): guest code yields the CPU to the threads that
    /// answer HTTP and write the store, so a burst of heavy guests does not slow submissions.
    /// 0 runs guests at the host's own priority.
    #[arg(long, env = "HTTP_SPAWN_GUEST_NICE", default_value_t = DEFAULT_GUEST_NICE,
          value_parser = clap::value_parser!(u8).range(0..=19))]
    pub guest_nice: u8,

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

    /// Tasks accepted to run later (`run_at`, `delay`) that wait here at once; past it, 429.
    /// In a cluster, they wait in the shared queue in the database instead, not counted here.
    #[arg(long, env = "HTTP_SPAWN_MAX_SCHEDULED", default_value_t = DEFAULT_MAX_SCHEDULED)]
    pub max_scheduled: usize,

    /// How far ahead a task may be scheduled (`run_at`, `delay`), e.g. `30d`; at most 100
    /// years.
    #[arg(long, env = "HTTP_SPAWN_MAX_SCHEDULE_AHEAD", value_parser = schedule_ahead,
          default_value = DEFAULT_MAX_SCHEDULE_AHEAD)]
    pub max_schedule_ahead: Duration,

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

    /// On SIGTERM or ctrl-c, once the grace is over: a task whose checkpoint policy is not
    /// `off` and that waits between two steps is checkpointed and handed on, not killed. It
    /// stays running in the store and resumes when the host starts again, or, in a cluster, at
    /// once on another host (with a durable store). With `false`, it is killed like the
    /// others.
    #[arg(long, env = "HTTP_SPAWN_CHECKPOINT_ON_SHUTDOWN", default_value_t = true,
          action = clap::ArgAction::Set)]
    pub checkpoint_on_shutdown: bool,

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

    /// Messages one task's mailbox holds; a send past it is refused (HTTP 429, an error for
    /// a guest), never dropped.
    #[arg(long, env = "HTTP_SPAWN_MAX_MAILBOX_MESSAGES", default_value_t = DEFAULT_MAX_MAILBOX_MESSAGES,
          value_parser = clap::value_parser!(u32).range(1..).map(|n| n as usize))]
    pub max_mailbox_messages: usize,

    /// Largest message body, in bytes (HTTP 413, an error for a guest).
    #[arg(long, env = "HTTP_SPAWN_MAX_MESSAGE_BYTES", default_value_t = DEFAULT_MAX_MESSAGE_BYTES,
          value_parser = clap::value_parser!(u32).range(1..).map(|n| n as usize))]
    pub max_message_bytes: usize,

    /// Bytes of messages and notices one task's mailbox holds; a message past it is refused as
    /// when the mailbox is full.
    #[arg(long, env = "HTTP_SPAWN_MAX_MAILBOX_BYTES", default_value = DEFAULT_MAX_MAILBOX_BYTES,
          value_parser = parse_size_usize)]
    pub max_mailbox_bytes: usize,

    /// Bytes of messages and notices every mailbox holds together; a message past it is
    /// refused as when a mailbox is full.
    #[arg(long, env = "HTTP_SPAWN_MAX_MAILBOXES_BYTES", default_value = DEFAULT_MAX_MAILBOXES_BYTES,
          value_parser = parse_size_usize)]
    pub max_mailboxes_bytes: usize,

    /// Links plus monitors one task may hold at once.
    #[arg(long, env = "HTTP_SPAWN_MAX_WATCHES", default_value_t = DEFAULT_MAX_WATCHES,
          value_parser = clap::value_parser!(u32).range(1..).map(|n| n as usize))]
    pub max_watches: usize,

    /// Live tasks one task tree may hold on this host: a task submitted over HTTP and every
    /// task it spawned, and they spawned. A spawn past it is refused to the guest (`full`).
    #[arg(long, env = "HTTP_SPAWN_MAX_DESCENDANTS", default_value_t = DEFAULT_MAX_DESCENDANTS,
          value_parser = clap::value_parser!(u32).range(1..).map(|n| n as usize))]
    pub max_descendants: usize,

    /// Children one task tree may spawn a second, in bursts of up to ten seconds' worth (at
    /// most --max-descendants); a spawn past it is refused to the guest (`full`).
    #[arg(long, env = "HTTP_SPAWN_MAX_SPAWNS_PER_SEC", default_value_t = DEFAULT_MAX_SPAWNS_PER_SEC,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_spawns_per_sec: u32,

    /// Messages a task may send in one step; past it a send is refused as to a full mailbox,
    /// until its next step.
    #[arg(long, env = "HTTP_SPAWN_MAX_SENDS_PER_STEP", default_value_t = DEFAULT_MAX_SENDS_PER_STEP,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_sends_per_step: u32,

    /// The largest result a task may return (JSON text, e.g. `64KiB`). A task that returns
    /// more fails with the outcome `result_too_large`: a result is never cut.
    #[arg(long, env = "HTTP_SPAWN_MAX_RESULT_BYTES", default_value = DEFAULT_MAX_RESULT_BYTES,
          value_parser = parse_size_usize)]
    pub max_result_bytes: usize,

    /// Event streams (`/api/events`, `/api/tasks/{pid}/events`) open at once; more get 429.
    /// The dashboard has 32 more of its own.
    #[arg(long, env = "HTTP_SPAWN_MAX_SUBSCRIBERS", default_value_t = DEFAULT_MAX_SUBSCRIBERS)]
    pub max_subscribers: usize,

    /// Of those, the event streams one client (an address) holds; more get 429.
    #[arg(long, env = "HTTP_SPAWN_MAX_SUBSCRIBERS_PER_CLIENT",
          default_value_t = DEFAULT_MAX_SUBSCRIBERS_PER_CLIENT)]
    pub max_subscribers_per_client: usize,

    /// How long an event stream may go without an event before the host ends it (an
    /// `EventSource` connects again by itself), e.g. `5m`.
    #[arg(long, env = "HTTP_SPAWN_EVENT_STREAM_IDLE", value_parser = humantime::parse_duration,
          default_value = DEFAULT_EVENT_STREAM_IDLE)]
    pub event_stream_idle: Duration,

    /// Largest request body accepted, in bytes.
    #[arg(long, env = "HTTP_SPAWN_MAX_BODY_BYTES", default_value_t = DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,

    /// HTTP connections open at once. Past it, a new connection is answered 503 with
    /// Retry-After and closed. Lowered at start to fit the open-file limit.
    #[arg(long, env = "HTTP_SPAWN_MAX_CONNECTIONS", default_value_t = DEFAULT_MAX_CONNECTIONS,
          value_parser = clap::value_parser!(u32).range(1..).map(|n| n as usize))]
    pub max_connections: usize,

    /// The longest a client may wait for a task's end in one request, in seconds:
    /// `GET /api/tasks/{pid}/result?wait=` and a submission's `Prefer: wait=`.
    #[arg(long, env = "HTTP_SPAWN_MAX_WAIT_SECS", default_value_t = DEFAULT_MAX_WAIT_SECS,
          value_parser = clap::value_parser!(u32).range(0..=3600))]
    pub max_wait_secs: u32,

    /// Seconds a client has to send a request's headers (from connecting, or from the end of
    /// its previous request: idle connections close after it too), and the longest it may
    /// pause while sending a body.
    #[arg(long, env = "HTTP_SPAWN_READ_TIMEOUT_SECS", default_value_t = DEFAULT_READ_TIMEOUT_SECS,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub read_timeout_secs: u64,

    /// Largest request head (request line and headers), in bytes; past it, 431.
    #[arg(long, env = "HTTP_SPAWN_MAX_HEADER_BYTES", default_value_t = DEFAULT_MAX_HEADER_BYTES,
          value_parser = clap::value_parser!(u32).range(1024..=1_048_576).map(|n| n as usize))]
    pub max_header_bytes: usize,

    /// Bytes of a refused request's unread body read and thrown away so that the answer (413,
    /// 415, ...) reaches a client that writes its whole body before reading; past it, the
    /// connection is closed.
    #[arg(long, env = "HTTP_SPAWN_MAX_DISCARD_BYTES", default_value_t = DEFAULT_MAX_DISCARD_BYTES)]
    pub max_discard_bytes: usize,

    /// Bearer token for the admin endpoints (worker swap and rollback). Without one they are
    /// disabled. Prefer the environment variable: a flag shows in the process list.
    #[arg(long, env = "HTTP_SPAWN_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Bearer token the API and the dashboard require; repeat the flag, or separate tokens
    /// with commas, to accept any of several (while rotating one). Without one the API is open
    /// to whoever reaches --listen. Prefer the environment variable: a flag shows in the
    /// process list.
    #[arg(
        long = "api-token",
        value_name = "TOKEN",
        env = "HTTP_SPAWN_API_TOKEN",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub api_tokens: Vec<String>,

    /// Serve a --listen address other than loopback without an API token: anyone who reaches
    /// it may run code and kill tasks. Without this flag such a host refuses to start.
    #[arg(long, env = "HTTP_SPAWN_INSECURE_NO_AUTH",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub insecure_no_auth: bool,

    /// Largest worker module an upload may carry, in bytes.
    #[arg(long, env = "HTTP_SPAWN_MAX_MODULE_BYTES", default_value_t = DEFAULT_MAX_MODULE_BYTES)]
    pub max_module_bytes: usize,

    /// Where compiled modules are kept between runs [default: $XDG_CACHE_HOME/http-spawn or
    /// ~/.cache/http-spawn]; `off` compiles every time.
    #[arg(long, env = "HTTP_SPAWN_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,

    /// How often module files are checked for changes, in milliseconds; 0 stops watching.
    #[arg(long, env = "HTTP_SPAWN_WATCH_INTERVAL_MS", default_value_t = DEFAULT_WATCH_INTERVAL_MS)]
    pub watch_interval_ms: u64,

    /// How log lines are written: `text` for people, `json` (one object per line, with `pid`
    /// and `name` on every task line) for log pipelines. `RUST_LOG` filters either.
    #[arg(long, env = "HTTP_SPAWN_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Where tasks, their logs and worker versions are kept: `sqlite:PATH` (durable),
    /// `postgres://…` (shared: every host started against one database forms a cluster), or
    /// `memory` (forgotten at a restart) [default: sqlite:$XDG_DATA_HOME/http-spawn/tasks.db,
    /// or ~/.local/share/http-spawn/tasks.db].
    /// Its value is not shown by --help: a database URL may hold a password.
    #[arg(long, env = "HTTP_SPAWN_STORE", value_parser = StoreLocation::parse, hide_env_values = true)]
    pub store: Option<StoreLocation>,

    /// What a commit of the SQLite store waits for: `full`, the disk (every 202 survives a
    /// power cut), or `normal` (survives a crash of the host, not of the machine).
    #[arg(long, env = "HTTP_SPAWN_STORE_SYNC", value_enum, default_value_t = StoreSync::Full)]
    pub store_sync: StoreSync,

    /// Bytes of changes that may wait for a durable store's writer (SQLite, PostgreSQL) before
    /// the log lines of running tasks are shed: lines alone past half of it, every line past
    /// all of it. Acceptances, starts, ends, restarts and commands are always kept.
    #[arg(long, env = "HTTP_SPAWN_STORE_BACKLOG", default_value = DEFAULT_STORE_BACKLOG,
          value_parser = parse_backlog_size)]
    pub store_backlog: usize,

    /// How long the SQLite store keeps a running task's newest log lines in memory before it
    /// writes them (they are written with the task's end or restart at the latest, and the API
    /// shows them at once), e.g. `5s`; `0s` writes each line with the next commit. A host that
    /// crashes loses at most this much of its running tasks' lines.
    #[arg(long, env = "HTTP_SPAWN_STORE_LOG_FLUSH", value_parser = humantime::parse_duration,
          default_value = DEFAULT_STORE_LOG_FLUSH)]
    pub store_log_flush: Duration,

    /// The least time between the starts of two commits of the SQLite store while changes
    /// come fast, e.g. `2ms`: what comes meanwhile goes into the next commit, so that one flush
    /// to the disk serves more tasks. A commit after a pause starts at once; `0s` starts each
    /// as soon as the last one ends.
    #[arg(long, env = "HTTP_SPAWN_STORE_COMMIT_SPACING", value_parser = parse_commit_spacing,
          default_value = DEFAULT_STORE_COMMIT_SPACING)]
    pub store_commit_spacing: Duration,

    /// While a task accepted this long ago still waits for a scheduler thread to start it
    /// (e.g. `50ms`), new submissions wait for the host to catch up (up to ten times this, at
    /// most 500 ms), then are refused with `429` and `Retry-After`, instead of piling up work
    /// it cannot start; `0s` never holds them back. Tasks waiting for a place (`--max-queue`)
    /// are not counted.
    #[arg(long, env = "HTTP_SPAWN_MAX_START_LAG", value_parser = humantime::parse_duration,
          default_value = DEFAULT_MAX_START_LAG)]
    pub max_start_lag: Duration,

    /// This host's name in a cluster, shown in `GET /api/cluster` [default: the hostname and a
    /// short random id]. Names must be unique: a host that joins under the name of one still
    /// up replaces it, and takes its tasks over.
    #[arg(long, env = "HTTP_SPAWN_NODE_NAME")]
    pub node_name: Option<String>,

    /// Where clients and other hosts reach this host's API, shown in `GET /api/cluster`
    /// [default: the address it listens on].
    #[arg(long, env = "HTTP_SPAWN_ADVERTISE_ADDRESS")]
    pub advertise_address: Option<String>,

    /// How long a host of a cluster keeps its tasks without renewing its lease; after that
    /// they run again elsewhere, and the host, if it still runs, stops them.
    #[arg(long, env = "HTTP_SPAWN_LEASE", value_parser = humantime::parse_duration,
          default_value = DEFAULT_LEASE)]
    pub lease: Duration,

    /// How often a host of a cluster renews its lease, looks for lost hosts and for workers
    /// changed on another host. At most a third of --lease.
    #[arg(long, env = "HTTP_SPAWN_HEARTBEAT", value_parser = humantime::parse_duration,
          default_value = DEFAULT_HEARTBEAT)]
    pub heartbeat: Duration,

    /// How often a host of a cluster looks for tasks waiting in the shared queue (when it has
    /// free places) and for kills and messages other hosts sent to its tasks.
    #[arg(long, env = "HTTP_SPAWN_CLUSTER_POLL", value_parser = humantime::parse_duration,
          default_value = DEFAULT_CLUSTER_POLL)]
    pub cluster_poll: Duration,

    /// How long ended tasks are kept at most (also bounded by --max-history), e.g. `7d`.
    #[arg(long, env = "HTTP_SPAWN_HISTORY_TTL", value_parser = humantime::parse_duration,
          default_value = DEFAULT_HISTORY_TTL)]
    pub history_ttl: Duration,

    /// How long an `Idempotency-Key` is remembered, e.g. `24h`.
    #[arg(long, env = "HTTP_SPAWN_IDEMPOTENCY_TTL", value_parser = humantime::parse_duration,
          default_value = DEFAULT_IDEMPOTENCY_TTL)]
    pub idempotency_ttl: Duration,

    /// How long a dashboard sign-in lasts (the session cookie's lifetime), e.g. `12h`.
    #[arg(long, env = "HTTP_SPAWN_SESSION_TTL", value_parser = humantime::parse_duration,
          default_value = DEFAULT_SESSION_TTL)]
    pub session_ttl: Duration,

    /// The named workers, resolved from the file and the flags by [`Config::from_args`].
    #[arg(skip)]
    pub workers: Vec<WorkerConfig>,

    /// The registry file's schedules, each as JSON (`{cron, timezone, task, ...}`), by name.
    #[arg(skip)]
    pub schedules: Vec<(String, serde_json::Value)>,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// One named worker and the limits its tasks run under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerConfig {
    pub name: String,
    /// The component file, loaded at start and watched for changes.
    pub module: PathBuf,
    pub fuel_per_step: u64,
    /// Linear memory cap per task, in bytes.
    pub max_memory: u64,
    pub max_duration_secs: u32,
    /// The restart policy of its tasks when a request names none.
    pub restart: RestartPolicy,
    /// What becomes of its tasks when the host is lost, when a request names nothing.
    pub on_host_loss: OnHostLoss,
    /// Which tasks its tasks' actor calls reach.
    pub actor_scope: ActorScope,
    /// The priority of its tasks when a request names none, 0 to 9.
    pub priority: u8,
    /// At most this many of its tasks run at once (in a cluster, on all its hosts together);
    /// the others wait.
    pub max_running: Option<u32>,
    /// At most this many of its tasks of one `concurrency_key` run at once; the others wait.
    pub per_key_running: Option<u32>,
    /// At most this many of its tasks start per period (per key, for tasks with one).
    pub rate: Option<Rate>,
    /// When its tasks are checkpointed between steps, when a request names nothing.
    pub checkpoint: CheckpointPolicy,
}

impl WorkerConfig {
    /// Its concurrency and rate limits.
    pub fn limits(&self) -> FlowLimits {
        FlowLimits {
            max_running: self.max_running,
            per_key_running: self.per_key_running,
            rate: self.rate,
        }
    }
}

/// The most `max_running` or `per_key_running` set over the API may be.
pub const MAX_LIMIT: u32 = 1_000_000;

/// A worker's concurrency and rate limits; none set, it has none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowLimits {
    pub max_running: Option<u32>,
    pub per_key_running: Option<u32>,
    pub rate: Option<Rate>,
}

impl FlowLimits {
    /// Whether any limit is set.
    pub fn any(&self) -> bool {
        self.max_running.is_some() || self.per_key_running.is_some() || self.rate.is_some()
    }

    /// As the store keeps limits set over the API: `{"max_running": 4, "per_key_running":
    /// null, "rate": "100/1s"}`.
    pub fn to_json(self) -> String {
        serde_json::json!({
            "max_running": self.max_running,
            "per_key_running": self.per_key_running,
            "rate": self.rate.map(|rate| rate.text()),
        })
        .to_string()
    }

    /// Limits from `value`, an object with any of `max_running` and `per_key_running` (1 to
    /// [`MAX_LIMIT`], or null) and `rate` (`"N/period"`, or null), and nothing else; why not,
    /// naming the field.
    pub fn from_value(value: &serde_json::Value) -> Result<Self, String> {
        let object = value
            .as_object()
            .ok_or("limits must be a JSON object with max_running, per_key_running and rate")?;
        if let Some(unknown) = object
            .keys()
            .find(|key| !["max_running", "per_key_running", "rate"].contains(&key.as_str()))
        {
            return Err(format!(
                "unknown field {unknown:?}: limits take max_running, per_key_running and rate"
            ));
        }
        let count = |field: &str| -> Result<Option<u32>, String> {
            match object.get(field) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(value) => value
                    .as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .map(Some)
                    .ok_or_else(|| {
                        format!("{field} must be a whole number from 1 to {MAX_LIMIT}, or null")
                    }),
            }
        };
        let rate = match object.get("rate") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(text)) => Some(Rate::parse(text)?),
            Some(_) => return Err("rate must be a string such as \"100/1s\", or null".into()),
        };
        Ok(Self {
            max_running: count("max_running")?,
            per_key_running: count("per_key_running")?,
            rate,
        })
    }
}

/// `--max-schedule-ahead`: a duration of at most 100 years, so that now plus it is a time.
fn schedule_ahead(text: &str) -> Result<Duration, String> {
    let ahead = humantime::parse_duration(text).map_err(|error| error.to_string())?;
    if ahead > Duration::from_secs(100 * 365 * 86_400) {
        return Err("at most 100 years".into());
    }
    Ok(ahead)
}

/// Starts per period: `100/1s`, `10/1m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub starts: u32,
    pub per: Duration,
}

impl Rate {
    /// `N/period`, the period as humantime writes one (`1s`, `500ms`, `1m`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad =
            || format!("rate {text:?} must be starts per period, e.g. \"100/1s\" or \"10/1m\"");
        let (starts, per) = text.split_once('/').ok_or_else(bad)?;
        let starts: u32 = starts.trim().parse().map_err(|_| bad())?;
        let per = humantime::parse_duration(per.trim()).map_err(|_| bad())?;
        if starts == 0 || per.is_zero() {
            return Err(bad());
        }
        if per > Duration::from_secs(366 * 86_400) {
            return Err(format!("rate {text:?}: the period may be at most a year"));
        }
        Ok(Self { starts, per })
    }

    /// As [`Rate::parse`] reads it.
    pub fn text(&self) -> String {
        format!("{}/{}", self.starts, humantime::format_duration(self.per))
    }
}

/// Where the host keeps what it knows. Its `Debug` shows a database URL without its password
/// or its parameters.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// In this process only.
    Memory,
    /// In a SQLite file.
    Sqlite(PathBuf),
    /// In a PostgreSQL database, shared by the hosts of a cluster: its URL.
    Postgres(String),
}

impl std::fmt::Debug for StoreLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Memory => f.write_str("Memory"),
            Self::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
            Self::Postgres(url) => f
                .debug_tuple("Postgres")
                .field(&crate::store::shown_database_url(url))
                .finish(),
        }
    }
}

impl StoreLocation {
    /// `memory`, or `sqlite:PATH`.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text == STORE_MEMORY {
            return Ok(Self::Memory);
        }
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            return Ok(Self::Postgres(text.to_owned()));
        }
        match text.strip_prefix("sqlite:") {
            Some(path) if !path.is_empty() => Ok(Self::Sqlite(PathBuf::from(path))),
            _ => Err(format!(
                "{text:?} is not a store: use `sqlite:PATH`, `postgres://…` or `{STORE_MEMORY}`"
            )),
        }
    }
}

/// Why the configuration could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Args(#[from] clap::Error),
    #[error("cannot read the registry file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the registry file {path} is not valid: {message}")]
    File { path: PathBuf, message: String },
    #[error(
        "the admin token must be at least {MIN_ADMIN_TOKEN_BYTES} bytes (for example `openssl \
         rand -hex 16`)"
    )]
    WeakToken,
    #[error(
        "an API token must be at least {MIN_API_TOKEN_BYTES} characters of A-Z, a-z, 0-9 and \
         -._~+/= (for example `openssl rand -hex 32`)"
    )]
    WeakApiToken,
    #[error(
        "--listen {listen} is reachable from other machines and the API would be open to \
         anyone who reaches it: give an API token (--api-token or HTTP_SPAWN_API_TOKEN; make \
         one with `openssl rand -hex 32`), or --insecure-no-auth to serve it without one"
    )]
    OpenToTheNetwork { listen: SocketAddr },
    #[error(
        "--heartbeat {heartbeat:?} must be at most a third of --lease {lease:?}: a host renews \
         its lease several times before it runs out, or a late heartbeat costs it its tasks"
    )]
    Lease {
        heartbeat: Duration,
        lease: Duration,
    },
}

impl Config {
    /// Parses the command line (and the environment), reads the registry file it names, and
    /// resolves the workers.
    pub fn from_args<I, T>(args: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let matches = Self::command().try_get_matches_from(args)?;
        let mut config = Self::from_arg_matches(&matches)?;
        let file = match &config.config {
            Some(path) => Some(RegistryFile::read(path)?),
            None => None,
        };
        config.merge(file, &matches);
        if let Some(token) = &config.admin_token
            && token.len() < MIN_ADMIN_TOKEN_BYTES
        {
            return Err(ConfigError::WeakToken);
        }
        config.api_tokens = std::mem::take(&mut config.api_tokens)
            .into_iter()
            .map(|token| token.trim().to_owned())
            .collect();
        if !config.api_tokens.iter().all(|token| is_api_token(token)) {
            return Err(ConfigError::WeakApiToken);
        }
        if config.serves_others_without_auth() && !config.insecure_no_auth {
            return Err(ConfigError::OpenToTheNetwork {
                listen: config.listen,
            });
        }
        if config.heartbeat.is_zero() || config.heartbeat * 3 > config.lease {
            return Err(ConfigError::Lease {
                heartbeat: config.heartbeat,
                lease: config.lease,
            });
        }
        Ok(config)
    }

    /// Applies the file under the flags, and resolves the workers.
    fn merge(&mut self, file: Option<(PathBuf, RegistryFile)>, matches: &ArgMatches) {
        let explicit = |id: &str| {
            matches
                .value_source(id)
                .is_some_and(|source| source != ValueSource::DefaultValue)
        };
        let (base, file) = match file {
            Some((path, file)) => {
                let base = path.parent().map(Path::to_owned).unwrap_or_default();
                (base, file)
            }
            None => (PathBuf::new(), RegistryFile::default()),
        };
        let server = file.server;
        self.schedules = file
            .schedules
            .into_iter()
            .map(|(name, table)| {
                let json = serde_json::to_value(&table).unwrap_or(serde_json::Value::Null);
                (name, json)
            })
            .collect();
        macro_rules! from_file {
            ($field:ident, $id:literal) => {
                if let Some(value) = server.$field
                    && !explicit($id)
                {
                    self.$field = value.into();
                }
            };
        }
        from_file!(listen, "listen");
        from_file!(worker_threads, "worker_threads");
        from_file!(http_threads, "http_threads");
        from_file!(capacity, "capacity");
        from_file!(max_queue, "max_queue");
        from_file!(max_history, "max_history");
        from_file!(max_connections, "max_connections");
        from_file!(watch_interval_ms, "watch_interval_ms");
        if let Some(file::StoreName(store)) = server.store
            && !explicit("store")
        {
            self.store = Some(match store {
                StoreLocation::Sqlite(path) => StoreLocation::Sqlite(base.join(path)),
                memory => memory,
            });
        }
        if let Some(dir) = server.cache_dir
            && !explicit("cache_dir")
        {
            self.cache_dir = Some(if dir.as_os_str() == CACHE_OFF {
                dir
            } else {
                base.join(dir)
            });
        }

        let default = WorkerConfig {
            name: DEFAULT_WORKER.to_owned(),
            module: self.module.clone(),
            fuel_per_step: self.fuel_per_step,
            max_memory: self.max_memory,
            max_duration_secs: self.max_duration_secs,
            restart: RestartPolicy::Never,
            on_host_loss: OnHostLoss::Restart,
            actor_scope: ActorScope::Any,
            priority: crate::model::DEFAULT_PRIORITY,
            max_running: None,
            per_key_running: None,
            rate: None,
            checkpoint: CheckpointPolicy::Off,
        };
        let mut workers: BTreeMap<String, WorkerConfig> = file
            .workers
            .into_iter()
            .map(|(WorkerName(name), worker)| {
                let resolved = WorkerConfig {
                    name: name.clone(),
                    module: base.join(worker.module),
                    fuel_per_step: worker.fuel_per_step.unwrap_or(default.fuel_per_step),
                    max_memory: worker.max_memory.map_or(default.max_memory, |m| m.0),
                    max_duration_secs: worker
                        .max_duration_secs
                        .unwrap_or(default.max_duration_secs),
                    restart: worker.restart,
                    on_host_loss: worker.on_host_loss,
                    actor_scope: worker.actor_scope,
                    priority: worker.priority,
                    max_running: worker.max_running,
                    per_key_running: worker.per_key_running,
                    rate: worker.rate,
                    checkpoint: worker.checkpoint,
                };
                (name, resolved)
            })
            .collect();
        let default_worker = workers
            .entry(DEFAULT_WORKER.to_owned())
            .or_insert_with(|| default.clone());
        if explicit("module") {
            default_worker.module = default.module.clone();
        }
        for worker in workers.values_mut() {
            if explicit("fuel_per_step") {
                worker.fuel_per_step = default.fuel_per_step;
            }
            if explicit("max_memory") {
                worker.max_memory = default.max_memory;
            }
            if explicit("max_duration_secs") {
                worker.max_duration_secs = default.max_duration_secs;
            }
        }
        self.workers = workers.into_values().collect();
    }

    /// Whether the API would be open to other machines: served beyond loopback with no API
    /// token. Only `--insecure-no-auth` lets such a host start, and it warns.
    pub fn serves_others_without_auth(&self) -> bool {
        !self.listen.ip().to_canonical().is_loopback() && self.api_tokens.is_empty()
    }

    /// This host's name in a cluster: `--node-name`, or the hostname and a short random id.
    pub fn node_name(&self) -> String {
        if let Some(name) = &self.node_name {
            return name.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .or_else(|_| std::fs::read_to_string("/etc/hostname"))
            .map(|name| name.trim().to_owned())
            .ok()
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| "host".to_owned());
        use std::hash::BuildHasher as _;
        let id = std::hash::RandomState::new().hash_one(std::process::id()) as u16;
        format!("{host}-{id:04x}")
    }

    /// Where clients reach this host: `--advertise-address`, or the address it listens on.
    pub fn advertised_address(&self) -> String {
        self.advertise_address
            .clone()
            .unwrap_or_else(|| self.listen.to_string())
    }

    /// The longest duration any worker allows.
    pub fn longest_duration_secs(&self) -> u32 {
        self.workers
            .iter()
            .map(|worker| worker.max_duration_secs)
            .chain([self.max_duration_secs])
            .max()
            .unwrap_or(self.max_duration_secs)
    }

    /// The largest memory cap of any worker: the size of every slot in the instance pool.
    pub fn pool_slot_bytes(&self) -> usize {
        let largest = self
            .workers
            .iter()
            .map(|worker| worker.max_memory)
            .chain([self.max_memory])
            .max()
            .unwrap_or(self.max_memory);
        usize::try_from(largest).unwrap_or(usize::MAX)
    }

    /// Where the compiled-module cache lives, if anywhere.
    pub fn module_cache_dir(&self) -> Option<PathBuf> {
        match &self.cache_dir {
            Some(dir) if dir.as_os_str() == CACHE_OFF => None,
            Some(dir) => Some(dir.clone()),
            None => std::env::var_os("XDG_CACHE_HOME")
                .filter(|dir| !dir.is_empty())
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache")))
                .map(|dir| dir.join("http-spawn")),
        }
    }

    /// Where the store lives: `--store`, or the SQLite file under the user's data directory.
    pub fn store_location(&self) -> StoreLocation {
        self.store.clone().unwrap_or_else(|| {
            let data = std::env::var_os("XDG_DATA_HOME")
                .filter(|dir| !dir.is_empty())
                .map(PathBuf::from)
                .or_else(|| {
                    std::env::var_os("HOME").map(|home| Path::new(&home).join(".local/share"))
                })
                .unwrap_or_else(|| PathBuf::from("."));
            StoreLocation::Sqlite(data.join("http-spawn").join("tasks.db"))
        })
    }

    /// The scheduler threads to start.
    pub fn worker_threads(&self) -> usize {
        self.worker_threads.unwrap_or_else(cpus).max(1)
    }

    /// The HTTP runtime's worker threads.
    pub fn http_threads(&self) -> usize {
        self.http_threads.unwrap_or_else(cpus).max(1)
    }
}

/// Whether `name` may name a worker.
pub fn is_worker_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Whether `token` may be an API token: long enough not to be guessed, and made only of the
/// characters both a bearer token (RFC 6750's `b64token`) and a cookie may hold, as the
/// dashboard's cookie carries it.
fn is_api_token(token: &str) -> bool {
    token.len() >= MIN_API_TOKEN_BYTES
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b))
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `args` with the registry file `text`, written to a scratch file.
    fn with_file(text: &str, args: &[&str]) -> Result<Config, ConfigError> {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("http-spawn-config-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        let path = dir.join("http-spawn.toml");
        std::fs::write(&path, text).expect("write");
        let path = path.display().to_string();
        let argv = ["http-spawn", "--config", &path]
            .into_iter()
            .chain(args.iter().copied());
        let config = Config::from_args(argv);
        let _ = std::fs::remove_dir_all(dir);
        config
    }

    const FILE: &str = r#"
[server]
capacity = 5
store = "sqlite:tasks.db"

[workers.report]
module = "report.wasm"
fuel_per_step = 1000
restart = "on-failure"
"#;

    #[test]
    fn the_file_sets_what_flags_do_not() {
        let config = with_file(FILE, &[]).expect("valid");
        assert_eq!(config.capacity, 5);
        assert!(
            matches!(config.store_location(), StoreLocation::Sqlite(path)
                if path.ends_with("tasks.db") && path.is_absolute()),
            "the store's path is relative to the file"
        );
        let names: Vec<&str> = config.workers.iter().map(|w| w.name.as_str()).collect();
        assert_eq!(
            names,
            ["default", "report"],
            "the default worker is always there"
        );
        let report = &config.workers[1];
        assert_eq!(report.fuel_per_step, 1000);
        assert_eq!(
            report.restart.max_attempts(),
            RestartPolicy::DEFAULT_MAX_ATTEMPTS
        );
        assert!(report.module.ends_with("report.wasm") && report.module.is_absolute());
        assert_eq!(config.workers[0].fuel_per_step, DEFAULT_FUEL_PER_STEP);
    }

    #[test]
    fn explicit_flags_beat_the_file() {
        let config = with_file(
            FILE,
            &[
                "--capacity",
                "7",
                "--fuel-per-step",
                "9",
                "--module",
                "x.wasm",
            ],
        )
        .expect("valid");
        assert_eq!(config.capacity, 7);
        assert!(config.workers.iter().all(|w| w.fuel_per_step == 9));
        assert_eq!(config.workers[0].module, PathBuf::from("x.wasm"));
    }

    #[test]
    fn a_short_admin_token_is_refused() {
        let parse = |token: &str| Config::from_args(["http-spawn", "--admin-token", token]);
        assert!(matches!(parse(""), Err(ConfigError::WeakToken)));
        assert!(matches!(parse("s3cret"), Err(ConfigError::WeakToken)));
        assert!(parse("0123456789abcdef").is_ok());
    }

    #[test]
    fn a_heartbeat_fits_a_lease_three_times_and_a_postgres_url_is_a_store() {
        let parse = |lease: &str, heartbeat: &str| {
            Config::from_args(["http-spawn", "--lease", lease, "--heartbeat", heartbeat])
        };
        assert!(parse("3s", "1s").is_ok());
        assert!(matches!(parse("2s", "1s"), Err(ConfigError::Lease { .. })));
        assert!(matches!(parse("10s", "0s"), Err(ConfigError::Lease { .. })));
        let config = Config::from_args(["http-spawn", "--store", "postgres://app@db/tasks"])
            .expect("a cluster's store");
        assert_eq!(
            config.store_location(),
            StoreLocation::Postgres("postgres://app@db/tasks".into())
        );
        assert_eq!(config.advertised_address(), DEFAULT_LISTEN);
        assert!(!config.node_name().is_empty());
    }

    #[test]
    fn api_tokens_are_long_bearer_tokens() {
        let parse = |tokens: &[&str]| {
            let mut argv = vec!["http-spawn"];
            for token in tokens {
                argv.extend(["--api-token", token]);
            }
            Config::from_args(argv)
        };
        for weak in [
            "",
            "s3cret",
            "0123456789abcde",
            "0123456789 abcdef",
            "0123456789abcdef;",
        ] {
            assert!(
                matches!(parse(&[weak]), Err(ConfigError::WeakApiToken)),
                "{weak:?}"
            );
        }
        let strong = ["0123456789abcdef", "AbC+/_-.~=0123456789=="];
        let config = parse(&strong).expect("valid");
        assert_eq!(config.api_tokens, strong);
        let error = parse(&["short"]).expect_err("weak").to_string();
        assert!(error.contains("openssl rand"), "{error}");
    }

    /// A comma separates tokens in one value, as in HTTP_SPAWN_API_TOKEN (the same delimiter
    /// splits the variable; tests/auth.rs sets it on the binary).
    #[test]
    fn one_value_holds_several_api_tokens() {
        let config = Config::from_args([
            "http-spawn",
            "--api-token",
            "0123456789abcdef, fedcba9876543210",
            "--api-token",
            "another-token-of-16",
        ])
        .expect("valid");
        assert_eq!(
            config.api_tokens,
            [
                "0123456789abcdef",
                "fedcba9876543210",
                "another-token-of-16"
            ]
        );
        assert!(matches!(
            Config::from_args(["http-spawn", "--api-token", "0123456789abcdef,"]),
            Err(ConfigError::WeakApiToken)
        ));
    }

    #[test]
    fn beyond_loopback_a_host_needs_a_token_or_insecure_no_auth() {
        let parse = |args: &[&str]| Config::from_args([&["http-spawn"], args].concat());
        for listen in [
            "0.0.0.0:8080",
            "[::]:8080",
            "192.0.2.1:80",
            "[::ffff:10.0.0.1]:80",
        ] {
            let error = parse(&["--listen", listen]).expect_err(listen);
            assert!(
                matches!(error, ConfigError::OpenToTheNetwork { .. }),
                "{listen}: {error}"
            );
            let message = error.to_string();
            assert!(
                message.contains("--api-token") && message.contains("--insecure-no-auth"),
                "{message}"
            );
            let open = parse(&["--listen", listen, "--insecure-no-auth"]).expect("insecure");
            assert!(open.serves_others_without_auth());
            let guarded =
                parse(&["--listen", listen, "--api-token", "0123456789abcdef"]).expect("token");
            assert!(!guarded.serves_others_without_auth());
        }
        for listen in [
            "127.0.0.1:8080",
            "127.9.9.9:1",
            "[::1]:8080",
            "[::ffff:127.0.0.1]:80",
        ] {
            let config = parse(&["--listen", listen]).expect(listen);
            assert!(!config.serves_others_without_auth(), "{listen}");
        }
        let from_file = with_file("[server]\nlisten = \"0.0.0.0:8080\"\n", &[]);
        assert!(matches!(
            from_file,
            Err(ConfigError::OpenToTheNetwork { .. })
        ));
    }

    #[test]
    fn cache_off_in_the_file_turns_the_cache_off() {
        let config = with_file("[server]\ncache_dir = \"off\"\n", &[]).expect("valid");
        assert_eq!(config.module_cache_dir(), None);
        let config = with_file("[server]\ncache_dir = \"cache\"\n", &[]).expect("valid");
        assert!(
            config
                .module_cache_dir()
                .is_some_and(|dir| dir.ends_with("cache") && dir.is_absolute())
        );
    }

    #[test]
    fn a_broken_file_names_the_line() {
        for (text, line, reason) in [
            ("[server]\ncapacity = 0\n", "line 2", "at least 1"),
            ("[server]\nlisten = 8080\n", "line 2", ""),
            (
                "[workers.a]\nmodule = \"a.wasm\"\nmax_memory = \"3 parsecs\"\n",
                "line 3",
                "unit",
            ),
            (
                "[workers.a]\nmodule = \"a.wasm\"\nfuel = 5\n",
                "line 3",
                "unknown field",
            ),
            (
                "\n[workers.\"a b\"]\nmodule = \"a.wasm\"\n",
                "line 2",
                "worker name",
            ),
            (
                "[workers.a]\nmodule = \"a.wasm\"\nmax_attempts = 3\n",
                "line 1",
                "on-failure",
            ),
            ("[workers.a\n", "line 1", ""),
        ] {
            let error = with_file(text, &[]).expect_err(text).to_string();
            assert!(error.contains(line), "{text:?}: {line:?} not in {error}");
            assert!(
                error.contains(reason),
                "{text:?}: {reason:?} not in {error}"
            );
        }
    }
}
