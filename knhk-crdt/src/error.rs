//! Error type of this crate.

use knhk_types::AgentId;

/// Why a write, merge or decode was refused. A refused merge changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CrdtError {
    /// A key is longer than the configured maximum.
    #[error("key of {len} bytes exceeds the maximum of {max}")]
    KeyTooLong {
        /// Its length.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// A value is longer than the configured maximum.
    #[error("value of {len} bytes exceeds the maximum of {max}")]
    ValueTooLarge {
        /// Its length.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// The state holds its maximum number of keys.
    #[error("state is full ({max} keys)")]
    Full {
        /// The maximum.
        max: usize,
    },
    /// A writer's counter would overflow.
    #[error("writer {0:?} has exhausted its counter")]
    CounterExhausted(AgentId),
    /// A delta range does not move forward (`through` ≤ `after`) or names a writer twice.
    #[error("delta range for {writer:?} goes backwards or repeats ({after} → {through})")]
    Backwards {
        /// The writer.
        writer: AgentId,
        /// The range's start (exclusive).
        after: u64,
        /// The range's end (inclusive).
        through: u64,
    },
    /// A delta claims versions of a writer without carrying the signed entry that proves
    /// the highest one.
    #[error("delta claims {writer:?} up to {through} but does not carry that entry")]
    MissingVersions {
        /// The writer.
        writer: AgentId,
        /// The claimed counter.
        through: u64,
    },
    /// A delta carries an entry outside the ranges it declares.
    #[error("entry {writer:?}#{counter} lies outside the delta's declared ranges")]
    EntryOutsideRange {
        /// The entry's writer.
        writer: AgentId,
        /// The entry's counter.
        counter: u64,
    },
    /// The same writer and counter appear with different contents (equivocation).
    #[error("writer {writer:?} signed two different entries as #{counter}")]
    Equivocation {
        /// The writer.
        writer: AgentId,
        /// The counter used twice.
        counter: u64,
    },
    /// An entry's signature does not verify.
    #[error("entry {writer:?}#{counter} has a bad signature")]
    BadSignature {
        /// The entry's writer.
        writer: AgentId,
        /// The entry's counter.
        counter: u64,
    },
    /// Delta bytes could not be decoded.
    #[error("malformed delta: {0}")]
    Malformed(String),
    /// A decoded delta would exceed the allowed size.
    #[error("delta of at least {len} bytes exceeds the maximum of {max}")]
    DeltaTooLarge {
        /// Its (decompressed) size, or a lower bound.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// A Merkle diff step got an answer for nodes or buckets it did not ask about.
    #[error("merkle diff answer does not match the question: {0}")]
    DiffMismatch(String),
}
