//! http-spawn: an HTTP task host where every task is its own WebAssembly process.
//!
//! `POST /api/tasks` answers `202` at once; the task then runs in a fresh wasmtime `Store` and
//! instance of the worker component, driven step by step by a scheduler thread, each step with
//! its own fuel budget, under a memory cap, and its store dropped when it ends. A guest that
//! traps, loops or eats memory ends only itself.
//!
//! ```text
//! client ──POST /api/tasks──▶ api (validate, admit, record) ──▶ scheduler thread
//!        ◀── 202 {pid} ──────┘                                   │ instantiate, start
//!                                                                │ step ─▶ sleep(ms) ─▶ timer
//! client ──GET /api/tasks/{pid}──▶ process table ◀── events ─────┘ … ─▶ done(code): drop store
//! ```

pub mod api;
pub mod capacity;
pub mod capture;
pub mod config;
pub mod error;
pub mod sandbox;
pub mod scheduler;
pub mod table;

use std::future::Future;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;

use crate::api::{AppState, RequestLimits};
use crate::capacity::Admission;
use crate::config::Config;
use crate::sandbox::{Sandbox, SandboxConfig};
use crate::scheduler::Scheduler;
use crate::table::{MemoryTable, ProcessTable};

/// Kernel memory mappings one task's memory slot costs once used, with the sandbox's pooling
/// configuration: its accessible part and the inaccessible rest of the slot split the pool's
/// reservation. Slots keep their protection when freed, so this is per slot ever used, and the
/// pool has one slot per place of capacity.
const MAPPINGS_PER_LIVE_TASK: u64 = 2;

/// The value Elasticsearch and others ask for, and enough for this host's default capacity.
const RECOMMENDED_MAX_MAP_COUNT: u64 = 262_144;

/// Builds the host's state from `config`: compiles the worker, sizes the pool and admission,
/// and starts the scheduler threads.
pub fn build(config: &Config) -> anyhow::Result<AppState> {
    let capacity = effective_capacity(config.capacity);
    let sandbox = Sandbox::new(SandboxConfig {
        module: config.module.clone(),
        fuel_per_step: config.fuel_per_step,
        max_memory_bytes: config.max_memory_bytes(),
        max_log_bytes: config.max_log_bytes,
        capacity,
    })?;
    tracing::info!(
        module = %config.module.display(),
        capacity,
        workers = config.workers(),
        fuel_per_step = config.fuel_per_step,
        max_memory_mib = config.max_memory_mib,
        "worker compiled"
    );
    let table: Arc<dyn ProcessTable> = Arc::new(MemoryTable::new(config.max_history));
    let scheduler = Scheduler::start(config.workers(), Arc::new(sandbox), Arc::clone(&table))
        .context("starting the scheduler threads")?;
    Ok(AppState::new(
        table,
        scheduler,
        Admission::new(capacity),
        RequestLimits::from_config(config),
    ))
}

/// Serves the API on `listener` until `shutdown` resolves.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let state = build(&config)?;
    axum::serve(listener, api::router(state))
        .with_graceful_shutdown(shutdown)
        .await
        .context("serving HTTP")
}

/// The configured capacity, lowered if the kernel's `vm.max_map_count` could not hold that many
/// live instances; says so, and how to raise it, as Elasticsearch does.
fn effective_capacity(configured: u32) -> u32 {
    let (Some(max), Some(in_use)) = (capacity::max_map_count(), capacity::map_count()) else {
        return configured;
    };
    match capacity::instances_within_map_count(max, in_use, MAPPINGS_PER_LIVE_TASK) {
        Some(fits) if fits < u64::from(configured) => {
            tracing::warn!(
                vm.max_map_count = max,
                configured,
                capacity = fits,
                "vm.max_map_count is too low for the configured capacity; capacity lowered. \
                 Raise it with `sudo sysctl -w vm.max_map_count={RECOMMENDED_MAX_MAP_COUNT}` \
                 (persist it in /etc/sysctl.d/) and restart"
            );
            fits as u32
        }
        _ => {
            tracing::info!(vm.max_map_count = max, capacity = configured, "capacity");
            configured
        }
    }
}
