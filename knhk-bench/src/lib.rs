//! The deterministic simulator of the KNHK mesh and its scale scenarios.
//!
//! [`sim::Simulator`] runs the production node endpoints ([`knhk_endpoint::Endpoint`]:
//! real keys, real ed25519, the real Byzantine gate) and gossip layers
//! ([`knhk_gossip::GossipLayer`]) on the endpoint's virtual-time harness over a simulated
//! network
//! ([`network`]: latency models, a region round-trip matrix, loss, partitions, crashes,
//! clock skew). One seed drives everything, so a run replays exactly.
//! [`scenario`] builds the standard runs behind `knhk-sim` and the figures in
//! `docs/PERFORMANCE.md`.

pub mod churn;
pub mod crypto;
pub mod failure;
pub mod network;
pub mod peer_choice;
pub mod scenario;
pub mod sim;
pub mod sweep;
pub mod telemetry_live;
