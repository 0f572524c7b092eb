//! [`Membership`]: the node's bounded peer view, kept by the failure detector.
//!
//! Two tiers, as HyParView has: the **view** (at most [`ViewConfig::active`] members,
//! each probed by SWIM and chosen as a gossip peer, with round trips and coordinate)
//! and the **reserve** (at most [`ViewConfig::reserve`] members known with their state
//! and address but not probed; the view refills from it). Members are learned from
//! alive claims, shuffles and frames of admitted strangers; when a tier is full a
//! newcomer replaces a random entry (the dead first), so what a node knows stays a
//! random sample of the mesh, never a full list.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use knhk_endpoint::{PeerView, Reachability};
use knhk_types::{AgentId, UnixMillis};
use rand::Rng;

use crate::message::{Claim, Entry, Update};
use crate::rtt::RttEstimate;
use crate::vivaldi::Coordinate;

/// The most an alive claim may raise a member's incarnation over the one we know
/// (each refutation raises it by one; a node that missed many still catches up).
pub const MAX_INCARNATION_JUMP: u64 = 1_024;

/// Hops a cluster label may travel from the member it names: a stale label (of a
/// member gone) dies out after this many probe periods.
pub const MAX_CLUSTER_HOPS: u8 = 16;

/// What this node believes about a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberState {
    /// Answering probes (or not yet suspected).
    Alive,
    /// A probe failed; dead unless it refutes (or answers) before the suspicion
    /// timeout.
    Suspect,
    /// Suspected for the whole timeout. Still known (its frames are still accepted,
    /// so it can refute), but never chosen as a peer.
    Dead,
    /// Announced that it left. Never chosen, and not counted for the quorum; it
    /// returns only by announcing a higher incarnation.
    Left,
}

/// Who may be a member: the admission below the view (a certificate check, an
/// allow-list, the simulator's member list). A sender this admits is taken into the
/// view or reserve on its first frame.
pub type Directory = Arc<dyn Fn(&AgentId) -> bool + Send + Sync>;

/// Shape of a [`Membership`].
#[derive(Clone)]
pub struct ViewConfig {
    /// Members probed by the failure detector and chosen as gossip peers. Default 32.
    pub active: usize,
    /// Members known (state and address) but not probed, to refill the view from.
    /// Default 256.
    pub reserve: usize,
    /// Shares of peer choices that go to the near, mid and far third of the view
    /// (ranked by measured round trip, or coordinate distance before one). Each choice
    /// draws its third by these weights, so even a fanout of 1 reaches far members
    /// (a rumour never stays inside one cluster). Default `[50, 30, 20]`; `[1, 1, 1]`
    /// is uniform.
    pub ring_shares: [u32; 3],
    /// Members within this round trip of each other form a cluster. Default 20 ms.
    pub cluster_rtt: Duration,
    /// Accusations about members we do not know are relayed once each: how many we
    /// remember having relayed. Default 4,096.
    pub relay_memory: usize,
    /// Who may be a member beyond those in the view and reserve; `None`: only them.
    pub directory: Option<Directory>,
}

impl Default for ViewConfig {
    fn default() -> Self {
        Self {
            active: 32,
            reserve: 256,
            ring_shares: [50, 30, 20],
            cluster_rtt: Duration::from_millis(20),
            relay_memory: 4_096,
            directory: None,
        }
    }
}

impl std::fmt::Debug for ViewConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ViewConfig")
            .field("active", &self.active)
            .field("reserve", &self.reserve)
            .field("ring_shares", &self.ring_shares)
            .field("cluster_rtt", &self.cluster_rtt)
            .field("relay_memory", &self.relay_memory)
            .field("directory", &self.directory.is_some())
            .finish()
    }
}

/// One member of the view.
#[derive(Clone, Debug)]
pub struct Member {
    /// Its identity.
    pub id: AgentId,
    /// What we believe.
    pub state: MemberState,
    /// The member's incarnation we know of (only the member raises it).
    pub incarnation: u64,
    /// When `state` last changed, by our clock.
    pub since: UnixMillis,
    /// Where it listens, if it told us.
    pub addr: Option<SocketAddr>,
    /// Round trips measured by our direct probes.
    pub rtt: RttEstimate,
    /// Its Vivaldi coordinate, as it last told us.
    pub coordinate: Option<Coordinate>,
    /// The cluster label it last told us (the least member id it knows within the
    /// cluster round trip) and how many hops that label travelled.
    pub cluster: Option<(AgentId, u8)>,
    /// Times we saw it go from alive or suspect to dead (a member that keeps coming
    /// back flaps: a slow node, or a flaky link).
    pub deaths: u32,
}

impl Member {
    fn new(
        id: AgentId,
        incarnation: u64,
        state: MemberState,
        addr: Option<SocketAddr>,
        since: UnixMillis,
    ) -> Self {
        Self {
            id,
            state,
            incarnation,
            since,
            addr,
            rtt: RttEstimate::default(),
            coordinate: None,
            cluster: None,
            deaths: 0,
        }
    }

    /// What we would tell others of it in a shuffle.
    fn entry(&self) -> Entry {
        Entry {
            member: self.id,
            incarnation: self.incarnation,
            addr: self.addr,
        }
    }
}

/// What applying an update did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// Nothing: old news, or an accusation about a member we do not know that we
    /// already relayed.
    Ignored,
    /// The same suspicion again (from `by`): a confirmation.
    Confirmed,
    /// The member's state or incarnation changed (from `from` to the update's claim).
    Changed {
        /// The state before.
        from: MemberState,
    },
    /// A member we did not know, now in the view or reserve; `relay` unless we had
    /// relayed this very claim already (within the relay memory).
    Joined {
        /// True if the claim is to be passed on.
        relay: bool,
    },
    /// An accusation about a member we do not know (but the directory admits): not
    /// stored, relayed once.
    Relay,
    /// The update accuses this node (suspect or dead): at its incarnation or later it
    /// must refute with a higher one; at an older one, it re-announces the current one.
    AboutMe,
}

/// Where a known member is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tier {
    View(usize),
    Reserve(usize),
}

/// The members a node knows, in a bounded view and reserve (see the module docs). As
/// a [`PeerView`]: peers are sampled among view members alive or suspect, near, mid
/// and far by [`ViewConfig::ring_shares`]; every known member (and anyone the
/// [`ViewConfig::directory`] admits) may send, so a member wrongly declared dead can
/// refute.
#[derive(Clone, Debug)]
pub struct Membership {
    me: AgentId,
    config: ViewConfig,
    members: Vec<Member>,
    reserve: Vec<Member>,
    index: HashMap<AgentId, Tier>,
    /// View members neither dead nor gone.
    not_dead: usize,
    /// Ring (0 near, 1 mid, 2 far) of each view member, by [`Membership::rerank`].
    rings: Vec<u8>,
    cluster: (AgentId, u8),
    relayed: HashSet<(AgentId, u64, Claim)>,
    relayed_order: VecDeque<(AgentId, u64, Claim)>,
    check: Option<Reachability>,
}

impl Membership {
    /// The view of `me` over `seeds` (duplicates and `me` dropped), all alive at
    /// incarnation 0, as of `now`, with the default [`ViewConfig`]: the first 32 in the
    /// view, the next 256 in the reserve, the rest dropped.
    pub fn new(me: AgentId, seeds: impl IntoIterator<Item = AgentId>, now: UnixMillis) -> Self {
        Self::with_config(me, seeds, now, ViewConfig::default())
    }

    /// As [`Membership::new`], shaped by `config` (an `active` of 0 is taken as 1).
    pub fn with_config(
        me: AgentId,
        seeds: impl IntoIterator<Item = AgentId>,
        now: UnixMillis,
        mut config: ViewConfig,
    ) -> Self {
        config.active = config.active.max(1);
        let mut view = Self {
            me,
            config,
            members: Vec::new(),
            reserve: Vec::new(),
            index: HashMap::new(),
            not_dead: 0,
            rings: Vec::new(),
            cluster: (me, 0),
            relayed: HashSet::new(),
            relayed_order: VecDeque::new(),
            check: None,
        };
        for id in seeds {
            if view.members.len() >= view.config.active && view.reserve.len() >= view.config.reserve
            {
                break;
            }
            view.insert(Member::new(id, 0, MemberState::Alive, None, now));
        }
        view
    }

    /// This node's identity.
    pub fn me(&self) -> AgentId {
        self.me
    }

    /// The view's shape.
    pub fn config(&self) -> &ViewConfig {
        &self.config
    }

    /// The view's members (never this node): those probed and chosen as peers.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// The reserve: members known but not probed.
    pub fn reserve(&self) -> &[Member] {
        &self.reserve
    }

    /// The member `id`, in the view or the reserve.
    pub fn get(&self, id: &AgentId) -> Option<&Member> {
        match self.index.get(id)? {
            Tier::View(at) => self.members.get(*at),
            Tier::Reserve(at) => self.reserve.get(*at),
        }
    }

    /// True if `id` is in the view (not only the reserve).
    pub fn in_view(&self, id: &AgentId) -> bool {
        matches!(self.index.get(id), Some(Tier::View(_)))
    }

    pub(crate) fn get_mut(&mut self, id: &AgentId) -> Option<&mut Member> {
        match self.index.get(id)? {
            Tier::View(at) => self.members.get_mut(*at),
            Tier::Reserve(at) => self.reserve.get_mut(*at),
        }
    }

    /// View members in `state`.
    pub fn count(&self, state: MemberState) -> usize {
        self.members.iter().filter(|m| m.state == state).count()
    }

    /// Bytes this view holds, roughly (what the simulator reports per node).
    pub fn memory_bytes(&self) -> usize {
        let member = std::mem::size_of::<Member>() + 48;
        (self.members.capacity() + self.reserve.capacity()) * member
            + self.relayed_order.len() * 120
            + self.rings.capacity()
    }

    /// This node's cluster: the least member id within [`ViewConfig::cluster_rtt`]
    /// (transitively, as labels travel), this node's own when it has no near member.
    pub fn cluster(&self) -> AgentId {
        self.cluster.0
    }

    /// The label this node tells others (its cluster and the hops it travelled).
    pub fn cluster_label(&self) -> (AgentId, u8) {
        self.cluster
    }

    /// True if the directory (or the view itself) admits `id` as a member.
    fn admits(&self, id: &AgentId) -> bool {
        self.index.contains_key(id)
            || self
                .config
                .directory
                .as_ref()
                .is_some_and(|admit| admit(id))
    }

    /// Puts `member` in the view if it has room, else in the reserve, replacing an
    /// entry (a dead or gone one first, else one picked by hashing both ids, so nodes
    /// evict different entries and a stream of newcomers spreads over the reserve)
    /// when that is full. Returns false if it was already known (nothing changed).
    fn insert(&mut self, member: Member) -> bool {
        if member.id == self.me || self.index.contains_key(&member.id) {
            return false;
        }
        if self.members.len() < self.config.active {
            self.place_in_view(member);
            return true;
        }
        if self.config.reserve == 0 {
            return false;
        }
        if self.reserve.len() >= self.config.reserve {
            let gone = self
                .reserve
                .iter()
                .position(|m| matches!(m.state, MemberState::Dead | MemberState::Left));
            let victim = gone.unwrap_or_else(|| spread(&member.id, &self.me, self.reserve.len()));
            self.remove_from_reserve(victim);
        }
        self.index
            .insert(member.id, Tier::Reserve(self.reserve.len()));
        self.reserve.push(member);
        true
    }

    fn place_in_view(&mut self, member: Member) {
        if matches!(member.state, MemberState::Alive | MemberState::Suspect) {
            self.not_dead += 1;
        }
        self.index.insert(member.id, Tier::View(self.members.len()));
        self.members.push(member);
        self.rings.push(2);
    }

    fn remove_from_reserve(&mut self, at: usize) -> Member {
        let member = self.reserve.swap_remove(at);
        self.index.remove(&member.id);
        if let Some(moved) = self.reserve.get(at) {
            self.index.insert(moved.id, Tier::Reserve(at));
        }
        member
    }

    fn remove_from_view(&mut self, at: usize) -> Member {
        let member = self.members.swap_remove(at);
        self.rings.swap_remove(at);
        self.index.remove(&member.id);
        if matches!(member.state, MemberState::Alive | MemberState::Suspect) {
            self.not_dead -= 1;
        }
        if let Some(moved) = self.members.get(at) {
            self.index.insert(moved.id, Tier::View(at));
        }
        member
    }

    /// A member we heard of (a shuffle entry, an admitted stranger's first frame):
    /// taken in as alive at its incarnation if the directory admits it and we did not
    /// know it. Returns true if it was new.
    pub fn learn_entry(&mut self, entry: &Entry, now: UnixMillis) -> bool {
        if entry.member == self.me || !self.admits(&entry.member) {
            return false;
        }
        if let Some(member) = self.get_mut(&entry.member) {
            if member.addr.is_none() {
                member.addr = entry.addr;
            }
            return false;
        }
        let member = Member::new(
            entry.member,
            entry.incarnation,
            MemberState::Alive,
            entry.addr,
            now,
        );
        self.insert(member)
    }

    /// Up to `k` random members, view and reserve, alive or suspect (for a shuffle).
    pub fn sample_entries(&self, k: usize, rng: &mut dyn rand::RngCore) -> Vec<Entry> {
        let total = self.members.len() + self.reserve.len();
        let mut out: Vec<Entry> = Vec::with_capacity(k);
        let mut attempts = 0;
        while out.len() < k && attempts < 4 * (k + 1) && total > 0 {
            attempts += 1;
            let at = rng.random_range(0..total);
            let member = if at < self.members.len() {
                &self.members[at]
            } else {
                &self.reserve[at - self.members.len()]
            };
            let usable = matches!(member.state, MemberState::Alive | MemberState::Suspect);
            if usable && !out.iter().any(|e| e.member == member.id) {
                out.push(member.entry());
            }
        }
        out
    }

    /// What an update may claim, before [`Membership::apply`]: incarnations are
    /// raised only by their member, so an accusation (suspect, dead) above the
    /// incarnation we know is brought down to it (an honest accuser cannot know more,
    /// except of a refutation that clears the accusation anyway), and an alive claim
    /// more than [`MAX_INCARNATION_JUMP`] above it is dropped. Without this one member
    /// could bury another for good: a death at `u64::MAX` cannot be refuted. A leave
    /// is taken only from the member itself (`by`). Updates about members we do not
    /// know pass unchanged (an alive claim joins them if the directory admits them;
    /// an accusation is only relayed). `my_incarnation` is this node's own. Returns
    /// `None` for an update to drop.
    pub fn sanitize(&self, update: &Update, my_incarnation: u64) -> Option<Update> {
        let known = if update.member == self.me {
            Some(my_incarnation)
        } else {
            self.get(&update.member).map(|m| m.incarnation)
        };
        let mut update = *update;
        if update.claim == Claim::Left && update.by != update.member {
            return None;
        }
        let Some(known) = known else {
            return Some(update);
        };
        match update.claim {
            Claim::Suspect | Claim::Dead => update.incarnation = update.incarnation.min(known),
            Claim::Alive | Claim::Left
                if update.incarnation > known.saturating_add(MAX_INCARNATION_JUMP) =>
            {
                return None;
            }
            Claim::Alive | Claim::Left => {}
        }
        Some(update)
    }

    /// Applies `update` by SWIM's precedence (memberlist's rules): a higher incarnation
    /// wins; at one incarnation, suspect beats alive and dead beats both; a dead member
    /// returns only as alive at a higher incarnation; a leave beats everything at its
    /// incarnation. An update about this node that suspects or buries it is
    /// [`Applied::AboutMe`] (the caller compares incarnations to refute or only
    /// re-announce). An alive claim about a member we do not know takes it in (if the
    /// directory admits it); an accusation about one is relayed once.
    pub fn apply(&mut self, update: &Update, now: UnixMillis) -> Applied {
        if update.member == self.me {
            let accuses = matches!(update.claim, Claim::Suspect | Claim::Dead);
            return if accuses {
                Applied::AboutMe
            } else {
                Applied::Ignored
            };
        }
        let Some(tier) = self.index.get(&update.member).copied() else {
            return self.apply_unknown(update, now);
        };
        let member = match tier {
            Tier::View(at) => &mut self.members[at],
            Tier::Reserve(at) => &mut self.reserve[at],
        };
        let from = member.state;
        let newer = update.incarnation > member.incarnation;
        let same = update.incarnation == member.incarnation;
        // A member first taken in without an address (a seed, an in-view ping, a
        // shuffle entry from a node that had none) takes the first one a current alive
        // claim carries, even when the claim is old news otherwise. An address known
        // already changes only with a newer incarnation (a restart), below.
        if same && update.claim == Claim::Alive && member.addr.is_none() {
            member.addr = update.addr;
        }
        use MemberState::{Alive, Dead, Left, Suspect};
        let to = match (update.claim, member.state) {
            (Claim::Alive, _) if newer => Alive,
            (Claim::Left, Left) => return Applied::Ignored,
            (Claim::Left, _) if newer || same => Left,
            (_, Left) => return Applied::Ignored,
            (Claim::Suspect, Suspect) if same => return Applied::Confirmed,
            (Claim::Suspect, Alive | Suspect) if newer || same => Suspect,
            (Claim::Dead, Alive | Suspect) if newer || same => Dead,
            (Claim::Suspect | Claim::Dead, Dead) if newer => match update.claim {
                Claim::Dead => Dead,
                _ => Suspect,
            },
            _ => return Applied::Ignored,
        };
        if to == from && !newer {
            return Applied::Ignored;
        }
        member.incarnation = update.incarnation.max(member.incarnation);
        member.state = to;
        if update.claim == Claim::Alive && update.addr.is_some() {
            member.addr = update.addr;
        }
        if to != from {
            member.since = now;
            let counted = |s: MemberState| matches!(s, Alive | Suspect);
            if matches!(to, Dead) {
                member.deaths = member.deaths.saturating_add(1);
            }
            if let Tier::View(_) = tier {
                match (counted(from), counted(to)) {
                    (false, true) => self.not_dead += 1,
                    (true, false) => self.not_dead -= 1,
                    _ => {}
                }
            }
        }
        Applied::Changed { from }
    }

    fn apply_unknown(&mut self, update: &Update, now: UnixMillis) -> Applied {
        match update.claim {
            Claim::Alive => {
                if !self.admits(&update.member) {
                    return Applied::Ignored;
                }
                let member = Member::new(
                    update.member,
                    update.incarnation,
                    MemberState::Alive,
                    update.addr,
                    now,
                );
                if !self.insert(member) {
                    return Applied::Ignored;
                }
                let relay = self.first_relay((update.member, update.incarnation, Claim::Alive));
                Applied::Joined { relay }
            }
            // Only about members the directory admits: accusations about made-up ids
            // would fill the relay memory and every piggyback for nothing.
            Claim::Suspect | Claim::Dead | Claim::Left if !self.admits(&update.member) => {
                Applied::Ignored
            }
            Claim::Suspect | Claim::Dead | Claim::Left => {
                if self.first_relay((update.member, update.incarnation, update.claim)) {
                    Applied::Relay
                } else {
                    Applied::Ignored
                }
            }
        }
    }

    /// True the first time (within the relay memory) this claim is seen: it is then
    /// remembered. A member a full reserve forgot and learns again from an old alive
    /// claim must not set the claim travelling again (an echo that would crowd out
    /// fresh news from every piggyback).
    fn first_relay(&mut self, key: (AgentId, u64, Claim)) -> bool {
        if self.config.relay_memory == 0 || self.relayed.contains(&key) {
            return false;
        }
        if self.relayed_order.len() >= self.config.relay_memory
            && let Some(old) = self.relayed_order.pop_front()
        {
            self.relayed.remove(&old);
        }
        self.relayed.insert(key);
        self.relayed_order.push_back(key);
        true
    }

    /// Records the round trip `rtt` to `id` and the coordinate and cluster label it
    /// sent (ignored for members we do not know).
    pub(crate) fn heard(
        &mut self,
        id: &AgentId,
        rtt: Option<Duration>,
        coordinate: Option<Coordinate>,
        cluster: Option<(AgentId, u8)>,
    ) {
        if let Some(member) = self.get_mut(id) {
            if let Some(rtt) = rtt {
                member.rtt.record(rtt);
            }
            if let Some(coordinate) = coordinate.filter(Coordinate::is_valid) {
                member.coordinate = Some(coordinate);
            }
            if cluster.is_some() {
                member.cluster = cluster;
            }
        }
    }

    /// Keeps the view full and fresh, once a probe period: view members dead or gone
    /// for `replace_after` (and members that left, at once) give their place to a
    /// random alive member of the reserve, and an empty place is filled from it, but
    /// only while this node has a quorum (a minority never rebuilds its view from its
    /// own side of a cut, so it stays read-only until the heal). Returns the members
    /// that moved into the view.
    pub fn refill(
        &mut self,
        now: UnixMillis,
        replace_after: Duration,
        rng: &mut dyn rand::RngCore,
    ) -> Vec<AgentId> {
        let mut promoted = Vec::new();
        let quorum = self.reachability().has_quorum();
        let stale = |m: &Member| match m.state {
            MemberState::Left => true,
            MemberState::Dead => {
                now.0.saturating_sub(m.since.0) >= replace_after.as_millis() as u64
            }
            _ => false,
        };
        let mut at = 0;
        while at < self.members.len() {
            let gone = self.members[at].state == MemberState::Left;
            if (gone || quorum) && stale(&self.members[at]) && self.has_alive_reserve() {
                let old = self.remove_from_view(at);
                if let Some(id) = self.promote(rng) {
                    promoted.push(id);
                }
                self.insert(old);
                continue;
            }
            at += 1;
        }
        while self.members.len() < self.config.active && self.has_alive_reserve() {
            match self.promote(rng) {
                Some(id) => promoted.push(id),
                None => break,
            }
        }
        promoted
    }

    /// Swaps up to `count` random alive view members with random alive reserve
    /// members (the view's periodic rebalance, so a node that joined late is probed
    /// and chosen as often as one that was there first). Nothing while this node has
    /// no quorum. Returns the members that moved into the view.
    pub fn rebalance(&mut self, count: usize, rng: &mut dyn rand::RngCore) -> Vec<AgentId> {
        let mut promoted = Vec::new();
        if !self.reachability().has_quorum() {
            return promoted;
        }
        for _ in 0..count {
            if !self.has_alive_reserve() || self.members.is_empty() {
                break;
            }
            let at = rng.random_range(0..self.members.len());
            if self.members[at].state != MemberState::Alive {
                continue;
            }
            let old = self.remove_from_view(at);
            if let Some(id) = self.promote(rng) {
                promoted.push(id);
            }
            self.insert(old);
        }
        promoted
    }

    /// Moves reserve member `id` into the view (a joiner that chose us as its
    /// contact), sending a random alive view member to the reserve when the view is
    /// full. Returns false if `id` is not in the reserve or not alive.
    pub fn take_into_view(&mut self, id: &AgentId) -> bool {
        let Some(Tier::Reserve(at)) = self.index.get(id).copied() else {
            return false;
        };

        if self.reserve[at].state != MemberState::Alive {
            return false;
        }
        if self.members.len() >= self.config.active {
            let alive: Vec<usize> = (0..self.members.len())
                .filter(|at| self.members[*at].state == MemberState::Alive)
                .collect();
            let Some(&out) = alive.get(spread(id, &self.me, alive.len().max(1))) else {
                return false;
            };
            let member = self.remove_from_view(out);
            let at = match self.index.get(id) {
                Some(Tier::Reserve(at)) => *at,
                _ => return false,
            };
            let joiner = self.remove_from_reserve(at);
            self.place_in_view(joiner);
            self.insert(member);
        } else {
            let joiner = self.remove_from_reserve(at);
            self.place_in_view(joiner);
        }
        true
    }

    fn has_alive_reserve(&self) -> bool {
        self.reserve.iter().any(|m| m.state == MemberState::Alive)
    }

    /// Moves a random alive reserve member into the view (which may overflow by one
    /// until the caller makes room).
    fn promote(&mut self, rng: &mut dyn rand::RngCore) -> Option<AgentId> {
        let alive: Vec<usize> = (0..self.reserve.len())
            .filter(|at| self.reserve[*at].state == MemberState::Alive)
            .collect();
        let at = *alive.get(rng.random_range(0..alive.len().max(1)))?;
        let member = self.remove_from_reserve(at);
        let id = member.id;
        self.place_in_view(member);
        Some(id)
    }

    /// Ranks the view by distance (measured minimum round trip, else the distance
    /// between `own` and the member's coordinate, else unknown: far) into near, mid
    /// and far thirds, and recomputes this node's cluster label from the members
    /// within [`ViewConfig::cluster_rtt`]. Called once a probe period.
    pub fn rerank(&mut self, own: &Coordinate) {
        let distance = |m: &Member| -> f64 {
            if let Some(rtt) = m.rtt.min() {
                return rtt.as_secs_f64();
            }
            match &m.coordinate {
                Some(c) => own.distance_to(c),
                None => f64::INFINITY,
            }
        };
        let mut order: Vec<(f64, usize)> = self
            .members
            .iter()
            .enumerate()
            .map(|(at, m)| (distance(m), at))
            .collect();
        order.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let n = order.len();
        for (rank, (_, at)) in order.iter().enumerate() {
            self.rings[*at] = u8::try_from(rank * 3 / n.max(1)).unwrap_or(2).min(2);
        }
        let near = self.config.cluster_rtt.as_secs_f64();
        let mut best = (self.me, 0u8);
        for member in &self.members {
            if member.state != MemberState::Alive
                || distance(member) > near
                || distance(member).is_nan()
            {
                continue;
            }
            if let Some((label, hops)) = member.cluster
                && hops < MAX_CLUSTER_HOPS
                && (label, hops.saturating_add(1)) < best
            {
                best = (label, hops.saturating_add(1));
            }
            if (member.id, 1) < best {
                best = (member.id, 1);
            }
        }
        self.cluster = best;
    }

    /// The ring (0 near, 1 mid, 2 far) of view member `id`, as of the last rerank.
    pub fn ring_of(&self, id: &AgentId) -> Option<u8> {
        match self.index.get(id)? {
            Tier::View(at) => self.rings.get(*at).copied(),
            Tier::Reserve(_) => None,
        }
    }

    /// Reachable by the failure detector's states: this node and the view members
    /// believed alive (a suspect is not, until it answers or refutes); counted: this
    /// node and every view member but those that left (dead ones included), so the side
    /// of a cut with fewer than half of a node's view finds itself without a quorum.
    pub fn reachability_by_states(&self) -> Reachability {
        Reachability {
            reachable: self.count(MemberState::Alive) + 1,
            members: self
                .members
                .iter()
                .filter(|m| m.state != MemberState::Left)
                .count()
                + 1,
        }
    }

    /// The partition detector's latest sample, if current.
    pub fn reachability_check(&self) -> Option<Reachability> {
        self.check
    }

    /// Sets (or, with `None`, retires) the partition detector's sample, which then
    /// decides [`PeerView::reachability`].
    pub(crate) fn set_reachability_check(&mut self, check: Option<Reachability>) {
        self.check = check;
    }

    fn pick_ring(&self, rng: &mut dyn rand::RngCore, present: [bool; 3]) -> Option<u8> {
        let weights: Vec<u32> = (0..3)
            .map(|r| {
                if present[r] {
                    self.config.ring_shares[r]
                } else {
                    0
                }
            })
            .collect();
        let total: u32 = weights.iter().sum();
        if total == 0 {
            return (0..3u8).find(|r| present[*r as usize]);
        }
        let mut draw = rng.random_range(0..total);
        for (ring, weight) in weights.iter().enumerate() {
            if draw < *weight {
                return u8::try_from(ring).ok();
            }
            draw -= weight;
        }
        None
    }
}

/// A slot in `0..len` picked by hashing `a` with `b` (`len` > 0).
fn spread(a: &AgentId, b: &AgentId, len: usize) -> usize {
    let word = |id: &AgentId| {
        let bytes = id.as_bytes();
        let mut word = [0u8; 8];
        word.copy_from_slice(&bytes[..8]);
        u64::from_le_bytes(word)
    };
    let mixed = (word(a) ^ word(b).rotate_left(29)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (mixed % len.max(1) as u64) as usize
}

impl PeerView for Membership {
    fn sample_into(&self, k: usize, rng: &mut dyn rand::RngCore, out: &mut Vec<AgentId>) {
        let start = out.len();
        let mut rings: [Vec<AgentId>; 3] = Default::default();
        for (at, member) in self.members.iter().enumerate() {
            if matches!(member.state, MemberState::Alive | MemberState::Suspect) {
                rings[usize::from(self.rings[at].min(2))].push(member.id);
            }
        }
        while out.len() - start < k {
            let present = [
                !rings[0].is_empty(),
                !rings[1].is_empty(),
                !rings[2].is_empty(),
            ];
            let Some(ring) = self.pick_ring(rng, present) else {
                break;
            };
            let ring = &mut rings[usize::from(ring)];
            let at = rng.random_range(0..ring.len());
            out.push(ring.swap_remove(at));
        }
    }

    fn contains(&self, id: &AgentId) -> bool {
        self.admits(id)
    }

    fn len(&self) -> usize {
        self.not_dead
    }

    fn approx_memory_bytes(&self) -> usize {
        self.memory_bytes()
    }

    /// The last reachability check's sample while it is current (see
    /// [`Membership::reachability_by_states`] otherwise): this node and the members
    /// that answered it, of this node and those asked. The view is a random sample of
    /// the mesh, so either is the quorum of the mesh, estimated.
    fn reachability(&self) -> Reachability {
        self.check.unwrap_or_else(|| self.reachability_by_states())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rand::SeedableRng;

    fn id(n: u8) -> AgentId {
        AgentId::from_bytes([n; 32])
    }

    fn update(member: u8, incarnation: u64, claim: Claim) -> Update {
        Update {
            member: id(member),
            incarnation,
            claim,
            by: id(9),
            addr: None,
        }
    }

    const NOW: UnixMillis = UnixMillis(1_000);

    #[test]
    fn swim_precedence_by_incarnation_and_claim() {
        let mut view = Membership::new(id(0), [id(1), id(2)], NOW);
        assert_eq!(
            view.apply(&update(1, 0, Claim::Alive), NOW),
            Applied::Ignored
        );
        assert_eq!(
            view.apply(&update(1, 0, Claim::Suspect), NOW),
            Applied::Changed {
                from: MemberState::Alive
            }
        );
        assert_eq!(
            view.apply(&update(1, 0, Claim::Suspect), NOW),
            Applied::Confirmed
        );
        // Alive at the same incarnation does not clear a suspicion; a higher one does.
        assert_eq!(
            view.apply(&update(1, 0, Claim::Alive), NOW),
            Applied::Ignored
        );
        assert_eq!(
            view.apply(&update(1, 1, Claim::Alive), NOW),
            Applied::Changed {
                from: MemberState::Suspect
            }
        );
        // Dead beats alive at its incarnation; an old alive cannot revive it.
        assert_eq!(
            view.apply(&update(1, 1, Claim::Dead), NOW),
            Applied::Changed {
                from: MemberState::Alive
            }
        );
        assert_eq!(view.len(), 1);
        assert!(view.contains(&id(1)), "the dead are still known");
        assert_eq!(
            view.apply(&update(1, 1, Claim::Alive), NOW),
            Applied::Ignored
        );
        assert_eq!(
            view.apply(&update(1, 2, Claim::Alive), NOW),
            Applied::Changed {
                from: MemberState::Dead
            }
        );
        assert_eq!(view.len(), 2);
        // Unknown members and old news are ignored.
        assert_eq!(
            view.apply(&update(7, 5, Claim::Alive), NOW),
            Applied::Ignored
        );
        assert_eq!(
            view.apply(&update(2, 0, Claim::Alive), NOW),
            Applied::Ignored
        );
    }

    #[test]
    fn a_member_known_without_an_address_takes_one_from_a_current_alive_claim() {
        let mut view = Membership::new(id(0), [id(1)], NOW);
        assert_eq!(view.get(&id(1)).unwrap().addr, None);
        let here: std::net::SocketAddr = "127.0.0.1:4001".parse().unwrap();
        let there: std::net::SocketAddr = "127.0.0.1:4002".parse().unwrap();
        let claim = |incarnation, addr| Update {
            addr: Some(addr),
            ..update(1, incarnation, Claim::Alive)
        };
        // Old news about the state, but the first address heard: taken.
        assert_eq!(view.apply(&claim(0, here), NOW), Applied::Ignored);
        assert_eq!(view.get(&id(1)).unwrap().addr, Some(here));
        // Another address at the same incarnation does not move a known one.
        view.apply(&claim(0, there), NOW);
        assert_eq!(view.get(&id(1)).unwrap().addr, Some(here));
        // A newer incarnation (a restart) does.
        view.apply(&claim(1, there), NOW);
        assert_eq!(view.get(&id(1)).unwrap().addr, Some(there));
        // An older claim never does, even on a member without one.
        let mut view = Membership::new(id(0), [id(2)], NOW);
        view.apply(&update(2, 3, Claim::Alive), NOW);
        view.apply(
            &Update {
                addr: Some(here),
                ..update(2, 2, Claim::Alive)
            },
            NOW,
        );
        assert_eq!(view.get(&id(2)).unwrap().addr, None);
    }

    #[test]
    fn accusations_of_me_are_reported_whatever_their_incarnation() {
        let mut view = Membership::new(id(0), [id(1)], NOW);
        assert_eq!(
            view.apply(&update(0, 3, Claim::Suspect), NOW),
            Applied::AboutMe
        );
        assert_eq!(
            view.apply(&update(0, 4, Claim::Dead), NOW),
            Applied::AboutMe
        );
        assert_eq!(
            view.apply(&update(0, 2, Claim::Suspect), NOW),
            Applied::AboutMe
        );
        assert_eq!(
            view.apply(&update(0, 9, Claim::Alive), NOW),
            Applied::Ignored
        );
    }

    #[test]
    fn sampling_skips_the_dead_and_never_repeats() {
        let mut view = Membership::new(id(0), (1..=10).map(id), NOW);
        for n in 1..=7 {
            view.apply(&update(n, 0, Claim::Dead), NOW);
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for _ in 0..20 {
            let mut out = Vec::new();
            view.sample_into(5, &mut rng, &mut out);
            out.sort();
            assert_eq!(out, vec![id(8), id(9), id(10)]);
        }
    }

    #[test]
    fn claimed_incarnations_cannot_bury_a_member_for_good() {
        let view = Membership::new(id(0), [id(1)], NOW);
        let forever = update(1, u64::MAX, Claim::Dead);
        assert_eq!(view.sanitize(&forever, 0).unwrap().incarnation, 0);
        let about_me = update(0, u64::MAX, Claim::Suspect);
        assert_eq!(view.sanitize(&about_me, 7).unwrap().incarnation, 7);
        assert!(
            view.sanitize(&update(1, MAX_INCARNATION_JUMP + 1, Claim::Alive), 0)
                .is_none()
        );
        assert!(
            view.sanitize(&update(1, MAX_INCARNATION_JUMP, Claim::Alive), 0)
                .is_some()
        );
        assert_eq!(
            view.sanitize(&update(9, 7, Claim::Dead), 0),
            Some(update(9, 7, Claim::Dead)),
            "news of a member we do not know passes unchanged (only relayed)"
        );
        assert!(
            view.sanitize(
                &Update {
                    by: id(5),
                    ..update(1, 1, Claim::Left)
                },
                0
            )
            .is_none(),
            "only a member itself may say it left"
        );
    }

    fn small(active: usize, reserve: usize) -> ViewConfig {
        ViewConfig {
            active,
            reserve,
            directory: Some(Arc::new(|_: &AgentId| true)),
            ..ViewConfig::default()
        }
    }

    fn entry(n: u8) -> Entry {
        Entry {
            member: id(n),
            incarnation: 0,
            addr: None,
        }
    }

    #[test]
    fn the_view_and_reserve_stay_bounded_and_evict_the_dead_first() {
        let mut view = Membership::with_config(id(0), (1..=50).map(id), NOW, small(4, 8));
        assert_eq!((view.members().len(), view.reserve().len()), (4, 8));
        assert!(view.in_view(&id(1)) && !view.in_view(&id(5)) && view.contains(&id(5)));
        // Member 5 (reserve) dies; a newcomer takes its place, not a live entry's.
        assert!(matches!(
            view.apply(&update(5, 0, Claim::Dead), NOW),
            Applied::Changed { .. }
        ));
        assert!(view.learn_entry(&entry(100), NOW));
        assert!(view.get(&id(5)).is_none() && view.get(&id(100)).is_some());
        for n in 101..=200 {
            view.learn_entry(&entry(n), NOW);
        }
        assert_eq!((view.members().len(), view.reserve().len()), (4, 8));
        assert!(!view.learn_entry(&entry(1), NOW), "already known");
        assert!(!view.learn_entry(&entry(0), NOW), "never ourselves");
        // Without a directory only known members may send or join.
        let mut closed = Membership::new(id(0), [id(1)], NOW);
        assert!(!closed.contains(&id(2)) && !closed.learn_entry(&entry(2), NOW));
        assert_eq!(
            closed.apply(&update(2, 0, Claim::Alive), NOW),
            Applied::Ignored
        );
        // With one, an alive claim about a stranger takes it in.
        assert_eq!(view.members().len(), 4);
        let mut open = Membership::with_config(id(0), [id(1)], NOW, small(4, 8));
        assert_eq!(
            open.apply(&update(2, 3, Claim::Alive), NOW),
            Applied::Joined { relay: true }
        );
        assert_eq!(open.get(&id(2)).unwrap().incarnation, 3);
    }

    #[test]
    fn accusations_about_strangers_are_relayed_once() {
        let mut view = Membership::with_config(id(0), [id(1)], NOW, small(4, 8));
        assert_eq!(view.apply(&update(7, 2, Claim::Dead), NOW), Applied::Relay);
        assert_eq!(
            view.apply(&update(7, 2, Claim::Dead), NOW),
            Applied::Ignored
        );
        assert_eq!(view.apply(&update(7, 3, Claim::Dead), NOW), Applied::Relay);
        assert!(
            view.get(&id(7)).is_none(),
            "an accusation never adds a member"
        );
        // About an id no directory admits: neither stored nor relayed.
        let mut closed = Membership::new(id(0), [id(1)], NOW);
        assert_eq!(
            closed.apply(&update(7, 2, Claim::Dead), NOW),
            Applied::Ignored
        );
    }

    #[test]
    fn the_dead_are_replaced_from_the_reserve_only_with_a_quorum() {
        let later = UnixMillis(NOW.0 + 31_000);
        let wait = Duration::from_secs(30);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let mut view = Membership::with_config(id(0), (1..=12).map(id), NOW, small(4, 8));
        view.apply(&update(1, 0, Claim::Dead), NOW);
        assert!(
            view.refill(UnixMillis(NOW.0 + 1_000), wait, &mut rng)
                .is_empty(),
            "too soon"
        );
        let promoted = view.refill(later, wait, &mut rng);
        assert_eq!(promoted.len(), 1);
        assert!(!view.in_view(&id(1)) && view.get(&id(1)).unwrap().state == MemberState::Dead);
        assert_eq!(view.reachability().reachable, 5);

        // A leave frees its place at once and does not count for the quorum.
        let mut view = Membership::with_config(id(0), (1..=12).map(id), NOW, small(4, 8));
        view.apply(
            &Update {
                by: id(2),
                ..update(2, 1, Claim::Left)
            },
            NOW,
        );
        assert_eq!(
            view.reachability(),
            Reachability {
                reachable: 4,
                members: 4
            }
        );
        assert_eq!(view.refill(NOW, wait, &mut rng).len(), 1);
        assert!(!view.in_view(&id(2)));

        // A minority (3 of 4 view members dead) keeps its dead: it stays read-only.
        let mut view = Membership::with_config(id(0), (1..=12).map(id), NOW, small(4, 8));
        for n in 1..=3 {
            view.apply(&update(n, 0, Claim::Dead), NOW);
        }
        assert!(!view.reachability().has_quorum());
        assert!(view.refill(later, wait, &mut rng).is_empty());
        assert!(view.rebalance(4, &mut rng).is_empty());
        assert!(!view.reachability().has_quorum());
    }

    #[test]
    fn rebalancing_swaps_with_the_reserve_and_keeps_the_sizes() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
        let mut view = Membership::with_config(id(0), (1..=12).map(id), NOW, small(4, 8));
        let before: Vec<AgentId> = view.members().iter().map(|m| m.id).collect();
        let promoted = view.rebalance(2, &mut rng);
        assert!(!promoted.is_empty());
        assert!(
            promoted
                .iter()
                .all(|p| !before.contains(p) && view.in_view(p))
        );
        assert_eq!((view.members().len(), view.reserve().len()), (4, 8));
        assert_eq!(view.len(), 4);
    }

    fn measured(view: &mut Membership, n: u8, ms: u64) {
        view.heard(&id(n), Some(Duration::from_millis(ms)), None, None);
    }

    #[test]
    fn choices_follow_the_ring_shares_and_reach_far_members() {
        let mut view = Membership::with_config(id(0), (1..=9).map(id), NOW, small(9, 0));
        for n in 1..=9u8 {
            measured(&mut view, n, u64::from(n) * 10);
        }
        view.rerank(&Coordinate::origin(&crate::VivaldiConfig::default()));
        assert_eq!(view.ring_of(&id(1)), Some(0));
        assert_eq!(view.ring_of(&id(5)), Some(1));
        assert_eq!(view.ring_of(&id(9)), Some(2));
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut per_ring = [0u32; 3];
        for _ in 0..10_000 {
            let mut out = Vec::new();
            view.sample_into(1, &mut rng, &mut out);
            per_ring[usize::from(view.ring_of(&out[0]).unwrap())] += 1;
        }
        // 50/30/20 within 2 points.
        for (got, want) in per_ring.iter().zip([5_000i64, 3_000, 2_000]) {
            assert!((i64::from(*got) - want).abs() < 200, "{per_ring:?}");
        }
        // Asking for more than a ring holds spills into the others, never repeats.
        let mut out = Vec::new();
        view.sample_into(9, &mut rng, &mut out);
        out.sort();
        assert_eq!(out, (1..=9).map(id).collect::<Vec<_>>());
    }

    #[test]
    fn the_cluster_is_the_least_id_within_the_cluster_round_trip() {
        let mut view = Membership::with_config(id(5), [id(7), id(9), id(2)], NOW, small(8, 0));
        // 7 is near and says its cluster is 3 (two hops away); 2 is far.
        measured(&mut view, 7, 5);
        measured(&mut view, 2, 80);
        view.heard(&id(7), None, None, Some((id(3), 2)));
        view.rerank(&Coordinate::origin(&crate::VivaldiConfig::default()));
        assert_eq!(view.cluster_label(), (id(3), 3));
        // A label that travelled too far is stale: 7 itself is then the least near id.
        view.heard(&id(7), None, None, Some((id(3), MAX_CLUSTER_HOPS)));
        view.rerank(&Coordinate::origin(&crate::VivaldiConfig::default()));
        assert_eq!(view.cluster(), id(5), "5 < 7");
        // Alone, a node is its own cluster.
        let mut alone = Membership::with_config(id(5), [id(2)], NOW, small(8, 0));
        measured(&mut alone, 2, 80);
        alone.rerank(&Coordinate::origin(&crate::VivaldiConfig::default()));
        assert_eq!(alone.cluster_label(), (id(5), 0));
    }
}
