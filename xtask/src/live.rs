//! The live check: what a run emitted against what the registry defines, both ways.

use std::collections::BTreeSet;

use knhk_telemetry::{EmittedAttribute, EmittedSignals};

use crate::registry::{AttributeType, Group, Registry, attribute_type, span_name};

/// Registered signals a run is allowed not to emit, each with the reason. Keep empty
/// unless a signal truly cannot occur in a test run.
pub const EXEMPT: &[(&str, &str)] = &[];

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
    /// Weaver's registry coverage: of the registry's attributes, metrics and events
    /// (spans are not items of their own there), how many the run showed...
    pub items_seen: usize,
    /// ...out of how many.
    pub items_registered: usize,
}

impl LiveReport {
    /// `emitted / registered` as a percentage.
    pub fn coverage_percent(&self) -> f64 {
        if self.registered == 0 {
            return 100.0;
        }
        self.emitted as f64 * 100.0 / self.registered as f64
    }

    /// Weaver's registry coverage as a percentage: attributes seen anywhere (a span, an
    /// event, a data point or the resource), metrics and events (log records with an
    /// event name) seen, over all the registry defines.
    pub fn weaver_coverage_percent(&self) -> f64 {
        if self.items_registered == 0 {
            return 0.0;
        }
        self.items_seen as f64 * 100.0 / self.items_registered as f64
    }
}

/// Compares `emitted` with `registry`, at least as strictly as Weaver's live check:
/// (a) every emitted span, event and metric, and every attribute on it, is registered
///     (with the group listing the attribute); every resource attribute is registered;
///     nothing is exempt (spans carry no span events: registered events are log records);
/// (b) every registered span, event and metric was emitted (unless in `exempt`), every
///     `required` attribute was seen on each occurrence, every `recommended` one on at
///     least one, and every registered attribute somewhere (Weaver's coverage);
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
        for event in span.events.keys() {
            problems.push(format!(
                "span `{name}` carries span event `{event}`: registered events are log records \
                 (tracing events with target knhk::telemetry), never span events"
            ));
        }
    }
    for (name, event) in &emitted.events {
        let Some(group) = registry.event(name) else {
            problems.push(format!("event `{name}` is emitted but not in the registry"));
            continue;
        };
        check_attributes(
            registry,
            group,
            &format!("event `{name}`"),
            &event.attributes,
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
    check_resource(registry, &emitted.resource, problems);
    weaver_coverage(registry, emitted, &mut report);
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

/// Resource attributes: each defined in the registry, of its type and members.
fn check_resource(
    registry: &Registry,
    seen: &std::collections::BTreeMap<String, EmittedAttribute>,
    problems: &mut Vec<String>,
) {
    let defined = registry.attributes();
    for (key, attribute) in seen {
        match defined.get(key.as_str()) {
            None => problems.push(format!("resource attribute `{key}` is not in the registry")),
            Some(definition) => check_value(
                definition,
                &format!("resource attribute `{key}`"),
                attribute,
                problems,
            ),
        }
    }
}

/// Registry coverage counted as Weaver counts it: every attribute the registry defines
/// (seen on anything, the resource included), every metric and every event. An unseen
/// attribute is a problem; unseen metrics and events are reported by the signal check.
fn weaver_coverage(registry: &Registry, emitted: &EmittedSignals, report: &mut LiveReport) {
    let mut seen_attributes: BTreeSet<&str> = emitted.resource.keys().map(String::as_str).collect();
    for span in emitted.spans.values() {
        seen_attributes.extend(span.attributes.keys().map(String::as_str));
    }
    for event in emitted.events.values() {
        seen_attributes.extend(event.attributes.keys().map(String::as_str));
    }
    for metric in emitted.metrics.values() {
        seen_attributes.extend(metric.attributes.keys().map(String::as_str));
    }
    let attributes = registry.attributes();
    let metrics: Vec<&str> = registry
        .of_kind("metric")
        .filter_map(|located| located.group.metric_name.as_deref())
        .collect();
    let events: Vec<&str> = registry
        .of_kind("event")
        .filter_map(|located| located.group.name.as_deref())
        .collect();
    report.items_registered = attributes.len() + metrics.len() + events.len();
    report.items_seen = metrics
        .iter()
        .filter(|name| emitted.metrics.contains_key(**name))
        .count()
        + events
            .iter()
            .filter(|name| emitted.events.contains_key(**name))
            .count();
    for name in attributes.keys() {
        if seen_attributes.contains(name) {
            report.items_seen += 1;
        } else {
            report.problems.push(format!(
                "attribute `{name}` is registered but was never seen (Weaver counts it)"
            ));
        }
    }
}

/// A value's type against its definition, and an enum's samples against its members.
fn check_value(
    definition: &crate::registry::Attribute,
    what: &str,
    attribute: &EmittedAttribute,
    problems: &mut Vec<String>,
) {
    let Some(kind) = definition
        .kind
        .as_ref()
        .and_then(|kind| attribute_type(kind).ok())
    else {
        return;
    };
    for value_type in &attribute.types {
        if value_type != kind.wire_type() {
            problems.push(format!(
                "{what} is emitted as {value_type}, registered as {}",
                kind.wire_type()
            ));
        }
    }
    if let AttributeType::Members(values) = &kind {
        for sample in &attribute.samples {
            if !values.contains(sample) {
                problems.push(format!(
                    "{what} has value {sample:?}, not a registered member"
                ));
            }
        }
    }
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
        if let Some(definition) = defined.get(key.as_str()) {
            check_value(
                definition,
                &format!("{what}: attribute `{key}`"),
                attribute,
                problems,
            );
        }
    }
    for attribute in &group.attributes {
        let Some(name) = attribute.reference.as_deref().or(attribute.id.as_deref()) else {
            continue;
        };
        // As in Weaver, an attribute with no `requirement_level` is recommended.
        let level = match &attribute.requirement_level {
            None => Some("recommended"),
            Some(level) if level.get("recommended").is_some() => Some("recommended"),
            Some(level) => level.as_str(),
        };
        let carried = seen.get(name).map_or(0, |attribute| attribute.seen);
        if level == Some("required") && carried < occurrences {
            problems.push(format!(
                "{what}: required attribute `{name}` is missing on {} of {occurrences}",
                occurrences - carried
            ));
        }
        // Weaver reports a recommended attribute absent from an occurrence as an
        // improvement; here it must be on every occurrence too, or not recommended.
        if level == Some("recommended") && carried < occurrences {
            problems.push(format!(
                "{what}: recommended attribute `{name}` is missing on {} of {occurrences} \
                 (emit it always, or make it opt_in or conditionally_required)",
                occurrences - carried
            ));
        }
    }
}
