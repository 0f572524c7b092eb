//! The operator documents against the code: every metric name the alert rules and the
//! runbook use is one `/metrics` serves (a registry metric under its Prometheus name),
//! every alert has its runbook section, and the rules pass `promtool check rules`
//! where promtool is installed (`.ci/run` installs it).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;

use knhk_telemetry::semconv;

const ALERTS: &str = include_str!("../../deploy/prometheus-alerts.yml");
const RUNBOOK: &str = include_str!("../../docs/RUNBOOK.md");
const DEPLOYMENT: &str = include_str!("../../docs/DEPLOYMENT.md");

/// Every `knhk_area_…` word in `text` (metric names and label names alike; a bare
/// `knhk_gossip` is a crate, as in `RUST_LOG=knhk_gossip=debug`).
fn knhk_names(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("knhk_") && word.matches('_').count() >= 2)
        .map(str::to_owned)
        .collect()
}

/// Metric family names, their histogram series, and the label names `/metrics` uses.
fn served_names() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for spec in semconv::metric::ALL {
        let name = spec.prometheus_name();
        for suffix in ["", "_bucket", "_sum", "_count"] {
            names.insert(format!("{name}{suffix}"));
        }
    }
    for attribute in semconv::attribute::ALL {
        names.insert(attribute.replace('.', "_"));
    }
    names
}

#[test]
fn every_name_in_the_alert_rules_and_the_runbook_is_served() {
    let served = served_names();
    for (document, text) in [
        ("deploy/prometheus-alerts.yml", ALERTS),
        ("docs/RUNBOOK.md", RUNBOOK),
        ("docs/DEPLOYMENT.md", DEPLOYMENT),
    ] {
        let unknown: Vec<String> = knhk_names(text)
            .into_iter()
            .filter(|name| !served.contains(name))
            .collect();
        assert!(
            unknown.is_empty(),
            "{document} names what /metrics does not serve: {unknown:?}"
        );
    }
}

#[test]
fn every_alert_has_its_runbook_section() {
    let rules: serde_yaml::Value = serde_yaml::from_str(ALERTS).unwrap();
    let mut alerts = Vec::new();
    for group in rules["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            let name = rule["alert"].as_str().unwrap();
            let anchor = format!("docs/RUNBOOK.md#{}", name.to_lowercase());
            assert_eq!(
                rule["annotations"]["runbook"].as_str(),
                Some(anchor.as_str()),
                "{name}'s runbook annotation"
            );
            assert!(
                RUNBOOK.contains(&format!("\n## {name}\n")),
                "docs/RUNBOOK.md has no section for {name}"
            );
            alerts.push(name.to_owned());
        }
    }
    assert!(alerts.len() >= 10, "{alerts:?}");
}

#[test]
fn promtool_accepts_the_alert_rules() {
    let Some(promtool) = common::tool("promtool") else {
        return;
    };
    let rules = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/prometheus-alerts.yml"
    );
    let output = std::process::Command::new(promtool)
        .args(["check", "rules", rules])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
