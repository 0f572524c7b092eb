//! Churn on the simulator: a settled mesh loses a share of its nodes to crashes and
//! gains as many new ones (joining through one live member each) every minute, while
//! members keep writing. Measured: whether the graph of views stays connected at every
//! check, whether every live node ends with every acknowledged write and one root, and
//! how many live members a live node believes dead. The same production layers on
//! virtual time.

use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use knhk_gossip::GossipConfig;
use knhk_topology::{MemberState, TopologyConfig, ViewConfig};

use crate::crypto::CryptoMode;
use crate::network::NetworkConfig;
use crate::sim::{SimConfig, Simulator};

/// How often the graph of views is checked, virtual ms.
const CHECK_EVERY_MS: u64 = 10_000;

/// What a churn run measured.
#[derive(Clone, Debug, Serialize)]
pub struct ChurnReport {
    /// Nodes at the start (and, churn replacing each crash, throughout).
    pub nodes: usize,
    /// Seed.
    pub seed: u64,
    /// Minutes of churn.
    pub minutes: u64,
    /// Nodes crashed, and as many joined, per minute.
    pub per_minute: usize,
    /// Nodes crashed over the run.
    pub crashed: usize,
    /// New nodes joined over the run.
    pub joined: usize,
    /// Writes acknowledged (one per crash, by a random live node).
    pub writes_acknowledged: usize,
    /// Writes refused (the writer was without a quorum).
    pub writes_refused: usize,
    /// Checks of the graph of views (every 10 virtual s), and how many found the live
    /// nodes in one component.
    pub connectivity_checks: usize,
    /// Checks that found the live nodes connected.
    pub connected_checks: usize,
    /// Live nodes no live view held, at the worst check.
    pub most_unprobed: usize,
    /// After the churn stopped: virtual ms until every live node held every
    /// acknowledged write with equal Merkle roots (none: not within the deadline).
    pub converged_ms: Option<u64>,
    /// At the end, (observer, member) pairs where a live node believes a live member
    /// dead.
    pub live_believed_dead: usize,
    /// At the end, (observer, member) pairs where a live node's view still holds a
    /// crashed member as alive or suspect (crashes not yet detected).
    pub crashed_in_views: usize,
    /// Deaths declared over the run (each node's own timers), crashes and false ones.
    pub deaths_declared: u64,
}

/// The failure detector and views of the small churn runs (tests, sweeps): probes
/// every 200 ms with a 100 ms timeout, 8 probed members and a reserve of 16.
pub fn small_mesh() -> (TopologyConfig, ViewConfig) {
    let topology = TopologyConfig {
        probe_interval: std::time::Duration::from_millis(200),
        probe_timeout: std::time::Duration::from_millis(100),
        ..TopologyConfig::default()
    };
    let view = ViewConfig {
        active: 8,
        reserve: 16,
        ..ViewConfig::default()
    };
    (topology, view)
}

/// A settled mesh of `nodes`; every minute for `minutes`, `per_minute` random live
/// nodes crash and as many new nodes join (each through one random live node), at even
/// intervals, and a random live node writes a key at each crash. Then churn stops and
/// the run waits up to `settle_ms` for every live node to hold every acknowledged
/// write with equal roots.
pub fn churn(
    nodes: usize,
    seed: u64,
    topology: &TopologyConfig,
    view: ViewConfig,
    minutes: u64,
    per_minute: usize,
    settle_ms: u64,
) -> ChurnReport {
    let joiners = per_minute * usize::try_from(minutes).unwrap_or(usize::MAX);
    let mut sim = Simulator::new(SimConfig {
        nodes: nodes + joiners,
        seed,
        gossip: GossipConfig::lan(),
        network: NetworkConfig::default(),
        crypto: CryptoMode::Sim,
        topology: Some(TopologyConfig {
            announce_on_start: false,
            ..topology.clone()
        }),
        view,
        late_joiners: joiners,
        ..SimConfig::default()
    });
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xC4_u64);
    let mut report = ChurnReport {
        nodes,
        seed,
        minutes,
        per_minute,
        crashed: 0,
        joined: 0,
        writes_acknowledged: 0,
        writes_refused: 0,
        connectivity_checks: 0,
        connected_checks: 0,
        most_unprobed: 0,
        converged_ms: None,
        live_believed_dead: 0,
        crashed_in_views: 0,
        deaths_declared: 0,
    };
    // Let the settled mesh run a little first.
    let warmup_ms = 5_000;
    sim.run_for(warmup_ms, 1_000, |_| {});
    let every_ms = if per_minute == 0 {
        u64::MAX
    } else {
        60_000 / per_minute as u64
    };
    let end_ms = warmup_ms + minutes * 60_000;
    // Events at the middle of their slots: the last falls inside the run.
    let mut next_churn = warmup_ms + every_ms.min(60_000) / 2;
    let mut next_check = warmup_ms + CHECK_EVERY_MS;
    let mut next_joiner = nodes;
    let mut written = Vec::new();
    let mut crashed = vec![false; sim.len()];
    while sim.now_ms() < end_ms {
        if sim.now_ms() >= next_churn && next_joiner < sim.len() {
            next_churn += every_ms;
            let live = live_nodes(&sim);
            if let Some(&victim) = live.choose(&mut rng) {
                sim.crash(victim);
                crashed[victim] = true;
                report.crashed += 1;
            }
            let live = live_nodes(&sim);
            if let Some(&contact) = live.choose(&mut rng) {
                sim.join(next_joiner, &[contact]);
                next_joiner += 1;
                report.joined += 1;
            }
            if let Some(&writer) = live.choose(&mut rng) {
                let key = format!("churn/{}", written.len() + report.writes_refused);
                match sim.put(writer, &key, vec![rng.random(); 16]) {
                    Ok(()) => written.push(key),
                    Err(_) => report.writes_refused += 1,
                }
            }
        }
        if sim.now_ms() >= next_check {
            next_check += CHECK_EVERY_MS;
            report.connectivity_checks += 1;
            let graph = ViewGraph::of(&sim);
            if graph.connected() {
                report.connected_checks += 1;
            }
            report.most_unprobed = report.most_unprobed.max(graph.unprobed());
        }
        if !sim.step() {
            break;
        }
    }
    report.writes_acknowledged = written.len();
    let stopped_at = sim.now_ms();
    report.converged_ms = sim
        .run_until(stopped_at + settle_ms, |sim| {
            sim.fraction_of_live(|g| written.iter().all(|k| g.get(k).is_some())) >= 1.0
                && sim.live_roots_agree()
        })
        .map(|us| us / 1_000 - stopped_at);
    let live = live_nodes(&sim);
    let ids = |nodes: &[usize]| -> Vec<_> { nodes.iter().map(|i| sim.endpoint(*i).id()).collect() };
    let live_ids = ids(&live);
    let gone: Vec<usize> = (0..sim.len()).filter(|i| crashed[*i]).collect();
    let gone_ids = ids(&gone);
    for i in &live {
        let Some(view) = sim.membership(*i) else {
            continue;
        };
        report.live_believed_dead += live_ids
            .iter()
            .filter(|id| view.get(id).is_some_and(|m| m.state == MemberState::Dead))
            .count();
        report.crashed_in_views += gone_ids
            .iter()
            .filter(|id| {
                view.in_view(id)
                    && view.get(id).is_some_and(|m| {
                        matches!(m.state, MemberState::Alive | MemberState::Suspect)
                    })
            })
            .count();
        if let Some(swim) = sim.swim(*i) {
            report.deaths_declared += swim.stats().deaths_declared;
        }
    }
    report
}

fn live_nodes(sim: &Simulator) -> Vec<usize> {
    (0..sim.len()).filter(|i| sim.is_alive(*i)).collect()
}

/// The live nodes and their view edges to live members believed alive or suspect
/// (the graph probes and gossip run on), taken both ways: a probe's ack and a pull's
/// answer carry news back.
struct ViewGraph {
    adjacent: Vec<Vec<usize>>,
    live: Vec<usize>,
    probed: Vec<bool>,
}

impl ViewGraph {
    fn of(sim: &Simulator) -> Self {
        let live = live_nodes(sim);
        let mut adjacent = vec![Vec::new(); sim.len()];
        let mut probed = vec![false; sim.len()];
        let index: std::collections::HashMap<_, _> =
            live.iter().map(|i| (sim.endpoint(*i).id(), *i)).collect();
        for i in &live {
            let Some(view) = sim.membership(*i) else {
                continue;
            };
            for member in view.members() {
                if !matches!(member.state, MemberState::Alive | MemberState::Suspect) {
                    continue;
                }
                if let Some(&j) = index.get(&member.id) {
                    adjacent[*i].push(j);
                    adjacent[j].push(*i);
                    probed[j] = true;
                }
            }
        }
        Self {
            adjacent,
            live,
            probed,
        }
    }

    /// True if the live nodes form one component.
    fn connected(&self) -> bool {
        let Some(&first) = self.live.first() else {
            return true;
        };
        let mut seen = vec![false; self.adjacent.len()];
        seen[first] = true;
        let mut stack = vec![first];
        let mut reached = 1;
        while let Some(n) = stack.pop() {
            for &m in &self.adjacent[n] {
                if !seen[m] {
                    seen[m] = true;
                    reached += 1;
                    stack.push(m);
                }
            }
        }
        reached == self.live.len()
    }

    /// Live nodes no live view holds (nobody probes them).
    fn unprobed(&self) -> usize {
        self.live.iter().filter(|i| !self.probed[**i]).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_mesh_under_churn_stays_connected_and_converges() {
        // 60 nodes, 3 crashed and 3 joined a minute (5 %) for 2 minutes, views of 8 + 16.
        let (topology, view) = small_mesh();
        let report = churn(60, 1, &topology, view, 2, 3, 30_000);
        println!("{report:?}");
        assert_eq!((report.crashed, report.joined), (6, 6), "{report:?}");
        assert_eq!(report.crashed_in_views, 0, "{report:?}");
        assert_eq!(
            report.connected_checks, report.connectivity_checks,
            "{report:?}"
        );
        assert!(report.converged_ms.is_some(), "{report:?}");
        assert_eq!(report.live_believed_dead, 0, "{report:?}");
        assert_eq!(report.writes_refused, 0, "{report:?}");
    }
}
