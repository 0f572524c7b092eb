//! rustls verifiers that pin each handshake to an ed25519 [`AgentId`] instead of a CA.

use std::fmt;
use std::sync::Arc;

use knhk_types::AgentId;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error, OtherError, SignatureScheme,
};

use super::identity::{agent_id_from_certificate, agent_id_from_server_name};
use crate::PeerRegistry;

/// Decides which authenticated identities may open inbound connections.
pub trait PeerAuthorizer: Send + Sync + fmt::Debug + 'static {
    /// True if `id` (already proven to hold its key) may connect.
    fn is_authorized(&self, id: &AgentId) -> bool;
}

impl PeerAuthorizer for PeerRegistry {
    /// Only registered peers may connect.
    fn is_authorized(&self, id: &AgentId) -> bool {
        self.contains(id)
    }
}

/// Admits any peer that proves possession of an ed25519 key: for seeds and open meshes
/// where membership is learned after connecting. Peers are still authenticated.
#[derive(Clone, Copy, Debug, Default)]
pub struct AllowAnyPeer;

impl PeerAuthorizer for AllowAnyPeer {
    fn is_authorized(&self, _id: &AgentId) -> bool {
        true
    }
}

#[derive(Debug, thiserror::Error)]
#[error("peer presented key {presented:?}, expected {expected:?}")]
struct KeyMismatch {
    expected: AgentId,
    presented: AgentId,
}

#[derive(Debug, thiserror::Error)]
#[error("peer {0:?} is not authorized to connect")]
struct NotAuthorized(AgentId);

fn reject(error: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(error))))
}

fn presented_id(cert: &CertificateDer<'_>) -> Result<AgentId, Error> {
    agent_id_from_certificate(cert).map_err(reject)
}

/// Only ed25519 identities exist in the mesh.
fn supported_schemes() -> Vec<SignatureScheme> {
    vec![SignatureScheme::ED25519]
}

/// TLS 1.2 is never offered (QUIC requires 1.3); a 1.2 signature is refused.
fn refuse_tls12() -> Result<HandshakeSignatureValid, Error> {
    Err(Error::General("TLS 1.2 is not supported".into()))
}

/// Client side: the server must present exactly the key named by the server name.
#[derive(Debug)]
pub(crate) struct PinnedServerVerifier {
    pub algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let expected = agent_id_from_server_name(server_name).ok_or_else(|| {
            Error::General(format!("server name {server_name:?} is not an agent id"))
        })?;
        let presented = presented_id(end_entity)?;
        if presented != expected {
            return Err(reject(KeyMismatch {
                expected,
                presented,
            }));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        refuse_tls12()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        supported_schemes()
    }
}

/// Server side: a client certificate is mandatory, must carry an ed25519 key, and that
/// key must be admitted by the [`PeerAuthorizer`].
#[derive(Debug)]
pub(crate) struct AuthorizedClientVerifier {
    pub algorithms: WebPkiSupportedAlgorithms,
    pub authorizer: Arc<dyn PeerAuthorizer>,
}

impl ClientCertVerifier for AuthorizedClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let presented = presented_id(end_entity)?;
        if !self.authorizer.is_authorized(&presented) {
            return Err(reject(NotAuthorized(presented)));
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        refuse_tls12()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        supported_schemes()
    }
}
