//! [`Region`]: the geographic or logical region a node belongs to.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::ParseError;

/// A region name such as `us-east-1`: 1 to [`Region::MAX_LEN`] characters of
/// `[A-Za-z0-9._-]`, stored inline so that `Region` (and so [`crate::PeerInfo`]) is
/// `Copy` and never allocates.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Region {
    len: u8,
    bytes: [u8; Region::MAX_LEN],
}

impl Region {
    /// Longest accepted region name, in bytes.
    pub const MAX_LEN: usize = 31;

    /// Validates and stores a region name.
    ///
    /// Returns [`ParseError::Region`] for an empty name, one longer than
    /// [`Region::MAX_LEN`], or one with a character outside `[A-Za-z0-9._-]`.
    pub fn new(name: &str) -> Result<Self, ParseError> {
        let valid_char = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-');
        if name.is_empty() || name.len() > Self::MAX_LEN || !name.bytes().all(|b| valid_char(&b)) {
            return Err(ParseError::Region {
                input: name.to_owned(),
                max: Self::MAX_LEN,
            });
        }
        let mut bytes = [0u8; Self::MAX_LEN];
        bytes[..name.len()].copy_from_slice(name.as_bytes());
        Ok(Self {
            len: name.len() as u8,
            bytes,
        })
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        // Construction admits ASCII only, so this never takes the fallback.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or_default()
    }
}

impl Default for Region {
    /// The region `default`, for single-region deployments.
    fn default() -> Self {
        let mut bytes = [0u8; Self::MAX_LEN];
        bytes[..7].copy_from_slice(b"default");
        Self { len: 7, bytes }
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Region({})", self.as_str())
    }
}

impl FromStr for Region {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl Serialize for Region {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Region {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = <&str>::deserialize(deserializer)?;
        Region::new(name).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_cloud_style_names() {
        for name in ["us-east-1", "eu-west-1", "ap-southeast-1", "r0", "a.b_c"] {
            assert_eq!(
                Region::new(name).map(|r| r.to_string()),
                Ok(name.to_owned())
            );
        }
    }

    #[test]
    fn rejects_empty_long_and_odd_names() {
        for name in ["", &"x".repeat(32), "us east", "ü", "a/b"] {
            assert!(Region::new(name).is_err(), "{name:?} accepted");
        }
        assert!(Region::new(&"x".repeat(31)).is_ok());
    }

    #[test]
    fn default_is_named_default() {
        assert_eq!(Region::default().as_str(), "default");
        assert_eq!(Region::default(), Region::new("default").unwrap());
    }

    #[test]
    fn postcard_round_trip_validates_on_the_way_in() {
        let region = Region::new("eu-west-1").unwrap();
        let bytes = postcard::to_allocvec(&region).unwrap();
        assert_eq!(postcard::from_bytes::<Region>(&bytes).unwrap(), region);
        let bad = postcard::to_allocvec("no spaces allowed").unwrap();
        assert!(postcard::from_bytes::<Region>(&bad).is_err());
    }
}
