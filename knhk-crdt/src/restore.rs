//! [`SavedState`]: what a store keeps of a [`VersionedState`], and how the state is
//! rebuilt from it.

use std::collections::BTreeMap;

use knhk_security::SignatureVerifier;
use knhk_types::AgentId;

use crate::delta::{Delta, WriterRange};
use crate::entry::SignedEntry;
use crate::error::CrdtError;
use crate::state::{MergeReport, StateConfig, VersionedState};

/// What a store keeps of a state: every winning entry (tombstones included) and every
/// writer's proof entry ([`VersionedState::proofs`]). Nothing else is needed to rebuild
/// the state, its version vector included; both lists may hold the same entry twice
/// and may be in any order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SavedState {
    /// Winning entries, one per key.
    pub entries: Vec<SignedEntry>,
    /// Proof entries, one per writer (with several for one writer, the highest counter
    /// counts).
    pub proofs: Vec<SignedEntry>,
}

impl SavedState {
    /// Everything `state` holds, to save.
    pub fn of(state: &VersionedState) -> Self {
        Self {
            entries: state.entries().cloned().collect(),
            proofs: state.proofs().cloned().collect(),
        }
    }
}

impl VersionedState {
    /// Rebuilds a state from what a store kept, checking it as a peer's data is
    /// checked: every entry's signature verifies through `verifier`, sizes and quotas
    /// hold. Each writer's version is its proof's counter; entries beyond it (merged
    /// loose, by anti-entropy) are kept without advancing it. Restoring what
    /// [`SavedState::of`] saved gives a state with the same entries, digests, root
    /// and version vector.
    ///
    /// Errors: the first failed check, as a [`CrdtError`] ([`CrdtError::BadSignature`]
    /// for an entry altered on disk); nothing is returned then.
    pub fn restore(
        config: StateConfig,
        saved: &SavedState,
        verifier: &mut impl SignatureVerifier,
    ) -> Result<(Self, MergeReport), CrdtError> {
        let mut proofs: BTreeMap<AgentId, &SignedEntry> = BTreeMap::new();
        for proof in &saved.proofs {
            let highest = proofs.entry(proof.writer).or_insert(proof);
            if proof.counter > highest.counter {
                *highest = proof;
            }
        }
        let versions = Delta {
            ranges: proofs
                .values()
                .map(|proof| WriterRange {
                    writer: proof.writer,
                    after: 0,
                    through: proof.counter,
                })
                .collect(),
            entries: proofs.values().map(|proof| (*proof).clone()).collect(),
        };
        let mut state = Self::new(config);
        let from_proofs = state.merge(&versions, verifier)?;
        // Loose, so that a writer that equivocated (two entries, one counter, both
        // held on different keys) restores as it was held.
        let from_entries = state.merge_entries(&saved.entries, verifier)?;
        // Merges verify only what would win. A stored copy that did not (a damaged
        // duplicate of a proof, whose altered digest orders below the genuine one) must
        // verify too, or a damaged file could pass unnoticed.
        for entry in saved.entries.iter().chain(&saved.proofs) {
            let held =
                state.entry(&entry.key) == Some(entry) || state.proof(&entry.writer) == Some(entry);
            if !held {
                entry.verify(verifier)?;
            }
        }
        let mut updated_keys = from_proofs.updated_keys;
        updated_keys.extend(from_entries.updated_keys);
        updated_keys.sort_unstable();
        updated_keys.dedup();
        let report = MergeReport {
            updated_keys,
            advanced_writers: from_proofs.advanced_writers,
            deferred_entries: from_proofs.deferred_entries + from_entries.deferred_entries,
            over_quota_entries: from_proofs.over_quota_entries + from_entries.over_quota_entries,
        };
        Ok((state, report))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use knhk_security::{Ed25519Verifier, NodeKey};

    fn verifier() -> Ed25519Verifier {
        Ed25519Verifier::new(64)
    }

    /// A state three writers wrote to, with overwritten keys, a tombstone and a proof
    /// that lost its key.
    fn written() -> (VersionedState, NodeKey) {
        let keys: Vec<NodeKey> = (1..=3u8).map(|i| NodeKey::from_seed([i; 32])).collect();
        let mut state = VersionedState::new(StateConfig::default());
        for (i, key) in keys.iter().enumerate() {
            for n in 0..5 {
                state.put(key, &format!("k{n}"), vec![i as u8, n]).unwrap();
            }
        }
        state.delete(&keys[1], "k2").unwrap();
        // keys[0]'s last write (its proof) is then overwritten by keys[2].
        state.put(&keys[0], "lost", b"a".to_vec()).unwrap();
        state.put(&keys[2], "lost", b"c".to_vec()).unwrap();
        (state, keys[0].clone())
    }

    #[test]
    fn a_restored_state_holds_what_was_saved_and_its_version_vector() {
        let (mut state, _) = written();
        let saved = SavedState::of(&state);
        let (mut restored, report) =
            VersionedState::restore(StateConfig::default(), &saved, &mut verifier()).unwrap();
        assert_eq!(restored.digests(), state.digests());
        assert_eq!(restored.merkle_root(), state.merkle_root());
        assert_eq!(restored.version(), state.version());
        assert_eq!(report.advanced_writers, 3);
        assert_eq!(report.deferred_entries + report.over_quota_entries, 0);
    }

    #[test]
    fn saved_entries_in_any_order_and_repeated_restore_the_same_state() {
        let (mut state, _) = written();
        let mut saved = SavedState::of(&state);
        saved.entries.reverse();
        saved.entries.extend(saved.proofs.clone());
        saved.proofs.extend(saved.proofs.clone());
        let (mut restored, _) =
            VersionedState::restore(StateConfig::default(), &saved, &mut verifier()).unwrap();
        assert_eq!(restored.merkle_root(), state.merkle_root());
        assert_eq!(restored.version(), state.version());
    }

    #[test]
    fn an_entry_altered_on_disk_is_refused() {
        // Every stored entry and proof in turn: which one is altered must not matter
        // (once, only altered copies whose digest ordered above the genuine one were
        // caught, so the test passed or failed with the map's iteration order).
        let (state, _) = written();
        let saved = SavedState::of(&state);
        for index in 0..saved.entries.len() + saved.proofs.len() {
            let mut altered = saved.clone();
            let entry = if index < saved.entries.len() {
                &mut altered.entries[index]
            } else {
                &mut altered.proofs[index - saved.entries.len()]
            };
            entry.value = Some(b"tampered".to_vec());
            let error = VersionedState::restore(StateConfig::default(), &altered, &mut verifier())
                .unwrap_err();
            assert!(
                matches!(error, CrdtError::BadSignature { .. }),
                "altered #{index}: {error:?}"
            );
        }
    }

    #[test]
    fn entries_beyond_a_proof_are_kept_without_advancing_the_version() {
        let (state, writer) = written();
        let mut saved = SavedState::of(&state);
        let id = writer.agent_id();
        saved.proofs.retain(|proof| proof.writer != id);
        let (restored, _) =
            VersionedState::restore(StateConfig::default(), &saved, &mut verifier()).unwrap();
        assert_eq!(restored.version().get(&id), 0);
        assert_eq!(restored.get("k4"), state.get("k4"));
    }

    #[test]
    fn a_lease_keeps_local_writes_above_its_floor_and_within_its_ceiling() {
        let (state, writer) = written();
        let (mut restored, _) = VersionedState::restore(
            StateConfig::default(),
            &SavedState::of(&state),
            &mut verifier(),
        )
        .unwrap();
        let id = writer.agent_id();
        assert_eq!(restored.next_counter(&id), 7);
        restored.lease_counters(100, 101);
        assert_eq!(restored.next_counter(&id), 101);
        assert_eq!(restored.put(&writer, "a", vec![1]).unwrap().counter, 101);
        let error = restored.put(&writer, "b", vec![2]).unwrap_err();
        assert_eq!(
            error,
            CrdtError::CounterLeaseExhausted {
                next: 102,
                ceiling: 101
            }
        );
        // A lower lease changes nothing; a higher ceiling lets writes go on.
        restored.lease_counters(0, 50);
        assert!(restored.put(&writer, "b", vec![2]).is_err());
        restored.lease_counters(0, 200);
        assert_eq!(restored.put(&writer, "b", vec![2]).unwrap().counter, 102);
    }

    #[test]
    fn a_peer_that_saw_writes_beyond_the_lease_floor_accepts_the_next_one() {
        // Before a crash the node sent #7 (never stored); it restarts leased above it.
        let (mut before, writer) = written();
        let saved = SavedState::of(&before);
        before.put(&writer, "sent", b"unstored".to_vec()).unwrap();
        let mut peer = VersionedState::new(StateConfig::default());
        peer.merge(&before.delta_since(peer.version()), &mut verifier())
            .unwrap();
        let (mut after, _) =
            VersionedState::restore(StateConfig::default(), &saved, &mut verifier()).unwrap();
        after.lease_counters(7, 1_000);
        after.put(&writer, "new", b"x".to_vec()).unwrap();
        peer.merge(&after.delta_since(peer.version()), &mut verifier())
            .unwrap();
        assert_eq!(peer.get("new"), Some(&b"x"[..]));
        assert_eq!(peer.get("sent"), Some(&b"unstored"[..]));
    }
}
