//! The real `knhk-node` binary, as an operator runs it: three `run` processes on
//! loopback admitted by certificates join through one seed and converge; `put`/`get`
//! go through the admin API; a wrong token is refused; bad config values fail with a
//! one-line error naming the field and exit code 2; a node killed with SIGKILL right
//! after an acknowledged put has the value after a restart. Waits are liveness bounds
//! (generous), never timing assertions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{cluster, eventually, knhk, stdout};
use knhk_telemetry::{MetricSpec, semconv};

/// Scrapes `/metrics` on a node's admin port: it must parse as Prometheus text, every
/// `knhk_` family in it must be a registry metric, and what a converged three-node
/// mesh must have recorded must be there.
fn assert_metrics_page(admin: u16) {
    let mut response = ureq::get(&format!("http://127.0.0.1:{admin}/metrics"))
        .call()
        .unwrap();
    let content_type = response
        .headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = response.body_mut().read_to_string().unwrap();
    let scrape =
        prometheus_parse::Scrape::parse(text.lines().map(|line| Ok(line.to_owned()))).unwrap();
    let families: std::collections::BTreeMap<String, &MetricSpec> = semconv::metric::ALL
        .iter()
        .map(|spec| (spec.prometheus_name(), spec))
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    for sample in scrape
        .samples
        .iter()
        .filter(|s| s.metric.starts_with("knhk_"))
    {
        // Histograms add `_bucket`, `_sum` and `_count` to the family name.
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|part| {
                sample
                    .metric
                    .strip_suffix(part)
                    .filter(|base| families.contains_key(*base))
            })
            .unwrap_or(&sample.metric);
        assert!(
            families.contains_key(family),
            "{} is not a registry metric",
            sample.metric
        );
        seen.insert(family.to_owned());
    }
    for required in [
        semconv::metric::GOSSIP_ROUNDS,
        semconv::metric::GOSSIP_MESSAGES,
        semconv::metric::CRDT_KEYS,
        semconv::metric::SECURITY_FRAMES_ACCEPTED,
        semconv::metric::TOPOLOGY_MEMBERS,
        semconv::metric::TRANSPORT_FRAMES,
        semconv::metric::TRANSPORT_BYTES,
        semconv::metric::TRANSPORT_CONNECTIONS_OPEN,
    ] {
        assert!(
            seen.contains(&required.prometheus_name()),
            "{} ({}) missing from /metrics:\n{text}",
            required.name,
            required.prometheus_name()
        );
    }
    for family in &seen {
        assert_eq!(
            scrape.docs.get(family).map(String::as_str),
            Some(families[family].brief),
            "# HELP of {family}"
        );
    }
    assert!(
        scrape.samples.iter().any(|s| s.metric == "target_info"),
        "no resource (target_info) in /metrics"
    );
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

    // `/metrics` is Prometheus text under the registry's names.
    assert_metrics_page(nodes[0].admin);

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

/// A node whose clock runs two minutes ahead (libfaketime) is refused frame by frame
/// by its seed, and the seed's status says why, with the count; its log names the
/// sender once rather than once per frame.
#[test]
fn a_peer_with_a_skewed_clock_is_named_in_status_warnings() {
    let Some(faketime) = common::tool("faketime") else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let mut nodes = cluster(root.path(), 2);
    nodes[0].start();
    let mut skewed = std::process::Command::new(faketime);
    skewed
        .args([
            "-f",
            "+120s",
            common::BIN,
            "run",
            "--config",
            &nodes[1].config(),
        ])
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
    nodes[1].start_as(skewed);
    eventually("the seed warns about timestamps", || {
        let status = stdout(&nodes[0].cli(&["status"]));
        status.contains("frames refused for their timestamps")
    });
    let status: serde_json::Value =
        serde_json::from_str(&stdout(&nodes[0].cli(&["status", "--json"]))).unwrap();
    assert!(
        status["gate"]["rejected"]["future_timestamp"]
            .as_u64()
            .unwrap()
            > 0,
        "{status}"
    );
    assert_eq!(
        status["members"]["alive"], 0,
        "the skewed node is not a member"
    );
    let log = std::fs::read_to_string(nodes[0].dir.join("node.log")).unwrap();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("frames refused for their timestamps"))
        .collect();
    assert_eq!(warnings.len(), 1, "one warning a minute at most: {log}");
    assert!(warnings[0].contains(&nodes[1].id[..10]), "{}", warnings[0]);
}

/// `watch` outlives a restart of its node: the stream ends with the node (`kill -9`),
/// the client says so, reconnects once the node is back and goes on printing changes.
#[test]
fn watch_reconnects_after_its_node_restarts() {
    use std::io::{BufRead, BufReader};
    let root = tempfile::tempdir().unwrap();
    let mut nodes = cluster(root.path(), 1);
    nodes[0].start();
    let mut watch = std::process::Command::new(common::BIN)
        .args(["watch", "w/", "-c", &nodes[0].config()])
        .current_dir(&nodes[0].dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (lines, seen) = std::sync::mpsc::channel();
    let stdout = watch.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if lines.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    // The stream is open once a write made after it shows up.
    let mut first = String::new();
    for attempt in 0..600 {
        stdout_ok(&nodes[0].cli(&["put", &format!("w/before-{attempt}"), "1"]));
        if let Ok(line) = seen.recv_timeout(std::time::Duration::from_millis(100)) {
            first = line;
            break;
        }
    }
    assert!(first.contains("w/before-"), "{first}");
    nodes[0].kill();
    nodes[0].start();
    // Writes until one made after the reconnection shows up (those before it are not
    // replayed).
    let mut after = String::new();
    'writing: for attempt in 0..600 {
        stdout_ok(&nodes[0].cli(&["put", &format!("w/after-{attempt}"), "2"]));
        while let Ok(line) = seen.recv_timeout(std::time::Duration::from_millis(100)) {
            if line.contains("w/after-") {
                after = line;
                break 'writing;
            }
        }
    }
    assert!(
        after.contains("w/after-"),
        "no change shown after the restart"
    );
    watch.kill().unwrap();
    let output = watch.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("reconnecting"), "{stderr}");
}

fn stdout_ok(output: &std::process::Output) {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A list answer stops at about 8 MiB of keys and values however large the limit, and
/// says it was cut: one read request cannot make the node build a huge answer.
#[test]
fn a_list_answer_is_bounded_in_bytes_and_says_it_was_cut() {
    let root = tempfile::tempdir().unwrap();
    let mut nodes = cluster(root.path(), 1);
    nodes[0].start();
    let value = "v".repeat(60 * 1024);
    for i in 0..150 {
        let mut put = std::process::Command::new(common::BIN)
            .args(["put", &format!("big/{i:03}"), "-", "-c", &nodes[0].config()])
            .current_dir(&nodes[0].dir)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        use std::io::Write as _;
        put.stdin
            .take()
            .unwrap()
            .write_all(value.as_bytes())
            .unwrap();
        assert!(put.wait().unwrap().success());
    }
    let mut response = ureq::get(&format!(
        "http://127.0.0.1:{}/v1/kv?prefix=big/&limit=10000",
        nodes[0].admin
    ))
    .call()
    .unwrap();
    let list: serde_json::Value =
        serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap();
    let shown = list["keys"].as_array().unwrap().len();
    assert_eq!(list["total"], 150);
    assert_eq!(list["truncated"], true);
    assert!((100..150).contains(&shown), "{shown} entries of 60 KiB");
    assert_eq!(list["keys"][0]["key"], "big/000", "sorted, from the start");
}

/// A node whose certificate ends within a week says so in its status (the tests issue
/// one-day certificates), with the expiry in the JSON.
#[test]
fn a_certificate_near_its_expiry_is_a_status_warning() {
    let root = tempfile::tempdir().unwrap();
    let mut nodes = cluster(root.path(), 1);
    nodes[0].start();
    let text = stdout(&nodes[0].cli(&["status"]));
    assert!(
        text.contains("membership certificate expires in 23 h"),
        "{text}"
    );
    let status: serde_json::Value =
        serde_json::from_str(&stdout(&nodes[0].cli(&["status", "--json"]))).unwrap();
    let left = status["certificate"]["expires_in_s"].as_i64().unwrap();
    assert!((23 * 3_600..=24 * 3_600).contains(&left), "{status}");
}
