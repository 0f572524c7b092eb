//! [`QuicNode`]: one node running gossip and the topology layer beside it on one
//! endpoint over QUIC (feature `runtime`), the composition a daemon, a test or a demo
//! starts with one call.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use knhk_crdt::VersionedState;
use knhk_endpoint::{Endpoint, EndpointConfig};
use knhk_gossip::{GossipConfig, GossipLayer, Mesh};
use knhk_security::{Ed25519Verifier, NodeKey};
use knhk_transport::{AddressBook, PeerRegistry, QuicConfig, QuicTransport, RegistryConfig};
use knhk_types::{PeerInfo, Scope, UnixMillis};
use opentelemetry::metrics::Meter;

use crate::config::TopologyConfig;
use crate::error::TopologyError;
use crate::membership::{Membership, ViewConfig};
use crate::runtime::{Topology, TopologyObserver};
use crate::swim::SwimLayer;

/// What a [`QuicNode`] is made of. The defaults bind an ephemeral loopback port and
/// admit only registered peers (set `quic.inbound_policy` and `view.directory` to
/// admit members by certificate or allow-list).
#[derive(Clone, Debug, Default)]
pub struct QuicNodeConfig {
    /// The transport: bind address, admission policy, timeouts.
    pub quic: QuicConfig,
    /// The endpoint: the gate, budgets and the seed of its randomness.
    pub endpoint: EndpointConfig,
    /// Gossip.
    pub gossip: GossipConfig,
    /// The failure detector. With no `advertise` address, the bound address is
    /// advertised (right on loopback and on a host with one address; set it behind NAT
    /// or when binding a wildcard address).
    pub topology: TopologyConfig,
    /// The bounded view and its admission directory.
    pub view: ViewConfig,
    /// The members to join through, with their addresses. Joining needs one that is
    /// up; none makes this node a first seed.
    pub seeds: Vec<PeerInfo>,
}

/// A running node: gossip ([`QuicNode::mesh`]) and the topology layer
/// ([`QuicNode::topology`]) on one endpoint, one QUIC transport, one driver task.
#[derive(Debug)]
pub struct QuicNode {
    mesh: Mesh,
    topology: Topology,
    addresses: Arc<AddressBook>,
    local_addr: SocketAddr,
}

impl QuicNode {
    /// Binds the transport and starts the node, its metrics on `meter` (give
    /// `opentelemetry::global::meter(..)` when nothing exports). Must be called within
    /// a tokio runtime.
    ///
    /// Errors: [`TopologyError::Transport`] if the address cannot be bound;
    /// [`TopologyError::Seed`] if a seed cannot be registered (its id is this node's
    /// own, or the registry is full);
    /// [`TopologyError::Endpoint`] if the layers cannot share the endpoint (not with
    /// these two).
    pub fn start(
        key: NodeKey,
        config: QuicNodeConfig,
        meter: &Meter,
    ) -> Result<Self, TopologyError> {
        let state = VersionedState::new(config.gossip.state.clone());
        Self::start_from(key, config, state, meter)
    }

    /// As [`QuicNode::start`], with gossip starting from `state` (one a store kept:
    /// [`VersionedState::restore`]): peers then send only what it lacks.
    ///
    /// Errors: as [`QuicNode::start`].
    pub fn start_from(
        key: NodeKey,
        config: QuicNodeConfig,
        state: VersionedState,
        meter: &Meter,
    ) -> Result<Self, TopologyError> {
        let id = key.agent_id();
        let registry = Arc::new(PeerRegistry::new(id, RegistryConfig::default()));
        for seed in &config.seeds {
            registry.register(*seed)?;
        }
        let transport = QuicTransport::bind(key.signing_key(), registry, config.quic)?;
        let addresses = transport.address_book();
        let local_addr = transport.local_addr()?;
        let now = UnixMillis::from_system_time(SystemTime::now());
        let view = Membership::with_config(
            id,
            config.seeds.iter().map(|seed| seed.id),
            now,
            config.view,
        );
        let verifier = Ed25519Verifier::new(config.endpoint.validator.signature_cache_capacity);
        let (mut endpoint, gossip) = Endpoint::with_layer(
            key,
            verifier,
            view,
            config.endpoint,
            Scope::DEFAULT,
            GossipLayer::with_state(config.gossip, state),
        );
        let topology = TopologyConfig {
            advertise: config.topology.advertise.or(Some(local_addr)),
            ..config.topology
        };
        let swim = endpoint.add_layer(Scope::DEFAULT, SwimLayer::new(topology))?;
        let observer = TopologyObserver::new(swim, addresses.clone()).with_meter(meter);
        let mesh = Mesh::start_endpoint_observed(endpoint, gossip, transport, meter, observer);
        Ok(Self {
            mesh,
            topology: Topology::new(swim),
            addresses,
            local_addr,
        })
    }

    /// This node's identity.
    pub fn id(&self) -> knhk_types::AgentId {
        self.mesh.id()
    }

    /// Gossip: writes, reads, subscriptions, status, shutdown.
    pub fn mesh(&self) -> &Mesh {
        &self.mesh
    }

    /// The node's topology layer (status, members, leave); call it with
    /// `self.mesh().node()`.
    pub fn topology(&self) -> Topology {
        self.topology
    }

    /// The dial addresses this node learned by gossip.
    pub fn addresses(&self) -> &Arc<AddressBook> {
        &self.addresses
    }

    /// The address the transport is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops the node at once, without telling anyone (members will see it fail).
    ///
    /// Errors: [`TopologyError::Gossip`] if the driver had stopped already.
    pub async fn shutdown(self) -> Result<(), TopologyError> {
        Ok(self.mesh.shutdown().await?)
    }

    /// Leaves the mesh gracefully (members are told at once and see it as left, not
    /// dead), lets the news go out for `linger`, then shuts the node down.
    ///
    /// Errors: [`TopologyError::ShutDown`] if the node had stopped already.
    pub async fn leave_and_shutdown(
        self,
        linger: std::time::Duration,
    ) -> Result<(), TopologyError> {
        self.topology.leave(self.mesh.node()).await?;
        tokio::time::sleep(linger).await;
        self.shutdown().await
    }
}
