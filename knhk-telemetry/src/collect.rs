//! [`Collector`]: in-memory OpenTelemetry exporters recording every signal of a run.

use opentelemetry::logs::AnyValue;
use opentelemetry::metrics::{Meter, MeterProvider as _};
use opentelemetry::trace::{SpanKind, TracerProvider as _};
use opentelemetry::{Array, KeyValue, Value};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::in_memory_exporter::LogDataWithResource;
use opentelemetry_sdk::logs::{InMemoryLogExporter, SdkLoggerProvider};
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData, ResourceMetrics};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing::Subscriber;
use tracing_subscriber::layer::SubscriberExt as _;

use crate::{
    EmittedAttribute, EmittedMetric, EmittedSignals, TelemetryError, event_layer, otel_layer,
};

/// In-memory span, metric and log exporters behind real SDK providers: a run
/// instrumented through [`Collector::subscriber`] and [`Collector::meter`] goes through
/// the same OpenTelemetry pipeline as production export, and [`Collector::collect`]
/// reports every span, event and metric it emitted, with attribute types, and the
/// attributes of the resource they carry.
#[derive(Debug)]
pub struct Collector {
    spans: InMemorySpanExporter,
    metrics: InMemoryMetricExporter,
    logs: InMemoryLogExporter,
    tracer_provider: SdkTracerProvider,
    logger_provider: SdkLoggerProvider,
    /// One provider per [`Collector::meter`] call, all exporting into `metrics`.
    meter_providers: std::sync::Mutex<Vec<SdkMeterProvider>>,
}

impl Default for Collector {
    fn default() -> Self {
        Self::new()
    }
}

impl Collector {
    /// Fresh providers over empty in-memory exporters.
    pub fn new() -> Self {
        let spans = InMemorySpanExporter::default();
        let metrics = InMemoryMetricExporter::default();
        let logs = InMemoryLogExporter::default();
        let tracer_provider = SdkTracerProvider::builder()
            .with_simple_exporter(spans.clone())
            .build();
        let logger_provider = SdkLoggerProvider::builder()
            .with_simple_exporter(logs.clone())
            .build();
        Self {
            spans,
            metrics,
            logs,
            tracer_provider,
            logger_provider,
            meter_providers: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// A meter recording into this collector, from a meter provider of its own (as if
    /// in a process of its own): meshes given different meters never overwrite each
    /// other's series.
    pub fn meter(&self, scope: &'static str) -> Meter {
        let provider = SdkMeterProvider::builder()
            .with_reader(PeriodicReader::builder(self.metrics.clone()).build())
            .build();
        let meter = provider.meter(scope);
        self.providers().push(provider);
        meter
    }

    fn providers(&self) -> std::sync::MutexGuard<'_, Vec<SdkMeterProvider>> {
        self.meter_providers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A tracing subscriber whose spans and events reach this collector (install it with
    /// `tracing::subscriber::set_default` on the thread that runs the code under test).
    pub fn subscriber(&self) -> impl Subscriber + Send + Sync + use<> {
        let tracer = self.tracer_provider.tracer("knhk");
        tracing_subscriber::registry()
            .with(otel_layer(tracer))
            .with(event_layer(&self.logger_provider))
    }

    /// Exports what the instruments hold now into the in-memory exporters (call it
    /// before the instrumented code goes away: observable instruments of a mesh that has
    /// shut down report nothing).
    ///
    /// Errors: [`TelemetryError::Collect`] if a flush fails.
    pub fn flush(&self) -> Result<(), TelemetryError> {
        let failed = |e: &dyn std::fmt::Display| TelemetryError::Collect(e.to_string());
        self.tracer_provider.force_flush().map_err(|e| failed(&e))?;
        self.logger_provider.force_flush().map_err(|e| failed(&e))?;
        for provider in self.providers().iter() {
            provider.force_flush().map_err(|e| failed(&e))?;
        }
        Ok(())
    }

    /// Flushes both pipelines and reports everything emitted so far.
    ///
    /// Errors: [`TelemetryError::Collect`] if a flush or an exporter read fails.
    pub fn collect(&self) -> Result<EmittedSignals, TelemetryError> {
        let failed = |e: &dyn std::fmt::Display| TelemetryError::Collect(e.to_string());
        self.flush()?;
        let mut emitted = EmittedSignals::default();
        for span in self.spans.get_finished_spans().map_err(|e| failed(&e))? {
            record_span(&mut emitted, &span);
        }
        for log in self.logs.get_emitted_logs().map_err(|e| failed(&e))? {
            record_log(&mut emitted, &log);
        }
        for batch in self
            .metrics
            .get_finished_metrics()
            .map_err(|e| failed(&e))?
        {
            record_metrics(&mut emitted, &batch);
        }
        Ok(emitted)
    }
}

/// Spans, with their span events: the mesh emits none (its events are log records),
/// but anything that adds one is reported, so the live check sees it.
fn record_span(emitted: &mut EmittedSignals, span: &SpanData) {
    let seen = emitted.spans.entry(span.name.to_string()).or_default();
    seen.count += 1;
    seen.kinds.insert(kind_name(&span.span_kind).to_owned());
    record_attributes(&mut seen.attributes, span.attributes.iter());
    for event in span.events.iter() {
        let event_seen = seen.events.entry(event.name.to_string()).or_default();
        event_seen.count += 1;
        record_attributes(&mut event_seen.attributes, event.attributes.iter());
    }
}

/// A log record with an event name is an event; one without is a plain log, which the
/// mesh never exports (reported under the empty name, so the live check sees it).
fn record_log(emitted: &mut EmittedSignals, log: &LogDataWithResource) {
    let name = log.record.event_name().unwrap_or_default();
    let seen = emitted.events.entry(name.to_owned()).or_default();
    seen.count += 1;
    for (key, value) in log.record.attributes_iter() {
        let string = match value {
            AnyValue::String(text) => Some(text.as_str()),
            _ => None,
        };
        seen.attributes
            .entry(key.as_str().to_owned())
            .or_default()
            .record(any_type_name(value), string);
    }
    record_resource(emitted, &log.resource);
}

fn record_resource(emitted: &mut EmittedSignals, resource: &Resource) {
    for (key, value) in resource.iter() {
        let string = match value {
            Value::String(text) => Some(text.as_str()),
            _ => None,
        };
        let seen = emitted.resource.entry(key.as_str().to_owned()).or_default();
        // Once per resource and key, not once per batch: `seen` counts exports.
        seen.record(type_name(value), string);
    }
}

/// The registry's name for the type of a log attribute's `value`.
fn any_type_name(value: &AnyValue) -> &'static str {
    match value {
        AnyValue::Boolean(_) => "boolean",
        AnyValue::Int(_) => "int",
        AnyValue::Double(_) => "double",
        AnyValue::String(_) => "string",
        AnyValue::ListAny(_) => "array",
        AnyValue::Map(_) => "map",
        _ => "unknown",
    }
}

fn kind_name(kind: &SpanKind) -> &'static str {
    match kind {
        SpanKind::Client => "client",
        SpanKind::Server => "server",
        SpanKind::Producer => "producer",
        SpanKind::Consumer => "consumer",
        SpanKind::Internal => "internal",
    }
}

fn record_metrics(emitted: &mut EmittedSignals, batch: &ResourceMetrics) {
    record_resource(emitted, batch.resource());
    for scope in batch.scope_metrics() {
        for metric in scope.metrics() {
            let seen = emitted.metrics.entry(metric.name().to_owned()).or_default();
            seen.units.insert(metric.unit().to_owned());
            match metric.data() {
                AggregatedMetrics::U64(data) => record_points(seen, data),
                AggregatedMetrics::I64(data) => record_points(seen, data),
                AggregatedMetrics::F64(data) => record_points(seen, data),
            }
        }
    }
}

/// A metric value that can say whether it is zero.
trait Value0: Copy {
    fn is_nonzero(self) -> bool;
}

impl Value0 for u64 {
    fn is_nonzero(self) -> bool {
        self != 0
    }
}

impl Value0 for i64 {
    fn is_nonzero(self) -> bool {
        self != 0
    }
}

impl Value0 for f64 {
    fn is_nonzero(self) -> bool {
        self != 0.0
    }
}

fn record_points<T: Value0>(seen: &mut EmittedMetric, data: &MetricData<T>) {
    let mut point = |attributes: &mut dyn Iterator<Item = &KeyValue>, nonzero: bool| {
        seen.points += 1;
        seen.nonzero |= nonzero;
        record_attributes(&mut seen.attributes, attributes);
    };
    let instrument = match data {
        MetricData::Sum(sum) => {
            for p in sum.data_points() {
                point(&mut p.attributes(), p.value().is_nonzero());
            }
            if sum.is_monotonic() {
                "counter"
            } else {
                "updowncounter"
            }
        }
        MetricData::Gauge(gauge) => {
            for p in gauge.data_points() {
                point(&mut p.attributes(), p.value().is_nonzero());
            }
            "gauge"
        }
        MetricData::Histogram(histogram) => {
            for p in histogram.data_points() {
                point(&mut p.attributes(), p.count() > 0);
            }
            "histogram"
        }
        MetricData::ExponentialHistogram(histogram) => {
            for p in histogram.data_points() {
                point(&mut p.attributes(), p.count() > 0);
            }
            "histogram"
        }
    };
    seen.instruments.insert(instrument.to_owned());
}

fn record_attributes<'a>(
    into: &mut std::collections::BTreeMap<String, EmittedAttribute>,
    attributes: impl Iterator<Item = &'a KeyValue>,
) {
    for KeyValue { key, value, .. } in attributes {
        let string = match value {
            Value::String(text) => Some(text.as_str()),
            _ => None,
        };
        into.entry(key.as_str().to_owned())
            .or_default()
            .record(type_name(value), string);
    }
}

/// The registry's name for the type of `value`.
fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Bool(_) => "boolean",
        Value::I64(_) => "int",
        Value::F64(_) => "double",
        Value::String(_) => "string",
        Value::Array(Array::Bool(_)) => "boolean[]",
        Value::Array(Array::I64(_)) => "int[]",
        Value::Array(Array::F64(_)) => "double[]",
        Value::Array(Array::String(_)) => "string[]",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::KeyValue;

    #[test]
    fn spans_events_and_metrics_are_recorded_with_their_types() {
        let collector = Collector::new();
        tracing::subscriber::with_default(collector.subscriber(), || {
            let span = tracing::info_span!("a.span", { "a.int" } = 3i64, otel.kind = "client");
            let _entered = span.enter();
            tracing::event!(
                name: "an.event",
                target: crate::EVENT_TARGET,
                tracing::Level::INFO,
                { "a.flag" } = true,
                "something happened",
            );
            // An ordinary log line is not a registered event: it stays out.
            tracing::info!("just a log line");
        });
        let meter = collector.meter("test");
        let counter = meter.u64_counter("a.counter").with_unit("{thing}").build();
        counter.add(2, &[KeyValue::new("a.kind", "x")]);
        let _gauge = meter
            .u64_observable_gauge("a.gauge")
            .with_unit("1")
            .with_callback(|observer| observer.observe(1, &[]))
            .build();
        let emitted = collector.collect().unwrap();
        let span = &emitted.spans["a.span"];
        assert!(span.kinds.contains("client"));
        assert_eq!(span.attributes.keys().collect::<Vec<_>>(), ["a.int"]);
        assert!(span.attributes["a.int"].types.contains("int"));
        assert!(
            emitted.events["an.event"].attributes["a.flag"]
                .types
                .contains("boolean")
        );
        assert_eq!(emitted.events.len(), 1, "{:?}", emitted.events.keys());
        // Only the event's own fields: no `level`, `target` or other added attribute.
        assert_eq!(
            emitted.events["an.event"]
                .attributes
                .keys()
                .collect::<Vec<_>>(),
            ["a.flag"]
        );
        // The SDK's resource reaches the report.
        assert!(
            emitted.resource["telemetry.sdk.language"]
                .samples
                .contains("rust")
        );
        assert!(emitted.resource.contains_key("service.name"));
        let counter = &emitted.metrics["a.counter"];
        assert!(counter.instruments.contains("counter"));
        assert!(counter.units.contains("{thing}"));
        assert!(counter.attributes["a.kind"].samples.contains("x"));
        assert!(emitted.metrics["a.gauge"].instruments.contains("gauge"));
    }
}
