//! The failure detector and gossip on one node: a minority cut off from the rest finds
//! itself without a quorum and refuses writes (reads keep working), the majority keeps
//! writing, and after the heal both sides find each other, writes resume and the states
//! converge. Times are virtual.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use knhk_endpoint::harness::{Harness, Links, VIRTUAL_START};
use knhk_endpoint::{Endpoint, EndpointConfig, LayerHandle, PeerView};
use knhk_gossip::{GossipConfig, GossipError, GossipLayer};
use knhk_security::{Ed25519Verifier, NodeKey};
use knhk_topology::{MemberState, Membership, SwimLayer, TopologyConfig};
use knhk_types::{AgentId, Scope};

/// Nodes below `split` and the rest cannot reach each other in `[from_us, until_us)`.
struct Cut {
    split: usize,
    from_us: u64,
    until_us: u64,
}

impl Links for Cut {
    fn delay_us(&mut self, from: usize, to: usize, now_us: u64) -> Option<u64> {
        let across = (from < self.split) != (to < self.split);
        let cut = across && (self.from_us..self.until_us).contains(&now_us);
        (!cut).then_some(1_000)
    }
}

type Nodes = Harness<NodeKey, Ed25519Verifier, Cut>;

struct Mesh {
    harness: Nodes,
    gossip: Vec<LayerHandle<GossipLayer>>,
}

impl Mesh {
    fn new(n: usize, cut: Cut) -> Self {
        let keys: Vec<NodeKey> = (0..n)
            .map(|i| NodeKey::from_seed([i as u8 + 60; 32]))
            .collect();
        let ids: Vec<AgentId> = keys.iter().map(NodeKey::agent_id).collect();
        let mut harness = Harness::new(cut, VIRTUAL_START, true);
        let mut gossip = Vec::new();
        let swim = TopologyConfig {
            probe_interval: Duration::from_millis(200),
            probe_timeout: Duration::from_millis(100),
            dead_probe_every: 5,
            ..TopologyConfig::default()
        };
        for (i, key) in keys.into_iter().enumerate() {
            let view = Membership::new(key.agent_id(), ids.iter().copied(), VIRTUAL_START);
            let config = EndpointConfig {
                seed: i as u64 + 100,
                ..EndpointConfig::default()
            };
            let mut endpoint = Endpoint::new(key, view, config);
            endpoint
                .add_layer(Scope::DEFAULT, SwimLayer::new(swim.clone()))
                .unwrap();
            gossip.push(
                endpoint
                    .add_layer(Scope::DEFAULT, GossipLayer::new(GossipConfig::local()))
                    .unwrap(),
            );
            let at = harness.add_node(endpoint, 0);
            harness.start_node(at);
        }
        Self { harness, gossip }
    }

    fn run_to(&mut self, us: u64) {
        while self.harness.now_us() < us && self.harness.step() {}
    }

    fn put(&mut self, i: usize, key: &str) -> Result<(), GossipError> {
        let handle = self.gossip[i];
        let key = key.to_owned();
        self.harness
            .call(i, handle, move |gossip, ctx| {
                gossip.put(ctx, &key, b"v".to_vec()).map(drop)
            })
            .unwrap()
    }

    fn get(&self, i: usize, key: &str) -> Option<Vec<u8>> {
        let layer = self.harness.endpoint(i).layer(self.gossip[i]).unwrap();
        layer.get(key).map(<[u8]>::to_vec)
    }

    fn has_quorum(&self, i: usize) -> bool {
        let view = self.harness.endpoint(i).view::<Membership>().unwrap();
        view.reachability().has_quorum()
    }

    fn all_alive(&self, i: usize) -> bool {
        let view = self.harness.endpoint(i).view::<Membership>().unwrap();
        view.members().iter().all(|m| m.state == MemberState::Alive)
    }
}

#[test]
fn a_minority_refuses_writes_until_the_partition_heals() {
    // 4 of 9 nodes on one side of the cut from 2 s to 8 s.
    let mut mesh = Mesh::new(
        9,
        Cut {
            split: 4,
            from_us: 2_000_000,
            until_us: 8_000_000,
        },
    );
    mesh.run_to(1_500_000);
    mesh.put(0, "before").unwrap();
    mesh.run_to(2_000_000);
    assert!((0..9).all(|i| mesh.has_quorum(i)));

    // Detection: every minority node loses its quorum; the majority keeps its own.
    let mut detected_at = None;
    while mesh.harness.now_us() < 8_000_000 {
        if detected_at.is_none() && (0..4).all(|i| !mesh.has_quorum(i)) {
            detected_at = Some(mesh.harness.now_us());
        }
        assert!(
            (4..9).all(|i| mesh.has_quorum(i)),
            "the majority lost its quorum"
        );
        if !mesh.harness.step() {
            break;
        }
    }
    let detected = detected_at.expect("the minority noticed the cut");
    println!(
        "minority without quorum {} virtual ms after the cut",
        (detected - 2_000_000) / 1_000
    );
    assert!(matches!(
        mesh.put(1, "minority"),
        Err(GossipError::ReadOnly {
            reachable: 4,
            required: 5
        })
    ));
    assert_eq!(
        mesh.get(1, "before"),
        Some(b"v".to_vec()),
        "reads keep working"
    );
    mesh.put(6, "majority").unwrap();

    // Heal at 8 s: both sides find each other, writes resume, states converge.
    let mut healed_at = None;
    while mesh.harness.now_us() < 30_000_000 {
        let all = (0..9).all(|i| mesh.all_alive(i) && mesh.get(i, "majority").is_some());
        if all {
            healed_at = Some(mesh.harness.now_us());
            break;
        }
        if !mesh.harness.step() {
            break;
        }
    }
    let healed = healed_at.expect("the views and states reconcile after the heal");
    println!(
        "all alive and converged {} virtual ms after the heal",
        (healed - 8_000_000) / 1_000
    );
    mesh.put(1, "after").unwrap();
}
