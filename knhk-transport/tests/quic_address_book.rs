//! The address book over real QUIC on loopback: a peer known only by an address learned
//! from gossip can be dialed (the handshake pins its key), and being in a node's book
//! admits no one: under the default policy an unregistered dialer is still refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ed25519_dalek::SigningKey;
use knhk_transport::{
    InboundPolicy, PeerRegistry, QuicConfig, QuicTransport, RegistryConfig, Transport,
    TransportError,
};
use knhk_types::AgentId;

fn node(seed: u8, config: QuicConfig) -> QuicTransport {
    let key = SigningKey::from_bytes(&[seed; 32]);
    let id = AgentId::from_verifying_key(&key.verifying_key());
    let registry = Arc::new(PeerRegistry::new(id, RegistryConfig::default()));
    QuicTransport::bind(&key, registry, config).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_known_only_by_its_learned_address_is_dialed() {
    let open = node(
        1,
        QuicConfig {
            inbound_policy: InboundPolicy::AnyAuthenticatedPeer,
            ..QuicConfig::default()
        },
    );
    let dialer = node(2, QuicConfig::default());
    // Neither registered nor in the book: no address, no handshake.
    match dialer.send(open.local_id(), Bytes::from_static(b"?")).await {
        Err(TransportError::UnknownPeer(peer)) => assert_eq!(peer, open.local_id()),
        other => panic!("expected UnknownPeer, got {other:?}"),
    }
    dialer
        .address_book()
        .learn(open.local_id(), open.local_addr().unwrap());
    dialer
        .send(open.local_id(), Bytes::from_static(b"found you"))
        .await
        .unwrap();
    let inbound = tokio::time::timeout(Duration::from_secs(5), open.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(inbound.from, dialer.local_id());
    assert_eq!(&inbound.frame[..], b"found you");
    // Learning an address registered nobody.
    assert!(!dialer.registry().contains(&open.local_id()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_in_the_book_admits_no_one() {
    let strict = node(3, QuicConfig::default());
    let stranger = node(4, QuicConfig::default());
    // The strict node learned the stranger's address (a member told it), and the
    // stranger learned the strict node's.
    strict
        .address_book()
        .learn(stranger.local_id(), stranger.local_addr().unwrap());
    stranger
        .address_book()
        .learn(strict.local_id(), strict.local_addr().unwrap());
    let sent = stranger
        .send(strict.local_id(), Bytes::from_static(b"let me in"))
        .await;
    assert!(sent.is_err(), "an unregistered dialer got in: {sent:?}");
    let heard = tokio::time::timeout(Duration::from_millis(500), strict.recv()).await;
    assert!(heard.is_err(), "the strict node received {heard:?}");
    assert!(!strict.registry().contains(&stranger.local_id()));
}
