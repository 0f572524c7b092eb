//! Security hot paths: the validation gate (duplicate, cached), cold verify single and
//! batched, sign.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use knhk_security::{
    AllowAllSenders, ByzantineValidator, Ed25519Verifier, NodeKey, Penalties, ReceivedFrame,
    ReputationConfig, SignatureVerifier, SignedMessage, ValidatorConfig,
};
use knhk_types::{Envelope, EnvelopeHeader, EnvelopeSigner, MessageKind, UnixMillis};

const NOW: UnixMillis = UnixMillis::VIRTUAL_START;

fn frame(key: &NodeKey, nonce: u64) -> Vec<u8> {
    Envelope::sign(
        key,
        EnvelopeHeader::new(MessageKind::GossipPush, NOW, nonce),
        vec![0x5a; 200],
    )
    .encode()
}

fn gate(c: &mut Criterion) {
    let key = NodeKey::from_seed([1; 32]);
    let mut group = c.benchmark_group("validator");

    // A duplicate: refused at the replay check. Replay penalties are off here so the
    // sender is not banned mid-benchmark (a ban would make the path even cheaper).
    let config = ValidatorConfig {
        reputation: ReputationConfig {
            penalties: Penalties {
                replay: 0,
                ..Penalties::default()
            },
            ..ReputationConfig::default()
        },
        ..ValidatorConfig::default()
    };
    let mut validator = ByzantineValidator::new(config);
    let duplicate = frame(&key, 0);
    validator
        .validate(NOW, key.agent_id(), &duplicate, &AllowAllSenders)
        .unwrap();
    group.bench_function("duplicate_rejected", |b| {
        b.iter(|| {
            validator
                .validate(NOW, key.agent_id(), black_box(&duplicate), &AllowAllSenders)
                .is_err()
        })
    });

    // A new frame whose signature is already in the cache (seen through another path):
    // passes every check and is accepted, with no curve arithmetic.
    const POOL: usize = 20_000;
    let frames: Vec<Vec<u8>> = (1..=POOL as u64).map(|n| frame(&key, n)).collect();
    let fresh_validator = || {
        let mut validator = ByzantineValidator::new(ValidatorConfig {
            rate_per_second: u32::MAX,
            rate_burst: u32::MAX,
            ..ValidatorConfig::default()
        });
        for bytes in &frames {
            let envelope = knhk_types::EnvelopeRef::decode(bytes, usize::MAX).unwrap();
            validator
                .verifier_mut()
                .verify(
                    &envelope.sender,
                    &envelope.signed_bytes(),
                    &envelope.signature,
                )
                .unwrap();
        }
        validator
    };
    // The validator and its position in the pool persist across criterion's calls, so
    // every measured frame meets a warm validator, as in a running node.
    let mut current = fresh_validator();
    let mut used = 0usize;
    group.bench_function("cached_accepted", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut done = 0;
            while done < iters {
                if used == POOL {
                    current = fresh_validator();
                    used = 0;
                }
                let batch = ((iters - done) as usize).min(POOL - used);
                let started = Instant::now();
                for bytes in &frames[used..used + batch] {
                    current
                        .validate(NOW, key.agent_id(), black_box(bytes), &AllowAllSenders)
                        .unwrap();
                }
                total += started.elapsed();
                used += batch;
                done += batch as u64;
            }
            total
        })
    });
    group.finish();
}

fn verify(c: &mut Criterion) {
    let keys: Vec<NodeKey> = (0..64u8).map(|n| NodeKey::from_seed([n; 32])).collect();
    let message = [0x42u8; 256];
    let signatures: Vec<_> = keys.iter().map(|k| k.sign_message(&message)).collect();
    let items: Vec<SignedMessage<'_>> = keys
        .iter()
        .zip(&signatures)
        .map(|(k, s)| SignedMessage {
            signer: k.agent_id(),
            message: &message,
            signature: *s,
        })
        .collect();

    let mut group = c.benchmark_group("ed25519");
    group.throughput(Throughput::Elements(1));
    group.bench_function("sign", |b| {
        b.iter(|| keys[0].sign_message(black_box(&message)))
    });
    group.bench_function("verify_cold_single", |b| {
        b.iter(|| {
            let mut verifier = Ed25519Verifier::new(4);
            verifier
                .verify(&items[0].signer, items[0].message, &items[0].signature)
                .unwrap()
        })
    });
    group.bench_function("verify_cached", |b| {
        let mut verifier = Ed25519Verifier::new(1_024);
        verifier
            .verify(&items[0].signer, items[0].message, &items[0].signature)
            .unwrap();
        b.iter(|| {
            verifier
                .verify(
                    &items[0].signer,
                    black_box(items[0].message),
                    &items[0].signature,
                )
                .unwrap()
        })
    });
    group.throughput(Throughput::Elements(64));
    group.bench_function("verify_cold_batch_64", |b| {
        b.iter(|| {
            let mut verifier = Ed25519Verifier::new(4);
            verifier.verify_batch(black_box(&items)).len()
        })
    });
    group.finish();
}

/// 64 new frames (8 senders, distinct nonces, no signature cached) through the gate:
/// one at a time, and as one burst (hop signatures in one ed25519 batch).
fn gate_burst(c: &mut Criterion) {
    let keys: Vec<NodeKey> = (0..8u8).map(|n| NodeKey::from_seed([n + 1; 32])).collect();
    let frames: Vec<(knhk_types::AgentId, Vec<u8>)> = (0..64u64)
        .map(|n| {
            let key = &keys[n as usize % keys.len()];
            (key.agent_id(), frame(key, n + 1))
        })
        .collect();
    let received: Vec<ReceivedFrame<'_>> = frames
        .iter()
        .map(|(hop, bytes)| ReceivedFrame {
            hop: *hop,
            received_at: NOW,
            frame: bytes,
        })
        .collect();
    let fresh = || ByzantineValidator::new(ValidatorConfig::default());
    let mut group = c.benchmark_group("validator");
    group.throughput(Throughput::Elements(64));
    group.bench_function("new_frames_64_one_at_a_time", |b| {
        b.iter_batched_ref(
            fresh,
            |gate| {
                for (hop, bytes) in &frames {
                    gate.validate(NOW, *hop, black_box(bytes), &AllowAllSenders)
                        .unwrap();
                }
            },
            BatchSize::SmallInput,
        )
    });
    group.bench_function("new_frames_64_as_a_burst", |b| {
        b.iter_batched_ref(
            fresh,
            |gate| {
                gate.validate_burst(NOW, black_box(&received), &AllowAllSenders)
                    .len()
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, gate, gate_burst, verify);
criterion_main!(benches);
