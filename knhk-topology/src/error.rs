//! [`TopologyError`]: what the topology API returns when it cannot answer.

/// Why a call to a running node's topology layer failed.
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
pub enum TopologyError {
    /// The node has stopped (its driver task is gone).
    #[error("the node has shut down")]
    ShutDown,
    /// The node holds no such topology layer, or its peer view is not a `Membership`.
    #[error("the node runs no topology layer with a Membership view")]
    NotRunning,
}
