//! Loom model of concurrent register / deregister / sample on the peer registry.
//!
//! Run with (as `cargo xtask ci` does):
//! `RUSTFLAGS="--cfg knhk_loom" cargo test -p knhk-transport --no-default-features --release --test loom_registry`
#![cfg(knhk_loom)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::net::SocketAddr;

use knhk_transport::{PeerRegistry, RegistryConfig};
use knhk_types::{AgentId, PeerInfo};
use loom::sync::Arc;
use loom::thread;
use rand::SeedableRng;
use rand::rngs::StdRng;

fn id(n: u8) -> AgentId {
    AgentId::from_bytes([n; 32])
}

fn peer(n: u8) -> PeerInfo {
    PeerInfo::new(
        id(n),
        SocketAddr::from(([127, 0, 0, 1], 7000 + u16::from(n))),
    )
}

fn assert_valid_sample(sample: &[PeerInfo]) {
    let ids: HashSet<AgentId> = sample.iter().map(|p| p.id).collect();
    assert_eq!(ids.len(), sample.len(), "duplicate peer in a sample");
    assert!(!ids.contains(&id(0)), "a sample contained ourselves");
}

#[test]
fn no_lost_peer_no_duplicate_no_sample_after_deregistration() {
    loom::model(|| {
        let registry = Arc::new(PeerRegistry::new(id(0), RegistryConfig::default()));
        registry.register(peer(1)).unwrap();
        registry.register(peer(2)).unwrap();

        let adder = {
            let registry = registry.clone();
            thread::spawn(move || {
                registry.register(peer(3)).unwrap();
                registry.register(peer(4)).unwrap();
            })
        };
        let remover = {
            let registry = registry.clone();
            thread::spawn(move || {
                assert_eq!(registry.deregister(&id(1)).map(|p| p.id), Some(id(1)));
                // After deregister returned, no sample may contain it.
                let sample = registry.random_peers(4, &mut StdRng::seed_from_u64(1));
                assert_valid_sample(&sample);
                assert!(
                    sample.iter().all(|p| p.id != id(1)),
                    "sampled a deregistered peer"
                );
            })
        };
        let sample = registry.random_peers(3, &mut StdRng::seed_from_u64(2));
        assert_valid_sample(&sample);

        adder.join().unwrap();
        remover.join().unwrap();
        // No lost peer: every registration that was not undone is present.
        let mut present: Vec<AgentId> = registry.snapshot().iter().map(|p| p.id).collect();
        present.sort();
        assert_eq!(present, vec![id(2), id(3), id(4)]);
        for n in [2, 3, 4] {
            assert_eq!(registry.lookup(&id(n)), Some(peer(n)));
        }
        assert_eq!(registry.lookup(&id(1)), None);
    });
}

#[test]
fn concurrent_deregistrations_of_the_last_slot_keep_the_index_whole() {
    // Two removals racing on the swap-remove path (the moved peer's index update).
    loom::model(|| {
        let registry = Arc::new(PeerRegistry::new(id(0), RegistryConfig::default()));
        for n in 1..=3 {
            registry.register(peer(n)).unwrap();
        }
        let first = {
            let registry = registry.clone();
            thread::spawn(move || registry.deregister(&id(1)))
        };
        let second = {
            let registry = registry.clone();
            thread::spawn(move || registry.deregister(&id(3)))
        };
        assert!(first.join().unwrap().is_some());
        assert!(second.join().unwrap().is_some());
        assert_eq!(registry.len(), 1);
        assert_eq!(registry.lookup(&id(2)), Some(peer(2)));
        let sample = registry.random_peers(5, &mut StdRng::seed_from_u64(3));
        assert_eq!(sample, vec![peer(2)]);
    });
}
