//! Error types of this crate.

use std::net::SocketAddr;
use std::time::Duration;

use knhk_types::AgentId;

/// Why a registry change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// A node may not register itself as its own peer.
    #[error("refusing to register our own id {0:?} as a peer")]
    SelfRegistration(AgentId),
    /// The registry holds its configured maximum of peers.
    #[error("registry is full ({max} peers); refusing {id:?}")]
    Full {
        /// The refused peer.
        id: AgentId,
        /// The configured maximum.
        max: usize,
    },
}

/// Why a transport operation failed. Every variant names the peer or value involved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// The peer is not in the registry, so there is no address to dial.
    #[error("no address known for peer {0:?}")]
    UnknownPeer(AgentId),
    /// The peer could not be reached (no route, connection refused, endpoint gone).
    #[error("peer {peer:?} at {addr:?} unreachable: {reason}")]
    Unreachable {
        /// The peer.
        peer: AgentId,
        /// Its address, when one is known.
        addr: Option<SocketAddr>,
        /// What failed.
        reason: String,
    },
    /// The TLS handshake failed: the peer presented the wrong key, no certificate, or
    /// refused ours.
    #[error("handshake with {peer:?} rejected: {reason}")]
    HandshakeRejected {
        /// The peer we expected (or, inbound, the address that tried).
        peer: AgentId,
        /// What the TLS layer reported.
        reason: String,
    },
    /// The peer authenticated us but did not admit us as a member: no (valid)
    /// membership certificate, or not on its allow-list.
    #[error("{peer:?} did not admit us: {reason}")]
    AdmissionRefused {
        /// The peer that refused.
        peer: AgentId,
        /// Why, as the peer said it.
        reason: knhk_types::RefusalReason,
    },
    /// A frame exceeded the maximum frame size; nothing was sent or delivered.
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    FrameTooLarge {
        /// Length of the offending frame (0 if the remote only reported the refusal).
        len: usize,
        /// The maximum that applied.
        max: usize,
    },
    /// An operation did not finish in its configured time.
    #[error("{operation} with {peer:?} timed out after {after:?}")]
    Timeout {
        /// The peer.
        peer: AgentId,
        /// What timed out (`connect`, `send`, `request`).
        operation: &'static str,
        /// The limit that ran out.
        after: Duration,
    },
    /// An established connection or stream broke mid-operation.
    #[error("connection to {peer:?} lost: {reason}")]
    ConnectionLost {
        /// The peer.
        peer: AgentId,
        /// What the connection reported.
        reason: String,
    },
    /// The peer accepted a request but dropped it without responding.
    #[error("peer {0:?} dropped the request without a response")]
    NoResponse(AgentId),
    /// This transport has been shut down.
    #[error("transport is closed")]
    Closed,
    /// The transport could not be set up (bind failed, bad TLS material, bad config).
    #[error("transport setup failed: {0}")]
    Setup(String),
}
