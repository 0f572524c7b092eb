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
    /// A local write would take its writer past its quota
    /// (`StateConfig::max_keys_per_writer`, `max_bytes_per_writer`).
    #[error("writer {writer:?} holds its quota ({max_keys} keys, {max_bytes} bytes)")]
    WriterQuota {
        /// The writer.
        writer: AgentId,
        /// Its quota of keys.
        max_keys: u64,
        /// Its quota of bytes.
        max_bytes: u64,
    },
    /// A writer's counter would overflow.
    #[error("writer {0:?} has exhausted its counter")]
    CounterExhausted(AgentId),
    /// A local write would use a counter beyond the lease
    /// ([`crate::VersionedState::lease_counters`]): the store that reserves counters
    /// must reserve more first.
    #[error("local write #{next} is beyond the counters leased (through {ceiling})")]
    CounterLeaseExhausted {
        /// The counter the write would use.
        next: u64,
        /// The last counter leased.
        ceiling: u64,
    },
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

impl CrdtError {
    /// True if a peer that sent the refused data has provably misbehaved: a forgery, an
    /// equivocation, a lie about versions, garbage. False for refusals caused by our own
    /// limits or configuration (sizes, a full state, a deeper Merkle tree), which an
    /// honest peer can trigger and must never be charged for.
    pub fn proves_misbehaviour(&self) -> bool {
        match self {
            Self::BadSignature { .. }
            | Self::Equivocation { .. }
            | Self::EntryOutsideRange { .. }
            | Self::MissingVersions { .. }
            | Self::Backwards { .. }
            | Self::Malformed(_)
            | Self::DiffMismatch(_) => true,
            Self::KeyTooLong { .. }
            | Self::ValueTooLarge { .. }
            | Self::Full { .. }
            | Self::WriterQuota { .. }
            | Self::CounterExhausted(_)
            | Self::CounterLeaseExhausted { .. }
            | Self::DeltaTooLarge { .. } => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_provable_misbehaviour_is_chargeable() {
        let writer = AgentId::from_bytes([1; 32]);
        let cases = [
            (CrdtError::KeyTooLong { len: 2, max: 1 }, false),
            (CrdtError::ValueTooLarge { len: 2, max: 1 }, false),
            (CrdtError::Full { max: 1 }, false),
            (CrdtError::CounterExhausted(writer), false),
            (
                CrdtError::CounterLeaseExhausted {
                    next: 9,
                    ceiling: 8,
                },
                false,
            ),
            (CrdtError::DeltaTooLarge { len: 2, max: 1 }, false),
            (
                CrdtError::Backwards {
                    writer,
                    after: 2,
                    through: 1,
                },
                true,
            ),
            (CrdtError::MissingVersions { writer, through: 3 }, true),
            (CrdtError::EntryOutsideRange { writer, counter: 9 }, true),
            (CrdtError::Equivocation { writer, counter: 1 }, true),
            (CrdtError::BadSignature { writer, counter: 1 }, true),
            (CrdtError::Malformed("x".into()), true),
            (CrdtError::DiffMismatch("x".into()), true),
        ];
        for (error, provable) in cases {
            assert_eq!(error.proves_misbehaviour(), provable, "{error}");
        }
    }
}
