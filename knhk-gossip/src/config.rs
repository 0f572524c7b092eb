//! [`GossipConfig`]: every knob of the gossip layer, with production defaults and
//! named presets.

use std::time::Duration;

use knhk_crdt::StateConfig;

/// Settings of a [`crate::GossipLayer`].
#[derive(Clone, Debug)]
pub struct GossipConfig {
    /// Time between rounds. Default 100 ms.
    pub interval: Duration,
    /// Peers contacted per round, and per forwarded piece of news. Default 3.
    pub fanout: usize,
    /// Forward news (merged deltas and local writes) to `fanout` peers as soon as it
    /// arrives, rather than waiting for the next round. Default true; false is
    /// textbook round-based push-pull.
    pub forward_news: bool,
    /// Start the first round at once instead of at a random point of the first
    /// interval, so nodes started together run their rounds at the same instants
    /// (synchronous-rounds simulation). Default false: in production, nodes started
    /// together would gossip in lock step.
    pub aligned_rounds: bool,
    /// Rounds in a row in which every sampled peer must report our root before we call
    /// ourselves converged. Default 3.
    pub convergence_rounds: u32,
    /// Every this many rounds, run a Merkle anti-entropy session with a peer whose root
    /// differs from ours (it also runs at once when version vectors agree but roots do
    /// not). Default 10.
    pub anti_entropy_every: u64,
    /// Merkle diff sessions in flight at once. Default 8.
    pub max_diff_sessions: usize,
    /// Rounds after which an unanswered diff session or pull is dropped. Default 10.
    pub diff_timeout_rounds: u64,
    /// Budget for keys and values in one delta message; larger deltas go in parts.
    /// Default 512 KiB (frames are 1 MiB).
    pub max_delta_bytes: usize,
    /// Deltas longer than this are zstd-compressed. Default 512 bytes.
    pub compress_above: usize,
    /// News is forwarded at once only in deltas up to this size; larger deltas are
    /// catch-up, not news, and forwarding them would multiply bandwidth at every hop.
    /// Default 64 KiB.
    pub forward_max_bytes: usize,
    /// Most keys exchanged in one anti-entropy entries message. Default 4,096.
    pub max_diff_keys: usize,
    /// Accept data only from writers that are this node or in its peer view. Default
    /// true: otherwise one member could fill our version vector with made-up writers
    /// (each one key and a fresh signature) until our pulls no longer fit a frame.
    pub members_only_writers: bool,
    /// Signature checks one peer's data may cost per second (about 50 µs each cold,
    /// free from the cache); data beyond it is dropped and comes again later. Default
    /// 16,384: room for a busy honest writer and several catch-up deltas a second, and
    /// each check is of a new entry the peer (a member) must have signed itself.
    pub max_verifications_per_peer_second: usize,
    /// Pulls and answers whose version page names more writers than this are
    /// ignored. Default 32,768 (more than a 1 MiB frame can carry).
    pub max_version_writers: usize,
    /// Writers per page of our version vector in pulls and answers: a vector with
    /// more writers goes a page at a time (each pull the next page; each answer within
    /// the range its pull named), so version exchanges fit a frame at any writer
    /// count. Default 8,192 (about 350 KB, beside a `max_delta_bytes` delta in one
    /// frame); capped by `max_version_writers`.
    pub version_page_writers: usize,
    /// Limits of the replicated state.
    pub state: StateConfig,
}

impl Default for GossipConfig {
    fn default() -> Self {
        Self::lan()
    }
}

impl GossipConfig {
    /// One data centre (the default): rounds every 100 ms, fanout 3.
    pub fn lan() -> Self {
        Self {
            interval: Duration::from_millis(100),
            fanout: 3,
            forward_news: true,
            aligned_rounds: false,
            convergence_rounds: 3,
            anti_entropy_every: 10,
            max_diff_sessions: 8,
            diff_timeout_rounds: 10,
            max_delta_bytes: 512 * 1024,
            compress_above: 512,
            forward_max_bytes: 64 * 1024,
            max_diff_keys: 4_096,
            members_only_writers: true,
            max_verifications_per_peer_second: 16_384,
            max_version_writers: 32_768,
            version_page_writers: 8_192,
            state: StateConfig::default(),
        }
    }

    /// Across regions (round trips of 50–300 ms): rounds every 500 ms, so a pull is
    /// answered within its round, and fanout 4 to make up for the slower rounds.
    pub fn wan() -> Self {
        Self {
            interval: Duration::from_millis(500),
            fanout: 4,
            ..Self::lan()
        }
    }

    /// One machine (loopback, tests, demos): rounds every 20 ms, so convergence is
    /// quick to watch.
    pub fn local() -> Self {
        Self {
            interval: Duration::from_millis(20),
            ..Self::lan()
        }
    }
}
