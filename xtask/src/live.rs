//! The live check: what a run emitted against what the registry defines, both ways.

use std::collections::BTreeSet;

use knhk_telemetry::{EmittedAttribute, EmittedSignals};

use crate::registry::{AttributeType, Group, Registry, attribute_type, span_name};

/// Registered signals a run is allowed not to emit, each with the reason. Keep empty
/// unless a signal truly cannot occur in a test run.
pub const EXEMPT: &[(&str, &str)] = &[];

/// Attributes allowed on every span event without being registered, with the reason.
pub const EVENT_ATTRIBUTES_EXEMPT: &[(&str, &str)] = &[
    (
        "level",
        "added to every span event by tracing-opentelemetry (the tracing level); not a mesh signal",
    ),
    (
        "target",
        "added to every span event by tracing-opentelemetry (the tracing target, always knhk::telemetry for registered events)",
    ),
];

/// The outcome of a live check.
#[derive(Clone, Debug, Default)]
pub struct LiveReport {
    /// One line per problem; empty when emission and registry agree.
    pub problems: Vec<String>,
    /// Registered spans, metrics and events (exemptions excluded).
    pub registered: usize,
    /// Of those, how many the run emitted.
    pub emitted: usize,
    /// Registered metrics emitted only as zeros: reported, but the run never exercised
    /// what they count (faults the scenario does not provoke, for instance).
    pub unexercised: Vec<String>,
}

impl LiveReport {
    /// `emitted / registered` as a percentage.
    pub fn coverage_percent(&self) -> f64 {
        if self.registered == 0 {
            return 100.0;
        }
        self.emitted as f64 * 100.0 / self.registered as f64
    }
}

/// Compares `emitted` with `registry`:
/// (a) every emitted span, event and metric, and every attribute on it, is registered
///     (with the group listing the attribute);
/// (b) every registered span, event and metric was emitted (unless in `exempt`), and
///     every `required` attribute was seen on it;
/// (c) kinds, instruments, units and attribute value types (and enum values) match.
pub fn compare(
    registry: &Registry,
    emitted: &EmittedSignals,
    exempt: &[(&str, &str)],
) -> LiveReport {
    let mut report = LiveReport::default();
    let problems = &mut report.problems;
    let mut unexercised = Vec::new();
    for (name, span) in &emitted.spans {
        let Some(group) = registry.span(name) else {
            problems.push(format!("span `{name}` is emitted but not in the registry"));
            continue;
        };
        let expected = group.span_kind.as_deref().unwrap_or("");
        for kind in &span.kinds {
            if kind != expected {
                problems.push(format!(
                    "span `{name}` is emitted as {kind}, registered as {expected}"
                ));
            }
        }
        check_attributes(
            registry,
            group,
            &format!("span `{name}`"),
            &span.attributes,
            span.count,
            problems,
        );
    }
    for (name, event) in &emitted.events {
        let Some(group) = registry.event(name) else {
            problems.push(format!("event `{name}` is emitted but not in the registry"));
            continue;
        };
        let mut attributes = event.attributes.clone();
        for (exempt, _) in EVENT_ATTRIBUTES_EXEMPT {
            attributes.remove(*exempt);
        }
        check_attributes(
            registry,
            group,
            &format!("event `{name}`"),
            &attributes,
            event.count,
            problems,
        );
    }
    for (name, metric) in &emitted.metrics {
        let Some(group) = registry.metric(name) else {
            problems.push(format!(
                "metric `{name}` is emitted but not in the registry"
            ));
            continue;
        };
        let instrument = group.instrument.as_deref().unwrap_or("");
        for seen in &metric.instruments {
            if seen != instrument {
                problems.push(format!(
                    "metric `{name}` is emitted as a {seen}, registered as a {instrument}"
                ));
            }
        }
        let unit = group.unit.as_deref().unwrap_or("");
        for seen in &metric.units {
            if seen != unit {
                problems.push(format!(
                    "metric `{name}` is emitted in {seen:?}, registered in {unit:?}"
                ));
            }
        }
        check_attributes(
            registry,
            group,
            &format!("metric `{name}`"),
            &metric.attributes,
            metric.points,
            problems,
        );
        if !metric.nonzero {
            unexercised.push(name.clone());
        }
    }
    report.unexercised = unexercised;
    let exempt: BTreeSet<&str> = exempt.iter().map(|(name, _)| *name).collect();
    let mut registered = Vec::new();
    for located in registry.of_kind("span") {
        if let Some(name) = located.group.id.as_deref().and_then(span_name) {
            registered.push(("span", name, emitted.spans.contains_key(name)));
        }
    }
    for located in registry.of_kind("metric") {
        if let Some(name) = located.group.metric_name.as_deref() {
            registered.push(("metric", name, emitted.metrics.contains_key(name)));
        }
    }
    for located in registry.of_kind("event") {
        if let Some(name) = located.group.name.as_deref() {
            registered.push(("event", name, emitted.events.contains_key(name)));
        }
    }
    for (kind, name, seen) in registered {
        if exempt.contains(name) {
            continue;
        }
        report.registered += 1;
        if seen {
            report.emitted += 1;
        } else {
            report.problems.push(format!(
                "{kind} `{name}` is registered but was never emitted"
            ));
        }
    }
    report
}

/// Checks the attributes seen on `occurrences` spans, events or data points of one
/// signal: each listed on its group, of the registered type, with registered enum
/// values; each `required` one present on every occurrence.
fn check_attributes(
    registry: &Registry,
    group: &Group,
    what: &str,
    seen: &std::collections::BTreeMap<String, EmittedAttribute>,
    occurrences: u64,
    problems: &mut Vec<String>,
) {
    let defined = registry.attributes();
    let listed: BTreeSet<&str> = crate::registry::attribute_names(group).collect();
    for (key, attribute) in seen {
        if !listed.contains(key.as_str()) {
            let why = if defined.contains_key(key.as_str()) {
                "is registered but not listed on it"
            } else {
                "is not in the registry"
            };
            problems.push(format!("{what}: attribute `{key}` {why}"));
            continue;
        }
        let Some(kind) = defined
            .get(key.as_str())
            .and_then(|definition| definition.kind.as_ref())
            .and_then(|kind| attribute_type(kind).ok())
        else {
            continue;
        };
        for value_type in &attribute.types {
            if value_type != kind.wire_type() {
                problems.push(format!(
                    "{what}: attribute `{key}` is emitted as {value_type}, registered as {}",
                    kind.wire_type()
                ));
            }
        }
        if let AttributeType::Members(values) = &kind {
            for sample in &attribute.samples {
                if !values.contains(sample) {
                    problems.push(format!(
                        "{what}: attribute `{key}` has value {sample:?}, not a registered member"
                    ));
                }
            }
        }
    }
    for attribute in &group.attributes {
        let Some(name) = attribute.reference.as_deref().or(attribute.id.as_deref()) else {
            continue;
        };
        let required = attribute
            .requirement_level
            .as_ref()
            .and_then(serde_yaml::Value::as_str)
            == Some("required");
        let carried = seen.get(name).map_or(0, |attribute| attribute.seen);
        if required && carried < occurrences {
            problems.push(format!(
                "{what}: required attribute `{name}` is missing on {} of {occurrences}",
                occurrences - carried
            ));
        }
    }
}
