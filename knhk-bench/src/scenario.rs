//! The standard runs of `knhk-sim`, and the report each produces.

use std::time::{Duration, Instant};

use crate::crypto::{CryptoMode, SimSigner};
use knhk_endpoint::harness::VIRTUAL_START;
use knhk_gossip::{GossipConfig, GossipLayer};
use knhk_security::SignatureVerifier;
use knhk_types::{AgentId, EnvelopeSigner, UnixMillis};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::network::{LatencyModel, NetworkConfig, Partition, RegionMatrix};
use crate::sim::{SimConfig, Simulator};

/// Intervals the partition scenario keeps the mesh split.
const PARTITION_INTERVALS: u64 = 20;
/// Intervals after which the nodes crashed by the churn scenario restart.
const CHURN_RESTART_INTERVALS: u64 = 5;
/// Intervals before the churn scenario may declare convergence.
const CHURN_SETTLE_INTERVALS: u64 = 10;

/// Which run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// One write on node 0; time until every node holds it.
    Broadcast,
    /// Ten nodes (or all, if fewer) write one key at once; time until all agree.
    ConcurrentWrites,
    /// The mesh splits in two for 20 intervals; each side writes; time until all agree
    /// after the heal.
    Partition,
    /// 10% of nodes crash; half come back with their state, half empty; a write
    /// meanwhile; time until every live node agrees.
    Churn,
    /// 1% of members (at least one) are Byzantine: forged entries, bad signatures,
    /// replays; time until the honest nodes agree, and the forged key must appear nowhere.
    Byzantine,
}

impl Scenario {
    /// The kebab-case name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Broadcast => "broadcast",
            Self::ConcurrentWrites => "concurrent-writes",
            Self::Partition => "partition",
            Self::Churn => "churn",
            Self::Byzantine => "byzantine",
        }
    }

    /// The faults this scenario injects with gossip interval `interval_ms`.
    pub fn events(self, interval_ms: u64) -> Vec<Event> {
        let interval = interval_ms.max(1);
        match self {
            Self::Partition => vec![
                Event {
                    at_ms: 0,
                    what: "partition cut",
                },
                Event {
                    at_ms: PARTITION_INTERVALS.saturating_mul(interval),
                    what: "partition healed",
                },
            ],
            Self::Churn => vec![
                Event {
                    at_ms: 0,
                    what: "10% of nodes crash",
                },
                Event {
                    at_ms: CHURN_RESTART_INTERVALS.saturating_mul(interval),
                    what: "crashed nodes restart",
                },
            ],
            Self::Broadcast | Self::ConcurrentWrites | Self::Byzantine => Vec::new(),
        }
    }

    /// Virtual ms after the write before which this scenario does not declare
    /// convergence (a partition must have healed, churn must have settled).
    pub fn not_before_ms(self, interval_ms: u64) -> u64 {
        let interval = interval_ms.max(1);
        match self {
            Self::Partition => PARTITION_INTERVALS.saturating_mul(interval),
            Self::Churn => CHURN_SETTLE_INTERVALS.saturating_mul(interval),
            Self::Broadcast | Self::ConcurrentWrites | Self::Byzantine => 0,
        }
    }
}

/// Parameters of one run.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// Honest nodes.
    pub nodes: usize,
    /// Gossip fanout.
    pub fanout: usize,
    /// Gossip interval, ms.
    pub interval_ms: u64,
    /// Seed of everything.
    pub seed: u64,
    /// Frame loss probability.
    pub loss: f64,
    /// Which run.
    pub scenario: Scenario,
    /// Per-link latency.
    pub latency: LatencyModel,
    /// Spread nodes over three regions with WAN round trips.
    pub regions: bool,
    /// Give up after this much virtual time (ms).
    pub deadline_ms: u64,
    /// After convergence, measure idle traffic for this long (ms of virtual time).
    pub idle_ms: u64,
    /// Maximum clock skew per node (ms).
    pub max_clock_skew_ms: u64,
    /// Real ed25519 or the stand-in.
    pub crypto: CryptoMode,
    /// Forward news at once (the default); off gives textbook round-based push-pull.
    pub forward_news: bool,
    /// Synchronous rounds: every node's rounds fire at the same instants (multiples of
    /// the interval), so each acts once per round on the state it had at the round's
    /// start, and the report counts true rounds. Set beside published round tables with
    /// `forward_news` off and a small constant latency.
    pub synchronous: bool,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            nodes: 1_000,
            fanout: 3,
            interval_ms: 100,
            seed: 1,
            loss: 0.0,
            scenario: Scenario::Broadcast,
            latency: LatencyModel::Constant { ms: 1.0 },
            regions: false,
            deadline_ms: 120_000,
            idle_ms: 5_000,
            max_clock_skew_ms: 0,
            crypto: CryptoMode::Ed25519,
            forward_news: true,
            synchronous: false,
        }
    }
}

/// What a run measured. Field order is stable, so two runs with one seed give identical
/// JSON apart from `wall_ms`, `peak_rss_bytes` and `rss_bytes_per_node` (the wall-clock
/// and process figures).
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Honest nodes.
    pub nodes: usize,
    /// Gossip fanout.
    pub fanout: usize,
    /// Gossip interval, ms.
    pub interval_ms: u64,
    /// Seed.
    pub seed: u64,
    /// Scenario name.
    pub scenario: &'static str,
    /// Signatures: `"ed25519"` (real, on every message) or `"sim"` (the stand-in of
    /// `knhk_bench::crypto`).
    pub crypto: &'static str,
    /// Per-link latency model.
    pub latency: LatencyModel,
    /// Three WAN regions or one site.
    pub regions: bool,
    /// Frame loss probability.
    pub loss: f64,
    /// News forwarded at once (false: textbook round-based push-pull).
    pub forward_news: bool,
    /// Synchronous rounds (every node's rounds at the same instants).
    pub synchronous: bool,
    /// Maximum clock skew per node (ms).
    pub max_clock_skew_ms: u64,
    /// The run gave up this long (virtual ms) after the write.
    pub deadline_ms: u64,
    /// Virtual ms of the idle measurement after convergence (0: not measured).
    pub idle_ms: u64,
    /// The scenario declares convergence no earlier than this (virtual ms since the
    /// write): when the partition has healed, or the churn has settled; 0 otherwise.
    pub not_before_ms: u64,
    /// The scenario's faults on the timeline of `coverage` (a partition's cut and heal,
    /// the crashes and restarts of churn); empty for the others.
    pub events: Vec<Event>,
    /// Every live node ended with the same root within the deadline.
    pub converged: bool,
    /// Live nodes when the run stopped (at convergence or at the deadline).
    pub live_nodes: usize,
    /// Of those, the nodes holding every write of the scenario.
    pub nodes_with_update: usize,
    /// Virtual µs from the first write until every live node held the same root.
    pub convergence_us: Option<u64>,
    /// `convergence_us / interval`: time in units of the interval. Nodes fire at random
    /// phases and news is forwarded on arrival, so news crosses several hops within one
    /// interval; this is not a count of protocol rounds.
    pub interval_rounds: Option<f64>,
    /// Synchronous mode only: the rounds until every live node held the same root (the
    /// round instants after the write, up to and including the one whose exchanges
    /// finished the job).
    pub rounds: Option<u64>,
    /// Frames delivered from the first write to convergence.
    pub messages_total: u64,
    /// Bytes delivered from the first write to convergence.
    pub bytes_total: u64,
    /// `messages_total / nodes`.
    pub messages_per_node: f64,
    /// `bytes_total / nodes`.
    pub bytes_per_node: f64,
    /// After convergence, bytes each node received per second of virtual time.
    pub idle_bytes_per_node_per_s: f64,
    /// An *estimate* of the bytes each node holds after the run, averaged: counted from
    /// the sizes of the data structures it holds (state, gate tables, queues), without
    /// allocator overhead or the signature cache, so identical runs report identical
    /// figures in both crypto modes. Measured RSS is `rss_bytes_per_node`.
    pub memory_estimate_bytes_per_node: u64,
    /// The signature cache each node holds, averaged (0 with the stand-in crypto, which
    /// keeps no cache).
    pub signature_cache_bytes_per_node: u64,
    /// Frames lost to loss, partitions, and crashed receivers.
    pub frames_dropped: u64,
    /// Byzantine frames refused by honest nodes (byzantine scenario).
    pub byzantine_rejected: u64,
    /// `[virtual ms since the first write, fraction of live nodes that have it]`; the
    /// last sample is at convergence, or at the deadline for a run that missed it.
    pub coverage: Vec<(u64, f64)>,
    /// Wall-clock time of the run (ms); differs between identical runs.
    pub wall_ms: u64,
    /// Peak resident memory of the process (bytes); differs between identical runs.
    pub peak_rss_bytes: u64,
    /// `peak_rss_bytes / nodes`: measured memory per node, simulator included.
    pub rss_bytes_per_node: u64,
}

/// A fault a scenario injects, at a virtual time on the timeline of
/// [`Report::coverage`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Event {
    /// Virtual ms since the first write.
    pub at_ms: u64,
    /// What happened, in a few words (a plot label).
    pub what: &'static str,
}

/// How far a run has got, for a progress display ([`run_with_progress`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Waiting for convergence: virtual ms since the write (the run gives up at
    /// [`RunConfig::deadline_ms`]).
    Converging {
        /// Virtual ms since the write.
        virtual_ms: u64,
    },
    /// Measuring idle traffic after convergence (or the deadline): virtual ms into this
    /// phase, which lasts [`RunConfig::idle_ms`].
    Idle {
        /// Virtual ms since the idle phase began.
        virtual_ms: u64,
    },
}

/// Reads a `/proc/self/status` field in bytes (0 where unavailable).
fn proc_status_bytes(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with(field))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1_024)
}

/// Runs one scenario. `progress` is called with the virtual ms reached since the write,
/// each time it advances by a millisecond or more while the run waits for convergence
/// (not during the idle phase; see [`run_with_progress`]).
pub fn run(config: &RunConfig, progress: &mut dyn FnMut(u64)) -> Report {
    run_with_progress(config, &mut |reached| {
        if let Progress::Converging { virtual_ms } = reached {
            progress(virtual_ms);
        }
    })
}

/// Runs one scenario, calling `progress` each time virtual time advances by a
/// millisecond or more, in every phase after the nodes have started: cheap enough for a
/// live display, and the same run whatever `progress` does.
pub fn run_with_progress(config: &RunConfig, progress: &mut dyn FnMut(Progress)) -> Report {
    let wall = Instant::now();
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed ^ 0x7363_656e_6172_696f);
    let byzantine_seeds: Vec<[u8; 32]> = match config.scenario {
        Scenario::Byzantine => (0..(config.nodes / 100).max(1))
            .map(|_| rng.random())
            .collect(),
        _ => Vec::new(),
    };
    let interval = config.interval_ms.max(1);
    let network = NetworkConfig {
        latency: config.latency.clone(),
        regions: config.regions.then(RegionMatrix::three_regions),
        loss: config.loss,
        partitions: Vec::new(),
        ..NetworkConfig::default()
    };
    let mut sim = Simulator::new(SimConfig {
        nodes: config.nodes,
        seed: config.seed,
        gossip: GossipConfig {
            interval: Duration::from_millis(interval),
            fanout: config.fanout,
            forward_news: config.forward_news,
            aligned_rounds: config.synchronous,
            ..GossipConfig::default()
        },
        network,
        extra_member_seeds: byzantine_seeds.clone(),
        crypto: config.crypto,
        max_clock_skew_ms: config.max_clock_skew_ms,
        start: VIRTUAL_START,
        ..SimConfig::default()
    });

    // Every round timer starts within one interval; begin after two.
    sim.run_for(interval.saturating_mul(2), interval, |_| {});
    let t0 = sim.now_ms();
    let before = sim.traffic();
    let byzantine: Vec<SimSigner> = byzantine_seeds
        .iter()
        .map(|seed| sim.signer_for(*seed))
        .collect();
    progress(Progress::Converging { virtual_ms: 0 });
    let writers = setup(config, &mut sim, &byzantine, &mut rng, t0, progress);

    let mut coverage = vec![(
        0,
        sim.fraction_of_live(|core| writers.iter().all(|w| holds(core, w))),
    )];
    let sample_every = (interval / 10).max(1);
    let deadline = t0.saturating_add(config.deadline_ms);
    let mut next_sample = t0 + sample_every;
    let mut reported = sim.now_ms();
    let not_before = t0.saturating_add(config.scenario.not_before_ms(interval));
    let done = sim.run_until(deadline, |sim| {
        let now = sim.now_ms();
        if now >= next_sample {
            let fraction = sim.fraction_of_live(|core| writers.iter().all(|w| holds(core, w)));
            coverage.push((now - t0, fraction));
            next_sample = now + sample_every;
        }
        if now > reported {
            progress(Progress::Converging {
                virtual_ms: now - t0,
            });
            reported = now;
        }
        now >= not_before && sim.live_roots_agree()
    });
    let after = sim.traffic();
    let (live_nodes, nodes_with_update) =
        (0..sim.len())
            .filter(|&i| sim.is_alive(i))
            .fold((0, 0), |(live, holding), i| {
                let has = writers.iter().all(|w| holds(sim.gossip(i), w));
                (live + 1, holding + usize::from(has))
            });
    let fraction = if live_nodes == 0 {
        0.0
    } else {
        nodes_with_update as f64 / live_nodes as f64
    };
    match done {
        Some(at) => coverage.push((at / 1_000 - t0, fraction)),
        // Nothing happens between the last event and the deadline: the coverage there
        // (or where the scenario's setup left the clock, if that is later).
        None => {
            let stopped = (sim.now_ms() - t0).max(config.deadline_ms);
            if coverage.last().is_some_and(|(ms, _)| *ms < stopped) {
                coverage.push((stopped, fraction));
            }
        }
    }
    let byzantine_rejected = (0..sim.len())
        .map(|i| {
            let stats = sim.endpoint(i).stats();
            stats.frames_rejected + stats.charged
        })
        .sum();

    let per_node = |bytes: u64| bytes / config.nodes.max(1) as u64;
    let cache_bytes: u64 = (0..sim.len())
        .map(|i| sim.endpoint(i).validator().verifier().memory_bytes() as u64)
        .sum();
    let memory_bytes: u64 = (0..sim.len())
        .map(|i| sim.endpoint(i).approx_memory_bytes() as u64)
        .sum();

    // Idle cost: nothing changes; only the gossip keeps going.
    let idle_start = sim.traffic();
    let idle_from = sim.now_ms();
    progress(Progress::Idle { virtual_ms: 0 });
    sim.run_for(idle_from.saturating_add(config.idle_ms), 1, |sim| {
        progress(Progress::Idle {
            virtual_ms: sim.now_ms() - idle_from,
        });
    });
    let idle_bytes = sim.traffic().bytes - idle_start.bytes;
    let idle_seconds = config.idle_ms.max(1) as f64 / 1_000.0;

    let messages_total = after.delivered - before.delivered;
    let bytes_total = after.bytes - before.bytes;
    let nodes = config.nodes.max(1) as f64;
    let interval_us = interval * 1_000;
    let convergence_us = done.map(|at| at - t0 * 1_000);
    let peak_rss_bytes = proc_status_bytes("VmHWM:");
    Report {
        nodes: config.nodes,
        fanout: config.fanout,
        interval_ms: interval,
        seed: config.seed,
        scenario: config.scenario.name(),
        crypto: config.crypto.name(),
        latency: config.latency.clone(),
        regions: config.regions,
        loss: config.loss,
        forward_news: config.forward_news,
        synchronous: config.synchronous,
        max_clock_skew_ms: config.max_clock_skew_ms,
        deadline_ms: config.deadline_ms,
        idle_ms: config.idle_ms,
        not_before_ms: config.scenario.not_before_ms(interval),
        events: config.scenario.events(interval),
        converged: done.is_some(),
        live_nodes,
        nodes_with_update,
        convergence_us,
        interval_rounds: convergence_us.map(|us| us as f64 / interval_us as f64),
        rounds: convergence_us
            .filter(|_| config.synchronous)
            // Exchanges finish microseconds after their round's instant, so this counts
            // the round instants after the write up to convergence.
            .map(|us| us / interval_us),
        messages_total,
        bytes_total,
        messages_per_node: messages_total as f64 / nodes,
        bytes_per_node: bytes_total as f64 / nodes,
        idle_bytes_per_node_per_s: idle_bytes as f64 / nodes / idle_seconds,
        memory_estimate_bytes_per_node: per_node(memory_bytes - cache_bytes),
        signature_cache_bytes_per_node: per_node(cache_bytes),
        frames_dropped: after.lost + after.partitioned + after.to_dead,
        byzantine_rejected,
        coverage,
        wall_ms: wall.elapsed().as_millis() as u64,
        peak_rss_bytes,
        rss_bytes_per_node: per_node(peak_rss_bytes),
    }
}

/// What a node must hold for the run's writes to count as arrived.
struct Written {
    key: String,
    writer: AgentId,
}

fn holds(core: &GossipLayer, written: &Written) -> bool {
    core.state().version().get(&written.writer) >= 1 || core.get(&written.key).is_some()
}

/// Makes the scenario's writes and faults at virtual time `t0`; returns what must arrive.
fn setup(
    config: &RunConfig,
    sim: &mut Simulator,
    byzantine: &[SimSigner],
    rng: &mut ChaCha8Rng,
    t0: u64,
    progress: &mut dyn FnMut(Progress),
) -> Vec<Written> {
    let n = sim.len();
    let write = |sim: &mut Simulator, node: usize, key: &str| {
        // Local writes cannot fail for these small keys and values.
        let _ = sim.put(node, key, format!("written by {node}").into_bytes());
        Written {
            key: key.to_owned(),
            writer: sim.endpoint(node).id(),
        }
    };
    match config.scenario {
        Scenario::Broadcast => vec![write(sim, 0, "broadcast")],
        Scenario::ConcurrentWrites => {
            let writers = n.min(10);
            (0..writers)
                .map(|k| write(sim, k * n / writers, "contended"))
                .collect()
        }
        Scenario::Partition => {
            let heal = t0 + PARTITION_INTERVALS.saturating_mul(config.interval_ms.max(1));
            sim.set_partition(Partition {
                group: (0..n).map(|i| u8::from(i >= n / 2)).collect(),
                from_ms: t0,
                until_ms: heal,
            });
            vec![write(sim, 0, "side-a"), write(sim, n - 1, "side-b")]
        }
        Scenario::Churn => {
            let crashed: Vec<usize> = (1..n).filter(|_| rng.random::<f64>() < 0.1).collect();
            for &node in &crashed {
                sim.crash(node);
            }
            let written = vec![write(sim, 0, "during-churn")];
            let back_at = t0 + CHURN_RESTART_INTERVALS.saturating_mul(config.interval_ms.max(1));
            sim.run_for(back_at, 1, |sim| {
                progress(Progress::Converging {
                    virtual_ms: sim.now_ms() - t0,
                });
            });
            for (k, &node) in crashed.iter().enumerate() {
                sim.restart(node, k % 2 == 0);
            }
            written
        }
        Scenario::Byzantine => {
            let victim = sim.endpoint(n - 1).id();
            for (k, mallory) in byzantine.iter().enumerate() {
                let now = UnixMillis(VIRTUAL_START.0 + t0);
                for target in (0..n).filter(|t| t % byzantine.len() == k).take(50) {
                    let mut nonce = (now.0 << 20) + target as u64 * 4;
                    let forged = forged_push(mallory, victim, now, nonce);
                    sim.inject(mallory.agent_id(), target, forged.clone());
                    nonce += 1;
                    let mut bad = forged_push(mallory, victim, now, nonce);
                    let last = bad.len() - 1;
                    bad[last] ^= 1;
                    sim.inject(mallory.agent_id(), target, bad);
                    sim.inject(mallory.agent_id(), target, forged);
                }
            }
            vec![write(sim, 0, "honest")]
        }
    }
}

/// A validly signed envelope carrying an entry forged in `victim`'s name.
fn forged_push(mallory: &SimSigner, victim: AgentId, now: UnixMillis, nonce: u64) -> Vec<u8> {
    let delta = knhk_gossip::testing::forged_delta(victim);
    knhk_gossip::testing::push_frame(mallory, now, nonce, &delta)
}
