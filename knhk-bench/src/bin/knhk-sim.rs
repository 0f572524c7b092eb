//! `knhk-sim`: run one scenario on the deterministic simulator and report it.
//!
//! ```text
//! cargo run --release -p knhk-bench --bin knhk-sim -- --nodes 1000 --fanout 3 \
//!     --interval-ms 100 --seed 1 --scenario broadcast --json run.json --plot run.svg
//! ```
//!
//! Bad arguments get a one-line error and exit code 2.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use knhk_bench::crypto::CryptoMode;
use knhk_bench::network::LatencyModel;
use knhk_bench::scenario::{Report, RunConfig, Scenario, run};
use plotters::prelude::*;

/// Runs one scenario on production node endpoints (gossip layer, gate, signatures) over a
/// simulated network.
#[derive(Debug, Parser)]
#[command(name = "knhk-sim", version)]
struct Args {
    /// Honest nodes.
    #[arg(long, default_value_t = 1_000)]
    nodes: usize,
    /// Peers contacted per round and per forwarded piece of news.
    #[arg(long, default_value_t = 3)]
    fanout: usize,
    /// Gossip interval in milliseconds.
    #[arg(long, default_value_t = 100)]
    interval_ms: u64,
    /// Seed of everything; the same seed gives the same result.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Probability that a frame is lost, in [0, 1).
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// Which run.
    #[arg(long, value_enum, default_value_t = Scenario::Broadcast)]
    scenario: Scenario,
    /// Per-link latency: constant:MS, uniform:MIN:MAX or pareto:SCALE:SHAPE.
    #[arg(long, default_value = "constant:1")]
    latency: String,
    /// Spread nodes over us-east / eu-west / ap-southeast with WAN round trips.
    #[arg(long)]
    regions: bool,
    /// Maximum clock skew per node, in milliseconds.
    #[arg(long, default_value_t = 0)]
    clock_skew_ms: u64,
    /// Give up after this much virtual time (ms).
    #[arg(long, default_value_t = 120_000)]
    deadline_ms: u64,
    /// Virtual time (ms) to measure idle traffic after convergence.
    #[arg(long, default_value_t = 5_000)]
    idle_ms: u64,
    /// Write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write an SVG plot of coverage over virtual time here.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Signatures: real ed25519, or the keyed-hash stand-in for very large runs.
    #[arg(long, value_enum, default_value_t = CryptoMode::Ed25519)]
    crypto: CryptoMode,
    /// Do not forward news at once (neither merged news nor the write itself): textbook
    /// round-based push-pull.
    #[arg(long)]
    no_forward: bool,
    /// Synchronous rounds: every node's rounds fire at the same instants, so the report
    /// counts true rounds (use with --no-forward and a small constant latency to set
    /// figures beside published round tables).
    #[arg(long)]
    synchronous: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

fn config(args: &Args) -> Result<RunConfig, String> {
    if args.nodes == 0 {
        return Err("--nodes must be at least 1".into());
    }
    if args.fanout == 0 || args.fanout >= args.nodes {
        return Err(format!(
            "--fanout must be between 1 and nodes - 1 ({}), got {}",
            args.nodes - 1,
            args.fanout
        ));
    }
    if !(0.0..1.0).contains(&args.loss) {
        return Err(format!("--loss must be in [0, 1), got {}", args.loss));
    }
    if args.interval_ms == 0 {
        return Err("--interval-ms must be at least 1".into());
    }
    Ok(RunConfig {
        nodes: args.nodes,
        fanout: args.fanout,
        interval_ms: args.interval_ms,
        seed: args.seed,
        loss: args.loss,
        scenario: args.scenario,
        latency: LatencyModel::parse(&args.latency)?,
        regions: args.regions,
        deadline_ms: args.deadline_ms,
        idle_ms: args.idle_ms,
        max_clock_skew_ms: args.clock_skew_ms,
        forward_news: !args.no_forward,
        synchronous: args.synchronous,
        crypto: args.crypto,
    })
}

fn plot(report: &Report, path: &PathBuf) -> Result<(), String> {
    let root = SVGBackend::new(path, (900, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let end = report.coverage.last().map_or(1, |(ms, _)| (*ms).max(1));
    let title = format!(
        "{} — {} nodes, fanout {}, seed {}",
        report.scenario, report.nodes, report.fanout, report.seed
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(0u64..end, 0f64..1.0)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("virtual ms since the write")
        .y_desc("fraction of live nodes with the update")
        .draw()
        .map_err(|e| e.to_string())?;
    chart
        .draw_series(LineSeries::new(report.coverage.iter().copied(), &BLUE))
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config = match config(&args) {
        Ok(config) => config,
        Err(message) => {
            eprintln!("knhk-sim: {message}");
            return ExitCode::from(2);
        }
    };
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::new(config.deadline_ms);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} virtual {pos} ms of at most {len} ms [{elapsed_precise}]",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    };
    let report = run(&config, &mut |virtual_ms| bar.set_position(virtual_ms));
    bar.finish_and_clear();

    println!(
        "{} nodes, {}: converged={} in {} virtual µs ({} intervals{}), {:.1} messages/node, {:.0} bytes/node, idle {:.0} B/node/s, wall {} ms",
        report.nodes,
        report.scenario,
        report.converged,
        report
            .convergence_us
            .map_or("-".into(), |us| us.to_string()),
        report
            .interval_rounds
            .map_or("-".into(), |r| format!("{r:.2}")),
        report
            .rounds
            .map_or(String::new(), |r| format!(", {r} synchronous rounds")),
        report.messages_per_node,
        report.bytes_per_node,
        report.idle_bytes_per_node_per_s,
        report.wall_ms
    );
    if let Some(path) = &args.json {
        let written = serde_json::to_string_pretty(&report)
            .map_err(|e| e.to_string())
            .and_then(|json| std::fs::write(path, json + "\n").map_err(|e| e.to_string()));
        if let Err(error) = written {
            eprintln!("knhk-sim: writing {}: {error}", path.display());
            return ExitCode::FAILURE;
        }
    }
    if let Some(path) = &args.plot
        && let Err(error) = plot(&report, path)
    {
        eprintln!("knhk-sim: plotting {}: {error}", path.display());
        return ExitCode::FAILURE;
    }
    if report.converged {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
