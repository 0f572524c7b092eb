//! The layering rule of `ARCHITECTURE.md`: a crate depends only on crates of a lower
//! layer, so a lower crate never names a higher one.

use std::process::Command;

/// Each workspace crate and its layer. A new `knhk-*` crate must be added here.
const LAYERS: &[(&str, u8)] = &[
    ("knhk-types", 0),
    ("knhk-telemetry", 0),
    ("knhk-security", 1),
    ("knhk-transport", 1),
    ("knhk-crdt", 2),
    ("knhk-endpoint", 2),
    ("knhk-gossip", 3),
    ("knhk-topology", 4),
    ("knhk-regional", 5),
    ("knhk-hierarchy", 6),
    ("knhk-node", 7),
    ("knhk-bench", 8),
    ("xtask", 9),
];

/// The crate `cargo hakari` manages (`.config/hakari.toml`): every crate depends on it
/// so that one build serves every `-p` (it unifies third-party features). It holds no
/// code and names no workspace crate, so it stands outside the layers.
const WORKSPACE_HACK: &str = "knhk-workspace-hack";

fn layer_of(name: &str) -> Option<u8> {
    LAYERS
        .iter()
        .find(|(crate_name, _)| *crate_name == name)
        .map(|(_, layer)| *layer)
}

/// Reads `cargo metadata` and fails on any dependency that is not strictly downward
/// (dev-dependencies included: a test must not pull in a higher layer either).
pub(crate) fn check() -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .output()
        .map_err(|e| format!("cargo metadata: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout)
        .map_err(|e| format!("cargo metadata output: {e}"))?;
    let packages = metadata["packages"]
        .as_array()
        .ok_or("cargo metadata: no packages")?;
    let mut violations = Vec::new();
    for package in packages {
        let name = package["name"].as_str().unwrap_or_default();
        if name == WORKSPACE_HACK {
            // Only third-party crates: anything of ours in it would be a cycle.
            for dependency in package["dependencies"].as_array().into_iter().flatten() {
                let target = dependency["name"].as_str().unwrap_or_default();
                if layer_of(target).is_some() {
                    violations.push(format!("{WORKSPACE_HACK} depends on {target}"));
                }
            }
            continue;
        }
        let Some(layer) = layer_of(name) else {
            violations.push(format!("{name} has no layer in xtask/src/layers.rs"));
            continue;
        };
        for dependency in package["dependencies"].as_array().into_iter().flatten() {
            let target = dependency["name"].as_str().unwrap_or_default();
            // A crate's dev-dependency on itself (to turn on its own test features for
            // its integration tests) points nowhere new.
            if target == name {
                continue;
            }
            if let Some(target_layer) = layer_of(target)
                && target_layer >= layer
            {
                violations.push(format!(
                    "{name} (layer {layer}) depends on {target} (layer {target_layer})"
                ));
            }
        }
    }
    if violations.is_empty() {
        eprintln!(
            "    {} crates, every dependency points down",
            packages.len()
        );
        Ok(())
    } else {
        Err(violations.join("; "))
    }
}
