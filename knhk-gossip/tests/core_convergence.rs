//! Gossip nodes (endpoint + gossip layer) stepped in memory on a virtual clock: convergence, conflicts, Byzantine input,
//! anti-entropy. Times asserted are virtual, hence deterministic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use knhk_crdt::{Delta, WriterRange};
use knhk_gossip::testing::{Cluster, ClusterConfig, push_frame};
use knhk_gossip::{GossipConfig, GossipEvent};
use knhk_security::{NodeKey, RejectReason};

fn cluster(nodes: usize, seed: u64) -> Cluster {
    Cluster::new(ClusterConfig {
        nodes,
        seed,
        ..ClusterConfig::default()
    })
}

fn converges_after_one_write(nodes: usize) {
    let mut cluster = cluster(nodes, nodes as u64);
    let start = cluster.now();
    cluster.put(0, "config/leader", b"node-0".to_vec()).unwrap();
    let done = cluster
        .run_until_converged(30_000)
        .unwrap_or_else(|| panic!("{nodes} nodes did not converge in 30 virtual seconds"));
    for i in cluster.all_nodes() {
        assert_eq!(
            cluster.gossip(i).get("config/leader"),
            Some(&b"node-0"[..]),
            "node {i}"
        );
    }
    let elapsed = done.0 - start.0;
    println!("{nodes} nodes converged {elapsed} virtual ms after one write");
    // News is forwarded at once, so convergence takes a few hops, not many rounds.
    assert!(elapsed < 1_000, "{nodes} nodes took {elapsed} ms");
}

#[test]
fn three_nodes_converge_after_one_write() {
    converges_after_one_write(3);
}

#[test]
fn ten_nodes_converge_after_one_write() {
    converges_after_one_write(10);
}

#[test]
fn a_hundred_nodes_converge_after_one_write() {
    converges_after_one_write(100);
}

#[test]
fn concurrent_writes_to_one_key_resolve_identically_everywhere() {
    for nodes in [3, 10, 100] {
        let mut cluster = cluster(nodes, 7 + nodes as u64);
        for writer in [0, nodes / 2, nodes - 1] {
            cluster
                .put(writer, "leader", format!("node-{writer}").into_bytes())
                .unwrap();
        }
        cluster.run_until_converged(30_000).expect("converges");
        let winner = cluster.gossip(0).get("leader").unwrap().to_vec();
        for i in cluster.all_nodes() {
            assert_eq!(
                cluster.gossip(i).get("leader"),
                Some(&winner[..]),
                "{nodes} nodes, node {i}"
            );
        }
    }
}

#[test]
fn convergence_is_detected_and_announced_once_per_root() {
    let mut cluster = cluster(10, 3);
    cluster.put(4, "k", b"v".to_vec()).unwrap();
    cluster.run_until_converged(10_000).unwrap();
    // Let the detector see `convergence_rounds` quiet rounds.
    let nodes: Vec<usize> = cluster.all_nodes().collect();
    cluster
        .run_until(5_000, |c| {
            nodes.iter().all(|&i| c.gossip_mut(i).status().converged)
        })
        .expect("every node detects convergence");
    for i in cluster.all_nodes() {
        let announced = cluster
            .gossip_events(i)
            .into_iter()
            .filter(|e| matches!(e, GossipEvent::Converged { .. }))
            .count();
        assert_eq!(announced, 1, "node {i}");
    }
    // A new write breaks convergence until it has spread again.
    cluster.put(0, "k2", b"v2".to_vec()).unwrap();
    assert!(!cluster.gossip_mut(0).status().converged);
}

#[test]
fn every_node_sees_an_update_event_for_the_key() {
    let mut cluster = cluster(10, 5);
    cluster.put(2, "status/2", b"up".to_vec()).unwrap();
    cluster.run_until_converged(10_000).unwrap();
    for i in cluster.all_nodes() {
        assert!(
            cluster.gossip_events(i).contains(&&GossipEvent::Updated {
                key: "status/2".into()
            }),
            "node {i}"
        );
    }
}

#[test]
fn idle_gossip_exchanges_roots_only() {
    let mut cluster = cluster(20, 9);
    cluster.put(0, "k", vec![1; 100]).unwrap();
    cluster.run_until_converged(10_000).unwrap();
    // Let everyone learn that everyone agrees.
    cluster.run_until(2_000, |_| false);
    let (frames_before, bytes_before) = cluster.traffic();
    cluster.run_until(10_000, |_| false);
    let (frames, bytes) = cluster.traffic();
    let per_frame = (bytes - bytes_before) / (frames - frames_before);
    // Envelope (about 110 bytes) plus a root and a flag: no version vectors, no deltas.
    assert!(per_frame < 200, "idle frames average {per_frame} bytes");
}

#[test]
fn the_same_seed_replays_the_same_run() {
    let run = |seed| {
        let mut cluster = cluster(30, seed);
        cluster.put(0, "a", b"1".to_vec()).unwrap();
        cluster.put(17, "b", b"2".to_vec()).unwrap();
        let done = cluster.run_until_converged(10_000).unwrap();
        (done, cluster.traffic(), cluster.gossip_mut(5).merkle_root())
    };
    assert_eq!(run(11), run(11));
    assert_ne!(run(11).1, run(12).1);
}

/// A member with no core whose frames the test writes by hand.
fn byzantine_cluster() -> (Cluster, NodeKey) {
    let mallory = NodeKey::from_seed([66; 32]);
    let cluster = Cluster::new(ClusterConfig {
        nodes: 10,
        seed: 21,
        extra_members: vec![mallory.agent_id()],
        ..ClusterConfig::default()
    });
    (cluster, mallory)
}

#[test]
fn a_byzantine_member_is_rejected_and_the_honest_nodes_still_converge() {
    let (mut cluster, mallory) = byzantine_cluster();
    let honest_writer = cluster.endpoint(3).id();
    cluster.put(0, "honest", b"value".to_vec()).unwrap();
    let now = cluster.now();

    // 1. Entries forged in an honest writer's name, in validly signed envelopes.
    let forged_delta = knhk_gossip::testing::forged_delta(honest_writer);
    // 2. Envelopes with forged signatures; 3. replays; 4. a flood.
    let mut nonce = now.0 << 20;
    for target in 0..10 {
        nonce += 1;
        cluster.inject(
            mallory.agent_id(),
            target,
            push_frame(&mallory, now, nonce, &forged_delta),
        );
        nonce += 1;
        let mut bad_signature = push_frame(&mallory, now, nonce, &forged_delta);
        let last = bad_signature.len() - 1;
        bad_signature[last] ^= 1;
        cluster.inject(mallory.agent_id(), target, bad_signature);
        nonce += 1;
        let replayed = push_frame(&mallory, now, nonce, &Delta::default());
        cluster.inject(mallory.agent_id(), target, replayed.clone());
        cluster.inject(mallory.agent_id(), target, replayed);
    }
    for _ in 0..3_000 {
        nonce += 1;
        cluster.inject(
            mallory.agent_id(),
            0,
            push_frame(&mallory, now, nonce, &Delta::default()),
        );
    }

    let honest: Vec<usize> = cluster.all_nodes().collect();
    cluster
        .run_until(30_000, |c| c.roots_agree(&honest))
        .expect("honest nodes converge");
    let later = cluster.now();
    for i in cluster.all_nodes() {
        assert_eq!(cluster.gossip(i).get("honest"), Some(&b"value"[..]));
        assert_eq!(
            cluster.gossip(i).get("forged"),
            None,
            "forged key reached node {i}"
        );
        let validator = cluster.endpoint(i).validator();
        assert!(
            validator.reputation(&mallory.agent_id(), later) < 1_000,
            "node {i}"
        );
        let stats = validator.stats();
        assert!(
            stats.rejected_for(RejectReason::BadSignature) >= 1,
            "node {i}"
        );
        assert!(
            stats.rejected_for(RejectReason::Replay) + stats.rejected_for(RejectReason::Banned)
                >= 1
        );
        assert!(!cluster.rejections(i).is_empty());
    }
    assert!(
        cluster
            .endpoint(0)
            .validator()
            .is_banned(&mallory.agent_id(), later)
    );
    for i in cluster.all_nodes() {
        assert_ne!(cluster.endpoint(i).id(), mallory.agent_id());
    }
}

#[test]
fn anti_entropy_repairs_what_version_vectors_cannot_see() {
    // A Byzantine relay shows node 9 only the *last* of a writer's three entries, while
    // node 0 gets all three. Node 9's version vector then claims versions it lacks, so
    // no delta will ever resend them: only the Merkle diff can find the difference.
    // News forwarding is off so the repair can only come from rounds.
    let mallory = NodeKey::from_seed([66; 32]);
    let mut cluster = Cluster::new(ClusterConfig {
        nodes: 10,
        seed: 21,
        // The writer is a member that is offline: only members may write.
        extra_members: vec![mallory.agent_id(), NodeKey::from_seed([77; 32]).agent_id()],
        gossip: GossipConfig {
            forward_news: false,
            ..GossipConfig::default()
        },
        ..ClusterConfig::default()
    });
    let writer = NodeKey::from_seed([77; 32]);
    let mut source = knhk_crdt::VersionedState::new(knhk_crdt::StateConfig::default());
    for n in 0..3u8 {
        source.put(&writer, &format!("k{n}"), vec![n]).unwrap();
    }
    let full = source.delta_since(&knhk_types::VersionVector::new());
    let last = source.entry("k2").unwrap().clone();
    let omitting = Delta {
        ranges: vec![WriterRange {
            writer: writer.agent_id(),
            after: 0,
            through: 3,
        }],
        entries: vec![last],
    };
    let now = cluster.now();
    let nonce = now.0 << 20;
    cluster.inject(
        mallory.agent_id(),
        0,
        push_frame(&mallory, now, nonce + 1, &full),
    );
    cluster.inject(
        mallory.agent_id(),
        9,
        push_frame(&mallory, now, nonce + 2, &omitting),
    );
    // Deliver the two frames first (every root is still empty before that).
    cluster.run_until(5, |_| false);
    assert_eq!(cluster.gossip(9).get("k0"), None);
    assert_eq!(
        cluster.gossip(9).state().version(),
        cluster.gossip(0).state().version()
    );
    cluster
        .run_until_converged(60_000)
        .expect("anti-entropy repairs node 9");
    for n in 0..3u8 {
        assert_eq!(
            cluster.gossip(9).get(&format!("k{n}")),
            Some(&[n][..]),
            "node 9, k{n}"
        );
    }
    let diffs: u64 = cluster
        .all_nodes()
        .map(|i| cluster.gossip_mut(i).status().stats.diffs_completed)
        .sum();
    assert!(diffs >= 1, "a Merkle diff ran");
}

#[test]
fn a_write_right_after_convergence_is_not_announced_as_converged() {
    let mut cluster = cluster(10, 13);
    cluster.put(0, "k", b"1".to_vec()).unwrap();
    cluster.run_until_converged(10_000).unwrap();
    let nodes: Vec<usize> = cluster.all_nodes().collect();
    cluster
        .run_until(5_000, |c| {
            nodes.iter().all(|&i| c.gossip_mut(i).status().converged)
        })
        .unwrap();
    // A new write: node 0's agreement so far was about the old root.
    cluster.put(0, "k", b"2".to_vec()).unwrap();
    let round = cluster.gossip_mut(0).status().round;
    cluster
        .run_until(1_000, |c| c.gossip_mut(0).status().round > round)
        .unwrap();
    assert!(
        !cluster.gossip_mut(0).status().converged,
        "one round after a write cannot be {} agreeing rounds",
        GossipConfig::default().convergence_rounds
    );
    // It does converge again once peers report the new root for long enough.
    cluster
        .run_until(5_000, |c| c.gossip_mut(0).status().converged)
        .expect("converges on the new root");
}

#[test]
fn a_second_layer_runs_beside_gossip_in_the_cluster() {
    use knhk_endpoint::probe::PingLayer;
    let mut probes = Vec::new();
    let mut cluster = Cluster::with_layers(
        ClusterConfig {
            nodes: 8,
            seed: 31,
            latency_ms: 2,
            ..ClusterConfig::default()
        },
        |endpoint, _| {
            let probe = PingLayer::new(std::time::Duration::from_millis(25));
            probes.push(
                endpoint
                    .add_layer(knhk_types::Scope::DEFAULT, probe)
                    .unwrap(),
            );
        },
    );
    cluster.put(3, "k", b"v".to_vec()).unwrap();
    cluster.run_until_converged(10_000).unwrap();
    cluster.run_until(1_000, |_| false);
    for (i, probe) in probes.iter().enumerate() {
        let probe = cluster.endpoint(i).layer(*probe).unwrap();
        assert!(probe.round_trips().len() >= 30, "node {i}");
        assert!(probe.round_trips().iter().all(|rtt| rtt.rtt_ms == 4));
        assert_eq!(cluster.endpoint(i).stats().frames_unrouted, 0);
    }
}

/// Hardening finding 3: `Entries` used to be merged from anyone at any time, so a member
/// could replay pre-signed entries and make a node verify them without limit. Now they
/// are accepted only inside a diff session, once.
#[test]
fn anti_entropy_entries_outside_a_session_are_ignored() {
    let mallory = NodeKey::from_seed([91; 32]);
    let mut cluster = Cluster::new(ClusterConfig {
        nodes: 3,
        seed: 17,
        // The writer is a member, so only the session rule can refuse its entries.
        extra_members: vec![mallory.agent_id(), NodeKey::from_seed([92; 32]).agent_id()],
        ..ClusterConfig::default()
    });
    let writer = NodeKey::from_seed([92; 32]);
    let mut source = knhk_crdt::VersionedState::new(knhk_crdt::StateConfig::default());
    source.put(&writer, "smuggled", b"x".to_vec()).unwrap();
    let entries = vec![source.entry("smuggled").unwrap().clone()];
    let now = cluster.now();
    let frame = knhk_gossip::testing::entries_frame(&mallory, now, now.0 << 20, entries);
    cluster.inject(mallory.agent_id(), 0, frame);
    cluster.run_until(50, |_| false);
    assert_eq!(cluster.gossip(0).get("smuggled"), None);
    assert_eq!(cluster.gossip(0).stats().entries_ignored, 1);
    assert_eq!(
        cluster.endpoint(0).stats().charged,
        0,
        "ignored, not charged"
    );
}

/// Hardening finding 6: a 141-byte pull with an empty version bought a full catch-up
/// delta (tens of ms and hundreds of KB on a large state) every time. One catch-up per
/// peer per ten rounds now; more pulls get our version only.
#[test]
fn a_peer_gets_one_catch_up_delta_per_ten_rounds() {
    let mallory = NodeKey::from_seed([93; 32]);
    let mut cluster = Cluster::new(ClusterConfig {
        nodes: 2,
        seed: 19,
        extra_members: vec![mallory.agent_id()],
        ..ClusterConfig::default()
    });
    for n in 0..300 {
        cluster.put(0, &format!("k{n}"), vec![1; 16]).unwrap();
    }
    cluster.run_until_converged(10_000).unwrap();
    let now = cluster.now();
    for nonce in 0..5 {
        let frame = knhk_gossip::testing::pull_frame(
            &mallory,
            now,
            (now.0 << 20) + nonce,
            [0; 32],
            Some(knhk_types::VersionVector::new()),
        );
        cluster.inject(mallory.agent_id(), 0, frame);
    }
    cluster.run_until(5, |_| false);
    assert_eq!(cluster.gossip(0).stats().catch_up_deferred, 4);
    assert_eq!(cluster.endpoint(0).stats().charged, 0);
}

/// Hardening finding 4: five ~930 KB pushes of entries from made-up writers took a
/// victim to 35k writers, after which its pulls no longer fit a frame and it never
/// caught up. Only members may write now.
#[test]
fn writers_outside_the_membership_are_refused() {
    let mallory = NodeKey::from_seed([94; 32]);
    let mut cluster = Cluster::new(ClusterConfig {
        nodes: 3,
        seed: 23,
        extra_members: vec![mallory.agent_id()],
        ..ClusterConfig::default()
    });
    let now = cluster.now();
    let mut source = knhk_crdt::VersionedState::new(knhk_crdt::StateConfig::default());
    for n in 0..200u8 {
        let made_up = NodeKey::from_seed([
            n, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23,
            24, 25, 26, 27, 28, 29, 30, 31,
        ]);
        source.put(&made_up, &format!("w{n}"), vec![n]).unwrap();
    }
    let inflating = source.delta_since(&knhk_types::VersionVector::new());
    cluster.inject(
        mallory.agent_id(),
        0,
        push_frame(&mallory, now, now.0 << 20, &inflating),
    );
    cluster.run_until(50, |_| false);
    assert_eq!(
        cluster.gossip(0).state().version().len(),
        0,
        "no made-up writer admitted"
    );
    assert_eq!(cluster.gossip(0).stats().foreign_writers_refused, 1);
    // Mallory's own writes are welcome: she is a member.
    let mut hers = knhk_crdt::VersionedState::new(knhk_crdt::StateConfig::default());
    hers.put(&mallory, "hers", b"ok".to_vec()).unwrap();
    let delta = hers.delta_since(&knhk_types::VersionVector::new());
    cluster.inject(
        mallory.agent_id(),
        0,
        push_frame(&mallory, now, (now.0 << 20) + 1, &delta),
    );
    cluster.run_until(50, |_| false);
    assert_eq!(cluster.gossip(0).get("hers"), Some(&b"ok"[..]));
}

/// Hardening finding 6: a small `DiffAsk` for every bucket of a large state cost the
/// receiver hundreds of ms and a reply over a frame, as often as the rate limit let the
/// asker send one. Answers are chunked and a peer's answers are bounded per round.
#[test]
fn anti_entropy_questions_buy_a_bounded_amount_of_answers_per_round() {
    let mallory = NodeKey::from_seed([95; 32]);
    let gossip = GossipConfig {
        max_delta_bytes: 16 * 1024,
        ..GossipConfig::default()
    };
    let mut cluster = Cluster::new(ClusterConfig {
        nodes: 2,
        seed: 29,
        extra_members: vec![mallory.agent_id()],
        gossip,
        ..ClusterConfig::default()
    });
    for n in 0..2_000 {
        cluster.put(0, &format!("key/{n}"), vec![1; 8]).unwrap();
    }
    cluster.run_until_converged(20_000).unwrap();
    let now = cluster.now();
    let every_bucket: Vec<u32> = (0..4_096).collect();
    for nonce in 0..10 {
        let ask = knhk_gossip::testing::diff_ask_frame(
            &mallory,
            now,
            (now.0 << 20) + nonce,
            nonce,
            every_bucket.clone(),
        );
        cluster.inject(mallory.agent_id(), 0, ask);
    }
    let sent_before = cluster.endpoint(0).stats().bytes_sent;
    cluster.run_until(5, |_| false);
    let sent = cluster.endpoint(0).stats().bytes_sent - sent_before;
    // The whole answer is about 100 KB; ten of them were 1 MB. Now the round's answers
    // to one peer stay within 2 × 16 KiB, plus one small bucket (and an envelope) for
    // each question past the budget's edge.
    assert!(
        sent < 48 * 1024,
        "answered {sent} bytes to one peer in one round"
    );
    assert_eq!(
        cluster.endpoint(0).stats().oversized_dropped,
        0,
        "no answer built over a frame"
    );
    assert_eq!(cluster.endpoint(0).stats().charged, 0);
}

/// Hardening finding 3: a member's data may cost at most a set number of signature
/// checks a second (charged as they are made, so one message may overshoot); more is
/// dropped (and comes again later), not charged.
#[test]
fn one_peer_buys_a_bounded_number_of_signature_checks_per_second() {
    let mallory = NodeKey::from_seed([96; 32]);
    let mut cluster = Cluster::new(ClusterConfig {
        nodes: 2,
        seed: 37,
        extra_members: vec![mallory.agent_id()],
        gossip: GossipConfig {
            max_verifications_per_peer_second: 100,
            ..GossipConfig::default()
        },
        ..ClusterConfig::default()
    });
    let mut hers = knhk_crdt::VersionedState::new(knhk_crdt::StateConfig::default());
    let delta_of = |hers: &mut knhk_crdt::VersionedState, from: u64, to: u64| {
        let before = hers.version().clone();
        for n in from..to {
            hers.put(&mallory, &format!("m{n}"), vec![3]).unwrap();
        }
        hers.delta_since(&before)
    };
    let now = cluster.now();
    let first = delta_of(&mut hers, 0, 300);
    let second = delta_of(&mut hers, 300, 310);
    cluster.inject(
        mallory.agent_id(),
        0,
        push_frame(&mallory, now, now.0 << 20, &first),
    );
    cluster.run_until(2, |_| false);
    cluster.inject(
        mallory.agent_id(),
        0,
        push_frame(&mallory, now, (now.0 << 20) + 1, &second),
    );
    cluster.run_until(2, |_| false);
    // The first spent the budget (and overshot it, once); the second waits.
    assert_eq!(cluster.gossip(0).get("m0"), Some(&[3][..]));
    assert_eq!(cluster.gossip(0).get("m300"), None);
    assert_eq!(cluster.gossip(0).stats().verifications_deferred, 1);
    assert_eq!(cluster.endpoint(0).stats().charged, 0);
}

/// Hardening finding 6: requests that no honest node sends (repeats, out of order) are
/// provably abusive and charged; honest questions are sorted sets.
#[test]
fn questions_with_repeats_are_charged() {
    let mallory = NodeKey::from_seed([97; 32]);
    let mut cluster = Cluster::new(ClusterConfig {
        nodes: 2,
        seed: 41,
        extra_members: vec![mallory.agent_id()],
        ..ClusterConfig::default()
    });
    let now = cluster.now();
    let repeated =
        knhk_gossip::testing::diff_ask_frame(&mallory, now, now.0 << 20, 1, vec![5; 4_000]);
    cluster.inject(mallory.agent_id(), 0, repeated);
    let sorted =
        knhk_gossip::testing::diff_ask_frame(&mallory, now, (now.0 << 20) + 1, 2, vec![1, 2, 3]);
    cluster.inject(mallory.agent_id(), 0, sorted);
    cluster.run_until(5, |_| false);
    assert_eq!(
        cluster.endpoint(0).stats().charged,
        1,
        "only the repeating question"
    );
    assert!(
        cluster
            .endpoint(0)
            .reputation(&mallory.agent_id(), cluster.now())
            < 1_000
    );
}

/// 32 writers, frames of 1,100 bytes: a whole version vector (about 1.1 KB) no longer
/// fits one. With no paging every versioned pull and answer is dropped as oversized and
/// the mesh never converges (hardening finding 4); a page at a time, it does.
fn many_writers_small_frames(page_writers: usize) -> (Option<u64>, u64, u64) {
    let mut cluster = Cluster::new(ClusterConfig {
        nodes: 32,
        seed: 41,
        gossip: GossipConfig {
            // Only pulls spread data: no news forwarding, no Merkle repair.
            forward_news: false,
            anti_entropy_every: u64::MAX,
            max_delta_bytes: 400,
            version_page_writers: page_writers,
            ..GossipConfig::default()
        },
        validator: knhk_security::ValidatorConfig {
            max_frame_bytes: 1_100,
            ..knhk_security::ValidatorConfig::default()
        },
        ..ClusterConfig::default()
    });
    let start = cluster.now();
    for i in cluster.all_nodes() {
        cluster.put(i, &format!("k{i}"), vec![i as u8]).unwrap();
    }
    let done = cluster.run_until_converged(10_000).map(|at| at.0 - start.0);
    let oversized = cluster
        .all_nodes()
        .map(|i| cluster.endpoint(i).stats().oversized_dropped)
        .sum();
    let partial = cluster
        .all_nodes()
        .map(|i| cluster.gossip(i).stats().version_pages_partial)
        .sum();
    (done, oversized, partial)
}

#[test]
fn versions_go_a_page_at_a_time_when_they_outgrow_a_frame() {
    let (whole, oversized, _) = many_writers_small_frames(32_768);
    println!("whole vectors: converged {whole:?}, {oversized} frames dropped as oversized");
    assert_eq!(whole, None, "whole vectors cannot fit these frames");
    assert!(oversized > 0);

    let (paged, oversized, partial) = many_writers_small_frames(4);
    println!(
        "pages of 4: converged after {paged:?} virtual ms, {oversized} oversized, {partial} partial pages"
    );
    assert!(paged.is_some(), "paged versions converge");
    assert_eq!(oversized, 0, "every page fits a frame");
    assert!(partial > 0, "the vectors really went in pages");
}

/// One member used to be able to fill the state every member shares (`max_entries`),
/// after which no honest node could add a key. Each writer now has a quota: her
/// entries past it are set aside, and honest writes keep landing everywhere.
#[test]
fn one_member_cannot_fill_the_state_honest_writers_share() {
    let mallory = NodeKey::from_seed([97; 32]);
    let state = knhk_crdt::StateConfig {
        max_entries: 100,
        max_keys_per_writer: 50,
        ..knhk_crdt::StateConfig::default()
    };
    let mut cluster = Cluster::new(ClusterConfig {
        nodes: 3,
        seed: 43,
        extra_members: vec![mallory.agent_id()],
        gossip: GossipConfig {
            state: state.clone(),
            ..GossipConfig::default()
        },
        ..ClusterConfig::default()
    });
    // Her own replica has no quota: three pushes of 40 junk keys each.
    let mut hers = knhk_crdt::VersionedState::new(knhk_crdt::StateConfig::default());
    let now = cluster.now();
    for push in 0..3u64 {
        let before = hers.version().clone();
        for n in 0..40 {
            hers.put(&mallory, &format!("junk/{push}/{n}"), vec![1; 8])
                .unwrap();
        }
        let delta = hers.delta_since(&before);
        cluster.inject(
            mallory.agent_id(),
            0,
            push_frame(&mallory, now, (now.0 << 20) + push, &delta),
        );
        cluster.run_until(20, |_| false);
    }
    assert_eq!(
        cluster.gossip(0).state().held_by(&mallory.agent_id()).keys,
        40
    );
    assert!(cluster.gossip(0).stats().writer_quota_deferred >= 40);
    // 60 honest keys still fit beside her 40.
    for i in 0..3 {
        for n in 0..20 {
            cluster.put(i, &format!("honest/{i}/{n}"), vec![2]).unwrap();
        }
    }
    cluster
        .run_until_converged(10_000)
        .expect("honest writes converge");
    for i in cluster.all_nodes() {
        assert_eq!(
            cluster.gossip(i).get("honest/2/19"),
            Some(&[2u8][..]),
            "node {i}"
        );
        assert_eq!(cluster.gossip(i).state().len(), 100, "node {i}");
    }
    assert_eq!(
        cluster.endpoint(0).stats().charged,
        0,
        "a quota is ours, not a charge"
    );
}
