//! The rate bound of gate checks: at most one check per gate per interval.
//!
//! The controller asks [`GateCache::cached`] before each check; while the last
//! observation of that key is younger than the interval it is reused, else
//! the controller checks and [`GateCache::put`]s the result. The cache holds at
//! most `capacity` keys; beyond that the oldest observation is dropped (and
//! checked again when next needed).

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;

use super::Observed;

/// Observations by key, each reused for `interval`.
#[derive(Debug, Clone)]
pub struct GateCache<K: Ord + Clone, V> {
    interval: Duration,
    capacity: usize,
    entries: BTreeMap<K, Observed<V>>,
}

impl<K: Ord + Clone, V> GateCache<K, V> {
    /// A cache reusing observations for `interval`, holding `capacity` keys
    /// (at least one).
    pub fn new(interval: Duration, capacity: usize) -> Self {
        GateCache {
            interval,
            capacity: capacity.max(1),
            entries: BTreeMap::new(),
        }
    }

    /// The observation of `key` if it is recent enough to reuse at `now`.
    /// A clock that went back makes it due.
    pub fn cached(&self, key: &K, now: Timestamp) -> Option<&Observed<V>> {
        let o = self.entries.get(key)?;
        let age = now.duration_since(o.at).as_secs_f64();
        (age >= 0.0 && age < self.interval.as_secs_f64()).then_some(o)
    }

    /// The last observation of `key`, however old.
    pub fn last(&self, key: &K) -> Option<&Observed<V>> {
        self.entries.get(key)
    }

    /// Stores an observation.
    pub fn put(&mut self, key: K, observed: Observed<V>) {
        self.entries.insert(key, observed);
        while self.entries.len() > self.capacity {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, o)| o.at)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => self.entries.remove(&k),
                None => break,
            };
        }
    }

    /// Drops every key `keep` refuses (policies deleted, gates removed).
    pub fn retain(&mut self, mut keep: impl FnMut(&K) -> bool) {
        self.entries.retain(|k, _| keep(k));
    }

    /// Number of keys held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: u64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s as i64).unwrap()
    }

    #[test]
    fn at_most_one_check_per_interval_however_often_it_is_asked() {
        let mut c: GateCache<&str, u32> = GateCache::new(Duration::from_secs(10), 8);
        let mut checks = 0;
        // Asked every second for a minute: checked at 0, 10, 20, ... 50.
        for s in 0..60 {
            if c.cached(&"alerts", at(s)).is_none() {
                checks += 1;
                c.put(
                    "alerts",
                    Observed {
                        at: at(s),
                        result: Ok(s as u32),
                    },
                );
            }
        }
        assert_eq!(checks, 6);
        assert_eq!(
            c.cached(&"alerts", at(59)).map(|o| o.result.clone()),
            Some(Ok(50))
        );
        // A clock that went back checks again.
        assert!(c.cached(&"alerts", at(49)).is_none());
        assert!(c.last(&"alerts").is_some());
    }

    #[test]
    fn capacity_drops_the_oldest_and_retain_forgets() {
        let mut c: GateCache<u32, ()> = GateCache::new(Duration::from_secs(10), 2);
        for k in 0..3 {
            c.put(
                k,
                Observed {
                    at: at(u64::from(k)),
                    result: Ok(()),
                },
            );
        }
        assert_eq!(c.len(), 2);
        assert!(c.last(&0).is_none());
        c.retain(|k| *k != 2);
        assert_eq!(c.len(), 1);
        assert!(!c.is_empty());
    }
}
