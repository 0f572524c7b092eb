//! [`MemoryTransport`]: an in-process network for tests and examples.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use knhk_types::{AgentId, DEFAULT_MAX_FRAME_BYTES};
use tokio::sync::{mpsc, oneshot};

use crate::error::TransportError;
use crate::transport::{
    Counters, Inbound, Inbox, Responder, ResponderInner, Transport, TransportStats, check_frame_len,
};

/// Settings shared by every node of a [`MemoryNetwork`].
#[derive(Clone, Debug)]
pub struct MemoryConfig {
    /// Largest frame accepted. Default [`DEFAULT_MAX_FRAME_BYTES`].
    pub max_frame_bytes: usize,
    /// Frames queued per node before senders wait. Default 4,096.
    pub inbound_queue: usize,
    /// How long [`Transport::request`] waits for a response. Default 10 s.
    pub request_timeout: Duration,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            inbound_queue: 4_096,
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// A set of in-process nodes that can reach each other. The sender of each frame is
/// the `AgentId` the node joined with, so authentication is by construction.
#[derive(Debug)]
pub struct MemoryNetwork {
    config: MemoryConfig,
    nodes: DashMap<AgentId, Endpoint>,
    next_generation: AtomicU64,
}

#[derive(Debug)]
struct Endpoint {
    generation: u64,
    inbox: mpsc::Sender<Inbound>,
    counters: Arc<Counters>,
}

impl MemoryNetwork {
    /// An empty network.
    pub fn new(config: MemoryConfig) -> Arc<Self> {
        Arc::new(Self {
            config,
            nodes: DashMap::new(),
            next_generation: AtomicU64::new(0),
        })
    }

    /// Adds a node named `id`.
    ///
    /// Errors: [`TransportError::Setup`] if a node with that id is already joined.
    pub fn join(self: &Arc<Self>, id: AgentId) -> Result<MemoryTransport, TransportError> {
        let (inbox, receiver) = mpsc::channel(self.config.inbound_queue.max(1));
        let counters = Arc::new(Counters::default());
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        match self.nodes.entry(id) {
            dashmap::Entry::Occupied(_) => {
                return Err(TransportError::Setup(format!(
                    "{id:?} already joined this network"
                )));
            }
            dashmap::Entry::Vacant(slot) => {
                slot.insert(Endpoint {
                    generation,
                    inbox,
                    counters: counters.clone(),
                });
            }
        }
        Ok(MemoryTransport {
            id,
            generation,
            network: self.clone(),
            inbox: Inbox::new(receiver),
            counters,
        })
    }

    /// Removes `id` from the network, as if it crashed: later sends to it fail with
    /// [`TransportError::Unreachable`], and its `recv` returns `Closed` once drained.
    /// Returns `false` if it was not joined.
    pub fn disconnect(&self, id: &AgentId) -> bool {
        self.nodes.remove(id).is_some()
    }

    /// Number of joined nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True if no node is joined.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    fn inbox_of(
        &self,
        to: &AgentId,
    ) -> Result<(mpsc::Sender<Inbound>, Arc<Counters>), TransportError> {
        self.nodes
            .get(to)
            .map(|endpoint| (endpoint.inbox.clone(), endpoint.counters.clone()))
            .ok_or_else(|| unreachable(*to))
    }
}

/// One node's handle on a [`MemoryNetwork`]. Leaves the network when dropped.
#[derive(Debug)]
pub struct MemoryTransport {
    id: AgentId,
    generation: u64,
    network: Arc<MemoryNetwork>,
    inbox: Inbox,
    counters: Arc<Counters>,
}

impl MemoryTransport {
    /// Removes this node from the network (not a later node that rejoined with our id).
    fn leave(&self) {
        self.network.nodes.remove_if(&self.id, |_, endpoint| {
            endpoint.generation == self.generation
        });
    }

    async fn deliver(
        &self,
        to: AgentId,
        frame: Bytes,
        responder: Option<Responder>,
    ) -> Result<(), TransportError> {
        let (inbox, their_counters) = self.network.inbox_of(&to)?;
        let len = frame.len();
        inbox
            .send(Inbound {
                from: self.id,
                frame,
                received_at: knhk_types::UnixMillis::from_system_time(std::time::SystemTime::now()),
                responder,
                #[cfg(feature = "quic")]
                _budget: None,
            })
            .await
            .map_err(|_| unreachable(to))?;
        self.counters.sent(len);
        their_counters.received(len);
        Ok(())
    }
}

impl Transport for MemoryTransport {
    fn local_id(&self) -> AgentId {
        self.id
    }

    fn max_frame_bytes(&self) -> usize {
        self.network.config.max_frame_bytes
    }

    async fn send(&self, to: AgentId, frame: Bytes) -> Result<(), TransportError> {
        check_frame_len(frame.len(), self.max_frame_bytes()).inspect_err(|_| {
            Counters::bump(&self.counters.frames_rejected_too_large);
        })?;
        self.deliver(to, frame, None).await
    }

    async fn request(&self, to: AgentId, frame: Bytes) -> Result<Bytes, TransportError> {
        check_frame_len(frame.len(), self.max_frame_bytes())?;
        let (reply, response) = oneshot::channel();
        let responder = Responder {
            inner: ResponderInner::Memory {
                reply,
                max_frame_bytes: self.max_frame_bytes(),
                requester: self.id,
            },
        };
        self.deliver(to, frame, Some(responder)).await?;
        let timeout = self.network.config.request_timeout;
        match tokio::time::timeout(timeout, response).await {
            Ok(Ok(frame)) => {
                self.counters.received(frame.len());
                Ok(frame)
            }
            Ok(Err(_)) => Err(TransportError::NoResponse(to)),
            Err(_) => Err(TransportError::Timeout {
                peer: to,
                operation: "request",
                after: timeout,
            }),
        }
    }

    async fn recv(&self) -> Result<Inbound, TransportError> {
        self.inbox.next().await
    }

    fn try_recv(&self) -> Option<Inbound> {
        self.inbox.try_next()
    }

    async fn close(&self) {
        self.leave();
    }

    fn stats(&self) -> TransportStats {
        self.counters.snapshot()
    }
}

impl Drop for MemoryTransport {
    fn drop(&mut self) {
        self.leave();
    }
}

fn unreachable(peer: AgentId) -> TransportError {
    TransportError::Unreachable {
        peer,
        addr: None,
        reason: "not joined to this in-memory network".into(),
    }
}
