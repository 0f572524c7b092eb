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
    /// Accepts only the canonical form: pairs strictly ascending by writer, no zero
    /// counters. Anything else is refused, in one linear pass: a peer controls these
    /// bytes, and repairing an unsorted vector by insertion was quadratic (a 1 MB
    /// descending vector took seconds). Canonical input also makes equal vectors
    /// byte-equal on the wire.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let pairs = Vec::<(AgentId, u64)>::deserialize(deserializer)?;
        let ascending = pairs.windows(2).all(|pair| pair[0].0 < pair[1].0);
        if !ascending || pairs.iter().any(|(_, counter)| *counter == 0) {
            return Err(serde::de::Error::custom(
                "version vector not canonical: writers must be strictly ascending, counters non-zero",
            ));
        }
        Ok(Self(pairs))
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

    /// Pointwise maximum with `other` (the join of the two). Linear in both sizes.
    pub fn merge(&mut self, other: &VersionVector) {
        if other
            .0
            .iter()
            .all(|(writer, counter)| self.get(writer) >= *counter)
        {
            return;
        }
        let (ours, theirs) = (&self.0, &other.0);
        let mut joined = Vec::with_capacity(ours.len() + theirs.len());
        let (mut i, mut j) = (0, 0);
        while i < ours.len() && j < theirs.len() {
            let (a, b) = (ours[i], theirs[j]);
            match a.0.cmp(&b.0) {
                std::cmp::Ordering::Less => {
                    joined.push(a);
                    i += 1;
                }
                std::cmp::Ordering::Greater => {
                    joined.push(b);
                    j += 1;
                }
                std::cmp::Ordering::Equal => {
                    joined.push((a.0, a.1.max(b.1)));
                    i += 1;
                    j += 1;
                }
            }
        }
        joined.extend_from_slice(&ours[i..]);
        joined.extend_from_slice(&theirs[j..]);
        self.0 = joined;
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

    /// The pairs of writers in `[start, end)` (`None`: unbounded), by binary search.
    pub(crate) fn range(
        &self,
        start: Option<&AgentId>,
        end: Option<&AgentId>,
    ) -> &[(AgentId, u64)] {
        let from = start.map_or(0, |start| self.0.partition_point(|(id, _)| id < start));
        let to = end.map_or(self.0.len(), |end| {
            self.0.partition_point(|(id, _)| id < end)
        });
        self.0.get(from..to.max(from)).unwrap_or_default()
    }

    /// The pairs, in writer order.
    pub(crate) fn as_slice(&self) -> &[(AgentId, u64)] {
        &self.0
    }

    /// A vector of pairs already strictly ascending by writer with non-zero counters
    /// (a slice of a canonical vector).
    pub(crate) fn from_sorted(pairs: Vec<(AgentId, u64)>) -> Self {
        Self(pairs)
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
    /// Any order, repeats and zeros: keeps each writer's highest counter. O(n log n).
    fn from_iter<I: IntoIterator<Item = (AgentId, u64)>>(iter: I) -> Self {
        let mut pairs: Vec<(AgentId, u64)> = iter.into_iter().filter(|(_, c)| *c > 0).collect();
        // Highest counter first within a writer, so dedup keeps it.
        pairs.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        pairs.dedup_by(|later, kept| later.0 == kept.0);
        Self(pairs)
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
    fn decoding_accepts_only_the_canonical_form() {
        let decode = |pairs: Vec<(AgentId, u64)>| {
            let bytes = postcard::to_allocvec(&pairs).unwrap();
            postcard::from_bytes::<VersionVector>(&bytes)
        };
        // (pairs on the wire, accepted)
        let cases = [
            (vec![], true),
            (vec![(w(1), 2), (w(3), 5)], true),
            (vec![(w(3), 5), (w(1), 2)], false),
            (vec![(w(1), 2), (w(1), 5)], false),
            (vec![(w(1), 2), (w(2), 0)], false),
        ];
        for (pairs, accepted) in cases {
            assert_eq!(decode(pairs.clone()).is_ok(), accepted, "{pairs:?}");
        }
        let canonical: VersionVector = [(w(3), 5), (w(1), 2), (w(3), 1), (w(2), 0)]
            .into_iter()
            .collect();
        let bytes = postcard::to_allocvec(&canonical).unwrap();
        assert_eq!(
            postcard::from_bytes::<VersionVector>(&bytes).unwrap(),
            canonical
        );
        let order: Vec<_> = canonical.iter().map(|(writer, c)| (*writer, *c)).collect();
        assert_eq!(order, vec![(w(1), 2), (w(3), 5)]);
    }

    #[test]
    fn a_descending_vector_of_a_whole_frame_is_refused_in_one_pass() {
        // The attack of the hardening issue: ~31k pairs in descending order, which the
        // old decoder repaired by insertion (quadratic, seconds per frame).
        let pairs: Vec<(AgentId, u64)> = (0..31_000u32)
            .rev()
            .map(|n| {
                let mut bytes = [0u8; 32];
                bytes[..4].copy_from_slice(&n.to_be_bytes());
                (AgentId::from_bytes(bytes), 1)
            })
            .collect();
        let bytes = postcard::to_allocvec(&pairs).unwrap();
        assert!(bytes.len() < 1 << 20);
        assert!(postcard::from_bytes::<VersionVector>(&bytes).is_err());
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
