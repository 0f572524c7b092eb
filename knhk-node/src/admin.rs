//! The admin endpoint: a JSON API over HTTP (axum) to a running node — status,
//! members, keys, writes, a stream of updates — with a bearer token for writes (and
//! for everything when bound beyond loopback), `/metrics` for Prometheus, and the
//! dashboard page. `docs/admin-api.yaml` describes it.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use data_encoding::HEXLOWER;
use futures_util::Stream;
use knhk_crdt::{CrdtError, SignedEntry};
use knhk_gossip::GossipError;
use knhk_security::RejectReason;
use knhk_telemetry::PrometheusMetrics;
use knhk_topology::runtime::state_name;
use knhk_types::UnixMillis;
use serde::Deserialize;
use serde_json::{Value, json};
use std::time::SystemTime;
use tokio::sync::watch;

use crate::daemon::{Daemon, WriteError};

/// Largest value a `PUT` takes (the state's own limit may be lower).
const MAX_BODY_BYTES: usize = 1 << 20;
/// Keys a list answers at most.
const MAX_LIST: usize = 10_000;
/// Most bytes of keys and values one list answer carries (about; base64 adds a third).
const MAX_LIST_BYTES: usize = 8 << 20;

/// Watch streams open at once at most; one more is refused (503 `too_many_watches`).
const MAX_WATCHES: usize = 64;

/// What every request handler shares.
#[derive(Debug)]
pub struct AdminState {
    daemon: Arc<Daemon>,
    token: String,
    token_for_reads: bool,
    stopping: watch::Receiver<bool>,
    metrics: Option<PrometheusMetrics>,
    /// One permit per open watch stream.
    watches: Arc<tokio::sync::Semaphore>,
}

impl AdminState {
    /// The state of an admin endpoint over `daemon`, with `token` required for writes
    /// (and for reads too if `token_for_reads`, as beyond loopback); streams end when
    /// `stopping` turns true; `/metrics` renders `metrics` (without them it answers
    /// 404 with a reason).
    pub fn new(
        daemon: Arc<Daemon>,
        token: String,
        token_for_reads: bool,
        stopping: watch::Receiver<bool>,
        metrics: Option<PrometheusMetrics>,
    ) -> Self {
        Self {
            daemon,
            token,
            token_for_reads,
            stopping,
            metrics,
            watches: Arc::new(tokio::sync::Semaphore::new(MAX_WATCHES)),
        }
    }
}

/// The routes of the admin endpoint.
pub fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/v1/status", get(status))
        .route("/v1/members", get(members))
        .route("/v1/updates", get(updates))
        .route("/v1/kv", get(list))
        .route("/v1/kv/{*key}", get(read).put(put).delete(delete))
        .route("/v1/watch", get(watch_updates))
        .route("/metrics", get(metrics))
        .merge(crate::dashboard::routes())
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// An error answer: `{"error": code, "message": text, ..}` with an HTTP status.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: Value,
}

impl ApiError {
    fn new(status: StatusCode, code: &str, message: impl std::fmt::Display) -> Self {
        Self {
            status,
            body: json!({ "error": code, "message": message.to_string() }),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

impl From<GossipError> for ApiError {
    fn from(error: GossipError) -> Self {
        match error {
            GossipError::ReadOnly {
                reachable,
                required,
            } => Self {
                status: StatusCode::SERVICE_UNAVAILABLE,
                body: json!({
                    "error": "read_only",
                    "message": error.to_string(),
                    "reachable": reachable,
                    "required": required,
                }),
            },
            GossipError::State(
                CrdtError::KeyTooLong { .. }
                | CrdtError::ValueTooLarge { .. }
                | CrdtError::Full { .. }
                | CrdtError::WriterQuota { .. },
            ) => Self::new(StatusCode::UNPROCESSABLE_ENTITY, "refused", error),
            GossipError::ShutDown => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", error)
            }
            other => Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", other),
        }
    }
}

impl From<WriteError> for ApiError {
    fn from(error: WriteError) -> Self {
        match error {
            WriteError::Gossip(error) => error.into(),
            WriteError::Store(_) => {
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "not_stored", error)
            }
        }
    }
}

type ApiResult = Result<Json<Value>, ApiError>;

fn authorize(state: &AdminState, headers: &HeaderMap, writes: bool) -> Result<(), ApiError> {
    if !writes && !state.token_for_reads {
        return Ok(());
    }
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim);
    match presented {
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this needs `Authorization: Bearer <token>` (the admin token file)",
        )),
        Some(token) if constant_time_eq(token.as_bytes(), state.token.as_bytes()) => Ok(()),
        Some(_) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "wrong admin token",
        )),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

async fn status(State(state): State<Arc<AdminState>>, headers: HeaderMap) -> ApiResult {
    authorize(&state, &headers, false)?;
    let daemon = &state.daemon;
    let node = daemon.node();
    let mesh = node.mesh().status().await?;
    let topology = node
        .topology()
        .status(node.mesh().node())
        .await
        .map_err(|error| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", error))?;
    let info = daemon.info();
    let transport = &mesh.transport;
    let store = daemon.store_stats();
    let mut warnings = Vec::new();
    if transport.handshakes_rejected_outbound > 0 {
        warnings.push(format!(
            "peers refused our handshake {} times: check that they admit this node (admission mode, certificate, allow-list)",
            transport.handshakes_rejected_outbound
        ));
    }
    if topology.partitioned {
        warnings.push(format!(
            "partitioned: this node reaches {} of {} members, {} needed; writes are refused until it reaches a quorum",
            topology.reachability.reachable,
            topology.reachability.members,
            topology.reachability.required()
        ));
    }
    let gate = &mesh.gate;
    let clock_refusals = (gate.rejected_for(RejectReason::StaleTimestamp)
        + gate.rejected_for(RejectReason::FutureTimestamp))
    .saturating_sub(gate.stale_after_queueing);
    if clock_refusals > 0 {
        warnings.push(format!(
            "{clock_refusals} frames refused for their timestamps: this node's clock or a peer's is off by more than the allowed skew; check NTP (the log names the sender)"
        ));
    }
    let now_ms = UnixMillis::from_system_time(SystemTime::now()).0;
    let certificate = info.certificate_expires.map(|expires| {
        let left_s = (i128::from(expires.0) - i128::from(now_ms)) / 1_000;
        if let Some(warning) = certificate_warning(left_s) {
            warnings.push(warning);
        }
        json!({ "expires_ms": expires.0, "expires_in_s": left_s })
    });
    let failures = store.failures.load(std::sync::atomic::Ordering::Relaxed);
    if failures > 0 {
        warnings.push(format!(
            "{failures} commits to the data directory failed (see the log)"
        ));
    }
    let [alive, suspect, dead, left] = topology.view;
    Ok(Json(json!({
        "id": mesh.id.to_string(),
        "cluster": info.cluster,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": info.started.elapsed().as_secs(),
        "addr": node.local_addr().to_string(),
        "admission": info.admission,
        "certificate": certificate,
        "gossip": {
            "round": mesh.gossip.round,
            "root": hex(&mesh.gossip.root),
            "converged": mesh.gossip.converged,
            "keys": mesh.gossip.keys,
            "writers": mesh.gossip.writers,
            "messages_sent": mesh.gossip.stats.messages_sent,
            "messages_received": mesh.gossip.stats.messages_received,
        },
        "members": {
            "alive": alive, "suspect": suspect, "dead": dead, "left": left,
            "reserve": topology.reserve,
        },
        "partition": {
            "partitioned": topology.partitioned,
            "reachable": topology.reachability.reachable,
            "counted": topology.reachability.members,
            "required": topology.reachability.required(),
        },
        "failure_detector": {
            "incarnation": topology.incarnation,
            "local_health": topology.local_health,
        },
        "transport": {
            "connections_open": transport.connections_open,
            "frames_sent": transport.frames_sent,
            "frames_received": transport.frames_received,
            "bytes_sent": transport.bytes_sent,
            "bytes_received": transport.bytes_received,
            "handshakes_refused_by_peers": transport.handshakes_rejected_outbound,
            "handshakes_refused": transport.handshakes_rejected_inbound,
            "admissions_refused": transport.admissions_refused.total(),
            "peers_admitted": transport.peers_admitted,
        },
        "gate": {
            "accepted": gate.accepted,
            "rejected": RejectReason::ALL
                .iter()
                .map(|reason| (reason.as_str().to_owned(), json!(gate.rejected_for(*reason))))
                .collect::<serde_json::Map<String, Value>>(),
            "clock_refusals": clock_refusals,
            "bans": gate.bans,
        },
        "store": {
            "path": info.store_path.display().to_string(),
            "keys_restored": info.keys_restored,
            "commits": store.commits.load(std::sync::atomic::Ordering::Relaxed),
            "failures": failures,
        },
        "warnings": warnings,
    })))
}

/// Warn this long before this node's certificate expires.
const CERTIFICATE_WARNING_S: i128 = 7 * 24 * 3_600;

/// The status warning for a certificate `left_s` seconds from expiry (negative: past
/// it), if it deserves one.
fn certificate_warning(left_s: i128) -> Option<String> {
    if left_s <= 0 {
        Some(format!(
            "this node's membership certificate expired {} s ago: peers refuse it; issue a new one (knhk-node certify) and restart",
            -left_s
        ))
    } else if left_s < CERTIFICATE_WARNING_S {
        Some(format!(
            "this node's membership certificate expires in {} h {} min: issue a new one (knhk-node certify) and restart before then",
            left_s / 3_600,
            left_s % 3_600 / 60
        ))
    } else {
        None
    }
}

async fn members(State(state): State<Arc<AdminState>>, headers: HeaderMap) -> ApiResult {
    authorize(&state, &headers, false)?;
    let node = state.daemon.node();
    let members = node
        .topology()
        .members(node.mesh().node())
        .await
        .map_err(|error| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", error))?;
    let members: Vec<Value> = members
        .iter()
        .map(|member| {
            json!({
                "id": member.id.to_string(),
                "state": state_name(member.state),
                "incarnation": member.incarnation,
                "addr": member.addr.map(|addr| addr.to_string()),
                "rtt_ms": member.rtt.smoothed().map(|rtt| rtt.as_secs_f64() * 1_000.0),
                "rtt_min_ms": member.rtt.min().map(|rtt| rtt.as_secs_f64() * 1_000.0),
                "since_ms": member.since.0,
                "cluster": member.cluster.map(|(label, _)| label.to_string()),
            })
        })
        .collect();
    Ok(Json(
        json!({ "id": node.id().to_string(), "members": members }),
    ))
}

async fn updates(State(state): State<Arc<AdminState>>, headers: HeaderMap) -> ApiResult {
    authorize(&state, &headers, false)?;
    Ok(Json(json!({ "updates": state.daemon.recent_updates() })))
}

/// An entry as the API shows it: the value as text when it is UTF-8, else base64.
pub fn entry_json(entry: &SignedEntry) -> Value {
    let mut value = json!({
        "key": entry.key,
        "writer": entry.writer.to_string(),
        "counter": entry.counter,
        "lamport": entry.lamport,
        "deleted": entry.is_tombstone(),
    });
    add_value(&mut value, entry.value.as_deref());
    value
}

/// Sets `value` (text, when it is UTF-8) or `value_base64` on `json`.
fn add_value(json: &mut Value, bytes: Option<&[u8]>) {
    if let Some(bytes) = bytes {
        match std::str::from_utf8(bytes) {
            Ok(text) => json["value"] = json!(text),
            Err(_) => json["value_base64"] = json!(data_encoding::BASE64.encode(bytes)),
        }
    }
}

async fn read(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
    Path(key): Path<String>,
) -> ApiResult {
    authorize(&state, &headers, false)?;
    let wanted = key.clone();
    let entry = state
        .daemon
        .node()
        .mesh()
        .read_state(move |state| state.entry(&wanted).cloned())
        .await?;
    match entry {
        Some(entry) if !entry.is_tombstone() => Ok(Json(entry_json(&entry))),
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no value under {key:?}"),
        )),
    }
}

/// `?prefix=` and `?limit=` of a list or watch.
#[derive(Debug, Deserialize)]
struct Filter {
    #[serde(default)]
    prefix: String,
    limit: Option<usize>,
}

async fn list(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
    Query(filter): Query<Filter>,
) -> ApiResult {
    authorize(&state, &headers, false)?;
    let limit = filter.limit.unwrap_or(1_000).min(MAX_LIST);
    let prefix = filter.prefix;
    let (entries, total) = state
        .daemon
        .node()
        .mesh()
        .read_state(move |state| {
            let matching: Vec<&SignedEntry> = state
                .entries()
                .filter(|entry| !entry.is_tombstone() && entry.key.starts_with(&prefix))
                .collect();
            let total = matching.len();
            let mut matching = matching;
            matching.sort_by(|a, b| a.key.cmp(&b.key));
            // At most `limit` entries and about MAX_LIST_BYTES of keys and values, so
            // one request cannot make the node build a huge answer.
            let mut bytes = 0usize;
            let chosen: Vec<SignedEntry> = matching
                .into_iter()
                .take(limit)
                .take_while(|entry| {
                    bytes += entry.key.len() + entry.value.as_ref().map_or(0, Vec::len);
                    bytes <= MAX_LIST_BYTES
                })
                .cloned()
                .collect();
            (chosen, total)
        })
        .await?;
    let keys: Vec<Value> = entries.iter().map(entry_json).collect();
    Ok(Json(
        json!({ "keys": keys, "total": total, "truncated": total > keys.len() }),
    ))
}

async fn put(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
    Path(key): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    authorize(&state, &headers, true)?;
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                rejection.status(),
                "too_large",
                format!("a request body takes at most {MAX_BODY_BYTES} bytes"),
            )
        } else {
            ApiError::new(rejection.status(), "bad_request", rejection.body_text())
        }
    })?;
    let entry = state.daemon.write(&key, Some(body.to_vec())).await?;
    Ok(Json(entry_json(&entry)))
}

async fn delete(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
    Path(key): Path<String>,
) -> ApiResult {
    authorize(&state, &headers, true)?;
    let entry = state.daemon.write(&key, None).await?;
    Ok(Json(entry_json(&entry)))
}

async fn watch_updates(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
    Query(filter): Query<Filter>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    authorize(&state, &headers, false)?;
    // Held by the stream: the slot frees when the client goes away.
    let permit = state.watches.clone().try_acquire_owned().map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_watches",
            format!("{MAX_WATCHES} watch streams are open on this node already"),
        )
    })?;
    let subscription = state.daemon.node().mesh().subscribe();
    let stopping = state.stopping.clone();
    let prefix = filter.prefix;
    let stream = futures_util::stream::unfold(
        (subscription, stopping, prefix, permit),
        |(mut subscription, mut stopping, prefix, permit)| async move {
            loop {
                if *stopping.borrow() {
                    return None;
                }
                let update = tokio::select! {
                    update = subscription.next() => update?,
                    _ = stopping.changed() => return None,
                };
                if !update.key.starts_with(&prefix) {
                    continue;
                }
                let mut data = json!({ "key": update.key, "deleted": update.value.is_none() });
                add_value(&mut data, update.value.as_deref());
                let event = Event::default().event("update").data(data.to_string());
                return Some((Ok(event), (subscription, stopping, prefix, permit)));
            }
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// `GET /metrics`: every registered metric the node records, as Prometheus text.
async fn metrics(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &headers, false)?;
    let Some(metrics) = &state.metrics else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no_metrics",
            "this process installed no Prometheus exporter (telemetry was set up before the node started)",
        ));
    };
    let text = metrics
        .render()
        .map_err(|error| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", error))?;
    Ok((
        [(header::CONTENT_TYPE, PrometheusMetrics::CONTENT_TYPE)],
        text,
    )
        .into_response())
}

/// A root as the API shows it: 64 hex digits.
pub fn hex(bytes: &[u8]) -> String {
    HEXLOWER.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_is_worth_a_warning_within_a_week_of_expiry_and_after() {
        assert_eq!(certificate_warning(CERTIFICATE_WARNING_S), None);
        let soon = certificate_warning(2 * 3_600 + 5 * 60).unwrap();
        assert!(soon.contains("expires in 2 h 5 min"), "{soon}");
        let past = certificate_warning(-30).unwrap();
        assert!(past.contains("expired 30 s ago: peers refuse it"), "{past}");
        assert!(certificate_warning(0).unwrap().contains("expired 0 s ago"));
    }
}
