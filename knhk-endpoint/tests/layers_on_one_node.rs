//! The endpoint under its layers: routing by kind and scope, one nonce counter and one
//! replay window for every layer, and a new layer (the ping probe) running under the
//! harness and the tokio driver with no change to either.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::time::Duration;

use knhk_endpoint::harness::{FixedLatency, Harness, VIRTUAL_START};
use knhk_endpoint::probe::PingLayer;
use knhk_endpoint::runtime::{NoObserver, Runtime};
use knhk_endpoint::{
    Endpoint, EndpointConfig, EndpointError, Event, MemberList, Output, StaticView,
};
use knhk_security::{NodeKey, RejectReason};
use knhk_transport::{MemoryConfig, MemoryNetwork};
use knhk_types::{AgentId, EnvelopeRef, MessageKind, Scope};

fn keys(n: u8) -> Vec<NodeKey> {
    (0..n).map(|i| NodeKey::from_seed([40 + i; 32])).collect()
}

fn members(keys: &[NodeKey]) -> MemberList {
    MemberList::new(keys.iter().map(NodeKey::agent_id).collect())
}

fn endpoint(key: &NodeKey, members: &MemberList, seed: u64) -> Endpoint {
    let view = StaticView::new(members.clone(), key.agent_id());
    Endpoint::new(
        key.clone(),
        view,
        EndpointConfig {
            seed,
            ..EndpointConfig::default()
        },
    )
}

const PING_EVERY: Duration = Duration::from_millis(10);

fn rejections(events: &[Event]) -> Vec<RejectReason> {
    events
        .iter()
        .filter_map(|event| match event {
            Event::Rejected { reason, .. } => Some(*reason),
            Event::Banned { .. } | Event::Layer { .. } => None,
        })
        .collect()
}

#[test]
fn a_kind_or_scope_this_node_does_not_run_is_dropped_counted_and_never_charged() {
    let keys = keys(3);
    let members = members(&keys);
    let mut harness = Harness::new(FixedLatency { delay_us: 1_000 }, VIRTUAL_START, true);
    // Node 0 pings in scope 0; node 1 runs the probe in scope 7 only; node 2 runs nothing.
    let mut pinger = endpoint(&keys[0], &members, 1);
    let probe = pinger
        .add_layer(Scope::DEFAULT, PingLayer::new(PING_EVERY))
        .unwrap();
    let mut other_scope = endpoint(&keys[1], &members, 2);
    other_scope
        .add_layer(Scope(7), PingLayer::new(Duration::from_secs(3_600)))
        .unwrap();
    let bare = endpoint(&keys[2], &members, 3);
    for node in [pinger, other_scope, bare] {
        let i = harness.add_node(node, 0);
        harness.start_node(i);
    }
    while harness.now_us() < 2_000_000 && harness.step() {}
    let sender = keys[0].agent_id();
    let mut unrouted = 0;
    for i in [1, 2] {
        let stats = harness.endpoint(i).stats();
        assert!(stats.frames_unrouted > 0, "node {i} got pings: {stats:?}");
        assert_eq!(stats.frames_rejected, 0, "node {i}");
        assert_eq!(stats.charged, 0, "node {i}");
        assert!(rejections(harness.events(i)).is_empty(), "node {i}");
        let later = harness.clock(i);
        assert_eq!(
            harness.endpoint(i).reputation(&sender, later),
            1_000,
            "node {i}"
        );
        unrouted += stats.frames_unrouted;
    }
    // Every ping went unanswered: each one sent was unrouted somewhere (the last may
    // still be in flight when the run stops).
    let probe = harness.endpoint(0).layer(probe).unwrap();
    let sent = probe.stats().pings_sent;
    assert!(
        sent >= 190 && (sent - unrouted) <= 1,
        "{sent} sent, {unrouted} unrouted"
    );
    assert!(probe.round_trips().is_empty());
}

#[test]
fn two_layers_share_one_nonce_counter_and_one_replay_window() {
    let keys = keys(2);
    let members = members(&keys);
    let mut sender = endpoint(&keys[0], &members, 1);
    let a = sender
        .add_layer(Scope(1), PingLayer::new(PING_EVERY))
        .unwrap();
    let b = sender
        .add_layer(Scope(2), PingLayer::new(PING_EVERY))
        .unwrap();
    assert_eq!(
        sender.add_layer(Scope(2), PingLayer::new(PING_EVERY)).err(),
        Some(EndpointError::RouteTaken {
            kind: MessageKind::Ping,
            scope: Scope(2)
        })
    );
    let now = VIRTUAL_START;
    sender.start(now);
    let mut frames = Vec::new();
    // Fire both layers' timers many times at the same instant: the worst case for a
    // nonce scheme per layer (both would start at now << 20).
    for _ in 0..50 {
        let mut timers = Vec::new();
        while let Some(output) = sender.poll_output() {
            match output {
                Output::Send { frame, .. } => frames.push(frame),
                Output::SetTimer { timer, .. } => timers.push(timer),
                Output::Event(_) => {}
            }
        }
        for timer in timers {
            sender.handle_timer(now, timer);
        }
    }
    let decoded: Vec<EnvelopeRef<'_>> = frames
        .iter()
        .map(|frame| EnvelopeRef::decode(frame, usize::MAX).unwrap())
        .collect();
    let scopes: HashSet<Scope> = decoded.iter().map(|e| e.header.scope).collect();
    assert_eq!(scopes, HashSet::from([Scope(1), Scope(2)]));
    let nonces: HashSet<u64> = decoded.iter().map(|e| e.header.nonce).collect();
    assert_eq!(nonces.len(), frames.len(), "a nonce repeated across layers");

    // The receiver runs the probe in both scopes; one replay window serves both.
    let mut receiver = endpoint(&keys[1], &members, 2);
    receiver
        .add_layer(Scope(1), PingLayer::new(Duration::from_secs(3_600)))
        .unwrap();
    receiver
        .add_layer(Scope(2), PingLayer::new(Duration::from_secs(3_600)))
        .unwrap();
    receiver.start(now);
    for frame in &frames {
        receiver.handle_frame(now, keys[0].agent_id(), frame);
    }
    let stats = receiver.validator().stats();
    assert_eq!(stats.accepted, frames.len() as u64);
    assert_eq!(
        stats.replay_entries,
        frames.len(),
        "one window holds both scopes"
    );
    receiver.handle_frame(now, keys[0].agent_id(), &frames[0]);
    assert_eq!(stats.rejected_for(RejectReason::Replay), 0);
    assert_eq!(
        receiver
            .validator()
            .stats()
            .rejected_for(RejectReason::Replay),
        1
    );
    assert_ne!(a.id(), b.id());
}

#[test]
fn the_probe_measures_round_trips_under_the_harness() {
    let keys = keys(5);
    let members = members(&keys);
    let mut harness = Harness::new(FixedLatency { delay_us: 3_000 }, VIRTUAL_START, false);
    let mut handles = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let mut node = endpoint(key, &members, i as u64);
        handles.push(
            node.add_layer(Scope::DEFAULT, PingLayer::new(PING_EVERY))
                .unwrap(),
        );
        let index = harness.add_node(node, 0);
        harness.start_node(index);
    }
    while harness.now_us() < 1_000_000 && harness.step() {}
    for (i, handle) in handles.iter().enumerate() {
        let probe = harness.endpoint(i).layer(*handle).unwrap();
        assert!(
            probe.round_trips().len() >= 90,
            "node {i}: {:?}",
            probe.stats()
        );
        assert!(
            probe.round_trips().iter().all(|rtt| rtt.rtt_ms == 6),
            "two 3 ms hops"
        );
        assert_eq!(harness.endpoint(i).stats().frames_unrouted, 0);
    }
}

#[tokio::test]
async fn the_probe_measures_round_trips_under_the_tokio_driver() {
    let keys = keys(3);
    let members = members(&keys);
    let network = MemoryNetwork::new(MemoryConfig::default());
    let mut nodes = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let mut node = endpoint(key, &members, i as u64);
        let handle = node
            .add_layer(Scope::DEFAULT, PingLayer::new(PING_EVERY))
            .unwrap();
        let transport = network.join(key.agent_id()).unwrap();
        nodes.push((Runtime::spawn(node, transport, NoObserver), handle));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut measured = Vec::new();
        for (node, handle) in &nodes {
            let handle = *handle;
            let count = node
                .call(move |node| {
                    node.endpoint
                        .layer(handle)
                        .map_or(0, |p| p.round_trips().len())
                })
                .await
                .unwrap();
            measured.push(count);
        }
        if measured.iter().all(|&count| count >= 5) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "round trips so far: {measured:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (node, _) in nodes {
        node.shutdown().await.unwrap();
    }
}

#[test]
fn garbage_in_a_routed_kind_is_charged_to_the_sender() {
    let keys = keys(2);
    let members = members(&keys);
    let mut node = endpoint(&keys[1], &members, 1);
    node.add_layer(Scope::DEFAULT, PingLayer::new(PING_EVERY))
        .unwrap();
    node.start(VIRTUAL_START);
    let frame = knhk_types::Envelope::seal(
        &keys[0],
        knhk_types::EnvelopeHeader::new(MessageKind::Ping, VIRTUAL_START, 1),
        b"not eight bytes",
    );
    let sender: AgentId = keys[0].agent_id();
    node.handle_frame(VIRTUAL_START, sender, &frame);
    assert_eq!(node.stats().charged, 1);
    assert!(node.reputation(&sender, VIRTUAL_START) < 1_000);
}

/// Hardening finding 5: 1,024 sends in flight were shared by every peer, so one peer
/// that never takes its frames could hold them all and cut the node off from everyone.
#[tokio::test]
async fn a_peer_that_never_reads_stalls_only_its_own_sends() {
    let keys = keys(3);
    let members = members(&keys);
    let network = MemoryNetwork::new(MemoryConfig {
        inbound_queue: 4,
        ..MemoryConfig::default()
    });
    // Node 0 pings node 1 or node 2 every millisecond; node 1 joined but never reads.
    let _deaf = network.join(keys[1].agent_id()).unwrap();
    let mut pinger = endpoint(&keys[0], &members, 7);
    // Two probes (scopes 0 and 1) double the rate.
    let probe = pinger
        .add_layer(Scope::DEFAULT, PingLayer::new(Duration::from_millis(1)))
        .unwrap();
    pinger
        .add_layer(Scope(1), PingLayer::new(Duration::from_millis(1)))
        .unwrap();
    let pinger = Runtime::spawn(
        pinger,
        network.join(keys[0].agent_id()).unwrap(),
        NoObserver,
    );
    let mut answering = endpoint(&keys[2], &members, 8);
    for scope in [Scope::DEFAULT, Scope(1)] {
        answering
            .add_layer(scope, PingLayer::new(Duration::from_secs(3_600)))
            .unwrap();
    }
    let answering = Runtime::spawn(
        answering,
        network.join(keys[2].agent_id()).unwrap(),
        NoObserver,
    );
    let measure = move |node: &mut knhk_endpoint::runtime::Driven<
        '_,
        NodeKey,
        knhk_security::Ed25519Verifier,
    >| {
        let trips = node
            .endpoint
            .layer(probe)
            .map_or(0, |p| p.stats().pongs_matched);
        (trips, node.driver)
    };
    // Long enough for the old shared budget to fill with frames for the deaf peer.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let (before, _) = pinger.call(measure).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (after, driver) = pinger.call(measure).await.unwrap();
    assert!(
        after > before + 20,
        "pongs kept coming from the answering peer: {before} → {after}, {driver:?}"
    );
    assert!(driver.sends_dropped_per_peer > 0, "{driver:?}");
    assert_eq!(
        driver.sends_dropped, 0,
        "the node-wide budget never ran out: {driver:?}"
    );
    pinger.shutdown().await.unwrap();
    answering.shutdown().await.unwrap();
}

/// Everything `node` put out, as (frames sent, rejection reasons, bans).
fn drain(node: &mut Endpoint) -> (usize, Vec<RejectReason>, usize) {
    let (mut sent, mut events) = (0, Vec::new());
    while let Some(output) = node.poll_output() {
        match output {
            Output::Send { .. } => sent += 1,
            Output::Event(event) => events.push(event),
            Output::SetTimer { .. } => {}
        }
    }
    let bans = events
        .iter()
        .filter(|event| matches!(event, Event::Banned { .. }))
        .count();
    (sent, rejections(&events), bans)
}

/// A burst through the endpoint decides what the same frames one at a time decide,
/// including a ban a *layer* imposes midway (garbage pings are charged by the probe):
/// the banned hop's later frames of the burst never reach the layer.
#[test]
fn a_burst_decides_what_single_frames_decide_even_when_a_layer_bans_midway() {
    let keys = keys(3);
    let members = members(&keys);
    let now = VIRTUAL_START;
    let ping = |key: &NodeKey, nonce: u64, payload: &[u8]| {
        knhk_types::Envelope::seal(
            key,
            knhk_types::EnvelopeHeader::new(MessageKind::Ping, now, nonce),
            payload,
        )
    };
    let (attacker, honest) = (&keys[0], &keys[1]);
    let mut frames: Vec<(AgentId, Vec<u8>)> = Vec::new();
    for nonce in 1..=12u64 {
        // Attacker: garbage for nonces 3..=8 (the probe charges each), honest pings
        // otherwise; the honest peer pings throughout.
        let payload: &[u8] = if (3..=8).contains(&nonce) {
            b"not eight bytes"
        } else {
            &nonce.to_le_bytes()
        };
        frames.push((attacker.agent_id(), ping(attacker, nonce, payload)));
        frames.push((honest.agent_id(), ping(honest, nonce, &nonce.to_le_bytes())));
    }
    frames.push(frames[1].clone()); // a replay of the honest peer's first ping

    let node = || {
        let mut node = endpoint(&keys[2], &members, 9);
        node.add_layer(Scope::DEFAULT, PingLayer::new(Duration::from_secs(3_600)))
            .unwrap();
        node.start(now);
        let _ = drain(&mut node);
        node
    };
    let mut single = node();
    for (from, frame) in &frames {
        single.handle_frame(now, *from, frame);
    }
    let mut burst = node();
    let received: Vec<knhk_endpoint::ReceivedFrame<'_>> = frames
        .iter()
        .map(|(hop, frame)| knhk_endpoint::ReceivedFrame {
            hop: *hop,
            received_at: now,
            frame,
        })
        .collect();
    burst.handle_frames_received(now, &received);

    let (expected, got) = (drain(&mut single), drain(&mut burst));
    assert_eq!(got, expected);
    assert_eq!(
        expected.2, 1,
        "the probe's charges banned the attacker once"
    );
    assert!(expected.1.contains(&RejectReason::Banned));
    assert!(expected.1.contains(&RejectReason::Replay));
    assert_eq!(burst.stats(), single.stats());
    assert!(burst.validator().is_banned(&attacker.agent_id(), now));
    // The honest peer paid only for the replay (sent in its name), in both.
    assert_eq!(
        burst.reputation(&honest.agent_id(), now),
        single.reputation(&honest.agent_id(), now)
    );
    assert!(!burst.validator().is_banned(&honest.agent_id(), now));
    let verifier = burst.validator().stats().verifier;
    assert!(verifier.batch_verified > 0, "{verifier:?}");
}
