//! [`Simulator`]: production gossip cores on a virtual clock over a simulated network.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use knhk_crdt::{CrdtError, Hash};
use std::sync::Arc;

use knhk_gossip::{GossipConfig, GossipCore, MemberList, Output, StaticMembership, Timer};
use knhk_security::{Ed25519Verifier, NodeKey};
use knhk_types::{AgentId, EnvelopeSigner, UnixMillis};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::crypto::{CryptoMode, Keyring, SimSigner, SimVerifier};
use crate::network::NetworkConfig;

/// A simulated node's core: the production core with the simulation's signer and
/// verifier.
pub type SimCore = GossipCore<StaticMembership, SimSigner, SimVerifier>;

/// Shape of a simulation.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Number of honest nodes (each a real `GossipCore`).
    pub nodes: usize,
    /// Seed of everything: keys, core seeds, latency draws, loss, skew.
    pub seed: u64,
    /// Configuration of every core.
    pub gossip: GossipConfig,
    /// The network model.
    pub network: NetworkConfig,
    /// Secret seeds of members with no core (Byzantine nodes whose frames a scenario
    /// writes by hand, signing with [`Simulator::signer_for`]).
    pub extra_member_seeds: Vec<[u8; 32]>,
    /// Real ed25519 or the stand-in.
    pub crypto: CryptoMode,
    /// Each node's clock is off by a uniform draw in ±`max_clock_skew_ms`.
    pub max_clock_skew_ms: u64,
    /// Virtual wall-clock time at the start.
    pub start: UnixMillis,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            nodes: 100,
            seed: 1,
            gossip: GossipConfig::default(),
            network: NetworkConfig::default(),
            extra_member_seeds: Vec::new(),
            crypto: CryptoMode::Ed25519,
            max_clock_skew_ms: 0,
            start: UnixMillis(1_732_000_000_000),
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
}

enum Event {
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

struct Node {
    core: SimCore,
    key: SimSigner,
    alive: bool,
    /// Bumped at every crash, so timers of a previous life are ignored.
    epoch: u32,
    region: usize,
    skew_ms: i64,
    seed: u64,
}

/// Production cores, a virtual clock in microseconds, and the frames in flight.
///
/// Deterministic: one seeded generator drives keys, core seeds, skews, latency draws and
/// loss, and events run in (time, sequence) order, so a seed replays a run exactly.
pub struct Simulator {
    nodes: Vec<Node>,
    crypto: CryptoMode,
    keyring: Arc<Keyring>,
    members: MemberList,
    gossip: GossipConfig,
    index: HashMap<AgentId, usize>,
    network: NetworkConfig,
    rng: ChaCha8Rng,
    start: UnixMillis,
    now_us: u64,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    events: HashMap<u64, Event>,
    sequence: u64,
    traffic: Traffic,
}

impl std::fmt::Debug for Simulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulator")
            .field("nodes", &self.nodes.len())
            .field("now_ms", &self.now_ms())
            .field("in_flight", &self.events.len())
            .finish()
    }
}

impl Simulator {
    /// Creates and starts every node.
    pub fn new(config: SimConfig) -> Self {
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
        let members = MemberList::new(ids);
        let regions = config
            .network
            .regions
            .as_ref()
            .map_or(1, |r| r.names.len().max(1));
        let skew = config.max_clock_skew_ms as i64;
        let mut simulator = Self {
            nodes: Vec::with_capacity(config.nodes),
            crypto: config.crypto,
            keyring: Arc::new(keyring),
            members,
            gossip: config.gossip.clone(),
            index: HashMap::with_capacity(config.nodes),
            network: config.network,
            rng: ChaCha8Rng::seed_from_u64(config.seed ^ 0x006e_6574_776f_726b),
            start: config.start,
            now_us: 0,
            queue: BinaryHeap::new(),
            events: HashMap::new(),
            sequence: 0,
            traffic: Traffic::default(),
        };
        for (i, key) in keys.into_iter().enumerate() {
            let seed = rng.random();
            let skew_ms = if skew > 0 {
                rng.random_range(-skew..=skew)
            } else {
                0
            };
            simulator.index.insert(key.agent_id(), i);
            let core = simulator.fresh_core(&key, seed);
            simulator.nodes.push(Node {
                core,
                key,
                alive: true,
                epoch: 0,
                region: i % regions,
                skew_ms,
                seed,
            });
        }
        for i in 0..simulator.nodes.len() {
            let now = simulator.node_clock(i);
            simulator.nodes[i].core.start(now);
            simulator.drain(i);
        }
        simulator
    }

    fn fresh_core(&self, key: &SimSigner, seed: u64) -> SimCore {
        let config = GossipConfig {
            seed,
            ..self.gossip.clone()
        };
        let verifier = match self.crypto {
            CryptoMode::Ed25519 => SimVerifier::Real(Ed25519Verifier::new(
                config.validator.signature_cache_capacity,
            )),
            CryptoMode::Sim => SimVerifier::StandIn(self.keyring.clone(), Default::default()),
        };
        let membership = StaticMembership::new(self.members.clone(), key.agent_id());
        GossipCore::with_crypto(key.clone(), verifier, membership, config)
    }

    /// A signer for a member with secret `seed`, in this simulation's crypto mode.
    pub fn signer_for(&self, seed: [u8; 32]) -> SimSigner {
        SimSigner::new(self.crypto, seed)
    }

    /// Number of nodes (alive or not).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True if there are no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Virtual milliseconds since the start.
    pub fn now_ms(&self) -> u64 {
        self.now_us / 1_000
    }

    /// Node `i`'s core.
    pub fn core(&self, i: usize) -> &SimCore {
        &self.nodes[i].core
    }

    /// Node `i`'s core, mutably.
    pub fn core_mut(&mut self, i: usize) -> &mut SimCore {
        &mut self.nodes[i].core
    }

    /// True unless node `i` is crashed.
    pub fn is_alive(&self, i: usize) -> bool {
        self.nodes[i].alive
    }

    /// The network's counters.
    pub fn traffic(&self) -> Traffic {
        self.traffic
    }

    /// Node `i`'s wall clock: virtual time plus its skew.
    fn node_clock(&self, i: usize) -> UnixMillis {
        let ms = self.start.0 as i64 + self.now_ms() as i64 + self.nodes[i].skew_ms;
        UnixMillis(ms.max(0) as u64)
    }

    /// A local write on node `i` now.
    ///
    /// Errors: as `GossipCore::put`.
    pub fn put(&mut self, i: usize, key: &str, value: Vec<u8>) -> Result<(), CrdtError> {
        let now = self.node_clock(i);
        self.nodes[i].core.put(now, key, value)?;
        self.drain(i);
        Ok(())
    }

    /// Adds a partition (its times are virtual ms since the start).
    pub fn set_partition(&mut self, partition: crate::network::Partition) {
        self.network.partitions.push(partition);
    }

    /// Crashes node `i`: it stops receiving and its timers are dropped.
    pub fn crash(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        node.alive = false;
        node.epoch += 1;
    }

    /// Restarts node `i`, with its state as it was (`keep_state`) or empty.
    pub fn restart(&mut self, i: usize, keep_state: bool) {
        if !keep_state {
            let (key, seed) = (
                self.nodes[i].key.clone(),
                self.nodes[i].seed.wrapping_add(1),
            );
            self.nodes[i].core = self.fresh_core(&key, seed);
        }
        self.nodes[i].alive = true;
        let now = self.node_clock(i);
        self.nodes[i].core.start(now);
        self.drain(i);
    }

    /// Delivers `frame` to node `to` as if the authenticated peer `from` sent it, after
    /// the usual network delay from node 0's region.
    pub fn inject(&mut self, from: AgentId, to: usize, frame: Vec<u8>) {
        let delay = self.network.latency.sample_us(&mut self.rng);
        let at = self.now_us + delay;
        self.schedule(at, Event::Deliver { to, from, frame });
    }

    /// Processes every event due at the next event time. False if nothing is pending.
    pub fn step(&mut self) -> bool {
        let Some(Reverse((at, _))) = self.queue.peek().copied() else {
            return false;
        };
        self.now_us = self.now_us.max(at);
        while let Some(Reverse((due, sequence))) = self.queue.peek().copied() {
            if due > at {
                break;
            }
            self.queue.pop();
            let Some(event) = self.events.remove(&sequence) else {
                continue;
            };
            match event {
                Event::Deliver { to, from, frame } => {
                    if !self.nodes[to].alive {
                        self.traffic.to_dead += 1;
                        continue;
                    }
                    self.traffic.delivered += 1;
                    self.traffic.bytes += frame.len() as u64;
                    let now = self.node_clock(to);
                    self.nodes[to].core.handle_message(now, from, &frame);
                    self.drain(to);
                }
                Event::Fire { node, timer, epoch } => {
                    if !self.nodes[node].alive || self.nodes[node].epoch != epoch {
                        continue;
                    }
                    let now = self.node_clock(node);
                    self.nodes[node].core.handle_timer(now, timer);
                    self.drain(node);
                }
            }
        }
        true
    }

    /// Steps until `done` holds or `deadline_ms` (virtual, since the start) passes.
    /// Returns the virtual ms at which `done` first held.
    pub fn run_until(
        &mut self,
        deadline_ms: u64,
        mut done: impl FnMut(&mut Self) -> bool,
    ) -> Option<u64> {
        loop {
            if done(self) {
                return Some(self.now_ms());
            }
            match self.queue.peek() {
                Some(Reverse((at, _))) if *at / 1_000 <= deadline_ms => {
                    self.step();
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
            let next_event = self.queue.peek().map(|Reverse((at, _))| at / 1_000);
            match next_event {
                Some(at) if at <= next_tick.min(until_ms) => {
                    self.step();
                }
                _ => {
                    self.now_us = next_tick.min(until_ms) * 1_000;
                }
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
        for node in self.nodes.iter_mut().filter(|node| node.alive) {
            let root = node.core.merkle_root();
            match first {
                None => first = Some(root),
                Some(expected) if expected != root => return false,
                Some(_) => {}
            }
        }
        true
    }

    /// Fraction of live nodes for which `holds` is true.
    pub fn fraction_of_live(&self, holds: impl Fn(&SimCore) -> bool) -> f64 {
        let live: Vec<&Node> = self.nodes.iter().filter(|node| node.alive).collect();
        if live.is_empty() {
            return 0.0;
        }
        live.iter().filter(|node| holds(&node.core)).count() as f64 / live.len() as f64
    }

    fn drain(&mut self, node: usize) {
        while let Some(output) = self.nodes[node].core.poll_output() {
            match output {
                Output::Send { to, frame } => self.transmit(node, to, frame),
                Output::SetTimer { at, timer } => {
                    // The core's deadline is on its own (skewed) clock.
                    let own_now = self.node_clock(node).0;
                    let at_us = self.now_us + at.0.saturating_sub(own_now) * 1_000;
                    let epoch = self.nodes[node].epoch;
                    self.schedule(at_us, Event::Fire { node, timer, epoch });
                }
                Output::Event(_) => {}
            }
        }
    }

    fn transmit(&mut self, from: usize, to: AgentId, frame: Vec<u8>) {
        let Some(&target) = self.index.get(&to) else {
            return;
        };
        if self.network.loss > 0.0 && self.rng.random::<f64>() < self.network.loss {
            self.traffic.lost += 1;
            return;
        }
        let now_ms = self.now_ms();
        if self
            .network
            .partitions
            .iter()
            .any(|p| p.separates(from, target, now_ms))
        {
            self.traffic.partitioned += 1;
            return;
        }
        let base = self.network.regions.as_ref().map_or(0, |regions| {
            regions.one_way_us(self.nodes[from].region, self.nodes[target].region)
        });
        let delay = base + self.network.latency.sample_us(&mut self.rng);
        let sender = self.nodes[from].key.agent_id();
        let at = self.now_us + delay;
        self.schedule(
            at,
            Event::Deliver {
                to: target,
                from: sender,
                frame,
            },
        );
    }

    fn schedule(&mut self, at_us: u64, event: Event) {
        self.sequence += 1;
        self.queue.push(Reverse((at_us, self.sequence)));
        self.events.insert(self.sequence, event);
    }
}
