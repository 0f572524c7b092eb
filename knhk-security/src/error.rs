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
    /// The key file is owned by another user than the one running the node.
    #[error(
        "refusing key file {path}: owned by uid {owner}, not by this process (uid {us}); run `chown` on it"
    )]
    WrongOwner {
        /// The key file.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// Our effective uid.
        us: u32,
    },
    /// The key path is a symbolic link: a link could swap the node's identity, so keys
    /// are read and written only through real files.
    #[error("refusing key file {path}: it is a symbolic link; point the node at the file itself")]
    Symlink {
        /// The key path.
        path: PathBuf,
    },
    /// The directory holding the key is writable by every user (without the sticky
    /// bit), so anyone could replace or remove the key.
    #[error(
        "refusing key file {path}: its directory is writable by every user; run `chmod o-w` on it"
    )]
    InsecureDirectory {
        /// The key file.
        path: PathBuf,
    },
    /// The file is larger than any key (a key file is a few hundred bytes).
    #[error("refusing key file {path}: {len} bytes is larger than any key file ({max} at most)")]
    TooLarge {
        /// The key file.
        path: PathBuf,
        /// Its size.
        len: u64,
        /// The most read.
        max: u64,
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
