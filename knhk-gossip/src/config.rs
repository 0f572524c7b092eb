//! [`GossipConfig`]: every knob of the gossip core, with production defaults.

use std::time::Duration;

use knhk_crdt::StateConfig;
use knhk_security::ValidatorConfig;

/// Settings of a [`crate::GossipCore`].
#[derive(Clone, Debug)]
pub struct GossipConfig {
    /// Time between rounds. Default 100 ms.
    pub interval: Duration,
    /// Peers contacted per round, and per forwarded piece of news. Default 3.
    pub fanout: usize,
    /// Forward news to `fanout` peers as soon as it arrives, rather than waiting for
    /// the next round. Default true.
    pub forward_news: bool,
    /// Rounds in a row in which every sampled peer must report our root before we call
    /// ourselves converged. Default 3.
    pub convergence_rounds: u32,
    /// Every this many rounds, run a Merkle anti-entropy session with a peer whose root
    /// differs from ours (it also runs at once when version vectors agree but roots do
    /// not). Default 10.
    pub anti_entropy_every: u64,
    /// Outputs (messages, timers, events) queued before new ones are dropped and
    /// counted. Default 65,536.
    pub max_outbound: usize,
    /// Merkle diff sessions in flight at once. Default 8.
    pub max_diff_sessions: usize,
    /// Rounds after which an unanswered diff session is dropped. Default 10.
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
    /// Seed of the core's random number generator (peer sampling, start jitter). Give
    /// each node its own; the same seed replays the same choices.
    pub seed: u64,
    /// Limits of the replicated state.
    pub state: StateConfig,
    /// The Byzantine gate every inbound frame passes.
    pub validator: ValidatorConfig,
}

impl Default for GossipConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_millis(100),
            fanout: 3,
            forward_news: true,
            convergence_rounds: 3,
            anti_entropy_every: 10,
            max_outbound: 65_536,
            max_diff_sessions: 8,
            diff_timeout_rounds: 10,
            max_delta_bytes: 512 * 1024,
            compress_above: 512,
            forward_max_bytes: 64 * 1024,
            max_diff_keys: 4_096,
            seed: 0,
            state: StateConfig::default(),
            validator: ValidatorConfig::default(),
        }
    }
}
