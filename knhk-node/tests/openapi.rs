//! `docs/admin-api.yaml` against a running node: every path and method it lists is
//! served, and every JSON answer (successes and errors alike) matches the schema the
//! document gives for its status code, with no undocumented field (the schemas say
//! `additionalProperties: false`). A route added or a field renamed without the
//! document following fails here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::time::Duration;

use common::{cluster, eventually, stdout};
use serde_json::{Value, json};

const SPEC: &str = include_str!("../../docs/admin-api.yaml");

fn spec() -> Value {
    serde_yaml::from_str(SPEC).expect("docs/admin-api.yaml is YAML")
}

/// Checks `value` against `#/components/schemas/{name}` of the document.
fn assert_matches(spec: &Value, name: &str, value: &Value) {
    let schema = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$ref": format!("#/components/schemas/{name}"),
        "components": spec["components"],
    });
    let validator = jsonschema::draft202012::new(&schema)
        .unwrap_or_else(|error| panic!("schema {name} does not compile: {error}"));
    let errors: Vec<String> = validator
        .iter_errors(value)
        .map(|error| format!("{} at {}", error, error.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "answer does not match {name}:\n  {}\nanswer: {value:#}",
        errors.join("\n  ")
    );
}

/// The schema name the document gives for `path`/`method` answering `status` with
/// JSON (following a `$ref` to a shared response).
fn schema_for(spec: &Value, path: &str, method: &str, status: u16) -> String {
    let mut response = &spec["paths"][path][method]["responses"][status.to_string()];
    assert!(
        !response.is_null(),
        "{method} {path} answered {status}, which docs/admin-api.yaml does not list"
    );
    if let Some(reference) = response["$ref"].as_str() {
        let name = reference.trim_start_matches("#/components/responses/");
        response = &spec["components"]["responses"][name];
    }
    let reference = response["content"]["application/json"]["schema"]["$ref"]
        .as_str()
        .unwrap_or_else(|| panic!("{method} {path} {status} has no JSON schema"));
    reference
        .trim_start_matches("#/components/schemas/")
        .to_owned()
}

struct Api {
    base: String,
    token: String,
    agent: ureq::Agent,
}

impl Api {
    /// Sends `method path` (with the token when `authorized`) and returns the status,
    /// the content type and the body.
    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        authorized: bool,
    ) -> (u16, String, Vec<u8>) {
        let url = format!("{}{path}", self.base);
        let request = ureq::http::Request::builder()
            .method(method)
            .uri(&url)
            .header(
                "Authorization",
                if authorized {
                    format!("Bearer {}", self.token)
                } else {
                    String::new()
                },
            )
            .body(body.unwrap_or_default().to_vec())
            .unwrap();
        let mut response = self.agent.run(request).unwrap();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|value| value.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let status = response.status().as_u16();
        let bytes = response.body_mut().read_to_vec().unwrap();
        (status, content_type, bytes)
    }

    /// Calls `method template` (as `path`) and checks a JSON answer against the document.
    fn checked(
        &self,
        spec: &Value,
        template: &str,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        authorized: bool,
    ) -> (u16, Value) {
        let (status, content_type, bytes) =
            self.call(&method.to_uppercase(), path, body, authorized);
        assert!(
            content_type.starts_with("application/json"),
            "{method} {path}: {status} with {content_type:?}"
        );
        let value: Value = serde_json::from_slice(&bytes).unwrap();
        assert_matches(spec, &schema_for(spec, template, method, status), &value);
        (status, value)
    }
}

#[test]
fn every_documented_route_is_served_and_every_json_answer_matches_its_schema() {
    let spec = spec();
    let root = tempfile::tempdir().unwrap();
    let mut nodes = cluster(root.path(), 2);
    for node in &mut nodes {
        node.start();
    }
    let node = &nodes[0];
    let api = Api {
        base: format!("http://127.0.0.1:{}", node.admin),
        token: std::fs::read_to_string(node.dir.join("data/admin.token"))
            .unwrap()
            .trim()
            .to_owned(),
        agent: ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into(),
    };
    eventually("the two nodes see each other", || {
        stdout(&node.cli(&["members"])).contains(&nodes[1].id)
    });

    // The watch stream, opened before the writes it should report.
    let watch_url = format!("{}/v1/watch?prefix=api/", api.base);
    let watcher = std::thread::spawn(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        let response = agent.get(&watch_url).call().unwrap();
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        let mut events = Vec::new();
        let lines = BufReader::new(response.into_body().into_reader()).lines();
        for line in lines {
            let line = line.unwrap();
            if let Some(data) = line.strip_prefix("data:") {
                events.push(serde_json::from_str::<Value>(data.trim()).unwrap());
                if events.len() == 3 {
                    break;
                }
            }
        }
        (content_type, events)
    });
    std::thread::sleep(Duration::from_millis(500));

    let kv = "/v1/kv/{key}";
    let (status, written) = api.checked(&spec, kv, "put", "/v1/kv/api/text", Some(b"hello"), true);
    assert_eq!((status, written["value"].as_str()), (200, Some("hello")));
    let (status, binary) = api.checked(
        &spec,
        kv,
        "put",
        "/v1/kv/api/binary",
        Some(&[0xff, 0x00, 0xfe]),
        true,
    );
    assert_eq!(status, 200);
    assert_eq!(binary["value_base64"], "/wD+");
    let (status, deleted) = api.checked(&spec, kv, "delete", "/v1/kv/api/text", None, true);
    assert_eq!((status, deleted["deleted"].as_bool()), (200, Some(true)));

    // Errors are documented objects too.
    let (status, refused) = api.checked(&spec, kv, "put", "/v1/kv/api/other", Some(b"x"), false);
    assert_eq!(
        (status, refused["error"].as_str()),
        (401, Some("unauthorized"))
    );
    let (status, missing) = api.checked(&spec, kv, "get", "/v1/kv/api/text", None, false);
    assert_eq!(
        (status, missing["error"].as_str()),
        (404, Some("not_found"))
    );
    let (status, over_state) = api.checked(
        &spec,
        kv,
        "put",
        "/v1/kv/api/big",
        Some(&vec![b'x'; 100 * 1024]),
        true,
    );
    assert_eq!(
        (status, over_state["error"].as_str()),
        (422, Some("refused")),
        "{over_state}"
    );
    let (status, over_body) = api.checked(
        &spec,
        kv,
        "put",
        "/v1/kv/api/huge",
        // Just over the limit: a much larger body may still be in flight when the
        // node answers and closes, which the client sees as a broken pipe.
        Some(&vec![b'x'; (1 << 20) + 1]),
        true,
    );
    assert_eq!(
        (status, over_body["error"].as_str()),
        (413, Some("too_large")),
        "{over_body}"
    );

    // Reads.
    let (_, got) = api.checked(&spec, kv, "get", "/v1/kv/api/binary", None, false);
    assert_eq!(got["value_base64"], "/wD+");
    let (_, listed) = api.checked(&spec, "/v1/kv", "get", "/v1/kv?prefix=api/", None, false);
    assert_eq!(
        listed["total"], 1,
        "the deleted key is not listed: {listed}"
    );
    let (_, status) = api.checked(&spec, "/v1/status", "get", "/v1/status", None, false);
    assert_eq!(status["id"], node.id.as_str());
    let (_, members) = api.checked(&spec, "/v1/members", "get", "/v1/members", None, false);
    assert!(members["members"].as_array().unwrap().len() == 1);
    eventually("the recent updates list the three writes", || {
        let (_, updates) = api.checked(&spec, "/v1/updates", "get", "/v1/updates", None, false);
        updates["updates"].as_array().unwrap().len() >= 3
    });

    let (content_type, events) = watcher.join().unwrap();
    assert!(
        content_type.starts_with("text/event-stream"),
        "{content_type}"
    );
    for event in &events {
        assert_matches(&spec, "WatchEvent", event);
    }
    let keys: Vec<&str> = events.iter().map(|e| e["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["api/text", "api/binary", "api/text"]);

    // The other media types: each documented route answers 200 with its type.
    let mut served = BTreeSet::new();
    for (path, operations) in spec["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            if method == "parameters" {
                continue;
            }
            served.insert(format!("{} {path}", method.to_uppercase()));
            let Some(content) = operation["responses"]["200"]["content"].as_object() else {
                continue;
            };
            let Some(media) = content.keys().find(|media| *media != "application/json") else {
                continue;
            };
            if media == "text/event-stream" {
                continue; // checked above
            }
            let (status, content_type, _) = api.call("GET", path, None, false);
            assert_eq!(status, 200, "GET {path}");
            assert!(
                content_type.starts_with(media.as_str()),
                "GET {path}: {content_type:?}, documented {media}"
            );
        }
    }
    let mut routed = routes_in(include_str!("../src/admin.rs"));
    routed.extend(routes_in(include_str!("../src/dashboard.rs")));
    assert!(routed.len() >= 13, "found the router's routes: {routed:?}");
    assert_eq!(served, routed, "docs/admin-api.yaml against the routers");
}

/// The routes a router's source declares, as `METHOD /path` (`{*key}` written
/// `{key}`, as OpenAPI does): each `.route("path", get(a).put(b)...)`.
fn routes_in(source: &str) -> BTreeSet<String> {
    let mut routes = BTreeSet::new();
    for declaration in source.split(".route(\"").skip(1) {
        let (path, rest) = declaration.split_once('"').unwrap();
        let path = path.replace("{*", "{");
        let handlers = &rest[..rest.find("))").map_or(rest.len(), |end| end + 2)];
        for method in ["get", "put", "post", "delete", "patch"] {
            let call = format!("{method}(");
            if handlers.starts_with(&format!(", {call}")) || handlers.contains(&format!(".{call}"))
            {
                routes.insert(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    routes
}

/// Watch streams are capped (64 at once): one more is refused with a documented
/// error, and a slot frees once its client goes away (the node notices at its next
/// keep-alive, within 15 s).
#[test]
fn watch_streams_are_capped_and_a_closed_one_frees_its_slot() {
    let spec = spec();
    let root = tempfile::tempdir().unwrap();
    let mut nodes = cluster(root.path(), 1);
    nodes[0].start();
    let url = format!("http://127.0.0.1:{}/v1/watch", nodes[0].admin);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut open = Vec::new();
    for _ in 0..64 {
        let response = agent.get(&url).call().unwrap();
        assert_eq!(response.status(), 200);
        open.push(response);
    }
    let mut refused = agent.get(&url).call().unwrap();
    assert_eq!(refused.status(), 503);
    let body: Value = serde_json::from_str(&refused.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(body["error"], "too_many_watches");
    assert_matches(&spec, &schema_for(&spec, "/v1/watch", "get", 503), &body);
    drop(open.pop());
    eventually("a closed stream frees its slot", || {
        let response = agent.get(&url).call().unwrap();
        let accepted = response.status() == 200;
        if accepted {
            open.push(response);
        }
        accepted
    });
}
