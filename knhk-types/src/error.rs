//! Error types of this crate: one for decoding and verifying envelopes, one for parsing
//! text forms of identities, regions and seeds.

/// Why an envelope could not be decoded or verified.
///
/// Every byte string handed to [`crate::Envelope::decode`] yields either a valid
/// envelope or exactly one of these; decoding never panics.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// The frame is longer than the configured maximum; nothing was decoded.
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    FrameTooLarge {
        /// Length of the offending frame.
        len: usize,
        /// The configured maximum.
        max: usize,
    },
    /// The bytes are not a well-formed envelope (truncated, bad varint, bad length).
    #[error("malformed envelope: {reason}")]
    Malformed {
        /// What the decoder tripped on.
        reason: postcard::Error,
    },
    /// A well-formed envelope was followed by extra bytes.
    #[error("{extra} trailing bytes after the envelope")]
    TrailingBytes {
        /// Number of bytes left over.
        extra: usize,
    },
    /// The protocol version byte is not one this build speaks.
    #[error("unsupported protocol version {found} (this build speaks {supported})")]
    UnsupportedVersion {
        /// The version byte found on the wire.
        found: u8,
        /// The version this build speaks.
        supported: u8,
    },
    /// The message kind byte names no known kind.
    #[error("unknown message kind {0}")]
    UnknownKind(u8),
    /// The sender field is not a valid ed25519 public key.
    #[error("sender key is not a valid ed25519 point")]
    InvalidSenderKey,
    /// The signature does not verify over the envelope's domain-separated bytes.
    #[error("signature does not verify")]
    BadSignature,
}

/// Why a text form (agent id, region, hierarchy level, seed address) could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not a 52-character base32 or 64-character hex agent id.
    #[error("invalid agent id {input:?}: expected 52 base32 or 64 hex characters")]
    AgentId {
        /// The rejected input.
        input: String,
    },
    /// Not a valid region name.
    #[error("invalid region {input:?}: 1 to {max} characters of [A-Za-z0-9._-]")]
    Region {
        /// The rejected input.
        input: String,
        /// Longest accepted name.
        max: usize,
    },
    /// Not one of `edge`, `aggregator`, `coordinator`.
    #[error("invalid hierarchy level {input:?}: expected edge, aggregator or coordinator")]
    HierarchyLevel {
        /// The rejected input.
        input: String,
    },
    /// Not of the form `<agent-id>@<host:port>`.
    #[error("invalid seed {input:?}: expected <agent-id>@<ip:port>")]
    Seed {
        /// The rejected input.
        input: String,
    },
}
