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

criterion_group!(benches, envelope);
criterion_main!(benches);
