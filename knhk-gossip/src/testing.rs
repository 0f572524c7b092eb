//! [`Cluster`]: many gossip nodes stepped against each other in memory, on a virtual
//! clock, in a deterministic order, on the endpoint's shared
//! [`knhk_endpoint::harness::Harness`] (the one the simulator uses too).
//!
//! Every node is a real [`Endpoint`] with real ed25519 keys, the real gate and a real
//! [`GossipLayer`]; the harness only moves frames between them after a fixed latency and
//! fires their timers. The same seed replays the same run exactly. More layers can be
//! added to every node with [`Cluster::with_layers`]; the harness does not change.
//!
//! ```
//! use knhk_gossip::testing::{Cluster, ClusterConfig};
//!
//! let mut cluster = Cluster::new(ClusterConfig { nodes: 5, ..ClusterConfig::default() });
//! cluster.put(0, "greeting", b"hello".to_vec())?;
//! let converged_at = cluster.run_until_converged(10_000).expect("converges within 10 s");
//! assert!(cluster.all_nodes().all(|i| cluster.gossip(i).get("greeting") == Some(&b"hello"[..])));
//! # let _ = converged_at;
//! # Ok::<(), knhk_gossip::GossipError>(())
//! ```

use knhk_crdt::{Delta, Hash, SignedEntry, WriterRange};
use knhk_endpoint::harness::{FixedLatency, Harness, Traffic, VIRTUAL_START};
use knhk_endpoint::{Endpoint, EndpointConfig, Event, LayerHandle, MemberList, StaticView};
use knhk_security::{Ed25519Verifier, NodeKey, RejectReason, ValidatorConfig};
use knhk_types::{AgentId, Envelope, EnvelopeHeader, EnvelopeSigner, Signature, UnixMillis};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::config::GossipConfig;
use crate::layer::{GossipEvent, GossipLayer};
use crate::message::GossipMessage;

/// A delta claiming `victim`'s first write, key `forged`, with a signature `victim`
/// never made: what a Byzantine relay forges. Every honest node must refuse it.
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
/// `nonce` in the default scope: what a peer's node would send, for tests and
/// simulators that write frames by hand (for example a Byzantine node's).
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
    Envelope::seal(
        signer,
        EnvelopeHeader::new(message.kind(), now, nonce),
        &payload,
    )
}

/// A signed anti-entropy `Entries` frame carrying `entries`, sent by `signer` at `now`
/// with `nonce` in the default scope (for tests that send entries outside a session).
pub fn entries_frame(
    signer: &impl EnvelopeSigner,
    now: UnixMillis,
    nonce: u64,
    entries: Vec<SignedEntry>,
) -> Vec<u8> {
    let message = GossipMessage::Entries { entries };
    // Serializing this message into a Vec cannot fail.
    let payload = postcard::to_allocvec(&message).unwrap_or_default();
    Envelope::seal(
        signer,
        EnvelopeHeader::new(message.kind(), now, nonce),
        &payload,
    )
}

/// A signed gossip `Pull` frame with `root` and `version`, sent by `signer` at `now`
/// with `nonce` in the default scope (for tests of what a pull may cost its receiver).
pub fn pull_frame(
    signer: &impl EnvelopeSigner,
    now: UnixMillis,
    nonce: u64,
    root: Hash,
    version: Option<knhk_types::VersionVector>,
) -> Vec<u8> {
    let message = GossipMessage::Pull {
        root,
        version: version.map(knhk_types::VersionPage::whole),
    };
    // Serializing this message into a Vec cannot fail.
    let payload = postcard::to_allocvec(&message).unwrap_or_default();
    Envelope::seal(
        signer,
        EnvelopeHeader::new(message.kind(), now, nonce),
        &payload,
    )
}

/// A signed Merkle-diff question for `buckets` (session `session`), sent by `signer`
/// at `now` with `nonce` (for tests of what questions may cost their receiver).
pub fn diff_ask_frame(
    signer: &impl EnvelopeSigner,
    now: UnixMillis,
    nonce: u64,
    session: u64,
    buckets: Vec<u32>,
) -> Vec<u8> {
    let message = GossipMessage::DiffAsk {
        session,
        nodes: Vec::new(),
        buckets,
    };
    // Serializing this message into a Vec cannot fail.
    let payload = postcard::to_allocvec(&message).unwrap_or_default();
    Envelope::seal(
        signer,
        EnvelopeHeader::new(message.kind(), now, nonce),
        &payload,
    )
}

/// Shape of a [`Cluster`].
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// Number of nodes. Default 10.
    pub nodes: usize,
    /// Seed of everything: keys, per-node seeds. Default 1.
    pub seed: u64,
    /// One-way delay of every frame, in virtual milliseconds (at least 1). Default 1.
    pub latency_ms: u64,
    /// Configuration of every node's gossip layer.
    pub gossip: GossipConfig,
    /// The gate of every node.
    pub validator: ValidatorConfig,
    /// Members with no node in the cluster (for example a Byzantine node whose frames
    /// a test crafts by hand with [`Cluster::inject`]).
    pub extra_members: Vec<AgentId>,
    /// Virtual wall-clock time at the start. Default [`VIRTUAL_START`].
    pub start: UnixMillis,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            nodes: 10,
            seed: 1,
            latency_ms: 1,
            gossip: GossipConfig::default(),
            validator: ValidatorConfig::default(),
            extra_members: Vec::new(),
            start: VIRTUAL_START,
        }
    }
}

/// A cluster node's endpoint.
pub type ClusterEndpoint = Endpoint<NodeKey, Ed25519Verifier>;

/// Nodes, a virtual clock and the frames in flight between them.
pub struct Cluster {
    harness: Harness<NodeKey, Ed25519Verifier, FixedLatency>,
    gossip: Vec<LayerHandle<GossipLayer>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("harness", &self.harness)
            .finish()
    }
}

impl Cluster {
    /// Creates and starts `config.nodes` nodes, each running one gossip layer.
    pub fn new(config: ClusterConfig) -> Self {
        Self::with_layers(config, |_, _| {})
    }

    /// As [`Cluster::new`], calling `add_layers(endpoint, i)` on every node after its
    /// gossip layer is added and before it starts (to add more layers).
    pub fn with_layers(
        config: ClusterConfig,
        mut add_layers: impl FnMut(&mut ClusterEndpoint, usize),
    ) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let keys: Vec<NodeKey> = (0..config.nodes)
            .map(|_| NodeKey::from_seed(rng.random()))
            .collect();
        let mut ids: Vec<AgentId> = keys.iter().map(NodeKey::agent_id).collect();
        ids.extend(config.extra_members.iter().copied());
        let members = MemberList::new(ids);
        let links = FixedLatency {
            delay_us: config.latency_ms.max(1) * 1_000,
        };
        let mut cluster = Self {
            harness: Harness::new(links, config.start, true),
            gossip: Vec::with_capacity(config.nodes),
        };
        for (i, key) in keys.into_iter().enumerate() {
            let id = key.agent_id();
            let endpoint_config = EndpointConfig {
                seed: rng.random(),
                validator: config.validator.clone(),
                ..EndpointConfig::default()
            };
            let mut endpoint =
                Endpoint::new(key, StaticView::new(members.clone(), id), endpoint_config);
            // A fresh endpoint has no routes yet: adding the first layer cannot clash.
            let handle = endpoint
                .add_layer(
                    knhk_types::Scope::DEFAULT,
                    GossipLayer::new(config.gossip.clone()),
                )
                .unwrap_or_else(|_| unreachable!("a fresh endpoint has no routes"));
            add_layers(&mut endpoint, i);
            cluster.gossip.push(handle);
            cluster.harness.add_node(endpoint, 0);
        }
        for i in 0..cluster.harness.len() {
            cluster.harness.start_node(i);
        }
        cluster
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.harness.len()
    }

    /// True if the cluster has no nodes.
    pub fn is_empty(&self) -> bool {
        self.harness.is_empty()
    }

    /// Indices of every node.
    pub fn all_nodes(&self) -> std::ops::Range<usize> {
        0..self.harness.len()
    }

    /// Node `i`'s gossip layer.
    pub fn gossip(&self, i: usize) -> &GossipLayer {
        self.harness
            .endpoint(i)
            .layer(self.gossip[i])
            .unwrap_or_else(|| unreachable!("every node runs its gossip layer"))
    }

    /// Node `i`'s gossip layer, mutably (for reads that update caches, such as the
    /// root).
    pub fn gossip_mut(&mut self, i: usize) -> &mut GossipLayer {
        let handle = self.gossip[i];
        self.harness
            .endpoint_mut(i)
            .layer_mut(handle)
            .unwrap_or_else(|| unreachable!("every node runs its gossip layer"))
    }

    /// The handle of node `i`'s gossip layer.
    pub fn gossip_handle(&self, i: usize) -> LayerHandle<GossipLayer> {
        self.gossip[i]
    }

    /// Node `i`'s endpoint.
    pub fn endpoint(&self, i: usize) -> &ClusterEndpoint {
        self.harness.endpoint(i)
    }

    /// The harness underneath (to call other layers, crash nodes…).
    pub fn harness_mut(&mut self) -> &mut Harness<NodeKey, Ed25519Verifier, FixedLatency> {
        &mut self.harness
    }

    /// The virtual time.
    pub fn now(&self) -> UnixMillis {
        self.harness.clock(0)
    }

    /// Events node `i` emitted so far.
    pub fn events(&self, i: usize) -> &[Event] {
        self.harness.events(i)
    }

    /// The gossip events node `i` emitted so far.
    pub fn gossip_events(&self, i: usize) -> Vec<&GossipEvent> {
        let handle = self.gossip[i];
        self.events(i)
            .iter()
            .filter_map(|event| event.downcast_ref::<GossipLayer, GossipEvent>(handle))
            .collect()
    }

    /// The rejections node `i` reported so far (by its gate, or charged by a layer).
    pub fn rejections(&self, i: usize) -> Vec<(AgentId, RejectReason)> {
        self.events(i)
            .iter()
            .filter_map(|event| match event {
                Event::Rejected { from, reason } => Some((*from, *reason)),
                Event::Banned { .. } | Event::Layer { .. } => None,
            })
            .collect()
    }

    /// Frames and bytes delivered so far.
    pub fn traffic(&self) -> (u64, u64) {
        let Traffic {
            delivered, bytes, ..
        } = self.harness.traffic();
        (delivered, bytes)
    }

    /// A local write on node `i`, at the current virtual time.
    ///
    /// Errors: as [`GossipLayer::put`].
    pub fn put(&mut self, i: usize, key: &str, value: Vec<u8>) -> Result<(), crate::GossipError> {
        let handle = self.gossip[i];
        self.harness
            .call(i, handle, |gossip, ctx| {
                gossip.put(ctx, key, value).map(drop)
            })
            .unwrap_or_else(|_| unreachable!("every node runs its gossip layer"))
    }

    /// Delivers `frame` to node `to` as if the authenticated peer `from` had sent it,
    /// after the usual latency.
    pub fn inject(&mut self, from: AgentId, to: usize, frame: Vec<u8>) {
        let delay = self.harness.links().delay_us;
        self.harness.deliver_after(delay, from, to, frame);
    }

    /// Processes everything due at the next event time. Returns false if nothing is
    /// pending.
    pub fn step(&mut self) -> bool {
        self.harness.step()
    }

    /// Steps until `done` holds (checked after each event time) or `deadline_ms` of
    /// virtual time has passed since the call. Returns the virtual time `done` first
    /// held, or `None` on timeout.
    pub fn run_until(
        &mut self,
        deadline_ms: u64,
        mut done: impl FnMut(&mut Self) -> bool,
    ) -> Option<UnixMillis> {
        let deadline_us = self.harness.now_us() + deadline_ms * 1_000;
        loop {
            if done(self) {
                return Some(self.now());
            }
            match self.harness.next_event_us() {
                Some(at) if at <= deadline_us => {
                    self.harness.step();
                }
                _ => return None,
            }
        }
    }

    /// Steps until every node holds the same root, or `deadline_ms` passes.
    pub fn run_until_converged(&mut self, deadline_ms: u64) -> Option<UnixMillis> {
        let nodes: Vec<usize> = self.all_nodes().collect();
        self.run_until(deadline_ms, |cluster| cluster.roots_agree(&nodes))
    }

    /// True if the given nodes all hold the same Merkle root.
    pub fn roots_agree(&mut self, nodes: &[usize]) -> bool {
        let mut roots = nodes.iter().map(|&i| self.gossip_mut(i).merkle_root());
        let Some(first) = roots.next() else {
            return true;
        };
        roots.all(|root: Hash| root == first)
    }
}
