//! Real QUIC over loopback UDP with mutual TLS pinned to ed25519 identities.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ed25519_dalek::SigningKey;
use knhk_transport::{
    InboundPolicy, PeerRegistry, QuicConfig, QuicTransport, RegistryConfig, Transport,
    TransportError,
};
use knhk_types::{
    AgentId, DEFAULT_MAX_FRAME_BYTES, Envelope, EnvelopeHeader, EnvelopeSigner, MessageKind,
    PeerInfo, UnixMillis,
};

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn node(seed: u8, config: QuicConfig) -> (SigningKey, QuicTransport) {
    let key = key(seed);
    let registry = Arc::new(PeerRegistry::new(key.agent_id(), RegistryConfig::default()));
    let transport = QuicTransport::bind(&key, registry, config).unwrap();
    (key, transport)
}

/// Registers `b` (its id and address) in `a`'s registry.
fn introduce(a: &QuicTransport, b: &QuicTransport) {
    a.registry()
        .register(PeerInfo::new(b.local_id(), b.local_addr().unwrap()))
        .unwrap();
}

fn pair(
    config_a: QuicConfig,
    config_b: QuicConfig,
) -> ((SigningKey, QuicTransport), (SigningKey, QuicTransport)) {
    let a = node(1, config_a);
    let b = node(2, config_b);
    introduce(&a.1, &b.1);
    introduce(&b.1, &a.1);
    (a, b)
}

fn envelope(key: &SigningKey, nonce: u64) -> Bytes {
    let header = EnvelopeHeader::new(
        MessageKind::Direct,
        UnixMillis(UnixMillis::VIRTUAL_START.0 + nonce),
        nonce,
    );
    Bytes::from(Envelope::sign(key, header, format!("message {nonce}").into_bytes()).encode())
}

/// Polls `condition` for up to 5 s (a liveness wait, not a timing assertion).
async fn eventually(condition: impl Fn() -> bool) {
    for _ in 0..500 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not reached within 5 s");
}

async fn recv_within(transport: &QuicTransport, secs: u64) -> knhk_transport::Inbound {
    tokio::time::timeout(Duration::from_secs(secs), transport.recv())
        .await
        .expect("timed out waiting for a frame")
        .expect("transport closed")
}

/// Receives `count` frames, checks each is a valid envelope signed by `from` and
/// delivered as coming from `from`; returns the sorted nonces.
async fn receive_verified(transport: Arc<QuicTransport>, from: AgentId, count: usize) -> Vec<u64> {
    let mut nonces = Vec::with_capacity(count);
    for _ in 0..count {
        let inbound = recv_within(&transport, 60).await;
        assert_eq!(inbound.from, from, "authenticated sender");
        let envelope = Envelope::decode(&inbound.frame, DEFAULT_MAX_FRAME_BYTES).unwrap();
        envelope.verify().unwrap();
        assert_eq!(envelope.sender(), from, "signed sender");
        nonces.push(envelope.header().nonce);
    }
    nonces.sort_unstable();
    nonces
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_signed_envelopes_each_way_over_one_pooled_connection() {
    const COUNT: u64 = 10_000;
    let ((key_a, a), (key_b, b)) = pair(QuicConfig::default(), QuicConfig::default());
    let (a, b) = (Arc::new(a), Arc::new(b));
    let (id_a, id_b) = (a.local_id(), b.local_id());

    // The first frame opens the connection; the rest flow both ways at once.
    a.send(id_b, envelope(&key_a, 0)).await.unwrap();
    let receive_at_b = tokio::spawn(receive_verified(b.clone(), id_a, COUNT as usize));
    let receive_at_a = tokio::spawn(receive_verified(a.clone(), id_b, COUNT as usize));
    let send_from_a = {
        let a = a.clone();
        tokio::spawn(async move {
            for nonce in 1..COUNT {
                a.send(id_b, envelope(&key_a, nonce)).await.unwrap();
            }
        })
    };
    let send_from_b = {
        let b = b.clone();
        tokio::spawn(async move {
            for nonce in 0..COUNT {
                b.send(id_a, envelope(&key_b, nonce)).await.unwrap();
            }
        })
    };
    send_from_a.await.unwrap();
    send_from_b.await.unwrap();
    let expected: Vec<u64> = (0..COUNT).collect();
    assert_eq!(receive_at_b.await.unwrap(), expected);
    assert_eq!(receive_at_a.await.unwrap(), expected);

    let (stats_a, stats_b) = (a.stats(), b.stats());
    assert_eq!(stats_a.connections_dialed, 1, "a dialed once");
    assert_eq!(stats_b.connections_dialed, 0, "b reused a's connection");
    assert_eq!(stats_b.connections_accepted, 1);
    assert_eq!((a.pooled_connections(), b.pooled_connections()), (1, 1));
    assert_eq!(
        (stats_a.frames_sent, stats_a.frames_received),
        (COUNT, COUNT)
    );
    assert_eq!(
        (stats_b.frames_sent, stats_b.frames_received),
        (COUNT, COUNT)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_presenting_a_different_key_is_refused_at_the_handshake() {
    let (_, a) = node(1, QuicConfig::default());
    let (_, b) = node(2, QuicConfig::default());
    introduce(&b, &a);
    // a believes some other identity lives at b's address.
    let impostor_of = key(3).agent_id();
    a.registry()
        .register(PeerInfo::new(impostor_of, b.local_addr().unwrap()))
        .unwrap();
    match a.send(impostor_of, Bytes::from_static(b"x")).await {
        Err(TransportError::HandshakeRejected { peer, reason }) => {
            assert_eq!(peer, impostor_of);
            assert!(reason.contains("invalid peer certificate"), "{reason}");
        }
        other => panic!("expected HandshakeRejected, got {other:?}"),
    }
    assert_eq!(a.stats().handshakes_rejected_outbound, 1);
    assert_eq!(a.pooled_connections(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unregistered_client_is_refused_and_told_so() {
    let (_, a) = node(1, QuicConfig::default());
    let (_, b) = node(2, QuicConfig::default());
    introduce(&a, &b); // b does not know a; b admits registered peers only.
    match a.send(b.local_id(), Bytes::from_static(b"let me in")).await {
        Err(TransportError::HandshakeRejected { .. }) => {}
        other => panic!("expected HandshakeRejected, got {other:?}"),
    }
    eventually(|| b.stats().handshakes_rejected_inbound == 1).await;
    assert_eq!(b.stats().connections_accepted, 0);
    assert!(
        tokio::time::timeout(Duration::from_millis(200), b.recv())
            .await
            .is_err()
    );

    // Refused, a leaves b alone for a while: a send at once meets the same refusal
    // without another handshake.
    assert!(matches!(
        a.send(b.local_id(), Bytes::from_static(b"again")).await,
        Err(TransportError::HandshakeRejected { .. })
    ));
    assert_eq!(a.stats().handshakes_rejected_outbound, 1);
    // Once registered, the same client gets in (when its wait, 500 ms, is over).
    introduce(&b, &a);
    let mut tries = 0;
    while let Err(error) = a.send(b.local_id(), Bytes::from_static(b"hello")).await {
        assert!(
            matches!(error, TransportError::HandshakeRejected { .. }),
            "{error:?}"
        );
        tries += 1;
        assert!(tries < 1_000, "not let in within 10 s of being registered");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(&recv_within(&b, 10).await.frame[..], b"hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_authenticated_peer_policy_admits_unknown_keys() {
    let open = QuicConfig {
        inbound_policy: InboundPolicy::AnyAuthenticatedPeer,
        ..QuicConfig::default()
    };
    let (_, a) = node(1, QuicConfig::default());
    let (_, seed) = node(2, open);
    introduce(&a, &seed);
    a.send(seed.local_id(), Bytes::from_static(b"join"))
        .await
        .unwrap();
    let inbound = recv_within(&seed, 10).await;
    assert_eq!(inbound.from, a.local_id());
}

/// A rustls client verifier that accepts any server: the test client below is not
/// refused for *its* checks, only for missing a certificate.
#[derive(Debug)]
struct AcceptAnyServer(rustls::crypto::WebPkiSupportedAlgorithms);

impl rustls::client::danger::ServerCertVerifier for AcceptAnyServer {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_schemes()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_with_no_certificate_is_refused() {
    let open = QuicConfig {
        inbound_policy: InboundPolicy::AnyAuthenticatedPeer,
        ..QuicConfig::default()
    };
    let (_, b) = node(2, open);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyServer(
            provider.signature_verification_algorithms,
        )))
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"knhk-mesh/1".to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut client = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    client.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));

    let outcome = async {
        let conn = client
            .connect(b.local_addr().unwrap(), &b.local_id().to_string())?
            .await?;
        // The server decides after our Finished; it never welcomes us.
        conn.accept_uni().await?;
        Ok::<_, Box<dyn std::error::Error>>(())
    };
    let result = tokio::time::timeout(Duration::from_secs(5), outcome)
        .await
        .unwrap();
    assert!(result.is_err(), "a certificate-less client got a welcome");
    eventually(|| b.stats().handshakes_rejected_inbound == 1).await;
    assert_eq!(b.stats().connections_accepted, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frames_are_refused_and_the_connection_survives() {
    let big_sender = QuicConfig {
        max_frame_bytes: 64 * 1024,
        ..QuicConfig::default()
    };
    let small_receiver = QuicConfig {
        max_frame_bytes: 1024,
        ..QuicConfig::default()
    };
    let ((_, a), (_, b)) = pair(big_sender, small_receiver);
    let id_b = b.local_id();

    // Refused locally: over the sender's own limit.
    match a.send(id_b, Bytes::from(vec![0; 64 * 1024 + 1])).await {
        Err(TransportError::FrameTooLarge { len, max }) => {
            assert_eq!((len, max), (64 * 1024 + 1, 64 * 1024))
        }
        other => panic!("expected FrameTooLarge, got {other:?}"),
    }
    // Refused remotely: within a's limit, over b's.
    a.send(id_b, Bytes::from_static(b"before")).await.unwrap();
    a.send(id_b, Bytes::from(vec![7; 2048])).await.unwrap();
    a.send(id_b, Bytes::from_static(b"after")).await.unwrap();
    // Frames travel on independent streams: no order between them is promised.
    let mut arrived = vec![
        recv_within(&b, 10).await.frame,
        recv_within(&b, 10).await.frame,
    ];
    arrived.sort();
    assert_eq!(
        arrived,
        vec![Bytes::from_static(b"after"), Bytes::from_static(b"before")]
    );
    // The oversized stream is refused by its own reader task, which may finish after
    // the small frames were delivered: wait for the count rather than assume it.
    eventually(|| b.stats().frames_rejected_too_large == 1).await;
    assert_eq!(a.stats().frames_rejected_too_large, 1);
    assert_eq!(a.stats().connections_dialed, 1, "the connection survived");
    assert_eq!(a.pooled_connections(), 1);

    // A request over b's limit fails with FrameTooLarge, not a hang.
    match a.request(id_b, Bytes::from(vec![1; 4096])).await {
        Err(TransportError::FrameTooLarge { .. }) => {}
        other => panic!("expected FrameTooLarge, got {other:?}"),
    }
    a.send(id_b, Bytes::from_static(b"still here"))
        .await
        .unwrap();
    assert_eq!(&recv_within(&b, 10).await.frame[..], b"still here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_response_and_dropped_requests() {
    let ((_, a), (_, b)) = pair(QuicConfig::default(), QuicConfig::default());
    let (id_a, id_b) = (a.local_id(), b.local_id());
    let b = Arc::new(b);
    let server = {
        let b = b.clone();
        tokio::spawn(async move {
            for _ in 0..2 {
                let inbound = b.recv().await.unwrap();
                assert_eq!(inbound.from, id_a);
                let responder = inbound.responder.expect("a request");
                if &inbound.frame[..] == b"ping" {
                    responder
                        .respond(Bytes::from_static(b"pong"))
                        .await
                        .unwrap();
                } else {
                    drop(responder);
                }
            }
        })
    };
    assert_eq!(
        &a.request(id_b, Bytes::from_static(b"ping")).await.unwrap()[..],
        b"pong"
    );
    assert_eq!(
        a.request(id_b, Bytes::from_static(b"ignore me")).await,
        Err(TransportError::NoResponse(id_b))
    );
    server.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_peer_is_redialed() {
    let (_, a) = node(1, QuicConfig::default());
    let (key_b, b) = node(2, QuicConfig::default());
    let addr_b = b.local_addr().unwrap();
    introduce(&a, &b);
    introduce(&b, &a);
    a.send(b.local_id(), Bytes::from_static(b"one"))
        .await
        .unwrap();
    assert_eq!(&recv_within(&b, 10).await.frame[..], b"one");

    b.close().await;
    drop(b);
    // The old socket is released once its connection tasks have wound down.
    let mut rebound = None;
    for _ in 0..100 {
        let registry = Arc::new(PeerRegistry::new(
            key_b.agent_id(),
            RegistryConfig::default(),
        ));
        let config = QuicConfig {
            bind_addr: addr_b,
            ..QuicConfig::default()
        };
        match QuicTransport::bind(&key_b, registry, config) {
            Ok(transport) => {
                rebound = Some(transport);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    let b = rebound.expect("port released within 2 s");
    introduce(&b, &a);
    tokio::time::sleep(Duration::from_millis(50)).await;
    a.send(b.local_id(), Bytes::from_static(b"two"))
        .await
        .unwrap();
    assert_eq!(&recv_within(&b, 10).await.frame[..], b"two");
    assert_eq!(a.stats().connections_dialed, 2);
    assert_eq!(a.pooled_connections(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_unreachable_peers_fail_with_typed_errors() {
    let quick = QuicConfig {
        connect_timeout: Duration::from_millis(300),
        ..QuicConfig::default()
    };
    let (_, a) = node(1, quick);
    let stranger = key(9).agent_id();
    assert_eq!(
        a.send(stranger, Bytes::from_static(b"x")).await,
        Err(TransportError::UnknownPeer(stranger))
    );
    // Registered at a port where nothing listens.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    a.registry()
        .register(PeerInfo::new(stranger, silent.local_addr().unwrap()))
        .unwrap();
    match a.send(stranger, Bytes::from_static(b"x")).await {
        Err(
            TransportError::Timeout {
                operation: "connect",
                ..
            }
            | TransportError::Unreachable { .. },
        ) => {}
        other => panic!("expected Timeout or Unreachable, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recv_reports_closed_after_close() {
    let ((_, a), (_, b)) = pair(QuicConfig::default(), QuicConfig::default());
    a.send(b.local_id(), Bytes::from_static(b"last"))
        .await
        .unwrap();
    assert_eq!(&recv_within(&b, 10).await.frame[..], b"last");
    b.close().await;
    let closed = tokio::time::timeout(Duration::from_secs(5), b.recv())
        .await
        .unwrap();
    assert_eq!(closed.map(|_| ()), Err(TransportError::Closed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_rejects_a_registry_of_another_node_and_bad_timeouts() {
    let registry = Arc::new(PeerRegistry::new(
        key(5).agent_id(),
        RegistryConfig::default(),
    ));
    assert!(matches!(
        QuicTransport::bind(&key(6), registry, QuicConfig::default()),
        Err(TransportError::Setup(_))
    ));
    let registry = Arc::new(PeerRegistry::new(
        key(6).agent_id(),
        RegistryConfig::default(),
    ));
    let bad = QuicConfig {
        keep_alive_interval: Duration::from_secs(60),
        ..QuicConfig::default()
    };
    match QuicTransport::bind(&key(6), registry, bad) {
        Err(TransportError::Setup(reason)) => {
            assert!(reason.contains("keep_alive_interval"), "{reason}")
        }
        other => panic!("expected Setup error, got {other:?}"),
    }
}
