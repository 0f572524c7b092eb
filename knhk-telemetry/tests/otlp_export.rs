//! OTLP export for real: a gRPC OTLP receiver on loopback, and a child process that
//! calls `init_from_env` with the standard environment variables set. The receiver must
//! get the span and the metric, under the service name and resource attributes the
//! environment gave. Without an endpoint, nothing is installed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use knhk_telemetry::semconv::{attribute, event, metric, span};
use knhk_telemetry::{TelemetryError, init_from_env};
use opentelemetry::KeyValue;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::resource::v1::Resource;

/// Set in the child process: which scenario it runs.
const CHILD: &str = "KNHK_OTLP_TEST_CHILD";

/// What the receiver got: (service.name, other resource attributes, names received).
#[derive(Default, Debug)]
struct Received {
    services: Vec<String>,
    resource_keys: Vec<String>,
    spans: Vec<String>,
    metrics: Vec<String>,
    /// (event name, attribute keys) of each log record.
    events: Vec<(String, Vec<String>)>,
}

#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Received>>);

impl Receiver {
    fn resource(&self, resource: Option<&Resource>) {
        let mut received = self.0.lock().unwrap();
        for kv in resource
            .map(|r| r.attributes.as_slice())
            .unwrap_or_default()
        {
            if kv.key == "service.name"
                && let Some(Value::StringValue(name)) =
                    kv.value.as_ref().and_then(|v| v.value.clone())
            {
                received.services.push(name);
            }
            received.resource_keys.push(kv.key.clone());
        }
    }
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        for resource_spans in &request.get_ref().resource_spans {
            self.resource(resource_spans.resource.as_ref());
            for scope in &resource_spans.scope_spans {
                let mut received = self.0.lock().unwrap();
                received
                    .spans
                    .extend(scope.spans.iter().map(|s| s.name.clone()));
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        for resource_metrics in &request.get_ref().resource_metrics {
            self.resource(resource_metrics.resource.as_ref());
            for scope in &resource_metrics.scope_metrics {
                let mut received = self.0.lock().unwrap();
                received
                    .metrics
                    .extend(scope.metrics.iter().map(|m| m.name.clone()));
            }
        }
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl LogsService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        for resource_logs in &request.get_ref().resource_logs {
            self.resource(resource_logs.resource.as_ref());
            for scope in &resource_logs.scope_logs {
                let mut received = self.0.lock().unwrap();
                received.events.extend(scope.log_records.iter().map(|r| {
                    let keys = r.attributes.iter().map(|kv| kv.key.clone()).collect();
                    (r.event_name.clone(), keys)
                }));
            }
        }
        Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
    }
}

/// Runs this test binary again, only `test`, with `env` set.
fn run_child(test: &str, env: &[(&str, &str)]) {
    let status = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD, test)
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .envs(env.iter().copied())
        .status()
        .unwrap();
    assert!(status.success(), "child {test} failed: {status}");
}

fn in_child(test: &str) -> bool {
    std::env::var(CHILD).is_ok_and(|value| value == test)
}

#[test]
fn spans_metrics_and_events_reach_an_otlp_receiver_with_the_environments_resource() {
    const TEST: &str =
        "spans_metrics_and_events_reach_an_otlp_receiver_with_the_environments_resource";
    if in_child(TEST) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let guard = runtime
            .block_on(async { init_from_env("default-name") })
            .unwrap();
        assert!(guard.exporting());
        runtime.block_on(async {
            let meter = opentelemetry::global::meter("knhk");
            let rounds = meter
                .u64_counter(metric::GOSSIP_ROUNDS.name)
                .with_unit(metric::GOSSIP_ROUNDS.unit)
                .build();
            rounds.add(3, &[]);
            let _round = tracing::info_span!(
                target: "knhk_otlp_test",
                span::GOSSIP_ROUND,
                { attribute::GOSSIP_ROUND } = 1i64,
            )
            .entered();
            let _unused = KeyValue::new(attribute::GOSSIP_ROUND, 1i64);
            tracing::event!(
                name: event::GOSSIP_CONVERGED,
                target: knhk_telemetry::EVENT_TARGET,
                tracing::Level::INFO,
                { attribute::GOSSIP_ROUND } = 1i64,
                { attribute::CRDT_ROOT } = "00ff",
                "converged",
            );
            // An ordinary log line stays on stderr.
            tracing::info!(target: "knhk_otlp_test", "just a log line");
        });
        // Dropping the guard flushes both exporters; it must not run on a runtime thread.
        drop(guard);
        return;
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let receiver = Receiver::default();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let server = tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(receiver.clone()))
        .add_service(MetricsServiceServer::new(receiver.clone()))
        .add_service(LogsServiceServer::new(receiver.clone()))
        .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener));
    runtime.spawn(server);
    run_child(
        TEST,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_SERVICE_NAME", "knhk-otlp-test"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "deployment.environment.name=ci,service.name=overridden",
            ),
        ],
    );
    let received = receiver.0.lock().unwrap();
    assert!(
        received.spans.iter().any(|s| s == span::GOSSIP_ROUND),
        "{received:?}"
    );
    assert!(
        received
            .metrics
            .iter()
            .any(|m| m == metric::GOSSIP_ROUNDS.name),
        "{received:?}"
    );
    // The registered event arrives as a log record with its event name and only its
    // own attributes; the plain log line does not arrive.
    assert_eq!(
        received.events,
        [(
            event::GOSSIP_CONVERGED.to_owned(),
            vec![
                attribute::GOSSIP_ROUND.to_owned(),
                attribute::CRDT_ROOT.to_owned()
            ]
        )],
        "{received:?}"
    );
    // OTEL_SERVICE_NAME wins over service.name in OTEL_RESOURCE_ATTRIBUTES.
    assert!(!received.services.is_empty());
    assert!(
        received.services.iter().all(|s| s == "knhk-otlp-test"),
        "{received:?}"
    );
    assert!(
        received
            .resource_keys
            .iter()
            .any(|k| k == "deployment.environment.name"),
        "{received:?}"
    );
    drop(received);
    runtime.shutdown_timeout(Duration::from_secs(1));
}

#[test]
fn an_endpoint_outside_a_tokio_runtime_is_a_clear_error() {
    const TEST: &str = "an_endpoint_outside_a_tokio_runtime_is_a_clear_error";
    if in_child(TEST) {
        let error = init_from_env("x").unwrap_err();
        assert!(matches!(error, TelemetryError::NoTokioRuntime), "{error}");
        return;
    }
    run_child(
        TEST,
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")],
    );
}

#[test]
fn without_an_endpoint_only_logs_are_installed() {
    const TEST: &str = "without_an_endpoint_only_logs_are_installed";
    if in_child(TEST) {
        let guard = init_from_env("x").unwrap();
        assert!(!guard.exporting());
        // The global meter stays the no-op one: nothing to export to.
        let _ = opentelemetry::global::meter("knhk");
        // A second install is refused with a clear error.
        assert!(matches!(
            init_from_env("x"),
            Err(TelemetryError::Subscriber(_))
        ));
        return;
    }
    run_child(TEST, &[]);
}
