//! SWIM with Lifeguard under the virtual-time harness: a crashed member is declared
//! dead everywhere, a member cut off briefly refutes and is never declared dead, round
//! trips and coordinates are measured on the probes. Times are virtual.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use knhk_endpoint::harness::{FixedLatency, Harness, Links, VIRTUAL_START};
use knhk_endpoint::{Endpoint, EndpointConfig, LayerHandle};
use knhk_security::{Ed25519Verifier, NodeKey};
use knhk_topology::{MemberState, Membership, SwimLayer, TopologyConfig};
use knhk_types::{AgentId, Scope};

fn config() -> TopologyConfig {
    TopologyConfig {
        probe_interval: Duration::from_millis(200),
        probe_timeout: Duration::from_millis(100),
        ..TopologyConfig::default()
    }
}

type Nodes<L> = Harness<NodeKey, Ed25519Verifier, L>;

fn cluster<L: Links>(
    n: usize,
    links: L,
    config: &TopologyConfig,
) -> (Nodes<L>, Vec<LayerHandle<SwimLayer>>) {
    cluster_with(n, links, config, &[])
}

/// As [`cluster`], with `extra` members that run no node (a test speaks for them).
fn cluster_with<L: Links>(
    n: usize,
    links: L,
    config: &TopologyConfig,
    extra: &[AgentId],
) -> (Nodes<L>, Vec<LayerHandle<SwimLayer>>) {
    let keys: Vec<NodeKey> = (0..n)
        .map(|i| NodeKey::from_seed([i as u8 + 1; 32]))
        .collect();
    let mut ids: Vec<AgentId> = keys.iter().map(NodeKey::agent_id).collect();
    ids.extend_from_slice(extra);
    let mut harness = Harness::new(links, VIRTUAL_START, true);
    let mut handles = Vec::new();
    for (i, key) in keys.into_iter().enumerate() {
        let view = Membership::new(key.agent_id(), ids.iter().copied(), VIRTUAL_START);
        let mut endpoint = Endpoint::new(
            key,
            view,
            EndpointConfig {
                seed: i as u64 + 7,
                ..EndpointConfig::default()
            },
        );
        let handle = endpoint
            .add_layer(Scope::DEFAULT, SwimLayer::new(config.clone()))
            .unwrap();
        handles.push(handle);
        let at = harness.add_node(endpoint, 0);
        harness.start_node(at);
    }
    (harness, handles)
}

fn view<L: Links>(harness: &Harness<NodeKey, Ed25519Verifier, L>, i: usize) -> &Membership {
    harness.endpoint(i).view::<Membership>().unwrap()
}

fn state_of<L: Links>(
    harness: &Harness<NodeKey, Ed25519Verifier, L>,
    at: usize,
    about: usize,
) -> MemberState {
    let id = harness.endpoint(about).id();
    view(harness, at).get(&id).unwrap().state
}

fn run_until<L: Links>(
    harness: &mut Harness<NodeKey, Ed25519Verifier, L>,
    until_us: u64,
    mut done: impl FnMut(&Harness<NodeKey, Ed25519Verifier, L>) -> bool,
) -> Option<u64> {
    while harness.now_us() < until_us {
        if done(harness) {
            return Some(harness.now_us());
        }
        if !harness.step() {
            break;
        }
    }
    done(harness).then(|| harness.now_us())
}

#[test]
fn a_crashed_member_is_declared_dead_by_every_live_member() {
    let (mut harness, _) = cluster(16, FixedLatency { delay_us: 1_000 }, &config());
    run_until(&mut harness, 2_000_000, |_| false);
    harness.crash(5);
    let crashed_at = harness.now_us();
    let everyone = |h: &Harness<NodeKey, Ed25519Verifier, FixedLatency>| {
        (0..16)
            .filter(|i| *i != 5)
            .all(|i| state_of(h, i, 5) == MemberState::Dead)
    };
    let done = run_until(&mut harness, 30_000_000, everyone).expect("declared dead everywhere");
    let took_ms = (done - crashed_at) / 1_000;
    println!("crash confirmed at all 15 live members after {took_ms} virtual ms");
    // Probe period 200 ms, suspicion timeout at least 4 × log10(16) × 200 ms ≈ 0.96 s.
    assert!(took_ms < 10_000, "{took_ms} ms");
    for i in (0..16).filter(|i| *i != 5) {
        for j in (0..16).filter(|j| *j != 5 && *j != i) {
            assert_eq!(
                state_of(&harness, i, j),
                MemberState::Alive,
                "{i} about {j}"
            );
        }
    }
}

/// Drops every frame to or from one node during a window.
struct CutOff {
    node: usize,
    from_us: u64,
    until_us: u64,
}

impl Links for CutOff {
    fn delay_us(&mut self, from: usize, to: usize, now_us: u64) -> Option<u64> {
        let cut = (from == self.node || to == self.node)
            && (self.from_us..self.until_us).contains(&now_us);
        (!cut).then_some(1_000)
    }
}

#[test]
fn a_member_cut_off_briefly_refutes_and_is_never_declared_dead() {
    let links = CutOff {
        node: 3,
        from_us: 2_000_000,
        until_us: 2_500_000,
    };
    let (mut harness, handles) = cluster(12, links, &config());
    let mut suspected = false;
    run_until(&mut harness, 8_000_000, |h| {
        for i in (0..12).filter(|i| *i != 3) {
            match state_of(h, i, 3) {
                MemberState::Suspect => suspected = true,
                MemberState::Dead | MemberState::Left => panic!("node {i} declared node 3 gone"),
                MemberState::Alive => {}
            }
        }
        false
    });
    assert!(suspected, "the cut was long enough to be noticed");
    let swim = harness.endpoint(3).layer(handles[3]).unwrap();
    assert!(swim.stats().refutations >= 1, "{:?}", swim.stats());
    assert!(swim.incarnation() >= 1);
    for i in (0..12).filter(|i| *i != 3) {
        let member = view(&harness, i)
            .get(&harness.endpoint(3).id())
            .unwrap()
            .clone();
        assert_eq!(member.state, MemberState::Alive, "node {i}");
        assert!(
            member.incarnation >= 1,
            "node 3 refuted: node {i} knows incarnation {}",
            member.incarnation
        );
    }
}

#[test]
fn probes_measure_round_trips_and_coordinates() {
    let (mut harness, _) = cluster(6, FixedLatency { delay_us: 5_000 }, &config());
    run_until(&mut harness, 10_000_000, |_| false);
    for i in 0..6 {
        for member in view(&harness, i).members() {
            assert_eq!(member.state, MemberState::Alive);
            let min = member.rtt.min().expect("probed at least once");
            assert_eq!(min, Duration::from_millis(10), "node {i}");
            assert!(member.coordinate.is_some());
        }
    }
}

/// A Byzantine member declares node 2 dead at incarnation `u64::MAX`, which no
/// refutation could exceed. Accusations are brought down to the incarnation each
/// receiver knows, so node 2 refutes and stays a member.
#[test]
fn a_forged_death_at_the_highest_incarnation_is_refuted() {
    let mallory = NodeKey::from_seed([200; 32]);
    let (mut harness, _) = cluster_with(
        8,
        FixedLatency { delay_us: 1_000 },
        &config(),
        &[mallory.agent_id()],
    );
    run_until(&mut harness, 2_000_000, |_| false);
    let victim = harness.endpoint(2).id();
    let lie = knhk_topology::SwimMessage::Ping {
        seq: 1,
        coordinate: knhk_topology::Coordinate::origin(&knhk_topology::VivaldiConfig::default()),
        cluster: (mallory.agent_id(), 0),
        in_view: true,
        updates: vec![knhk_topology::Update {
            member: victim,
            incarnation: u64::MAX,
            claim: knhk_topology::Claim::Dead,
            by: mallory.agent_id(),
            addr: None,
        }],
    };
    let payload = postcard::to_allocvec(&lie).unwrap();
    for (nonce, to) in (0..8).filter(|i| *i != 2).enumerate() {
        let now = harness.clock(to);
        let header = knhk_types::EnvelopeHeader::new(
            knhk_types::MessageKind::Membership,
            now,
            (now.0 << 20) + nonce as u64,
        );
        let frame = knhk_types::Envelope::seal(&mallory, header, &payload);
        harness.deliver_after(1_000, mallory.agent_id(), to, frame);
    }
    run_until(&mut harness, 12_000_000, |_| false);
    for i in (0..8).filter(|i| *i != 2) {
        let member = view(&harness, i).get(&victim).unwrap();
        assert_eq!(member.state, MemberState::Alive, "node {i}");
        assert!(
            member.incarnation < 10,
            "node {i}: incarnation {}",
            member.incarnation
        );
    }
}
