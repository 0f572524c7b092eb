//! [`PeerRegistry`]: who we know, where they are, and O(1) random sampling.

use std::collections::HashMap;
use std::sync::PoisonError;

use knhk_types::{AgentId, PeerInfo, SeedAddr, UnixMillis};
use rand::Rng;

use crate::error::RegistryError;
use crate::sync::RwLock;

/// Settings of a [`PeerRegistry`].
#[derive(Clone, Debug)]
pub struct RegistryConfig {
    /// Most peers held at once; registering more fails with [`RegistryError::Full`].
    /// Default 2,000,000 (room for a 1M-agent mesh with headroom).
    pub max_peers: usize,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            max_peers: 2_000_000,
        }
    }
}

/// What [`PeerRegistry::register`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Registration {
    /// The peer was new.
    Added,
    /// The peer was known; its info was replaced.
    Updated,
}

/// The set of peers a node knows: concurrent, with O(1) lookup and O(1) cost per
/// randomly sampled peer at any size.
///
/// Peers live in a dense vector with an id → position index; deregistration swaps the
/// last peer into the hole. One reader-writer lock guards both, so a sample is a
/// consistent snapshot: once [`PeerRegistry::deregister`] returns, no later sample
/// contains that peer (model-checked with loom in `tests/loom_registry.rs`). The node's
/// own id can never be registered, so samples never contain it.
#[derive(Debug)]
pub struct PeerRegistry {
    self_id: AgentId,
    config: RegistryConfig,
    seeds: Vec<SeedAddr>,
    members: RwLock<Members>,
}

#[derive(Debug, Default)]
struct Members {
    peers: Vec<PeerInfo>,
    position: HashMap<AgentId, usize>,
}

impl PeerRegistry {
    /// An empty registry for the node `self_id`.
    pub fn new(self_id: AgentId, config: RegistryConfig) -> Self {
        Self {
            self_id,
            config,
            seeds: Vec::new(),
            members: RwLock::new(Members::default()),
        }
    }

    /// A registry that starts with `seeds` registered (seeds naming `self_id` are
    /// skipped). [`PeerRegistry::bootstrap`] re-registers them later.
    pub fn with_seeds(self_id: AgentId, config: RegistryConfig, seeds: Vec<SeedAddr>) -> Self {
        let mut registry = Self::new(self_id, config);
        registry.seeds = seeds;
        registry.bootstrap();
        registry
    }

    /// This node's own id.
    pub fn self_id(&self) -> AgentId {
        self.self_id
    }

    /// The configured bootstrap seeds.
    pub fn seeds(&self) -> &[SeedAddr] {
        &self.seeds
    }

    /// Registers every seed not already known (a node that lost all its peers calls
    /// this to rejoin). Returns how many were added.
    pub fn bootstrap(&self) -> usize {
        let mut members = self.write();
        let mut added = 0;
        for seed in &self.seeds {
            if seed.id != self.self_id && !members.position.contains_key(&seed.id) {
                if members.peers.len() >= self.config.max_peers {
                    break;
                }
                members.insert_new(seed.to_peer_info());
                added += 1;
            }
        }
        added
    }

    /// Adds `peer`, or replaces what is known about it.
    ///
    /// Errors: [`RegistryError::SelfRegistration`] for our own id,
    /// [`RegistryError::Full`] when a new peer would exceed `max_peers`.
    pub fn register(&self, peer: PeerInfo) -> Result<Registration, RegistryError> {
        if peer.id == self.self_id {
            return Err(RegistryError::SelfRegistration(peer.id));
        }
        let mut members = self.write();
        if let Some(&at) = members.position.get(&peer.id) {
            if let Some(slot) = members.peers.get_mut(at) {
                *slot = peer;
            }
            return Ok(Registration::Updated);
        }
        if members.peers.len() >= self.config.max_peers {
            return Err(RegistryError::Full {
                id: peer.id,
                max: self.config.max_peers,
            });
        }
        members.insert_new(peer);
        Ok(Registration::Added)
    }

    /// Removes `id`; returns what was known about it, or `None` if it was unknown.
    pub fn deregister(&self, id: &AgentId) -> Option<PeerInfo> {
        let mut members = self.write();
        let at = members.position.remove(id)?;
        let removed = members.peers.swap_remove(at);
        if let Some(moved) = members.peers.get(at).map(|peer| peer.id) {
            members.position.insert(moved, at);
        }
        Some(removed)
    }

    /// What is known about `id`, if anything.
    pub fn lookup(&self, id: &AgentId) -> Option<PeerInfo> {
        let members = self.read();
        let at = *members.position.get(id)?;
        members.peers.get(at).copied()
    }

    /// True if `id` is registered.
    pub fn contains(&self, id: &AgentId) -> bool {
        self.read().position.contains_key(id)
    }

    /// Records that `id` was heard from at `now` (only moves forward).
    /// Returns `false` if `id` is unknown.
    pub fn touch(&self, id: &AgentId, now: UnixMillis) -> bool {
        let mut members = self.write();
        let Some(&at) = members.position.get(id) else {
            return false;
        };
        if let Some(peer) = members.peers.get_mut(at) {
            peer.last_seen = peer.last_seen.max(now);
        }
        true
    }

    /// Number of registered peers (never counts ourselves).
    pub fn len(&self) -> usize {
        self.read().peers.len()
    }

    /// True if no peers are registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Up to `k` distinct peers chosen uniformly at random, never ourselves; all peers
    /// (in random order) if fewer than `k` are known.
    ///
    /// Cost: O(k) expected, independent of the number of peers, plus one allocation.
    pub fn random_peers<R: Rng + ?Sized>(&self, k: usize, rng: &mut R) -> Vec<PeerInfo> {
        let mut out = Vec::with_capacity(k);
        self.random_peers_into(k, rng, &mut out);
        out
    }

    /// Like [`PeerRegistry::random_peers`], appending to `out` (clear it first to
    /// reuse its allocation on a hot path).
    pub fn random_peers_into<R: Rng + ?Sized>(
        &self,
        k: usize,
        rng: &mut R,
        out: &mut Vec<PeerInfo>,
    ) {
        let members = self.read();
        let amount = k.min(members.peers.len());
        if amount == 0 {
            return;
        }
        out.reserve(amount);
        for at in rand::seq::index::sample(rng, members.peers.len(), amount) {
            if let Some(peer) = members.peers.get(at) {
                out.push(*peer);
            }
        }
    }

    /// A copy of every registered peer, in no particular order. O(n).
    pub fn snapshot(&self) -> Vec<PeerInfo> {
        self.read().peers.clone()
    }

    fn read(&self) -> impl std::ops::Deref<Target = Members> + '_ {
        // A panic while holding the lock cannot leave Members half-updated in a way
        // that breaks memory safety; keep serving rather than propagate the poison.
        self.members.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> impl std::ops::DerefMut<Target = Members> + '_ {
        self.members.write().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Members {
    fn insert_new(&mut self, peer: PeerInfo) {
        self.position.insert(peer.id, self.peers.len());
        self.peers.push(peer);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn id(n: u32) -> AgentId {
        let mut bytes = [0u8; 32];
        bytes[..4].copy_from_slice(&n.to_le_bytes());
        AgentId::from_bytes(bytes)
    }

    fn peer(n: u32) -> PeerInfo {
        PeerInfo::new(id(n), ([127, 0, 0, 1], 10_000 + (n % 50_000) as u16).into())
    }

    fn registry_with(n: u32) -> PeerRegistry {
        let registry = PeerRegistry::new(id(0), RegistryConfig::default());
        for i in 1..=n {
            registry.register(peer(i)).unwrap();
        }
        registry
    }

    #[test]
    fn register_lookup_deregister() {
        let registry = registry_with(3);
        assert_eq!(registry.len(), 3);
        assert_eq!(registry.lookup(&id(2)), Some(peer(2)));
        assert_eq!(registry.deregister(&id(2)), Some(peer(2)));
        assert_eq!(registry.lookup(&id(2)), None);
        assert_eq!(registry.deregister(&id(2)), None);
        assert_eq!(registry.len(), 2);
        assert!(registry.contains(&id(1)) && registry.contains(&id(3)));
    }

    #[test]
    fn re_registration_updates_in_place() {
        let registry = registry_with(2);
        let moved = PeerInfo::new(id(1), "10.0.0.1:1".parse().unwrap());
        assert_eq!(registry.register(moved), Ok(Registration::Updated));
        assert_eq!(registry.lookup(&id(1)), Some(moved));
        assert_eq!(registry.len(), 2);
    }

    #[test]
    fn self_registration_is_refused() {
        let registry = registry_with(0);
        assert_eq!(
            registry.register(peer(0)),
            Err(RegistryError::SelfRegistration(id(0)))
        );
        assert!(registry.is_empty());
    }

    #[test]
    fn capacity_is_enforced_but_updates_still_work() {
        let registry = PeerRegistry::new(id(0), RegistryConfig { max_peers: 2 });
        registry.register(peer(1)).unwrap();
        registry.register(peer(2)).unwrap();
        assert_eq!(
            registry.register(peer(3)),
            Err(RegistryError::Full { id: id(3), max: 2 })
        );
        assert_eq!(registry.register(peer(2)), Ok(Registration::Updated));
    }

    #[test]
    fn swap_remove_keeps_the_index_consistent() {
        let registry = registry_with(100);
        let mut rng = StdRng::seed_from_u64(1);
        for i in (1..=100).step_by(3) {
            registry.deregister(&id(i));
        }
        for i in 1..=100u32 {
            let expected = (i - 1) % 3 != 0;
            assert_eq!(registry.lookup(&id(i)).is_some(), expected, "peer {i}");
        }
        let all: HashSet<_> = registry
            .random_peers(1_000, &mut rng)
            .into_iter()
            .map(|p| p.id)
            .collect();
        assert_eq!(all.len(), registry.len());
    }

    #[test]
    fn samples_are_distinct_and_never_self() {
        let registry = registry_with(50);
        let mut rng = StdRng::seed_from_u64(7);
        for k in [0, 1, 10, 49, 50, 80] {
            let sample = registry.random_peers(k, &mut rng);
            assert_eq!(sample.len(), k.min(50));
            let ids: HashSet<_> = sample.iter().map(|p| p.id).collect();
            assert_eq!(ids.len(), sample.len(), "duplicate in sample of {k}");
            assert!(!ids.contains(&id(0)));
        }
    }

    #[test]
    fn sampling_is_roughly_uniform() {
        let registry = registry_with(20);
        let mut rng = StdRng::seed_from_u64(3);
        let mut hits = HashMap::new();
        for _ in 0..20_000 {
            for peer in registry.random_peers(2, &mut rng) {
                *hits.entry(peer.id).or_insert(0u32) += 1;
            }
        }
        // Each peer expects 2,000 hits; 5 standard deviations is about ±210.
        for (peer, count) in hits {
            assert!(
                (1_700..=2_300).contains(&count),
                "{peer:?} sampled {count} times"
            );
        }
    }

    #[test]
    fn same_seed_same_sample() {
        let registry = registry_with(1_000);
        let a = registry.random_peers(10, &mut StdRng::seed_from_u64(9));
        let b = registry.random_peers(10, &mut StdRng::seed_from_u64(9));
        assert_eq!(a, b);
    }

    #[test]
    fn empty_registry_samples_nothing() {
        let registry = registry_with(0);
        assert!(
            registry
                .random_peers(5, &mut StdRng::seed_from_u64(0))
                .is_empty()
        );
    }

    #[test]
    fn touch_only_moves_forward_and_reports_unknown_peers() {
        let registry = registry_with(1);
        assert!(registry.touch(&id(1), UnixMillis(50)));
        assert!(registry.touch(&id(1), UnixMillis(20)));
        assert_eq!(registry.lookup(&id(1)).unwrap().last_seen, UnixMillis(50));
        assert!(!registry.touch(&id(9), UnixMillis(1)));
    }

    #[test]
    fn seeds_are_registered_and_bootstrap_restores_them() {
        let seeds = vec![
            SeedAddr {
                id: id(1),
                addr: peer(1).addr,
            },
            SeedAddr {
                id: id(0),
                addr: peer(0).addr,
            }, // ourselves: skipped
            SeedAddr {
                id: id(2),
                addr: peer(2).addr,
            },
        ];
        let registry = PeerRegistry::with_seeds(id(0), RegistryConfig::default(), seeds);
        assert_eq!(registry.len(), 2);
        registry.deregister(&id(1));
        registry.deregister(&id(2));
        assert_eq!(registry.bootstrap(), 2);
        assert_eq!(registry.bootstrap(), 0);
        assert_eq!(registry.seeds().len(), 3);
    }

    #[test]
    fn concurrent_register_and_sample_from_threads() {
        let registry = std::sync::Arc::new(registry_with(0));
        let writers: Vec<_> = (0..4u32)
            .map(|t| {
                let registry = registry.clone();
                std::thread::spawn(move || {
                    for i in 0..500 {
                        registry.register(peer(1 + t * 1_000 + i)).unwrap();
                    }
                })
            })
            .collect();
        let mut rng = StdRng::seed_from_u64(5);
        for _ in 0..1_000 {
            let sample = registry.random_peers(8, &mut rng);
            let ids: HashSet<_> = sample.iter().map(|p| p.id).collect();
            assert_eq!(ids.len(), sample.len());
        }
        for writer in writers {
            writer.join().unwrap();
        }
        assert_eq!(registry.len(), 2_000);
    }
}
