//! [`TelemetryError`].

/// What can go wrong installing or reading telemetry.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// OTLP export was asked for (`OTEL_EXPORTER_OTLP_ENDPOINT` is set) outside a tokio
    /// runtime; the gRPC exporter needs one. Call `init_from_env` inside the runtime.
    #[error("OTLP export needs a tokio runtime: call init_from_env from inside one")]
    NoTokioRuntime,
    /// An OTLP exporter could not be built (for example a malformed endpoint).
    #[error("OTLP exporter: {0}")]
    Exporter(String),
    /// A global tracing subscriber was already installed.
    #[error("tracing subscriber already installed: {0}")]
    Subscriber(String),
    /// The Prometheus exporter could not be built or could not render its text.
    #[error("Prometheus metrics: {0}")]
    Prometheus(String),
    /// Flushing or reading the in-memory exporters failed.
    #[error("collecting telemetry: {0}")]
    Collect(String),
}
