//! Project automation, run as `cargo xtask <command>` so that CI and developers run the
//! very same steps.
//!
//! - `ci`: everything CI checks, in order: `fmt`, `layers`, `hakari`, `weaver`, `clippy`,
//!   `test`, `doc`, `loom`, `sweep` (50 seeds of every fault scenario).
//! - `sweep [--release] [knhk-sweep arguments]`: the simulator over many seeds
//!   (`cargo xtask sweep --release --scenario partition --seeds 1000`); fails on any
//!   seed whose live nodes disagree on the root and prints the command that replays it.
//!   Without arguments, the CI size.
//! - each step on its own: `cargo xtask fmt`, `cargo xtask clippy`, …
//! - `weaver gen`: regenerates `knhk-telemetry/src/semconv.rs` and `docs/TELEMETRY.md`
//!   from `registry/`.
//!
//! A step fails the run with its command line printed; the run ends with one summary
//! line per step and its duration.

use std::process::{Command, ExitCode};
use std::time::Instant;

mod layers;
mod weaver;

/// One CI step: a name and the function that runs it.
type Step = (&'static str, fn() -> Result<(), String>);

const STEPS: &[Step] = &[
    ("fmt", fmt),
    ("layers", layers::check),
    ("hakari", hakari),
    ("weaver", weaver::check),
    ("clippy", clippy),
    ("test", test),
    ("doc", doc),
    ("loom", loom),
    ("sweep", sweep_ci),
];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let selected: Vec<&Step> = match args.first().map(String::as_str) {
        Some("ci") => STEPS.iter().collect(),
        Some("weaver") if args.get(1).map(String::as_str) == Some("gen") => {
            return match weaver::generate() {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("xtask weaver gen: {error}");
                    ExitCode::FAILURE
                }
            };
        }
        Some("sweep") if args.len() > 1 => {
            return match sweep(&args[1..]) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("xtask sweep: {error}");
                    ExitCode::FAILURE
                }
            };
        }
        Some(name) if args.len() > 1 => {
            return usage(&format!(
                "unexpected arguments after {name:?}: {:?}",
                &args[1..]
            ));
        }
        Some(name) => match STEPS.iter().find(|(step, _)| *step == name) {
            Some(step) => vec![step],
            None => return usage(&format!("unknown command {name:?}")),
        },
        None => return usage("no command given"),
    };
    let mut report = Vec::new();
    for (name, run) in selected {
        eprintln!("\n==> xtask {name}");
        let started = Instant::now();
        let outcome = run();
        let seconds = started.elapsed().as_secs_f64();
        match outcome {
            Ok(()) => report.push(format!("  ok    {name:<8} {seconds:>7.1} s")),
            Err(error) => {
                report.push(format!("  FAIL  {name:<8} {seconds:>7.1} s  {error}"));
                eprintln!("\nxtask summary:\n{}", report.join("\n"));
                return ExitCode::FAILURE;
            }
        }
    }
    eprintln!("\nxtask summary:\n{}", report.join("\n"));
    ExitCode::SUCCESS
}

fn usage(problem: &str) -> ExitCode {
    let names: Vec<&str> = STEPS.iter().map(|(name, _)| *name).collect();
    eprintln!(
        "xtask: {problem}\nusage: cargo xtask <ci|{}>",
        names.join("|")
    );
    ExitCode::from(2)
}

/// Runs `cargo args…` with extra environment variables; fails with the command line.
pub(crate) fn cargo(args: &[&str], env: &[(&str, &str)]) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(&cargo);
    command.args(args).envs(env.iter().copied());
    run_command(&mut command)
}

/// Runs `command`, echoing it; fails with the command line.
pub(crate) fn run_command(command: &mut Command) -> Result<(), String> {
    let env: String = command
        .get_envs()
        .filter_map(|(k, v)| Some(format!("{}={:?} ", k.to_string_lossy(), v?)))
        .collect();
    let args: Vec<String> = command
        .get_args()
        .map(|arg| arg.to_string_lossy().into_owned())
        .collect();
    let shown = format!(
        "{env}{} {}",
        command.get_program().to_string_lossy(),
        args.join(" ")
    );
    eprintln!("    $ {shown}");
    let status = command
        .status()
        .map_err(|e| format!("could not start `{shown}`: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{shown}` failed ({status})"))
    }
}

fn has_nextest() -> bool {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["nextest", "--version"])
        .output()
        .is_ok_and(|output| output.status.success())
}

/// `cargo hakari`: the workspace-hack crate is what `generate` writes, every crate
/// depends on it, and it unifies every third-party
/// feature the workspace uses, so that one build serves every `-p` (a stale one costs
/// rebuilds, never correctness). Needs `cargo-hakari` (`.ci/run` installs it); without
/// it the step says so and passes, unless `KNHK_REQUIRE_TOOLS=1`.
fn hakari() -> Result<(), String> {
    let program = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let installed = Command::new(&program)
        .args(["hakari", "--version"])
        .output()
        .is_ok_and(|output| output.status.success());
    if !installed {
        if std::env::var("KNHK_REQUIRE_TOOLS").as_deref() == Ok("1") {
            return Err("KNHK_REQUIRE_TOOLS=1 but cargo-hakari is not installed".into());
        }
        eprintln!("    cargo-hakari not found; skipped (cargo install cargo-hakari --locked)");
        return Ok(());
    }
    let stale = |error: String| {
        format!(
            "{error}: run `cargo hakari generate && cargo hakari manage-deps` and commit the result"
        )
    };
    // Exactly what `generate` would write, and every crate depending on it.
    cargo(&["hakari", "generate", "--diff"], &[]).map_err(stale)?;
    cargo(&["hakari", "manage-deps", "--dry-run"], &[]).map_err(stale)?;
    cargo(&["hakari", "verify"], &[]).map_err(stale)
}

/// `cargo xtask sweep [--release] ARGS`: `knhk-sweep ARGS` (see `knhk-bench`).
fn sweep(args: &[String]) -> Result<(), String> {
    let release = args.iter().any(|arg| arg == "--release");
    let mut command = vec!["run", "-q"];
    if release {
        command.push("--release");
    }
    command.extend(["-p", "knhk-bench", "--bin", "knhk-sweep", "--"]);
    command.extend(
        args.iter()
            .filter(|arg| *arg != "--release")
            .map(String::as_str),
    );
    cargo(&command, &[])
}

/// The sweep's CI size: 50 seeds of every fault scenario at 20 nodes (the 1,000-seed
/// runs are in docs/RELIABILITY.md).
fn sweep_ci() -> Result<(), String> {
    let args: Vec<String> = ["--scenario", "all", "--seeds", "50", "--nodes", "20"]
        .into_iter()
        .map(String::from)
        .collect();
    sweep(&args)
}

fn fmt() -> Result<(), String> {
    cargo(&["fmt", "--all", "--", "--check"], &[])
}

fn clippy() -> Result<(), String> {
    cargo(
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
        &[],
    )
}

fn test() -> Result<(), String> {
    if has_nextest() {
        cargo(&["nextest", "run", "--workspace", "--no-fail-fast"], &[])?;
    } else {
        eprintln!("    cargo-nextest not found; using cargo test");
        cargo(
            &[
                "test",
                "--workspace",
                "--lib",
                "--bins",
                "--tests",
                "--examples",
            ],
            &[],
        )?;
    }
    // nextest does not run doctests.
    cargo(&["test", "--workspace", "--doc"], &[])
}

fn doc() -> Result<(), String> {
    cargo(
        &[
            "doc",
            "--workspace",
            "--no-deps",
            "--document-private-items",
        ],
        &[("RUSTDOCFLAGS", "-D warnings")],
    )
}

/// The loom model of the peer registry. Its own target directory keeps the
/// `--cfg knhk_loom` build from invalidating the normal one.
fn loom() -> Result<(), String> {
    cargo(
        &[
            "test",
            "-p",
            "knhk-transport",
            "--no-default-features",
            "--release",
            "--test",
            "loom_registry",
        ],
        &[
            ("RUSTFLAGS", "--cfg knhk_loom"),
            ("CARGO_TARGET_DIR", "target/loom"),
            ("LOOM_MAX_PREEMPTIONS", "3"),
        ],
    )
}
