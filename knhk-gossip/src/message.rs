//! What gossip peers say to each other, inside signed envelopes.

use knhk_crdt::{BucketDigests, Hash, NodeId, SignedEntry};
use knhk_types::{MessageKind, VersionPage};
use serde::{Deserialize, Serialize};

/// One gossip message (postcard, as an envelope payload).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum GossipMessage {
    /// Round start: our root, and a page of our version vector only when we believe
    /// we differ from this peer (so an idle exchange is a root and nothing more). The
    /// page is the whole vector unless it has more writers than fit one.
    Pull {
        root: Hash,
        version: Option<VersionPage>,
    },
    /// Answer to a pull: our root, what the puller lacks within its page's range (an
    /// encoded delta), and our version over that range when the roots differ, so the
    /// puller can push back what we lack.
    PullReply {
        root: Hash,
        delta: Option<Vec<u8>>,
        version: Option<VersionPage>,
    },
    /// News, or what the receiver lacks: an encoded delta.
    Push { delta: Vec<u8> },
    /// Merkle diff question: node hashes or bucket digests wanted, in session `session`.
    DiffAsk {
        session: u64,
        nodes: Vec<NodeId>,
        buckets: Vec<u32>,
    },
    /// Merkle diff answer for session `session` (a late answer to an older session is
    /// recognised and ignored).
    DiffAnswer {
        session: u64,
        nodes: Vec<(NodeId, Hash)>,
        buckets: Vec<BucketDigests>,
    },
    /// Anti-entropy: send me your entries for these keys.
    EntriesWanted { keys: Vec<String> },
    /// Anti-entropy: entries for keys found to differ.
    Entries { entries: Vec<SignedEntry> },
}

impl GossipMessage {
    /// The envelope kind this message travels under.
    pub(crate) fn kind(&self) -> MessageKind {
        match self {
            Self::Pull { .. } => MessageKind::GossipPull,
            Self::PullReply { .. } => MessageKind::GossipPullReply,
            _ => MessageKind::GossipPush,
        }
    }
}
