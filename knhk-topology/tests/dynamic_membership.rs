//! Dynamic membership under the virtual-time harness: a node joins through one seed and
//! the mesh learns it, a member that leaves is gone everywhere and no longer counted,
//! and (property, any seed) the graph of bounded views stays connected under churn.
//! Times are virtual.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use knhk_endpoint::harness::{FixedLatency, Harness, VIRTUAL_START};
use knhk_endpoint::{Endpoint, EndpointConfig, LayerHandle, PeerView};
use knhk_security::{Ed25519Verifier, NodeKey};
use knhk_topology::{
    MemberAddressed, MemberJoined, MemberState, Membership, SwimLayer, TopologyConfig, ViewConfig,
};
use knhk_types::{AgentId, Scope};
use proptest::prelude::*;

type Nodes = Harness<NodeKey, Ed25519Verifier, FixedLatency>;

fn topology() -> TopologyConfig {
    TopologyConfig {
        probe_interval: Duration::from_millis(200),
        probe_timeout: Duration::from_millis(100),
        replace_dead_after: Duration::from_secs(2),
        rebalance_every: 20,
        ..TopologyConfig::default()
    }
}

/// Every identity the test may use, admitted by every node (the certificate check of
/// a real deployment).
struct Mesh {
    harness: Nodes,
    keys: Vec<NodeKey>,
    swim: Vec<LayerHandle<SwimLayer>>,
    directory: Arc<HashSet<AgentId>>,
    view: (usize, usize),
}

impl Mesh {
    fn new(identities: usize, view: (usize, usize)) -> Self {
        let keys: Vec<NodeKey> = (0..identities)
            .map(|i| {
                let mut seed = [7u8; 32];
                seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
                NodeKey::from_seed(seed)
            })
            .collect();
        let directory = Arc::new(keys.iter().map(NodeKey::agent_id).collect());
        Self {
            harness: Harness::new(FixedLatency { delay_us: 1_000 }, VIRTUAL_START, true),
            keys,
            swim: Vec::new(),
            directory,
            view,
        }
    }

    /// Starts identity `k` (as the next node) knowing only `seeds` (identities).
    fn start(&mut self, k: usize, seeds: &[usize]) -> usize {
        self.start_with(k, seeds, topology())
    }

    /// As [`Mesh::start`], advertising `127.0.0.1:(5000 + k)` as its address.
    fn start_advertising(&mut self, k: usize, seeds: &[usize]) -> usize {
        let advertise = Some(address(k));
        self.start_with(
            k,
            seeds,
            TopologyConfig {
                advertise,
                ..topology()
            },
        )
    }

    fn start_with(&mut self, k: usize, seeds: &[usize], topology: TopologyConfig) -> usize {
        let directory = self.directory.clone();
        let config = ViewConfig {
            active: self.view.0,
            reserve: self.view.1,
            directory: Some(Arc::new(move |id: &AgentId| directory.contains(id))),
            ..ViewConfig::default()
        };
        let key = self.keys[k].clone();
        let now = self.harness_clock();
        let view = Membership::with_config(
            key.agent_id(),
            seeds.iter().map(|s| self.keys[*s].agent_id()),
            now,
            config,
        );
        let mut endpoint = Endpoint::new(
            key,
            view,
            EndpointConfig {
                seed: k as u64 + 1,
                ..EndpointConfig::default()
            },
        );
        let handle = endpoint
            .add_layer(Scope::DEFAULT, SwimLayer::new(topology))
            .unwrap();
        self.swim.push(handle);
        let at = self.harness.add_node(endpoint, 0);
        self.harness.start_node(at);
        at
    }

    fn harness_clock(&self) -> knhk_types::UnixMillis {
        knhk_types::UnixMillis(VIRTUAL_START.0 + self.harness.now_us() / 1_000)
    }

    fn run_to(&mut self, us: u64) {
        while self.harness.now_us() < us && self.harness.step() {}
        self.harness.advance_to(us);
    }

    fn view(&self, i: usize) -> &Membership {
        self.harness.endpoint(i).view::<Membership>().unwrap()
    }

    /// Nodes (alive) whose view or reserve holds node `i`.
    fn known_by(&self, i: usize) -> usize {
        let id = self.harness.endpoint(i).id();
        (0..self.harness.len())
            .filter(|n| *n != i && self.harness.is_alive(*n))
            .filter(|n| self.view(*n).get(&id).is_some())
            .count()
    }

    /// Live nodes and the view edges between them (to members believed alive or
    /// suspect): the graph probes and gossip run on.
    fn edges(&self) -> Vec<(usize, Vec<usize>)> {
        (0..self.harness.len())
            .filter(|n| self.harness.is_alive(*n))
            .map(|n| {
                let to = self
                    .view(n)
                    .members()
                    .iter()
                    .filter(|m| matches!(m.state, MemberState::Alive | MemberState::Suspect))
                    .filter_map(|m| self.harness.index_of(&m.id))
                    .filter(|to| self.harness.is_alive(*to))
                    .collect();
                (n, to)
            })
            .collect()
    }

    /// True if the live nodes form one component over view edges taken both ways
    /// (a probe's ack and a pull's answer carry news back, so news flows both ways
    /// over an edge).
    fn views_connected(&self) -> bool {
        self.views_connected_among(0..self.harness.len())
    }

    /// True if the nodes `among` form one component over their view edges to each
    /// other (taken both ways).
    fn views_connected_among(&self, among: std::ops::Range<usize>) -> bool {
        let edges: Vec<(usize, Vec<usize>)> = self
            .edges()
            .into_iter()
            .filter(|(n, _)| among.contains(n))
            .map(|(n, to)| (n, to.into_iter().filter(|t| among.contains(t)).collect()))
            .collect();
        let Some((first, _)) = edges.first() else {
            return true;
        };
        let mut seen = HashSet::from([*first]);
        let mut stack = vec![*first];
        while let Some(n) = stack.pop() {
            for (from, to) in &edges {
                let next: Vec<usize> = if *from == n {
                    to.clone()
                } else if to.contains(&n) {
                    vec![*from]
                } else {
                    Vec::new()
                };
                for m in next {
                    if seen.insert(m) {
                        stack.push(m);
                    }
                }
            }
        }
        seen.len() == edges.len()
    }

    /// Live nodes no view holds (nobody probes them).
    fn unprobed(&self) -> Vec<usize> {
        let edges = self.edges();
        edges
            .iter()
            .map(|(n, _)| *n)
            .filter(|n| !edges.iter().any(|(_, to)| to.contains(n)))
            .collect()
    }
}

#[test]
fn a_node_joins_through_one_seed_and_the_mesh_learns_it() {
    let mut mesh = Mesh::new(31, (8, 16));
    for k in 0..30 {
        mesh.start(k, &[(k + 1) % 30, (k + 2) % 30, (k + 7) % 30]);
    }
    mesh.run_to(5_000_000);
    let joiner = mesh.start(30, &[0]);
    let joined_at = mesh.harness.now_us();
    let mut full_view_after = None;
    while mesh.harness.now_us() < joined_at + 20_000_000 {
        if full_view_after.is_none() && mesh.view(joiner).members().len() == 8 {
            full_view_after = Some(mesh.harness.now_us() - joined_at);
        }
        if !mesh.harness.step() {
            break;
        }
    }
    let full = full_view_after.expect("the joiner filled its view");
    println!(
        "joiner's view full after {} virtual ms; known by {} of 30 nodes",
        full / 1_000,
        mesh.known_by(joiner)
    );
    assert!(
        mesh.known_by(joiner) >= 15,
        "the mesh heard of the joiner: {}",
        mesh.known_by(joiner)
    );
    let swim = mesh
        .harness
        .endpoint(joiner)
        .layer(mesh.swim[joiner])
        .unwrap();
    assert!(swim.stats().members_learned >= 8, "{:?}", swim.stats());
    // It is probed too: it answered pings (someone holds it in a view).
    assert!(
        (0..30).any(|n| mesh.view(n).in_view(&mesh.harness.endpoint(joiner).id())),
        "no node probes the joiner"
    );
    // A member not admitted by the directory is never taken in.
    let stranger = NodeKey::from_seed([250; 32]).agent_id();
    assert!((0..31).all(|n| !mesh.view(n).contains(&stranger)));
    assert!(mesh.views_connected());
}

fn address(k: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 5_000 + k as u16))
}

/// The addresses node `n`'s events told its driver of, by member: what a runtime
/// observer writes into the transport's address book.
fn addresses_told(mesh: &Mesh, n: usize) -> HashMap<AgentId, SocketAddr> {
    let swim = mesh.swim[n];
    let mut told = HashMap::new();
    for event in mesh.harness.events(n) {
        if let Some(joined) = event.downcast_ref::<SwimLayer, MemberJoined>(swim)
            && let Some(addr) = joined.addr
        {
            told.insert(joined.member, addr);
        }
        if let Some(addressed) = event.downcast_ref::<SwimLayer, MemberAddressed>(swim) {
            told.insert(addressed.member, addressed.addr);
        }
    }
    told
}

#[test]
fn every_address_a_node_learns_is_told_to_its_driver() {
    // Seeds are known by id only (as a node's configured seeds often are): the first
    // sight of most members carries no address, and the addresses come later, on
    // alive claims and shuffle entries. Each must reach the driver as an event, or a
    // QUIC node never learns where to dial.
    let mut mesh = Mesh::new(20, (6, 12));
    for k in 0..20 {
        mesh.start_advertising(k, &[(k + 1) % 20, (k + 3) % 20]);
    }
    mesh.run_to(10_000_000);
    let mut known = 0;
    for n in 0..20 {
        let told = addresses_told(&mesh, n);
        let view = mesh.view(n);
        for member in view.members().iter().chain(view.reserve()) {
            let k = mesh.harness.index_of(&member.id).unwrap();
            if let Some(addr) = member.addr {
                assert_eq!(addr, address(k), "node {n} holds a wrong address for {k}");
                assert_eq!(
                    told.get(&member.id),
                    Some(&addr),
                    "node {n} holds {k}'s address but never told its driver"
                );
                known += 1;
            }
        }
        // Every view member's address is known by now (each announced itself).
        let missing: Vec<_> = view.members().iter().filter(|m| m.addr.is_none()).collect();
        assert!(
            missing.is_empty(),
            "node {n}: view members without an address: {missing:?}"
        );
    }
    assert!(known >= 20 * 6, "{known} addresses known");
}

#[test]
fn a_node_the_directory_does_not_admit_is_refused_and_never_known() {
    // 20 admitted identities; the 21st runs the same layer, knows five members as
    // seeds, and is admitted by nobody.
    let mut mesh = Mesh::new(21, (8, 16));
    let admitted: HashSet<AgentId> = mesh.keys[..20].iter().map(NodeKey::agent_id).collect();
    mesh.directory = Arc::new(admitted);
    for k in 0..20 {
        mesh.start(k, &[(k + 1) % 20, (k + 2) % 20, (k + 5) % 20]);
    }
    mesh.run_to(2_000_000);
    let outsider = mesh.start(20, &[0, 1, 2, 3, 4]);
    mesh.run_to(12_000_000);
    let outsider_id = mesh.harness.endpoint(outsider).id();
    let refused: u64 = (0..20)
        .map(|n| {
            mesh.harness
                .endpoint(n)
                .validator()
                .stats()
                .rejected_for(knhk_security::RejectReason::UnknownSender)
        })
        .sum();
    assert!(
        refused > 0,
        "the outsider's frames were refused at the gate"
    );
    for n in 0..20 {
        assert!(
            mesh.view(n).get(&outsider_id).is_none(),
            "node {n} took the outsider in"
        );
    }
    // The members it knew never answered: it finds itself without a quorum, so it
    // refuses writes of its own, and the mesh is undisturbed.
    assert!(!mesh.view(outsider).reachability().has_quorum());
    assert!((0..20).all(|n| mesh.view(n).reachability().has_quorum()));
    assert!(mesh.views_connected_among(0..20));
}

#[test]
fn a_member_that_leaves_is_gone_everywhere_and_not_counted() {
    let mut mesh = Mesh::new(12, (32, 16));
    let everyone: Vec<usize> = (0..12).collect();
    for k in 0..12 {
        mesh.start(k, &everyone);
    }
    mesh.run_to(3_000_000);
    let handle = mesh.swim[3];
    mesh.harness
        .call(3, handle, |swim, ctx| swim.leave(ctx))
        .unwrap();
    mesh.run_to(3_050_000);
    mesh.harness.crash(3);
    let left_id = mesh.harness.endpoint(3).id();
    mesh.run_to(6_000_000);
    for n in (0..12).filter(|n| *n != 3) {
        let view = mesh.view(n);
        let state = view.get(&left_id).map(|m| m.state);
        assert_eq!(state, Some(MemberState::Left), "node {n}");
        assert_eq!(view.reachability().members, 11, "node {n} still counts it");
        assert!(view.reachability().has_quorum());
        let swim = mesh.harness.endpoint(n).layer(mesh.swim[n]).unwrap();
        assert_eq!(
            swim.stats().deaths_declared,
            0,
            "node {n}: a leave is not a death"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]

    /// Views of 5 (reserve 10) over 40 nodes: every 1.5 s one node crashes and a new
    /// one joins through a random live node, for 15 virtual seconds; the view graph of
    /// the live nodes stays connected, no node goes unprobed for more than 3 s, and
    /// every joiner is known.
    #[test]
    fn the_view_graph_stays_connected_under_churn(seed in 0u64..1_000_000) {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut mesh = Mesh::new(50, (5, 10));
        for k in 0..40 {
            mesh.start(k, &[(k + 1) % 40, (k + 2) % 40]);
        }
        mesh.run_to(3_000_000);
        prop_assert!(mesh.views_connected(), "before churn");
        for round in 0..10u64 {
            let live: Vec<usize> = (0..mesh.harness.len()).filter(|n| mesh.harness.is_alive(*n)).collect();
            let victim = live[rng.random_range(0..live.len())];
            mesh.harness.crash(victim);
            let live: Vec<usize> = live.into_iter().filter(|n| *n != victim).collect();
            let seed_node = live[rng.random_range(0..live.len())];
            mesh.start(40 + round as usize, &[seed_node]);
            mesh.run_to(mesh.harness.now_us() + 1_500_000);
        }
        // Time for the last joiner and the last crash to settle, watching how long
        // any node goes unprobed: a node no view holds asks for a place after twice
        // the time a view of 5 takes to be probed through (2 s).
        let mut unprobed_since = std::collections::HashMap::new();
        let mut longest = 0;
        let end = mesh.harness.now_us() + 6_000_000;
        while mesh.harness.now_us() < end {
            let now = mesh.harness.now_us();
            let unprobed = mesh.unprobed();
            unprobed_since.retain(|n, _| unprobed.contains(n));
            for n in unprobed {
                let since = *unprobed_since.entry(n).or_insert(now);
                longest = longest.max(now - since);
            }
            mesh.run_to(now + 100_000);
        }
        prop_assert!(mesh.views_connected(), "seed {seed}: views split");
        prop_assert!(longest <= 3_000_000, "seed {seed}: a node went unprobed for {longest} µs");
        for joiner in 40..50 {
            if mesh.harness.is_alive(joiner) {
                prop_assert!(mesh.known_by(joiner) > 0, "seed {seed}: joiner {joiner} unknown");
            }
        }
    }
}
