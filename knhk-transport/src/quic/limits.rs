//! What one peer may cost the receiving side of a [`crate::QuicTransport`]: bytes held
//! for frames being read or queued (node-wide and per peer), connections per peer,
//! handshakes in progress, and peers blocked after a ban.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use knhk_types::AgentId;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Bytes a frame holds from the budgets until the application has taken it.
#[derive(Debug)]
pub(crate) struct FrameBudget {
    node: Option<OwnedSemaphorePermit>,
    peer: Option<OwnedSemaphorePermit>,
}

impl FrameBudget {
    fn merge(&mut self, node: OwnedSemaphorePermit, peer: OwnedSemaphorePermit) {
        match &mut self.node {
            Some(held) => held.merge(node),
            None => self.node = Some(node),
        }
        match &mut self.peer {
            Some(held) => held.merge(peer),
            None => self.peer = Some(peer),
        }
    }
}

/// The receiving side's budgets.
#[derive(Debug)]
pub(crate) struct InboundLimits {
    node_bytes: Arc<Semaphore>,
    node_capacity: usize,
    peer_bytes: DashMap<AgentId, PeerBudget>,
    per_peer: usize,
    connections: DashMap<AgentId, Vec<quinn::Connection>>,
    max_connections_per_peer: usize,
    handshakes: Arc<Semaphore>,
    blocked: DashMap<AgentId, Instant>,
    /// How long a read may wait for budget before its frame is dropped.
    wait: Duration,
}

/// One peer's share: bytes, and streams being read at once. A stream takes one clone
/// for its whole read, so every permit of a frame comes from the same semaphores even
/// if the table forgets the peer meanwhile.
#[derive(Clone, Debug)]
pub(crate) struct PeerBudget {
    bytes: Arc<Semaphore>,
    readers: Arc<Semaphore>,
}

impl PeerBudget {
    /// A slot to read one stream of this peer (waits while [`READERS_PER_PEER`] are
    /// being read; QUIC flow control holds the rest).
    pub(crate) async fn reader(&self) -> Option<OwnedSemaphorePermit> {
        self.readers.clone().acquire_owned().await.ok()
    }

    /// True if no stream or frame holds any part of it.
    fn idle(&self) -> bool {
        Arc::strong_count(&self.bytes) == 1 && Arc::strong_count(&self.readers) == 1
    }
}

/// Peers remembered in the budget table before idle ones are forgotten.
const PEERS_BEFORE_SWEEP: usize = 1_024;

/// Streams of one peer read at once. Each stream pays chunk by chunk; with at most this
/// many partly read, their frames always fit the peer's budget and complete, instead
/// of many partial frames starving each other.
const READERS_PER_PEER: usize = 8;

/// A reservation could not be made in time: the frame is dropped (gossip repairs it).
#[derive(Debug)]
pub(crate) struct OverBudget;

impl InboundLimits {
    pub(crate) fn new(
        node_bytes: usize,
        per_peer: usize,
        max_connections_per_peer: usize,
        max_handshakes: usize,
        wait: Duration,
    ) -> Self {
        let permits = |n: usize| n.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            node_bytes: Arc::new(Semaphore::new(permits(node_bytes))),
            node_capacity: permits(node_bytes),
            peer_bytes: DashMap::new(),
            per_peer: permits(per_peer),
            connections: DashMap::new(),
            max_connections_per_peer: max_connections_per_peer.max(1),
            handshakes: Arc::new(Semaphore::new(max_handshakes.max(1))),
            blocked: DashMap::new(),
            wait,
        }
    }

    /// An empty reservation, grown chunk by chunk with [`InboundLimits::reserve`].
    pub(crate) fn empty() -> FrameBudget {
        FrameBudget {
            node: None,
            peer: None,
        }
    }

    /// Adds `bytes` to `budget`, from `peer`'s budget and then the node's, waiting at
    /// most the configured time (QUIC flow control holds the sender meanwhile).
    pub(crate) async fn reserve(
        &self,
        share: &PeerBudget,
        bytes: usize,
        budget: &mut FrameBudget,
    ) -> Result<(), OverBudget> {
        let Ok(bytes) = u32::try_from(bytes) else {
            return Err(OverBudget);
        };
        let peer_bytes = share.bytes.clone();
        let reserve = async {
            let peer = peer_bytes.acquire_many_owned(bytes).await.ok()?;
            let node = self
                .node_bytes
                .clone()
                .acquire_many_owned(bytes)
                .await
                .ok()?;
            Some((node, peer))
        };
        match tokio::time::timeout(self.wait, reserve).await {
            Ok(Some((node, peer))) => {
                budget.merge(node, peer);
                Ok(())
            }
            _ => Err(OverBudget),
        }
    }

    /// `peer`'s share of the budget, for one stream's whole read. The table forgets
    /// idle peers once it holds [`PEERS_BEFORE_SWEEP`], so keys that come and go (an
    /// open mesh) cannot grow it without bound.
    pub(crate) fn share(&self, peer: AgentId) -> PeerBudget {
        if self.peer_bytes.len() >= PEERS_BEFORE_SWEEP {
            self.peer_bytes.retain(|_, share| !share.idle());
        }
        self.peer_bytes
            .entry(peer)
            .or_insert_with(|| PeerBudget {
                bytes: Arc::new(Semaphore::new(self.per_peer)),
                readers: Arc::new(Semaphore::new(READERS_PER_PEER)),
            })
            .clone()
    }

    /// Bytes held by frames being read or waiting to be taken, node-wide.
    pub(crate) fn bytes_held(&self) -> usize {
        self.node_capacity - self.node_bytes.available_permits()
    }

    /// A permit to run one inbound handshake, or `None` if too many are in progress.
    pub(crate) fn handshake(&self) -> Option<OwnedSemaphorePermit> {
        self.handshakes.clone().try_acquire_owned().ok()
    }

    /// Registers an accepted connection of `peer`; false (and nothing registered) if
    /// the peer already has the most allowed.
    pub(crate) fn admit_connection(&self, peer: AgentId, conn: &quinn::Connection) -> bool {
        let mut conns = self.connections.entry(peer).or_default();
        conns.retain(|c| c.close_reason().is_none());
        if conns.len() >= self.max_connections_per_peer {
            return false;
        }
        conns.push(conn.clone());
        true
    }

    /// Forgets a connection of `peer` that has ended.
    pub(crate) fn release_connection(&self, peer: AgentId, conn: &quinn::Connection) {
        if let Some(mut conns) = self.connections.get_mut(&peer) {
            conns.retain(|c| c.stable_id() != conn.stable_id() && c.close_reason().is_none());
        }
        self.connections
            .remove_if(&peer, |_, conns| conns.is_empty());
    }

    /// Blocks `peer` for `duration`: its connections are closed now, and new ones (both
    /// ways) are refused until then. Returns the connections to close.
    pub(crate) fn block(&self, peer: AgentId, duration: Duration) -> Vec<quinn::Connection> {
        self.blocked.insert(peer, Instant::now() + duration);
        self.connections
            .remove(&peer)
            .map(|(_, conns)| conns)
            .unwrap_or_default()
    }

    /// True while `peer` is blocked (an expired block is forgotten).
    pub(crate) fn is_blocked(&self, peer: &AgentId) -> bool {
        let now = Instant::now();
        let blocked = self.blocked.get(peer).is_some_and(|until| *until > now);
        if !blocked {
            self.blocked.remove_if(peer, |_, until| *until <= now);
        }
        blocked
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn peer(n: u8) -> AgentId {
        AgentId::from_bytes([n; 32])
    }

    #[tokio::test]
    async fn one_peer_cannot_hold_more_than_its_share() {
        let limits = InboundLimits::new(1_000, 300, 2, 4, Duration::from_millis(20));
        let mut first = InboundLimits::empty();
        limits
            .reserve(&limits.share(peer(1)), 300, &mut first)
            .await
            .unwrap();
        let mut more = InboundLimits::empty();
        assert!(
            limits
                .reserve(&limits.share(peer(1)), 1, &mut more)
                .await
                .is_err(),
            "peer 1 is at its cap"
        );
        let mut other = InboundLimits::empty();
        limits
            .reserve(&limits.share(peer(2)), 300, &mut other)
            .await
            .unwrap();
        assert_eq!(limits.bytes_held(), 600);
        drop(first);
        assert_eq!(limits.bytes_held(), 300, "a taken frame frees its bytes");
        limits
            .reserve(&limits.share(peer(1)), 300, &mut more)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn the_node_budget_bounds_every_peer_together() {
        let limits = InboundLimits::new(500, 300, 2, 4, Duration::from_millis(20));
        let mut a = InboundLimits::empty();
        let mut b = InboundLimits::empty();
        limits
            .reserve(&limits.share(peer(1)), 300, &mut a)
            .await
            .unwrap();
        assert!(
            limits
                .reserve(&limits.share(peer(2)), 300, &mut b)
                .await
                .is_err()
        );
        assert!(limits.bytes_held() <= 500);
    }

    #[tokio::test]
    async fn idle_peers_are_forgotten_and_busy_ones_kept() {
        let limits = InboundLimits::new(1 << 30, 1_000, 1, 1, Duration::from_millis(20));
        let busy = limits.share(peer(0));
        let mut held = InboundLimits::empty();
        limits.reserve(&busy, 10, &mut held).await.unwrap();
        for n in 0..2_000u32 {
            let mut id = [1u8; 32];
            id[..4].copy_from_slice(&n.to_be_bytes());
            let _ = limits.share(AgentId::from_bytes(id));
        }
        assert!(
            limits.peer_bytes.len() <= PEERS_BEFORE_SWEEP + 1,
            "{}",
            limits.peer_bytes.len()
        );
        assert!(
            limits.peer_bytes.contains_key(&peer(0)),
            "a peer holding budget is kept"
        );
        drop(held);
    }

    #[test]
    fn blocks_expire() {
        let limits = InboundLimits::new(10, 10, 1, 1, Duration::from_millis(1));
        limits.block(peer(1), Duration::from_secs(60));
        assert!(limits.is_blocked(&peer(1)));
        limits.block(peer(2), Duration::ZERO);
        assert!(!limits.is_blocked(&peer(2)));
        assert!(limits.handshake().is_some());
    }
}
