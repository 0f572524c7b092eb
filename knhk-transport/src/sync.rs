//! Lock types, swapped for loom's model-checked versions under `--cfg knhk_loom`.
//!
//! The registry uses its own cfg rather than `loom` because tokio reacts to
//! `--cfg loom`; the loom build also drops the `quic` and `memory` features, so no
//! tokio is compiled at all.

#[cfg(knhk_loom)]
pub(crate) use loom::sync::RwLock;
#[cfg(not(knhk_loom))]
pub(crate) use std::sync::RwLock;
