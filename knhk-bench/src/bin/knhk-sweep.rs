//! `knhk-sweep`: one fault scenario of the simulator over many seeds; fails (exit 1) on
//! any seed whose live nodes end on different roots, and prints the command that
//! replays it.
//!
//! ```text
//! cargo run --release -p knhk-bench --bin knhk-sweep -- --scenario partition --seeds 1000
//! cargo run --release -p knhk-bench --bin knhk-sweep -- --scenario all --seeds 50
//! ```
//!
//! Bad arguments get a one-line error and exit code 2.

use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use knhk_bench::sweep::{Fault, Sweep, replay_command, sweep};

/// A fault scenario (or all of them) over many seeds of the deterministic simulator.
#[derive(Debug, Parser)]
#[command(name = "knhk-sweep", version)]
struct Args {
    /// The fault scenario, or `all`.
    #[arg(long, default_value = "all")]
    scenario: String,
    /// Seeds to run per scenario.
    #[arg(long, default_value_t = 1_000, allow_negative_numbers = true, value_parser = clap::value_parser!(u64).range(1..))]
    seeds: u64,
    /// The first seed (seeds run from it upward).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    first_seed: u64,
    /// Honest nodes per run.
    #[arg(long, default_value_t = 30, allow_negative_numbers = true, value_parser = clap::value_parser!(u64).range(4..=100_000))]
    nodes: u64,
    /// Virtual ms a gossip run may take to converge after its write.
    #[arg(long, default_value_t = 60_000, allow_negative_numbers = true, value_parser = clap::value_parser!(u64).range(1..))]
    deadline_ms: u64,
    /// Threads (default: the machine's cores).
    #[arg(long, allow_negative_numbers = true, value_parser = clap::value_parser!(u64).range(1..=1_024))]
    threads: Option<u64>,
}

fn faults(name: &str) -> Result<Vec<Fault>, String> {
    if name == "all" {
        return Ok(Fault::ALL.to_vec());
    }
    Fault::ALL
        .into_iter()
        .find(|fault| fault.name() == name)
        .map(|fault| vec![fault])
        .ok_or_else(|| {
            let names: Vec<&str> = Fault::ALL.iter().map(|fault| fault.name()).collect();
            format!(
                "--scenario must be all or one of {}, got {name:?}",
                names.join(", ")
            )
        })
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(error) if error.use_stderr() => {
            let text = error.to_string();
            eprintln!(
                "knhk-sweep: {}",
                text.lines()
                    .next()
                    .unwrap_or_default()
                    .trim_start_matches("error: ")
            );
            return ExitCode::from(2);
        }
        Err(error) => {
            print!("{error}");
            return ExitCode::SUCCESS;
        }
    };
    let faults = match faults(&args.scenario) {
        Ok(faults) => faults,
        Err(message) => {
            eprintln!("knhk-sweep: {message}");
            return ExitCode::from(2);
        }
    };
    let Some(end) = args.first_seed.checked_add(args.seeds) else {
        eprintln!("knhk-sweep: --first-seed + --seeds overflows");
        return ExitCode::from(2);
    };
    let threads = args.threads.map_or_else(
        || std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        |threads| usize::try_from(threads).unwrap_or(1),
    );
    let nodes = usize::try_from(args.nodes).unwrap_or(30);
    let mut failed = false;
    for fault in faults {
        let bar = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            ProgressBar::new(args.seeds)
        } else {
            ProgressBar::hidden()
        };
        bar.set_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} seeds [{elapsed_precise}]")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_message(fault.name());
        let started = Instant::now();
        let plan = Sweep {
            fault,
            nodes,
            deadline_ms: args.deadline_ms,
            threads,
        };
        let outcome = sweep(plan, args.first_seed..end, &|done| bar.set_position(done));
        bar.finish_and_clear();
        let slowest = outcome.slowest.map_or(String::from("-"), |(ms, seed)| {
            format!("{ms} virtual ms (seed {seed})")
        });
        // Churn times its convergence from the moment churn stops.
        let measure = if fault == Fault::Churn {
            "slowest settling after the churn"
        } else {
            "slowest convergence"
        };
        println!(
            "{}: {} seeds ({}..{}) at {nodes} nodes: {} failed; {measure} {slowest}; wall {:.1} s",
            fault.name(),
            outcome.runs,
            args.first_seed,
            end,
            outcome.failures.len(),
            started.elapsed().as_secs_f64()
        );
        for failure in outcome.failures.iter().take(20) {
            failed = true;
            eprintln!("  seed {}: {}", failure.seed, failure.reason);
            eprintln!("    replay: {}", replay_command(fault, nodes, failure.seed));
        }
        failed |= !outcome.failures.is_empty();
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
