//! Replicated state of the KNHK mesh: a map from keys to values that every node can
//! write, that merges without coordination, and whose data no relay can forge.
//!
//! - [`VersionedState`]: keys → last-writer-wins registers (`crdts::LWWReg`) ordered by
//!   a total [`Marker`] (Lamport time, writer, counter, digest), so concurrent writes to
//!   one key resolve identically everywhere; a [`knhk_types::VersionVector`] of what has
//!   been seen; a Merkle root over all entries.
//! - [`SignedEntry`]: every write carries its writer's ed25519 signature over (key,
//!   value or tombstone, writer, counter, Lamport time). Merges accept an entry only if
//!   that signature verifies: the envelope signature authenticates the hop, the entry
//!   signature authenticates the data end to end.
//! - [`Delta`]: what a peer at a given version vector lacks, with a signed proof of every
//!   version it claims; [`Delta::encode`] compresses with zstd above a threshold.
//! - [`MerkleDiff`]: finds the keys two states disagree on by exchanging O(d · log n)
//!   hashes, for anti-entropy after partitions.
//!
//! Merging is commutative, associative and idempotent (property-tested). No I/O.
//!
//! ```
//! use knhk_crdt::{StateConfig, VersionedState};
//! use knhk_security::{Ed25519Verifier, NodeKey};
//!
//! let (alice, bob) = (NodeKey::from_seed([1; 32]), NodeKey::from_seed([2; 32]));
//! let mut a = VersionedState::new(StateConfig::default());
//! let mut b = VersionedState::new(StateConfig::default());
//! a.put(&alice, "color", b"blue".to_vec())?;
//!
//! let delta = a.delta_since(b.version());
//! let mut verifier = Ed25519Verifier::new(1024);
//! b.merge(&delta, &mut verifier)?;
//! assert_eq!(b.get("color"), Some(&b"blue"[..]));
//! assert_eq!(a.merkle_root(), b.merkle_root());
//! # let _ = bob;
//! # Ok::<(), knhk_crdt::CrdtError>(())
//! ```

mod delta;
mod diff;
mod entry;
mod error;
mod merkle;
mod quota;
mod restore;
mod state;

pub use delta::{DEFAULT_COMPRESS_ABOVE, Delta, WriterRange};
pub use diff::{BucketDigests, DiffStep, MerkleDiff, NodeId};
pub use entry::{Marker, SignedEntry};
pub use error::CrdtError;
pub use merkle::Hash;
pub use quota::WriterHeld;
pub use restore::SavedState;
pub use state::{MergeReport, StateConfig, VersionedState};
