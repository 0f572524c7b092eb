//! What a running topology layer reports to OpenTelemetry (feature `runtime`): the
//! metrics of `registry/topology.yaml`, read from a snapshot the observer publishes
//! after each of the layer's timers, and its two events as log records. Every name
//! comes from [`knhk_telemetry::semconv`], generated from the registry.

use knhk_endpoint::Reachability;
use knhk_telemetry::MetricSpec;
use knhk_telemetry::observed::{Published, Read};
use knhk_telemetry::semconv::{attribute, event, metric, value};
use knhk_types::AgentId;
use opentelemetry::KeyValue;
use opentelemetry::metrics::Meter;

use crate::membership::MemberState;
use crate::runtime::TopologyStatus;

/// The layer's metrics, read from the last published status.
#[derive(Debug)]
pub(crate) struct TopologyTelemetry {
    snapshot: Published<Option<TopologyStatus>>,
}

impl TopologyTelemetry {
    /// Registers every topology metric on `meter`.
    pub(crate) fn register(meter: &Meter) -> Self {
        Self {
            snapshot: Published::register(meter, None, OBSERVED),
        }
    }

    /// Replaces the status the metrics are read from.
    pub(crate) fn publish(&self, status: TopologyStatus) {
        self.snapshot.publish(Some(status));
    }
}

/// The registry's value for a member state.
pub(crate) fn state_value(state: MemberState) -> &'static str {
    use value::topology_member_state::{ALIVE, DEAD, LEFT, SUSPECT};
    match state {
        MemberState::Alive => ALIVE,
        MemberState::Suspect => SUSPECT,
        MemberState::Dead => DEAD,
        MemberState::Left => LEFT,
    }
}

/// Emits `knhk.topology.member.changed`.
pub(crate) fn member_changed(
    member: AgentId,
    from: MemberState,
    to: MemberState,
    incarnation: u64,
) {
    tracing::event!(
        name: event::TOPOLOGY_MEMBER_CHANGED,
        target: knhk_telemetry::EVENT_TARGET,
        tracing::Level::INFO,
        { attribute::MESH_PEER_ID } = tracing::field::display(member),
        { attribute::TOPOLOGY_MEMBER_STATE } = state_value(to),
        { attribute::TOPOLOGY_MEMBER_PREVIOUS_STATE } = state_value(from),
        { attribute::TOPOLOGY_MEMBER_INCARNATION } = i64::try_from(incarnation).unwrap_or(i64::MAX),
        "member changed",
    );
}

/// Emits `knhk.topology.partition.changed`.
pub(crate) fn partition_changed(partitioned: bool, reachability: Reachability) {
    let int = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    tracing::event!(
        name: event::TOPOLOGY_PARTITION_CHANGED,
        target: knhk_telemetry::EVENT_TARGET,
        tracing::Level::INFO,
        { attribute::TOPOLOGY_PARTITIONED } = partitioned,
        { attribute::TOPOLOGY_REACHABLE } = int(reachability.reachable),
        { attribute::TOPOLOGY_QUORUM } = int(reachability.required()),
        "partition changed",
    );
}

fn stats(status: &Option<TopologyStatus>) -> crate::SwimStats {
    status.as_ref().map(|s| s.stats).unwrap_or_default()
}

/// Every observed metric and how to read it.
const OBSERVED: &[(MetricSpec, Read<Option<TopologyStatus>>)] = &[
    (metric::TOPOLOGY_MEMBERS, |s, emit| {
        let view = s.as_ref().map(|s| s.view).unwrap_or_default();
        let states = [
            MemberState::Alive,
            MemberState::Suspect,
            MemberState::Dead,
            MemberState::Left,
        ];
        for (state, count) in states.into_iter().zip(view) {
            let attributes = [KeyValue::new(
                attribute::TOPOLOGY_MEMBER_STATE,
                state_value(state),
            )];
            emit(count as u64, &attributes);
        }
    }),
    (metric::TOPOLOGY_RESERVE, |s, emit| {
        emit(s.as_ref().map_or(0, |s| s.reserve as u64), &[]);
    }),
    (metric::TOPOLOGY_PROBES, |s, emit| {
        emit(stats(s).probes_sent, &[]);
    }),
    (metric::TOPOLOGY_SUSPICIONS, |s, emit| {
        emit(stats(s).suspicions_raised, &[]);
    }),
    (metric::TOPOLOGY_DEATHS, |s, emit| {
        emit(stats(s).deaths_declared, &[]);
    }),
    (metric::TOPOLOGY_REFUTATIONS, |s, emit| {
        emit(stats(s).refutations, &[]);
    }),
    (metric::TOPOLOGY_LOCAL_HEALTH, |s, emit| {
        emit(s.as_ref().map_or(0, |s| u64::from(s.local_health)), &[]);
    }),
    (metric::TOPOLOGY_PARTITIONED, |s, emit| {
        emit(u64::from(s.as_ref().is_some_and(|s| s.partitioned)), &[]);
    }),
];

#[cfg(test)]
mod tests {
    use super::*;
    use knhk_telemetry::Instrument;

    #[test]
    fn every_topology_metric_is_observed_as_a_counter_or_gauge() {
        let observed: Vec<&str> = OBSERVED.iter().map(|(spec, _)| spec.name).collect();
        for spec in metric::ALL
            .iter()
            .filter(|s| s.name.starts_with("knhk.topology."))
        {
            assert!(observed.contains(&spec.name), "{} not observed", spec.name);
        }
        for (spec, _) in OBSERVED {
            assert!(
                matches!(spec.instrument, Instrument::Counter | Instrument::Gauge),
                "{} is a {:?}",
                spec.name,
                spec.instrument
            );
        }
    }

    #[test]
    fn every_member_state_is_a_registered_value() {
        let registered = value::topology_member_state::ALL;
        for state in [
            MemberState::Alive,
            MemberState::Suspect,
            MemberState::Dead,
            MemberState::Left,
        ] {
            assert!(registered.contains(&state_value(state)));
        }
        assert_eq!(registered.len(), 4);
    }
}
