//! The topology layer on real QUIC (loopback), beside gossip on one endpoint per node:
//! two nodes that know only a seed learn each other's address from the failure
//! detector's gossip, probe each other directly, and see the seed go when it stops.
//! The `Topology` API reads it all from the running nodes. Waits are liveness bounds
//! (generous), never timing assertions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use knhk_gossip::GossipConfig;
use knhk_security::NodeKey;
use knhk_topology::{MemberState, QuicNode, QuicNodeConfig, TopologyConfig, ViewConfig};
use knhk_transport::{InboundPolicy, QuicConfig};
use knhk_types::{AgentId, PeerInfo};

/// A node over QUIC, open to any authenticated peer the directory (`members`)
/// admits, knowing only `seed` (if any).
fn start(
    key: NodeKey,
    members: Arc<Vec<AgentId>>,
    seed: Option<(AgentId, std::net::SocketAddr)>,
) -> QuicNode {
    let config = QuicNodeConfig {
        quic: QuicConfig {
            inbound_policy: InboundPolicy::AnyAuthenticatedPeer,
            ..QuicConfig::default()
        },
        gossip: GossipConfig::local(),
        topology: TopologyConfig {
            probe_interval: Duration::from_millis(200),
            probe_timeout: Duration::from_millis(100),
            ..TopologyConfig::default()
        },
        view: ViewConfig {
            directory: Some(Arc::new(move |id: &AgentId| members.contains(id))),
            ..ViewConfig::default()
        },
        seeds: seed
            .map(|(id, addr)| PeerInfo::new(id, addr))
            .into_iter()
            .collect(),
        ..QuicNodeConfig::default()
    };
    QuicNode::start(key, config, &opentelemetry::global::meter("test")).unwrap()
}

async fn state_of(node: &QuicNode, member: AgentId) -> Option<MemberState> {
    let members = node.topology().members(node.mesh().node()).await.unwrap();
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
    let a = start(
        keys[1].clone(),
        members.clone(),
        Some((ids[0], seed.local_addr())),
    );
    let b = start(
        keys[2].clone(),
        members.clone(),
        Some((ids[0], seed.local_addr())),
    );

    // a and b know only the seed; the seed hears of both when they probe it, and its
    // gossip carries their advertised addresses to each other.
    eventually("a and b know each other's address", || async {
        a.addresses().get(&ids[2]).is_some() && b.addresses().get(&ids[1]).is_some()
    })
    .await;
    eventually("a sees b alive, measured by its own probes", || async {
        let members = a.topology().members(a.mesh().node()).await.unwrap();
        members
            .iter()
            .any(|m| m.id == ids[2] && m.state == MemberState::Alive && m.rtt.min().is_some())
    })
    .await;
    let status = a.topology().status(a.mesh().node()).await.unwrap();
    assert!(!status.partitioned, "{status:?}");
    assert_eq!(status.view[0], 2, "{status:?}");

    // Gossip runs over the same endpoint and learned addresses.
    a.mesh().put("from/a", b"hello".to_vec()).await.unwrap();
    eventually("b gets a's write", || async {
        b.mesh().get("from/a").await.unwrap().is_some()
    })
    .await;

    seed.shutdown().await.unwrap();
    eventually("a and b see the stopped seed dead", || async {
        state_of(&a, ids[0]).await == Some(MemberState::Dead)
            && state_of(&b, ids[0]).await == Some(MemberState::Dead)
    })
    .await;
    // A graceful leave is seen as left, not dead.
    b.leave_and_shutdown(Duration::from_millis(300))
        .await
        .unwrap();
    eventually("a sees b left", || async {
        state_of(&a, ids[2]).await == Some(MemberState::Left)
    })
    .await;
    a.shutdown().await.unwrap();
}
