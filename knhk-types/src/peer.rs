//! What a node knows about a peer: [`PeerInfo`], [`HierarchyLevel`], and the
//! [`SeedAddr`] form used to bootstrap.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{AgentId, ParseError, Region, UnixMillis};

/// A node's role in the three-level hierarchy.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub enum HierarchyLevel {
    /// A leaf agent: does the work, gossips within its group.
    #[default]
    Edge,
    /// Merges the state of a group of edges and reports upward.
    Aggregator,
    /// Merges aggregators' state and disseminates global state downward.
    Coordinator,
}

impl HierarchyLevel {
    /// The lowercase name (`edge`, `aggregator`, `coordinator`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Edge => "edge",
            Self::Aggregator => "aggregator",
            Self::Coordinator => "coordinator",
        }
    }
}

impl fmt::Display for HierarchyLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for HierarchyLevel {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "edge" => Ok(Self::Edge),
            "aggregator" => Ok(Self::Aggregator),
            "coordinator" => Ok(Self::Coordinator),
            _ => Err(ParseError::HierarchyLevel {
                input: s.to_owned(),
            }),
        }
    }
}

/// What a node knows about one peer. `Copy`: cloning it never allocates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PeerInfo {
    /// The peer's identity (its ed25519 public key).
    pub id: AgentId,
    /// Where to reach it.
    pub addr: SocketAddr,
    /// The region it says it is in.
    pub region: Region,
    /// Its role in the hierarchy.
    pub level: HierarchyLevel,
    /// When we last heard from it (caller-supplied time; 0 if never).
    pub last_seen: UnixMillis,
}

impl PeerInfo {
    /// An edge peer in the default region, never seen yet.
    pub fn new(id: AgentId, addr: SocketAddr) -> Self {
        Self {
            id,
            addr,
            region: Region::default(),
            level: HierarchyLevel::Edge,
            last_seen: UnixMillis(0),
        }
    }

    /// Same peer in `region`.
    pub fn with_region(mut self, region: Region) -> Self {
        self.region = region;
        self
    }

    /// Same peer at `level`.
    pub fn with_level(mut self, level: HierarchyLevel) -> Self {
        self.level = level;
        self
    }
}

/// A bootstrap seed: a peer named by identity *and* address, written
/// `<agent-id>@<ip:port>`. The identity is required because the transport pins every
/// connection to the key it expects; there is no trust-on-first-use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SeedAddr {
    /// The seed's identity.
    pub id: AgentId,
    /// The seed's address.
    pub addr: SocketAddr,
}

impl SeedAddr {
    /// The seed as a fresh [`PeerInfo`] (edge, default region, never seen).
    pub fn to_peer_info(self) -> PeerInfo {
        PeerInfo::new(self.id, self.addr)
    }
}

impl fmt::Display for SeedAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.id, self.addr)
    }
}

impl FromStr for SeedAddr {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let error = || ParseError::Seed {
            input: s.to_owned(),
        };
        let (id, addr) = s.split_once('@').ok_or_else(error)?;
        Ok(Self {
            id: id.parse().map_err(|_| error())?,
            addr: addr.parse().map_err(|_| error())?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hierarchy_level_text_round_trips() {
        for level in [
            HierarchyLevel::Edge,
            HierarchyLevel::Aggregator,
            HierarchyLevel::Coordinator,
        ] {
            assert_eq!(level.to_string().parse::<HierarchyLevel>(), Ok(level));
        }
        assert_eq!(
            "Coordinator".parse::<HierarchyLevel>(),
            Ok(HierarchyLevel::Coordinator)
        );
        assert!("root".parse::<HierarchyLevel>().is_err());
    }

    #[test]
    fn seed_text_round_trips_and_rejects_missing_parts() {
        let seed = SeedAddr {
            id: AgentId::from_bytes([9; 32]),
            addr: "127.0.0.1:7000".parse().unwrap(),
        };
        assert_eq!(seed.to_string().parse::<SeedAddr>(), Ok(seed));
        assert!("127.0.0.1:7000".parse::<SeedAddr>().is_err());
        assert!(format!("{}@nowhere", seed.id).parse::<SeedAddr>().is_err());
        assert!("abc@127.0.0.1:7000".parse::<SeedAddr>().is_err());
    }

    #[test]
    fn peer_info_postcard_round_trip() {
        let peer = PeerInfo::new(AgentId::from_bytes([1; 32]), "[::1]:9000".parse().unwrap())
            .with_region(Region::new("ap-southeast-1").unwrap())
            .with_level(HierarchyLevel::Aggregator);
        let bytes = postcard::to_allocvec(&peer).unwrap();
        assert_eq!(postcard::from_bytes::<PeerInfo>(&bytes).unwrap(), peer);
    }
}

#[cfg(test)]
mod size_tests {
    #[test]
    fn peer_info_stays_small_and_copy() {
        // Sampling copies PeerInfo by value; keep it within two cache lines.
        assert!(std::mem::size_of::<super::PeerInfo>() <= 128);
    }
}
