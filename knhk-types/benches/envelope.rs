//! Envelope hot paths: encode, decode (borrowed and owned), sign, verify.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ed25519_dalek::SigningKey;
use knhk_types::{
    DEFAULT_MAX_FRAME_BYTES, Envelope, EnvelopeHeader, EnvelopeRef, MessageKind, UnixMillis,
};

fn sample() -> (SigningKey, Envelope) {
    let key = SigningKey::from_bytes(&[42; 32]);
    let header = EnvelopeHeader::new(MessageKind::GossipPush, UnixMillis::VIRTUAL_START, 7);
    let envelope = Envelope::sign(&key, header, vec![0x5a; 256]);
    (key, envelope)
}

fn envelope(c: &mut Criterion) {
    let (key, envelope) = sample();
    let bytes = envelope.encode();
    let mut group = c.benchmark_group("envelope_256B_payload");
    group.throughput(Throughput::Elements(1));
    group.bench_function("encode", |b| b.iter(|| black_box(&envelope).encode()));
    group.bench_function("decode_borrowed", |b| {
        b.iter(|| EnvelopeRef::decode(black_box(&bytes), DEFAULT_MAX_FRAME_BYTES).unwrap())
    });
    group.bench_function("decode_owned", |b| {
        b.iter(|| Envelope::decode(black_box(&bytes), DEFAULT_MAX_FRAME_BYTES).unwrap())
    });
    group.bench_function("encode_then_decode", |b| {
        b.iter(|| {
            let bytes = black_box(&envelope).encode();
            Envelope::decode(&bytes, DEFAULT_MAX_FRAME_BYTES).unwrap()
        })
    });
    let header = envelope.header();
    group.bench_function("sign", |b| {
        b.iter(|| Envelope::sign(&key, black_box(header), vec![0x5a; 256]))
    });
    group.bench_function("verify", |b| {
        b.iter(|| black_box(&envelope).verify().unwrap())
    });
    group.finish();
}

/// A version vector the size of a whole frame (30,000 writers), decoded: the canonical
/// (ascending) form is accepted, a descending one refused, both in one pass (the
/// hardening issue's quadratic decode took seconds on the descending one).
fn version_vector_decode(c: &mut Criterion) {
    let pairs: Vec<(knhk_types::AgentId, u64)> = (0..30_000u32)
        .map(|n| {
            let mut id = [0u8; 32];
            id[..4].copy_from_slice(&n.to_be_bytes());
            (knhk_types::AgentId::from_bytes(id), 1)
        })
        .collect();
    let ascending = postcard::to_allocvec(&pairs).unwrap();
    let descending = postcard::to_allocvec(&pairs.iter().rev().collect::<Vec<_>>()).unwrap();
    let mut group = c.benchmark_group("version_vector_30k_writers");
    group.bench_function("decode_ascending_accepted", |b| {
        b.iter(|| postcard::from_bytes::<knhk_types::VersionVector>(black_box(&ascending)).unwrap())
    });
    group.bench_function("decode_descending_refused", |b| {
        b.iter(|| {
            postcard::from_bytes::<knhk_types::VersionVector>(black_box(&descending)).is_err()
        })
    });
    group.finish();
}

criterion_group!(benches, envelope, version_vector_decode);
criterion_main!(benches);
