//! `cargo xtask weaver`: the registry's static check, the generated files, the official
//! Weaver when installed, and the live check of a real run.

use std::path::{Path, PathBuf};
use std::process::Command;

use xtask::checks;
use xtask::generate::{self, SEMCONV_RS, TELEMETRY_MD};
use xtask::live::{self, EXEMPT};
use xtask::registry::Registry;

/// The registry, relative to the workspace root.
const REGISTRY: &str = "registry";
/// The cargo arguments that run the live scenario (its own arguments follow).
const LIVE_RUN: &[&str] = &[
    "run",
    "--quiet",
    "-p",
    "knhk-bench",
    "--bin",
    "knhk-telemetry-live",
    "--",
];
/// Where the live run writes what it emitted.
const EMITTED_JSON: &str = "target/weaver/emitted.json";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

fn load() -> Result<Registry, String> {
    let registry = Registry::load(&root().join(REGISTRY));
    let problems = checks::check(&registry);
    if problems.is_empty() {
        eprintln!(
            "    registry: {} groups in {REGISTRY}/, static check passed",
            registry.groups.len()
        );
        Ok(registry)
    } else {
        for problem in &problems {
            eprintln!("    {REGISTRY}/{problem}");
        }
        Err(format!("{} problems in the registry", problems.len()))
    }
}

fn generated(registry: &Registry) -> Result<[(PathBuf, String); 2], String> {
    Ok([
        (
            root().join(SEMCONV_RS),
            generate::rustfmt(&generate::semconv_rs(registry))?,
        ),
        (root().join(TELEMETRY_MD), generate::telemetry_md(registry)),
    ])
}

/// `cargo xtask weaver gen`: writes the generated files.
pub fn generate() -> Result<(), String> {
    let registry = load()?;
    for (path, text) in generated(&registry)? {
        std::fs::write(&path, text).map_err(|e| format!("writing {}: {e}", path.display()))?;
        eprintln!("    wrote {}", path.display());
    }
    Ok(())
}

/// `cargo xtask weaver`: static check, generated files current, official Weaver when on
/// `PATH`, then the live check.
pub fn check() -> Result<(), String> {
    let registry = load()?;
    for (path, text) in generated(&registry)? {
        let current = std::fs::read_to_string(&path).unwrap_or_default();
        if current != text {
            return Err(format!(
                "{} is out of date with {REGISTRY}/: run `cargo xtask weaver gen`",
                path.display()
            ));
        }
    }
    eprintln!("    {SEMCONV_RS} and {TELEMETRY_MD} are current");
    let weaver = official_weaver();
    if let Some(weaver) = &weaver {
        crate::run_command(
            Command::new(weaver)
                .args(["registry", "check", "-r", REGISTRY])
                .current_dir(root()),
        )?;
    } else {
        eprintln!(
            "    `weaver` is not on PATH: the official `weaver registry check` was skipped \
             (README, Telemetry, says how to run it)"
        );
    }
    live_check(&registry, weaver.as_deref())
}

fn live_check(registry: &Registry, weaver: Option<&Path>) -> Result<(), String> {
    // An absolute path, removed first: a stale file from an earlier run can never pass.
    let json = root().join(EMITTED_JSON);
    if json.exists() {
        std::fs::remove_file(&json).map_err(|e| format!("removing {}: {e}", json.display()))?;
    }
    let json_arg = json.to_string_lossy();
    crate::cargo(&[LIVE_RUN, &["--json", &json_arg]].concat(), &[])?;
    let text =
        std::fs::read_to_string(&json).map_err(|e| format!("reading {}: {e}", json.display()))?;
    let emitted =
        serde_json::from_str(&text).map_err(|e| format!("parsing {EMITTED_JSON}: {e}"))?;
    let report = live::compare(registry, &emitted, EXEMPT);
    for problem in &report.problems {
        eprintln!("    live: {problem}");
    }
    eprintln!(
        "    live coverage: {} of {} registered signals emitted ({:.0}%), {} exempt",
        report.emitted,
        report.registered,
        report.coverage_percent(),
        EXEMPT.len()
    );
    eprintln!(
        "    registry coverage as Weaver counts it (attributes, metrics, events): {} of {} ({:.2}%)",
        report.items_seen,
        report.items_registered,
        report.weaver_coverage_percent()
    );
    let exercised = report.emitted.saturating_sub(report.unexercised.len());
    eprintln!(
        "    exercised (a non-zero value or a sample): {exercised} of {}; reported only as zero: {}",
        report.emitted,
        if report.unexercised.is_empty() {
            "none".to_owned()
        } else {
            report.unexercised.join(", ")
        }
    );
    if !report.problems.is_empty() {
        return Err(format!("live check: {} problems", report.problems.len()));
    }
    if let Some(weaver) = weaver {
        official_live_check(weaver)?;
    }
    Ok(())
}

/// Feeds the same scenario to `weaver registry live-check` over OTLP.
fn official_live_check(weaver: &Path) -> Result<(), String> {
    const PORT: &str = "4317";
    let mut listener = Command::new(weaver)
        .args([
            "registry",
            "live-check",
            "-r",
            REGISTRY,
            "--input-source",
            "otlp",
            "--otlp-grpc-port",
            PORT,
            "--inactivity-timeout",
            "10",
        ])
        .current_dir(root())
        .spawn()
        .map_err(|e| format!("starting weaver live-check: {e}"))?;
    std::thread::sleep(std::time::Duration::from_secs(2));
    let endpoint = format!("http://127.0.0.1:{PORT}");
    let exported = crate::cargo(
        &[LIVE_RUN, &["--otlp"]].concat(),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_METRIC_EXPORT_INTERVAL", "1000"),
        ],
    );
    let status = listener
        .wait()
        .map_err(|e| format!("waiting for weaver live-check: {e}"))?;
    exported?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("weaver registry live-check failed ({status})"))
    }
}

fn official_weaver() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("weaver"))
        .find(|candidate| candidate.is_file())
}
