//! Handling one inbound push on a node: endpoint (gate, routing) + gossip layer.
//!
//! Every frame is new (a fresh nonce and a fresh entry), so each is accepted and
//! merged. Its envelope and entry signatures are verified into the node's cache before
//! timing, so the figure is the validation gate's cached path (≈ 0.6 µs, see the
//! security bench) plus routing and the layer's own work: decode, delta decode, merge,
//! update event. With news forwarding on, it also includes sealing the forwarded
//! envelopes.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use knhk_crdt::{Delta, SignedEntry, WriterRange};
use knhk_endpoint::harness::VIRTUAL_START;
use knhk_endpoint::{Endpoint, EndpointConfig, LayerHandle, MemberList, StaticView};
use knhk_gossip::{GossipConfig, GossipLayer};
use knhk_security::{NodeKey, SignatureVerifier, ValidatorConfig};
use knhk_types::{AgentId, EnvelopeRef, Scope, UnixMillis};

const POOL: usize = 10_000;

struct Fixture {
    sender: AgentId,
    writer: AgentId,
    frames: Vec<Vec<u8>>,
    entries: Vec<SignedEntry>,
    now: UnixMillis,
}

fn fixture(sender: &NodeKey, writer: &NodeKey, now: UnixMillis) -> Fixture {
    let mut entries = Vec::with_capacity(POOL);
    let mut frames = Vec::with_capacity(POOL);
    for n in 1..=POOL as u64 {
        let entry = SignedEntry::sign(
            writer,
            format!("agent/{n}/status"),
            Some(b"running".to_vec()),
            n,
            n,
        );
        let delta = Delta {
            ranges: vec![WriterRange {
                writer: writer.agent_id(),
                after: n - 1,
                through: n,
            }],
            entries: vec![entry.clone()],
        };
        frames.push(knhk_gossip::testing::push_frame(sender, now, n, &delta));
        entries.push(entry);
    }
    Fixture {
        sender: sender.agent_id(),
        writer: writer.agent_id(),
        frames,
        entries,
        now,
    }
}

/// A node (eight members and the sender) running one gossip layer, whose cache holds
/// every signature of the fixture.
fn warm_node(fixture: &Fixture, forward_news: bool) -> (Endpoint, LayerHandle<GossipLayer>) {
    let key = NodeKey::from_seed([9; 32]);
    let mut members: Vec<AgentId> = (10..17u8)
        .map(|n| NodeKey::from_seed([n; 32]).agent_id())
        .collect();
    members.extend([key.agent_id(), fixture.sender, fixture.writer]);
    let view = StaticView::new(MemberList::new(members), key.agent_id());
    let config = EndpointConfig {
        seed: 5,
        validator: ValidatorConfig {
            rate_per_second: u32::MAX,
            rate_burst: u32::MAX,
            ..ValidatorConfig::default()
        },
        ..EndpointConfig::default()
    };
    let mut node = Endpoint::new(key, view, config);
    let gossip = node
        .add_layer(
            Scope::DEFAULT,
            GossipLayer::new(GossipConfig {
                forward_news,
                // One sender sends 10,000 deltas without a round passing: lift the
                // per-peer signature budget, which would (rightly) defer most of them.
                max_verifications_per_peer_second: usize::MAX,
                ..GossipConfig::default()
            }),
        )
        .unwrap();
    node.start(fixture.now);
    assert!(node.peers().contains(&fixture.sender));
    let verifier = node.validator_mut().verifier_mut();
    for (frame, entry) in fixture.frames.iter().zip(&fixture.entries) {
        let envelope = EnvelopeRef::decode(frame, usize::MAX).unwrap();
        verifier
            .verify(
                &envelope.sender,
                &envelope.signed_bytes(),
                &envelope.signature,
            )
            .unwrap();
        verifier
            .verify(&entry.writer, &entry.signed_bytes(), &entry.signature)
            .unwrap();
    }
    while node.poll_output().is_some() {}
    (node, gossip)
}

fn inbound_push(c: &mut Criterion) {
    let sender = NodeKey::from_seed([1; 32]);
    let writer = NodeKey::from_seed([2; 32]);
    let fixture = fixture(&sender, &writer, VIRTUAL_START);
    let mut group = c.benchmark_group("gossip_core");
    for (name, forward_news) in [
        ("inbound_push_news_merge_only", false),
        ("inbound_push_news_forwarded_to_3", true),
    ] {
        let (mut core, mut gossip) = warm_node(&fixture, forward_news);
        let mut used = 0usize;
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut done = 0u64;
                while done < iters {
                    if used == POOL {
                        (core, gossip) = warm_node(&fixture, forward_news);
                        used = 0;
                    }
                    let batch = ((iters - done) as usize).min(POOL - used);
                    let started = Instant::now();
                    for frame in &fixture.frames[used..used + batch] {
                        core.handle_frame(fixture.now, fixture.sender, black_box(frame));
                        while let Some(output) = core.poll_output() {
                            black_box(output);
                        }
                    }
                    total += started.elapsed();
                    used += batch;
                    done += batch as u64;
                }
                total
            })
        });
        let stats = core.stats();
        assert_eq!(stats.frames_rejected, 0);
        assert_eq!(stats.charged, 0);
        assert_eq!(stats.frames_unrouted, 0);
        // (A bench filtered out by name never ran: nothing to check.)
        let merged = core.layer(gossip).unwrap().stats();
        assert!(
            stats.frames_received == 0 || merged.deltas_merged > 0,
            "{merged:?} {stats:?}"
        );
        assert_eq!(
            merged.verifications_deferred, 0,
            "the bench measures merges, not the budget"
        );
    }
    group.finish();
}

criterion_group!(benches, inbound_push);
criterion_main!(benches);
