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
    /// Median over 10,000 random node pairs of |coordinate distance − true round
    /// trip| / true round trip, at the end (Vivaldi with height, learned on probes).
    pub coordinate_error_p50: Option<f64>,
    /// The same over the pairs in different regions only.
    pub coordinate_error_cross_region_p50: Option<f64>,
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
    let coordinate_error_p50 = coordinate_error(&sim, nodes, seed, false);
    let coordinate_error_cross_region_p50 = coordinate_error(&sim, nodes, seed, true);
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
        coordinate_error_p50,
        coordinate_error_cross_region_p50,
    }
}

/// The median relative error of the coordinates' predicted round trips against the
/// simulator's (the region matrix plus the links' constant 1 ms each way), over 10,000
/// random pairs (in different regions only, with `cross_region`).
fn coordinate_error(sim: &Simulator, nodes: usize, seed: u64, cross_region: bool) -> Option<f64> {
    use rand::{Rng, SeedableRng};
    let regions = RegionMatrix::three_regions();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x636f_6f72);
    let mut errors: Vec<f64> = (0..10_000)
        .filter_map(|_| {
            let (a, b) = (rng.random_range(0..nodes), rng.random_range(0..nodes));
            if a == b || (cross_region && a % 3 == b % 3) {
                return None;
            }
            let (ca, cb) = (sim.swim(a)?.coordinate(), sim.swim(b)?.coordinate());
            let truth = regions.rtt_ms[a % 3][b % 3] / 1_000.0 + 0.002;
            Some((ca.distance_to(&cb) - truth).abs() / truth)
        })
        .collect();
    errors.sort_by(f64::total_cmp);
    errors.get(errors.len() / 2).copied()
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
