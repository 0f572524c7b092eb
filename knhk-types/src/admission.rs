//! Admission to a mesh: [`MembershipCertificate`]s that a cluster's admission key signs,
//! the [`AdmissionRule`] a node checks them against, and the [`RefusalReason`] a refused
//! node is told.
//!
//! A certificate says "the holder of key `agent` is a member of `cluster`, in `region`,
//! with `role`, from `not_before` until `expires`", signed by the cluster's admission
//! key (any ed25519 key the operator keeps offline, named like a node by its
//! [`AgentId`]). A node presents its certificate when it connects; a node whose rule
//! trusts that admission key accepts it without having heard of it before. Revocation is
//! by expiry: issue short-lived certificates and renew them.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use ed25519_dalek::{Signer, SigningKey};
use serde::{Deserialize, Serialize};

use crate::{AgentId, HierarchyLevel, Region, Signature, UnixMillis};

/// Domain separation for the admission key's signature: a certificate signature can
/// never be replayed as an envelope's, or the other way round.
pub const CERTIFICATE_CONTEXT: &[u8] = b"knhk-membership-certificate-v1";
/// Largest encoded certificate accepted (a real one is under 200 bytes).
pub const MAX_CERTIFICATE_BYTES: usize = 512;
/// Longest cluster name, in bytes.
pub const MAX_CLUSTER_NAME: usize = 64;
/// Prefix of a certificate's text form.
const TEXT_PREFIX: &str = "knhk-cert-v1.";

/// What a certificate asserts about its holder.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipClaims {
    /// The cluster the holder belongs to (a name the operator picks; nodes of different
    /// clusters refuse each other even under one admission key).
    pub cluster: String,
    /// The holder: the node key the certificate is for.
    pub agent: AgentId,
    /// The holder's region.
    pub region: Region,
    /// The holder's role in the hierarchy.
    pub role: HierarchyLevel,
    /// Not valid before this time.
    pub not_before: UnixMillis,
    /// Not valid from this time on.
    pub expires: UnixMillis,
}

/// A node's membership certificate: claims signed by a cluster's admission key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipCertificate {
    /// What is certified.
    pub claims: MembershipClaims,
    /// The admission key that signed it.
    pub authority: AgentId,
    /// The authority's signature over [`CERTIFICATE_CONTEXT`] and the encoded claims.
    pub signature: Signature,
}

/// Why a node was not admitted, as the refused node is told it (a stable code word each).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RefusalReason {
    /// No certificate was presented and the node is not on the allow-list.
    NoCertificate,
    /// Allow-list mode, and the node is not on the list.
    NotListed,
    /// The certificate does not decode.
    Malformed,
    /// Signed by a key this node does not trust for admission.
    UnknownAuthority,
    /// The authority's signature does not verify.
    BadSignature,
    /// Issued for another cluster.
    WrongCluster,
    /// Issued for another node key.
    WrongAgent,
    /// Not valid yet.
    NotYetValid,
    /// Expired.
    Expired,
}

impl RefusalReason {
    /// Every reason, in declaration order.
    pub const ALL: [RefusalReason; 9] = [
        Self::NoCertificate,
        Self::NotListed,
        Self::Malformed,
        Self::UnknownAuthority,
        Self::BadSignature,
        Self::WrongCluster,
        Self::WrongAgent,
        Self::NotYetValid,
        Self::Expired,
    ];

    /// The code word (`no_certificate`, `expired`, …), as on the wire and in telemetry.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::NoCertificate => "no_certificate",
            Self::NotListed => "not_listed",
            Self::Malformed => "malformed",
            Self::UnknownAuthority => "unknown_authority",
            Self::BadSignature => "bad_signature",
            Self::WrongCluster => "wrong_cluster",
            Self::WrongAgent => "wrong_agent",
            Self::NotYetValid => "not_yet_valid",
            Self::Expired => "expired",
        }
    }

    /// Its position in [`RefusalReason::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The reason a code word names; `None` for anything else.
    pub fn from_code(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|reason| reason.as_str() == code)
    }
}

impl fmt::Display for RefusalReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a certificate could not be issued, read or accepted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AdmissionError {
    /// Claims that cannot be certified (empty or over-long cluster name, or an expiry
    /// not after `not_before`).
    #[error("invalid claims: {0}")]
    InvalidClaims(&'static str),
    /// The bytes or text are not a certificate.
    #[error("not a membership certificate: {0}")]
    Malformed(String),
    /// Refused by an [`AdmissionRule`].
    #[error("admission refused ({reason}): {detail}")]
    Refused {
        /// The code word the refused node is told.
        reason: RefusalReason,
        /// What exactly was wrong, for the refusing node's log.
        detail: String,
    },
}

impl AdmissionError {
    fn refused(reason: RefusalReason, detail: impl Into<String>) -> Self {
        Self::Refused {
            reason,
            detail: detail.into(),
        }
    }

    /// The code word to tell the refused node.
    pub fn reason(&self) -> RefusalReason {
        match self {
            Self::InvalidClaims(_) | Self::Malformed(_) => RefusalReason::Malformed,
            Self::Refused { reason, .. } => *reason,
        }
    }
}

impl MembershipClaims {
    fn signed_bytes(&self) -> Result<Vec<u8>, AdmissionError> {
        let mut bytes = CERTIFICATE_CONTEXT.to_vec();
        let claims =
            postcard::to_allocvec(self).map_err(|e| AdmissionError::Malformed(e.to_string()))?;
        bytes.extend_from_slice(&claims);
        Ok(bytes)
    }
}

impl MembershipCertificate {
    /// Signs `claims` with the admission key `authority`.
    ///
    /// Errors: [`AdmissionError::InvalidClaims`] for an empty cluster name or one over
    /// [`MAX_CLUSTER_NAME`] bytes, or `expires` not after `not_before`.
    pub fn issue(authority: &SigningKey, claims: MembershipClaims) -> Result<Self, AdmissionError> {
        if claims.cluster.is_empty() || claims.cluster.len() > MAX_CLUSTER_NAME {
            return Err(AdmissionError::InvalidClaims(
                "the cluster name must be 1 to 64 bytes",
            ));
        }
        if claims.expires <= claims.not_before {
            return Err(AdmissionError::InvalidClaims(
                "expires must be after not_before",
            ));
        }
        let signature = authority.sign(&claims.signed_bytes()?);
        Ok(Self {
            claims,
            authority: AgentId::from_verifying_key(&authority.verifying_key()),
            signature: Signature(signature.to_bytes()),
        })
    }

    /// The binary form (postcard), at most [`MAX_CERTIFICATE_BYTES`].
    ///
    /// Errors: [`AdmissionError::Malformed`] if it would exceed that size (a cluster
    /// name within limits never does).
    pub fn encode(&self) -> Result<Vec<u8>, AdmissionError> {
        let bytes =
            postcard::to_allocvec(self).map_err(|e| AdmissionError::Malformed(e.to_string()))?;
        if bytes.len() > MAX_CERTIFICATE_BYTES {
            return Err(AdmissionError::Malformed(format!(
                "{} bytes, over the {MAX_CERTIFICATE_BYTES}-byte limit",
                bytes.len()
            )));
        }
        Ok(bytes)
    }

    /// Reads the binary form. Checks nothing but the shape: see [`AdmissionRule::check`].
    ///
    /// Errors: [`AdmissionError::Malformed`] for more than [`MAX_CERTIFICATE_BYTES`],
    /// bytes that do not decode, or trailing bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, AdmissionError> {
        if bytes.len() > MAX_CERTIFICATE_BYTES {
            return Err(AdmissionError::Malformed(format!(
                "{} bytes, over the {MAX_CERTIFICATE_BYTES}-byte limit",
                bytes.len()
            )));
        }
        let (certificate, rest) = postcard::take_from_bytes::<Self>(bytes)
            .map_err(|e| AdmissionError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(AdmissionError::Malformed(format!(
                "{} trailing bytes",
                rest.len()
            )));
        }
        Ok(certificate)
    }

    /// The text form for files and configuration: `knhk-cert-v1.` and the binary form in
    /// unpadded URL-safe base64.
    ///
    /// Errors: as [`MembershipCertificate::encode`].
    pub fn to_text(&self) -> Result<String, AdmissionError> {
        Ok(format!(
            "{TEXT_PREFIX}{}",
            data_encoding::BASE64URL_NOPAD.encode(&self.encode()?)
        ))
    }
}

impl FromStr for MembershipCertificate {
    type Err = AdmissionError;

    /// Reads the text form (surrounding whitespace ignored).
    ///
    /// Errors: [`AdmissionError::Malformed`] without the `knhk-cert-v1.` prefix, with
    /// invalid base64, or with bytes [`MembershipCertificate::decode`] refuses.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let body = text
            .trim()
            .strip_prefix(TEXT_PREFIX)
            .ok_or_else(|| AdmissionError::Malformed(format!("no `{TEXT_PREFIX}` prefix")))?;
        if body.len() > MAX_CERTIFICATE_BYTES * 2 {
            return Err(AdmissionError::Malformed("text too long".into()));
        }
        let bytes = data_encoding::BASE64URL_NOPAD
            .decode(body.as_bytes())
            .map_err(|e| AdmissionError::Malformed(format!("base64: {e}")))?;
        Self::decode(&bytes)
    }
}

/// What a node accepts as a membership certificate: signed by one of `authorities`
/// (several, so that an admission key can be rotated), for `cluster`, for the key that
/// presents it, and valid now give or take `max_clock_skew`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdmissionRule {
    /// Admission keys trusted to sign certificates.
    pub authorities: Vec<AgentId>,
    /// The cluster this node belongs to.
    pub cluster: String,
    /// Tolerance for clocks that disagree, applied to both ends of the validity
    /// interval. Default 30 s.
    pub max_clock_skew: Duration,
}

impl AdmissionRule {
    /// Certificates of `cluster` signed by `authority`, with 30 s of clock skew.
    pub fn new(authority: AgentId, cluster: impl Into<String>) -> Self {
        Self {
            authorities: vec![authority],
            cluster: cluster.into(),
            max_clock_skew: Duration::from_secs(30),
        }
    }

    /// Checks `certificate`, presented by the holder of key `presented` at `now`, and
    /// returns its claims.
    ///
    /// Errors: [`AdmissionError::Refused`] with [`RefusalReason::UnknownAuthority`],
    /// `BadSignature`, `WrongCluster`, `WrongAgent`, `NotYetValid` or `Expired`, checked
    /// in that order (the signature before anything it covers is believed).
    pub fn check<'a>(
        &self,
        certificate: &'a MembershipCertificate,
        presented: &AgentId,
        now: UnixMillis,
    ) -> Result<&'a MembershipClaims, AdmissionError> {
        let authority = &certificate.authority;
        if !self.authorities.contains(authority) {
            return Err(AdmissionError::refused(
                RefusalReason::UnknownAuthority,
                format!(
                    "signed by {}, which this node does not trust",
                    authority.short()
                ),
            ));
        }
        let key = authority.verifying_key().ok_or_else(|| {
            AdmissionError::refused(RefusalReason::BadSignature, "authority key is not a point")
        })?;
        let signature = ed25519_dalek::Signature::from_bytes(&certificate.signature.0);
        let claims = &certificate.claims;
        key.verify_strict(&claims.signed_bytes()?, &signature)
            .map_err(|_| {
                AdmissionError::refused(RefusalReason::BadSignature, "signature does not verify")
            })?;
        if claims.cluster != self.cluster {
            return Err(AdmissionError::refused(
                RefusalReason::WrongCluster,
                format!("for cluster {:?}, not {:?}", claims.cluster, self.cluster),
            ));
        }
        if claims.agent != *presented {
            return Err(AdmissionError::refused(
                RefusalReason::WrongAgent,
                format!(
                    "issued to {}, presented by {}",
                    claims.agent.short(),
                    presented.short()
                ),
            ));
        }
        if now.saturating_add(self.max_clock_skew) < claims.not_before {
            return Err(AdmissionError::refused(
                RefusalReason::NotYetValid,
                format!("valid from {} ms, now {} ms", claims.not_before.0, now.0),
            ));
        }
        if claims.expires.saturating_add(self.max_clock_skew) <= now {
            return Err(AdmissionError::refused(
                RefusalReason::Expired,
                format!("expired at {} ms, now {} ms", claims.expires.0, now.0),
            ));
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn id(key: &SigningKey) -> AgentId {
        AgentId::from_verifying_key(&key.verifying_key())
    }

    fn claims(agent: AgentId) -> MembershipClaims {
        MembershipClaims {
            cluster: "prod".into(),
            agent,
            region: Region::new("eu-west").unwrap_or_default(),
            role: HierarchyLevel::Edge,
            not_before: UnixMillis(1_000_000),
            expires: UnixMillis(2_000_000),
        }
    }

    fn refusal(result: Result<&MembershipClaims, AdmissionError>) -> Option<RefusalReason> {
        result.err().map(|error| error.reason())
    }

    #[test]
    fn a_certificate_round_trips_and_is_accepted_within_its_validity() {
        let authority = key(1);
        let node = id(&key(2));
        let certificate = MembershipCertificate::issue(&authority, claims(node)).unwrap();
        let bytes = certificate.encode().unwrap();
        assert!(bytes.len() < 200, "{} bytes", bytes.len());
        assert_eq!(MembershipCertificate::decode(&bytes).unwrap(), certificate);
        let text = certificate.to_text().unwrap();
        assert_eq!(text.parse::<MembershipCertificate>().unwrap(), certificate);
        let rule = AdmissionRule::new(id(&authority), "prod");
        assert_eq!(
            rule.check(&certificate, &node, UnixMillis(1_500_000))
                .unwrap(),
            &certificate.claims
        );
    }

    #[test]
    fn each_flaw_is_refused_with_its_reason() {
        let authority = key(1);
        let node = id(&key(2));
        let certificate = MembershipCertificate::issue(&authority, claims(node)).unwrap();
        let rule = AdmissionRule::new(id(&authority), "prod");
        let now = UnixMillis(1_500_000);
        let other_authority = AdmissionRule::new(id(&key(9)), "prod");
        assert_eq!(
            refusal(other_authority.check(&certificate, &node, now)),
            Some(RefusalReason::UnknownAuthority)
        );
        let other_cluster = AdmissionRule::new(id(&authority), "staging");
        assert_eq!(
            refusal(other_cluster.check(&certificate, &node, now)),
            Some(RefusalReason::WrongCluster)
        );
        assert_eq!(
            refusal(rule.check(&certificate, &id(&key(3)), now)),
            Some(RefusalReason::WrongAgent)
        );
        // Clock skew is tolerated at both ends, and no more.
        let skew = 30_000;
        assert!(
            rule.check(&certificate, &node, UnixMillis(1_000_000 - skew))
                .is_ok()
        );
        assert_eq!(
            refusal(rule.check(&certificate, &node, UnixMillis(1_000_000 - skew - 1))),
            Some(RefusalReason::NotYetValid)
        );
        assert!(
            rule.check(&certificate, &node, UnixMillis(2_000_000 + skew - 1))
                .is_ok()
        );
        assert_eq!(
            refusal(rule.check(&certificate, &node, UnixMillis(2_000_000 + skew))),
            Some(RefusalReason::Expired)
        );
        // Any change to what was signed breaks the signature, checked before the claims.
        let mut forged = certificate.clone();
        forged.claims.expires = UnixMillis(u64::MAX);
        assert_eq!(
            refusal(rule.check(&forged, &node, now)),
            Some(RefusalReason::BadSignature)
        );
        let mut stolen = certificate.clone();
        stolen.claims.agent = id(&key(3));
        assert_eq!(
            refusal(rule.check(&stolen, &id(&key(3)), now)),
            Some(RefusalReason::BadSignature)
        );
    }

    #[test]
    fn bad_claims_and_bad_bytes_are_errors() {
        let authority = key(1);
        let mut bad = claims(id(&key(2)));
        bad.expires = bad.not_before;
        assert!(matches!(
            MembershipCertificate::issue(&authority, bad),
            Err(AdmissionError::InvalidClaims(_))
        ));
        let mut long = claims(id(&key(2)));
        long.cluster = "x".repeat(MAX_CLUSTER_NAME + 1);
        assert!(MembershipCertificate::issue(&authority, long).is_err());
        for bytes in [
            &[][..],
            &[0xff; 10][..],
            &[0u8; MAX_CERTIFICATE_BYTES + 1][..],
        ] {
            assert!(MembershipCertificate::decode(bytes).is_err());
        }
        let certificate = MembershipCertificate::issue(&authority, claims(id(&key(2)))).unwrap();
        let mut trailing = certificate.encode().unwrap();
        trailing.push(0);
        assert!(MembershipCertificate::decode(&trailing).is_err());
        for text in ["", "knhk-cert-v1.", "knhk-cert-v1.!!!", "cert"] {
            assert!(text.parse::<MembershipCertificate>().is_err(), "{text:?}");
        }
    }

    #[test]
    fn reasons_have_stable_code_words() {
        for reason in RefusalReason::ALL {
            assert_eq!(RefusalReason::from_code(reason.as_str()), Some(reason));
            assert_eq!(RefusalReason::ALL[reason.index()], reason);
        }
        assert_eq!(RefusalReason::from_code("nope"), None);
    }
}
