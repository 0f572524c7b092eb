//! Push-pull gossip for the KNHK mesh, as a layer of the node endpoint.
//!
//! - [`GossipLayer`]: the sans-IO state machine of one gossip instance. It runs under a
//!   [`knhk_endpoint::Endpoint`], which validates every frame, routes gossip kinds in
//!   the layer's scope to it, lends it the node's peer view, RNG and verifier, and seals
//!   what it sends. No clock, no socket, no task.
//! - [`testing::Cluster`] (feature `testing`): many nodes stepped against each other in
//!   memory on a virtual clock, on the endpoint's shared harness.
//! - `Mesh` (feature `runtime`, on by default): one node on the endpoint's tokio driver
//!   over QUIC with mutual TLS, and the API an application uses. It reports the
//!   metrics, spans and events of the telemetry registry (`docs/TELEMETRY.md`) through
//!   OpenTelemetry and `tracing`.
//!
//! The data model is [`knhk_crdt::VersionedState`].

mod config;
mod error;
mod layer;
#[cfg(feature = "runtime")]
mod mesh;
mod message;
#[cfg(feature = "runtime")]
mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;

pub use config::GossipConfig;
pub use error::GossipError;
pub use layer::{GossipEvent, GossipLayer, GossipStats, GossipStatus};
#[cfg(feature = "runtime")]
pub use mesh::{Mesh, MeshBuilder, MeshConfig, MeshStatus, Subscription, Update};

// What the `Mesh` API takes and returns, so that one dependency is enough to use it.
pub use knhk_crdt::{Hash, SignedEntry};
pub use knhk_security::NodeKey;
#[cfg(feature = "runtime")]
pub use knhk_transport::{AllowList, InboundPolicy, QuicConfig, TransportStats};
pub use knhk_types::{
    AdmissionRule, AgentId, MembershipCertificate, MembershipClaims, PeerInfo, RefusalReason,
    SeedAddr,
};

/// The README's code compiles as a doctest, so the README cannot drift from the API.
#[cfg(all(doctest, feature = "runtime"))]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
