//! http-spawn: an HTTP task host where every task is its own WebAssembly process.
//!
//! `POST /api/tasks` answers `202` at once; the task then runs in a fresh wasmtime `Store` and
//! instance of the worker component, driven step by step by a scheduler thread, each step with
//! its own fuel budget, under a memory cap, and its store dropped when it ends. A guest that
//! traps, loops or eats memory ends only itself.
//!
//! The parts, from the bottom up; each uses only those above it in this list:
//!
//! | module | owns |
//! |---|---|
//! | `model` | the vocabulary: pid, task, its end and restart policy, events, record, log lines, time |
//! | `sys` | what the kernel allows: memory mappings |
//! | `actor` | mailboxes, links, monitors and names of live tasks, and the host calls they make |
//! | `config` | the flags, the environment and the registry file |
//! | `logging` | the console: its format, its filter and the thread that writes it |
//! | `metrics` | every metric's name and help, and the Prometheus exposition |
//! | `runtime` | wasmtime and nothing else does: engine, import policy, modules, processes, cache |
//! | `store` | the task store's interface, and the in-memory store |
//! | `events` | the broadcast of task events to SSE subscribers |
//! | `ledger` | the one place a task's life is recorded: store, totals, metrics, events |
//! | `registry` | named workers, their versions, swaps, rollbacks and file watching |
//! | `sched` | admission, placement of tasks on scheduler threads, and those threads |
//! | `host` | the host without HTTP: spawn, kill, get, list, logs, subscribe, shut down |
//! | `api` | the HTTP API, by resource |
//! | `app` | the host and its router built from one `Config`, and serving them |

mod actor;
mod api;
mod app;
pub mod cli;
mod config;
mod events;
mod host;
mod ledger;
pub mod logging;
mod metrics;
mod model;
#[cfg(test)]
mod proptests;
mod registry;
mod runtime;
mod sched;
mod server;
mod store;
mod sys;

pub use api::{ApiError, RequestLimits, is_json, parse_submission};
pub use app::{App, run};
pub use config::{Config, ConfigError, LogFormat};
pub use host::{Accepting, Host, KillError, SpawnError};
pub use ledger::Totals;
pub use model::{NewTask, Outcome, Pid, RestartPolicy, Status, TaskEnd, TaskRecord};
#[doc(hidden)]
pub use runtime::{CheckpointFigures, bench_checkpoints, bench_engine, bench_guest_runs};
pub use runtime::{Embedded, EmbeddedConfig, EmbeddedError, EngineLayout};
pub use store::{IdempotencyKey, StoreError};
