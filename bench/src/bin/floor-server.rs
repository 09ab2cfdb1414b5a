//! The floor server: the same axum stack and request validation as http-spawn, whose handler
//! only `tokio::spawn`s a sleeping future (the seed's `coroutine.spawn` variant). No isolation,
//! no instance, no process table: what accepting a task costs when a task costs nothing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Parser;
use http_spawn::{ApiError, Config, RequestLimits, is_json, parse_submission};
use serde_json::json;
use tower_http::trace::TraceLayer;

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

#[derive(Debug, Default)]
struct Counts {
    spawned: AtomicU64,
    completed: AtomicU64,
}

#[derive(Debug, Clone)]
struct Floor {
    counts: Arc<Counts>,
    limits: Arc<RequestLimits>,
}

async fn spawn_task(
    State(floor): State<Floor>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    if !is_json(&headers) {
        return Err(ApiError::UnsupportedMediaType);
    }
    let body = body.map_err(|rejection| ApiError::BadRequest(rejection.body_text()))?;
    let task = parse_submission(&body, &floor.limits)?;
    let seq = floor.counts.spawned.fetch_add(1, Ordering::Relaxed);
    let pid = format!("00000000-{seq:x}");
    let counts = Arc::clone(&floor.counts);
    let duration = task.duration;
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(u64::from(duration))).await;
        counts.completed.fetch_add(1, Ordering::Relaxed);
    });
    let body = json!({
        "pid": pid,
        "name": task.name,
        "status": "spawned",
        "message": format!("Process {pid} will run for {duration} seconds"),
    });
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, format!("/api/tasks/{pid}"))],
        Json(body),
    )
        .into_response())
}

async fn health(State(floor): State<Floor>) -> Json<serde_json::Value> {
    let spawned = floor.counts.spawned.load(Ordering::Relaxed);
    let completed = floor.counts.completed.load(Ordering::Relaxed);
    Json(json!({
        "status": "ok",
        "live": spawned - completed,
        "tasks": {"spawned": spawned, "ended": completed, "exited_ok": completed},
    }))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // The host's own limits, from its defaults.
    let limits = RequestLimits::from_config(&Config::from_args(["http-spawn"])?);
    let max_body_bytes = limits.max_body_bytes;
    let floor = Floor {
        counts: Arc::default(),
        limits: Arc::new(limits),
    };
    let app = Router::new()
        .route("/api/tasks", post(spawn_task))
        .route("/api/health", get(health))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(TraceLayer::new_for_http())
        .with_state(floor);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()?
        .block_on(async {
            let listener = tokio::net::TcpListener::bind(args.listen).await?;
            axum::serve(listener, app).await?;
            Ok(())
        })
}
