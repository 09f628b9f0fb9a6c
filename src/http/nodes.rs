//! `GET /api/messaging/nodes` (administrators, `auth.admins`): the relais nodes alive now,
//! from the cluster directory, with their addresses and load. On a single node (no
//! `redis_url`) the list is that node alone.

use axum::extract::State;

use super::envelope::{Success, ok};
use super::error::{ApiResult, ErrorBody};
use super::extract::{Caller, ClientIp};
use super::views::{NodesData, NodesMode};
use crate::audit::{Action, Entry, Target};
use crate::cluster::directory::{MediaAddrs, NodeInfo};
use crate::error::ErrorCode;
use crate::messaging::DomainError;
use crate::state::AppState;

/// The nodes of the cluster and their load (administrators only).
#[utoipa::path(get, path = "/api/messaging/nodes", tag = "operations",
    responses((status = 401, description = "no valid token", body = ErrorBody),
              (status = 200, description = "`mode` (`single` or `cluster`), this node's id and `nodes`", body = Success<NodesData>),
              (status = 403, description = "not an administrator (auth.admins)", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ClientIp(ip): ClientIp,
) -> ApiResult<Success<NodesData>> {
    if !state.config.is_admin(caller.identity) {
        return Err(DomainError::forbidden(
            ErrorCode::AdminOnly,
            "only administrators (auth.admins) may list the nodes",
        )
        .into());
    }
    let data = match &state.cluster {
        Some(cluster) => NodesData {
            mode: NodesMode::Cluster,
            self_id: cluster.node().clone(),
            nodes: cluster.live_nodes(),
        },
        None => {
            let me = NodeInfo {
                id: crate::cluster::NodeId::from("local"),
                public_base_url: state.public_base_url.as_str().trim_end_matches('/').into(),
                http_addr: state.config.http.addr.to_string(),
                https_addr: None,
                media: MediaAddrs {
                    udp: state
                        .sfu
                        .host_candidates()
                        .iter()
                        .map(|a| a.to_string())
                        .collect(),
                    tcp: state
                        .sfu
                        .media_tcp_addr()
                        .iter()
                        .map(|a| a.to_string())
                        .collect(),
                    turn_udp: state.turn.as_ref().map(|t| t.udp_addr().to_string()),
                },
                load: crate::cluster::local_load(&state.metrics, state.io.local_sockets(), None),
                version: env!("CARGO_PKG_VERSION").into(),
                started_at: 0,
                heartbeat_at: state.clock.now_ms(),
            };
            NodesData {
                mode: NodesMode::Single,
                self_id: crate::cluster::NodeId::from("local"),
                nodes: vec![me],
            }
        }
    };
    // Fails closed: an administrator's read is in the audit trail or is not answered.
    let entry = Entry::new(Action::AdminCall, Target::Api(ROUTE))
        .by(caller.identity)
        .ip(ip)
        .detail(serde_json::json!({ "nodes": data.nodes.len() }));
    state.audit.record(entry).await?;
    Ok(ok(data))
}

/// This endpoint, as the audit trail names it.
const ROUTE: &str = "GET /api/messaging/nodes";
