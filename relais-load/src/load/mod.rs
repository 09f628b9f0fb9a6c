//! The load tool's library: scenarios that drive a running relais as real clients do, and
//! the statistics they report. The `relais-load` binary is a thin CLI over it.
//!
//! Media: [`media`] (relais), [`baseline`] (a bare UDP relay, the floor) and [`janus`] (Janus
//! VideoRoom) run the same [`crate::synthetic`] media through the [`engine`] (shards of
//! sans-IO legs), measured over the same window by [`measure`] from the peers' side
//! ([`recv`]) and the server's ([`probe`]); [`report`] prints, plots and compares.

pub mod baseline;
pub mod engine;
pub mod failures;
pub mod janus;
pub mod measure;
pub mod media;
pub mod messaging;
pub mod probe;
pub mod progress;
pub mod recv;
pub mod rejoin;
pub mod relay;
pub mod report;
pub mod signaling;
/// Latency statistics, shared with the test client.
pub use crate::client::stats;

use std::path::Path;
use std::time::Duration;

use relais::auth::TokenVerifier;
use relais::config::AuthConfig;
use relais::ids::Identity;

/// Mints tokens for synthetic users: with the server's shared secret, or with the development
/// secret of its data directory.
pub struct TokenMinter(TokenVerifier);

impl TokenMinter {
    pub fn from_secret(secret: &str) -> Self {
        Self(TokenVerifier::hs256(
            secret.as_bytes(),
            &AuthConfig::default(),
            false,
        ))
    }

    pub fn from_data_dir(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join("jwt-secret.dev");
        let secret = std::fs::read_to_string(&path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        Ok(Self::from_secret(secret.trim()))
    }

    pub fn token(&self, who: Identity) -> String {
        self.0
            .mint(who, None, Duration::from_secs(6 * 3600))
            .expect("HS256 minting cannot fail")
    }
}
