//! [`GossipCore`]: the sans-IO push-pull gossip state machine.

use std::collections::{BTreeMap, HashMap, VecDeque};

use knhk_crdt::{
    CrdtError, Delta, DiffStep, Hash, MerkleDiff, SignedEntry, VersionedState, WriterRange,
};
use knhk_security::{
    ByzantineValidator, Ed25519Verifier, NodeKey, RejectReason, SignatureVerifier,
};
use knhk_types::{AgentId, Envelope, EnvelopeHeader, EnvelopeSigner, UnixMillis, VersionVector};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::config::GossipConfig;
use crate::membership::Membership;
use crate::message::GossipMessage;

/// A timer the core asked for. Timers carry a token; a timer whose token is stale is
/// ignored, so the driver never needs to cancel one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Timer {
    /// Start the next round.
    Round {
        /// Matches the core's current round timer, or the timer is stale.
        token: u64,
    },
}

/// Something the application may want to know.
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
    /// An inbound frame (or its content) was refused.
    Rejected {
        /// The authenticated hop that delivered it.
        from: AgentId,
        /// Why.
        reason: RejectReason,
    },
}

/// What the core wants done. Drained with [`GossipCore::poll_output`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Send `frame` (an encoded, signed envelope) to `to`.
    Send {
        /// The peer.
        to: AgentId,
        /// The frame.
        frame: Vec<u8>,
    },
    /// Call [`GossipCore::handle_timer`] with `timer` at `at`.
    SetTimer {
        /// When.
        at: UnixMillis,
        /// Which timer.
        timer: Timer,
    },
    /// Tell the application.
    Event(GossipEvent),
}

/// Counters of a [`GossipCore`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GossipStats {
    /// Rounds run.
    pub rounds: u64,
    /// Frames handed to the driver.
    pub messages_sent: u64,
    /// Bytes of those frames.
    pub bytes_sent: u64,
    /// Frames received (accepted or not).
    pub messages_received: u64,
    /// Frames refused by the validator.
    pub messages_rejected: u64,
    /// Accepted frames whose content was invalid (charged to the hop).
    pub bad_payloads: u64,
    /// Deltas merged that changed our state.
    pub deltas_merged: u64,
    /// Times news was forwarded at once.
    pub news_forwarded: u64,
    /// Merkle anti-entropy sessions started and finished.
    pub diffs_started: u64,
    /// Merkle anti-entropy sessions finished.
    pub diffs_completed: u64,
    /// Outputs dropped because the outbound queue was full.
    pub outputs_dropped: u64,
    /// Frames dropped before sending because they exceeded the frame size.
    pub oversized_dropped: u64,
    /// Frames the driver dropped because too many sends were in flight (filled in by
    /// the `Mesh` driver; always 0 from a bare core).
    pub sends_dropped: u64,
}

/// A snapshot of where the core stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GossipStatus {
    /// Our identity.
    pub id: AgentId,
    /// The current round.
    pub round: u64,
    /// Peers in the membership.
    pub peers: usize,
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

#[derive(Debug)]
struct DiffSession {
    diff: MerkleDiff,
    id: u64,
    started_round: u64,
}

/// A pull we sent and have not had answered.
#[derive(Clone, Copy, Debug)]
struct PendingPull {
    /// The round it was sent in.
    round: u64,
    /// Whether it carried our version vector (if not, an answer showing the peer has
    /// news earns one follow-up pull that does).
    with_version: bool,
}

/// The push-pull gossip state machine of one node.
///
/// Inputs: [`GossipCore::handle_message`] (a frame and the authenticated peer that
/// delivered it), [`GossipCore::handle_timer`], local [`GossipCore::put`] and
/// [`GossipCore::delete`], each with the current time. Outputs: drained with
/// [`GossipCore::poll_output`]. It reads no clock, opens no socket, spawns nothing, and
/// draws randomness only from a generator seeded by [`GossipConfig::seed`].
///
/// A round: sample `fanout` peers and send each a `Pull` with our Merkle root, adding
/// our version vector unless every peer that answered last round reported our root (so
/// a settled mesh exchanges roots only, and the core keeps no state per peer). The peer
/// answers with what we lack and, if roots differ, its own version, so we push back
/// what it lacks. A pull with no version and another root is answered with the news
/// the peer forwarded in the last two rounds (what a settled puller most likely
/// lacks); if the answer's version still shows news, one follow-up pull carrying our
/// version fetches the rest at once. A merge that brings news is
/// forwarded to `fanout` peers at once; a merge that brings nothing is not, which
/// suppresses duplicates. When version vectors agree but roots do not (or every
/// `anti_entropy_every` rounds while an answering peer's root differs), a Merkle diff
/// finds the differing keys. Every inbound frame passes the [`ByzantineValidator`]
/// first.
#[derive(Debug)]
pub struct GossipCore<M, S = NodeKey, V = Ed25519Verifier> {
    key: S,
    config: GossipConfig,
    membership: M,
    state: VersionedState,
    validator: ByzantineValidator<V>,
    rng: ChaCha8Rng,
    round: u64,
    round_token: u64,
    nonce: u64,
    diffs: HashMap<AgentId, DiffSession>,
    outputs: VecDeque<Output>,
    /// Peers we pulled and have not heard back from.
    pulls: BTreeMap<AgentId, PendingPull>,
    /// Roots reported in answers to our pulls since the last round ended, by peer
    /// (bounded).
    reply_roots: Vec<(AgentId, Hash)>,
    /// An answer beyond the bound reported a root none of the kept ones has.
    reply_roots_incomplete: bool,
    /// The last news we forwarded (encoded delta) and the round it was forwarded in:
    /// what a settled peer whose pull carried no version most likely lacks.
    recent_news: Option<(u64, Vec<u8>)>,
    /// The root the agreeing rounds were counted against.
    agreeing_root: Option<Hash>,
    next_diff_session: u64,
    agreeing_rounds: u32,
    converged_root: Option<Hash>,
    stats: GossipStats,
    sample: Vec<AgentId>,
}

impl<M: Membership> GossipCore<M> {
    /// A core for the node holding `key`, gossiping with `membership`, signing and
    /// verifying with ed25519.
    pub fn new(key: NodeKey, membership: M, config: GossipConfig) -> Self {
        let verifier = Ed25519Verifier::new(config.validator.signature_cache_capacity);
        Self::with_crypto(key, verifier, membership, config)
    }
}

impl<M: Membership, S: EnvelopeSigner, V: SignatureVerifier> GossipCore<M, S, V> {
    /// A core that signs with `signer` and checks signatures with `verifier` (a
    /// simulator uses this to swap in a cheap stand-in with the same accept and reject
    /// behaviour; production uses [`GossipCore::new`]).
    pub fn with_crypto(signer: S, verifier: V, membership: M, config: GossipConfig) -> Self {
        let key = signer;
        Self {
            state: VersionedState::new(config.state.clone()),
            validator: ByzantineValidator::with_verifier(config.validator.clone(), verifier),
            rng: ChaCha8Rng::seed_from_u64(config.seed),
            key,
            membership,
            config,
            round: 0,
            round_token: 0,
            nonce: 0,
            diffs: HashMap::new(),
            outputs: VecDeque::new(),
            pulls: BTreeMap::new(),
            reply_roots: Vec::new(),
            reply_roots_incomplete: false,
            recent_news: None,
            agreeing_root: None,
            next_diff_session: 0,
            agreeing_rounds: 0,
            converged_root: None,
            stats: GossipStats::default(),
            sample: Vec::new(),
        }
    }

    /// Our identity.
    pub fn id(&self) -> AgentId {
        self.key.agent_id()
    }

    /// The current round (0 before the first).
    pub fn round(&self) -> u64 {
        self.round
    }

    /// Schedules the first round at a random point within one interval (so that nodes
    /// started together do not gossip in lock step). Nonces start from `now`, so a
    /// restarted node never repeats one its peers still remember.
    pub fn start(&mut self, now: UnixMillis) {
        self.nonce = now.0 << 20;
        let interval_ms = self.interval_ms();
        let first = now.0.saturating_add(self.rng.random_range(0..=interval_ms));
        self.schedule_round(UnixMillis(first));
    }

    /// Handles a timer set earlier; stale timers are ignored.
    pub fn handle_timer(&mut self, now: UnixMillis, timer: Timer) {
        let Timer::Round { token } = timer;
        if token != self.round_token {
            return;
        }
        self.run_round(now);
        self.schedule_round(UnixMillis(now.0.saturating_add(self.interval_ms())));
    }

    /// Handles one frame that the transport says came from `from`. The frame passes the
    /// Byzantine gate first; refused frames only produce a [`GossipEvent::Rejected`].
    pub fn handle_message(&mut self, now: UnixMillis, from: AgentId, frame: &[u8]) {
        self.stats.messages_received += 1;
        let membership = &self.membership;
        let directory = |id: &AgentId| membership.contains(id);
        let envelope = match self.validator.validate(now, from, frame, &directory) {
            Ok(envelope) => envelope,
            Err(rejection) => {
                self.stats.messages_rejected += 1;
                self.emit(GossipEvent::Rejected {
                    from,
                    reason: rejection.reason,
                });
                return;
            }
        };
        let message = match postcard::from_bytes::<GossipMessage>(envelope.payload) {
            Ok(message) if message.kind() == envelope.header.kind => message,
            _ => return self.bad_payload(now, from),
        };
        self.dispatch(now, from, message);
    }

    /// Writes `value` under `key` locally, signs it, and sends it to `fanout` peers at
    /// once.
    ///
    /// Errors: [`CrdtError`] size and capacity limits; nothing is sent then.
    pub fn put(&mut self, now: UnixMillis, key: &str, value: Vec<u8>) -> Result<(), CrdtError> {
        let entry = self.state.put(&self.key, key, value)?;
        self.announce(now, entry);
        Ok(())
    }

    /// Deletes `key` locally (a signed tombstone) and sends it to `fanout` peers at once.
    ///
    /// Errors: as [`GossipCore::put`].
    pub fn delete(&mut self, now: UnixMillis, key: &str) -> Result<(), CrdtError> {
        let entry = self.state.delete(&self.key, key)?;
        self.announce(now, entry);
        Ok(())
    }

    /// The current value of `key`.
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.state.get(key)
    }

    /// The replicated state (read-only).
    pub fn state(&self) -> &VersionedState {
        &self.state
    }

    /// Our Merkle root.
    pub fn merkle_root(&mut self) -> Hash {
        self.state.merkle_root()
    }

    /// Reputation of `peer` at `now`, as judged by this node's gate.
    pub fn reputation(&self, peer: &AgentId, now: UnixMillis) -> u32 {
        self.validator.reputation(peer, now)
    }

    /// The Byzantine gate (reputations, counters).
    pub fn validator(&self) -> &ByzantineValidator<V> {
        &self.validator
    }

    /// Estimated bytes this core holds: its own struct, the replicated state, pending
    /// pulls and diff sessions, and the gate's replay window, signature cache and sender
    /// table. Deterministic (counts, not allocator readings), for memory-per-node figures.
    pub fn approx_memory_bytes(&self) -> usize {
        let gate = self.validator.stats();
        std::mem::size_of::<Self>()
            + self.state.approx_heap_bytes()
            + self.pulls.len() * 64
            + self.reply_roots.capacity() * 64
            + self.diffs.len() * 256
            + self.recent_news.as_ref().map_or(0, |(_, news)| news.len())
            + gate.replay_entries * 16
            + gate.tracked_senders * 96
            + self.validator.verifier().memory_bytes()
            + self.outputs.len() * 64
    }

    /// The Byzantine gate, mutably (to share its signature cache, or pre-verify).
    pub fn validator_mut(&mut self) -> &mut ByzantineValidator<V> {
        &mut self.validator
    }

    /// The membership.
    pub fn membership(&self) -> &M {
        &self.membership
    }

    /// Where the core stands.
    pub fn status(&mut self) -> GossipStatus {
        let root = self.state.merkle_root();
        GossipStatus {
            id: self.id(),
            round: self.round,
            peers: self.membership.len(),
            root,
            converged: self.converged_root == Some(root),
            keys: self.state.len(),
            writers: self.state.version().len(),
            stats: self.stats,
        }
    }

    /// The next output, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    fn interval_ms(&self) -> u64 {
        u64::try_from(self.config.interval.as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    fn schedule_round(&mut self, at: UnixMillis) {
        self.round_token += 1;
        let timer = Timer::Round {
            token: self.round_token,
        };
        // Timers are never dropped: the core would stop.
        self.outputs.push_back(Output::SetTimer { at, timer });
    }

    fn run_round(&mut self, now: UnixMillis) {
        let root = self.state.merkle_root();
        let replies = std::mem::take(&mut self.reply_roots);
        let incomplete = std::mem::take(&mut self.reply_roots_incomplete);
        self.judge_round(root, &replies, incomplete);
        self.round += 1;
        self.stats.rounds += 1;
        self.expire_diffs();
        // News is recent for two rounds; then pulls with versions take over.
        if self
            .recent_news
            .as_ref()
            .is_some_and(|(at, _)| self.round.saturating_sub(*at) > 2)
        {
            self.recent_news = None;
        }
        let (round, timeout) = (self.round, self.config.diff_timeout_rounds);
        self.pulls
            .retain(|_, pull| round.saturating_sub(pull.round) <= timeout);

        // Settled: every peer that answered last round reported our current root. Then
        // a pull is a root and nothing more.
        let settled = self.agreeing_rounds > 0;
        let mut sample = std::mem::take(&mut self.sample);
        sample.clear();
        self.membership
            .sample_into(self.config.fanout, &mut self.rng, &mut sample);
        for &peer in &sample {
            self.pull(now, peer, root, !settled);
        }
        self.sample = sample;
        if self.config.anti_entropy_every > 0
            && self.round.is_multiple_of(self.config.anti_entropy_every)
        {
            let differing = replies.iter().find(|(_, reported)| *reported != root);
            if let Some(&(peer, their_root)) = differing {
                self.start_diff(now, peer, their_root);
            }
        }
        // Keep the allocation for the next round's answers.
        let mut replies = replies;
        replies.clear();
        self.reply_roots = replies;
    }

    fn pull(&mut self, now: UnixMillis, peer: AgentId, root: Hash, with_version: bool) {
        let version = with_version.then(|| self.state.version().clone());
        let pending = PendingPull {
            round: self.round,
            with_version,
        };
        self.pulls.insert(peer, pending);
        self.send(now, peer, &GossipMessage::Pull { root, version });
    }

    /// Closes the round that just ended: did every peer that answered report our root?
    fn judge_round(&mut self, root: Hash, replies: &[(AgentId, Hash)], incomplete: bool) {
        if self.round == 0 {
            return;
        }
        // Agreement is counted against one root: a write or merge since restarts it.
        if self.agreeing_root != Some(root) {
            self.agreeing_root = Some(root);
            self.agreeing_rounds = 0;
        }
        if !incomplete
            && !replies.is_empty()
            && replies.iter().all(|(_, reported)| *reported == root)
        {
            self.agreeing_rounds += 1;
        } else {
            self.agreeing_rounds = 0;
        }
        if self.agreeing_rounds >= self.config.convergence_rounds
            && self.converged_root != Some(root)
        {
            self.converged_root = Some(root);
            self.emit(GossipEvent::Converged {
                round: self.round,
                root,
            });
        }
    }

    fn dispatch(&mut self, now: UnixMillis, from: AgentId, message: GossipMessage) {
        match message {
            GossipMessage::Pull { root, version } => self.on_pull(now, from, root, version),
            GossipMessage::PullReply {
                root,
                delta,
                version,
            } => self.on_pull_reply(now, from, root, delta, version),
            GossipMessage::Push { delta } => {
                self.absorb(now, from, &delta);
            }
            GossipMessage::DiffAsk {
                session,
                nodes,
                buckets,
            } => self.on_diff_ask(now, from, session, nodes, buckets),
            GossipMessage::DiffAnswer {
                session,
                nodes,
                buckets,
            } => self.on_diff_answer(now, from, session, nodes, buckets),
            GossipMessage::EntriesWanted { keys } => {
                if keys.len() > self.config.max_diff_keys {
                    return;
                }
                let entries = self.bounded_entries(&keys);
                self.send(now, from, &GossipMessage::Entries { entries });
            }
            GossipMessage::Entries { entries } => self.on_entries(now, from, &entries),
        }
    }

    fn on_pull(
        &mut self,
        now: UnixMillis,
        from: AgentId,
        their_root: Hash,
        version: Option<VersionVector>,
    ) {
        let root = self.state.merkle_root();
        let delta = match &version {
            Some(theirs) => {
                let delta = self
                    .state
                    .delta_since_bounded(theirs, self.config.max_delta_bytes);
                (!delta.is_empty()).then(|| delta.encode(self.config.compress_above))
            }
            // A settled puller with another root most likely lacks our latest news:
            // send it now rather than after a follow-up pull (a duplicate merges to
            // nothing).
            None if their_root != root => self.recent_news.as_ref().map(|(_, news)| news.clone()),
            None => None,
        };
        let reply_version = (their_root != root).then(|| self.state.version().clone());
        self.send(
            now,
            from,
            &GossipMessage::PullReply {
                root,
                delta,
                version: reply_version,
            },
        );
    }

    fn on_pull_reply(
        &mut self,
        now: UnixMillis,
        from: AgentId,
        their_root: Hash,
        delta: Option<Vec<u8>>,
        version: Option<VersionVector>,
    ) {
        // Only answers to pulls we sent count (and only once): an unsolicited reply could
        // fake or block convergence and trigger work.
        let Some(pending) = self.pulls.remove(&from) else {
            return;
        };
        if self.reply_roots.len() < 4 * self.config.fanout.max(1) {
            self.reply_roots.push((from, their_root));
        } else if self.reply_roots.iter().all(|(_, root)| *root != their_root) {
            // Not kept, and unlike every root kept: this round cannot count as agreeing.
            self.reply_roots_incomplete = true;
        }
        let brought = match &delta {
            Some(bytes) => self.absorb(now, from, bytes),
            None => false,
        };
        let Some(theirs) = version else { return };
        let back = self
            .state
            .delta_since_bounded(&theirs, self.config.max_delta_bytes);
        if !back.is_empty() {
            let delta = back.encode(self.config.compress_above);
            self.send(now, from, &GossipMessage::Push { delta });
        }
        let root = self.state.merkle_root();
        if !pending.with_version && !self.state.version().dominates(&theirs) {
            // They have news and could not send it: our pull carried no version. Ask
            // once more, with it (the follow-up carries a version, so this cannot loop).
            self.pull(now, from, root, true);
        } else if back.is_empty()
            && !brought
            && theirs == *self.state.version()
            && root != their_root
        {
            // Same versions, different data: only a Merkle diff can tell what differs.
            self.start_diff(now, from, their_root);
        }
    }

    /// Merges an encoded delta from `from`; forwards it at once if it was news.
    /// Returns true if it changed our state.
    fn absorb(&mut self, now: UnixMillis, from: AgentId, bytes: &[u8]) -> bool {
        let max_decoded = self.config.validator.max_frame_bytes;
        let delta = match Delta::decode(bytes, max_decoded) {
            Ok(delta) => delta,
            Err(error) => {
                self.refused(now, from, &error);
                return false;
            }
        };
        let report = match self.state.merge(&delta, self.validator.verifier_mut()) {
            Ok(report) => report,
            Err(error) => {
                self.refused(now, from, &error);
                return false;
            }
        };
        if report.updated_keys.is_empty() {
            return false;
        }
        self.stats.deltas_merged += 1;
        for key in report.updated_keys {
            self.emit(GossipEvent::Updated { key });
        }
        if self.config.forward_news && bytes.len() <= self.config.forward_max_bytes {
            self.forward(now, Some(from), bytes);
        }
        true
    }

    /// Sends an encoded delta to `fanout` peers other than `except`.
    fn forward(&mut self, now: UnixMillis, except: Option<AgentId>, delta: &[u8]) {
        let mut sample = std::mem::take(&mut self.sample);
        sample.clear();
        self.membership
            .sample_into(self.config.fanout + 1, &mut self.rng, &mut sample);
        sample.retain(|peer| Some(*peer) != except);
        sample.truncate(self.config.fanout);
        for &peer in &sample {
            self.send(
                now,
                peer,
                &GossipMessage::Push {
                    delta: delta.to_vec(),
                },
            );
        }
        self.stats.news_forwarded += 1;
        self.sample = sample;
        self.recent_news = Some((self.round, delta.to_vec()));
    }

    /// A local write: tell `fanout` peers at once.
    fn announce(&mut self, now: UnixMillis, entry: SignedEntry) {
        self.emit(GossipEvent::Updated {
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
        let bytes = delta.encode(self.config.compress_above);
        self.forward(now, None, &bytes);
    }

    fn start_diff(&mut self, now: UnixMillis, peer: AgentId, their_root: Hash) {
        if self.diffs.contains_key(&peer) || self.diffs.len() >= self.config.max_diff_sessions {
            return;
        }
        let (diff, step) = MerkleDiff::start(&mut self.state, their_root);
        self.stats.diffs_started += 1;
        self.next_diff_session += 1;
        let session = DiffSession {
            diff,
            id: self.next_diff_session,
            started_round: self.round,
        };
        self.continue_diff(now, peer, session, step);
    }

    fn continue_diff(
        &mut self,
        now: UnixMillis,
        peer: AgentId,
        session: DiffSession,
        step: DiffStep,
    ) {
        let id = session.id;
        match step {
            DiffStep::AskNodes(nodes) => {
                self.diffs.insert(peer, session);
                let ask = GossipMessage::DiffAsk {
                    session: id,
                    nodes,
                    buckets: Vec::new(),
                };
                self.send(now, peer, &ask);
            }
            DiffStep::AskBuckets(buckets) => {
                self.diffs.insert(peer, session);
                let ask = GossipMessage::DiffAsk {
                    session: id,
                    nodes: Vec::new(),
                    buckets,
                };
                self.send(now, peer, &ask);
            }
            DiffStep::Done(mut keys) => {
                self.stats.diffs_completed += 1;
                if keys.is_empty() {
                    return;
                }
                keys.truncate(self.config.max_diff_keys);
                let entries = self.bounded_entries(&keys);
                if !entries.is_empty() {
                    self.send(now, peer, &GossipMessage::Entries { entries });
                }
                self.send(now, peer, &GossipMessage::EntriesWanted { keys });
            }
        }
    }

    fn on_diff_ask(
        &mut self,
        now: UnixMillis,
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
        let nodes = self.state.merkle_nodes(&nodes);
        let buckets = self.state.bucket_digests(&buckets);
        let answer = GossipMessage::DiffAnswer {
            session,
            nodes,
            buckets,
        };
        self.send(now, from, &answer);
    }

    fn on_diff_answer(
        &mut self,
        now: UnixMillis,
        from: AgentId,
        session: u64,
        nodes: Vec<(u32, Hash)>,
        buckets: Vec<knhk_crdt::BucketDigests>,
    ) {
        // A late answer to an expired or replaced session is ignored, not charged.
        if self
            .diffs
            .get(&from)
            .is_none_or(|current| current.id != session)
        {
            return;
        }
        let Some(mut current) = self.diffs.remove(&from) else {
            return;
        };
        let step = if buckets.is_empty() {
            current.diff.on_nodes(&mut self.state, &nodes)
        } else {
            current.diff.on_buckets(&self.state, &buckets)
        };
        match step {
            Ok(step) => self.continue_diff(now, from, current, step),
            // The answer names nodes or keys that do not fit the question: provably bad.
            Err(_) => self.bad_payload(now, from),
        }
    }

    fn on_entries(&mut self, now: UnixMillis, from: AgentId, entries: &[SignedEntry]) {
        if entries.len() > self.config.max_diff_keys {
            return;
        }
        match self
            .state
            .merge_entries(entries, self.validator.verifier_mut())
        {
            Ok(report) => {
                for key in report.updated_keys {
                    self.emit(GossipEvent::Updated { key });
                }
            }
            Err(error) => self.refused(now, from, &error),
        }
    }

    /// A merge refused `from`'s data. The sender is charged only when the data proves
    /// misbehaviour (a forgery, a lie about versions, garbage); refusals caused by our
    /// own limits or configuration (`Full`, sizes) are not the sender's fault, and
    /// charging them would get honest neighbours banned.
    fn refused(&mut self, now: UnixMillis, from: AgentId, error: &CrdtError) {
        let provable = matches!(
            error,
            CrdtError::BadSignature { .. }
                | CrdtError::Equivocation { .. }
                | CrdtError::EntryOutsideRange { .. }
                | CrdtError::MissingVersions { .. }
                | CrdtError::Backwards { .. }
                | CrdtError::Malformed(_)
        );
        if provable {
            self.bad_payload(now, from);
        }
    }

    /// Entries for `keys`, up to the delta byte budget.
    fn bounded_entries(&self, keys: &[String]) -> Vec<SignedEntry> {
        let mut budget = self.config.max_delta_bytes;
        let mut entries = Vec::new();
        for entry in self.state.entries_for(keys) {
            let size = entry.key.len() + entry.value.as_ref().map_or(0, Vec::len) + 120;
            if size > budget && !entries.is_empty() {
                break;
            }
            budget = budget.saturating_sub(size);
            entries.push(entry);
        }
        entries
    }

    fn expire_diffs(&mut self) {
        let (round, timeout) = (self.round, self.config.diff_timeout_rounds);
        self.diffs
            .retain(|_, session| round.saturating_sub(session.started_round) <= timeout);
    }

    fn bad_payload(&mut self, now: UnixMillis, from: AgentId) {
        self.stats.bad_payloads += 1;
        self.validator.report(now, from, RejectReason::BadPayload);
        self.emit(GossipEvent::Rejected {
            from,
            reason: RejectReason::BadPayload,
        });
    }

    fn emit(&mut self, event: GossipEvent) {
        self.push(Output::Event(event));
    }

    fn send(&mut self, now: UnixMillis, to: AgentId, message: &GossipMessage) {
        self.nonce += 1;
        let header = EnvelopeHeader::new(message.kind(), now, self.nonce);
        // Serializing our own message into a Vec cannot fail.
        let payload = postcard::to_allocvec(message).unwrap_or_default();
        let frame = Envelope::sign(&self.key, header, payload).encode();
        if frame.len() > self.config.validator.max_frame_bytes {
            // The transport would refuse it; count it where an operator can see it.
            self.stats.oversized_dropped += 1;
            return;
        }
        self.stats.messages_sent += 1;
        self.stats.bytes_sent += frame.len() as u64;
        self.push(Output::Send { to, frame });
    }

    fn push(&mut self, output: Output) {
        if self.outputs.len() >= self.config.max_outbound {
            self.stats.outputs_dropped += 1;
            return;
        }
        self.outputs.push_back(output);
    }
}
