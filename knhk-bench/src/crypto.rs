//! What the simulated cores sign and verify with: real ed25519, or a documented
//! stand-in for runs too large for a curve operation on every hop.
//!
//! The stand-in signature of `message` by the node with secret seed `s` is
//! SHA-512("knhk sim signature v1\0" ‖ s ‖ message): 64 bytes, like ed25519. The
//! verifier recomputes it from the seed it finds in a keyring shared by the simulator.
//! A node that does not know another node's seed cannot produce its signature, so every
//! forgery the scenarios attempt (entries in someone else's name, flipped bits, wrong
//! signer) is refused exactly as ed25519 would refuse it. It is not cryptography against
//! an adversary who can read the keyring; inside the simulator, none can. Node ids stay
//! the real ed25519 public keys of their seeds in both modes.

use std::collections::HashMap;
use std::sync::Arc;

use knhk_security::{Ed25519Verifier, NodeKey, SignatureVerifier, VerifierStats, VerifyError};
use knhk_types::{AgentId, EnvelopeSigner, Signature};
use serde::Serialize;
use sha2::{Digest, Sha512};

/// Which signatures a simulation uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum CryptoMode {
    /// Real ed25519 on every message (the default).
    #[default]
    Ed25519,
    /// The keyed-hash stand-in (see the module docs).
    Sim,
}

impl CryptoMode {
    /// `"ed25519"` or `"sim"`, as written in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ed25519 => "ed25519",
            Self::Sim => "sim",
        }
    }
}

fn stand_in_signature(seed: &[u8; 32], message: &[u8]) -> Signature {
    let mut hasher = Sha512::new();
    hasher.update(b"knhk sim signature v1\0");
    hasher.update(seed);
    hasher.update(message);
    Signature(hasher.finalize().into())
}

/// A simulated node's signing identity.
#[derive(Clone, Debug)]
pub enum SimSigner {
    /// ed25519.
    Real(NodeKey),
    /// The stand-in, with the node's id and secret seed.
    StandIn {
        /// The node's id (its seed's ed25519 public key).
        id: AgentId,
        /// Its secret seed.
        seed: [u8; 32],
    },
}

impl SimSigner {
    /// The signer for secret `seed` in `mode`.
    pub fn new(mode: CryptoMode, seed: [u8; 32]) -> Self {
        let key = NodeKey::from_seed(seed);
        match mode {
            CryptoMode::Ed25519 => Self::Real(key),
            CryptoMode::Sim => Self::StandIn {
                id: key.agent_id(),
                seed,
            },
        }
    }
}

impl EnvelopeSigner for SimSigner {
    fn agent_id(&self) -> AgentId {
        match self {
            Self::Real(key) => key.agent_id(),
            Self::StandIn { id, .. } => *id,
        }
    }

    fn sign_message(&self, message: &[u8]) -> Signature {
        match self {
            Self::Real(key) => key.sign_message(message),
            Self::StandIn { seed, .. } => stand_in_signature(seed, message),
        }
    }
}

/// Every simulated node's secret seed, by id (stand-in mode only).
#[derive(Debug, Default)]
pub struct Keyring(HashMap<AgentId, [u8; 32]>);

impl Keyring {
    /// A keyring holding `seeds`.
    pub fn new(seeds: impl IntoIterator<Item = [u8; 32]>) -> Self {
        Self(
            seeds
                .into_iter()
                .map(|seed| (NodeKey::from_seed(seed).agent_id(), seed))
                .collect(),
        )
    }
}

/// A simulated node's signature checker.
#[derive(Debug)]
pub enum SimVerifier {
    /// Strict ed25519 behind the usual cache.
    Real(Ed25519Verifier),
    /// The stand-in, checking against the shared keyring.
    StandIn(Arc<Keyring>, VerifierStats),
}

impl SignatureVerifier for SimVerifier {
    fn verify(
        &mut self,
        signer: &AgentId,
        message: &[u8],
        signature: &Signature,
    ) -> Result<(), VerifyError> {
        match self {
            Self::Real(verifier) => verifier.verify(signer, message, signature),
            Self::StandIn(keyring, stats) => {
                let seed = keyring
                    .0
                    .get(signer)
                    .ok_or(VerifyError::InvalidKey(*signer))?;
                if stand_in_signature(seed, message) == *signature {
                    stats.single_verifications += 1;
                    Ok(())
                } else {
                    stats.failures += 1;
                    Err(VerifyError::BadSignature(*signer))
                }
            }
        }
    }

    fn verify_unique(
        &mut self,
        signer: &AgentId,
        message: &[u8],
        signature: &Signature,
    ) -> Result<(), VerifyError> {
        match self {
            Self::Real(verifier) => verifier.verify_unique(signer, message, signature),
            Self::StandIn(..) => self.verify(signer, message, signature),
        }
    }

    fn stats(&self) -> VerifierStats {
        match self {
            Self::Real(verifier) => SignatureVerifier::stats(verifier),
            Self::StandIn(_, stats) => *stats,
        }
    }

    fn memory_bytes(&self) -> usize {
        match self {
            Self::Real(verifier) => verifier.memory_bytes(),
            Self::StandIn(..) => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stand_in_accepts_what_was_signed_and_refuses_the_same_forgeries() {
        let (alice, bob) = ([1u8; 32], [2u8; 32]);
        let keyring = Arc::new(Keyring::new([alice, bob]));
        let signer = SimSigner::new(CryptoMode::Sim, alice);
        let mut verifier = SimVerifier::StandIn(keyring, VerifierStats::default());
        let id = signer.agent_id();
        assert_eq!(
            id,
            NodeKey::from_seed(alice).agent_id(),
            "ids are the real public keys"
        );
        let signature = signer.sign_message(b"hello");
        assert_eq!(verifier.verify(&id, b"hello", &signature), Ok(()));
        assert_eq!(
            verifier.verify(&id, b"hellO", &signature),
            Err(VerifyError::BadSignature(id))
        );
        let mut flipped = signature;
        flipped.0[9] ^= 1;
        assert_eq!(
            verifier.verify(&id, b"hello", &flipped),
            Err(VerifyError::BadSignature(id))
        );
        let bob_id = NodeKey::from_seed(bob).agent_id();
        assert_eq!(
            verifier.verify(&bob_id, b"hello", &signature),
            Err(VerifyError::BadSignature(bob_id))
        );
        let stranger = NodeKey::from_seed([3; 32]).agent_id();
        assert_eq!(
            verifier.verify(&stranger, b"hello", &signature),
            Err(VerifyError::InvalidKey(stranger))
        );
    }
}
