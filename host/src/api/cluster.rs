//! `GET /api/cluster`: the hosts sharing this host's store, and which of them answered.

use axum::Json;
use axum::extract::State;
use serde::Serialize;

use super::AppState;
use super::error::{AnyRoute, ApiError};
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
