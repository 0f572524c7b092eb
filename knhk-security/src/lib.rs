//! Trust for the KNHK mesh: node keys, signature verification, and the Byzantine gate
//! every inbound message passes before it touches state.
//!
//! - [`NodeKey`]: generate, save (mode 0600) and load a node's ed25519 key; refuses a
//!   key file that other users can read.
//! - [`SignatureVerifier`] and [`Ed25519Verifier`]: strict ed25519 verification with a
//!   bounded [`VerifiedCache`], so each unique (key, message, signature) is verified
//!   once; [`Ed25519Verifier::verify_batch`] for bursts.
//! - [`ByzantineValidator`]: the pipeline, cheapest checks first: frame size → ban →
//!   decode → sender is the hop → known sender → timestamp window → replay → signature
//!   → per-sender rate limit → accept. Every rejection has a [`RejectReason`], lowers
//!   the sender's reputation, and below a threshold bans it for a while. Memory stays
//!   bounded under any input.
//!
//! Nothing here touches the network or reads a clock: time comes in as
//! [`knhk_types::UnixMillis`].
//!
//! ```
//! use knhk_security::{ByzantineValidator, NodeKey, AllowAllSenders, ValidatorConfig};
//! use knhk_types::{Envelope, EnvelopeHeader, MessageKind, UnixMillis};
//!
//! let key = NodeKey::from_seed([1; 32]);
//! let now = UnixMillis::VIRTUAL_START;
//! let frame = Envelope::sign(&key, EnvelopeHeader::new(MessageKind::Direct, now, 1), b"hi".to_vec()).encode();
//!
//! let mut validator = ByzantineValidator::new(ValidatorConfig::default());
//! let accepted = validator.validate(now, key.agent_id(), &frame, &AllowAllSenders)?;
//! assert_eq!(accepted.payload, b"hi");
//! // The same frame again is a replay.
//! assert!(validator.validate(now, key.agent_id(), &frame, &AllowAllSenders).is_err());
//! # Ok::<(), knhk_security::Rejection>(())
//! ```

mod cache;
mod error;
mod key;
mod validator;
mod verifier;

pub use cache::{CacheKey, VerifiedCache};
pub use error::{KeyError, VerifyError};
pub use key::NodeKey;
pub use validator::{
    AllowAllSenders, ByzantineValidator, Penalties, ReceivedFrame, RejectReason, Rejection,
    ReputationConfig, ReputationSummary, SenderDirectory, ValidatorConfig, ValidatorStats,
};
pub use verifier::{Ed25519Verifier, SignatureVerifier, SignedMessage, VerifierStats};
