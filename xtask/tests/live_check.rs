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

/// The project's scenario, collected once per test.
fn scenario_emissions() -> knhk_telemetry::EmittedSignals {
    let collector = Collector::new();
    run_scenario(&collector);
    collector.collect().unwrap()
}

#[test]
fn an_unregistered_resource_attribute_fails_the_check() {
    let registry = registry();
    let mut emitted = scenario_emissions();
    assert!(emitted.resource.contains_key("telemetry.sdk.version"));
    emitted
        .resource
        .entry("host.name".into())
        .or_default()
        .record("string", Some("node-1"));
    emitted
        .resource
        .entry("telemetry.sdk.language".into())
        .or_default()
        .record("string", Some("cobol"));
    let report = compare(&registry, &emitted, EXEMPT);
    assert_reported(
        &report.problems,
        &["resource attribute `host.name`", "not in the registry"],
    );
    assert_reported(
        &report.problems,
        &[
            "resource attribute `telemetry.sdk.language`",
            "\"cobol\"",
            "not a registered member",
        ],
    );
}

#[test]
fn span_events_and_their_added_attributes_fail_the_check() {
    // What tracing-opentelemetry makes of a tracing event inside a span: a span event
    // with `level` and `target`, which Weaver refuses (unregistered, not namespaced).
    let registry = registry();
    let mut emitted = scenario_emissions();
    let round = emitted.spans.get_mut(span::GOSSIP_ROUND).unwrap();
    let event = round
        .events
        .entry(knhk_telemetry::semconv::event::GOSSIP_CONVERGED.into())
        .or_default();
    event.count += 1;
    for key in ["level", "target"] {
        event
            .attributes
            .entry(key.into())
            .or_default()
            .record("string", Some("x"));
    }
    let report = compare(&registry, &emitted, EXEMPT);
    assert_reported(
        &report.problems,
        &["span `knhk.gossip.round`", "span event", "log records"],
    );
    // On a log-record event, unregistered attributes are named.
    let mut emitted = scenario_emissions();
    let converged = emitted
        .events
        .get_mut(knhk_telemetry::semconv::event::GOSSIP_CONVERGED)
        .unwrap();
    converged
        .attributes
        .entry("level".into())
        .or_default()
        .record("string", Some("INFO"));
    let report = compare(&registry, &emitted, EXEMPT);
    assert_reported(
        &report.problems,
        &[
            "event `knhk.gossip.converged`",
            "attribute `level`",
            "not in the registry",
        ],
    );
}

#[test]
fn coverage_counts_attributes_metrics_and_events_as_weaver_does() {
    let registry = registry();
    let emitted = scenario_emissions();
    let clean = compare(&registry, &emitted, EXEMPT);
    assert_eq!(clean.items_seen, clean.items_registered);
    assert!((clean.weaver_coverage_percent() - 100.0).abs() < 1e-9);
    // Weaver's items: every defined attribute, metric and event; spans are not items.
    let defined = registry.attributes().len()
        + registry.of_kind("metric").count()
        + registry.of_kind("event").count();
    assert_eq!(clean.items_registered, defined);

    // The diff phase attribute only ever rides on the diff counter: drop it there and
    // the run still emits every signal, but Weaver's coverage (and ours) falls short.
    let mut without = emitted.clone();
    for metric in without.metrics.values_mut() {
        metric.attributes.remove(attribute::GOSSIP_DIFF_PHASE);
    }
    let report = compare(&registry, &without, EXEMPT);
    assert_eq!(report.items_seen + 1, report.items_registered);
    assert_reported(
        &report.problems,
        &["attribute `knhk.gossip.diff.phase`", "never seen"],
    );

    // An event emitted as a span event does not count as the event (Weaver counts
    // events from log records only).
    let mut as_span_event = emitted;
    let converged = as_span_event
        .events
        .remove(knhk_telemetry::semconv::event::GOSSIP_CONVERGED)
        .unwrap();
    as_span_event
        .spans
        .get_mut(span::GOSSIP_ROUND)
        .unwrap()
        .events
        .insert(
            knhk_telemetry::semconv::event::GOSSIP_CONVERGED.into(),
            converged,
        );
    let report = compare(&registry, &as_span_event, EXEMPT);
    assert!(report.items_seen < report.items_registered);
}

#[test]
fn a_required_attribute_missing_on_some_data_points_fails_the_check() {
    let registry = registry();
    let collector = Collector::new();
    let handshakes = collector
        .meter("knhk")
        .u64_counter(metric::TRANSPORT_HANDSHAKES.name)
        .with_unit(metric::TRANSPORT_HANDSHAKES.unit)
        .build();
    handshakes.add(
        1,
        &[KeyValue::new(
            attribute::TRANSPORT_HANDSHAKE_OUTCOME,
            "rejected",
        )],
    );
    let report = compare(&registry, &collector.collect().unwrap(), EXEMPT);
    assert_reported(
        &report.problems,
        &[
            "metric `knhk.transport.handshakes`",
            "required attribute `knhk.transport.connection.direction`",
            "missing on 1 of 1",
        ],
    );
}

#[test]
fn a_recommended_attribute_missing_on_some_data_points_fails_the_check() {
    let registry = Registry::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/live_recommended"),
    );
    assert_eq!(xtask::checks::check(&registry), Vec::<String>::new());
    let collector = Collector::new();
    let count = collector
        .meter("knhk")
        .u64_counter("knhk.fixture.count")
        .with_unit("{thing}")
        .build();
    count.add(1, &[KeyValue::new("knhk.fixture.kind", "a")]);
    count.add(1, &[]);
    let report = compare(&registry, &collector.collect().unwrap(), EXEMPT);
    assert_reported(
        &report.problems,
        &[
            "metric `knhk.fixture.count`",
            "recommended attribute `knhk.fixture.kind`",
            "missing on 1 of 2",
        ],
    );
}
