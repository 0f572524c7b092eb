//! The tracing → OpenTelemetry layers, configured the same way for export and for the
//! live check: spans through `tracing-opentelemetry`, registered events as log records
//! through OpenTelemetry's tracing appender.

use opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::trace::Tracer;
use tracing::{Metadata, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::registry::LookupSpan;

use crate::EVENT_TARGET;

/// The `tracing-opentelemetry` layer over `tracer`, passing only the mesh's spans (those
/// of `knhk` crates; quinn's, for instance, stay out). Events never become span events
/// here: `tracing-opentelemetry` adds `level` and `target` attributes to every span
/// event, which are not in the registry; registered events go through [`event_layer`]
/// as log records instead (OpenTelemetry's event model). No source location, thread,
/// level, target or busy/idle time is added to spans.
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
        .with_filter(filter_fn(mesh_span))
}

/// A layer turning the mesh's registered events (target [`EVENT_TARGET`]) into
/// OpenTelemetry log records of `provider`: the record's event name is the tracing
/// event's `name:` (a registry event name), its attributes the event's fields, with no
/// attribute added. Ordinary log events stay out (they go to stderr).
pub fn event_layer<S>(provider: &SdkLoggerProvider) -> impl Layer<S> + use<S>
where
    S: Subscriber + for<'span> LookupSpan<'span>,
{
    OpenTelemetryTracingBridge::new(provider).with_filter(filter_fn(registered_event))
}

fn mesh_span(metadata: &Metadata<'_>) -> bool {
    metadata.is_span() && metadata.target().starts_with("knhk")
}

fn registered_event(metadata: &Metadata<'_>) -> bool {
    metadata.is_event() && metadata.target() == EVENT_TARGET
}
