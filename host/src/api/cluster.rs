//! `GET /api/cluster`: the hosts sharing this host's store, and which of them answered;
//! `POST /api/cluster/nodes/{name}/drain` (admin): one of them hands its tasks on.

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::AppState;
use super::admin::AdminRefusal;
use super::auth::bearer;
use super::error::{AnyRoute, ApiError, ErrorBody};
use crate::host::{DrainAnswer, DrainError, Drained, RELAYED};
use crate::store::NodeInfo;

/// The cluster as the answering host sees it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct Cluster {
    /// Whether this host shares its store with others (`--store postgres://…`).
    clustered: bool,
    /// The id of the host that answered (also the boot id of the pids it gives out); absent
    /// for a host alone.
    node: Option<u32>,
    /// The name of the host that answered; absent for a host alone.
    name: Option<String>,
    /// Hosts up, and hosts gone within the last hour, oldest first.
    nodes: Vec<NodeInfo>,
}

/// The hosts of this host's cluster: their address, capacity, live tasks and last heartbeat.
#[utoipa::path(get, path = "/api/cluster", tag = "cluster",
    responses((status = 200, body = Cluster),
        (status = 503, description = "The shared store cannot be read now",
            body = super::error::ErrorBody),
        AnyRoute))]
pub(super) async fn get_cluster(State(state): State<AppState>) -> Result<Json<Cluster>, ApiError> {
    let host = &state.host;
    let node = host.node();
    Ok(Json(Cluster {
        clustered: host.clustered(),
        node: node.map(|(id, _)| id),
        name: node.map(|(_, name)| name.to_owned()),
        nodes: host.nodes().await?,
    }))
}

/// `POST /api/cluster/nodes/{name}/drain` (admin): host `name` of the cluster (this one, or
/// another, asked over HTTP) checkpoints every task it runs that takes checkpoints and waits
/// between two steps and hands it to the shared queue, where another host claims it and
/// resumes it at the step it reached; it claims nothing more, and tasks accepted through it
/// wait in the shared queue. Tasks that take no checkpoints end there. It stays up until it
/// is stopped.
#[utoipa::path(post, path = "/api/cluster/nodes/{name}/drain", tag = "cluster",
    params(("name" = String, Path, description = "The host's name (`--node-name`)")),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Drained", body = Drained),
        AdminRefusal,
        (status = 404, description = "No host of that name", body = ErrorBody),
        (status = 409, description = "Not a cluster, or the host is not up", body = ErrorBody),
        (status = 503, description = "The host could not be reached", body = ErrorBody),
        AnyRoute))]
pub(super) async fn drain_node(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Path(name) = path.map_err(|rejection| ApiError::BadRequest(rejection.body_text()))?;
    let token = bearer(&headers);
    let relayed = headers.contains_key(RELAYED);
    match state.host.drain_node(&name, token, relayed).await {
        Ok(DrainAnswer::Here(drained)) => Ok(Json(drained).into_response()),
        Ok(DrainAnswer::Relayed(status, body)) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
            Ok((status, [(header::CONTENT_TYPE, "application/json")], body).into_response())
        }
        Err(error @ DrainError::NoSuchNode(_)) => Err(ApiError::NotFound(error.to_string())),
        Err(
            error @ (DrainError::NotClustered | DrainError::NotUp(..) | DrainError::NotHere(_)),
        ) => Err(ApiError::Conflict(error.to_string())),
        Err(error @ DrainError::Unreachable(_)) => Err(ApiError::Unavailable {
            message: error.to_string(),
            retry_after: 1,
        }),
        Err(DrainError::Store(error)) => Err(error.into()),
    }
}
