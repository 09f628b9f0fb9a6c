//! Things held at once per key (connections per address, sockets per user), with a cap per key
//! and an optional cap on the total.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;

use parking_lot::Mutex;

struct Table<K> {
    per_key: HashMap<K, u32>,
    total: u32,
}

/// Counts per key. A key is in the table only while something of it is held, so memory follows
/// what is open.
pub struct Counts<K: Hash + Eq> {
    per_key_cap: u32,
    total_cap: u32,
    table: Arc<Mutex<Table<K>>>,
}

/// One thing held; dropping it gives the place back.
pub struct Counted<K: Hash + Eq> {
    key: K,
    table: Arc<Mutex<Table<K>>>,
}

impl<K: Hash + Eq> std::fmt::Debug for Counted<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Counted")
    }
}

/// Why a place was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    Key,
    Total,
}

impl<K: Hash + Eq + Clone> Counts<K> {
    /// At most `per_key_cap` per key and `total_cap` in all (`u32::MAX`: no total cap).
    pub fn new(per_key_cap: u32, total_cap: u32) -> Self {
        Self {
            per_key_cap,
            total_cap,
            table: Arc::new(Mutex::new(Table {
                per_key: HashMap::new(),
                total: 0,
            })),
        }
    }

    /// A place for `key`, unless it or the total is at its cap.
    pub fn try_acquire(&self, key: K) -> Result<Counted<K>, Full> {
        self.try_acquire_within(key, self.per_key_cap)
    }

    /// A place for `key` with a cap of its own (`u32::MAX`: only the total counts).
    pub fn try_acquire_within(&self, key: K, cap: u32) -> Result<Counted<K>, Full> {
        let mut t = self.table.lock();
        if t.total >= self.total_cap {
            return Err(Full::Total);
        }
        let n = t.per_key.entry(key.clone()).or_insert(0);
        if *n >= cap {
            return Err(Full::Key);
        }
        *n += 1;
        t.total += 1;
        Ok(Counted {
            key,
            table: self.table.clone(),
        })
    }

    pub fn count(&self, key: &K) -> u32 {
        self.table.lock().per_key.get(key).copied().unwrap_or(0)
    }

    pub fn total(&self) -> u32 {
        self.table.lock().total
    }

    pub fn keys(&self) -> usize {
        self.table.lock().per_key.len()
    }
}

impl<K: Hash + Eq> Drop for Counted<K> {
    fn drop(&mut self) {
        let mut t = self.table.lock();
        t.total = t.total.saturating_sub(1);
        if let Some(n) = t.per_key.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                t.per_key.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_per_key_and_total_and_gives_back() {
        let c = Counts::new(2, 3);
        let a1 = c.try_acquire("a").unwrap();
        let _a2 = c.try_acquire("a").unwrap();
        assert_eq!(c.try_acquire("a").unwrap_err(), Full::Key);
        let _b1 = c.try_acquire("b").unwrap();
        assert_eq!(c.try_acquire("c").unwrap_err(), Full::Total);
        drop(a1);
        assert_eq!(c.count(&"a"), 1);
        let _c1 = c.try_acquire("c").unwrap();
        assert_eq!(c.total(), 3);
    }

    #[test]
    fn keys_leave_with_their_last_place() {
        let c = Counts::new(5, u32::MAX);
        let held: Vec<_> = (0..100).map(|i| c.try_acquire(i).unwrap()).collect();
        assert_eq!(c.keys(), 100);
        drop(held);
        assert_eq!(c.keys(), 0);
        assert_eq!(c.total(), 0);
    }
}
