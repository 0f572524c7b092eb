//! The node endpoint of the KNHK mesh: one sans-IO node under every protocol layer.
//!
//! A node runs several protocol layers (gossip in more than one scope, topology,
//! hierarchy). What exists once per node lives here, in one [`Endpoint`], as quinn's
//! `Endpoint` routes for its connections:
//! - the Byzantine gate ([`knhk_security::ByzantineValidator`]) and its signature
//!   verifier and cache, the signer, the nonce counter, the [`PeerView`] and the seeded
//!   RNG;
//! - each frame is validated once, then routed by (kind, scope) to the [`Layer`] that
//!   owns it; a kind or scope the node does not run is dropped and counted, never
//!   charged to the sender;
//! - layers emit unsigned sends, relative timers with tokens, events, and charges for
//!   provable misbehaviour through their [`Context`]; the endpoint signs.
//!
//! Drivers drive the endpoint, never a layer, so a new layer adds no driver code:
//! [`harness::Harness`] (feature `harness`) steps many endpoints on a virtual clock for
//! tests and the simulator; [`runtime::Runtime`] (feature `runtime`, default) runs one
//! over any [`knhk_transport::Transport`] on tokio.
//!
//! ```
//! use knhk_endpoint::{Context, Endpoint, EndpointConfig, Layer, MemberList, StaticView};
//! use knhk_security::{NodeKey, SignatureVerifier};
//! use knhk_types::{AgentId, MessageKind, Scope, UnixMillis};
//!
//! /// Answers every ping with a pong.
//! struct Echo;
//! impl<V: SignatureVerifier> Layer<V> for Echo {
//!     fn kinds(&self) -> &'static [MessageKind] {
//!         &[MessageKind::Ping]
//!     }
//!     fn handle_message(&mut self, ctx: &mut Context<'_, V>, from: AgentId, _: MessageKind, payload: &[u8]) {
//!         ctx.send(from, MessageKind::Pong, payload);
//!     }
//! }
//!
//! let key = NodeKey::from_seed([1; 32]);
//! let peer = NodeKey::from_seed([2; 32]).agent_id();
//! let view = StaticView::new(MemberList::new(vec![key.agent_id(), peer]), key.agent_id());
//! let mut node = Endpoint::new(key, view, EndpointConfig::default());
//! node.add_layer(Scope::DEFAULT, Echo)?;
//! node.start(UnixMillis::VIRTUAL_START);
//! assert!(node.poll_output().is_none());
//! # Ok::<(), knhk_endpoint::EndpointError>(())
//! ```

mod endpoint;
mod error;
#[cfg(feature = "harness")]
pub mod harness;
mod layer;
pub mod probe;
#[cfg(feature = "runtime")]
pub mod runtime;
mod view;

pub use endpoint::{Endpoint, EndpointConfig, EndpointStats, Event, Output, Timer};
pub use error::EndpointError;
pub use knhk_security::ReceivedFrame;
pub use layer::{Context, Layer, LayerHandle, LayerId};
pub use view::{MemberList, PeerView, Reachability, StaticView};
