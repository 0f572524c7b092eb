//! [`QuicTransport`]: QUIC over quinn with mutual TLS pinned to ed25519 identities.
//!
//! Each node presents a self-signed certificate made from its own ed25519 key. A dialer
//! names the peer it expects by the peer's [`AgentId`] (as the TLS server name) and
//! refuses any other key; an acceptor requires a client certificate and admits the key
//! only if its [`PeerAuthorizer`] does (by default: registered peers). No CA is involved.
//!
//! After the handshake the acceptor sends a one-frame *welcome* on its first
//! unidirectional stream. In TLS 1.3 a client finishes its handshake before the server
//! has checked the client certificate, so the dialer waits for the welcome before it
//! treats the connection as usable: a refused client sees
//! [`TransportError::HandshakeRejected`] from its first `send`, never a silent loss.
//!
//! Frames: one unidirectional stream per [`Transport::send`] (the stream end delimits
//! the frame), one bidirectional stream per [`Transport::request`]. The pool keeps one
//! connection per peer, reuses connections the peer opened to us, and re-dials once
//! when a pooled connection turns out to be dead.

mod admission;
mod backoff;
mod identity;
mod limits;
mod verify;

use std::net::SocketAddr;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use ed25519_dalek::SigningKey;
use knhk_telemetry::semconv;
use knhk_telemetry::semconv::value::transport_handshake_outcome as handshake_outcome;
use knhk_types::{
    AdmissionRule, AgentId, DEFAULT_MAX_FRAME_BYTES, MembershipCertificate, PeerInfo,
    RefusalReason, UnixMillis,
};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{ConnectionError, ReadError, ReadToEndError, VarInt};
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinHandle;
use tracing::Instrument as _;

pub use admission::AllowList;
pub use verify::{AllowAnyPeer, PeerAuthorizer};

use crate::error::TransportError;
use crate::transport::{
    Counters, Inbound, Inbox, Responder, ResponderInner, Transport, TransportStats, check_frame_len,
};
use crate::{AddressBook, PeerRegistry};
use admission::{ADMISSION_REFUSED, Admitted, Hello, MAX_HELLO_BYTES};
use backoff::{Refusal, RefusalBackoff};
use identity::{ALPN, agent_id_from_certificate, self_signed_identity, server_name_for};
pub(crate) use limits::FrameBudget as FrameBudgetHold;
use limits::FrameBudget;
use limits::InboundLimits;
use verify::{AuthorizedClientVerifier, PinnedServerVerifier};

/// Stream error code: the frame exceeded the receiver's maximum.
const FRAME_TOO_LARGE: VarInt = VarInt::from_u32(0x4b01);
/// Stream error code: the request was dropped without a response.
const NO_RESPONSE: VarInt = VarInt::from_u32(0x4b02);
/// First frame an acceptor sends: proof that it accepted our certificate.
const WELCOME: &[u8] = b"knhk-mesh welcome v2";
/// Stream stop code: the receiver's byte budget had no room for the frame in time.
const OVER_BUDGET: VarInt = VarInt::from_u32(0x4b03);
/// Connection close code: the peer is serving a ban.
const BLOCKED: u32 = 0x4b04;
/// Connection close code: the peer already holds its most connections.
const TOO_MANY_CONNECTIONS: u32 = 0x4b05;

/// Who may open inbound connections.
///
/// Under [`InboundPolicy::Certified`] and [`InboundPolicy::AllowList`] a peer the
/// registry does not know is admitted on what it presents after the TLS handshake, and
/// is then registered at the address it connected from (with the region and role its
/// certificate names), so the node can answer it and gossip with it. A refused peer's
/// dial fails with [`TransportError::AdmissionRefused`] naming the reason, and the
/// refusal is counted in [`TransportStats::admissions_refused`].
#[derive(Clone, Debug, Default)]
pub enum InboundPolicy {
    /// Only peers in the registry (the default: membership is explicit).
    #[default]
    RegisteredPeers,
    /// Any peer that proves possession of an ed25519 key (seeds, open meshes).
    AnyAuthenticatedPeer,
    /// Peers presenting a membership certificate the rule accepts, and registered
    /// peers. A certified peer is deregistered, and its connection closed, when its
    /// certificate expires (revocation by expiry).
    Certified(Arc<AdmissionRule>),
    /// Peers on the list (which can change while the node runs), and registered peers.
    AllowList(Arc<AllowList>),
    /// A custom rule, decided at the TLS layer.
    Custom(Arc<dyn PeerAuthorizer>),
}

/// Settings of a [`QuicTransport`]. `Default` binds an ephemeral loopback port.
#[derive(Clone, Debug)]
pub struct QuicConfig {
    /// Local UDP address. Default `127.0.0.1:0` (an ephemeral port).
    pub bind_addr: SocketAddr,
    /// Largest frame sent or accepted. Default [`DEFAULT_MAX_FRAME_BYTES`] (1 MiB).
    pub max_frame_bytes: usize,
    /// Handshake deadline, including the welcome. Default 5 s.
    pub connect_timeout: Duration,
    /// A connection with no traffic for this long is closed. Default 30 s.
    pub idle_timeout: Duration,
    /// Keep-alive ping interval (must be below `idle_timeout`). Default 10 s.
    pub keep_alive_interval: Duration,
    /// Deadline for one `send`, including any dial. Default 10 s.
    pub send_timeout: Duration,
    /// Deadline for the peer to grant a new stream on an open connection. A peer that
    /// never grants one must not hold a send for the whole `send_timeout`. Default 1 s.
    pub stream_open_timeout: Duration,
    /// Deadline for one `request`, including any dial. Default 10 s.
    pub request_timeout: Duration,
    /// Concurrent inbound unidirectional streams per connection (sends beyond it wait).
    /// Default 256.
    pub max_concurrent_uni_streams: u32,
    /// Concurrent inbound bidirectional streams (requests) per connection. Default 64.
    pub max_concurrent_bidi_streams: u32,
    /// Bytes held node-wide by inbound frames being read or waiting for
    /// [`Transport::recv`]. Reads wait for budget (QUIC flow control holds the
    /// senders) and a frame that cannot get it within `budget_wait` is dropped.
    /// Default 64 MiB.
    pub inbound_bytes: usize,
    /// The part of `inbound_bytes` one peer may hold; it also caps each connection's
    /// QUIC receive window. Default 8 MiB.
    pub inbound_bytes_per_peer: usize,
    /// How long a read waits for budget before its frame is dropped. Default 1 s.
    pub budget_wait: Duration,
    /// Inbound connections one peer may hold open at once. Default 4.
    pub max_connections_per_peer: usize,
    /// Inbound handshakes in progress at once; more are refused at once. Default 256.
    pub max_pending_handshakes: usize,
    /// Frames queued for [`Transport::recv`] before the network is back-pressured.
    /// Default 4,096.
    pub inbound_queue: usize,
    /// Who may connect to us.
    pub inbound_policy: InboundPolicy,
    /// The membership certificate this node presents when it dials, for peers that
    /// admit by certificate. Default none.
    pub credentials: Option<MembershipCertificate>,
}

impl Default for QuicConfig {
    fn default() -> Self {
        Self {
            bind_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            connect_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
            keep_alive_interval: Duration::from_secs(10),
            send_timeout: Duration::from_secs(10),
            stream_open_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(10),
            max_concurrent_uni_streams: 256,
            max_concurrent_bidi_streams: 64,
            inbound_bytes: 64 << 20,
            inbound_bytes_per_peer: 8 << 20,
            budget_wait: Duration::from_secs(1),
            max_connections_per_peer: 4,
            max_pending_handshakes: 256,
            inbound_queue: 4_096,
            inbound_policy: InboundPolicy::default(),
            credentials: None,
        }
    }
}

/// A QUIC endpoint that both dials and accepts, with a pool of one connection per peer.
///
/// Addresses come from the shared [`PeerRegistry`]: `send(to, ..)` dials the address
/// registered for `to` and accepts only `to`'s key. Must be created inside a tokio
/// runtime. Dropping it closes the endpoint.
#[derive(Debug)]
pub struct QuicTransport {
    shared: Arc<Shared>,
    inbox: Inbox,
    accept_task: JoinHandle<()>,
}

#[derive(Debug)]
struct Shared {
    local_id: AgentId,
    endpoint: quinn::Endpoint,
    client_config: quinn::ClientConfig,
    registry: Arc<PeerRegistry>,
    /// Dial addresses of members learned by gossip (never an admission).
    addresses: Arc<AddressBook>,
    config: QuicConfig,
    pool: DashMap<AgentId, Arc<Mutex<Option<quinn::Connection>>>>,
    counters: Counters,
    /// Cloned into every connection task; taken out by `close`, so that `recv` reports
    /// `Closed` once those tasks end.
    inbound_tx: std::sync::Mutex<Option<mpsc::Sender<Inbound>>>,
    /// What one peer may cost the receiving side.
    limits: InboundLimits,
    /// Peers registered on admission by certificate, with the latest expiry among their
    /// certificates: deregistered when it passes.
    certified_until: DashMap<AgentId, UnixMillis>,
    /// Peers that refused our handshake, left alone for a doubling wait.
    refusals: RefusalBackoff,
}

impl QuicTransport {
    /// Binds a UDP socket and starts accepting connections.
    ///
    /// Errors: [`TransportError::Setup`] if the key cannot be turned into a certificate,
    /// the TLS or QUIC configuration is invalid (for example `keep_alive_interval` not
    /// below `idle_timeout`), or the address cannot be bound.
    pub fn bind(
        key: &SigningKey,
        registry: Arc<PeerRegistry>,
        config: QuicConfig,
    ) -> Result<Self, TransportError> {
        let local_id = AgentId::from_verifying_key(&key.verifying_key());
        if registry.self_id() != local_id {
            return Err(TransportError::Setup(format!(
                "registry belongs to {:?}, key to {local_id:?}",
                registry.self_id()
            )));
        }
        let authorizer: Arc<dyn PeerAuthorizer> = match &config.inbound_policy {
            InboundPolicy::RegisteredPeers => registry.clone(),
            // Decided after the handshake, on what the peer presents.
            InboundPolicy::AnyAuthenticatedPeer
            | InboundPolicy::Certified(_)
            | InboundPolicy::AllowList(_) => Arc::new(AllowAnyPeer),
            InboundPolicy::Custom(custom) => custom.clone(),
        };
        let (server_config, client_config) = quic_configs(key, authorizer, &config)?;
        let endpoint = quinn::Endpoint::server(server_config, config.bind_addr)
            .map_err(|e| TransportError::Setup(format!("binding {}: {e}", config.bind_addr)))?;
        let (inbound_tx, inbound_rx) = mpsc::channel(config.inbound_queue.max(1));
        let limits = InboundLimits::new(
            config.inbound_bytes,
            config.inbound_bytes_per_peer,
            config.max_connections_per_peer,
            config.max_pending_handshakes,
            config.budget_wait,
        );
        let shared = Arc::new(Shared {
            limits,
            local_id,
            endpoint,
            client_config,
            registry,
            addresses: Arc::new(AddressBook::default()),
            config,
            pool: DashMap::new(),
            counters: Counters::default(),
            inbound_tx: std::sync::Mutex::new(Some(inbound_tx)),
            certified_until: DashMap::new(),
            refusals: RefusalBackoff::default(),
        });
        let accept_task = tokio::spawn(accept_loop(shared.clone()));
        Ok(Self {
            shared,
            inbox: Inbox::new(inbound_rx),
            accept_task,
        })
    }

    /// The book of dial addresses this transport falls back on for a peer that is not
    /// registered: whoever learns members by gossip (the topology layer's driver)
    /// writes to it. Being in it admits no one; dialing an address from it is safe
    /// because the handshake pins the server's key to the id dialed.
    pub fn address_book(&self) -> Arc<AddressBook> {
        self.shared.addresses.clone()
    }

    /// The bound UDP address (with the real port if `0` was asked for).
    ///
    /// Errors: [`TransportError::Setup`] if the socket cannot report its address.
    pub fn local_addr(&self) -> Result<SocketAddr, TransportError> {
        self.shared
            .endpoint
            .local_addr()
            .map_err(|e| TransportError::Setup(format!("reading local address: {e}")))
    }

    /// The registry this transport resolves and authorizes peers with.
    pub fn registry(&self) -> &Arc<PeerRegistry> {
        &self.shared.registry
    }

    /// Number of live pooled connections (at most one per peer).
    pub fn pooled_connections(&self) -> usize {
        self.shared
            .pool
            .iter()
            .filter(|slot| {
                slot.value()
                    .try_lock()
                    .map(|conn| conn.as_ref().is_some_and(|c| c.close_reason().is_none()))
                    .unwrap_or(true)
            })
            .count()
    }
}

impl Transport for QuicTransport {
    fn local_id(&self) -> AgentId {
        self.shared.local_id
    }

    fn max_frame_bytes(&self) -> usize {
        self.shared.config.max_frame_bytes
    }

    async fn send(&self, to: AgentId, frame: Bytes) -> Result<(), TransportError> {
        let shared = &self.shared;
        check_frame_len(frame.len(), shared.config.max_frame_bytes).inspect_err(|_| {
            Counters::bump(&shared.counters.frames_rejected_too_large);
        })?;
        let after = shared.config.send_timeout;
        let open_within = shared.config.stream_open_timeout;
        let attempt = shared.with_connection(to, |conn| {
            let frame = frame.clone();
            async move {
                let mut stream = tokio::time::timeout(open_within, conn.open_uni())
                    .await
                    .map_err(|_| "the peer granted no stream in time".to_string())?
                    .map_err(|e| e.to_string())?;
                stream.write_all(&frame).await.map_err(|e| e.to_string())?;
                stream.finish().map_err(|e| e.to_string())
            }
        });
        match tokio::time::timeout(after, attempt).await {
            Ok(result) => result.inspect(|()| shared.counters.sent(frame.len())),
            Err(_) => Err(TransportError::Timeout {
                peer: to,
                operation: "send",
                after,
            }),
        }
    }

    async fn request(&self, to: AgentId, frame: Bytes) -> Result<Bytes, TransportError> {
        let shared = &self.shared;
        let max = shared.config.max_frame_bytes;
        check_frame_len(frame.len(), max)?;
        let after = shared.config.request_timeout;
        let open_within = shared.config.stream_open_timeout;
        let attempt = async {
            let (mut send, mut recv) = shared
                .with_connection(to, |conn| async move {
                    tokio::time::timeout(open_within, conn.open_bi())
                        .await
                        .map_err(|_| "the peer granted no stream in time".to_string())?
                        .map_err(|e| e.to_string())
                })
                .await?;
            let lost = |reason: String| TransportError::ConnectionLost { peer: to, reason };
            send.write_all(&frame).await.map_err(|e| match e {
                // The receiver's stream window is one of its frames: it may refuse an
                // oversized request while we are still writing it.
                quinn::WriteError::Stopped(code) if code == FRAME_TOO_LARGE => {
                    TransportError::FrameTooLarge {
                        len: frame.len(),
                        max,
                    }
                }
                quinn::WriteError::Stopped(code) if code == OVER_BUDGET => {
                    lost("the peer's receive budget was full".into())
                }
                other => lost(other.to_string()),
            })?;
            send.finish().map_err(|e| lost(e.to_string()))?;
            shared.counters.sent(frame.len());
            let response = recv.read_to_end(max).await.map_err(|e| match e {
                ReadToEndError::TooLong => TransportError::FrameTooLarge { len: max + 1, max },
                ReadToEndError::Read(ReadError::Reset(code)) if code == FRAME_TOO_LARGE => {
                    TransportError::FrameTooLarge {
                        len: frame.len(),
                        max,
                    }
                }
                ReadToEndError::Read(ReadError::Reset(code)) if code == NO_RESPONSE => {
                    TransportError::NoResponse(to)
                }
                ReadToEndError::Read(ReadError::Reset(code)) if code == OVER_BUDGET => {
                    lost("the peer's receive budget was full".into())
                }
                other => lost(other.to_string()),
            })?;
            shared.counters.received(response.len());
            Ok(Bytes::from(response))
        };
        tokio::time::timeout(after, attempt)
            .await
            .unwrap_or(Err(TransportError::Timeout {
                peer: to,
                operation: "request",
                after,
            }))
    }

    async fn recv(&self) -> Result<Inbound, TransportError> {
        self.inbox.next().await
    }

    fn try_recv(&self) -> Option<Inbound> {
        self.inbox.try_next()
    }

    async fn close(&self) {
        self.accept_task.abort();
        self.shared
            .inbound_tx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        self.shared.endpoint.close(VarInt::from_u32(0), b"shutdown");
        let _ =
            tokio::time::timeout(Duration::from_secs(1), self.shared.endpoint.wait_idle()).await;
        self.shared.pool.clear();
    }

    fn block(&self, peer: AgentId, duration: Duration) {
        for conn in self.shared.limits.block(peer, duration) {
            conn.close(VarInt::from_u32(BLOCKED), b"banned");
        }
        if let Some(slot) = self.shared.pool.get(&peer).map(|slot| slot.clone())
            && let Ok(mut pooled) = slot.try_lock()
            && let Some(conn) = pooled.take()
        {
            conn.close(VarInt::from_u32(BLOCKED), b"banned");
        }
        tracing::info!(peer = %peer.short(), ?duration, "blocked after a ban");
    }

    fn stats(&self) -> TransportStats {
        TransportStats {
            connections_open: self.pooled_connections() as u64,
            bytes_buffered: self.shared.limits.bytes_held() as u64,
            ..self.shared.counters.snapshot()
        }
    }
}

impl Drop for QuicTransport {
    fn drop(&mut self) {
        self.accept_task.abort();
        self.shared.endpoint.close(VarInt::from_u32(0), b"dropped");
    }
}

impl Shared {
    /// Runs `op` on the pooled connection to `peer`, dialing if needed. If `op` fails
    /// on a connection that was already pooled (it may have died quietly), the
    /// connection is evicted and `op` is retried once on a fresh one.
    async fn with_connection<T, F, Fut>(
        self: &Arc<Self>,
        peer: AgentId,
        op: F,
    ) -> Result<T, TransportError>
    where
        F: Fn(quinn::Connection) -> Fut,
        Fut: std::future::Future<Output = Result<T, String>>,
    {
        let (conn, fresh) = self.connection_to(peer).await?;
        match op(conn.clone()).await {
            Ok(value) => Ok(value),
            Err(_) if !fresh => {
                self.evict(peer, &conn).await;
                let (conn, _) = self.connection_to(peer).await?;
                op(conn)
                    .await
                    .map_err(|reason| TransportError::ConnectionLost { peer, reason })
            }
            Err(reason) => Err(TransportError::ConnectionLost { peer, reason }),
        }
    }

    /// The pooled connection to `peer`, and whether it was dialed just now.
    async fn connection_to(
        self: &Arc<Self>,
        peer: AgentId,
    ) -> Result<(quinn::Connection, bool), TransportError> {
        let slot = match self.pool.get(&peer) {
            Some(slot) => slot.clone(),
            None => self.pool.entry(peer).or_default().clone(),
        };
        let mut pooled = slot.lock().await;
        if let Some(conn) = pooled.as_ref().filter(|conn| conn.close_reason().is_none()) {
            return Ok((conn.clone(), false));
        }
        let conn = self.dial(peer).await?;
        *pooled = Some(conn.clone());
        drop(pooled);
        tokio::spawn(serve_connection(self.clone(), conn.clone(), peer));
        Ok((conn, true))
    }

    async fn evict(&self, peer: AgentId, dead: &quinn::Connection) {
        if let Some(slot) = self.pool.get(&peer).map(|slot| slot.clone()) {
            let mut pooled = slot.lock().await;
            if pooled
                .as_ref()
                .is_some_and(|conn| conn.stable_id() == dead.stable_id())
            {
                *pooled = None;
            }
        }
    }

    /// Connects to `peer` at its registered address and waits for its welcome, inside a
    /// `knhk.transport.handshake` span that records the outcome.
    async fn dial(&self, peer: AgentId) -> Result<quinn::Connection, TransportError> {
        // No address, no handshake: not a handshake failure.
        if self.dial_addr(&peer).is_none() {
            return Err(TransportError::UnknownPeer(peer));
        }
        if self.limits.is_blocked(&peer) {
            return Err(TransportError::Unreachable {
                peer,
                addr: None,
                reason: "blocked after a ban".into(),
            });
        }
        // A peer that refused us lately would refuse again: no handshake until its
        // wait ends (the refusal is the answer).
        self.refusals.check(&peer, tokio::time::Instant::now())?;
        let span = tracing::info_span!(
            semconv::span::TRANSPORT_HANDSHAKE,
            { semconv::attribute::MESH_PEER_ID } = %peer,
            { semconv::attribute::TRANSPORT_HANDSHAKE_OUTCOME } = tracing::field::Empty,
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
        );
        // If this future is dropped mid-dial, the span still ends with an outcome.
        let mut outcome = HandshakeOutcome {
            span: span.clone(),
            outcome: handshake_outcome::ABANDONED,
        };
        let result = self.handshake(peer).instrument(span).await;
        outcome.outcome = match &result {
            Ok(_) => handshake_outcome::ESTABLISHED,
            Err(TransportError::HandshakeRejected { .. }) => handshake_outcome::REJECTED,
            Err(_) => {
                Counters::bump(&self.counters.handshakes_failed_outbound);
                handshake_outcome::FAILED
            }
        };
        result
    }

    /// Where to dial `peer`: its registered address, else the address book's.
    fn dial_addr(&self, peer: &AgentId) -> Option<SocketAddr> {
        self.registry
            .lookup(peer)
            .map(|info| info.addr)
            .or_else(|| self.addresses.get(peer))
    }

    async fn handshake(&self, peer: AgentId) -> Result<quinn::Connection, TransportError> {
        let addr = self
            .dial_addr(&peer)
            .ok_or(TransportError::UnknownPeer(peer))?;
        let unreachable = |reason: String| TransportError::Unreachable {
            peer,
            addr: Some(addr),
            reason,
        };
        let connecting = self
            .endpoint
            .connect_with(self.client_config.clone(), addr, &server_name_for(&peer))
            .map_err(|e| unreachable(e.to_string()))?;
        let after = self.config.connect_timeout;
        let hello = Hello {
            credentials: self.config.credentials.clone(),
        }
        .encode();
        let handshake = async {
            let conn = connecting.await.map_err(DialFailure::Connection)?;
            // The hello goes first; the acceptor decides on it before its welcome.
            let said = async {
                let mut stream = conn.open_uni().await?;
                stream.write_all(&hello).await?;
                stream.finish()?;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
            };
            if let Err(error) = said.await {
                // A refusal can close the connection while we write: report that.
                if let Some(close) = conn.close_reason() {
                    return Err(DialFailure::Connection(close));
                }
                return Err(DialFailure::Protocol(format!("sending hello: {error}")));
            }
            let mut welcome = conn.accept_uni().await.map_err(DialFailure::Connection)?;
            let greeting = welcome
                .read_to_end(WELCOME.len())
                .await
                .map_err(|e| match e {
                    ReadToEndError::Read(ReadError::ConnectionLost(lost)) => {
                        DialFailure::Connection(lost)
                    }
                    other => DialFailure::Protocol(format!("reading welcome: {other}")),
                })?;
            if greeting != WELCOME {
                return Err(DialFailure::Protocol(
                    "peer did not send the knhk welcome".into(),
                ));
            }
            Ok(conn)
        };
        let result =
            tokio::time::timeout(after, handshake)
                .await
                .map_err(|_| TransportError::Timeout {
                    peer,
                    operation: "connect",
                    after,
                })?;
        let result = result.map_err(|failure| match failure {
            DialFailure::Connection(error) => match refusal_of(&error) {
                Some(reason) => DialFailure::Refused(reason),
                None => DialFailure::Connection(error),
            },
            other => other,
        });
        match result {
            Ok(conn) => {
                Counters::bump(&self.counters.connections_dialed);
                self.refusals.connected(&peer);
                tracing::debug!(peer = %peer.short(), addr = %addr, "connected");
                Ok(conn)
            }
            Err(DialFailure::Refused(reason)) => {
                Counters::bump(&self.counters.handshakes_rejected_outbound);
                let now = tokio::time::Instant::now();
                if self.refusals.refused(peer, now, Refusal::Admission(reason)) {
                    tracing::warn!(peer = %peer.short(), addr = %addr, %reason, "admission refused (retrying with a doubling wait, up to 30 s)");
                } else {
                    tracing::debug!(peer = %peer.short(), addr = %addr, %reason, "admission refused");
                }
                Err(TransportError::AdmissionRefused { peer, reason })
            }
            Err(DialFailure::Connection(error)) if is_handshake_rejection(&error) => {
                Counters::bump(&self.counters.handshakes_rejected_outbound);
                let reason = error.to_string();
                let now = tokio::time::Instant::now();
                if self
                    .refusals
                    .refused(peer, now, Refusal::Handshake(reason.clone()))
                {
                    tracing::warn!(peer = %peer.short(), addr = %addr, %error, "handshake rejected (retrying with a doubling wait, up to 30 s)");
                } else {
                    tracing::debug!(peer = %peer.short(), addr = %addr, %error, "handshake rejected");
                }
                Err(TransportError::HandshakeRejected { peer, reason })
            }
            Err(DialFailure::Connection(error)) => Err(unreachable(error.to_string())),
            Err(DialFailure::Protocol(reason)) => Err(unreachable(reason)),
        }
    }

    fn inbound_sender(&self) -> Option<mpsc::Sender<Inbound>> {
        self.inbound_tx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Puts an accepted connection in the pool unless a live one is already there (or
    /// being dialed): both sides then send over the connection the first one opened.
    fn adopt(&self, peer: AgentId, conn: &quinn::Connection) {
        self.refusals.connected(&peer);
        let slot = self.pool.entry(peer).or_default().clone();
        if let Ok(mut pooled) = slot.try_lock()
            && pooled.as_ref().is_none_or(|c| c.close_reason().is_some())
        {
            *pooled = Some(conn.clone());
        }
    }

    /// Forgets `conn` if it is the pooled connection to `peer` (it has closed).
    fn forget(&self, peer: AgentId, conn: &quinn::Connection) {
        let Some(slot) = self.pool.get(&peer).map(|slot| slot.clone()) else {
            return;
        };
        // If the slot is busy, leave it: a closed connection in the pool is detected
        // (close_reason) and replaced by the next send anyway.
        if let Ok(mut pooled) = slot.try_lock()
            && pooled
                .as_ref()
                .is_some_and(|c| c.stable_id() == conn.stable_id())
        {
            *pooled = None;
        }
    }
}

enum DialFailure {
    Connection(ConnectionError),
    /// The acceptor closed the connection refusing admission, with this reason.
    Refused(RefusalReason),
    Protocol(String),
}

/// The admission refusal an acceptor closed the connection with, if that is how it
/// ended (an unknown code word reads as `Malformed`).
fn refusal_of(error: &ConnectionError) -> Option<RefusalReason> {
    match error {
        ConnectionError::ApplicationClosed(close)
            if close.error_code == VarInt::from_u32(ADMISSION_REFUSED) =>
        {
            let code = std::str::from_utf8(&close.reason).unwrap_or_default();
            Some(RefusalReason::from_code(code).unwrap_or(RefusalReason::Malformed))
        }
        _ => None,
    }
}

/// True if the connection failed in TLS (QUIC crypto error codes 0x100–0x1ff), raised
/// by either side: a wrong key, a missing certificate, or an unauthorized peer.
fn is_handshake_rejection(error: &ConnectionError) -> bool {
    let is_crypto = |code: quinn::TransportErrorCode| (0x100..0x200).contains(&u64::from(code));
    match error {
        ConnectionError::TransportError(error) => is_crypto(error.code),
        ConnectionError::ConnectionClosed(close) => is_crypto(close.error_code),
        _ => false,
    }
}

/// Records a handshake's outcome on its span when dropped (an error status unless it
/// was established).
struct HandshakeOutcome {
    span: tracing::Span,
    outcome: &'static str,
}

impl Drop for HandshakeOutcome {
    fn drop(&mut self) {
        self.span.record(
            semconv::attribute::TRANSPORT_HANDSHAKE_OUTCOME,
            self.outcome,
        );
        if self.outcome != handshake_outcome::ESTABLISHED {
            self.span.record("otel.status_code", "error");
        }
    }
}

/// Accepts connections until the endpoint closes; each gets its own task.
async fn accept_loop(shared: Arc<Shared>) {
    while let Some(incoming) = shared.endpoint.accept().await {
        // A bounded number of handshakes at once: beyond it, refuse at once rather
        // than spawn without limit.
        let Some(permit) = shared.limits.handshake() else {
            Counters::bump(&shared.counters.handshakes_failed_inbound);
            incoming.refuse();
            continue;
        };
        tokio::spawn(accept_one(shared.clone(), incoming, permit));
    }
}

async fn accept_one(
    shared: Arc<Shared>,
    incoming: quinn::Incoming,
    handshake: tokio::sync::OwnedSemaphorePermit,
) {
    let remote = incoming.remote_address();
    let conn = match tokio::time::timeout(shared.config.connect_timeout, incoming).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(error)) => {
            if is_handshake_rejection(&error) {
                Counters::bump(&shared.counters.handshakes_rejected_inbound);
            } else {
                Counters::bump(&shared.counters.handshakes_failed_inbound);
            }
            tracing::warn!(%remote, %error, "inbound handshake failed");
            return;
        }
        Err(_) => {
            Counters::bump(&shared.counters.handshakes_failed_inbound);
            tracing::warn!(%remote, "inbound handshake timed out");
            return;
        }
    };
    let Some(peer) = peer_id_of(&conn) else {
        conn.close(VarInt::from_u32(1), b"no ed25519 certificate");
        return;
    };
    if shared.limits.is_blocked(&peer) {
        conn.close(VarInt::from_u32(BLOCKED), b"banned");
        return;
    }
    if !shared.limits.admit_connection(peer, &conn) {
        Counters::bump(&shared.counters.handshakes_failed_inbound);
        tracing::warn!(peer = %peer.short(), %remote, "refused: too many connections from this peer");
        conn.close(
            VarInt::from_u32(TOO_MANY_CONNECTIONS),
            b"too many connections",
        );
        return;
    }
    if !admit(&shared, &conn, peer, remote).await {
        shared.limits.release_connection(peer, &conn);
        return;
    }
    let welcomed = async {
        let mut stream = conn.open_uni().await.ok()?;
        stream.write_all(WELCOME).await.ok()?;
        stream.finish().ok()
    };
    // The welcome is part of the handshake's deadline: a client that never grants the
    // stream cannot hold a handshake slot.
    let welcomed = tokio::time::timeout(shared.config.connect_timeout, welcomed).await;
    drop(handshake);
    if !matches!(welcomed, Ok(Some(()))) {
        shared.limits.release_connection(peer, &conn);
        conn.close(VarInt::from_u32(1), b"welcome not taken");
        return;
    }
    Counters::bump(&shared.counters.connections_accepted);
    tracing::debug!(peer = %peer.short(), %remote, "accepted");
    shared.adopt(peer, &conn);
    serve_connection(shared.clone(), conn.clone(), peer).await;
    shared.limits.release_connection(peer, &conn);
}

/// Reads the dialer's hello and decides under the inbound policy; a refused dialer's
/// connection is closed with the reason. A peer admitted on what it presented and not
/// yet registered is registered at `remote`. Returns whether the peer was admitted.
async fn admit(
    shared: &Arc<Shared>,
    conn: &quinn::Connection,
    peer: AgentId,
    remote: SocketAddr,
) -> bool {
    let read = async {
        let mut stream = conn.accept_uni().await.ok()?;
        stream.read_to_end(MAX_HELLO_BYTES).await.ok()
    };
    let Ok(Some(bytes)) = tokio::time::timeout(shared.config.connect_timeout, read).await else {
        Counters::bump(&shared.counters.handshakes_failed_inbound);
        tracing::warn!(peer = %peer.short(), %remote, "no hello within the handshake deadline");
        conn.close(VarInt::from_u32(1), b"no hello");
        return false;
    };
    let now = UnixMillis::from_system_time(std::time::SystemTime::now());
    let decision = Hello::decode(&bytes).and_then(|hello| {
        admission::decide(
            &shared.config.inbound_policy,
            &shared.registry,
            &hello,
            &peer,
            now,
        )
    });
    let admitted = match decision {
        Ok(admitted) => admitted,
        Err(error) => {
            let reason = error.reason();
            shared.counters.refused(reason);
            tracing::warn!(peer = %peer.short(), %remote, %error, "admission refused");
            conn.close(
                VarInt::from_u32(ADMISSION_REFUSED),
                reason.as_str().as_bytes(),
            );
            return false;
        }
    };
    let learned = match &admitted {
        Admitted::Known => return true,
        Admitted::Listed => PeerInfo::new(peer, remote),
        Admitted::Certified(claims) => {
            let until = claims.expires;
            let skew = clock_skew(&shared.config.inbound_policy);
            tokio::spawn(close_at_expiry(conn.clone(), until.saturating_add(skew)));
            let known =
                shared.registry.contains(&peer) && !shared.certified_until.contains_key(&peer);
            // A peer the operator registered is never deregistered by expiry.
            if !known {
                let later = shared
                    .certified_until
                    .get(&peer)
                    .is_none_or(|latest| *latest < until);
                if later {
                    shared.certified_until.insert(peer, until);
                    tokio::spawn(deregister_at_expiry(shared.clone(), peer, until));
                }
            }
            PeerInfo::new(peer, remote)
                .with_region(claims.region)
                .with_level(claims.role)
        }
    };
    if shared.registry.contains(&peer) {
        return true;
    }
    match shared.registry.register(learned) {
        Ok(_) => {
            Counters::bump(&shared.counters.peers_admitted);
            tracing::info!(peer = %peer.short(), %remote, "admitted and registered a new peer");
            true
        }
        Err(error) => {
            Counters::bump(&shared.counters.handshakes_failed_inbound);
            tracing::warn!(peer = %peer.short(), %remote, %error, "admitted but cannot be registered");
            conn.close(VarInt::from_u32(1), b"registry full");
            false
        }
    }
}

/// Revocation by expiry, for one connection: when the certificate it was admitted on
/// runs out (clock skew allowed), the connection is closed with the reason.
async fn close_at_expiry(conn: quinn::Connection, deadline: UnixMillis) {
    let now = UnixMillis::from_system_time(std::time::SystemTime::now());
    tokio::select! {
        () = tokio::time::sleep(deadline.saturating_since(now)) => {
            conn.close(
                VarInt::from_u32(ADMISSION_REFUSED),
                RefusalReason::Expired.as_str().as_bytes(),
            );
        }
        _ = conn.closed() => {}
    }
}

/// Revocation by expiry, for the peer: once the latest certificate it was admitted on
/// runs out, it is deregistered (it must show a valid one again). One task per extension
/// of a peer's validity, so a peer reconnecting often costs no more tasks.
async fn deregister_at_expiry(shared: Arc<Shared>, peer: AgentId, until: UnixMillis) {
    let deadline = until.saturating_add(clock_skew(&shared.config.inbound_policy));
    let now = UnixMillis::from_system_time(std::time::SystemTime::now());
    tokio::time::sleep(deadline.saturating_since(now)).await;
    let expired = shared
        .certified_until
        .remove_if(&peer, |_, latest| *latest == until)
        .is_some();
    if expired && shared.registry.deregister(&peer).is_some() {
        tracing::info!(peer = %peer.short(), "membership certificate expired: peer deregistered");
    }
}

fn clock_skew(policy: &InboundPolicy) -> Duration {
    match policy {
        InboundPolicy::Certified(rule) => rule.max_clock_skew,
        _ => Duration::ZERO,
    }
}

/// The identity proven by the peer's certificate in a finished handshake.
fn peer_id_of(conn: &quinn::Connection) -> Option<AgentId> {
    let identity = conn.peer_identity()?;
    let certs = identity
        .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
        .ok()?;
    agent_id_from_certificate(certs.first()?).ok()
}

/// Reads every stream the peer opens on `conn` until the connection closes.
async fn serve_connection(shared: Arc<Shared>, conn: quinn::Connection, peer: AgentId) {
    let Some(inbound) = shared.inbound_sender() else {
        return;
    };
    loop {
        if shared.limits.is_blocked(&peer) {
            conn.close(VarInt::from_u32(BLOCKED), b"banned");
            break;
        }
        tokio::select! {
            stream = conn.accept_uni() => match stream {
                Ok(recv) => { tokio::spawn(read_frame(shared.clone(), peer, recv, inbound.clone())); }
                Err(_) => break,
            },
            stream = conn.accept_bi() => match stream {
                Ok((send, recv)) => { tokio::spawn(read_request(shared.clone(), peer, send, recv, inbound.clone())); }
                Err(_) => break,
            },
        }
    }
    shared.forget(peer, &conn);
}

/// Why a stream's frame was not read.
enum Unread {
    /// Larger than the maximum frame size (the stream was stopped with
    /// `FRAME_TOO_LARGE`).
    TooLarge,
    /// The byte budget had no room in time (stopped with `OVER_BUDGET`).
    OverBudget,
    /// The stream or connection failed.
    Failed,
}

impl Unread {
    fn reset_code(&self) -> VarInt {
        match self {
            Self::TooLarge => FRAME_TOO_LARGE,
            Self::OverBudget => OVER_BUDGET,
            Self::Failed => NO_RESPONSE,
        }
    }
}

/// Reads one stream to its end, refusing it if it grows past the maximum frame size.
/// Every chunk is paid for from the peer's and the node's byte budgets before the next
/// is read, so what inbound frames hold in memory is bounded whatever peers send; the
/// budget stays with the frame until the application has taken it.
async fn read_stream(
    shared: &Shared,
    peer: AgentId,
    recv: &mut quinn::RecvStream,
) -> Result<(Vec<u8>, FrameBudget), Unread> {
    let max = shared.config.max_frame_bytes;
    let mut frame = Vec::new();
    let mut budget = InboundLimits::empty();
    // One share for the whole read: every permit of this frame comes from it.
    let share = shared.limits.share(peer);
    let _reading = share.reader().await.ok_or(Unread::Failed)?;
    loop {
        // A stream that stops moving (its data starved of connection window by other
        // streams, or a peer that stops sending) gives its reader slot back.
        let Ok(chunk) =
            tokio::time::timeout(shared.config.budget_wait, recv.read_chunk(READ_CHUNK, true))
                .await
        else {
            Counters::bump(&shared.counters.frames_over_budget);
            let _ = recv.stop(OVER_BUDGET);
            return Err(Unread::OverBudget);
        };
        match chunk {
            Ok(Some(chunk)) => {
                if frame.len() + chunk.bytes.len() > max {
                    Counters::bump(&shared.counters.frames_rejected_too_large);
                    tracing::warn!(peer = %peer.short(), max, "refused oversized frame");
                    let _ = recv.stop(FRAME_TOO_LARGE);
                    return Err(Unread::TooLarge);
                }
                if shared
                    .limits
                    .reserve(&share, chunk.bytes.len(), &mut budget)
                    .await
                    .is_err()
                {
                    Counters::bump(&shared.counters.frames_over_budget);
                    tracing::debug!(peer = %peer.short(), "frame dropped: inbound byte budget exhausted");
                    let _ = recv.stop(OVER_BUDGET);
                    return Err(Unread::OverBudget);
                }
                frame.extend_from_slice(&chunk.bytes);
            }
            Ok(None) => {
                shared.counters.received(frame.len());
                return Ok((frame, budget));
            }
            Err(error) => {
                tracing::debug!(peer = %peer.short(), %error, "stream failed");
                return Err(Unread::Failed);
            }
        }
    }
}

/// Largest piece of a stream read (and paid for) at once.
const READ_CHUNK: usize = 64 * 1024;

async fn read_frame(
    shared: Arc<Shared>,
    peer: AgentId,
    mut recv: quinn::RecvStream,
    inbound: mpsc::Sender<Inbound>,
) {
    // Arrival is when the stream came in: waiting for our own budget is our backlog.
    let received_at = knhk_types::UnixMillis::from_system_time(std::time::SystemTime::now());
    if let Ok((frame, budget)) = read_stream(&shared, peer, &mut recv).await {
        let _ = inbound
            .send(Inbound {
                from: peer,
                frame: Bytes::from(frame),
                received_at,
                responder: None,
                _budget: Some(budget),
            })
            .await;
    }
}

async fn read_request(
    shared: Arc<Shared>,
    peer: AgentId,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    inbound: mpsc::Sender<Inbound>,
) {
    let received_at = knhk_types::UnixMillis::from_system_time(std::time::SystemTime::now());
    let (frame, budget) = match read_stream(&shared, peer, &mut recv).await {
        Ok(read) => read,
        Err(unread) => {
            let _ = send.reset(unread.reset_code());
            return;
        }
    };
    let responder = Responder {
        inner: ResponderInner::Quic(QuicResponder {
            stream: Some(send),
            shared: shared.clone(),
            peer,
        }),
    };
    let _ = inbound
        .send(Inbound {
            from: peer,
            frame: Bytes::from(frame),
            received_at,
            responder: Some(responder),
            _budget: Some(budget),
        })
        .await;
}

/// The QUIC half of a [`Responder`]: the send side of the request's stream.
#[derive(Debug)]
pub(crate) struct QuicResponder {
    stream: Option<quinn::SendStream>,
    shared: Arc<Shared>,
    peer: AgentId,
}

impl QuicResponder {
    pub(crate) async fn respond(mut self, frame: Bytes) -> Result<(), TransportError> {
        let Some(mut stream) = self.stream.take() else {
            return Err(TransportError::Closed);
        };
        let max = self.shared.config.max_frame_bytes;
        if let Err(error) = check_frame_len(frame.len(), max) {
            Counters::bump(&self.shared.counters.frames_rejected_too_large);
            let _ = stream.reset(FRAME_TOO_LARGE);
            return Err(error);
        }
        let lost = |reason: String| TransportError::ConnectionLost {
            peer: self.peer,
            reason,
        };
        stream
            .write_all(&frame)
            .await
            .map_err(|e| lost(e.to_string()))?;
        stream.finish().map_err(|e| lost(e.to_string()))?;
        self.shared.counters.sent(frame.len());
        Ok(())
    }
}

impl Drop for QuicResponder {
    fn drop(&mut self) {
        if let Some(mut stream) = self.stream.take() {
            let _ = stream.reset(NO_RESPONSE);
        }
    }
}

/// Server and client QUIC configurations sharing one TLS identity and transport config.
fn quic_configs(
    key: &SigningKey,
    authorizer: Arc<dyn PeerAuthorizer>,
    config: &QuicConfig,
) -> Result<(quinn::ServerConfig, quinn::ClientConfig), TransportError> {
    let setup = |what: &str, error: &dyn std::fmt::Display| {
        TransportError::Setup(format!("{what}: {error}"))
    };
    let identity = self_signed_identity(key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let algorithms = provider.signature_verification_algorithms;

    let mut server_tls = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| setup("TLS versions", &e))?
        .with_client_cert_verifier(Arc::new(AuthorizedClientVerifier {
            algorithms,
            authorizer,
        }))
        .with_single_cert(vec![identity.cert.clone()], identity.key_der())
        .map_err(|e| setup("server certificate", &e))?;
    server_tls.alpn_protocols = vec![ALPN.to_vec()];

    let mut client_tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| setup("TLS versions", &e))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedServerVerifier { algorithms }))
        .with_client_auth_cert(vec![identity.cert.clone()], identity.key_der())
        .map_err(|e| setup("client certificate", &e))?;
    client_tls.alpn_protocols = vec![ALPN.to_vec()];

    let mut transport = quinn::TransportConfig::default();
    // What quinn may buffer unread for one peer, over all its connections (the inbound
    // ones and ours), is the peer's byte budget.
    let connection_window = (config.inbound_bytes_per_peer
        / config.max_connections_per_peer.saturating_add(1))
    .max(64 * 1024);
    let idle =
        quinn::IdleTimeout::try_from(config.idle_timeout).map_err(|e| setup("idle timeout", &e))?;
    if config.keep_alive_interval >= config.idle_timeout {
        return Err(TransportError::Setup(format!(
            "keep_alive_interval {:?} must be below idle_timeout {:?}",
            config.keep_alive_interval, config.idle_timeout
        )));
    }
    transport
        .max_idle_timeout(Some(idle))
        .keep_alive_interval(Some(config.keep_alive_interval))
        .max_concurrent_uni_streams(VarInt::from_u32(config.max_concurrent_uni_streams))
        .max_concurrent_bidi_streams(VarInt::from_u32(config.max_concurrent_bidi_streams))
        // What quinn buffers unread for one connection is bounded too: the windows.
        .receive_window(VarInt::from_u64(connection_window as u64).unwrap_or(VarInt::MAX))
        .stream_receive_window(
            VarInt::from_u64(config.max_frame_bytes.min(connection_window) as u64)
                .unwrap_or(VarInt::MAX),
        );
    let transport = Arc::new(transport);

    let server_crypto =
        QuicServerConfig::try_from(server_tls).map_err(|e| setup("QUIC server TLS", &e))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(server_crypto));
    server.transport_config(transport.clone());
    let client_crypto =
        QuicClientConfig::try_from(client_tls).map_err(|e| setup("QUIC client TLS", &e))?;
    let mut client = quinn::ClientConfig::new(Arc::new(client_crypto));
    client.transport_config(transport);
    Ok((server, client))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn closed_with(code: quinn::TransportErrorCode) -> ConnectionError {
        ConnectionError::ConnectionClosed(quinn::ConnectionClose {
            error_code: code,
            frame_type: None,
            reason: Bytes::new(),
        })
    }

    #[test]
    fn only_tls_failures_count_as_handshake_rejections() {
        // TLS alerts 42 (bad_certificate) and 116 (certificate_required) map into the
        // QUIC crypto error range.
        assert!(is_handshake_rejection(&closed_with(
            quinn::TransportErrorCode::crypto(42)
        )));
        assert!(is_handshake_rejection(&closed_with(
            quinn::TransportErrorCode::crypto(116)
        )));
        assert!(!is_handshake_rejection(&closed_with(
            quinn::TransportErrorCode::PROTOCOL_VIOLATION
        )));
        assert!(!is_handshake_rejection(&ConnectionError::TimedOut));
        assert!(!is_handshake_rejection(&ConnectionError::Reset));
        assert!(!is_handshake_rejection(&ConnectionError::LocallyClosed));
    }

    #[test]
    fn default_config_is_consistent() {
        let config = QuicConfig::default();
        assert!(config.keep_alive_interval < config.idle_timeout);
        assert!(config.bind_addr.ip().is_loopback());
        assert_eq!(config.max_frame_bytes, DEFAULT_MAX_FRAME_BYTES);
        assert!(matches!(
            config.inbound_policy,
            InboundPolicy::RegisteredPeers
        ));
    }

    #[test]
    fn error_codes_are_distinct_and_in_the_application_range() {
        assert_ne!(FRAME_TOO_LARGE, NO_RESPONSE);
        assert_ne!(FRAME_TOO_LARGE, VarInt::from_u32(0));
    }
}
