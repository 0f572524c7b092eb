//! The deterministic simulator of the KNHK mesh and its scale scenarios.
//!
//! [`sim::Simulator`] runs the production [`knhk_gossip::GossipCore`] (real keys, real
//! ed25519, the real Byzantine gate) on a virtual clock over a simulated network
//! ([`network`]: latency models, a region round-trip matrix, loss, partitions, crashes,
//! clock skew). One seed drives everything, so a run replays exactly.
//! [`scenario`] builds the standard runs behind `knhk-sim` and the figures in
//! `docs/PERFORMANCE.md`.

pub mod crypto;
pub mod network;
pub mod scenario;
pub mod sim;
pub mod telemetry_live;
