//! The HTTP server under the API: accepts connections and serves each with hyper's HTTP/1.1,
//! holding every client to what a server on an open port needs. `axum::serve` exposes none of
//! these, hence this loop.
//!
//! - **Connections are capped** (`--max-connections`, lowered to fit the open-file limit). Past
//!   the cap a new connection is answered `503` with `Retry-After` and closed, so the host
//!   never runs out of file descriptors and a client is told to come back rather than left
//!   hanging in the kernel's backlog.
//! - **Heads must arrive in time** (`--read-timeout-secs`): a client that connects and sends its
//!   headers slowly, or nothing at all, or sits idle between requests, is disconnected.
//! - **Heads are bounded**: past `--max-header-bytes` the API answers a JSON `431` (see
//!   `api::limits`); a head far past it (four times, at least 64 KiB) is refused by the parser
//!   itself, with an empty `431`, before it is buffered whole.
//!
//! Every request carries its connection's [`Peer`], the client's address: what per-client
//! bounds (event streams) count by.

use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::metrics::Metrics;

/// hyper's own read buffer bound (about 400 KB), kept unless a head limit needs more.
const HYPER_MAX_BUF_SIZE: usize = 8192 + 4096 * 100;
/// The parser's hard limit on a head is this many times `--max-header-bytes`...
const HARD_HEAD_FACTOR: usize = 4;
/// ...and at least this.
const MIN_HARD_HEAD_BYTES: usize = 64 * 1024;
/// Connections refused at once (each briefly holds a descriptor to say `503`); past it a
/// connection over the cap is closed without a word.
const MAX_REFUSING: usize = 64;
/// How long a refusal waits for the client's request to drain after answering.
const REFUSAL_LINGER: Duration = Duration::from_millis(500);
/// Bytes of a refused connection's request read and thrown away before it is closed.
const REFUSAL_DISCARD_BYTES: usize = 64 * 1024;
/// How long the accept loop rests when the process is out of descriptors or memory.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// The address of the client that sent a request, in its extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer(pub IpAddr);

/// What the server holds its clients to.
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    pub max_connections: usize,
    pub read_timeout: Duration,
    pub max_header_bytes: usize,
}

/// Serves `router` on `listener` until `stop` resolves; then stops accepting and waits for the
/// open connections to finish their requests and close.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServerLimits,
    metrics: Arc<Metrics>,
    stop: impl Future<Output = ()> + Send,
) {
    let hard_head = limits
        .max_header_bytes
        .saturating_mul(HARD_HEAD_FACTOR)
        .max(MIN_HARD_HEAD_BYTES);
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.read_timeout)
        .max_header_size(hard_head)
        .max_buf_size(HYPER_MAX_BUF_SIZE.max(hard_head.saturating_add(8192)));
    let open = Arc::new(Semaphore::new(limits.max_connections));
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    let graceful = GracefulShutdown::new();
    tokio::pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => (stream, Peer(peer.ip().to_canonical())),
                Err(error) => {
                    accept_failed(&error).await;
                    continue;
                }
            },
        };
        let Ok(permit) = Arc::clone(&open).try_acquire_owned() else {
            metrics.http_connection_refused();
            if let Ok(refusal) = Arc::clone(&refusing).try_acquire_owned() {
                tokio::spawn(async move {
                    refuse(stream).await;
                    drop(refusal);
                });
            }
            continue;
        };
        // Answers are written whole; without Nagle a small one is not held back for an ACK.
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(tower::ServiceExt::map_request(
            router.clone(),
            move |mut request: axum::extract::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(peer);
                request
            },
        ));
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        let (metrics, open) = (Arc::clone(&metrics), Arc::clone(&open));
        metrics.http_connections(limits.max_connections - open.available_permits());
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection ended with an error");
            }
            drop(permit);
            metrics.http_connections(limits.max_connections - open.available_permits());
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// An `accept` that failed: a connection that went away before it was taken is nothing; a
/// process out of descriptors or memory rests a moment rather than spin (the connection stays
/// in the backlog and is taken when one frees up).
async fn accept_failed(error: &io::Error) {
    if matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    ) {
        return;
    }
    tracing::warn!(%error, "accepting a connection failed; retrying shortly");
    tokio::time::sleep(ACCEPT_BACKOFF).await;
}

/// Tells a connection over the cap to come back later, in the API's JSON, and closes it
/// without resetting it: the answer goes first, then the client's request is read and thrown
/// away for a moment so that closing does not discard the answer on its way.
async fn refuse(mut stream: TcpStream) {
    let body = r#"{"error":"too many open connections; retry later"}"#;
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let lingered = tokio::time::timeout(REFUSAL_LINGER, async {
        stream.write_all(answer.as_bytes()).await?;
        stream.shutdown().await?;
        let mut sink = [0_u8; 4096];
        let mut read = 0;
        while read < REFUSAL_DISCARD_BYTES {
            match stream.read(&mut sink).await? {
                0 => break,
                n => read += n,
            }
        }
        io::Result::Ok(())
    })
    .await;
    if let Ok(Err(error)) = lingered {
        tracing::debug!(%error, "refusing a connection");
    }
}
