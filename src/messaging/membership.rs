//! Conversation membership, cached: the check every send and join makes without a database
//! round trip.
//!
//! Invariant: membership never changes after a conversation is created (there is no endpoint
//! that adds or removes participants), so a cached entry can only be missing, never stale.
//! The cache is bounded: past [`MAX_ENTRIES`] conversations it is emptied and refills on demand.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;

use crate::ids::{ConversationId, Identity};
use crate::store::{Store, StoreResult};

const MAX_ENTRIES: usize = 100_000;

#[derive(Default)]
pub struct Membership {
    /// Participants sorted by (role, id); an empty list means "no such conversation".
    known: RwLock<HashMap<ConversationId, Arc<[Identity]>>>,
}

impl Membership {
    pub fn remember(&self, id: ConversationId, participants: &[Identity]) {
        let mut known = self.known.write();
        if known.len() >= MAX_ENTRIES {
            known.clear();
        }
        known.insert(id, participants.into());
    }

    /// Participants of `id` (empty when the conversation does not exist).
    pub async fn participants(
        &self,
        store: &Store,
        id: ConversationId,
    ) -> StoreResult<Arc<[Identity]>> {
        if let Some(p) = self.known.read().get(&id) {
            return Ok(p.clone());
        }
        let participants = store.participants(id).await?;
        // Unknown ids are not cached: the conversation may be created later.
        if !participants.is_empty() {
            self.remember(id, &participants);
        }
        Ok(participants.into())
    }

    pub async fn contains(
        &self,
        store: &Store,
        id: ConversationId,
        who: Identity,
    ) -> StoreResult<bool> {
        Ok(self
            .participants(store, id)
            .await?
            .binary_search(&who)
            .is_ok())
    }
}
