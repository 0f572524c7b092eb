//! [`VersionedState`]: the replicated map, its version vector and its Merkle tree.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use crdts::{CvRDT, LWWReg};
use knhk_security::SignatureVerifier;
use knhk_types::{AgentId, EnvelopeSigner, VersionPage, VersionVector};

use crate::delta::{Delta, WriterRange};
use crate::entry::{Marker, SignedEntry, Stored};
use crate::error::CrdtError;
use crate::merkle::{Hash, SparseMerkle, bucket_hash, bucket_of};
use crate::quota::{Quota, WriterHeld, WriterUsage};

/// The smallest key, to start a range over (counter, key) pairs.
fn empty_key() -> Arc<str> {
    static EMPTY: std::sync::OnceLock<Arc<str>> = std::sync::OnceLock::new();
    EMPTY.get_or_init(|| Arc::from("")).clone()
}

/// Approximate wire size of an entry: key, value, and fixed fields with signature.
fn entry_size(entry: &SignedEntry) -> usize {
    entry.key.len() + entry.value.as_ref().map_or(0, Vec::len) + 120
}

/// Checks an entry's signature over bytes already built by `admit`.
fn verify(
    verifier: &mut impl SignatureVerifier,
    entry: &SignedEntry,
    signed_bytes: &[u8],
) -> Result<(), CrdtError> {
    verifier
        .verify(&entry.writer, signed_bytes, &entry.signature)
        .map_err(|_| CrdtError::BadSignature {
            writer: entry.writer,
            counter: entry.counter,
        })
}

/// Limits and shape of a [`VersionedState`]. Peers that compare Merkle trees must use
/// the same `merkle_depth`.
#[derive(Clone, Debug)]
pub struct StateConfig {
    /// Longest key, in bytes. Default 256.
    pub max_key_bytes: usize,
    /// Largest value, in bytes. Default 64 KiB.
    pub max_value_bytes: usize,
    /// Most keys held (tombstones count). Default 1,000,000.
    pub max_entries: usize,
    /// The Merkle tree has `2^merkle_depth` buckets (at most 24). Default 12 (4,096).
    pub merkle_depth: u8,
    /// Once the state has been told the time ([`VersionedState::observe_time`]),
    /// entries whose Lamport time runs more than this many milliseconds ahead of our
    /// clock are set aside unapplied (until our clock catches up), and local writes take Lamport times of at least the clock (a
    /// hybrid logical clock). A writer can then own a key with a far-future Lamport time
    /// for at most this long, not for ever. Default 60 s (twice the gate's default
    /// clock-skew window).
    pub max_lamport_lead_ms: u64,
    /// Most keys one writer's winning entries may hold (tombstones count). Default
    /// 65,536: one member cannot fill the `max_entries` every member shares. A local
    /// write past it fails with [`CrdtError::WriterQuota`]; a peer's entries that would
    /// take their writer past it are set aside unapplied (the writer's version does not
    /// advance, so they come again once the writer holds less, for example after other
    /// writers took some of its keys).
    pub max_keys_per_writer: u64,
    /// Most bytes (keys and values) one writer's winning entries may hold, as
    /// `max_keys_per_writer`. Default 64 MiB.
    pub max_bytes_per_writer: u64,
}

impl Default for StateConfig {
    fn default() -> Self {
        Self {
            max_key_bytes: 256,
            max_value_bytes: 64 * 1024,
            max_entries: 1_000_000,
            merkle_depth: 12,
            max_lamport_lead_ms: 60_000,
            max_keys_per_writer: 65_536,
            max_bytes_per_writer: 64 * 1024 * 1024,
        }
    }
}

/// What a merge changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MergeReport {
    /// Keys whose winning entry changed, in key order.
    pub updated_keys: Vec<String>,
    /// Writers whose version advanced.
    pub advanced_writers: usize,
    /// Entries set aside, unapplied, because their Lamport time runs more than
    /// `max_lamport_lead_ms` ahead of our clock (they are taken when our clock catches
    /// up; a range whose proof is among them is not advanced).
    pub deferred_entries: usize,
    /// Entries set aside, unapplied, because they would take their writer past its
    /// quota (`max_keys_per_writer`, `max_bytes_per_writer`); their writer's range is
    /// not advanced.
    pub over_quota_entries: usize,
}

impl MergeReport {
    /// True if the merge changed nothing (a duplicate or an old delta).
    pub fn is_empty(&self) -> bool {
        self.updated_keys.is_empty() && self.advanced_writers == 0
    }
}

type Register = LWWReg<Stored, Marker>;

/// A map of keys to last-writer-wins registers of [`SignedEntry`]s.
///
/// Besides the winning entry of every key, the state keeps:
/// - its version vector (per writer, the highest counter whose effects it has), and for
///   each writer the signed entry carrying that counter, the *proof* a delta shows
///   when it claims that version (kept even after the entry is overwritten);
/// - an index from (writer, counter) to key, so [`VersionedState::delta_since`] costs
///   O(writers that changed + entries sent), not O(state);
/// - a Merkle tree over all entries ([`VersionedState::merkle_root`]).
#[derive(Clone, Debug)]
pub struct VersionedState {
    config: StateConfig,
    version: VersionVector,
    proofs: BTreeMap<AgentId, Stored>,
    lamport: u64,
    /// The latest wall-clock time we were told, in ms (0: never told).
    clock_ms: u64,
    buckets: HashMap<u32, BTreeMap<Arc<str>, Register>>,
    /// (counter, key) of every winning entry, per writer. A set of pairs rather than a
    /// map from counter, because an equivocating writer can use one counter for two keys.
    by_writer: BTreeMap<AgentId, BTreeSet<(u64, Arc<str>)>>,
    /// Keys and bytes each writer's winning entries hold (for the per-writer quota).
    usage: WriterUsage,
    len: usize,
    merkle: SparseMerkle,
    lease: CounterLease,
}

/// The counters local writes may use (see [`VersionedState::lease_counters`]).
#[derive(Clone, Copy, Debug)]
struct CounterLease {
    floor: u64,
    ceiling: u64,
}

impl Default for CounterLease {
    fn default() -> Self {
        Self {
            floor: 0,
            ceiling: u64::MAX,
        }
    }
}

impl VersionedState {
    /// An empty state.
    pub fn new(config: StateConfig) -> Self {
        let merkle = SparseMerkle::new(config.merkle_depth);
        Self {
            config,
            version: VersionVector::new(),
            proofs: BTreeMap::new(),
            lamport: 0,
            clock_ms: 0,
            buckets: HashMap::new(),
            by_writer: BTreeMap::new(),
            usage: WriterUsage::default(),
            len: 0,
            merkle,
            lease: CounterLease::default(),
        }
    }

    /// Limits the counters local writes use to above `floor` and at most `ceiling`.
    /// A node that keeps its state on disk leases counters durably before it uses
    /// them: after a crash it restarts above every counter it may have signed and
    /// sent, so it never signs two entries with one counter (which peers refuse as
    /// equivocation), even for writes it sent but had not yet stored. A lease only
    /// grows: once leased, a lower floor or ceiling than the current one is ignored.
    /// Without a lease, every counter may be used.
    pub fn lease_counters(&mut self, floor: u64, ceiling: u64) {
        if self.lease.ceiling == u64::MAX {
            self.lease.ceiling = ceiling;
        } else {
            self.lease.ceiling = self.lease.ceiling.max(ceiling);
        }
        self.lease.floor = self.lease.floor.max(floor);
    }

    /// The counter the next local write by `writer` would use.
    pub fn next_counter(&self, writer: &AgentId) -> u64 {
        self.version
            .get(writer)
            .max(self.lease.floor)
            .saturating_add(1)
    }

    /// The entry proving how far this state has seen `writer`'s versions (the one at
    /// its version-vector counter); `None` for a writer never seen.
    pub fn proof(&self, writer: &AgentId) -> Option<&SignedEntry> {
        self.proofs.get(writer).map(|stored| &*stored.entry)
    }

    /// Every writer's proof entry, by writer.
    pub fn proofs(&self) -> impl Iterator<Item = &SignedEntry> {
        self.proofs.values().map(|stored| &*stored.entry)
    }

    /// Tells the state the time (never moves it back): local writes then take Lamport
    /// times of at least `now` in ms, and merges set aside entries more than
    /// `max_lamport_lead_ms` ahead of it. A state never told the time keeps plain
    /// Lamport counters and no bound.
    pub fn observe_time(&mut self, now: knhk_types::UnixMillis) {
        self.clock_ms = self.clock_ms.max(now.0);
    }

    /// What this state has seen.
    pub fn version(&self) -> &VersionVector {
        &self.version
    }

    /// The configuration.
    pub fn config(&self) -> &StateConfig {
        &self.config
    }

    /// What `writer`'s winning entries hold against its quota (zero for a writer
    /// holding nothing).
    pub fn held_by(&self, writer: &AgentId) -> WriterHeld {
        self.usage.held(writer)
    }

    /// Number of keys held, tombstones included.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if no key was ever written.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The current value of `key`; `None` if never written or deleted.
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.entry(key).and_then(|entry| entry.value.as_deref())
    }

    /// The winning entry of `key`, tombstones included.
    pub fn entry(&self, key: &str) -> Option<&SignedEntry> {
        let bucket = bucket_of(key, self.merkle.depth());
        self.buckets
            .get(&bucket)?
            .get(key)
            .map(|register| &*register.val.entry)
    }

    /// Every winning entry, tombstones included, in no particular order.
    pub fn entries(&self) -> impl Iterator<Item = &SignedEntry> {
        self.buckets
            .values()
            .flat_map(|bucket| bucket.values())
            .map(|register| &*register.val.entry)
    }

    /// Winning entry digest per key, in key order: two states hold the same data iff
    /// these are equal.
    pub fn digests(&self) -> BTreeMap<&str, Hash> {
        self.buckets
            .values()
            .flat_map(|bucket| bucket.iter())
            .map(|(key, register)| (&**key, register.val.digest))
            .collect()
    }

    /// Writes `value` under `key` as `signer` (a local write by the owning node). Returns
    /// the signed entry, to be gossiped.
    ///
    /// Errors: [`CrdtError::KeyTooLong`], [`CrdtError::ValueTooLarge`],
    /// [`CrdtError::Full`], [`CrdtError::CounterExhausted`],
    /// [`CrdtError::CounterLeaseExhausted`]. On error nothing changes.
    pub fn put(
        &mut self,
        signer: &impl EnvelopeSigner,
        key: &str,
        value: Vec<u8>,
    ) -> Result<SignedEntry, CrdtError> {
        self.write(signer, key, Some(value))
    }

    /// Deletes `key` as `signer`, leaving a tombstone (which wins over older writes and
    /// is itself replicated). Returns the signed tombstone.
    ///
    /// Errors: as [`VersionedState::put`].
    pub fn delete(
        &mut self,
        signer: &impl EnvelopeSigner,
        key: &str,
    ) -> Result<SignedEntry, CrdtError> {
        self.write(signer, key, None)
    }

    fn write(
        &mut self,
        signer: &impl EnvelopeSigner,
        key: &str,
        value: Option<Vec<u8>>,
    ) -> Result<SignedEntry, CrdtError> {
        let writer = signer.agent_id();
        let counter = self
            .version
            .get(&writer)
            .max(self.lease.floor)
            .checked_add(1)
            .ok_or(CrdtError::CounterExhausted(writer))?;
        if counter > self.lease.ceiling {
            return Err(CrdtError::CounterLeaseExhausted {
                next: counter,
                ceiling: self.lease.ceiling,
            });
        }
        // Saturates rather than fails: a Byzantine writer that publishes a huge Lamport
        // time must not make every later local write impossible. At least the clock, so
        // honest Lamport times track wall-clock time and far-future ones stand out.
        let lamport = self.lamport.saturating_add(1).max(self.clock_ms);
        let entry = SignedEntry {
            key: key.to_owned(),
            value,
            writer,
            counter,
            lamport,
            signature: knhk_types::Signature([0; 64]),
        };
        self.check_limits(&entry)?;
        if self.entry(key).is_none() && self.len >= self.config.max_entries {
            return Err(CrdtError::Full {
                max: self.config.max_entries,
            });
        }
        let entry = SignedEntry::sign(signer, entry.key, entry.value, counter, lamport);
        let stored = Stored::new(entry.clone(), &entry.signed_bytes(), self.merkle.depth());
        if !self.within_quota(std::iter::once(&stored)).is_empty() {
            return Err(CrdtError::WriterQuota {
                writer,
                max_keys: self.config.max_keys_per_writer,
                max_bytes: self.config.max_bytes_per_writer,
            });
        }
        self.apply(stored.clone());
        self.version.observe(writer, counter);
        self.proofs.insert(writer, stored);
        Ok(entry)
    }

    /// Exactly what a peer at `peer_version` lacks: for each writer this state is ahead
    /// on, the range of versions and every still-winning entry in it, plus the signed
    /// entry proving the range's end. Lists only writers that changed.
    pub fn delta_since(&self, peer_version: &VersionVector) -> Delta {
        self.delta_since_bounded(peer_version, usize::MAX)
    }

    /// Like [`VersionedState::delta_since`], but stops adding entries once about
    /// `max_bytes` of keys and values are in (at least one entry is always included).
    /// A writer cut short gets a range ending at the last entry included, which is then
    /// its own proof; the peer asks again for the rest. Use it to keep deltas within a
    /// frame.
    pub fn delta_since_bounded(&self, peer_version: &VersionVector, max_bytes: usize) -> Delta {
        self.delta_over(
            self.version.iter(),
            |writer| peer_version.get(writer),
            max_bytes,
        )
    }

    /// Like [`VersionedState::delta_since_bounded`] for a peer that sent one page of its
    /// version vector: what it lacks from the writers of the page's range only (writers
    /// of the range it does not list are at 0 for it). Writers outside the range are
    /// left out, whatever the peer has of them.
    pub fn delta_for_page(&self, page: &VersionPage, max_bytes: usize) -> Delta {
        self.delta_over(
            self.version.iter_within(page.start(), page.end()),
            |writer| page.get(writer),
            max_bytes,
        )
    }

    /// The delta over `writers` (ours, with our counters) for a peer at `theirs`.
    fn delta_over<'a>(
        &self,
        writers: impl Iterator<Item = (&'a AgentId, &'a u64)>,
        theirs: impl Fn(&AgentId) -> u64,
        max_bytes: usize,
    ) -> Delta {
        let mut delta = Delta::default();
        let mut budget = max_bytes;
        'writers: for (writer, &through) in writers {
            let after = theirs(writer);
            if through <= after {
                continue;
            }
            let winners = self
                .by_writer
                .get(writer)
                .into_iter()
                .flat_map(|index| index.range((after + 1, empty_key())..))
                .take_while(|(counter, _)| *counter <= through)
                .filter_map(|(_, key)| self.entry(key));
            // The entry proving `through`, if no winner carries that counter itself.
            let proof = self
                .proofs
                .get(writer)
                .map(|proof| &*proof.entry)
                .filter(|_| !self.has_winner_at(writer, through));
            let first = delta.entries.len();
            let mut previous_counter = None;
            for entry in winners.chain(proof) {
                // An equivocating writer may have two winning entries with one counter;
                // send one, so honest deltas never carry a provable equivocation.
                if previous_counter == Some(entry.counter) {
                    continue;
                }
                previous_counter = Some(entry.counter);
                let size = entry_size(entry);
                if size > budget && !delta.entries.is_empty() {
                    // Out of room: end this writer's range at its last entry included
                    // (that entry is the range's proof), or leave the writer out.
                    if let Some(last) = delta.entries[first..].last().map(|e| e.counter) {
                        delta.ranges.push(WriterRange {
                            writer: *writer,
                            after,
                            through: last,
                        });
                    }
                    break 'writers;
                }
                budget = budget.saturating_sub(size);
                delta.entries.push(entry.clone());
            }
            delta.ranges.push(WriterRange {
                writer: *writer,
                after,
                through,
            });
        }
        delta
    }

    /// True if a winning entry of `writer` carries `counter`.
    fn has_winner_at(&self, writer: &AgentId, counter: u64) -> bool {
        self.by_writer.get(writer).is_some_and(|index| {
            index
                .range((counter, empty_key())..)
                .next()
                .is_some_and(|(at, _)| *at == counter)
        })
    }

    /// Applies a delta from a peer, all or nothing.
    ///
    /// Checks, before changing anything: every range moves forward and names its writer
    /// once; every entry lies inside its writer's range; every range carries the entry
    /// proving its end; no writer signed two different entries with one counter; sizes
    /// are within limits; the state would not exceed `max_entries`; and every entry's
    /// signature verifies through `verifier` (strict ed25519, cached). Then merges each
    /// entry (last-writer-wins by [`Marker`]) and advances the version of each writer
    /// whose range starts at or below what this state already has (a delta computed
    /// against a newer vector than ours never makes us claim versions we skipped).
    ///
    /// Errors: the first failed check, as a [`CrdtError`]; the state is unchanged.
    pub fn merge(
        &mut self,
        delta: &Delta,
        verifier: &mut impl SignatureVerifier,
    ) -> Result<MergeReport, CrdtError> {
        let mut ranges: BTreeMap<AgentId, &WriterRange> = BTreeMap::new();
        for range in &delta.ranges {
            if range.through <= range.after || ranges.insert(range.writer, range).is_some() {
                return Err(CrdtError::Backwards {
                    writer: range.writer,
                    after: range.after,
                    through: range.through,
                });
            }
        }
        // (writer, counter) → (digest, position in `admitted`): finds equivocations, and
        // later each range's proof without another pass.
        let mut seen: BTreeMap<(AgentId, u64), (Hash, usize)> = BTreeMap::new();
        let mut admitted = Vec::with_capacity(delta.entries.len());
        for entry in &delta.entries {
            let inside = ranges
                .get(&entry.writer)
                .is_some_and(|range| range.after < entry.counter && entry.counter <= range.through);
            if !inside {
                return Err(CrdtError::EntryOutsideRange {
                    writer: entry.writer,
                    counter: entry.counter,
                });
            }
            let (item, signed_bytes) = self.admit(entry)?;
            let at = admitted.len();
            if let Some((previous, _)) =
                seen.insert((entry.writer, entry.counter), (item.digest, at))
                && previous != item.digest
            {
                return Err(CrdtError::Equivocation {
                    writer: entry.writer,
                    counter: entry.counter,
                });
            }
            admitted.push((item, signed_bytes));
        }
        for range in ranges.values() {
            if !seen.contains_key(&(range.writer, range.through)) {
                return Err(CrdtError::MissingVersions {
                    writer: range.writer,
                    through: range.through,
                });
            }
        }
        self.check_capacity(admitted.iter().map(|(item, _)| item))?;
        // The ranges that advance our version, and their proofs (found by map lookup,
        // not by a scan per range).
        // A writer with entries set aside (too far ahead) does not advance: claiming
        // their versions would keep deltas from ever bringing them.
        // So does a writer whose entries would take it past its quota: they are set
        // aside (never verified) and come again once it holds less.
        let over_quota = self.within_quota(
            admitted
                .iter()
                .map(|(item, _)| item)
                .filter(|item| !self.too_far_ahead(&item.entry) && self.would_win(item)),
        );
        let postponed: BTreeSet<AgentId> = admitted
            .iter()
            .filter(|(item, _)| self.too_far_ahead(&item.entry))
            .map(|(item, _)| item.entry.writer)
            .chain(over_quota.iter().copied())
            .collect();
        let advancing: Vec<(AgentId, u64, usize)> = ranges
            .values()
            .filter(|range| {
                let mine = self.version.get(&range.writer);
                mine >= range.after && mine < range.through && !postponed.contains(&range.writer)
            })
            .filter_map(|range| {
                let (_, at) = seen.get(&(range.writer, range.through))?;
                // A proof from too far in the future cannot advance us yet.
                let proof = &admitted[*at].0.entry;
                (!self.too_far_ahead(proof)).then_some((range.writer, range.through, *at))
            })
            .collect();
        let mut is_proof = vec![false; admitted.len()];
        for (_, _, at) in &advancing {
            is_proof[*at] = true;
        }
        // Verify only what would change our state: an entry we hold already, or one
        // that loses to what we hold, changes nothing (and is dropped, unapplied), so a
        // peer replaying signed entries costs us no signature checks.
        // Entries from too far in the future are set aside, not refused: one of them
        // must not make a whole delta fail (relays whose clocks run ahead forward it).
        let deferred = admitted
            .iter()
            .filter(|(item, _)| self.too_far_ahead(&item.entry))
            .count();
        let quota_held = admitted
            .iter()
            .filter(|(item, _)| over_quota.contains(&item.entry.writer))
            .count();
        let keep: Vec<bool> = admitted
            .iter()
            .zip(&is_proof)
            .map(|((item, _), proof)| {
                !self.too_far_ahead(&item.entry)
                    && !over_quota.contains(&item.entry.writer)
                    && (*proof || self.would_win(item))
            })
            .collect();
        for ((item, signed_bytes), keep) in admitted.iter().zip(&keep) {
            if *keep {
                verify(verifier, &item.entry, signed_bytes)?;
            }
        }

        let mut report = MergeReport {
            deferred_entries: deferred,
            over_quota_entries: quota_held,
            ..MergeReport::default()
        };
        for (writer, through, at) in advancing {
            self.version.observe(writer, through);
            self.proofs.insert(writer, admitted[at].0.clone());
            report.advanced_writers += 1;
        }
        let winners = admitted
            .into_iter()
            .zip(keep)
            .filter_map(|((item, _), keep)| keep.then_some(item));
        report.updated_keys = self.apply_all(winners);
        Ok(report)
    }

    /// Merges loose entries (for example those a [`crate::MerkleDiff`] found missing)
    /// without touching the version vector. All or nothing, with the same size,
    /// capacity and signature checks as [`VersionedState::merge`].
    ///
    /// Errors: as [`VersionedState::merge`]; the state is unchanged.
    pub fn merge_entries(
        &mut self,
        entries: &[SignedEntry],
        verifier: &mut impl SignatureVerifier,
    ) -> Result<MergeReport, CrdtError> {
        let admitted = entries
            .iter()
            .map(|entry| self.admit(entry))
            .collect::<Result<Vec<_>, _>>()?;
        self.check_capacity(admitted.iter().map(|(item, _)| item))?;
        // As in `merge`: only entries that would win are verified and applied, and
        // entries from too far in the future are set aside.
        let deferred = admitted
            .iter()
            .filter(|(item, _)| self.too_far_ahead(&item.entry))
            .count();
        let over_quota = self.within_quota(
            admitted
                .iter()
                .map(|(item, _)| item)
                .filter(|item| !self.too_far_ahead(&item.entry) && self.would_win(item)),
        );
        let quota_held = admitted
            .iter()
            .filter(|(item, _)| over_quota.contains(&item.entry.writer))
            .count();
        let winners: Vec<Stored> = admitted
            .into_iter()
            .filter(|(item, _)| {
                !self.too_far_ahead(&item.entry)
                    && !over_quota.contains(&item.entry.writer)
                    && self.would_win(item)
            })
            .map(|(item, signed_bytes)| verify(verifier, &item.entry, &signed_bytes).map(|()| item))
            .collect::<Result<_, _>>()?;
        Ok(MergeReport {
            updated_keys: self.apply_all(winners.into_iter()),
            advanced_writers: 0,
            deferred_entries: deferred,
            over_quota_entries: quota_held,
        })
    }

    /// The winning entries of `keys` (tombstones included; unknown and repeated keys
    /// skipped).
    pub fn entries_for(&self, keys: &[String]) -> Vec<SignedEntry> {
        let unique: BTreeSet<&String> = keys.iter().collect();
        unique
            .into_iter()
            .filter_map(|key| self.entry(key).cloned())
            .collect()
    }

    /// The Merkle root over every entry. Equal roots ⇔ equal [`VersionedState::digests`]
    /// (up to SHA-256 collisions). Recomputes only paths dirtied since the last call:
    /// O(changed buckets · depth) hashes.
    pub fn merkle_root(&mut self) -> Hash {
        self.flush_merkle();
        self.merkle.root()
    }

    /// Depth of the Merkle tree (the tree has `2^depth` buckets).
    pub fn merkle_depth(&self) -> u8 {
        self.merkle.depth()
    }

    /// Hashes of the given nodes (heap ids: 1 is the root, `2i`/`2i+1` the children).
    /// Duplicate ids are answered once.
    pub fn merkle_nodes(&mut self, ids: &[u32]) -> Vec<(u32, Hash)> {
        self.flush_merkle();
        let unique: BTreeSet<u32> = ids.iter().copied().collect();
        unique
            .into_iter()
            .map(|id| (id, self.merkle.node(id)))
            .collect()
    }

    /// The (key, digest) pairs of the given buckets, in key order. Duplicate buckets are
    /// answered once.
    pub fn bucket_digests(&self, buckets: &[u32]) -> Vec<crate::BucketDigests> {
        self.bucket_digests_bounded(buckets, usize::MAX)
    }

    /// As [`VersionedState::bucket_digests`], stopping before the answer would exceed
    /// `max_bytes` (keys plus 32-byte digests; the first bucket is always answered):
    /// a question about every bucket of a large state gets a first chunk, not a reply
    /// too large to send. Costs O(what is answered).
    pub fn bucket_digests_bounded(
        &self,
        buckets: &[u32],
        max_bytes: usize,
    ) -> Vec<crate::BucketDigests> {
        let unique: BTreeSet<u32> = buckets.iter().copied().collect();
        let mut budget = max_bytes;
        let mut answer = Vec::new();
        for bucket in unique {
            let entries = self.buckets.get(&bucket);
            let size: usize = 8 + entries.map_or(0, |entries| {
                entries.keys().map(|key| key.len() + 40).sum::<usize>()
            });
            if size > budget && !answer.is_empty() {
                break;
            }
            budget = budget.saturating_sub(size);
            answer.push(crate::BucketDigests {
                bucket,
                keys: entries
                    .map(|entries| {
                        entries
                            .iter()
                            .map(|(key, reg)| (key.to_string(), reg.val.digest))
                            .collect()
                    })
                    .unwrap_or_default(),
            });
        }
        answer
    }

    /// Approximate heap bytes held, for memory accounting.
    pub fn approx_heap_bytes(&self) -> usize {
        let entries: usize = self
            .entries()
            .map(|entry| 2 * entry.key.len() + entry.value.as_ref().map_or(0, Vec::len) + 300)
            .sum();
        entries + self.proofs.len() * 300 + self.merkle.stored_nodes() * 48
    }

    fn flush_merkle(&mut self) {
        if !self.merkle.is_dirty() {
            return;
        }
        let buckets = &self.buckets;
        self.merkle.flush(|bucket| {
            buckets
                .get(&bucket)
                .filter(|entries| !entries.is_empty())
                .map(|entries| bucket_hash(entries.values().map(|register| &register.val.digest)))
        });
    }

    fn check_limits(&self, entry: &SignedEntry) -> Result<(), CrdtError> {
        if entry.key.len() > self.config.max_key_bytes {
            return Err(CrdtError::KeyTooLong {
                len: entry.key.len(),
                max: self.config.max_key_bytes,
            });
        }
        let value_len = entry.value.as_ref().map_or(0, Vec::len);
        if value_len > self.config.max_value_bytes {
            return Err(CrdtError::ValueTooLarge {
                len: value_len,
                max: self.config.max_value_bytes,
            });
        }
        Ok(())
    }

    /// Size checks, digest and bucket, before any signature work. Returns the signed
    /// bytes too, so the signature check does not rebuild them.
    fn admit(&self, entry: &SignedEntry) -> Result<(Stored, Vec<u8>), CrdtError> {
        self.check_limits(entry)?;
        let signed_bytes = entry.signed_bytes();
        Ok((
            Stored::new(entry.clone(), &signed_bytes, self.merkle.depth()),
            signed_bytes,
        ))
    }

    /// True if `entry`'s Lamport time runs more than `max_lamport_lead_ms` ahead of the
    /// clock we were told (never, before we were told one).
    fn too_far_ahead(&self, entry: &SignedEntry) -> bool {
        self.clock_ms > 0
            && entry.lamport
                > self
                    .clock_ms
                    .saturating_add(self.config.max_lamport_lead_ms)
    }

    /// True if `item` would replace the winner of its key (or its key is new). An entry
    /// identical to the winner, or one that loses to it, would change nothing.
    fn would_win(&self, item: &Stored) -> bool {
        self.buckets
            .get(&item.bucket)
            .and_then(|bucket| bucket.get(&*item.key))
            .is_none_or(|register| item.marker() > register.marker)
    }

    /// The writers that `incoming` (entries that would win) would take past their
    /// quota.
    fn within_quota<'a>(
        &'a self,
        incoming: impl Iterator<Item = &'a Stored> + Clone,
    ) -> BTreeSet<AgentId> {
        let quota = Quota {
            max_keys: self.config.max_keys_per_writer,
            max_bytes: self.config.max_bytes_per_writer,
        };
        self.usage.over_quota(quota, incoming, |item| {
            self.buckets
                .get(&item.bucket)
                .and_then(|bucket| bucket.get(&*item.key))
                .map(|register| &*register.val.entry)
        })
    }

    fn check_capacity<'a>(
        &self,
        incoming: impl Iterator<Item = &'a Stored>,
    ) -> Result<(), CrdtError> {
        let new_keys: BTreeSet<&str> = incoming
            .filter(|item| {
                self.buckets
                    .get(&item.bucket)
                    .is_none_or(|bucket| !bucket.contains_key(&*item.key))
            })
            .map(|item| item.entry.key.as_str())
            .collect();
        if self.len + new_keys.len() > self.config.max_entries {
            return Err(CrdtError::Full {
                max: self.config.max_entries,
            });
        }
        Ok(())
    }

    /// Applies verified entries; returns the keys whose winner changed, in key order.
    fn apply_all(&mut self, items: impl Iterator<Item = Stored>) -> Vec<String> {
        let mut updated = BTreeSet::new();
        for item in items {
            let key = item.key.clone();
            if self.apply(item) {
                updated.insert(key);
            }
        }
        updated.into_iter().map(|key| key.to_string()).collect()
    }

    /// Merges one verified entry into its key's register; `true` if it won.
    fn apply(&mut self, stored: Stored) -> bool {
        self.lamport = self.lamport.max(stored.entry.lamport);
        let bucket = stored.bucket;
        let (writer, counter, key) = (
            stored.entry.writer,
            stored.entry.counter,
            stored.key.clone(),
        );
        let marker = stored.marker();
        let entries = self.buckets.entry(bucket).or_default();
        let displaced = match entries.get_mut(&*key) {
            None => {
                self.usage.gained(&stored.entry);
                entries.insert(
                    key.clone(),
                    LWWReg {
                        val: stored,
                        marker,
                    },
                );
                self.len += 1;
                None
            }
            Some(register) => {
                let before = register.marker;
                let held = Arc::clone(&register.val.entry);
                register.merge(LWWReg {
                    val: stored,
                    marker,
                });
                if register.marker == before {
                    return false;
                }
                self.usage.lost(&held);
                self.usage.gained(&register.val.entry);
                Some((before.writer, before.counter))
            }
        };
        if let Some((old_writer, old_counter)) = displaced
            && let Some(index) = self.by_writer.get_mut(&old_writer)
        {
            index.remove(&(old_counter, key.clone()));
            if index.is_empty() {
                self.by_writer.remove(&old_writer);
            }
        }
        self.by_writer
            .entry(writer)
            .or_default()
            .insert((counter, key));
        self.merkle.mark_dirty(bucket);
        true
    }
}
