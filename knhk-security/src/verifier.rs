//! [`SignatureVerifier`]: the one place signatures are checked, cached.

use knhk_types::{AgentId, Signature};

use crate::cache::{CacheKey, VerifiedCache};
use crate::error::VerifyError;

/// Checks that `signer` signed `message`. Implementations may cache results; callers
/// (the validator, CRDT merges) depend only on this trait, so a simulator can supply a
/// cheaper stand-in with the same accept/reject behaviour.
pub trait SignatureVerifier {
    /// Ok if `signature` is `signer`'s valid signature over `message`.
    ///
    /// Errors: [`VerifyError::InvalidKey`] if `signer` is not a valid ed25519 point,
    /// [`VerifyError::BadSignature`] otherwise.
    fn verify(
        &mut self,
        signer: &AgentId,
        message: &[u8],
        signature: &Signature,
    ) -> Result<(), VerifyError>;

    /// Like [`SignatureVerifier::verify`], for a signature that will never be seen
    /// again (a hop's envelope): answers from the cache if it can, but does not store
    /// the result, so unique signatures do not crowd out ones that repeat.
    ///
    /// Errors: as [`SignatureVerifier::verify`].
    fn verify_unique(
        &mut self,
        signer: &AgentId,
        message: &[u8],
        signature: &Signature,
    ) -> Result<(), VerifyError> {
        self.verify(signer, message, signature)
    }

    /// Verifies a burst of hop signatures (envelopes, each seen once): one result per
    /// item, in order. The default checks each with [`SignatureVerifier::verify_unique`];
    /// [`Ed25519Verifier`] checks what its cache cannot answer in one ed25519 batch,
    /// without storing the results, and verifies one by one only if the batch fails.
    ///
    /// Errors, per item: as [`SignatureVerifier::verify`].
    fn verify_hops(&mut self, items: &[SignedMessage<'_>]) -> Vec<Result<(), VerifyError>> {
        items
            .iter()
            .map(|item| self.verify_unique(&item.signer, item.message, &item.signature))
            .collect()
    }

    /// Counters (all zero unless the implementation keeps them).
    fn stats(&self) -> VerifierStats {
        VerifierStats::default()
    }

    /// Approximate bytes held (caches), for memory accounting.
    fn memory_bytes(&self) -> usize {
        0
    }
}

/// One item of a batch.
#[derive(Clone, Copy, Debug)]
pub struct SignedMessage<'a> {
    /// Who claims to have signed.
    pub signer: AgentId,
    /// The signed bytes.
    pub message: &'a [u8],
    /// The signature.
    pub signature: Signature,
}

/// Counters of an [`Ed25519Verifier`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VerifierStats {
    /// Answered from the cache, no curve arithmetic.
    pub cache_hits: u64,
    /// Verified with a single strict ed25519 verification.
    pub single_verifications: u64,
    /// Signatures accepted through batch verification.
    pub batch_verified: u64,
    /// Signatures that failed.
    pub failures: u64,
}

/// Strict ed25519 verification (RFC 8032 with canonical `s`, and weak keys and
/// small-order `R` refused) behind a bounded [`VerifiedCache`].
#[derive(Debug)]
pub struct Ed25519Verifier {
    cache: VerifiedCache,
    stats: VerifierStats,
}

impl Ed25519Verifier {
    /// A verifier whose cache remembers up to `cache_capacity` verified signatures.
    pub fn new(cache_capacity: usize) -> Self {
        Self {
            cache: VerifiedCache::new(cache_capacity),
            stats: VerifierStats::default(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> VerifierStats {
        self.stats
    }

    /// The cache (for its size and bound).
    pub fn cache(&self) -> &VerifiedCache {
        &self.cache
    }

    /// Verifies a burst: cached items are answered at once; the rest go through one
    /// ed25519 batch verification (about 2.5× cheaper per signature at 64); if the batch
    /// fails, each item is verified on its own to find the bad ones.
    ///
    /// Returns one result per item, in order.
    ///
    /// Batch semantics: ed25519-dalek's batch equation is cofactorless with random
    /// weights; a signature crafted with a torsion component in `R` can pass a batch that
    /// strict single verification would refuse. Use batches to authenticate *hops*
    /// (envelopes), where a local accept cannot make replicas diverge; use
    /// [`SignatureVerifier::verify`] for data that every replica must judge alike (CRDT
    /// entries).
    pub fn verify_batch(&mut self, items: &[SignedMessage<'_>]) -> Vec<Result<(), VerifyError>> {
        self.batch(items, true)
    }

    /// [`Ed25519Verifier::verify_batch`], storing successes in the cache if `remember`.
    /// A burst with one signature to check is verified strictly (a batch of one saves
    /// nothing).
    fn batch(
        &mut self,
        items: &[SignedMessage<'_>],
        remember: bool,
    ) -> Vec<Result<(), VerifyError>> {
        let mut results = vec![Ok(()); items.len()];
        let mut pending = Vec::new();
        let mut keys = Vec::new();
        for (at, item) in items.iter().enumerate() {
            // A strict pass also answers a batch question; a batch pass never answers a
            // strict one (see CacheKey::batch).
            let strict_key = CacheKey::new(&item.signer, item.message, &item.signature);
            let cache_key = CacheKey::batch(&item.signer, item.message, &item.signature);
            if self.cache.contains(&strict_key) || self.cache.contains(&cache_key) {
                self.stats.cache_hits += 1;
                continue;
            }
            match item.signer.verifying_key() {
                Some(key) if !key.is_weak() => {
                    pending.push((at, cache_key));
                    keys.push(key);
                }
                _ => {
                    self.stats.failures += 1;
                    results[at] = Err(VerifyError::InvalidKey(item.signer));
                }
            }
        }
        if pending.is_empty() {
            return results;
        }
        if let [(at, _)] = pending[..] {
            let item = &items[at];
            results[at] = self.check(&item.signer, item.message, &item.signature, remember);
            return results;
        }
        let messages: Vec<&[u8]> = pending.iter().map(|(at, _)| items[*at].message).collect();
        let signatures: Vec<ed25519_dalek::Signature> = pending
            .iter()
            .map(|(at, _)| ed25519_dalek::Signature::from_bytes(&items[*at].signature.0))
            .collect();
        if ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok() {
            if remember {
                for (_, cache_key) in &pending {
                    self.cache.insert(*cache_key);
                }
            }
            self.stats.batch_verified += pending.len() as u64;
        } else {
            for (at, _) in pending {
                let item = &items[at];
                results[at] = self.check(&item.signer, item.message, &item.signature, remember);
            }
        }
        results
    }
}

impl SignatureVerifier for Ed25519Verifier {
    fn stats(&self) -> VerifierStats {
        self.stats
    }

    fn memory_bytes(&self) -> usize {
        self.cache.len() * 40
    }

    fn verify(
        &mut self,
        signer: &AgentId,
        message: &[u8],
        signature: &Signature,
    ) -> Result<(), VerifyError> {
        self.check(signer, message, signature, true)
    }

    fn verify_unique(
        &mut self,
        signer: &AgentId,
        message: &[u8],
        signature: &Signature,
    ) -> Result<(), VerifyError> {
        self.check(signer, message, signature, false)
    }

    fn verify_hops(&mut self, items: &[SignedMessage<'_>]) -> Vec<Result<(), VerifyError>> {
        self.batch(items, false)
    }
}

impl Ed25519Verifier {
    /// Answers from the cache, or verifies strictly and counts; stores a success if
    /// `remember` (signatures that may come again), not otherwise.
    fn check(
        &mut self,
        signer: &AgentId,
        message: &[u8],
        signature: &Signature,
        remember: bool,
    ) -> Result<(), VerifyError> {
        let cache_key = CacheKey::new(signer, message, signature);
        if self.cache.contains(&cache_key) {
            self.stats.cache_hits += 1;
            return Ok(());
        }
        let outcome = verify_strict(signer, message, signature);
        match outcome {
            Ok(()) => {
                self.stats.single_verifications += 1;
                if remember {
                    self.cache.insert(cache_key);
                }
            }
            Err(_) => self.stats.failures += 1,
        }
        outcome
    }
}

/// Strict ed25519 verification with no cache.
///
/// Errors: as [`SignatureVerifier::verify`].
pub(crate) fn verify_strict(
    signer: &AgentId,
    message: &[u8],
    signature: &Signature,
) -> Result<(), VerifyError> {
    let key = signer
        .verifying_key()
        .ok_or(VerifyError::InvalidKey(*signer))?;
    key.verify_strict(message, &ed25519_dalek::Signature::from_bytes(&signature.0))
        .map_err(|_| VerifyError::BadSignature(*signer))
}

#[cfg(test)]
mod tests {
    use super::*;
    use knhk_types::EnvelopeSigner;

    use crate::NodeKey;

    fn signed(seed: u8, message: &'static [u8]) -> SignedMessage<'static> {
        let key = NodeKey::from_seed([seed; 32]);
        SignedMessage {
            signer: key.agent_id(),
            message,
            signature: key.sign_message(message),
        }
    }

    #[test]
    fn each_unique_signature_is_verified_once() {
        let mut verifier = Ed25519Verifier::new(1_000);
        let item = signed(1, b"hello");
        for _ in 0..5 {
            verifier
                .verify(&item.signer, item.message, &item.signature)
                .unwrap();
        }
        let stats = verifier.stats();
        assert_eq!((stats.single_verifications, stats.cache_hits), (1, 4));
    }

    #[test]
    fn a_cached_signature_does_not_vouch_for_another_message() {
        let mut verifier = Ed25519Verifier::new(1_000);
        let item = signed(1, b"hello");
        verifier
            .verify(&item.signer, item.message, &item.signature)
            .unwrap();
        assert_eq!(
            verifier.verify(&item.signer, b"HELLO", &item.signature),
            Err(VerifyError::BadSignature(item.signer))
        );
        let other = NodeKey::from_seed([2; 32]).agent_id();
        assert_eq!(
            verifier.verify(&other, item.message, &item.signature),
            Err(VerifyError::BadSignature(other))
        );
    }

    #[test]
    fn failures_are_not_cached() {
        let mut verifier = Ed25519Verifier::new(1_000);
        let item = signed(1, b"hello");
        let forged = Signature([9; 64]);
        for _ in 0..3 {
            assert!(
                verifier
                    .verify(&item.signer, item.message, &forged)
                    .is_err()
            );
        }
        assert_eq!(verifier.stats().failures, 3);
        assert!(verifier.cache().is_empty());
    }

    #[test]
    fn batch_results_never_answer_a_strict_check() {
        let mut verifier = Ed25519Verifier::new(1_000);
        let items: Vec<_> = (1..=4).map(|seed| signed(seed, b"burst")).collect();
        assert!(verifier.verify_batch(&items).iter().all(Result::is_ok));
        let before = verifier.stats();
        verifier
            .verify(&items[0].signer, items[0].message, &items[0].signature)
            .unwrap();
        let after = verifier.stats();
        assert_eq!(after.single_verifications, before.single_verifications + 1);
        assert_eq!(after.cache_hits, before.cache_hits);
    }

    #[test]
    fn invalid_key_is_reported_as_such() {
        let mut verifier = Ed25519Verifier::new(10);
        let mut bad = [0u8; 32];
        bad[0] = 2;
        let signer = AgentId::from_bytes(bad);
        assert_eq!(
            verifier.verify(&signer, b"m", &Signature([0; 64])),
            Err(VerifyError::InvalidKey(signer))
        );
    }

    #[test]
    fn batch_accepts_a_clean_burst_and_pinpoints_a_bad_item() {
        let mut verifier = Ed25519Verifier::new(1_000);
        let mut items: Vec<_> = (1..=16).map(|seed| signed(seed, b"burst")).collect();
        assert!(verifier.verify_batch(&items).iter().all(Result::is_ok));
        assert_eq!(verifier.stats().batch_verified, 16);
        // Same burst again: all cached.
        assert!(verifier.verify_batch(&items).iter().all(Result::is_ok));
        assert_eq!(verifier.stats().cache_hits, 16);

        let mut fresh = Ed25519Verifier::new(1_000);
        items[5].signature = Signature([3; 64]);
        let results = fresh.verify_batch(&items);
        for (at, result) in results.iter().enumerate() {
            assert_eq!(result.is_err(), at == 5, "item {at}");
        }
    }

    #[test]
    fn hop_bursts_are_batched_but_not_remembered() {
        let mut verifier = Ed25519Verifier::new(1_000);
        let mut items: Vec<_> = (1..=8).map(|seed| signed(seed, b"hops")).collect();
        assert!(verifier.verify_hops(&items).iter().all(Result::is_ok));
        assert_eq!(verifier.stats().batch_verified, 8);
        assert!(verifier.cache().is_empty(), "hop signatures are seen once");
        items[2].signature = Signature([7; 64]);
        let results = verifier.verify_hops(&items);
        for (at, result) in results.iter().enumerate() {
            assert_eq!(result.is_err(), at == 2, "item {at}");
        }
        assert!(verifier.cache().is_empty());
    }

    #[test]
    fn a_burst_of_one_is_verified_strictly() {
        let mut verifier = Ed25519Verifier::new(1_000);
        let item = signed(1, b"alone");
        assert!(verifier.verify_hops(&[item]).iter().all(Result::is_ok));
        let stats = verifier.stats();
        assert_eq!((stats.single_verifications, stats.batch_verified), (1, 0));
    }
}
