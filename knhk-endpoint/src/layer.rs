//! The layer contract: what every protocol layer implements, and the [`Context`] the
//! endpoint lends it for one call.

use std::any::Any;
use std::marker::PhantomData;
use std::time::Duration;

use knhk_security::{ByzantineValidator, RejectReason, SignatureVerifier};
use knhk_types::{
    AgentId, Envelope, EnvelopeHeader, EnvelopeSigner, MessageKind, Scope, UnixMillis,
};
use rand_chacha::ChaCha8Rng;

use crate::endpoint::{Event, Outbox, Output, Timer};
use crate::view::PeerView;

/// Which layer of an endpoint (its position, in the order layers were added).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LayerId(pub(crate) usize);

impl LayerId {
    /// The position of the layer on its endpoint.
    pub fn index(self) -> usize {
        self.0
    }
}

/// A typed name for one layer of one endpoint, returned by
/// [`crate::Endpoint::add_layer`]: the application reaches its layer through it, and
/// events from the layer are recognised by it.
#[derive(Debug)]
pub struct LayerHandle<L> {
    pub(crate) id: LayerId,
    layer: PhantomData<fn() -> L>,
}

impl<L> LayerHandle<L> {
    pub(crate) fn new(id: LayerId) -> Self {
        Self {
            id,
            layer: PhantomData,
        }
    }

    /// The layer's id.
    pub fn id(&self) -> LayerId {
        self.id
    }
}

impl<L> Clone for LayerHandle<L> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<L> Copy for LayerHandle<L> {}

impl<L> PartialEq for LayerHandle<L> {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl<L> Eq for LayerHandle<L> {}

/// A protocol layer under the node endpoint: a sans-IO state machine that owns some
/// message kinds in one scope.
///
/// The endpoint has already validated every frame it hands to
/// [`Layer::handle_message`] (size, ban, decode, sender, timestamp, replay, envelope
/// signature, rate). A layer never signs an envelope, reads a clock, or owns peers: it
/// answers through its [`Context`], which lends the node's peer view, RNG and signature
/// verifier, and collects sends, relative timers, events and charges.
///
/// `V` is the endpoint's signature verifier (production: ed25519; the simulator: a
/// stand-in); a layer that does not check signatures itself is generic over it.
pub trait Layer<V>: Any + Send {
    /// The kinds this layer owns in its scope. Frames of these kinds in that scope are
    /// routed here; each (kind, scope) has at most one owner per endpoint.
    fn kinds(&self) -> &'static [MessageKind];

    /// The endpoint started (or restarted): set the first timers. Default: nothing.
    fn start(&mut self, ctx: &mut Context<'_, V>) {
        let _ = ctx;
    }

    /// A validated frame of one of [`Layer::kinds`] in this layer's scope, from the
    /// authenticated peer `from`. `payload` is the envelope's payload, untrusted: a
    /// layer decodes it and, if it proves misbehaviour, calls [`Context::charge`].
    fn handle_message(
        &mut self,
        ctx: &mut Context<'_, V>,
        from: AgentId,
        kind: MessageKind,
        payload: &[u8],
    );

    /// A timer this layer set with [`Context::set_timer`] fired, carrying its `token`.
    /// Stale tokens are the layer's to ignore (timers are never cancelled). Default:
    /// nothing.
    fn handle_timer(&mut self, ctx: &mut Context<'_, V>, token: u64) {
        let _ = (ctx, token);
    }

    /// Estimated heap bytes this layer holds (for memory-per-node figures). Default 0.
    fn approx_memory_bytes(&self) -> usize {
        0
    }
}

/// What the endpoint lends a layer for one call: the time, the node's identity, peer
/// view, RNG and signature verifier, and the outbox for sends, timers, events and
/// charges.
pub struct Context<'a, V> {
    pub(crate) now: UnixMillis,
    pub(crate) layer: LayerId,
    pub(crate) scope: Scope,
    pub(crate) signer: &'a dyn EnvelopeSigner,
    pub(crate) validator: &'a mut ByzantineValidator<V>,
    pub(crate) view: &'a mut (dyn PeerView + Send),
    pub(crate) rng: &'a mut ChaCha8Rng,
    pub(crate) outbox: &'a mut Outbox,
}

impl<V> std::fmt::Debug for Context<'_, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("now", &self.now)
            .field("layer", &self.layer)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

impl<V: SignatureVerifier> Context<'_, V> {
    /// The time of the input being handled (the node's wall clock, as the driver gave it).
    pub fn now(&self) -> UnixMillis {
        self.now
    }

    /// This node's identity.
    pub fn id(&self) -> AgentId {
        self.signer.agent_id()
    }

    /// The layer being called.
    pub fn layer(&self) -> LayerId {
        self.layer
    }

    /// The scope the layer runs in.
    pub fn scope(&self) -> Scope {
        self.scope
    }

    /// The node's peer view (to sample peers from, or to ask whether one is known).
    pub fn peers(&self) -> &dyn PeerView {
        self.view
    }

    /// The node's peer view as its concrete type `T`, to change it: for the one layer
    /// that keeps the view (topology). Returns `None` if the view is not a `T`.
    pub fn view_mut<T: PeerView>(&mut self) -> Option<&mut T> {
        (self.view as &mut dyn std::any::Any).downcast_mut::<T>()
    }

    /// Appends up to `k` distinct peers from the node's view, chosen with the node's
    /// RNG (never ourselves; fewer if fewer are known).
    pub fn sample_peers(&mut self, k: usize, out: &mut Vec<AgentId>) {
        self.view.sample_into(k, self.rng, out);
    }

    /// The node's seeded RNG: every random choice of every layer comes from it, so a
    /// seed replays a node exactly.
    pub fn rng(&mut self) -> &mut ChaCha8Rng {
        self.rng
    }

    /// The node's signature verifier, shared with the gate, so each unique signature
    /// (for example a CRDT entry's, relayed by many peers) is verified once per node.
    pub fn verifier(&mut self) -> &mut V {
        self.validator.verifier_mut()
    }

    /// The node's signer, for data the layer must sign as this node's own (a CRDT
    /// entry is its writer's signature). Envelopes are sealed by the endpoint only:
    /// use [`Context::send`].
    pub fn signer(&self) -> &dyn EnvelopeSigner {
        self.signer
    }

    /// The largest frame the node sends or accepts (the gate's setting; the one owner
    /// of this limit).
    pub fn max_frame_bytes(&self) -> usize {
        self.validator.config().max_frame_bytes
    }

    /// Sends `payload` as a `kind` message in this layer's scope to `to`: the endpoint
    /// seals it in a signed envelope with the node's next nonce. Returns false if the
    /// frame was dropped (larger than [`Context::max_frame_bytes`], or the outbound
    /// queue is full); both are counted in [`crate::EndpointStats`].
    pub fn send(&mut self, to: AgentId, kind: MessageKind, payload: &[u8]) -> bool {
        let scope = self.scope;
        self.send_in(to, kind, scope, payload)
    }

    /// As [`Context::send`], in another `scope` (a layer that bridges two instances,
    /// for example a hierarchy relaying between levels).
    pub fn send_in(
        &mut self,
        to: AgentId,
        kind: MessageKind,
        scope: Scope,
        payload: &[u8],
    ) -> bool {
        let max = self.max_frame_bytes();
        let outbox = &mut *self.outbox;
        outbox.nonce += 1;
        let header = EnvelopeHeader::scoped(kind, scope, self.now, outbox.nonce);
        let frame = Envelope::seal(self.signer, header, payload);
        if frame.len() > max {
            // The transport would refuse it; count it where an operator can see it.
            outbox.stats.oversized_dropped += 1;
            return false;
        }
        outbox.stats.frames_sent += 1;
        outbox.stats.bytes_sent += frame.len() as u64;
        outbox.push(Output::Send { to, frame })
    }

    /// Asks for [`Layer::handle_timer`] with `token` after `after`. Timers are never
    /// dropped and never cancelled: a layer recognises stale ones by their token.
    pub fn set_timer(&mut self, after: Duration, token: u64) {
        let timer = Timer {
            layer: self.layer,
            token,
        };
        self.outbox.push_timer(after, timer);
    }

    /// Tells the application something (delivered as [`Event::Layer`] with this
    /// layer's id; [`Event::downcast`] recovers `event`).
    pub fn emit<E: Any + Send>(&mut self, event: E) {
        let layer = self.layer;
        self.outbox.push(Output::Event(Event::Layer {
            layer,
            event: Box::new(event),
        }));
    }

    /// Charges `peer` for content that *proves* misbehaviour (a forged entry, a lie
    /// about versions, an undecodable payload). The gate lowers its reputation and may
    /// ban it; an [`Event::Rejected`] tells the application. Never charge a peer for
    /// something an honest peer could send (a limit of ours, a late answer).
    pub fn charge(&mut self, peer: AgentId, reason: RejectReason) {
        let bans = self.validator.bans();
        self.validator.report(self.now, peer, reason);
        self.outbox.stats.charged += 1;
        self.outbox
            .push(Output::Event(Event::Rejected { from: peer, reason }));
        if self.validator.bans() > bans {
            // The transport must hear of every ban: never dropped from the queue.
            let duration = self.validator.config().reputation.ban_duration;
            self.outbox
                .outputs
                .push_back(Output::Event(Event::Banned { peer, duration }));
        }
    }
}
