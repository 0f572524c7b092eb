//! The `knhk-node` command.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use knhk_node::client::{Endpoint, key_path};
use knhk_node::demo::{DemoOptions, demo};
use knhk_node::error::{NodeError, exit};
use knhk_node::keys::{CertifyRequest, certify, keygen};
use serde_json::Value;

/// The KNHK mesh node: run one, talk to a running one, or watch ten on loopback.
#[derive(Debug, Parser)]
#[command(name = "knhk-node", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a node key (PKCS#8, mode 0600) and print its agent id. Never overwrites.
    Keygen {
        /// Where to write the key.
        #[arg(long, default_value = "node.key")]
        out: PathBuf,
    },
    /// Issue a membership certificate for a node, signed by the cluster's admission
    /// key (a key made by `keygen`; keep it off the nodes).
    Certify {
        /// The admission key file.
        #[arg(long)]
        authority_key: PathBuf,
        /// The node's agent id (printed by its `keygen`).
        #[arg(long)]
        agent: String,
        /// The cluster's name (`node.cluster` in the nodes' config).
        #[arg(long, default_value = "default")]
        cluster: String,
        /// The node's region.
        #[arg(long, default_value = "default")]
        region: String,
        /// Days the certificate is valid (it is refused after; issue a new one).
        #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u32).range(1..=3650))]
        days: u32,
        /// Where to write it.
        #[arg(long)]
        out: PathBuf,
    },
    /// Run a node until SIGINT or SIGTERM (then it leaves the mesh and stores its state).
    Run {
        /// The configuration file (docs/node.example.toml documents every field).
        #[arg(long, short)]
        config: PathBuf,
        /// Print the effective configuration (file, defaults and KNHK_* overrides) and exit.
        #[arg(long)]
        print_config: bool,
    },
    /// Start N nodes over QUIC on loopback, write one key, show it spread, print a table
    /// and write an SVG plot.
    Demo {
        /// Nodes to start.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(2..=100))]
        nodes: u16,
        /// Where to write the plot.
        #[arg(long, default_value = "knhk-demo.svg")]
        plot: PathBuf,
        /// Write no plot.
        #[arg(long)]
        no_plot: bool,
    },
    /// Show a running node's status.
    Status {
        #[command(flatten)]
        admin: AdminArgs,
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the members a running node knows.
    Members {
        #[command(flatten)]
        admin: AdminArgs,
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write a value (`-` reads it from stdin); returns once it is on the node's disk.
    Put {
        #[command(flatten)]
        admin: AdminArgs,
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Print a key's value (exit 1 if there is none).
    Get {
        #[command(flatten)]
        admin: AdminArgs,
        /// The key.
        key: String,
        /// Print the entry as JSON (writer, counter, Lamport time).
        #[arg(long)]
        json: bool,
    },
    /// Delete a key.
    Delete {
        #[command(flatten)]
        admin: AdminArgs,
        /// The key.
        key: String,
    },
    /// Print every update (one JSON line each) to keys under PREFIX until stopped.
    Watch {
        #[command(flatten)]
        admin: AdminArgs,
        /// Only keys starting with this.
        #[arg(default_value = "")]
        prefix: String,
        /// Exit when the stream ends (the node stopped) instead of reconnecting.
        #[arg(long)]
        once: bool,
    },
    /// Print the version.
    Version,
}

/// Where a running node's admin endpoint is.
#[derive(Debug, clap::Args)]
struct AdminArgs {
    /// The admin endpoint (default: from --config, else 127.0.0.1:7401).
    #[arg(long, env = "KNHK_ADMIN")]
    admin: Option<String>,
    /// The admin token file (default: from --config, else data/admin.token if present).
    #[arg(long, env = "KNHK_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// The node's configuration file, to find its admin endpoint and token.
    #[arg(long, short)]
    config: Option<PathBuf>,
}

impl AdminArgs {
    fn endpoint(&self) -> Result<Endpoint, NodeError> {
        let settings = self
            .config
            .as_deref()
            .map(knhk_node::run::load)
            .transpose()?
            .map(|(_, settings)| settings);
        let admin = match (&self.admin, &settings) {
            (Some(admin), _) => admin.clone(),
            (None, Some(settings)) => settings
                .admin_bind
                .map(|addr| addr.to_string())
                .ok_or_else(|| {
                    NodeError::Usage("the node runs no admin endpoint (admin.bind = \"\")".into())
                })?,
            (None, None) => "127.0.0.1:7401".into(),
        };
        let token_file = match (&self.token_file, &settings) {
            (Some(file), _) => Some(file.clone()),
            (None, Some(settings)) => Some(settings.token_file.clone()),
            (None, None) => Some(PathBuf::from("data/admin.token")).filter(|path| path.exists()),
        };
        Endpoint::new(&admin, token_file.as_deref())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match execute(cli.command) {
        Ok(()) => ExitCode::from(exit::OK),
        Err(error) => {
            eprintln!("knhk-node: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}

fn execute(command: Command) -> Result<(), NodeError> {
    let mut out = std::io::stdout().lock();
    let print = |out: &mut std::io::StdoutLock<'_>, text: &str| {
        writeln!(out, "{text}").map_err(|source| NodeError::File {
            path: PathBuf::from("<stdout>"),
            source,
        })
    };
    match command {
        Command::Keygen { out: path } => {
            let id = keygen(&path)?;
            print(&mut out, &id.to_string())?;
            eprintln!(
                "wrote {} (mode 0600); its agent id is above",
                path.display()
            );
        }
        Command::Certify {
            authority_key,
            agent,
            cluster,
            region,
            days,
            out: path,
        } => {
            let agent = agent
                .trim()
                .parse()
                .map_err(|_| NodeError::Usage(format!("--agent {agent:?}: not an agent id")))?;
            certify(&CertifyRequest {
                authority_key: &authority_key,
                agent,
                cluster: &cluster,
                region: &region,
                days,
                out: &path,
            })?;
            eprintln!(
                "wrote {} for {agent}, cluster {cluster:?}, valid {days} days",
                path.display()
            );
        }
        Command::Run {
            config,
            print_config,
        } => {
            let (config, settings) = if print_config {
                let mut parsed = knhk_node::Config::load(&config)?;
                parsed.apply_env(|name| std::env::var(name).ok());
                print(&mut out, &parsed.to_toml()?)?;
                return Ok(());
            } else {
                knhk_node::run::load(&config)?
            };
            drop(config);
            knhk_node::run::run(&settings)?;
        }
        Command::Demo {
            nodes,
            plot,
            no_plot,
        } => {
            let options = DemoOptions {
                nodes: usize::from(nodes),
                plot: (!no_plot).then_some(plot),
            };
            let report = demo(&options)?;
            print(&mut out, &report.table())?;
            if let Some(plot) = &options.plot {
                print(&mut out, &format!("plot: {}", plot.display()))?;
            }
        }
        Command::Status { admin, json } => {
            let status = admin.endpoint()?.get_json("/v1/status")?;
            let text = if json {
                pretty(&status)
            } else {
                status_text(&status)
            };
            print(&mut out, &text)?;
        }
        Command::Members { admin, json } => {
            let members = admin.endpoint()?.get_json("/v1/members")?;
            let text = if json {
                pretty(&members)
            } else {
                members_text(&members)
            };
            print(&mut out, &text)?;
        }
        Command::Put { admin, key, value } => {
            let value = if value == "-" {
                let mut bytes = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut bytes).map_err(
                    |source| NodeError::File {
                        path: PathBuf::from("<stdin>"),
                        source,
                    },
                )?;
                bytes
            } else {
                value.into_bytes()
            };
            let entry = admin.endpoint()?.put(&key_path(&key), &value)?;
            print(
                &mut out,
                &format!(
                    "stored {key} (write #{} of {})",
                    entry["counter"],
                    short(&entry["writer"])
                ),
            )?;
        }
        Command::Get { admin, key, json } => {
            let entry = admin.endpoint()?.get_json(&key_path(&key))?;
            if json {
                print(&mut out, &pretty(&entry))?;
            } else if let Some(text) = entry["value"].as_str() {
                print(&mut out, text)?;
            } else if let Some(encoded) = entry["value_base64"].as_str() {
                let bytes = data_encoding::BASE64
                    .decode(encoded.as_bytes())
                    .map_err(|error| NodeError::Request(format!("value: {error}")))?;
                out.write_all(&bytes).map_err(|source| NodeError::File {
                    path: PathBuf::from("<stdout>"),
                    source,
                })?;
            }
        }
        Command::Delete { admin, key } => {
            admin.endpoint()?.delete(&key_path(&key))?;
            print(&mut out, &format!("deleted {key}"))?;
        }
        Command::Watch {
            admin,
            prefix,
            once,
        } => {
            let endpoint = admin.endpoint()?;
            if once {
                endpoint.watch(&prefix, &mut out)?;
            } else {
                endpoint.watch_following(&prefix, &mut out)?;
            }
        }
        Command::Version => {
            print(
                &mut out,
                &format!("knhk-node {}", env!("CARGO_PKG_VERSION")),
            )?;
        }
    }
    Ok(())
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

fn short(id: &Value) -> String {
    id.as_str()
        .map_or_else(String::new, |id| id.chars().take(8).collect())
}

fn status_text(status: &Value) -> String {
    let gossip = &status["gossip"];
    let members = &status["members"];
    let partition = &status["partition"];
    let mut text = format!(
        "node      {}\ncluster   {} (admission: {})\naddress   {}\nuptime    {} s\nstate     {} keys from {} writers, root {}…, {}\nmembers   {} alive, {} suspect, {} dead, {} left ({} in reserve)\nquorum    {} of {} reachable, {} needed{}\n",
        status["id"].as_str().unwrap_or("?"),
        status["cluster"].as_str().unwrap_or("?"),
        status["admission"].as_str().unwrap_or("?"),
        status["addr"].as_str().unwrap_or("?"),
        status["uptime_s"],
        gossip["keys"],
        gossip["writers"],
        gossip["root"]
            .as_str()
            .unwrap_or("")
            .chars()
            .take(16)
            .collect::<String>(),
        if gossip["converged"].as_bool() == Some(true) {
            "converged"
        } else {
            "not converged yet"
        },
        members["alive"],
        members["suspect"],
        members["dead"],
        members["left"],
        members["reserve"],
        partition["reachable"],
        partition["counted"],
        partition["required"],
        if partition["partitioned"].as_bool() == Some(true) {
            " — PARTITIONED: writes refused"
        } else {
            ""
        },
    );
    for warning in status["warnings"].as_array().into_iter().flatten() {
        text.push_str(&format!("warning   {}\n", warning.as_str().unwrap_or("")));
    }
    text.trim_end().to_owned()
}

fn members_text(members: &Value) -> String {
    let mut text = format!(
        "{:<54} {:<8} {:<22} {:>9}\n",
        "member", "state", "address", "rtt ms"
    );
    for member in members["members"].as_array().into_iter().flatten() {
        let rtt = member["rtt_ms"]
            .as_f64()
            .map_or_else(|| "-".to_owned(), |rtt| format!("{rtt:.2}"));
        text.push_str(&format!(
            "{:<54} {:<8} {:<22} {:>9}\n",
            member["id"].as_str().unwrap_or("?"),
            member["state"].as_str().unwrap_or("?"),
            member["addr"].as_str().unwrap_or("-"),
            rtt
        ));
    }
    text.trim_end().to_owned()
}
