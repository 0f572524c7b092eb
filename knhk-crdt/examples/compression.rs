//! Measures zstd delta compression on realistic agent-state payloads.
//!
//! ```text
//! cargo run --release -p knhk-crdt --example compression
//! ```
//!
//! Three payload shapes a mesh of agents replicates: JSON status documents, small
//! counters, and random (incompressible) bytes. For each, deltas of 1, 10, 100 and 1,000
//! entries are encoded with and without compression; the table prints both sizes and
//! the ratio. Values come from a seeded generator, so every run prints the same table.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use knhk_crdt::{DEFAULT_COMPRESS_ABOVE, StateConfig, VersionedState};
use knhk_security::NodeKey;
use knhk_types::VersionVector;

/// xorshift64*: a tiny seeded generator so the table is reproducible.
struct Seeded(u64);

impl Seeded {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn status_json(rng: &mut Seeded, n: usize) -> Vec<u8> {
    let states = ["idle", "running", "blocked", "draining"];
    let regions = ["us-east-1", "eu-west-1", "ap-southeast-1"];
    format!(
        r#"{{"agent":"agent-{n:06}","state":"{}","region":"{}","load":{:.3},"queue":{},"task":"task-{:08x}","heartbeat_ms":{}}}"#,
        states[(rng.next() % 4) as usize],
        regions[(rng.next() % 3) as usize],
        (rng.next() % 1000) as f64 / 1000.0,
        rng.next() % 64,
        rng.next() as u32,
        knhk_types::UnixMillis::VIRTUAL_START.0 + rng.next() % 100_000,
    )
    .into_bytes()
}

fn main() {
    let writer = NodeKey::from_seed([7; 32]);
    println!("| payload | entries | raw bytes | encoded bytes | ratio |");
    println!("|---|---|---|---|---|");
    type Payload = fn(&mut Seeded, usize) -> Vec<u8>;
    let shapes: [(&str, Payload); 3] = [
        ("JSON agent status (~150 B)", status_json),
        ("u64 counter (8 B)", |rng, _| {
            rng.next().to_le_bytes().to_vec()
        }),
        ("random bytes (128 B)", |rng, _| {
            (0..16).flat_map(|_| rng.next().to_le_bytes()).collect()
        }),
    ];
    for (name, payload) in shapes {
        for count in [1usize, 10, 100, 1_000] {
            let mut rng = Seeded(0x9e37_79b9_7f4a_7c15);
            let mut state = VersionedState::new(StateConfig::default());
            for n in 0..count {
                state
                    .put(
                        &writer,
                        &format!("agent/{n:06}/status"),
                        payload(&mut rng, n),
                    )
                    .unwrap();
            }
            let delta = state.delta_since(&VersionVector::new());
            let raw = delta.encode(usize::MAX).len();
            let encoded = delta.encode(DEFAULT_COMPRESS_ABOVE).len();
            println!(
                "| {name} | {count} | {raw} | {encoded} | {:.2} |",
                raw as f64 / encoded as f64
            );
        }
    }
}
