//! [`SignedEntry`]: one write, signed by its writer; [`Marker`]: the total order of writes.

use std::sync::Arc;

use knhk_security::SignatureVerifier;
use knhk_types::{AgentId, EnvelopeSigner, Signature};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::CrdtError;
use crate::merkle::Hash;

/// Domain-separation prefix of entry signatures.
const ENTRY_CONTEXT: &[u8] = b"knhk-mesh crdt entry v1\0";

/// One write: `key` set to `value` (or deleted, if `None`) by `writer`, as its
/// `counter`-th write, at Lamport time `lamport`, signed by the writer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedEntry {
    /// The key written.
    pub key: String,
    /// The value, or `None` for a deletion (tombstone).
    #[serde(with = "serde_bytes")]
    pub value: Option<Vec<u8>>,
    /// Who wrote it.
    pub writer: AgentId,
    /// The writer's write number (1, 2, 3, …): its version-vector entry after this write.
    pub counter: u64,
    /// Lamport time: greater than every write the writer had seen.
    pub lamport: u64,
    /// The writer's signature over all of the above.
    pub signature: Signature,
}

#[derive(Serialize)]
struct SignedFields<'a> {
    key: &'a str,
    #[serde(with = "serde_bytes")]
    value: &'a Option<Vec<u8>>,
    writer: &'a AgentId,
    counter: u64,
    lamport: u64,
}

impl SignedEntry {
    /// Signs a write as `signer`.
    pub fn sign(
        signer: &impl EnvelopeSigner,
        key: String,
        value: Option<Vec<u8>>,
        counter: u64,
        lamport: u64,
    ) -> Self {
        let writer = signer.agent_id();
        let signature = signer.sign_message(&signed_bytes(&key, &value, &writer, counter, lamport));
        Self {
            key,
            value,
            writer,
            counter,
            lamport,
            signature,
        }
    }

    /// The bytes the signature covers: a fixed context string, then every field but the
    /// signature.
    pub fn signed_bytes(&self) -> Vec<u8> {
        signed_bytes(
            &self.key,
            &self.value,
            &self.writer,
            self.counter,
            self.lamport,
        )
    }

    /// Checks the writer's signature through `verifier` (which may answer from cache).
    ///
    /// Errors: [`CrdtError::BadSignature`].
    pub fn verify(&self, verifier: &mut impl SignatureVerifier) -> Result<(), CrdtError> {
        verifier
            .verify(&self.writer, &self.signed_bytes(), &self.signature)
            .map_err(|_| CrdtError::BadSignature {
                writer: self.writer,
                counter: self.counter,
            })
    }

    /// SHA-256 over the signed bytes and the signature: names this exact entry.
    pub fn digest(&self) -> Hash {
        digest_of(&self.signed_bytes(), &self.signature)
    }

    /// True for a deletion.
    pub fn is_tombstone(&self) -> bool {
        self.value.is_none()
    }

    /// Its place in the order in which writes to one key win: of two entries for one
    /// key, the one with the greater marker is the value every replica keeps.
    pub fn marker(&self) -> Marker {
        Marker {
            lamport: self.lamport,
            writer: self.writer,
            counter: self.counter,
            digest: self.digest(),
        }
    }
}

fn signed_bytes(
    key: &str,
    value: &Option<Vec<u8>>,
    writer: &AgentId,
    counter: u64,
    lamport: u64,
) -> Vec<u8> {
    let fields = SignedFields {
        key,
        value,
        writer,
        counter,
        lamport,
    };
    let mut bytes = Vec::with_capacity(
        ENTRY_CONTEXT.len() + key.len() + 64 + value.as_ref().map_or(0, Vec::len),
    );
    bytes.extend_from_slice(ENTRY_CONTEXT);
    // Extending a Vec cannot fail; on the impossible error the signature will not verify.
    postcard::to_extend(&fields, bytes).unwrap_or_default()
}

/// The order in which writes to one key win: later Lamport time first, then writer id,
/// then counter, then digest. Total over distinct entries, so every replica picks the
/// same winner, even for a writer that signs two different entries with one counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Marker {
    /// Lamport time of the write.
    pub lamport: u64,
    /// Its writer.
    pub writer: AgentId,
    /// The writer's counter.
    pub counter: u64,
    /// The entry digest (breaks ties between equivocating entries).
    pub digest: Hash,
}

fn digest_of(signed_bytes: &[u8], signature: &Signature) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update(signed_bytes);
    hasher.update(signature.0);
    hasher.finalize().into()
}

/// An entry with what is derived from it once: its digest, its Merkle bucket and its
/// key as a shared string. Cheap to clone (reference counts), so the register, the
/// proof table and the writer index can all hold it without copying keys or values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Stored {
    pub entry: Arc<SignedEntry>,
    pub key: Arc<str>,
    pub digest: Hash,
    pub bucket: u32,
}

impl Stored {
    /// `signed_bytes` must be `entry.signed_bytes()` (passed in so callers that also
    /// verify the signature build them once).
    pub(crate) fn new(entry: SignedEntry, signed_bytes: &[u8], merkle_depth: u8) -> Self {
        let digest = digest_of(signed_bytes, &entry.signature);
        let bucket = crate::merkle::bucket_of(&entry.key, merkle_depth);
        let key = Arc::from(entry.key.as_str());
        Self {
            entry: Arc::new(entry),
            key,
            digest,
            bucket,
        }
    }

    pub(crate) fn marker(&self) -> Marker {
        Marker {
            lamport: self.entry.lamport,
            writer: self.entry.writer,
            counter: self.entry.counter,
            digest: self.digest,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use knhk_security::{Ed25519Verifier, NodeKey};

    #[test]
    fn digest_names_the_exact_entry() {
        let key = NodeKey::from_seed([1; 32]);
        let entry = SignedEntry::sign(&key, "k".into(), Some(b"v".to_vec()), 1, 1);
        assert_eq!(stored(entry.clone()).digest, entry.digest());
        let other = SignedEntry::sign(&key, "k".into(), Some(b"w".to_vec()), 1, 1);
        assert_ne!(entry.digest(), other.digest());
    }

    #[test]
    fn signature_covers_every_field() {
        let key = NodeKey::from_seed([1; 32]);
        let entry = SignedEntry::sign(&key, "k".into(), Some(b"v".to_vec()), 3, 9);
        let mut verifier = Ed25519Verifier::new(64);
        entry.verify(&mut verifier).unwrap();
        let mutations: [fn(&mut SignedEntry); 5] = [
            |e| e.key.push('x'),
            |e| e.value = None,
            |e| e.counter += 1,
            |e| e.lamport += 1,
            |e| e.writer = NodeKey::from_seed([2; 32]).agent_id(),
        ];
        for mutate in mutations {
            let mut forged = entry.clone();
            mutate(&mut forged);
            assert!(matches!(
                forged.verify(&mut verifier),
                Err(CrdtError::BadSignature { .. })
            ));
        }
    }

    #[test]
    fn tombstone_and_empty_value_are_different_writes() {
        let key = NodeKey::from_seed([1; 32]);
        let empty = SignedEntry::sign(&key, "k".into(), Some(Vec::new()), 1, 1);
        let deleted = SignedEntry::sign(&key, "k".into(), None, 1, 1);
        assert_ne!(empty.signed_bytes(), deleted.signed_bytes());
        assert!(deleted.is_tombstone() && !empty.is_tombstone());
    }

    fn stored(entry: SignedEntry) -> Stored {
        let bytes = entry.signed_bytes();
        Stored::new(entry, &bytes, 12)
    }

    #[test]
    fn markers_order_by_lamport_then_writer() {
        let (a, b) = (NodeKey::from_seed([1; 32]), NodeKey::from_seed([2; 32]));
        let early = stored(SignedEntry::sign(&b, "k".into(), None, 1, 1)).marker();
        let late = stored(SignedEntry::sign(&a, "k".into(), None, 1, 2)).marker();
        assert!(late > early);
        let tie_a = stored(SignedEntry::sign(&a, "k".into(), None, 1, 5)).marker();
        let tie_b = stored(SignedEntry::sign(&b, "k".into(), None, 1, 5)).marker();
        assert_eq!(tie_a > tie_b, a.agent_id() > b.agent_id());
    }
}
