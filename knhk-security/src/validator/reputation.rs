//! Per-sender reputation, bans and token-bucket rate limits, in bounded memory.

use std::collections::HashMap;
use std::time::Duration;

use knhk_types::{AgentId, UnixMillis};

use super::{RejectReason, ValidatorConfig};

/// Reputation points taken for each kind of rejection.
///
/// Honest nodes can trip the cheap ones now and then (a retransmitted frame is a replay,
/// a slow clock is a stale timestamp), so those cost little; forgeries cost a lot.
#[derive(Clone, Debug)]
pub struct Penalties {
    /// Oversized frame. Default 50.
    pub frame_too_large: u32,
    /// Undecodable frame. Default 100.
    pub malformed: u32,
    /// Envelope signed by someone other than the hop. Default 200.
    pub sender_mismatch: u32,
    /// Sender not in the directory. Default 50.
    pub unknown_sender: u32,
    /// Timestamp too old. Default 5.
    pub stale_timestamp: u32,
    /// Timestamp too far ahead. Default 5.
    pub future_timestamp: u32,
    /// Replayed (sender, nonce). Default 10.
    pub replay: u32,
    /// Signature does not verify. Default 250.
    pub bad_signature: u32,
    /// Over the rate limit. Default 2.
    pub rate_limited: u32,
    /// Authenticated frame with invalid content (forged entries, garbage). Default 200.
    pub bad_payload: u32,
}

impl Default for Penalties {
    fn default() -> Self {
        Self {
            frame_too_large: 50,
            malformed: 100,
            sender_mismatch: 200,
            unknown_sender: 50,
            stale_timestamp: 5,
            future_timestamp: 5,
            replay: 10,
            bad_signature: 250,
            rate_limited: 2,
            bad_payload: 200,
        }
    }
}

impl Penalties {
    fn for_reason(&self, reason: RejectReason) -> u32 {
        match reason {
            RejectReason::FrameTooLarge => self.frame_too_large,
            RejectReason::Malformed => self.malformed,
            RejectReason::SenderMismatch => self.sender_mismatch,
            RejectReason::UnknownSender => self.unknown_sender,
            RejectReason::StaleTimestamp => self.stale_timestamp,
            RejectReason::FutureTimestamp => self.future_timestamp,
            RejectReason::Replay => self.replay,
            RejectReason::BadSignature => self.bad_signature,
            RejectReason::RateLimited => self.rate_limited,
            RejectReason::BadPayload => self.bad_payload,
            RejectReason::Banned | RejectReason::Overloaded => 0,
        }
    }
}

/// How reputation moves.
#[derive(Clone, Debug)]
pub struct ReputationConfig {
    /// Score of a new or fully recovered sender. Default 1,000.
    pub max_score: u32,
    /// A sender whose score falls below this is banned. Default 500.
    pub ban_below: u32,
    /// How long a ban lasts. Default 60 s.
    pub ban_duration: Duration,
    /// Points regained per second of time. Default 5 (a full recovery from the
    /// threshold takes 100 s).
    pub recovery_per_second: u32,
    /// Points regained per accepted frame. Default 0: a stream of valid frames must not
    /// launder a forgery (a Byzantine peer could otherwise buy back a 250-point penalty
    /// with 250 harmless frames); reputation returns with time instead.
    pub reward_per_accept: u32,
    /// Points lost per rejection.
    pub penalties: Penalties,
}

impl Default for ReputationConfig {
    fn default() -> Self {
        Self {
            max_score: 1_000,
            ban_below: 500,
            ban_duration: Duration::from_secs(60),
            recovery_per_second: 5,
            reward_per_accept: 0,
            penalties: Penalties::default(),
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct SenderState {
    score: u32,
    scored_at: UnixMillis,
    banned_until: UnixMillis,
    tokens_milli: u64,
    refilled_at: UnixMillis,
}

/// Bounded table of per-sender state. Whenever it has doubled since the last sweep, a
/// sweep forgets senders with nothing to remember (full score, full bucket, no ban), so
/// forgetting changes no decision and the table holds the senders heard from lately;
/// if the table is full and cannot shrink, new senders are refused
/// ([`RejectReason::Overloaded`]) instead of growing it.
#[derive(Debug)]
pub(super) struct SenderBook {
    states: HashMap<AgentId, SenderState>,
    max_senders: usize,
    rate_milli_per_ms: u64,
    burst_milli: u64,
    config: ReputationConfig,
    last_sweep: UnixMillis,
    /// Senders left after the last sweep: the next one runs when the table has doubled.
    kept_after_sweep: usize,
}

/// The table is swept when it reaches twice what the last sweep kept, and at least
/// this many senders.
const SWEEP_FLOOR: usize = 8;

impl SenderBook {
    pub(super) fn new(config: &ValidatorConfig) -> Self {
        Self {
            states: HashMap::new(),
            max_senders: config.max_tracked_senders.max(1),
            rate_milli_per_ms: u64::from(config.rate_per_second),
            burst_milli: u64::from(config.rate_burst.max(1)) * 1_000,
            config: config.reputation.clone(),
            last_sweep: UnixMillis(0),
            kept_after_sweep: 0,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.states.len()
    }

    /// Senders serving a ban at `now`, and the lowest score among tracked senders
    /// (`max_score` when none is tracked). O(tracked senders).
    pub(super) fn summary(&self, now: UnixMillis) -> (usize, u32) {
        self.states
            .values()
            .fold((0, self.config.max_score), |(banned, lowest), state| {
                (
                    banned + usize::from(state.banned_until > now),
                    lowest.min(self.recovered(state, now)),
                )
            })
    }

    pub(super) fn is_banned(&self, sender: &AgentId, now: UnixMillis) -> bool {
        self.states
            .get(sender)
            .is_some_and(|state| state.banned_until > now)
    }

    pub(super) fn score(&self, sender: &AgentId, now: UnixMillis) -> u32 {
        self.states
            .get(sender)
            .map_or(self.config.max_score, |state| self.recovered(state, now))
    }

    /// Lowers `sender`'s score; returns `true` if this imposed a ban.
    pub(super) fn penalize(
        &mut self,
        sender: AgentId,
        reason: RejectReason,
        now: UnixMillis,
    ) -> bool {
        let penalty = self.config.penalties.for_reason(reason);
        if penalty == 0 {
            return false;
        }
        let (ban_below, ban_duration) = (self.config.ban_below, self.config.ban_duration);
        let Some(mut state) = self.state_for(sender, now) else {
            return false;
        };
        self.settle(&mut state, now);
        let score = state.score.saturating_sub(penalty);
        let banned = score < ban_below;
        state.score = if banned { ban_below } else { score };
        if banned {
            state.banned_until = now.saturating_add(ban_duration);
        }
        self.states.insert(sender, state);
        banned
    }

    /// Raises the score of an already tracked sender after an accepted frame.
    pub(super) fn reward(&mut self, sender: AgentId, now: UnixMillis) {
        let reward = self.config.reward_per_accept;
        if reward == 0 {
            return;
        }
        let Some(mut state) = self.states.get(&sender).copied() else {
            return;
        };
        self.settle(&mut state, now);
        state.score = state
            .score
            .saturating_add(reward)
            .min(self.config.max_score);
        self.states.insert(sender, state);
    }

    /// Takes `tokens` tokens from `sender`'s bucket: `Ok(false)` if it holds fewer,
    /// `Err(Overloaded)` if the sender cannot be tracked.
    pub(super) fn take_tokens(
        &mut self,
        sender: AgentId,
        tokens: u64,
        now: UnixMillis,
    ) -> Result<bool, RejectReason> {
        let mut state = self
            .state_for(sender, now)
            .ok_or(RejectReason::Overloaded)?;
        self.refill(&mut state, now);
        let cost = tokens.saturating_mul(1_000);
        let allowed = state.tokens_milli >= cost;
        if allowed {
            state.tokens_milli -= cost;
        }
        self.states.insert(sender, state);
        Ok(allowed)
    }

    fn refill(&self, state: &mut SenderState, now: UnixMillis) {
        let elapsed_ms = now.0.saturating_sub(state.refilled_at.0);
        state.tokens_milli = state
            .tokens_milli
            .saturating_add(elapsed_ms.saturating_mul(self.rate_milli_per_ms))
            .min(self.burst_milli);
        state.refilled_at = state.refilled_at.max(now);
    }

    fn recovered(&self, state: &SenderState, now: UnixMillis) -> u32 {
        let mut settled = *state;
        self.settle(&mut settled, now);
        settled.score
    }

    /// Applies the recovery earned since `scored_at`, advancing `scored_at` only by the
    /// time turned into whole points, so frequent updates lose no recovery to rounding.
    fn settle(&self, state: &mut SenderState, now: UnixMillis) {
        if now <= state.scored_at {
            return;
        }
        let max = self.config.max_score;
        let rate = u64::from(self.config.recovery_per_second);
        let headroom = u64::from(max.saturating_sub(state.score));
        let regained = (now.0 - state.scored_at.0).saturating_mul(rate) / 1_000;
        if rate == 0 || regained >= headroom {
            state.score = state.score.max(max);
            state.scored_at = now;
        } else {
            // regained < headroom ≤ u32::MAX: the conversion cannot fail.
            state.score += u32::try_from(regained).unwrap_or(0);
            state.scored_at = UnixMillis(state.scored_at.0 + regained * 1_000 / rate);
        }
    }

    /// The sender's state (a fresh one if untracked), or `None` if the table is full
    /// and nothing can be forgotten.
    fn state_for(&mut self, sender: AgentId, now: UnixMillis) -> Option<SenderState> {
        if let Some(state) = self.states.get(&sender) {
            return Some(*state);
        }
        // Forgetting senders indistinguishable from new ones keeps the table at the
        // senders heard from lately rather than every sender ever heard (which, in a
        // large mesh, tends to every node). Sweeping when the table has doubled costs
        // O(1) per new sender, amortised.
        let doubled = self.states.len() >= (2 * self.kept_after_sweep).max(SWEEP_FLOOR);
        let full = self.states.len() >= self.max_senders;
        // A full table that sweeping cannot shrink is swept at most once a second, so a
        // stream of new identities cannot make every frame pay for a full scan.
        if doubled || (full && now.0 >= self.last_sweep.0.saturating_add(1_000)) {
            self.sweep(now);
        }
        if self.states.len() >= self.max_senders {
            return None;
        }
        Some(SenderState {
            score: self.config.max_score,
            scored_at: now,
            banned_until: UnixMillis(0),
            tokens_milli: self.burst_milli,
            refilled_at: now,
        })
    }

    /// Forgets senders that are indistinguishable from new ones.
    fn sweep(&mut self, now: UnixMillis) {
        self.last_sweep = now;
        let mut states = std::mem::take(&mut self.states);
        states.retain(|_, state| {
            let mut refilled = *state;
            self.refill(&mut refilled, now);
            state.banned_until > now
                || self.recovered(state, now) < self.config.max_score
                || refilled.tokens_milli < self.burst_milli
        });
        // Give memory back after a burst of senders has passed.
        if states.capacity() > 4 * states.len().max(SWEEP_FLOOR) {
            states.shrink_to_fit();
        }
        self.kept_after_sweep = states.len();
        self.states = states;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewards_do_not_eat_time_recovery() {
        let config = ValidatorConfig {
            reputation: ReputationConfig {
                reward_per_accept: 1,
                ..ReputationConfig::default()
            },
            ..ValidatorConfig::default()
        };
        let mut book = SenderBook::new(&config);
        let who = AgentId::from_bytes([1; 32]);
        let t0 = UnixMillis(1_000_000);
        for _ in 0..3 {
            book.penalize(who, RejectReason::BadPayload, t0);
        }
        let low = book.score(&who, t0);
        // Ten seconds of accepted frames every 100 ms: 50 points of time plus 100 of rewards.
        for step in 1..=100u64 {
            book.reward(who, UnixMillis(t0.0 + step * 100));
        }
        assert_eq!(book.score(&who, UnixMillis(t0.0 + 10_000)), low + 150);
    }

    #[test]
    fn penalties_recover_with_time_even_when_updated_often() {
        let mut book = SenderBook::new(&ValidatorConfig::default());
        let who = AgentId::from_bytes([1; 32]);
        let t0 = UnixMillis(1_000_000);
        assert!(!book.penalize(who, RejectReason::Replay, t0));
        assert_eq!(book.score(&who, t0), 990);
        // Frequent token takes in between must not eat the recovery.
        for step in 1..=100u64 {
            book.take_tokens(who, 1, UnixMillis(t0.0 + step * 100))
                .unwrap();
        }
        assert_eq!(book.score(&who, UnixMillis(t0.0 + 10_000)), 1_000);
        assert!(!book.penalize(who, RejectReason::Replay, UnixMillis(t0.0 + 10_000)));
        assert_eq!(book.score(&who, UnixMillis(t0.0 + 10_000)), 990);
        // 1 s = 5 points, in 100 ms steps.
        for step in 1..=10u64 {
            let _ = book.score(&who, UnixMillis(t0.0 + 10_000 + step * 100));
        }
        assert_eq!(book.score(&who, UnixMillis(t0.0 + 11_000)), 995);
    }
}
