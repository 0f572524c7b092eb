//! Joining over real QUIC on loopback: a node holding a membership certificate
//! bootstraps to a seed that has never heard of it and the two converge both ways; a
//! node without one is refused at every attempt, never gets data, and is counted.
//! Waits are liveness bounds (generous), never timing assertions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, SystemTime};

mod common;
use common::wait_converged;
use ed25519_dalek::SigningKey;
// Everything but the claims' details comes from knhk-gossip's re-exports.
use knhk_gossip::{
    AdmissionRule, AgentId, InboundPolicy, MembershipCertificate, MembershipClaims, Mesh,
    MeshConfig, NodeKey, QuicConfig, RefusalReason,
};
use knhk_types::{HierarchyLevel, Region, UnixMillis};

fn certificate(authority: &SigningKey, agent: AgentId) -> MembershipCertificate {
    let now = UnixMillis::from_system_time(SystemTime::now());
    let claims = MembershipClaims {
        cluster: "demo".into(),
        agent,
        region: Region::default(),
        role: HierarchyLevel::Edge,
        not_before: now,
        expires: now.saturating_add(Duration::from_secs(3_600)),
    };
    MembershipCertificate::issue(authority, claims).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certified_node_joins_through_a_seed_and_a_stranger_is_refused() {
    let authority = SigningKey::from_bytes(&[200; 32]);
    let rule = Arc::new(AdmissionRule::new(
        AgentId::from_verifying_key(&authority.verifying_key()),
        "demo",
    ));
    let certified = |key: &NodeKey| QuicConfig {
        inbound_policy: InboundPolicy::Certified(rule.clone()),
        credentials: Some(certificate(&authority, key.agent_id())),
        ..QuicConfig::default()
    };
    let seed_key = NodeKey::from_seed([1; 32]);
    let seed = Mesh::builder()
        .key(seed_key.clone())
        .config(MeshConfig::lan().seeded(1))
        .quic_config(certified(&seed_key))
        .build()
        .await
        .unwrap();
    seed.put("cluster/name", b"demo".to_vec()).await.unwrap();

    let joiner_key = NodeKey::from_seed([2; 32]);
    // The builder's shorthand for the same policy and credentials.
    let joiner = Mesh::builder()
        .key(joiner_key.clone())
        .config(MeshConfig::lan().seeded(2))
        .certified(
            AdmissionRule::new(
                AgentId::from_verifying_key(&authority.verifying_key()),
                "demo",
            ),
            certificate(&authority, joiner_key.agent_id()),
        )
        .bootstrap(seed.seed_addr())
        .build()
        .await
        .unwrap();
    joiner.put("joiner/hello", b"hi".to_vec()).await.unwrap();
    let both = [seed, joiner];
    wait_converged(&both, "cluster/name", b"demo", 20).await;
    wait_converged(&both, "joiner/hello", b"hi", 20).await;
    let [seed, joiner] = both;
    assert_eq!(seed.status().await.unwrap().peers, 1);
    assert_eq!(seed.status().await.unwrap().transport.peers_admitted, 1);

    // A stranger with a valid key but no certificate bootstraps to the same seed.
    let stranger = Mesh::builder()
        .key(NodeKey::from_seed([3; 32]))
        .config(MeshConfig::lan().seeded(3))
        .bootstrap(seed.seed_addr())
        .build()
        .await
        .unwrap();
    for _ in 0..500 {
        let refused = seed.status().await.unwrap().transport.admissions_refused;
        if refused.get(RefusalReason::NoCertificate) >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = seed.status().await.unwrap();
    assert!(
        status
            .transport
            .admissions_refused
            .get(RefusalReason::NoCertificate)
            >= 2,
        "{:?}",
        status.transport
    );
    assert_eq!(status.peers, 1, "the stranger was never registered");
    assert_eq!(stranger.get("cluster/name").await.unwrap(), None);
    // Refusals cost the stranger nothing at the gate either: it never got a frame in.
    assert_eq!(status.node.frames_rejected, 0);
    for mesh in [seed, joiner, stranger] {
        mesh.shutdown().await.unwrap();
    }
}
