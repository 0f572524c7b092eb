//! A burst through the gate decides exactly what the same frames one at a time decide:
//! same verdicts, same charges, same bans, same reputations. Only the signature work
//! differs (one ed25519 batch instead of one check per frame).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use knhk_security::{
    AllowAllSenders, ByzantineValidator, NodeKey, ReceivedFrame, RejectReason, ValidatorConfig,
};
use knhk_types::{AgentId, Envelope, EnvelopeHeader, MessageKind, UnixMillis};
use proptest::prelude::*;

const NOW: UnixMillis = UnixMillis::VIRTUAL_START;

fn keys() -> Vec<NodeKey> {
    (1..=3u8)
        .map(|seed| NodeKey::from_seed([seed; 32]))
        .collect()
}

/// What one generated frame is.
#[derive(Clone, Copy, Debug)]
enum Shape {
    /// Signed by its hop, a fresh nonce.
    Honest,
    /// An earlier frame again (a replay, or a repeat inside the burst).
    Repeat(usize),
    /// A fresh nonce with a forged signature.
    Forged,
    /// Bytes that are no envelope.
    Garbage,
    /// Signed by another node than the hop that delivers it.
    Relayed,
    /// A timestamp far in the past.
    Stale,
}

fn shape() -> impl Strategy<Value = Shape> {
    prop_oneof![
        6 => Just(Shape::Honest),
        2 => (0usize..64).prop_map(Shape::Repeat),
        2 => Just(Shape::Forged),
        1 => Just(Shape::Garbage),
        1 => Just(Shape::Relayed),
        1 => Just(Shape::Stale),
    ]
}

fn sign(key: &NodeKey, sent: UnixMillis, nonce: u64) -> Envelope {
    Envelope::sign(
        key,
        EnvelopeHeader::new(MessageKind::GossipPush, sent, nonce),
        vec![0x5a; 40],
    )
}

/// The frame with one bit of its signature (its last bytes) flipped.
fn forge(mut frame: Vec<u8>) -> Vec<u8> {
    if let Some(last) = frame.last_mut() {
        *last ^= 1;
    }
    frame
}

/// The frames (hop, bytes) for a list of (sender index, shape).
fn frames(plan: &[(usize, Shape)]) -> Vec<(AgentId, Vec<u8>)> {
    let keys = keys();
    let mut out: Vec<(AgentId, Vec<u8>)> = Vec::new();
    for (nonce, (who, shape)) in plan.iter().enumerate() {
        let key = &keys[*who];
        let nonce = nonce as u64 + 1;
        let frame = match shape {
            Shape::Honest => sign(key, NOW, nonce).encode(),
            Shape::Repeat(of) if !out.is_empty() => {
                let (hop, bytes) = out[of % out.len()].clone();
                out.push((hop, bytes));
                continue;
            }
            Shape::Repeat(_) => sign(key, NOW, nonce).encode(),
            Shape::Forged => forge(sign(key, NOW, nonce).encode()),
            Shape::Garbage => vec![0xff; 12],
            Shape::Relayed => sign(&keys[(who + 1) % keys.len()], NOW, nonce).encode(),
            Shape::Stale => sign(key, UnixMillis(NOW.0 - 600_000), nonce).encode(),
        };
        out.push((key.agent_id(), frame));
    }
    out
}

/// The frames as one burst, all received at `NOW`.
fn received(frames: &[(AgentId, Vec<u8>)]) -> Vec<ReceivedFrame<'_>> {
    frames
        .iter()
        .map(|(hop, bytes)| ReceivedFrame {
            hop: *hop,
            received_at: NOW,
            frame: bytes,
        })
        .collect()
}

/// Low ban threshold headroom: a few forgeries ban a sender mid-run.
fn config() -> ValidatorConfig {
    ValidatorConfig {
        rate_per_second: 20,
        rate_burst: 30,
        ..ValidatorConfig::default()
    }
}

fn verdict(
    result: Result<knhk_types::EnvelopeRef<'_>, knhk_security::Rejection>,
) -> Option<(RejectReason, bool)> {
    result
        .err()
        .map(|rejection| (rejection.reason, rejection.banned))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn a_burst_decides_what_one_at_a_time_decides(
        plan in prop::collection::vec((0usize..3, shape()), 1..120),
        cuts in prop::collection::vec(1usize..40, 1..10),
    ) {
        let frames = frames(&plan);
        let mut single = ByzantineValidator::new(config());
        let expected: Vec<_> = frames
            .iter()
            .map(|(hop, bytes)| verdict(single.validate(NOW, *hop, bytes, &AllowAllSenders)))
            .collect();

        let mut burst = ByzantineValidator::new(config());
        let mut got = Vec::new();
        let mut rest: &[(AgentId, Vec<u8>)] = &frames;
        for cut in cuts.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (now, later) = rest.split_at((*cut).min(rest.len()));
            let received: Vec<ReceivedFrame<'_>> = now
                .iter()
                .map(|(hop, bytes)| ReceivedFrame { hop: *hop, received_at: NOW, frame: bytes })
                .collect();
            got.extend(burst.validate_burst(NOW, &received, &AllowAllSenders).into_iter().map(verdict));
            rest = later;
        }
        prop_assert_eq!(&got, &expected);
        let (a, b) = (single.stats(), burst.stats());
        prop_assert_eq!((a.accepted, a.rejected, a.bans), (b.accepted, b.rejected, b.bans));
        for key in keys() {
            prop_assert_eq!(single.reputation(&key.agent_id(), NOW), burst.reputation(&key.agent_id(), NOW));
        }
    }
}

#[test]
fn a_clean_burst_costs_one_batch_and_nothing_is_cached() {
    let keys = keys();
    let frames: Vec<(AgentId, Vec<u8>)> = (0..48u64)
        .map(|n| {
            let key = &keys[n as usize % keys.len()];
            (key.agent_id(), sign(key, NOW, n + 1).encode())
        })
        .collect();
    let received = received(&frames);
    let mut gate = ByzantineValidator::new(ValidatorConfig::default());
    let results = gate.validate_burst(NOW, &received, &AllowAllSenders);
    assert!(results.iter().all(Result::is_ok));
    let stats = gate.stats().verifier;
    assert_eq!((stats.batch_verified, stats.single_verifications), (48, 0));
    assert!(gate.verifier().cache().is_empty());
    // The same burst again is 48 replays, refused before any signature work.
    let again = gate.validate_burst(NOW, &received, &AllowAllSenders);
    assert!(
        again
            .iter()
            .all(|r| r.as_ref().err().map(|e| e.reason) == Some(RejectReason::Replay))
    );
    assert_eq!(gate.stats().verifier.batch_verified, 48);
}

#[test]
fn one_forgery_in_a_burst_is_found_and_charged_to_its_hop_only() {
    let keys = keys();
    let mut frames: Vec<(AgentId, Vec<u8>)> = (0..32u64)
        .map(|n| {
            let key = &keys[n as usize % 2];
            (key.agent_id(), sign(key, NOW, n + 1).encode())
        })
        .collect();
    let forged = forge(sign(&keys[2], NOW, 99).encode());
    frames.insert(17, (keys[2].agent_id(), forged));
    let received = received(&frames);
    let mut gate = ByzantineValidator::new(ValidatorConfig::default());
    let results = gate.validate_burst(NOW, &received, &AllowAllSenders);
    for (at, result) in results.iter().enumerate() {
        assert_eq!(
            result.as_ref().err().map(|e| e.reason),
            (at == 17).then_some(RejectReason::BadSignature),
            "frame {at}"
        );
    }
    assert!(gate.reputation(&keys[2].agent_id(), NOW) < 1_000);
    assert_eq!(gate.reputation(&keys[0].agent_id(), NOW), 1_000);
    assert_eq!(gate.reputation(&keys[1].agent_id(), NOW), 1_000);
}
