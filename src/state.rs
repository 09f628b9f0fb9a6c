//! What every request handler and socket event reaches: built once by [`crate::app::App`].

use std::ops::Deref;
use std::sync::Arc;

use crate::audit::Audit;
use crate::auth::TokenVerifier;
use crate::clock::SharedClock;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::limits::{AddrKey, FailureWindows, LogBudget};
use crate::messaging::Messaging;
use crate::messaging::retention::MessageRetention;
use crate::metrics::Metrics;
use crate::net::TrustedProxies;
use crate::recording::Recordings;
use crate::sessions::Sessions;
use crate::sfu::Sfu;
use crate::sio::{Io, SocketLimits};
use crate::store::Store;
use crate::turn::TurnServer;

#[derive(Clone)]
pub struct AppState(Arc<AppInner>);

pub struct AppInner {
    pub config: Arc<Config>,
    pub store: Store,
    pub verifier: TokenVerifier,
    /// Invalid tokens per client address (a valid token is never refused for them).
    pub auth_limiter: FailureWindows<AddrKey>,
    /// Whose forwarding headers name the client (`http.trusted_proxies`).
    pub trusted_proxies: TrustedProxies,
    /// Socket.IO connections and events per person, socket and address.
    pub socket_limits: SocketLimits,
    /// Log lines clients can cause, at a bounded rate.
    pub log_budget: LogBudget,
    pub clock: SharedClock,
    pub metrics: Arc<Metrics>,
    pub messaging: Messaging,
    /// `messaging.retention_days`, applied periodically ([`crate::app`]).
    pub message_retention: MessageRetention,
    /// The audit trail (also reachable as `sessions.audit()`, the same trail).
    pub audit: Audit,
    pub sessions: Sessions,
    pub sfu: Sfu,
    pub recordings: Recordings,
    /// The embedded TURN server, when `turn.enabled`.
    pub turn: Option<Arc<TurnServer>>,
    pub io: Io,
    /// Base of the URLs handed out (conference links).
    pub public_base_url: url::Url,
    /// This node's cluster membership, when `redis_url` is set (several nodes).
    pub cluster: Option<Cluster>,
    /// Where SFU requests run: here, or on the node that owns the session.
    pub router: crate::cluster::Router,
}

impl AppState {
    pub fn new(inner: AppInner) -> Self {
        Self(Arc::new(inner))
    }

    /// What the cluster is given when it starts: parts of this state, not the state.
    pub fn cluster_deps(&self) -> crate::cluster::ClusterDeps {
        crate::cluster::ClusterDeps {
            store: self.store.clone(),
            clock: self.clock.clone(),
            sfu: self.sfu.clone(),
            recordings: self.recordings.clone(),
            metrics: self.metrics.clone(),
            public_base_url: self.public_base_url.clone(),
            sockets: Arc::new(self.io.clone()),
        }
    }
}

impl Deref for AppState {
    type Target = AppInner;
    fn deref(&self) -> &AppInner {
        &self.0
    }
}
