//! Property tests of membership certificates: the codec round-trips and never panics,
//! and a certificate is accepted exactly when every claim holds.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ed25519_dalek::SigningKey;
use knhk_types::{
    AdmissionRule, AgentId, HierarchyLevel, MembershipCertificate, MembershipClaims, RefusalReason,
    Region, UnixMillis,
};
use proptest::prelude::*;

fn id(seed: [u8; 32]) -> AgentId {
    AgentId::from_verifying_key(&SigningKey::from_bytes(&seed).verifying_key())
}

fn claims() -> impl Strategy<Value = MembershipClaims> {
    (
        "[a-z0-9-]{1,64}",
        any::<[u8; 32]>(),
        "[a-z0-9-]{1,31}",
        proptest::sample::select(vec![
            HierarchyLevel::Edge,
            HierarchyLevel::Aggregator,
            HierarchyLevel::Coordinator,
        ]),
        0u64..1 << 50,
        1u64..1 << 40,
    )
        .prop_map(
            |(cluster, agent, region, role, not_before, lifetime)| MembershipClaims {
                cluster,
                agent: id(agent),
                region: Region::new(&region).unwrap(),
                role,
                not_before: UnixMillis(not_before),
                expires: UnixMillis(not_before + lifetime),
            },
        )
}

proptest! {
    #[test]
    fn certificates_round_trip_in_both_forms(authority in any::<[u8; 32]>(), claims in claims()) {
        let certificate =
            MembershipCertificate::issue(&SigningKey::from_bytes(&authority), claims).unwrap();
        let bytes = certificate.encode().unwrap();
        prop_assert_eq!(&MembershipCertificate::decode(&bytes).unwrap(), &certificate);
        let text = certificate.to_text().unwrap();
        prop_assert_eq!(&text.parse::<MembershipCertificate>().unwrap(), &certificate);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = MembershipCertificate::decode(&bytes);
        let _ = String::from_utf8_lossy(&bytes).parse::<MembershipCertificate>();
    }

    #[test]
    fn a_certificate_is_accepted_exactly_within_its_validity(
        authority in any::<[u8; 32]>(),
        claims in claims(),
        offset in -(1i64 << 41)..(1i64 << 41),
    ) {
        let key = SigningKey::from_bytes(&authority);
        let agent = claims.agent;
        let certificate = MembershipCertificate::issue(&key, claims.clone()).unwrap();
        let rule = AdmissionRule::new(id(authority), claims.cluster.clone());
        let skew = rule.max_clock_skew.as_millis() as i64;
        let now = (claims.not_before.0 as i64 + offset).max(0) as u64;
        let valid = now as i64 + skew >= claims.not_before.0 as i64
            && now < claims.expires.0 + skew as u64;
        let verdict = rule.check(&certificate, &agent, UnixMillis(now));
        prop_assert_eq!(verdict.is_ok(), valid, "now {} claims {:?}", now, claims);
        if let Err(error) = verdict {
            prop_assert!(matches!(
                error.reason(),
                RefusalReason::NotYetValid | RefusalReason::Expired
            ));
        }
        // Flipping any one byte of the encoding never yields an accepted certificate
        // for another agent, cluster or validity.
        let mut bytes = certificate.encode().unwrap();
        let at = (offset.unsigned_abs() as usize) % bytes.len();
        bytes[at] ^= 0x01;
        if let Ok(tampered) = MembershipCertificate::decode(&bytes)
            && tampered != certificate
        {
            prop_assert!(rule.check(&tampered, &tampered.claims.agent, UnixMillis(now)).is_err()
                || tampered.claims == certificate.claims);
        }
    }
}
