//! The live telemetry scenario behind `cargo xtask weaver`: real meshes (ten nodes on
//! the in-memory transport plus a member that sends garbage until it is banned, three
//! over QUIC with mutual TLS, and a stranger whose handshakes are refused) doing real
//! work, with every span, event and metric they emit recorded through the
//! OpenTelemetry SDK.

use std::net::SocketAddr;
use std::time::Duration;

use knhk_endpoint::{MemberList, StaticView};
use knhk_gossip::{GossipConfig, GossipError, Mesh, MeshConfig};
use knhk_security::NodeKey;
use knhk_transport::{MemoryConfig, MemoryNetwork, Transport, TransportError};
use knhk_types::{AgentId, PeerInfo};
use opentelemetry::metrics::Meter;

/// Why the scenario could not run.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// A mesh failed.
    #[error("mesh: {0}")]
    Mesh(#[from] GossipError),
    /// The in-memory network refused a node.
    #[error("transport: {0}")]
    Transport(#[from] TransportError),
    /// The meshes did not converge within the bound.
    #[error("{0} did not converge within {1:?}")]
    NoConvergence(&'static str, Duration),
}

/// Hands out a meter per mesh.
pub type Meters<'a> = &'a (dyn Fn() -> Meter + Sync);

/// How long a group of meshes may take to converge before the scenario gives up (a
/// liveness bound, not a measurement).
const CONVERGENCE_BOUND: Duration = Duration::from_secs(30);

/// Runs the scenario, each mesh recording with a meter from `meters` (give each its own
/// provider, as separate processes would; meshes sharing one overwrite each other's
/// series) and spans going to the current tracing subscriber.
/// `export` is called while each group is still up, after it has converged and
/// published its counters (a mesh that has shut down reports no metrics). Must run
/// inside a tokio runtime.
///
/// Errors: [`ScenarioError`] if a mesh cannot start or a group does not converge.
pub async fn run(meters: Meters<'_>, export: &(dyn Fn() + Sync)) -> Result<(), ScenarioError> {
    in_memory(meters, export).await?;
    over_quic(meters, export).await
}

fn config(seed: u64) -> MeshConfig {
    MeshConfig {
        gossip: GossipConfig {
            interval: Duration::from_millis(20),
            ..GossipConfig::default()
        },
        ..MeshConfig::default()
    }
    .seeded(seed)
}

async fn in_memory(meters: Meters<'_>, export: &(dyn Fn() + Sync)) -> Result<(), ScenarioError> {
    let keys: Vec<NodeKey> = (0..10u8)
        .map(|i| NodeKey::from_seed([100 + i; 32]))
        .collect();
    // A member with no mesh: it only sends garbage.
    let mallory = NodeKey::from_seed([199; 32]).agent_id();
    let mut ids: Vec<AgentId> = keys.iter().map(NodeKey::agent_id).collect();
    ids.push(mallory);
    let members = MemberList::new(ids.clone());
    let network = MemoryNetwork::new(MemoryConfig::default());
    let mut meshes = Vec::new();
    for (i, key) in keys.into_iter().enumerate() {
        let transport = network.join(key.agent_id())?;
        let membership = StaticView::new(members.clone(), key.agent_id());
        meshes.push(Mesh::start_with_meter(
            key,
            transport,
            membership,
            config(i as u64),
            &meters(),
        ));
    }
    // Garbage from a member: refused as malformed, charged, and banned after a few.
    let garbage = network.join(mallory)?;
    for _ in 0..8 {
        garbage
            .send(
                meshes[0].id(),
                bytes::Bytes::from_static(b"not an envelope"),
            )
            .await?;
    }
    meshes[0]
        .put("telemetry/live", b"in-memory".to_vec())
        .await?;
    meshes[3]
        .put("telemetry/other", b"second writer".to_vec())
        .await?;
    converge("the in-memory mesh", &meshes).await?;
    export();
    for mesh in meshes {
        mesh.shutdown().await?;
    }
    Ok(())
}

async fn over_quic(meters: Meters<'_>, export: &(dyn Fn() + Sync)) -> Result<(), ScenarioError> {
    let mut meshes = Vec::new();
    for i in 0..3u8 {
        let mesh = Mesh::builder()
            .key(NodeKey::from_seed([200 + i; 32]))
            .config(config(u64::from(i)))
            .meter(meters())
            .build()
            .await?;
        meshes.push(mesh);
    }
    let addresses: Vec<(AgentId, SocketAddr)> = meshes
        .iter()
        .filter_map(|mesh| Some((mesh.id(), mesh.local_addr()?)))
        .collect();
    for mesh in &meshes {
        for (id, addr) in &addresses {
            if *id != mesh.id() {
                mesh.add_peer(PeerInfo::new(*id, *addr))?;
            }
        }
    }
    // A stranger: it knows the first node, but no node knows it, so its handshakes are
    // refused (and counted, and spanned, on its side).
    let stranger = Mesh::builder()
        .key(NodeKey::from_seed([250; 32]))
        .config(config(99))
        .meter(meters())
        .build()
        .await?;
    if let Some((id, addr)) = addresses.first() {
        stranger.add_peer(PeerInfo::new(*id, *addr))?;
    }
    meshes[1]
        .put("telemetry/live", b"over quic".to_vec())
        .await?;
    converge("the QUIC mesh", &meshes).await?;
    // Let the stranger try a few rounds, then stop everything.
    tokio::time::sleep(Duration::from_millis(200)).await;
    export();
    stranger.shutdown().await?;
    for mesh in meshes {
        mesh.shutdown().await?;
    }
    Ok(())
}

/// Waits until every mesh reports convergence on one root (each node's own judgement,
/// which is what emits the convergence event), for at most [`CONVERGENCE_BOUND`].
async fn converge(what: &'static str, meshes: &[Mesh]) -> Result<(), ScenarioError> {
    let deadline = tokio::time::Instant::now() + CONVERGENCE_BOUND;
    while tokio::time::Instant::now() < deadline {
        let mut roots = Vec::new();
        let mut all_converged = true;
        for mesh in meshes {
            let status = mesh.status().await?;
            all_converged &= status.gossip.converged;
            roots.push(status.gossip.root);
        }
        if all_converged && roots.windows(2).all(|pair| pair[0] == pair[1]) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(ScenarioError::NoConvergence(what, CONVERGENCE_BOUND))
}
