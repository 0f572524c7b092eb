//! Convergence detection: did every peer that answered our pulls this round report our
//! root, for `convergence_rounds` rounds in a row?

use knhk_crdt::Hash;
use knhk_types::AgentId;

/// The roots reported to us this round, and the run of agreeing rounds.
#[derive(Debug, Default)]
pub(crate) struct Convergence {
    /// Roots reported in answers to our pulls since the last round ended (bounded).
    replies: Vec<(AgentId, Hash)>,
    /// An answer beyond the bound reported a root none of the kept ones has.
    incomplete: bool,
    /// The root the agreeing rounds were counted against.
    agreeing_root: Option<Hash>,
    agreeing_rounds: u32,
    converged_root: Option<Hash>,
}

impl Convergence {
    /// Records `from`'s answer reporting `root`, keeping at most `keep` answers a round.
    pub(crate) fn record(&mut self, from: AgentId, root: Hash, keep: usize) {
        if self.replies.len() < keep {
            self.replies.push((from, root));
        } else if self.replies.iter().all(|(_, kept)| *kept != root) {
            // Not kept, and unlike every root kept: this round cannot count as agreeing.
            self.incomplete = true;
        }
    }

    /// Closes round `round` with our root `root`: returns true if this is the round in
    /// which `needed` agreeing rounds on `root` were first reached (announce it once per
    /// root). Round 0 (before the first) is never judged.
    pub(crate) fn close_round(&mut self, round: u64, root: Hash, needed: u32) -> bool {
        let agreed = !self.incomplete
            && !self.replies.is_empty()
            && self.replies.iter().all(|(_, reported)| *reported == root);
        self.incomplete = false;
        if round == 0 {
            return false;
        }
        // Agreement is counted against one root: a write or merge since restarts it.
        if self.agreeing_root != Some(root) {
            self.agreeing_root = Some(root);
            self.agreeing_rounds = 0;
        }
        if agreed {
            self.agreeing_rounds += 1;
        } else {
            self.agreeing_rounds = 0;
        }
        if self.agreeing_rounds >= needed && self.converged_root != Some(root) {
            self.converged_root = Some(root);
            return true;
        }
        false
    }

    /// A peer that answered in the round just closed and reported a root other than
    /// `root` (a partner for anti-entropy).
    pub(crate) fn differing_peer(&self, root: Hash) -> Option<(AgentId, Hash)> {
        self.replies
            .iter()
            .find(|(_, reported)| *reported != root)
            .copied()
    }

    /// Forgets the closed round's answers (keeping the allocation).
    pub(crate) fn clear_replies(&mut self) {
        self.replies.clear();
    }

    /// Every peer that answered last round reported our root: pulls can be roots only.
    pub(crate) fn settled(&self) -> bool {
        self.agreeing_rounds > 0
    }

    /// True if convergence was declared for `root`.
    pub(crate) fn converged_on(&self, root: Hash) -> bool {
        self.converged_root == Some(root)
    }

    /// Bytes held, for memory estimates.
    pub(crate) fn approx_heap_bytes(&self) -> usize {
        self.replies.capacity() * 64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> AgentId {
        AgentId::from_bytes([n; 32])
    }

    /// (answers this round as (peer, root byte), our root byte, expect announce, expect settled)
    type Round = (&'static [(u8, u8)], u8, bool, bool);

    fn play(rounds: &[Round], needed: u32) {
        let mut convergence = Convergence::default();
        for (round, (answers, ours, announce, settled)) in rounds.iter().enumerate() {
            for (peer, root) in *answers {
                convergence.record(id(*peer), [*root; 32], 2);
            }
            let root = [*ours; 32];
            let announced = convergence.close_round(round as u64 + 1, root, needed);
            convergence.clear_replies();
            assert_eq!(announced, *announce, "round {} announce", round + 1);
            assert_eq!(
                convergence.settled(),
                *settled,
                "round {} settled",
                round + 1
            );
        }
    }

    #[test]
    fn three_agreeing_rounds_announce_once() {
        play(
            &[
                (&[(1, 9), (2, 9)], 9, false, true),
                (&[(1, 9)], 9, false, true),
                (&[(3, 9)], 9, true, true),
                (&[(3, 9)], 9, false, true),
            ],
            3,
        );
    }

    #[test]
    fn a_disagreeing_or_silent_round_restarts_the_count() {
        play(
            &[
                (&[(1, 9)], 9, false, true),
                (&[(1, 9), (2, 8)], 9, false, false),
                (&[], 9, false, false),
                (&[(1, 9)], 9, false, true),
                (&[(1, 9)], 9, true, true),
            ],
            2,
        );
    }

    #[test]
    fn a_new_root_restarts_the_count_and_is_announced_again() {
        play(
            &[
                (&[(1, 9)], 9, true, true),
                (&[(1, 7)], 7, true, true),
                (&[(1, 9)], 9, true, true),
            ],
            1,
        );
    }

    #[test]
    fn an_unkept_differing_answer_spoils_the_round() {
        let mut convergence = Convergence::default();
        convergence.record(id(1), [9; 32], 1);
        convergence.record(id(2), [9; 32], 1);
        assert!(convergence.close_round(1, [9; 32], 1));
        convergence.clear_replies();
        convergence.record(id(1), [8; 32], 1);
        convergence.record(id(2), [9; 32], 1);
        assert_eq!(convergence.differing_peer([9; 32]), Some((id(1), [8; 32])));
        assert!(
            !convergence.close_round(2, [8; 32], 1),
            "peer 2's 9 was not kept"
        );
        convergence.clear_replies();
        convergence.record(id(1), [8; 32], 1);
        convergence.record(id(2), [7; 32], 1);
        assert!(
            !convergence.close_round(3, [8; 32], 1),
            "an unkept 7 differs from every kept root"
        );
    }
}
