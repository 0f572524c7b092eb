//! The checks behind `cargo xtask weaver`, as a library so that tests can drive them:
//!
//! - [`registry`]: loads the OpenTelemetry semantic-convention registry (Weaver format).
//! - [`checks`]: the static check (every file parses; every group has id, type, brief,
//!   stability; every `ref` resolves; metrics have an instrument and a unit; no
//!   duplicate ids; OpenTelemetry naming rules).
//! - [`live`]: compares what a run emitted with the registry, both ways.
//! - [`generate`]: the Rust names of `knhk_telemetry::semconv` and
//!   `docs/TELEMETRY.md`, both generated from the registry.

pub mod checks;
pub mod generate;
pub mod live;
pub mod registry;
