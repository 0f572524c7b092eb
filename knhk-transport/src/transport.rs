//! The [`Transport`] trait every implementation provides, what it delivers
//! ([`Inbound`], [`Responder`]) and what it counts ([`TransportStats`]).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use knhk_types::{AgentId, UnixMillis};

use crate::error::TransportError;

/// Moves opaque frames between authenticated peers.
///
/// Implementations: [`crate::QuicTransport`] (production: QUIC with mutual TLS pinned to
/// ed25519 identities) and [`crate::MemoryTransport`] (tests and examples). A frame is
/// at most [`Transport::max_frame_bytes`] long; larger frames fail with
/// [`TransportError::FrameTooLarge`] and nothing is sent.
///
/// Delivery: each frame arrives whole or not at all; frames are not ordered with
/// respect to each other (on QUIC each travels on its own stream, so one lost packet
/// never blocks the others). Protocols above must not rely on arrival order.
pub trait Transport: Send + Sync + 'static {
    /// Our own identity.
    fn local_id(&self) -> AgentId;

    /// The largest frame this transport sends or accepts.
    fn max_frame_bytes(&self) -> usize;

    /// Sends one frame to `to`, connecting first if needed. Returns once the frame is
    /// handed to the connection (not when the peer has processed it).
    fn send(
        &self,
        to: AgentId,
        frame: Bytes,
    ) -> impl Future<Output = Result<(), TransportError>> + Send;

    /// Sends `frame` as a request and waits for the peer's response frame.
    fn request(
        &self,
        to: AgentId,
        frame: Bytes,
    ) -> impl Future<Output = Result<Bytes, TransportError>> + Send;

    /// Waits for the next inbound frame. Returns [`TransportError::Closed`] once the
    /// transport is shut down and every queued frame has been taken.
    fn recv(&self) -> impl Future<Output = Result<Inbound, TransportError>> + Send;

    /// The next inbound frame if one is already queued, without waiting: how a driver
    /// drains a backlog into one burst (the gate then checks its signatures in one
    /// batch). `None` when nothing is queued, the queue is closed, or another caller is
    /// receiving. Default: always `None`.
    fn try_recv(&self) -> Option<Inbound> {
        None
    }

    /// Stops accepting and sending; pending [`Transport::recv`] calls drain what is
    /// queued and then return [`TransportError::Closed`].
    fn close(&self) -> impl Future<Output = ()> + Send;

    /// Counters since this transport started.
    fn stats(&self) -> TransportStats;

    /// Cuts `peer` off for `duration` (the node banned it): its connections are closed
    /// and new ones refused, so a banned peer's frames are not even read. Default:
    /// nothing (transports without connections).
    fn block(&self, peer: AgentId, duration: std::time::Duration) {
        let _ = (peer, duration);
    }
}

/// One frame received from an authenticated peer.
#[derive(Debug)]
pub struct Inbound {
    /// The sender, as proven by the transport (the TLS key, or the in-memory network).
    pub from: AgentId,
    /// The frame.
    pub frame: Bytes,
    /// Our wall clock when the frame had been read in full, before it waited in the
    /// inbound queue: a receiver that falls behind judges the sender's timestamp
    /// against this, so its own backlog is never the sender's fault.
    pub received_at: UnixMillis,
    /// Present if the sender awaits a response (it sent with [`Transport::request`]).
    pub responder: Option<Responder>,
    /// The receive budget this frame holds until it is dropped (QUIC only).
    #[cfg(feature = "quic")]
    pub(crate) _budget: Option<crate::quic::FrameBudgetHold>,
}

/// Answers one request. Dropping it without responding tells the requester
/// [`TransportError::NoResponse`].
#[derive(Debug)]
pub struct Responder {
    pub(crate) inner: ResponderInner,
}

#[derive(Debug)]
pub(crate) enum ResponderInner {
    #[cfg(feature = "memory")]
    Memory {
        reply: tokio::sync::oneshot::Sender<Bytes>,
        max_frame_bytes: usize,
        requester: AgentId,
    },
    #[cfg(feature = "quic")]
    Quic(crate::quic::QuicResponder),
}

impl Responder {
    /// Sends `frame` as the response.
    ///
    /// Errors: [`TransportError::FrameTooLarge`] (the requester is told the request
    /// failed), [`TransportError::ConnectionLost`] if the requester went away.
    pub async fn respond(self, frame: Bytes) -> Result<(), TransportError> {
        match self.inner {
            #[cfg(feature = "memory")]
            ResponderInner::Memory {
                reply,
                max_frame_bytes,
                requester,
            } => {
                if frame.len() > max_frame_bytes {
                    return Err(TransportError::FrameTooLarge {
                        len: frame.len(),
                        max: max_frame_bytes,
                    });
                }
                reply
                    .send(frame)
                    .map_err(|_| TransportError::ConnectionLost {
                        peer: requester,
                        reason: "requester gave up".into(),
                    })
            }
            #[cfg(feature = "quic")]
            ResponderInner::Quic(responder) => responder.respond(frame).await,
        }
    }
}

/// A snapshot of a transport's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// Outbound connections this node opened.
    pub connections_dialed: u64,
    /// Inbound connections this node accepted (handshake passed).
    pub connections_accepted: u64,
    /// Handshakes of connections this node dialled that failed authentication.
    pub handshakes_rejected_outbound: u64,
    /// Handshakes of connections peers opened that failed authentication.
    pub handshakes_rejected_inbound: u64,
    /// Handshakes of connections this node dialled that did not complete for another
    /// reason (timeout, unreachable peer, protocol error).
    pub handshakes_failed_outbound: u64,
    /// Handshakes of connections peers opened that did not complete for another reason.
    pub handshakes_failed_inbound: u64,
    /// Connections open at the time of the snapshot (pooled, at most one per peer; 0
    /// for transports without connections).
    pub connections_open: u64,
    /// Frames handed to the network (including requests and responses).
    pub frames_sent: u64,
    /// Frames delivered to [`Transport::recv`].
    pub frames_received: u64,
    /// Payload bytes of `frames_sent`.
    pub bytes_sent: u64,
    /// Payload bytes of `frames_received`.
    pub bytes_received: u64,
    /// Frames refused for exceeding the maximum size, either direction.
    pub frames_rejected_too_large: u64,
    /// Inbound frames dropped because the receive byte budget had no room in time.
    pub frames_over_budget: u64,
    /// Bytes held right now by inbound frames being read or waiting to be taken.
    pub bytes_buffered: u64,
    /// Peers refused admission after the handshake, by reason.
    pub admissions_refused: AdmissionRefusals,
    /// Peers the registry did not know, admitted on a certificate or the allow-list and
    /// registered.
    pub peers_admitted: u64,
}

/// Admission refusals counted by [`knhk_types::RefusalReason`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AdmissionRefusals([u64; knhk_types::RefusalReason::ALL.len()]);

impl AdmissionRefusals {
    /// Refusals for `reason`.
    pub fn get(&self, reason: knhk_types::RefusalReason) -> u64 {
        self.0.get(reason.index()).copied().unwrap_or(0)
    }

    /// Refusals for every reason together.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
}

/// Lock-free counters behind [`TransportStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub connections_dialed: AtomicU64,
    pub connections_accepted: AtomicU64,
    pub handshakes_rejected_outbound: AtomicU64,
    pub handshakes_rejected_inbound: AtomicU64,
    pub handshakes_failed_outbound: AtomicU64,
    pub handshakes_failed_inbound: AtomicU64,
    pub frames_sent: AtomicU64,
    pub frames_received: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub bytes_received: AtomicU64,
    pub frames_rejected_too_large: AtomicU64,
    pub frames_over_budget: AtomicU64,
    pub admissions_refused: [AtomicU64; knhk_types::RefusalReason::ALL.len()],
    pub peers_admitted: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn sent(&self, len: usize) {
        Self::bump(&self.frames_sent);
        self.bytes_sent.fetch_add(len as u64, Ordering::Relaxed);
    }

    #[cfg(feature = "quic")]
    pub(crate) fn refused(&self, reason: knhk_types::RefusalReason) {
        if let Some(counter) = self.admissions_refused.get(reason.index()) {
            Self::bump(counter);
        }
    }

    pub(crate) fn received(&self, len: usize) {
        Self::bump(&self.frames_received);
        self.bytes_received.fetch_add(len as u64, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> TransportStats {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        TransportStats {
            connections_dialed: get(&self.connections_dialed),
            connections_accepted: get(&self.connections_accepted),
            handshakes_rejected_outbound: get(&self.handshakes_rejected_outbound),
            handshakes_rejected_inbound: get(&self.handshakes_rejected_inbound),
            handshakes_failed_outbound: get(&self.handshakes_failed_outbound),
            handshakes_failed_inbound: get(&self.handshakes_failed_inbound),
            connections_open: 0,
            frames_sent: get(&self.frames_sent),
            frames_received: get(&self.frames_received),
            bytes_sent: get(&self.bytes_sent),
            bytes_received: get(&self.bytes_received),
            frames_rejected_too_large: get(&self.frames_rejected_too_large),
            frames_over_budget: get(&self.frames_over_budget),
            bytes_buffered: 0,
            admissions_refused: AdmissionRefusals(std::array::from_fn(|at| {
                self.admissions_refused
                    .get(at)
                    .map_or(0, |counter| counter.load(Ordering::Relaxed))
            })),
            peers_admitted: get(&self.peers_admitted),
        }
    }
}

/// The queue between a transport's receiving side and [`Transport::recv`]: one
/// receiver, awaited by any number of callers in turn.
#[derive(Debug)]
pub(crate) struct Inbox(tokio::sync::Mutex<tokio::sync::mpsc::Receiver<Inbound>>);

impl Inbox {
    pub(crate) fn new(receiver: tokio::sync::mpsc::Receiver<Inbound>) -> Self {
        Self(tokio::sync::Mutex::new(receiver))
    }

    /// The next frame if one is queued and no other caller holds the queue.
    pub(crate) fn try_next(&self) -> Option<Inbound> {
        self.0.try_lock().ok()?.try_recv().ok()
    }

    /// The next frame, or [`TransportError::Closed`] once every sender is gone and the
    /// queue is drained.
    pub(crate) async fn next(&self) -> Result<Inbound, TransportError> {
        self.0
            .lock()
            .await
            .recv()
            .await
            .ok_or(TransportError::Closed)
    }
}

/// Fails with [`TransportError::FrameTooLarge`] if `len > max`.
pub(crate) fn check_frame_len(len: usize, max: usize) -> Result<(), TransportError> {
    if len > max {
        Err(TransportError::FrameTooLarge { len, max })
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_limit_is_inclusive() {
        assert_eq!(check_frame_len(10, 10), Ok(()));
        assert_eq!(
            check_frame_len(11, 10),
            Err(TransportError::FrameTooLarge { len: 11, max: 10 })
        );
        assert_eq!(check_frame_len(0, 0), Ok(()));
    }

    #[test]
    fn counters_snapshot_what_was_counted() {
        let counters = Counters::default();
        counters.sent(100);
        counters.sent(20);
        counters.received(7);
        Counters::bump(&counters.handshakes_rejected_inbound);
        let stats = counters.snapshot();
        assert_eq!((stats.frames_sent, stats.bytes_sent), (2, 120));
        assert_eq!((stats.frames_received, stats.bytes_received), (1, 7));
        assert_eq!(stats.handshakes_rejected_inbound, 1);
        assert_eq!(stats.connections_dialed, 0);
    }
}
