//! [`Mesh`]: one gossip node running on tokio, and the API an application uses.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use knhk_security::{NodeKey, ReputationSummary};
use knhk_transport::{
    PeerRegistry, QuicConfig, QuicTransport, RegistryConfig, Transport, TransportError,
};
use knhk_types::{AgentId, PeerInfo, SeedAddr, UnixMillis};
use tokio::sync::{Semaphore, broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::GossipConfig;
use crate::core::{GossipCore, GossipEvent, GossipStatus, Output, Timer};
use crate::error::GossipError;
use crate::membership::Membership;
use crate::telemetry::{MeshTelemetry, Snapshot};
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

enum Command {
    Put(
        String,
        Option<Vec<u8>>,
        oneshot::Sender<Result<(), GossipError>>,
    ),
    Get(String, oneshot::Sender<Option<Vec<u8>>>),
    Status(oneshot::Sender<GossipStatus>),
    Reputation(AgentId, oneshot::Sender<u32>),
    Shutdown(oneshot::Sender<()>),
}

/// Builds a [`Mesh`] over QUIC with mutual TLS.
///
/// ```no_run
/// # async fn run() -> Result<(), knhk_gossip::GossipError> {
/// use knhk_gossip::Mesh;
/// use knhk_security::NodeKey;
///
/// let mesh = Mesh::builder()
///     .key(NodeKey::generate().map_err(|e| knhk_gossip::GossipError::Config(e.to_string()))?)
///     .bind("0.0.0.0:7400".parse().unwrap())
///     .bootstrap(["<agent-id>@10.0.0.2:7400".parse().unwrap()])
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
    gossip: GossipConfig,
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

    /// Gossip settings (interval, fanout, limits, seed).
    pub fn gossip_config(mut self, config: GossipConfig) -> Self {
        self.gossip = config;
        self
    }

    /// QUIC settings (timeouts, limits, who may connect). `bind` overrides its address.
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
    /// Errors: [`GossipError::Config`] if no key was given and the OS has no randomness,
    /// [`GossipError::Transport`] if the socket cannot be bound.
    pub async fn build(self) -> Result<Mesh, GossipError> {
        let key = match self.key {
            Some(key) => key,
            None => NodeKey::generate().map_err(|e| GossipError::Config(e.to_string()))?,
        };
        let registry = Arc::new(PeerRegistry::with_seeds(
            key.agent_id(),
            RegistryConfig::default(),
            self.seeds,
        ));
        let quic = QuicConfig {
            bind_addr: self.bind.unwrap_or(self.quic.bind_addr),
            max_frame_bytes: self.gossip.validator.max_frame_bytes,
            ..self.quic
        };
        let transport = QuicTransport::bind(key.signing_key(), registry.clone(), quic)?;
        let local_addr = transport.local_addr()?;
        let meter = self.meter.unwrap_or_else(default_meter);
        let mut mesh =
            Mesh::start_with_meter(key, transport, registry.clone(), self.gossip, &meter);
        mesh.registry = Some(registry);
        mesh.local_addr = Some(local_addr);
        Ok(mesh)
    }
}

/// A running gossip node: one tokio task owns a [`GossipCore`] and drives it over a
/// [`Transport`]; this handle talks to that task.
///
/// All methods are cheap messages to the task. Dropping the handle without
/// [`Mesh::shutdown`] stops the task too.
#[derive(Debug)]
pub struct Mesh {
    id: AgentId,
    commands: mpsc::Sender<Command>,
    /// Weak, so that subscriptions end when the driver (which holds the only strong
    /// sender) stops, for whatever reason.
    updates: broadcast::WeakSender<Update>,
    task: Option<JoinHandle<()>>,
    registry: Option<Arc<PeerRegistry>>,
    local_addr: Option<SocketAddr>,
}

/// Sends handed to the transport at once, at most; beyond this they are dropped and
/// counted (gossip repairs what is lost).
const MAX_SENDS_IN_FLIGHT: usize = 1_024;
/// Updates buffered per subscriber before it starts skipping.
const SUBSCRIPTION_BUFFER: usize = 4_096;

impl Mesh {
    /// A builder for a node over QUIC.
    pub fn builder() -> MeshBuilder {
        MeshBuilder::default()
    }

    /// Starts a node over any transport (for example [`knhk_transport::MemoryTransport`]
    /// in tests) with the given membership, recording metrics with the global meter.
    /// Must be called inside a tokio runtime.
    pub fn start<T, M>(key: NodeKey, transport: T, membership: M, config: GossipConfig) -> Self
    where
        T: Transport,
        M: Membership + Send + 'static,
    {
        Self::start_with_meter(key, transport, membership, config, &default_meter())
    }

    /// As [`Mesh::start`], recording metrics with `meter`.
    pub fn start_with_meter<T, M>(
        key: NodeKey,
        transport: T,
        membership: M,
        config: GossipConfig,
        meter: &Meter,
    ) -> Self
    where
        T: Transport,
        M: Membership + Send + 'static,
    {
        let id = key.agent_id();
        let (commands, inbox) = mpsc::channel(256);
        let (updates, _) = broadcast::channel(SUBSCRIPTION_BUFFER);
        let weak_updates = updates.downgrade();
        let core = GossipCore::new(key, membership, config);
        let reputation = core.validator().reputation_summary(wall_clock());
        let driver = Driver {
            core,
            transport: Arc::new(transport),
            updates,
            timers: BinaryHeap::new(),
            sends: Arc::new(Semaphore::new(MAX_SENDS_IN_FLIGHT)),
            sends_dropped: 0,
            telemetry: MeshTelemetry::register(meter),
            reputation,
        };
        let task = tokio::spawn(driver.run(inbox));
        Self {
            id,
            commands,
            updates: weak_updates,
            task: Some(task),
            registry: None,
            local_addr: None,
        }
    }

    /// This node's identity.
    pub fn id(&self) -> AgentId {
        self.id
    }

    /// The UDP address it listens on (QUIC meshes only).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// This node as a seed for others: `<id>@<addr>` (QUIC meshes only).
    pub fn seed_addr(&self) -> Option<SeedAddr> {
        self.local_addr.map(|addr| SeedAddr { id: self.id, addr })
    }

    /// Adds (or updates) a peer this node may gossip with and accept (QUIC meshes).
    ///
    /// Errors: [`GossipError::Config`] for a mesh started with [`Mesh::start`], or for
    /// our own id.
    pub fn add_peer(&self, peer: PeerInfo) -> Result<(), GossipError> {
        let registry = self.registry.as_ref().ok_or_else(|| {
            GossipError::Config("this mesh's membership is not a registry".into())
        })?;
        registry
            .register(peer)
            .map_err(|e| GossipError::Config(e.to_string()))?;
        Ok(())
    }

    /// Writes `value` under `key`, signed by this node, and gossips it at once.
    ///
    /// Errors: [`GossipError::State`] for size and capacity limits,
    /// [`GossipError::ShutDown`].
    pub async fn put(&self, key: &str, value: Vec<u8>) -> Result<(), GossipError> {
        self.write(key, Some(value)).await
    }

    /// Deletes `key` (a signed tombstone) and gossips it at once.
    ///
    /// Errors: as [`Mesh::put`].
    pub async fn delete(&self, key: &str) -> Result<(), GossipError> {
        self.write(key, None).await
    }

    /// The current local value of `key`.
    ///
    /// Errors: [`GossipError::ShutDown`].
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, GossipError> {
        self.ask(|reply| Command::Get(key.to_owned(), reply)).await
    }

    /// Round, peers, root, convergence and counters, as of now.
    ///
    /// Errors: [`GossipError::ShutDown`].
    pub async fn status(&self) -> Result<GossipStatus, GossipError> {
        self.ask(Command::Status).await
    }

    /// This node's view of `peer`'s reputation (1,000 = untarnished).
    ///
    /// Errors: [`GossipError::ShutDown`].
    pub async fn reputation(&self, peer: AgentId) -> Result<u32, GossipError> {
        self.ask(|reply| Command::Reputation(peer, reply)).await
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
    pub async fn shutdown(mut self) -> Result<(), GossipError> {
        self.ask(Command::Shutdown).await?;
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        Ok(())
    }

    async fn write(&self, key: &str, value: Option<Vec<u8>>) -> Result<(), GossipError> {
        self.ask(|reply| Command::Put(key.to_owned(), value, reply))
            .await?
    }

    async fn ask<R>(
        &self,
        command: impl FnOnce(oneshot::Sender<R>) -> Command,
    ) -> Result<R, GossipError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(command(reply))
            .await
            .map_err(|_| GossipError::ShutDown)?;
        answer.await.map_err(|_| GossipError::ShutDown)
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The task that owns the core.
struct Driver<T, M> {
    core: GossipCore<M>,
    transport: Arc<T>,
    updates: broadcast::Sender<Update>,
    /// Deadlines on the monotonic clock, so a wall-clock step cannot stall rounds.
    timers: BinaryHeap<Reverse<(Instant, Timer)>>,
    sends: Arc<Semaphore>,
    sends_dropped: u64,
    telemetry: MeshTelemetry,
    /// The last reputation summary published.
    reputation: ReputationSummary,
}

/// Rounds between two walks of the sender table for the reputation gauges.
const REPUTATION_EVERY: u64 = 10;

/// The meter a mesh records with unless told otherwise.
fn default_meter() -> Meter {
    opentelemetry::global::meter("knhk")
}

fn wall_clock() -> UnixMillis {
    UnixMillis::from_system_time(SystemTime::now())
}

impl<T: Transport, M: Membership> Driver<T, M> {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        self.core.start(wall_clock());
        self.flush();
        self.publish();
        loop {
            let wait = self
                .timers
                .peek()
                .map(|Reverse((at, _))| at.saturating_duration_since(Instant::now()))
                .unwrap_or(Duration::from_secs(3_600));
            tokio::select! {
                inbound = self.transport.recv() => match inbound {
                    Ok(inbound) => {
                        let started = std::time::Instant::now();
                        self.core.handle_message(wall_clock(), inbound.from, &inbound.frame);
                        self.telemetry.frame_handled(started.elapsed());
                    }
                    Err(_) => break,
                },
                () = tokio::time::sleep(wait) => self.fire_due_timers(),
                command = commands.recv() => match command {
                    Some(Command::Shutdown(reply)) => {
                        let _ = reply.send(());
                        break;
                    }
                    Some(command) => self.execute(command),
                    None => break,
                },
            }
            self.flush();
        }
        self.transport.close().await;
    }

    fn fire_due_timers(&mut self) {
        let monotonic = Instant::now();
        while let Some(Reverse((at, timer))) = self.timers.peek().copied() {
            if at > monotonic {
                break;
            }
            self.timers.pop();
            let span = tracing::info_span!(
                semconv::span::GOSSIP_ROUND,
                { semconv::attribute::MESH_NODE_ID } = %self.core.id(),
                { semconv::attribute::GOSSIP_ROUND } = tracing::field::Empty,
                { semconv::attribute::GOSSIP_PEER_COUNT } = self.core.membership().len() as i64,
            );
            let _entered = span.enter();
            self.core.handle_timer(wall_clock(), timer);
            let round = i64::try_from(self.core.round()).unwrap_or(i64::MAX);
            span.record(semconv::attribute::GOSSIP_ROUND, round);
            // What the round produced (the convergence event included) belongs to it.
            self.flush();
            self.publish();
        }
    }

    /// Publishes the counters the metrics are read from. The reputation summary walks
    /// the sender table, so it is refreshed every `REPUTATION_EVERY` rounds only.
    fn publish(&mut self) {
        let mut status = self.core.status();
        status.stats.sends_dropped = self.sends_dropped;
        if status.round % REPUTATION_EVERY == 1 {
            self.reputation = self.core.validator().reputation_summary(wall_clock());
        }
        self.telemetry.publish(Snapshot {
            status: Some(status),
            validator: self.core.validator().stats(),
            reputation: self.reputation,
            transport: self.transport.stats(),
        });
    }

    fn execute(&mut self, command: Command) {
        let now = wall_clock();
        match command {
            Command::Put(key, value, reply) => {
                let result = match value {
                    Some(value) => self.core.put(now, &key, value),
                    None => self.core.delete(now, &key),
                };
                let _ = reply.send(result.map_err(GossipError::from));
            }
            Command::Get(key, reply) => {
                let _ = reply.send(self.core.get(&key).map(<[u8]>::to_vec));
            }
            Command::Status(reply) => {
                let mut status = self.core.status();
                status.stats.sends_dropped = self.sends_dropped;
                let _ = reply.send(status);
            }
            Command::Reputation(peer, reply) => {
                let _ = reply.send(self.core.reputation(&peer, now));
            }
            Command::Shutdown(reply) => {
                let _ = reply.send(());
            }
        }
    }

    /// Carries out everything the core asked for.
    fn flush(&mut self) {
        while let Some(output) = self.core.poll_output() {
            match output {
                Output::Send { to, frame } => self.send(to, frame),
                Output::SetTimer { at, timer } => {
                    // The core speaks wall-clock time; wait on the monotonic clock.
                    let delay = Duration::from_millis(at.0.saturating_sub(wall_clock().0));
                    self.timers.push(Reverse((Instant::now() + delay, timer)));
                }
                Output::Event(GossipEvent::Updated { key }) => {
                    self.telemetry
                        .state_changed(std::time::Instant::now(), self.core.round());
                    let value = self.core.get(&key).map(<[u8]>::to_vec);
                    // No subscriber is fine.
                    let _ = self.updates.send(Update { key, value });
                }
                Output::Event(GossipEvent::Converged { round, root }) => {
                    self.telemetry.converged(std::time::Instant::now(), round);
                    tracing::event!(
                        target: knhk_telemetry::EVENT_TARGET,
                        tracing::Level::INFO,
                        { semconv::attribute::GOSSIP_ROUND } = i64::try_from(round).unwrap_or(i64::MAX),
                        { semconv::attribute::CRDT_ROOT } = tracing::field::display(short_hex(&root)),
                        message = semconv::event::GOSSIP_CONVERGED,
                    );
                }
                Output::Event(GossipEvent::Rejected { from, reason }) => {
                    tracing::debug!(node = %self.core.id().short(), from = %from.short(), reason = reason.as_str(), "rejected");
                }
            }
        }
    }

    /// Hands a frame to the transport on its own task, so a slow or unreachable peer
    /// never stalls the core; beyond `MAX_SENDS_IN_FLIGHT` the frame is dropped.
    fn send(&mut self, to: AgentId, frame: Vec<u8>) {
        let Ok(permit) = self.sends.clone().try_acquire_owned() else {
            self.sends_dropped += 1;
            return;
        };
        let transport = self.transport.clone();
        tokio::spawn(async move {
            if let Err(error) = transport.send(to, Bytes::from(frame)).await {
                log_send_error(to, &error);
            }
            drop(permit);
        });
    }
}

/// The first 8 bytes of a hash, in hex.
fn short_hex(hash: &[u8]) -> String {
    hash.iter()
        .take(8)
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

fn log_send_error(to: AgentId, error: &TransportError) {
    tracing::debug!(peer = %to.short(), %error, "send failed");
}
