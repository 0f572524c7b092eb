//! The `knhk-sim` and `knhk-telemetry-live` command lines as a user meets them: bad
//! arguments refused before anything runs, a missed deadline explained, the outputs of
//! a partition run. Small runs only; nothing is timed by the wall clock.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn knhk_sim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_knhk-sim"))
        .args(args)
        .output()
        .unwrap()
}

/// A fresh path in the test's scratch directory (nothing there yet).
fn scratch(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("knhk-sim-cli-{name}"));
    let _ = std::fs::remove_file(&path);
    path
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Tiny, so that even a run started by mistake ends at once.
const TINY: [&str; 8] = [
    "--nodes",
    "3",
    "--fanout",
    "1",
    "--idle-ms",
    "0",
    "--crypto",
    "sim",
];

#[test]
fn bad_arguments_are_refused_in_one_line_before_anything_runs() {
    let json = scratch("refused.json");
    let json_arg = json.to_str().unwrap();
    let directory = env!("CARGO_TARGET_TMPDIR");
    let same = scratch("same");
    let same_arg = same.to_str().unwrap();
    for (args, named) in [
        (&["--deadline-ms", "0"][..], "--deadline-ms"),
        (&["--deadline-ms", "-5"], "--deadline-ms"),
        (&["--loss", "-0.1"], "--loss"),
        (&["--loss", "1"], "--loss"),
        (&["--nodes", "-5"], "--nodes"),
        (&["--interval-ms", "0"], "--interval-ms"),
        (&["--fanout", "3"], "--fanout"),
        (&["--scenario", "nope"], "--scenario"),
        (&["--json", "/nonexistent-dir/x.json"], "--json"),
        (&["--plot", "/nonexistent-dir/x.svg"], "--plot"),
        (&["--plot", directory], "--plot"),
        (&["--json", same_arg, "--plot", same_arg], "--plot"),
    ] {
        // A good --json path besides: it must not appear either, unless it is the bad
        // argument itself.
        let mut all: Vec<&str> = TINY.to_vec();
        all.extend_from_slice(args);
        if !args.contains(&"--json") {
            all.extend_from_slice(&["--json", json_arg]);
        }
        let output = knhk_sim(&all);
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("knhk-sim: "), "{args:?}: {stderr}");
        assert!(stderr.contains(named), "{args:?}: {stderr}");
        // The summary line comes after a run: none ran.
        assert_eq!(text(&output.stdout), "", "{args:?}");
        assert!(!json.exists(), "{args:?} created {}", json.display());
        assert!(!same.exists(), "{args:?} created {}", same.display());
        assert!(!Path::new("/nonexistent-dir").exists());
    }
}

#[test]
fn range_errors_say_what_is_accepted() {
    for (args, expected) in [
        (
            &["--loss", "-0.1"][..],
            "knhk-sim: invalid value '-0.1' for '--loss <LOSS>': expected a probability in [0, 1)",
        ),
        (
            &["--nodes", "-5"],
            "knhk-sim: invalid value '-5' for '--nodes <NODES>': expected a whole number of at least 2",
        ),
        (
            &["--deadline-ms", "0"],
            "knhk-sim: invalid value '0' for '--deadline-ms <DEADLINE_MS>': expected a whole number from 1 to 1000000000",
        ),
    ] {
        let output = knhk_sim(args);
        assert_eq!(output.status.code(), Some(2));
        assert_eq!(text(&output.stderr).trim_end(), expected);
    }
    let missing = knhk_sim(&["--json", "/nonexistent-dir/x.json"]);
    assert_eq!(
        text(&missing.stderr).trim_end(),
        "knhk-sim: cannot write --json /nonexistent-dir/x.json: No such file or directory (os error 2)"
    );
}

#[test]
fn a_run_that_misses_its_deadline_says_why() {
    let output = knhk_sim(&[
        "--nodes",
        "50",
        "--deadline-ms",
        "1",
        "--idle-ms",
        "0",
        "--crypto",
        "sim",
    ]);
    assert_eq!(output.status.code(), Some(1));
    let stdout = text(&output.stdout);
    assert!(
        stdout.starts_with(
            "50 nodes, broadcast, crypto sim: converged=false by the 1 virtual ms deadline ("
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains(" of 50 live nodes had the update)"),
        "{stdout}"
    );
    let stderr = text(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("knhk-sim: did not converge: the 1 virtual ms deadline passed when "),
        "{stderr}"
    );
    assert!(
        stderr
            .trim_end()
            .ends_with("%) had the update; raise --deadline-ms"),
        "{stderr}"
    );
}

#[test]
fn a_partition_run_writes_its_report_and_a_plot_that_marks_the_cut_and_heal() {
    let json = scratch("partition.json");
    let svg = scratch("partition.svg");
    // A longer file than the report: it must be replaced, not overwritten in part.
    std::fs::write(&json, "x".repeat(1 << 20)).unwrap();
    let output = knhk_sim(&[
        "--nodes",
        "20",
        "--scenario",
        "partition",
        "--regions",
        "--loss",
        "0.01",
        "--idle-ms",
        "200",
        "--crypto",
        "sim",
        "--json",
        json.to_str().unwrap(),
        "--plot",
        svg.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    // stderr is not a terminal here: no progress bar, nothing at all.
    assert_eq!(text(&output.stderr), "");
    let stdout = text(&output.stdout);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(
        stdout.starts_with("20 nodes, partition, crypto sim: converged=true in "),
        "{stdout}"
    );

    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(
        report["events"],
        serde_json::json!([
            {"at_ms": 0, "what": "partition cut"},
            {"at_ms": 2000, "what": "partition healed"},
        ])
    );
    assert_eq!(report["not_before_ms"], 2000);
    assert_eq!(report["deadline_ms"], 120_000);
    assert_eq!(report["live_nodes"], 20);
    assert_eq!(report["nodes_with_update"], 20);

    let plot = std::fs::read_to_string(&svg).unwrap();
    assert!(plot.contains("partition cut (0 ms)"), "{plot}");
    assert!(plot.contains("partition healed (2000 ms)"), "{plot}");
    assert!(
        plot.contains(
            "latency constant:1, loss 0.01, 3 regions (us-east, eu-west, ap-southeast), crypto sim"
        ),
        "{plot}"
    );
    let _ = std::fs::remove_file(&json);
    let _ = std::fs::remove_file(&svg);
}

#[test]
fn the_telemetry_binary_describes_itself() {
    let output = Command::new(env!("CARGO_BIN_EXE_knhk-telemetry-live"))
        .arg("--help")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
    let help = text(&output.stdout);
    let about = help.lines().next().unwrap_or_default();
    assert!(!help.contains("simulator"), "{help}");
    assert!(!help.contains("knhk-sim"), "{help}");
    assert!(about.contains("telemetry"), "{help}");
}

#[test]
fn an_existing_report_survives_a_refused_command_line() {
    let json = scratch("kept.json");
    std::fs::write(&json, "{\"an\": \"earlier report\"}\n").unwrap();
    let mut args: Vec<&str> = TINY.to_vec();
    args.extend_from_slice(&[
        "--json",
        json.to_str().unwrap(),
        "--plot",
        "/nonexistent-dir/x.svg",
    ]);
    let output = knhk_sim(&args);
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        std::fs::read_to_string(&json).unwrap(),
        "{\"an\": \"earlier report\"}\n"
    );
    let _ = std::fs::remove_file(&json);
}

fn knhk_sweep(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_knhk-sweep"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn a_sweep_reports_each_scenario_and_a_failing_seed_with_its_replay_command() {
    let held = knhk_sweep(&["--scenario", "loss", "--seeds", "3", "--nodes", "8"]);
    assert_eq!(held.status.code(), Some(0), "{}", text(&held.stderr));
    let line = text(&held.stdout);
    assert!(
        line.starts_with("loss: 3 seeds (0..3) at 8 nodes: 0 failed;"),
        "{line}"
    );

    // A 1 ms deadline: no seed converges, each is named with the command replaying it.
    let failed = knhk_sweep(&[
        "--scenario",
        "loss",
        "--seeds",
        "2",
        "--first-seed",
        "7",
        "--nodes",
        "8",
        "--deadline-ms",
        "1",
    ]);
    assert_eq!(failed.status.code(), Some(1));
    let stderr = text(&failed.stderr);
    assert!(stderr.contains("seed 7: live nodes disagree"), "{stderr}");
    assert!(stderr.contains("seed 8: "), "{stderr}");
    assert!(
        stderr.contains("replay: cargo run --release -p knhk-bench --bin knhk-sweep -- --scenario loss --nodes 8 --first-seed 7 --seeds 1"),
        "{stderr}"
    );

    for (args, named) in [
        (&["--scenario", "nope"][..], "--scenario"),
        (&["--seeds", "0"][..], "--seeds"),
        (&["--nodes", "-3"][..], "--nodes"),
    ] {
        let refused = knhk_sweep(args);
        let stderr = text(&refused.stderr);
        assert_eq!(refused.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(named), "{args:?}: {stderr}");
    }
}
