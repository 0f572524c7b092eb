//! `knhk-node demo`: N nodes over real QUIC on loopback in this process, admitted by
//! membership certificates of a throwaway cluster key; they join through one seed,
//! one write spreads to all while a progress bar shows it, then a summary table and an
//! SVG plot of the spread.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ed25519_dalek::SigningKey;
use indicatif::{ProgressBar, ProgressStyle};
use knhk_gossip::GossipConfig;
use knhk_security::NodeKey;
use knhk_topology::{MemberState, QuicNode, QuicNodeConfig, TopologyConfig, ViewConfig};
use knhk_transport::{InboundPolicy, QuicConfig};
use knhk_types::{
    AdmissionRule, AgentId, HierarchyLevel, MembershipCertificate, MembershipClaims, PeerInfo,
    Region, UnixMillis,
};

use crate::error::NodeError;

/// How long each phase may take before the demo gives up.
const PHASE_LIMIT: Duration = Duration::from_secs(60);
/// How often the nodes are polled.
const POLL: Duration = Duration::from_millis(2);

/// What to run.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// Nodes (2 to 100).
    pub nodes: usize,
    /// Where the SVG plot goes (`None`: no plot).
    pub plot: Option<PathBuf>,
}

/// What the demo measured.
#[derive(Clone, Debug)]
pub struct DemoReport {
    /// Nodes.
    pub nodes: usize,
    /// Time from start until every node saw every other alive.
    pub joined: Duration,
    /// Time from the write until each node had it, in order.
    pub arrivals: Vec<Duration>,
    /// Time from the write until every node's Merkle root was the same.
    pub equal_roots: Duration,
    /// Frames sent by all nodes from the write until equal roots.
    pub frames: u64,
    /// Bytes sent by all nodes from the write until equal roots.
    pub bytes: u64,
}

/// Runs the demo, drawing progress on stderr (when it is a terminal).
///
/// Errors: [`NodeError::Demo`] if a node cannot start or a phase does not finish
/// within a minute; [`NodeError::File`] if the plot cannot be written.
pub fn demo(options: &DemoOptions) -> Result<DemoReport, NodeError> {
    if !(2..=100).contains(&options.nodes) {
        return Err(NodeError::Usage(format!(
            "--nodes {}: must be 2 to 100",
            options.nodes
        )));
    }
    if let Some(plot) = &options.plot {
        check_writable(plot)?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|error| NodeError::Demo(format!("tokio: {error}")))?;
    let report = runtime.block_on(run(options.nodes))?;
    if let Some(plot) = &options.plot {
        crate::plot::spread(plot, &report)?;
    }
    Ok(report)
}

/// Fails now, not after the run, if `path` cannot be written.
fn check_writable(path: &Path) -> Result<(), NodeError> {
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map(drop)
        .map_err(|source| NodeError::File {
            path: path.to_owned(),
            source,
        })
}

async fn run(nodes: usize) -> Result<DemoReport, NodeError> {
    let started = Instant::now();
    let authority = SigningKey::from_bytes(&random_seed()?);
    let rule = Arc::new(AdmissionRule::new(
        AgentId::from_verifying_key(&authority.verifying_key()),
        "demo",
    ));
    let mut running: Vec<QuicNode> = Vec::with_capacity(nodes);
    let meter = opentelemetry::global::meter("knhk-node-demo");
    for i in 0..nodes {
        let key = NodeKey::from_seed(random_seed()?);
        let seeds = running
            .first()
            .map(|seed| PeerInfo::new(seed.id(), seed.local_addr()))
            .into_iter()
            .collect();
        let config = QuicNodeConfig {
            quic: QuicConfig {
                inbound_policy: InboundPolicy::Certified(rule.clone()),
                credentials: Some(certificate(&authority, key.agent_id())?),
                ..QuicConfig::default()
            },
            gossip: GossipConfig::local(),
            topology: TopologyConfig {
                probe_interval: Duration::from_millis(200),
                probe_timeout: Duration::from_millis(100),
                ..TopologyConfig::default()
            },
            view: ViewConfig {
                directory: Some(Arc::new(|_: &AgentId| true)),
                ..ViewConfig::default()
            },
            seeds,
            ..QuicNodeConfig::default()
        };
        let mut config = config;
        config.endpoint.seed = i as u64 + 1;
        let node = QuicNode::start(key, config, &meter)
            .map_err(|error| NodeError::Demo(format!("node {i} did not start: {error}")))?;
        running.push(node);
    }
    let outcome = spread(&running, started).await;
    // Stop every node at once (each stop closes its QUIC endpoint).
    let stops = running
        .into_iter()
        .map(|node| tokio::spawn(node.shutdown()));
    for stop in stops {
        let _ = stop.await;
    }
    outcome
}

async fn spread(running: &[QuicNode], started: Instant) -> Result<DemoReport, NodeError> {
    let nodes = running.len();
    let bar = progress_bar(nodes, "joining")?;
    let deadline = Instant::now() + PHASE_LIMIT;
    loop {
        let mut joined = 0;
        for node in running {
            let members = node
                .topology()
                .members(node.mesh().node())
                .await
                .map_err(|error| NodeError::Demo(error.to_string()))?;
            let alive = members
                .iter()
                .filter(|m| m.state == MemberState::Alive)
                .count();
            if alive + 1 >= nodes {
                joined += 1;
            }
        }
        bar.set_position(joined as u64);
        if joined == nodes {
            break;
        }
        if Instant::now() > deadline {
            bar.abandon_with_message("not every node joined within a minute");
            return Err(NodeError::Demo(format!(
                "{joined} of {nodes} nodes joined within a minute"
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let joined = started.elapsed();
    bar.finish_with_message(format!("every node sees {} others alive", nodes - 1));

    let before = totals(running).await?;
    let bar = progress_bar(nodes, "spreading")?;
    let written = Instant::now();
    running[0]
        .mesh()
        .put("demo/hello", b"world".to_vec())
        .await
        .map_err(|error| NodeError::Demo(format!("the write failed: {error}")))?;
    let mut arrivals: Vec<Option<Duration>> = vec![None; nodes];
    let deadline = Instant::now() + PHASE_LIMIT;
    while arrivals.iter().any(Option::is_none) {
        for (i, node) in running.iter().enumerate() {
            if arrivals[i].is_none()
                && node
                    .mesh()
                    .get("demo/hello")
                    .await
                    .map_err(|error| NodeError::Demo(error.to_string()))?
                    .is_some()
            {
                arrivals[i] = Some(written.elapsed());
            }
        }
        let have = arrivals.iter().flatten().count();
        bar.set_position(have as u64);
        if Instant::now() > deadline {
            bar.abandon_with_message("the write did not reach every node");
            return Err(NodeError::Demo(format!(
                "{have} of {nodes} nodes got the write within a minute"
            )));
        }
        tokio::time::sleep(POLL).await;
    }
    let mut arrivals: Vec<Duration> = arrivals.into_iter().flatten().collect();
    arrivals.sort_unstable();
    let last = arrivals.last().copied().unwrap_or_default();
    bar.finish_with_message(format!("every node has it after {:.1} ms", ms(last)));
    let deadline = Instant::now() + PHASE_LIMIT;
    loop {
        let mut roots = Vec::with_capacity(nodes);
        for node in running {
            let status = node
                .mesh()
                .status()
                .await
                .map_err(|error| NodeError::Demo(error.to_string()))?;
            roots.push(status.gossip.root);
        }
        if roots.windows(2).all(|pair| pair[0] == pair[1]) {
            break;
        }
        if Instant::now() > deadline {
            return Err(NodeError::Demo(
                "the roots did not agree within a minute".into(),
            ));
        }
        tokio::time::sleep(POLL).await;
    }
    let equal_roots = written.elapsed();
    let after = totals(running).await?;
    Ok(DemoReport {
        nodes,
        joined,
        arrivals,
        equal_roots,
        frames: after.0.saturating_sub(before.0),
        bytes: after.1.saturating_sub(before.1),
    })
}

/// A bar counting nodes (drawn on stderr, only when it is a terminal).
fn progress_bar(nodes: usize, phase: &'static str) -> Result<ProgressBar, NodeError> {
    let bar = ProgressBar::new(nodes as u64);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>9} [{bar:30}] {pos}/{len} {msg}")
            .map_err(|error| NodeError::Demo(error.to_string()))?
            .progress_chars("=> "),
    );
    bar.set_prefix(phase);
    Ok(bar)
}

/// Frames and bytes sent by all nodes so far.
async fn totals(running: &[QuicNode]) -> Result<(u64, u64), NodeError> {
    let mut frames = 0;
    let mut bytes = 0;
    for node in running {
        let status = node
            .mesh()
            .status()
            .await
            .map_err(|error| NodeError::Demo(error.to_string()))?;
        frames += status.transport.frames_sent;
        bytes += status.transport.bytes_sent;
    }
    Ok((frames, bytes))
}

fn certificate(authority: &SigningKey, agent: AgentId) -> Result<MembershipCertificate, NodeError> {
    let now = UnixMillis::from_system_time(SystemTime::now());
    let claims = MembershipClaims {
        cluster: "demo".into(),
        agent,
        region: Region::default(),
        role: HierarchyLevel::Edge,
        not_before: now,
        expires: now.saturating_add(Duration::from_secs(3_600)),
    };
    MembershipCertificate::issue(authority, claims)
        .map_err(|error| NodeError::Demo(format!("certificate: {error}")))
}

fn random_seed() -> Result<[u8; 32], NodeError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|error| NodeError::Demo(format!("randomness: {error}")))?;
    Ok(seed)
}

/// Milliseconds, fractional.
pub fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1_000.0
}

impl DemoReport {
    /// The summary table, as printed.
    pub fn table(&self) -> String {
        let at = |share: f64| {
            let index = ((self.arrivals.len() as f64 * share).ceil() as usize)
                .clamp(1, self.arrivals.len().max(1))
                - 1;
            self.arrivals.get(index).copied().unwrap_or_default()
        };
        let rows = [
            ("nodes", format!("{}", self.nodes)),
            (
                "joined (all see all alive)",
                format!("{:.0} ms", ms(self.joined)),
            ),
            ("write at half the nodes", format!("{:.1} ms", ms(at(0.5)))),
            ("write at every node", format!("{:.1} ms", ms(at(1.0)))),
            (
                "equal Merkle roots",
                format!("{:.1} ms", ms(self.equal_roots)),
            ),
            (
                "frames sent, write → equal roots",
                format!("{}", self.frames),
            ),
            ("bytes sent, write → equal roots", format!("{}", self.bytes)),
        ];
        let mut table = String::from("| measure | value |\n|---|---|\n");
        for (name, value) in rows {
            table.push_str(&format!("| {name} | {value} |\n"));
        }
        table
    }
}
