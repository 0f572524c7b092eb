//! Errors of the daemon and its commands, and the exit code each one gives.

use std::path::PathBuf;

/// Exit codes of `knhk-node` (docs/OPERATIONS.md lists them too).
pub mod exit {
    /// Success, or a clean shutdown on SIGINT/SIGTERM.
    pub const OK: u8 = 0;
    /// A failure at run time: the node could not start or stopped on an error, a
    /// command's request failed, a key was not found.
    pub const FAILURE: u8 = 1;
    /// Bad command line or configuration: nothing was started.
    pub const USAGE: u8 = 2;
    /// The data directory is corrupt, belongs to another node or cluster, or cannot
    /// be used: nothing was changed in it.
    pub const STORAGE: u8 = 3;
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read config {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this configuration.
    #[error("config {}{}: {message}", path.display(), line.map(|l| format!(" line {l}")).unwrap_or_default())]
    Parse {
        /// The file (empty when parsing text).
        path: PathBuf,
        /// The line of the problem, when known.
        line: Option<usize>,
        /// What is wrong.
        message: String,
    },
    /// A field has a value that cannot be used.
    #[error("config {field} = {value:?}: {reason}")]
    Invalid {
        /// The field, as `section.name`.
        field: &'static str,
        /// Its value.
        value: String,
        /// What it must be.
        reason: String,
    },
    /// The effective configuration cannot be printed.
    #[error("cannot print the config: {0}")]
    Print(String),
}

/// Why the data directory cannot be used. Nothing in it is changed or deleted.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The directory or its database cannot be created, opened or written.
    #[error("data directory {}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The database file is damaged or not a KNHK store.
    #[error("data file {} is corrupt or not a knhk-node store: {reason} (move it aside to start empty and recover from peers)", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What was found.
        reason: String,
    },
    /// The store belongs to another node or cluster.
    #[error("data directory {} belongs to {owner}, not to {us} (give each node its own data_dir)", path.display())]
    Foreign {
        /// The directory.
        path: PathBuf,
        /// Who it belongs to.
        owner: String,
        /// Who we are.
        us: String,
    },
    /// The store's writer has stopped (the node is shutting down).
    #[error("the store has stopped")]
    Stopped,
}

/// Anything that stops the daemon or a command.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The data directory.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The node key.
    #[error("node key: {0}")]
    Key(#[from] knhk_security::KeyError),
    /// A membership certificate.
    #[error("certificate {}: {reason}", path.display())]
    Certificate {
        /// Its file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The mesh node.
    #[error("node: {0}")]
    Topology(#[from] knhk_topology::TopologyError),
    /// Gossip.
    #[error("gossip: {0}")]
    Gossip(#[from] knhk_gossip::GossipError),
    /// A file the command reads or writes.
    #[error("{}: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The admin endpoint cannot be bound.
    #[error("admin endpoint {addr}: {source}")]
    AdminBind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A request to a running node's admin endpoint failed.
    #[error("{0}")]
    Request(String),
    /// The node's admin endpoint could not be reached (the message says where).
    #[error("{0}")]
    Unreachable(String),
    /// A watch stream was cut after it opened (the node went away).
    #[error("the watch stream broke: {0}")]
    StreamBroke(String),
    /// A key asked for is not there (the message says which).
    #[error("{0}")]
    NotFound(String),
    /// A command-line value that cannot be used.
    #[error("{0}")]
    Usage(String),
    /// The demo could not finish.
    #[error("demo: {0}")]
    Demo(String),
}

impl NodeError {
    /// The process exit code for this error ([`exit`]).
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Config(_) | Self::Usage(_) => exit::USAGE,
            Self::Store(_) => exit::STORAGE,
            _ => exit::FAILURE,
        }
    }
}
