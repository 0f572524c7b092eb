//! Real QUIC on loopback with mutual TLS: ten nodes converge; a Byzantine node fails.
//! Waits are liveness bounds (generous), never timing assertions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use knhk_crdt::Delta;
mod common;
use common::wait_converged;
use knhk_gossip::{Mesh, MeshConfig};
use knhk_security::NodeKey;
use knhk_transport::{PeerRegistry, QuicConfig, QuicTransport, RegistryConfig, Transport};
use knhk_types::{AgentId, PeerInfo, UnixMillis};

async fn meshes(count: usize, seed_base: u8) -> Vec<Mesh> {
    let mut meshes = Vec::new();
    for i in 0..count {
        let mesh = Mesh::builder()
            .key(NodeKey::from_seed([seed_base + i as u8; 32]))
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
    meshes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_nodes_converge_over_quic_with_mutual_tls() {
    let meshes = meshes(10, 10).await;
    let mut updates = meshes[9].subscribe();
    meshes[0]
        .put("config/leader", b"node-0".to_vec())
        .await
        .unwrap();
    wait_converged(&meshes, "config/leader", b"node-0", 20).await;
    let update = tokio::time::timeout(Duration::from_secs(5), updates.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(update.key, "config/leader");
    assert_eq!(update.value.as_deref(), Some(&b"node-0"[..]));
    for mesh in &meshes {
        let status = mesh.status().await.unwrap();
        assert_eq!(status.peers, 9);
        assert_eq!(
            status.node.frames_rejected, 0,
            "honest traffic is never refused"
        );
    }
    for mesh in meshes {
        mesh.shutdown().await.unwrap();
    }
}

/// Two nodes with equal roots both come to say so: `converged` turns true on each once
/// its peer has answered its pulls with that root for the required rounds. (A new user
/// saw `converged: false` on two nodes with equal roots: it is false until those rounds
/// have passed, and must not stay false.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_with_equal_roots_both_report_converged() {
    let meshes = meshes(2, 40).await;
    meshes[0].put("pair/a", b"1".to_vec()).await.unwrap();
    meshes[1].put("pair/b", b"2".to_vec()).await.unwrap();
    wait_converged(&meshes, "pair/a", b"1", 20).await;
    for _ in 0..1_000 {
        let mut converged = true;
        for mesh in &meshes {
            converged &= mesh.status().await.unwrap().gossip.converged;
        }
        if converged {
            let [a, b] = [&meshes[0], &meshes[1]].map(|mesh| mesh.status());
            let (a, b) = (a.await.unwrap().gossip, b.await.unwrap().gossip);
            assert_eq!(a.root_hex(), b.root_hex(), "{a} / {b}");
            for mesh in meshes {
                mesh.shutdown().await.unwrap();
            }
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("equal roots, but not both converged within 20 s");
}

fn push_frame(from: &NodeKey, nonce: u64, delta: &Delta) -> Bytes {
    let now = UnixMillis::from_system_time(std::time::SystemTime::now());
    Bytes::from(knhk_gossip::testing::push_frame(from, now, nonce, delta))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_byzantine_node_is_rejected_over_quic_and_nine_honest_nodes_converge() {
    let honest = meshes(9, 40).await;
    let mallory = NodeKey::from_seed([99; 32]);
    let registry = Arc::new(PeerRegistry::new(
        mallory.agent_id(),
        RegistryConfig::default(),
    ));
    for mesh in &honest {
        registry
            .register(PeerInfo::new(mesh.id(), mesh.local_addr().unwrap()))
            .unwrap();
    }
    let attacker =
        QuicTransport::bind(mallory.signing_key(), registry, QuicConfig::default()).unwrap();
    for mesh in &honest {
        mesh.add_peer(PeerInfo::new(
            mallory.agent_id(),
            attacker.local_addr().unwrap(),
        ))
        .unwrap();
    }

    // Entries forged in an honest writer's name, inside validly signed envelopes.
    let victim: AgentId = honest[3].id();
    let forged = knhk_gossip::testing::forged_delta(victim);
    let mut nonce = u64::MAX / 2;
    for mesh in &honest {
        nonce += 1;
        attacker
            .send(mesh.id(), push_frame(&mallory, nonce, &forged))
            .await
            .unwrap();
        nonce += 1;
        let mut bad_signature = push_frame(&mallory, nonce, &Delta::default()).to_vec();
        let last = bad_signature.len() - 1;
        bad_signature[last] ^= 1;
        attacker
            .send(mesh.id(), Bytes::from(bad_signature))
            .await
            .unwrap();
        nonce += 1;
        let replayed = push_frame(&mallory, nonce, &Delta::default());
        attacker.send(mesh.id(), replayed.clone()).await.unwrap();
        attacker.send(mesh.id(), replayed).await.unwrap();
    }
    // A flood above the burst allowance (2,000): rate-limited, then banned.
    for _ in 0..5_000 {
        nonce += 1;
        if attacker
            .send(
                honest[0].id(),
                push_frame(&mallory, nonce, &Delta::default()),
            )
            .await
            .is_err()
        {
            break;
        }
    }

    honest[0].put("honest", b"value".to_vec()).await.unwrap();
    wait_converged(&honest, "honest", b"value", 20).await;
    for mesh in &honest {
        assert_eq!(
            mesh.get("forged").await.unwrap(),
            None,
            "a forged key arrived"
        );
        let reputation = mesh.reputation(mallory.agent_id()).await.unwrap();
        assert!(
            reputation < 1_000,
            "mallory's reputation at {:?} is {reputation}",
            mesh.id()
        );
        assert!(mesh.status().await.unwrap().node.frames_rejected >= 1);
    }
    attacker.close().await;
    for mesh in honest {
        mesh.shutdown().await.unwrap();
    }
}
