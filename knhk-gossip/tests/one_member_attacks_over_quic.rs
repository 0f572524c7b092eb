//! The hardening issue's live check: one admitted member runs every attack at once,
//! over real QUIC on loopback, for a bounded time, while honest nodes keep converging.
//! Honest reputations stay intact and the victim's memory stays bounded. Waits are
//! liveness bounds (generous), never timing assertions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
mod common;
use common::wait_converged;
use knhk_gossip::testing::{diff_ask_frame, entries_frame, pull_frame, push_frame};
use knhk_gossip::{Mesh, MeshConfig};
use knhk_security::NodeKey;
use knhk_transport::{PeerRegistry, QuicConfig, QuicTransport, RegistryConfig, Transport};
use knhk_types::{AgentId, PeerInfo, UnixMillis, VersionVector};

fn now() -> UnixMillis {
    UnixMillis::from_system_time(std::time::SystemTime::now())
}

fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmRSS:"))?.to_owned();
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(0, |kb| kb * 1_024)
}

/// A state of `n` entries of made-up writers (for version-vector inflation).
fn made_up_writers(n: u16) -> knhk_crdt::Delta {
    let mut source = knhk_crdt::VersionedState::new(knhk_crdt::StateConfig::default());
    for i in 0..n {
        let mut seed = [200u8; 32];
        seed[..2].copy_from_slice(&i.to_be_bytes());
        source
            .put(&NodeKey::from_seed(seed), &format!("inflate/{i}"), vec![1])
            .unwrap();
    }
    source.delta_since(&VersionVector::new())
}

/// A version vector of `n` pairs in descending order (the quadratic-decode attack).
fn descending_vector_pull(from: &NodeKey, nonce: u64, n: u32) -> Bytes {
    // Built by hand: the type refuses to hold a non-canonical vector, so encode the
    // message's wire shape directly (Pull = variant 0, root, Some(page)), the page
    // being the whole vector (no start, no end, the pairs).
    let pairs: Vec<([u8; 32], u64)> = (0..n)
        .rev()
        .map(|i| {
            let mut id = [0u8; 32];
            id[..4].copy_from_slice(&i.to_be_bytes());
            (id, 1)
        })
        .collect();
    let whole_page = (None::<[u8; 32]>, None::<[u8; 32]>, pairs);
    let payload = postcard::to_allocvec(&(0u8, [0u8; 32], Some(whole_page))).unwrap();
    let header = knhk_types::EnvelopeHeader::new(knhk_types::MessageKind::GossipPull, now(), nonce);
    Bytes::from(knhk_types::Envelope::seal(from, header, &payload))
}

/// Sends one valid pull from a banned member and asserts the victim's transport
/// refuses it (the dial waits for a welcome that a blocked peer never gets).
async fn assert_a_banned_member_cannot_send(
    attacker: &QuicTransport,
    mallory: &NodeKey,
    victim: AgentId,
) {
    let probe = pull_frame(mallory, now(), now().0 << 21, [0; 32], None);
    let sent = attacker.send(victim, Bytes::from(probe)).await;
    assert!(sent.is_err(), "a banned member's frame was taken: {sent:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_member_running_every_attack_cannot_stop_honest_convergence() {
    let keys: Vec<NodeKey> = (0..3u8)
        .map(|i| NodeKey::from_seed([110 + i; 32]))
        .collect();
    let mut meshes = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let mesh = Mesh::builder()
            .key(key.clone())
            .config(MeshConfig::lan().seeded(i as u64))
            .build()
            .await
            .unwrap();
        meshes.push(mesh);
    }
    for a in &meshes {
        for b in &meshes {
            if a.id() != b.id() {
                a.add_peer(PeerInfo::new(b.id(), b.local_addr().unwrap()))
                    .unwrap();
            }
        }
    }
    // A state worth attacking: 2,000 keys everywhere.
    for n in 0..2_000 {
        meshes[n % 3]
            .put(&format!("seed/{n}"), vec![1; 16])
            .await
            .unwrap();
    }
    meshes[0].put("ready", b"yes".to_vec()).await.unwrap();
    wait_converged(&meshes, "ready", b"yes", 30).await;

    // Mallory is a member of every node.
    let mallory = NodeKey::from_seed([119; 32]);
    let registry = Arc::new(PeerRegistry::new(
        mallory.agent_id(),
        RegistryConfig::default(),
    ));
    for mesh in &meshes {
        registry
            .register(PeerInfo::new(mesh.id(), mesh.local_addr().unwrap()))
            .unwrap();
    }
    let attacker = Arc::new(
        QuicTransport::bind(mallory.signing_key(), registry, QuicConfig::default()).unwrap(),
    );
    for mesh in &meshes {
        mesh.add_peer(PeerInfo::new(
            mallory.agent_id(),
            attacker.local_addr().unwrap(),
        ))
        .unwrap();
    }
    let victim: AgentId = meshes[0].id();
    let rss_before = resident_bytes();

    // Every frame below passes the gate (valid envelope, fresh nonce, within the rate
    // for the first seconds): the attacks that cost mallory no reputation.
    let inflating = made_up_writers(2_000);
    let mut smuggler = knhk_crdt::VersionedState::new(knhk_crdt::StateConfig::default());
    for n in 0..500 {
        smuggler
            .put(&mallory, &format!("smuggled/{n}"), vec![2; 64])
            .unwrap();
    }
    let smuggled = smuggler.delta_since(&VersionVector::new()).entries;
    let every_bucket: Vec<u32> = (0..4_096).collect();
    let attack = {
        let (attacker, mallory) = (attacker.clone(), mallory.clone());
        tokio::spawn(async move {
            let mut nonce = now().0 << 20;
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(3) {
                let t = now();
                let frames = [
                    // Finding 6: cheap questions for expensive answers.
                    Bytes::from(pull_frame(
                        &mallory,
                        t,
                        nonce + 1,
                        [0; 32],
                        Some(VersionVector::new()),
                    )),
                    Bytes::from(diff_ask_frame(
                        &mallory,
                        t,
                        nonce + 2,
                        nonce,
                        every_bucket.clone(),
                    )),
                    // Finding 3: entries outside any session.
                    Bytes::from(entries_frame(&mallory, t, nonce + 3, smuggled.clone())),
                    // Finding 4: made-up writers.
                    Bytes::from(push_frame(&mallory, t, nonce + 4, &inflating)),
                ];
                nonce += 4;
                for frame in frames {
                    let _ = attacker.send(victim, frame).await;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            // Finding 1: quadratic decode; refused at once (and charged) now, then a
            // flood that ends in a ban, which reaches the transport (finding 2).
            for _ in 0..64 {
                nonce += 1;
                let _ = attacker
                    .send(victim, descending_vector_pull(&mallory, nonce, 30_000))
                    .await;
            }
        })
    };

    // Meanwhile the honest nodes keep writing and converging.
    for round in 0..5 {
        let key = format!("during-attack/{round}");
        meshes[1 + round % 2]
            .put(&key, b"honest".to_vec())
            .await
            .unwrap();
        wait_converged(&meshes, &key, b"honest", 30).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    attack.await.unwrap();
    meshes[2]
        .put("after-attack", b"honest".to_vec())
        .await
        .unwrap();
    wait_converged(&meshes, "after-attack", b"honest", 30).await;

    let status = meshes[0].status().await.unwrap();
    println!(
        "victim after the attack: {:?}, RSS +{} MiB",
        status.gossip.stats,
        resident_bytes().saturating_sub(rss_before) >> 20
    );
    for mesh in &meshes {
        for other in &meshes {
            if mesh.id() != other.id() {
                assert_eq!(
                    mesh.reputation(other.id()).await.unwrap(),
                    1_000,
                    "an honest peer lost reputation"
                );
            }
        }
        // (Mallory's own entries are a member's valid writes, and may arrive inside a
        // session she opened; entries of made-up writers never do.)
        assert_eq!(mesh.get("inflate/0").await.unwrap(), None);
    }
    let stats = status.gossip.stats;
    assert!(
        stats.foreign_writers_refused > 0 && stats.entries_ignored > 0,
        "{stats:?}"
    );
    assert!(
        status.gossip.writers <= 4,
        "version vector inflated: {}",
        status.gossip.writers
    );
    let mallory_reputation = meshes[0].reputation(mallory.agent_id()).await.unwrap();
    println!(
        "mallory: {mallory_reputation}, victim node stats {:?}",
        status.node
    );
    // Three undecodable pulls (200 points each) ban her; a ban ends at the threshold
    // (500), from which the score recovers slowly.
    assert!(
        mallory_reputation < 600,
        "the decode attack ended in a ban: {mallory_reputation}"
    );
    assert!(status.node.charged >= 3, "{:?}", status.node);
    // The ban reached the transport: her connection is closed and a new one refused,
    // so her next frame cannot even be sent. (Which of her flood's frames the gate saw
    // before the block is a race: the rest died with the closed connection.)
    assert_a_banned_member_cannot_send(&attacker, &mallory, victim).await;
    // Everything above ran in this one process (three nodes, the attacker, the test).
    let grown = resident_bytes().saturating_sub(rss_before);
    assert!(grown < 256 << 20, "RSS grew by {} MiB", grown >> 20);
    attacker.close().await;
    for mesh in meshes {
        mesh.shutdown().await.unwrap();
    }
}
