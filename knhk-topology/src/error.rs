//! [`TopologyError`]: what the topology API returns when it cannot answer, and why a
//! node could not start.

/// Why a call to a running node's topology layer failed, or why a node could not
/// start.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// The node has stopped (its driver task is gone).
    #[error("the node has shut down")]
    ShutDown,
    /// The node holds no such topology layer, or its peer view is not a `Membership`.
    #[error("the node runs no topology layer with a Membership view")]
    NotRunning,
    /// The layers could not share the endpoint.
    #[error("endpoint: {0}")]
    Endpoint(#[from] knhk_endpoint::EndpointError),
    /// The transport could not be bound.
    #[cfg(feature = "runtime")]
    #[error("transport: {0}")]
    Transport(#[from] knhk_transport::TransportError),
    /// A seed could not be registered (its id is this node's own, or the registry is
    /// full).
    #[cfg(feature = "runtime")]
    #[error("seed: {0}")]
    Seed(#[from] knhk_transport::RegistryError),
    /// The gossip driver failed to stop cleanly.
    #[cfg(feature = "runtime")]
    #[error("gossip: {0}")]
    Gossip(#[from] knhk_gossip::GossipError),
}
