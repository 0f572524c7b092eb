//! [`Mesh`]: one gossip node running on tokio, and the API an application uses.

use std::net::SocketAddr;
use std::sync::Arc;

use knhk_crdt::{SignedEntry, VersionedState};
use knhk_endpoint::runtime::{Driven, Observer, Runtime, RuntimeHandle};
use knhk_endpoint::{Endpoint, EndpointConfig, EndpointStats, Event, LayerHandle, PeerView, Timer};
use knhk_security::{Ed25519Verifier, NodeKey, RejectReason, ReputationSummary, ValidatorStats};
use knhk_transport::{
    InboundPolicy, PeerRegistry, QuicConfig, QuicTransport, RegistryConfig, Transport,
    TransportStats,
};
use knhk_types::{AdmissionRule, AgentId, MembershipCertificate, PeerInfo, Scope, SeedAddr};
use tokio::sync::broadcast;

use crate::config::GossipConfig;
use crate::error::GossipError;
use crate::layer::{GossipEvent, GossipLayer, GossipStatus};
use crate::telemetry::{MeshTelemetry, Snapshot};
use knhk_endpoint::runtime::DriverStats;
use knhk_telemetry::semconv;
use opentelemetry::metrics::Meter;

/// A change to a key, as seen by [`Mesh::subscribe`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Update {
    /// The key.
    pub key: String,
    /// Its new value; `None` if it was deleted.
    pub value: Option<Vec<u8>>,
}

/// A stream of [`Update`]s. A subscriber that falls behind skips ahead (and
/// [`Subscription::missed`] counts what it skipped); it never slows the mesh down.
#[derive(Debug)]
pub struct Subscription {
    receiver: broadcast::Receiver<Update>,
    missed: u64,
}

impl Subscription {
    /// The next update, or `None` once the mesh has shut down.
    pub async fn next(&mut self) -> Option<Update> {
        loop {
            match self.receiver.recv().await {
                Ok(update) => return Some(update),
                Err(broadcast::error::RecvError::Lagged(skipped)) => self.missed += skipped,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// Updates skipped because this subscriber fell behind.
    pub fn missed(&self) -> u64 {
        self.missed
    }
}

/// Every setting of a mesh node: its gossip layer and its endpoint (seed, gate,
/// queues). Start from a preset and change what you need.
#[derive(Clone, Debug, Default)]
pub struct MeshConfig {
    /// The gossip layer.
    pub gossip: GossipConfig,
    /// The node endpoint: RNG seed, outbound queue, and the Byzantine gate (which owns
    /// `max_frame_bytes`; the QUIC transport is set to the same limit).
    pub endpoint: EndpointConfig,
}

impl MeshConfig {
    /// One data centre (the default): [`GossipConfig::lan`].
    pub fn lan() -> Self {
        Self::default()
    }

    /// Across regions: [`GossipConfig::wan`], and a clock-skew window of 60 s.
    pub fn wan() -> Self {
        let mut config = Self {
            gossip: GossipConfig::wan(),
            ..Self::default()
        };
        config.endpoint.validator.max_clock_skew = std::time::Duration::from_secs(60);
        config
    }

    /// One machine (loopback, tests, demos): [`GossipConfig::local`].
    pub fn local() -> Self {
        Self {
            gossip: GossipConfig::local(),
            ..Self::default()
        }
    }

    /// The same settings with the RNG seeded by `seed` (give each node its own to
    /// replay its choices; the default 0 is fine for production).
    pub fn seeded(mut self, seed: u64) -> Self {
        self.endpoint.seed = seed;
        self
    }
}

/// At most one warning this often about frames refused for their timestamps (the
/// rest are logged at debug level and counted).
const CLOCK_WARNING_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// Where a mesh node stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeshStatus {
    /// The node's identity.
    pub id: AgentId,
    /// Peers in its view.
    pub peers: usize,
    /// Its gossip layer.
    pub gossip: GossipStatus,
    /// Its endpoint's counters (frames in and out, refused, unrouted, dropped).
    pub node: EndpointStats,
    /// Its driver's counters (sends dropped or failed).
    pub driver: DriverStats,
    /// Its transport's counters (connections, handshakes, admissions, frames, bytes).
    pub transport: TransportStats,
    /// Its Byzantine gate's counters (frames accepted, refused by reason, bans).
    pub gate: ValidatorStats,
}

/// Builds a [`Mesh`] over QUIC with mutual TLS.
///
/// ```no_run
/// # async fn run() -> Result<(), knhk_gossip::GossipError> {
/// use knhk_gossip::{Mesh, MeshConfig};
/// use knhk_security::NodeKey;
///
/// let mesh = Mesh::builder()
///     .key(NodeKey::generate()?)
///     .config(MeshConfig::wan())
///     .bind("0.0.0.0:7400".parse().map_err(|_| knhk_gossip::GossipError::ShutDown)?)
///     .build()
///     .await?;
/// mesh.put("agent/42/status", b"running".to_vec()).await?;
/// let mut updates = mesh.subscribe();
/// while let Some(update) = updates.next().await {
///     println!("{} changed", update.key);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Default)]
pub struct MeshBuilder {
    key: Option<NodeKey>,
    bind: Option<SocketAddr>,
    seeds: Vec<SeedAddr>,
    config: MeshConfig,
    quic: QuicConfig,
    meter: Option<Meter>,
}

impl MeshBuilder {
    /// The node's identity key. Default: a fresh random key.
    pub fn key(mut self, key: NodeKey) -> Self {
        self.key = Some(key);
        self
    }

    /// The UDP address to listen on. Default `127.0.0.1:0`.
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.bind = Some(addr);
        self
    }

    /// Peers to start from, as `<agent-id>@<ip:port>` seeds.
    pub fn bootstrap(mut self, seeds: impl IntoIterator<Item = SeedAddr>) -> Self {
        self.seeds.extend(seeds);
        self
    }

    /// The node's settings. Default [`MeshConfig::lan`]; see also
    /// [`MeshConfig::wan`] and [`MeshConfig::local`].
    pub fn config(mut self, config: MeshConfig) -> Self {
        self.config = config;
        self
    }

    /// Admission by membership certificate: peers are admitted when they present a
    /// certificate `rule` accepts (signed by its authority, for its cluster, not
    /// expired), and this node presents `certificate` to them. A node that bootstraps
    /// to a seed which never heard of it joins this way. Without it (or an
    /// [`InboundPolicy`] set through [`MeshBuilder::quic_config`]) only registered peers
    /// (the seeds) may connect. Overrides the policy and credentials of an earlier
    /// `quic_config`; a later `quic_config` replaces them.
    ///
    /// `certificate` is not checked here: a wrong or expired one makes peers refuse this
    /// node (counted in [`MeshStatus::transport`], `handshakes_rejected_outbound`).
    pub fn certified(mut self, rule: AdmissionRule, certificate: MembershipCertificate) -> Self {
        self.quic.inbound_policy = InboundPolicy::Certified(Arc::new(rule));
        self.quic.credentials = Some(certificate);
        self
    }

    /// QUIC settings (timeouts, limits, who may connect). `bind` overrides its address;
    /// its frame limit is always the gate's.
    pub fn quic_config(mut self, config: QuicConfig) -> Self {
        self.quic = config;
        self
    }

    /// The OpenTelemetry meter the node's metrics are recorded with. Default: the global
    /// meter provider's `knhk` meter (a no-op unless one is installed, for example by
    /// `knhk_telemetry::init_from_env` with an OTLP endpoint).
    pub fn meter(mut self, meter: Meter) -> Self {
        self.meter = Some(meter);
        self
    }

    /// Binds the socket and starts the node. Must be called inside a tokio runtime.
    ///
    /// Errors: [`GossipError::Key`] if no key was given and the OS has no randomness,
    /// [`GossipError::Transport`] if the socket cannot be bound.
    pub async fn build(self) -> Result<Mesh, GossipError> {
        let key = match self.key {
            Some(key) => key,
            None => NodeKey::generate()?,
        };
        let registry = Arc::new(PeerRegistry::with_seeds(
            key.agent_id(),
            RegistryConfig::default(),
            self.seeds,
        ));
        let quic = QuicConfig {
            bind_addr: self.bind.unwrap_or(self.quic.bind_addr),
            max_frame_bytes: self.config.endpoint.validator.max_frame_bytes,
            ..self.quic
        };
        let transport = QuicTransport::bind(key.signing_key(), registry.clone(), quic)?;
        let local_addr = transport.local_addr()?;
        let meter = self.meter.unwrap_or_else(default_meter);
        let mut mesh =
            Mesh::start_with_meter(key, transport, registry.clone(), self.config, &meter);
        mesh.registry = Some(registry);
        mesh.local_addr = Some(local_addr);
        Ok(mesh)
    }
}

/// The driver handle of a mesh node.
pub type MeshNode = RuntimeHandle<NodeKey, Ed25519Verifier>;

/// A running gossip node: the endpoint's tokio driver owns a node endpoint with a
/// [`GossipLayer`] (and whatever other layers it was given) over a [`Transport`]; this
/// handle talks to it.
///
/// All methods are cheap messages to the driver task. Dropping the handle without
/// [`Mesh::shutdown`] stops the task too.
#[derive(Debug)]
pub struct Mesh {
    node: MeshNode,
    gossip: LayerHandle<GossipLayer>,
    /// Weak, so that subscriptions end when the driver (whose observer holds the only
    /// strong sender) stops, for whatever reason.
    updates: broadcast::WeakSender<Update>,
    registry: Option<Arc<PeerRegistry>>,
    local_addr: Option<SocketAddr>,
}

/// Updates buffered per subscriber before it starts skipping.
const SUBSCRIPTION_BUFFER: usize = 4_096;

impl Mesh {
    /// A builder for a node over QUIC.
    pub fn builder() -> MeshBuilder {
        MeshBuilder::default()
    }

    /// Starts a node over any transport (for example [`knhk_transport::MemoryTransport`]
    /// in tests) with the given peer view, recording metrics with the global meter.
    /// Must be called inside a tokio runtime.
    pub fn start<T, P>(key: NodeKey, transport: T, peers: P, config: MeshConfig) -> Self
    where
        T: Transport,
        P: PeerView + Send + 'static,
    {
        Self::start_with_meter(key, transport, peers, config, &default_meter())
    }

    /// As [`Mesh::start`], recording metrics with `meter`.
    pub fn start_with_meter<T, P>(
        key: NodeKey,
        transport: T,
        peers: P,
        config: MeshConfig,
        meter: &Meter,
    ) -> Self
    where
        T: Transport,
        P: PeerView + Send + 'static,
    {
        let verifier = Ed25519Verifier::new(config.endpoint.validator.signature_cache_capacity);
        let (endpoint, gossip) = Endpoint::with_layer(
            key,
            verifier,
            peers,
            config.endpoint,
            Scope::DEFAULT,
            GossipLayer::new(config.gossip),
        );
        Self::start_endpoint(endpoint, gossip, transport, meter)
    }

    /// Starts a node endpoint that already holds `gossip` (and any other layers) over
    /// `transport`: the way to run more layers beside gossip. Must be called inside a
    /// tokio runtime.
    pub fn start_endpoint<T: Transport>(
        endpoint: Endpoint,
        gossip: LayerHandle<GossipLayer>,
        transport: T,
        meter: &Meter,
    ) -> Self {
        Self::spawn(endpoint, gossip, transport, meter, None)
    }

    /// As [`Mesh::start_endpoint`], with `beside` observing the endpoint's other
    /// layers: it is told when the node starts, gets every event a layer other than
    /// gossip emits, and every timer of those layers (its span included). This is how
    /// a layer above gossip (topology, for one) reports its own telemetry and acts on
    /// its events without any change to the mesh. Must be called inside a tokio
    /// runtime.
    pub fn start_endpoint_observed<T: Transport>(
        endpoint: Endpoint,
        gossip: LayerHandle<GossipLayer>,
        transport: T,
        meter: &Meter,
        beside: impl Observer<NodeKey, Ed25519Verifier>,
    ) -> Self {
        Self::spawn(endpoint, gossip, transport, meter, Some(Box::new(beside)))
    }

    fn spawn<T: Transport>(
        endpoint: Endpoint,
        gossip: LayerHandle<GossipLayer>,
        transport: T,
        meter: &Meter,
        beside: Option<BesideObserver>,
    ) -> Self {
        let (updates, _) = broadcast::channel(SUBSCRIPTION_BUFFER);
        let weak_updates = updates.downgrade();
        let observer = MeshObserver {
            gossip,
            updates,
            telemetry: MeshTelemetry::register(meter),
            reputation: ReputationSummary::default(),
            clock_warned: None,
            beside,
        };
        let node = Runtime::spawn(endpoint, transport, observer);
        Self {
            node,
            gossip,
            updates: weak_updates,
            registry: None,
            local_addr: None,
        }
    }

    /// This node's identity.
    pub fn id(&self) -> AgentId {
        self.node.id()
    }

    /// The UDP address it listens on (QUIC meshes only).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// This node as a seed for others: `<id>@<addr>` (QUIC meshes only).
    pub fn seed_addr(&self) -> Option<SeedAddr> {
        self.local_addr.map(|addr| SeedAddr {
            id: self.id(),
            addr,
        })
    }

    /// The node's driver, to reach other layers the endpoint holds.
    pub fn node(&self) -> &MeshNode {
        &self.node
    }

    /// Adds (or updates) a peer this node may gossip with and accept (QUIC meshes).
    ///
    /// Errors: [`GossipError::NoRegistry`] for a mesh started with [`Mesh::start`],
    /// [`GossipError::Registry`] for our own id.
    pub fn add_peer(&self, peer: PeerInfo) -> Result<(), GossipError> {
        let registry = self.registry.as_ref().ok_or(GossipError::NoRegistry)?;
        registry.register(peer)?;
        Ok(())
    }

    /// Writes `value` under `key`, signed by this node, and gossips it at once.
    /// Returns the entry as signed (its counter and Lamport time included).
    ///
    /// Errors: [`GossipError::State`] for size and capacity limits (and a counter
    /// lease that is used up: [`Mesh::lease_counters`]), [`GossipError::ReadOnly`] in
    /// a minority partition, [`GossipError::ShutDown`].
    pub async fn put(&self, key: &str, value: Vec<u8>) -> Result<SignedEntry, GossipError> {
        self.write(key, Some(value)).await
    }

    /// Deletes `key` (a signed tombstone) and gossips it at once. Returns the
    /// tombstone as signed.
    ///
    /// Errors: as [`Mesh::put`].
    pub async fn delete(&self, key: &str) -> Result<SignedEntry, GossipError> {
        self.write(key, None).await
    }

    /// Runs `read` on the replicated state, on the node's task (keep it short: the
    /// node handles nothing else meanwhile), and returns what it returns: entries,
    /// proofs and version vector for a store, a scan of keys for an API.
    ///
    /// Errors: [`GossipError::ShutDown`].
    pub async fn read_state<R: Send + 'static>(
        &self,
        read: impl FnOnce(&VersionedState) -> R + Send + 'static,
    ) -> Result<R, GossipError> {
        let gossip = self.gossip;
        self.on_node(move |node| node.endpoint.layer(gossip).map(|layer| read(layer.state())))
            .await?
            .ok_or(GossipError::ShutDown)
    }

    /// Limits the counters this node's writes use to above `floor` and at most
    /// `ceiling` ([`knhk_crdt::VersionedState::lease_counters`]): a node that stores
    /// its writes leases counters durably before it signs with them, so that after a
    /// crash it never signs two entries with one counter.
    ///
    /// Errors: [`GossipError::ShutDown`].
    pub async fn lease_counters(&self, floor: u64, ceiling: u64) -> Result<(), GossipError> {
        let gossip = self.gossip;
        self.on_node(move |node| {
            if let Some(layer) = node.endpoint.layer_mut(gossip) {
                layer.lease_counters(floor, ceiling);
            }
        })
        .await
    }

    /// The current local value of `key`.
    ///
    /// Errors: [`GossipError::ShutDown`].
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, GossipError> {
        let (gossip, key) = (self.gossip, key.to_owned());
        self.on_node(move |node| {
            node.endpoint
                .layer(gossip)
                .and_then(|layer| layer.get(&key))
                .map(<[u8]>::to_vec)
        })
        .await
    }

    /// Round, peers, root, convergence and counters, as of now.
    ///
    /// Errors: [`GossipError::ShutDown`].
    pub async fn status(&self) -> Result<MeshStatus, GossipError> {
        let gossip = self.gossip;
        self.on_node(move |node| mesh_status(node, gossip))
            .await?
            .ok_or(GossipError::ShutDown)
    }

    /// This node's view of `peer`'s reputation (1,000 = untarnished).
    ///
    /// Errors: [`GossipError::ShutDown`].
    pub async fn reputation(&self, peer: AgentId) -> Result<u32, GossipError> {
        self.on_node(move |node| node.endpoint.reputation(&peer, node.now))
            .await
    }

    /// Updates from now on: local writes and merged remote ones. Ends (`next` returns
    /// `None`) when the node stops.
    pub fn subscribe(&self) -> Subscription {
        let receiver = match self.updates.upgrade() {
            Some(sender) => sender.subscribe(),
            // Already stopped: a subscription that is over at once.
            None => broadcast::channel(1).1,
        };
        Subscription {
            receiver,
            missed: 0,
        }
    }

    /// Stops the node: no more rounds, the transport closes, subscriptions end.
    ///
    /// Errors: [`GossipError::ShutDown`] if it was already stopped.
    pub async fn shutdown(self) -> Result<(), GossipError> {
        self.node
            .shutdown()
            .await
            .map_err(|_| GossipError::ShutDown)
    }

    async fn write(&self, key: &str, value: Option<Vec<u8>>) -> Result<SignedEntry, GossipError> {
        let (gossip, key) = (self.gossip, key.to_owned());
        self.on_node(move |node| {
            node.endpoint
                .call(node.now, gossip, |layer, ctx| match value {
                    Some(value) => layer.put(ctx, &key, value),
                    None => layer.delete(ctx, &key),
                })
        })
        .await??
    }

    async fn on_node<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Driven<'_, NodeKey, Ed25519Verifier>) -> R + Send + 'static,
    ) -> Result<R, GossipError> {
        self.node.call(f).await.map_err(|_| GossipError::ShutDown)
    }
}

/// The node's status, if `gossip` is one of its layers.
fn mesh_status(
    node: &mut Driven<'_, NodeKey, Ed25519Verifier>,
    gossip: LayerHandle<GossipLayer>,
) -> Option<MeshStatus> {
    let status = node.endpoint.layer_mut(gossip)?.status();
    Some(MeshStatus {
        id: node.endpoint.id(),
        peers: node.endpoint.peers().len(),
        gossip: status,
        node: node.endpoint.stats(),
        driver: node.driver,
        transport: node.transport,
        gate: node.endpoint.validator().stats(),
    })
}

/// What the application sees of the node: updates for subscribers, and telemetry.
struct MeshObserver {
    gossip: LayerHandle<GossipLayer>,
    updates: broadcast::Sender<Update>,
    telemetry: MeshTelemetry,
    /// The last reputation summary published.
    reputation: ReputationSummary,
    /// When a frame refused for its timestamp was last worth a warning.
    clock_warned: Option<std::time::Instant>,
    /// The observer of the other layers, if any.
    beside: Option<BesideObserver>,
}

/// An observer of the layers beside gossip (see [`Mesh::start_endpoint_observed`]).
type BesideObserver = Box<dyn Observer<NodeKey, Ed25519Verifier>>;

/// Rounds between two walks of the sender table for the reputation gauges.
const REPUTATION_EVERY: u64 = 10;

/// The meter a mesh records with unless told otherwise.
fn default_meter() -> Meter {
    opentelemetry::global::meter("knhk")
}

type MeshDriven<'a> = Driven<'a, NodeKey, Ed25519Verifier>;

impl MeshObserver {
    /// Publishes the counters the metrics are read from. The reputation summary walks
    /// the sender table, so it is refreshed every `REPUTATION_EVERY` rounds only.
    fn publish(&mut self, node: &mut MeshDriven<'_>) {
        let Some(status) = mesh_status(node, self.gossip) else {
            return;
        };
        if status.gossip.round % REPUTATION_EVERY == 1 {
            self.reputation = node.endpoint.validator().reputation_summary(node.now);
        }
        self.telemetry.publish(Snapshot {
            validator: node.endpoint.validator().stats(),
            reputation: self.reputation,
            transport: node.transport,
            status: Some(status),
        });
    }

    fn gossip_event(&mut self, node: &mut MeshDriven<'_>, event: GossipEvent) {
        match event {
            GossipEvent::Updated { key } => {
                let layer = node.endpoint.layer(self.gossip);
                let round = layer.map_or(0, GossipLayer::round);
                self.telemetry
                    .state_changed(std::time::Instant::now(), round);
                let value = layer.and_then(|layer| layer.get(&key)).map(<[u8]>::to_vec);
                // No subscriber is fine.
                let _ = self.updates.send(Update { key, value });
            }
            GossipEvent::Converged { round, root } => {
                self.telemetry.converged(std::time::Instant::now(), round);
                tracing::event!(
                    name: semconv::event::GOSSIP_CONVERGED,
                    target: knhk_telemetry::EVENT_TARGET,
                    tracing::Level::INFO,
                    { semconv::attribute::GOSSIP_ROUND } = i64::try_from(round).unwrap_or(i64::MAX),
                    { semconv::attribute::CRDT_ROOT } = tracing::field::display(short_hex(&root)),
                    "converged",
                );
            }
        }
    }
}

impl Observer<NodeKey, Ed25519Verifier> for MeshObserver {
    fn started(&mut self, node: &mut MeshDriven<'_>) {
        self.publish(node);
        if let Some(beside) = self.beside.as_mut() {
            beside.started(node);
        }
    }

    fn event(&mut self, node: &mut MeshDriven<'_>, event: Event) {
        match event.downcast::<GossipLayer, GossipEvent>(self.gossip) {
            Ok(event) => self.gossip_event(node, event),
            Err(Event::Rejected { from, reason }) => {
                let clock = matches!(
                    reason,
                    RejectReason::StaleTimestamp | RejectReason::FutureTimestamp
                );
                let now = std::time::Instant::now();
                if clock
                    && self
                        .clock_warned
                        .is_none_or(|at| now.duration_since(at) >= CLOCK_WARNING_EVERY)
                {
                    self.clock_warned = Some(now);
                    let window = node.endpoint.validator().config().max_clock_skew;
                    tracing::warn!(
                        node = %node.endpoint.id().short(),
                        from = %from.short(),
                        reason = reason.as_str(),
                        ?window,
                        "frames refused for their timestamps: this node's clock or the sender's is off by more than the window (check NTP on both)"
                    );
                } else {
                    tracing::debug!(node = %node.endpoint.id().short(), from = %from.short(), reason = reason.as_str(), "rejected");
                }
            }
            Err(Event::Banned { peer, duration }) => {
                tracing::info!(node = %node.endpoint.id().short(), peer = %peer.short(), ?duration, "banned");
            }
            // Another layer's event: not the mesh's to report, but its observer's.
            Err(event @ Event::Layer { .. }) => {
                if let Some(beside) = self.beside.as_mut() {
                    beside.event(node, event);
                }
            }
        }
    }

    fn frame_handled(&mut self, elapsed: std::time::Duration) {
        self.telemetry.frame_handled(elapsed);
    }

    fn timer_span(&mut self, node: &mut MeshDriven<'_>, timer: Timer) -> tracing::Span {
        if timer.layer() != self.gossip.id() {
            return self
                .beside
                .as_mut()
                .map_or_else(tracing::Span::none, |beside| beside.timer_span(node, timer));
        }
        tracing::info_span!(
            semconv::span::GOSSIP_ROUND,
            { semconv::attribute::MESH_NODE_ID } = %node.endpoint.id(),
            { semconv::attribute::GOSSIP_ROUND } = tracing::field::Empty,
            { semconv::attribute::GOSSIP_PEER_COUNT } = node.endpoint.peers().len() as i64,
        )
    }

    fn timer_fired(&mut self, node: &mut MeshDriven<'_>, timer: Timer, span: &tracing::Span) {
        if timer.layer() != self.gossip.id() {
            if let Some(beside) = self.beside.as_mut() {
                beside.timer_fired(node, timer, span);
            }
            return;
        }
        let round = node
            .endpoint
            .layer(self.gossip)
            .map_or(0, GossipLayer::round);
        span.record(
            semconv::attribute::GOSSIP_ROUND,
            i64::try_from(round).unwrap_or(i64::MAX),
        );
        self.publish(node);
    }
}

/// The first 8 bytes of a hash, in hex.
fn short_hex(hash: &[u8]) -> String {
    hash.iter()
        .take(8)
        .map(|byte| format!("{byte:02x}"))
        .collect()
}
