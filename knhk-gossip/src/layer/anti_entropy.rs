//! Merkle anti-entropy sessions in flight, one per peer at most.

use std::collections::HashMap;

use knhk_crdt::MerkleDiff;
use knhk_types::AgentId;

/// One Merkle diff with one peer.
#[derive(Debug)]
pub(crate) struct DiffSession {
    pub(crate) diff: MerkleDiff,
    /// Carried by every question, so a late answer to an older session is recognised.
    pub(crate) id: u64,
    pub(crate) started_round: u64,
}

/// What a peer in a diff with us may still send: anti-entropy entries travel only
/// inside a session, so nobody can make us verify entries, or build an entries reply,
/// outside one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Permit {
    /// The round the permit was last granted in (it expires with the session timeout).
    round: u64,
    /// One `Entries` message.
    entries: bool,
    /// One `EntriesWanted` message.
    wanted: bool,
}

/// Sessions by peer, bounded; unanswered ones time out.
#[derive(Debug, Default)]
pub(crate) struct DiffSessions {
    sessions: HashMap<AgentId, DiffSession>,
    next_id: u64,
    permits: HashMap<AgentId, Permit>,
}

impl DiffSessions {
    /// True if a new session with `peer` may start: none with it yet, and fewer than
    /// `max` in flight.
    pub(crate) fn may_start(&self, peer: &AgentId, max: usize) -> bool {
        !self.sessions.contains_key(peer) && self.sessions.len() < max
    }

    /// A fresh session id.
    pub(crate) fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Keeps `session` with `peer` until its answer arrives.
    pub(crate) fn wait(&mut self, peer: AgentId, session: DiffSession) {
        self.sessions.insert(peer, session);
    }

    /// Takes `peer`'s session if `id` names it (a late answer to an expired or replaced
    /// session gets nothing).
    pub(crate) fn answered(&mut self, peer: &AgentId, id: u64) -> Option<DiffSession> {
        if self.sessions.get(peer)?.id != id {
            return None;
        }
        self.sessions.remove(peer)
    }

    /// Drops sessions and permits older than `timeout` rounds at `round`.
    pub(crate) fn expire(&mut self, round: u64, timeout: u64) {
        self.sessions
            .retain(|_, session| round.saturating_sub(session.started_round) <= timeout);
        self.permits
            .retain(|_, permit| round.saturating_sub(permit.round) <= timeout);
    }

    /// We answered `peer`'s diff question in `round`: it may send us its entries for the
    /// keys it finds differing, and ask for ours, once each.
    pub(crate) fn answered_question(&mut self, peer: AgentId, round: u64) {
        self.permits.insert(
            peer,
            Permit {
                round,
                entries: true,
                wanted: true,
            },
        );
    }

    /// We asked `peer` for entries in `round`: it may send them, once.
    pub(crate) fn asked_for_entries(&mut self, peer: AgentId, round: u64) {
        let permit = self.permits.entry(peer).or_insert(Permit {
            round,
            entries: false,
            wanted: false,
        });
        permit.round = round;
        permit.entries = true;
    }

    /// Takes `peer`'s permit to send `Entries`; false if it has none.
    pub(crate) fn take_entries(&mut self, peer: &AgentId) -> bool {
        self.permits
            .get_mut(peer)
            .is_some_and(|permit| std::mem::take(&mut permit.entries))
    }

    /// Takes `peer`'s permit to send `EntriesWanted`; false if it has none.
    pub(crate) fn take_wanted(&mut self, peer: &AgentId) -> bool {
        self.permits
            .get_mut(peer)
            .is_some_and(|permit| std::mem::take(&mut permit.wanted))
    }

    /// Sessions in flight and permits held.
    pub(crate) fn len(&self) -> usize {
        self.sessions.len() + self.permits.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use knhk_crdt::{StateConfig, VersionedState};

    fn id(n: u8) -> AgentId {
        AgentId::from_bytes([n; 32])
    }

    fn session(sessions: &mut DiffSessions, round: u64) -> DiffSession {
        let mut state = VersionedState::new(StateConfig::default());
        let (diff, _) = MerkleDiff::start(&mut state, [1; 32]);
        DiffSession {
            diff,
            id: sessions.next_id(),
            started_round: round,
        }
    }

    #[test]
    fn answers_must_name_the_current_session() {
        let mut sessions = DiffSessions::default();
        let first = session(&mut sessions, 1);
        sessions.wait(id(1), first);
        let second = session(&mut sessions, 1);
        let second_id = second.id;
        sessions.wait(id(1), second);
        // (peer, session id answered, expected to match)
        let cases = [
            (2, second_id, false),
            (1, second_id - 1, false),
            (1, second_id, true),
            (1, second_id, false),
        ];
        for (peer, answered, matches) in cases {
            assert_eq!(
                sessions.answered(&id(peer), answered).is_some(),
                matches,
                "peer {peer} id {answered}"
            );
        }
    }

    #[test]
    fn entries_are_accepted_only_inside_a_session_and_once() {
        let mut sessions = DiffSessions::default();
        // (what happened, then: may peer 1 send Entries?, may it send EntriesWanted?)
        assert!(!sessions.take_entries(&id(1)), "no session: no entries");
        assert!(!sessions.take_wanted(&id(1)), "no session: no request");
        sessions.answered_question(id(1), 3);
        assert!(sessions.take_wanted(&id(1)));
        assert!(!sessions.take_wanted(&id(1)), "once");
        assert!(sessions.take_entries(&id(1)));
        assert!(!sessions.take_entries(&id(1)), "once");
        sessions.asked_for_entries(id(2), 4);
        assert!(
            !sessions.take_wanted(&id(2)),
            "asking them grants no request of theirs"
        );
        sessions.expire(20, 10);
        assert!(!sessions.take_entries(&id(2)), "expired");
    }

    #[test]
    fn sessions_are_bounded_per_peer_and_in_total_and_expire() {
        let mut sessions = DiffSessions::default();
        assert!(sessions.may_start(&id(1), 2));
        let s = session(&mut sessions, 1);
        sessions.wait(id(1), s);
        assert!(!sessions.may_start(&id(1), 2), "one per peer");
        let s = session(&mut sessions, 5);
        sessions.wait(id(2), s);
        assert!(!sessions.may_start(&id(3), 2), "two in total");
        sessions.expire(12, 10);
        assert_eq!(sessions.len(), 1, "the session of round 1 timed out");
        assert!(sessions.may_start(&id(1), 2));
    }
}
