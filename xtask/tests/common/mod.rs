//! Shared by the xtask tests.

/// Fails unless some problem mentions every needle.
pub fn assert_reported(problems: &[String], needles: &[&str]) {
    assert!(
        problems
            .iter()
            .any(|problem| needles.iter().all(|needle| problem.contains(needle))),
        "no problem mentions all of {needles:?}: {problems:#?}"
    );
}
