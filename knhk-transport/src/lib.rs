//! Peer registry and authenticated transports of the KNHK mesh.
//!
//! - [`PeerRegistry`]: who we know and where, with O(1) random sampling at any size;
//!   loom-checked for concurrent register / deregister / sample.
//! - [`AddressBook`]: where members learned by gossip listen, for dialing only (never
//!   an admission).
//! - [`Transport`]: send a frame, send a request and await its response, receive frames
//!   with their authenticated sender. Implemented by
//!   - [`QuicTransport`] (feature `quic`): QUIC over quinn with mutual TLS in which each
//!     certificate carries the node's own ed25519 key, so a peer's [`knhk_types::AgentId`]
//!     is proven by the handshake with no CA;
//!   - [`MemoryTransport`] (feature `memory`): an in-process network for tests.
//!
//! The transport moves opaque frames; signing and verifying envelopes is the caller's
//! job (see [`knhk_types::Envelope`]). This crate holds no protocol logic.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), knhk_transport::TransportError> {
//! use bytes::Bytes;
//! use knhk_transport::{MemoryConfig, MemoryNetwork, Transport};
//! use knhk_types::AgentId;
//!
//! let network = MemoryNetwork::new(MemoryConfig::default());
//! let (a, b) = (AgentId::from_bytes([1; 32]), AgentId::from_bytes([2; 32]));
//! let node_a = network.join(a)?;
//! let node_b = network.join(b)?;
//! node_a.send(b, Bytes::from_static(b"hi")).await?;
//! let inbound = node_b.recv().await?;
//! assert_eq!((inbound.from, &inbound.frame[..]), (a, &b"hi"[..]));
//! # Ok(()) }
//! ```

mod address_book;
mod error;
mod registry;
mod sync;
#[cfg(any(feature = "quic", feature = "memory"))]
mod transport;

#[cfg(feature = "memory")]
mod memory;
#[cfg(feature = "quic")]
mod quic;

pub use address_book::{AddressBook, DEFAULT_ADDRESS_BOOK_CAPACITY};
pub use error::{RegistryError, TransportError};

pub use registry::{PeerRegistry, Registration, RegistryConfig};
#[cfg(any(feature = "quic", feature = "memory"))]
pub use transport::{AdmissionRefusals, Inbound, Responder, Transport, TransportStats};

#[cfg(feature = "memory")]
pub use memory::{MemoryConfig, MemoryNetwork, MemoryTransport};
#[cfg(feature = "quic")]
pub use quic::{AllowAnyPeer, AllowList, InboundPolicy, PeerAuthorizer, QuicConfig, QuicTransport};
