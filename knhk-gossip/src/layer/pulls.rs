//! Pulls we sent and have not had answered: only answers to these are accepted.

use std::collections::BTreeMap;

use knhk_types::AgentId;

/// A pull we sent and have not had answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PendingPull {
    /// The round it was sent in.
    pub(crate) round: u64,
    /// Whether it carried our version vector (if not, an answer showing the peer has
    /// news earns one follow-up pull that does).
    pub(crate) with_version: bool,
}

/// At most one pending pull per peer; a newer pull to the same peer replaces the older.
#[derive(Debug, Default)]
pub(crate) struct PendingPulls(BTreeMap<AgentId, PendingPull>);

impl PendingPulls {
    /// Records a pull to `peer`.
    pub(crate) fn sent(&mut self, peer: AgentId, pull: PendingPull) {
        self.0.insert(peer, pull);
    }

    /// Takes the pull an answer from `peer` answers, if any (each is answered once).
    pub(crate) fn answered(&mut self, peer: &AgentId) -> Option<PendingPull> {
        self.0.remove(peer)
    }

    /// Forgets pulls sent more than `timeout` rounds before `round`.
    pub(crate) fn expire(&mut self, round: u64, timeout: u64) {
        self.0
            .retain(|_, pull| round.saturating_sub(pull.round) <= timeout);
    }

    /// Pulls pending.
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> AgentId {
        AgentId::from_bytes([n; 32])
    }

    #[test]
    fn answers_count_once_and_only_for_pulls_sent() {
        let mut pulls = PendingPulls::default();
        let pull = PendingPull {
            round: 1,
            with_version: false,
        };
        pulls.sent(id(1), pull);
        // (peer answering, expected pull)
        let cases: &[(u8, Option<PendingPull>)] = &[(2, None), (1, Some(pull)), (1, None)];
        for (peer, expected) in cases {
            assert_eq!(pulls.answered(&id(*peer)), *expected, "answer from {peer}");
        }
    }

    #[test]
    fn pulls_expire_after_the_timeout() {
        // (sent in round, judged at round, timeout, still pending)
        let cases = [
            (1, 5, 10, true),
            (1, 11, 10, true),
            (1, 12, 10, false),
            (7, 3, 0, true),
        ];
        for (sent, now, timeout, pending) in cases {
            let mut pulls = PendingPulls::default();
            pulls.sent(
                id(1),
                PendingPull {
                    round: sent,
                    with_version: true,
                },
            );
            pulls.expire(now, timeout);
            assert_eq!(
                pulls.len() == 1,
                pending,
                "sent {sent}, now {now}, timeout {timeout}"
            );
        }
    }
}
