//! [`Endpoint`]: the sans-IO node. It owns what exists once per node and routes each
//! validated frame to the layer that owns its kind and scope.

use std::any::Any;
use std::collections::VecDeque;
use std::time::Duration;

use knhk_security::{
    ByzantineValidator, Ed25519Verifier, NodeKey, ReceivedFrame, RejectReason, Rejection,
    SignatureVerifier, ValidatorConfig,
};
use knhk_types::{AgentId, EnvelopeRef, EnvelopeSigner, MessageKind, Scope, UnixMillis};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::error::EndpointError;
use crate::layer::{Context, Layer, LayerHandle, LayerId};
use crate::view::PeerView;

/// A timer an endpoint asked for: which layer, and the layer's token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Timer {
    pub(crate) layer: LayerId,
    pub(crate) token: u64,
}

impl Timer {
    /// The layer that set it.
    pub fn layer(self) -> LayerId {
        self.layer
    }

    /// The layer's token.
    pub fn token(self) -> u64 {
        self.token
    }
}

/// Something the application may want to know.
#[derive(Debug)]
pub enum Event {
    /// A frame from `from` was refused by the gate, or a layer charged `from` for its
    /// content.
    Rejected {
        /// The authenticated hop that delivered it.
        from: AgentId,
        /// Why.
        reason: RejectReason,
    },
    /// The gate banned `peer` for `duration` (too many rejections and charges). A
    /// driver tells its transport, so the banned peer's frames are not even read.
    Banned {
        /// The banned hop.
        peer: AgentId,
        /// For how long.
        duration: Duration,
    },
    /// An event of layer `layer` (its type is the layer's: see [`Event::downcast`]).
    Layer {
        /// Which layer emitted it.
        layer: LayerId,
        /// The layer's event.
        event: Box<dyn Any + Send>,
    },
}

impl Event {
    /// The event of the layer behind `handle`, if this is one of type `E`.
    pub fn downcast_ref<L, E: Any>(&self, handle: LayerHandle<L>) -> Option<&E> {
        match self {
            Self::Layer { layer, event } if *layer == handle.id => event.downcast_ref(),
            _ => None,
        }
    }

    /// Takes the event of the layer behind `handle` if this is one of type `E`;
    /// otherwise gives the event back unchanged.
    pub fn downcast<L, E: Any>(self, handle: LayerHandle<L>) -> Result<E, Self> {
        match self {
            Self::Layer { layer, event } if layer == handle.id => match event.downcast() {
                Ok(event) => Ok(*event),
                Err(event) => Err(Self::Layer { layer, event }),
            },
            other => Err(other),
        }
    }
}

/// What the endpoint wants done. Drained with [`Endpoint::poll_output`].
#[derive(Debug)]
pub enum Output {
    /// Send `frame` (an encoded, signed envelope) to `to`.
    Send {
        /// The peer.
        to: AgentId,
        /// The frame.
        frame: Vec<u8>,
    },
    /// Call [`Endpoint::handle_timer`] with `timer` once `after` has passed.
    SetTimer {
        /// How long from the input that produced it.
        after: Duration,
        /// Which timer.
        timer: Timer,
    },
    /// Tell the application.
    Event(Event),
}

/// Counters of an [`Endpoint`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndpointStats {
    /// Frames received (accepted or not).
    pub frames_received: u64,
    /// Frames refused by the gate.
    pub frames_rejected: u64,
    /// Frames that passed the gate but whose (kind, scope) no layer of this node owns:
    /// dropped, never charged.
    pub frames_unrouted: u64,
    /// Frames handed to the driver.
    pub frames_sent: u64,
    /// Bytes of those frames.
    pub bytes_sent: u64,
    /// Charges layers made for provable misbehaviour.
    pub charged: u64,
    /// Outputs dropped because the outbound queue was full.
    pub outputs_dropped: u64,
    /// Frames dropped before sending because they exceeded the frame size.
    pub oversized_dropped: u64,
}

/// Settings of an [`Endpoint`].
#[derive(Clone, Debug)]
pub struct EndpointConfig {
    /// Seed of the node's RNG (every layer's random choices). Give each node its own;
    /// the same seed replays the same choices. Default 0.
    pub seed: u64,
    /// Outputs (sends, events) queued before new ones are dropped and counted; timers
    /// are never dropped. Default 65,536.
    pub max_outbound: usize,
    /// The Byzantine gate every inbound frame passes (it also owns the node's
    /// `max_frame_bytes`, both ways).
    pub validator: ValidatorConfig,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        Self {
            seed: 0,
            max_outbound: 65_536,
            validator: ValidatorConfig::default(),
        }
    }
}

/// The outbound half: the nonce counter, the output queue and the counters.
#[derive(Debug)]
pub(crate) struct Outbox {
    pub(crate) nonce: u64,
    pub(crate) outputs: VecDeque<Output>,
    pub(crate) max_outbound: usize,
    pub(crate) stats: EndpointStats,
}

impl Outbox {
    /// Queues `output` unless the queue is full (then counts it). True if queued.
    pub(crate) fn push(&mut self, output: Output) -> bool {
        if self.outputs.len() >= self.max_outbound {
            self.stats.outputs_dropped += 1;
            return false;
        }
        self.outputs.push_back(output);
        true
    }

    /// Timers are never dropped: a layer would stop.
    pub(crate) fn push_timer(&mut self, after: Duration, timer: Timer) {
        self.outputs.push_back(Output::SetTimer { after, timer });
    }
}

struct Slot<V> {
    scope: Scope,
    kinds: &'static [MessageKind],
    layer: Box<dyn Layer<V>>,
}

/// The sans-IO node: one Byzantine gate (with its signature verifier and cache), one
/// signer and nonce counter, one peer view and one seeded RNG, shared by every protocol
/// layer the node runs.
///
/// Inputs: [`Endpoint::handle_frame`] (a frame and the authenticated peer that
/// delivered it), [`Endpoint::handle_timer`], and application calls into a layer with
/// [`Endpoint::call`], each with the current time. Outputs: drained with
/// [`Endpoint::poll_output`]. It reads no clock, opens no socket, spawns nothing.
///
/// Each frame is validated once, then routed by (kind, scope) to the layer that owns
/// it. A frame no layer owns is dropped and counted (`frames_unrouted`), never charged:
/// an honest peer may run a layer this node does not. Layers emit unsigned sends; the
/// endpoint seals each in an envelope with the node's next nonce, so two layers can
/// never collide in a receiver's replay window.
pub struct Endpoint<S = NodeKey, V = Ed25519Verifier> {
    signer: S,
    validator: ByzantineValidator<V>,
    view: Box<dyn PeerView + Send>,
    rng: ChaCha8Rng,
    outbox: Outbox,
    layers: Vec<Slot<V>>,
    /// The latest input time once started (`None` before [`Endpoint::start`]), so a
    /// layer added later starts at once.
    latest_input: Option<UnixMillis>,
}

impl<S, V> std::fmt::Debug for Endpoint<S, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("layers", &self.layers.len())
            .field("stats", &self.outbox.stats)
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// An endpoint for the node holding `key`, knowing the peers of `view`, verifying
    /// signatures with strict ed25519 behind the gate's cache.
    pub fn new(key: NodeKey, view: impl PeerView + Send + 'static, config: EndpointConfig) -> Self {
        let verifier = Ed25519Verifier::new(config.validator.signature_cache_capacity);
        Self::with_crypto(key, verifier, view, config)
    }
}

impl<S: EnvelopeSigner, V: SignatureVerifier + 'static> Endpoint<S, V> {
    /// An endpoint that signs with `signer` and verifies with `verifier` (the simulator
    /// swaps in a cheap stand-in with the same accept and reject behaviour).
    pub fn with_crypto(
        signer: S,
        verifier: V,
        view: impl PeerView + Send + 'static,
        config: EndpointConfig,
    ) -> Self {
        Self {
            signer,
            validator: ByzantineValidator::with_verifier(config.validator, verifier),
            view: Box::new(view),
            rng: ChaCha8Rng::seed_from_u64(config.seed),
            outbox: Outbox {
                nonce: 0,
                outputs: VecDeque::new(),
                max_outbound: config.max_outbound,
                stats: EndpointStats::default(),
            },
            layers: Vec::new(),
            latest_input: None,
        }
    }

    /// As [`Endpoint::with_crypto`], running `layer` in `scope` as its first layer (the
    /// common case of one protocol): infallible, since a fresh endpoint has no routes
    /// to clash with. Returns the endpoint and the layer's handle.
    pub fn with_layer<L: Layer<V>>(
        signer: S,
        verifier: V,
        view: impl PeerView + Send + 'static,
        config: EndpointConfig,
        scope: Scope,
        layer: L,
    ) -> (Self, LayerHandle<L>) {
        let mut endpoint = Self::with_crypto(signer, verifier, view, config);
        let handle = endpoint.push_layer(scope, layer);
        (endpoint, handle)
    }

    /// Adds `layer` in `scope`, owning [`Layer::kinds`] there. On an endpoint already
    /// started, the layer starts at once (at the latest input time seen).
    ///
    /// Errors: [`EndpointError::RouteTaken`] if another layer owns one of its kinds in
    /// `scope` (nothing is added then).
    pub fn add_layer<L: Layer<V>>(
        &mut self,
        scope: Scope,
        layer: L,
    ) -> Result<LayerHandle<L>, EndpointError> {
        let kinds = layer.kinds();
        for slot in self.layers.iter().filter(|slot| slot.scope == scope) {
            if let Some(&kind) = kinds.iter().find(|kind| slot.kinds.contains(kind)) {
                return Err(EndpointError::RouteTaken { kind, scope });
            }
        }
        Ok(self.push_layer(scope, layer))
    }

    /// Adds `layer` without checking its routes (the caller has).
    fn push_layer<L: Layer<V>>(&mut self, scope: Scope, layer: L) -> LayerHandle<L> {
        let id = LayerId(self.layers.len());
        self.layers.push(Slot {
            scope,
            kinds: layer.kinds(),
            layer: Box::new(layer),
        });
        if let Some(now) = self.latest_input {
            self.start_layer(now, id.0);
        }
        LayerHandle::new(id)
    }

    /// Starts (or restarts) the node at `now`: nonces continue from `now` (so a
    /// restarted node never repeats one its peers still remember), then every layer's
    /// [`Layer::start`] runs, in the order they were added.
    pub fn start(&mut self, now: UnixMillis) {
        self.outbox.nonce = now.0 << 20;
        self.latest_input = Some(now);
        for index in 0..self.layers.len() {
            self.start_layer(now, index);
        }
    }

    /// Handles one frame that the transport says came from `from`. The frame passes the
    /// Byzantine gate once; a refused frame yields only an [`Event::Rejected`]; an
    /// accepted one goes to the layer owning its (kind, scope), or is dropped and
    /// counted if none does.
    pub fn handle_frame(&mut self, now: UnixMillis, from: AgentId, frame: &[u8]) {
        self.handle_frame_received(now, now, from, frame);
    }

    /// As [`Endpoint::handle_frame`], for a frame that finished arriving at
    /// `received_at` and waited in a queue until `now`: a frame that went stale while
    /// it waited is refused but not charged to its sender (the backlog was ours).
    pub fn handle_frame_received(
        &mut self,
        now: UnixMillis,
        received_at: UnixMillis,
        from: AgentId,
        frame: &[u8],
    ) {
        self.note_time(now);
        self.outbox.stats.frames_received += 1;
        let view = &self.view;
        let directory = |id: &AgentId| view.contains(id);
        let validated = self
            .validator
            .validate_received(now, received_at, from, frame, &directory);
        self.deliver(now, from, validated);
    }

    /// Handles a burst of frames that were waiting together (a driver drains its inbound
    /// queue): they pass the gate as one [`ByzantineValidator::validate_burst`], so the
    /// hop signatures no cache answers cost one ed25519 batch, then each goes to its layer
    /// in order. Decides what the frames one at a time through
    /// [`Endpoint::handle_frame_received`] would (tested), except that a hop a *layer*
    /// bans while handling one frame has its later frames of the burst dropped before
    /// their layer sees them (counted as rejected, [`RejectReason::Banned`]).
    pub fn handle_frames_received(&mut self, now: UnixMillis, frames: &[ReceivedFrame<'_>]) {
        self.note_time(now);
        self.outbox.stats.frames_received += frames.len() as u64;
        let view = &self.view;
        let directory = |id: &AgentId| view.contains(id);
        let verdicts = self.validator.validate_burst(now, frames, &directory);
        for (frame, validated) in frames.iter().zip(verdicts) {
            let validated = match validated {
                // A layer may have banned the hop while handling an earlier frame.
                Ok(_) if self.validator.is_banned(&frame.hop, now) => Err(Rejection {
                    reason: RejectReason::Banned,
                    hop: frame.hop,
                    banned: false,
                }),
                other => other,
            };
            self.deliver(now, frame.hop, validated);
        }
    }

    /// After the gate: a refusal becomes an [`Event::Rejected`] (and an
    /// [`Event::Banned`] if it banned the hop); an accepted envelope goes to the layer
    /// owning its (kind, scope), or is dropped and counted if none does.
    fn deliver(
        &mut self,
        now: UnixMillis,
        from: AgentId,
        validated: Result<EnvelopeRef<'_>, Rejection>,
    ) {
        let envelope = match validated {
            Ok(envelope) => envelope,
            Err(rejection) => {
                self.outbox.stats.frames_rejected += 1;
                self.outbox.push(Output::Event(Event::Rejected {
                    from,
                    reason: rejection.reason,
                }));
                if rejection.banned {
                    self.note_ban(from);
                }
                return;
            }
        };
        let (kind, scope) = (envelope.header.kind, envelope.header.scope);
        let Some(index) = self
            .layers
            .iter()
            .position(|slot| slot.scope == scope && slot.kinds.contains(&kind))
        else {
            self.outbox.stats.frames_unrouted += 1;
            return;
        };
        let (layer, mut ctx) = self.parts(now, index);
        layer.handle_message(&mut ctx, from, kind, envelope.payload);
    }

    /// Emits [`Event::Banned`] for `peer`, which the gate just banned; a layer's charges
    /// emit their own through [`Context::charge`]. Bans are never dropped from the
    /// queue: the transport must hear of them.
    fn note_ban(&mut self, peer: AgentId) {
        let duration = self.validator.config().reputation.ban_duration;
        self.outbox
            .outputs
            .push_back(Output::Event(Event::Banned { peer, duration }));
    }

    /// Handles a timer set earlier by one of the layers. A timer naming no layer of
    /// this endpoint is ignored.
    pub fn handle_timer(&mut self, now: UnixMillis, timer: Timer) {
        self.note_time(now);
        if timer.layer.0 >= self.layers.len() {
            return;
        }
        let (layer, mut ctx) = self.parts(now, timer.layer.0);
        layer.handle_timer(&mut ctx, timer.token);
    }

    /// Calls `f` on the layer behind `handle` with a context at `now`: how an
    /// application writes, reads or asks a layer anything. Returns what `f` returns.
    ///
    /// Errors: [`EndpointError::NoSuchLayer`] if `handle` came from another endpoint.
    pub fn call<L: Layer<V>, R>(
        &mut self,
        now: UnixMillis,
        handle: LayerHandle<L>,
        f: impl FnOnce(&mut L, &mut Context<'_, V>) -> R,
    ) -> Result<R, EndpointError> {
        let index = handle.id.0;
        if index >= self.layers.len() {
            return Err(EndpointError::NoSuchLayer);
        }
        self.note_time(now);
        let (layer, mut ctx) = self.parts(now, index);
        let layer = (layer as &mut dyn Any)
            .downcast_mut::<L>()
            .ok_or(EndpointError::NoSuchLayer)?;
        Ok(f(layer, &mut ctx))
    }

    /// The layer behind `handle` (read-only), or `None` if `handle` came from another
    /// endpoint.
    pub fn layer<L: Layer<V>>(&self, handle: LayerHandle<L>) -> Option<&L> {
        let slot = self.layers.get(handle.id.0)?;
        (slot.layer.as_ref() as &dyn Any).downcast_ref()
    }

    /// The layer behind `handle`, mutably but without a context (it can change its own
    /// state, not send): for reads that update caches, such as a lazily computed root.
    pub fn layer_mut<L: Layer<V>>(&mut self, handle: LayerHandle<L>) -> Option<&mut L> {
        let slot = self.layers.get_mut(handle.id.0)?;
        (slot.layer.as_mut() as &mut dyn Any).downcast_mut()
    }

    /// The next output, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outbox.outputs.pop_front()
    }

    /// This node's identity.
    pub fn id(&self) -> AgentId {
        self.signer.agent_id()
    }

    /// Counters so far.
    pub fn stats(&self) -> EndpointStats {
        self.outbox.stats
    }

    /// The node's peer view as its concrete type `T` (read-only), or `None` if it is
    /// not a `T`.
    pub fn view<T: PeerView>(&self) -> Option<&T> {
        (self.view.as_ref() as &dyn Any).downcast_ref::<T>()
    }

    /// The node's peer view as its concrete type `T` (for the application or a test to
    /// change it; layers use [`Context::view_mut`]). Returns `None` if it is not a `T`.
    pub fn view_mut<T: PeerView>(&mut self) -> Option<&mut T> {
        (self.view.as_mut() as &mut dyn Any).downcast_mut::<T>()
    }

    /// The node's peer view.
    pub fn peers(&self) -> &dyn PeerView {
        self.view.as_ref()
    }

    /// The Byzantine gate (reputations, counters).
    pub fn validator(&self) -> &ByzantineValidator<V> {
        &self.validator
    }

    /// The Byzantine gate, mutably (to share or pre-warm its signature cache).
    pub fn validator_mut(&mut self) -> &mut ByzantineValidator<V> {
        &mut self.validator
    }

    /// Reputation of `peer` at `now`, as judged by this node's gate.
    pub fn reputation(&self, peer: &AgentId, now: UnixMillis) -> u32 {
        self.validator.reputation(peer, now)
    }

    /// Estimated bytes this node holds: the endpoint itself, the gate's replay window,
    /// signature cache and sender table, queued outputs, its peer view, and every
    /// layer's own estimate.
    /// Deterministic (counts and sizes, not allocator readings): an *estimate* for
    /// memory-per-node figures, which undercounts allocator overhead.
    pub fn approx_memory_bytes(&self) -> usize {
        let gate = self.validator.stats();
        std::mem::size_of::<Self>()
            + gate.replay_entries * 16
            + gate.tracked_senders * 96
            + self.validator.verifier().memory_bytes()
            + self.outbox.outputs.len() * 64
            + self.view.approx_memory_bytes()
            + self
                .layers
                .iter()
                .map(|slot| {
                    std::mem::size_of_val(slot.layer.as_ref()) + slot.layer.approx_memory_bytes()
                })
                .sum::<usize>()
    }

    fn note_time(&mut self, now: UnixMillis) {
        if let Some(latest) = &mut self.latest_input {
            *latest = now.max(*latest);
        }
    }

    fn start_layer(&mut self, now: UnixMillis, index: usize) {
        let (layer, mut ctx) = self.parts(now, index);
        layer.start(&mut ctx);
    }

    /// Layer `index` and a context lending it everything else (disjoint borrows).
    fn parts(&mut self, now: UnixMillis, index: usize) -> (&mut dyn Layer<V>, Context<'_, V>) {
        let slot = &mut self.layers[index];
        let ctx = Context {
            now,
            layer: LayerId(index),
            scope: slot.scope,
            signer: &self.signer,
            validator: &mut self.validator,
            view: self.view.as_mut(),
            rng: &mut self.rng,
            outbox: &mut self.outbox,
        };
        (slot.layer.as_mut(), ctx)
    }
}
