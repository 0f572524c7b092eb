//! What one authenticated peer can cost a QUIC receiver (the hardening issue's findings
//! 2 and 8), over real quinn on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ed25519_dalek::SigningKey;
use knhk_transport::{PeerRegistry, QuicConfig, QuicTransport, RegistryConfig, Transport};
use knhk_types::{EnvelopeSigner, PeerInfo};

fn node(seed: u8, config: QuicConfig) -> QuicTransport {
    let key = SigningKey::from_bytes(&[seed; 32]);
    let registry = Arc::new(PeerRegistry::new(key.agent_id(), RegistryConfig::default()));
    QuicTransport::bind(&key, registry, config).unwrap()
}

fn introduce(a: &QuicTransport, b: &QuicTransport) {
    a.registry()
        .register(PeerInfo::new(b.local_id(), b.local_addr().unwrap()))
        .unwrap();
}

fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status
                .lines()
                .find(|line| line.starts_with("VmRSS:"))?
                .to_owned();
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(0, |kb| kb * 1_024)
}

/// Finding 2: the inbound queue held 4,096 frames of up to 1 MiB each, so a flood to a
/// receiver that had fallen behind took its RSS from 67 to 761 MB. Now every frame pays
/// from a byte budget before it is read, and QUIC windows bound what quinn buffers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_to_a_receiver_that_does_not_keep_up_is_held_within_its_byte_budget() {
    let receiver = node(21, QuicConfig::default());
    let sender = Arc::new(node(22, QuicConfig::default()));
    introduce(&receiver, &sender);
    introduce(&sender, &receiver);
    let before = resident_bytes();
    // 400 frames of 512 KiB (200 MiB) at once; the receiver never calls recv. One
    // buffer shared by every send, so the sender's side costs nothing.
    let frame = Bytes::from(vec![7u8; 512 * 1024]);
    let to = receiver.local_id();
    let sends: Vec<_> = (0..400)
        .map(|_| {
            let (sender, frame) = (sender.clone(), frame.clone());
            tokio::spawn(async move { sender.send(to, frame).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stats = receiver.stats();
    let per_peer = QuicConfig::default().inbound_bytes_per_peer as u64;
    assert!(
        stats.bytes_buffered <= per_peer,
        "{} bytes held",
        stats.bytes_buffered
    );
    // Frames still complete (at most four of one peer are read at once, so partial
    // frames never starve each other), never more than the peer's budget holds. (The
    // flooder's many parallel streams share small QUIC windows, so its own frames come
    // slowly: the cost of its flood is its own.)
    let fit = per_peer / (512 * 1024);
    assert!(
        stats.frames_received >= 2 && stats.frames_received <= fit,
        "{stats:?}"
    );
    let grown = resident_bytes().saturating_sub(before);
    assert!(grown < 96 << 20, "RSS grew by {} MiB", grown >> 20);
    println!(
        "held {} KiB, RSS +{} MiB, frames read {}, dropped over budget {}",
        stats.bytes_buffered >> 10,
        grown >> 20,
        stats.frames_received,
        stats.frames_over_budget
    );
    for send in sends {
        send.abort();
    }
    receiver.close().await;
}

/// Finding 8: one registered peer opened 200 connections in 0.7 s, all served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_peer_gets_at_most_four_connections() {
    let receiver = node(31, QuicConfig::default());
    // Eight transports with one key: eight connections from one peer.
    let clones: Vec<QuicTransport> = (0..8).map(|_| node(32, QuicConfig::default())).collect();
    introduce(&receiver, &clones[0]);
    let to = receiver.local_id();
    let mut delivered = 0;
    for clone in &clones {
        introduce(clone, &receiver);
        if clone.send(to, Bytes::from_static(b"hello")).await.is_ok() {
            delivered += 1;
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stats = receiver.stats();
    assert_eq!(stats.connections_accepted, 4, "{stats:?}");
    assert!(delivered <= 4, "{delivered} connections carried a frame");
    receiver.close().await;
}

/// Findings 2 and 8: a ban never reached the transport, so a banned peer's frames were
/// still read in full. A blocked peer's connections close and new ones are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_peer_is_cut_off_both_ways() {
    let receiver = node(41, QuicConfig::default());
    let peer = node(42, QuicConfig::default());
    introduce(&receiver, &peer);
    introduce(&peer, &receiver);
    let to = receiver.local_id();
    peer.send(to, Bytes::from_static(b"before")).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), receiver.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&first.frame[..], b"before");
    receiver.block(peer.local_id(), Duration::from_secs(60));
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..3 {
        let _ = peer.send(to, Bytes::from_static(b"after")).await;
    }
    let nothing = tokio::time::timeout(Duration::from_millis(500), receiver.recv()).await;
    assert!(nothing.is_err(), "a blocked peer's frame was delivered");
    assert!(
        receiver
            .send(peer.local_id(), Bytes::from_static(b"x"))
            .await
            .is_err(),
        "no dialing a blocked peer"
    );
    receiver.close().await;
}
