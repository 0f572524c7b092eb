//! The real `knhk-node` binary, as an operator runs it: three `run` processes on
//! loopback admitted by certificates join through one seed and converge; `put`/`get`
//! go through the admin API; a wrong token is refused; bad config values fail with a
//! one-line error naming the field and exit code 2; a node killed with SIGKILL right
//! after an acknowledged put has the value after a restart. Waits are liveness bounds
//! (generous), never timing assertions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_knhk-node");

fn knhk(args: &[&str], dir: &Path) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env_remove("KNHK_ADMIN")
        .env_remove("KNHK_TOKEN_FILE")
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "exit {:?}: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// A free port on loopback (UDP for QUIC and TCP for admin use the same number space
/// separately; a TCP probe is enough for both on a quiet loopback).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Node {
    dir: PathBuf,
    id: String,
    quic: u16,
    admin: u16,
    child: Option<Child>,
}

impl Node {
    fn config(&self) -> String {
        self.dir.join("node.toml").display().to_string()
    }

    fn start(&mut self) {
        let log = std::fs::File::create(self.dir.join("node.log")).unwrap();
        let child = Command::new(BIN)
            .args(["run", "--config", &self.config()])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        eventually("the admin endpoint answers", || {
            knhk(&["status", "-c", &self.config()], &self.dir)
                .status
                .success()
        });
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    fn cli(&self, args: &[&str]) -> Output {
        let config = self.config();
        let mut all = args.to_vec();
        all.extend(["-c", &config]);
        knhk(&all, &self.dir)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !condition() {
        assert!(Instant::now() < deadline, "{what}: not within 60 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A cluster's admission key, and `n` nodes certified by it (not started).
fn cluster(root: &Path, n: usize) -> Vec<Node> {
    let authority = stdout(&knhk(&["keygen", "--out", "admission.key"], root));
    let mut nodes: Vec<Node> = Vec::new();
    for i in 0..n {
        let dir = root.join(format!("n{i}"));
        std::fs::create_dir(&dir).unwrap();
        let id = stdout(&knhk(&["keygen", "--out", "node.key"], &dir));
        let cert = dir.join("node.cert").display().to_string();
        stdout(&knhk(
            &[
                "certify",
                "--authority-key",
                "admission.key",
                "--agent",
                &id,
                "--cluster",
                "test",
                "--days",
                "1",
                "--out",
                &cert,
            ],
            root,
        ));
        let (quic, admin) = (free_port(), free_port());
        let seeds = nodes
            .first()
            .map(|seed| format!("\"{}@127.0.0.1:{}\"", seed.id, seed.quic))
            .unwrap_or_default();
        let config = format!(
            "[node]\ncluster = \"test\"\n\
             [network]\nbind = \"127.0.0.1:{quic}\"\nseeds = [{seeds}]\n\
             [admission]\nauthority = \"{authority}\"\ncertificate_file = \"node.cert\"\n\
             [admin]\nbind = \"127.0.0.1:{admin}\"\n\
             [gossip]\npreset = \"local\"\n\
             [failure_detector]\nprobe_interval_ms = 200\nprobe_timeout_ms = 100\n"
        );
        std::fs::write(dir.join("node.toml"), config).unwrap();
        nodes.push(Node {
            dir,
            id,
            quic,
            admin,
            child: None,
        });
    }
    nodes
}

#[test]
fn three_processes_join_converge_and_keep_an_acknowledged_write_through_kill_9() {
    let root = tempfile::tempdir().unwrap();
    let mut nodes = cluster(root.path(), 3);
    for node in &mut nodes {
        node.start();
    }
    eventually("every node sees the two others alive", || {
        nodes.iter().all(|node| {
            let members = node.cli(&["members", "--json"]);
            let members: serde_json::Value =
                serde_json::from_slice(&members.stdout).unwrap_or_default();
            members["members"]
                .as_array()
                .is_some_and(|m| m.iter().filter(|m| m["state"] == "alive").count() == 2)
        })
    });

    // A write through one node's admin API reaches the others.
    assert!(stdout(&nodes[1].cli(&["put", "greeting", "hello"])).starts_with("stored greeting"));
    eventually("every node has the write", || {
        nodes
            .iter()
            .all(|node| node.cli(&["get", "greeting"]).stdout == b"hello\n")
    });

    // A wrong token is refused, and nothing is written.
    let wrong = root.path().join("wrong.token");
    std::fs::write(&wrong, "not-the-token\n").unwrap();
    let refused = knhk(
        &[
            "put",
            "--admin",
            &format!("127.0.0.1:{}", nodes[0].admin),
            "--token-file",
            &wrong.display().to_string(),
            "intruder",
            "x",
        ],
        root.path(),
    );
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("401"));
    assert_eq!(nodes[0].cli(&["get", "intruder"]).status.code(), Some(1));

    // SIGKILL right after an acknowledged write; the value is there after a restart,
    // and the node's next write is accepted by its peers (no counter reused).
    assert!(stdout(&nodes[2].cli(&["put", "durable", "yes"])).starts_with("stored"));
    nodes[2].kill();
    nodes[2].start();
    assert_eq!(stdout(&nodes[2].cli(&["get", "durable"])), "yes");
    stdout(&nodes[2].cli(&["put", "after-restart", "1"]));
    eventually("the restarted node's new write reaches the others", || {
        nodes[..2]
            .iter()
            .all(|node| node.cli(&["get", "after-restart"]).stdout == b"1\n")
    });
    eventually("the roots agree", || {
        let roots: Vec<String> = nodes
            .iter()
            .map(|node| {
                let status: serde_json::Value =
                    serde_json::from_slice(&node.cli(&["status", "--json"]).stdout)
                        .unwrap_or_default();
                status["gossip"]["root"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect();
        roots
            .windows(2)
            .all(|pair| pair[0] == pair[1] && !pair[0].is_empty())
    });
}

#[test]
fn bad_config_values_fail_with_one_line_naming_the_field_and_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("[network]\nbind = \"nowhere\"\n", "network.bind"),
        ("[admission]\nmode = \"trust-me\"\n", "admission.mode"),
        (
            "[admission]\nmode = \"open\"\n[gossip]\nfanout = 0\n",
            "gossip.fanout",
        ),
        ("[network]\nbnid = \"127.0.0.1:1\"\n", "bnid"),
        ("", "admission.authority"),
    ];
    for (text, field) in cases {
        let path = dir.path().join("node.toml");
        std::fs::write(&path, text).unwrap();
        let output = knhk(
            &["run", "--config", &path.display().to_string()],
            dir.path(),
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{text}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{text}: {stderr}");
        assert!(stderr.contains(field), "{text}: {stderr}");
    }
}

#[test]
fn a_data_directory_of_another_node_is_refused_with_exit_code_3() {
    let root = tempfile::tempdir().unwrap();
    let mut nodes = cluster(root.path(), 2);
    nodes[0].start();
    nodes[0].kill();
    // Node 1 pointed at node 0's data directory.
    let foreign = nodes[0].dir.join("data").display().to_string();
    let config = std::fs::read_to_string(nodes[1].dir.join("node.toml")).unwrap();
    let config = config.replace("[node]\n", &format!("[node]\ndata_dir = \"{foreign}\"\n"));
    std::fs::write(nodes[1].dir.join("node.toml"), config).unwrap();
    let output = knhk(&["run", "--config", &nodes[1].config()], &nodes[1].dir);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("belongs to"), "{stderr}");
}
