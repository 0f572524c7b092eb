//! Telemetry of the KNHK mesh.
//!
//! Every span, metric, event and attribute the mesh emits is defined first in the
//! OpenTelemetry semantic-convention registry at the repository root (`registry/`, in
//! Weaver's format). [`semconv`] holds those names as constants, generated from the
//! registry by `cargo xtask weaver gen`; `cargo xtask weaver` fails when the file is out
//! of date, and its live check fails when a run emits anything the registry lacks (or
//! the registry lists anything a run never emits). Instrumented crates take every name
//! from here, so a name cannot drift.
//!
//! - [`semconv`]: the names, and each metric's unit and instrument ([`MetricSpec`]).
//! - [`observed`]: observable metrics read from a snapshot a driver publishes.
//! - [`EmittedSignals`]: what a run emitted, as compared against the registry.
//! - `init_from_env` (feature `otlp`): human-readable logs on stderr filtered by
//!   `RUST_LOG`, plus OTLP export of spans, metrics and registered events when
//!   `OTEL_EXPORTER_OTLP_ENDPOINT` is set (honouring `OTEL_SERVICE_NAME` and
//!   `OTEL_RESOURCE_ATTRIBUTES`). When it is not set nothing is exported, and the
//!   mesh's instruments record into OpenTelemetry's no-op meter.
//! - `init` with `Exports { prometheus: true }` (feature `prometheus`): the same, plus
//!   the metrics rendered as Prometheus text on demand (`PrometheusMetrics`), for a
//!   `/metrics` page.
//! - `Collector` (feature `testing`): in-memory exporters that record every signal.

mod emitted;
pub mod observed;
pub mod semconv;

#[cfg(feature = "testing")]
mod collect;
#[cfg(feature = "sdk")]
mod error;
#[cfg(feature = "otlp")]
mod init;
#[cfg(feature = "sdk")]
mod layer;
#[cfg(feature = "prometheus")]
mod prometheus;

#[cfg(feature = "testing")]
pub use collect::Collector;
pub use emitted::{EmittedAttribute, EmittedEvent, EmittedMetric, EmittedSignals, EmittedSpan};
#[cfg(feature = "sdk")]
pub use error::TelemetryError;
#[cfg(feature = "otlp")]
pub use init::{Exports, TelemetryGuard, init, init_from_env};
#[cfg(feature = "sdk")]
pub use layer::{event_layer, otel_layer};
#[cfg(feature = "prometheus")]
pub use prometheus::PrometheusMetrics;

/// The `tracing` target of registered events: emit a registry event as
/// `tracing::info!(name: semconv::event::NAME, target: EVENT_TARGET, …fields…)` (the
/// `name:` is the event's name, the fields its attributes). Only events with this target
/// reach OpenTelemetry, as log records with that event name (OpenTelemetry's event
/// model); other events are logs on stderr.
pub const EVENT_TARGET: &str = "knhk::telemetry";

/// The kind of instrument a registered metric is recorded with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Instrument {
    /// A monotonic sum.
    Counter,
    /// A sum that can go down.
    UpDownCounter,
    /// A value sampled at collection time.
    Gauge,
    /// A distribution.
    Histogram,
}

impl Instrument {
    /// The registry's name for this instrument (`counter`, `updowncounter`, `gauge`,
    /// `histogram`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::UpDownCounter => "updowncounter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
        }
    }
}

/// A registered metric: its name, its UCUM unit and its instrument, exactly as in the
/// registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MetricSpec {
    /// The metric name (`knhk.…`).
    pub name: &'static str,
    /// The unit, in UCUM (`By`, `s`, `{frame}`, …).
    pub unit: &'static str,
    /// The instrument it is recorded with.
    pub instrument: Instrument,
    /// The registry's one-line description (the instrument's description, and the
    /// `# HELP` line a Prometheus scrape shows).
    pub brief: &'static str,
}

impl MetricSpec {
    /// The family name a Prometheus scrape of `/metrics` shows for this metric: the
    /// name with dots turned into underscores, and `_total` after a counter's
    /// (`knhk.gossip.messages` → `knhk_gossip_messages_total`). A histogram's samples
    /// add `_bucket`, `_sum` and `_count` to it.
    pub fn prometheus_name(&self) -> String {
        let name = self.name.replace('.', "_");
        match self.instrument {
            Instrument::Counter => format!("{name}_total"),
            Instrument::UpDownCounter | Instrument::Gauge | Instrument::Histogram => name,
        }
    }
}
