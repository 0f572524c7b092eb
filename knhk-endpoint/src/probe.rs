//! [`PingLayer`]: the smallest useful layer. Every interval it pings one random peer
//! and records the round trip when the pong comes back.
//!
//! It is the template for a new layer (kinds, a timer with a token, a send, a reply, a
//! charge for garbage) and the check that a new layer needs no driver code: the same
//! layer runs under the harness, the simulator and the tokio driver unchanged. The
//! topology layer's RTT measurement grows from it.

use std::collections::HashMap;
use std::time::Duration;

use knhk_security::{RejectReason, SignatureVerifier};
use knhk_types::{AgentId, MessageKind, UnixMillis};

use crate::layer::{Context, Layer};

/// Pings in flight at most; older ones are forgotten (their pongs then count as late).
const MAX_IN_FLIGHT: usize = 64;
/// Round trips kept; older ones are dropped.
const MAX_RECORDED: usize = 1_024;

/// A round trip measured to one peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoundTrip {
    /// The peer that answered.
    pub peer: AgentId,
    /// Ping sent to pong received, on this node's clock, in milliseconds.
    pub rtt_ms: u64,
}

/// Counters of a [`PingLayer`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PingStats {
    /// Pings sent.
    pub pings_sent: u64,
    /// Pings answered.
    pub pongs_sent: u64,
    /// Pongs that matched a ping in flight.
    pub pongs_matched: u64,
    /// Pongs that matched nothing (late, or never asked for): ignored, not charged.
    pub pongs_unmatched: u64,
}

/// Pings one random peer every `interval` and records round trips (see the module docs).
#[derive(Debug)]
pub struct PingLayer {
    interval: Duration,
    token: u64,
    sequence: u64,
    in_flight: HashMap<u64, (AgentId, UnixMillis)>,
    recorded: Vec<RoundTrip>,
    stats: PingStats,
}

impl PingLayer {
    /// A layer that pings every `interval` (at least 1 ms).
    pub fn new(interval: Duration) -> Self {
        Self {
            interval: interval.max(Duration::from_millis(1)),
            token: 0,
            sequence: 0,
            in_flight: HashMap::new(),
            recorded: Vec::new(),
            stats: PingStats::default(),
        }
    }

    /// Round trips measured so far (the latest 1,024).
    pub fn round_trips(&self) -> &[RoundTrip] {
        &self.recorded
    }

    /// Counters so far.
    pub fn stats(&self) -> PingStats {
        self.stats
    }

    fn arm<V: SignatureVerifier>(&mut self, ctx: &mut Context<'_, V>) {
        self.token += 1;
        ctx.set_timer(self.interval, self.token);
    }
}

impl<V: SignatureVerifier + 'static> Layer<V> for PingLayer {
    fn kinds(&self) -> &'static [MessageKind] {
        &[MessageKind::Ping, MessageKind::Pong]
    }

    fn start(&mut self, ctx: &mut Context<'_, V>) {
        self.arm(ctx);
    }

    fn handle_message(
        &mut self,
        ctx: &mut Context<'_, V>,
        from: AgentId,
        kind: MessageKind,
        payload: &[u8],
    ) {
        let Ok(bytes) = <[u8; 8]>::try_from(payload) else {
            // Every ping and pong carries exactly a sequence number: anything else is
            // garbage an honest peer never sends.
            return ctx.charge(from, RejectReason::BadPayload);
        };
        match kind {
            MessageKind::Ping => {
                if ctx.send(from, MessageKind::Pong, payload) {
                    self.stats.pongs_sent += 1;
                }
            }
            _ => match self.in_flight.remove(&u64::from_le_bytes(bytes)) {
                Some((peer, sent)) if peer == from => {
                    self.stats.pongs_matched += 1;
                    if self.recorded.len() == MAX_RECORDED {
                        self.recorded.remove(0);
                    }
                    self.recorded.push(RoundTrip {
                        peer,
                        rtt_ms: ctx.now().0.saturating_sub(sent.0),
                    });
                }
                Some(other) => {
                    // Someone else's pong: put the ping back for its rightful answer.
                    self.in_flight.insert(u64::from_le_bytes(bytes), other);
                    self.stats.pongs_unmatched += 1;
                }
                None => self.stats.pongs_unmatched += 1,
            },
        }
    }

    fn handle_timer(&mut self, ctx: &mut Context<'_, V>, token: u64) {
        if token != self.token {
            return;
        }
        let mut peer = Vec::with_capacity(1);
        ctx.sample_peers(1, &mut peer);
        if let Some(&peer) = peer.first() {
            if self.in_flight.len() >= MAX_IN_FLIGHT {
                self.in_flight.clear();
            }
            self.sequence += 1;
            self.in_flight.insert(self.sequence, (peer, ctx.now()));
            if ctx.send(peer, MessageKind::Ping, &self.sequence.to_le_bytes()) {
                self.stats.pings_sent += 1;
            }
        }
        self.arm(ctx);
    }

    fn approx_memory_bytes(&self) -> usize {
        self.in_flight.capacity() * 56 + self.recorded.capacity() * 40
    }
}
