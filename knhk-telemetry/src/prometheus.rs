//! [`PrometheusMetrics`]: the process's metrics as Prometheus text, for a `/metrics`
//! page that Prometheus scrapes.

use prometheus::{Encoder, TextEncoder};

use crate::TelemetryError;

/// The metrics the global meter provider records, rendered on demand in Prometheus's
/// text exposition format (version 0.0.4). Names are the registry's with dots turned
/// into underscores, and counters end in `_total`: `knhk.gossip.messages` is scraped
/// as `knhk_gossip_messages_total`, `knhk.crdt.keys` as `knhk_crdt_keys`. No unit
/// suffix is added (the registry's names already say what they count, and a suffix
/// would scrape `knhk.transport.bytes` as `…_bytes_bytes_total`); each metric's
/// `# HELP` line is its registry brief. Cheap to clone: clones share one registry.
#[derive(Clone, Debug)]
pub struct PrometheusMetrics {
    registry: prometheus::Registry,
}

impl PrometheusMetrics {
    /// The `Content-Type` of [`render`](Self::render)'s text.
    pub const CONTENT_TYPE: &'static str = "text/plain; version=0.0.4; charset=utf-8";

    pub(crate) fn new(registry: prometheus::Registry) -> Self {
        Self { registry }
    }

    /// Collects every instrument now (observable ones run their callbacks) and renders
    /// the result as Prometheus text.
    ///
    /// Errors: [`TelemetryError::Prometheus`] if the encoder refuses a metric family
    /// (for example two instruments whose translated names collide with different
    /// types).
    pub fn render(&self) -> Result<String, TelemetryError> {
        let families = self.registry.gather();
        let mut text = Vec::new();
        TextEncoder::new()
            .encode(&families, &mut text)
            .map_err(|e| TelemetryError::Prometheus(e.to_string()))?;
        String::from_utf8(text).map_err(|e| TelemetryError::Prometheus(e.to_string()))
    }
}

/// Builds the exporter that feeds a fresh registry, and the handle that renders it.
pub(crate) fn exporter() -> Result<
    (
        opentelemetry_prometheus::PrometheusExporter,
        PrometheusMetrics,
    ),
    TelemetryError,
> {
    let registry = prometheus::Registry::new();
    let exporter = opentelemetry_prometheus::exporter()
        .with_registry(registry.clone())
        .without_units()
        .build()
        .map_err(|e| TelemetryError::Prometheus(e.to_string()))?;
    Ok((exporter, PrometheusMetrics::new(registry)))
}

#[cfg(test)]
mod tests {
    use opentelemetry::KeyValue;
    use opentelemetry::metrics::MeterProvider as _;
    use opentelemetry_sdk::metrics::SdkMeterProvider;

    use super::*;
    use crate::semconv;

    #[test]
    fn a_registry_counter_renders_under_its_translated_name() {
        let (exporter, metrics) = exporter().unwrap();
        let provider = SdkMeterProvider::builder().with_reader(exporter).build();
        let meter = provider.meter("knhk-test");
        let sent = meter
            .u64_counter(semconv::metric::GOSSIP_MESSAGES.name)
            .build();
        sent.add(
            7,
            &[KeyValue::new(
                semconv::attribute::MESH_IO_DIRECTION,
                "transmit",
            )],
        );
        let bytes = semconv::metric::TRANSPORT_BYTES;
        meter
            .u64_counter(bytes.name)
            .with_unit(bytes.unit)
            .with_description(bytes.brief)
            .build()
            .add(1_200, &[]);
        let text = metrics.render().unwrap();
        assert!(
            text.contains(&format!(
                "# HELP knhk_transport_bytes_total {}",
                bytes.brief
            )),
            "{text}"
        );
        assert!(
            text.lines()
                .any(|line| line.starts_with("knhk_transport_bytes_total{")
                    && line.ends_with(" 1200")),
            "no unit suffix: {text}"
        );
        assert!(
            text.contains("# TYPE knhk_gossip_messages_total counter"),
            "{text}"
        );
        assert!(
            text.lines()
                .any(|line| line.starts_with("knhk_gossip_messages_total{")
                    && line.contains("knhk_mesh_io_direction=\"transmit\"")
                    && line.ends_with(" 7")),
            "{text}"
        );
    }
}
