//! Property tests of the wire envelope: round trips, tamper detection, truncation.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ed25519_dalek::SigningKey;
use knhk_types::{
    DEFAULT_MAX_FRAME_BYTES, Envelope, EnvelopeError, EnvelopeHeader, EnvelopeRef, MessageKind,
    UnixMillis,
};
use proptest::prelude::*;

fn kind() -> impl Strategy<Value = MessageKind> {
    proptest::sample::select(MessageKind::ALL.to_vec())
}

fn envelope() -> impl Strategy<Value = Envelope> {
    (
        any::<[u8; 32]>(),
        kind(),
        any::<u64>(),
        any::<u64>(),
        proptest::collection::vec(any::<u8>(), 0..300),
    )
        .prop_map(|(seed, kind, ts, nonce, payload)| {
            Envelope::sign(
                &SigningKey::from_bytes(&seed),
                EnvelopeHeader::new(kind, UnixMillis(ts), nonce),
                payload,
            )
        })
}

/// Decoding then verifying: the only outcome that counts as "accepted".
fn accepted(frame: &[u8]) -> Result<Envelope, EnvelopeError> {
    let envelope = Envelope::decode(frame, DEFAULT_MAX_FRAME_BYTES)?;
    envelope.verify()?;
    Ok(envelope)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn encode_decode_round_trips(envelope in envelope()) {
        let bytes = envelope.encode();
        let decoded = Envelope::decode(&bytes, DEFAULT_MAX_FRAME_BYTES).unwrap();
        prop_assert_eq!(&decoded, &envelope);
        prop_assert!(decoded.verify().is_ok());
        prop_assert_eq!(decoded.encode(), bytes.clone());
        prop_assert_eq!(EnvelopeRef::decode(&bytes, DEFAULT_MAX_FRAME_BYTES).unwrap().encoded_len(), bytes.len());
    }

    #[test]
    fn every_truncation_is_an_error(envelope in envelope()) {
        let bytes = envelope.encode();
        for len in 0..bytes.len() {
            prop_assert!(Envelope::decode(&bytes[..len], DEFAULT_MAX_FRAME_BYTES).is_err(), "prefix of {} bytes decoded", len);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_never_verify(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        prop_assert!(accepted(&bytes).is_err());
    }
}

proptest! {
    // Each case verifies once per bit (~3,000 verifications), so fewer cases.
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn every_single_bit_flip_is_rejected(envelope in envelope()) {
        let bytes = envelope.encode();
        for bit in 0..bytes.len() * 8 {
            let mut flipped = bytes.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(accepted(&flipped).is_err(), "flip of bit {} accepted", bit);
        }
    }
}

#[test]
fn bit_flip_of_a_large_envelope_is_rejected_at_every_position() {
    // A fixed, larger case so varint length prefixes of two bytes are covered too.
    let envelope = Envelope::sign(
        &SigningKey::from_bytes(&[3; 32]),
        EnvelopeHeader::new(MessageKind::GossipPush, UnixMillis(u64::MAX), u64::MAX),
        vec![0xa5; 200],
    );
    let bytes = envelope.encode();
    for bit in 0..bytes.len() * 8 {
        let mut flipped = bytes.clone();
        flipped[bit / 8] ^= 1 << (bit % 8);
        assert!(accepted(&flipped).is_err(), "flip of bit {bit} accepted");
    }
}

#[test]
fn decode_allocates_no_more_than_the_frame() {
    // A length prefix claiming 4 GiB of payload in a 60-byte frame is an error, not an
    // allocation: postcard checks the claimed length against the remaining input.
    let mut frame = vec![1u8, 1];
    frame.extend_from_slice(&[7; 32]);
    frame.extend_from_slice(&[0, 0]); // timestamp, nonce
    frame.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]); // payload length u32::MAX
    frame.extend_from_slice(&[0; 20]);
    assert!(matches!(
        Envelope::decode(&frame, DEFAULT_MAX_FRAME_BYTES),
        Err(EnvelopeError::Malformed { .. })
    ));
}
