//! [`Cluster`]: many [`GossipCore`]s stepped against each other in memory, on a virtual
//! clock, in a deterministic order (the harness of quinn-proto's `Pair`, for gossip).
//!
//! Every node is a real core with real ed25519 keys and the real validator; the
//! harness only moves frames between them after a fixed latency and fires their
//! timers. The same seed replays the same run exactly.
//!
//! ```
//! use knhk_gossip::testing::{Cluster, ClusterConfig};
//!
//! let mut cluster = Cluster::new(ClusterConfig { nodes: 5, ..ClusterConfig::default() });
//! cluster.put(0, "greeting", b"hello".to_vec())?;
//! let converged_at = cluster.run_until_converged(10_000).expect("converges within 10 s");
//! assert!(cluster.all_nodes().all(|i| cluster.core(i).get("greeting") == Some(&b"hello"[..])));
//! # let _ = converged_at;
//! # Ok::<(), knhk_crdt::CrdtError>(())
//! ```

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use knhk_crdt::{CrdtError, Delta, Hash, SignedEntry, WriterRange};
use knhk_security::NodeKey;
use knhk_types::{AgentId, Envelope, EnvelopeHeader, EnvelopeSigner, Signature, UnixMillis};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::config::GossipConfig;
use crate::core::{GossipCore, GossipEvent, Output, Timer};
use crate::membership::{MemberList, StaticMembership};
use crate::message::GossipMessage;

/// A delta claiming `victim`'s first write, key `forged`, with a signature `victim`
/// never made: what a Byzantine relay forges. Every honest core must refuse it.
pub fn forged_delta(victim: AgentId) -> Delta {
    Delta {
        ranges: vec![WriterRange {
            writer: victim,
            after: 0,
            through: 1,
        }],
        entries: vec![SignedEntry {
            key: "forged".into(),
            value: Some(b"evil".to_vec()),
            writer: victim,
            counter: 1,
            lamport: 1,
            signature: Signature([7; 64]),
        }],
    }
}

/// A signed gossip `Push` frame carrying `delta`, sent by `signer` at `now` with
/// `nonce`: what a peer's core would send, for tests and simulators that write frames by
/// hand (for example a Byzantine node's).
pub fn push_frame(
    signer: &impl EnvelopeSigner,
    now: UnixMillis,
    nonce: u64,
    delta: &Delta,
) -> Vec<u8> {
    let message = GossipMessage::Push {
        delta: delta.encode(512),
    };
    // Serializing this message into a Vec cannot fail.
    let payload = postcard::to_allocvec(&message).unwrap_or_default();
    Envelope::sign(
        signer,
        EnvelopeHeader::new(message.kind(), now, nonce),
        payload,
    )
    .encode()
}

/// Shape of a [`Cluster`].
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// Number of cores. Default 10.
    pub nodes: usize,
    /// Seed of everything: keys, per-core seeds. Default 1.
    pub seed: u64,
    /// One-way delay of every frame, in virtual milliseconds (at least 1). Default 1.
    pub latency_ms: u64,
    /// Configuration of every core (each gets its own RNG seed derived from `seed`).
    pub gossip: GossipConfig,
    /// Members with no core in the cluster (for example a Byzantine node whose frames
    /// a test crafts by hand with [`Cluster::inject`]).
    pub extra_members: Vec<AgentId>,
    /// Virtual wall-clock time at the start. Default 2024-11-19 07:06:40 UTC.
    pub start: UnixMillis,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            nodes: 10,
            seed: 1,
            latency_ms: 1,
            gossip: GossipConfig::default(),
            extra_members: Vec::new(),
            start: UnixMillis(1_732_000_000_000),
        }
    }
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
    },
}

/// Cores, a virtual clock and the frames in flight between them.
pub struct Cluster {
    cores: Vec<GossipCore<StaticMembership>>,
    index: HashMap<AgentId, usize>,
    now: UnixMillis,
    latency_ms: u64,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    pending: HashMap<u64, Pending>,
    sequence: u64,
    events: Vec<Vec<GossipEvent>>,
    frames_delivered: u64,
    bytes_delivered: u64,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("nodes", &self.cores.len())
            .field("now", &self.now)
            .field("in_flight", &self.pending.len())
            .finish()
    }
}

impl Cluster {
    /// Creates and starts `config.nodes` cores.
    pub fn new(config: ClusterConfig) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let keys: Vec<NodeKey> = (0..config.nodes)
            .map(|_| NodeKey::from_seed(rng.random()))
            .collect();
        let mut ids: Vec<AgentId> = keys.iter().map(NodeKey::agent_id).collect();
        ids.extend(config.extra_members.iter().copied());
        let members = MemberList::new(ids);
        let mut cluster = Self {
            cores: Vec::with_capacity(config.nodes),
            index: HashMap::with_capacity(config.nodes),
            now: config.start,
            latency_ms: config.latency_ms.max(1),
            queue: BinaryHeap::new(),
            pending: HashMap::new(),
            sequence: 0,
            events: vec![Vec::new(); config.nodes],
            frames_delivered: 0,
            bytes_delivered: 0,
        };
        for (i, key) in keys.into_iter().enumerate() {
            let id = key.agent_id();
            let gossip = GossipConfig {
                seed: rng.random(),
                ..config.gossip.clone()
            };
            cluster.index.insert(id, i);
            cluster.cores.push(GossipCore::new(
                key,
                StaticMembership::new(members.clone(), id),
                gossip,
            ));
        }
        for i in 0..cluster.cores.len() {
            let now = cluster.now;
            cluster.cores[i].start(now);
            cluster.drain(i);
        }
        cluster
    }

    /// Number of cores.
    pub fn len(&self) -> usize {
        self.cores.len()
    }

    /// True if the cluster has no cores.
    pub fn is_empty(&self) -> bool {
        self.cores.is_empty()
    }

    /// Indices of every core.
    pub fn all_nodes(&self) -> std::ops::Range<usize> {
        0..self.cores.len()
    }

    /// Core `i`.
    pub fn core(&self, i: usize) -> &GossipCore<StaticMembership> {
        &self.cores[i]
    }

    /// Core `i`, mutably.
    pub fn core_mut(&mut self, i: usize) -> &mut GossipCore<StaticMembership> {
        &mut self.cores[i]
    }

    /// The virtual time.
    pub fn now(&self) -> UnixMillis {
        self.now
    }

    /// Events core `i` emitted so far.
    pub fn events(&self, i: usize) -> &[GossipEvent] {
        &self.events[i]
    }

    /// Frames and bytes delivered so far.
    pub fn traffic(&self) -> (u64, u64) {
        (self.frames_delivered, self.bytes_delivered)
    }

    /// A local write on core `i`, at the current virtual time.
    ///
    /// Errors: as [`GossipCore::put`].
    pub fn put(&mut self, i: usize, key: &str, value: Vec<u8>) -> Result<(), CrdtError> {
        let now = self.now;
        self.cores[i].put(now, key, value)?;
        self.drain(i);
        Ok(())
    }

    /// Delivers `frame` to core `to` as if the authenticated peer `from` had sent it,
    /// after the usual latency.
    pub fn inject(&mut self, from: AgentId, to: usize, frame: Vec<u8>) {
        let at = self.now.0 + self.latency_ms;
        self.schedule(at, Pending::Deliver { to, frame, from });
    }

    /// Processes everything due at the next event time. Returns false if nothing is
    /// pending.
    pub fn step(&mut self) -> bool {
        let Some(Reverse((at, _))) = self.queue.peek().copied() else {
            return false;
        };
        self.now = UnixMillis(at.max(self.now.0));
        while let Some(Reverse((due, sequence))) = self.queue.peek().copied() {
            if due > at {
                break;
            }
            self.queue.pop();
            let Some(pending) = self.pending.remove(&sequence) else {
                continue;
            };
            let now = self.now;
            let node = match pending {
                Pending::Deliver { to, from, frame } => {
                    self.frames_delivered += 1;
                    self.bytes_delivered += frame.len() as u64;
                    self.cores[to].handle_message(now, from, &frame);
                    to
                }
                Pending::Fire { node, timer } => {
                    self.cores[node].handle_timer(now, timer);
                    node
                }
            };
            self.drain(node);
        }
        true
    }

    /// Steps until `done` holds (checked after each event time) or `deadline_ms` of
    /// virtual time has passed since the call. Returns the virtual time `done` first
    /// held, or `None` on timeout.
    pub fn run_until(
        &mut self,
        deadline_ms: u64,
        mut done: impl FnMut(&mut Self) -> bool,
    ) -> Option<UnixMillis> {
        let deadline = self.now.0 + deadline_ms;
        loop {
            if done(self) {
                return Some(self.now);
            }
            match self.queue.peek() {
                Some(Reverse((at, _))) if *at <= deadline => {
                    self.step();
                }
                _ => return None,
            }
        }
    }

    /// Steps until every core holds the same root, or `deadline_ms` passes.
    pub fn run_until_converged(&mut self, deadline_ms: u64) -> Option<UnixMillis> {
        let nodes: Vec<usize> = self.all_nodes().collect();
        self.run_until(deadline_ms, |cluster| cluster.roots_agree(&nodes))
    }

    /// True if the given cores all hold the same Merkle root.
    pub fn roots_agree(&mut self, nodes: &[usize]) -> bool {
        let mut roots = nodes.iter().map(|&i| self.cores[i].merkle_root());
        let Some(first) = roots.next() else {
            return true;
        };
        roots.all(|root: Hash| root == first)
    }

    fn drain(&mut self, node: usize) {
        while let Some(output) = self.cores[node].poll_output() {
            match output {
                Output::Send { to, frame } => {
                    if let Some(&target) = self.index.get(&to) {
                        let at = self.now.0 + self.latency_ms;
                        let from = self.cores[node].id();
                        self.schedule(
                            at,
                            Pending::Deliver {
                                to: target,
                                from,
                                frame,
                            },
                        );
                    }
                }
                Output::SetTimer { at, timer } => {
                    self.schedule(at.0, Pending::Fire { node, timer })
                }
                Output::Event(event) => self.events[node].push(event),
            }
        }
    }

    fn schedule(&mut self, at: u64, pending: Pending) {
        self.sequence += 1;
        self.queue.push(Reverse((at, self.sequence)));
        self.pending.insert(self.sequence, pending);
    }
}
