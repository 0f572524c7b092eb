//! The command-line client: `status`, `members`, `put`, `get`, `delete`, `watch`
//! against a running node's admin endpoint.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::error::NodeError;

/// Where the admin endpoint is and the token to present.
#[derive(Clone, Debug)]
pub struct Endpoint {
    base: String,
    token: Option<String>,
}

impl Endpoint {
    /// `admin` is `http://host:port` (or `host:port`); the token is read from
    /// `token_file` when given and readable.
    ///
    /// Errors: [`NodeError::File`] if `token_file` is given but cannot be read.
    pub fn new(admin: &str, token_file: Option<&Path>) -> Result<Self, NodeError> {
        let base = if admin.starts_with("http://") || admin.starts_with("https://") {
            admin.trim_end_matches('/').to_owned()
        } else {
            format!("http://{}", admin.trim_end_matches('/'))
        };
        let token = token_file
            .map(|path| {
                std::fs::read_to_string(path)
                    .map(|token| token.trim().to_owned())
                    .map_err(|source| NodeError::File {
                        path: path.to_owned(),
                        source,
                    })
            })
            .transpose()?;
        Ok(Self { base, token })
    }

    fn agent(timeout: Option<Duration>) -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(timeout)
            .build()
            .into()
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn authorization(&self) -> Option<String> {
        self.token.as_ref().map(|token| format!("Bearer {token}"))
    }

    /// `GET path` and its JSON answer.
    ///
    /// Errors: [`NodeError::Unreachable`] if the node cannot be reached;
    /// [`NodeError::Request`] if it answers with an
    /// error (its message is shown); [`NodeError::NotFound`] for a 404 on a key.
    pub fn get_json(&self, path: &str) -> Result<Value, NodeError> {
        let mut request = Self::agent(Some(Duration::from_secs(10))).get(self.url(path));
        if let Some(authorization) = self.authorization() {
            request = request.header("Authorization", authorization);
        }
        answer(&self.base, request.call())
    }

    /// `PUT path` with `body`.
    ///
    /// Errors: as [`Endpoint::get_json`].
    pub fn put(&self, path: &str, body: &[u8]) -> Result<Value, NodeError> {
        let mut request = Self::agent(Some(Duration::from_secs(30))).put(self.url(path));
        if let Some(authorization) = self.authorization() {
            request = request.header("Authorization", authorization);
        }
        answer(&self.base, request.send(body))
    }

    /// `DELETE path`.
    ///
    /// Errors: as [`Endpoint::get_json`].
    pub fn delete(&self, path: &str) -> Result<Value, NodeError> {
        let mut request = Self::agent(Some(Duration::from_secs(30))).delete(self.url(path));
        if let Some(authorization) = self.authorization() {
            request = request.header("Authorization", authorization);
        }
        answer(&self.base, request.call())
    }

    /// Streams `GET /v1/watch?prefix=` to `out`, one JSON line per update, until the
    /// node closes the stream.
    ///
    /// Errors: as [`Endpoint::get_json`]; [`NodeError::StreamBroke`] if the stream is cut
    /// after it opened; [`NodeError::File`] if `out` cannot be written.
    pub fn watch(&self, prefix: &str, out: &mut impl Write) -> Result<(), NodeError> {
        let url = self.url(&format!("/v1/watch?prefix={}", encode(prefix, false)));
        let mut request = Self::agent(None).get(url);
        if let Some(authorization) = self.authorization() {
            request = request.header("Authorization", authorization);
        }
        let response = request
            .call()
            .map_err(|error| unreachable(&self.base, &error))?;
        if !response.status().is_success() {
            let status = response.status().as_u16();
            let text = response.into_body().read_to_string().unwrap_or_default();
            return Err(NodeError::Request(error_message(status, &text)));
        }
        let reader = std::io::BufReader::new(response.into_body().into_reader());
        for line in reader.lines() {
            let line = line.map_err(|error| NodeError::StreamBroke(error.to_string()))?;
            if let Some(data) = line.strip_prefix("data:") {
                writeln!(out, "{}", data.trim()).map_err(|source| NodeError::File {
                    path: PathBuf::from("<stdout>"),
                    source,
                })?;
                out.flush().map_err(|source| NodeError::File {
                    path: PathBuf::from("<stdout>"),
                    source,
                })?;
            }
        }
        Ok(())
    }
}

/// The first wait before reconnecting a watch, and the longest.
const RECONNECT_FIRST: Duration = Duration::from_millis(500);
const RECONNECT_LONGEST: Duration = Duration::from_secs(5);

/// The wait before the `attempt`-th reconnection in a row (1-based): doubling from
/// [`RECONNECT_FIRST`] up to [`RECONNECT_LONGEST`].
fn reconnect_wait(attempt: u32) -> Duration {
    RECONNECT_FIRST
        .saturating_mul(1 << attempt.saturating_sub(1).min(8))
        .min(RECONNECT_LONGEST)
}

impl Endpoint {
    /// As [`Endpoint::watch`], but when the stream ends or the node cannot be reached
    /// after the first connection (a restart), says so on stderr and reconnects, waiting
    /// 0.5 s, 1 s, … up to 5 s between tries, for as long as it runs. Changes made while
    /// it was away are not replayed (read them with `get` or a list).
    ///
    /// Errors: as [`Endpoint::watch`] for the first connection (a node that was never
    /// reachable, or that refuses the token, is an error at once), and whenever the node
    /// answers with an error status; [`NodeError::File`] if `out` cannot be written.
    pub fn watch_following(&self, prefix: &str, out: &mut impl Write) -> Result<(), NodeError> {
        match self.watch(prefix, out) {
            Ok(()) => {}
            Err(NodeError::StreamBroke(_)) => {}
            Err(error) => return Err(error),
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let wait = reconnect_wait(attempt);
            eprintln!(
                "knhk-node: the watch stream ended; reconnecting to {} in {:.1} s (changes meanwhile are not replayed)",
                self.base,
                wait.as_secs_f64()
            );
            std::thread::sleep(wait);
            match self.watch(prefix, out) {
                // It was up again and has ended again: start the waits over.
                Ok(()) => attempt = 0,
                Err(NodeError::Unreachable(_) | NodeError::StreamBroke(_)) => {}
                Err(error) => return Err(error),
            }
        }
    }
}

/// The path of a key: `/v1/kv/` and the key, percent-encoded except for `/`.
pub fn key_path(key: &str) -> String {
    format!("/v1/kv/{}", encode(key, true))
}

/// Percent-encodes everything but unreserved characters (and `/` if `keep_slash`).
fn encode(text: &str, keep_slash: bool) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        let unreserved = byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~');
        if unreserved || (keep_slash && byte == b'/') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

fn unreachable(base: &str, error: &ureq::Error) -> NodeError {
    NodeError::Unreachable(format!(
        "cannot reach the node's admin endpoint at {base}: {error} (is `knhk-node run` up? --admin sets the address)"
    ))
}

fn answer(
    base: &str,
    response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
) -> Result<Value, NodeError> {
    let response = response.map_err(|error| unreachable(base, &error))?;
    let status = response.status().as_u16();
    let text = response
        .into_body()
        .read_to_string()
        .map_err(|error| NodeError::Request(format!("reading the answer: {error}")))?;
    if (200..300).contains(&status) {
        return serde_json::from_str(&text)
            .map_err(|error| NodeError::Request(format!("the answer is not JSON: {error}")));
    }
    let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    if status == 404 && body["error"] == "not_found" {
        return Err(NodeError::NotFound(
            body["message"].as_str().unwrap_or("not found").to_owned(),
        ));
    }
    Err(NodeError::Request(error_message(status, &text)))
}

fn error_message(status: u16, text: &str) -> String {
    let body: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    match body["message"].as_str() {
        Some(message) => format!("the node refused ({status}): {message}"),
        None => format!("the node answered {status}: {}", text.trim()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_encoded_into_one_path() {
        assert_eq!(key_path("agent/42/status"), "/v1/kv/agent/42/status");
        assert_eq!(key_path("a b?c#d%"), "/v1/kv/a%20b%3Fc%23d%25");
        assert_eq!(key_path("é"), "/v1/kv/%C3%A9");
    }

    #[test]
    fn reconnection_waits_double_from_half_a_second_to_five() {
        let waits: Vec<u128> = (1..=6).map(|n| reconnect_wait(n).as_millis()).collect();
        assert_eq!(waits, [500, 1_000, 2_000, 4_000, 5_000, 5_000]);
        assert_eq!(reconnect_wait(u32::MAX), RECONNECT_LONGEST);
    }

    #[test]
    fn an_address_without_a_scheme_is_http() {
        let endpoint = Endpoint::new("127.0.0.1:7401/", None).unwrap();
        assert_eq!(
            endpoint.url("/v1/status"),
            "http://127.0.0.1:7401/v1/status"
        );
    }
}
