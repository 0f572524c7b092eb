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
    assert_reported(&problems, &["manifest.yaml", "cannot be read"]);
}

#[test]
fn a_junk_key_inside_an_enum_member_is_rejected() {
    let problems = problems_of("junk_in_enum_member");
    assert_reported(
        &problems,
        &[
            "security.yaml",
            "registry.knhk.fixture.security",
            "knhk.fixture.rejection.reason",
            "unknown field",
            "nonce) pair already accepted.",
        ],
    );
    assert_eq!(problems.len(), 1, "{problems:#?}");
}

#[test]
fn an_unknown_group_field_is_rejected_naming_the_group() {
    let problems = problems_of("unknown_property");
    assert_reported(
        &problems,
        &[
            "metrics.yaml",
            "metric.knhk.fixture.count",
            "unknown field `units`",
        ],
    );
}

#[test]
fn a_legacy_manifest_is_rejected() {
    let problems = problems_of("legacy_manifest");
    assert_reported(
        &problems,
        &[
            "registry_manifest.yaml",
            "legacy",
            "rename it manifest.yaml",
        ],
    );
    assert_reported(&problems, &["manifest.yaml", "cannot be read"]);
}

#[test]
fn a_manifest_with_deprecated_fields_or_a_bad_schema_url_is_rejected() {
    use xtask::checks::check_schema_url;
    let dir = std::env::temp_dir().join(format!("knhk-manifest-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("manifest.yaml"),
        "schema_url: https://knhk.dev/schemas/knhk/0.1.0\nsemconv_version: 0.1.0\nschema_base_url: https://knhk.dev/schemas/\n",
    )
    .unwrap();
    let problems = check(&Registry::load(&dir));
    std::fs::remove_dir_all(&dir).unwrap();
    assert_reported(&problems, &["manifest.yaml", "deprecated", "schema_url"]);
    assert!(check_schema_url("https://knhk.dev/schemas/knhk/0.2.0").is_ok());
    for bad in [
        "knhk.dev/schemas/0.1.0",
        "https://knhk.dev",
        "https://knhk.dev/schemas/latest",
        "https:///0.1.0",
    ] {
        assert!(check_schema_url(bad).is_err(), "{bad} accepted");
    }
}

#[test]
fn a_stable_signal_with_a_development_attribute_is_rejected() {
    let problems = problems_of("stable_uses_development");
    assert_reported(
        &problems,
        &[
            "metrics.yaml",
            "metric.knhk.fixture.count",
            "knhk.fixture.kind",
            "not stable",
        ],
    );
}
