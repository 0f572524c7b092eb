//! [`ByzantineValidator`]: the gate every inbound frame passes before it touches state.

mod replay;
mod reputation;

use std::time::Duration;

use knhk_types::{AgentId, DEFAULT_MAX_FRAME_BYTES, EnvelopeRef, UnixMillis};

use crate::verifier::{Ed25519Verifier, SignatureVerifier, SignedMessage, VerifierStats};
use replay::ReplayWindow;
use reputation::SenderBook;
pub use reputation::{Penalties, ReputationConfig};

/// Who may send to us at all (the registry, a membership view, …). Kept as a trait so
/// this crate does not depend on the transport.
pub trait SenderDirectory {
    /// True if `id` is a known member.
    fn is_known(&self, id: &AgentId) -> bool;
}

/// Admits every sender (for open meshes where membership is learned by gossip).
#[derive(Clone, Copy, Debug, Default)]
pub struct AllowAllSenders;

impl SenderDirectory for AllowAllSenders {
    fn is_known(&self, _id: &AgentId) -> bool {
        true
    }
}

impl<F: Fn(&AgentId) -> bool> SenderDirectory for F {
    fn is_known(&self, id: &AgentId) -> bool {
        self(id)
    }
}

impl SenderDirectory for std::collections::HashSet<AgentId> {
    fn is_known(&self, id: &AgentId) -> bool {
        self.contains(id)
    }
}

/// Why a frame was refused. Ordered as the pipeline checks them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// Longer than the maximum frame size.
    FrameTooLarge,
    /// The hop is serving a ban.
    Banned,
    /// Not a well-formed envelope of a known version and kind.
    Malformed,
    /// The envelope's sender is not the authenticated hop that delivered it.
    SenderMismatch,
    /// The sender is not in the directory.
    UnknownSender,
    /// Timestamp older than the allowed clock skew.
    StaleTimestamp,
    /// Timestamp further in the future than the allowed clock skew.
    FutureTimestamp,
    /// This (sender, nonce) was already accepted within the window.
    Replay,
    /// The signature does not verify (or the sender key is invalid).
    BadSignature,
    /// The sender exceeded its rate.
    RateLimited,
    /// A bounded table is full (replay window or sender book); refused rather than grow.
    Overloaded,
    /// The frame passed the gate but its content was invalid (reported by the layer
    /// above through [`ByzantineValidator::report`]: forged entries, garbage payloads).
    BadPayload,
}

impl RejectReason {
    /// Every reason, in pipeline order.
    pub const ALL: [RejectReason; 12] = [
        Self::FrameTooLarge,
        Self::Banned,
        Self::Malformed,
        Self::SenderMismatch,
        Self::UnknownSender,
        Self::StaleTimestamp,
        Self::FutureTimestamp,
        Self::Replay,
        Self::BadSignature,
        Self::RateLimited,
        Self::Overloaded,
        Self::BadPayload,
    ];

    /// A stable lowercase name, for logs and metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::FrameTooLarge => "frame_too_large",
            Self::Banned => "banned",
            Self::Malformed => "malformed",
            Self::SenderMismatch => "sender_mismatch",
            Self::UnknownSender => "unknown_sender",
            Self::StaleTimestamp => "stale_timestamp",
            Self::FutureTimestamp => "future_timestamp",
            Self::Replay => "replay",
            Self::BadSignature => "bad_signature",
            Self::RateLimited => "rate_limited",
            Self::Overloaded => "overloaded",
            Self::BadPayload => "bad_payload",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Each further this-many bytes of a frame cost one more rate token.
const TOKEN_BYTES: usize = 64 * 1024;

/// Why the pipeline refused a frame, and whether the hop is to blame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refusal {
    /// Refused and charged to the hop.
    Charged(RejectReason),
    /// Stale only because it waited in our queue: refused, not charged.
    OurDelay,
}

impl Refusal {
    fn reason(self) -> RejectReason {
        match self {
            Self::Charged(reason) => reason,
            Self::OurDelay => RejectReason::StaleTimestamp,
        }
    }
}

impl From<RejectReason> for Refusal {
    fn from(reason: RejectReason) -> Self {
        Self::Charged(reason)
    }
}

/// A refused frame: why, and which hop delivered it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("rejected frame from {hop:?}: {}", reason.as_str())]
pub struct Rejection {
    /// Why.
    pub reason: RejectReason,
    /// The authenticated peer that delivered the frame (charged for it).
    pub hop: AgentId,
    /// True if this rejection's charge banned `hop` (the transport should cut it off).
    pub banned: bool,
}

/// One frame of a burst for [`ByzantineValidator::validate_burst`].
#[derive(Clone, Copy, Debug)]
pub struct ReceivedFrame<'a> {
    /// The authenticated peer that delivered it.
    pub hop: AgentId,
    /// Our clock when it had arrived in full (before it waited in our queue).
    pub received_at: UnixMillis,
    /// The bytes.
    pub frame: &'a [u8],
}

/// Settings of a [`ByzantineValidator`].
#[derive(Clone, Debug)]
pub struct ValidatorConfig {
    /// Frames longer than this are refused before decoding. Default 1 MiB.
    pub max_frame_bytes: usize,
    /// Accepted distance between a sender's timestamp and our clock. Default 30 s.
    pub max_clock_skew: Duration,
    /// Most (sender, nonce) pairs remembered for replay detection. Default 1,000,000.
    pub replay_capacity: usize,
    /// Sustained messages per second accepted from one sender. Default 1,000. A frame
    /// costs one token plus one per 64 KiB, so bytes are limited too (about 64 MB/s of
    /// large frames per sender).
    pub rate_per_second: u32,
    /// Messages one sender may send in a burst above its rate. Default 2,000.
    pub rate_burst: u32,
    /// Reputation, penalties and bans.
    pub reputation: ReputationConfig,
    /// Most senders tracked (reputation, rate). Senders indistinguishable from new ones
    /// are forgotten whenever the table doubles; a full table that cannot shrink refuses
    /// new senders ([`RejectReason::Overloaded`]). Default 100,000.
    pub max_tracked_senders: usize,
    /// Verified signatures remembered. Default 65,536.
    pub signature_cache_capacity: usize,
}

impl Default for ValidatorConfig {
    fn default() -> Self {
        Self {
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            max_clock_skew: Duration::from_secs(30),
            replay_capacity: 1_000_000,
            rate_per_second: 1_000,
            rate_burst: 2_000,
            reputation: ReputationConfig::default(),
            max_tracked_senders: 100_000,
            signature_cache_capacity: 65_536,
        }
    }
}

/// How the senders a [`ByzantineValidator`] tracks stand at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReputationSummary {
    /// Senders serving a ban.
    pub banned: usize,
    /// The lowest reputation among tracked senders (1,000 = untarnished; below the ban
    /// threshold, 500 by default, a sender is banned).
    pub lowest: u32,
}

/// Counters of a [`ByzantineValidator`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ValidatorStats {
    /// Frames accepted.
    pub accepted: u64,
    /// Frames refused, per [`RejectReason`] (index = position in [`RejectReason::ALL`]).
    pub rejected: [u64; RejectReason::ALL.len()],
    /// Bans imposed.
    pub bans: u64,
    /// Signature verifier counters (cache hits, verifications).
    pub verifier: VerifierStats,
    /// Senders currently tracked.
    pub tracked_senders: usize,
    /// (sender, nonce) pairs currently remembered.
    pub replay_entries: usize,
    /// Frames refused as stale that were fresh when they arrived (they waited in our
    /// own queue): counted under `StaleTimestamp` too, but never charged.
    pub stale_after_queueing: u64,
}

impl ValidatorStats {
    /// Frames refused for `reason`.
    pub fn rejected_for(&self, reason: RejectReason) -> u64 {
        self.rejected[reason.index()]
    }

    /// Frames refused for any reason.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().sum()
    }
}

/// The Byzantine gate: one pipeline, cheapest checks first.
///
/// frame size → hop banned? → decode → envelope sender = hop → sender known →
/// timestamp within ±skew → not a replay → signature (cache, then strict ed25519) →
/// per-sender token bucket → accept.
///
/// Every rejection is counted and charged to the *hop* (the transport-authenticated
/// peer); a hop whose reputation falls below the threshold is banned for a while, and
/// its frames are then refused at the second check, before any decoding. Accepted
/// frames slowly restore reputation. Memory is bounded by the replay capacity, the
/// signature cache capacity and the sender cap, whatever arrives.
#[derive(Debug)]
pub struct ByzantineValidator<V = Ed25519Verifier> {
    config: ValidatorConfig,
    verifier: V,
    replay: ReplayWindow,
    senders: SenderBook,
    stats: ValidatorStats,
    /// Latest time seen: time never runs backwards here, so a clock stepping back cannot
    /// revive expired replay buckets (a replay is always remembered or stale).
    high_water: UnixMillis,
}

impl ByzantineValidator {
    /// A validator with `config`, verifying with strict ed25519 behind a cache of
    /// `config.signature_cache_capacity` signatures.
    pub fn new(config: ValidatorConfig) -> Self {
        let verifier = Ed25519Verifier::new(config.signature_cache_capacity);
        Self::with_verifier(config, verifier)
    }
}

impl<V: SignatureVerifier> ByzantineValidator<V> {
    /// A validator with `config` and a given signature verifier (for example a
    /// simulator's cheap stand-in with the same accept/reject behaviour).
    pub fn with_verifier(config: ValidatorConfig, verifier: V) -> Self {
        Self {
            verifier,
            replay: ReplayWindow::new(config.max_clock_skew, config.replay_capacity),
            senders: SenderBook::new(&config),
            stats: ValidatorStats::default(),
            high_water: UnixMillis(0),
            config,
        }
    }

    /// Runs `frame`, delivered by the authenticated peer `hop`, through the pipeline at
    /// wall-clock time `now`.
    ///
    /// Returns the decoded envelope (borrowing the frame) if every check passes, or the
    /// first check that failed. Never panics, whatever the bytes. A `now` earlier than
    /// one already seen is treated as the latest seen (time is monotonic here).
    pub fn validate<'a>(
        &mut self,
        now: UnixMillis,
        hop: AgentId,
        frame: &'a [u8],
        directory: &impl SenderDirectory,
    ) -> Result<EnvelopeRef<'a>, Rejection> {
        self.validate_received(now, now, hop, frame, directory)
    }

    /// As [`ByzantineValidator::validate`], for a frame that finished arriving at
    /// `received_at` and waited in our queue until `now`. A frame that was within the
    /// skew window when it arrived but is stale by now is still refused (the replay
    /// window only remembers what is not stale), but it is **not charged**: the delay
    /// built up in our own queue, not at the sender. Counted in
    /// [`ValidatorStats::stale_after_queueing`].
    pub fn validate_received<'a>(
        &mut self,
        now: UnixMillis,
        received_at: UnixMillis,
        hop: AgentId,
        frame: &'a [u8],
        directory: &impl SenderDirectory,
    ) -> Result<EnvelopeRef<'a>, Rejection> {
        let now = self.advance_clock(now);
        let outcome = self.run_pipeline(now, received_at.min(now), hop, frame, directory);
        self.record(now, hop, outcome)
    }

    /// Counts an outcome, rewards or charges `hop`, and says whether the charge banned it.
    fn record<'a>(
        &mut self,
        now: UnixMillis,
        hop: AgentId,
        outcome: Result<EnvelopeRef<'a>, Refusal>,
    ) -> Result<EnvelopeRef<'a>, Rejection> {
        let mut banned = false;
        match outcome {
            Ok(_) => {
                self.stats.accepted += 1;
                self.senders.reward(hop, now);
            }
            Err(Refusal::Charged(reason)) => banned = self.charge(now, hop, reason),
            Err(Refusal::OurDelay) => {
                self.stats.rejected[RejectReason::StaleTimestamp.index()] += 1;
                self.stats.stale_after_queueing += 1;
            }
        }
        outcome.map_err(|refusal| Rejection {
            reason: refusal.reason(),
            hop,
            banned,
        })
    }

    /// Time never runs backwards here: an earlier `now` counts as the latest seen.
    fn advance_clock(&mut self, now: UnixMillis) -> UnixMillis {
        self.high_water = now.max(self.high_water);
        self.high_water
    }

    /// Counts a rejection and charges it to `hop` (bans are counted too). Returns true
    /// if this charge banned `hop`.
    fn charge(&mut self, now: UnixMillis, hop: AgentId, reason: RejectReason) -> bool {
        self.stats.rejected[reason.index()] += 1;
        let banned = reason != RejectReason::Banned && self.senders.penalize(hop, reason, now);
        if banned {
            self.stats.bans += 1;
        }
        banned
    }

    fn run_pipeline<'a>(
        &mut self,
        now: UnixMillis,
        received_at: UnixMillis,
        hop: AgentId,
        frame: &'a [u8],
        directory: &impl SenderDirectory,
    ) -> Result<EnvelopeRef<'a>, Refusal> {
        let envelope = self.precheck(now, received_at, hop, frame, directory)?;
        self.verifier
            .verify_unique(
                &envelope.sender,
                &envelope.signed_bytes(),
                &envelope.signature,
            )
            .map_err(|_| RejectReason::BadSignature)?;
        self.admit(now, hop, frame.len(), envelope)
    }

    /// Every check before the signature: size, ban, decode, sender, directory,
    /// timestamp, replay.
    fn precheck<'a>(
        &mut self,
        now: UnixMillis,
        received_at: UnixMillis,
        hop: AgentId,
        frame: &'a [u8],
        directory: &impl SenderDirectory,
    ) -> Result<EnvelopeRef<'a>, Refusal> {
        if frame.len() > self.config.max_frame_bytes {
            return Err(RejectReason::FrameTooLarge.into());
        }
        if self.senders.is_banned(&hop, now) {
            return Err(RejectReason::Banned.into());
        }
        let envelope = EnvelopeRef::decode(frame, self.config.max_frame_bytes)
            .map_err(|_| RejectReason::Malformed)?;
        if envelope.sender != hop {
            return Err(RejectReason::SenderMismatch.into());
        }
        if !directory.is_known(&envelope.sender) {
            return Err(RejectReason::UnknownSender.into());
        }
        let skew_ms = u64::try_from(self.config.max_clock_skew.as_millis()).unwrap_or(u64::MAX);
        let sent = envelope.header.timestamp;
        if sent.0 < now.0.saturating_sub(skew_ms) {
            // Fresh when it arrived: our backlog made it stale, not the sender.
            if sent.0 >= received_at.0.saturating_sub(skew_ms) {
                return Err(Refusal::OurDelay);
            }
            return Err(RejectReason::StaleTimestamp.into());
        }
        if sent.0 > now.0.saturating_add(skew_ms) {
            return Err(RejectReason::FutureTimestamp.into());
        }
        self.replay.expire(now);
        if self
            .replay
            .contains(&envelope.sender, envelope.header.nonce, sent)
        {
            return Err(RejectReason::Replay.into());
        }
        Ok(envelope)
    }

    /// Every check after the signature: the sender's rate, then the replay window
    /// remembers the frame.
    fn admit<'a>(
        &mut self,
        now: UnixMillis,
        hop: AgentId,
        frame_len: usize,
        envelope: EnvelopeRef<'a>,
    ) -> Result<EnvelopeRef<'a>, Refusal> {
        // A frame costs one token, plus one per 64 KiB: a sender's bytes are rate
        // limited too, so large frames (whose payloads the layers decode) cannot come
        // at the frame rate.
        let tokens = 1 + (frame_len / TOKEN_BYTES) as u64;
        if !self.senders.take_tokens(hop, tokens, now)? {
            return Err(RejectReason::RateLimited.into());
        }
        if !self.replay.insert(
            envelope.sender,
            envelope.header.nonce,
            envelope.header.timestamp,
        ) {
            return Err(RejectReason::Overloaded.into());
        }
        Ok(envelope)
    }

    /// Runs a burst of frames through the gate at once, so the hop signatures that no
    /// cache answers are checked in one ed25519 batch
    /// ([`SignatureVerifier::verify_hops`]; about 2.5× cheaper per signature at 64).
    ///
    /// Returns one result per frame, in order, exactly as [`ByzantineValidator::
    /// validate_received`] would have for each in turn, with two differences a burst
    /// cannot avoid: a hop banned by a frame of this burst has its *later* frames of the
    /// burst refused as [`RejectReason::Banned`] (as one at a time would), but the
    /// signature checks of those frames were already spent; and hop signatures accept
    /// what batch verification accepts (see [`Ed25519Verifier::verify_batch`]: a hop's
    /// accept cannot make replicas diverge, entry signatures stay strict). A frame whose
    /// (sender, nonce) repeats within the burst is refused as a replay. Never panics.
    pub fn validate_burst<'a>(
        &mut self,
        now: UnixMillis,
        frames: &[ReceivedFrame<'a>],
        directory: &impl SenderDirectory,
    ) -> Vec<Result<EnvelopeRef<'a>, Rejection>> {
        let now = self.advance_clock(now);
        let prechecked: Vec<Result<EnvelopeRef<'a>, Refusal>> = frames
            .iter()
            .map(|frame| {
                let received_at = frame.received_at.min(now);
                self.precheck(now, received_at, frame.hop, frame.frame, directory)
            })
            .collect();
        let signed: Vec<Vec<u8>> = prechecked
            .iter()
            .filter_map(|outcome| outcome.as_ref().ok())
            .map(EnvelopeRef::signed_bytes)
            .collect();
        let items: Vec<SignedMessage<'_>> = prechecked
            .iter()
            .filter_map(|outcome| outcome.as_ref().ok())
            .zip(&signed)
            .map(|(envelope, message)| SignedMessage {
                signer: envelope.sender,
                message,
                signature: envelope.signature,
            })
            .collect();
        let mut signatures = self.verifier.verify_hops(&items).into_iter();
        let mut results = Vec::with_capacity(frames.len());
        for (frame, outcome) in frames.iter().zip(prechecked) {
            // Every prechecked frame takes its verdict, in order, whatever follows.
            let signature = outcome.as_ref().ok().map(|envelope| {
                // A verifier answers every item; should one fall short, the rest are
                // checked one by one rather than blamed on their senders.
                signatures.next().unwrap_or_else(|| {
                    self.verifier.verify_unique(
                        &envelope.sender,
                        &envelope.signed_bytes(),
                        &envelope.signature,
                    )
                })
            });
            let outcome = match (outcome, signature) {
                // One at a time, size is checked before the ban, so it wins here too.
                (Err(Refusal::Charged(RejectReason::FrameTooLarge)), _) => {
                    Err(RejectReason::FrameTooLarge.into())
                }
                // Banned by an earlier frame of this burst: refused as one at a time
                // would have been, before anything else is judged (or charged).
                _ if self.senders.is_banned(&frame.hop, now) => Err(RejectReason::Banned.into()),
                (Ok(envelope), Some(signature)) => {
                    self.settle(now, frame.hop, frame.frame.len(), envelope, signature)
                }
                (outcome, _) => outcome,
            };
            results.push(self.record(now, frame.hop, outcome));
        }
        results
    }

    /// The in-order half of a burst for one prechecked frame: the same (sender, nonce)
    /// accepted earlier in the burst is a replay; then the signature's verdict, then
    /// [`Self::admit`].
    fn settle<'a>(
        &mut self,
        now: UnixMillis,
        hop: AgentId,
        frame_len: usize,
        envelope: EnvelopeRef<'a>,
        signature: Result<(), crate::VerifyError>,
    ) -> Result<EnvelopeRef<'a>, Refusal> {
        if self.replay.contains(
            &envelope.sender,
            envelope.header.nonce,
            envelope.header.timestamp,
        ) {
            return Err(RejectReason::Replay.into());
        }
        signature.map_err(|_| RejectReason::BadSignature)?;
        self.admit(now, hop, frame_len, envelope)
    }

    /// Charges `hop` for a frame that passed the gate but whose content the layer above
    /// found invalid (`reason` is usually [`RejectReason::BadPayload`]). Counted like a
    /// rejection; may ban the hop.
    pub fn report(&mut self, now: UnixMillis, hop: AgentId, reason: RejectReason) {
        let now = self.advance_clock(now);
        self.charge(now, hop, reason);
    }

    /// Bans imposed so far (cheap: read it before and after an input to see whether the
    /// input banned someone).
    pub fn bans(&self) -> u64 {
        self.stats.bans
    }

    /// The settings this gate runs with (the node's one owner of `max_frame_bytes`).
    pub fn config(&self) -> &ValidatorConfig {
        &self.config
    }

    /// Current reputation of `sender` (the configured maximum for an untracked sender).
    pub fn reputation(&self, sender: &AgentId, now: UnixMillis) -> u32 {
        self.senders.score(sender, now)
    }

    /// True if `sender` is serving a ban at `now`.
    pub fn is_banned(&self, sender: &AgentId, now: UnixMillis) -> bool {
        self.senders.is_banned(sender, now)
    }

    /// How the tracked senders stand at `now`: how many are banned, and the lowest
    /// reputation among them (1,000 when none is tracked). Walks the sender table, which
    /// holds only recently heard or penalised senders; meant for once-a-round reporting,
    /// not per frame.
    pub fn reputation_summary(&self, now: UnixMillis) -> ReputationSummary {
        let (banned, lowest) = self.senders.summary(now);
        ReputationSummary { banned, lowest }
    }

    /// Counters so far.
    pub fn stats(&self) -> ValidatorStats {
        ValidatorStats {
            verifier: self.verifier.stats(),
            tracked_senders: self.senders.len(),
            replay_entries: self.replay.len(),
            ..self.stats.clone()
        }
    }

    /// The signature verifier (read-only: counters, cache size).
    pub fn verifier(&self) -> &V {
        &self.verifier
    }

    /// The signature verifier, shared with other checks of this node (for example CRDT
    /// entry signatures), so each unique signature is verified once.
    pub fn verifier_mut(&mut self) -> &mut V {
        &mut self.verifier
    }
}
