//! The static check of a registry: structure, references, uniqueness and naming.
//! Every problem names its file and group.

use std::collections::{BTreeMap, BTreeSet};

use crate::registry::{Located, MANIFEST, Registry, attribute_type, span_name};

const GROUP_TYPES: [&str; 6] = [
    "attribute_group",
    "span",
    "metric",
    "event",
    "resource",
    "entity",
];
const STABILITIES: [&str; 5] = [
    "development",
    "alpha",
    "beta",
    "release_candidate",
    "stable",
];
const INSTRUMENTS: [&str; 4] = ["counter", "updowncounter", "gauge", "histogram"];
const SPAN_KINDS: [&str; 5] = ["client", "server", "producer", "consumer", "internal"];
const REQUIREMENT_LEVELS: [&str; 3] = ["required", "recommended", "opt_in"];
/// Every name this project defines lives under this namespace...
const NAMESPACE: &str = "knhk.";
/// ...except these OpenTelemetry semantic-convention attributes, which the SDK puts on
/// every resource: the registry defines copies of them (with their semconv types) so
/// that a live check sees every attribute the mesh exports.
pub const OTEL_RESOURCE_ATTRIBUTES: [(&str, &str); 4] = [
    ("service.name", "string"),
    ("telemetry.sdk.language", "string"),
    ("telemetry.sdk.name", "string"),
    ("telemetry.sdk.version", "string"),
];

/// Runs every static check; returns one line per problem (empty when the registry is
/// sound).
pub fn check(registry: &Registry) -> Vec<String> {
    let mut problems = registry.load_errors.clone();
    check_manifest(registry, &mut problems);
    let defined = defined_attributes(registry, &mut problems);
    let mut ids = BTreeMap::new();
    let mut signal_names = BTreeMap::new();
    for located in &registry.groups {
        let at = where_(located);
        let group = &located.group;
        let Some(id) = group.id.as_deref() else {
            problems.push(format!("{at}: a group has no `id`"));
            continue;
        };
        if let Some(first) = ids.insert(id.to_owned(), located.file.display().to_string()) {
            problems.push(format!(
                "{at}: duplicate group id (first defined in {first})"
            ));
        }
        let kind = group.kind.as_deref().unwrap_or("");
        if !GROUP_TYPES.contains(&kind) {
            problems.push(format!(
                "{at}: `type` must be one of {GROUP_TYPES:?}, not {kind:?}"
            ));
        }
        if group
            .brief
            .as_deref()
            .is_none_or(|brief| brief.trim().is_empty())
        {
            problems.push(format!("{at}: no `brief`"));
        }
        match group.stability.as_deref() {
            Some(level) if !STABILITIES.contains(&level) => problems.push(format!(
                "{at}: `stability` must be one of {STABILITIES:?}, not {level:?}"
            )),
            None if kind != "attribute_group" => problems.push(format!("{at}: no `stability`")),
            _ => {}
        }
        if group.extends.is_some() {
            problems.push(format!(
                "{at}: `extends` is not supported by this project's live check; list the attributes on the group"
            ));
        }
        check_attribute_uses(located, &defined, &mut problems);
        check_stable_uses(registry, located, &mut problems);
        match kind {
            "metric" => check_metric(located, &mut signal_names, &mut problems),
            "span" => check_span(located, &mut signal_names, &mut problems),
            "event" => check_event(located, &mut signal_names, &mut problems),
            _ => {}
        }
    }
    problems
}

fn where_(located: &Located) -> String {
    format!(
        "{}: group `{}`",
        located.file.display(),
        located.group.id.as_deref().unwrap_or("<no id>")
    )
}

fn check_manifest(registry: &Registry, problems: &mut Vec<String>) {
    let Some(manifest) = &registry.manifest else {
        return;
    };
    match manifest.schema_url.as_deref() {
        None | Some("") => problems.push(format!("{MANIFEST}: `schema_url` is required")),
        Some(url) => {
            if let Err(problem) = check_schema_url(url) {
                problems.push(format!("{MANIFEST}: `schema_url` {url:?}: {problem}"));
            }
        }
    }
    if manifest.semconv_version.is_some() || manifest.schema_base_url.is_some() {
        problems.push(format!(
            "{MANIFEST}: `semconv_version` and `schema_base_url` are deprecated (Weaver warns): \
             name the registry and its version in `schema_url` instead"
        ));
    }
    if manifest.dependencies.is_some() {
        problems.push(format!(
            "{MANIFEST}: `dependencies` are not resolved by this project's check: define the \
             attributes used in this registry"
        ));
    }
    if let Some(level) = manifest.stability.as_deref()
        && !STABILITIES.contains(&level)
    {
        problems.push(format!(
            "{MANIFEST}: `stability` must be one of {STABILITIES:?}, not {level:?}"
        ));
    }
}

/// A schema URL as Weaver parses it: `http[s]://host/<name path>/<version>`, the version
/// a semantic version (`1.2.3`, optionally with a leading `v`).
pub fn check_schema_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or("must start with https:// or http://")?;
    let rest = rest.trim_end_matches('/');
    let (host, path) = rest
        .split_once('/')
        .ok_or("needs a path ending in a version")?;
    if host.is_empty() || host.chars().any(|c| c.is_whitespace()) {
        return Err("has no valid host".into());
    }
    let version = path.rsplit('/').next().unwrap_or_default();
    let numbers: Vec<&str> = version.trim_start_matches('v').split('.').collect();
    let semantic = numbers.len() == 3
        && numbers
            .iter()
            .all(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
    if !semantic {
        return Err(format!(
            "its last segment {version:?} must be a version like 1.2.3"
        ));
    }
    Ok(())
}

/// Every attribute defined anywhere, checked for its own fields and for duplicates.
fn defined_attributes(registry: &Registry, problems: &mut Vec<String>) -> BTreeSet<String> {
    let mut defined: BTreeMap<String, String> = BTreeMap::new();
    for located in &registry.groups {
        let at = where_(located);
        for attribute in &located.group.attributes {
            let Some(id) = attribute.id.as_deref() else {
                continue;
            };
            if let Some(first) = defined.insert(id.to_owned(), at.clone()) {
                problems.push(format!(
                    "{at}: attribute `{id}` is defined twice (first in {first})"
                ));
            }
            let otel_type = OTEL_RESOURCE_ATTRIBUTES
                .iter()
                .find(|(name, _)| *name == id)
                .map(|(_, wire_type)| *wire_type);
            if otel_type.is_none()
                && let Err(problem) = check_name(id)
            {
                problems.push(format!("{at}: attribute `{id}`: {problem}"));
            }
            match attribute.kind.as_ref().map(attribute_type) {
                None => problems.push(format!("{at}: attribute `{id}` has no `type`")),
                Some(Err(problem)) => problems.push(format!("{at}: attribute `{id}`: {problem}")),
                Some(Ok(kind)) => {
                    if let Some(expected) = otel_type
                        && kind.wire_type() != expected
                    {
                        problems.push(format!(
                            "{at}: attribute `{id}` is an OpenTelemetry {expected}, not {}",
                            kind.wire_type()
                        ));
                    }
                }
            }
            if attribute
                .brief
                .as_deref()
                .is_none_or(|b| b.trim().is_empty())
            {
                problems.push(format!("{at}: attribute `{id}` has no `brief`"));
            }
            match attribute.stability.as_deref() {
                None => problems.push(format!("{at}: attribute `{id}` has no `stability`")),
                Some(level) if !STABILITIES.contains(&level) => problems.push(format!(
                    "{at}: attribute `{id}`: unknown stability {level:?}"
                )),
                Some(_) => {}
            }
        }
    }
    // An attribute name may not also be the namespace of another (`a.b` and `a.b.c`).
    for name in defined.keys() {
        let namespace = format!("{name}.");
        if let Some(child) = defined.keys().find(|other| other.starts_with(&namespace)) {
            problems.push(format!(
                "{}: attribute `{name}` is also the namespace of `{child}`",
                defined[name]
            ));
        }
    }
    defined.into_keys().collect()
}

fn check_attribute_uses(located: &Located, defined: &BTreeSet<String>, problems: &mut Vec<String>) {
    let at = where_(located);
    let mut seen = BTreeSet::new();
    for attribute in &located.group.attributes {
        match (&attribute.id, &attribute.reference) {
            (Some(_), Some(_)) => {
                problems.push(format!("{at}: an attribute has both `id` and `ref`"))
            }
            (None, None) => problems.push(format!("{at}: an attribute has neither `id` nor `ref`")),
            (None, Some(reference)) if !defined.contains(reference) => problems.push(format!(
                "{at}: `ref: {reference}` does not resolve to any defined attribute"
            )),
            _ => {}
        }
        if let Some(name) = attribute.id.as_ref().or(attribute.reference.as_ref())
            && !seen.insert(name.clone())
        {
            problems.push(format!("{at}: attribute `{name}` listed twice"));
        }
        if let Some(level) = &attribute.requirement_level {
            let known = level
                .as_str()
                .is_some_and(|l| REQUIREMENT_LEVELS.contains(&l))
                || level.get("conditionally_required").is_some()
                || level.get("recommended").is_some()
                || level.get("opt_in").is_some();
            if !known {
                problems.push(format!("{at}: unknown `requirement_level` {level:?}"));
            }
        }
    }
}

/// A stable signal uses only stable attributes: otherwise a "stable" metric could change
/// shape when one of its attributes does.
fn check_stable_uses(registry: &Registry, located: &Located, problems: &mut Vec<String>) {
    if located.group.kind.as_deref() == Some("attribute_group")
        || located.group.stability.as_deref() != Some("stable")
    {
        return;
    }
    let defined = registry.attributes();
    for name in crate::registry::attribute_names(&located.group) {
        if let Some(attribute) = defined.get(name)
            && attribute.stability.as_deref() != Some("stable")
        {
            problems.push(format!(
                "{}: a stable group uses attribute `{name}`, which is not stable",
                where_(located)
            ));
        }
    }
}

fn check_metric(
    located: &Located,
    names: &mut BTreeMap<String, String>,
    problems: &mut Vec<String>,
) {
    let at = where_(located);
    let group = &located.group;
    match group.metric_name.as_deref() {
        None => problems.push(format!("{at}: a metric needs `metric_name`")),
        Some(name) => {
            claim_name("metric", name, &at, names, problems);
            if name.ends_with(".total") || name.ends_with("_total") {
                problems.push(format!(
                    "{at}: metric `{name}`: no `total` suffix (a Prometheus exporter adds it)"
                ));
            }
            if let Some(expected) = group
                .id
                .as_deref()
                .and_then(|id| id.strip_prefix("metric."))
                && expected != name
            {
                problems.push(format!("{at}: id should be `metric.{name}`"));
            }
        }
    }
    match group.instrument.as_deref() {
        None => problems.push(format!("{at}: a metric needs `instrument`")),
        Some(instrument) if !INSTRUMENTS.contains(&instrument) => problems.push(format!(
            "{at}: `instrument` must be one of {INSTRUMENTS:?}, not {instrument:?}"
        )),
        Some(_) => {}
    }
    match group.unit.as_deref() {
        None | Some("") => problems.push(format!("{at}: a metric needs a `unit` (UCUM)")),
        Some(unit) => {
            if let Err(problem) = check_unit(unit) {
                problems.push(format!("{at}: unit {unit:?}: {problem}"));
            }
        }
    }
}

fn check_span(located: &Located, names: &mut BTreeMap<String, String>, problems: &mut Vec<String>) {
    let at = where_(located);
    let group = &located.group;
    match group.id.as_deref().and_then(span_name) {
        None => problems.push(format!(
            "{at}: a span group's id must be `span.<span name>`"
        )),
        Some(name) => claim_name("span", name, &at, names, problems),
    }
    match group.span_kind.as_deref() {
        None => problems.push(format!("{at}: a span needs `span_kind`")),
        Some(kind) if !SPAN_KINDS.contains(&kind) => problems.push(format!(
            "{at}: `span_kind` must be one of {SPAN_KINDS:?}, not {kind:?}"
        )),
        Some(_) => {}
    }
}

fn check_event(
    located: &Located,
    names: &mut BTreeMap<String, String>,
    problems: &mut Vec<String>,
) {
    let at = where_(located);
    match located.group.name.as_deref() {
        None => problems.push(format!("{at}: an event needs `name`")),
        Some(name) => claim_name("event", name, &at, names, problems),
    }
}

/// Signal names are unique per signal kind and follow the naming rules.
fn claim_name(
    kind: &str,
    name: &str,
    at: &str,
    names: &mut BTreeMap<String, String>,
    problems: &mut Vec<String>,
) {
    if let Err(problem) = check_name(name) {
        problems.push(format!("{at}: {kind} name `{name}`: {problem}"));
    }
    if let Some(first) = names.insert(format!("{kind} {name}"), at.to_owned()) {
        problems.push(format!(
            "{at}: duplicate {kind} name `{name}` (first in {first})"
        ));
    }
}

/// OpenTelemetry naming: lowercase dot-separated namespaces, each segment starting with
/// a letter and made of `a-z`, `0-9` and `_`; at most 255 characters; and, here, inside
/// the project's namespace.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.len() > 255 {
        return Err("longer than 255 characters".into());
    }
    if !name.starts_with(NAMESPACE) {
        return Err(format!("must start with `{NAMESPACE}`"));
    }
    for segment in name.split('.') {
        let mut chars = segment.chars();
        match chars.next() {
            None => return Err("empty segment (`..` or a leading or trailing dot)".into()),
            Some(first) if !first.is_ascii_lowercase() => {
                return Err(format!(
                    "segment `{segment}` must start with a lowercase letter"
                ));
            }
            Some(_) => {}
        }
        if !chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
            return Err(format!(
                "segment `{segment}` may hold only lowercase letters, digits and `_`"
            ));
        }
        if segment.ends_with('_') || segment.contains("__") {
            return Err(format!("segment `{segment}` has a stray `_`"));
        }
    }
    Ok(())
}

/// A UCUM unit as OpenTelemetry writes them: no spaces; annotations in braces
/// (`{frame}`); base symbols like `By`, `s`, `ms`, `1`.
pub fn check_unit(unit: &str) -> Result<(), String> {
    if unit.chars().any(char::is_whitespace) {
        return Err("no spaces in UCUM units".into());
    }
    let mut depth = 0i32;
    for c in unit.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            _ => {}
        }
        if !(0..=1).contains(&depth) {
            return Err("unbalanced `{}`".into());
        }
    }
    if depth != 0 {
        return Err("unbalanced `{}`".into());
    }
    let plain: String = unit
        .split(['{', '}'])
        .enumerate()
        .filter(|(at, _)| at % 2 == 0)
        .map(|(_, part)| part)
        .collect();
    const WORDS: [&str; 4] = ["bytes", "seconds", "count", "percent"];
    if WORDS.contains(&plain.to_ascii_lowercase().as_str()) {
        return Err(format!(
            "`{plain}` is not UCUM (use By, s, 1 or an annotation)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_rules() {
        assert!(check_name("knhk.gossip.rounds").is_ok());
        assert!(check_name("knhk.security.signatures.cache_hits").is_ok());
        for bad in [
            "gossip.rounds",
            "knhk.Gossip",
            "knhk..x",
            "knhk.x.",
            "knhk.1x",
            "knhk.x-y",
            "knhk.x_",
        ] {
            assert!(check_name(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn units_are_ucum() {
        for good in ["By", "s", "{frame}", "1", "By/s", "{message}"] {
            assert!(check_unit(good).is_ok(), "{good} refused");
        }
        for bad in ["bytes", "{frame", "frame}", "per second", "seconds"] {
            assert!(check_unit(bad).is_err(), "{bad} accepted");
        }
    }
}
