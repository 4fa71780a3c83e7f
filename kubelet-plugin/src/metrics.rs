//! Prometheus metrics and the `/metrics` + `/healthz` + `/status` endpoint.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use multinic_api::observe::{Exposition, StatusFuture};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::status::NodeStatus;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    pub method: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: String,
}

/// An API request by verb and resource (`multinic_api::setup::request_kind`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiLabels {
    verb: String,
    resource: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RailLabels {
    network: String,
    rail: String,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

/// The plugin's metrics.
pub struct Metrics {
    registry: Registry,
    rpc_requests: Family<RpcLabels, Counter>,
    rpc_seconds: Family<MethodLabels, Histogram, fn() -> Histogram>,
    published_devices: Gauge,
    prepared_claims: Gauge,
    free_ips: Family<RailLabels, Gauge>,
    api_requests: Family<ApiLabels, Counter>,
    /// Cleared when the kubelet reports a failed registration.
    pub registered: AtomicBool,
    /// Set once the first inventory is read.
    pub inventory_ready: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("multinic");
        let rpc_requests = Family::<RpcLabels, Counter>::default();
        let rpc_seconds = Family::<MethodLabels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        let published_devices = Gauge::default();
        let prepared_claims = Gauge::default();
        let free_ips = Family::<RailLabels, Gauge>::default();
        registry.register(
            "grpc_requests",
            "kubelet gRPC requests by method and outcome",
            rpc_requests.clone(),
        );
        registry.register(
            "grpc_request_seconds",
            "kubelet gRPC request latency",
            rpc_seconds.clone(),
        );
        registry.register(
            "published_devices",
            "devices in this node's ResourceSlices",
            published_devices.clone(),
        );
        registry.register(
            "prepared_claims",
            "claims with a plan on this node",
            prepared_claims.clone(),
        );
        registry.register("free_ips", "free pod addresses per network and rail", free_ips.clone());
        let api_requests = Family::<ApiLabels, Counter>::default();
        registry.register(
            "api_requests",
            "requests this plugin sent to the API server, by verb and resource",
            api_requests.clone(),
        );
        Self {
            registry,
            rpc_requests,
            rpc_seconds,
            published_devices,
            prepared_claims,
            free_ips,
            api_requests,
            registered: AtomicBool::new(true),
            inventory_ready: AtomicBool::new(false),
        }
    }

    pub fn record_rpc(&self, method: &str, outcome: &str, seconds: f64) {
        self.rpc_requests
            .get_or_create(&RpcLabels {
                method: method.into(),
                outcome: outcome.into(),
            })
            .inc();
        self.rpc_seconds
            .get_or_create(&MethodLabels { method: method.into() })
            .observe(seconds);
    }

    pub fn api_request(&self, verb: &str, resource: &str) {
        self.api_requests
            .get_or_create(&ApiLabels {
                verb: verb.into(),
                resource: resource.into(),
            })
            .inc();
    }

    pub fn set_published_devices(&self, n: usize) {
        self.published_devices.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub fn set_prepared_claims(&self, n: usize) {
        self.prepared_claims.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    pub fn set_free_ips(&self, network: &str, rail: u32, n: u64) {
        self.free_ips
            .get_or_create(&RailLabels {
                network: network.into(),
                rail: rail.to_string(),
            })
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    pub fn healthy(&self) -> bool {
        self.registered.load(Ordering::Relaxed) && self.inventory_ready.load(Ordering::Relaxed)
    }
}

/// Refreshes gauges that are computed from live state just before a scrape.
pub type Refresh = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// Reads the node ledger for `/status` ([`crate::driver::Driver::status`]).
pub type StatusSource = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = NodeStatus> + Send>> + Send + Sync>;

/// The plugin's `/metrics`, `/healthz` and `/status` (the JSON of [`crate::status`]).
pub struct PluginExposition {
    pub metrics: Arc<Metrics>,
    pub refresh: Refresh,
    pub status: StatusSource,
}

impl Exposition for PluginExposition {
    fn render(&self) -> Pin<Box<dyn Future<Output = String> + Send + '_>> {
        Box::pin(async move {
            (self.refresh)().await;
            self.metrics.encode()
        })
    }

    fn health(&self) -> Result<(), String> {
        if self.metrics.healthy() {
            Ok(())
        } else {
            Err("inventory not read or registration failed".into())
        }
    }

    fn status(&self) -> StatusFuture<'_> {
        Box::pin(async move {
            let status = (self.status)().await;
            Some(
                serde_json::to_string_pretty(&status)
                    .map(|json| json + "\n")
                    .map_err(|e| format!("encoding the node status of {} as JSON: {e}", status.node)),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use hyper::{Request, StatusCode};

    use super::*;

    #[tokio::test]
    async fn metrics_healthz_and_status_are_served_over_http() {
        let metrics = Arc::new(Metrics::new());
        metrics.record_rpc("NodePrepareResources", "ok", 0.001);
        metrics.set_published_devices(8);
        let refresh: Refresh = {
            let m = metrics.clone();
            Arc::new(move || {
                let m = m.clone();
                Box::pin(async move { m.set_free_ips("rails", 3, 61) })
            })
        };
        let listener = multinic_api::observe::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let status: StatusSource = Arc::new(|| {
            Box::pin(async {
                NodeStatus {
                    version: crate::status::STATUS_VERSION,
                    node: "node-a".into(),
                    nics: vec![],
                    claims: vec![],
                    blocks: vec![],
                }
            })
        });
        let exposition = Arc::new(PluginExposition {
            metrics: metrics.clone(),
            refresh,
            status,
        });
        tokio::spawn(multinic_api::observe::serve(listener, exposition));
        let get = |path: &'static str| async move {
            let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
            tokio::spawn(conn);
            let req = Request::get(path)
                .header("host", "x")
                .body(http_body_util::Empty::<Bytes>::new())
                .unwrap();
            let resp = send.send_request(req).await.unwrap();
            let status = resp.status();
            let json = resp.headers().get(hyper::header::CONTENT_TYPE) == Some(&"application/json".parse().unwrap());
            assert_eq!(json, path == "/status", "{path}: content type");
            let body = http_body_util::BodyExt::collect(resp.into_body())
                .await
                .unwrap()
                .to_bytes();
            (status, String::from_utf8_lossy(&body).to_string())
        };
        let (status, body) = get("/metrics").await;
        assert_eq!(status, StatusCode::OK);
        for needle in [
            "multinic_grpc_requests_total{method=\"NodePrepareResources\",outcome=\"ok\"} 1",
            "multinic_grpc_request_seconds_count{method=\"NodePrepareResources\"} 1",
            "multinic_published_devices 8",
            "multinic_free_ips{network=\"rails\",rail=\"3\"} 61",
        ] {
            assert!(body.contains(needle), "missing {needle:?} in\n{body}");
        }
        assert_eq!(
            get("/healthz").await.0,
            StatusCode::SERVICE_UNAVAILABLE,
            "no inventory yet"
        );
        let (status, body) = get("/status").await;
        assert_eq!(status, StatusCode::OK);
        let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            (doc["version"].as_u64(), doc["node"].as_str()),
            (Some(1), Some("node-a")),
            "{body}"
        );
        assert_eq!(get("/nope").await.0, StatusCode::NOT_FOUND);
        metrics.inventory_ready.store(true, Ordering::Relaxed);
        assert_eq!(get("/healthz").await.0, StatusCode::OK);
        metrics.registered.store(false, Ordering::Relaxed);
        assert_eq!(
            get("/healthz").await.0,
            StatusCode::SERVICE_UNAVAILABLE,
            "registration failed"
        );
    }

    #[test]
    fn api_requests_are_counted_by_verb_and_resource() {
        let m = Metrics::new();
        m.api_request("get", "resourceclaims");
        m.api_request("get", "resourceclaims");
        m.api_request("patch", "resourceclaims/status");
        let text = m.encode();
        assert!(
            text.contains("multinic_api_requests_total{verb=\"get\",resource=\"resourceclaims\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("multinic_api_requests_total{verb=\"patch\",resource=\"resourceclaims/status\"} 1"),
            "{text}"
        );
    }
}
