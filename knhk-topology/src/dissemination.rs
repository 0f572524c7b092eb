//! [`Dissemination`]: membership updates waiting to be piggybacked, each sent a
//! bounded number of times (SWIM's infection-style dissemination).

use knhk_types::AgentId;

use crate::message::Update;

/// One queued update and how often it went out.
#[derive(Clone, Copy, Debug)]
struct Queued {
    update: Update,
    sends: u32,
}

/// Updates to piggyback, at most one per member (the newest), least-sent first.
/// Bounded by the members known: one entry each.
#[derive(Clone, Debug, Default)]
pub(crate) struct Dissemination {
    queue: Vec<Queued>,
}

impl Dissemination {
    /// Queues `update`, replacing any older one about the same member.
    pub(crate) fn push(&mut self, update: Update) {
        self.queue
            .retain(|queued| queued.update.member != update.member);
        self.queue.push(Queued { update, sends: 0 });
    }

    /// Updates queued.
    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }

    /// Up to `max` updates for the next message to `receiver`: any about the receiver
    /// first (Lifeguard's buddy system: a suspected member hears of it on the next
    /// probe it gets, and refutes at once), then least-sent first, newest first among
    /// equals. With `count`, each is counted as sent once more, and dropped after
    /// `limit` sends; without (a receiver we do not believe alive, whose copy is likely
    /// lost), nothing is used up.
    pub(crate) fn take(
        &mut self,
        max: usize,
        limit: u32,
        receiver: &AgentId,
        count: bool,
    ) -> Vec<Update> {
        let mut order: Vec<usize> = (0..self.queue.len()).collect();
        order.sort_by_key(|at| {
            let queued = &self.queue[*at];
            (
                queued.update.member != *receiver,
                queued.sends,
                std::cmp::Reverse(*at),
            )
        });
        order.truncate(max);
        let updates = order.iter().map(|at| self.queue[*at].update).collect();
        if !count {
            return updates;
        }
        for at in order {
            self.queue[at].sends += 1;
        }
        let limit = limit.max(1);
        self.queue.retain(|queued| queued.sends < limit);
        updates
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Claim;

    fn update(member: u8, incarnation: u64) -> Update {
        Update {
            member: AgentId::from_bytes([member; 32]),
            incarnation,
            claim: Claim::Alive,
            by: AgentId::from_bytes([0; 32]),
            addr: None,
        }
    }

    #[test]
    fn each_update_goes_out_a_bounded_number_of_times_least_sent_first() {
        let mut queue = Dissemination::default();
        let nobody = AgentId::from_bytes([99; 32]);
        queue.push(update(1, 0));
        queue.push(update(2, 0));
        queue.push(update(1, 1)); // replaces member 1's older update
        assert_eq!(queue.len(), 2);
        let first = queue.take(1, 2, &nobody, true);
        assert_eq!(first, vec![update(1, 1)], "newest first among equals");
        assert_eq!(queue.take(1, 2, &nobody, true), vec![update(2, 0)]);
        assert_eq!(queue.take(5, 2, &nobody, true).len(), 2);
        assert_eq!(queue.len(), 0, "both sent twice: done");
    }

    #[test]
    fn updates_about_the_receiver_go_to_it_first() {
        let mut queue = Dissemination::default();
        queue.push(update(1, 0));
        queue.push(update(2, 0));
        let about = AgentId::from_bytes([1; 32]);
        assert_eq!(queue.take(1, 3, &about, true), vec![update(1, 0)]);
    }
}
