//! [`Store`]: the node's replicated state on disk, in redb (one file, `state.redb`,
//! fsynced on every commit), and the lease of write counters.
//!
//! The file holds three tables: `meta` (format, owner node, cluster, the counters
//! leased), `entries` (the winning signed entry per key) and `proofs` (each writer's
//! proof entry). Writes are joins: an entry replaces the stored one only if it wins by
//! the CRDT's own order, a proof only if its counter is higher, the lease only grows.
//! So batches may be written in any order, twice, or interleaved with the node's own
//! writes, and the file always holds a state the node really had, or a later one.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use knhk_crdt::{SavedState, SignedEntry, StateConfig, VersionedState};
use knhk_security::Ed25519Verifier;
use knhk_types::AgentId;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::error::StoreError;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const ENTRIES: TableDefinition<&str, &[u8]> = TableDefinition::new("entries");
const PROOFS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("proofs");

const FORMAT: &[u8] = b"knhk-node store v1";
/// The database file inside the data directory.
pub const FILE_NAME: &str = "state.redb";

/// Counters leased at a time: a restart skips at most this many.
pub const LEASE_BLOCK: u64 = 10_000;

/// What one commit writes. Empty parts write nothing.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    /// Winning entries (one per key; the loser of two for one key is not written).
    pub entries: Vec<SignedEntry>,
    /// Proof entries (the highest counter per writer is kept).
    pub proofs: Vec<SignedEntry>,
    /// Counters leased through this one (kept if higher than the stored lease).
    pub lease_through: Option<u64>,
}

impl Batch {
    /// Adds `other` to this batch.
    pub fn absorb(&mut self, other: Batch) {
        self.entries.extend(other.entries);
        self.proofs.extend(other.proofs);
        self.lease_through = self.lease_through.max(other.lease_through);
    }

    /// True if committing it would write nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.proofs.is_empty() && self.lease_through.is_none()
    }
}

/// An open store.
#[derive(Clone, Debug)]
pub struct Store {
    path: PathBuf,
    db: Arc<Database>,
}

/// A store just opened: what it held.
#[derive(Debug)]
pub struct Opened {
    /// The store.
    pub store: Store,
    /// The state it held (checked: every signature verified).
    pub state: VersionedState,
    /// Keys restored.
    pub keys: usize,
    /// The counters leased before: every counter this node may have signed is at or
    /// below it.
    pub leased_through: u64,
    /// True if the file was created now.
    pub created: bool,
}

impl Store {
    /// Opens (or creates) the store in `dir` for node `owner` of `cluster`, and
    /// rebuilds the state it holds with `config`.
    ///
    /// Errors: [`StoreError::Io`] if the directory cannot be created or the file
    /// opened (another process holding it included); [`StoreError::Corrupt`] if the
    /// file is not a knhk-node store, is damaged, or holds an entry that does not
    /// decode or verify; [`StoreError::Foreign`] if it belongs to another node or
    /// cluster. Nothing is changed in the directory on error, except creating it.
    pub fn open(
        dir: &Path,
        owner: AgentId,
        cluster: &str,
        config: StateConfig,
    ) -> Result<Opened, StoreError> {
        create_private_dir(dir)?;
        let path = dir.join(FILE_NAME);
        let existed = path.exists();
        let db = Database::create(&path).map_err(|error| match error {
            redb::DatabaseError::Storage(redb::StorageError::Io(source))
                if source.kind() == std::io::ErrorKind::InvalidData =>
            {
                corrupt(&path, source)
            }
            redb::DatabaseError::Storage(redb::StorageError::Io(source)) => StoreError::Io {
                path: path.clone(),
                source,
            },
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Io {
                path: path.clone(),
                source: std::io::Error::other("in use by another process"),
            },
            other => corrupt(&path, other),
        })?;
        let store = Self {
            path: path.clone(),
            db: Arc::new(db),
        };
        let created = !store.check_owner(owner, cluster)?;
        if created {
            store.write_meta(owner, cluster)?;
        }
        let (saved, leased_through) = store.read_all()?;
        let mut verifier = Ed25519Verifier::new(1_024);
        let (state, _) = VersionedState::restore(config, &saved, &mut verifier)
            .map_err(|error| corrupt(&path, format!("a stored entry is refused: {error}")))?;
        Ok(Opened {
            keys: state.len(),
            store,
            state,
            leased_through,
            created: created && !existed,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `batch` in one transaction, durably (fsynced) before it returns.
    ///
    /// Errors: [`StoreError::Io`] if the disk refuses; [`StoreError::Corrupt`] if a
    /// stored row does not decode. Nothing of the batch is written then.
    pub fn commit(&self, batch: &Batch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let path = &self.path;
        let txn = self.db.begin_write().map_err(|e| io(path, e))?;
        {
            let mut entries = txn.open_table(ENTRIES).map_err(|e| io(path, e))?;
            for entry in &batch.entries {
                let stored = entries
                    .get(entry.key.as_str())
                    .map_err(|e| io(path, e))?
                    .map(|bytes| decode(path, bytes.value()))
                    .transpose()?;
                let wins = stored.is_none_or(|stored| entry.marker() > stored.marker());
                if wins {
                    entries
                        .insert(entry.key.as_str(), encode(entry)?.as_slice())
                        .map_err(|e| io(path, e))?;
                }
            }
            let mut proofs = txn.open_table(PROOFS).map_err(|e| io(path, e))?;
            for proof in &batch.proofs {
                let writer = *proof.writer.as_bytes();
                let stored = proofs
                    .get(&writer[..])
                    .map_err(|e| io(path, e))?
                    .map(|bytes| decode(path, bytes.value()))
                    .transpose()?;
                let higher = stored.is_none_or(|stored| proof.counter > stored.counter);
                if higher {
                    proofs
                        .insert(&writer[..], encode(proof)?.as_slice())
                        .map_err(|e| io(path, e))?;
                }
            }
            if let Some(through) = batch.lease_through {
                let mut meta = txn.open_table(META).map_err(|e| io(path, e))?;
                let current = lease_in(path, &meta)?;
                if through > current {
                    meta.insert("leased", &through.to_le_bytes()[..])
                        .map_err(|e| io(path, e))?;
                }
            }
        }
        txn.commit().map_err(|e| io(path, e))
    }

    /// True if the store already names its owner (and it is `owner` of `cluster`);
    /// false for a fresh file.
    fn check_owner(&self, owner: AgentId, cluster: &str) -> Result<bool, StoreError> {
        let path = &self.path;
        let txn = self.db.begin_read().map_err(|e| io(path, e))?;
        let meta = match txn.open_table(META) {
            Ok(meta) => meta,
            Err(redb::TableError::TableDoesNotExist(_)) => {
                // A fresh file; one holding tables of another program is not ours.
                let tables = txn.list_tables().map_err(|e| io(path, e))?.count();
                return if tables == 0 {
                    Ok(false)
                } else {
                    Err(corrupt(path, "it holds tables but no knhk-node metadata"))
                };
            }
            Err(error) => return Err(corrupt(path, error)),
        };
        let field = |name: &str| -> Result<Option<Vec<u8>>, StoreError> {
            Ok(meta
                .get(name)
                .map_err(|e| io(path, e))?
                .map(|value| value.value().to_vec()))
        };
        if field("format")?.as_deref() != Some(FORMAT) {
            return Err(corrupt(path, "no knhk-node format marker"));
        }
        let stored_owner =
            String::from_utf8_lossy(&field("node")?.unwrap_or_default()).into_owned();
        let stored_cluster =
            String::from_utf8_lossy(&field("cluster")?.unwrap_or_default()).into_owned();
        if stored_owner != owner.to_string() || stored_cluster != cluster {
            return Err(StoreError::Foreign {
                path: self.path.parent().unwrap_or(path).to_owned(),
                owner: format!("node {stored_owner} of cluster {stored_cluster:?}"),
                us: format!("node {owner} of cluster {cluster:?}"),
            });
        }
        Ok(true)
    }

    fn write_meta(&self, owner: AgentId, cluster: &str) -> Result<(), StoreError> {
        let path = &self.path;
        let txn = self.db.begin_write().map_err(|e| io(path, e))?;
        {
            let mut meta = txn.open_table(META).map_err(|e| io(path, e))?;
            meta.insert("format", FORMAT).map_err(|e| io(path, e))?;
            meta.insert("node", owner.to_string().as_bytes())
                .map_err(|e| io(path, e))?;
            meta.insert("cluster", cluster.as_bytes())
                .map_err(|e| io(path, e))?;
            txn.open_table(ENTRIES).map_err(|e| io(path, e))?;
            txn.open_table(PROOFS).map_err(|e| io(path, e))?;
        }
        txn.commit().map_err(|e| io(path, e))
    }

    fn read_all(&self) -> Result<(SavedState, u64), StoreError> {
        let path = &self.path;
        let txn = self.db.begin_read().map_err(|e| io(path, e))?;
        let mut saved = SavedState::default();
        let entries = txn.open_table(ENTRIES).map_err(|e| corrupt(path, e))?;
        for row in entries.iter().map_err(|e| io(path, e))? {
            let (key, value) = row.map_err(|e| io(path, e))?;
            let entry = decode(path, value.value())?;
            if entry.key != key.value() {
                return Err(corrupt(
                    path,
                    format!("row {:?} holds the entry of {:?}", key.value(), entry.key),
                ));
            }
            saved.entries.push(entry);
        }
        let proofs = txn.open_table(PROOFS).map_err(|e| corrupt(path, e))?;
        for row in proofs.iter().map_err(|e| io(path, e))? {
            let (_, value) = row.map_err(|e| io(path, e))?;
            saved.proofs.push(decode(path, value.value())?);
        }
        let meta = txn.open_table(META).map_err(|e| corrupt(path, e))?;
        let leased = lease_in(path, &meta)?;
        Ok((saved, leased))
    }
}

fn lease_in(
    path: &Path,
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<u64, StoreError> {
    match meta.get("leased").map_err(|e| io(path, e))? {
        None => Ok(0),
        Some(bytes) => {
            let bytes: [u8; 8] = bytes
                .value()
                .try_into()
                .map_err(|_| corrupt(path, "the counter lease is not 8 bytes"))?;
            Ok(u64::from_le_bytes(bytes))
        }
    }
}

fn encode(entry: &SignedEntry) -> Result<Vec<u8>, StoreError> {
    postcard::to_stdvec(entry).map_err(|error| StoreError::Corrupt {
        path: PathBuf::new(),
        reason: format!("cannot encode entry {:?}: {error}", entry.key),
    })
}

fn decode(path: &Path, bytes: &[u8]) -> Result<SignedEntry, StoreError> {
    postcard::from_bytes(bytes)
        .map_err(|error| corrupt(path, format!("a stored entry does not decode: {error}")))
}

fn corrupt(path: &Path, reason: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

fn io(path: &Path, error: impl Into<redb::Error>) -> StoreError {
    match error.into() {
        redb::Error::Io(source) => StoreError::Io {
            path: path.to_owned(),
            source,
        },
        redb::Error::Corrupted(reason) => corrupt(path, reason),
        other => StoreError::Io {
            path: path.to_owned(),
            source: std::io::Error::other(other.to_string()),
        },
    }
}

/// Creates `dir` (and its parents) if missing, the last one readable by its owner only.
fn create_private_dir(dir: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| StoreError::Io {
            path: dir.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use knhk_security::NodeKey;

    fn open(dir: &Path, owner: &NodeKey) -> Result<Opened, StoreError> {
        Store::open(dir, owner.agent_id(), "test", StateConfig::default())
    }

    #[test]
    fn what_is_committed_is_there_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let key = NodeKey::from_seed([1; 32]);
        let opened = open(dir.path(), &key).unwrap();
        assert!(opened.created);
        let mut state = opened.state;
        let a = state.put(&key, "a", b"1".to_vec()).unwrap();
        let b = state.put(&key, "b", b"2".to_vec()).unwrap();
        let a2 = state.put(&key, "a", b"3".to_vec()).unwrap();
        // Out of order: the older write of "a" comes last and loses.
        let batch = Batch {
            entries: vec![a2.clone(), b, a],
            proofs: vec![a2],
            lease_through: Some(LEASE_BLOCK),
        };
        opened.store.commit(&batch).unwrap();
        drop(opened.store);
        let mut reopened = open(dir.path(), &key).unwrap();
        assert!(!reopened.created);
        assert_eq!(reopened.state.get("a"), Some(&b"3"[..]));
        assert_eq!(reopened.state.version(), state.version());
        assert_eq!(reopened.state.merkle_root(), state.merkle_root());
        assert_eq!(reopened.leased_through, LEASE_BLOCK);
    }

    #[test]
    fn the_lease_and_proofs_never_go_back() {
        let dir = tempfile::tempdir().unwrap();
        let key = NodeKey::from_seed([1; 32]);
        let opened = open(dir.path(), &key).unwrap();
        let mut state = opened.state;
        let first = state.put(&key, "a", b"1".to_vec()).unwrap();
        let second = state.put(&key, "b", b"2".to_vec()).unwrap();
        for (proof, lease) in [(second.clone(), 20), (first, 10)] {
            let batch = Batch {
                entries: vec![],
                proofs: vec![proof],
                lease_through: Some(lease),
            };
            opened.store.commit(&batch).unwrap();
        }
        drop(opened.store);
        let reopened = open(dir.path(), &key).unwrap();
        assert_eq!(reopened.leased_through, 20);
        assert_eq!(reopened.state.version().get(&key.agent_id()), 2);
    }

    #[test]
    fn another_nodes_directory_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let owner = NodeKey::from_seed([1; 32]);
        let opened = open(dir.path(), &owner).unwrap();
        let mut state = opened.state;
        let entry = state.put(&owner, "kept", b"1".to_vec()).unwrap();
        let batch = Batch {
            entries: vec![entry.clone()],
            proofs: vec![entry],
            lease_through: None,
        };
        opened.store.commit(&batch).unwrap();
        drop(opened.store);
        let error = open(dir.path(), &NodeKey::from_seed([2; 32])).unwrap_err();
        assert!(matches!(error, StoreError::Foreign { .. }), "{error}");
        let other_cluster = Store::open(
            dir.path(),
            NodeKey::from_seed([1; 32]).agent_id(),
            "elsewhere",
            StateConfig::default(),
        )
        .unwrap_err();
        assert!(matches!(other_cluster, StoreError::Foreign { .. }));
        // Its owner still finds everything.
        let reopened = open(dir.path(), &owner).unwrap();
        assert_eq!(reopened.state.get("kept"), Some(&b"1"[..]));
    }

    #[test]
    fn a_file_that_is_not_a_store_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        std::fs::write(&path, b"this is not a database").unwrap();
        let error = open(dir.path(), &NodeKey::from_seed([1; 32])).unwrap_err();
        assert!(matches!(error, StoreError::Corrupt { .. }), "{error}");
        assert!(std::fs::read(&path).unwrap() == b"this is not a database");
    }

    #[test]
    fn a_tampered_entry_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let key = NodeKey::from_seed([1; 32]);
        let opened = open(dir.path(), &key).unwrap();
        let mut state = opened.state;
        let mut entry = state.put(&key, "a", b"1".to_vec()).unwrap();
        entry.value = Some(b"forged".to_vec());
        // Written behind the store's back (its join would keep the signed one too:
        // the forgery has the same marker fields but another digest).
        let txn = opened.store.db.begin_write().unwrap();
        txn.open_table(ENTRIES)
            .unwrap()
            .insert("a", postcard::to_stdvec(&entry).unwrap().as_slice())
            .unwrap();
        txn.commit().unwrap();
        drop(opened.store);
        let error = open(dir.path(), &key).unwrap_err();
        assert!(matches!(error, StoreError::Corrupt { .. }), "{error}");
        assert!(error.to_string().contains("signature"), "{error}");
    }
}
