//! The dashboard in a real headless Chromium driven over WebDriver: served by a node
//! of a three-process mesh, it loads, lists the two other members as alive, and shows
//! a key written through another node once gossip brings it. A screenshot is saved
//! under the target directory (`knhk-dashboard.png`) for a person to look at.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them). Without
//! them the test says so and passes, unless `KNHK_REQUIRE_TOOLS=1` (which `.ci/run`
//! sets after installing them): then a missing browser fails it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{cluster, eventually, free_port, stdout};
use fantoccini::{Client, ClientBuilder, Locator};

/// How long the page may take to show what the mesh already knows (a liveness bound).
const PAGE_BOUND: Duration = Duration::from_secs(60);

fn executable(env: &str, names: &[&str]) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(env) {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |name| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// `chromedriver` on a free loopback port, killed when dropped.
struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    fn start(binary: &PathBuf) -> Self {
        let port = free_port();
        let child = Command::new(binary)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        eventually("chromedriver listens", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Self { child, port }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn browser(driver: &Driver, chromium: &PathBuf) -> Client {
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".to_owned(),
        serde_json::json!({
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1280,1100"],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .unwrap()
}

/// Polls `probe` on the page until it returns `Some`, within [`PAGE_BOUND`].
async fn until<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + PAGE_BOUND;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {PAGE_BOUND:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `(data-id, data-state)` of each row of the members table.
async fn member_rows(page: &Client) -> Vec<(String, String)> {
    let mut rows = Vec::new();
    for row in page
        .find_all(Locator::Css("#members tr[data-id]"))
        .await
        .unwrap_or_default()
    {
        let id = row.attr("data-id").await.ok().flatten().unwrap_or_default();
        let state = row
            .attr("data-state")
            .await
            .ok()
            .flatten()
            .unwrap_or_default();
        rows.push((id, state));
    }
    rows
}

/// The text of the element with `id` (which must be there).
async fn text_of(page: &Client, id: &str) -> String {
    page.find(Locator::Id(id))
        .await
        .unwrap_or_else(|error| panic!("#{id}: {error}"))
        .text()
        .await
        .unwrap()
}

#[test]
fn the_dashboard_shows_the_members_of_a_three_node_mesh_and_a_new_write() {
    let required = std::env::var("KNHK_REQUIRE_TOOLS").is_ok_and(|v| v == "1");
    let tools = (
        executable("KNHK_CHROMEDRIVER", &["chromedriver"]),
        executable("KNHK_CHROMIUM", &["chromium", "chromium-browser"]),
    );
    let (Some(chromedriver), Some(chromium)) = tools else {
        assert!(
            !required,
            "KNHK_REQUIRE_TOOLS=1 but chromium or chromedriver is not on PATH \
             (install Debian's chromium and chromium-driver, as .ci/run does)"
        );
        eprintln!(
            "skipped: no chromium/chromedriver on PATH (set KNHK_REQUIRE_TOOLS=1 to fail instead)"
        );
        return;
    };

    let root = tempfile::tempdir().unwrap();
    let mut nodes = cluster(root.path(), 3);
    for node in &mut nodes {
        node.start();
    }
    let driver = Driver::start(&chromedriver);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let page = browser(&driver, &chromium).await;
        page.goto(&format!("http://127.0.0.1:{}/", nodes[0].admin))
            .await
            .unwrap();
        until("the page loads its first status", || async {
            page.find(Locator::Css("body[data-loaded='true']"))
                .await
                .ok()
        })
        .await;
        let shown_id = text_of(&page, "node-id").await;
        assert_eq!(
            shown_id, nodes[0].id,
            "the header names the node serving the page"
        );

        let mut expected: Vec<String> = nodes[1..].iter().map(|n| n.id.clone()).collect();
        expected.sort();
        until(
            "the members table lists the two others as alive",
            || async {
                let rows = member_rows(&page).await;
                let mut alive: Vec<String> = rows
                    .iter()
                    .filter(|(_, state)| state == "alive")
                    .map(|(id, _)| id.clone())
                    .collect();
                alive.sort();
                (alive == expected).then_some(())
            },
        )
        .await;

        // A write through another node shows up on this node's page once gossiped.
        assert!(
            stdout(&nodes[1].cli(&["put", "dashboard/greeting", "hello from n1"]))
                .starts_with("stored")
        );
        let row = until("the recent updates show the new key", || async {
            page.find(Locator::Css("#updates tr[data-key='dashboard/greeting']"))
                .await
                .ok()
        })
        .await;
        let text = row.text().await.unwrap();
        assert!(text.contains("hello from n1"), "update row: {text}");

        let converged = text_of(&page, "converged").await;
        assert!(
            !converged.trim().is_empty() && converged != "…",
            "{converged}"
        );

        // Let the chart draw a few seconds of traffic, then keep a screenshot.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let png = page.screenshot().await.unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
        let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("knhk-dashboard.png");
        std::fs::write(&path, png).unwrap();
        eprintln!("dashboard screenshot: {}", path.display());
        page.close().await.unwrap();
    });
}
