//! Latency-aware against uniform peer choice on the simulator: three regions (the WAN
//! matrix), the production failure detector ranking each view by round trip, gossip
//! choosing near/mid/far by the view's ring shares. Measures how long writes take to
//! reach every node, the bytes on the links, and the share that crossed regions.

use serde::Serialize;

use knhk_gossip::GossipConfig;
use knhk_topology::{TopologyConfig, ViewConfig};

use crate::crypto::CryptoMode;
use crate::network::{NetworkConfig, RegionMatrix};
use crate::sim::{SimConfig, Simulator};

/// What one peer-choice run measured (after the warm-up; times in virtual ms).
#[derive(Clone, Debug, Serialize)]
pub struct PeerChoiceReport {
    /// Nodes (three regions, assigned round robin).
    pub nodes: usize,
    /// Seed.
    pub seed: u64,
    /// Shares of choices to the near, mid and far third of each view.
    pub ring_shares: [u32; 3],
    /// Writes made, one after another (each waits until every node holds it).
    pub writes: usize,
    /// Writes that reached every node before the deadline.
    pub converged: usize,
    /// Median time from a write to "every node holds it".
    pub converge_p50_ms: Option<u64>,
    /// The slowest write.
    pub converge_max_ms: Option<u64>,
    /// Virtual ms the writes took in all.
    pub window_ms: u64,
    /// Bytes put on links during the writes (gossip and failure detector).
    pub bytes: u64,
    /// Of those, bytes between two different regions.
    pub cross_region_bytes: u64,
    /// `cross_region_bytes / bytes`.
    pub cross_region_share: f64,
}

/// Warms up for `warmup_ms` (the views learn their round trips), then makes `writes`
/// writes from nodes spread over the regions, each given up to `deadline_ms` to reach
/// every node.
pub fn peer_choice(
    nodes: usize,
    seed: u64,
    topology: &TopologyConfig,
    ring_shares: [u32; 3],
    warmup_ms: u64,
    writes: usize,
    deadline_ms: u64,
) -> PeerChoiceReport {
    let mut sim = Simulator::new(SimConfig {
        nodes,
        seed,
        gossip: GossipConfig::lan(),
        network: NetworkConfig {
            regions: Some(RegionMatrix::three_regions()),
            ..NetworkConfig::default()
        },
        crypto: CryptoMode::Sim,
        topology: Some(TopologyConfig {
            announce_on_start: false,
            ..topology.clone()
        }),
        view: ViewConfig {
            ring_shares,
            ..ViewConfig::default()
        },
        ..SimConfig::default()
    });
    sim.run_until(warmup_ms, |_| false);
    let before = sim.traffic();
    let started = sim.now_ms();
    let mut times = Vec::with_capacity(writes);
    for write in 0..writes {
        let key = format!("choice/{write}");
        let writer = (write * 7 + 1) % nodes.max(1);
        if sim.put(writer, &key, vec![1; 32]).is_err() {
            continue;
        }
        let at = sim.now_ms();
        let mut next_check = at;
        while sim.now_ms() < at + deadline_ms {
            if sim.now_ms() >= next_check {
                next_check += 10;
                if sim.fraction_of_live(|g| g.get(&key).is_some()) >= 1.0 {
                    times.push(sim.now_ms() - at);
                    break;
                }
            }
            if !sim.step() {
                break;
            }
        }
    }
    let after = sim.traffic();
    let bytes = after.carried_bytes - before.carried_bytes;
    let cross = after.cross_region_bytes - before.cross_region_bytes;
    let converged = times.len();
    times.sort_unstable();
    PeerChoiceReport {
        nodes,
        seed,
        ring_shares,
        writes,
        converged,
        converge_p50_ms: times.get(times.len() / 2).copied(),
        converge_max_ms: times.last().copied(),
        window_ms: sim.now_ms() - started,
        bytes,
        cross_region_bytes: cross,
        cross_region_share: if bytes == 0 {
            0.0
        } else {
            cross as f64 / bytes as f64
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn near_first_choice_keeps_more_traffic_inside_regions_than_uniform() {
        let topology = TopologyConfig {
            probe_interval: Duration::from_millis(500),
            probe_timeout: Duration::from_millis(300),
            ..TopologyConfig::default()
        };
        let near = peer_choice(60, 4, &topology, [50, 30, 20], 10_000, 3, 20_000);
        let uniform = peer_choice(60, 4, &topology, [1, 1, 1], 10_000, 3, 20_000);
        assert_eq!(near.converged, 3, "{near:?}");
        assert_eq!(uniform.converged, 3, "{uniform:?}");
        assert!(
            near.cross_region_share < uniform.cross_region_share,
            "near {near:?} uniform {uniform:?}"
        );
    }
}
