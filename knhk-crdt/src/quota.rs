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
