//! The topology layer on a tokio node (feature `runtime`): [`TopologyObserver`] acts on
//! what [`SwimLayer`] tells the application, and [`Topology`] is the API to read its
//! state from a running node.
//!
//! Give the observer to `knhk_gossip::Mesh::start_endpoint_observed` (or any driver's
//! observer chain): it writes the address of every member the layer learns into the
//! transport's [`AddressBook`] (dialing only; never an admission) and logs member and
//! partition changes.

use std::sync::Arc;

use knhk_endpoint::runtime::{Driven, Observer, RuntimeHandle};
use knhk_endpoint::{Event, LayerHandle, Reachability, Timer};
use knhk_security::{Ed25519Verifier, NodeKey};
use knhk_transport::AddressBook;
use knhk_types::AgentId;

use opentelemetry::metrics::Meter;

use crate::error::TopologyError;
use crate::membership::{Member, MemberState, Membership};
use crate::swim::{
    MemberAddressed, MemberChanged, MemberJoined, PartitionChanged, SwimLayer, SwimStats,
};
use crate::telemetry::{self, TopologyTelemetry};
use crate::vivaldi::Coordinate;

type Node = RuntimeHandle<NodeKey, Ed25519Verifier>;
type NodeDriven<'a> = Driven<'a, NodeKey, Ed25519Verifier>;

/// Acts on the events of the node's [`SwimLayer`]: learned addresses go into the
/// address book; changes of state and of partition are logged (`tracing`, target
/// `knhk_topology`) and, with a meter ([`TopologyObserver::with_meter`]), emitted as
/// the registry's events, beside the layer's metrics. Events of other layers are
/// ignored.
#[derive(Debug)]
pub struct TopologyObserver {
    swim: LayerHandle<SwimLayer>,
    addresses: Arc<AddressBook>,
    telemetry: Option<TopologyTelemetry>,
}

impl TopologyObserver {
    /// An observer of the layer behind `swim`, writing learned addresses to
    /// `addresses` (for QUIC: `QuicTransport::address_book`). It reports no metrics
    /// and emits no registry events until given a meter.
    pub fn new(swim: LayerHandle<SwimLayer>, addresses: Arc<AddressBook>) -> Self {
        Self {
            swim,
            addresses,
            telemetry: None,
        }
    }

    /// Registers the topology metrics (`registry/topology.yaml`) on `meter`, read
    /// from the layer's status after each of its timers, and emits the member and
    /// partition events as OpenTelemetry log records.
    #[must_use]
    pub fn with_meter(mut self, meter: &Meter) -> Self {
        self.telemetry = Some(TopologyTelemetry::register(meter));
        self
    }

    fn publish(&self, node: &mut NodeDriven<'_>) {
        if let Some(telemetry) = &self.telemetry
            && let Some(status) = status_of(node, self.swim)
        {
            telemetry.publish(status);
        }
    }
}

impl Observer<NodeKey, Ed25519Verifier> for TopologyObserver {
    fn started(&mut self, node: &mut NodeDriven<'_>) {
        self.publish(node);
    }

    fn timer_fired(&mut self, node: &mut NodeDriven<'_>, timer: Timer, _span: &tracing::Span) {
        if timer.layer() == self.swim.id() {
            self.publish(node);
        }
    }

    fn event(&mut self, node: &mut NodeDriven<'_>, event: Event) {
        let me = node.endpoint.id();
        let event = match event.downcast::<SwimLayer, MemberJoined>(self.swim) {
            Ok(joined) => {
                if let Some(addr) = joined.addr {
                    self.addresses.learn(joined.member, addr);
                }
                tracing::debug!(node = %me.short(), member = %joined.member.short(), addr = ?joined.addr, "member joined");
                return;
            }
            Err(event) => event,
        };
        let event = match event.downcast::<SwimLayer, MemberAddressed>(self.swim) {
            Ok(addressed) => {
                self.addresses.learn(addressed.member, addressed.addr);
                tracing::debug!(node = %me.short(), member = %addressed.member.short(), addr = %addressed.addr, "member address learned");
                return;
            }
            Err(event) => event,
        };
        let event = match event.downcast::<SwimLayer, MemberChanged>(self.swim) {
            Ok(changed) => {
                tracing::info!(
                    node = %me.short(),
                    member = %changed.member.short(),
                    from = state_name(changed.from),
                    to = state_name(changed.to),
                    incarnation = changed.incarnation,
                    "member changed",
                );
                if self.telemetry.is_some() {
                    telemetry::member_changed(
                        changed.member,
                        changed.from,
                        changed.to,
                        changed.incarnation,
                    );
                }
                return;
            }
            Err(event) => event,
        };
        if let Ok(partition) = event.downcast::<SwimLayer, PartitionChanged>(self.swim) {
            let Reachability { reachable, members } = partition.reachability;
            if partition.partitioned {
                tracing::warn!(node = %me.short(), reachable, members, required = partition.reachability.required(), "partitioned: local writes refused");
            } else {
                tracing::info!(node = %me.short(), reachable, members, "quorum back: writes resume");
            }
            if self.telemetry.is_some() {
                telemetry::partition_changed(partition.partitioned, partition.reachability);
            }
            self.publish(node);
        }
    }
}

/// The status of the layer behind `swim` on `node`, or `None` if the node holds no
/// such layer or its view is not a [`Membership`].
fn status_of(node: &mut NodeDriven<'_>, swim: LayerHandle<SwimLayer>) -> Option<TopologyStatus> {
    let layer = node.endpoint.layer(swim)?;
    let (incarnation, local_health, coordinate, stats, partitioned) = (
        layer.incarnation(),
        layer.local_health(),
        layer.coordinate(),
        layer.stats(),
        layer.is_partitioned(),
    );
    let view = node.endpoint.view::<Membership>()?;
    let mut counts = [0; 4];
    for member in view.members() {
        let at = match member.state {
            MemberState::Alive => 0,
            MemberState::Suspect => 1,
            MemberState::Dead => 2,
            MemberState::Left => 3,
        };
        counts[at] += 1;
    }
    Some(TopologyStatus {
        incarnation,
        local_health,
        coordinate,
        view: counts,
        reserve: view.reserve().len(),
        reachability: knhk_endpoint::PeerView::reachability(view),
        partitioned,
        cluster: view.cluster(),
        stats,
    })
}

/// The lower-case name of a member state, as logs and APIs show it.
pub fn state_name(state: MemberState) -> &'static str {
    match state {
        MemberState::Alive => "alive",
        MemberState::Suspect => "suspect",
        MemberState::Dead => "dead",
        MemberState::Left => "left",
    }
}

/// Where this node's failure detector stands.
#[derive(Clone, Debug)]
pub struct TopologyStatus {
    /// This node's incarnation (raised by each refutation).
    pub incarnation: u64,
    /// Lifeguard's local health score (0: healthy).
    pub local_health: u32,
    /// This node's Vivaldi coordinate.
    pub coordinate: Coordinate,
    /// Members of the view alive, suspect, dead and left.
    pub view: [usize; 4],
    /// Members in the reserve.
    pub reserve: usize,
    /// The reachability the partition rule uses now.
    pub reachability: Reachability,
    /// True while the node lacks a quorum (local writes are refused).
    pub partitioned: bool,
    /// The node's cluster label (the least id within the cluster round trip).
    pub cluster: AgentId,
    /// The layer's counters.
    pub stats: SwimStats,
}

/// The API to a running node's topology layer: cheap messages to its driver.
#[derive(Clone, Copy, Debug)]
pub struct Topology {
    swim: LayerHandle<SwimLayer>,
}

impl Topology {
    /// The API to the layer behind `swim`.
    pub fn new(swim: LayerHandle<SwimLayer>) -> Self {
        Self { swim }
    }

    /// Incarnation, health, view counts, partition state and counters, as of now.
    ///
    /// Errors: [`TopologyError::ShutDown`] if the node stopped;
    /// [`TopologyError::NotRunning`] if it holds no such layer or its view is not a
    /// [`Membership`].
    pub async fn status(&self, node: &Node) -> Result<TopologyStatus, TopologyError> {
        let swim = self.swim;
        node.call(move |driven| status_of(driven, swim))
            .await
            .map_err(|_| TopologyError::ShutDown)?
            .ok_or(TopologyError::NotRunning)
    }

    /// The members this node knows: its view first, then its reserve, each with
    /// state, incarnation, address, round trips and coordinate.
    ///
    /// Errors: as [`Topology::status`].
    pub async fn members(&self, node: &Node) -> Result<Vec<Member>, TopologyError> {
        node.call(|driven| {
            driven.endpoint.view::<Membership>().map(|view| {
                view.members()
                    .iter()
                    .chain(view.reserve())
                    .cloned()
                    .collect()
            })
        })
        .await
        .map_err(|_| TopologyError::ShutDown)?
        .ok_or(TopologyError::NotRunning)
    }

    /// The members of this node's active view only (the ones it probes), with
    /// state, incarnation, address, round trips and coordinate.
    ///
    /// Errors: as [`Topology::status`].
    pub async fn view(&self, node: &Node) -> Result<Vec<Member>, TopologyError> {
        node.call(|driven| {
            driven
                .endpoint
                .view::<Membership>()
                .map(|view| view.members().to_vec())
        })
        .await
        .map_err(|_| TopologyError::ShutDown)?
        .ok_or(TopologyError::NotRunning)
    }

    /// Leaves the mesh gracefully: tells members at once and stops probing (see
    /// [`SwimLayer::leave`]). Shut the node down after a moment for the news to go
    /// out.
    ///
    /// Errors: as [`Topology::status`].
    pub async fn leave(&self, node: &Node) -> Result<(), TopologyError> {
        let swim = self.swim;
        node.call(move |driven| {
            driven
                .endpoint
                .call(driven.now, swim, |layer, ctx| layer.leave(ctx))
                .is_ok()
        })
        .await
        .map_err(|_| TopologyError::ShutDown)?
        .then_some(())
        .ok_or(TopologyError::NotRunning)
    }
}
