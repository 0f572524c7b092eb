//! The live check on real emissions: the project's scenario matches the registry both
//! ways; an unregistered name, a missing emission or a wrong attribute type fails it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::assert_reported;

use std::path::Path;

use knhk_telemetry::Collector;
use knhk_telemetry::semconv::{attribute, metric, span};
use opentelemetry::KeyValue;
use xtask::live::{EXEMPT, compare};
use xtask::registry::Registry;

fn registry() -> Registry {
    Registry::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../registry"))
}

/// Runs the live scenario on a single-threaded runtime, with the collector's
/// subscriber as this thread's default, so everything it emits is recorded.
fn run_scenario(collector: &Collector) {
    let _default = tracing::subscriber::set_default(collector.subscriber());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime
        .block_on(knhk_bench::telemetry_live::run(
            &|| collector.meter("knhk"),
            &|| {
                collector.flush().unwrap();
            },
        ))
        .unwrap();
}

#[test]
fn the_scenario_matches_the_registry_until_something_unregistered_is_emitted() {
    let registry = registry();
    let collector = Collector::new();
    run_scenario(&collector);
    let clean = compare(&registry, &collector.collect().unwrap(), EXEMPT);
    assert_eq!(clean.problems, Vec::<String>::new());
    assert_eq!(clean.emitted, clean.registered);

    // A deliberately unregistered metric and span, through the same pipeline.
    let bogus = collector
        .meter("knhk")
        .u64_counter("knhk.gossip.bogus")
        .build();
    bogus.add(1, &[]);
    tracing::subscriber::with_default(collector.subscriber(), || {
        // Only spans from `knhk` crates are exported: pose as one.
        let _span =
            tracing::info_span!(target: "knhk_live_test", "knhk.unregistered.span").entered();
    });
    let dirty = compare(&registry, &collector.collect().unwrap(), EXEMPT);
    assert_reported(
        &dirty.problems,
        &["metric `knhk.gossip.bogus`", "not in the registry"],
    );
    assert_reported(
        &dirty.problems,
        &["span `knhk.unregistered.span`", "not in the registry"],
    );
}

#[test]
fn a_registered_metric_never_emitted_fails_the_check() {
    let registry = registry();
    let collector = Collector::new();
    // Everything but the rounds counter: as if its only emission had been removed.
    let meter = collector.meter("knhk");
    let mut kept = Vec::new();
    for spec in metric::ALL
        .iter()
        .filter(|spec| spec.name != metric::GOSSIP_ROUNDS.name)
    {
        match spec.instrument {
            knhk_telemetry::Instrument::Histogram => meter
                .f64_histogram(spec.name)
                .with_unit(spec.unit)
                .build()
                .record(1.0, &[]),
            knhk_telemetry::Instrument::Gauge => {
                kept.push(meter.u64_gauge(spec.name).with_unit(spec.unit).build());
                if let Some(gauge) = kept.last() {
                    gauge.record(1, &[]);
                }
            }
            _ => meter
                .u64_counter(spec.name)
                .with_unit(spec.unit)
                .build()
                .add(1, &[]),
        }
    }
    let report = compare(&registry, &collector.collect().unwrap(), EXEMPT);
    assert_reported(
        &report.problems,
        &[
            "metric `knhk.gossip.rounds`",
            "registered but was never emitted",
        ],
    );
    assert!(report.emitted < report.registered);
}

#[test]
fn a_wrong_attribute_type_or_unit_fails_the_check() {
    let registry = registry();
    let collector = Collector::new();
    tracing::subscriber::with_default(collector.subscriber(), || {
        // The round number as a string, where the registry says int.
        let _span = tracing::info_span!(
            target: "knhk_live_test",
            span::GOSSIP_ROUND,
            { attribute::GOSSIP_ROUND } = "seven",
            { attribute::MESH_NODE_ID } = "node",
        )
        .entered();
    });
    collector
        .meter("knhk")
        .u64_counter(metric::TRANSPORT_BYTES.name)
        .with_unit("bytes")
        .build()
        .add(
            10,
            &[KeyValue::new(attribute::MESH_IO_DIRECTION, "sideways")],
        );
    let report = compare(&registry, &collector.collect().unwrap(), EXEMPT);
    assert_reported(
        &report.problems,
        &["knhk.gossip.round", "emitted as string, registered as int"],
    );
    assert_reported(&report.problems, &["knhk.transport.bytes", "\"bytes\""]);
    assert_reported(&report.problems, &["sideways", "not a registered member"]);
}
