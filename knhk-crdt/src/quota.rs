//! [`WriterUsage`]: what each writer's winning entries hold, so one member cannot fill
//! the state that every member shares.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use knhk_types::AgentId;

use crate::entry::{SignedEntry, Stored};

/// Bytes an entry holds against its writer's quota: its key and value (a tombstone
/// holds its key).
pub(crate) fn held_bytes(entry: &SignedEntry) -> u64 {
    (entry.key.len() + entry.value.as_ref().map_or(0, Vec::len)) as u64
}

/// Writers a delta may name for the allocation-free quota check.
const QUICK_WRITERS: usize = 8;

/// Keys and bytes held by one writer's winning entries (its use of its quota).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriterHeld {
    /// Keys (tombstones included) whose winning entry is the writer's.
    pub keys: u64,
    /// Bytes of those entries' keys and values.
    pub bytes: u64,
}

/// The most one writer's winning entries may hold.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Quota {
    pub max_keys: u64,
    pub max_bytes: u64,
}

impl Quota {
    fn allows(self, held: WriterHeld) -> bool {
        held.keys <= self.max_keys && held.bytes <= self.max_bytes
    }
}

/// Per writer, what its winning entries hold now (kept up to date by every apply).
#[derive(Clone, Debug, Default)]
pub(crate) struct WriterUsage(HashMap<AgentId, WriterHeld>);

impl WriterUsage {
    /// What `writer` holds now.
    pub(crate) fn held(&self, writer: &AgentId) -> WriterHeld {
        self.0.get(writer).copied().unwrap_or_default()
    }

    /// `entry` became the winner of a key.
    pub(crate) fn gained(&mut self, entry: &SignedEntry) {
        let held = self.0.entry(entry.writer).or_default();
        held.keys += 1;
        held.bytes += held_bytes(entry);
    }

    /// `entry` stopped being the winner of its key.
    pub(crate) fn lost(&mut self, entry: &SignedEntry) {
        if let Some(held) = self.0.get_mut(&entry.writer) {
            held.keys = held.keys.saturating_sub(1);
            held.bytes = held.bytes.saturating_sub(held_bytes(entry));
            if held.keys == 0 {
                self.0.remove(&entry.writer);
            }
        }
    }

    /// The writers whose winning entries would exceed `quota` if every entry of
    /// `incoming` won its key, where `winner_of(key)` is the key's current winner.
    /// Conservative: keys other writers would take away from a writer are not credited
    /// back, so a writer is never let past its quota by a merge.
    pub(crate) fn over_quota<'a>(
        &self,
        quota: Quota,
        incoming: impl Iterator<Item = &'a Stored> + Clone,
        winner_of: impl Fn(&Stored) -> Option<&'a SignedEntry>,
    ) -> BTreeSet<AgentId> {
        if self.surely_within(quota, incoming.clone()) {
            return BTreeSet::new();
        }
        self.exactly_over(quota, incoming, winner_of)
    }

    /// The common case, without allocating: true if even counting every entry as a
    /// new key of its writer, no writer of `incoming` (at most [`QUICK_WRITERS`] of
    /// them) would pass `quota`.
    fn surely_within<'a>(&self, quota: Quota, incoming: impl Iterator<Item = &'a Stored>) -> bool {
        let mut slots = [(AgentId::from_bytes([0; 32]), WriterHeld::default()); QUICK_WRITERS];
        let mut used = 0;
        for item in incoming {
            let writer = item.entry.writer;
            let at = match slots[..used].iter().position(|(id, _)| *id == writer) {
                Some(at) => at,
                None if used < QUICK_WRITERS => {
                    slots[used] = (writer, self.held(&writer));
                    used += 1;
                    used - 1
                }
                None => return false,
            };
            let held = &mut slots[at].1;
            held.keys = held.keys.saturating_add(1);
            held.bytes = held.bytes.saturating_add(held_bytes(&item.entry));
        }
        slots[..used].iter().all(|(_, held)| quota.allows(*held))
    }

    /// The exact projection behind [`WriterUsage::over_quota`].
    fn exactly_over<'a>(
        &self,
        quota: Quota,
        incoming: impl Iterator<Item = &'a Stored>,
        winner_of: impl Fn(&Stored) -> Option<&'a SignedEntry>,
    ) -> BTreeSet<AgentId> {
        // One entry per (writer, key): the largest, if a delta carries several.
        let mut per_key: BTreeMap<(AgentId, &str), &Stored> = BTreeMap::new();
        for item in incoming {
            let slot = per_key
                .entry((item.entry.writer, &item.key))
                .or_insert(item);
            if held_bytes(&item.entry) > held_bytes(&slot.entry) {
                *slot = item;
            }
        }
        let mut projected: BTreeMap<AgentId, WriterHeld> = BTreeMap::new();
        for ((writer, _), item) in per_key {
            let held = projected
                .entry(writer)
                .or_insert_with(|| self.held(&writer));
            match winner_of(item) {
                Some(current) if current.writer == writer => {
                    held.bytes =
                        (held.bytes + held_bytes(&item.entry)).saturating_sub(held_bytes(current));
                }
                _ => {
                    held.keys += 1;
                    held.bytes += held_bytes(&item.entry);
                }
            }
        }
        projected
            .into_iter()
            .filter(|(_, held)| !quota.allows(*held))
            .map(|(writer, _)| writer)
            .collect()
    }
}
