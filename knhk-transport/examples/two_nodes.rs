//! Two real nodes on loopback exchange signed envelopes over QUIC with mutual TLS.
//!
//! ```text
//! cargo run --release -p knhk-transport --example two_nodes [-- MESSAGES]
//! ```
//!
//! Each node has its own ed25519 key; its TLS certificate carries that key, and each
//! side refuses any peer whose key is not the one it expects. Node A sends MESSAGES
//! (default 10,000) signed envelopes to B and B to A at the same time; every envelope is
//! decoded and its signature verified on arrival. Then A asks B one request and prints
//! the round trip. The figures printed are wall-clock on this machine.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use ed25519_dalek::SigningKey;
use knhk_transport::{
    PeerRegistry, QuicConfig, QuicTransport, RegistryConfig, Transport, TransportError,
};
use knhk_types::{
    AgentId, Envelope, EnvelopeHeader, EnvelopeSigner, MessageKind, PeerInfo, UnixMillis,
};

fn fresh_key() -> SigningKey {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).expect("OS randomness");
    SigningKey::from_bytes(&seed)
}

fn now() -> UnixMillis {
    UnixMillis::from_system_time(SystemTime::now())
}

fn seal(key: &SigningKey, kind: MessageKind, nonce: u64, payload: Vec<u8>) -> Bytes {
    Bytes::from(Envelope::sign(key, EnvelopeHeader::new(kind, now(), nonce), payload).encode())
}

/// Receives `count` envelopes and verifies each; returns how many verified.
async fn receive(node: Arc<QuicTransport>, count: usize) -> Result<usize, TransportError> {
    let mut verified = 0;
    for _ in 0..count {
        let inbound = node.recv().await?;
        let envelope =
            Envelope::decode(&inbound.frame, node.max_frame_bytes()).expect("well-formed");
        if envelope.verify().is_ok() && envelope.sender() == inbound.from {
            verified += 1;
        }
    }
    Ok(verified)
}

async fn send_all(
    node: Arc<QuicTransport>,
    key: SigningKey,
    to: AgentId,
    count: u64,
) -> Result<(), TransportError> {
    for nonce in 0..count {
        let payload = format!("hello #{nonce} from {}", key.agent_id().short()).into_bytes();
        node.send(to, seal(&key, MessageKind::Direct, nonce, payload))
            .await?;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), TransportError> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let messages: u64 = std::env::args()
        .nth(1)
        .map_or(10_000, |n| n.parse().expect("MESSAGES is a number"));

    let (key_a, key_b) = (fresh_key(), fresh_key());
    let bind = |key: &SigningKey| {
        let registry = Arc::new(PeerRegistry::new(key.agent_id(), RegistryConfig::default()));
        QuicTransport::bind(key, registry, QuicConfig::default()).map(Arc::new)
    };
    let (a, b) = (bind(&key_a)?, bind(&key_b)?);
    for (me, other) in [(&a, &b), (&b, &a)] {
        me.registry()
            .register(PeerInfo::new(other.local_id(), other.local_addr()?))
            .expect("distinct keys");
    }
    println!("node A {} at {}", a.local_id(), a.local_addr()?);
    println!("node B {} at {}", b.local_id(), b.local_addr()?);

    // First contact: dial, mutual TLS with pinned keys, welcome.
    let started = Instant::now();
    a.send(
        b.local_id(),
        seal(&key_a, MessageKind::Ping, u64::MAX, b"hello".to_vec()),
    )
    .await?;
    let first = b.recv().await?;
    println!(
        "handshake + first envelope: {:.2} ms (from {})",
        started.elapsed().as_secs_f64() * 1e3,
        first.from.short()
    );

    let started = Instant::now();
    let at_b = tokio::spawn(receive(b.clone(), messages as usize));
    let at_a = tokio::spawn(receive(a.clone(), messages as usize));
    let from_a = tokio::spawn(send_all(a.clone(), key_a.clone(), b.local_id(), messages));
    let from_b = tokio::spawn(send_all(b.clone(), key_b.clone(), a.local_id(), messages));
    from_a.await.expect("task")?;
    from_b.await.expect("task")?;
    let (verified_b, verified_a) = (at_b.await.expect("task")?, at_a.await.expect("task")?);
    let elapsed = started.elapsed();
    println!(
        "{messages} envelopes each way: {:.1} ms, {:.0} envelopes/s in total, verified {verified_a} at A and {verified_b} at B",
        elapsed.as_secs_f64() * 1e3,
        (2 * messages) as f64 / elapsed.as_secs_f64()
    );

    // One request/response round trip.
    let server = {
        let b = b.clone();
        let key_b = key_b.clone();
        tokio::spawn(async move {
            let inbound = b.recv().await?;
            let responder = inbound.responder.expect("a request");
            responder
                .respond(seal(&key_b, MessageKind::Pong, 0, b"pong".to_vec()))
                .await
        })
    };
    let started = Instant::now();
    let reply = a
        .request(
            b.local_id(),
            seal(&key_a, MessageKind::Ping, 0, b"ping".to_vec()),
        )
        .await?;
    let rtt = started.elapsed();
    server.await.expect("task")?;
    let pong = Envelope::decode(&reply, a.max_frame_bytes()).expect("well-formed");
    pong.verify().expect("signed by B");
    println!(
        "request/response round trip: {:.3} ms",
        rtt.as_secs_f64() * 1e3
    );

    let (stats_a, stats_b) = (a.stats(), b.stats());
    println!(
        "connections dialed: A {} B {}; accepted: A {} B {}; pooled: A {} B {}",
        stats_a.connections_dialed,
        stats_b.connections_dialed,
        stats_a.connections_accepted,
        stats_b.connections_accepted,
        a.pooled_connections(),
        b.pooled_connections()
    );
    a.close().await;
    b.close().await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(
        (verified_a, verified_b),
        (messages as usize, messages as usize),
        "every envelope verified"
    );
    Ok(())
}
