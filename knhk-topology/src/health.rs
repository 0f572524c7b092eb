//! Lifeguard (Dadgar et al., 2018; memberlist runs it): a node that is itself slow
//! must not accuse others. [`LocalHealth`] scales the node's own probe timeouts with
//! evidence that *it* is the problem; [`suspicion_timeout`] shrinks as independent
//! peers confirm a suspicion.

use std::time::Duration;

/// Lifeguard's local health multiplier: a score from 0 (healthy) to a maximum, raised
/// by evidence that this node is slow (a probe with no ack and no nack, having to
/// refute a suspicion of itself) and lowered by each probe that succeeds. Probe
/// intervals and timeouts are scaled by `score + 1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalHealth {
    score: u32,
    max: u32,
}

impl LocalHealth {
    /// A healthy node whose score may reach `max` (memberlist: 8).
    pub fn new(max: u32) -> Self {
        Self { score: 0, max }
    }

    /// The score now.
    pub fn score(&self) -> u32 {
        self.score
    }

    /// Evidence that this node is slow: the score rises by one (up to its maximum).
    pub fn worse(&mut self) {
        self.score = (self.score + 1).min(self.max);
    }

    /// A probe that worked: the score falls by one (down to 0).
    pub fn better(&mut self) {
        self.score = self.score.saturating_sub(1);
    }

    /// `base` scaled by the multiplier (`score + 1`).
    pub fn scale(&self, base: Duration) -> Duration {
        base.saturating_mul(self.score + 1)
    }
}

/// How long a member stays suspect before it is declared dead, after `confirmations`
/// independent peers (besides the first accuser) suspected it too: Lifeguard's
/// formula as memberlist computes it.
///
/// `min = min_multiplier × max(1, log10(members)) × probe_interval`, `max =
/// max_multiplier × min`; the timeout falls from `max` toward `min` as
/// `log(confirmations + 1) / log(expected + 1)`, and is never below `min`. With no
/// expected confirmations it is `min`.
pub fn suspicion_timeout(
    members: usize,
    probe_interval: Duration,
    min_multiplier: u32,
    max_multiplier: u32,
    expected: u32,
    confirmations: u32,
) -> Duration {
    let scale = (members.max(1) as f64).log10().max(1.0);
    let min = probe_interval.as_secs_f64() * f64::from(min_multiplier) * scale;
    let max = min * f64::from(max_multiplier.max(1));
    if expected == 0 {
        return Duration::from_secs_f64(min);
    }
    let progress = (f64::from(confirmations) + 1.0).ln() / (f64::from(expected) + 1.0).ln();
    let timeout = (max - (max - min) * progress).max(min);
    Duration::from_secs_f64(timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_health_score_is_bounded_both_ways() {
        let mut health = LocalHealth::new(3);
        health.better();
        assert_eq!(health.score(), 0);
        for _ in 0..10 {
            health.worse();
        }
        assert_eq!(health.score(), 3);
        assert_eq!(
            health.scale(Duration::from_millis(500)),
            Duration::from_millis(2_000)
        );
    }

    #[test]
    fn suspicion_timeouts_by_hand() {
        let second = Duration::from_secs(1);
        // 1,000 members: log10 = 3; min = 1 s × 4 × 3 = 12 s; max = 6 × 12 = 72 s.
        let none = suspicion_timeout(1_000, second, 4, 6, 3, 0);
        assert!((none.as_secs_f64() - 72.0).abs() < 1e-9, "{none:?}");
        // One confirmation of three: 72 - 60 × ln 2 / ln 4 = 72 - 30 = 42 s.
        let one = suspicion_timeout(1_000, second, 4, 6, 3, 1);
        assert!((one.as_secs_f64() - 42.0).abs() < 1e-9, "{one:?}");
        // Three or more: the minimum.
        let all = suspicion_timeout(1_000, second, 4, 6, 3, 3);
        assert!((all.as_secs_f64() - 12.0).abs() < 1e-9, "{all:?}");
        assert_eq!(suspicion_timeout(1_000, second, 4, 6, 3, 9), all);
        // Small clusters scale as 10 members (log10 floored at 1).
        let small = suspicion_timeout(3, second, 4, 6, 0, 0);
        assert!((small.as_secs_f64() - 4.0).abs() < 1e-9, "{small:?}");
    }
}
