//! `knhk-sim`: run one scenario on the deterministic simulator and report it.
//!
//! ```text
//! cargo run --release -p knhk-bench --bin knhk-sim -- --nodes 1000 --fanout 3 \
//!     --interval-ms 100 --seed 1 --scenario broadcast --json run.json --plot run.svg
//! ```
//!
//! Bad arguments get a one-line error and exit code 2 before anything runs: values are
//! checked against their ranges, and the `--json` and `--plot` files are opened before
//! the run (they are written after it). A run that does not converge within its
//! deadline says why on stderr and exits with code 1.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use knhk_bench::crypto::CryptoMode;
use knhk_bench::network::{LatencyModel, RegionMatrix};
use knhk_bench::scenario::{Progress, Report, RunConfig, Scenario, run_with_progress};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// The longest virtual duration an argument takes, in ms (about 11.6 virtual days): far
/// beyond any useful run, and far from overflowing the simulator's µs clock.
const MAX_VIRTUAL_MS: u64 = 1_000_000_000;

/// Runs one scenario on production node endpoints (gossip layer, gate, signatures) over a
/// simulated network.
#[derive(Debug, Parser)]
#[command(name = "knhk-sim", version)]
struct Args {
    /// Honest nodes (at least 2).
    #[arg(long, default_value_t = 1_000, allow_negative_numbers = true,
          value_parser = |text: &str| count(text, 2))]
    nodes: usize,
    /// Peers contacted per round and per forwarded piece of news (1 to nodes - 1).
    #[arg(long, default_value_t = 3, allow_negative_numbers = true,
          value_parser = |text: &str| count(text, 1))]
    fanout: usize,
    /// Gossip interval in milliseconds.
    #[arg(long, default_value_t = 100, allow_negative_numbers = true,
          value_parser = |text: &str| whole(text, 1, MAX_VIRTUAL_MS))]
    interval_ms: u64,
    /// Seed of everything; the same seed gives the same result.
    #[arg(long, default_value_t = 1, allow_negative_numbers = true,
          value_parser = |text: &str| whole(text, 0, u64::MAX))]
    seed: u64,
    /// Probability that a frame is lost, in [0, 1).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true,
          value_parser = probability)]
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
    #[arg(long, default_value_t = 0, allow_negative_numbers = true,
          value_parser = |text: &str| whole(text, 0, MAX_VIRTUAL_MS))]
    clock_skew_ms: u64,
    /// Give up this long (virtual ms) after the write.
    #[arg(long, default_value_t = 120_000, allow_negative_numbers = true,
          value_parser = |text: &str| whole(text, 1, MAX_VIRTUAL_MS))]
    deadline_ms: u64,
    /// Virtual time (ms) to measure idle traffic after convergence; 0 skips it.
    #[arg(long, default_value_t = 5_000, allow_negative_numbers = true,
          value_parser = |text: &str| whole(text, 0, MAX_VIRTUAL_MS))]
    idle_ms: u64,
    /// Write the report as JSON here (opened before the run).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write an SVG plot of coverage over virtual time here (opened before the run).
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
    /// No progress bar (there is none either when stderr is not a terminal).
    #[arg(long)]
    quiet: bool,
}

/// Reads a whole number in `min..=max` (a clap value parser: clap names the argument,
/// the message names the range).
fn whole(text: &str, min: u64, max: u64) -> Result<u64, String> {
    text.parse::<u64>()
        .ok()
        .filter(|value| (min..=max).contains(value))
        .ok_or_else(|| {
            if max == u64::MAX && min > 0 {
                format!("expected a whole number of at least {min}")
            } else {
                format!("expected a whole number from {min} to {max}")
            }
        })
}

/// Reads a count of at least `min` (a clap value parser).
fn count(text: &str, min: usize) -> Result<usize, String> {
    text.parse::<usize>()
        .ok()
        .filter(|value| *value >= min)
        .ok_or_else(|| format!("expected a whole number of at least {min}"))
}

/// Reads a probability in [0, 1) (a clap value parser).
fn probability(text: &str) -> Result<f64, String> {
    text.parse::<f64>()
        .ok()
        .filter(|p| (0.0..1.0).contains(p))
        .ok_or_else(|| "expected a probability in [0, 1)".to_owned())
}

/// Flattens one of clap's errors (the error, hints, a usage line, a pointer to
/// `--help`, over several lines) into one line without the `error: ` prefix.
fn one_line(rendered: &str) -> String {
    let mut line = String::new();
    let parts = rendered.lines().map(str::trim).filter(|part| {
        !part.is_empty() && !part.starts_with("Usage:") && !part.starts_with("For more information")
    });
    for part in parts {
        let part = part.strip_prefix("error: ").unwrap_or(part);
        if !line.is_empty() {
            line.push_str(if part.starts_with('[') { " " } else { "; " });
        }
        line.push_str(part);
    }
    line
}

/// Checks what the value parsers cannot (arguments against each other) and builds the
/// run's configuration.
fn config(args: &Args) -> Result<RunConfig, String> {
    if args.fanout >= args.nodes {
        return Err(format!(
            "--fanout must be between 1 and nodes - 1 ({}), got {}",
            args.nodes - 1,
            args.fanout
        ));
    }
    if args.json.is_some() && args.json == args.plot {
        return Err("--json and --plot name the same file".into());
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

/// A file named by `--json` or `--plot`: opened before the run, so that a bad path fails
/// at once, and written after it.
#[derive(Debug)]
struct Output {
    flag: &'static str,
    path: PathBuf,
    file: File,
    /// The file did not exist before: [`Output::discard`] removes it.
    created: bool,
}

impl Output {
    /// Opens the file at `path`, creating it if need be; an existing file keeps its
    /// contents until [`Output::write`].
    fn open(flag: &'static str, path: &Path) -> Result<Self, String> {
        let fresh = OpenOptions::new().write(true).create_new(true).open(path);
        let opened = match fresh {
            Ok(file) => Ok((file, true)),
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => OpenOptions::new()
                .write(true)
                .open(path)
                .map(|file| (file, false)),
            Err(error) => Err(error),
        };
        opened
            .map(|(file, created)| Self {
                flag,
                path: path.to_owned(),
                file,
                created,
            })
            .map_err(|error| format!("cannot write {flag} {}: {error}", path.display()))
    }

    /// Gives the file up before the run (another argument was bad): removes it if
    /// [`Output::open`] created it.
    fn discard(self) {
        if self.created {
            // Best effort: at worst an empty file stays behind.
            let _ = std::fs::remove_file(&self.path);
        }
    }

    /// Replaces the file's contents with `contents`.
    fn write(mut self, contents: &[u8]) -> Result<(), String> {
        // Not a regular file (a pipe, /dev/stdout): nothing to truncate.
        let regular = self.file.metadata().is_ok_and(|meta| meta.is_file());
        let written = if regular {
            self.file.set_len(0)
        } else {
            Ok(())
        }
        .and_then(|()| self.file.write_all(contents))
        .and_then(|()| self.file.flush());
        written.map_err(|error| format!("writing {} {}: {error}", self.flag, self.path.display()))
    }
}

/// Opens the files of `--json` and `--plot` (those named); if one cannot be opened,
/// creates neither.
fn open_outputs(args: &Args) -> Result<(Option<Output>, Option<Output>), String> {
    let open = |flag, path: &Option<PathBuf>| {
        path.as_deref()
            .map(|path| Output::open(flag, path))
            .transpose()
    };
    let json = open("--json", &args.json)?;
    match open("--plot", &args.plot) {
        Ok(plot) => Ok((json, plot)),
        Err(message) => {
            if let Some(json) = json {
                json.discard();
            }
            Err(message)
        }
    }
}

/// The progress bar's looks before the run's first report, while the nodes start.
const STARTING: &str = "{spinner} {msg} [{elapsed_precise}]";
/// While the run waits for convergence.
const CONVERGING: &str =
    "{spinner} converging: virtual {pos} ms since the write, deadline {len} ms [{elapsed_precise}]";
/// While the run measures idle traffic.
const IDLE: &str =
    "{spinner} measuring idle traffic: [{bar:30}] virtual {pos}/{len} ms [{elapsed_precise}]";

/// The progress bar style of `template` (a constant, checked by a test).
fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
        .progress_chars("=> ")
}

/// A live progress bar on stderr, redrawn ten times a second; hidden with `--quiet` or
/// when stderr is not a terminal.
fn progress_bar(quiet: bool, nodes: usize) -> ProgressBar {
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::no_length()
    };
    if !bar.is_hidden() {
        bar.set_style(style(STARTING));
        bar.set_message(format!("starting {nodes} nodes"));
        // The run reports often, but the bar would only redraw when it does: the
        // ticker keeps the spinner and the clock moving while the nodes start and
        // between reports of a large run.
        bar.enable_steady_tick(Duration::from_millis(100));
    }
    bar
}

/// Shows the run's progress reports on `bar`.
fn show_progress<'a>(bar: &'a ProgressBar, config: &RunConfig) -> impl FnMut(Progress) + 'a {
    let (deadline_ms, idle_ms) = (config.deadline_ms, config.idle_ms);
    let mut shown = None;
    move |progress| {
        let phase = std::mem::discriminant(&progress);
        let virtual_ms = match progress {
            Progress::Converging { virtual_ms } | Progress::Idle { virtual_ms } => virtual_ms,
        };
        if shown != Some(phase) {
            shown = Some(phase);
            let (template, length) = match progress {
                Progress::Converging { .. } => (CONVERGING, deadline_ms),
                Progress::Idle { .. } => (IDLE, idle_ms),
            };
            bar.set_style(style(template));
            bar.set_length(length);
            bar.reset_eta();
        }
        bar.set_position(virtual_ms);
    }
}

/// `part` of `whole` in percent, rounded down to a tenth (so that 1999 of 2000 is not
/// shown as 100%).
fn percent_down(part: usize, whole: usize) -> f64 {
    match whole {
        0 => 0.0,
        _ => (part.saturating_mul(1_000) / whole) as f64 / 10.0,
    }
}

/// Why a run that did not converge stopped, and what to do about it (one line).
fn not_converged(report: &Report) -> String {
    let deadline = report.deadline_ms;
    let (live, holding) = (report.live_nodes, report.nodes_with_update);
    if report.not_before_ms > deadline {
        return format!(
            "did not converge: the {deadline} virtual ms deadline passed before the {} \
             scenario may declare convergence ({} virtual ms after the write); raise \
             --deadline-ms above {}",
            report.scenario, report.not_before_ms, report.not_before_ms
        );
    }
    let state = if holding < live {
        format!(
            "{holding} of {live} live nodes ({:.1}%) had the update",
            percent_down(holding, live)
        )
    } else {
        format!("all {live} live nodes had the update but their states still differed")
    };
    format!(
        "did not converge: the {deadline} virtual ms deadline passed when {state}; raise --deadline-ms"
    )
}

/// The stdout summary line.
fn summary(report: &Report) -> String {
    let outcome = if report.converged {
        format!(
            "converged=true in {} virtual µs ({} intervals{})",
            report
                .convergence_us
                .map_or("-".into(), |us| us.to_string()),
            report
                .interval_rounds
                .map_or("-".into(), |r| format!("{r:.2}")),
            report
                .rounds
                .map_or(String::new(), |r| format!(", {r} synchronous rounds"))
        )
    } else {
        format!(
            "converged=false by the {} virtual ms deadline ({} of {} live nodes had the update)",
            report.deadline_ms, report.nodes_with_update, report.live_nodes
        )
    };
    let idle = if report.idle_ms == 0 {
        "idle not measured".to_owned()
    } else {
        format!("idle {:.0} B/node/s", report.idle_bytes_per_node_per_s)
    };
    format!(
        "{} nodes, {}, crypto {}: {outcome}, {:.1} messages/node, {:.0} bytes/node, {idle}, wall {} ms",
        report.nodes,
        report.scenario,
        report.crypto,
        report.messages_per_node,
        report.bytes_per_node,
        report.wall_ms
    )
}

/// The plot's title: the run and its scale.
fn title(report: &Report) -> String {
    format!(
        "{} — {} nodes, fanout {}, interval {} ms, seed {}",
        report.scenario, report.nodes, report.fanout, report.interval_ms, report.seed
    )
}

/// The plot's second line: the network and the crypto.
fn subtitle(report: &Report) -> String {
    let regions = if report.regions {
        let names = RegionMatrix::three_regions().names;
        format!("{} regions ({})", names.len(), names.join(", "))
    } else {
        "one region".to_owned()
    };
    let mut line = format!(
        "latency {}, loss {}, {regions}, crypto {}",
        report.latency, report.loss, report.crypto
    );
    if report.max_clock_skew_ms > 0 {
        line += &format!(", clock skew ±{} ms", report.max_clock_skew_ms);
    }
    if !report.forward_news {
        line += ", no forwarding";
    }
    if report.synchronous {
        line += ", synchronous rounds";
    }
    line
}

/// The SVG plot of coverage over virtual time, with the scenario's faults marked.
fn plot(report: &Report) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (900, 560)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let root = root
            .titled(&title(report), ("sans-serif", 22))
            .map_err(|e| e.to_string())?;
        let root = root
            .titled(&subtitle(report), ("sans-serif", 15))
            .map_err(|e| e.to_string())?;
        let end = report
            .coverage
            .iter()
            .map(|(ms, _)| *ms)
            .chain(report.events.iter().map(|event| event.at_ms))
            .max()
            .unwrap_or(0)
            .max(1);
        let mut chart = ChartBuilder::on(&root)
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
        let marker = RED.mix(0.8).stroke_width(2);
        for (k, event) in report.events.iter().enumerate() {
            chart
                .draw_series(DashedLineSeries::new(
                    [(event.at_ms, 0.0), (event.at_ms, 1.0)],
                    8,
                    5,
                    marker,
                ))
                .map_err(|e| e.to_string())?;
            // Labels in the right half go to the left of their line, so that they stay
            // on the chart; each event's label sits a line below the previous one's.
            let (anchor, dx) = if event.at_ms.saturating_mul(2) > end {
                (HPos::Right, -6)
            } else {
                (HPos::Left, 6)
            };
            let font = ("sans-serif", 14)
                .into_font()
                .color(&RED)
                .pos(Pos::new(anchor, VPos::Top));
            let label = format!("{} ({} ms)", event.what, event.at_ms);
            let dy = 6 + 18 * i32::try_from(k).unwrap_or(0);
            chart
                .draw_series(std::iter::once(
                    EmptyElement::at((event.at_ms, 1.0)) + Text::new(label, (dx, dy), font),
                ))
                .map_err(|e| e.to_string())?;
        }
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

/// A bad argument: one line on stderr, exit code 2.
fn usage_error(message: &str) -> ExitCode {
    eprintln!("knhk-sim: {message}");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        // --help and --version.
        Err(error) if !error.use_stderr() => error.exit(),
        Err(error) => return usage_error(&one_line(&error.render().to_string())),
    };
    let config = match config(&args) {
        Ok(config) => config,
        Err(message) => return usage_error(&message),
    };
    let (json, svg) = match open_outputs(&args) {
        Ok(outputs) => outputs,
        Err(message) => return usage_error(&message),
    };

    let bar = progress_bar(args.quiet, config.nodes);
    let report = run_with_progress(&config, &mut show_progress(&bar, &config));
    bar.finish_and_clear();

    println!("{}", summary(&report));
    if !report.converged {
        eprintln!("knhk-sim: {}", not_converged(&report));
    }
    let mut failed = false;
    if let Some(output) = json {
        let written = serde_json::to_string_pretty(&report)
            .map_err(|e| format!("writing --json: {e}"))
            .and_then(|json| output.write((json + "\n").as_bytes()));
        if let Err(error) = written {
            eprintln!("knhk-sim: {error}");
            failed = true;
        }
    }
    if let Some(output) = svg {
        let written = plot(&report)
            .map_err(|e| format!("plotting: {e}"))
            .and_then(|svg| output.write(svg.as_bytes()));
        if let Err(error) = written {
            eprintln!("knhk-sim: {error}");
            failed = true;
        }
    }
    if report.converged && !failed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Args::command().debug_assert();
    }

    fn clap_error(args: &[&str]) -> String {
        let error = Args::try_parse_from(std::iter::once("knhk-sim").chain(args.iter().copied()))
            .expect_err("refused");
        one_line(&error.render().to_string())
    }

    #[test]
    fn negative_and_out_of_range_numbers_name_the_argument_and_the_range() {
        for (args, named, range) in [
            (&["--loss", "-0.1"][..], "--loss", "[0, 1)"),
            (&["--loss", "1"], "--loss", "[0, 1)"),
            (&["--nodes", "-5"], "--nodes", "at least 2"),
            (&["--nodes", "1"], "--nodes", "at least 2"),
            (&["--fanout", "0"], "--fanout", "at least 1"),
            (
                &["--deadline-ms", "0"],
                "--deadline-ms",
                "from 1 to 1000000000",
            ),
            (&["--deadline-ms", "-1"], "--deadline-ms", "from 1 to"),
            (&["--interval-ms", "0"], "--interval-ms", "from 1 to"),
            (&["--idle-ms", "-1"], "--idle-ms", "from 0 to"),
            (
                &["--clock-skew-ms", "99999999999"],
                "--clock-skew-ms",
                "from 0 to",
            ),
            (
                &["--seed", "-1"],
                "--seed",
                "from 0 to 18446744073709551615",
            ),
        ] {
            let message = clap_error(args);
            assert!(!message.contains('\n'), "{args:?}: {message}");
            assert!(!message.starts_with("error"), "{args:?}: {message}");
            assert!(message.contains(named), "{args:?}: {message}");
            assert!(message.contains(range), "{args:?}: {message}");
        }
    }

    #[test]
    fn sensible_edge_values_are_accepted() {
        let args = Args::try_parse_from([
            "knhk-sim",
            "--nodes",
            "2",
            "--fanout",
            "1",
            "--idle-ms",
            "0",
            "--deadline-ms",
            "1",
            "--loss",
            "0",
        ])
        .unwrap();
        assert!(config(&args).is_ok());
    }

    #[test]
    fn other_clap_errors_fold_onto_one_line() {
        assert_eq!(
            clap_error(&["--nope"]),
            "unexpected argument '--nope' found; tip: a similar argument exists: '--nodes'"
        );
        assert_eq!(
            clap_error(&["--nodes"]),
            "a value is required for '--nodes <NODES>' but none was supplied"
        );
        let scenario = clap_error(&["--scenario", "nope"]);
        assert!(!scenario.contains('\n'), "{scenario}");
        assert!(
            scenario.contains("[possible values: broadcast"),
            "{scenario}"
        );
    }

    #[test]
    fn percentages_round_down() {
        assert!((percent_down(1_999, 2_000) - 99.9).abs() < 1e-9);
        assert!((percent_down(1, 50) - 2.0).abs() < 1e-9);
        assert!((percent_down(0, 0)).abs() < 1e-9);
    }

    fn tiny_report(scenario: Scenario, deadline_ms: u64) -> Report {
        knhk_bench::scenario::run(
            &RunConfig {
                nodes: 4,
                fanout: 1,
                scenario,
                deadline_ms,
                idle_ms: 0,
                crypto: CryptoMode::Sim,
                ..RunConfig::default()
            },
            &mut |_| {},
        )
    }

    #[test]
    fn a_run_that_misses_its_deadline_says_how_far_it_got() {
        let mut report = tiny_report(Scenario::Broadcast, 1_000);
        assert!(report.converged);
        report.converged = false;
        report.deadline_ms = 1;
        report.live_nodes = 50;
        report.nodes_with_update = 1;
        assert_eq!(
            not_converged(&report),
            "did not converge: the 1 virtual ms deadline passed when 1 of 50 live nodes \
             (2.0%) had the update; raise --deadline-ms"
        );
        assert!(summary(&report).contains(
            "converged=false by the 1 virtual ms deadline (1 of 50 live nodes had the update)"
        ));
        report.nodes_with_update = 50;
        assert!(not_converged(&report).contains("but their states still differed"));
    }

    #[test]
    fn a_partition_cut_by_the_deadline_says_when_it_heals() {
        let report = tiny_report(Scenario::Partition, 1_000);
        assert!(!report.converged);
        assert_eq!(
            not_converged(&report),
            "did not converge: the 1000 virtual ms deadline passed before the partition \
             scenario may declare convergence (2000 virtual ms after the write); raise \
             --deadline-ms above 2000"
        );
    }

    #[test]
    fn the_summary_names_the_crypto_and_the_plot_the_network() {
        let report = tiny_report(Scenario::Broadcast, 1_000);
        let line = summary(&report);
        assert!(
            line.starts_with("4 nodes, broadcast, crypto sim: converged=true in "),
            "{line}"
        );
        assert!(line.contains("idle not measured"), "{line}");
        assert_eq!(
            subtitle(&report),
            "latency constant:1, loss 0, one region, crypto sim"
        );
        let wan = Report {
            regions: true,
            loss: 0.01,
            max_clock_skew_ms: 200,
            ..report
        };
        assert_eq!(
            subtitle(&wan),
            "latency constant:1, loss 0.01, 3 regions (us-east, eu-west, ap-southeast), \
             crypto sim, clock skew ±200 ms"
        );
    }

    #[test]
    fn the_plot_marks_the_cut_and_the_heal() {
        let report = tiny_report(Scenario::Partition, 10_000);
        assert!(report.converged);
        let svg = plot(&report).unwrap();
        assert!(svg.contains("partition cut (0 ms)"), "{svg}");
        assert!(svg.contains("partition healed (2000 ms)"), "{svg}");
        assert!(svg.contains("latency constant:1, loss 0, one region, crypto sim"));
    }

    #[test]
    fn progress_templates_are_valid() {
        for template in [STARTING, CONVERGING, IDLE] {
            assert!(ProgressStyle::with_template(template).is_ok(), "{template}");
        }
    }
}
