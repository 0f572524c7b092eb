//! Push-pull gossip for the KNHK mesh.
//!
//! - [`GossipCore`]: the sans-IO state machine. Messages and time in, messages, timers
//!   and events out; no clock, no socket, no task; randomness from a seed.
//! - [`testing::Cluster`]: steps many cores against each other in memory on a virtual
//!   clock (in the spirit of quinn-proto's `Pair`), for tests and measurements.
//! - `Mesh` (feature `runtime`, on by default): a tokio driver that runs one core over
//!   QUIC with mutual TLS, and the API an application uses. It reports the metrics,
//!   spans and events of the telemetry registry (`docs/TELEMETRY.md`) through
//!   OpenTelemetry and `tracing`.
//!
//! The data model is [`knhk_crdt::VersionedState`]; every inbound frame passes
//! [`knhk_security::ByzantineValidator`] before it touches state.

mod config;
mod core;
mod error;
mod membership;
#[cfg(feature = "runtime")]
mod mesh;
mod message;
#[cfg(feature = "runtime")]
mod telemetry;
pub mod testing;

pub use config::GossipConfig;
pub use core::{GossipCore, GossipEvent, GossipStats, GossipStatus, Output, Timer};
pub use error::GossipError;

/// The README's code compiles as a doctest, so the README cannot drift from the API.
#[cfg(all(doctest, feature = "runtime"))]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
pub use membership::{MemberList, Membership, StaticMembership};
#[cfg(feature = "runtime")]
pub use mesh::{Mesh, MeshBuilder, Subscription, Update};
