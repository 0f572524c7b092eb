//! [`VerifiedCache`]: a bounded set of signatures already verified.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};

use knhk_types::{AgentId, Signature};
use sha2::{Digest, Sha256};

/// SHA-256 over (domain, signer, signature, message): names one verified
/// (key, message, signature) triple. Collision resistance makes it safe to accept a
/// message on a cache hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CacheKey([u8; 32]);

impl CacheKey {
    /// The key recording that `signature` by `signer` over `message` passed *strict*
    /// single verification. Cost: one SHA-256 pass over the message (hundreds of
    /// nanoseconds for a small message), never a curve operation.
    pub fn new(signer: &AgentId, message: &[u8], signature: &Signature) -> Self {
        Self::tagged(
            b"knhk verified-signature strict v1\0",
            signer,
            message,
            signature,
        )
    }

    /// The key recording that the triple passed *batch* verification, whose acceptance
    /// set is slightly wider than strict verification's; kept apart so a batch result
    /// never answers a strict question.
    pub fn batch(signer: &AgentId, message: &[u8], signature: &Signature) -> Self {
        Self::tagged(
            b"knhk verified-signature batch v1\0",
            signer,
            message,
            signature,
        )
    }

    fn tagged(domain: &[u8], signer: &AgentId, message: &[u8], signature: &Signature) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(domain);
        hasher.update(signer.as_bytes());
        hasher.update(signature.0);
        hasher.update(message);
        Self(hasher.finalize().into())
    }
}

/// Keys are already uniform hashes: use eight of their bytes as the table hash.
#[derive(Default)]
struct PrehashedHasher(u64);

impl Hasher for PrehashedHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut word = [0u8; 8];
        let take = bytes.len().min(8);
        word[..take].copy_from_slice(&bytes[..take]);
        self.0 ^= u64::from_le_bytes(word);
    }
}

type PrehashedSet = HashSet<CacheKey, BuildHasherDefault<PrehashedHasher>>;

/// Remembers up to `capacity` verified signatures, forgetting the oldest half at a time
/// (two generations: when the young one fills, it becomes the old one and the old one
/// is dropped). O(1) per operation; memory ≤ `capacity` × 32 bytes plus table overhead.
#[derive(Debug)]
pub struct VerifiedCache {
    capacity: usize,
    young: PrehashedSet,
    old: PrehashedSet,
}

impl std::fmt::Debug for PrehashedHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PrehashedHasher")
    }
}

impl VerifiedCache {
    /// A cache holding at most `capacity` entries (at least 2).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(2);
        Self {
            capacity,
            young: PrehashedSet::default(),
            old: PrehashedSet::default(),
        }
    }

    /// True if `key` was inserted and not yet forgotten.
    pub fn contains(&self, key: &CacheKey) -> bool {
        self.young.contains(key) || self.old.contains(key)
    }

    /// Records `key` as verified.
    pub fn insert(&mut self, key: CacheKey) {
        if self.young.len() >= self.capacity / 2 {
            self.old = std::mem::take(&mut self.young);
        }
        self.young.insert(key);
    }

    /// Entries currently remembered (≤ capacity).
    pub fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }

    /// True if nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The configured bound.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u32) -> CacheKey {
        CacheKey::new(
            &AgentId::from_bytes([1; 32]),
            &n.to_le_bytes(),
            &Signature([0; 64]),
        )
    }

    #[test]
    fn keys_separate_signer_message_and_signature() {
        let signer = AgentId::from_bytes([1; 32]);
        let base = CacheKey::new(&signer, b"m", &Signature([0; 64]));
        assert_ne!(
            base,
            CacheKey::new(&AgentId::from_bytes([2; 32]), b"m", &Signature([0; 64]))
        );
        assert_ne!(base, CacheKey::new(&signer, b"n", &Signature([0; 64])));
        assert_ne!(base, CacheKey::new(&signer, b"m", &Signature([1; 64])));
        assert_ne!(base, CacheKey::batch(&signer, b"m", &Signature([0; 64])));
    }

    #[test]
    fn never_holds_more_than_capacity_and_keeps_recent_entries() {
        let mut cache = VerifiedCache::new(100);
        for n in 0..10_000 {
            cache.insert(key(n));
            assert!(cache.len() <= 100);
        }
        assert!(cache.contains(&key(9_999)));
        assert!(cache.contains(&key(9_950)));
        assert!(!cache.contains(&key(0)));
    }
}
