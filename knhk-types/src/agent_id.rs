//! [`AgentId`]: a node's identity, which is its ed25519 public key.

use std::fmt;
use std::str::FromStr;

use data_encoding::{BASE32_DNSSEC, HEXLOWER_PERMISSIVE};
use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};

use crate::error::ParseError;

/// A node's identity: the 32 bytes of its ed25519 public key.
///
/// The bytes are not checked to be a valid curve point on construction (that costs
/// microseconds and every envelope carries one); [`AgentId::verifying_key`] does the
/// check, and signature verification fails for an invalid point.
///
/// Displayed as 52 lowercase base32 characters (the DNSSEC alphabet, no padding), which
/// is also a valid DNS label, so the transport can name a peer by it in TLS.
/// `{:#}` and [`AgentId::short`] print the first 10 characters for logs.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AgentId([u8; 32]);

impl AgentId {
    /// Length of an identity in bytes.
    pub const LEN: usize = 32;
    /// Length of the base32 text form.
    pub const TEXT_LEN: usize = 52;

    /// Wraps raw public-key bytes. Never fails; see the type docs about validation.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw public-key bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The identity of the holder of `key`.
    pub fn from_verifying_key(key: &VerifyingKey) -> Self {
        Self(key.to_bytes())
    }

    /// Decompresses the key. Returns `None` if the bytes are not a valid ed25519 point.
    pub fn verifying_key(&self) -> Option<VerifyingKey> {
        VerifyingKey::from_bytes(&self.0).ok()
    }

    /// A short printable prefix for logs (10 base32 characters, 50 bits).
    pub fn short(&self) -> ShortAgentId {
        ShortAgentId(*self)
    }
}

impl fmt::Display for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = BASE32_DNSSEC.encode(&self.0);
        if f.alternate() {
            f.write_str(text.get(..10).unwrap_or(&text))
        } else {
            f.write_str(&text)
        }
    }
}

impl fmt::Debug for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AgentId({self:#})")
    }
}

/// Display adapter printing the first 10 base32 characters of an [`AgentId`].
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ShortAgentId(AgentId);

impl fmt::Display for ShortAgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

impl fmt::Debug for ShortAgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for AgentId {
    type Err = ParseError;

    /// Parses the 52-character base32 form (case-insensitive) or 64 hex characters.
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let error = || ParseError::AgentId {
            input: input.to_owned(),
        };
        let decoded = match input.len() {
            Self::TEXT_LEN => BASE32_DNSSEC.decode(input.to_ascii_lowercase().as_bytes()),
            64 => HEXLOWER_PERMISSIVE.decode(input.as_bytes()),
            _ => return Err(error()),
        }
        .map_err(|_| error())?;
        let bytes: [u8; 32] = decoded.try_into().map_err(|_| error())?;
        Ok(Self(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;

    fn id(seed: u8) -> AgentId {
        AgentId::from_verifying_key(&SigningKey::from_bytes(&[seed; 32]).verifying_key())
    }

    #[test]
    fn display_is_52_lowercase_dns_label_characters() {
        let text = id(1).to_string();
        assert_eq!(text.len(), AgentId::TEXT_LEN);
        assert!(
            text.chars()
                .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase())
        );
    }

    #[test]
    fn text_form_parses_back_in_either_case() {
        let original = id(2);
        let text = original.to_string();
        assert_eq!(text.parse::<AgentId>(), Ok(original));
        assert_eq!(text.to_ascii_uppercase().parse::<AgentId>(), Ok(original));
    }

    #[test]
    fn hex_form_parses() {
        let original = id(3);
        let hex: String = original
            .as_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(hex.parse::<AgentId>(), Ok(original));
    }

    #[test]
    fn garbage_is_rejected_with_the_input_named() {
        for bad in ["", "abc", &"z".repeat(52), &"g".repeat(64)] {
            match bad.parse::<AgentId>() {
                Err(ParseError::AgentId { input }) => assert_eq!(input, bad),
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn short_form_is_a_prefix_of_the_full_form() {
        let full = id(4).to_string();
        let short = id(4).short().to_string();
        assert_eq!(short.len(), 10);
        assert!(full.starts_with(&short));
        assert_eq!(format!("{:?}", id(4)), format!("AgentId({short})"));
    }

    #[test]
    fn verifying_key_round_trips_and_rejects_invalid_points() {
        let original = id(5);
        let key = original.verifying_key().expect("valid point");
        assert_eq!(AgentId::from_verifying_key(&key), original);
        // y = 2 is not on the curve (no square root for x); a well-known invalid encoding.
        let mut bad = [0u8; 32];
        bad[0] = 2;
        assert!(AgentId::from_bytes(bad).verifying_key().is_none());
    }
}
