//! Writes, deltas and merges of `VersionedState`, including every way a delta is refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use knhk_crdt::{CrdtError, Delta, StateConfig, VersionedState, WriterRange};
use knhk_security::{Ed25519Verifier, NodeKey};
use knhk_types::VersionVector;

fn key(seed: u8) -> NodeKey {
    NodeKey::from_seed([seed; 32])
}

fn state() -> VersionedState {
    VersionedState::new(StateConfig::default())
}

fn verifier() -> Ed25519Verifier {
    Ed25519Verifier::new(4_096)
}

/// Everything observable about a state, to show a refused merge changed nothing.
fn fingerprint(state: &mut VersionedState) -> (String, VersionVector, [u8; 32]) {
    (
        format!("{:?}", state.digests()),
        state.version().clone(),
        state.merkle_root(),
    )
}

#[test]
fn put_get_delete() {
    let alice = key(1);
    let mut a = state();
    a.put(&alice, "k", b"v1".to_vec()).unwrap();
    assert_eq!(a.get("k"), Some(&b"v1"[..]));
    a.put(&alice, "k", b"v2".to_vec()).unwrap();
    assert_eq!(a.get("k"), Some(&b"v2"[..]));
    let tombstone = a.delete(&alice, "k").unwrap();
    assert!(tombstone.is_tombstone());
    assert_eq!(a.get("k"), None);
    assert_eq!(a.len(), 1, "the tombstone is kept");
    assert_eq!(a.version().get(&alice.agent_id()), 3);
}

#[test]
fn a_delta_carries_exactly_what_the_peer_lacks() {
    let alice = key(1);
    let mut a = state();
    for n in 0..10 {
        a.put(&alice, &format!("k{n}"), vec![n]).unwrap();
    }
    let mut b = state();
    b.merge(&a.delta_since(b.version()), &mut verifier())
        .unwrap();
    for n in 10..13 {
        a.put(&alice, &format!("k{n}"), vec![n]).unwrap();
    }
    let delta = a.delta_since(b.version());
    assert_eq!(
        delta.ranges,
        vec![WriterRange {
            writer: alice.agent_id(),
            after: 10,
            through: 13
        }]
    );
    let keys: Vec<_> = delta.entries.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["k10", "k11", "k12"]);
    assert!(a.delta_since(a.version()).is_empty());
}

#[test]
fn overwritten_versions_are_covered_by_their_proof() {
    let (alice, bob) = (key(1), key(2));
    let mut a = state();
    a.put(&alice, "k", b"alice".to_vec()).unwrap();
    let mut other = state();
    other
        .merge(&a.delta_since(other.version()), &mut verifier())
        .unwrap();
    other.put(&bob, "k", b"bob".to_vec()).unwrap(); // overwrites alice's write
    let mut fresh = state();
    let delta = other.delta_since(fresh.version());
    // Alice's entry no longer wins anywhere, but it proves alice's version 1.
    assert_eq!(delta.entries.len(), 2);
    fresh.merge(&delta, &mut verifier()).unwrap();
    assert_eq!(fresh.get("k"), Some(&b"bob"[..]));
    assert_eq!(fresh.version(), other.version());
    assert_eq!(fresh.merkle_root(), other.merkle_root());
}

#[test]
fn concurrent_writes_to_one_key_resolve_identically_everywhere() {
    let (alice, bob) = (key(1), key(2));
    let (mut a, mut b) = (state(), state());
    a.put(&alice, "leader", b"alice".to_vec()).unwrap();
    b.put(&bob, "leader", b"bob".to_vec()).unwrap();
    let (to_b, to_a) = (a.delta_since(b.version()), b.delta_since(a.version()));
    a.merge(&to_a, &mut verifier()).unwrap();
    b.merge(&to_b, &mut verifier()).unwrap();
    assert_eq!(a.get("leader"), b.get("leader"));
    assert_eq!(a.merkle_root(), b.merkle_root());
    // Equal Lamport times: the larger writer id wins.
    let winner = if alice.agent_id() > bob.agent_id() {
        &b"alice"[..]
    } else {
        &b"bob"[..]
    };
    assert_eq!(a.get("leader"), Some(winner));
}

#[test]
fn merge_reports_updated_keys_and_is_idempotent() {
    let alice = key(1);
    let mut a = state();
    a.put(&alice, "x", b"1".to_vec()).unwrap();
    a.put(&alice, "y", b"2".to_vec()).unwrap();
    let delta = a.delta_since(&VersionVector::new());
    let mut b = state();
    let report = b.merge(&delta, &mut verifier()).unwrap();
    assert_eq!(report.updated_keys, ["x", "y"]);
    assert_eq!(report.advanced_writers, 1);
    assert!(b.merge(&delta, &mut verifier()).unwrap().is_empty());
}

#[test]
fn a_delta_against_a_newer_vector_never_makes_us_claim_skipped_versions() {
    let alice = key(1);
    let mut a = state();
    for n in 0..5 {
        a.put(&alice, &format!("k{n}"), vec![n]).unwrap();
    }
    let mut midway = state();
    midway
        .merge(&a.delta_since(midway.version()), &mut verifier())
        .unwrap();
    a.put(&alice, "k5", vec![5]).unwrap();
    // A delta meant for a peer at version 5, delivered to a node at version 0.
    let delta = a.delta_since(midway.version());
    let mut behind = state();
    behind.merge(&delta, &mut verifier()).unwrap();
    assert_eq!(behind.get("k5"), Some(&[5][..]), "entries are kept");
    assert_eq!(
        behind.version().get(&alice.agent_id()),
        0,
        "but versions 1..=5 were not seen"
    );
    // A later full delta completes it.
    behind
        .merge(&a.delta_since(behind.version()), &mut verifier())
        .unwrap();
    assert_eq!(behind.version(), a.version());
    assert_eq!(behind.merkle_root(), a.merkle_root());
}

fn refused(target: &mut VersionedState, delta: &Delta) -> CrdtError {
    let before = fingerprint(target);
    let error = target
        .merge(delta, &mut verifier())
        .expect_err("delta should be refused");
    assert_eq!(
        fingerprint(target),
        before,
        "a refused merge changed the state"
    );
    error
}

fn base_delta() -> (NodeKey, Delta) {
    let alice = key(1);
    let mut a = state();
    a.put(&alice, "k1", b"1".to_vec()).unwrap();
    a.put(&alice, "k2", b"2".to_vec()).unwrap();
    (alice, a.delta_since(&VersionVector::new()))
}

#[test]
fn each_malformed_delta_is_refused_and_changes_nothing() {
    let (alice, good) = base_delta();
    let mut target = state();
    target.put(&key(9), "mine", b"keep".to_vec()).unwrap();

    let mut backwards = good.clone();
    backwards.ranges[0].through = 0;
    assert!(matches!(
        refused(&mut target, &backwards),
        CrdtError::Backwards { .. }
    ));

    let mut twice = good.clone();
    twice.ranges.push(twice.ranges[0]);
    assert!(matches!(
        refused(&mut target, &twice),
        CrdtError::Backwards { .. }
    ));

    let mut claims_more = good.clone();
    claims_more.ranges[0].through = 1_000;
    assert!(matches!(
        refused(&mut target, &claims_more),
        CrdtError::MissingVersions { through: 1_000, .. }
    ));

    let mut outside = good.clone();
    outside.ranges[0].after = 1;
    assert!(matches!(
        refused(&mut target, &outside),
        CrdtError::EntryOutsideRange { counter: 1, .. }
    ));

    let mut unlisted = good.clone();
    unlisted.ranges.clear();
    assert!(matches!(
        refused(&mut target, &unlisted),
        CrdtError::EntryOutsideRange { .. }
    ));

    let mut forged = good.clone();
    forged.entries[0].value = Some(b"evil".to_vec());
    assert!(matches!(
        refused(&mut target, &forged),
        CrdtError::BadSignature { counter: 1, .. }
    ));

    let mut equivocation = good.clone();
    let mut second =
        knhk_crdt::SignedEntry::sign(&alice, "k1".into(), Some(b"other".to_vec()), 1, 1);
    second.key = "k1".into();
    equivocation.entries.push(second);
    assert!(matches!(
        refused(&mut target, &equivocation),
        CrdtError::Equivocation { counter: 1, .. }
    ));

    // A bad signature on the last entry: nothing before it is applied either.
    let mut last_bad = good.clone();
    last_bad.entries[1].signature.0[0] ^= 1;
    assert!(matches!(
        refused(&mut target, &last_bad),
        CrdtError::BadSignature { counter: 2, .. }
    ));

    target.merge(&good, &mut verifier()).unwrap();
    assert_eq!(target.get("k2"), Some(&b"2"[..]));
}

#[test]
fn limits_are_enforced_on_writes_and_merges() {
    let config = StateConfig {
        max_key_bytes: 4,
        max_value_bytes: 4,
        max_entries: 2,
        ..StateConfig::default()
    };
    let alice = key(1);
    let mut small = VersionedState::new(config.clone());
    assert!(matches!(
        small.put(&alice, "toolong", vec![]),
        Err(CrdtError::KeyTooLong { len: 7, max: 4 })
    ));
    assert!(matches!(
        small.put(&alice, "k", vec![0; 5]),
        Err(CrdtError::ValueTooLarge { len: 5, max: 4 })
    ));
    small.put(&alice, "a", vec![]).unwrap();
    small.put(&alice, "b", vec![]).unwrap();
    assert!(matches!(
        small.put(&alice, "c", vec![]),
        Err(CrdtError::Full { max: 2 })
    ));
    small.put(&alice, "a", vec![1]).unwrap(); // overwriting is not growth

    let mut big = state();
    for name in ["x", "y", "z"] {
        big.put(&key(2), name, vec![]).unwrap();
    }
    let mut target = VersionedState::new(config);
    let delta = big.delta_since(target.version());
    assert!(matches!(
        refused(&mut target, &delta),
        CrdtError::Full { max: 2 }
    ));
}

#[test]
fn loose_entries_from_anti_entropy_merge_without_touching_versions() {
    let alice = key(1);
    let mut a = state();
    let entry = a.put(&alice, "k", b"v".to_vec()).unwrap();
    let mut b = state();
    b.merge_entries(std::slice::from_ref(&entry), &mut verifier())
        .unwrap();
    assert_eq!(b.get("k"), Some(&b"v"[..]));
    assert!(b.version().is_empty());
    assert_eq!(b.merkle_root(), a.merkle_root());
    let mut forged = entry;
    forged.value = Some(b"w".to_vec());
    assert!(matches!(
        b.merge_entries(&[forged], &mut verifier()),
        Err(CrdtError::BadSignature { .. })
    ));
}

#[test]
fn each_unique_entry_signature_is_verified_once_per_verifier() {
    let alice = key(1);
    let mut a = state();
    for n in 0..20 {
        a.put(&alice, &format!("k{n}"), vec![n]).unwrap();
    }
    let delta = a.delta_since(&VersionVector::new());
    let mut shared = verifier();
    for _ in 0..5 {
        state().merge(&delta, &mut shared).unwrap();
    }
    let stats = shared.stats();
    assert_eq!(stats.single_verifications, 20);
    assert_eq!(stats.cache_hits, 80);
}

#[test]
fn a_huge_foreign_lamport_time_never_blocks_local_writes() {
    let (mallory, alice) = (key(6), key(1));
    let squatter =
        knhk_crdt::SignedEntry::sign(&mallory, "k".into(), Some(b"mine".to_vec()), 1, u64::MAX);
    let mut a = state();
    a.merge_entries(&[squatter], &mut verifier()).unwrap();
    a.put(&alice, "other", b"still writable".to_vec()).unwrap();
    a.put(&alice, "k", b"x".to_vec()).unwrap();
    assert_eq!(a.get("other"), Some(&b"still writable"[..]));
}

#[test]
fn an_equivocating_writer_cannot_hide_live_entries_from_deltas() {
    let (eve, bob) = (key(5), key(2));
    let mut eves_state = state();
    eves_state.put(&eve, "b", b"1".to_vec()).unwrap();
    // Eve signs a second, different entry with the same counter 1, for another key.
    let twin = knhk_crdt::SignedEntry::sign(&eve, "a".into(), Some(b"2".to_vec()), 1, 1);
    let mut target = state();
    target
        .merge(&eves_state.delta_since(target.version()), &mut verifier())
        .unwrap();
    target.merge_entries(&[twin], &mut verifier()).unwrap();
    // Bob overwrites "a"; eve's live entry for "b" must still travel in deltas.
    let newer = knhk_crdt::SignedEntry::sign(&bob, "a".into(), Some(b"3".to_vec()), 1, 9);
    target.merge_entries(&[newer], &mut verifier()).unwrap();
    let delta = target.delta_since(&VersionVector::new());
    let keys: Vec<_> = delta.entries.iter().map(|e| e.key.as_str()).collect();
    assert!(keys.contains(&"b"), "{keys:?}");
    let mut fresh = state();
    fresh.merge(&delta, &mut verifier()).unwrap();
    assert_eq!(fresh.get("b"), Some(&b"1"[..]));
}

#[test]
fn a_diff_answer_with_keys_outside_their_bucket_is_refused() {
    use knhk_crdt::{BucketDigests, DiffStep, MerkleDiff};
    let alice = key(1);
    let mut local = VersionedState::new(StateConfig {
        merkle_depth: 1,
        ..StateConfig::default()
    });
    let mut remote = local.clone();
    remote.put(&alice, "k", b"v".to_vec()).unwrap();
    let root = remote.merkle_root();
    let (mut session, step) = MerkleDiff::start(&mut local, root);
    let DiffStep::AskNodes(ids) = step else {
        panic!("expected the root's children to be asked, got {step:?}");
    };
    let step = session
        .on_nodes(&mut local, &remote.merkle_nodes(&ids))
        .unwrap();
    let DiffStep::AskBuckets(buckets) = step else {
        panic!("depth 1: the root's children are leaves, expected a bucket question, got {step:?}");
    };
    let mut answer = remote.bucket_digests(&buckets);
    // Claim a key that does not hash into the bucket it is listed under.
    let wrong = (0..)
        .map(|n| format!("x{n}"))
        .find(|k| {
            let mut probe = VersionedState::new(StateConfig {
                merkle_depth: 1,
                ..StateConfig::default()
            });
            probe.put(&alice, k, vec![]).unwrap();
            probe.bucket_digests(&[answer[0].bucket])[0].keys.is_empty()
        })
        .unwrap();
    answer[0].keys.push((wrong, [0; 32]));
    let _: &Vec<BucketDigests> = &answer;
    assert!(matches!(
        session.on_buckets(&local, &answer),
        Err(CrdtError::DiffMismatch(_))
    ));
}

#[test]
fn bounded_deltas_fit_their_budget_and_complete_in_parts() {
    let (alice, bob) = (key(1), key(2));
    let mut a = state();
    for n in 0..50 {
        a.put(&alice, &format!("a{n:02}"), vec![0; 1_000]).unwrap();
        a.put(&bob, &format!("b{n:02}"), vec![0; 1_000]).unwrap();
    }
    let mut b = state();
    let mut parts = 0;
    loop {
        let delta = a.delta_since_bounded(b.version(), 10_000);
        if delta.is_empty() {
            break;
        }
        assert!(delta.entries.len() <= 10, "{} entries", delta.entries.len());
        b.merge(&delta, &mut verifier()).unwrap();
        parts += 1;
        assert!(parts < 100, "no progress");
    }
    assert!(parts >= 10);
    assert_eq!(b.version(), a.version());
    assert_eq!(b.merkle_root(), a.merkle_root());
    // A budget smaller than one entry still makes progress.
    let mut c = state();
    let delta = a.delta_since_bounded(c.version(), 1);
    assert_eq!(delta.entries.len(), 1);
    c.merge(&delta, &mut verifier()).unwrap();
}

#[test]
fn twin_entries_of_an_equivocating_writer_never_make_our_deltas_unmergeable() {
    let eve = key(5);
    let mut eves_state = state();
    eves_state.put(&eve, "b", b"1".to_vec()).unwrap();
    let twin = knhk_crdt::SignedEntry::sign(&eve, "a".into(), Some(b"2".to_vec()), 1, 1);
    let mut holder = state();
    holder
        .merge(&eves_state.delta_since(holder.version()), &mut verifier())
        .unwrap();
    holder.merge_entries(&[twin], &mut verifier()).unwrap();
    assert_eq!(holder.len(), 2, "both twins are winners of their keys");
    // Our delta carries one entry per (writer, counter), so an honest peer can merge it.
    let delta = holder.delta_since(&VersionVector::new());
    let mut fresh = state();
    fresh
        .merge(&delta, &mut verifier())
        .expect("an honest delta is never an equivocation");
    assert_eq!(fresh.version(), holder.version());
}

/// Counts every signature check (hardening finding 3 measures CPU by these).
#[derive(Default)]
struct Counting {
    inner: Option<Ed25519Verifier>,
    checks: u64,
}

impl knhk_security::SignatureVerifier for Counting {
    fn verify(
        &mut self,
        signer: &knhk_types::AgentId,
        message: &[u8],
        signature: &knhk_types::Signature,
    ) -> Result<(), knhk_security::VerifyError> {
        self.checks += 1;
        self.inner
            .get_or_insert_with(|| Ed25519Verifier::new(16))
            .verify(signer, message, signature)
    }
}

/// Hardening finding 3: re-sending entries a node already holds, or entries that lose
/// to what it holds, used to cost one signature check each, every time (80k pre-signed
/// entries replayed cost ~40 s of CPU a round, with no cache hits past the cache size).
#[test]
fn entries_held_already_or_losing_cost_no_signature_check() {
    let alice = key(1);
    let mut source = state();
    for n in 0..50 {
        source.put(&alice, &format!("k{n}"), vec![n]).unwrap();
    }
    let everything = source.delta_since(&VersionVector::new());
    let mut replica = state();
    let mut counting = Counting::default();
    replica.merge(&everything, &mut counting).unwrap();
    assert_eq!(counting.checks, 50, "each new entry checked once");
    // The same delta again, and the same entries loose: nothing new, nothing checked.
    assert!(
        replica
            .merge(&everything, &mut counting)
            .unwrap()
            .is_empty()
    );
    let entries = everything.entries.clone();
    assert!(
        replica
            .merge_entries(&entries, &mut counting)
            .unwrap()
            .is_empty()
    );
    assert_eq!(counting.checks, 50);
    // An overwritten entry loses to its successor: not checked, not applied, even with
    // a signature that would not verify.
    let old = replica.entry("k7").unwrap().clone();
    source.put(&alice, "k7", b"newer".to_vec()).unwrap();
    let newer = source.entry("k7").unwrap().clone();
    replica.merge_entries(&[newer], &mut counting).unwrap();
    assert_eq!(counting.checks, 51);
    let mut forged_loser = old;
    forged_loser.signature = knhk_types::Signature([9; 64]);
    forged_loser.lamport = 0;
    assert!(
        replica
            .merge_entries(&[forged_loser], &mut counting)
            .unwrap()
            .is_empty()
    );
    assert_eq!(counting.checks, 51);
    assert_eq!(replica.get("k7"), Some(&b"newer"[..]));
}

/// Hardening finding 6: a question about every bucket of a large state used to build
/// one reply far over a frame (then dropped), so the diff never finished. Answers are
/// now chunked to a byte budget, and repeated diffs converge chunk by chunk.
#[test]
fn chunked_bucket_answers_converge_over_several_diffs() {
    use knhk_crdt::{DiffStep, MerkleDiff};
    let config = StateConfig {
        merkle_depth: 6,
        ..StateConfig::default()
    };
    let (alice, bob) = (key(1), key(2));
    let (mut a, mut b) = (
        VersionedState::new(config.clone()),
        VersionedState::new(config),
    );
    for n in 0..600 {
        a.put(&alice, &format!("a{n}"), vec![1]).unwrap();
        b.put(&bob, &format!("b{n}"), vec![2]).unwrap();
    }
    let budget = 4_096;
    let everything: Vec<u32> = (0..64).collect();
    let first_chunk = b.bucket_digests_bounded(&everything, budget);
    assert!(
        !first_chunk.is_empty() && first_chunk.len() < 64,
        "{}",
        first_chunk.len()
    );
    let mut sessions = 0;
    while a.merkle_root() != b.merkle_root() {
        sessions += 1;
        assert!(sessions < 100, "no progress");
        let (mut diff, mut step) = MerkleDiff::start(&mut a, b.merkle_root());
        let keys = loop {
            step = match step {
                DiffStep::AskNodes(nodes) => {
                    diff.on_nodes(&mut a, &b.merkle_nodes(&nodes)).unwrap()
                }
                DiffStep::AskBuckets(buckets) => diff
                    .on_buckets(&a, &b.bucket_digests_bounded(&buckets, budget))
                    .unwrap(),
                DiffStep::Done(keys) => break keys,
            };
        };
        let (ours, theirs) = (a.entries_for(&keys), b.entries_for(&keys));
        a.merge_entries(&theirs, &mut verifier()).unwrap();
        b.merge_entries(&ours, &mut verifier()).unwrap();
    }
    assert!(sessions > 1, "the budget forced several chunks");
    assert_eq!(a.len(), 1_200);
}

/// Hardening finding 7: an entry signed with Lamport time u64::MAX took its key for
/// ever (every later write lost to it). A state that knows the time sets aside Lamport
/// times more than `max_lamport_lead_ms` ahead (without failing the rest of the delta),
/// and its own writes track the clock, so a squatter owns a key for at most that long.
#[test]
fn far_future_lamport_times_are_set_aside_and_squatting_is_bounded() {
    use knhk_types::UnixMillis;
    let (mallory, alice) = (key(6), key(1));
    let now = UnixMillis::VIRTUAL_START;
    let lead = StateConfig::default().max_lamport_lead_ms;
    let mut a = state();
    a.observe_time(now);
    let forever =
        knhk_crdt::SignedEntry::sign(&mallory, "k".into(), Some(b"mine".to_vec()), 1, u64::MAX);
    let honest =
        knhk_crdt::SignedEntry::sign(&alice, "other".into(), Some(b"fine".to_vec()), 1, now.0);
    let report = a
        .merge_entries(&[forever, honest], &mut verifier())
        .unwrap();
    assert_eq!(report.deferred_entries, 1);
    assert_eq!(a.get("k"), None, "set aside");
    assert_eq!(
        a.get("other"),
        Some(&b"fine"[..]),
        "the rest of the batch is taken"
    );
    // The most a squatter gets: a Lamport time at the edge of the lead. A replica that
    // holds it writes past it at once; one that has not seen it yet writes with its
    // clock, which passes the edge within the lead.
    let edge = knhk_crdt::SignedEntry::sign(
        &mallory,
        "k".into(),
        Some(b"mine".to_vec()),
        1,
        now.0 + lead,
    );
    a.merge_entries(std::slice::from_ref(&edge), &mut verifier())
        .unwrap();
    a.put(&alice, "k", b"alice".to_vec()).unwrap();
    assert_eq!(a.get("k"), Some(&b"alice"[..]));
    let mut b = state();
    b.observe_time(UnixMillis(now.0 + lead + 1));
    b.put(&key(2), "k", b"bob, later".to_vec()).unwrap();
    b.merge_entries(&[edge], &mut verifier()).unwrap();
    assert_eq!(
        b.get("k"),
        Some(&b"bob, later"[..]),
        "the squatter's time has passed"
    );
}

fn quota_state(max_keys: u64, max_bytes: u64) -> VersionedState {
    VersionedState::new(StateConfig {
        max_keys_per_writer: max_keys,
        max_bytes_per_writer: max_bytes,
        ..StateConfig::default()
    })
}

/// One member used to be able to fill the `max_entries` all members share, after which
/// nobody could add a key. Each writer now has a quota of keys and bytes.
#[test]
fn a_local_writer_stops_at_its_quota_but_may_still_overwrite_its_own_keys() {
    let alice = key(1);
    let mut a = quota_state(3, 1_000);
    for n in 0..3 {
        a.put(&alice, &format!("k{n}"), vec![n]).unwrap();
    }
    assert!(matches!(
        a.put(&alice, "k3", vec![3]),
        Err(CrdtError::WriterQuota { max_keys: 3, .. })
    ));
    a.put(&alice, "k0", vec![9; 10]).unwrap();
    a.delete(&alice, "k1").unwrap();
    let held = a.held_by(&alice.agent_id());
    assert_eq!((held.keys, held.bytes), (3, 2 + 10 + 2 + 2 + 1));
    // Bytes count too.
    assert!(matches!(
        a.put(&alice, "k2", vec![0; 1_000]),
        Err(CrdtError::WriterQuota { .. })
    ));
}

#[test]
fn a_peer_past_its_quota_is_set_aside_without_blocking_other_writers() {
    let (mallory, alice) = (key(6), key(1));
    // Mallory's replica has no quota; ours allows 4 keys a writer.
    let mut hers = quota_state(u64::MAX, u64::MAX);
    for n in 0..10 {
        hers.put(&mallory, &format!("junk/{n}"), vec![n]).unwrap();
    }
    hers.put(&alice, "honest", b"yes".to_vec()).unwrap();
    let mut ours = quota_state(4, u64::MAX);
    let before = ours.version().clone();
    let report = ours
        .merge(&hers.delta_since(&before), &mut verifier())
        .unwrap();
    assert_eq!(report.over_quota_entries, 10);
    assert_eq!(
        ours.get("honest"),
        Some(&b"yes"[..]),
        "other writers are taken"
    );
    assert_eq!(ours.held_by(&mallory.agent_id()).keys, 0);
    assert_eq!(ours.version().get(&mallory.agent_id()), 0, "not advanced");
    assert_eq!(ours.version().get(&alice.agent_id()), 1);
    // Anti-entropy cannot smuggle them in either.
    let loose: Vec<_> = hers.entries().cloned().collect();
    let report = ours.merge_entries(&loose, &mut verifier()).unwrap();
    assert_eq!(report.over_quota_entries, 10);
    assert_eq!(ours.held_by(&mallory.agent_id()).keys, 0);
}

#[test]
fn entries_set_aside_for_quota_are_taken_once_their_writer_holds_less() {
    let (bob, carol) = (key(2), key(3));
    // Bob wrote 3 keys, then Carol took two of them over; Bob wrote 2 more. At Bob's
    // replica he holds 3 keys (within a quota of 3).
    let mut bobs = quota_state(3, u64::MAX);
    for n in 0..3 {
        bobs.put(&bob, &format!("k{n}"), vec![n]).unwrap();
    }
    let early = bobs.clone();
    let mut carols = early.clone();
    carols.put(&carol, "k0", b"c".to_vec()).unwrap();
    carols.put(&carol, "k1", b"c".to_vec()).unwrap();
    bobs.merge(&carols.delta_since(bobs.version()), &mut verifier())
        .unwrap();
    bobs.put(&bob, "k3", vec![3]).unwrap();
    bobs.put(&bob, "k4", vec![4]).unwrap();
    assert_eq!(bobs.held_by(&bob.agent_id()).keys, 3);

    // A replica that has Bob's first three keys but not yet Carol's writes would see
    // Bob at 5 keys: his new ones wait, his version stays.
    let mut behind = early.clone();
    // Bob's two new entries alone, as a peer that has only them would send them.
    let only_bob = Delta {
        ranges: vec![WriterRange {
            writer: bob.agent_id(),
            after: 3,
            through: 5,
        }],
        entries: vec![
            bobs.entry("k3").unwrap().clone(),
            bobs.entry("k4").unwrap().clone(),
        ],
    };
    let report = behind.merge(&only_bob, &mut verifier()).unwrap();
    assert_eq!(report.over_quota_entries, 2);
    assert_eq!(behind.version().get(&bob.agent_id()), 3);
    // Once Carol's writes arrive, Bob holds 1 key there and his writes come in.
    behind
        .merge(&carols.delta_since(behind.version()), &mut verifier())
        .unwrap();
    behind
        .merge(&bobs.delta_since(behind.version()), &mut verifier())
        .unwrap();
    assert_eq!(behind.get("k4"), Some(&[4u8][..]));
    assert_eq!(behind.merkle_root(), bobs.merkle_root());
}
