//! Handling one inbound push in the gossip core.
//!
//! Every frame is new (a fresh nonce and a fresh entry), so each is accepted and
//! merged. Its envelope and entry signatures are verified into the core's cache before
//! timing, so the figure is the validation gate's cached path (≈ 0.6 µs, see the
//! security bench) plus the core's own work: decode, delta decode, merge, update event.
//! With news forwarding on, it also includes signing the forwarded envelopes.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use knhk_crdt::{Delta, SignedEntry, WriterRange};
use knhk_gossip::testing::{Cluster, ClusterConfig};
use knhk_gossip::{GossipConfig, GossipCore, Membership, StaticMembership};
use knhk_security::{NodeKey, SignatureVerifier};
use knhk_types::{AgentId, EnvelopeRef, UnixMillis};

const POOL: usize = 10_000;

struct Fixture {
    sender: AgentId,
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
        frames,
        entries,
        now,
    }
}

/// A core (taken from a small cluster, so its membership knows the sender) whose cache
/// holds every signature of the fixture.
fn warm_core(fixture: &Fixture, forward_news: bool) -> GossipCore<StaticMembership> {
    let mut cluster = Cluster::new(ClusterConfig {
        nodes: 8,
        seed: 5,
        extra_members: vec![fixture.sender],
        gossip: GossipConfig {
            forward_news,
            validator: knhk_security::ValidatorConfig {
                rate_per_second: u32::MAX,
                rate_burst: u32::MAX,
                ..Default::default()
            },
            ..GossipConfig::default()
        },
        ..ClusterConfig::default()
    });
    let mut core = std::mem::replace(
        cluster.core_mut(0),
        GossipCore::new(
            NodeKey::from_seed([0; 32]),
            StaticMembership::new(
                knhk_gossip::MemberList::new(vec![]),
                AgentId::from_bytes([0; 32]),
            ),
            GossipConfig::default(),
        ),
    );
    assert!(core.membership().contains(&fixture.sender));
    let verifier = core.validator_mut().verifier_mut();
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
    while core.poll_output().is_some() {}
    core
}

fn inbound_push(c: &mut Criterion) {
    let sender = NodeKey::from_seed([1; 32]);
    let writer = NodeKey::from_seed([2; 32]);
    let fixture = fixture(&sender, &writer, UnixMillis(1_732_000_000_000));
    let mut group = c.benchmark_group("gossip_core");
    for (name, forward_news) in [
        ("inbound_push_news_merge_only", false),
        ("inbound_push_news_forwarded_to_3", true),
    ] {
        let mut core = warm_core(&fixture, forward_news);
        let mut used = 0usize;
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut done = 0u64;
                while done < iters {
                    if used == POOL {
                        core = warm_core(&fixture, forward_news);
                        used = 0;
                    }
                    let batch = ((iters - done) as usize).min(POOL - used);
                    let started = Instant::now();
                    for frame in &fixture.frames[used..used + batch] {
                        core.handle_message(fixture.now, fixture.sender, black_box(frame));
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
        let stats = core.status().stats;
        assert_eq!(stats.messages_rejected, 0);
        assert_eq!(stats.bad_payloads, 0);
    }
    group.finish();
}

criterion_group!(benches, inbound_push);
criterion_main!(benches);
