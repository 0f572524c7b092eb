//! Topology of the KNHK mesh: who is a member, who is alive, how far away each member
//! is. Roadmap phase 3, first part.
//!
//! - [`Membership`]: the node's peer view (the endpoint's [`knhk_endpoint::PeerView`]),
//!   bounded: a view of members probed and chosen as peers (near, mid and far by round
//!   trip) and a reserve to refill it from, each member with its state (alive,
//!   suspect, dead, left), incarnation, address, round trips, Vivaldi coordinate and
//!   cluster label; learned by alive claims, shuffles and admitted strangers' frames.
//! - [`SwimLayer`]: SWIM failure detection with Lifeguard (local health, nacks,
//!   suspicion timeouts that shrink with independent confirmations, buddy system), as a
//!   sans-IO layer under the node endpoint; it keeps the [`Membership`].
//! - [`Coordinate`]: Vivaldi coordinates with height; [`RttEstimate`]: smoothed and
//!   minimum round trips; [`health`]: Lifeguard's maths.
//! - `runtime` (feature `runtime`): the observer that writes learned addresses into the
//!   transport's address book, and the `Topology` API (status, members, leave) on a
//!   running tokio node.
//!
//! No clock reads, sockets or tasks: time comes from the endpoint, timers are relative,
//! randomness is the node's seeded RNG, so the simulator runs this same code.

pub mod health;

mod config;
mod dissemination;
mod error;
mod membership;
mod message;
#[cfg(feature = "runtime")]
mod node;
mod rtt;
#[cfg(feature = "runtime")]
pub mod runtime;
mod swim;
#[cfg(feature = "runtime")]
mod telemetry;
mod vivaldi;

pub use config::TopologyConfig;
pub use error::TopologyError;
pub use membership::{
    Applied, Directory, MAX_CLUSTER_HOPS, MAX_INCARNATION_JUMP, Member, MemberState, Membership,
    ViewConfig,
};
pub use message::{
    Claim, ClusterLabel, Entry, MAX_ENTRIES_PER_MESSAGE, MAX_UPDATES_PER_MESSAGE, SwimMessage,
    Update,
};
#[cfg(feature = "runtime")]
pub use node::{QuicNode, QuicNodeConfig};
pub use rtt::RttEstimate;
pub use swim::{
    MemberAddressed, MemberChanged, MemberJoined, PartitionChanged, SwimLayer, SwimStats,
};
pub use vivaldi::{Coordinate, DIMENSIONS, VivaldiConfig};
