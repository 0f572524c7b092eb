//! What telemetry adds per inbound frame in the mesh driver: two clock reads and one
//! histogram sample, with no exporter installed (the global no-op meter) and with the
//! SDK recording.
#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use knhk_telemetry::Collector;
use knhk_telemetry::semconv::metric::GOSSIP_FRAME_DURATION;
use opentelemetry::metrics::Histogram;

fn per_frame(histogram: &Histogram<f64>) {
    let started = Instant::now();
    black_box(());
    histogram.record(started.elapsed().as_secs_f64(), &[]);
}

fn bench(c: &mut Criterion) {
    let noop = opentelemetry::global::meter("knhk")
        .f64_histogram(GOSSIP_FRAME_DURATION.name)
        .build();
    c.bench_function("frame telemetry, no exporter", |b| {
        b.iter(|| per_frame(&noop))
    });
    let collector = Collector::new();
    let recording = collector
        .meter("knhk")
        .f64_histogram(GOSSIP_FRAME_DURATION.name)
        .with_unit(GOSSIP_FRAME_DURATION.unit)
        .build();
    c.bench_function("frame telemetry, SDK recording", |b| {
        b.iter(|| per_frame(&recording))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
