//! The in-memory transport: same contract as QUIC, in one process.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use bytes::Bytes;
use knhk_transport::{MemoryConfig, MemoryNetwork, Transport, TransportError};
use knhk_types::AgentId;

fn id(n: u8) -> AgentId {
    AgentId::from_bytes([n; 32])
}

#[tokio::test]
async fn frames_arrive_with_their_sender_and_are_counted() {
    let network = MemoryNetwork::new(MemoryConfig::default());
    let a = network.join(id(1)).unwrap();
    let b = network.join(id(2)).unwrap();
    for i in 0..100u8 {
        a.send(id(2), Bytes::from(vec![i])).await.unwrap();
    }
    for i in 0..100u8 {
        let inbound = b.recv().await.unwrap();
        assert_eq!((inbound.from, inbound.frame[0]), (id(1), i));
        assert!(inbound.responder.is_none());
    }
    assert_eq!(
        (a.stats().frames_sent, b.stats().frames_received),
        (100, 100)
    );
    assert_eq!(b.stats().bytes_received, 100);
}

#[tokio::test]
async fn duplicate_join_is_refused() {
    let network = MemoryNetwork::new(MemoryConfig::default());
    let _a = network.join(id(1)).unwrap();
    assert!(matches!(network.join(id(1)), Err(TransportError::Setup(_))));
}

#[tokio::test]
async fn sends_to_absent_or_disconnected_nodes_are_unreachable() {
    let network = MemoryNetwork::new(MemoryConfig::default());
    let a = network.join(id(1)).unwrap();
    assert!(matches!(
        a.send(id(9), Bytes::new()).await,
        Err(TransportError::Unreachable { peer, .. }) if peer == id(9)
    ));
    let b = network.join(id(2)).unwrap();
    assert!(network.disconnect(&id(2)));
    assert!(matches!(
        a.send(id(2), Bytes::new()).await,
        Err(TransportError::Unreachable { .. })
    ));
    assert_eq!(b.recv().await.map(|_| ()), Err(TransportError::Closed));
}

#[tokio::test]
async fn dropping_a_node_leaves_the_network_and_its_id_can_rejoin() {
    let network = MemoryNetwork::new(MemoryConfig::default());
    let a = network.join(id(1)).unwrap();
    drop(network.join(id(2)).unwrap());
    assert_eq!(network.len(), 1);
    let b = network.join(id(2)).unwrap();
    a.send(id(2), Bytes::from_static(b"again")).await.unwrap();
    assert_eq!(&b.recv().await.unwrap().frame[..], b"again");
}

#[tokio::test]
async fn oversized_frames_are_refused_on_send_and_respond() {
    let network = MemoryNetwork::new(MemoryConfig {
        max_frame_bytes: 8,
        ..MemoryConfig::default()
    });
    let a = network.join(id(1)).unwrap();
    let b = network.join(id(2)).unwrap();
    assert_eq!(
        a.send(id(2), Bytes::from(vec![0; 9])).await,
        Err(TransportError::FrameTooLarge { len: 9, max: 8 })
    );
    assert_eq!(a.stats().frames_rejected_too_large, 1);
    let server = tokio::spawn(async move {
        let inbound = b.recv().await.unwrap();
        inbound
            .responder
            .unwrap()
            .respond(Bytes::from(vec![0; 9]))
            .await
    });
    let asked = a.request(id(2), Bytes::from_static(b"q")).await;
    assert_eq!(asked, Err(TransportError::NoResponse(id(2))));
    assert_eq!(
        server.await.unwrap(),
        Err(TransportError::FrameTooLarge { len: 9, max: 8 })
    );
}

#[tokio::test]
async fn requests_are_answered_or_reported_dropped() {
    let network = MemoryNetwork::new(MemoryConfig::default());
    let a = network.join(id(1)).unwrap();
    let b = network.join(id(2)).unwrap();
    let server = tokio::spawn(async move {
        let first = b.recv().await.unwrap();
        first
            .responder
            .unwrap()
            .respond(Bytes::from_static(b"pong"))
            .await
            .unwrap();
        let second = b.recv().await.unwrap();
        drop(second.responder);
    });
    assert_eq!(
        &a.request(id(2), Bytes::from_static(b"ping")).await.unwrap()[..],
        b"pong"
    );
    assert_eq!(
        a.request(id(2), Bytes::from_static(b"ping")).await,
        Err(TransportError::NoResponse(id(2)))
    );
    server.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn unanswered_requests_time_out() {
    let network = MemoryNetwork::new(MemoryConfig {
        request_timeout: Duration::from_millis(50),
        ..MemoryConfig::default()
    });
    let a = network.join(id(1)).unwrap();
    let b = network.join(id(2)).unwrap();
    let held = tokio::spawn(async move {
        let inbound = b.recv().await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        drop(inbound);
    });
    assert!(matches!(
        a.request(id(2), Bytes::from_static(b"slow")).await,
        Err(TransportError::Timeout {
            operation: "request",
            ..
        })
    ));
    held.await.unwrap();
}

#[tokio::test]
async fn close_drains_then_reports_closed() {
    let network = MemoryNetwork::new(MemoryConfig::default());
    let a = network.join(id(1)).unwrap();
    let b = network.join(id(2)).unwrap();
    a.send(id(2), Bytes::from_static(b"queued")).await.unwrap();
    b.close().await;
    assert_eq!(&b.recv().await.unwrap().frame[..], b"queued");
    assert_eq!(b.recv().await.map(|_| ()), Err(TransportError::Closed));
}
