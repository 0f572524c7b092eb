//! Property tests over generated histories: the CRDT laws, delta catch-up, roots, diff.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;

use knhk_crdt::{DiffStep, MerkleDiff, StateConfig, VersionedState};
use knhk_security::{Ed25519Verifier, NodeKey};
use knhk_types::VersionVector;
use proptest::prelude::*;

/// A small tree so buckets hold several keys and diffs take several levels.
const DEPTH: u8 = 4;

#[derive(Clone, Debug)]
enum Step {
    /// Replica `replica` writes (or deletes, if `value` is None) `key` as its own writer.
    Write {
        replica: usize,
        key: u8,
        value: Option<u8>,
    },
    /// Replica `to` merges what it lacks from replica `from`.
    Sync { from: usize, to: usize },
}

fn step(replicas: usize) -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0..replicas, 0u8..12, proptest::option::weighted(0.85, any::<u8>()))
            .prop_map(|(replica, key, value)| Step::Write { replica, key, value }),
        1 => (0..replicas, 0..replicas).prop_map(|(from, to)| Step::Sync { from, to }),
    ]
}

fn history(replicas: usize) -> impl Strategy<Value = Vec<Step>> {
    proptest::collection::vec(step(replicas), 1..40)
}

fn writers() -> Vec<NodeKey> {
    (0..3u8).map(|n| NodeKey::from_seed([n + 1; 32])).collect()
}

/// Plays a history over three replicas, each writing as its own key.
fn play(steps: &[Step], verifier: &mut Ed25519Verifier) -> Vec<VersionedState> {
    let keys = writers();
    let config = StateConfig {
        merkle_depth: DEPTH,
        ..StateConfig::default()
    };
    let mut replicas: Vec<VersionedState> = (0..3)
        .map(|_| VersionedState::new(config.clone()))
        .collect();
    for step in steps {
        match *step {
            Step::Write {
                replica,
                key,
                value,
            } => {
                let key_name = format!("key-{key}");
                match value {
                    Some(value) => replicas[replica].put(&keys[replica], &key_name, vec![value]),
                    None => replicas[replica].delete(&keys[replica], &key_name),
                }
                .unwrap();
            }
            Step::Sync { from, to } if from != to => {
                let delta = replicas[from].delta_since(replicas[to].version());
                replicas[to].merge(&delta, verifier).unwrap();
            }
            Step::Sync { .. } => {}
        }
    }
    replicas
}

/// `a ⊔ b`: a copy of `a` that merged all of `b`.
fn join(a: &VersionedState, b: &VersionedState, verifier: &mut Ed25519Verifier) -> VersionedState {
    let mut joined = a.clone();
    joined
        .merge(&b.delta_since(&VersionVector::new()), verifier)
        .unwrap();
    joined
}

fn same(a: &mut VersionedState, b: &mut VersionedState) -> bool {
    a.digests() == b.digests() && a.version() == b.version() && a.merkle_root() == b.merkle_root()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn merge_is_commutative_associative_and_idempotent(steps in history(3)) {
        let mut verifier = Ed25519Verifier::new(1 << 16);
        let replicas = play(&steps, &mut verifier);
        let (a, b, c) = (&replicas[0], &replicas[1], &replicas[2]);

        let mut ab = join(a, b, &mut verifier);
        let mut ba = join(b, a, &mut verifier);
        prop_assert!(same(&mut ab, &mut ba), "commutativity");

        let mut ab_c = join(&ab, c, &mut verifier);
        let bc = join(b, c, &mut verifier);
        let mut a_bc = join(a, &bc, &mut verifier);
        prop_assert!(same(&mut ab_c, &mut a_bc), "associativity");

        let mut aa = join(a, a, &mut verifier);
        let mut a_copy = a.clone();
        prop_assert!(same(&mut aa, &mut a_copy), "idempotence");
    }

    #[test]
    fn what_each_writer_holds_is_counted_exactly(steps in history(3)) {
        let mut verifier = Ed25519Verifier::new(1 << 16);
        let replicas = play(&steps, &mut verifier);
        for replica in &replicas {
            for key in writers() {
                let writer = key.agent_id();
                let mine: Vec<_> = replica.entries().filter(|e| e.writer == writer).collect();
                let bytes: usize = mine
                    .iter()
                    .map(|e| e.key.len() + e.value.as_ref().map_or(0, Vec::len))
                    .sum();
                let held = replica.held_by(&writer);
                prop_assert_eq!((held.keys, held.bytes), (mine.len() as u64, bytes as u64));
            }
        }
    }

    #[test]
    fn deltas_for_each_page_of_a_version_add_up_to_the_whole_delta(steps in history(3), page_writers in 1usize..3) {
        let mut verifier = Ed25519Verifier::new(1 << 16);
        let replicas = play(&steps, &mut verifier);
        let (a, mut b) = (&replicas[0], replicas[1].clone());
        let mut expected = join(&b, a, &mut verifier);
        // b sends its version a page at a time (pages tile every writer id); a answers
        // each within the page's range only.
        let version = b.version().clone();
        let mut start = None;
        loop {
            let page = version.page(start.as_ref(), None, page_writers);
            let delta = a.delta_for_page(&page, usize::MAX);
            prop_assert!(delta.ranges.iter().all(|range| page.contains(&range.writer)));
            b.merge(&delta, &mut verifier).unwrap();
            match page.end() {
                Some(end) => start = Some(*end),
                None => break,
            }
        }
        prop_assert!(same(&mut expected, &mut b));
    }

    #[test]
    fn merging_delta_since_b_brings_b_to_a(steps in history(3), more in history(3)) {
        let mut verifier = Ed25519Verifier::new(1 << 16);
        // b is a snapshot of a; a then goes on (writing and learning from others).
        let mut replicas = play(&steps, &mut verifier);
        let mut b = replicas[0].clone();
        let keys = writers();
        for step in &more {
            match *step {
                Step::Write { replica, key, value } => {
                    let name = format!("key-{key}");
                    match value {
                        Some(v) => replicas[replica].put(&keys[replica], &name, vec![v]),
                        None => replicas[replica].delete(&keys[replica], &name),
                    }.unwrap();
                }
                Step::Sync { from, to } if from != to => {
                    let delta = replicas[from].delta_since(replicas[to].version());
                    replicas[to].merge(&delta, &mut verifier).unwrap();
                }
                Step::Sync { .. } => {}
            }
        }
        let mut a = replicas.swap_remove(0);
        let delta = a.delta_since(b.version());
        b.merge(&delta, &mut verifier).unwrap();
        prop_assert!(same(&mut a, &mut b));
        prop_assert!(a.delta_since(b.version()).is_empty());
    }

    #[test]
    fn equal_roots_if_and_only_if_equal_states(steps in history(3)) {
        let mut verifier = Ed25519Verifier::new(1 << 16);
        let mut replicas = play(&steps, &mut verifier);
        let joined = join(&replicas[0], &replicas[1], &mut verifier);
        replicas.push(joined);
        for i in 0..replicas.len() {
            for j in 0..replicas.len() {
                let equal_data = replicas[i].digests() == replicas[j].digests();
                let (ri, rj) = (replicas[i].clone().merkle_root(), replicas[j].clone().merkle_root());
                prop_assert_eq!(equal_data, ri == rj, "replicas {} and {}", i, j);
            }
        }
    }

    #[test]
    fn merkle_diff_finds_exactly_the_differing_keys(steps in history(3)) {
        let mut verifier = Ed25519Verifier::new(1 << 16);
        let mut replicas = play(&steps, &mut verifier);
        let (left, right) = replicas.split_at_mut(1);
        let (local, remote) = (&mut left[0], &mut right[0]);
        let expected: BTreeSet<String> = {
            let (mine, theirs) = (local.digests(), remote.digests());
            mine.keys().chain(theirs.keys())
                .filter(|key| mine.get(*key) != theirs.get(*key))
                .map(|key| key.to_string())
                .collect()
        };
        let remote_root = remote.merkle_root();
        let (mut session, mut step) = MerkleDiff::start(local, remote_root);
        let found = loop {
            step = match step {
                DiffStep::AskNodes(ids) => session.on_nodes(local, &remote.merkle_nodes(&ids)).unwrap(),
                DiffStep::AskBuckets(buckets) => session.on_buckets(local, &remote.bucket_digests(&buckets)).unwrap(),
                DiffStep::Done(keys) => break keys,
            };
        };
        prop_assert_eq!(found.iter().cloned().collect::<BTreeSet<_>>(), expected.clone());
        // O(d · log n): two children per differing node per level, plus the key digests
        // of the differing buckets (at most d buckets; here at most 12 keys in all).
        let d = expected.len();
        let bound = 1 + 2 * d * usize::from(DEPTH) + d * 12;
        prop_assert!(session.hashes_received() <= bound, "{} hashes for {} keys", session.hashes_received(), d);
    }
}

#[test]
fn diff_cost_grows_with_differences_not_with_state_size() {
    let writer = NodeKey::from_seed([1; 32]);
    let config = StateConfig::default(); // depth 12
    let mut verifier = Ed25519Verifier::new(1 << 16);
    let mut base = VersionedState::new(config);
    for n in 0..10_000 {
        base.put(&writer, &format!("agent/{n}"), vec![1]).unwrap();
    }
    let mut local = base.clone();
    let mut remote = base;
    for n in [3, 4_000, 9_999] {
        remote.put(&writer, &format!("agent/{n}"), vec![2]).unwrap();
    }
    let remote_root = remote.merkle_root();
    let (mut session, mut step) = MerkleDiff::start(&mut local, remote_root);
    let found = loop {
        step = match step {
            DiffStep::AskNodes(ids) => session
                .on_nodes(&mut local, &remote.merkle_nodes(&ids))
                .unwrap(),
            DiffStep::AskBuckets(b) => session
                .on_buckets(&local, &remote.bucket_digests(&b))
                .unwrap(),
            DiffStep::Done(keys) => break keys,
        };
    };
    assert_eq!(found, ["agent/3", "agent/4000", "agent/9999"]);
    // 3 differences in 10,000 keys: at most 3 · 2 · 12 node hashes plus 3 small buckets.
    assert!(
        session.hashes_received() <= 1 + 72 + 3 * 10,
        "{}",
        session.hashes_received()
    );
    local
        .merge_entries(&remote.entries_for(&found), &mut verifier)
        .unwrap();
    assert_eq!(local.merkle_root(), remote.merkle_root());
}
