//! Error type of this crate.

use knhk_types::{MessageKind, Scope};

/// Why an endpoint operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    /// Another layer already owns this kind in this scope: every (kind, scope) has one
    /// owner, so routing is unambiguous.
    #[error("{kind:?} in scope {scope} is already owned by another layer")]
    RouteTaken {
        /// The kind.
        kind: MessageKind,
        /// The scope.
        scope: Scope,
    },
    /// The layer handle belongs to another endpoint (or names no layer of this one).
    #[error("no such layer on this endpoint")]
    NoSuchLayer,
    /// The driver has stopped.
    #[error("the node's driver has stopped")]
    Stopped,
}
