//! The one place that decides where an SFU request runs: on this node, or on the node that
//! owns the session's room (several nodes), whose answer comes back over the bus. Socket.IO
//! handlers and REST handlers both go through [`Router::route`].
//!
//! Invariants:
//! - a request runs on exactly one node: the one whose SFU has the session's room, else the
//!   node the session is placed on when it is alive, else here (not placed: the SFU answers);
//! - a session placed on a dead node is refused with `node_unavailable` until it moved;
//! - a routed request always ends, with the owner's answer or `node_unavailable` after the
//!   cluster's request timeout.

use crate::error::DomainResult;
use crate::sfu::{Caller, Sfu, SfuReply, SfuRequest};

use super::{Cluster, NodeId};

/// Local SFU, or the owner node. Cheap to clone.
#[derive(Clone)]
pub struct Router {
    sfu: Sfu,
    cluster: Option<Cluster>,
}

/// A request's outcome and the node it ran on when that was another one.
pub struct Routed {
    pub via: Option<NodeId>,
    pub outcome: DomainResult<SfuReply>,
}

impl Router {
    pub fn new(sfu: Sfu, cluster: Option<Cluster>) -> Self {
        Self { sfu, cluster }
    }

    /// Runs `request` where its session lives.
    pub async fn route(&self, caller: Caller, request: SfuRequest) -> Routed {
        let owner = match &self.cluster {
            None => Ok(None),
            Some(cluster) => cluster.owner_of(&self.sfu, request.session()).await,
        };
        match owner {
            Err(e) => Routed {
                via: None,
                outcome: Err(e),
            },
            Ok(None) => Routed {
                via: None,
                outcome: self.sfu.handle(&caller, request).await,
            },
            Ok(Some(node)) => {
                let outcome = match &self.cluster {
                    Some(cluster) => cluster.forward(&node, caller, request).await,
                    None => self.sfu.handle(&caller, request).await,
                };
                Routed {
                    via: Some(node),
                    outcome,
                }
            }
        }
    }

    /// [`route`](Self::route) when the caller does not care where it ran.
    pub async fn run(&self, caller: Caller, request: SfuRequest) -> DomainResult<SfuReply> {
        self.route(caller, request).await.outcome
    }
}
