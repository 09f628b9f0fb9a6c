//! Read markers, coalesced: a client that marks messages read faster than the database writes
//! them costs one write at a time per (person, conversation), of the highest marker asked.
//!
//! Invariants (pure bookkeeping; the service does the IO):
//! - at most one write per (person, conversation) is in flight;
//! - a marker not above the highest written or waiting one writes nothing;
//! - a marker that arrives during a write waits, replaced by any higher one; when the write
//!   ends, the one waiting (if any) is written next, so the last marker asked always lands;
//! - the table is bounded: past [`MAX_TRACKED`] entries, those with nothing in flight go.

use std::collections::HashMap;

use parking_lot::Mutex;

use crate::ids::{ConversationId, Identity, MessageId};

const MAX_TRACKED: usize = 50_000;

#[derive(Debug, Default, Clone, Copy)]
struct Entry {
    /// Highest marker this process wrote (the store keeps the maximum anyway).
    written: Option<MessageId>,
    /// The marker to write once the one in flight is done.
    pending: Option<MessageId>,
    in_flight: bool,
}

/// What to do with a marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Write it now, then call [`ReadMarkers::written`].
    Write,
    /// Another write is in flight: it was left for the writer to write after it.
    Queued,
    /// Not above what is written or waiting: nothing to write.
    Stale,
}

#[derive(Default)]
pub struct ReadMarkers {
    entries: Mutex<HashMap<(Identity, ConversationId), Entry>>,
}

impl ReadMarkers {
    pub fn decide(&self, who: Identity, id: ConversationId, message: MessageId) -> Decision {
        let mut entries = self.entries.lock();
        if entries.len() >= MAX_TRACKED && !entries.contains_key(&(who, id)) {
            entries.retain(|_, e| e.in_flight);
        }
        let e = entries.entry((who, id)).or_default();
        let highest = e.written.max(e.pending);
        if highest.is_some_and(|h| message <= h) {
            return Decision::Stale;
        }
        if e.in_flight {
            e.pending = Some(message);
            Decision::Queued
        } else {
            e.in_flight = true;
            Decision::Write
        }
    }

    /// The write of `message` ended (`ok`: it was stored). Returns the marker to write next,
    /// if one waited; otherwise nothing is in flight any more.
    pub fn written(
        &self,
        who: Identity,
        id: ConversationId,
        message: MessageId,
        ok: bool,
    ) -> Option<MessageId> {
        let mut entries = self.entries.lock();
        let e = entries.entry((who, id)).or_default();
        if ok {
            e.written = e.written.max(Some(message));
        }
        match e.pending.take() {
            Some(next) if Some(next) > e.written => Some(next),
            _ => {
                e.in_flight = false;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::Role;

    const WHO: Identity = Identity::new(Role::Patient, 1);
    const C: ConversationId = ConversationId(5);

    #[test]
    fn a_burst_writes_the_first_and_the_highest() {
        let m = ReadMarkers::default();
        assert_eq!(m.decide(WHO, C, MessageId(10)), Decision::Write);
        for i in 11..200 {
            assert_eq!(m.decide(WHO, C, MessageId(i)), Decision::Queued);
        }
        assert_eq!(m.decide(WHO, C, MessageId(50)), Decision::Stale);
        assert_eq!(m.written(WHO, C, MessageId(10), true), Some(MessageId(199)));
        assert_eq!(m.written(WHO, C, MessageId(199), true), None);
        assert_eq!(m.decide(WHO, C, MessageId(199)), Decision::Stale);
        assert_eq!(m.decide(WHO, C, MessageId(200)), Decision::Write);
        // Other people and conversations are apart.
        assert_eq!(
            m.decide(Identity::new(Role::Medecin, 1), C, MessageId(1)),
            Decision::Write
        );
    }

    #[test]
    fn a_failed_write_lets_the_next_marker_through() {
        let m = ReadMarkers::default();
        assert_eq!(m.decide(WHO, C, MessageId(10)), Decision::Write);
        assert_eq!(m.written(WHO, C, MessageId(10), false), None);
        assert_eq!(m.decide(WHO, C, MessageId(9)), Decision::Write);
    }

    proptest::proptest! {
        /// Whatever the interleaving, the highest marker asked is the last one written and
        /// never more than one write is in flight.
        #[test]
        fn the_highest_always_lands(ids in proptest::collection::vec(1i64..1000, 1..100)) {
            let m = ReadMarkers::default();
            let mut in_flight: Option<MessageId> = None;
            let mut last_written = None;
            for id in &ids {
                match m.decide(WHO, C, MessageId(*id)) {
                    Decision::Write => {
                        proptest::prop_assert!(in_flight.is_none());
                        in_flight = Some(MessageId(*id));
                    }
                    Decision::Queued => proptest::prop_assert!(in_flight.is_some()),
                    Decision::Stale => {}
                }
                // Half the time the write in flight finishes now.
                if id % 2 == 0 && let Some(w) = in_flight.take() {
                    last_written = Some(w);
                    in_flight = m.written(WHO, C, w, true);
                }
            }
            while let Some(w) = in_flight.take() {
                last_written = Some(w);
                in_flight = m.written(WHO, C, w, true);
            }
            proptest::prop_assert_eq!(last_written, ids.iter().max().map(|i| MessageId(*i)));
        }
    }
}
