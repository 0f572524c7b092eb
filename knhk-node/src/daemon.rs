//! [`Daemon`]: one running node as an operator runs it — the mesh node (gossip and
//! failure detection over QUIC), its state on disk, and the durable write path the
//! admin API uses.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant, SystemTime};

use knhk_crdt::{CrdtError, SavedState, SignedEntry};
use knhk_gossip::{GossipConfig, GossipError};
use knhk_security::NodeKey;
use knhk_topology::{QuicNode, QuicNodeConfig, TopologyConfig, ViewConfig};
use knhk_transport::{AllowList, InboundPolicy, QuicConfig};
use knhk_types::{AdmissionRule, AgentId, MembershipCertificate, UnixMillis};

use crate::config::{Admission, Settings};
use crate::error::{NodeError, StoreError};
use crate::store::{Batch, LEASE_BLOCK, Store};
use crate::writer::StoreWriter;

/// Updates the dashboard lists.
const RECENT_UPDATES: usize = 50;
/// How long dirty keys wait to be stored together.
const PERSIST_EVERY: Duration = Duration::from_millis(100);

/// One change, as the dashboard lists it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RecentUpdate {
    /// Milliseconds since the Unix epoch when this node saw it.
    pub at_ms: u64,
    /// The key.
    pub key: String,
    /// True for a deletion.
    pub deleted: bool,
    /// The start of the new value as text (at most [`PREVIEW_CHARS`] characters,
    /// `…` when cut), `"<N bytes, binary>"` when it is not UTF-8, empty for a deletion.
    pub preview: String,
}

/// How much of a value the recent updates show.
pub const PREVIEW_CHARS: usize = 80;

impl RecentUpdate {
    /// A change seen at `at_ms`: `value` is the new value, `None` for a deletion.
    pub fn new(at_ms: u64, key: String, value: Option<&[u8]>) -> Self {
        let preview = match value.map(std::str::from_utf8) {
            None => String::new(),
            Some(Ok(text)) if text.chars().count() > PREVIEW_CHARS => {
                let mut cut: String = text.chars().take(PREVIEW_CHARS).collect();
                cut.push('…');
                cut
            }
            Some(Ok(text)) => text.to_owned(),
            Some(Err(_)) => format!("<{} bytes, binary>", value.map_or(0, <[u8]>::len)),
        };
        Self {
            at_ms,
            key,
            deleted: value.is_none(),
            preview,
        }
    }
}

/// What the daemon reports of itself beyond the mesh.
#[derive(Clone, Debug)]
pub struct NodeInfo {
    /// The cluster's name.
    pub cluster: String,
    /// When it started.
    pub started: Instant,
    /// The database file.
    pub store_path: std::path::PathBuf,
    /// Keys restored from disk at start.
    pub keys_restored: usize,
    /// The admission mode's name.
    pub admission: &'static str,
    /// When this node's membership certificate expires (certificate admission only):
    /// peers refuse the node after it.
    pub certificate_expires: Option<UnixMillis>,
}

/// Why a write through the daemon failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The mesh refused it (limits, read-only in a minority partition, stopped).
    #[error(transparent)]
    Gossip(#[from] GossipError),
    /// It was applied and sent but could not be stored: not acknowledged.
    #[error("the write was applied but could not be stored: {0}")]
    Store(#[from] StoreError),
}

/// A running node.
#[derive(Debug)]
pub struct Daemon {
    node: QuicNode,
    writer: StoreWriter,
    leased_through: tokio::sync::Mutex<u64>,
    recent: Mutex<VecDeque<RecentUpdate>>,
    info: NodeInfo,
}

impl Daemon {
    /// Opens the store, leases write counters, and starts the node as `settings`
    /// say. Must be called inside a tokio runtime. Returns the daemon and the store's
    /// writer thread (joined at shutdown).
    ///
    /// Errors: [`NodeError::Key`] for an unreadable or unsafe key file,
    /// [`NodeError::Certificate`] for a certificate that is missing, malformed or not
    /// this node's, [`NodeError::Store`] for a data directory that cannot be used,
    /// [`NodeError::Topology`] if the QUIC address cannot be bound.
    pub fn start(
        settings: &Settings,
        key: NodeKey,
    ) -> Result<(Arc<Self>, std::thread::JoinHandle<()>), NodeError> {
        let id = key.agent_id();
        let quic = quic_config(settings, id)?;
        let certificate_expires = quic
            .credentials
            .as_ref()
            .map(|certificate| certificate.claims.expires);
        let gossip = gossip_config(settings);
        let opened = Store::open(
            &settings.data_dir,
            id,
            &settings.cluster,
            gossip.state.clone(),
        )?;
        let mut state = opened.state;
        // Every counter this node may have signed is at or below the old lease; the
        // new one is on disk before any counter of it is used.
        let floor = opened.leased_through.max(state.version().get(&id));
        let ceiling = floor.saturating_add(LEASE_BLOCK);
        opened.store.commit(&Batch {
            lease_through: Some(ceiling),
            ..Batch::default()
        })?;
        state.lease_counters(floor, ceiling);
        let store_path = opened.store.path().to_owned();
        let (writer, thread) = StoreWriter::spawn(opened.store)?;
        let mut endpoint = knhk_endpoint::EndpointConfig::default();
        if settings.gossip_preset == "wan" {
            endpoint.validator.max_clock_skew = Duration::from_secs(60);
        }
        let config = QuicNodeConfig {
            quic,
            endpoint,
            gossip,
            topology: TopologyConfig {
                probe_interval: settings.probe_interval,
                probe_timeout: settings.probe_timeout,
                advertise: settings.advertise,
                ..TopologyConfig::default()
            },
            view: ViewConfig {
                directory: Some(directory(&settings.admission, settings)),
                ..ViewConfig::default()
            },
            seeds: settings.seeds.clone(),
        };
        let meter = opentelemetry::global::meter("knhk-node");
        let node = QuicNode::start_from(key, config, state, &meter)?;
        let daemon = Arc::new(Self {
            node,
            writer,
            leased_through: tokio::sync::Mutex::new(ceiling),
            recent: Mutex::new(VecDeque::with_capacity(RECENT_UPDATES)),
            info: NodeInfo {
                cluster: settings.cluster.clone(),
                started: Instant::now(),
                store_path,
                keys_restored: opened.keys,
                admission: match settings.admission {
                    Admission::Certificate { .. } => "certificate",
                    Admission::AllowList(_) => "allow-list",
                    Admission::Open => "open",
                },
                certificate_expires,
            },
        });
        let updates = daemon.node.mesh().subscribe();
        tokio::spawn(persist(Arc::downgrade(&daemon), updates));
        Ok((daemon, thread))
    }

    /// The mesh node, to stop it (the store writer stops once this daemon is gone).
    pub fn into_node(self) -> QuicNode {
        self.node
    }

    /// The mesh node.
    pub fn node(&self) -> &QuicNode {
        &self.node
    }

    /// What the daemon reports of itself.
    pub fn info(&self) -> &NodeInfo {
        &self.info
    }

    /// The store writer's counters.
    pub fn store_stats(&self) -> &crate::writer::WriterStats {
        self.writer.stats()
    }

    /// The latest updates this node saw, newest last.
    pub fn recent_updates(&self) -> Vec<RecentUpdate> {
        self.recent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }

    /// Writes `value` under `key` (`None`: deletes it) and returns the signed entry
    /// once it is on disk: an acknowledged write survives a crash of this process.
    ///
    /// Errors: [`WriteError::Gossip`] if the mesh refuses it (nothing written);
    /// [`WriteError::Store`] if it was applied and sent but not stored.
    pub async fn write(
        &self,
        key: &str,
        value: Option<Vec<u8>>,
    ) -> Result<SignedEntry, WriteError> {
        let mesh = self.node.mesh();
        let mut extended = false;
        loop {
            let written = match &value {
                Some(value) => mesh.put(key, value.clone()).await,
                None => mesh.delete(key).await,
            };
            match written {
                Ok(entry) => {
                    self.writer
                        .commit(Batch {
                            entries: vec![entry.clone()],
                            proofs: vec![entry.clone()],
                            lease_through: None,
                        })
                        .await?;
                    return Ok(entry);
                }
                Err(GossipError::State(CrdtError::CounterLeaseExhausted { next, .. }))
                    if !extended =>
                {
                    self.extend_lease(next).await?;
                    extended = true;
                }
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// Leases counters through `needed - 1 + LEASE_BLOCK`, on disk before the mesh
    /// may use them.
    async fn extend_lease(&self, needed: u64) -> Result<(), WriteError> {
        let mut leased = self.leased_through.lock().await;
        if *leased < needed {
            let ceiling = needed.saturating_sub(1).saturating_add(LEASE_BLOCK);
            self.writer
                .commit(Batch {
                    lease_through: Some(ceiling),
                    ..Batch::default()
                })
                .await?;
            *leased = ceiling;
        }
        self.node.mesh().lease_counters(0, *leased).await?;
        Ok(())
    }

    /// Stores everything the node holds now (on shutdown, after the last write).
    ///
    /// Errors: [`WriteError::Gossip`] if the node has stopped, [`WriteError::Store`].
    pub async fn store_everything(&self) -> Result<usize, WriteError> {
        let saved = self.node.mesh().read_state(SavedState::of).await?;
        let keys = saved.entries.len();
        self.writer
            .commit(Batch {
                entries: saved.entries,
                proofs: saved.proofs,
                lease_through: None,
            })
            .await?;
        Ok(keys)
    }

    fn note(&self, update: RecentUpdate) {
        let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        if recent.len() == RECENT_UPDATES {
            recent.pop_front();
        }
        recent.push_back(update);
    }
}

/// Stores what peers send, in batches: keys that changed are collected for
/// [`PERSIST_EVERY`], then their winning entries and their writers' proofs are read
/// in one call and queued for the writer. A subscriber that fell behind stores the
/// whole state once. Ends when the node stops. Holds the daemon only while it stores
/// a batch, so that shutdown can take it back.
async fn persist(daemon: Weak<Daemon>, mut updates: knhk_gossip::Subscription) {
    let mut missed = 0;
    while let Some(first) = updates.next().await {
        let mut keys = vec![first];
        let deadline = tokio::time::Instant::now() + PERSIST_EVERY;
        while let Ok(Some(update)) = tokio::time::timeout_at(deadline, updates.next()).await {
            keys.push(update);
            if keys.len() >= 4_096 {
                break;
            }
        }
        let Some(daemon) = daemon.upgrade() else {
            break;
        };
        let now = UnixMillis::from_system_time(SystemTime::now()).0;
        for update in &keys {
            daemon.note(RecentUpdate::new(
                now,
                update.key.clone(),
                update.value.as_deref(),
            ));
        }
        let whole = updates.missed() > missed;
        missed = updates.missed();
        let names: Vec<String> = keys.into_iter().map(|update| update.key).collect();
        let read = daemon
            .node
            .mesh()
            .read_state(move |state| {
                if whole {
                    let saved = SavedState::of(state);
                    return (saved.entries, saved.proofs);
                }
                let entries = state.entries_for(&names);
                let writers: std::collections::BTreeSet<AgentId> =
                    entries.iter().map(|entry| entry.writer).collect();
                let proofs = writers
                    .iter()
                    .filter_map(|writer| state.proof(writer).cloned())
                    .collect();
                (entries, proofs)
            })
            .await;
        let Ok((entries, proofs)) = read else { break };
        let batch = Batch {
            entries,
            proofs,
            lease_through: None,
        };
        if daemon.writer.submit(batch).await.is_err() {
            break;
        }
    }
}

fn gossip_config(settings: &Settings) -> GossipConfig {
    let mut gossip = match settings.gossip_preset.as_str() {
        "wan" => GossipConfig::wan(),
        "local" => GossipConfig::local(),
        _ => GossipConfig::lan(),
    };
    if let Some(interval) = settings.gossip_interval {
        gossip.interval = interval;
    }
    if let Some(fanout) = settings.gossip_fanout {
        gossip.fanout = fanout;
    }
    gossip
}

/// The transport's admission policy and this node's credentials.
fn quic_config(settings: &Settings, id: AgentId) -> Result<QuicConfig, NodeError> {
    let (inbound_policy, credentials) = match &settings.admission {
        Admission::Certificate {
            authority,
            certificate_file,
        } => {
            let certificate =
                load_certificate(certificate_file, *authority, id, &settings.cluster)?;
            let rule = AdmissionRule::new(*authority, settings.cluster.clone());
            (InboundPolicy::Certified(Arc::new(rule)), Some(certificate))
        }
        Admission::AllowList(ids) => {
            let list = AllowList::new(
                ids.iter()
                    .copied()
                    .chain(settings.seeds.iter().map(|s| s.id)),
            );
            (InboundPolicy::AllowList(Arc::new(list)), None)
        }
        Admission::Open => (InboundPolicy::AnyAuthenticatedPeer, None),
    };
    Ok(QuicConfig {
        bind_addr: settings.bind,
        inbound_policy,
        credentials,
        ..QuicConfig::default()
    })
}

/// Who may be a member of the view: anyone the transport would admit. With
/// certificates and open admission that is decided when a connection is made, so
/// every id may be heard of; with an allow-list only listed ids and the seeds.
fn directory(admission: &Admission, settings: &Settings) -> knhk_topology::Directory {
    match admission {
        Admission::AllowList(ids) => {
            let ids: std::collections::HashSet<AgentId> = ids
                .iter()
                .copied()
                .chain(settings.seeds.iter().map(|seed| seed.id))
                .collect();
            Arc::new(move |id: &AgentId| ids.contains(id))
        }
        Admission::Certificate { .. } | Admission::Open => Arc::new(|_: &AgentId| true),
    }
}

/// Reads this node's certificate and checks it as a peer will.
///
/// Errors: [`NodeError::Certificate`] naming what is wrong.
pub fn load_certificate(
    path: &Path,
    authority: AgentId,
    id: AgentId,
    cluster: &str,
) -> Result<MembershipCertificate, NodeError> {
    let refused = |reason: String| NodeError::Certificate {
        path: path.to_owned(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|error| refused(error.to_string()))?;
    let certificate: MembershipCertificate = text
        .parse()
        .map_err(|error: knhk_types::AdmissionError| refused(error.to_string()))?;
    let now = UnixMillis::from_system_time(SystemTime::now());
    AdmissionRule::new(authority, cluster)
        .check(&certificate, &id, now)
        .map_err(|error| refused(format!("peers will refuse it: {error}")))?;
    Ok(certificate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_text_value_is_shown_whole() {
        let update = RecentUpdate::new(7, "k".into(), Some(b"hello"));
        assert_eq!(update.preview, "hello");
        assert!(!update.deleted);
        assert_eq!(update.at_ms, 7);
    }

    #[test]
    fn a_long_text_value_is_cut_at_preview_chars_with_an_ellipsis() {
        let long = "é".repeat(PREVIEW_CHARS + 5);
        let update = RecentUpdate::new(0, "k".into(), Some(long.as_bytes()));
        assert_eq!(update.preview.chars().count(), PREVIEW_CHARS + 1);
        assert!(update.preview.ends_with('…'));
        assert!(update.preview.starts_with("éé"));
    }

    #[test]
    fn a_binary_value_is_named_by_its_length() {
        let update = RecentUpdate::new(0, "k".into(), Some(&[0xff, 0xfe, 0x00]));
        assert_eq!(update.preview, "<3 bytes, binary>");
    }

    #[test]
    fn a_deletion_has_no_preview() {
        let update = RecentUpdate::new(0, "k".into(), None);
        assert!(update.deleted);
        assert!(update.preview.is_empty());
    }
}
