//! The static check on the project's registry and on broken fixture registries: each
//! fixture is rejected with a message naming the file and the group.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::assert_reported;

use std::path::{Path, PathBuf};

use xtask::checks::check;
use xtask::registry::Registry;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn problems_of(name: &str) -> Vec<String> {
    check(&Registry::load(&fixture(name)))
}

#[test]
fn the_project_registry_passes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../registry");
    let registry = Registry::load(&root);
    assert_eq!(check(&registry), Vec::<String>::new());
    assert!(registry.of_kind("metric").count() >= 20);
    assert!(registry.of_kind("span").count() >= 2);
}

#[test]
fn a_dangling_ref_is_rejected() {
    let problems = problems_of("dangling_ref");
    assert_reported(
        &problems,
        &[
            "gossip.yaml",
            "span.knhk.fixture.work",
            "knhk.fixture.missing",
            "does not resolve",
        ],
    );
    assert_eq!(problems.len(), 1, "{problems:#?}");
}

#[test]
fn a_metric_without_a_unit_is_rejected() {
    let problems = problems_of("metric_without_unit");
    assert_reported(
        &problems,
        &["metrics.yaml", "metric.knhk.fixture.count", "unit"],
    );
}

#[test]
fn a_duplicate_id_is_rejected() {
    let problems = problems_of("duplicate_id");
    assert_reported(
        &problems,
        &[
            "b.yaml",
            "metric.knhk.fixture.count",
            "duplicate group id",
            "a.yaml",
        ],
    );
}

#[test]
fn a_malformed_file_is_rejected() {
    let problems = problems_of("malformed_file");
    assert_reported(&problems, &["broken.yaml", "does not parse"]);
}

#[test]
fn bad_names_units_missing_span_kinds_and_extends_are_rejected() {
    let problems = problems_of("bad_names");
    assert_reported(
        &problems,
        &["names.yaml", "metric.knhk.Fixture.count", "lowercase"],
    );
    assert_reported(
        &problems,
        &["names.yaml", "metric.knhk.Fixture.count", "not UCUM"],
    );
    assert_reported(
        &problems,
        &["names.yaml", "span.knhk.fixture.work", "span_kind"],
    );
    assert_reported(
        &problems,
        &["names.yaml", "span.knhk.fixture.inherits", "extends"],
    );
}

#[test]
fn a_missing_manifest_is_reported() {
    let problems = check(&Registry::load(&fixture("does_not_exist")));
    assert_reported(&problems, &["registry_manifest.yaml", "cannot be read"]);
}
