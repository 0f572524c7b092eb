//! [`TopologyConfig`]: every knob of the failure detector, with memberlist's LAN
//! defaults.

use std::net::SocketAddr;
use std::time::Duration;

use crate::vivaldi::VivaldiConfig;

/// Settings of a [`crate::SwimLayer`].
#[derive(Clone, Debug)]
pub struct TopologyConfig {
    /// Time between two probes of this node (scaled by the local health multiplier).
    /// Default 1 s.
    pub probe_interval: Duration,
    /// How long a direct ping waits for its ack before indirect probes start (scaled
    /// by the local health multiplier). Default 500 ms.
    pub probe_timeout: Duration,
    /// Members asked to probe a target indirectly after a direct ping failed.
    /// Default 3.
    pub indirect_probes: usize,
    /// Lifeguard's suspicion timeout, at least `min × max(1, log10 n) ×
    /// probe_interval`. Default 4.
    pub suspicion_min_multiplier: u32,
    /// The suspicion timeout without confirmations is this many times the minimum.
    /// Default 6.
    pub suspicion_max_multiplier: u32,
    /// Independent suspicions that bring the timeout down to its minimum. Default 3.
    pub suspicion_confirmations: u32,
    /// Highest local health score (the multiplier is the score + 1). Default 8.
    pub max_local_health: u32,
    /// Lifeguard's local health awareness, nacks and dynamic suspicion timeouts.
    /// Default true; false is plain SWIM (for comparison runs).
    pub lifeguard: bool,
    /// Each update is piggybacked about `multiplier × log10(n + 1)` times (at least
    /// once). Default 4.
    pub retransmit_multiplier: u32,
    /// Updates piggybacked on one message. Default 8.
    pub max_piggyback: usize,
    /// Indirect probes this node runs for others at once; more requests are declined.
    /// Default 64.
    pub max_indirect_pending: usize,
    /// Every this many probe periods, the probe goes to a random member believed dead
    /// (if any), so the sides of a healed partition find each other again (a member
    /// wrongly buried hears of it and refutes). 0: never. Default 10.
    pub dead_probe_every: u64,
    /// Every this many probe periods the node swaps some members with a random view
    /// member (a shuffle), which spreads who is a member. 0: never. Default 5.
    pub shuffle_every: u64,
    /// Members offered in one shuffle (at most
    /// [`crate::MAX_ENTRIES_PER_MESSAGE`]). Default 8.
    pub shuffle_length: usize,
    /// Every this many probe periods (the roadmap's `rebalance_rounds`) the view swaps
    /// `rebalance_count` members with the reserve. 0: never. Default 100.
    pub rebalance_every: u64,
    /// Members swapped by one rebalance. Default 4.
    pub rebalance_count: usize,
    /// A view member dead this long gives its place to a reserve member (while this
    /// node has a quorum). Default 30 s.
    pub replace_dead_after: Duration,
    /// View members told at once when this node leaves. Default 8.
    pub leave_fanout: usize,
    /// Announce this node's alive claim when it starts (how the mesh hears of a
    /// joiner beyond its contact). Default true; a simulation that starts every node of
    /// a settled mesh at once turns it off (a join storm of every node is not what it
    /// measures).
    pub announce_on_start: bool,
    /// The address this node tells others it listens on (in its alive claims and
    /// shuffles), so a member that learns of it by gossip can dial it. Default none.
    pub advertise: Option<SocketAddr>,
    /// The partition detector: members of the view and reserve pinged at once when a
    /// direct ping goes unanswered (and every probe period while this node lacks a
    /// quorum); the share that answers is the node's reachability. 0: off (the quorum
    /// then counts view member states only). Default 64: with a third of the mesh cut
    /// off, a sample this large looks like half by chance about once in 300 checks
    /// (32, the view alone: once in 30).
    pub partition_check: usize,
    /// A check that found a quorum decides reachability for this many probe periods,
    /// then the member states do again. Default 10.
    pub partition_check_valid_for: u32,
    /// Vivaldi coordinate settings.
    pub vivaldi: VivaldiConfig,
}

impl Default for TopologyConfig {
    fn default() -> Self {
        Self {
            probe_interval: Duration::from_secs(1),
            probe_timeout: Duration::from_millis(500),
            indirect_probes: 3,
            suspicion_min_multiplier: 4,
            suspicion_max_multiplier: 6,
            suspicion_confirmations: 3,
            max_local_health: 8,
            lifeguard: true,
            retransmit_multiplier: 4,
            max_piggyback: 8,
            max_indirect_pending: 64,
            dead_probe_every: 10,
            shuffle_every: 5,
            shuffle_length: 8,
            rebalance_every: 100,
            rebalance_count: 4,
            replace_dead_after: Duration::from_secs(30),
            leave_fanout: 8,
            advertise: None,
            announce_on_start: true,
            partition_check: 64,
            partition_check_valid_for: 10,
            vivaldi: VivaldiConfig::default(),
        }
    }
}
