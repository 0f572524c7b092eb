//! Seed sweeps: one fault scenario run over many seeds, failing on any seed whose live
//! nodes end on different Merkle roots (or, for churn, whose view graph came apart).
//! Every run is deterministic, so a failing seed replays exactly: the failure names
//! the command that replays it.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::crypto::CryptoMode;
use crate::network::LatencyModel;
use crate::scenario::{RunConfig, Scenario, run};

/// The fault scenarios a sweep knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Fault {
    /// One write spreads under 5 % frame loss and 1–20 ms latency.
    Loss,
    /// A cut into two sides for 20 intervals, then a heal, under 2 % loss.
    Partition,
    /// 10 % of the nodes crash after the write and restart 5 intervals later.
    CrashRestart,
    /// Concurrent writes from nodes whose clocks are up to 20 s apart (inside the
    /// gate's 30 s window), under 1 % loss.
    ClockSkew,
    /// Failure detection and views on: every minute a share of the nodes crash and as
    /// many new ones join through a random live node, while members write.
    Churn,
}

impl Fault {
    /// Every fault, in the order `--scenario all` runs them.
    pub const ALL: [Fault; 5] = [
        Fault::Loss,
        Fault::Partition,
        Fault::CrashRestart,
        Fault::ClockSkew,
        Fault::Churn,
    ];

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Loss => "loss",
            Self::Partition => "partition",
            Self::CrashRestart => "crash-restart",
            Self::ClockSkew => "clock-skew",
            Self::Churn => "churn",
        }
    }

    /// The gossip run of this fault for `nodes` and `seed`, given up `deadline_ms` of
    /// virtual time after the write; `None` for churn, which runs the failure detector
    /// instead ([`crate::churn::churn`]).
    pub fn run_config(self, nodes: usize, seed: u64, deadline_ms: u64) -> Option<RunConfig> {
        let base = RunConfig {
            nodes,
            seed,
            idle_ms: 0,
            deadline_ms,
            crypto: CryptoMode::Sim,
            latency: LatencyModel::Uniform {
                min_ms: 1.0,
                max_ms: 20.0,
            },
            ..RunConfig::default()
        };
        Some(match self {
            Self::Loss => RunConfig { loss: 0.05, ..base },
            Self::Partition => RunConfig {
                scenario: Scenario::Partition,
                loss: 0.02,
                ..base
            },
            Self::CrashRestart => RunConfig {
                scenario: Scenario::Churn,
                loss: 0.01,
                ..base
            },
            Self::ClockSkew => RunConfig {
                scenario: Scenario::ConcurrentWrites,
                max_clock_skew_ms: 20_000,
                loss: 0.01,
                ..base
            },
            Self::Churn => return None,
        })
    }
}

/// One seed that did not hold, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The seed (replays the run exactly).
    pub seed: u64,
    /// What went wrong, in a few words.
    pub reason: String,
}

/// What a sweep found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Seeds run.
    pub runs: u64,
    /// The seeds that failed, in ascending order.
    pub failures: Vec<Failure>,
    /// The slowest convergence seen (virtual ms) and its seed.
    pub slowest: Option<(u64, u64)>,
}

/// What to sweep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sweep {
    /// The fault.
    pub fault: Fault,
    /// Honest nodes per run.
    pub nodes: usize,
    /// Virtual ms after the write a gossip run may take to converge (churn settles
    /// within its own 30 s).
    pub deadline_ms: u64,
    /// Threads running seeds at once (at least one).
    pub threads: usize,
}

/// Runs `plan` for every seed in `seeds`. `progress` is called with the number of seeds
/// done after each one.
pub fn sweep(plan: Sweep, seeds: std::ops::Range<u64>, progress: &(dyn Fn(u64) + Sync)) -> Outcome {
    let Sweep {
        fault,
        nodes,
        deadline_ms,
        threads,
    } = plan;
    let next = AtomicU64::new(seeds.start);
    let done = AtomicU64::new(0);
    let found = Mutex::new(Outcome::default());
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| {
                loop {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= seeds.end {
                        break;
                    }
                    let (verdict, converged_ms) = run_one(fault, nodes, seed, deadline_ms);
                    let mut outcome = found.lock().unwrap_or_else(|e| e.into_inner());
                    outcome.runs += 1;
                    if let Err(reason) = verdict {
                        outcome.failures.push(Failure { seed, reason });
                    }
                    if let Some(ms) = converged_ms
                        && outcome.slowest.is_none_or(|(slowest, _)| ms > slowest)
                    {
                        outcome.slowest = Some((ms, seed));
                    }
                    drop(outcome);
                    progress(done.fetch_add(1, Ordering::Relaxed) + 1);
                }
            });
        }
    });
    let mut outcome = found.into_inner().unwrap_or_else(|e| e.into_inner());
    outcome.failures.sort_by_key(|failure| failure.seed);
    outcome
}

/// One seed: `Ok` if every live node ended on one root (and, for churn, the views
/// stayed connected and no live node was buried), with the convergence time.
fn run_one(
    fault: Fault,
    nodes: usize,
    seed: u64,
    deadline_ms: u64,
) -> (Result<(), String>, Option<u64>) {
    if let Some(config) = fault.run_config(nodes, seed, deadline_ms) {
        let report = run(&config, &mut |_| {});
        let converged_ms = report.convergence_us.map(|us| us / 1_000);
        if report.converged {
            return (Ok(()), converged_ms);
        }
        let reason = format!(
            "live nodes disagree on the root at the {} ms deadline ({} of {} hold every write)",
            config.deadline_ms, report.nodes_with_update, report.live_nodes
        );
        return (Err(reason), converged_ms);
    }
    let (topology, view) = crate::churn::small_mesh();
    let per_minute = (nodes / 20).max(1);
    let report = crate::churn::churn(nodes, seed, &topology, view, 1, per_minute, 30_000);
    let verdict = if report.converged_ms.is_none() {
        Err("live nodes did not agree on every acknowledged write within 30 s".into())
    } else if report.connected_checks != report.connectivity_checks {
        Err(format!(
            "the view graph came apart in {} of {} checks",
            report.connectivity_checks - report.connected_checks,
            report.connectivity_checks
        ))
    } else if report.live_believed_dead > 0 {
        Err(format!(
            "{} live nodes were believed dead",
            report.live_believed_dead
        ))
    } else {
        Ok(())
    };
    (verdict, report.converged_ms)
}

/// The command that replays one seed of `fault` at `nodes` nodes.
pub fn replay_command(fault: Fault, nodes: usize, seed: u64) -> String {
    format!(
        "cargo run --release -p knhk-bench --bin knhk-sweep -- --scenario {} --nodes {nodes} --first-seed {seed} --seeds 1",
        fault.name()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(fault: Fault, deadline_ms: u64) -> Sweep {
        Sweep {
            fault,
            nodes: 12,
            deadline_ms,
            threads: 2,
        }
    }

    #[test]
    fn a_few_seeds_of_each_fault_hold_and_count() {
        for fault in Fault::ALL {
            let outcome = sweep(plan(fault, 60_000), 0..2, &|_| {});
            assert_eq!(outcome.runs, 2, "{fault:?}");
            assert!(outcome.failures.is_empty(), "{fault:?}: {outcome:?}");
            assert!(outcome.slowest.is_some(), "{fault:?}");
        }
    }

    #[test]
    fn every_failing_seed_is_reported_in_order_with_its_reason() {
        // A 1 ms deadline: no seed can converge.
        let done = AtomicU64::new(0);
        let outcome = sweep(plan(Fault::Loss, 1), 3..7, &|n| {
            done.fetch_max(n, Ordering::Relaxed);
        });
        let seeds: Vec<u64> = outcome.failures.iter().map(|f| f.seed).collect();
        assert_eq!(seeds, [3, 4, 5, 6]);
        assert!(outcome.failures[0].reason.contains("1 ms deadline"));
        assert_eq!(done.load(Ordering::Relaxed), 4);
        assert!(replay_command(Fault::Loss, 12, 5).contains("--first-seed 5 --seeds 1"));
    }
}
