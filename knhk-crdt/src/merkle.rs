//! A fixed-shape, sparse Merkle tree over key buckets.
//!
//! Keys fall into `2^depth` buckets by the first bits of SHA-256(key). A leaf is the
//! hash of its bucket's entry digests in key order; an inner node is
//! SHA-256(left ‖ right), exactly as `rs_merkle` builds a tree from the same leaves
//! (checked by a test), with rs_merkle's SHA-256 as the hash. The shape depends only on
//! `depth`, never on which keys exist, so two states can be compared node by node: that
//! is what makes [`crate::MerkleDiff`] cost O(d · log n).
//!
//! Sparse: only nodes that differ from the hash of an empty subtree are stored, so a
//! state with k keys holds at most about k · depth nodes (and never more than
//! `2^(depth+1)`). Updates are deferred: writes mark buckets dirty and the first read of
//! a hash after them recomputes only the dirty paths.

use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::OnceLock;

use rs_merkle::Hasher as MerkleHasher;
use rs_merkle::algorithms::Sha256 as MerkleSha256;
use sha2::{Digest, Sha256};

/// A SHA-256 hash.
pub type Hash = [u8; 32];

/// Deepest supported tree (16M buckets).
pub(crate) const MAX_DEPTH: u8 = 24;

/// Hash of an empty subtree of each height (0 = an empty bucket).
fn empty_hash(height: u8) -> Hash {
    static EMPTY: OnceLock<Vec<Hash>> = OnceLock::new();
    let table = EMPTY.get_or_init(|| {
        let mut table = vec![MerkleSha256::hash(&[])];
        for _ in 0..MAX_DEPTH {
            let below = table[table.len() - 1];
            table.push(hash_pair(&below, &below));
        }
        table
    });
    table.get(usize::from(height)).copied().unwrap_or_default()
}

pub(crate) fn hash_pair(left: &Hash, right: &Hash) -> Hash {
    let mut both = [0u8; 64];
    both[..32].copy_from_slice(left);
    both[32..].copy_from_slice(right);
    MerkleSha256::hash(&both)
}

/// The hash of a bucket holding entries with these digests, in key order.
pub(crate) fn bucket_hash<'a>(digests: impl Iterator<Item = &'a Hash>) -> Hash {
    let mut hasher = Sha256::new();
    for digest in digests {
        hasher.update(digest);
    }
    hasher.finalize().into()
}

/// The bucket `key` falls in, for a tree of `depth`.
pub(crate) fn bucket_of(key: &str, depth: u8) -> u32 {
    if depth == 0 {
        return 0;
    }
    let hash = Sha256::digest(key.as_bytes());
    u32::from_be_bytes([hash[0], hash[1], hash[2], hash[3]]) >> (32 - u32::from(depth))
}

/// Node ids are derived from SHA-256 buckets, so nobody can aim collisions at the
/// table: a multiplicative hash (Fibonacci hashing) is enough and far cheaper than SipHash.
#[derive(Default)]
struct NodeIdHasher(u64);

impl Hasher for NodeIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0 << 8 | u64::from(byte)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u32(&mut self, id: u32) {
        self.0 = u64::from(id).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

type NodeMap = HashMap<u32, Hash, BuildHasherDefault<NodeIdHasher>>;

/// Node ids are heap positions: 1 is the root, `2i` and `2i + 1` are `i`'s children,
/// leaves are `2^depth + bucket`.
#[derive(Debug, Clone)]
pub(crate) struct SparseMerkle {
    depth: u8,
    nodes: NodeMap,
    dirty: BTreeSet<u32>,
}

impl SparseMerkle {
    pub(crate) fn new(depth: u8) -> Self {
        Self {
            depth: depth.min(MAX_DEPTH),
            nodes: NodeMap::default(),
            dirty: BTreeSet::new(),
        }
    }

    pub(crate) fn depth(&self) -> u8 {
        self.depth
    }

    pub(crate) fn leaf_id(&self, bucket: u32) -> u32 {
        (1u32 << self.depth) + bucket
    }

    /// Height of a node above the leaves (0 for a leaf), or `None` for an id outside the tree.
    pub(crate) fn height_of(&self, id: u32) -> Option<u8> {
        if id == 0 {
            return None;
        }
        let level = 31 - id.leading_zeros() as u8;
        self.depth.checked_sub(level)
    }

    pub(crate) fn mark_dirty(&mut self, bucket: u32) {
        self.dirty.insert(bucket);
    }

    pub(crate) fn is_dirty(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// The stored hash of node `id` (flush first). Ids outside the tree hash as empty.
    pub(crate) fn node(&self, id: u32) -> Hash {
        match self.nodes.get(&id) {
            Some(hash) => *hash,
            None => self.height_of(id).map(empty_hash).unwrap_or_default(),
        }
    }

    pub(crate) fn root(&self) -> Hash {
        self.node(1)
    }

    /// Recomputes every dirty leaf (through `leaf_hash`: `None` for an empty bucket) and
    /// the paths above them, each shared ancestor once.
    pub(crate) fn flush(&mut self, mut leaf_hash: impl FnMut(u32) -> Option<Hash>) {
        if self.dirty.is_empty() {
            return;
        }
        let buckets = std::mem::take(&mut self.dirty);
        // Ids of one level, ascending (the dirty set is sorted, and halving keeps the
        // order), so duplicates among parents are adjacent.
        let mut level: Vec<u32> = Vec::with_capacity(buckets.len());
        for bucket in buckets {
            let id = self.leaf_id(bucket);
            self.store(id, leaf_hash(bucket), 0);
            level.push(id);
        }
        for height in 1..=self.depth {
            for id in &mut level {
                *id /= 2;
            }
            level.dedup();
            for &parent in &level {
                let hash = hash_pair(&self.node(2 * parent), &self.node(2 * parent + 1));
                self.store(parent, Some(hash), height);
            }
        }
    }

    fn store(&mut self, id: u32, hash: Option<Hash>, height: u8) {
        match hash {
            Some(hash) if hash != empty_hash(height) => {
                self.nodes.insert(id, hash);
            }
            _ => {
                self.nodes.remove(&id);
            }
        }
    }

    /// Nodes held (for memory accounting).
    pub(crate) fn stored_nodes(&self) -> usize {
        self.nodes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rs_merkle::MerkleTree;

    #[test]
    fn root_matches_rs_merkle_built_from_all_leaves() {
        for depth in [0u8, 1, 3, 6] {
            let mut sparse = SparseMerkle::new(depth);
            let buckets = 1u32 << depth;
            let filled: Vec<u32> = (0..buckets).filter(|b| b % 3 == 1).collect();
            let leaf = |bucket: u32| Some(MerkleSha256::hash(&bucket.to_le_bytes()));
            for &bucket in &filled {
                sparse.mark_dirty(bucket);
            }
            sparse.flush(|bucket| {
                if filled.contains(&bucket) {
                    leaf(bucket)
                } else {
                    None
                }
            });
            let leaves: Vec<Hash> = (0..buckets)
                .map(|b| {
                    if filled.contains(&b) {
                        leaf(b).unwrap()
                    } else {
                        empty_hash(0)
                    }
                })
                .collect();
            let reference = MerkleTree::<MerkleSha256>::from_leaves(&leaves)
                .root()
                .unwrap();
            assert_eq!(sparse.root(), reference, "depth {depth}");
        }
    }

    #[test]
    fn emptying_every_bucket_returns_to_the_empty_root_and_stores_nothing() {
        let mut sparse = SparseMerkle::new(8);
        let empty_root = sparse.root();
        for bucket in [0, 17, 255] {
            sparse.mark_dirty(bucket);
        }
        sparse.flush(|_| Some([7; 32]));
        assert_ne!(sparse.root(), empty_root);
        assert!(sparse.stored_nodes() <= 3 * 9);
        for bucket in [0, 17, 255] {
            sparse.mark_dirty(bucket);
        }
        sparse.flush(|_| None);
        assert_eq!(sparse.root(), empty_root);
        assert_eq!(sparse.stored_nodes(), 0);
    }

    #[test]
    fn buckets_spread_keys_within_range() {
        let depth = 4;
        let mut seen = [0u32; 16];
        for n in 0..1_600 {
            let bucket = bucket_of(&format!("key-{n}"), depth);
            seen[bucket as usize] += 1;
        }
        assert!(
            seen.iter().all(|&count| (50..=150).contains(&count)),
            "{seen:?}"
        );
        assert_eq!(bucket_of("anything", 0), 0);
    }

    #[test]
    fn heights_and_ids() {
        let tree = SparseMerkle::new(3);
        assert_eq!(tree.height_of(1), Some(3));
        assert_eq!(tree.height_of(8), Some(0));
        assert_eq!(tree.height_of(15), Some(0));
        assert_eq!(tree.height_of(16), None);
        assert_eq!(tree.height_of(0), None);
        assert_eq!(tree.leaf_id(5), 13);
    }
}
