//! [`init`]: logs always, OTLP export when the environment asks for it, a Prometheus
//! page when the program asks for one.

use opentelemetry::Key;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::prelude::*;
use tracing_subscriber::{EnvFilter, fmt};

use crate::{TelemetryError, event_layer, otel_layer};

/// The variable whose presence turns OTLP export on.
const ENDPOINT_VARIABLE: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

/// Keeps OTLP export running; dropping it flushes and shuts the exporters down (up to
/// a few seconds when a collector is unreachable). Hold it in `main` for the life of
/// the process, and drop it outside any single-threaded tokio runtime's only thread.
#[must_use = "dropping the guard shuts telemetry export down"]
#[derive(Debug, Default)]
pub struct TelemetryGuard {
    tracer_provider: Option<SdkTracerProvider>,
    meter_provider: Option<SdkMeterProvider>,
    logger_provider: Option<SdkLoggerProvider>,
    #[cfg(feature = "prometheus")]
    prometheus: Option<crate::PrometheusMetrics>,
}

impl TelemetryGuard {
    /// True when OTLP export was installed.
    pub fn exporting(&self) -> bool {
        self.tracer_provider.is_some()
    }

    /// The Prometheus page's metrics, when [`init`] was asked for them; `None`
    /// otherwise.
    #[cfg(feature = "prometheus")]
    pub fn prometheus(&self) -> Option<crate::PrometheusMetrics> {
        self.prometheus.clone()
    }

    /// Flushes and shuts export down now, reporting failure (dropping the guard does the
    /// same but can only log). Call it outside a single-threaded runtime's only thread.
    ///
    /// Errors: [`TelemetryError::Exporter`] if a provider could not flush or shut down
    /// (for example, the collector was unreachable).
    pub fn shutdown(mut self) -> Result<(), TelemetryError> {
        let spans = self.tracer_provider.take().map(|p| p.shutdown());
        let metrics = self.meter_provider.take().map(|p| p.shutdown());
        let events = self.logger_provider.take().map(|p| p.shutdown());
        for outcome in [spans, metrics, events].into_iter().flatten() {
            outcome.map_err(|e| TelemetryError::Exporter(e.to_string()))?;
        }
        Ok(())
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.tracer_provider.take()
            && let Err(error) = provider.shutdown()
        {
            tracing::warn!(%error, "shutting down span export");
        }
        if let Some(provider) = self.meter_provider.take()
            && let Err(error) = provider.shutdown()
        {
            tracing::warn!(%error, "shutting down metric export");
        }
        if let Some(provider) = self.logger_provider.take()
            && let Err(error) = provider.shutdown()
        {
            tracing::warn!(%error, "shutting down event export");
        }
    }
}

/// What [`init`] installs beside the logs on stderr.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Exports {
    /// Record metrics for a Prometheus scrape page: [`TelemetryGuard::prometheus`] then
    /// renders them ([`PrometheusMetrics`](crate::PrometheusMetrics), feature
    /// `prometheus`). Without that feature this is ignored.
    pub prometheus: bool,
}

/// [`init`] with no Prometheus page: logs, plus OTLP export when
/// `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
///
/// Errors: as [`init`].
pub fn init_from_env(default_service_name: &str) -> Result<TelemetryGuard, TelemetryError> {
    init(default_service_name, Exports::default())
}

/// Installs the process's tracing subscriber and meter provider:
///
/// - always: human-readable logs on stderr, filtered by `RUST_LOG` (default `info`,
///   with the OpenTelemetry SDK's own chatter at `warn`);
/// - only when `OTEL_EXPORTER_OTLP_ENDPOINT` is set and not empty: OTLP/gRPC export of
///   spans and registered events (as log records; both batched) and metrics (every
///   `OTEL_METRIC_EXPORT_INTERVAL` ms, default 60 s). The other standard
///   `OTEL_EXPORTER_OTLP_*` variables (headers, timeout, per-signal endpoints) are read
///   by the exporters;
/// - when `exports.prometheus` (feature `prometheus`): the same metrics, kept for
///   [`TelemetryGuard::prometheus`] to render on each scrape.
///
/// Both kinds of export share one resource, named by `OTEL_SERVICE_NAME` (else
/// `service.name` from `OTEL_RESOURCE_ATTRIBUTES`, else `default_service_name`) and
/// carrying the `OTEL_RESOURCE_ATTRIBUTES`, and one meter provider, which becomes the
/// global one the mesh records into: call this before starting a node. With neither,
/// nothing is exported and the global meter stays the no-op one, so instrumentation
/// costs a few nanoseconds.
///
/// Errors: [`TelemetryError::NoTokioRuntime`] if OTLP export is asked for outside a
/// tokio runtime; [`TelemetryError::Exporter`] if an OTLP exporter cannot be built;
/// [`TelemetryError::Prometheus`] if the Prometheus exporter cannot;
/// [`TelemetryError::Subscriber`] if a global subscriber is already installed (nothing
/// is installed then).
pub fn init(
    default_service_name: &str,
    exports: Exports,
) -> Result<TelemetryGuard, TelemetryError> {
    // The filter applies to the logs only: `RUST_LOG=warn` quiets stderr without
    // dropping the exported spans.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,opentelemetry=warn,opentelemetry_sdk=warn"));
    // Colours only for a terminal: redirected logs stay plain text.
    let logs = fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(filter);
    let otlp = std::env::var_os(ENDPOINT_VARIABLE).is_some_and(|value| !value.is_empty());
    let prometheus = cfg!(feature = "prometheus") && exports.prometheus;
    if !otlp && !prometheus {
        tracing_subscriber::registry()
            .with(logs)
            .try_init()
            .map_err(|e| TelemetryError::Subscriber(e.to_string()))?;
        return Ok(TelemetryGuard::default());
    }
    if otlp && tokio::runtime::Handle::try_current().is_err() {
        return Err(TelemetryError::NoTokioRuntime);
    }
    let resource = resource_from_env(default_service_name);
    let mut meters = SdkMeterProvider::builder().with_resource(resource.clone());
    #[cfg(feature = "prometheus")]
    let mut scrape_page = None;
    #[cfg(feature = "prometheus")]
    if prometheus {
        let (exporter, metrics) = crate::prometheus::exporter()?;
        meters = meters.with_reader(exporter);
        scrape_page = Some(metrics);
    }
    let mut tracer_provider = None;
    let mut logger_provider = None;
    if otlp {
        let exporter_error =
            |e: opentelemetry_otlp::ExporterBuildError| TelemetryError::Exporter(e.to_string());
        let span_exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()
            .map_err(exporter_error)?;
        let metric_exporter = opentelemetry_otlp::MetricExporter::builder()
            .with_tonic()
            .build()
            .map_err(exporter_error)?;
        let log_exporter = opentelemetry_otlp::LogExporter::builder()
            .with_tonic()
            .build()
            .map_err(exporter_error)?;
        meters = meters.with_periodic_exporter(metric_exporter);
        tracer_provider = Some(
            SdkTracerProvider::builder()
                .with_batch_exporter(span_exporter)
                .with_resource(resource.clone())
                .build(),
        );
        logger_provider = Some(
            SdkLoggerProvider::builder()
                .with_batch_exporter(log_exporter)
                .with_resource(resource)
                .build(),
        );
    }
    let meter_provider = meters.build();
    let spans = tracer_provider
        .as_ref()
        .map(|provider| otel_layer(provider.tracer("knhk")));
    let events = logger_provider.as_ref().map(event_layer);
    let installed = tracing_subscriber::registry()
        .with(logs)
        .with(spans)
        .with(events)
        .try_init();
    let guard = TelemetryGuard {
        tracer_provider,
        meter_provider: Some(meter_provider),
        logger_provider,
        #[cfg(feature = "prometheus")]
        prometheus: scrape_page,
    };
    if let Err(error) = installed {
        // Nothing was installed: the guard's drop stops the exporters rather than
        // leave them running.
        drop(guard);
        return Err(TelemetryError::Subscriber(error.to_string()));
    }
    // Only once the subscriber is in: the mesh records into the global meter.
    if let Some(provider) = &guard.meter_provider {
        opentelemetry::global::set_meter_provider(provider.clone());
    }
    if let Some(provider) = &guard.tracer_provider {
        opentelemetry::global::set_tracer_provider(provider.clone());
    }
    Ok(guard)
}

/// The resource from the environment. The SDK's builder reads `OTEL_SERVICE_NAME` and
/// `OTEL_RESOURCE_ATTRIBUTES`, but lets a `service.name` in the latter win; the
/// specification says `OTEL_SERVICE_NAME` wins, so it is applied last.
fn resource_from_env(default_service_name: &str) -> Resource {
    let from_env = Resource::builder().build();
    let name = std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|name| !name.is_empty())
        .or_else(|| {
            from_env
                .get(&Key::from_static_str("service.name"))
                .map(|value| value.to_string())
                .filter(|name| !name.starts_with("unknown_service"))
        })
        .unwrap_or_else(|| default_service_name.to_owned());
    Resource::builder().with_service_name(name).build()
}
