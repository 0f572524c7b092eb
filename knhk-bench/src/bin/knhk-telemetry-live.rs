//! Runs the live telemetry scenario and reports what it emitted.
//!
//! - `--json FILE`: records every span, event and metric through in-memory
//!   OpenTelemetry exporters and writes them as JSON (what `cargo xtask weaver` compares
//!   with the registry).
//! - `--otlp`: exports over OTLP instead, to `OTEL_EXPORTER_OTLP_ENDPOINT` (what
//!   `weaver registry live-check` listens to).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use knhk_bench::telemetry_live;
use knhk_telemetry::{Collector, TelemetryError, init_from_env};

/// Runs the live telemetry scenario on real meshes and records every span, event and
/// metric they emit.
///
/// The meshes: ten nodes on the in-memory transport plus a member that sends garbage
/// until it is banned; three nodes over QUIC with mutual TLS, and a stranger whose
/// handshakes are refused; three QUIC nodes with the topology layer, of which one
/// leaves and one crashes. What they emit is written as JSON (what `cargo xtask weaver`
/// compares with the registry) or exported over OTLP (for `weaver registry live-check`).
/// Takes a few seconds of wall-clock time.
#[derive(Parser, Debug)]
#[command(name = "knhk-telemetry-live", version)]
struct Args {
    /// Write what was emitted to this JSON file [default: emitted.json].
    #[arg(long, conflicts_with = "otlp")]
    json: Option<PathBuf>,
    /// Export over OTLP to OTEL_EXPORTER_OTLP_ENDPOINT instead.
    #[arg(long)]
    otlp: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let outcome = if args.otlp {
        export_otlp()
    } else {
        record(args.json.unwrap_or_else(|| PathBuf::from("emitted.json")))
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("knhk-telemetry-live: {error}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))
}

/// Every thread of the runtime records into the collector: the subscriber is global in
/// this process.
fn record(json: PathBuf) -> Result<(), String> {
    let collector = Collector::new();
    tracing::subscriber::set_global_default(collector.subscriber())
        .map_err(|e| format!("installing the subscriber: {e}"))?;
    runtime()?
        .block_on(telemetry_live::run(&|| collector.meter("knhk"), &|| {
            if let Err(error) = collector.flush() {
                eprintln!("knhk-telemetry-live: {error}");
            }
        }))
        .map_err(|e| e.to_string())?;
    let emitted = collector.collect().map_err(|e| e.to_string())?;
    if let Some(parent) = json.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    let text = serde_json::to_string_pretty(&emitted).map_err(|e| e.to_string())?;
    std::fs::write(&json, text).map_err(|e| format!("{}: {e}", json.display()))?;
    eprintln!(
        "knhk-telemetry-live: {} spans, {} events, {} metrics emitted -> {}",
        emitted.spans.len(),
        emitted.events.len(),
        emitted.metrics.len(),
        json.display()
    );
    Ok(())
}

fn export_otlp() -> Result<(), String> {
    let runtime = runtime()?;
    let guard = runtime
        .block_on(async { init_from_env("knhk-telemetry-live") })
        .map_err(|e: TelemetryError| e.to_string())?;
    if !guard.exporting() {
        return Err("--otlp needs OTEL_EXPORTER_OTLP_ENDPOINT".into());
    }
    // The periodic reader exports on its own schedule (OTEL_METRIC_EXPORT_INTERVAL).
    let outcome = runtime.block_on(telemetry_live::run(
        &|| opentelemetry::global::meter("knhk"),
        &|| {},
    ));
    outcome.map_err(|e| e.to_string())?;
    // Flushes the exporters while the runtime still runs their network stack; an export
    // that failed fails the run.
    runtime
        .block_on(async { tokio::task::spawn_blocking(move || guard.shutdown()).await })
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}
