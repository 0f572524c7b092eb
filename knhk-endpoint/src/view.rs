//! [`PeerView`]: the peers a node knows, lent to every layer per call.
//!
//! The endpoint owns one view per node. Layers borrow it through their
//! [`crate::Context`] to choose peers (gossip samples its fanout from it), and the
//! Byzantine gate asks it whether a sender is known. Today's views are static (a member
//! list) or the transport's [`PeerRegistry`]; the topology layer will keep RTTs,
//! suspicion and clusters behind the same trait.

use std::sync::Arc;

use knhk_transport::PeerRegistry;
use knhk_types::AgentId;
use rand::Rng;

/// The peers a node may talk to and accepts frames from.
///
/// A view is `Any`, so the layer that keeps it (topology: who is alive, their round
/// trips) can reach its own concrete type through [`crate::Context::view_mut`], while
/// every other layer only reads it through this trait.
pub trait PeerView: std::any::Any {
    /// Appends up to `k` distinct peers (never ourselves), chosen uniformly at random
    /// with `rng`. Appends fewer when fewer are known; never fails.
    fn sample_into(&self, k: usize, rng: &mut dyn rand::RngCore, out: &mut Vec<AgentId>);
    /// True if `id` is a peer in the view.
    fn contains(&self, id: &AgentId) -> bool;
    /// Number of peers (excluding ourselves).
    fn len(&self) -> usize;
    /// True if there are no peers.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Estimated bytes this view holds for this node (for memory-per-node figures).
    /// Default 0: a view shared by many nodes (a static list) costs none of them.
    fn approx_memory_bytes(&self) -> usize {
        0
    }

    /// How many of the members (ourselves included) this node can reach now, as its
    /// failure detector believes. Default: every member (a static view knows no
    /// failures). Layers that must not act in a minority partition (writes) check
    /// [`Reachability::has_quorum`].
    fn reachability(&self) -> Reachability {
        let members = self.len() + 1;
        Reachability {
            reachable: members,
            members,
        }
    }
}

/// Members this node can reach, and members it counts, ourselves included.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reachability {
    /// Members believed reachable (alive), ourselves included.
    pub reachable: usize,
    /// Members counted (ourselves included).
    pub members: usize,
}

impl Reachability {
    /// Members needed for a quorum: a strict majority of those counted.
    pub fn required(&self) -> usize {
        self.members / 2 + 1
    }

    /// True if this node reaches a strict majority of the members it counts: it is not
    /// in a minority partition.
    pub fn has_quorum(&self) -> bool {
        self.reachable >= self.required()
    }
}

impl PeerView for PeerRegistry {
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

impl<T: PeerView + ?Sized + Send + Sync> PeerView for Arc<T> {
    fn sample_into(&self, k: usize, rng: &mut dyn rand::RngCore, out: &mut Vec<AgentId>) {
        (**self).sample_into(k, rng, out);
    }

    fn contains(&self, id: &AgentId) -> bool {
        (**self).contains(id)
    }

    fn len(&self) -> usize {
        (**self).len()
    }

    fn reachability(&self) -> Reachability {
        (**self).reachability()
    }
}

/// A sorted, de-duplicated member list, shared by every node of a cluster (one
/// allocation however many nodes use it).
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
pub struct StaticView {
    list: MemberList,
    me: AgentId,
}

impl StaticView {
    /// Members of `list`, seen from `me` (who may or may not be in it).
    pub fn new(list: MemberList, me: AgentId) -> Self {
        Self { list, me }
    }
}

impl PeerView for StaticView {
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
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rand::SeedableRng;

    fn id(n: u8) -> AgentId {
        AgentId::from_bytes([n; 32])
    }

    #[test]
    fn static_view_never_samples_self_or_duplicates() {
        let list = MemberList::new((0..10).map(id).collect());
        let view = StaticView::new(list, id(3));
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
