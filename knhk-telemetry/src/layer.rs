//! The tracing → OpenTelemetry layer, configured the same way for export and for the
//! live check.

use opentelemetry_sdk::trace::Tracer;
use tracing::{Metadata, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::registry::LookupSpan;

use crate::EVENT_TARGET;

/// The `tracing-opentelemetry` layer over `tracer`, passing only the mesh's registered
/// signals: spans from `knhk` crates, and events with target [`EVENT_TARGET`]. Other
/// crates' spans (quinn's, for instance) and ordinary log events stay out of the
/// export (logs go to stderr). No source location, thread, level, target or busy/idle
/// time is added: those attributes are not in the registry.
pub fn otel_layer<S>(tracer: Tracer) -> impl Layer<S>
where
    S: Subscriber + for<'span> LookupSpan<'span>,
{
    tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_location(false)
        .with_threads(false)
        .with_level(false)
        .with_target(false)
        .with_tracked_inactivity(false)
        .with_filter(filter_fn(registered_only))
}

fn registered_only(metadata: &Metadata<'_>) -> bool {
    if metadata.is_span() {
        metadata.target().starts_with("knhk")
    } else {
        metadata.target() == EVENT_TARGET
    }
}
