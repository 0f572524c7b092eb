//! Shared vocabulary of the KNHK mesh.
//!
//! Every other crate speaks in these types: who a node is ([`AgentId`], an ed25519
//! public key), where it is ([`PeerInfo`], [`Region`], [`HierarchyLevel`]), what it has
//! seen ([`VersionVector`]), and the one frame that crosses the wire, the signed
//! [`Envelope`]. This crate performs no I/O, reads no clock and spawns nothing.
//!
//! ```
//! use ed25519_dalek::SigningKey;
//! use knhk_types::{Envelope, EnvelopeHeader, MessageKind, UnixMillis, DEFAULT_MAX_FRAME_BYTES};
//!
//! let key = SigningKey::from_bytes(&[7; 32]);
//! let header = EnvelopeHeader::new(MessageKind::Direct, UnixMillis(1_700_000_000_000), 1);
//! let envelope = Envelope::sign(&key, header, b"hello".to_vec());
//! let bytes = envelope.encode();
//! let decoded = Envelope::decode(&bytes, DEFAULT_MAX_FRAME_BYTES)?;
//! decoded.verify()?;
//! assert_eq!(decoded.payload(), b"hello");
//! # Ok::<(), knhk_types::EnvelopeError>(())
//! ```

mod admission;
mod agent_id;
mod envelope;
mod error;
mod peer;
mod region;
mod time;
mod version_page;
mod version_vector;

pub use admission::{
    AdmissionError, AdmissionRule, CERTIFICATE_CONTEXT, MAX_CERTIFICATE_BYTES, MAX_CLUSTER_NAME,
    MembershipCertificate, MembershipClaims, RefusalReason,
};
pub use agent_id::{AgentId, ShortAgentId};
pub use envelope::{
    DEFAULT_MAX_FRAME_BYTES, Envelope, EnvelopeHeader, EnvelopeRef, EnvelopeSigner, MessageKind,
    PROTOCOL_VERSION, SIGNATURE_CONTEXT, Scope, Signature,
};
pub use error::{EnvelopeError, ParseError};
pub use peer::{HierarchyLevel, PeerInfo, SeedAddr};
pub use region::Region;
pub use time::UnixMillis;
pub use version_page::VersionPage;
pub use version_vector::{Causality, VersionVector};
