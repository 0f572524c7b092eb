//! Error type of this crate.

use knhk_crdt::CrdtError;
use knhk_endpoint::EndpointError;
use knhk_transport::{RegistryError, TransportError};

/// Why a gossip operation failed.
#[derive(Debug, thiserror::Error)]
pub enum GossipError {
    /// A local write was refused by the replicated state (size, capacity).
    #[error(transparent)]
    State(#[from] CrdtError),
    /// The transport failed to start or broke.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The peer registry refused a peer (our own id, a full registry…).
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The node endpoint refused (for example its driver has stopped).
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    /// The node key could not be made or loaded.
    #[error(transparent)]
    Key(#[from] knhk_security::KeyError),
    /// This node reaches too few members (it is in a minority partition, as its
    /// failure detector believes): local writes are refused until it reaches a quorum
    /// again; reads keep working, and anti-entropy reconciles after the heal.
    #[error("read-only: this node reaches {reachable} members, {required} needed for a quorum")]
    ReadOnly {
        /// Members reachable, ourselves included.
        reachable: usize,
        /// Members needed.
        required: usize,
    },
    /// The mesh has been shut down.
    #[error("the mesh is shut down")]
    ShutDown,
    /// The mesh was started over a transport and peer view of the caller's, so it has
    /// no registry of its own to add peers to.
    #[error("this mesh's peers are not a registry it owns")]
    NoRegistry,
}
