//! [`Membership`]: who the core may gossip with.

use std::sync::Arc;

use knhk_transport::PeerRegistry;
use knhk_types::AgentId;
use rand::Rng;

/// The peers a core samples each round and accepts messages from.
pub trait Membership {
    /// Appends up to `k` distinct peers (never ourselves), chosen uniformly at random.
    fn sample_into(&self, k: usize, rng: &mut dyn rand::RngCore, out: &mut Vec<AgentId>);
    /// True if `id` is a member.
    fn contains(&self, id: &AgentId) -> bool;
    /// Number of peers (excluding ourselves).
    fn len(&self) -> usize;
    /// True if there are no peers.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Membership for PeerRegistry {
    fn sample_into(&self, k: usize, mut rng: &mut dyn rand::RngCore, out: &mut Vec<AgentId>) {
        out.extend(
            self.random_peers(k, &mut rng)
                .into_iter()
                .map(|peer| peer.id),
        );
    }

    fn contains(&self, id: &AgentId) -> bool {
        PeerRegistry::contains(self, id)
    }

    fn len(&self) -> usize {
        PeerRegistry::len(self)
    }
}

impl<T: Membership + ?Sized> Membership for Arc<T> {
    fn sample_into(&self, k: usize, rng: &mut dyn rand::RngCore, out: &mut Vec<AgentId>) {
        (**self).sample_into(k, rng, out);
    }

    fn contains(&self, id: &AgentId) -> bool {
        (**self).contains(id)
    }

    fn len(&self) -> usize {
        (**self).len()
    }
}

/// A sorted, de-duplicated member list, shared by every core of a cluster (one
/// allocation however many cores use it).
#[derive(Clone, Debug)]
pub struct MemberList(Arc<[AgentId]>);

impl MemberList {
    /// Sorts and de-duplicates `ids`.
    pub fn new(mut ids: Vec<AgentId>) -> Self {
        ids.sort_unstable();
        ids.dedup();
        Self(ids.into())
    }

    /// The members, sorted.
    pub fn ids(&self) -> &[AgentId] {
        &self.0
    }

    fn contains(&self, id: &AgentId) -> bool {
        self.0.binary_search(id).is_ok()
    }
}

/// A fixed member list seen from one member: everyone in the list but `me`.
#[derive(Clone, Debug)]
pub struct StaticMembership {
    list: MemberList,
    me: AgentId,
}

impl StaticMembership {
    /// Members of `list`, seen from `me` (who may or may not be in it).
    pub fn new(list: MemberList, me: AgentId) -> Self {
        Self { list, me }
    }
}

impl Membership for StaticMembership {
    fn sample_into(&self, k: usize, rng: &mut dyn rand::RngCore, out: &mut Vec<AgentId>) {
        let all = self.list.ids();
        let wanted = k.min(self.len());
        let start = out.len();
        // Rejection sampling: O(k) expected while k is well below the member count.
        let mut attempts = 0usize;
        while out.len() - start < wanted && attempts < 64 * (wanted + 1) {
            attempts += 1;
            let candidate = all[rng.random_range(0..all.len())];
            if candidate != self.me && !out[start..].contains(&candidate) {
                out.push(candidate);
            }
        }
    }

    fn contains(&self, id: &AgentId) -> bool {
        *id != self.me && self.list.contains(id)
    }

    fn len(&self) -> usize {
        self.list.ids().len() - usize::from(self.list.contains(&self.me))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn id(n: u8) -> AgentId {
        AgentId::from_bytes([n; 32])
    }

    #[test]
    fn static_membership_never_samples_self_or_duplicates() {
        let list = MemberList::new((0..10).map(id).collect());
        let view = StaticMembership::new(list, id(3));
        assert_eq!(view.len(), 9);
        assert!(!view.contains(&id(3)) && view.contains(&id(4)) && !view.contains(&id(42)));
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        for k in [1, 3, 9, 20] {
            let mut out = Vec::new();
            view.sample_into(k, &mut rng, &mut out);
            assert_eq!(out.len(), k.min(9));
            assert!(!out.contains(&id(3)));
            let mut unique = out.clone();
            unique.sort();
            unique.dedup();
            assert_eq!(unique.len(), out.len());
        }
    }
}
