//! The Byzantine gate: every rejection reason, floods, bans and recovery.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::time::Duration;

use knhk_security::{
    AllowAllSenders, ByzantineValidator, NodeKey, RejectReason, ReputationConfig,
    ReputationSummary, ValidatorConfig,
};
use knhk_types::{AgentId, Envelope, EnvelopeHeader, MessageKind, UnixMillis};

const NOW: UnixMillis = UnixMillis::VIRTUAL_START;

fn key(seed: u8) -> NodeKey {
    NodeKey::from_seed([seed; 32])
}

fn frame(key: &NodeKey, sent: UnixMillis, nonce: u64) -> Vec<u8> {
    Envelope::sign(
        key,
        EnvelopeHeader::new(MessageKind::GossipPush, sent, nonce),
        b"delta".to_vec(),
    )
    .encode()
}

fn reason(result: Result<knhk_types::EnvelopeRef<'_>, knhk_security::Rejection>) -> RejectReason {
    result.expect_err("expected a rejection").reason
}

fn at(offset_ms: i64) -> UnixMillis {
    UnixMillis(NOW.0.checked_add_signed(offset_ms).unwrap())
}

#[test]
fn an_honest_envelope_is_accepted_and_rewarded() {
    let mut validator = ByzantineValidator::new(ValidatorConfig::default());
    let honest = key(1);
    let bytes = frame(&honest, NOW, 1);
    let envelope = validator
        .validate(NOW, honest.agent_id(), &bytes, &AllowAllSenders)
        .unwrap();
    assert_eq!(
        (envelope.sender, envelope.payload),
        (honest.agent_id(), &b"delta"[..])
    );
    assert_eq!(validator.stats().accepted, 1);
    assert_eq!(validator.reputation(&honest.agent_id(), NOW), 1_000);
}

#[test]
fn each_rejection_reason_in_turn() {
    let config = ValidatorConfig {
        max_frame_bytes: 4_096,
        rate_per_second: 1,
        rate_burst: 3,
        ..ValidatorConfig::default()
    };
    let mut validator = ByzantineValidator::new(config);
    let (alice, mallory) = (key(1), key(2));
    let a = alice.agent_id();
    let known: HashSet<AgentId> = [a].into_iter().collect();

    assert_eq!(
        reason(validator.validate(NOW, a, &vec![0; 4_097], &known)),
        RejectReason::FrameTooLarge
    );
    assert_eq!(
        reason(validator.validate(NOW, a, b"\x01\x01garbage", &known)),
        RejectReason::Malformed
    );
    // Mallory relays an envelope Alice signed: the hop must be the signer.
    assert_eq!(
        reason(validator.validate(NOW, mallory.agent_id(), &frame(&alice, NOW, 1), &known)),
        RejectReason::SenderMismatch
    );
    assert_eq!(
        reason(validator.validate(NOW, mallory.agent_id(), &frame(&mallory, NOW, 1), &known)),
        RejectReason::UnknownSender
    );
    assert_eq!(
        reason(validator.validate(NOW, a, &frame(&alice, at(-31_000), 2), &known)),
        RejectReason::StaleTimestamp
    );
    assert_eq!(
        reason(validator.validate(NOW, a, &frame(&alice, at(31_000), 3), &known)),
        RejectReason::FutureTimestamp
    );

    let mut forged = frame(&alice, NOW, 4);
    let payload_at = forged.len() - 64 - 5; // inside "delta", before the signature
    forged[payload_at] ^= 0x20;
    assert_eq!(
        reason(validator.validate(NOW, a, &forged, &known)),
        RejectReason::BadSignature
    );

    let good = frame(&alice, NOW, 5);
    validator.validate(NOW, a, &good, &known).unwrap();
    assert_eq!(
        reason(validator.validate(NOW, a, &good, &known)),
        RejectReason::Replay
    );

    validator
        .validate(NOW, a, &frame(&alice, NOW, 6), &known)
        .unwrap();
    validator
        .validate(NOW, a, &frame(&alice, NOW, 7), &known)
        .unwrap();
    assert_eq!(
        reason(validator.validate(NOW, a, &frame(&alice, NOW, 8), &known)),
        RejectReason::RateLimited
    );
    // One second later one more token has refilled.
    validator
        .validate(at(1_000), a, &frame(&alice, NOW, 9), &known)
        .unwrap();

    let stats = validator.stats();
    for reason in [
        RejectReason::FrameTooLarge,
        RejectReason::Malformed,
        RejectReason::SenderMismatch,
        RejectReason::UnknownSender,
        RejectReason::StaleTimestamp,
        RejectReason::FutureTimestamp,
        RejectReason::BadSignature,
        RejectReason::Replay,
        RejectReason::RateLimited,
    ] {
        assert_eq!(stats.rejected_for(reason), 1, "{reason:?}");
    }
    assert_eq!(stats.accepted, 4);
}

#[test]
fn timestamps_inside_the_skew_window_are_accepted() {
    let mut validator = ByzantineValidator::new(ValidatorConfig::default());
    let alice = key(1);
    for (nonce, offset) in [(1, -29_999), (2, 29_999), (3, -30_000), (4, 30_000)] {
        validator
            .validate(
                NOW,
                alice.agent_id(),
                &frame(&alice, at(offset), nonce),
                &AllowAllSenders,
            )
            .unwrap_or_else(|e| panic!("offset {offset}: {e}"));
    }
}

#[test]
fn forgeries_ban_the_hop_and_the_ban_expires() {
    let config = ValidatorConfig {
        reputation: ReputationConfig {
            ban_duration: Duration::from_secs(10),
            ..ReputationConfig::default()
        },
        ..ValidatorConfig::default()
    };
    let mut validator = ByzantineValidator::new(config);
    let untarnished = ReputationSummary {
        banned: 0,
        lowest: 1_000,
    };
    assert_eq!(validator.reputation_summary(NOW), untarnished);
    let mallory = key(2);
    let m = mallory.agent_id();
    let mut forged = frame(&mallory, NOW, 1);
    let last = forged.len() - 1;
    forged[last] ^= 1; // signature byte
    // 250 points per forgery from 1,000: the third forgery crosses 500.
    for nonce in 0..2u64 {
        let mut forged = frame(&mallory, NOW, 100 + nonce);
        let last = forged.len() - 1;
        forged[last] ^= 1;
        assert_eq!(
            reason(validator.validate(NOW, m, &forged, &AllowAllSenders)),
            RejectReason::BadSignature
        );
        assert!(!validator.is_banned(&m, NOW));
    }
    assert_eq!(
        reason(validator.validate(NOW, m, &forged, &AllowAllSenders)),
        RejectReason::BadSignature
    );
    assert!(validator.is_banned(&m, NOW));
    assert_eq!(validator.stats().bans, 1);
    let summary = validator.reputation_summary(NOW);
    assert_eq!((summary.banned, summary.lowest), (1, 500));

    // While banned even a valid frame is refused, before any decoding.
    let valid = frame(&mallory, NOW, 2);
    assert_eq!(
        reason(validator.validate(at(9_999), m, &valid, &AllowAllSenders)),
        RejectReason::Banned
    );
    // After the ban: accepted again, but reputation is only at the threshold and
    // recovers slowly (5 points a second).
    validator
        .validate(at(10_000), m, &valid, &AllowAllSenders)
        .unwrap();
    let just_after = validator.reputation(&m, at(10_000));
    assert!((500..=560).contains(&just_after), "{just_after}");
    assert!(validator.reputation(&m, at(110_000)) >= 999);
    assert_eq!(validator.reputation_summary(at(110_000)).banned, 0);
}

#[test]
fn a_flood_of_100k_from_one_sender_is_rate_limited_in_bounded_memory() {
    let mut validator = ByzantineValidator::new(ValidatorConfig::default());
    let (flooder, honest) = (key(3), key(4));
    let mut accepted_from_flooder = 0u64;
    let mut honest_nonce = 0;
    for nonce in 0..100_000u64 {
        // All within one virtual second.
        let now = UnixMillis(NOW.0 + nonce / 100);
        let bytes = frame(&flooder, now, nonce);
        if validator
            .validate(now, flooder.agent_id(), &bytes, &AllowAllSenders)
            .is_ok()
        {
            accepted_from_flooder += 1;
        }
        if nonce % 1_000 == 0 {
            honest_nonce += 1;
            validator
                .validate(
                    now,
                    honest.agent_id(),
                    &frame(&honest, now, honest_nonce),
                    &AllowAllSenders,
                )
                .expect("the honest sender is never refused");
        }
    }
    let stats = validator.stats();
    // Burst of 2,000 plus one second of refill at most.
    assert!(accepted_from_flooder <= 3_000, "{accepted_from_flooder}");
    assert!(validator.is_banned(&flooder.agent_id(), UnixMillis(NOW.0 + 1_000)));
    assert!(!validator.is_banned(&honest.agent_id(), UnixMillis(NOW.0 + 1_000)));
    assert!(stats.rejected_for(RejectReason::RateLimited) > 0);
    assert!(
        stats.rejected_for(RejectReason::Banned) > 90_000,
        "cheap rejections after the ban"
    );
    assert!(
        stats.replay_entries <= 3_100,
        "replay set holds accepted frames only"
    );
    assert_eq!(stats.tracked_senders, 2);
    assert!(
        stats.verifier.single_verifications < 3_500,
        "signatures verified: {}",
        stats.verifier.single_verifications
    );
}

#[test]
fn replays_of_every_accepted_frame_are_refused() {
    let mut validator = ByzantineValidator::new(ValidatorConfig::default());
    let alice = key(1);
    let frames: Vec<_> = (0..40).map(|n| frame(&alice, NOW, n)).collect();
    for bytes in &frames {
        validator
            .validate(NOW, alice.agent_id(), bytes, &AllowAllSenders)
            .unwrap();
    }
    // 40 replays cost 400 points: refused each time, not yet banned.
    for bytes in &frames {
        assert_eq!(
            reason(validator.validate(at(5_000), alice.agent_id(), bytes, &AllowAllSenders)),
            RejectReason::Replay
        );
    }
    assert!(!validator.is_banned(&alice.agent_id(), at(5_000)));
    // A hop that keeps replaying is banned.
    for bytes in frames.iter().cycle().take(40) {
        let _ = validator.validate(at(5_000), alice.agent_id(), bytes, &AllowAllSenders);
    }
    assert!(validator.is_banned(&alice.agent_id(), at(5_000)));
    // Once the ban is over and the frame stale, it is refused as stale: never accepted.
    assert_eq!(
        reason(validator.validate(at(120_000), alice.agent_id(), &frames[0], &AllowAllSenders)),
        RejectReason::StaleTimestamp
    );
}

#[test]
fn the_replay_window_refuses_rather_than_grows() {
    let config = ValidatorConfig {
        replay_capacity: 10,
        ..ValidatorConfig::default()
    };
    let mut validator = ByzantineValidator::new(config);
    let alice = key(1);
    for nonce in 0..10 {
        validator
            .validate(
                NOW,
                alice.agent_id(),
                &frame(&alice, NOW, nonce),
                &AllowAllSenders,
            )
            .unwrap();
    }
    assert_eq!(
        reason(validator.validate(
            NOW,
            alice.agent_id(),
            &frame(&alice, NOW, 10),
            &AllowAllSenders
        )),
        RejectReason::Overloaded
    );
    assert_eq!(validator.stats().replay_entries, 10);
    // Once the old entries age out, there is room again.
    validator
        .validate(
            at(90_000),
            alice.agent_id(),
            &frame(&alice, at(90_000), 11),
            &AllowAllSenders,
        )
        .unwrap();
}

#[test]
fn many_identities_cannot_grow_the_sender_table_past_its_cap() {
    let config = ValidatorConfig {
        max_tracked_senders: 50,
        ..ValidatorConfig::default()
    };
    let mut validator = ByzantineValidator::new(config);
    for seed in 0..200u32 {
        let mut bytes = [0u8; 32];
        bytes[..4].copy_from_slice(&seed.to_le_bytes());
        let sybil = NodeKey::from_seed(bytes);
        // Malformed frames: each costs the identity reputation, so each would be tracked.
        let _ = validator.validate(NOW, sybil.agent_id(), b"junk", &AllowAllSenders);
        assert!(validator.stats().tracked_senders <= 50);
    }
}

#[test]
fn honest_senders_heard_long_ago_are_forgotten_but_penalised_ones_are_not() {
    let mut validator = ByzantineValidator::new(ValidatorConfig::default());
    let cheat = key(200);
    let _ = validator.validate(NOW, cheat.agent_id(), b"junk", &AllowAllSenders);
    // 2,000 honest senders, one frame each, 10 a second for 200 s: a large mesh where a
    // node hears from a few new peers each round.
    let senders: Vec<NodeKey> = (0..2_000u32)
        .map(|n| {
            let mut seed = [7u8; 32];
            seed[..4].copy_from_slice(&n.to_le_bytes());
            NodeKey::from_seed(seed)
        })
        .collect();
    let mut most_tracked = 0;
    for (n, sender) in senders.iter().enumerate() {
        let now = UnixMillis(NOW.0 + n as u64 * 100);
        let bytes = frame(sender, now, 1);
        validator
            .validate(now, sender.agent_id(), &bytes, &AllowAllSenders)
            .unwrap();
        most_tracked = most_tracked.max(validator.stats().tracked_senders);
        if n == 100 {
            // Ten seconds on, sweeps have run; the malformed frame's 100 points are
            // half regained, not forgotten.
            assert_eq!(validator.reputation(&cheat.agent_id(), now), 950);
        }
    }
    // Only senders heard since the last sweep (the table is swept when it doubles, from
    // 8), not all 2,000.
    assert!(most_tracked <= 8, "tracked {most_tracked} senders");
}

#[test]
fn an_honest_sender_is_never_banned_by_occasional_mishaps() {
    let mut validator = ByzantineValidator::new(ValidatorConfig::default());
    let alice = key(1);
    let a = alice.agent_id();
    // An hour of traffic at 10 messages a second, with a retransmission (replay) and a
    // slow-clock frame every 100 messages.
    for n in 0..36_000u64 {
        let now = UnixMillis(NOW.0 + n * 100);
        let bytes = frame(&alice, now, n);
        validator
            .validate(now, a, &bytes, &AllowAllSenders)
            .unwrap();
        if n % 100 == 0 {
            let _ = validator.validate(now, a, &bytes, &AllowAllSenders);
            let _ = validator.validate(
                now,
                a,
                &frame(&alice, UnixMillis(now.0 - 40_000), u64::MAX - n),
                &AllowAllSenders,
            );
        }
    }
    assert!(!validator.is_banned(&a, UnixMillis(NOW.0 + 3_600_000)));
    assert_eq!(validator.stats().bans, 0);
    assert!(validator.reputation(&a, UnixMillis(NOW.0 + 3_600_000)) > 900);
}

#[test]
fn a_clock_stepping_back_does_not_revive_replays() {
    let mut validator = ByzantineValidator::new(ValidatorConfig::default());
    let alice = key(1);
    let bytes = frame(&alice, NOW, 1);
    validator
        .validate(NOW, alice.agent_id(), &bytes, &AllowAllSenders)
        .unwrap();
    // Our clock jumps ahead two minutes (buckets expire), then steps back.
    let later = frame(&alice, at(120_000), 2);
    validator
        .validate(at(120_000), alice.agent_id(), &later, &AllowAllSenders)
        .unwrap();
    assert_eq!(
        reason(validator.validate(NOW, alice.agent_id(), &bytes, &AllowAllSenders)),
        RejectReason::StaleTimestamp
    );
}

#[test]
fn bad_payloads_reported_from_above_lower_reputation_and_ban() {
    let mut validator = ByzantineValidator::new(ValidatorConfig::default());
    let mallory = key(2).agent_id();
    validator.report(NOW, mallory, RejectReason::BadPayload);
    assert_eq!(validator.reputation(&mallory, NOW), 800);
    assert_eq!(validator.stats().rejected_for(RejectReason::BadPayload), 1);
    validator.report(NOW, mallory, RejectReason::BadPayload);
    validator.report(NOW, mallory, RejectReason::BadPayload);
    assert!(validator.is_banned(&mallory, NOW));
}

#[test]
fn envelope_signatures_are_not_stored_in_the_cache() {
    // Hop signatures never repeat (fresh nonce each time); storing them would only
    // evict entry signatures that do repeat, and cost memory per message.
    let mut validator = ByzantineValidator::new(ValidatorConfig::default());
    let alice = key(1);
    for nonce in 0..100 {
        validator
            .validate(
                NOW,
                alice.agent_id(),
                &frame(&alice, NOW, nonce),
                &AllowAllSenders,
            )
            .unwrap();
    }
    assert!(validator.verifier().cache().is_empty());
    assert_eq!(validator.stats().verifier.single_verifications, 100);
}

/// Hardening finding 1: a receiver that stalls (an attacker's slow frames ahead of an
/// honest peer's in its queue) used to judge the honest frames stale at processing time
/// and ban the honest peer. Staleness caused by our own backlog is refused, not charged.
#[test]
fn frames_that_went_stale_in_our_own_queue_are_refused_but_never_charged() {
    let mut validator = ByzantineValidator::new(ValidatorConfig::default());
    let honest = key(5);
    // Forty frames sent and received at NOW, processed 45 s later (skew window 30 s):
    // forty stale penalties would be far below the ban threshold.
    for nonce in 1..=40 {
        let bytes = frame(&honest, NOW, nonce);
        let refused = validator.validate_received(
            at(45_000),
            NOW,
            honest.agent_id(),
            &bytes,
            &AllowAllSenders,
        );
        assert_eq!(reason(refused), RejectReason::StaleTimestamp);
    }
    let stats = validator.stats();
    assert_eq!(stats.stale_after_queueing, 40);
    assert_eq!(stats.rejected_for(RejectReason::StaleTimestamp), 40);
    assert_eq!(validator.reputation(&honest.agent_id(), at(45_000)), 1_000);
    assert!(!validator.is_banned(&honest.agent_id(), at(45_000)));
    // A frame that was already stale when it arrived is the sender's doing: charged.
    let late = frame(&honest, at(-40_000), 99);
    let refused = validator.validate_received(
        at(45_000),
        at(1_000),
        honest.agent_id(),
        &late,
        &AllowAllSenders,
    );
    assert_eq!(reason(refused), RejectReason::StaleTimestamp);
    assert!(validator.reputation(&honest.agent_id(), at(45_000)) < 1_000);
    assert_eq!(validator.stats().stale_after_queueing, 40);
}

/// Hardening finding 1: the gate limited frames, not bytes, so a member could send
/// 1,000 frames of 1 MiB a second for the layers to decode. Large frames cost more.
#[test]
fn large_frames_cost_more_rate_tokens() {
    let config = ValidatorConfig {
        rate_per_second: 100,
        rate_burst: 100,
        ..ValidatorConfig::default()
    };
    let mut validator = ByzantineValidator::new(config);
    let sender = key(7);
    let big = |nonce: u64| {
        Envelope::sign(
            &sender,
            EnvelopeHeader::new(MessageKind::GossipPush, NOW, nonce),
            vec![0; 640 * 1024],
        )
        .encode()
    };
    // Each 640 KiB frame costs 11 tokens: nine fit a burst of 100.
    let accepted = (1..=20)
        .filter(|nonce| {
            validator
                .validate(NOW, sender.agent_id(), &big(*nonce), &AllowAllSenders)
                .is_ok()
        })
        .count();
    assert_eq!(accepted, 9);
    assert_eq!(
        validator.stats().rejected_for(RejectReason::RateLimited),
        11
    );
}
