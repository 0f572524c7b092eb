//! Error types of this crate.

use std::path::PathBuf;

use knhk_types::AgentId;

/// Why a node key could not be generated, saved or loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key file is readable or writable by other users.
    #[error(
        "refusing key file {path}: mode {mode:03o} lets other users read it; run `chmod 600 {path}`"
    )]
    InsecurePermissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file exists but is not a PKCS#8 PEM ed25519 private key.
    #[error("{path} is not a PKCS#8 PEM ed25519 private key: {reason}")]
    Malformed {
        /// The key file.
        path: PathBuf,
        /// What the decoder reported.
        reason: String,
    },
    /// Reading or writing the file failed.
    #[error("key file {path}: {source}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The operating system could not supply randomness for a new key.
    #[error("no OS randomness for key generation: {0}")]
    Randomness(String),
}

/// Why a signature was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The signer's id is not a valid ed25519 public key.
    #[error("signer {0:?} is not a valid ed25519 key")]
    InvalidKey(AgentId),
    /// The signature does not verify (strict ed25519).
    #[error("bad signature from {0:?}")]
    BadSignature(AgentId),
}
