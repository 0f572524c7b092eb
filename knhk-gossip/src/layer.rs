//! [`GossipLayer`]: the sans-IO push-pull gossip layer of one node, under the node
//! endpoint.

mod anti_entropy;
mod convergence;
mod news;
mod pulls;

use std::collections::HashMap;
use std::time::Duration;

use knhk_crdt::{
    CrdtError, Delta, DiffStep, Hash, MerkleDiff, SignedEntry, VersionedState, WriterRange,
};
use knhk_endpoint::{Context, Layer};
use knhk_security::{RejectReason, SignatureVerifier};
use knhk_types::{AgentId, MessageKind, VersionPage};
use rand::Rng;

use crate::config::GossipConfig;
use crate::error::GossipError;
use crate::message::GossipMessage;
use anti_entropy::{DiffSession, DiffSessions};
use convergence::Convergence;
use news::RecentNews;
use pulls::{PendingPull, PendingPulls};

/// Something the application may want to know, emitted as the layer's event (see
/// [`knhk_endpoint::Event::downcast`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GossipEvent {
    /// The value of `key` changed (a local write or a merge).
    Updated {
        /// The key.
        key: String,
    },
    /// Every peer sampled for `convergence_rounds` rounds reported our root. Emitted
    /// once per root.
    Converged {
        /// The round in which convergence was detected.
        round: u64,
        /// The root everyone reported.
        root: Hash,
    },
}

/// Counters of a [`GossipLayer`] (frames, bytes and drops are the node's:
/// [`knhk_endpoint::EndpointStats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GossipStats {
    /// Rounds run.
    pub rounds: u64,
    /// Gossip messages sent (frames the layer handed to the endpoint).
    pub messages_sent: u64,
    /// Gossip messages received (validated frames routed to this layer).
    pub messages_received: u64,
    /// Routed frames whose content was invalid (charged to the hop).
    pub bad_payloads: u64,
    /// Deltas merged that changed our state.
    pub deltas_merged: u64,
    /// Times news was forwarded at once.
    pub news_forwarded: u64,
    /// Merkle anti-entropy sessions started.
    pub diffs_started: u64,
    /// Merkle anti-entropy sessions finished.
    pub diffs_completed: u64,
    /// Anti-entropy entries ignored because they came outside a diff session.
    pub entries_ignored: u64,
    /// Pulls answered without their catch-up delta because the peer had one recently.
    pub catch_up_deferred: u64,
    /// Deltas or entries refused because they named a writer outside the peer view.
    pub foreign_writers_refused: u64,
    /// Anti-entropy questions left unanswered because the peer's reply budget for the
    /// round was spent.
    pub requests_over_budget: u64,
    /// Deltas or entries dropped because their peer's signature-check budget for the
    /// round was spent.
    pub verifications_deferred: u64,
    /// Pulls or answers ignored because their version vector named more writers than
    /// `max_version_writers`.
    pub versions_too_large: u64,
    /// Version pages sent that held only part of our vector (it has more writers than
    /// `version_page_writers`, so it goes a page at a time).
    pub version_pages_partial: u64,
    /// Entries set aside because they would take their writer past its quota
    /// (`StateConfig::max_keys_per_writer`, `max_bytes_per_writer`).
    pub writer_quota_deferred: u64,
}

/// A snapshot of where the layer stands. `{:?}` and `{}` show the root in hex.
#[derive(Clone, PartialEq, Eq)]
pub struct GossipStatus {
    /// The current round.
    pub round: u64,
    /// Our Merkle root.
    pub root: Hash,
    /// True while every sampled peer has reported this root for `convergence_rounds`
    /// rounds.
    pub converged: bool,
    /// Keys held (tombstones included).
    pub keys: usize,
    /// Writers in our version vector.
    pub writers: usize,
    /// Counters.
    pub stats: GossipStats,
}

impl GossipStatus {
    /// The Merkle root as 64 lowercase hex digits (two nodes with the same root hold
    /// the same state).
    pub fn root_hex(&self) -> String {
        data_encoding::HEXLOWER.encode(&self.root)
    }
}

impl std::fmt::Debug for GossipStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GossipStatus")
            .field("round", &self.round)
            .field("root", &self.root_hex())
            .field("converged", &self.converged)
            .field("keys", &self.keys)
            .field("writers", &self.writers)
            .field("stats", &self.stats)
            .finish()
    }
}

/// One line: `round 12, root 03e14da60105…, converged, 5 keys from 2 writers`.
impl std::fmt::Display for GossipStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let root = self.root_hex();
        write!(
            f,
            "round {}, root {}…, {}, {} keys from {} writers",
            self.round,
            &root[..12],
            if self.converged {
                "converged"
            } else {
                "not converged"
            },
            self.keys,
            self.writers
        )
    }
}

/// The kinds gossip owns in its scope.
const KINDS: &[MessageKind] = &[
    MessageKind::GossipPush,
    MessageKind::GossipPull,
    MessageKind::GossipPullReply,
];

/// Push-pull gossip of one [`VersionedState`], as a layer of a node endpoint.
///
/// A round (every `interval`): sample `fanout` peers from the node's peer view and send
/// each a `Pull` with our Merkle root, adding our version vector unless every peer that
/// answered last round reported our root (so a settled mesh exchanges roots only, and
/// the layer keeps no state per peer). The peer answers with what we lack and, if roots
/// differ, its own version, so we push back what it lacks. A pull with no version and
/// another root is answered with the news the peer forwarded in the last two rounds
/// (what a settled puller most likely lacks); if the answer's version still shows news,
/// one follow-up pull carrying our version fetches the rest at once. A merge that
/// brings news is forwarded to `fanout` peers at once (when `forward_news` is on); a
/// merge that brings nothing is not, which suppresses duplicates. When version vectors
/// agree but roots do not (or every `anti_entropy_every` rounds while an answering
/// peer's root differs), a Merkle diff finds the differing keys.
///
/// Several instances run on one node in different scopes (a local group, a region's
/// leaders): each owns its state, and the endpoint routes by scope.
#[derive(Debug)]
pub struct GossipLayer {
    config: GossipConfig,
    state: VersionedState,
    round: u64,
    round_token: u64,
    diffs: DiffSessions,
    pulls: PendingPulls,
    convergence: Convergence,
    news: RecentNews,
    stats: GossipStats,
    sample: Vec<AgentId>,
    /// When each peer last got a catch-up delta from us (one per
    /// [`CATCH_UP_EVERY_ROUNDS`]): a cheap pull must not buy an expensive reply at will.
    catch_up_served: HashMap<AgentId, u64>,
    /// Bytes of answers to anti-entropy requests sent to each peer this round (cleared
    /// every round): a cheap question buys at most [`REPLY_BUDGET_ROUNDS`] ×
    /// `max_delta_bytes` of answers a round.
    reply_bytes: HashMap<AgentId, usize>,
    /// Signature checks each peer's data has cost us in this second's rounds (cleared
    /// once a second of rounds has passed).
    verifications: HashMap<AgentId, usize>,
    /// Where the next page of our version vector starts, for pulls and for answers
    /// to version-less pulls (`None`: the first writer). With no more writers than
    /// [`GossipConfig::version_page_writers`], every page is the whole vector.
    pull_cursor: Option<AgentId>,
    reply_cursor: Option<AgentId>,
}

/// A peer's anti-entropy questions are answered with at most this many times
/// `max_delta_bytes` a round (one diff's answers and one entries reply fit).
const REPLY_BUDGET_ROUNDS: usize = 2;

/// A pull whose version lacks more than this many of our versions asks for a catch-up
/// delta (up to `max_delta_bytes`, the costly reply).
const CATCH_UP_VERSIONS: u64 = 256;
/// Rounds between two catch-up deltas to one peer.
const CATCH_UP_EVERY_ROUNDS: u64 = 10;

impl GossipLayer {
    /// A layer with an empty state.
    pub fn new(config: GossipConfig) -> Self {
        let state = VersionedState::new(config.state.clone());
        Self::with_state(config, state)
    }

    /// A layer that starts from `state` (one restored from disk, say:
    /// [`VersionedState::restore`]); peers then send only what it lacks. The state's
    /// own limits stay as they were built.
    pub fn with_state(config: GossipConfig, state: VersionedState) -> Self {
        Self {
            state,
            config,
            round: 0,
            round_token: 0,
            diffs: DiffSessions::default(),
            pulls: PendingPulls::default(),
            convergence: Convergence::default(),
            news: RecentNews::default(),
            stats: GossipStats::default(),
            sample: Vec::new(),
            catch_up_served: HashMap::new(),
            reply_bytes: HashMap::new(),
            verifications: HashMap::new(),
            pull_cursor: None,
            reply_cursor: None,
        }
    }

    /// Writers per page of our version vector: what the config asks, within what a
    /// peer accepts.
    fn page_writers(&self) -> usize {
        self.config
            .version_page_writers
            .min(self.config.max_version_writers)
            .max(1)
    }

    /// The next page of our version vector from `cursor`, moving the cursor on (back to
    /// the first writer after the last page).
    fn next_page(&mut self, cursor: Option<AgentId>) -> (VersionPage, Option<AgentId>) {
        let page = self
            .state
            .version()
            .page(cursor.as_ref(), None, self.page_writers());
        let next = page.end().copied();
        (self.counted(page), next)
    }

    /// Our version over the range of `theirs` (as many writers of it as fit a page).
    fn page_like(&mut self, theirs: &VersionPage) -> VersionPage {
        let page = self
            .state
            .version()
            .page(theirs.start(), theirs.end(), self.page_writers());
        self.counted(page)
    }

    fn counted(&mut self, page: VersionPage) -> VersionPage {
        if !page.is_whole() {
            self.stats.version_pages_partial += 1;
        }
        page
    }

    /// The current round (0 before the first).
    pub fn round(&self) -> u64 {
        self.round
    }

    /// The settings.
    pub fn config(&self) -> &GossipConfig {
        &self.config
    }

    /// Writes `value` under `key` locally, signed by this node, and (when
    /// `forward_news` is on, the default) sends it to `fanout` peers at once; with
    /// forwarding off, the rounds spread it (textbook push-pull). Returns the entry as
    /// signed (its counter and Lamport time included).
    ///
    /// Errors: [`GossipError::ReadOnly`] while the node's view says it reaches no quorum
    /// of its members (a minority partition); [`GossipError::State`] for the state's
    /// size, capacity and quota limits. Nothing is written or sent then.
    pub fn put<V: SignatureVerifier>(
        &mut self,
        ctx: &mut Context<'_, V>,
        key: &str,
        value: Vec<u8>,
    ) -> Result<SignedEntry, GossipError> {
        writable(ctx)?;
        self.state.observe_time(ctx.now());
        let entry = self.state.put(&ctx.signer(), key, value)?;
        self.announce(ctx, entry.clone());
        Ok(entry)
    }

    /// Deletes `key` locally (a signed tombstone) and sends it to `fanout` peers at once.
    /// Returns the tombstone as signed.
    ///
    /// Errors: as [`GossipLayer::put`].
    pub fn delete<V: SignatureVerifier>(
        &mut self,
        ctx: &mut Context<'_, V>,
        key: &str,
    ) -> Result<SignedEntry, GossipError> {
        writable(ctx)?;
        self.state.observe_time(ctx.now());
        let entry = self.state.delete(&ctx.signer(), key)?;
        self.announce(ctx, entry.clone());
        Ok(entry)
    }

    /// Limits the counters this node's writes use (see
    /// [`VersionedState::lease_counters`]); a write beyond the lease fails with
    /// [`knhk_crdt::CrdtError::CounterLeaseExhausted`] until a larger lease is given.
    pub fn lease_counters(&mut self, floor: u64, ceiling: u64) {
        self.state.lease_counters(floor, ceiling);
    }

    /// The current value of `key`.
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.state.get(key)
    }

    /// The replicated state (read-only).
    pub fn state(&self) -> &VersionedState {
        &self.state
    }

    /// Our Merkle root (recomputed lazily after changes).
    pub fn merkle_root(&mut self) -> Hash {
        self.state.merkle_root()
    }

    /// Where the layer stands.
    pub fn status(&mut self) -> GossipStatus {
        let root = self.state.merkle_root();
        GossipStatus {
            round: self.round,
            root,
            converged: self.convergence.converged_on(root),
            keys: self.state.len(),
            writers: self.state.version().len(),
            stats: self.stats,
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> GossipStats {
        self.stats
    }

    /// The round interval in whole milliseconds, at least 1.
    fn interval_ms(&self) -> u64 {
        u64::try_from(self.config.interval.as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    fn schedule_round<V: SignatureVerifier>(&mut self, ctx: &mut Context<'_, V>, after: Duration) {
        self.round_token += 1;
        ctx.set_timer(after, self.round_token);
    }

    fn run_round<V: SignatureVerifier>(&mut self, ctx: &mut Context<'_, V>) {
        let root = self.state.merkle_root();
        if self
            .convergence
            .close_round(self.round, root, self.config.convergence_rounds)
        {
            ctx.emit(GossipEvent::Converged {
                round: self.round,
                root,
            });
        }
        self.round += 1;
        self.stats.rounds += 1;
        self.reply_bytes.clear();
        let rounds_per_second = (1_000 / self.interval_ms()).max(1);
        if self.round.is_multiple_of(rounds_per_second) {
            self.verifications.clear();
        }
        let (round, timeout) = (self.round, self.config.diff_timeout_rounds);
        self.diffs.expire(round, timeout);
        self.news.expire(round);
        self.pulls.expire(round, timeout);

        // Settled: every peer that answered last round reported our current root. Then
        // a pull is a root and nothing more.
        let settled = self.convergence.settled();
        let mut sample = std::mem::take(&mut self.sample);
        sample.clear();
        let fanout = self.config.fanout;
        ctx.sample_peers(fanout, &mut sample);
        for &peer in &sample {
            self.pull(ctx, peer, root, !settled);
        }
        self.sample = sample;
        if self.config.anti_entropy_every > 0
            && round.is_multiple_of(self.config.anti_entropy_every)
            && let Some((peer, their_root)) = self.convergence.differing_peer(root)
        {
            self.start_diff(ctx, peer, their_root);
        }
        self.convergence.clear_replies();
    }

    fn pull<V: SignatureVerifier>(
        &mut self,
        ctx: &mut Context<'_, V>,
        peer: AgentId,
        root: Hash,
        with_version: bool,
    ) {
        let version = with_version.then(|| {
            let (page, next) = self.next_page(self.pull_cursor);
            self.pull_cursor = next;
            page
        });
        self.pull_with(ctx, peer, root, version);
    }

    /// Sends a pull carrying `version` (one page of ours, or none).
    fn pull_with<V: SignatureVerifier>(
        &mut self,
        ctx: &mut Context<'_, V>,
        peer: AgentId,
        root: Hash,
        version: Option<VersionPage>,
    ) {
        self.pulls.sent(
            peer,
            PendingPull {
                round: self.round,
                with_version: version.is_some(),
            },
        );
        self.send(ctx, peer, &GossipMessage::Pull { root, version });
    }

    fn dispatch<V: SignatureVerifier>(
        &mut self,
        ctx: &mut Context<'_, V>,
        from: AgentId,
        message: GossipMessage,
    ) {
        match message {
            GossipMessage::Pull {
                version: Some(version),
                ..
            }
            | GossipMessage::PullReply {
                version: Some(version),
                ..
            } if version.len() > self.config.max_version_writers => {
                // More writers than we ever keep: not worth the work (frames cap this
                // near 31k anyway; writers are members).
                self.stats.versions_too_large += 1;
            }
            GossipMessage::Pull { root, version } => self.on_pull(ctx, from, root, version),
            GossipMessage::PullReply {
                root,
                delta,
                version,
            } => self.on_pull_reply(ctx, from, root, delta, version),
            GossipMessage::Push { delta } => {
                self.absorb(ctx, from, &delta);
            }
            // Honest questions list each node, bucket or key once, in ascending order
            // (they come from sorted sets): anything else is provably not an honest
            // question (a repeat would buy the same answer twice), and is charged.
            GossipMessage::DiffAsk { nodes, buckets, .. }
                if !strictly_ascending(&nodes)
                    || !strictly_ascending(&buckets)
                    || (nodes.is_empty() && buckets.is_empty()) =>
            {
                self.bad_payload(ctx, from);
            }
            GossipMessage::EntriesWanted { keys } if !strictly_ascending(&keys) => {
                self.bad_payload(ctx, from);
            }
            GossipMessage::DiffAsk {
                session,
                nodes,
                buckets,
            } => self.on_diff_ask(ctx, from, session, nodes, buckets),
            GossipMessage::DiffAnswer {
                session,
                nodes,
                buckets,
            } => self.on_diff_answer(ctx, from, session, nodes, buckets),
            GossipMessage::EntriesWanted { keys } => {
                // Only a peer whose diff question we answered may ask, once.
                if keys.len() > self.config.max_diff_keys || !self.diffs.take_wanted(&from) {
                    return;
                }
                let Some(room) = self.reply_room(from) else {
                    return;
                };
                let entries = self.bounded_entries(&keys, room);
                let sent = self.send(ctx, from, &GossipMessage::Entries { entries });
                self.spend(from, sent);
            }
            GossipMessage::Entries { entries } => self.on_entries(ctx, from, &entries),
        }
    }

    fn on_pull<V: SignatureVerifier>(
        &mut self,
        ctx: &mut Context<'_, V>,
        from: AgentId,
        their_root: Hash,
        version: Option<VersionPage>,
    ) {
        let root = self.state.merkle_root();
        // Every answer's delta pays from the peer's reply budget, not only catch-ups:
        // many pulls just under the catch-up line buy no more.
        let room = self.reply_room(from);
        let delta = match (&version, room) {
            (Some(theirs), Some(room)) => {
                let catch_up = self.is_catch_up(theirs);
                if catch_up && self.caught_up_recently(from) {
                    // A catch-up delta to this peer was sent recently: answer with our
                    // version only; it asks again later.
                    self.stats.catch_up_deferred += 1;
                    None
                } else {
                    let delta = self.state.delta_for_page(theirs, room);
                    let encoded =
                        (!delta.is_empty()).then(|| delta.encode(self.config.compress_above));
                    if let Some(bytes) = &encoded {
                        self.spend(from, bytes.len());
                        if catch_up {
                            self.record_catch_up(from);
                        }
                    }
                    encoded
                }
            }
            // A settled puller with another root most likely lacks our latest news:
            // send it now rather than after a follow-up pull (a duplicate merges to
            // nothing), if it fits the peer's budget.
            (None, Some(room)) if their_root != root => {
                let news = self
                    .news
                    .get()
                    .filter(|news| news.len() <= room)
                    .map(<[u8]>::to_vec);
                self.spend(from, news.as_ref().map_or(0, Vec::len));
                news
            }
            _ => None,
        };
        // Our version over the range they sent (or our next page when they sent none),
        // so it fits a frame whatever our number of writers.
        let reply_version = (their_root != root).then(|| match &version {
            Some(theirs) => self.page_like(theirs),
            None => {
                let (page, next) = self.next_page(self.reply_cursor);
                self.reply_cursor = next;
                page
            }
        });
        self.send(
            ctx,
            from,
            &GossipMessage::PullReply {
                root,
                delta,
                version: reply_version,
            },
        );
    }

    /// True if `theirs` lacks more than [`CATCH_UP_VERSIONS`] of our versions within
    /// its range: the answer would be a catch-up delta (the costly reply). O(our
    /// writers in the range).
    fn is_catch_up(&self, theirs: &VersionPage) -> bool {
        let missing: u64 = self
            .state
            .version()
            .iter_within(theirs.start(), theirs.end())
            .map(|(writer, ours)| ours.saturating_sub(theirs.get(writer)))
            // Counters are the writers' to choose: saturate, never wrap.
            .fold(0, u64::saturating_add);
        missing > CATCH_UP_VERSIONS
    }

    /// True if `peer` had a catch-up delta within the last [`CATCH_UP_EVERY_ROUNDS`].
    fn caught_up_recently(&self, peer: AgentId) -> bool {
        self.catch_up_served
            .get(&peer)
            .is_some_and(|last| self.round.saturating_sub(*last) < CATCH_UP_EVERY_ROUNDS)
    }

    /// Remembers that `peer` got a catch-up delta this round (forgetting old ones).
    fn record_catch_up(&mut self, peer: AgentId) {
        let round = self.round;
        self.catch_up_served
            .retain(|_, last| round.saturating_sub(*last) < CATCH_UP_EVERY_ROUNDS);
        self.catch_up_served.insert(peer, round);
    }

    fn on_pull_reply<V: SignatureVerifier>(
        &mut self,
        ctx: &mut Context<'_, V>,
        from: AgentId,
        their_root: Hash,
        delta: Option<Vec<u8>>,
        version: Option<VersionPage>,
    ) {
        // Only answers to pulls we sent count (and only once): an unsolicited reply could
        // fake or block convergence and trigger work.
        let Some(pending) = self.pulls.answered(&from) else {
            return;
        };
        self.convergence
            .record(from, their_root, 4 * self.config.fanout.max(1));
        let brought = match &delta {
            Some(bytes) => self.absorb(ctx, from, bytes),
            None => false,
        };
        let Some(theirs) = version else { return };
        let back = self
            .state
            .delta_for_page(&theirs, self.config.max_delta_bytes);
        if !back.is_empty() {
            let delta = back.encode(self.config.compress_above);
            self.send(ctx, from, &GossipMessage::Push { delta });
        }
        let root = self.state.merkle_root();
        if !pending.with_version && !self.state.version().dominates(theirs.pairs()) {
            // They have news and could not send it: our pull carried no version. Ask
            // once more, with our version over the range where they showed it (the
            // follow-up carries a version, so this cannot loop).
            let page = self.page_like(&theirs);
            self.pull_with(ctx, from, root, Some(page));
        } else if back.is_empty()
            && !brought
            && theirs.is_whole()
            && *self.state.version() == *theirs.pairs()
            && root != their_root
        {
            // Same versions, different data: only a Merkle diff can tell what differs.
            self.start_diff(ctx, from, their_root);
        }
    }

    /// Merges an encoded delta from `from`; forwards it at once if it was news (and
    /// forwarding is on). Returns true if it changed our state.
    fn absorb<V: SignatureVerifier>(
        &mut self,
        ctx: &mut Context<'_, V>,
        from: AgentId,
        bytes: &[u8],
    ) -> bool {
        let delta = match Delta::decode(bytes, ctx.max_frame_bytes()) {
            Ok(delta) => delta,
            Err(error) => {
                self.refused(ctx, from, &error);
                return false;
            }
        };
        let writers = delta.ranges.iter().map(|range| &range.writer);
        if !self.writers_admitted(ctx, writers.chain(delta.entries.iter().map(|e| &e.writer))) {
            return false;
        }
        if !self.may_verify(from) {
            return false;
        }
        let checks_before = curve_checks(ctx);
        let merged = self.state.merge(&delta, ctx.verifier());
        self.spend_verifications(from, curve_checks(ctx).saturating_sub(checks_before));
        let report = match merged {
            Ok(report) => report,
            Err(error) => {
                self.refused(ctx, from, &error);
                return false;
            }
        };
        self.stats.writer_quota_deferred += report.over_quota_entries as u64;
        if report.updated_keys.is_empty() {
            return false;
        }
        self.stats.deltas_merged += 1;
        for key in report.updated_keys {
            ctx.emit(GossipEvent::Updated { key });
        }
        if self.config.forward_news && bytes.len() <= self.config.forward_max_bytes {
            self.forward(ctx, Some(from), bytes);
        }
        true
    }

    /// Sends an encoded delta to `fanout` peers other than `except`.
    fn forward<V: SignatureVerifier>(
        &mut self,
        ctx: &mut Context<'_, V>,
        except: Option<AgentId>,
        delta: &[u8],
    ) {
        let mut sample = std::mem::take(&mut self.sample);
        sample.clear();
        let fanout = self.config.fanout;
        ctx.sample_peers(fanout + 1, &mut sample);
        sample.retain(|peer| Some(*peer) != except);
        sample.truncate(fanout);
        let push = GossipMessage::Push {
            delta: delta.to_vec(),
        };
        for &peer in &sample {
            self.send(ctx, peer, &push);
        }
        self.stats.news_forwarded += 1;
        self.sample = sample;
        self.news.forwarded(self.round, delta);
    }

    /// A local write: tell `fanout` peers at once.
    fn announce<V: SignatureVerifier>(&mut self, ctx: &mut Context<'_, V>, entry: SignedEntry) {
        ctx.emit(GossipEvent::Updated {
            key: entry.key.clone(),
        });
        let delta = Delta {
            ranges: vec![WriterRange {
                writer: entry.writer,
                after: entry.counter - 1,
                through: entry.counter,
            }],
            entries: vec![entry],
        };
        // Textbook push-pull (forwarding off) spreads a write by the rounds alone.
        if self.config.forward_news {
            let bytes = delta.encode(self.config.compress_above);
            self.forward(ctx, None, &bytes);
        }
    }

    fn start_diff<V: SignatureVerifier>(
        &mut self,
        ctx: &mut Context<'_, V>,
        peer: AgentId,
        their_root: Hash,
    ) {
        if !self.diffs.may_start(&peer, self.config.max_diff_sessions) {
            return;
        }
        let (diff, step) = MerkleDiff::start(&mut self.state, their_root);
        self.stats.diffs_started += 1;
        let session = DiffSession {
            diff,
            id: self.diffs.next_id(),
            started_round: self.round,
        };
        self.continue_diff(ctx, peer, session, step);
    }

    fn continue_diff<V: SignatureVerifier>(
        &mut self,
        ctx: &mut Context<'_, V>,
        peer: AgentId,
        session: DiffSession,
        step: DiffStep,
    ) {
        let id = session.id;
        match step {
            DiffStep::AskNodes(nodes) => {
                self.diffs.wait(peer, session);
                let ask = GossipMessage::DiffAsk {
                    session: id,
                    nodes,
                    buckets: Vec::new(),
                };
                self.send(ctx, peer, &ask);
            }
            DiffStep::AskBuckets(buckets) => {
                self.diffs.wait(peer, session);
                let ask = GossipMessage::DiffAsk {
                    session: id,
                    nodes: Vec::new(),
                    buckets,
                };
                self.send(ctx, peer, &ask);
            }
            DiffStep::Done(mut keys) => {
                self.stats.diffs_completed += 1;
                if keys.is_empty() {
                    return;
                }
                keys.truncate(self.config.max_diff_keys);
                let entries = self.bounded_entries(&keys, self.config.max_delta_bytes);
                if !entries.is_empty() {
                    self.send(ctx, peer, &GossipMessage::Entries { entries });
                }
                self.diffs.asked_for_entries(peer, self.round);
                self.send(ctx, peer, &GossipMessage::EntriesWanted { keys });
            }
        }
    }

    fn on_diff_ask<V: SignatureVerifier>(
        &mut self,
        ctx: &mut Context<'_, V>,
        from: AgentId,
        session: u64,
        nodes: Vec<u32>,
        buckets: Vec<u32>,
    ) {
        // A tree deeper than ours can legitimately ask for more nodes than our limit;
        // that is a configuration mismatch, not misbehaviour: decline without charge.
        let limit = self.config.max_diff_keys;
        if nodes.len() > limit || buckets.len() > limit {
            return;
        }
        let Some(room) = self.reply_room(from) else {
            return;
        };
        let nodes = self.state.merkle_nodes(&nodes);
        // A question about many buckets of a large state gets the first chunk that fits.
        let buckets = self.state.bucket_digests_bounded(&buckets, room);
        self.diffs.answered_question(from, self.round);
        let answer = GossipMessage::DiffAnswer {
            session,
            nodes,
            buckets,
        };
        let sent = self.send(ctx, from, &answer);
        self.spend(from, sent);
    }

    fn on_diff_answer<V: SignatureVerifier>(
        &mut self,
        ctx: &mut Context<'_, V>,
        from: AgentId,
        session: u64,
        nodes: Vec<(u32, Hash)>,
        buckets: Vec<knhk_crdt::BucketDigests>,
    ) {
        // A late answer to an expired or replaced session is ignored, not charged.
        let Some(mut current) = self.diffs.answered(&from, session) else {
            return;
        };
        let step = if buckets.is_empty() {
            current.diff.on_nodes(&mut self.state, &nodes)
        } else {
            current.diff.on_buckets(&self.state, &buckets)
        };
        match step {
            Ok(step) => self.continue_diff(ctx, from, current, step),
            // The answer names nodes or keys that do not fit the question: provably bad.
            Err(_) => self.bad_payload(ctx, from),
        }
    }

    fn on_entries<V: SignatureVerifier>(
        &mut self,
        ctx: &mut Context<'_, V>,
        from: AgentId,
        entries: &[SignedEntry],
    ) {
        // Anti-entropy entries travel only inside a diff session (and once): unsolicited
        // ones are ignored, uncharged (a late answer is not misbehaviour).
        if entries.len() > self.config.max_diff_keys || !self.diffs.take_entries(&from) {
            self.stats.entries_ignored += 1;
            return;
        }
        if !self.writers_admitted(ctx, entries.iter().map(|entry| &entry.writer)) {
            return;
        }
        if !self.may_verify(from) {
            return;
        }
        let checks_before = curve_checks(ctx);
        let merged = self.state.merge_entries(entries, ctx.verifier());
        self.spend_verifications(from, curve_checks(ctx).saturating_sub(checks_before));
        match merged {
            Ok(report) => {
                self.stats.writer_quota_deferred += report.over_quota_entries as u64;
                for key in report.updated_keys {
                    ctx.emit(GossipEvent::Updated { key });
                }
            }
            Err(error) => self.refused(ctx, from, &error),
        }
    }

    /// True if every writer is admitted: with [`GossipConfig::members_only_writers`],
    /// only this node and the peers in its view may write, so nobody can inflate our
    /// version vector with made-up writers until our pulls no longer fit a frame.
    /// Otherwise refused and counted, not charged (views may differ between nodes).
    fn writers_admitted<'a, V: SignatureVerifier>(
        &mut self,
        ctx: &Context<'_, V>,
        mut writers: impl Iterator<Item = &'a AgentId>,
    ) -> bool {
        if !self.config.members_only_writers {
            return true;
        }
        let me = ctx.id();
        let admitted = writers.all(|writer| *writer == me || ctx.peers().contains(writer));
        if !admitted {
            self.stats.foreign_writers_refused += 1;
        }
        admitted
    }

    /// True unless `peer`'s data has already cost the signature checks it may this
    /// second ([`GossipConfig::max_verifications_per_peer_second`]); then the data is
    /// dropped (counted, not charged: gossip brings it again). The checks a merge
    /// really made are charged after it ([`GossipLayer::spend_verifications`]), so a
    /// peer overshoots by one message at most (at most `max_delta_bytes` of entries),
    /// and the common case costs no extra work per entry.
    fn may_verify(&mut self, peer: AgentId) -> bool {
        let used = self.verifications.get(&peer).copied().unwrap_or(0);
        if used >= self.config.max_verifications_per_peer_second {
            self.stats.verifications_deferred += 1;
            return false;
        }
        true
    }

    fn spend_verifications(&mut self, peer: AgentId, checks: u64) {
        if checks > 0 {
            let used = self.verifications.entry(peer).or_default();
            *used = used.saturating_add(usize::try_from(checks).unwrap_or(usize::MAX));
        }
    }

    /// A merge refused `from`'s data. The sender is charged only when the data proves
    /// misbehaviour; refusals caused by our own limits or configuration are not the
    /// sender's fault, and charging them would get honest neighbours banned.
    fn refused<V: SignatureVerifier>(
        &mut self,
        ctx: &mut Context<'_, V>,
        from: AgentId,
        error: &CrdtError,
    ) {
        if error.proves_misbehaviour() {
            self.bad_payload(ctx, from);
        }
    }

    /// Bytes `peer`'s questions may still be answered with this round (at most
    /// `max_delta_bytes` at once), or `None` (counted) if its budget is spent.
    fn reply_room(&mut self, peer: AgentId) -> Option<usize> {
        let limit = REPLY_BUDGET_ROUNDS * self.config.max_delta_bytes;
        let used = self.reply_bytes.get(&peer).copied().unwrap_or(0);
        let room = limit.saturating_sub(used).min(self.config.max_delta_bytes);
        if room == 0 {
            self.stats.requests_over_budget += 1;
            return None;
        }
        Some(room)
    }

    fn spend(&mut self, peer: AgentId, bytes: usize) {
        *self.reply_bytes.entry(peer).or_default() += bytes;
    }

    /// Entries for `keys` (each once), up to `budget` bytes: the budget is applied while
    /// walking the keys, so only what is sent is ever copied.
    fn bounded_entries(&self, keys: &[String], budget: usize) -> Vec<SignedEntry> {
        let mut budget = budget;
        let mut entries = Vec::new();
        let unique: std::collections::BTreeSet<&String> = keys.iter().collect();
        for entry in unique.into_iter().filter_map(|key| self.state.entry(key)) {
            let size = entry.key.len() + entry.value.as_ref().map_or(0, Vec::len) + 120;
            if size > budget && !entries.is_empty() {
                break;
            }
            budget = budget.saturating_sub(size);
            entries.push(entry.clone());
        }
        entries
    }

    fn bad_payload<V: SignatureVerifier>(&mut self, ctx: &mut Context<'_, V>, from: AgentId) {
        self.stats.bad_payloads += 1;
        ctx.charge(from, RejectReason::BadPayload);
    }

    /// Sends `message` to `to`; returns its payload size.
    fn send<V: SignatureVerifier>(
        &mut self,
        ctx: &mut Context<'_, V>,
        to: AgentId,
        message: &GossipMessage,
    ) -> usize {
        // Serializing our own message into a Vec cannot fail.
        let payload = postcard::to_allocvec(message).unwrap_or_default();
        if ctx.send(to, message.kind(), &payload) {
            self.stats.messages_sent += 1;
        }
        payload.len()
    }
}

/// Curve operations the node's verifier has made (cache hits are free). The signature
/// budget relies on these counters: both shipped verifiers keep them; a verifier whose
/// `stats` stays at zero is never charged.
fn curve_checks<V: SignatureVerifier>(ctx: &mut Context<'_, V>) -> u64 {
    let stats = ctx.verifier().stats();
    stats.single_verifications + stats.batch_verified + stats.failures
}

/// True if `items` are strictly ascending (so also free of repeats). O(n).
fn strictly_ascending<T: Ord>(items: &[T]) -> bool {
    items.windows(2).all(|pair| pair[0] < pair[1])
}

impl<V: SignatureVerifier + 'static> Layer<V> for GossipLayer {
    fn kinds(&self) -> &'static [MessageKind] {
        KINDS
    }

    /// Schedules the first round at a random point within one interval, so that nodes
    /// started together do not gossip in lock step.
    fn start(&mut self, ctx: &mut Context<'_, V>) {
        let first = if self.config.aligned_rounds {
            0
        } else {
            let interval_ms = self.interval_ms();
            ctx.rng().random_range(0..=interval_ms)
        };
        self.schedule_round(ctx, Duration::from_millis(first));
    }

    fn handle_message(
        &mut self,
        ctx: &mut Context<'_, V>,
        from: AgentId,
        kind: MessageKind,
        payload: &[u8],
    ) {
        self.stats.messages_received += 1;
        self.state.observe_time(ctx.now());
        match postcard::from_bytes::<GossipMessage>(payload) {
            Ok(message) if message.kind() == kind => self.dispatch(ctx, from, message),
            _ => self.bad_payload(ctx, from),
        }
    }

    fn handle_timer(&mut self, ctx: &mut Context<'_, V>, token: u64) {
        if token != self.round_token {
            return;
        }
        self.run_round(ctx);
        let interval = Duration::from_millis(self.interval_ms());
        self.schedule_round(ctx, interval);
    }

    fn approx_memory_bytes(&self) -> usize {
        self.state.approx_heap_bytes()
            + self.pulls.len() * 64
            + self.convergence.approx_heap_bytes()
            + self.diffs.len() * 256
            + self.news.len()
            + self.sample.capacity() * 32
            + self.catch_up_served.capacity() * 48
            + self.reply_bytes.capacity() * 48
            + self.verifications.capacity() * 48
    }
}

/// Ok unless the node's view says it reaches no quorum of its members.
fn writable<V: SignatureVerifier>(ctx: &Context<'_, V>) -> Result<(), GossipError> {
    let reach = ctx.peers().reachability();
    if reach.has_quorum() {
        Ok(())
    } else {
        Err(GossipError::ReadOnly {
            reachable: reach.reachable,
            required: reach.required(),
        })
    }
}

#[cfg(test)]
mod status_tests {
    use super::*;

    fn status(converged: bool) -> GossipStatus {
        let mut root = [0u8; 32];
        root[0] = 0x03;
        root[1] = 0xe1;
        root[31] = 0xff;
        GossipStatus {
            round: 12,
            root,
            converged,
            keys: 5,
            writers: 2,
            stats: GossipStats::default(),
        }
    }

    #[test]
    fn the_root_shows_as_hex_in_debug_and_display() {
        let hex = status(true).root_hex();
        assert_eq!(hex.len(), 64);
        assert!(hex.starts_with("03e1") && hex.ends_with("ff"), "{hex}");
        assert!(format!("{:?}", status(true)).contains(&format!("root: \"{hex}\"")));
        assert_eq!(
            status(true).to_string(),
            "round 12, root 03e100000000…, converged, 5 keys from 2 writers"
        );
        assert!(status(false).to_string().contains(", not converged,"));
    }
}
