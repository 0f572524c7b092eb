//! A node's TLS identity is its ed25519 key: a self-signed certificate made from that
//! key, and the server name that names it.

use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use knhk_types::AgentId;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use x509_parser::oid_registry::OID_SIG_ED25519;

use crate::error::TransportError;

/// Application protocol negotiated on every connection.
pub(crate) const ALPN: &[u8] = b"knhk-mesh/2";

/// Certificate and private key presented in every handshake.
pub(crate) struct TlsIdentity {
    pub cert: CertificateDer<'static>,
    pub key: PrivatePkcs8KeyDer<'static>,
}

impl TlsIdentity {
    pub fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key.clone_key())
    }
}

/// A self-signed certificate carrying `key`'s public key, named by its [`AgentId`].
pub(crate) fn self_signed_identity(key: &SigningKey) -> Result<TlsIdentity, TransportError> {
    let setup = |what: &str, error: &dyn std::fmt::Display| {
        TransportError::Setup(format!("{what}: {error}"))
    };
    let pkcs8 = key
        .to_pkcs8_der()
        .map_err(|e| setup("encoding node key as PKCS#8", &e))?;
    let key_der = PrivatePkcs8KeyDer::from(pkcs8.as_bytes().to_vec());
    let key_pair = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&key_der, &rcgen::PKCS_ED25519)
        .map_err(|e| setup("loading node key into rcgen", &e))?;
    let id = AgentId::from_verifying_key(&key.verifying_key());
    let params = rcgen::CertificateParams::new(vec![id.to_string()])
        .map_err(|e| setup("certificate parameters", &e))?;
    let cert = params
        .self_signed(&key_pair)
        .map_err(|e| setup("self-signing certificate", &e))?;
    Ok(TlsIdentity {
        cert: cert.der().clone(),
        key: key_der,
    })
}

/// The TLS server name under which we dial `id`: its 52-character base32 form, a
/// valid DNS label. The server verifier reads the expected key back from it.
pub(crate) fn server_name_for(id: &AgentId) -> String {
    id.to_string()
}

/// The identity a server name stands for, if it is one of ours.
pub(crate) fn agent_id_from_server_name(name: &ServerName<'_>) -> Option<AgentId> {
    match name {
        ServerName::DnsName(dns) => dns.as_ref().parse().ok(),
        _ => None,
    }
}

/// Why a presented certificate does not name an agent.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CertificateKeyError {
    #[error("certificate is not valid X.509 DER")]
    Unparsable,
    #[error("certificate key is not ed25519")]
    NotEd25519,
}

/// The [`AgentId`] whose key a certificate carries. Only the key matters: possession of
/// its private half is proven by the TLS 1.3 CertificateVerify signature.
pub(crate) fn agent_id_from_certificate(
    cert: &CertificateDer<'_>,
) -> Result<AgentId, CertificateKeyError> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|_| CertificateKeyError::Unparsable)?;
    let spki = parsed.public_key();
    if spki.algorithm.algorithm != OID_SIG_ED25519 {
        return Err(CertificateKeyError::NotEd25519);
    }
    let bytes: [u8; 32] = spki
        .subject_public_key
        .data
        .as_ref()
        .try_into()
        .map_err(|_| CertificateKeyError::NotEd25519)?;
    Ok(AgentId::from_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_carries_the_node_key() {
        let key = SigningKey::from_bytes(&[11; 32]);
        let identity = self_signed_identity(&key).unwrap();
        let id = agent_id_from_certificate(&identity.cert).unwrap();
        assert_eq!(id, AgentId::from_verifying_key(&key.verifying_key()));
    }

    #[test]
    fn server_name_round_trips_to_the_id() {
        let id = AgentId::from_verifying_key(&SigningKey::from_bytes(&[12; 32]).verifying_key());
        let name = ServerName::try_from(server_name_for(&id)).unwrap();
        assert_eq!(agent_id_from_server_name(&name), Some(id));
        let ip = ServerName::try_from("127.0.0.1").unwrap();
        assert_eq!(agent_id_from_server_name(&ip), None);
    }

    #[test]
    fn garbage_certificate_is_rejected() {
        let junk = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x00]);
        assert!(matches!(
            agent_id_from_certificate(&junk),
            Err(CertificateKeyError::Unparsable)
        ));
    }

    #[test]
    fn non_ed25519_certificate_is_rejected() {
        let key_pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["x".into()])
            .unwrap()
            .self_signed(&key_pair)
            .unwrap();
        assert!(matches!(
            agent_id_from_certificate(cert.der()),
            Err(CertificateKeyError::NotEd25519)
        ));
    }
}
