//! RFC 8032 section 7.1 test vectors through our own key, sign and verify API.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use knhk_security::{Ed25519Verifier, NodeKey, SignatureVerifier, VerifyError};
use knhk_types::{EnvelopeSigner, Signature};

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn rfc8032_section_7_1_vectors_pass_through_our_api() {
    let vectors = include_str!("data/rfc8032_7_1.txt");
    let mut checked = 0;
    for line in vectors
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let fields: Vec<&str> = line.split(':').collect();
        let [name, secret, public, message, signature] = fields[..] else {
            panic!("bad vector line {line:?}");
        };
        let key = NodeKey::from_seed(hex(secret).try_into().unwrap());
        assert_eq!(
            key.agent_id().as_bytes().to_vec(),
            hex(public),
            "{name}: public key"
        );
        let message = hex(message);
        let expected = Signature(hex(signature).try_into().unwrap());
        assert_eq!(key.sign_message(&message), expected, "{name}: signature");

        let mut verifier = Ed25519Verifier::new(16);
        verifier
            .verify(&key.agent_id(), &message, &expected)
            .unwrap();
        let mut tampered = message.clone();
        tampered.push(0);
        assert_eq!(
            verifier.verify(&key.agent_id(), &tampered, &expected),
            Err(VerifyError::BadSignature(key.agent_id())),
            "{name}: tampered message"
        );
        checked += 1;
    }
    assert_eq!(checked, 4);
}
