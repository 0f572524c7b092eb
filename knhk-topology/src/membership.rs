//! [`Membership`]: the node's peer view, kept by the failure detector: each member's
//! state and incarnation, round trips and coordinate.

use std::collections::HashMap;

use knhk_endpoint::{PeerView, Reachability};
use knhk_types::{AgentId, UnixMillis};
use rand::Rng;

use crate::message::{Claim, Update};
use crate::rtt::RttEstimate;
use crate::vivaldi::Coordinate;

/// The most an alive claim may raise a member's incarnation over the one we know
/// (each refutation raises it by one; a node that missed many still catches up).
pub const MAX_INCARNATION_JUMP: u64 = 1_024;

/// What this node believes about a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberState {
    /// Answering probes (or not yet suspected).
    Alive,
    /// A probe failed; dead unless it refutes (or answers) before the suspicion
    /// timeout.
    Suspect,
    /// Suspected for the whole timeout. Still known (its frames are still accepted,
    /// so it can refute), but never chosen as a peer.
    Dead,
}

/// One member of the view.
#[derive(Clone, Debug)]
pub struct Member {
    /// Its identity.
    pub id: AgentId,
    /// What we believe.
    pub state: MemberState,
    /// The member's incarnation we know of (only the member raises it).
    pub incarnation: u64,
    /// When `state` last changed, by our clock.
    pub since: UnixMillis,
    /// Round trips measured by our direct probes.
    pub rtt: RttEstimate,
    /// Its Vivaldi coordinate, as it last told us.
    pub coordinate: Option<Coordinate>,
    /// Times we saw it go from alive or suspect to dead (a member that keeps coming
    /// back flaps: a slow node, or a flaky link).
    pub deaths: u32,
}

/// What applying an update did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// Nothing: old news, or about a member we do not know.
    Ignored,
    /// The same suspicion again (from `by`): a confirmation.
    Confirmed,
    /// The member's state or incarnation changed (from `from` to the update's claim).
    Changed {
        /// The state before.
        from: MemberState,
    },
    /// The update accuses this node (suspect or dead): at its incarnation or later it
    /// must refute with a higher one; at an older one, it re-announces the current one.
    AboutMe,
}

/// The members a node knows: a fixed set of identities (its seeds; admission of new
/// ones comes with membership certificates), each with the state the failure detector
/// believes. As a [`PeerView`]: peers are sampled among members not dead; every known
/// member, dead or not, may send (so a member wrongly declared dead can refute).
#[derive(Clone, Debug)]
pub struct Membership {
    me: AgentId,
    members: Vec<Member>,
    index: HashMap<AgentId, usize>,
    not_dead: usize,
}

impl Membership {
    /// The view of `me` over `seeds` (duplicates and `me` dropped), all alive at
    /// incarnation 0, as of `now`.
    pub fn new(me: AgentId, seeds: impl IntoIterator<Item = AgentId>, now: UnixMillis) -> Self {
        let mut view = Self {
            me,
            members: Vec::new(),
            index: HashMap::new(),
            not_dead: 0,
        };
        for id in seeds {
            if id != me && !view.index.contains_key(&id) {
                view.index.insert(id, view.members.len());
                view.members.push(Member {
                    id,
                    state: MemberState::Alive,
                    incarnation: 0,
                    since: now,
                    rtt: RttEstimate::default(),
                    coordinate: None,
                    deaths: 0,
                });
                view.not_dead += 1;
            }
        }
        view
    }

    /// This node's identity.
    pub fn me(&self) -> AgentId {
        self.me
    }

    /// Every member (never this node), in the order they were added.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// The member `id`, if known.
    pub fn get(&self, id: &AgentId) -> Option<&Member> {
        self.index.get(id).map(|at| &self.members[*at])
    }

    pub(crate) fn get_mut(&mut self, id: &AgentId) -> Option<&mut Member> {
        self.index.get(id).map(|at| &mut self.members[*at])
    }

    /// Members in `state`.
    pub fn count(&self, state: MemberState) -> usize {
        self.members.iter().filter(|m| m.state == state).count()
    }

    /// What an update may claim, before [`Membership::apply`]: incarnations are
    /// raised only by their member, so an accusation (suspect, dead) above the
    /// incarnation we know is brought down to it (an honest accuser cannot know more,
    /// except of a refutation that clears the accusation anyway), and an alive claim
    /// more than [`MAX_INCARNATION_JUMP`] above it is dropped. Without this one member
    /// could bury another for good: a death at `u64::MAX` cannot be refuted.
    /// `my_incarnation` is this node's own. Returns `None` for an update to drop.
    pub fn sanitize(&self, update: &Update, my_incarnation: u64) -> Option<Update> {
        let known = if update.member == self.me {
            my_incarnation
        } else {
            self.get(&update.member)?.incarnation
        };
        let mut update = *update;
        match update.claim {
            Claim::Suspect | Claim::Dead => update.incarnation = update.incarnation.min(known),
            Claim::Alive if update.incarnation > known.saturating_add(MAX_INCARNATION_JUMP) => {
                return None;
            }
            Claim::Alive => {}
        }
        Some(update)
    }

    /// Applies `update` by SWIM's precedence (memberlist's rules): a higher incarnation
    /// wins; at one incarnation, suspect beats alive and dead beats both; a dead member
    /// returns only as alive at a higher incarnation. An update about this node that
    /// suspects or buries it is [`Applied::AboutMe`] (the caller compares incarnations
    /// to refute or only re-announce).
    pub fn apply(&mut self, update: &Update, now: UnixMillis) -> Applied {
        if update.member == self.me {
            let accuses = matches!(update.claim, Claim::Suspect | Claim::Dead);
            return if accuses {
                Applied::AboutMe
            } else {
                Applied::Ignored
            };
        }
        let Some(at) = self.index.get(&update.member).copied() else {
            return Applied::Ignored;
        };
        let member = &mut self.members[at];
        let from = member.state;
        let newer = update.incarnation > member.incarnation;
        let same = update.incarnation == member.incarnation;
        let to = match (update.claim, member.state) {
            (Claim::Alive, _) if newer => MemberState::Alive,
            (Claim::Suspect, MemberState::Suspect) if same => return Applied::Confirmed,
            (Claim::Suspect, MemberState::Alive | MemberState::Suspect) if newer || same => {
                MemberState::Suspect
            }
            (Claim::Dead, MemberState::Alive | MemberState::Suspect) if newer || same => {
                MemberState::Dead
            }
            (Claim::Suspect | Claim::Dead, MemberState::Dead) if newer => match update.claim {
                Claim::Dead => MemberState::Dead,
                _ => MemberState::Suspect,
            },
            _ => return Applied::Ignored,
        };
        if to == from && !newer {
            return Applied::Ignored;
        }
        member.incarnation = update.incarnation.max(member.incarnation);
        member.state = to;
        if to != from {
            member.since = now;
            match (from, to) {
                (MemberState::Dead, _) => self.not_dead += 1,
                (_, MemberState::Dead) => {
                    self.not_dead -= 1;
                    self.members[at].deaths = self.members[at].deaths.saturating_add(1);
                }
                _ => {}
            }
        }
        Applied::Changed { from }
    }
}

impl PeerView for Membership {
    fn sample_into(&self, k: usize, rng: &mut dyn rand::RngCore, out: &mut Vec<AgentId>) {
        let wanted = k.min(self.not_dead);
        let start = out.len();
        let mut attempts = 0usize;
        // Rejection sampling while most members are alive; a scan when many are dead.
        while out.len() - start < wanted && attempts < 16 * (wanted + 1) {
            attempts += 1;
            let member = &self.members[rng.random_range(0..self.members.len())];
            if member.state != MemberState::Dead && !out[start..].contains(&member.id) {
                out.push(member.id);
            }
        }
        if out.len() - start < wanted {
            let mut rest: Vec<AgentId> = self
                .members
                .iter()
                .filter(|m| m.state != MemberState::Dead && !out[start..].contains(&m.id))
                .map(|m| m.id)
                .collect();
            while out.len() - start < wanted && !rest.is_empty() {
                let at = rng.random_range(0..rest.len());
                out.push(rest.swap_remove(at));
            }
        }
    }

    fn contains(&self, id: &AgentId) -> bool {
        self.index.contains_key(id)
    }

    fn len(&self) -> usize {
        self.not_dead
    }

    /// Reachable: this node and the members believed alive (a suspect is not, until it
    /// answers or refutes); counted: every member, dead ones included (the member set
    /// is fixed until admission and graceful leave exist), so the side of a cut with
    /// fewer than half the members finds itself without a quorum.
    fn reachability(&self) -> Reachability {
        Reachability {
            reachable: self.count(MemberState::Alive) + 1,
            members: self.members.len() + 1,
        }
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

    fn update(member: u8, incarnation: u64, claim: Claim) -> Update {
        Update {
            member: id(member),
            incarnation,
            claim,
            by: id(9),
        }
    }

    const NOW: UnixMillis = UnixMillis(1_000);

    #[test]
    fn swim_precedence_by_incarnation_and_claim() {
        let mut view = Membership::new(id(0), [id(1), id(2)], NOW);
        assert_eq!(
            view.apply(&update(1, 0, Claim::Alive), NOW),
            Applied::Ignored
        );
        assert_eq!(
            view.apply(&update(1, 0, Claim::Suspect), NOW),
            Applied::Changed {
                from: MemberState::Alive
            }
        );
        assert_eq!(
            view.apply(&update(1, 0, Claim::Suspect), NOW),
            Applied::Confirmed
        );
        // Alive at the same incarnation does not clear a suspicion; a higher one does.
        assert_eq!(
            view.apply(&update(1, 0, Claim::Alive), NOW),
            Applied::Ignored
        );
        assert_eq!(
            view.apply(&update(1, 1, Claim::Alive), NOW),
            Applied::Changed {
                from: MemberState::Suspect
            }
        );
        // Dead beats alive at its incarnation; an old alive cannot revive it.
        assert_eq!(
            view.apply(&update(1, 1, Claim::Dead), NOW),
            Applied::Changed {
                from: MemberState::Alive
            }
        );
        assert_eq!(view.len(), 1);
        assert!(view.contains(&id(1)), "the dead are still known");
        assert_eq!(
            view.apply(&update(1, 1, Claim::Alive), NOW),
            Applied::Ignored
        );
        assert_eq!(
            view.apply(&update(1, 2, Claim::Alive), NOW),
            Applied::Changed {
                from: MemberState::Dead
            }
        );
        assert_eq!(view.len(), 2);
        // Unknown members and old news are ignored.
        assert_eq!(
            view.apply(&update(7, 5, Claim::Alive), NOW),
            Applied::Ignored
        );
        assert_eq!(
            view.apply(&update(2, 0, Claim::Alive), NOW),
            Applied::Ignored
        );
    }

    #[test]
    fn accusations_of_me_are_reported_whatever_their_incarnation() {
        let mut view = Membership::new(id(0), [id(1)], NOW);
        assert_eq!(
            view.apply(&update(0, 3, Claim::Suspect), NOW),
            Applied::AboutMe
        );
        assert_eq!(
            view.apply(&update(0, 4, Claim::Dead), NOW),
            Applied::AboutMe
        );
        assert_eq!(
            view.apply(&update(0, 2, Claim::Suspect), NOW),
            Applied::AboutMe
        );
        assert_eq!(
            view.apply(&update(0, 9, Claim::Alive), NOW),
            Applied::Ignored
        );
    }

    #[test]
    fn sampling_skips_the_dead_and_never_repeats() {
        let mut view = Membership::new(id(0), (1..=10).map(id), NOW);
        for n in 1..=7 {
            view.apply(&update(n, 0, Claim::Dead), NOW);
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for _ in 0..20 {
            let mut out = Vec::new();
            view.sample_into(5, &mut rng, &mut out);
            out.sort();
            assert_eq!(out, vec![id(8), id(9), id(10)]);
        }
    }

    #[test]
    fn claimed_incarnations_cannot_bury_a_member_for_good() {
        let view = Membership::new(id(0), [id(1)], NOW);
        let forever = update(1, u64::MAX, Claim::Dead);
        assert_eq!(view.sanitize(&forever, 0).unwrap().incarnation, 0);
        let about_me = update(0, u64::MAX, Claim::Suspect);
        assert_eq!(view.sanitize(&about_me, 7).unwrap().incarnation, 7);
        assert!(
            view.sanitize(&update(1, MAX_INCARNATION_JUMP + 1, Claim::Alive), 0)
                .is_none()
        );
        assert!(
            view.sanitize(&update(1, MAX_INCARNATION_JUMP, Claim::Alive), 0)
                .is_some()
        );
        assert!(
            view.sanitize(&update(9, 0, Claim::Alive), 0).is_none(),
            "unknown member"
        );
    }
}
