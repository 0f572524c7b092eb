//! What the failure detector's peers say to each other, inside signed envelopes of
//! kind [`knhk_types::MessageKind::Membership`].

use std::net::SocketAddr;

use knhk_types::AgentId;
use serde::{Deserialize, Serialize};

use crate::vivaldi::Coordinate;

/// Most membership updates a message may carry; a message with more is refused
/// (honest nodes send at most `TopologyConfig::max_piggyback`).
pub const MAX_UPDATES_PER_MESSAGE: usize = 64;

/// Most members a shuffle may carry; a message with more is refused.
pub const MAX_ENTRIES_PER_MESSAGE: usize = 32;

/// A cluster label: the least member id a node knows within the cluster round trip,
/// and how many hops it travelled.
pub type ClusterLabel = (AgentId, u8);

/// What one member claims about another (or itself).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Claim {
    /// The member is alive at this incarnation.
    Alive,
    /// `by` could not reach the member at this incarnation.
    Suspect,
    /// The member was suspected at this incarnation for the whole suspicion timeout.
    Dead,
    /// The member left the mesh at this incarnation (taken only from the member
    /// itself, `by`).
    Left,
}

/// One membership update, piggybacked on probes and their answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Update {
    /// Who the claim is about.
    pub member: AgentId,
    /// The member's incarnation the claim is about: only the member raises it, to
    /// refute a suspicion.
    pub incarnation: u64,
    /// The claim.
    pub claim: Claim,
    /// Who made the claim first (for a suspicion: the accuser, so independent
    /// confirmations can be counted).
    pub by: AgentId,
    /// Where the member listens (alive claims of the member itself; `None` otherwise
    /// or when unknown).
    pub addr: Option<SocketAddr>,
}

/// A member as a shuffle tells of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Its identity.
    pub member: AgentId,
    /// Its incarnation as the sender knows it.
    pub incarnation: u64,
    /// Where it listens, if the sender knows.
    pub addr: Option<SocketAddr>,
}

/// One failure-detector message (postcard, as an envelope payload).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum SwimMessage {
    /// Are you alive? Answer with [`SwimMessage::Ack`] carrying `seq`.
    Ping {
        /// The probe's number (the requester's, for indirect messages).
        seq: u64,
        /// The sender's Vivaldi coordinate.
        coordinate: Coordinate,
        /// The sender's cluster label.
        cluster: ClusterLabel,
        /// True if the receiver is in the view of the prober (the sender, or the
        /// requester of an indirect probe): a node pinged this way by nobody for a
        /// while asks for a place in a view. False for pings of a reachability check
        /// to the reserve and for a leave.
        in_view: bool,
        /// Membership updates piggybacked.
        updates: Vec<Update>,
    },
    /// Alive: the answer to the ping numbered `seq`.
    Ack {
        /// The probe's number (the requester's, for indirect messages).
        seq: u64,
        /// The sender's Vivaldi coordinate.
        coordinate: Coordinate,
        /// The sender's cluster label.
        cluster: ClusterLabel,
        /// Membership updates piggybacked.
        updates: Vec<Update>,
    },
    /// Please ping `target` for me and tell me (indirect probe, numbered `seq` by the
    /// requester).
    PingReq {
        /// The probe's number (the requester's, for indirect messages).
        seq: u64,
        /// The member being probed.
        target: AgentId,
        /// Membership updates piggybacked.
        updates: Vec<Update>,
    },
    /// `target` answered the ping I sent it for your probe `seq`.
    IndirectAck {
        /// The probe's number (the requester's, for indirect messages).
        seq: u64,
        /// The member being probed.
        target: AgentId,
        /// Membership updates piggybacked.
        updates: Vec<Update>,
    },
    /// `target` did not answer in time the ping I sent it for your probe `seq`
    /// (Lifeguard: tells the requester that *I* am alive and working).
    Nack {
        /// The probe's number (the requester's, for indirect messages).
        seq: u64,
        /// The member being probed.
        target: AgentId,
        /// Membership updates piggybacked.
        updates: Vec<Update>,
    },
    /// Some members I know (this node among them): send me some of yours (the view
    /// shuffle that spreads who is a member, and a joiner's first question).
    Shuffle {
        /// The members offered.
        entries: Vec<Entry>,
        /// True for a joiner's first shuffle, and for a node nobody pinged for a
        /// while: the receiver takes the sender into its view at once (HyParView's
        /// join), so every node is probed and chosen by someone.
        join: bool,
        /// Membership updates piggybacked.
        updates: Vec<Update>,
    },
    /// The answer to a [`SwimMessage::Shuffle`]: members of mine.
    ShuffleReply {
        /// The members offered.
        entries: Vec<Entry>,
        /// Membership updates piggybacked.
        updates: Vec<Update>,
    },
    /// News for the receiver alone, answering nothing and answered by nothing: the
    /// current alive claims of members the receiver's last message accused at an
    /// incarnation they have since refuted (a node that missed a refutation would
    /// otherwise bury the member when its stale suspicion times out: the refutation's
    /// rumour is over, since every other node knows it already).
    Updates {
        /// The fresher claims.
        updates: Vec<Update>,
    },
}

impl SwimMessage {
    /// The updates piggybacked on this message.
    pub fn updates(&self) -> &[Update] {
        match self {
            Self::Ping { updates, .. }
            | Self::Ack { updates, .. }
            | Self::PingReq { updates, .. }
            | Self::IndirectAck { updates, .. }
            | Self::Nack { updates, .. }
            | Self::Shuffle { updates, .. }
            | Self::ShuffleReply { updates, .. }
            | Self::Updates { updates } => updates,
        }
    }

    /// The members a shuffle offers (none for other messages).
    pub fn entries(&self) -> &[Entry] {
        match self {
            Self::Shuffle { entries, .. } | Self::ShuffleReply { entries, .. } => entries,
            _ => &[],
        }
    }
}
