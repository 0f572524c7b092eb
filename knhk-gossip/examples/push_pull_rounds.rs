//! Rounds to spread one write by push-pull gossip, measured on real cores in the
//! in-memory cluster (virtual clock), against the theory for random phone-call
//! push-pull (Karp, Schindelhauer, Shenker, Vöcking 2000: log3 N + O(ln ln N) rounds).
//!
//! ```text
//! cargo run --release -p knhk-gossip --example push_pull_rounds [-- N...]
//! ```
//!
//! Two configurations per N: the textbook one (fanout 1, no immediate forwarding: one
//! exchange per node per round) and the production default (fanout 3, news forwarded at
//! once). Latency 1 ms, interval 100 ms, ed25519 on every message, three seeds each.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use knhk_gossip::GossipConfig;
use knhk_gossip::testing::{Cluster, ClusterConfig};

fn measure(nodes: usize, seed: u64, gossip: GossipConfig) -> (f64, u64, f64) {
    let interval_ms = gossip.interval.as_millis() as f64;
    let mut cluster = Cluster::new(ClusterConfig {
        nodes,
        seed,
        gossip,
        ..ClusterConfig::default()
    });
    // Let every node's round timer start (they start at random points in one interval).
    cluster.run_until(100, |_| false);
    let start = cluster.now();
    let (frames_before, _) = cluster.traffic();
    cluster.put(0, "news", b"one write".to_vec()).unwrap();
    let wall = Instant::now();
    let done = cluster.run_until_converged(600_000).expect("converges");
    let elapsed = (done.0 - start.0) as f64;
    let (frames, _) = cluster.traffic();
    (
        elapsed / interval_ms,
        (frames - frames_before) / nodes as u64,
        wall.elapsed().as_secs_f64(),
    )
}

fn main() {
    let sizes: Vec<usize> = {
        let given: Vec<usize> = std::env::args()
            .skip(1)
            .map(|n| n.parse().expect("N is a number"))
            .collect();
        if given.is_empty() {
            vec![1_000, 10_000]
        } else {
            given
        }
    };
    println!(
        "| N | config | rounds (3 seeds) | theory log3 N + ln ln N | messages per node | wall s |"
    );
    println!("|---|---|---|---|---|---|");
    for &nodes in &sizes {
        let n = nodes as f64;
        let theory = n.ln() / 3f64.ln() + n.ln().ln();
        let configs = [
            (
                "fanout 1, rounds only",
                GossipConfig {
                    fanout: 1,
                    forward_news: false,
                    ..GossipConfig::default()
                },
            ),
            ("fanout 3, news forwarded", GossipConfig::default()),
        ];
        for (name, config) in configs {
            let mut rounds = Vec::new();
            let mut messages = 0;
            let mut wall = 0.0;
            for seed in 1..=3 {
                let (r, m, w) = measure(nodes, seed, config.clone());
                rounds.push(format!("{r:.1}"));
                messages = m;
                wall += w;
            }
            println!(
                "| {nodes} | {name} | {} | {theory:.1} | {messages} | {wall:.1} |",
                rounds.join(" / ")
            );
        }
    }
}
