//! [`RefusalBackoff`]: how long to leave a peer alone after it refused our handshake.
//!
//! A peer that refuses us (it does not admit this node, or its key is not the one we
//! were told) will refuse again until someone changes a configuration, so dialing it
//! on every gossip round and probe only spends handshakes and fills the log. After a
//! refusal the peer is not dialed for 500 ms, then 1 s, 2 s, … up to 30 s between
//! tries; dials in between fail at once with the refusal they would meet. The first
//! refusal of a streak, and each one once the wait is at its longest, are worth a
//! warning; the rest are not. Any connection with the peer (ours or theirs) ends the
//! streak.

use std::time::Duration;

use dashmap::DashMap;
use knhk_types::{AgentId, RefusalReason};
use tokio::time::Instant;

use crate::error::TransportError;

/// The wait after the first refusal of a streak.
pub(crate) const FIRST_WAIT: Duration = Duration::from_millis(500);
/// The longest wait between tries.
pub(crate) const LONGEST_WAIT: Duration = Duration::from_secs(30);
/// Streaks remembered at most: peers gossip may name are unbounded over time (a hostile
/// member can name fake ids at an address that refuses them), so when this many are
/// held, those whose wait is over are forgotten, and if none is, the new refusal is not
/// remembered (that peer is simply dialed again next time, as before backoff) nor
/// warned of.
pub(crate) const MAX_STREAKS: usize = 4_096;

/// What a peer refused us with, to answer the dials it is spared.
#[derive(Clone, Debug)]
pub(crate) enum Refusal {
    /// It authenticated us but does not admit us.
    Admission(RefusalReason),
    /// The TLS handshake was refused (by it, or by us: its key was not the expected one).
    Handshake(String),
}

impl Refusal {
    fn error(&self, peer: AgentId) -> TransportError {
        match self {
            Self::Admission(reason) => TransportError::AdmissionRefused {
                peer,
                reason: *reason,
            },
            Self::Handshake(reason) => TransportError::HandshakeRejected {
                peer,
                reason: reason.clone(),
            },
        }
    }
}

#[derive(Debug)]
struct Streak {
    refusals: u32,
    retry_at: Instant,
    refusal: Refusal,
}

/// Refusal streaks by peer. Holds only peers this node dials (registered or learned
/// addresses), and forgets each at its first connection.
#[derive(Debug, Default)]
pub(crate) struct RefusalBackoff {
    streaks: DashMap<AgentId, Streak>,
}

impl RefusalBackoff {
    /// `Ok` if `peer` may be dialed at `now`; else the refusal it would meet again.
    pub(crate) fn check(&self, peer: &AgentId, now: Instant) -> Result<(), TransportError> {
        match self.streaks.get(peer) {
            Some(streak) if now < streak.retry_at => Err(streak.refusal.error(*peer)),
            _ => Ok(()),
        }
    }

    /// Records that `peer` refused us at `now`. Returns true when this refusal deserves
    /// a warning: the first of a streak, or one at the longest wait.
    pub(crate) fn refused(&self, peer: AgentId, now: Instant, refusal: Refusal) -> bool {
        if self.streaks.len() >= MAX_STREAKS && !self.streaks.contains_key(&peer) {
            self.streaks.retain(|_, streak| now < streak.retry_at);
            if self.streaks.len() >= MAX_STREAKS {
                // A flood of refusing ids: not remembered, and not worth a warning each.
                return false;
            }
        }
        let mut streak = self.streaks.entry(peer).or_insert(Streak {
            refusals: 0,
            retry_at: now,
            refusal: refusal.clone(),
        });
        streak.refusals = streak.refusals.saturating_add(1);
        let wait = wait_after(streak.refusals);
        streak.retry_at = now + wait;
        streak.refusal = refusal;
        streak.refusals == 1 || wait == LONGEST_WAIT
    }

    /// Ends `peer`'s streak (a connection with it is up).
    pub(crate) fn connected(&self, peer: &AgentId) {
        self.streaks.remove(peer);
    }
}

/// The wait after the `refusals`-th refusal in a row (1-based): doubling from
/// [`FIRST_WAIT`], at most [`LONGEST_WAIT`].
fn wait_after(refusals: u32) -> Duration {
    let doublings = refusals.saturating_sub(1).min(16);
    FIRST_WAIT.saturating_mul(1 << doublings).min(LONGEST_WAIT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> AgentId {
        AgentId::from_bytes([7; 32])
    }

    #[test]
    fn waits_double_from_half_a_second_to_thirty_seconds() {
        let waits: Vec<u64> = (1..=9)
            .map(|n| u64::try_from(wait_after(n).as_millis()).unwrap())
            .collect();
        assert_eq!(
            waits,
            [
                500, 1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000, 30_000
            ]
        );
        assert_eq!(wait_after(u32::MAX), LONGEST_WAIT);
    }

    #[test]
    fn a_refused_peer_is_spared_until_its_wait_ends_with_the_same_refusal() {
        let backoff = RefusalBackoff::default();
        let start = Instant::now();
        assert!(backoff.check(&peer(), start).is_ok());
        let warn = backoff.refused(
            peer(),
            start,
            Refusal::Admission(RefusalReason::WrongCluster),
        );
        assert!(warn, "the first refusal of a streak is worth a warning");
        let spared = backoff.check(&peer(), start + Duration::from_millis(499));
        assert!(matches!(
            spared,
            Err(TransportError::AdmissionRefused {
                reason: RefusalReason::WrongCluster,
                ..
            })
        ));
        assert!(backoff.check(&peer(), start + FIRST_WAIT).is_ok());
    }

    #[test]
    fn only_the_first_refusal_and_those_at_the_longest_wait_warn() {
        let backoff = RefusalBackoff::default();
        let mut now = Instant::now();
        let warnings: Vec<bool> = (1..=9)
            .map(|n| {
                let warn = backoff.refused(peer(), now, Refusal::Handshake("no".into()));
                now += wait_after(n);
                warn
            })
            .collect();
        assert_eq!(
            warnings,
            [true, false, false, false, false, false, true, true, true]
        );
    }

    #[test]
    fn streaks_are_bounded_and_expired_ones_make_room() {
        let backoff = RefusalBackoff::default();
        let now = Instant::now();
        let id = |n: usize| {
            let mut bytes = [0u8; 32];
            bytes[..8].copy_from_slice(&(n as u64).to_le_bytes());
            AgentId::from_bytes(bytes)
        };
        for n in 0..MAX_STREAKS + 10 {
            backoff.refused(id(n), now, Refusal::Handshake("no".into()));
        }
        assert_eq!(
            backoff.streaks.len(),
            MAX_STREAKS,
            "no room while every wait runs"
        );
        assert!(
            backoff.check(&id(MAX_STREAKS + 5), now).is_ok(),
            "not remembered"
        );
        // Once their waits are over, old streaks give way to new ones.
        let later = now + FIRST_WAIT;
        backoff.refused(id(MAX_STREAKS + 20), later, Refusal::Handshake("no".into()));
        assert_eq!(backoff.streaks.len(), 1);
        assert!(backoff.check(&id(MAX_STREAKS + 20), later).is_err());
    }

    #[test]
    fn a_connection_ends_the_streak() {
        let backoff = RefusalBackoff::default();
        let now = Instant::now();
        for _ in 0..5 {
            backoff.refused(peer(), now, Refusal::Handshake("no".into()));
        }
        backoff.connected(&peer());
        assert!(backoff.check(&peer(), now).is_ok());
        assert!(
            backoff.refused(peer(), now, Refusal::Handshake("no".into())),
            "a new streak warns again"
        );
        assert!(
            backoff
                .check(&peer(), now + FIRST_WAIT - Duration::from_millis(1))
                .is_err(),
            "and starts from the first wait"
        );
    }
}
