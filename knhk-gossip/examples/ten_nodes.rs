//! Ten real nodes on loopback gossip over QUIC with mutual TLS; prints the wall time
//! from one write until every node has it and all Merkle roots agree.
//!
//! ```text
//! cargo run --release -p knhk-gossip --example ten_nodes [-- TRIALS]   # TRIALS ≥ 1, default 5
//! ```
//!
//! Each trial writes a new key on a different node. A node "has it" when its
//! subscription delivers the update; the trial ends when all ten have it, and the roots
//! are then checked to be equal. Wall-clock figures from this machine.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use knhk_gossip::{Mesh, MeshConfig};
use knhk_security::NodeKey;
use knhk_types::PeerInfo;
use opentelemetry::metrics::MeterProvider as _;

const NODES: usize = 10;

#[tokio::main]
async fn main() {
    // Logs on stderr (RUST_LOG); OTLP export too when OTEL_EXPORTER_OTLP_ENDPOINT is set.
    let _telemetry = knhk_telemetry::init_from_env("ten_nodes").expect("telemetry");
    let trials = match std::env::args().nth(1).map(|n| n.parse::<usize>()) {
        None => 5,
        Some(Ok(trials)) if trials > 0 => trials,
        Some(_) => {
            eprintln!("ten_nodes: TRIALS must be a whole number of at least 1");
            std::process::exit(2);
        }
    };

    let mut meshes = Vec::new();
    for i in 0..NODES {
        // One meter per mesh: node 0 reports the metrics (ten meshes on one meter would
        // overwrite each other's series); every node still emits its spans.
        let meter = if i == 0 {
            opentelemetry::global::meter("knhk")
        } else {
            opentelemetry::metrics::NoopMeterProvider::new().meter("knhk")
        };
        let mesh = Mesh::builder()
            .key(NodeKey::generate().expect("OS randomness"))
            .meter(meter)
            .config(MeshConfig::lan().seeded(i as u64))
            .build()
            .await
            .expect("bind");
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
    println!("{NODES} nodes on 127.0.0.1, QUIC + mutual TLS, interval 100 ms, fanout 3");
    // Warm-up write so connections are open (first contact costs a TLS handshake).
    meshes[0].put("warm-up", b"1".to_vec()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut totals = Vec::new();
    for trial in 0..trials {
        let writer = trial % NODES;
        let key = format!("trial/{trial}");
        let mut subscriptions: Vec<_> = meshes.iter().map(Mesh::subscribe).collect();
        let started = Instant::now();
        meshes[writer]
            .put(&key, format!("written by node {writer}").into_bytes())
            .await
            .unwrap();
        let mut arrivals = Vec::new();
        for subscription in &mut subscriptions {
            loop {
                let update = tokio::time::timeout(Duration::from_secs(10), subscription.next())
                    .await
                    .expect("update within 10 s")
                    .expect("mesh running");
                if update.key == key {
                    arrivals.push(started.elapsed());
                    break;
                }
            }
        }
        let all_have_it = started.elapsed();
        let mut roots = Vec::new();
        for mesh in &meshes {
            roots.push(mesh.status().await.unwrap().gossip.root);
        }
        assert!(
            roots.windows(2).all(|pair| pair[0] == pair[1]),
            "roots differ"
        );
        let slowest = arrivals.iter().max().copied().unwrap_or_default();
        println!(
            "trial {trial}: write on node {writer} → all {NODES} nodes have it after {:.2} ms (roots agree)",
            slowest.as_secs_f64() * 1e3
        );
        totals.push(all_have_it.min(slowest));
    }
    totals.sort();
    let median = totals[totals.len() / 2];
    println!(
        "median over {trials} trials: {:.2} ms from write to all-converged (roadmap target ≤ 100 ms)",
        median.as_secs_f64() * 1e3
    );
    // All at once: each shutdown gives its connections up to a second to close cleanly.
    let stopping: Vec<_> = meshes
        .into_iter()
        .map(|mesh| tokio::spawn(mesh.shutdown()))
        .collect();
    for stopped in stopping {
        stopped.await.unwrap().unwrap();
    }
}
