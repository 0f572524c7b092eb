//! [`VersionVector`]: per-writer counters saying what a node has seen.

use serde::{Deserialize, Deserializer, Serialize};

use crate::AgentId;

/// How two version vectors relate causally.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Causality {
    /// Both have seen exactly the same writes.
    Equal,
    /// `self` has seen a strict subset of what `other` has seen.
    Before,
    /// `self` has seen a strict superset of what `other` has seen.
    After,
    /// Each has seen something the other has not.
    Concurrent,
}

/// A map from writer to the highest counter seen from that writer. Writers never seen
/// count as 0, so a zero entry is never stored.
///
/// Size is O(writers seen), not O(nodes): a node that never writes never appears.
///
/// Stored as a vector of (writer, counter) pairs sorted by writer: 40 bytes a writer,
/// where a tree map would spend a whole node (hundreds of bytes) on even one writer,
/// and nodes keep one of these per peer they talk to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize)]
pub struct VersionVector(Vec<(AgentId, u64)>);

impl<'de> Deserialize<'de> for VersionVector {
    /// Accepts pairs in any order, with repeats and zeros, and stores the canonical form
    /// (sorted, one pair per writer with its highest counter, no zeros), so equal vectors
    /// are always byte-equal.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let pairs = Vec::<(AgentId, u64)>::deserialize(deserializer)?;
        Ok(pairs.into_iter().collect())
    }
}

impl VersionVector {
    /// An empty vector (nothing seen).
    pub fn new() -> Self {
        Self::default()
    }

    /// The highest counter seen from `writer`, 0 if none.
    pub fn get(&self, writer: &AgentId) -> u64 {
        self.0
            .binary_search_by(|(id, _)| id.cmp(writer))
            .map_or(0, |at| self.0[at].1)
    }

    /// Advances `writer` by one and returns the new counter (saturates at `u64::MAX`).
    pub fn increment(&mut self, writer: AgentId) -> u64 {
        match self.0.binary_search_by(|(id, _)| id.cmp(&writer)) {
            Ok(at) => {
                self.0[at].1 = self.0[at].1.saturating_add(1);
                self.0[at].1
            }
            Err(at) => {
                self.0.insert(at, (writer, 1));
                1
            }
        }
    }

    /// Records that `counter` from `writer` has been seen; keeps the maximum.
    /// Returns `true` if the vector advanced.
    pub fn observe(&mut self, writer: AgentId, counter: u64) -> bool {
        if counter == 0 {
            return false;
        }
        match self.0.binary_search_by(|(id, _)| id.cmp(&writer)) {
            Ok(at) if self.0[at].1 < counter => {
                self.0[at].1 = counter;
                true
            }
            Ok(_) => false,
            Err(at) => {
                self.0.insert(at, (writer, counter));
                true
            }
        }
    }

    /// Pointwise maximum with `other` (the join of the two).
    pub fn merge(&mut self, other: &VersionVector) {
        for (writer, counter) in &other.0 {
            self.observe(*writer, *counter);
        }
    }

    /// True if `self` has seen everything `other` has.
    pub fn dominates(&self, other: &VersionVector) -> bool {
        other
            .0
            .iter()
            .all(|(writer, counter)| self.get(writer) >= *counter)
    }

    /// The causal relation between `self` and `other`.
    pub fn causality(&self, other: &VersionVector) -> Causality {
        match (self.dominates(other), other.dominates(self)) {
            (true, true) => Causality::Equal,
            (true, false) => Causality::After,
            (false, true) => Causality::Before,
            (false, false) => Causality::Concurrent,
        }
    }

    /// Writers and counters, in writer order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&AgentId, &u64)> {
        self.0.iter().map(|(writer, counter)| (writer, counter))
    }

    /// Number of writers with a non-zero counter.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True if nothing has been seen.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromIterator<(AgentId, u64)> for VersionVector {
    fn from_iter<I: IntoIterator<Item = (AgentId, u64)>>(iter: I) -> Self {
        let mut vv = Self::new();
        for (writer, counter) in iter {
            vv.observe(writer, counter);
        }
        vv
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(n: u8) -> AgentId {
        AgentId::from_bytes([n; 32])
    }

    #[test]
    fn increment_and_observe_keep_the_maximum() {
        let mut vv = VersionVector::new();
        assert_eq!(vv.increment(w(1)), 1);
        assert_eq!(vv.increment(w(1)), 2);
        assert!(!vv.observe(w(1), 1));
        assert!(vv.observe(w(1), 5));
        assert!(!vv.observe(w(2), 0));
        assert_eq!((vv.get(&w(1)), vv.get(&w(2)), vv.len()), (5, 0, 1));
    }

    #[test]
    fn causality_table() {
        let a: VersionVector = [(w(1), 2), (w(2), 1)].into_iter().collect();
        let b: VersionVector = [(w(1), 2), (w(2), 3)].into_iter().collect();
        let c: VersionVector = [(w(1), 3)].into_iter().collect();
        let cases = [
            (&a, &a, Causality::Equal),
            (&a, &b, Causality::Before),
            (&b, &a, Causality::After),
            (&b, &c, Causality::Concurrent),
            (&VersionVector::new(), &c, Causality::Before),
        ];
        for (x, y, expected) in cases {
            assert_eq!(x.causality(y), expected, "{x:?} vs {y:?}");
        }
    }

    #[test]
    fn decoding_canonicalises_order_repeats_and_zeros() {
        let messy = vec![(w(3), 1u64), (w(1), 2), (w(3), 5), (w(2), 0)];
        let bytes = postcard::to_allocvec(&messy).unwrap();
        let decoded: VersionVector = postcard::from_bytes(&bytes).unwrap();
        let canonical: VersionVector = [(w(1), 2), (w(3), 5)].into_iter().collect();
        assert_eq!(decoded, canonical);
        assert_eq!(
            postcard::to_allocvec(&decoded).unwrap(),
            postcard::to_allocvec(&canonical).unwrap()
        );
        let order: Vec<_> = decoded.iter().map(|(writer, _)| *writer).collect();
        assert_eq!(order, vec![w(1), w(3)]);
    }

    #[test]
    fn merge_is_the_pointwise_maximum() {
        let mut a: VersionVector = [(w(1), 2), (w(2), 7)].into_iter().collect();
        let b: VersionVector = [(w(1), 4), (w(3), 1)].into_iter().collect();
        a.merge(&b);
        let expected: VersionVector = [(w(1), 4), (w(2), 7), (w(3), 1)].into_iter().collect();
        assert_eq!(a, expected);
        assert!(a.dominates(&b));
    }
}
