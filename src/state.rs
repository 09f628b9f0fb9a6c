//! What every request handler and socket event reaches: built once by [`crate::app::App`].

use std::ops::Deref;
use std::sync::Arc;

use crate::auth::{FailureLimiter, TokenVerifier};
use crate::clock::SharedClock;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::messaging::Messaging;
use crate::metrics::Metrics;
use crate::realtime::Io;
use crate::recording::Recordings;
use crate::sessions::Sessions;
use crate::sfu::Sfu;
use crate::store::Store;
use crate::turn::TurnServer;

#[derive(Clone)]
pub struct AppState(Arc<AppInner>);

pub struct AppInner {
    pub config: Arc<Config>,
    pub store: Store,
    pub verifier: TokenVerifier,
    pub auth_limiter: FailureLimiter,
    pub clock: SharedClock,
    pub metrics: Arc<Metrics>,
    pub messaging: Messaging,
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
}

impl AppState {
    pub fn new(inner: AppInner) -> Self {
        Self(Arc::new(inner))
    }
}

impl Deref for AppState {
    type Target = AppInner;
    fn deref(&self) -> &AppInner {
        &self.0
    }
}
