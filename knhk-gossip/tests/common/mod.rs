//! Helpers shared by the QUIC integration tests.
#![allow(clippy::unwrap_used, clippy::panic, dead_code)]

use std::time::Duration;

use knhk_gossip::Mesh;

/// Polls until every mesh holds `value` under `key` and all roots agree, for at most
/// `seconds` (a liveness bound, not a timing assertion).
pub async fn wait_converged(meshes: &[Mesh], key: &str, value: &[u8], seconds: u64) {
    for _ in 0..seconds * 50 {
        let mut roots = Vec::new();
        let mut all_have_it = true;
        for mesh in meshes {
            all_have_it &= mesh.get(key).await.unwrap().as_deref() == Some(value);
            roots.push(mesh.status().await.unwrap().gossip.root);
        }
        if all_have_it && roots.windows(2).all(|pair| pair[0] == pair[1]) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no convergence within {seconds} s");
}
