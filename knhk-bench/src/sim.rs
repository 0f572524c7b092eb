//! [`Simulator`]: production node endpoints (each running the production gossip layer)
//! on the endpoint's shared virtual-time harness, over a simulated network.

use std::sync::Arc;

use knhk_crdt::Hash;
use knhk_endpoint::harness::{Harness, Links, VIRTUAL_START};
use knhk_endpoint::{Endpoint, EndpointConfig, LayerHandle, MemberList, StaticView};
use knhk_gossip::{GossipConfig, GossipLayer};
use knhk_security::{Ed25519Verifier, NodeKey, ValidatorConfig};
use knhk_topology::{Membership, SwimLayer, TopologyConfig, ViewConfig};
use knhk_types::{AgentId, EnvelopeSigner, Scope, UnixMillis};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::crypto::{CryptoMode, Keyring, SimSigner, SimVerifier};
use crate::network::NetworkConfig;

/// A simulated node: the production endpoint with the simulation's signer and verifier.
pub type SimEndpoint = Endpoint<SimSigner, SimVerifier>;

/// Adds layers beyond gossip to a simulated node (called for node `i` whenever its
/// endpoint is built, at the start and at a restart that lost its state).
pub type AddLayers = Box<dyn FnMut(&mut SimEndpoint, usize)>;

/// Shape of a simulation.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Number of honest nodes (each a real endpoint with a real gossip layer).
    pub nodes: usize,
    /// Seed of everything: keys, node seeds, latency draws, loss, skew.
    pub seed: u64,
    /// Configuration of every node's gossip layer.
    pub gossip: GossipConfig,
    /// Every node's gate.
    pub validator: ValidatorConfig,
    /// The network model.
    pub network: NetworkConfig,
    /// Secret seeds of members with no node (Byzantine nodes whose frames a scenario
    /// writes by hand, signing with [`Simulator::signer_for`]).
    pub extra_member_seeds: Vec<[u8; 32]>,
    /// Real ed25519 or the stand-in.
    pub crypto: CryptoMode,
    /// Each node's clock is off by a uniform draw in ±`max_clock_skew_ms`.
    pub max_clock_skew_ms: u64,
    /// Virtual wall-clock time at the start.
    pub start: UnixMillis,
    /// Run the failure detector too: each node's view is then a [`Membership`] kept by
    /// a [`SwimLayer`] with these settings (instead of a static member list).
    pub topology: Option<TopologyConfig>,
    /// With `topology`: the shape of every node's bounded view. Each node starts with
    /// `active + reserve` members drawn at random (a settled mesh); the simulator's
    /// member list is the directory (admission).
    pub view: ViewConfig,
    /// With `topology`: the last this many nodes are not started and are in nobody's
    /// view: each joins later through [`Simulator::join`], as a node new to the mesh.
    pub late_joiners: usize,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            nodes: 100,
            seed: 1,
            gossip: GossipConfig::default(),
            validator: ValidatorConfig::default(),
            network: NetworkConfig::default(),
            extra_member_seeds: Vec::new(),
            crypto: CryptoMode::Ed25519,
            max_clock_skew_ms: 0,
            start: VIRTUAL_START,
            topology: None,
            view: ViewConfig::default(),
            late_joiners: 0,
        }
    }
}

/// Frames counted by the network.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Frames delivered.
    pub delivered: u64,
    /// Bytes of delivered frames.
    pub bytes: u64,
    /// Frames lost to random loss.
    pub lost: u64,
    /// Frames cut by a partition.
    pub partitioned: u64,
    /// Frames sent to a crashed node.
    pub to_dead: u64,
    /// Bytes of frames put on a link between two different regions.
    pub cross_region_bytes: u64,
    /// Bytes of frames put on any link (delivered or not).
    pub carried_bytes: u64,
}

/// The simulated network as the harness's [`Links`]: regions, latency draws, loss and
/// partitions, from one seeded generator.
#[derive(Debug)]
pub struct SimLinks {
    network: NetworkConfig,
    regions: Vec<usize>,
    rng: ChaCha8Rng,
    lost: u64,
    partitioned: u64,
    carried_bytes: u64,
    cross_region_bytes: u64,
}

impl Links for SimLinks {
    fn carried(&mut self, from: usize, to: usize, bytes: usize) {
        self.carried_bytes += bytes as u64;
        if self.regions.get(from) != self.regions.get(to) {
            self.cross_region_bytes += bytes as u64;
        }
    }

    fn delay_us(&mut self, from: usize, to: usize, now_us: u64) -> Option<u64> {
        if self.network.loss > 0.0 && self.rng.random::<f64>() < self.network.loss {
            self.lost += 1;
            return None;
        }
        let now_ms = now_us / 1_000;
        if self
            .network
            .partitions
            .iter()
            .any(|p| p.separates(from, to, now_ms))
        {
            self.partitioned += 1;
            return None;
        }
        let base = self.network.regions.as_ref().map_or(0, |regions| {
            regions.one_way_us(self.regions[from], self.regions[to])
        });
        let slow = self.network.slow_extra_ms > 0.0
            && (self.network.slow_nodes.contains(&from) || self.network.slow_nodes.contains(&to));
        let extra = if slow {
            (self.rng.random::<f64>() * self.network.slow_extra_ms * 1_000.0) as u64
        } else {
            0
        };
        Some(base + extra + self.network.latency.sample_us(&mut self.rng))
    }
}

struct NodeSpec {
    key: SimSigner,
    seed: u64,
}

/// Production endpoints, a virtual clock in microseconds, and the frames in flight.
///
/// Deterministic: one seeded generator drives keys, node seeds, skews, latency draws and
/// loss, and events run in (time, sequence) order, so a seed replays a run exactly.
pub struct Simulator {
    harness: Harness<SimSigner, SimVerifier, SimLinks>,
    gossip: Vec<LayerHandle<GossipLayer>>,
    swim: Vec<Option<LayerHandle<SwimLayer>>>,
    specs: Vec<NodeSpec>,
    crypto: CryptoMode,
    keyring: Arc<Keyring>,
    members: MemberList,
    config: SimConfig,
    add_layers: AddLayers,
    /// Identities of the late joiners (in nobody's initial view).
    late_ids: Vec<AgentId>,
}

impl std::fmt::Debug for Simulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulator")
            .field("harness", &self.harness)
            .finish_non_exhaustive()
    }
}

impl Simulator {
    /// Creates and starts every node, each running one gossip layer.
    pub fn new(config: SimConfig) -> Self {
        Self::with_layers(config, Box::new(|_, _| {}))
    }

    /// As [`Simulator::new`], with `add_layers` adding more layers to every node.
    pub fn with_layers(config: SimConfig, add_layers: AddLayers) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let secrets: Vec<[u8; 32]> = (0..config.nodes).map(|_| rng.random()).collect();
        let keys: Vec<SimSigner> = secrets
            .iter()
            .map(|seed| SimSigner::new(config.crypto, *seed))
            .collect();
        let mut ids: Vec<AgentId> = keys.iter().map(EnvelopeSigner::agent_id).collect();
        ids.extend(
            config
                .extra_member_seeds
                .iter()
                .map(|seed| NodeKey::from_seed(*seed).agent_id()),
        );
        let keyring = match config.crypto {
            CryptoMode::Sim => {
                Keyring::new(secrets.iter().chain(&config.extra_member_seeds).copied())
            }
            CryptoMode::Ed25519 => Keyring::default(),
        };
        let regions = config
            .network
            .regions
            .as_ref()
            .map_or(1, |r| r.names.len().max(1));
        let links = SimLinks {
            network: config.network.clone(),
            regions: (0..config.nodes).map(|i| i % regions).collect(),
            rng: ChaCha8Rng::seed_from_u64(config.seed ^ 0x006e_6574_776f_726b),
            lost: 0,
            partitioned: 0,
            carried_bytes: 0,
            cross_region_bytes: 0,
        };
        let skew = config.max_clock_skew_ms as i64;
        let mut simulator = Self {
            harness: Harness::new(links, config.start, false),
            gossip: Vec::with_capacity(config.nodes),
            swim: Vec::with_capacity(config.nodes),
            specs: Vec::with_capacity(config.nodes),
            crypto: config.crypto,
            keyring: Arc::new(keyring),
            late_ids: match config.topology {
                Some(_) => {
                    ids[config.nodes.saturating_sub(config.late_joiners)..config.nodes].to_vec()
                }
                None => Vec::new(),
            },
            members: MemberList::new(ids),
            config,
            add_layers,
        };
        for (i, key) in keys.into_iter().enumerate() {
            let seed = rng.random();
            let skew_ms = if skew > 0 {
                rng.random_range(-skew..=skew)
            } else {
                0
            };
            simulator.specs.push(NodeSpec { key, seed });
            let (endpoint, gossip, swim) = simulator.fresh_endpoint(i, seed);
            simulator.gossip.push(gossip);
            simulator.swim.push(swim);
            simulator.harness.add_node(endpoint, skew_ms);
        }
        let late = simulator.first_late_joiner();
        for i in 0..simulator.harness.len() {
            if i < late {
                simulator.harness.start_node(i);
            } else {
                simulator.harness.crash(i);
            }
        }
        simulator
    }

    fn fresh_endpoint(
        &mut self,
        i: usize,
        seed: u64,
    ) -> (
        SimEndpoint,
        LayerHandle<GossipLayer>,
        Option<LayerHandle<SwimLayer>>,
    ) {
        let config = EndpointConfig {
            seed,
            validator: self.config.validator.clone(),
            ..EndpointConfig::default()
        };
        let verifier = self.verifier(&config);
        let key = self.specs[i].key.clone();
        let id = key.agent_id();
        let mut endpoint = match &self.config.topology {
            None => {
                let view = StaticView::new(self.members.clone(), id);
                Endpoint::with_crypto(key, verifier, view, config)
            }
            Some(_) => {
                let now = if i < self.harness.len() {
                    self.harness.clock(i)
                } else {
                    self.config.start
                };
                let view = self.bounded_view(id, seed, now);
                Endpoint::with_crypto(key, verifier, view, config)
            }
        };
        let gossip = match endpoint
            .add_layer(Scope::DEFAULT, GossipLayer::new(self.config.gossip.clone()))
        {
            Ok(gossip) => gossip,
            Err(_) => unreachable!("a fresh endpoint has no routes"),
        };
        let swim = self.config.topology.as_ref().map(|topology| {
            match endpoint.add_layer(Scope::DEFAULT, SwimLayer::new(topology.clone())) {
                Ok(swim) => swim,
                Err(_) => unreachable!("gossip and membership kinds do not overlap"),
            }
        });
        (self.add_layers)(&mut endpoint, i);
        (endpoint, gossip, swim)
    }

    /// A node's signature verifier, in this simulation's crypto mode.
    fn verifier(&self, config: &EndpointConfig) -> SimVerifier {
        match self.crypto {
            CryptoMode::Ed25519 => SimVerifier::Real(Ed25519Verifier::new(
                config.validator.signature_cache_capacity,
            )),
            CryptoMode::Sim => SimVerifier::StandIn(self.keyring.clone(), Default::default()),
        }
    }

    /// Index of the first late joiner (the node count if there are none).
    fn first_late_joiner(&self) -> usize {
        match self.config.topology {
            Some(_) => self.config.nodes.saturating_sub(self.config.late_joiners),
            None => self.config.nodes,
        }
    }

    /// Node `id`'s bounded view: `active + reserve` members drawn at random with the
    /// node's seed (never a late joiner), admitted by the member list.
    fn bounded_view(&self, id: AgentId, seed: u64, now: UnixMillis) -> Membership {
        let ids = self.members.ids();
        let late = &self.late_ids;
        let wanted =
            (self.config.view.active + self.config.view.reserve + 1 + late.len()).min(ids.len());
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x7669_6577);
        let seeds: Vec<AgentId> = rand::seq::index::sample(&mut rng, ids.len(), wanted)
            .into_iter()
            .map(|at| ids[at])
            .filter(|member| !late.contains(member))
            .collect();
        Membership::with_config(id, seeds, now, self.admitted_view())
    }

    /// The view shape with the member list as directory.
    fn admitted_view(&self) -> ViewConfig {
        let list = self.members.clone();
        ViewConfig {
            directory: Some(Arc::new(move |member: &AgentId| {
                list.ids().binary_search(member).is_ok()
            })),
            ..self.config.view.clone()
        }
    }

    /// Starts late joiner `i` as a node new to the mesh: empty state, a view of only
    /// `seeds` (node indexes), announcing itself. Does nothing for a node that is not
    /// a late joiner or already runs.
    pub fn join(&mut self, i: usize, seeds: &[usize]) {
        if i < self.first_late_joiner() || i >= self.len() || self.harness.is_alive(i) {
            return;
        }
        let Some(topology) = self.config.topology.clone() else {
            return;
        };
        let key = self.specs[i].key.clone();
        let id = key.agent_id();
        let seed_ids: Vec<AgentId> = seeds
            .iter()
            .filter(|s| **s < self.specs.len())
            .map(|s| self.specs[*s].key.agent_id())
            .collect();
        let view =
            Membership::with_config(id, seed_ids, self.harness.clock(i), self.admitted_view());
        let config = EndpointConfig {
            seed: self.specs[i].seed,
            validator: self.config.validator.clone(),
            ..EndpointConfig::default()
        };
        let verifier = self.verifier(&config);
        let mut endpoint = Endpoint::with_crypto(key, verifier, view, config);
        let Ok(gossip) =
            endpoint.add_layer(Scope::DEFAULT, GossipLayer::new(self.config.gossip.clone()))
        else {
            return;
        };
        let joining = TopologyConfig {
            announce_on_start: true,
            ..topology
        };
        let Ok(swim) = endpoint.add_layer(Scope::DEFAULT, SwimLayer::new(joining)) else {
            return;
        };
        (self.add_layers)(&mut endpoint, i);
        self.gossip[i] = gossip;
        self.swim[i] = Some(swim);
        self.harness.replace_endpoint(i, endpoint);
        self.harness.revive(i);
    }

    /// A signer for a member with secret `seed`, in this simulation's crypto mode.
    pub fn signer_for(&self, seed: [u8; 32]) -> SimSigner {
        SimSigner::new(self.crypto, seed)
    }

    /// Number of nodes (alive or not).
    pub fn len(&self) -> usize {
        self.harness.len()
    }

    /// True if there are no nodes.
    pub fn is_empty(&self) -> bool {
        self.harness.is_empty()
    }

    /// Virtual milliseconds since the start.
    pub fn now_ms(&self) -> u64 {
        self.harness.now_us() / 1_000
    }

    /// Virtual microseconds since the start.
    pub fn now_us(&self) -> u64 {
        self.harness.now_us()
    }

    /// Node `i`'s endpoint.
    pub fn endpoint(&self, i: usize) -> &SimEndpoint {
        self.harness.endpoint(i)
    }

    /// Node `i`'s gossip layer.
    pub fn gossip(&self, i: usize) -> &GossipLayer {
        match self.harness.endpoint(i).layer(self.gossip[i]) {
            Some(gossip) => gossip,
            None => unreachable!("every node runs its gossip layer"),
        }
    }

    /// Node `i`'s gossip layer, mutably (for reads that update caches, such as the root).
    pub fn gossip_mut(&mut self, i: usize) -> &mut GossipLayer {
        let handle = self.gossip[i];
        match self.harness.endpoint_mut(i).layer_mut(handle) {
            Some(gossip) => gossip,
            None => unreachable!("every node runs its gossip layer"),
        }
    }

    /// The harness underneath (to call other layers).
    pub fn harness_mut(&mut self) -> &mut Harness<SimSigner, SimVerifier, SimLinks> {
        &mut self.harness
    }

    /// True unless node `i` is crashed.
    pub fn is_alive(&self, i: usize) -> bool {
        self.harness.is_alive(i)
    }

    /// The network's counters.
    pub fn traffic(&self) -> Traffic {
        let harness = self.harness.traffic();
        let links = self.harness.links();
        Traffic {
            delivered: harness.delivered,
            bytes: harness.bytes,
            lost: links.lost,
            partitioned: links.partitioned,
            to_dead: harness.to_dead,
            cross_region_bytes: links.cross_region_bytes,
            carried_bytes: links.carried_bytes,
        }
    }

    /// Node `i`'s failure detector, when the simulation runs one
    /// ([`SimConfig::topology`]).
    pub fn swim(&self, i: usize) -> Option<&SwimLayer> {
        self.harness.endpoint(i).layer(self.swim[i]?)
    }

    /// Node `i`'s membership view, when the simulation runs a failure detector.
    pub fn membership(&self, i: usize) -> Option<&Membership> {
        self.harness.endpoint(i).view::<Membership>()
    }

    /// A local write on node `i` now.
    ///
    /// Errors: as [`GossipLayer::put`].
    pub fn put(
        &mut self,
        i: usize,
        key: &str,
        value: Vec<u8>,
    ) -> Result<(), knhk_gossip::GossipError> {
        let handle = self.gossip[i];
        match self
            .harness
            .call(i, handle, |gossip, ctx| gossip.put(ctx, key, value))
        {
            Ok(result) => result.map(drop),
            Err(_) => unreachable!("every node runs its gossip layer"),
        }
    }

    /// Adds a partition (its times are virtual ms since the start).
    pub fn set_partition(&mut self, partition: crate::network::Partition) {
        self.harness.links_mut().network.partitions.push(partition);
    }

    /// Crashes node `i`: it stops receiving and its timers are dropped.
    pub fn crash(&mut self, i: usize) {
        self.harness.crash(i);
    }

    /// Restarts node `i`, with its state as it was (`keep_state`) or empty.
    pub fn restart(&mut self, i: usize, keep_state: bool) {
        if !keep_state {
            let seed = self.specs[i].seed.wrapping_add(1);
            let (endpoint, gossip, swim) = self.fresh_endpoint(i, seed);
            self.gossip[i] = gossip;
            self.swim[i] = swim;
            self.harness.replace_endpoint(i, endpoint);
        }
        self.harness.revive(i);
    }

    /// Delivers `frame` to node `to` as if the authenticated peer `from` sent it, after
    /// a draw of the link latency.
    pub fn inject(&mut self, from: AgentId, to: usize, frame: Vec<u8>) {
        let links = self.harness.links_mut();
        let delay = links.network.latency.sample_us(&mut links.rng);
        self.harness.deliver_after(delay, from, to, frame);
    }

    /// Processes every event due at the next event time. False if nothing is pending.
    pub fn step(&mut self) -> bool {
        self.harness.step()
    }

    /// Steps until `done` holds or `deadline_ms` (virtual, since the start) passes.
    /// Returns the virtual µs at which `done` first held.
    pub fn run_until(
        &mut self,
        deadline_ms: u64,
        mut done: impl FnMut(&mut Self) -> bool,
    ) -> Option<u64> {
        loop {
            if done(self) {
                return Some(self.now_us());
            }
            match self.harness.next_event_us() {
                Some(at) if at / 1_000 <= deadline_ms => {
                    self.harness.step();
                }
                _ => return None,
            }
        }
    }

    /// Runs until virtual `until_ms` (since the start), calling `tick` every `every_ms`.
    pub fn run_for(&mut self, until_ms: u64, every_ms: u64, mut tick: impl FnMut(&mut Self)) {
        let every = every_ms.max(1);
        let mut next_tick = self.now_ms() + every;
        while self.now_ms() < until_ms {
            let next_event = self.harness.next_event_us().map(|at| at / 1_000);
            match next_event {
                Some(at) if at <= next_tick.min(until_ms) => {
                    self.harness.step();
                }
                _ => self.harness.advance_to(next_tick.min(until_ms) * 1_000),
            }
            if self.now_ms() >= next_tick {
                tick(self);
                next_tick += every;
            }
        }
    }

    /// True if every live node holds the same Merkle root (the global oracle).
    pub fn live_roots_agree(&mut self) -> bool {
        let mut first: Option<Hash> = None;
        for i in 0..self.len() {
            if !self.is_alive(i) {
                continue;
            }
            let root = self.gossip_mut(i).merkle_root();
            match first {
                None => first = Some(root),
                Some(expected) if expected != root => return false,
                Some(_) => {}
            }
        }
        true
    }

    /// Fraction of live nodes for which `holds` is true.
    pub fn fraction_of_live(&self, holds: impl Fn(&GossipLayer) -> bool) -> f64 {
        let live: Vec<usize> = (0..self.len()).filter(|&i| self.is_alive(i)).collect();
        if live.is_empty() {
            return 0.0;
        }
        live.iter().filter(|&&i| holds(self.gossip(i))).count() as f64 / live.len() as f64
    }
}
