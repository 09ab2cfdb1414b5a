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
pub mod cache;
pub mod capacity;
pub mod capture;
pub mod config;
pub mod error;
pub mod events;
pub mod host;
pub mod ledger;
pub mod metrics;
pub mod sandbox;
pub mod scheduler;
pub mod table;
pub mod workers;

use std::future::Future;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;

use crate::config::Config;
pub use crate::host::Host;

/// Serves the API on `listener` until `shutdown` resolves, then shuts down gracefully: new
/// tasks get `503` while running ones get `--shutdown-grace-secs` to end, the rest are killed,
/// every end is recorded, and only then does the HTTP server stop.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let host = Arc::new(Host::start(&config)?);
    let app = api::router(
        Arc::clone(&host),
        api::RequestLimits::from_config(&config),
        config.admin_token.as_deref(),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
    });
    shutdown.await;
    let grace = std::time::Duration::from_secs(config.shutdown_grace_secs);
    tracing::info!(
        ?grace,
        live = host.live(),
        "shutting down: refusing new tasks"
    );
    tokio::task::spawn_blocking(move || host.shutdown(grace))
        .await
        .context("shutting the scheduler down")?;
    let _ = stop.send(());
    // Connections still open (a client mid-request) get a moment; then the process exits and
    // the kernel closes them.
    match tokio::time::timeout(SERVER_DRAIN, server).await {
        Ok(served) => served
            .context("the HTTP server task")?
            .context("serving HTTP"),
        Err(_) => {
            tracing::warn!("connections still open after shutdown; closing them");
            Ok(())
        }
    }
}

/// How long the HTTP server may take to close its connections once every task has ended.
const SERVER_DRAIN: std::time::Duration = std::time::Duration::from_secs(5);
