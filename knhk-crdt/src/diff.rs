//! [`MerkleDiff`]: find the keys two states disagree on by descending their Merkle trees.
//!
//! Sans-IO: the session says what to ask the peer ([`DiffStep`]), the caller carries the
//! question and feeds back the peer's answer (computed there by
//! [`VersionedState::merkle_nodes`] and [`VersionedState::bucket_digests`]). Each step
//! descends one level, asking only for the children of nodes that differ, so finding `d`
//! differing keys from an honest peer costs at most `2 · d · depth` node hashes plus the
//! key digests of at most `d` buckets (about `n / 2^depth` keys each), one round trip per
//! level: O(d · (depth + n / 2^depth)).
//!
//! A lying peer can claim every node differs and walk the whole tree; callers bound a
//! session by the frame size of each answer and by how many sessions they run.
//! Answers that name keys outside the bucket they claim are refused.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::error::CrdtError;
use crate::merkle::{Hash, bucket_of};
use crate::state::VersionedState;

/// A Merkle node id: heap position (1 = root; `2i`, `2i + 1` = children of `i`).
pub type NodeId = u32;

/// The (key, entry digest) pairs of one bucket, in key order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketDigests {
    /// The bucket.
    pub bucket: u32,
    /// Its keys and the digests of their winning entries.
    pub keys: Vec<(String, Hash)>,
}

/// What a [`MerkleDiff`] needs next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DiffStep {
    /// Ask the peer for the hashes of these nodes.
    AskNodes(Vec<NodeId>),
    /// Ask the peer for the key digests of these buckets.
    AskBuckets(Vec<u32>),
    /// Finished: the keys whose winning entries differ (or exist on one side only).
    Done(Vec<String>),
}

#[derive(Clone, Debug)]
enum Awaiting {
    Nodes(BTreeSet<NodeId>),
    Buckets(BTreeSet<u32>),
    Nothing,
}

/// One comparison of a local state with a peer's, run by the side that wants to know.
#[derive(Clone, Debug)]
pub struct MerkleDiff {
    depth: u8,
    awaiting: Awaiting,
    hashes_received: usize,
}

impl MerkleDiff {
    /// Starts comparing `local` with a peer whose root is `remote_root`. Returns
    /// [`DiffStep::Done`] at once if the roots are equal.
    pub fn start(local: &mut VersionedState, remote_root: Hash) -> (Self, DiffStep) {
        let depth = local.merkle_depth();
        let mut session = Self {
            depth,
            awaiting: Awaiting::Nothing,
            hashes_received: 1,
        };
        let step = if local.merkle_root() == remote_root {
            DiffStep::Done(Vec::new())
        } else {
            session.descend_from(&[1])
        };
        (session, step)
    }

    /// Node hashes and key digests received from the peer so far (the root included).
    pub fn hashes_received(&self) -> usize {
        self.hashes_received
    }

    /// Feeds the peer's answer to [`DiffStep::AskNodes`].
    ///
    /// Errors: [`CrdtError::DiffMismatch`] if the answer is not exactly the nodes asked.
    pub fn on_nodes(
        &mut self,
        local: &mut VersionedState,
        answer: &[(NodeId, Hash)],
    ) -> Result<DiffStep, CrdtError> {
        let Awaiting::Nodes(asked) = &self.awaiting else {
            return Err(CrdtError::DiffMismatch(
                "node hashes arrived but none were asked".into(),
            ));
        };
        let answered: BTreeSet<NodeId> = answer.iter().map(|(id, _)| *id).collect();
        if &answered != asked || answered.len() != answer.len() {
            return Err(CrdtError::DiffMismatch(
                "answer names other nodes than asked".into(),
            ));
        }
        self.hashes_received += answer.len();
        let ids: Vec<NodeId> = answer.iter().map(|(id, _)| *id).collect();
        let mine: BTreeMap<NodeId, Hash> = local.merkle_nodes(&ids).into_iter().collect();
        let differing: Vec<NodeId> = answer
            .iter()
            .filter(|(id, hash)| mine.get(id) != Some(hash))
            .map(|(id, _)| *id)
            .collect();
        Ok(self.descend_from(&differing))
    }

    /// Feeds the peer's answer to [`DiffStep::AskBuckets`]; finishes the diff with the
    /// keys that differ in the buckets answered. An answer may cover only some of the
    /// buckets asked (a peer bounds its reply to what fits a frame); the rest are found
    /// by a later diff, which no longer descends into the buckets that now agree.
    ///
    /// Errors: [`CrdtError::DiffMismatch`] if the answer is empty while buckets were
    /// asked, names a bucket not asked or one twice, or puts a key in the wrong bucket.
    pub fn on_buckets(
        &mut self,
        local: &VersionedState,
        answer: &[BucketDigests],
    ) -> Result<DiffStep, CrdtError> {
        let Awaiting::Buckets(asked) = &self.awaiting else {
            return Err(CrdtError::DiffMismatch(
                "bucket digests arrived but none were asked".into(),
            ));
        };
        let answered: BTreeSet<u32> = answer.iter().map(|b| b.bucket).collect();
        let partial_but_sound = answered.is_subset(asked)
            && answered.len() == answer.len()
            && (!answered.is_empty() || asked.is_empty());
        if !partial_but_sound {
            return Err(CrdtError::DiffMismatch(
                "answer names other buckets than asked".into(),
            ));
        }
        let depth = local.merkle_depth();
        for digests in answer {
            if let Some((key, _)) = digests
                .keys
                .iter()
                .find(|(key, _)| bucket_of(key, depth) != digests.bucket)
            {
                return Err(CrdtError::DiffMismatch(format!(
                    "key {key:?} does not belong to bucket {}",
                    digests.bucket
                )));
            }
        }
        let mut differing = BTreeSet::new();
        let local_buckets =
            local.bucket_digests(&answer.iter().map(|b| b.bucket).collect::<Vec<_>>());
        for (theirs, mine) in answer.iter().zip(local_buckets) {
            self.hashes_received += theirs.keys.len();
            let theirs: BTreeMap<&String, &Hash> =
                theirs.keys.iter().map(|(k, h)| (k, h)).collect();
            let mine: BTreeMap<&String, &Hash> = mine.keys.iter().map(|(k, h)| (k, h)).collect();
            for key in theirs.keys().chain(mine.keys()) {
                if theirs.get(key) != mine.get(key) {
                    differing.insert((*key).clone());
                }
            }
        }
        self.awaiting = Awaiting::Nothing;
        Ok(DiffStep::Done(differing.into_iter().collect()))
    }

    /// Asks for the children of `differing` nodes, or for their buckets if they are
    /// leaves.
    fn descend_from(&mut self, differing: &[NodeId]) -> DiffStep {
        if differing.is_empty() {
            self.awaiting = Awaiting::Nothing;
            return DiffStep::Done(Vec::new());
        }
        let first_leaf = 1u32 << self.depth;
        if differing.iter().all(|&id| id >= first_leaf) {
            let buckets: BTreeSet<u32> = differing.iter().map(|&id| id - first_leaf).collect();
            self.awaiting = Awaiting::Buckets(buckets.clone());
            return DiffStep::AskBuckets(buckets.into_iter().collect());
        }
        let children: BTreeSet<NodeId> = differing
            .iter()
            .flat_map(|&id| [2 * id, 2 * id + 1])
            .collect();
        self.awaiting = Awaiting::Nodes(children.clone());
        DiffStep::AskNodes(children.into_iter().collect())
    }
}
