//! The topology layer on real QUIC (loopback), beside gossip on one endpoint per node:
//! two nodes that know only a seed learn each other's address from the failure
//! detector's gossip, probe each other directly, and see the seed go when it stops.
//! The `Topology` API reads it all from the running nodes. Waits are liveness bounds
//! (generous), never timing assertions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use knhk_endpoint::{Endpoint, EndpointConfig};
use knhk_gossip::{GossipConfig, GossipLayer, Mesh};
use knhk_security::{Ed25519Verifier, NodeKey};
use knhk_topology::runtime::{Topology, TopologyObserver};
use knhk_topology::{MemberState, Membership, SwimLayer, TopologyConfig, ViewConfig};
use knhk_transport::{InboundPolicy, PeerRegistry, QuicConfig, QuicTransport, RegistryConfig};
use knhk_types::{AgentId, PeerInfo, Scope, UnixMillis};

struct Node {
    mesh: Mesh,
    addr: std::net::SocketAddr,
    topology: Topology,
    addresses: Arc<knhk_transport::AddressBook>,
}

/// A node over QUIC, open to any authenticated peer the directory (`members`)
/// admits, knowing only `seed` (if any).
fn start(
    key: NodeKey,
    members: Arc<Vec<AgentId>>,
    seed: Option<(AgentId, std::net::SocketAddr)>,
) -> Node {
    let id = key.agent_id();
    let registry = Arc::new(PeerRegistry::new(id, RegistryConfig::default()));
    if let Some((seed_id, addr)) = seed {
        registry.register(PeerInfo::new(seed_id, addr)).unwrap();
    }
    let quic = QuicConfig {
        inbound_policy: InboundPolicy::AnyAuthenticatedPeer,
        ..QuicConfig::default()
    };
    let transport = QuicTransport::bind(key.signing_key(), registry, quic).unwrap();
    let addresses = transport.address_book();
    let addr = transport.local_addr().unwrap();
    let now = UnixMillis::from_system_time(SystemTime::now());
    let directory = members.clone();
    let view = Membership::with_config(
        id,
        seed.map(|(seed_id, _)| seed_id),
        now,
        ViewConfig {
            directory: Some(Arc::new(move |id: &AgentId| directory.contains(id))),
            ..ViewConfig::default()
        },
    );
    let config = EndpointConfig {
        seed: u64::from(id.as_bytes()[0]),
        ..EndpointConfig::default()
    };
    let verifier = Ed25519Verifier::new(config.validator.signature_cache_capacity);
    let (mut endpoint, gossip) = Endpoint::with_layer(
        key,
        verifier,
        view,
        config,
        Scope::DEFAULT,
        GossipLayer::new(GossipConfig::local()),
    );
    let swim = endpoint
        .add_layer(
            Scope::DEFAULT,
            SwimLayer::new(TopologyConfig {
                probe_interval: Duration::from_millis(200),
                probe_timeout: Duration::from_millis(100),
                advertise: Some(addr),
                ..TopologyConfig::default()
            }),
        )
        .unwrap();
    let observer = TopologyObserver::new(swim, addresses.clone());
    let mesh = Mesh::start_endpoint_observed(
        endpoint,
        gossip,
        transport,
        &opentelemetry::global::meter("test"),
        observer,
    );
    Node {
        mesh,
        addr,
        topology: Topology::new(swim),
        addresses,
    }
}

async fn state_of(node: &Node, member: AgentId) -> Option<MemberState> {
    let members = node.topology.members(node.mesh.node()).await.unwrap();
    members.iter().find(|m| m.id == member).map(|m| m.state)
}

async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_learn_each_other_by_gossip_and_see_a_stopped_seed_die() {
    let keys: Vec<NodeKey> = (0..3u8).map(|i| NodeKey::from_seed([80 + i; 32])).collect();
    let ids: Vec<AgentId> = keys.iter().map(NodeKey::agent_id).collect();
    let members = Arc::new(ids.clone());
    let seed = start(keys[0].clone(), members.clone(), None);
    let a = start(keys[1].clone(), members.clone(), Some((ids[0], seed.addr)));
    let b = start(keys[2].clone(), members.clone(), Some((ids[0], seed.addr)));

    // a and b know only the seed; the seed hears of both when they probe it, and its
    // gossip carries their advertised addresses to each other.
    eventually("a and b know each other's address", || async {
        a.addresses.get(&ids[2]).is_some() && b.addresses.get(&ids[1]).is_some()
    })
    .await;
    eventually("a sees b alive, measured by its own probes", || async {
        let members = a.topology.members(a.mesh.node()).await.unwrap();
        members
            .iter()
            .any(|m| m.id == ids[2] && m.state == MemberState::Alive && m.rtt.min().is_some())
    })
    .await;
    let status = a.topology.status(a.mesh.node()).await.unwrap();
    assert!(!status.partitioned, "{status:?}");
    assert_eq!(status.view[0], 2, "{status:?}");

    // Gossip runs over the same endpoint and learned addresses.
    a.mesh.put("from/a", b"hello".to_vec()).await.unwrap();
    eventually("b gets a's write", || async {
        b.mesh.get("from/a").await.unwrap().is_some()
    })
    .await;

    seed.mesh.shutdown().await.unwrap();
    eventually("a and b see the stopped seed dead", || async {
        state_of(&a, ids[0]).await == Some(MemberState::Dead)
            && state_of(&b, ids[0]).await == Some(MemberState::Dead)
    })
    .await;
    a.mesh.shutdown().await.unwrap();
    b.mesh.shutdown().await.unwrap();
}
