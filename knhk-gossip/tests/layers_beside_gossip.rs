//! A layer beside gossip on a tokio mesh: its own observer (given to
//! `Mesh::start_endpoint_observed`) is told when the node starts and sees that layer's
//! timers, never gossip's, while gossip goes on as before. In-memory transport; waits
//! are liveness bounds, never timing assertions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use knhk_endpoint::probe::PingLayer;
use knhk_endpoint::runtime::{Driven, Observer};
use knhk_endpoint::{Endpoint, EndpointConfig, MemberList, StaticView, Timer};
use knhk_gossip::{GossipConfig, GossipLayer, Mesh};
use knhk_security::{Ed25519Verifier, NodeKey};
use knhk_transport::{MemoryConfig, MemoryNetwork};
use knhk_types::Scope;

/// Counts what it is told, for the test to read.
#[derive(Clone, Default)]
struct Seen {
    started: Arc<AtomicU64>,
    timers: Arc<AtomicU64>,
    foreign_timers: Arc<AtomicU64>,
    ping_layer: Arc<std::sync::Mutex<Option<knhk_endpoint::LayerId>>>,
}

impl Observer<NodeKey, Ed25519Verifier> for Seen {
    fn started(&mut self, _node: &mut Driven<'_, NodeKey, Ed25519Verifier>) {
        self.started.fetch_add(1, Ordering::Relaxed);
    }

    fn timer_fired(
        &mut self,
        _node: &mut Driven<'_, NodeKey, Ed25519Verifier>,
        timer: Timer,
        _span: &tracing::Span,
    ) {
        let ours = *self.ping_layer.lock().unwrap();
        if Some(timer.layer()) == ours {
            self.timers.fetch_add(1, Ordering::Relaxed);
        } else {
            self.foreign_timers.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_layer_beside_gossip_has_its_own_observer() {
    let keys: Vec<NodeKey> = (0..2u8).map(|i| NodeKey::from_seed([60 + i; 32])).collect();
    let members = MemberList::new(keys.iter().map(NodeKey::agent_id).collect::<Vec<_>>());
    let network = MemoryNetwork::new(MemoryConfig::default());
    let gossip_config = GossipConfig {
        interval: Duration::from_millis(20),
        ..GossipConfig::default()
    };
    let mut meshes = Vec::new();
    let mut seen = Vec::new();
    for (i, key) in keys.into_iter().enumerate() {
        let transport = network.join(key.agent_id()).unwrap();
        let view = StaticView::new(members.clone(), key.agent_id());
        let config = EndpointConfig {
            seed: i as u64 + 1,
            ..EndpointConfig::default()
        };
        let verifier = Ed25519Verifier::new(config.validator.signature_cache_capacity);
        let (mut endpoint, gossip) = Endpoint::with_layer(
            key,
            verifier,
            view,
            config,
            Scope::DEFAULT,
            GossipLayer::new(gossip_config.clone()),
        );
        let ping = endpoint
            .add_layer(Scope(9), PingLayer::new(Duration::from_millis(10)))
            .unwrap();
        let observer = Seen::default();
        *observer.ping_layer.lock().unwrap() = Some(ping.id());
        seen.push(observer.clone());
        meshes.push(Mesh::start_endpoint_observed(
            endpoint,
            gossip,
            transport,
            &opentelemetry::global::meter("test"),
            observer,
        ));
    }
    meshes[0].put("k", b"v".to_vec()).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let delivered = meshes[1].get("k").await.unwrap().is_some();
        let pinged = seen.iter().all(|s| s.timers.load(Ordering::Relaxed) >= 5);
        if delivered && pinged {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "delivered {delivered}, ping timers seen {:?}",
            seen.iter()
                .map(|s| s.timers.load(Ordering::Relaxed))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for s in &seen {
        assert_eq!(s.started.load(Ordering::Relaxed), 1);
        // Gossip's own timers (a round every 20 ms) never reach the other observer.
        assert_eq!(s.foreign_timers.load(Ordering::Relaxed), 0);
    }
    for mesh in meshes {
        mesh.shutdown().await.unwrap();
    }
}
