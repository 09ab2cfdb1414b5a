//! The `http-spawn` binary: with a client subcommand (`ps`, `spawn`, `logs`, ...), talk to a
//! host (`http_spawn::cli`); otherwise (no subcommand, or `serve`) parse the configuration,
//! install logging, bind, serve until ctrl-c or SIGTERM.

use std::ffi::OsString;

use anyhow::Context as _;
use http_spawn::{Config, ConfigError};

fn main() -> anyhow::Result<()> {
    let args: Vec<OsString> = std::env::args_os().collect();
    if http_spawn::cli::is_client(&args) {
        std::process::exit(http_spawn::cli::run(args));
    }
    let args = http_spawn::cli::serve_flags(&args).unwrap_or(args);
    let config = match Config::from_args(args) {
        Ok(config) => config,
        Err(ConfigError::Args(error)) => error.exit(),
        Err(error) => {
            eprintln!("error: {error}");
            std::process::exit(2);
        }
    };
    let _console = http_spawn::logging::install(config.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.http_threads())
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        // Handlers first, before anything can answer: a SIGTERM sent as soon as the host
        // answers must find them installed, not the default action that kills at once.
        let shutdown = shutdown_signal().context("installing the signal handlers")?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        tracing::info!(address = %listener.local_addr()?, "listening");
        if config.serves_others_without_auth() {
            tracing::warn!(
                listen = %config.listen,
                "--insecure-no-auth: the API is open to anyone who reaches this address, to \
                 run code and kill tasks; give --api-token to require a token"
            );
        }
        http_spawn::run(listener, config, shutdown).await
    })
    // The runtime goes first, then the console, writing its last lines.
}

/// Installs the handlers of ctrl-c (SIGINT) and SIGTERM now; the future resolves on either.
#[cfg(unix)]
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {},
            _ = terminate.recv() => {},
        }
        tracing::info!("shutting down");
    })
}

/// Installs the ctrl-c handler; the future resolves on ctrl-c.
#[cfg(not(unix))]
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down");
    })
}
