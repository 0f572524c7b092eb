//! `knhk-swim`: failure-detection figures on the deterministic simulator.
//!
//! ```text
//! cargo run --release -p knhk-bench --bin knhk-swim -- crash --nodes 1000
//! cargo run --release -p knhk-bench --bin knhk-swim -- partition --nodes 1000
//! cargo run --release -p knhk-bench --bin knhk-swim -- join --nodes 10000 --keys 1000
//! cargo run --release -p knhk-bench --bin knhk-swim -- peer-choice --nodes 1000 --shares 1,1,1
//! cargo run --release -p knhk-bench --bin knhk-swim -- stability --nodes 1000 \
//!     --minutes 10 --loss 0.05 --slow 10 --slow-extra-ms 60 [--no-lifeguard]
//! cargo run --release -p knhk-bench --bin knhk-swim -- churn --nodes 1000 --minutes 10 --percent 1
//! ```
//!
//! Prints one JSON report. Bad arguments get a one-line error and exit code 2.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use knhk_bench::churn::churn;
use knhk_bench::failure::{crash_detection, join, partition, stability};
use knhk_bench::peer_choice::peer_choice;
use knhk_topology::{TopologyConfig, ViewConfig};

/// Failure-detection runs of the production SWIM layer on virtual time.
#[derive(Debug, Parser)]
#[command(name = "knhk-swim", version)]
struct Args {
    /// Probe period in ms.
    #[arg(long, default_value_t = 1_000, global = true)]
    probe_interval_ms: u64,
    /// Direct-ping timeout in ms.
    #[arg(long, default_value_t = 500, global = true)]
    probe_timeout_ms: u64,
    /// Plain SWIM: no local health, nacks or dynamic suspicion.
    #[arg(long, global = true)]
    no_lifeguard: bool,
    /// Seed of everything.
    #[arg(long, default_value_t = 1, global = true)]
    seed: u64,
    /// Members the partition detector pings at once (0: off, the quorum then counts
    /// member states only).
    #[arg(long, default_value_t = 64, global = true)]
    partition_check: usize,
    #[command(subcommand)]
    run: Run,
}

#[derive(Debug, Subcommand)]
enum Run {
    /// Crash one node after a warm-up; time to first suspicion and to "dead" at every
    /// live node.
    Crash {
        /// Nodes.
        #[arg(long, default_value_t = 1_000)]
        nodes: usize,
        /// Virtual ms before the crash.
        #[arg(long, default_value_t = 5_000)]
        warmup_ms: u64,
        /// Give up after this many virtual ms.
        #[arg(long, default_value_t = 120_000)]
        deadline_ms: u64,
    },
    /// Three regions; cut one (a third of the nodes) off for a while: time until it is
    /// read-only everywhere, and after the heal until quorums and roots are back.
    Partition {
        /// Nodes.
        #[arg(long, default_value_t = 1_000)]
        nodes: usize,
        /// Virtual ms before the cut.
        #[arg(long, default_value_t = 5_000)]
        warmup_ms: u64,
        /// How long the cut lasts, virtual ms.
        #[arg(long, default_value_t = 10_000)]
        cut_ms: u64,
        /// Give up this many virtual ms after the heal.
        #[arg(long, default_value_t = 60_000)]
        deadline_ms: u64,
    },
    /// Three regions: writes until every node holds them, with near/mid/far peer choice
    /// (`--shares 50,30,20`) or uniform (`--shares 1,1,1`); time, bytes, cross-region
    /// share.
    PeerChoice {
        /// Nodes.
        #[arg(long, default_value_t = 1_000)]
        nodes: usize,
        /// Shares of choices to the near, mid and far third of each view.
        #[arg(long, default_value = "50,30,20")]
        shares: String,
        /// Virtual ms before the first write (the views learn their round trips).
        #[arg(long, default_value_t = 20_000)]
        warmup_ms: u64,
        /// Writes, one after another.
        #[arg(long, default_value_t = 10)]
        writes: usize,
        /// Give each write this many virtual ms.
        #[arg(long, default_value_t = 30_000)]
        deadline_ms: u64,
    },
    /// A settled mesh with some state; a new node joins through one seed: when its
    /// view is full, when a view holds it, when it holds the whole state.
    Join {
        /// Nodes of the settled mesh.
        #[arg(long, default_value_t = 1_000)]
        nodes: usize,
        /// Keys in the state before the join.
        #[arg(long, default_value_t = 1_000)]
        keys: usize,
        /// Give up after this many virtual ms.
        #[arg(long, default_value_t = 60_000)]
        deadline_ms: u64,
    },
    /// No failure at all for a while: count false suspicions and deaths.
    Stability {
        /// Nodes.
        #[arg(long, default_value_t = 1_000)]
        nodes: usize,
        /// Virtual minutes.
        #[arg(long, default_value_t = 10)]
        minutes: u64,
        /// Frame loss in [0, 1).
        #[arg(long, default_value_t = 0.05)]
        loss: f64,
        /// Nodes slowed.
        #[arg(long, default_value_t = 10)]
        slow: usize,
        /// A slowed node's frames wait up to this many extra ms.
        #[arg(long, default_value_t = 60.0)]
        slow_extra_ms: f64,
        /// Members in each node's view (probed) [default: the library's].
        #[arg(long)]
        view: Option<usize>,
        /// Members in each node's reserve [default: the library's].
        #[arg(long)]
        reserve: Option<usize>,
    },
    /// Every minute a share of the nodes crash and as many new ones join, while
    /// members write: views stay connected? every write everywhere after?
    Churn {
        /// Nodes (kept constant: each crash is matched by a join).
        #[arg(long, default_value_t = 1_000)]
        nodes: usize,
        /// Virtual minutes of churn.
        #[arg(long, default_value_t = 10)]
        minutes: u64,
        /// Percent of the nodes crashed (and joined) per minute, in (0, 50].
        #[arg(long, default_value_t = 1.0)]
        percent: f64,
        /// After the churn, wait this many virtual ms at most for convergence.
        #[arg(long, default_value_t = 60_000)]
        settle_ms: u64,
    },
}

/// "a,b,c" as three shares, not all zero.
fn parse_shares(text: &str) -> Option<[u32; 3]> {
    let parts: Vec<u32> = text
        .split(',')
        .map(|part| part.trim().parse().ok())
        .collect::<Option<_>>()?;
    let shares: [u32; 3] = parts.try_into().ok()?;
    (shares.iter().sum::<u32>() > 0).then_some(shares)
}

fn main() -> ExitCode {
    let args = Args::parse();
    let topology = TopologyConfig {
        probe_interval: Duration::from_millis(args.probe_interval_ms.max(1)),
        probe_timeout: Duration::from_millis(args.probe_timeout_ms.max(1)),
        lifeguard: !args.no_lifeguard,
        partition_check: args.partition_check,
        ..TopologyConfig::default()
    };
    let report = match args.run {
        Run::Crash {
            nodes,
            warmup_ms,
            deadline_ms,
        } => serde_json::to_string_pretty(&crash_detection(
            nodes.max(3),
            args.seed,
            &topology,
            warmup_ms,
            deadline_ms,
        )),
        Run::Partition {
            nodes,
            warmup_ms,
            cut_ms,
            deadline_ms,
        } => serde_json::to_string_pretty(&partition(
            nodes.max(3),
            args.seed,
            &topology,
            warmup_ms,
            cut_ms,
            deadline_ms,
        )),
        Run::Join {
            nodes,
            keys,
            deadline_ms,
        } => serde_json::to_string_pretty(&join(
            nodes.max(3),
            args.seed,
            &topology,
            keys,
            deadline_ms,
        )),
        Run::PeerChoice {
            nodes,
            shares,
            warmup_ms,
            writes,
            deadline_ms,
        } => {
            let Some(shares) = parse_shares(&shares) else {
                eprintln!(
                    "knhk-swim: --shares takes three whole numbers such as 50,30,20, not {shares:?}"
                );
                return ExitCode::from(2);
            };
            serde_json::to_string_pretty(&peer_choice(
                nodes.max(3),
                args.seed,
                &topology,
                shares,
                warmup_ms,
                writes,
                deadline_ms,
            ))
        }
        Run::Stability {
            nodes,
            minutes,
            loss,
            slow,
            slow_extra_ms,
            view,
            reserve,
        } => {
            if !(0.0..1.0).contains(&loss) {
                eprintln!("knhk-swim: --loss must be in [0, 1), not {loss}");
                return ExitCode::from(2);
            }
            let defaults = ViewConfig::default();
            let view = ViewConfig {
                active: view.unwrap_or(defaults.active).max(1),
                reserve: reserve.unwrap_or(defaults.reserve),
                ..defaults
            };
            serde_json::to_string_pretty(&stability(
                nodes.max(3),
                args.seed,
                &topology,
                view,
                minutes,
                loss,
                slow,
                slow_extra_ms.max(0.0),
            ))
        }
        Run::Churn {
            nodes,
            minutes,
            percent,
            settle_ms,
        } => {
            if !(percent > 0.0 && percent <= 50.0) {
                eprintln!("knhk-swim: --percent must be in (0, 50], not {percent}");
                return ExitCode::from(2);
            }
            let nodes = nodes.max(3);
            let per_minute = ((nodes as f64 * percent / 100.0).round() as usize).max(1);
            serde_json::to_string_pretty(&churn(
                nodes,
                args.seed,
                &topology,
                ViewConfig::default(),
                minutes,
                per_minute,
                settle_ms,
            ))
        }
    };
    match report {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("knhk-swim: {error}");
            ExitCode::FAILURE
        }
    }
}
