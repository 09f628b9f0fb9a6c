//! What one person, socket or address may hold and send over Socket.IO.
//!
//! Invariants:
//! - a socket holds a place per person and per address from its handshake until it
//!   disconnects (the [`SocketPlaces`] in its extensions; dropping them gives the places back);
//! - every client event takes a token from its socket's bucket and from its person's bucket
//!   before any work; an event refused costs nothing but the refusal (no store, no SFU);
//! - buckets are forgotten with their socket, and per person when idle (bounded tables).

use socketioxide::socket::Sid;

use crate::clock::{Millis, SharedClock};
use crate::config::LimitsConfig;
use crate::ids::Identity;
use crate::limits::{AddrKey, Buckets, Counted, Counts, Full, Rate};

pub struct SocketLimits {
    per_user: Counts<Identity>,
    per_address: Counts<AddrKey>,
    socket_events: Buckets<Sid>,
    user_events: Buckets<Identity>,
}

/// A socket's places; held in its extensions.
#[derive(Clone)]
pub struct SocketPlaces(
    #[allow(dead_code)] std::sync::Arc<(Counted<Identity>, Option<Counted<AddrKey>>)>,
);

/// Why a connection or an event was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The person holds `sockets_per_user` sockets already.
    UserSockets,
    /// The address holds `sockets_per_address` sockets already.
    AddressSockets,
    /// Too many events; one more is allowed in this many milliseconds.
    Events { retry_after_ms: Millis },
}

impl SocketLimits {
    pub fn new(config: &LimitsConfig, clock: SharedClock) -> Self {
        Self {
            per_user: Counts::new(config.sockets_per_user, u32::MAX),
            per_address: Counts::new(config.sockets_per_address, u32::MAX),
            socket_events: Buckets::new(
                Rate::new(
                    f64::from(config.socket_events_per_second),
                    f64::from(config.socket_events_burst),
                ),
                clock.clone(),
            ),
            user_events: Buckets::new(
                Rate::new(
                    f64::from(config.user_events_per_second),
                    f64::from(config.user_events_burst),
                ),
                clock,
            ),
        }
    }

    /// Places for a new socket of `who` from `addr` (a loopback address counts per person
    /// only: it is this machine, a local proxy or a test).
    pub fn connect(&self, who: Identity, addr: Option<AddrKey>) -> Result<SocketPlaces, Refused> {
        let user = self
            .per_user
            .try_acquire(who)
            .map_err(|_| Refused::UserSockets)?;
        let address = match addr.filter(|a| !a.is_loopback()) {
            Some(a) => Some(
                self.per_address
                    .try_acquire(a)
                    .map_err(|_: Full| Refused::AddressSockets)?,
            ),
            None => None,
        };
        Ok(SocketPlaces(std::sync::Arc::new((user, address))))
    }

    /// One client event of socket `sid` (person `who`).
    pub fn event(&self, sid: Sid, who: Identity) -> Result<(), Refused> {
        self.socket_events
            .take(&sid)
            .and_then(|()| self.user_events.take(&who))
            .map_err(|retry_after_ms| Refused::Events { retry_after_ms })
    }

    /// The socket closed.
    pub fn disconnected(&self, sid: Sid) {
        self.socket_events.forget(&sid);
    }

    pub fn sockets_of(&self, who: Identity) -> u32 {
        self.per_user.count(&who)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::ids::Role;

    fn config() -> LimitsConfig {
        LimitsConfig {
            sockets_per_user: 2,
            sockets_per_address: 3,
            socket_events_per_second: 10,
            socket_events_burst: 5,
            user_events_per_second: 15,
            user_events_burst: 8,
            ..LimitsConfig::default()
        }
    }

    #[test]
    fn sockets_per_person_and_address() {
        let l = SocketLimits::new(&config(), ManualClock::new(0));
        let a = Some(AddrKey::of("192.0.2.1".parse().unwrap()));
        let doc = Identity::new(Role::Medecin, 1);
        let p1 = l.connect(doc, a).unwrap();
        let _p2 = l.connect(doc, a).unwrap();
        assert_eq!(l.connect(doc, a).err(), Some(Refused::UserSockets));
        let other = Identity::new(Role::Patient, 2);
        let _p3 = l.connect(other, a).unwrap();
        assert_eq!(
            l.connect(Identity::new(Role::Patient, 3), a).err(),
            Some(Refused::AddressSockets)
        );
        // Loopback counts per person only.
        let lo = Some(AddrKey::of("127.0.0.1".parse().unwrap()));
        assert!(l.connect(Identity::new(Role::Patient, 3), lo).is_ok());
        drop(p1);
        assert_eq!(l.sockets_of(doc), 1);
        assert!(l.connect(doc, lo).is_ok());
    }

    #[test]
    fn events_per_socket_then_per_person() {
        let clock = ManualClock::new(0);
        let l = SocketLimits::new(&config(), clock.clone());
        let who = Identity::new(Role::Patient, 7);
        let (s1, s2) = (Sid::new(), Sid::new());
        for _ in 0..5 {
            l.event(s1, who).unwrap();
        }
        assert!(matches!(
            l.event(s1, who),
            Err(Refused::Events {
                retry_after_ms: 100
            })
        ));
        // Another socket of the same person: its own bucket, the person's shared one.
        for _ in 0..3 {
            l.event(s2, who).unwrap();
        }
        assert!(l.event(s2, who).is_err());
        clock.advance(1000);
        assert!(l.event(s1, who).is_ok());
    }
}
