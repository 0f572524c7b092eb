//! Observable instruments read from a snapshot a driver publishes.
//!
//! A driver keeps its counters anyway; recording each increment as a metric would put
//! work on the per-message path. Instead it publishes a snapshot now and then
//! ([`Published::publish`]) and the metrics read it at each collection. The callbacks
//! hold the snapshot weakly: once the [`Published`] is dropped they report nothing.

use std::sync::{Arc, Mutex, PoisonError, Weak};

use opentelemetry::KeyValue;
use opentelemetry::metrics::{AsyncInstrument, Meter, ObservableCounter, ObservableGauge};

use crate::{Instrument, MetricSpec};

/// Emits one value with its attributes.
pub type Emit<'a> = &'a mut dyn FnMut(u64, &[KeyValue]);

/// Reads the values of one metric from a snapshot.
pub type Read<T> = fn(&T, Emit<'_>);

/// A registered observable instrument. Its callback lives as long as the meter
/// provider; dropping it does not unregister the callback.
#[derive(Debug)]
#[allow(dead_code)] // Held for the record.
enum Observed {
    Counter(ObservableCounter<u64>),
    Gauge(ObservableGauge<u64>),
}

/// A snapshot of type `T` and the observable metrics read from it.
#[derive(Debug)]
pub struct Published<T> {
    snapshot: Arc<Mutex<T>>,
    _observed: Vec<Observed>,
}

impl<T: Send + 'static> Published<T> {
    /// Registers every metric of `metrics` on `meter`, each read from the snapshot
    /// (starting as `initial`) by its function. A spec whose instrument is a gauge
    /// becomes an observable gauge; any other becomes an observable counter, so give
    /// only counters and gauges (a histogram cannot be observed).
    pub fn register(meter: &Meter, initial: T, metrics: &[(MetricSpec, Read<T>)]) -> Self {
        let snapshot = Arc::new(Mutex::new(initial));
        let observed = metrics
            .iter()
            .map(|(spec, read)| observe(meter, *spec, &snapshot, *read))
            .collect();
        Self {
            snapshot,
            _observed: observed,
        }
    }

    /// Replaces the snapshot the metrics are read from.
    pub fn publish(&self, snapshot: T) {
        *self.snapshot.lock().unwrap_or_else(PoisonError::into_inner) = snapshot;
    }
}

fn observe<T: Send + 'static>(
    meter: &Meter,
    spec: MetricSpec,
    snapshot: &Arc<Mutex<T>>,
    read: Read<T>,
) -> Observed {
    let shared: Weak<Mutex<T>> = Arc::downgrade(snapshot);
    let callback = move |observer: &dyn AsyncInstrument<u64>| {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let snapshot = shared.lock().unwrap_or_else(PoisonError::into_inner);
        read(&snapshot, &mut |value, attributes| {
            observer.observe(value, attributes);
        });
    };
    match spec.instrument {
        Instrument::Gauge => Observed::Gauge(
            meter
                .u64_observable_gauge(spec.name)
                .with_unit(spec.unit)
                .with_description(spec.brief)
                .with_callback(callback)
                .build(),
        ),
        _ => Observed::Counter(
            meter
                .u64_observable_counter(spec.name)
                .with_unit(spec.unit)
                .with_description(spec.brief)
                .with_callback(callback)
                .build(),
        ),
    }
}
