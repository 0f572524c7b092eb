//! Error type of this crate.

use knhk_crdt::CrdtError;
use knhk_transport::TransportError;

/// Why a gossip operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GossipError {
    /// A local write was refused by the replicated state (size, capacity).
    #[error(transparent)]
    State(#[from] CrdtError),
    /// The transport failed to start or broke.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The mesh has been shut down.
    #[error("the mesh is shut down")]
    ShutDown,
    /// The builder is missing something or holds an inconsistent setting.
    #[error("invalid mesh configuration: {0}")]
    Config(String),
}
