//! Helpers shared by the tests that run the real `knhk-node` binary: keys,
//! certificates and configs for a small cluster on loopback, processes that are
//! killed when dropped, the CLI, and liveness waits (generous bounds, never timing
//! assertions).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_knhk-node");

pub fn knhk(args: &[&str], dir: &Path) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env_remove("KNHK_ADMIN")
        .env_remove("KNHK_TOKEN_FILE")
        .output()
        .unwrap()
}

pub fn stdout(output: &Output) -> String {
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
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Node {
    pub dir: PathBuf,
    pub id: String,
    pub quic: u16,
    pub admin: u16,
    pub child: Option<Child>,
}

impl Node {
    pub fn config(&self) -> String {
        self.dir.join("node.toml").display().to_string()
    }

    pub fn start(&mut self) {
        let mut command = Command::new(BIN);
        command.args(["run", "--config", &self.config()]);
        self.start_as(command);
    }

    /// Starts the node with `command` (the binary, or a wrapper that runs it).
    pub fn start_as(&mut self, mut command: Command) {
        let log = std::fs::File::create(self.dir.join("node.log")).unwrap();
        let child = command.stdout(Stdio::null()).stderr(log).spawn().unwrap();
        self.child = Some(child);
        eventually("the admin endpoint answers", || {
            knhk(&["status", "-c", &self.config()], &self.dir)
                .status
                .success()
        });
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    pub fn cli(&self, args: &[&str]) -> Output {
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

/// `name` on PATH, if it is there. When it is not and `KNHK_REQUIRE_TOOLS=1` (which
/// `.ci/run` sets after installing the tools the tests use), that is a failure.
pub fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var("KNHK_REQUIRE_TOOLS").as_deref() != Ok("1"),
            "KNHK_REQUIRE_TOOLS=1 but {name} is not on PATH"
        );
        eprintln!("skipped: {name} is not on PATH (set KNHK_REQUIRE_TOOLS=1 to fail instead)");
    }
    found
}

pub fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !condition() {
        assert!(Instant::now() < deadline, "{what}: not within 60 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A new node directory `root/n{index}` with a key (`node.key`) and a certificate
/// (`node.cert`) for `cluster`, signed by `root/admission.key`. Returns the directory
/// and the node's id.
pub fn certified_node(root: &Path, index: usize, cluster: &str) -> (PathBuf, String) {
    let dir = root.join(format!("n{index}"));
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
            cluster,
            "--days",
            "1",
            "--out",
            &cert,
        ],
        root,
    ));
    (dir, id)
}

/// A cluster's admission key (`root/admission.key`); returns the authority's id.
pub fn admission_key(root: &Path) -> String {
    stdout(&knhk(&["keygen", "--out", "admission.key"], root))
}

/// A cluster's admission key, and `n` nodes certified by it (not started).
pub fn cluster(root: &Path, n: usize) -> Vec<Node> {
    let authority = admission_key(root);
    let mut nodes: Vec<Node> = Vec::new();
    for i in 0..n {
        let (dir, id) = certified_node(root, i, "test");
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
