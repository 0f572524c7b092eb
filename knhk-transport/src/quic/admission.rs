//! Admission after the TLS handshake: the dialer's *hello* (its membership certificate,
//! if it has one), the acceptor's decision under its [`InboundPolicy`], and the
//! [`AllowList`] an operator can change at run time.
//!
//! TLS proves which key a peer holds; admission decides whether that key may be a
//! member. The dialer sends its hello on its first unidirectional stream, before
//! anything else; the acceptor reads it (at most [`MAX_HELLO_BYTES`], within the
//! handshake deadline), decides, and either welcomes the dialer or closes the connection
//! with [`ADMISSION_REFUSED`] and the [`RefusalReason`]'s code word, which the dialer
//! reports as [`crate::TransportError::AdmissionRefused`].

use std::collections::HashSet;
use std::sync::{PoisonError, RwLock};

use knhk_types::{
    AdmissionError, AgentId, MembershipCertificate, MembershipClaims, RefusalReason, UnixMillis,
};
use serde::{Deserialize, Serialize};

use super::InboundPolicy;
use crate::PeerRegistry;

/// Largest hello accepted.
pub(crate) const MAX_HELLO_BYTES: usize = 1_024;
/// Connection close code: admission refused; the close reason is the refusal's code word.
pub(crate) const ADMISSION_REFUSED: u32 = 0x4b06;

/// What a dialer says first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Hello {
    /// Its membership certificate, if it has one.
    pub credentials: Option<MembershipCertificate>,
}

impl Hello {
    pub(crate) fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).unwrap_or_default()
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, AdmissionError> {
        match postcard::take_from_bytes::<Self>(bytes) {
            Ok((hello, [])) => Ok(hello),
            Ok((_, rest)) => Err(AdmissionError::Malformed(format!(
                "{} bytes after the hello",
                rest.len()
            ))),
            Err(error) => Err(AdmissionError::Malformed(error.to_string())),
        }
    }
}

/// Node keys admitted by name (the allow-list mode of [`InboundPolicy::AllowList`]);
/// shared, so an operator can add or revoke keys while the node runs. Revoking a key
/// refuses its next connection; connections already open stay until they close.
#[derive(Debug, Default)]
pub struct AllowList(RwLock<HashSet<AgentId>>);

impl AllowList {
    /// A list holding `ids`.
    pub fn new(ids: impl IntoIterator<Item = AgentId>) -> Self {
        Self(RwLock::new(ids.into_iter().collect()))
    }

    /// Admits `id` from now on; false if it was listed already.
    pub fn allow(&self, id: AgentId) -> bool {
        self.0
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id)
    }

    /// Stops admitting `id`; false if it was not listed.
    pub fn revoke(&self, id: &AgentId) -> bool {
        self.0
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id)
    }

    /// True if `id` is listed.
    pub fn contains(&self, id: &AgentId) -> bool {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(id)
    }

    /// Number of listed keys.
    pub fn len(&self) -> usize {
        self.0.read().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// True if no key is listed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Why a dialer was let in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Admitted {
    /// The policy had decided at the TLS layer (registered peers, any peer, custom), or
    /// the peer is in the registry already.
    Known,
    /// On the allow-list.
    Listed,
    /// With a valid membership certificate.
    Certified(MembershipClaims),
}

/// Decides whether `peer`, which said `hello`, is admitted under `policy` at `now`.
/// Under the certificate and allow-list policies a peer in `registry` is admitted too
/// (the operator named it, or it was admitted before and has not expired), unless it
/// presents a certificate that fails the rule: a bad certificate is never ignored.
pub(crate) fn decide(
    policy: &InboundPolicy,
    registry: &PeerRegistry,
    hello: &Hello,
    peer: &AgentId,
    now: UnixMillis,
) -> Result<Admitted, AdmissionError> {
    match policy {
        InboundPolicy::RegisteredPeers
        | InboundPolicy::AnyAuthenticatedPeer
        | InboundPolicy::Custom(_) => Ok(Admitted::Known),
        InboundPolicy::Certified(rule) => match &hello.credentials {
            Some(certificate) => rule
                .check(certificate, peer, now)
                .map(|claims| Admitted::Certified(claims.clone())),
            None if registry.contains(peer) => Ok(Admitted::Known),
            None => Err(AdmissionError::Refused {
                reason: RefusalReason::NoCertificate,
                detail: "no membership certificate presented".into(),
            }),
        },
        InboundPolicy::AllowList(list) => {
            if list.contains(peer) {
                Ok(Admitted::Listed)
            } else if registry.contains(peer) {
                Ok(Admitted::Known)
            } else {
                Err(AdmissionError::Refused {
                    reason: RefusalReason::NotListed,
                    detail: "not on the allow-list".into(),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ed25519_dalek::SigningKey;
    use knhk_types::{AdmissionRule, HierarchyLevel, Region};

    use super::*;
    use crate::RegistryConfig;

    fn id(seed: u8) -> AgentId {
        AgentId::from_verifying_key(&SigningKey::from_bytes(&[seed; 32]).verifying_key())
    }

    fn certificate(authority: u8, agent: AgentId) -> MembershipCertificate {
        let claims = MembershipClaims {
            cluster: "prod".into(),
            agent,
            region: Region::default(),
            role: HierarchyLevel::Edge,
            not_before: UnixMillis(0),
            expires: UnixMillis(10_000_000),
        };
        MembershipCertificate::issue(&SigningKey::from_bytes(&[authority; 32]), claims).unwrap()
    }

    fn reason(result: Result<Admitted, AdmissionError>) -> Option<RefusalReason> {
        result.err().map(|error| error.reason())
    }

    #[test]
    fn certificates_lists_and_the_registry_decide_admission() {
        let registry = PeerRegistry::new(id(1), RegistryConfig::default());
        let stranger = id(2);
        let now = UnixMillis(5_000_000);
        let certified = InboundPolicy::Certified(Arc::new(AdmissionRule::new(id(9), "prod")));
        let with = |authority| Hello {
            credentials: Some(certificate(authority, stranger)),
        };
        assert!(matches!(
            decide(&certified, &registry, &with(9), &stranger, now),
            Ok(Admitted::Certified(_))
        ));
        assert_eq!(
            reason(decide(
                &certified,
                &registry,
                &Hello::default(),
                &stranger,
                now
            )),
            Some(RefusalReason::NoCertificate)
        );
        assert_eq!(
            reason(decide(&certified, &registry, &with(8), &stranger, now)),
            Some(RefusalReason::UnknownAuthority)
        );
        let list = Arc::new(AllowList::default());
        let listed = InboundPolicy::AllowList(list.clone());
        assert_eq!(
            reason(decide(
                &listed,
                &registry,
                &Hello::default(),
                &stranger,
                now
            )),
            Some(RefusalReason::NotListed)
        );
        assert!(list.allow(stranger));
        assert_eq!(
            decide(&listed, &registry, &Hello::default(), &stranger, now),
            Ok(Admitted::Listed)
        );
        assert!(list.revoke(&stranger));
        // A peer the operator registered gets in under either policy, unless it shows
        // a bad certificate.
        registry
            .register(knhk_types::PeerInfo::new(
                stranger,
                "127.0.0.1:1".parse().unwrap(),
            ))
            .unwrap();
        assert_eq!(
            decide(&listed, &registry, &Hello::default(), &stranger, now),
            Ok(Admitted::Known)
        );
        assert_eq!(
            decide(&certified, &registry, &Hello::default(), &stranger, now),
            Ok(Admitted::Known)
        );
        assert_eq!(
            reason(decide(&certified, &registry, &with(8), &stranger, now)),
            Some(RefusalReason::UnknownAuthority)
        );
    }

    #[test]
    fn hellos_round_trip_and_garbage_is_malformed() {
        let hello = Hello {
            credentials: Some(certificate(9, id(2))),
        };
        assert_eq!(Hello::decode(&hello.encode()).unwrap(), hello);
        assert!(hello.encode().len() < MAX_HELLO_BYTES);
        assert_eq!(
            Hello::decode(&Hello::default().encode()).unwrap(),
            Hello::default()
        );
        for garbage in [&[0x01][..], &[0x02, 0x00][..], &[0x00, 0x00][..]] {
            assert!(Hello::decode(garbage).is_err(), "{garbage:?}");
        }
    }
}
