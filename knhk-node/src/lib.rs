//! `knhk-node`: the KNHK mesh daemon and its command-line tools.
//!
//! - [`run`]: `knhk-node run --config node.toml` — one node: gossip and failure
//!   detection over QUIC with mutual TLS ([`knhk_topology::QuicNode`]), admission by
//!   membership certificate or allow-list, its replicated state on disk in redb
//!   ([`store::Store`]: an acknowledged write survives `kill -9`), and an HTTP admin
//!   endpoint ([`admin`]) with a JSON API, a stream of updates, `/metrics` for
//!   Prometheus and a [`dashboard`] page.
//! - [`config`]: the TOML configuration, environment overrides, and checks that name
//!   the bad field.
//! - [`keys`]: `keygen` and `certify`.
//! - [`client`]: `status`, `members`, `put`, `get`, `delete`, `watch` against a
//!   running node.
//! - [`demo`]: N nodes on loopback in one process, one write, a table and a plot.
//!
//! Exit codes: [`error::exit`].

pub mod admin;
pub mod client;
pub mod config;
pub mod daemon;
pub mod dashboard;
pub mod demo;
pub mod error;
pub mod keys;
pub mod plot;
pub mod run;
pub mod store;
pub mod token;
pub mod writer;

pub use config::{Config, Settings};
pub use daemon::Daemon;
pub use error::{ConfigError, NodeError, StoreError};
