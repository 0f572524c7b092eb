//! [`SwimLayer`]: SWIM failure detection (Das et al., 2002) with Lifeguard's local
//! health awareness, nacks, dynamic suspicion timeouts and buddy system (Dadgar et
//! al., 2018), as a layer under the node endpoint. It keeps the node's peer view, a
//! [`Membership`], through [`Context::view_mut`], and measures round trips and Vivaldi
//! coordinates on its probes.
//!
//! Each probe period (scaled by the local health multiplier) the node pings the next
//! member of a shuffled round-robin order. No ack within the probe timeout: it asks
//! `indirect_probes` others to ping the target for it; they answer with an indirect
//! ack, or a nack when the target stayed silent. No ack by the end of the period: the
//! target is suspected, and declared dead after the suspicion timeout unless it
//! refutes (a higher incarnation). Membership updates ride on every message.

use std::collections::HashMap;
use std::time::Duration;

use knhk_endpoint::{Context, Layer, PeerView, Reachability};
use knhk_security::{RejectReason, SignatureVerifier};
use knhk_types::{AgentId, MessageKind, UnixMillis};
use rand::seq::{IndexedRandom, SliceRandom};

use crate::config::TopologyConfig;
use crate::dissemination::Dissemination;
use crate::health::{LocalHealth, suspicion_timeout};
use crate::membership::{Applied, MemberState, Membership};
use crate::message::{
    Claim, Entry, MAX_ENTRIES_PER_MESSAGE, MAX_UPDATES_PER_MESSAGE, SwimMessage, Update,
};
use crate::vivaldi::Coordinate;

/// Timer kinds, in the top byte of a token; the rest is a sequence or an id.
const TICK: u64 = 1 << 56;
const PROBE_TIMEOUT: u64 = 2 << 56;
const RELAY_TIMEOUT: u64 = 3 << 56;
const SUSPICION: u64 = 4 << 56;
const CHECK_TIMEOUT: u64 = 5 << 56;

/// Pings remembered for measuring round trips of late acks.
const SENT_PINGS_KEPT: usize = 128;
/// Accusers of this node remembered as told (see `SwimLayer::accusers_corrected`).
const ACCUSERS_REMEMBERED: usize = 16;
const LOW: u64 = (1 << 56) - 1;

/// What the failure detector tells the application: a member's state changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemberChanged {
    /// The member.
    pub member: AgentId,
    /// Its state before.
    pub from: MemberState,
    /// Its state now.
    pub to: MemberState,
    /// Its incarnation now.
    pub incarnation: u64,
}

/// What the failure detector tells the application: a member it did not know is now
/// in its view or reserve (a driver registers the address with its transport).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemberJoined {
    /// The member.
    pub member: AgentId,
    /// Where it listens, if known.
    pub addr: Option<std::net::SocketAddr>,
}

/// What the failure detector tells the application: it learned where a member it
/// already knew listens (the member was first heard of without an address), or the
/// member came back at a newer incarnation from another address. A driver hands the
/// address to its transport for dialing, as for [`MemberJoined`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemberAddressed {
    /// The member.
    pub member: AgentId,
    /// Where it listens now.
    pub addr: std::net::SocketAddr,
}

/// What the failure detector tells the application: this node lost its quorum (it is
/// on the minority side of a cut, or most of its view failed) or found it again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionChanged {
    /// True when the quorum was lost (local writes are then refused).
    pub partitioned: bool,
    /// The reachability that decided it.
    pub reachability: Reachability,
}

/// A reachability check in progress: members pinged at once.
#[derive(Clone, Debug)]
struct Check {
    id: u64,
    first_seq: u64,
    targets: Vec<AgentId>,
    answered: Vec<bool>,
}

/// Counters of a [`SwimLayer`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SwimStats {
    /// Direct pings sent for our own probes.
    pub probes_sent: u64,
    /// Our probes answered (directly or through another member).
    pub probes_answered: u64,
    /// Indirect probe requests sent.
    pub indirect_requests_sent: u64,
    /// Nacks received (a helper is alive, the target did not answer it).
    pub nacks_received: u64,
    /// Members this node suspected itself.
    pub suspicions_raised: u64,
    /// Members this node declared dead itself.
    pub deaths_declared: u64,
    /// Suspicions of this node that it refuted.
    pub refutations: u64,
    /// Indirect probe requests declined (too many in flight, or unknown target).
    pub relays_declined: u64,
    /// Messages refused as undecodable or oversized (charged).
    pub messages_refused: u64,
    /// Calls made while the endpoint's view was not a [`Membership`] (nothing done).
    pub without_membership: u64,
    /// Members learned (by alive claims, shuffles and admitted strangers' frames).
    pub members_learned: u64,
    /// Shuffles this node started.
    pub shuffles_sent: u64,
    /// Members moved from the reserve into the view (refills and rebalances).
    pub promotions: u64,
    /// Accusations about members we do not know, relayed.
    pub rumours_relayed: u64,
    /// Times this node, pinged by nobody for a while, asked a member for a place in
    /// its view.
    pub places_asked: u64,
    /// Reachability checks run by the partition detector.
    pub partition_checks: u64,
    /// Times this node lost its quorum.
    pub partitions_detected: u64,
    /// Corrections sent: a member's message accused someone at an incarnation it had
    /// refuted since, and this node sent the fresher claim back.
    pub corrections_sent: u64,
}

/// Our probe in progress.
#[derive(Clone, Copy, Debug)]
struct Probe {
    seq: u64,
    target: AgentId,
    answered: bool,
    nacks: u32,
    expected_nacks: u32,
}

/// A ping we sent for another member's indirect probe.
#[derive(Clone, Copy, Debug)]
struct Relay {
    requester: AgentId,
    their_seq: u64,
    target: AgentId,
}

/// A member we believe suspect.
#[derive(Clone, Debug)]
struct Suspicion {
    incarnation: u64,
    started: UnixMillis,
    /// Distinct accusers (the first included), at most `suspicion_confirmations + 1`.
    accusers: Vec<AgentId>,
    token: u64,
}

/// SWIM with Lifeguard (see the module docs). The endpoint's view must be a
/// [`Membership`]; with any other view the layer does nothing but count
/// ([`SwimStats::without_membership`]).
#[derive(Debug)]
pub struct SwimLayer {
    config: TopologyConfig,
    incarnation: u64,
    health: LocalHealth,
    coordinate: Coordinate,
    seq: u64,
    generation: u64,
    probe: Option<Probe>,
    relays: HashMap<u64, Relay>,
    suspicions: HashMap<AgentId, Suspicion>,
    suspicion_tokens: HashMap<u64, AgentId>,
    next_suspicion: u64,
    dissemination: Dissemination,
    order: Vec<AgentId>,
    order_at: usize,
    /// Probe periods so far (every `dead_probe_every`-th probes a dead member).
    ticks: u64,
    /// True once this node announced that it leaves: it probes no more.
    left: bool,
    /// When a member last pinged this node from its view (directly or for an
    /// indirect probe).
    last_pinged: Option<UnixMillis>,
    check: Option<Check>,
    /// While this node lacks a quorum: the members its check found mostly silent,
    /// checked again (the same ones) until most answer. A fresh sample would lean
    /// toward this side of a cut as rumours bury the other side.
    held_check: Option<Vec<AgentId>>,
    sent_pings: std::collections::VecDeque<(u64, AgentId, UnixMillis)>,
    checks: u64,
    check_taken_at: Option<UnixMillis>,
    /// True while this node lacks a quorum (as last reported).
    partitioned: bool,
    /// The last accusers of this node it told its current incarnation directly (each
    /// accusation once: the same one comes by many hops).
    accusers_corrected: std::collections::VecDeque<(AgentId, u64)>,
    stats: SwimStats,
}

const KINDS: &[MessageKind] = &[MessageKind::Membership];

impl SwimLayer {
    /// A failure detector with `config`.
    pub fn new(config: TopologyConfig) -> Self {
        let max_health = if config.lifeguard {
            config.max_local_health
        } else {
            0
        };
        Self {
            health: LocalHealth::new(max_health),
            coordinate: Coordinate::origin(&config.vivaldi),
            config,
            incarnation: 0,
            seq: 0,
            generation: 0,
            probe: None,
            relays: HashMap::new(),
            suspicions: HashMap::new(),
            suspicion_tokens: HashMap::new(),
            next_suspicion: 0,
            dissemination: Dissemination::default(),
            order: Vec::new(),
            order_at: 0,
            ticks: 0,
            left: false,
            last_pinged: None,
            check: None,
            held_check: None,
            sent_pings: std::collections::VecDeque::new(),
            checks: 0,
            check_taken_at: None,
            partitioned: false,
            accusers_corrected: std::collections::VecDeque::new(),
            stats: SwimStats::default(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> SwimStats {
        self.stats
    }

    /// This node's incarnation (raised each time it refutes a suspicion).
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// Lifeguard's local health score (0: healthy).
    pub fn local_health(&self) -> u32 {
        self.health.score()
    }

    /// This node's Vivaldi coordinate.
    pub fn coordinate(&self) -> Coordinate {
        self.coordinate
    }

    /// How many times each update is piggybacked among `members` (SWIM's λ log n).
    fn retransmit_limit(&self, members: usize) -> u32 {
        let scale = ((members + 1) as f64).log10().ceil().max(1.0);
        (f64::from(self.config.retransmit_multiplier) * scale) as u32
    }

    fn send<V: SignatureVerifier>(
        &mut self,
        ctx: &mut Context<'_, V>,
        to: AgentId,
        message: impl FnOnce(Vec<Update>) -> SwimMessage,
    ) {
        self.send_counted(ctx, to, true, message);
    }

    /// As [`SwimLayer::send`]; with `counted` false the piggybacked updates do not use
    /// up their retransmissions (a burst of a check's pings would otherwise spend them
    /// all at once, and a refutation would never ride on the acks its accusers wait for).
    fn send_counted<V: SignatureVerifier>(
        &mut self,
        ctx: &mut Context<'_, V>,
        to: AgentId,
        counted: bool,
        message: impl FnOnce(Vec<Update>) -> SwimMessage,
    ) {
        let members = ctx.peers().len();
        let limit = self.retransmit_limit(members);
        // A copy sent to a member we do not believe alive is likely lost: it does not
        // use up the update's retransmissions.
        let alive = ctx
            .view_mut::<Membership>()
            .and_then(|view| view.get(&to).map(|m| m.state == MemberState::Alive))
            .unwrap_or(false);
        let counted = alive && counted;
        let updates = self
            .dissemination
            .take(self.config.max_piggyback, limit, &to, counted);
        let message = message(updates);
        // Serializing this message into a Vec cannot fail.
        let payload = postcard::to_allocvec(&message).unwrap_or_default();
        ctx.send(to, MessageKind::Membership, &payload);
    }

    fn tick<V: SignatureVerifier>(&mut self, ctx: &mut Context<'_, V>) {
        self.conclude_probe(ctx);
        if self.left {
            return;
        }
        let interval = self.health.scale(self.config.probe_interval);
        ctx.set_timer(interval, TICK | (self.generation & LOW));
        self.maintain_view(ctx);
        self.watch_partition(ctx);
        let Some(target) = self.next_target(ctx) else {
            return;
        };
        self.seq += 1;
        let seq = self.seq;
        self.probe = Some(Probe {
            seq,
            target,
            answered: false,
            nacks: 0,
            expected_nacks: 0,
        });
        self.stats.probes_sent += 1;
        self.ping(ctx, target, seq);
        let timeout = self.health.scale(self.config.probe_timeout);
        ctx.set_timer(timeout, PROBE_TIMEOUT | (seq & LOW));
    }

    /// Once a probe period: retire a check sample that found a quorum and is old, and
    /// check again while this node lacks a quorum (by the sample or by the states), so
    /// a heal is found within a period.
    fn watch_partition<V: SignatureVerifier>(&mut self, ctx: &mut Context<'_, V>) {
        if self.config.partition_check == 0 {
            return;
        }
        let now = ctx.now();
        let valid_for = self
            .config
            .probe_interval
            .saturating_mul(self.config.partition_check_valid_for);
        let taken = self.check_taken_at;
        let Some(view) = ctx.view_mut::<Membership>() else {
            return;
        };
        let sample = view.reachability_check();
        let stale = taken.is_some_and(|at| now.0.saturating_sub(at.0) >= millis(valid_for));
        if sample.is_some_and(|s| s.has_quorum()) && stale {
            view.set_reachability_check(None);
        }
        let lacking =
            !view.reachability().has_quorum() || !view.reachability_by_states().has_quorum();
        self.report_partition(ctx);
        if lacking {
            self.start_check(ctx);
        }
    }

    /// Pings up to `partition_check` random members at once (view members but those
    /// that left, reserve members believed alive or suspect), each with what we
    /// believe of it (so one wrongly buried refutes); the answers within the deadline
    /// are the sample. While a quorum is lacking, the same members as the check that
    /// found it lacking.
    fn start_check<V: SignatureVerifier>(&mut self, ctx: &mut Context<'_, V>) {
        if self.check.is_some() || self.config.partition_check == 0 || self.left {
            return;
        }
        let held = self.held_check.clone();
        let (mut targets, slowest): (Vec<AgentId>, Duration) = match ctx.view_mut::<Membership>() {
            Some(view) => {
                let view_members = view
                    .members()
                    .iter()
                    .filter(|m| m.state != MemberState::Left);
                let reserve_members = view
                    .reserve()
                    .iter()
                    .filter(|m| matches!(m.state, MemberState::Alive | MemberState::Suspect));
                let slowest = view_members
                    .clone()
                    .filter_map(|m| m.rtt.smoothed())
                    .max()
                    .unwrap_or_default();
                let targets = match held {
                    Some(held) => held,
                    None => view_members.chain(reserve_members).map(|m| m.id).collect(),
                };
                (targets, slowest)
            }
            None => return,
        };
        if targets.is_empty() {
            return;
        }
        targets.shuffle(ctx.rng());
        targets.truncate(self.config.partition_check);
        self.checks += 1;
        self.stats.partition_checks += 1;
        let id = self.checks & LOW;
        let first_seq = self.seq + 1;
        for target in &targets {
            self.seq += 1;
            let seq = self.seq;
            self.ping_counted(ctx, *target, seq, false);
        }
        self.check = Some(Check {
            id,
            first_seq,
            answered: vec![false; targets.len()],
            targets,
        });
        // Long enough for the slowest member we measured to answer.
        let deadline = self.config.probe_timeout.max(slowest.saturating_mul(3) / 2);
        ctx.set_timer(deadline, CHECK_TIMEOUT | id);
    }

    /// An ack for a check's ping: counted if it comes from the member asked.
    fn check_answered(&mut self, seq: u64, from: AgentId) -> bool {
        let Some(check) = &mut self.check else {
            return false;
        };
        let Some(at) = seq.checked_sub(check.first_seq).map(|at| at as usize) else {
            return false;
        };
        if check.targets.get(at) == Some(&from) {
            check.answered[at] = true;
            return true;
        }
        false
    }

    /// The check's deadline: its sample now decides reachability.
    fn check_timed_out<V: SignatureVerifier>(&mut self, ctx: &mut Context<'_, V>, id: u64) {
        let Some(check) = self.check.take_if(|c| c.id == id) else {
            return;
        };
        let answered = check.answered.iter().filter(|a| **a).count();
        let sample = Reachability {
            reachable: answered + 1,
            members: check.targets.len() + 1,
        };
        self.held_check = (!sample.has_quorum()).then_some(check.targets);
        self.check_taken_at = Some(ctx.now());
        if let Some(view) = ctx.view_mut::<Membership>() {
            view.set_reachability_check(Some(sample));
        }
        self.report_partition(ctx);
    }

    /// Emits [`PartitionChanged`] when the quorum was lost or found.
    fn report_partition<V: SignatureVerifier>(&mut self, ctx: &mut Context<'_, V>) {
        let Some(reachability) = ctx.view_mut::<Membership>().map(|v| v.reachability()) else {
            return;
        };
        let partitioned = !reachability.has_quorum();
        if partitioned != self.partitioned {
            self.partitioned = partitioned;
            if partitioned {
                self.stats.partitions_detected += 1;
            }
            ctx.emit(PartitionChanged {
                partitioned,
                reachability,
            });
        }
    }

    /// True while this node lacks a quorum (its writes are refused).
    pub fn is_partitioned(&self) -> bool {
        self.partitioned
    }

    /// Once a probe period: rank the view, refill it, and every so often shuffle and
    /// rebalance (the ticks count is raised by [`SwimLayer::next_target`]).
    fn maintain_view<V: SignatureVerifier>(&mut self, ctx: &mut Context<'_, V>) {
        let now = ctx.now();
        let own = self.coordinate;
        let ticks = self.ticks + 1;
        let (replace_after, every, count) = (
            self.config.replace_dead_after,
            self.config.rebalance_every,
            self.config.rebalance_count,
        );
        let mut rng = <rand::rngs::SmallRng as rand::SeedableRng>::from_rng(ctx.rng());
        let Some(view) = ctx.view_mut::<Membership>() else {
            self.stats.without_membership += 1;
            return;
        };
        view.rerank(&own);
        let mut promoted = view.refill(now, replace_after, &mut rng).len();
        if every > 0 && ticks.is_multiple_of(every) {
            promoted += view.rebalance(count, &mut rng).len();
        }
        self.stats.promotions += promoted as u64;
        let active = view.config().active as u32;
        // Nobody pinged us for twice the time a view takes to be probed through: no
        // view holds us (views are not symmetric), so we are neither probed nor chosen.
        // Ask a view member for a place, as a joiner does.
        let lonely_after = self.config.probe_interval.saturating_mul(2 * active.max(1));
        let pinged = *self.last_pinged.get_or_insert(now);
        if now.0.saturating_sub(pinged.0) >= millis(lonely_after) {
            self.last_pinged = Some(now);
            self.stats.places_asked += 1;
            self.shuffle(ctx, true);
            return;
        }
        let shuffle = self.config.shuffle_every;
        if shuffle > 0 && ticks.is_multiple_of(shuffle) {
            self.shuffle(ctx, false);
        }
    }

    /// Offers a random view member some of the members this node knows (itself
    /// first); its answer brings some of its own.
    fn shuffle<V: SignatureVerifier>(&mut self, ctx: &mut Context<'_, V>, join: bool) {
        // Uniformly over the view, not near-first as gossip chooses: what a node knows
        // must stay a uniform sample of the mesh, or its quorum estimate (and the
        // reserve its view refills from) would lean toward its own region.
        let candidates: Vec<AgentId> = ctx
            .view_mut::<Membership>()
            .map(|view| {
                view.members()
                    .iter()
                    .filter(|m| m.state == MemberState::Alive)
                    .map(|m| m.id)
                    .collect()
            })
            .unwrap_or_default();
        let Some(partner) = candidates.choose(ctx.rng()).copied() else {
            return;
        };
        let entries = self.entries_to_offer(ctx, Some(partner));
        self.stats.shuffles_sent += 1;
        self.send(ctx, partner, |updates| SwimMessage::Shuffle {
            entries,
            join,
            updates,
        });
    }

    /// This node and up to `shuffle_length - 1` random members it knows, never `to`.
    fn entries_to_offer<V: SignatureVerifier>(
        &self,
        ctx: &mut Context<'_, V>,
        to: Option<AgentId>,
    ) -> Vec<Entry> {
        let length = self.config.shuffle_length.clamp(1, MAX_ENTRIES_PER_MESSAGE);
        let mut entries = vec![Entry {
            member: ctx.id(),
            incarnation: self.incarnation,
            addr: self.config.advertise,
        }];
        let mut rng = <rand::rngs::SmallRng as rand::SeedableRng>::from_rng(ctx.rng());
        if let Some(view) = ctx.view_mut::<Membership>() {
            entries.extend(
                view.sample_entries(length, &mut rng)
                    .into_iter()
                    .filter(|entry| Some(entry.member) != to)
                    .take(length - 1),
            );
        }
        entries
    }

    /// Takes in the members a shuffle (or a stranger's frame) told of.
    fn learn_entries<V: SignatureVerifier>(&mut self, ctx: &mut Context<'_, V>, entries: &[Entry]) {
        let now = ctx.now();
        let mut joined = Vec::new();
        let mut addressed = Vec::new();
        if let Some(view) = ctx.view_mut::<Membership>() {
            for entry in entries {
                let addr_before = view.get(&entry.member).map(|m| m.addr);
                if view.learn_entry(entry, now) {
                    joined.push(*entry);
                } else if let (Some(None), Some(addr)) = (addr_before, entry.addr)
                    && view.get(&entry.member).and_then(|m| m.addr) == Some(addr)
                {
                    addressed.push(MemberAddressed {
                        member: entry.member,
                        addr,
                    });
                }
            }
        }
        for entry in joined {
            self.stats.members_learned += 1;
            ctx.emit(MemberJoined {
                member: entry.member,
                addr: entry.addr,
            });
        }
        for event in addressed {
            ctx.emit(event);
        }
    }

    /// Leaves the mesh: tells `leave_fanout` view members at once (the claim then
    /// spreads as any update) and stops probing. Members see this node as left (not
    /// dead, not counted for their quorum); it can come back by starting again with a
    /// higher incarnation.
    pub fn leave<V: SignatureVerifier>(&mut self, ctx: &mut Context<'_, V>) {
        self.left = true;
        self.incarnation = self.incarnation.saturating_add(1);
        let me = ctx.id();
        let update = Update {
            member: me,
            incarnation: self.incarnation,
            claim: Claim::Left,
            by: me,
            addr: None,
        };
        self.dissemination.push(update);
        let mut told = Vec::new();
        ctx.sample_peers(self.config.leave_fanout, &mut told);
        let coordinate = self.coordinate;
        for member in told {
            self.seq += 1;
            let seq = self.seq;
            self.send(ctx, member, |mut updates| {
                updates.retain(|u| u.member != me);
                updates.insert(0, update);
                SwimMessage::Ping {
                    seq,
                    coordinate,
                    cluster: (me, 0),
                    in_view: false,
                    updates,
                }
            });
        }
    }

    /// True once [`SwimLayer::leave`] ran.
    pub fn has_left(&self) -> bool {
        self.left
    }

    /// Sends `target` a ping numbered `seq`. Buddy system: a suspect (or dead) target
    /// hears what we believe of it on the ping itself, so it can refute at once, even
    /// after the update stopped being disseminated.
    fn ping<V: SignatureVerifier>(&mut self, ctx: &mut Context<'_, V>, target: AgentId, seq: u64) {
        self.ping_counted(ctx, target, seq, true);
    }

    /// As [`SwimLayer::ping`], counting the piggybacked updates or not
    /// ([`SwimLayer::send_counted`]).
    fn ping_counted<V: SignatureVerifier>(
        &mut self,
        ctx: &mut Context<'_, V>,
        target: AgentId,
        seq: u64,
        counted: bool,
    ) {
        let coordinate = self.coordinate;
        let claim = ctx.view_mut::<Membership>().and_then(|view| {
            let member = view.get(&target)?;
            let claim = match member.state {
                MemberState::Alive | MemberState::Left => return None,
                MemberState::Suspect => Claim::Suspect,
                MemberState::Dead => Claim::Dead,
            };
            Some(Update {
                member: target,
                incarnation: member.incarnation,
                claim,
                by: view.me(),
                addr: None,
            })
        });
        let cluster = self.cluster_label(ctx);
        let in_view = ctx
            .view_mut::<Membership>()
            .is_some_and(|view| view.in_view(&target));
        self.sent_ping(seq, target, ctx.now());
        self.send_counted(ctx, target, counted, |mut updates| {
            if let Some(claim) = claim {
                updates.retain(|update| update.member != target);
                updates.insert(0, claim);
            }
            SwimMessage::Ping {
                seq,
                coordinate,
                cluster,
                in_view,
                updates,
            }
        });
    }

    /// The next member to probe: round robin over a shuffled order of the members not
    /// dead, reshuffled after each pass (SWIM's bounded detection time).
    fn next_target<V: SignatureVerifier>(&mut self, ctx: &mut Context<'_, V>) -> Option<AgentId> {
        self.ticks += 1;
        let every = self.config.dead_probe_every;
        if every > 0 && self.ticks.is_multiple_of(every) {
            let dead: Vec<AgentId> = ctx
                .view_mut::<Membership>()
                .map(|view| {
                    // The reserve's dead too: a member buried by mistake and moved
                    // out of the view must still hear of it, or it stays dead here.
                    view.members()
                        .iter()
                        .chain(view.reserve())
                        .filter(|m| m.state == MemberState::Dead)
                        .map(|m| m.id)
                        .collect()
                })
                .unwrap_or_default();
            if let Some(target) = dead.choose(ctx.rng()) {
                return Some(*target);
            }
        }
        for _ in 0..2 {
            while self.order_at < self.order.len() {
                let candidate = self.order[self.order_at];
                self.order_at += 1;
                let alive = ctx.view_mut::<Membership>().is_some_and(|view| {
                    view.in_view(&candidate)
                        && view.get(&candidate).is_some_and(|m| {
                            matches!(m.state, MemberState::Alive | MemberState::Suspect)
                        })
                });
                if alive {
                    return Some(candidate);
                }
            }
            let mut order: Vec<AgentId> = match ctx.view_mut::<Membership>() {
                Some(view) => view
                    .members()
                    .iter()
                    .filter(|m| matches!(m.state, MemberState::Alive | MemberState::Suspect))
                    .map(|m| m.id)
                    .collect(),
                None => {
                    self.stats.without_membership += 1;
                    return None;
                }
            };
            order.shuffle(ctx.rng());
            self.order = order;
            self.order_at = 0;
        }
        None
    }

    /// The probe period ended: an unanswered target is suspected, and (Lifeguard) our
    /// own health pays for every helper that did not even nack.
    fn conclude_probe<V: SignatureVerifier>(&mut self, ctx: &mut Context<'_, V>) {
        let Some(probe) = self.probe.take() else {
            return;
        };
        if probe.answered {
            return;
        }
        let believed_dead = ctx.view_mut::<Membership>().and_then(|view| {
            view.get(&probe.target)
                .map(|m| m.state == MemberState::Dead)
        });
        if believed_dead != Some(false) {
            // A probe of the dead (to find healed partitions) is expected to fail: no
            // suspicion to raise, and no evidence against our own health.
            return;
        }
        if self.config.lifeguard {
            let missed = if probe.expected_nacks > 0 {
                probe.expected_nacks.saturating_sub(probe.nacks)
            } else {
                1
            };
            for _ in 0..missed {
                self.health.worse();
            }
        }
        let incarnation = ctx
            .view_mut::<Membership>()
            .and_then(|view| view.get(&probe.target).map(|m| m.incarnation));
        if let Some(incarnation) = incarnation {
            self.stats.suspicions_raised += 1;
            let me = ctx.id();
            self.learn(
                ctx,
                Update {
                    member: probe.target,
                    incarnation,
                    claim: Claim::Suspect,
                    by: me,
                    addr: None,
                },
            );
            // Tell the suspect at once (its ack, if it is alive after all, carries
            // its refutation back): a suspicion left to chance dissemination may reach
            // it too late under loss.
            self.seq += 1;
            let seq = self.seq;
            self.ping(ctx, probe.target, seq);
        }
    }

    /// The direct ping went unanswered: ask others to try.
    fn probe_timed_out<V: SignatureVerifier>(&mut self, ctx: &mut Context<'_, V>, seq: u64) {
        let Some(probe) = self.probe.filter(|p| p.seq & LOW == seq && !p.answered) else {
            return;
        };
        // One member silent: is it the member, or are we cut off? Ask many at once.
        self.start_check(ctx);
        // Helpers among the members believed alive (a suspect could not help, and its
        // missing nack would count against our own health).
        let mut helpers: Vec<AgentId> = ctx
            .view_mut::<Membership>()
            .map(|view| {
                view.members()
                    .iter()
                    .filter(|m| m.state == MemberState::Alive && m.id != probe.target)
                    .map(|m| m.id)
                    .collect()
            })
            .unwrap_or_default();
        helpers.shuffle(ctx.rng());
        helpers.truncate(self.config.indirect_probes);
        for helper in &helpers {
            self.stats.indirect_requests_sent += 1;
            let (seq, target) = (probe.seq, probe.target);
            self.send(ctx, *helper, |updates| SwimMessage::PingReq {
                seq,
                target,
                updates,
            });
        }
        if let Some(probe) = &mut self.probe {
            probe.expected_nacks = u32::try_from(helpers.len()).unwrap_or(u32::MAX);
        }
    }

    /// Our probe numbered `seq` was answered (directly or through a helper).
    fn answered(&mut self, seq: u64) -> bool {
        let Some(probe) = self.probe.as_mut().filter(|p| p.seq == seq && !p.answered) else {
            return false;
        };
        probe.answered = true;
        self.stats.probes_answered += 1;
        self.health.better();
        true
    }

    /// Remembers a ping sent, to measure the round trip when its ack comes, however
    /// late (a member farther than the probe timeout is still measured).
    fn sent_ping(&mut self, seq: u64, target: AgentId, at: UnixMillis) {
        if self.sent_pings.len() >= SENT_PINGS_KEPT {
            self.sent_pings.pop_front();
        }
        self.sent_pings.push_back((seq, target, at));
    }

    /// An ack for a ping of ours: the round trip and the member's coordinate update
    /// ours (Vivaldi) and its record.
    fn measure<V: SignatureVerifier>(
        &mut self,
        ctx: &mut Context<'_, V>,
        seq: u64,
        from: AgentId,
        their: Coordinate,
    ) {
        let Some(at) = self
            .sent_pings
            .iter()
            .position(|(s, target, _)| *s == seq && *target == from)
        else {
            return;
        };
        let Some((_, _, sent_at)) = self.sent_pings.remove(at) else {
            return;
        };
        let rtt = Duration::from_millis(ctx.now().0.saturating_sub(sent_at.0));
        let vivaldi = self.config.vivaldi;
        self.coordinate.update(&vivaldi, &their, rtt.as_secs_f64());
        if let Some(view) = ctx.view_mut::<Membership>() {
            view.heard(&from, Some(rtt), Some(their), None);
        }
    }

    /// Applies one update and carries out what follows from it.
    fn learn<V: SignatureVerifier>(&mut self, ctx: &mut Context<'_, V>, update: Update) {
        let now = ctx.now();
        let Some(view) = ctx.view_mut::<Membership>() else {
            self.stats.without_membership += 1;
            return;
        };
        // What we relay is what we accepted: never a claimed incarnation we refused.
        let Some(update) = view.sanitize(&update, self.incarnation) else {
            return;
        };
        let addr_before = view.get(&update.member).and_then(|m| m.addr);
        let applied = view.apply(&update, now);
        let member = view.get(&update.member);
        let state = member.map(|m| (m.state, m.incarnation));
        let addr_after = member.and_then(|m| m.addr);
        if !matches!(applied, Applied::Joined { .. })
            && addr_after != addr_before
            && let Some(addr) = addr_after
        {
            ctx.emit(MemberAddressed {
                member: update.member,
                addr,
            });
        }
        match applied {
            Applied::Ignored => {}
            Applied::Joined { relay } => {
                // A member let go and taken back: whatever we suspected of it before
                // is older than this claim.
                self.forget_suspicion(&update.member);
                if relay {
                    self.dissemination.push(update);
                }
                self.stats.members_learned += 1;
                ctx.emit(MemberJoined {
                    member: update.member,
                    addr: update.addr,
                });
            }
            Applied::Relay => {
                self.stats.rumours_relayed += 1;
                self.dissemination.push(update);
            }
            Applied::AboutMe => self.refute(ctx, update.incarnation),
            Applied::Confirmed => self.confirm(ctx, update),
            Applied::Changed { from } => {
                self.dissemination.push(update);
                let Some((to, incarnation)) = state else {
                    return;
                };
                if to == MemberState::Suspect {
                    self.suspect(ctx, update.member, incarnation, update.by);
                } else {
                    self.forget_suspicion(&update.member);
                }
                if to != from {
                    ctx.emit(MemberChanged {
                        member: update.member,
                        from,
                        to,
                        incarnation,
                    });
                }
            }
        }
    }

    /// Sends `corrections` (if any) to `to` in one [`SwimMessage::Updates`].
    fn send_corrections<V: SignatureVerifier>(
        &mut self,
        ctx: &mut Context<'_, V>,
        to: AgentId,
        corrections: Vec<Update>,
    ) {
        if corrections.is_empty() {
            return;
        }
        self.stats.corrections_sent += 1;
        let payload = postcard::to_allocvec(&SwimMessage::Updates {
            updates: corrections,
        })
        .unwrap_or_default();
        ctx.send(to, MessageKind::Membership, &payload);
    }

    /// The alive claim to send back when `update` accuses another member at an
    /// incarnation older than the one this node knows it alive at: the sender missed
    /// a refutation. `None` for any other update (accusations of this node are
    /// answered in `on_message`).
    fn fresher_claim<V: SignatureVerifier>(
        &self,
        ctx: &mut Context<'_, V>,
        update: &Update,
    ) -> Option<Update> {
        if !matches!(update.claim, Claim::Suspect | Claim::Dead) {
            return None;
        }
        if update.member == ctx.id() {
            // Answered after all updates are learned (see `on_message`).
            return None;
        }
        let view = ctx.view_mut::<Membership>()?;
        let member = view.get(&update.member)?;
        // Without the address: this node may have it second-hand, and the receiver
        // takes a newer claim's address over its own.
        (member.state == MemberState::Alive && member.incarnation > update.incarnation).then_some(
            Update {
                member: update.member,
                incarnation: member.incarnation,
                claim: Claim::Alive,
                by: update.member,
                addr: None,
            },
        )
    }

    /// Someone accuses us. At our incarnation (or later): come back at a higher one.
    /// At an older one, the accuser missed our last refutation: announce the current
    /// incarnation again (no new refutation, nothing against our health).
    fn refute<V: SignatureVerifier>(&mut self, ctx: &mut Context<'_, V>, accused_at: u64) {
        if accused_at >= self.incarnation {
            self.incarnation = accused_at.saturating_add(1);
            self.stats.refutations += 1;
            if self.config.lifeguard {
                self.health.worse();
            }
        }
        let me = ctx.id();
        self.announce(me);
    }

    /// Queues this node's alive claim (with its address) for dissemination: how a
    /// refutation spreads, and how the mesh hears of a joiner.
    fn announce(&mut self, me: AgentId) {
        let own = self.own_claim(me);
        self.dissemination.push(own);
    }

    /// This node's alive claim at its current incarnation, with its address.
    fn own_claim(&self, me: AgentId) -> Update {
        Update {
            member: me,
            incarnation: self.incarnation,
            claim: Claim::Alive,
            by: me,
            addr: self.config.advertise,
        }
    }

    fn cluster_label<V: SignatureVerifier>(&self, ctx: &mut Context<'_, V>) -> (AgentId, u8) {
        let me = ctx.id();
        ctx.view_mut::<Membership>()
            .map_or((me, 0), |view| view.cluster_label())
    }

    fn suspect<V: SignatureVerifier>(
        &mut self,
        ctx: &mut Context<'_, V>,
        member: AgentId,
        incarnation: u64,
        by: AgentId,
    ) {
        self.forget_suspicion(&member);
        self.next_suspicion += 1;
        let token = self.next_suspicion & LOW;
        self.suspicion_tokens.insert(token, member);
        self.suspicions.insert(
            member,
            Suspicion {
                incarnation,
                started: ctx.now(),
                accusers: vec![by],
                token,
            },
        );
        let timeout = self.suspicion_timeout(ctx, 0);
        ctx.set_timer(timeout, SUSPICION | token);
    }

    /// Another accuser suspects the same member at the same incarnation: with
    /// Lifeguard, the timeout shrinks; the timer already set finds the earlier
    /// deadline when it fires, so a sooner one is set.
    fn confirm<V: SignatureVerifier>(&mut self, ctx: &mut Context<'_, V>, update: Update) {
        if !self.config.lifeguard {
            return;
        }
        let cap = self.config.suspicion_confirmations as usize + 1;
        let Some(suspicion) = self.suspicions.get_mut(&update.member) else {
            return;
        };
        if suspicion.incarnation != update.incarnation
            || suspicion.accusers.contains(&update.by)
            || suspicion.accusers.len() >= cap
        {
            return;
        }
        suspicion.accusers.push(update.by);
        let (started, token) = (suspicion.started, suspicion.token);
        let confirmations = u32::try_from(suspicion.accusers.len() - 1).unwrap_or(u32::MAX);
        self.dissemination.push(update);
        let deadline = started.0 + millis(self.suspicion_timeout(ctx, confirmations));
        let after = Duration::from_millis(deadline.saturating_sub(ctx.now().0));
        ctx.set_timer(after, SUSPICION | token);
    }

    fn suspicion_timeout<V: SignatureVerifier>(
        &self,
        ctx: &Context<'_, V>,
        confirmations: u32,
    ) -> Duration {
        let members = ctx.peers().len() + 1;
        let (max, expected) = if self.config.lifeguard {
            (
                self.config.suspicion_max_multiplier,
                self.config.suspicion_confirmations,
            )
        } else {
            (1, 0)
        };
        suspicion_timeout(
            members,
            self.config.probe_interval,
            self.config.suspicion_min_multiplier,
            max,
            expected,
            confirmations,
        )
    }

    fn forget_suspicion(&mut self, member: &AgentId) {
        if let Some(suspicion) = self.suspicions.remove(member) {
            self.suspicion_tokens.remove(&suspicion.token);
        }
    }

    /// A suspicion timer fired: dead if still suspect at the same incarnation and the
    /// (possibly shortened) timeout has passed; otherwise wait for the rest.
    fn suspicion_fired<V: SignatureVerifier>(&mut self, ctx: &mut Context<'_, V>, token: u64) {
        let Some(member) = self.suspicion_tokens.get(&token).copied() else {
            return;
        };
        let Some(suspicion) = self.suspicions.get(&member) else {
            return;
        };
        let confirmations =
            u32::try_from(suspicion.accusers.len().saturating_sub(1)).unwrap_or(u32::MAX);
        let deadline = suspicion.started.0 + millis(self.suspicion_timeout(ctx, confirmations));
        let incarnation = suspicion.incarnation;
        // The view may have let the member go (a reserve entry replaced) and taken it
        // back on a later claim while this timer ran: only a member still suspect at
        // the suspicion's incarnation is buried.
        let still_suspect = ctx.view_mut::<Membership>().is_some_and(|view| {
            view.get(&member)
                .is_some_and(|m| m.state == MemberState::Suspect && m.incarnation == incarnation)
        });
        if !still_suspect {
            self.forget_suspicion(&member);
            return;
        }
        let now = ctx.now().0;
        if now < deadline {
            ctx.set_timer(Duration::from_millis(deadline - now), SUSPICION | token);
            return;
        }
        self.forget_suspicion(&member);
        self.stats.deaths_declared += 1;
        let me = ctx.id();
        self.learn(
            ctx,
            Update {
                member,
                incarnation,
                claim: Claim::Dead,
                by: me,
                addr: None,
            },
        );
    }

    fn on_message<V: SignatureVerifier>(
        &mut self,
        ctx: &mut Context<'_, V>,
        from: AgentId,
        message: SwimMessage,
    ) {
        // A sender we do not know is taken in when it probes us from its view (it
        // holds us, so we may well hold it), and otherwise only through what it says
        // of itself (its alive claim, its shuffle's first entry): the pings of another
        // node's reachability check must not fill our reserve.
        let probes_us = matches!(message, SwimMessage::Ping { in_view: true, .. });
        let stranger = probes_us
            && ctx
                .view_mut::<Membership>()
                .is_some_and(|view| view.get(&from).is_none());
        if stranger {
            self.learn_entries(
                ctx,
                &[Entry {
                    member: from,
                    incarnation: 0,
                    addr: None,
                }],
            );
        }
        let mut corrections = Vec::new();
        let mut accusers = Vec::new();
        let me = ctx.id();
        for update in message.updates() {
            if let Some(fresh) = self.fresher_claim(ctx, update) {
                corrections.push(fresh);
            }
            if update.member == me && matches!(update.claim, Claim::Suspect | Claim::Dead) {
                accusers.push((update.by, update.incarnation));
            }
            self.learn(ctx, *update);
        }
        if self.left {
            return;
        }
        // Accused: the sender (often a relay, running its own suspicion) gets this
        // node's claim at its incarnation after the refutation, whatever the
        // accusation's incarnation was.
        if !accusers.is_empty() {
            corrections.push(self.own_claim(me));
        }
        // One message in, at most one correction out to its sender, never answered: no
        // storm.
        self.send_corrections(ctx, from, corrections);
        // An accused node also tells its accuser its current incarnation directly,
        // once per accusation (the same one comes by many hops, its incarnation
        // lowered by some): the accuser's suspicion is the one that would bury it, and
        // a refutation's rumour can miss one node. One per inbound message: a sender
        // naming made-up accusers gets at most two small messages out of each of its
        // own (and none to an id without an address). The accuser is often in
        // neither view nor reserve here.
        let current = self.incarnation;
        let accuser = accusers
            .into_iter()
            .map(|(accuser, incarnation)| (accuser, incarnation.min(current)))
            .find(|key| key.0 != me && key.0 != from && !self.accusers_corrected.contains(key));
        if let Some(key) = accuser {
            if self.accusers_corrected.len() >= ACCUSERS_REMEMBERED {
                self.accusers_corrected.pop_front();
            }
            self.accusers_corrected.push_back(key);
            let own = self.own_claim(me);
            self.send_corrections(ctx, key.0, vec![own]);
        }
        match message {
            SwimMessage::Ping {
                seq,
                coordinate,
                cluster,
                in_view,
                ..
            } => {
                if in_view {
                    self.last_pinged = Some(ctx.now());
                }
                if let Some(view) = ctx.view_mut::<Membership>() {
                    view.heard(&from, None, Some(coordinate), Some(cluster));
                }
                let ours = self.coordinate;
                let cluster = self.cluster_label(ctx);
                self.send(ctx, from, |updates| SwimMessage::Ack {
                    seq,
                    coordinate: ours,
                    cluster,
                    updates,
                });
            }
            SwimMessage::Ack {
                seq,
                coordinate,
                cluster,
                ..
            } => {
                if let Some(view) = ctx.view_mut::<Membership>() {
                    view.heard(&from, None, None, Some(cluster));
                }
                self.measure(ctx, seq, from, coordinate);
                if !self.check_answered(seq, from) && !self.answered(seq) {
                    self.relay_answered(ctx, seq, from);
                }
            }
            SwimMessage::Shuffle { entries, join, .. } => {
                let ours = self.entries_to_offer(ctx, Some(from));
                self.send(ctx, from, |updates| SwimMessage::ShuffleReply {
                    entries: ours,
                    updates,
                });
                // The sender's own entry comes first: a joiner is known from here on.
                // It is placed before the rest are learned, which could evict it from a
                // full reserve.
                let (own, rest) = entries.split_at(entries.len().min(1));
                self.learn_entries(ctx, own);
                if join {
                    let (taken, believed) =
                        ctx.view_mut::<Membership>().map_or((false, None), |view| {
                            (view.take_into_view(&from), view.get(&from).map(|m| m.state))
                        });
                    if taken {
                        self.stats.promotions += 1;
                    } else if matches!(believed, Some(MemberState::Suspect | MemberState::Dead)) {
                        // It asks for a place while we believe it down: tell it (the
                        // ping carries the claim), so it refutes and its next ask works.
                        self.seq += 1;
                        let seq = self.seq;
                        self.ping(ctx, from, seq);
                    }
                }
                self.learn_entries(ctx, rest);
            }
            SwimMessage::ShuffleReply { entries, .. } => self.learn_entries(ctx, &entries),
            // Its updates were all it carried.
            SwimMessage::Updates { .. } => {}
            SwimMessage::PingReq { seq, target, .. } => self.relay(ctx, from, seq, target),
            SwimMessage::IndirectAck { seq, target, .. } => {
                if self.probe.is_some_and(|p| p.target == target) {
                    self.answered(seq);
                }
            }
            SwimMessage::Nack { seq, target, .. } => {
                if let Some(probe) = self
                    .probe
                    .as_mut()
                    .filter(|p| p.seq == seq && p.target == target)
                {
                    probe.nacks += 1;
                    self.stats.nacks_received += 1;
                }
            }
        }
    }

    /// Pings `target` for `requester`'s indirect probe.
    fn relay<V: SignatureVerifier>(
        &mut self,
        ctx: &mut Context<'_, V>,
        requester: AgentId,
        their_seq: u64,
        target: AgentId,
    ) {
        let known = ctx.peers().contains(&target) && target != ctx.id();
        if !known || self.relays.len() >= self.config.max_indirect_pending {
            self.stats.relays_declined += 1;
            return;
        }
        self.seq += 1;
        let seq = self.seq;
        self.relays.insert(
            seq,
            Relay {
                requester,
                their_seq,
                target,
            },
        );
        let coordinate = self.coordinate;
        let cluster = self.cluster_label(ctx);
        self.sent_ping(seq, target, ctx.now());
        // For a requester that probes `target` from its view.
        self.send(ctx, target, |updates| SwimMessage::Ping {
            seq,
            coordinate,
            cluster,
            in_view: true,
            updates,
        });
        ctx.set_timer(self.config.probe_timeout, RELAY_TIMEOUT | (seq & LOW));
    }

    fn relay_answered<V: SignatureVerifier>(
        &mut self,
        ctx: &mut Context<'_, V>,
        seq: u64,
        from: AgentId,
    ) {
        let Some(relay) = self.relays.get(&seq).copied().filter(|r| r.target == from) else {
            return;
        };
        self.relays.remove(&seq);
        let (their_seq, target) = (relay.their_seq, relay.target);
        self.send(ctx, relay.requester, |updates| SwimMessage::IndirectAck {
            seq: their_seq,
            target,
            updates,
        });
    }

    fn relay_timed_out<V: SignatureVerifier>(&mut self, ctx: &mut Context<'_, V>, seq: u64) {
        let Some(relay) = self.relays.remove(&seq) else {
            return;
        };
        if self.config.lifeguard {
            let (their_seq, target) = (relay.their_seq, relay.target);
            self.send(ctx, relay.requester, |updates| SwimMessage::Nack {
                seq: their_seq,
                target,
                updates,
            });
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl<V: SignatureVerifier> Layer<V> for SwimLayer {
    fn kinds(&self) -> &'static [MessageKind] {
        KINDS
    }

    fn start(&mut self, ctx: &mut Context<'_, V>) {
        self.generation += 1;
        self.probe = None;
        self.left = false;
        self.last_pinged = None;
        // Join: the mesh hears of this node from its alive claim, and a first shuffle
        // with a seed brings members beyond the seeds.
        if self.config.announce_on_start {
            let me = ctx.id();
            self.announce(me);
        }
        self.shuffle(ctx, true);
        // A random point of the first period, so nodes started together do not probe
        // in lock step.
        let period = millis(self.config.probe_interval).max(1);
        let first = rand::Rng::random_range(ctx.rng(), 0..period);
        ctx.set_timer(Duration::from_millis(first), TICK | (self.generation & LOW));
    }

    fn handle_message(
        &mut self,
        ctx: &mut Context<'_, V>,
        from: AgentId,
        _kind: MessageKind,
        payload: &[u8],
    ) {
        let message = match postcard::from_bytes::<SwimMessage>(payload) {
            Ok(message)
                if message.updates().len() <= MAX_UPDATES_PER_MESSAGE
                    && message.entries().len() <= MAX_ENTRIES_PER_MESSAGE =>
            {
                message
            }
            _ => {
                self.stats.messages_refused += 1;
                ctx.charge(from, RejectReason::BadPayload);
                return;
            }
        };
        self.on_message(ctx, from, message);
    }

    fn handle_timer(&mut self, ctx: &mut Context<'_, V>, token: u64) {
        let low = token & LOW;
        match token & !LOW {
            TICK if low == self.generation & LOW => self.tick(ctx),
            PROBE_TIMEOUT => self.probe_timed_out(ctx, low),
            RELAY_TIMEOUT => self.relay_timed_out(ctx, low),
            CHECK_TIMEOUT => self.check_timed_out(ctx, low),
            SUSPICION => self.suspicion_fired(ctx, low),
            _ => {}
        }
    }

    fn approx_memory_bytes(&self) -> usize {
        self.order.capacity() * 32
            + self.relays.len() * 96
            + self.suspicions.len() * 160
            + self.dissemination.len() * 96
    }
}
