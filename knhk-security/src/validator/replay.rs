//! The replay window: (sender, nonce) pairs accepted recently, bucketed by message time.

use std::collections::{BTreeMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

use knhk_types::{AgentId, UnixMillis};

/// Remembers accepted (sender, nonce) pairs for as long as their timestamp would still
/// pass the skew check, in buckets of one skew-width of *message* time. A bucket is
/// dropped once every timestamp in it is too old to be accepted, so a replay is either
/// remembered or stale. Never holds more than `capacity` pairs.
#[derive(Debug)]
pub(super) struct ReplayWindow {
    skew_ms: u64,
    bucket_ms: u64,
    capacity: usize,
    /// Per bucket, a keyed 64-bit hash of each (sender, nonce): 8 bytes an entry rather
    /// than 40. The key is random per window, so nobody can aim collisions at it; an
    /// accidental collision (about n / 2^64) would refuse one honest frame, never accept
    /// a replay.
    buckets: BTreeMap<u64, HashSet<u64>>,
    key: RandomState,
    len: usize,
}

impl ReplayWindow {
    pub(super) fn new(max_clock_skew: Duration, capacity: usize) -> Self {
        let skew_ms = u64::try_from(max_clock_skew.as_millis()).unwrap_or(u64::MAX);
        Self {
            skew_ms,
            bucket_ms: skew_ms.max(1),
            capacity,
            buckets: BTreeMap::new(),
            key: RandomState::new(),
            len: 0,
        }
    }

    /// Drops buckets whose newest possible timestamp is older than `now - skew`.
    pub(super) fn expire(&mut self, now: UnixMillis) {
        let oldest_acceptable = now.0.saturating_sub(self.skew_ms);
        while let Some((&bucket, _)) = self.buckets.first_key_value() {
            let bucket_end = bucket.saturating_add(1).saturating_mul(self.bucket_ms);
            if bucket_end > oldest_acceptable {
                break;
            }
            if let Some(dropped) = self.buckets.remove(&bucket) {
                self.len -= dropped.len();
            }
        }
    }

    pub(super) fn contains(&self, sender: &AgentId, nonce: u64, sent: UnixMillis) -> bool {
        self.buckets
            .get(&(sent.0 / self.bucket_ms))
            .is_some_and(|bucket| bucket.contains(&self.fingerprint(sender, nonce)))
    }

    fn fingerprint(&self, sender: &AgentId, nonce: u64) -> u64 {
        self.key.hash_one((sender, nonce))
    }

    /// Remembers the pair; `false` (nothing stored) if the window is full.
    pub(super) fn insert(&mut self, sender: AgentId, nonce: u64, sent: UnixMillis) -> bool {
        if self.len >= self.capacity {
            return false;
        }
        let fingerprint = self.fingerprint(&sender, nonce);
        if self
            .buckets
            .entry(sent.0 / self.bucket_ms)
            .or_default()
            .insert(fingerprint)
        {
            self.len += 1;
        }
        true
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SKEW: Duration = Duration::from_secs(30);

    fn who() -> AgentId {
        AgentId::from_bytes([1; 32])
    }

    #[test]
    fn remembers_until_the_timestamp_is_stale_anyway() {
        let mut window = ReplayWindow::new(SKEW, 100);
        let sent = UnixMillis(1_000_000);
        assert!(window.insert(who(), 7, sent));
        assert!(window.contains(&who(), 7, sent));
        assert!(!window.contains(&who(), 8, sent));
        // Still acceptable 30 s later: still remembered.
        window.expire(UnixMillis(sent.0 + 30_000));
        assert!(window.contains(&who(), 7, sent));
        // Two bucket widths later the timestamp is stale: forgotten.
        window.expire(UnixMillis(sent.0 + 90_001));
        assert!(!window.contains(&who(), 7, sent));
        assert_eq!(window.len(), 0);
    }

    #[test]
    fn capacity_is_a_hard_bound() {
        let mut window = ReplayWindow::new(SKEW, 3);
        for nonce in 0..3 {
            assert!(window.insert(who(), nonce, UnixMillis(5)));
        }
        assert!(!window.insert(who(), 3, UnixMillis(5)));
        assert_eq!(window.len(), 3);
    }
}
