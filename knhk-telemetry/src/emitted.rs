//! [`EmittedSignals`]: what a run actually emitted, in a form the registry check reads.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// String values kept per attribute as samples (enough to check enum members without
/// keeping every node id of a run).
const MAX_SAMPLES: usize = 16;

/// Every span, event and metric a run emitted, with the attributes and value types seen
/// on each and how often, and the attributes of the resources they came from. Serialized as JSON between the run and
/// `cargo xtask weaver`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmittedSignals {
    /// Spans by name.
    pub spans: BTreeMap<String, EmittedSpan>,
    /// Events (log records with an event name) by name.
    pub events: BTreeMap<String, EmittedEvent>,
    /// Metrics by name.
    pub metrics: BTreeMap<String, EmittedMetric>,
    /// Attributes of the resources the signals were exported with (`service.name`,
    /// `telemetry.sdk.*`, …).
    #[serde(default)]
    pub resource: BTreeMap<String, EmittedAttribute>,
}

/// What was seen of one span name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmittedSpan {
    /// Span kinds seen (`internal`, `client`, `server`, `producer`, `consumer`).
    pub kinds: BTreeSet<String>,
    /// Attributes seen.
    pub attributes: BTreeMap<String, EmittedAttribute>,
    /// Spans finished with this name.
    pub count: u64,
    /// Span events seen on these spans, by name (the mesh emits none: its events are log
    /// records, so any here is reported by the live check).
    #[serde(default)]
    pub events: BTreeMap<String, EmittedEvent>,
}

/// What was seen of one event name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmittedEvent {
    /// Attributes seen.
    pub attributes: BTreeMap<String, EmittedAttribute>,
    /// Events with this name.
    pub count: u64,
}

/// What was seen of one metric name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmittedMetric {
    /// Instruments it was exported as (`counter`, `updowncounter`, `gauge`,
    /// `histogram`).
    pub instruments: BTreeSet<String>,
    /// Units it was exported with.
    pub units: BTreeSet<String>,
    /// Attributes seen on its data points.
    pub attributes: BTreeMap<String, EmittedAttribute>,
    /// Data points exported (every collection counts each point again).
    pub points: u64,
    /// Whether any data point carried a non-zero value (a histogram: any sample), that
    /// is, whether the run exercised what it counts rather than only reported zero.
    pub nonzero: bool,
}

/// What was seen of one attribute key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmittedAttribute {
    /// Value types seen, in the registry's words (`string`, `int`, `double`,
    /// `boolean`, `string[]`, …).
    pub types: BTreeSet<String>,
    /// Up to 16 distinct string values seen (to check enum members).
    pub samples: BTreeSet<String>,
    /// Spans, events or data points that carried it.
    pub seen: u64,
}

impl EmittedAttribute {
    /// Records one value of type `value_type`; a string value is kept as a sample.
    pub fn record(&mut self, value_type: &str, string_value: Option<&str>) {
        self.seen += 1;
        if !self.types.contains(value_type) {
            self.types.insert(value_type.to_owned());
        }
        if let Some(value) = string_value {
            self.sample(value);
        }
    }

    fn sample(&mut self, value: &str) {
        if self.samples.len() < MAX_SAMPLES && !self.samples.contains(value) {
            self.samples.insert(value.to_owned());
        }
    }
}

impl EmittedSignals {
    /// Adds everything in `other` to `self`.
    pub fn merge(&mut self, other: EmittedSignals) {
        for (name, span) in other.spans {
            let mine = self.spans.entry(name).or_default();
            mine.kinds.extend(span.kinds);
            mine.count += span.count;
            merge_attributes(&mut mine.attributes, span.attributes);
            for (name, event) in span.events {
                let theirs = mine.events.entry(name).or_default();
                theirs.count += event.count;
                merge_attributes(&mut theirs.attributes, event.attributes);
            }
        }
        for (name, event) in other.events {
            let mine = self.events.entry(name).or_default();
            mine.count += event.count;
            merge_attributes(&mut mine.attributes, event.attributes);
        }
        for (name, metric) in other.metrics {
            let mine = self.metrics.entry(name).or_default();
            mine.instruments.extend(metric.instruments);
            mine.units.extend(metric.units);
            mine.points += metric.points;
            mine.nonzero |= metric.nonzero;
            merge_attributes(&mut mine.attributes, metric.attributes);
        }
        merge_attributes(&mut self.resource, other.resource);
    }
}

fn merge_attributes(
    into: &mut BTreeMap<String, EmittedAttribute>,
    from: BTreeMap<String, EmittedAttribute>,
) {
    for (key, attribute) in from {
        let mine = into.entry(key).or_default();
        mine.seen += attribute.seen;
        mine.types.extend(attribute.types);
        for sample in &attribute.samples {
            mine.sample(sample);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_bounded_and_merge_keeps_types() {
        let mut attribute = EmittedAttribute::default();
        for n in 0..100 {
            attribute.record("string", Some(&n.to_string()));
        }
        assert_eq!(attribute.samples.len(), MAX_SAMPLES);
        let mut a = EmittedSignals::default();
        let mut b = EmittedSignals::default();
        b.metrics
            .entry("m".into())
            .or_default()
            .attributes
            .insert("k".into(), attribute);
        a.merge(b.clone());
        a.merge(b);
        assert_eq!(a.metrics["m"].attributes["k"].types.len(), 1);
        assert_eq!(a.metrics["m"].attributes["k"].seen, 200);
        let json = serde_json::to_string(&a).unwrap_or_default();
        let back: EmittedSignals = serde_json::from_str(&json).unwrap_or_default();
        assert_eq!(back, a);
    }
}
