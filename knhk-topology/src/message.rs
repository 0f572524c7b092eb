//! What the failure detector's peers say to each other, inside signed envelopes of
//! kind [`knhk_types::MessageKind::Membership`].

use knhk_types::AgentId;
use serde::{Deserialize, Serialize};

use crate::vivaldi::Coordinate;

/// Most membership updates a message may carry; a message with more is refused
/// (honest nodes send at most `TopologyConfig::max_piggyback`).
pub const MAX_UPDATES_PER_MESSAGE: usize = 64;

/// What one member claims about another (or itself).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Claim {
    /// The member is alive at this incarnation.
    Alive,
    /// `by` could not reach the member at this incarnation.
    Suspect,
    /// The member was suspected at this incarnation for the whole suspicion timeout.
    Dead,
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
        /// Membership updates piggybacked.
        updates: Vec<Update>,
    },
    /// Alive: the answer to the ping numbered `seq`.
    Ack {
        /// The probe's number (the requester's, for indirect messages).
        seq: u64,
        /// The sender's Vivaldi coordinate.
        coordinate: Coordinate,
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
}

impl SwimMessage {
    /// The updates piggybacked on this message.
    pub fn updates(&self) -> &[Update] {
        match self {
            Self::Ping { updates, .. }
            | Self::Ack { updates, .. }
            | Self::PingReq { updates, .. }
            | Self::IndirectAck { updates, .. }
            | Self::Nack { updates, .. } => updates,
        }
    }
}
