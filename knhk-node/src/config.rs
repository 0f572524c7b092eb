//! The daemon's configuration: the TOML file as written ([`Config`], every field with a
//! default), environment overrides, and the checked form the daemon runs with
//! ([`Settings`]), where every bad value is refused with its field named.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use knhk_types::{AgentId, PeerInfo};

use crate::error::ConfigError;

/// The environment variables that override the file, and the field each replaces.
pub const ENV_OVERRIDES: [(&str, &str); 5] = [
    ("KNHK_BIND", "network.bind"),
    ("KNHK_ADVERTISE", "network.advertise"),
    ("KNHK_SEEDS", "network.seeds"),
    ("KNHK_DATA_DIR", "node.data_dir"),
    ("KNHK_ADMIN_BIND", "admin.bind"),
];

/// The configuration file as written. Every field has a default, so an empty file is
/// a valid start (`knhk-node run --print-config` shows the effective values); unknown
/// fields are refused.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Identity and storage.
    pub node: NodeSection,
    /// The mesh transport.
    pub network: NetworkSection,
    /// Who may join.
    pub admission: AdmissionSection,
    /// The HTTP admin endpoint.
    pub admin: AdminSection,
    /// Gossip.
    pub gossip: GossipSection,
    /// Failure detection.
    pub failure_detector: FailureDetectorSection,
}

/// `[node]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeSection {
    /// The node's key (from `knhk-node keygen`). Default `node.key`.
    pub key_file: PathBuf,
    /// Where the node keeps its state. Default `data`.
    pub data_dir: PathBuf,
    /// The cluster's name: certificates must name it, and a data directory belongs to
    /// one cluster. Default `default`.
    pub cluster: String,
}

impl Default for NodeSection {
    fn default() -> Self {
        Self {
            key_file: PathBuf::from("node.key"),
            data_dir: PathBuf::from("data"),
            cluster: "default".into(),
        }
    }
}

/// `[network]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkSection {
    /// UDP address the QUIC transport binds. Default `127.0.0.1:7400`.
    pub bind: String,
    /// The address members dial us at, when it is not `bind` (a wildcard bind, NAT).
    pub advertise: Option<String>,
    /// Members to join through, `<agent-id>@<host:port>`. None: this node starts a mesh.
    pub seeds: Vec<String>,
}

impl Default for NetworkSection {
    fn default() -> Self {
        Self {
            bind: "127.0.0.1:7400".into(),
            advertise: None,
            seeds: Vec::new(),
        }
    }
}

/// `[admission]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdmissionSection {
    /// `certificate` (the default: members present a certificate signed by
    /// `authority`), `allow-list` (members listed in `allow`), or `open` (any node
    /// with a key: for a closed test network only).
    pub mode: String,
    /// The cluster's admission key (an agent id), for `certificate`.
    pub authority: Option<String>,
    /// This node's certificate (`knhk-node certify`), for `certificate`.
    pub certificate_file: Option<PathBuf>,
    /// Members admitted, for `allow-list` (the seeds are always admitted).
    pub allow: Vec<String>,
}

impl Default for AdmissionSection {
    fn default() -> Self {
        Self {
            mode: "certificate".into(),
            authority: None,
            certificate_file: None,
            allow: Vec::new(),
        }
    }
}

/// `[admin]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSection {
    /// TCP address of the HTTP admin API, dashboard and `/metrics`. Default
    /// `127.0.0.1:7401`; set `""` to run without one.
    pub bind: String,
    /// The bearer token writes must present. Default `<data_dir>/admin.token`, created
    /// (0600) at first start if missing.
    pub token_file: Option<PathBuf>,
}

impl Default for AdminSection {
    fn default() -> Self {
        Self {
            bind: "127.0.0.1:7401".into(),
            token_file: None,
        }
    }
}

/// `[gossip]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GossipSection {
    /// `lan` (default), `wan` or `local`: the starting values below are taken from it.
    pub preset: String,
    /// Milliseconds between gossip rounds (preset's when unset: 100 on `lan`).
    pub interval_ms: Option<u64>,
    /// Peers per round (preset's when unset: 3 on `lan`).
    pub fanout: Option<usize>,
}

impl Default for GossipSection {
    fn default() -> Self {
        Self {
            preset: "lan".into(),
            interval_ms: None,
            fanout: None,
        }
    }
}

/// `[failure_detector]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FailureDetectorSection {
    /// Milliseconds between two probes. Default 1,000.
    pub probe_interval_ms: u64,
    /// Milliseconds a probe waits for its answer; below the interval, above the
    /// slowest round trip between members. Default 500.
    pub probe_timeout_ms: u64,
}

impl Default for FailureDetectorSection {
    fn default() -> Self {
        Self {
            probe_interval_ms: 1_000,
            probe_timeout_ms: 500,
        }
    }
}

/// How members are admitted, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Members present a certificate signed by `authority` for this cluster.
    Certificate {
        /// The admission key.
        authority: AgentId,
        /// This node's certificate file.
        certificate_file: PathBuf,
    },
    /// The listed members (and the seeds).
    AllowList(Vec<AgentId>),
    /// Any node with a key.
    Open,
}

/// The configuration, checked, with paths resolved against the config file's directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// The key file.
    pub key_file: PathBuf,
    /// The data directory.
    pub data_dir: PathBuf,
    /// The cluster's name.
    pub cluster: String,
    /// The QUIC bind address.
    pub bind: SocketAddr,
    /// The advertised address, if not `bind`.
    pub advertise: Option<SocketAddr>,
    /// The seeds, resolved.
    pub seeds: Vec<PeerInfo>,
    /// The admission rule.
    pub admission: Admission,
    /// The admin endpoint's address (`None`: none runs).
    pub admin_bind: Option<SocketAddr>,
    /// The admin token file.
    pub token_file: PathBuf,
    /// Gossip preset name.
    pub gossip_preset: String,
    /// Round interval override.
    pub gossip_interval: Option<Duration>,
    /// Fanout override.
    pub gossip_fanout: Option<usize>,
    /// Probe interval.
    pub probe_interval: Duration,
    /// Probe timeout.
    pub probe_timeout: Duration,
}

impl Config {
    /// Reads and parses `path`.
    ///
    /// Errors: [`ConfigError::Read`] if it cannot be read, [`ConfigError::Parse`] (with
    /// the line and what is wrong: a typo'd or unknown field, a wrong type) if it is
    /// not a valid configuration.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|error| match error {
            ConfigError::Parse { line, message, .. } => ConfigError::Parse {
                path: path.to_owned(),
                line,
                message,
            },
            other => other,
        })
    }

    /// Parses TOML text.
    ///
    /// Errors: [`ConfigError::Parse`] (path empty).
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|error: toml::de::Error| {
            let line = error
                .span()
                .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
            ConfigError::Parse {
                path: PathBuf::new(),
                line,
                message: error.message().trim().replace('\n', " "),
            }
        })
    }

    /// Applies the [`ENV_OVERRIDES`] found in `lookup` (the process environment in the
    /// daemon: `|name| std::env::var(name).ok()`). `KNHK_SEEDS` is comma-separated;
    /// an empty one clears the seeds.
    pub fn apply_env(&mut self, lookup: impl Fn(&str) -> Option<String>) {
        if let Some(bind) = lookup("KNHK_BIND") {
            self.network.bind = bind;
        }
        if let Some(advertise) = lookup("KNHK_ADVERTISE") {
            self.network.advertise = Some(advertise).filter(|value| !value.is_empty());
        }
        if let Some(seeds) = lookup("KNHK_SEEDS") {
            self.network.seeds = seeds
                .split(',')
                .map(str::trim)
                .filter(|seed| !seed.is_empty())
                .map(str::to_owned)
                .collect();
        }
        if let Some(dir) = lookup("KNHK_DATA_DIR") {
            self.node.data_dir = PathBuf::from(dir);
        }
        if let Some(bind) = lookup("KNHK_ADMIN_BIND") {
            self.admin.bind = bind;
        }
    }

    /// The effective configuration as TOML (for `--print-config`).
    ///
    /// Errors: [`ConfigError::Print`] (not expected: every field is printable).
    pub fn to_toml(&self) -> Result<String, ConfigError> {
        toml::to_string(self).map_err(|error| ConfigError::Print(error.to_string()))
    }

    /// Checks every value and resolves relative paths against `base` (the config
    /// file's directory). Host names in seeds and addresses are resolved here.
    ///
    /// Errors: [`ConfigError::Invalid`] naming the first bad field and its value.
    pub fn settings(&self, base: &Path) -> Result<Settings, ConfigError> {
        let resolve = |path: &Path| {
            if path.is_absolute() {
                path.to_owned()
            } else {
                base.join(path)
            }
        };
        let cluster = self.node.cluster.trim();
        if cluster.is_empty() || cluster.len() > 64 {
            return Err(invalid(
                "node.cluster",
                &self.node.cluster,
                "must be 1 to 64 characters",
            ));
        }
        let bind = socket_addr("network.bind", &self.network.bind)?;
        let advertise = self
            .network
            .advertise
            .as_deref()
            .map(|addr| socket_addr("network.advertise", addr))
            .transpose()?;
        if let Some(addr) = advertise
            && (addr.ip().is_unspecified() || addr.port() == 0)
        {
            return Err(invalid(
                "network.advertise",
                &addr.to_string(),
                "must be an address members can dial (not 0.0.0.0, not port 0)",
            ));
        }
        let seeds = self
            .network
            .seeds
            .iter()
            .map(|seed| seed_addr(seed))
            .collect::<Result<Vec<_>, _>>()?;
        let admission = self.admission(&resolve)?;
        let admin_bind = if self.admin.bind.is_empty() {
            None
        } else {
            Some(socket_addr("admin.bind", &self.admin.bind)?)
        };
        let data_dir = resolve(&self.node.data_dir);
        let token_file = self
            .admin
            .token_file
            .as_deref()
            .map_or_else(|| data_dir.join("admin.token"), resolve);
        let gossip_preset = match self.gossip.preset.as_str() {
            preset @ ("lan" | "wan" | "local") => preset.to_owned(),
            other => {
                return Err(invalid(
                    "gossip.preset",
                    other,
                    "must be \"lan\", \"wan\" or \"local\"",
                ));
            }
        };
        let gossip_interval = match self.gossip.interval_ms {
            Some(ms @ 1..=60_000) => Some(Duration::from_millis(ms)),
            Some(ms) => {
                return Err(invalid(
                    "gossip.interval_ms",
                    &ms.to_string(),
                    "must be 1 to 60000",
                ));
            }
            None => None,
        };
        let gossip_fanout = match self.gossip.fanout {
            Some(fanout @ 1..=64) => Some(fanout),
            Some(fanout) => {
                return Err(invalid(
                    "gossip.fanout",
                    &fanout.to_string(),
                    "must be 1 to 64",
                ));
            }
            None => None,
        };
        let detector = &self.failure_detector;
        if !(10..=60_000).contains(&detector.probe_interval_ms) {
            return Err(invalid(
                "failure_detector.probe_interval_ms",
                &detector.probe_interval_ms.to_string(),
                "must be 10 to 60000",
            ));
        }
        if detector.probe_timeout_ms == 0 || detector.probe_timeout_ms >= detector.probe_interval_ms
        {
            return Err(invalid(
                "failure_detector.probe_timeout_ms",
                &detector.probe_timeout_ms.to_string(),
                "must be above 0 and below failure_detector.probe_interval_ms",
            ));
        }
        Ok(Settings {
            key_file: resolve(&self.node.key_file),
            data_dir,
            cluster: cluster.to_owned(),
            bind,
            advertise,
            seeds,
            admission,
            admin_bind,
            token_file,
            gossip_preset,
            gossip_interval,
            gossip_fanout,
            probe_interval: Duration::from_millis(detector.probe_interval_ms),
            probe_timeout: Duration::from_millis(detector.probe_timeout_ms),
        })
    }

    fn admission(&self, resolve: &impl Fn(&Path) -> PathBuf) -> Result<Admission, ConfigError> {
        let section = &self.admission;
        match section.mode.as_str() {
            "certificate" => {
                let authority = section.authority.as_deref().ok_or_else(|| {
                    invalid(
                        "admission.authority",
                        "",
                        "required with mode \"certificate\" (the agent id `knhk-node keygen` printed for the admission key)",
                    )
                })?;
                let authority = agent_id("admission.authority", authority)?;
                let certificate_file = section.certificate_file.as_deref().ok_or_else(|| {
                    invalid(
                        "admission.certificate_file",
                        "",
                        "required with mode \"certificate\" (written by `knhk-node certify`)",
                    )
                })?;
                Ok(Admission::Certificate {
                    authority,
                    certificate_file: resolve(certificate_file),
                })
            }
            "allow-list" => {
                let ids = section
                    .allow
                    .iter()
                    .map(|id| agent_id("admission.allow", id))
                    .collect::<Result<_, _>>()?;
                Ok(Admission::AllowList(ids))
            }
            "open" => Ok(Admission::Open),
            other => Err(invalid(
                "admission.mode",
                other,
                "must be \"certificate\", \"allow-list\" or \"open\"",
            )),
        }
    }
}

fn invalid(field: &'static str, value: &str, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        field,
        value: value.to_owned(),
        reason: reason.to_owned(),
    }
}

fn agent_id(field: &'static str, text: &str) -> Result<AgentId, ConfigError> {
    text.trim().parse().map_err(|_| {
        invalid(
            field,
            text,
            "not an agent id (52 base32 characters, as `knhk-node keygen` prints)",
        )
    })
}

/// An address as `host:port` (a name is resolved; the first address wins).
fn socket_addr(field: &'static str, text: &str) -> Result<SocketAddr, ConfigError> {
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    let resolved = text
        .to_socket_addrs()
        .map_err(|error| invalid(field, text, &format!("not host:port ({error})")))?
        .next();
    resolved.ok_or_else(|| invalid(field, text, "the name resolves to no address"))
}

fn seed_addr(text: &str) -> Result<PeerInfo, ConfigError> {
    let (id, addr) = text.split_once('@').ok_or_else(|| {
        invalid(
            "network.seeds",
            text,
            "expected <agent-id>@<host:port> (a seed's id is pinned: no trust on first use)",
        )
    })?;
    let id = agent_id("network.seeds", id)?;
    let addr = socket_addr("network.seeds", addr)?;
    Ok(PeerInfo::new(id, addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> String {
        AgentId::from_bytes([7; 32]).to_string()
    }

    fn open(text: &str) -> Result<Settings, ConfigError> {
        let mut config = Config::parse(text)?;
        config.admission.mode = "open".into();
        config.settings(Path::new("/etc/knhk"))
    }

    fn field_of(error: ConfigError) -> &'static str {
        match error {
            ConfigError::Invalid { field, .. } => field,
            other => panic!("not an invalid field: {other:?}"),
        }
    }

    #[test]
    fn an_empty_file_gives_the_documented_defaults() {
        let settings = open("").unwrap();
        assert_eq!(settings.bind, "127.0.0.1:7400".parse().unwrap());
        assert_eq!(settings.admin_bind, Some("127.0.0.1:7401".parse().unwrap()));
        assert_eq!(settings.data_dir, Path::new("/etc/knhk/data"));
        assert_eq!(settings.token_file, Path::new("/etc/knhk/data/admin.token"));
        assert_eq!(settings.probe_interval, Duration::from_secs(1));
        assert!(settings.seeds.is_empty());
    }

    #[test]
    fn the_default_admission_needs_an_authority() {
        let error = Config::default().settings(Path::new(".")).unwrap_err();
        assert_eq!(field_of(error), "admission.authority");
    }

    #[test]
    fn each_bad_value_names_its_field() {
        let cases = [
            ("[network]\nbind = \"nonsense\"", "network.bind"),
            ("[network]\nseeds = [\"no-at-sign\"]", "network.seeds"),
            (
                "[network]\nseeds = [\"short@127.0.0.1:1\"]",
                "network.seeds",
            ),
            (
                "[network]\nadvertise = \"0.0.0.0:7400\"",
                "network.advertise",
            ),
            ("[gossip]\npreset = \"moon\"", "gossip.preset"),
            ("[gossip]\ninterval_ms = 0", "gossip.interval_ms"),
            ("[gossip]\nfanout = 1000", "gossip.fanout"),
            (
                "[failure_detector]\nprobe_timeout_ms = 2000",
                "failure_detector.probe_timeout_ms",
            ),
            (
                "[failure_detector]\nprobe_interval_ms = 1",
                "failure_detector.probe_interval_ms",
            ),
            ("[node]\ncluster = \"\"", "node.cluster"),
            ("[admin]\nbind = \"1.2.3.4\"", "admin.bind"),
        ];
        for (text, field) in cases {
            assert_eq!(field_of(open(text).unwrap_err()), field, "{text}");
        }
        let mut config = Config::default();
        config.admission.mode = "trust-me".into();
        let error = config.settings(Path::new(".")).unwrap_err();
        assert_eq!(field_of(error), "admission.mode");
    }

    #[test]
    fn a_typo_is_refused_with_its_line() {
        let error = Config::parse("[network]\n\nbnid = \"127.0.0.1:1\"\n").unwrap_err();
        match error {
            ConfigError::Parse { line, message, .. } => {
                assert_eq!(line, Some(3));
                assert!(message.contains("bnid"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn seeds_and_certificate_settings_are_resolved() {
        let id = id();
        let text = format!(
            "[network]\nseeds = [\"{id}@127.0.0.1:7400\"]\n[admission]\nauthority = \"{id}\"\ncertificate_file = \"node.cert\"\n"
        );
        let settings = Config::parse(&text)
            .unwrap()
            .settings(Path::new("/srv"))
            .unwrap();
        assert_eq!(settings.seeds[0].addr, "127.0.0.1:7400".parse().unwrap());
        assert_eq!(
            settings.admission,
            Admission::Certificate {
                authority: id.parse().unwrap(),
                certificate_file: PathBuf::from("/srv/node.cert"),
            }
        );
    }

    #[test]
    fn the_environment_overrides_the_file() {
        let id = id();
        let mut config = Config::parse("[network]\nbind = \"127.0.0.1:1\"").unwrap();
        config.apply_env(|name| match name {
            "KNHK_BIND" => Some("127.0.0.1:2".into()),
            "KNHK_SEEDS" => Some(format!(" {id}@127.0.0.1:3 ,, ")),
            "KNHK_DATA_DIR" => Some("/var/lib/knhk".into()),
            _ => None,
        });
        assert_eq!(config.network.bind, "127.0.0.1:2");
        assert_eq!(config.network.seeds, vec![format!("{id}@127.0.0.1:3")]);
        assert_eq!(config.node.data_dir, Path::new("/var/lib/knhk"));
    }

    #[test]
    fn the_example_file_is_the_defaults() {
        let example = include_str!("../../docs/node.example.toml");
        assert_eq!(Config::parse(example).unwrap(), Config::default());
    }

    #[test]
    fn the_printed_config_parses_back_to_itself() {
        let id = id();
        let mut config = Config::default();
        config.network.seeds = vec![format!("{id}@127.0.0.1:3")];
        let printed = config.to_toml().unwrap();
        assert_eq!(Config::parse(&printed).unwrap(), config);
    }
}
