//! The live telemetry scenario behind `cargo xtask weaver`: real meshes (ten nodes on
//! the in-memory transport plus a member that sends garbage until it is banned, three
//! over QUIC with mutual TLS, and a stranger whose handshakes are refused; then three
//! QUIC nodes with the topology layer, of which one leaves and one crashes, so that
//! the last is left without a quorum) doing real work, with every span, event and
//! metric they emit recorded through the OpenTelemetry SDK.

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
    /// A topology node failed.
    #[error("topology: {0}")]
    Topology(#[from] knhk_topology::TopologyError),
    /// The topology nodes did not reach the awaited state within the bound.
    #[error("the topology nodes did not {0} within {1:?}")]
    Stuck(&'static str, Duration),
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
    over_quic(meters, export).await?;
    topology_over_quic(meters, export).await
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

/// Three QUIC nodes with the topology layer, each knowing only the first: they learn
/// each other, the third leaves gracefully, the second crashes, and the first, left
/// alone with a dead member in its view, loses its quorum.
async fn topology_over_quic(
    meters: Meters<'_>,
    export: &(dyn Fn() + Sync),
) -> Result<(), ScenarioError> {
    use knhk_topology::{MemberState, QuicNode, QuicNodeConfig, TopologyConfig, ViewConfig};
    use std::sync::Arc;

    let keys: Vec<NodeKey> = (0..3u8)
        .map(|i| NodeKey::from_seed([210 + i; 32]))
        .collect();
    let ids: Arc<Vec<AgentId>> = Arc::new(keys.iter().map(NodeKey::agent_id).collect());
    let config = |seed: Option<PeerInfo>, i: u64| {
        let directory = ids.clone();
        QuicNodeConfig {
            quic: knhk_transport::QuicConfig {
                inbound_policy: knhk_transport::InboundPolicy::AnyAuthenticatedPeer,
                ..knhk_transport::QuicConfig::default()
            },
            gossip: config(i).gossip,
            topology: TopologyConfig {
                probe_interval: Duration::from_millis(100),
                probe_timeout: Duration::from_millis(50),
                ..TopologyConfig::default()
            },
            view: ViewConfig {
                directory: Some(Arc::new(move |id: &AgentId| directory.contains(id))),
                ..ViewConfig::default()
            },
            seeds: seed.into_iter().collect(),
            ..QuicNodeConfig::default()
        }
    };
    let mut keys = keys.into_iter();
    let (Some(first), Some(second), Some(third)) = (keys.next(), keys.next(), keys.next()) else {
        return Ok(());
    };
    let first = QuicNode::start(first, config(None, 0), &meters())?;
    let seed = PeerInfo::new(first.id(), first.local_addr());
    let second = QuicNode::start(second, config(Some(seed), 1), &meters())?;
    let third = QuicNode::start(third, config(Some(seed), 2), &meters())?;
    let alive_at_first = |states: Vec<MemberState>| {
        states.len() == 2 && states.iter().all(|s| *s == MemberState::Alive)
    };
    wait_for("learn each other", || async {
        let mut all = true;
        for node in [&first, &second, &third] {
            all &= alive_at_first(view_states(node).await?);
        }
        Ok(all)
    })
    .await?;
    third.leave_and_shutdown(Duration::from_millis(300)).await?;
    second.shutdown().await?;
    wait_for("leave the first node without a quorum", || async {
        let status = first.topology().status(first.mesh().node()).await?;
        Ok(status.partitioned)
    })
    .await?;
    export();
    first.shutdown().await?;
    Ok(())
}

/// What `node` believes of the members of its view.
async fn view_states(
    node: &knhk_topology::QuicNode,
) -> Result<Vec<knhk_topology::MemberState>, ScenarioError> {
    let view = node.topology().view(node.mesh().node()).await?;
    Ok(view.iter().map(|m| m.state).collect())
}

/// Waits until `condition` holds, for at most [`CONVERGENCE_BOUND`].
async fn wait_for<F, Fut>(what: &'static str, mut condition: F) -> Result<(), ScenarioError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool, ScenarioError>>,
{
    let deadline = tokio::time::Instant::now() + CONVERGENCE_BOUND;
    while tokio::time::Instant::now() < deadline {
        if condition().await? {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(ScenarioError::Stuck(what, CONVERGENCE_BOUND))
}
