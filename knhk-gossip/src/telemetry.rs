//! What a running [`crate::Mesh`] reports to OpenTelemetry.
//!
//! Metrics are read, once per export interval, from a snapshot of the counters the core,
//! the Byzantine gate and the transport keep anyway (published by the driver after each
//! round), so nothing on the per-message path records a metric except one histogram
//! sample of the time a frame took. Every name, unit and instrument comes from
//! [`knhk_telemetry::semconv`], generated from the registry.

use std::time::{Duration, Instant};

use knhk_security::{RejectReason, ReputationSummary, ValidatorStats};
use knhk_telemetry::MetricSpec;
use knhk_telemetry::observed::{Published, Read};
use knhk_telemetry::semconv::{attribute, metric, value};
use knhk_transport::TransportStats;
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Histogram, Meter};

use crate::mesh::MeshStatus;

/// What the driver publishes after each round.
#[derive(Clone, Debug, Default)]
pub(crate) struct Snapshot {
    pub(crate) status: Option<MeshStatus>,
    pub(crate) validator: ValidatorStats,
    pub(crate) reputation: ReputationSummary,
    pub(crate) transport: TransportStats,
}

/// The mesh's instruments and the convergence being timed.
#[derive(Debug)]
pub(crate) struct MeshTelemetry {
    snapshot: Published<Snapshot>,
    frame_duration: Histogram<f64>,
    convergence_duration: Histogram<f64>,
    convergence_rounds: Histogram<u64>,
    /// When (and in which round) the state first changed since the last convergence.
    change_started: Option<(Instant, u64)>,
}

impl MeshTelemetry {
    /// Registers every instrument of the mesh on `meter`.
    pub(crate) fn register(meter: &Meter) -> Self {
        Self {
            snapshot: Published::register(meter, Snapshot::default(), OBSERVED),
            frame_duration: histogram(meter, metric::GOSSIP_FRAME_DURATION, &FRAME_SECONDS),
            convergence_duration: histogram(
                meter,
                metric::GOSSIP_CONVERGENCE_DURATION,
                &CONVERGENCE_SECONDS,
            ),
            convergence_rounds: meter
                .u64_histogram(metric::GOSSIP_CONVERGENCE_ROUNDS.name)
                .with_unit(metric::GOSSIP_CONVERGENCE_ROUNDS.unit)
                .with_description(metric::GOSSIP_CONVERGENCE_ROUNDS.brief)
                .with_boundaries(CONVERGENCE_ROUNDS.to_vec())
                .build(),
            change_started: None,
        }
    }

    /// Replaces the snapshot the metrics are read from.
    pub(crate) fn publish(&self, snapshot: Snapshot) {
        self.snapshot.publish(snapshot);
    }

    /// One inbound frame took `elapsed` to check and apply.
    pub(crate) fn frame_handled(&self, elapsed: Duration) {
        self.frame_duration.record(elapsed.as_secs_f64(), &[]);
    }

    /// The local state changed in `round`.
    pub(crate) fn state_changed(&mut self, now: Instant, round: u64) {
        self.change_started.get_or_insert((now, round));
    }

    /// The node declared convergence in `round`.
    pub(crate) fn converged(&mut self, now: Instant, round: u64) {
        if let Some((since, first_round)) = self.change_started.take() {
            self.convergence_duration
                .record(now.saturating_duration_since(since).as_secs_f64(), &[]);
            self.convergence_rounds
                .record(round.saturating_sub(first_round), &[]);
        }
    }
}

const FRAME_SECONDS: [f64; 12] = [
    1e-6, 2e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 1e-2, 1e-1,
];
const CONVERGENCE_SECONDS: [f64; 11] = [0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0];
const CONVERGENCE_ROUNDS: [f64; 12] = [
    1.0, 2.0, 3.0, 4.0, 5.0, 7.0, 10.0, 15.0, 20.0, 30.0, 50.0, 100.0,
];

fn histogram(meter: &Meter, spec: MetricSpec, bounds: &[f64]) -> Histogram<f64> {
    meter
        .f64_histogram(spec.name)
        .with_unit(spec.unit)
        .with_description(spec.brief)
        .with_boundaries(bounds.to_vec())
        .build()
}

fn kv(key: &'static str, value: &'static str) -> KeyValue {
    KeyValue::new(key, value)
}

fn io(direction: &'static str) -> [KeyValue; 1] {
    [kv(attribute::MESH_IO_DIRECTION, direction)]
}

fn gossip(snapshot: &Snapshot) -> (crate::GossipStats, &Option<MeshStatus>) {
    let stats = snapshot
        .status
        .as_ref()
        .map(|status| status.gossip.stats)
        .unwrap_or_default();
    (stats, &snapshot.status)
}

fn node(snapshot: &Snapshot) -> knhk_endpoint::EndpointStats {
    snapshot
        .status
        .as_ref()
        .map(|status| status.node)
        .unwrap_or_default()
}

/// Every observed metric and how to read it.
const OBSERVED: &[(MetricSpec, Read<Snapshot>)] = &[
    (metric::TRANSPORT_FRAMES, |s, emit| {
        emit(
            s.transport.frames_sent,
            &io(value::mesh_io_direction::TRANSMIT),
        );
        emit(
            s.transport.frames_received,
            &io(value::mesh_io_direction::RECEIVE),
        );
    }),
    (metric::TRANSPORT_BYTES, |s, emit| {
        emit(
            s.transport.bytes_sent,
            &io(value::mesh_io_direction::TRANSMIT),
        );
        emit(
            s.transport.bytes_received,
            &io(value::mesh_io_direction::RECEIVE),
        );
    }),
    (metric::TRANSPORT_FRAMES_OVERSIZED, |s, emit| {
        emit(s.transport.frames_rejected_too_large, &[]);
    }),
    (metric::TRANSPORT_FRAMES_OVER_BUDGET, |s, emit| {
        emit(s.transport.frames_over_budget, &[]);
    }),
    (metric::TRANSPORT_HANDSHAKES, |s, emit| {
        use value::transport_connection_direction::{INBOUND, OUTBOUND};
        use value::transport_handshake_outcome::{ESTABLISHED, FAILED, REJECTED};
        let outcome = |o| kv(attribute::TRANSPORT_HANDSHAKE_OUTCOME, o);
        let direction = |d| kv(attribute::TRANSPORT_CONNECTION_DIRECTION, d);
        let t = &s.transport;
        emit(
            t.connections_dialed,
            &[outcome(ESTABLISHED), direction(OUTBOUND)],
        );
        emit(
            t.connections_accepted,
            &[outcome(ESTABLISHED), direction(INBOUND)],
        );
        emit(
            t.handshakes_rejected_outbound,
            &[outcome(REJECTED), direction(OUTBOUND)],
        );
        emit(
            t.handshakes_rejected_inbound,
            &[outcome(REJECTED), direction(INBOUND)],
        );
        emit(
            t.handshakes_failed_outbound,
            &[outcome(FAILED), direction(OUTBOUND)],
        );
        emit(
            t.handshakes_failed_inbound,
            &[outcome(FAILED), direction(INBOUND)],
        );
    }),
    (metric::TRANSPORT_CONNECTIONS_OPEN, |s, emit| {
        emit(s.transport.connections_open, &[]);
    }),
    (metric::TRANSPORT_ADMISSIONS_REFUSED, |s, emit| {
        for reason in knhk_types::RefusalReason::ALL {
            let attributes = [kv(attribute::TRANSPORT_ADMISSION_REFUSAL, reason.as_str())];
            emit(s.transport.admissions_refused.get(reason), &attributes);
        }
    }),
    (metric::TRANSPORT_PEERS_ADMITTED, |s, emit| {
        emit(s.transport.peers_admitted, &[]);
    }),
    (metric::SECURITY_FRAMES_ACCEPTED, |s, emit| {
        emit(s.validator.accepted, &[])
    }),
    (metric::SECURITY_FRAMES_REJECTED, |s, emit| {
        for reason in RejectReason::ALL {
            let attributes = [kv(attribute::SECURITY_REJECTION_REASON, reason.as_str())];
            emit(s.validator.rejected_for(reason), &attributes);
        }
    }),
    (metric::SECURITY_FRAMES_DELAYED, |s, emit| {
        emit(s.validator.stale_after_queueing, &[]);
    }),
    (metric::SECURITY_BANS, |s, emit| emit(s.validator.bans, &[])),
    (metric::SECURITY_SENDERS_BANNED, |s, emit| {
        emit(s.reputation.banned as u64, &[]);
    }),
    (metric::SECURITY_REPUTATION_LOWEST, |s, emit| {
        emit(u64::from(s.reputation.lowest), &[]);
    }),
    (metric::SECURITY_SIGNATURES_VERIFIED, |s, emit| {
        let verifier = &s.validator.verifier;
        emit(verifier.single_verifications + verifier.batch_verified, &[]);
    }),
    (metric::SECURITY_SIGNATURES_CACHE_HITS, |s, emit| {
        emit(s.validator.verifier.cache_hits, &[]);
    }),
    (metric::SECURITY_SENDERS_TRACKED, |s, emit| {
        emit(s.validator.tracked_senders as u64, &[]);
    }),
    (metric::SECURITY_REPLAY_ENTRIES, |s, emit| {
        emit(s.validator.replay_entries as u64, &[]);
    }),
    (metric::CRDT_KEYS, |s, emit| {
        emit(
            s.status
                .as_ref()
                .map_or(0, |status| status.gossip.keys as u64),
            &[],
        );
    }),
    (metric::CRDT_WRITERS, |s, emit| {
        emit(
            s.status
                .as_ref()
                .map_or(0, |status| status.gossip.writers as u64),
            &[],
        );
    }),
    (metric::CRDT_DELTAS_MERGED, |s, emit| {
        emit(gossip(s).0.deltas_merged, &[])
    }),
    (metric::GOSSIP_ROUNDS, |s, emit| {
        emit(gossip(s).0.rounds, &[])
    }),
    (metric::GOSSIP_MESSAGES, |s, emit| {
        let stats = node(s);
        emit(stats.frames_sent, &io(value::mesh_io_direction::TRANSMIT));
        emit(
            stats.frames_received,
            &io(value::mesh_io_direction::RECEIVE),
        );
    }),
    (metric::GOSSIP_MESSAGES_DROPPED, |s, emit| {
        use value::gossip_drop_reason::{OVERSIZED, QUEUE_FULL, SENDS_IN_FLIGHT};
        let reason = |r| [kv(attribute::GOSSIP_DROP_REASON, r)];
        let stats = node(s);
        let driver = s
            .status
            .as_ref()
            .map(|status| status.driver)
            .unwrap_or_default();
        emit(stats.outputs_dropped, &reason(QUEUE_FULL));
        emit(stats.oversized_dropped, &reason(OVERSIZED));
        emit(driver.sends_dropped, &reason(SENDS_IN_FLIGHT));
    }),
    (metric::GOSSIP_MESSAGES_DECLINED, |s, emit| {
        use value::gossip_decline_reason::{
            BUDGET_SPENT, CATCH_UP_DEFERRED, FOREIGN_WRITER, OUTSIDE_SESSION,
            VERIFICATIONS_DEFERRED, VERSION_TOO_LARGE, WRITER_QUOTA,
        };
        let reason = |r| [kv(attribute::GOSSIP_DECLINE_REASON, r)];
        let stats = gossip(s).0;
        emit(stats.foreign_writers_refused, &reason(FOREIGN_WRITER));
        emit(stats.requests_over_budget, &reason(BUDGET_SPENT));
        emit(stats.catch_up_deferred, &reason(CATCH_UP_DEFERRED));
        emit(
            stats.verifications_deferred,
            &reason(VERIFICATIONS_DEFERRED),
        );
        emit(stats.entries_ignored, &reason(OUTSIDE_SESSION));
        emit(stats.versions_too_large, &reason(VERSION_TOO_LARGE));
        emit(stats.writer_quota_deferred, &reason(WRITER_QUOTA));
    }),
    (metric::GOSSIP_NEWS_FORWARDED, |s, emit| {
        emit(gossip(s).0.news_forwarded, &[])
    }),
    (metric::GOSSIP_DIFFS, |s, emit| {
        use value::gossip_diff_phase::{COMPLETED, STARTED};
        let phase = |p| [kv(attribute::GOSSIP_DIFF_PHASE, p)];
        let stats = gossip(s).0;
        emit(stats.diffs_started, &phase(STARTED));
        emit(stats.diffs_completed, &phase(COMPLETED));
    }),
    (metric::GOSSIP_CONVERGED, |s, emit| {
        let converged = gossip(s)
            .1
            .as_ref()
            .is_some_and(|status| status.gossip.converged);
        emit(u64::from(converged), &[]);
    }),
    (metric::GOSSIP_PEERS_KNOWN, |s, emit| {
        emit(
            gossip(s).1.as_ref().map_or(0, |status| status.peers as u64),
            &[],
        );
    }),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rejection_reason_is_a_registered_value() {
        let registered = value::security_rejection_reason::ALL;
        for reason in RejectReason::ALL {
            assert!(registered.contains(&reason.as_str()), "{}", reason.as_str());
        }
        assert_eq!(registered.len(), RejectReason::ALL.len());
    }

    #[test]
    fn observed_metrics_are_counters_or_gauges_and_the_rest_are_histograms() {
        use knhk_telemetry::Instrument;
        for (spec, _) in OBSERVED {
            assert!(
                matches!(spec.instrument, Instrument::Counter | Instrument::Gauge),
                "{} is a {:?}",
                spec.name,
                spec.instrument
            );
        }
        let observed: Vec<&str> = OBSERVED.iter().map(|(spec, _)| spec.name).collect();
        // The layers above gossip report their own metrics.
        let above = ["knhk.topology."];
        for spec in metric::ALL {
            if !observed.contains(&spec.name) && !above.iter().any(|p| spec.name.starts_with(p)) {
                assert_eq!(
                    spec.instrument,
                    Instrument::Histogram,
                    "{} not observed",
                    spec.name
                );
            }
        }
    }
}
