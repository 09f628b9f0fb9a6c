//! Allocation quotas: what one user, one client address and everyone together may hold, with
//! part of the capacity kept for people in a live consultation. Pure bookkeeping.
//!
//! Invariants:
//! - held allocations never exceed `max_allocations` in all, `max_allocations_per_user` per
//!   user, `max_allocations_per_address` per client address (IPv6: per /64; loopback, this
//!   machine, counts in the total only);
//! - the last `reserved_for_sessions` places go only to users in a live consultation: a client
//!   that is in no call cannot take the capacity the next doctor needs;
//! - counts leave with their last allocation (the tables hold only what is held).

use std::collections::HashMap;
use std::net::IpAddr;

use crate::limits::AddrKey;

/// The quotas (from `turn.*`).
#[derive(Debug, Clone, Copy)]
pub struct Quotas {
    pub max_allocations: u32,
    pub max_allocations_per_user: u32,
    pub max_allocations_per_address: u32,
    pub reserved_for_sessions: u32,
}

/// Why an allocation was refused: 508 (capacity) or 486 (quota).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaRefusal {
    /// Every place is taken (508).
    Full,
    /// Only the places kept for consultations are left, and this user is in none (508).
    KeptForSessions,
    /// The user holds its quota (486).
    User,
    /// The client address holds its quota (486).
    Address,
}

#[derive(Debug, Default)]
pub struct Held {
    total: u32,
    per_user: HashMap<String, u32>,
    per_address: HashMap<AddrKey, u32>,
}

fn inc<K: std::hash::Hash + Eq>(map: &mut HashMap<K, u32>, k: K) {
    *map.entry(k).or_default() += 1;
}

fn dec<K: std::hash::Hash + Eq>(map: &mut HashMap<K, u32>, k: &K) {
    if let Some(n) = map.get_mut(k) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            map.remove(k);
        }
    }
}

impl Held {
    /// Takes a place for `user` from `client` (`in_session`: the user is in a live
    /// consultation here).
    pub fn reserve(
        &mut self,
        q: &Quotas,
        user: &str,
        client: IpAddr,
        in_session: bool,
    ) -> Result<(), QuotaRefusal> {
        let address = AddrKey::of(client);
        if self.total >= q.max_allocations {
            return Err(QuotaRefusal::Full);
        }
        if self.per_user.get(user).copied().unwrap_or(0) >= q.max_allocations_per_user {
            return Err(QuotaRefusal::User);
        }
        if !address.is_loopback()
            && self.per_address.get(&address).copied().unwrap_or(0) >= q.max_allocations_per_address
        {
            return Err(QuotaRefusal::Address);
        }
        if !in_session && self.total >= q.max_allocations.saturating_sub(q.reserved_for_sessions) {
            return Err(QuotaRefusal::KeptForSessions);
        }
        self.total += 1;
        inc(&mut self.per_user, user.to_string());
        inc(&mut self.per_address, address);
        Ok(())
    }

    /// Gives back a place [`reserve`](Self::reserve) took.
    pub fn release(&mut self, user: &str, client: IpAddr) {
        self.total = self.total.saturating_sub(1);
        dec(&mut self.per_user, &user.to_string());
        dec(&mut self.per_address, &AddrKey::of(client));
    }

    pub fn total(&self) -> u32 {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const Q: Quotas = Quotas {
        max_allocations: 10,
        max_allocations_per_user: 4,
        max_allocations_per_address: 5,
        reserved_for_sessions: 3,
    };

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn one_address_cannot_take_everything() {
        let mut h = Held::default();
        let a = ip("198.51.100.1");
        // Many users (minted tokens), one address: 5 places, not 10.
        for i in 0..5 {
            h.reserve(&Q, &format!("patient-{i}"), a, false).unwrap();
        }
        assert_eq!(
            h.reserve(&Q, "patient-9", a, false),
            Err(QuotaRefusal::Address)
        );
        // The same /64 is the same client.
        let b = ip("2001:db8::1");
        for i in 0..2 {
            h.reserve(&Q, &format!("x-{i}"), b, false).unwrap();
        }
        // 7 held: the last 3 are kept for people in a consultation.
        assert_eq!(
            h.reserve(&Q, "medecin-1", ip("2001:db8::2"), false),
            Err(QuotaRefusal::KeptForSessions)
        );
        for _ in 0..3 {
            h.reserve(&Q, "medecin-1", ip("192.0.2.7"), true).unwrap();
        }
        assert_eq!(
            h.reserve(&Q, "patient-2", ip("192.0.2.8"), true),
            Err(QuotaRefusal::Full)
        );
        h.release("medecin-1", ip("192.0.2.7"));
        assert!(h.reserve(&Q, "patient-2", ip("192.0.2.8"), true).is_ok());
    }

    #[test]
    fn per_user_and_counts_leave_with_their_last_allocation() {
        let mut h = Held::default();
        let a = ip("192.0.2.1");
        let b = ip("192.0.2.2");
        for addr in [a, a, b, b] {
            h.reserve(&Q, "medecin-1", addr, true).unwrap();
        }
        assert_eq!(
            h.reserve(&Q, "medecin-1", ip("192.0.2.3"), true),
            Err(QuotaRefusal::User)
        );
        for addr in [a, a, b, b] {
            h.release("medecin-1", addr);
        }
        assert_eq!(h.total(), 0);
        assert!(h.per_user.is_empty() && h.per_address.is_empty());
    }
}
