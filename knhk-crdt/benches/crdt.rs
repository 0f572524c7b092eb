//! CRDT hot paths: merging a 1-key delta, Merkle root upkeep, delta extraction.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use knhk_crdt::{StateConfig, VersionedState};
use knhk_security::{Ed25519Verifier, NodeKey, SignatureVerifier};
use knhk_types::VersionVector;

/// Bench-only: accepts every signature, to separate the merge bookkeeping from the
/// signature check in the figures. Never a production verifier.
struct AcceptAllForBreakdown;

impl SignatureVerifier for AcceptAllForBreakdown {
    fn verify(
        &mut self,
        _: &knhk_types::AgentId,
        _: &[u8],
        _: &knhk_types::Signature,
    ) -> Result<(), knhk_security::VerifyError> {
        Ok(())
    }
}

fn state_with(keys: usize, writer: &NodeKey) -> VersionedState {
    let mut state = VersionedState::new(StateConfig::default());
    for n in 0..keys {
        state
            .put(
                writer,
                &format!("agent/{n}/status"),
                format!(r#"{{"load":{n}}}"#).into_bytes(),
            )
            .unwrap();
    }
    state.merkle_root();
    state
}

fn merge(c: &mut Criterion) {
    let (owner, other) = (NodeKey::from_seed([1; 32]), NodeKey::from_seed([2; 32]));
    let base = state_with(1_000, &owner);
    let mut source = base.clone();
    source
        .put(&other, "agent/7/status", br#"{"load":99}"#.to_vec())
        .unwrap();
    let delta = source.delta_since(base.version());
    assert_eq!(delta.entries.len(), 1);
    let entry = &delta.entries[0];

    let mut group = c.benchmark_group("crdt_1k_keys");
    // The entry's signature already verified once (the usual case: the same entry
    // reaches a node through several relays).
    let mut cached = Ed25519Verifier::new(1_024);
    cached
        .verify(&entry.writer, &entry.signed_bytes(), &entry.signature)
        .unwrap();
    group.bench_function("merge_1_key_delta_cached_signature", |b| {
        b.iter_batched_ref(
            || base.clone(),
            |state| state.merge(black_box(&delta), &mut cached).unwrap(),
            BatchSize::LargeInput,
        )
    });
    group.bench_function("merge_1_key_delta_without_signature_check", |b| {
        b.iter_batched_ref(
            || base.clone(),
            |state| {
                state
                    .merge(black_box(&delta), &mut AcceptAllForBreakdown)
                    .unwrap()
            },
            BatchSize::LargeInput,
        )
    });
    group.bench_function("merge_1_key_delta_then_root", |b| {
        b.iter_batched_ref(
            || base.clone(),
            |state| {
                state.merge(black_box(&delta), &mut cached).unwrap();
                state.merkle_root()
            },
            BatchSize::LargeInput,
        )
    });
    group.bench_function("merge_1_key_delta_cold_signature", |b| {
        b.iter_batched_ref(
            || (base.clone(), Ed25519Verifier::new(16)),
            |(state, verifier)| state.merge(black_box(&delta), verifier).unwrap(),
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

fn merkle_and_delta(c: &mut Criterion) {
    let (owner, other) = (NodeKey::from_seed([1; 32]), NodeKey::from_seed([2; 32]));
    let base = state_with(10_000, &owner);
    let mut group = c.benchmark_group("crdt_10k_keys");
    let mut writer_state = base.clone();
    let entry = writer_state
        .put(&other, "agent/42/status", b"x".to_vec())
        .unwrap();
    let mut verifier = Ed25519Verifier::new(1_024);
    group.bench_function("merkle_root_after_one_write", |b| {
        b.iter_batched_ref(
            || {
                let mut state = base.clone();
                state
                    .merge_entries(std::slice::from_ref(&entry), &mut verifier)
                    .unwrap();
                state
            },
            |state| state.merkle_root(),
            BatchSize::LargeInput,
        )
    });
    let mut behind = base.clone();
    let lagging_version = behind.version().clone();
    for n in 0..10 {
        behind
            .put(&owner, &format!("agent/{n}/status"), b"new".to_vec())
            .unwrap();
    }
    group.bench_function("delta_since_10_versions_behind", |b| {
        b.iter(|| behind.delta_since(black_box(&lagging_version)))
    });
    group.bench_function("delta_since_empty_full_state", |b| {
        b.iter(|| behind.delta_since(black_box(&VersionVector::new())))
    });
    let delta = behind.delta_since(&lagging_version);
    group.bench_function("delta_encode_10_entries", |b| {
        b.iter(|| black_box(&delta).encode(512))
    });
    group.finish();
}

criterion_group!(benches, merge, merkle_and_delta);
criterion_main!(benches);
