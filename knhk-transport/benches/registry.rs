//! Peer registry hot paths: `random_peers(10)` and `lookup` at 1k, 100k and 1M peers.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::net::SocketAddr;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use knhk_transport::{PeerRegistry, RegistryConfig};
use knhk_types::{AgentId, PeerInfo};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn id(n: u32) -> AgentId {
    let mut bytes = [0u8; 32];
    bytes[..4].copy_from_slice(&n.to_le_bytes());
    bytes[4] = 1;
    AgentId::from_bytes(bytes)
}

fn registry(size: u32) -> PeerRegistry {
    let registry = PeerRegistry::new(id(0), RegistryConfig::default());
    for n in 1..=size {
        let addr = SocketAddr::from(([10, (n >> 16) as u8, (n >> 8) as u8, n as u8], 7000));
        registry.register(PeerInfo::new(id(n), addr)).unwrap();
    }
    registry
}

fn sampling(c: &mut Criterion) {
    let mut group = c.benchmark_group("registry");
    for size in [1_000u32, 100_000, 1_000_000] {
        let registry = registry(size);
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        group.bench_with_input(BenchmarkId::new("random_peers_10", size), &size, |b, _| {
            b.iter(|| registry.random_peers(black_box(10), &mut rng))
        });
        let mut out = Vec::with_capacity(10);
        group.bench_with_input(
            BenchmarkId::new("random_peers_into_10", size),
            &size,
            |b, _| {
                b.iter(|| {
                    out.clear();
                    registry.random_peers_into(black_box(10), &mut rng, &mut out);
                    out.len()
                })
            },
        );
        let probe = id(size / 2);
        group.bench_with_input(BenchmarkId::new("lookup", size), &size, |b, _| {
            b.iter(|| registry.lookup(black_box(&probe)))
        });
    }
    group.finish();
}

criterion_group!(benches, sampling);
criterion_main!(benches);
