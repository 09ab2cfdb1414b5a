//! The host and its HTTP API built from one [`Config`], in one place that `main`, the tests and
//! the benchmarks share, and served until a shutdown signal.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use tokio::net::TcpListener;

use crate::api::{self, RequestLimits};
use crate::config::Config;
use crate::host::Host;
use crate::server::{self, ServerLimits};

/// How long the HTTP server may take to close its connections once every task has ended.
const SERVER_DRAIN: Duration = Duration::from_secs(5);

/// A host and the router that serves it.
#[derive(Debug)]
pub struct App {
    host: Arc<Host>,
    router: Router,
    shutdown_grace: Duration,
    limits: ServerLimits,
}

impl App {
    /// Starts the host `config` describes (workers loaded, scheduler threads running) and
    /// builds its router.
    pub fn build(config: &Config) -> anyhow::Result<Self> {
        let host = Host::start(config)?;
        api::schedules::start(&host, RequestLimits::from_config(config), &config.schedules)
            .context("starting the schedules")?;
        let router = api::router(
            Arc::clone(&host),
            RequestLimits::from_config(config),
            config.admin_token.as_deref(),
            &config.api_tokens,
            config.session_ttl,
            api::BrowserPolicy::from_config(config),
        );
        Ok(Self {
            host,
            router,
            shutdown_grace: Duration::from_secs(config.shutdown_grace_secs),
            limits: ServerLimits {
                max_connections: crate::sys::effective_max_connections(config.max_connections),
                read_timeout: Duration::from_secs(config.read_timeout_secs),
                max_header_bytes: config.max_header_bytes,
            },
        })
    }

    /// The host, to drive or inspect without HTTP.
    pub fn host(&self) -> &Arc<Host> {
        &self.host
    }

    /// The API's routes, to serve.
    pub fn router(&self) -> Router {
        self.router.clone()
    }

    /// Serves the API on `listener`, with the connection limits of the config, until `stop`
    /// resolves; the host's tasks are left as they are. For callers that manage the host
    /// themselves (the tests); [`App::serve`] is the whole graceful shutdown.
    pub fn serve_http(
        &self,
        listener: TcpListener,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> impl Future<Output = ()> + Send + 'static {
        server::serve(
            listener,
            self.router(),
            self.limits,
            Arc::clone(self.host.metrics()),
            stop,
        )
    }

    /// Serves the API on `listener` until `shutdown` resolves, then shuts down gracefully: new
    /// tasks get `503` while running ones get `--shutdown-grace-secs` to end, the rest are
    /// killed, every end is recorded, and only then does the HTTP server stop.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Self {
            host,
            router,
            shutdown_grace: grace,
            limits,
        } = self;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let metrics = Arc::clone(host.metrics());
        let server = tokio::spawn(server::serve(listener, router, limits, metrics, async {
            let _ = stopped.await;
        }));
        shutdown.await;
        tracing::info!(
            ?grace,
            live = host.live(),
            "shutting down: refusing new tasks"
        );
        tokio::task::spawn_blocking(move || host.shutdown(grace))
            .await
            .context("shutting the scheduler down")?;
        let _ = stop.send(());
        // Connections still open (a client mid-request) get a moment; then the process exits
        // and the kernel closes them.
        match tokio::time::timeout(SERVER_DRAIN, server).await {
            Ok(served) => served.context("the HTTP server task"),
            Err(_) => {
                tracing::warn!("connections still open after shutdown; closing them");
                Ok(())
            }
        }
    }
}

/// Builds the host `config` describes and serves it on `listener` until `shutdown` resolves;
/// see [`App::serve`].
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let mut config = config;
    if config.advertise_address.is_none() {
        // The port actually bound, when the one asked for was 0.
        config.advertise_address = Some(listener.local_addr()?.to_string());
    }
    App::build(&config)?.serve(listener, shutdown).await
}
