//! Loading a semantic-convention registry in Weaver's (v1) format: a `manifest.yaml` and
//! YAML files of `groups`, every level refusing fields Weaver does not know.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// A registry's definition manifest (`manifest.yaml`), as Weaver reads it. Unknown
/// fields are refused; the fields Weaver deprecated are read only to be reported.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// `http[s]://host/path/<name>/<version>`: the registry's identity; Weaver derives
    /// its name and version from it.
    pub schema_url: Option<String>,
    /// What the registry covers.
    pub description: Option<String>,
    /// The registry's own stability.
    pub stability: Option<String>,
    /// Other registries this one builds on (not supported by this project's check).
    pub dependencies: Option<serde_yaml::Value>,
    /// Deprecated by Weaver in favour of `schema_url`.
    pub semconv_version: Option<String>,
    /// Deprecated by Weaver in favour of `schema_url`.
    pub schema_base_url: Option<String>,
}

/// One file of groups.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupFile {
    /// The groups it defines, each parsed on its own so that a problem names its group.
    pub groups: Vec<serde_yaml::Value>,
}

/// A group: an attribute group, a span, a metric or an event.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Group {
    /// Unique id.
    pub id: Option<String>,
    /// `attribute_group`, `span`, `metric`, `event` (or `resource`, `entity`).
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// One-line description.
    pub brief: Option<String>,
    /// Longer description (what it means to an operator).
    pub note: Option<String>,
    /// `development`, `alpha`, `beta`, `release_candidate`, `stable`.
    pub stability: Option<String>,
    /// A display name (attribute groups).
    pub display_name: Option<String>,
    /// Deprecation notice.
    pub deprecated: Option<serde_yaml::Value>,
    /// Attribute definitions or references.
    #[serde(default)]
    pub attributes: Vec<Attribute>,
    /// Metric name (metrics).
    pub metric_name: Option<String>,
    /// `counter`, `updowncounter`, `gauge`, `histogram` (metrics).
    pub instrument: Option<String>,
    /// UCUM unit (metrics).
    pub unit: Option<String>,
    /// `client`, `server`, `producer`, `consumer`, `internal` (spans).
    pub span_kind: Option<String>,
    /// Event name (events).
    pub name: Option<String>,
    /// Another group whose attributes this one inherits.
    pub extends: Option<String>,
    /// Free-form annotations.
    pub annotations: Option<serde_yaml::Value>,
}

/// An attribute definition (`id` …) or a reference to one (`ref` …).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attribute {
    /// The attribute's name, when this defines it.
    pub id: Option<String>,
    /// The attribute referred to, when this refers to one.
    #[serde(rename = "ref")]
    pub reference: Option<String>,
    /// Its type: a primitive name, or `members` (an enum).
    #[serde(rename = "type")]
    pub kind: Option<serde_yaml::Value>,
    /// One-line description.
    pub brief: Option<String>,
    /// Longer description.
    pub note: Option<String>,
    /// Stability level.
    pub stability: Option<String>,
    /// Example values.
    pub examples: Option<serde_yaml::Value>,
    /// `required`, `recommended`, `opt_in`, or `conditionally_required: …`.
    pub requirement_level: Option<serde_yaml::Value>,
    /// Deprecation notice.
    pub deprecated: Option<serde_yaml::Value>,
    /// Free-form annotations.
    pub annotations: Option<serde_yaml::Value>,
}

/// An enum attribute's `type`: its members, and nothing else.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnumType {
    members: Vec<EnumMember>,
}

/// One member of an enum attribute's `type: members:` list. Unknown fields are refused:
/// a flow mapping whose unquoted brief holds a comma (`{brief: a, b}`) splits into junk
/// keys, which Weaver refuses too.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnumMember {
    /// The member's identifier.
    pub id: String,
    /// Its value on the wire.
    pub value: serde_yaml::Value,
    /// One-line description.
    pub brief: Option<String>,
    /// Longer description.
    pub note: Option<String>,
    /// Stability level.
    pub stability: Option<String>,
    /// Deprecation notice.
    pub deprecated: Option<serde_yaml::Value>,
    /// Free-form annotations.
    pub annotations: Option<serde_yaml::Value>,
}

/// A group with the file it came from.
#[derive(Clone, Debug)]
pub struct Located {
    /// The file, relative to the registry root.
    pub file: PathBuf,
    /// The group.
    pub group: Group,
}

/// A loaded registry: its manifest, its groups, and the files that failed to load.
#[derive(Clone, Debug, Default)]
pub struct Registry {
    /// The manifest, if it loaded.
    pub manifest: Option<Manifest>,
    /// Every group of every file that parsed, in file then group order.
    pub groups: Vec<Located>,
    /// `file: problem` for every file that did not load.
    pub load_errors: Vec<String>,
}

/// The type of a defined attribute, as the live check compares it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttributeType {
    /// `string`, `int`, `double`, `boolean`, or an array of one (`string[]` …).
    Primitive(String),
    /// An enum: its member values (all strings here) and whether values are strings.
    Members(Vec<String>),
}

impl AttributeType {
    /// The value type OpenTelemetry carries for it (`string` for string enums).
    pub fn wire_type(&self) -> &str {
        match self {
            Self::Primitive(name) => name,
            Self::Members(_) => "string",
        }
    }
}

/// The name of the manifest file.
pub const MANIFEST: &str = "manifest.yaml";
/// The manifest's legacy name, which Weaver still reads with a warning.
pub const LEGACY_MANIFEST: &str = "registry_manifest.yaml";

impl Registry {
    /// Loads every `*.yaml` file under `root` (recursively, sorted) and the manifest.
    /// Never fails: what does not load is listed in [`Registry::load_errors`].
    pub fn load(root: &Path) -> Registry {
        let mut registry = Registry::default();
        if root.join(LEGACY_MANIFEST).exists() {
            registry.load_errors.push(format!(
                "{LEGACY_MANIFEST}: legacy manifest name (Weaver warns): rename it {MANIFEST}"
            ));
        }
        let manifest_path = root.join(MANIFEST);
        match std::fs::read_to_string(&manifest_path) {
            Ok(text) => match serde_yaml::from_str::<Manifest>(&text) {
                Ok(manifest) => registry.manifest = Some(manifest),
                Err(error) => registry
                    .load_errors
                    .push(format!("{MANIFEST}: does not parse: {error}")),
            },
            Err(error) => registry
                .load_errors
                .push(format!("{MANIFEST}: cannot be read: {error}")),
        }
        let mut files = Vec::new();
        collect_yaml(root, &mut files, &mut registry.load_errors);
        files.sort();
        for path in files {
            let relative = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
            if relative == Path::new(MANIFEST) || relative == Path::new(LEGACY_MANIFEST) {
                continue;
            }
            let parsed = std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot be read: {e}"))
                .and_then(|text| {
                    serde_yaml::from_str::<GroupFile>(&text)
                        .map_err(|e| format!("does not parse: {e}"))
                });
            let file = match parsed {
                Ok(file) => file,
                Err(problem) => {
                    registry
                        .load_errors
                        .push(format!("{}: {problem}", relative.display()));
                    continue;
                }
            };
            for (index, value) in file.groups.into_iter().enumerate() {
                let id = value
                    .get("id")
                    .and_then(serde_yaml::Value::as_str)
                    .map_or_else(|| format!("#{}", index + 1), str::to_owned);
                match serde_yaml::from_value::<Group>(value) {
                    Ok(group) => registry.groups.push(Located {
                        file: relative.clone(),
                        group,
                    }),
                    Err(error) => registry.load_errors.push(format!(
                        "{}: group `{id}`: does not parse: {error}",
                        relative.display()
                    )),
                }
            }
        }
        registry
    }

    /// Groups of one type (`metric`, `span`, …).
    pub fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Located> + 'a {
        self.groups
            .iter()
            .filter(move |located| located.group.kind.as_deref() == Some(kind))
    }

    /// Every defined attribute by name, with its definition.
    pub fn attributes(&self) -> BTreeMap<&str, &Attribute> {
        self.groups
            .iter()
            .flat_map(|located| located.group.attributes.iter())
            .filter_map(|attribute| attribute.id.as_deref().map(|id| (id, attribute)))
            .collect()
    }

    /// The span group for span name `name` (its id is `span.<name>`).
    pub fn span(&self, name: &str) -> Option<&Group> {
        self.of_kind("span")
            .map(|located| &located.group)
            .find(|group| group.id.as_deref().and_then(span_name) == Some(name))
    }

    /// The metric group named `name`.
    pub fn metric(&self, name: &str) -> Option<&Group> {
        self.of_kind("metric")
            .map(|located| &located.group)
            .find(|group| group.metric_name.as_deref() == Some(name))
    }

    /// The event group named `name`.
    pub fn event(&self, name: &str) -> Option<&Group> {
        self.of_kind("event")
            .map(|located| &located.group)
            .find(|group| group.name.as_deref() == Some(name))
    }
}

/// The span name a span group's id stands for (`span.knhk.x` → `knhk.x`).
pub fn span_name(group_id: &str) -> Option<&str> {
    group_id.strip_prefix("span.")
}

/// The names of the attributes a group uses (its definitions and its refs).
pub fn attribute_names(group: &Group) -> impl Iterator<Item = &str> {
    group
        .attributes
        .iter()
        .filter_map(|attribute| attribute.id.as_deref().or(attribute.reference.as_deref()))
}

/// Parses an attribute's `type`. `Err` says what is wrong with it.
pub fn attribute_type(kind: &serde_yaml::Value) -> Result<AttributeType, String> {
    const PRIMITIVES: [&str; 8] = [
        "string",
        "int",
        "double",
        "boolean",
        "string[]",
        "int[]",
        "double[]",
        "boolean[]",
    ];
    if let Some(name) = kind.as_str() {
        return if PRIMITIVES.contains(&name) {
            Ok(AttributeType::Primitive(name.to_owned()))
        } else {
            Err(format!("unknown type {name:?}"))
        };
    }
    if kind.get("members").is_none() {
        return Err("type is neither a primitive name nor `members`".into());
    }
    let EnumType { members } = serde_yaml::from_value(kind.clone())
        .map_err(|e| format!("enum type does not parse: {e}"))?;
    let mut values = Vec::new();
    for member in members {
        let Some(value) = member.value.as_str() else {
            return Err(format!(
                "enum member `{}`: `value` must be a string",
                member.id
            ));
        };
        // Values become Rust constant names in the generated code.
        let mut chars = value.chars();
        let plain = chars.next().is_some_and(|c| c.is_ascii_lowercase())
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !plain {
            return Err(format!(
                "enum value {value:?} must be lowercase letters, digits and `_`, starting with a letter"
            ));
        }
        if member.brief.as_deref().is_none_or(|b| b.trim().is_empty()) {
            return Err(format!("enum member `{}` has no `brief`", member.id));
        }
        if member.stability.is_none() {
            return Err(format!("enum member `{}` has no `stability`", member.id));
        }
        values.push(value.to_owned());
    }
    if values.is_empty() {
        return Err("an enum with no members".into());
    }
    Ok(AttributeType::Members(values))
}

fn collect_yaml(dir: &Path, files: &mut Vec<PathBuf>, errors: &mut Vec<String>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) => {
            errors.push(format!("{}: cannot be listed: {error}", dir.display()));
            return;
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_yaml(&path, files, errors);
        } else if path
            .extension()
            .is_some_and(|ext| ext == "yaml" || ext == "yml")
        {
            files.push(path);
        }
    }
}
