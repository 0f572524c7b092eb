//! [`Harness`]: many [`Endpoint`]s stepped against each other in memory on a virtual
//! clock, in a deterministic order: the one event queue and scheduler under both the
//! in-crate test harnesses (`knhk_gossip::testing::Cluster`) and the simulator
//! (`knhk_bench::Simulator`), in the spirit of quinn-proto's `Pair`.
//!
//! The harness drives endpoints, never a layer, so a node with any set of layers runs
//! here unchanged. It moves frames after a delay chosen by its [`Links`] model, fires
//! timers, keeps per-node clock skew, and crashes and restarts nodes (an epoch per node
//! makes a dead life's timers stale). Events due at one instant run in the order they
//! were scheduled, so a seed replays a run exactly.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use knhk_security::SignatureVerifier;
use knhk_types::{AgentId, EnvelopeSigner, UnixMillis};

use crate::endpoint::{Endpoint, Event, Output, Timer};
use crate::error::EndpointError;
use crate::layer::{Context, Layer, LayerHandle};

/// The virtual wall-clock time at which harnesses and simulators start unless told
/// otherwise: [`UnixMillis::VIRTUAL_START`].
pub const VIRTUAL_START: UnixMillis = UnixMillis::VIRTUAL_START;

/// How frames travel between nodes of a [`Harness`]: the network model.
pub trait Links {
    /// The one-way delay in virtual microseconds of a frame from node `from` to node
    /// `to`, sent at virtual `now_us` (since the start), or `None` if the frame is lost
    /// (the model counts its own losses).
    fn delay_us(&mut self, from: usize, to: usize, now_us: u64) -> Option<u64>;

    /// A frame of `bytes` from node `from` to node `to` is on its way (after
    /// [`Links::delay_us`] gave it a delay), for models that count traffic by link.
    /// Default: nothing.
    fn carried(&mut self, from: usize, to: usize, bytes: usize) {
        let _ = (from, to, bytes);
    }
}

/// Every frame takes the same time; none is lost.
#[derive(Clone, Copy, Debug)]
pub struct FixedLatency {
    /// One-way delay, virtual microseconds (at least 1).
    pub delay_us: u64,
}

impl Links for FixedLatency {
    fn delay_us(&mut self, _from: usize, _to: usize, _now_us: u64) -> Option<u64> {
        Some(self.delay_us.max(1))
    }
}

/// Frames counted by the harness.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Frames delivered.
    pub delivered: u64,
    /// Bytes of delivered frames.
    pub bytes: u64,
    /// Frames the [`Links`] model lost.
    pub lost: u64,
    /// Frames that reached a crashed node.
    pub to_dead: u64,
}

enum Pending {
    Deliver {
        to: usize,
        from: AgentId,
        frame: Vec<u8>,
    },
    Fire {
        node: usize,
        timer: Timer,
        epoch: u32,
    },
}

struct Node<S, V> {
    endpoint: Endpoint<S, V>,
    alive: bool,
    /// Bumped at every crash, so timers of a previous life are ignored.
    epoch: u32,
    skew_ms: i64,
    events: Vec<Event>,
}

/// Endpoints, a virtual clock in microseconds, and the frames and timers in flight.
pub struct Harness<S, V, L> {
    nodes: Vec<Node<S, V>>,
    index: HashMap<AgentId, usize>,
    links: L,
    start: UnixMillis,
    now_us: u64,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    pending: HashMap<u64, Pending>,
    sequence: u64,
    traffic: Traffic,
    record_events: bool,
}

impl<S, V, L> std::fmt::Debug for Harness<S, V, L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Harness")
            .field("nodes", &self.nodes.len())
            .field("now_us", &self.now_us)
            .field("in_flight", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl<S: EnvelopeSigner, V: SignatureVerifier + 'static, L: Links> Harness<S, V, L> {
    /// An empty harness whose virtual clock reads `start`, moving frames by `links`.
    /// With `record_events`, every node's events are kept ([`Harness::events`]);
    /// without, they are dropped (large simulations).
    pub fn new(links: L, start: UnixMillis, record_events: bool) -> Self {
        Self {
            nodes: Vec::new(),
            index: HashMap::new(),
            links,
            start,
            now_us: 0,
            queue: BinaryHeap::new(),
            pending: HashMap::new(),
            sequence: 0,
            traffic: Traffic::default(),
            record_events,
        }
    }

    /// Adds a node (not started: see [`Harness::start_node`]) whose clock is off by
    /// `skew_ms`. Returns its index.
    pub fn add_node(&mut self, endpoint: Endpoint<S, V>, skew_ms: i64) -> usize {
        let i = self.nodes.len();
        self.index.insert(endpoint.id(), i);
        self.nodes.push(Node {
            endpoint,
            alive: true,
            epoch: 0,
            skew_ms,
            events: Vec::new(),
        });
        i
    }

    /// Starts (or restarts) node `i` at its clock and carries out what it asks.
    pub fn start_node(&mut self, i: usize) {
        let now = self.clock(i);
        self.nodes[i].endpoint.start(now);
        self.drain(i);
    }

    /// Number of nodes (alive or not).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True if there are no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The index of the node with identity `id`.
    pub fn index_of(&self, id: &AgentId) -> Option<usize> {
        self.index.get(id).copied()
    }

    /// Virtual microseconds since the start.
    pub fn now_us(&self) -> u64 {
        self.now_us
    }

    /// Node `i`'s wall clock: the start plus virtual time (whole milliseconds) plus its
    /// skew.
    pub fn clock(&self, i: usize) -> UnixMillis {
        let ms = self.start.0 as i64 + (self.now_us / 1_000) as i64 + self.nodes[i].skew_ms;
        UnixMillis(ms.max(0) as u64)
    }

    /// Node `i`'s endpoint.
    pub fn endpoint(&self, i: usize) -> &Endpoint<S, V> {
        &self.nodes[i].endpoint
    }

    /// Node `i`'s endpoint, mutably (outputs it queues are carried out at its next
    /// input, or call [`Harness::drain`]).
    pub fn endpoint_mut(&mut self, i: usize) -> &mut Endpoint<S, V> {
        &mut self.nodes[i].endpoint
    }

    /// Replaces node `i`'s endpoint (a restart with lost state); it keeps its index.
    pub fn replace_endpoint(&mut self, i: usize, endpoint: Endpoint<S, V>) {
        self.nodes[i].endpoint = endpoint;
    }

    /// Events node `i` emitted so far (empty unless the harness records events).
    pub fn events(&self, i: usize) -> &[Event] {
        &self.nodes[i].events
    }

    /// True unless node `i` is crashed.
    pub fn is_alive(&self, i: usize) -> bool {
        self.nodes[i].alive
    }

    /// The network model.
    pub fn links(&self) -> &L {
        &self.links
    }

    /// The network model, mutably (to add a partition, say).
    pub fn links_mut(&mut self) -> &mut L {
        &mut self.links
    }

    /// The harness's frame counters.
    pub fn traffic(&self) -> Traffic {
        self.traffic
    }

    /// Calls `f` on a layer of node `i` at its clock (an application call: a write, a
    /// read), then carries out what the node asks.
    ///
    /// Errors: [`EndpointError::NoSuchLayer`] if `handle` is not node `i`'s.
    pub fn call<Y: Layer<V>, R>(
        &mut self,
        i: usize,
        handle: LayerHandle<Y>,
        f: impl FnOnce(&mut Y, &mut Context<'_, V>) -> R,
    ) -> Result<R, EndpointError> {
        let now = self.clock(i);
        let result = self.nodes[i].endpoint.call(now, handle, f);
        self.drain(i);
        result
    }

    /// Delivers `frame` to node `to` after `delay_us`, as if the authenticated peer
    /// `from` had sent it (hand-made frames, for example a Byzantine node's).
    pub fn deliver_after(&mut self, delay_us: u64, from: AgentId, to: usize, frame: Vec<u8>) {
        let at = self.now_us + delay_us;
        self.schedule(at, Pending::Deliver { to, from, frame });
    }

    /// Crashes node `i`: it stops receiving, and its pending timers are dropped.
    pub fn crash(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        node.alive = false;
        node.epoch += 1;
    }

    /// Brings node `i` back and restarts it (with the endpoint it has: replace it first
    /// for a restart that lost its state).
    pub fn revive(&mut self, i: usize) {
        self.nodes[i].alive = true;
        self.start_node(i);
    }

    /// The virtual time of the next pending event, if any.
    pub fn next_event_us(&self) -> Option<u64> {
        self.queue.peek().map(|Reverse((at, _))| *at)
    }

    /// Moves the clock forward to `at_us` without running anything (a caller that
    /// samples between events). Never moves it back.
    pub fn advance_to(&mut self, at_us: u64) {
        self.now_us = self.now_us.max(at_us);
    }

    /// Processes every event due at the next event time. False if nothing is pending.
    pub fn step(&mut self) -> bool {
        let Some(at) = self.next_event_us() else {
            return false;
        };
        self.now_us = self.now_us.max(at);
        while let Some(Reverse((due, sequence))) = self.queue.peek().copied() {
            if due > at {
                break;
            }
            self.queue.pop();
            let Some(pending) = self.pending.remove(&sequence) else {
                continue;
            };
            match pending {
                Pending::Deliver { to, from, frame } => {
                    if !self.nodes[to].alive {
                        self.traffic.to_dead += 1;
                        continue;
                    }
                    self.traffic.delivered += 1;
                    self.traffic.bytes += frame.len() as u64;
                    let now = self.clock(to);
                    self.nodes[to].endpoint.handle_frame(now, from, &frame);
                    self.drain(to);
                }
                Pending::Fire { node, timer, epoch } => {
                    if !self.nodes[node].alive || self.nodes[node].epoch != epoch {
                        continue;
                    }
                    let now = self.clock(node);
                    self.nodes[node].endpoint.handle_timer(now, timer);
                    self.drain(node);
                }
            }
        }
        true
    }

    /// Carries out everything node `i` has queued: frames go through the links, timers
    /// into the queue, events into the node's record (or nowhere).
    pub fn drain(&mut self, i: usize) {
        while let Some(output) = self.nodes[i].endpoint.poll_output() {
            match output {
                Output::Send { to, frame } => self.transmit(i, to, frame),
                Output::SetTimer { after, timer } => {
                    let after_us = u64::try_from(after.as_micros()).unwrap_or(u64::MAX);
                    let at = self.now_us.saturating_add(after_us);
                    let epoch = self.nodes[i].epoch;
                    self.schedule(
                        at,
                        Pending::Fire {
                            node: i,
                            timer,
                            epoch,
                        },
                    );
                }
                Output::Event(event) => {
                    if self.record_events {
                        self.nodes[i].events.push(event);
                    }
                }
            }
        }
    }

    fn transmit(&mut self, from: usize, to: AgentId, frame: Vec<u8>) {
        let Some(&target) = self.index.get(&to) else {
            return;
        };
        let Some(delay) = self.links.delay_us(from, target, self.now_us) else {
            self.traffic.lost += 1;
            return;
        };
        self.links.carried(from, target, frame.len());
        let sender = self.nodes[from].endpoint.id();
        let at = self.now_us + delay;
        self.schedule(
            at,
            Pending::Deliver {
                to: target,
                from: sender,
                frame,
            },
        );
    }

    fn schedule(&mut self, at_us: u64, pending: Pending) {
        self.sequence += 1;
        self.queue.push(Reverse((at_us, self.sequence)));
        self.pending.insert(self.sequence, pending);
    }
}
