//! `multinic status`: what a node plugin's ledger holds (its NICs, prepared claims and blocks),
//! read from `GET /status` on the plugin's metrics port (the document of
//! [`multinic_kubelet_plugin::status`]) and printed as a table or as JSON. The plugin runs with
//! `hostNetwork`, so inside its pod the default endpoint `http://127.0.0.1:9177` reaches it:
//! `kubectl exec -n multinic-system ds/multinic-kubelet-plugin -c plugin -- multinic status`.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::{Request, StatusCode, Uri};
use multinic_kubelet_plugin::health::Status;
use multinic_kubelet_plugin::ledger::Presence;
use multinic_kubelet_plugin::status::{NicStatus, NodeStatus, STATUS_VERSION};

/// The plugin's metrics port as seen from inside its pod (`--metrics-address=:9177`).
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:9177";
/// How long connecting and reading the answer may take.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// Largest answer read.
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// How to reach a plugin from outside its pod.
const HINT: &str = "run this inside the plugin pod (kubectl exec -n multinic-system ds/multinic-kubelet-plugin \
                    -c plugin -- multinic status) or pass --endpoint";

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The plugin's metrics port (its --metrics-address) as http://host:port.
    #[arg(long, default_value = DEFAULT_ENDPOINT)]
    pub endpoint: String,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = StatusOutput::Table)]
    pub output: StatusOutput,
}

/// Output format of `multinic status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StatusOutput {
    Table,
    Json,
}

/// Why the status could not be read or printed.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("--endpoint {endpoint:?} is not an http://host:port URL: {reason}")]
    Endpoint { endpoint: String, reason: String },
    #[error("cannot reach the plugin at {endpoint}: {source}; {HINT}")]
    Connect { endpoint: String, source: std::io::Error },
    #[error("the plugin at {endpoint} did not answer within {TIMEOUT:?}; check that its pod is Running, or {HINT}")]
    Timeout { endpoint: String },
    #[error("GET {url}: {source}; is {endpoint} the plugin's --metrics-address? {HINT}")]
    Http {
        url: String,
        endpoint: String,
        source: hyper::Error,
    },
    #[error("GET {url}: reading the answer: {reason}")]
    Body { url: String, reason: String },
    #[error(
        "GET {url} answered 404: this endpoint serves no /status; it is not a multinic-kubelet-plugin, or one older than this multinic ({HINT})"
    )]
    NoStatus { url: String },
    #[error("GET {url} answered {status}: {body}")]
    Answer {
        url: String,
        status: StatusCode,
        body: String,
    },
    #[error("GET {url} is not a multinic status document: {source}")]
    Parse { url: String, source: serde_json::Error },
    #[error(
        "the plugin at {endpoint} serves status version {found}, this multinic reads version {STATUS_VERSION}; run the multinic of the plugin's image ({HINT})"
    )]
    Version { endpoint: String, found: u64 },
    #[error("writing the status as JSON: {0}")]
    Json(#[source] serde_json::Error),
}

/// Reads the status of the plugin at `args.endpoint` and renders it.
pub async fn run(args: &StatusArgs) -> Result<String, StatusError> {
    render(&fetch(&args.endpoint).await?, args.output)
}

/// Where to connect and what to ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    host: String,
    port: u16,
    authority: String,
    path: String,
}

/// `endpoint` + `/leaf` (`leaf` without its slash: `status`, `metrics`).
fn target(endpoint: &str, leaf: &str) -> Result<Target, StatusError> {
    let bad = |reason: String| StatusError::Endpoint {
        endpoint: endpoint.to_string(),
        reason,
    };
    let uri: Uri = endpoint
        .parse()
        .map_err(|e: hyper::http::uri::InvalidUri| bad(e.to_string()))?;
    match uri.scheme_str() {
        Some("http") | None => {}
        Some(other) => return Err(bad(format!("scheme {other}: the metrics port serves plain http"))),
    }
    let authority = uri.authority().ok_or_else(|| bad("no host".into()))?;
    let host = authority.host().trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(bad("no host".into()));
    }
    Ok(Target {
        host: host.to_string(),
        port: authority.port_u16().unwrap_or(80),
        authority: authority.to_string(),
        path: format!("{}/{leaf}", uri.path().trim_end_matches('/')),
    })
}

/// `GET <endpoint>/status`, checked to be a status document of [`STATUS_VERSION`].
pub async fn fetch(endpoint: &str) -> Result<NodeStatus, StatusError> {
    let target = target(endpoint, "status")?;
    tokio::time::timeout(TIMEOUT, get(endpoint, &target))
        .await
        .map_err(|_| StatusError::Timeout {
            endpoint: endpoint.to_string(),
        })?
}

/// `GET <endpoint>/metrics`: the plugin's Prometheus text.
pub async fn fetch_metrics(endpoint: &str) -> Result<String, StatusError> {
    let target = target(endpoint, "metrics")?;
    let (url, status, body) = tokio::time::timeout(TIMEOUT, get_raw(endpoint, &target))
        .await
        .map_err(|_| StatusError::Timeout {
            endpoint: endpoint.to_string(),
        })??;
    let body = String::from_utf8_lossy(&body).to_string();
    match status {
        StatusCode::OK => Ok(body),
        status => Err(StatusError::Answer {
            url,
            status,
            body: body.trim().to_string(),
        }),
    }
}

/// `GET` of `target`: its URL, the answer's status and body.
async fn get_raw(endpoint: &str, target: &Target) -> Result<(String, StatusCode, Bytes), StatusError> {
    let url = format!("http://{}{}", target.authority, target.path);
    let http = |source| StatusError::Http {
        url: url.clone(),
        endpoint: endpoint.to_string(),
        source,
    };
    let stream = tokio::net::TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(|source| StatusError::Connect {
            endpoint: endpoint.to_string(),
            source,
        })?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .map_err(http)?;
    tokio::spawn(async move {
        if let Err(error) = conn.await {
            tracing::debug!(%error, "status connection");
        }
    });
    let request = Request::get(target.path.as_str())
        .header(hyper::header::HOST, target.authority.as_str())
        .body(Empty::<Bytes>::new())
        .map_err(|e| StatusError::Endpoint {
            endpoint: endpoint.to_string(),
            reason: e.to_string(),
        })?;
    let response = send.send_request(request).await.map_err(http)?;
    let status = response.status();
    let body = Limited::new(response.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
        .map_err(|e| StatusError::Body {
            url: url.clone(),
            reason: e.to_string(),
        })?
        .to_bytes();
    Ok((url, status, body))
}

async fn get(endpoint: &str, target: &Target) -> Result<NodeStatus, StatusError> {
    let (url, status, body) = get_raw(endpoint, target).await?;
    match status {
        StatusCode::OK => {}
        StatusCode::NOT_FOUND => return Err(StatusError::NoStatus { url }),
        status => {
            let body = String::from_utf8_lossy(&body).trim().to_string();
            return Err(StatusError::Answer { url, status, body });
        }
    }
    let parse = |source| StatusError::Parse {
        url: url.clone(),
        source,
    };
    let doc: serde_json::Value = serde_json::from_slice(&body).map_err(parse)?;
    match doc.get("version").and_then(serde_json::Value::as_u64) {
        Some(v) if v == u64::from(STATUS_VERSION) => serde_json::from_value(doc).map_err(parse),
        Some(found) => Err(StatusError::Version {
            endpoint: endpoint.to_string(),
            found,
        }),
        None => Err(parse(serde::de::Error::missing_field("version"))),
    }
}

/// The status as `output`.
pub fn render(status: &NodeStatus, output: StatusOutput) -> Result<String, StatusError> {
    match output {
        StatusOutput::Table => Ok(table(status)),
        StatusOutput::Json => serde_json::to_string_pretty(status)
            .map(|json| json + "\n")
            .map_err(StatusError::Json),
    }
}

fn join<T: ToString>(items: &[T], sep: &str) -> String {
    if items.is_empty() {
        return "-".into();
    }
    items.iter().map(ToString::to_string).collect::<Vec<_>>().join(sep)
}

fn location(nic: &NicStatus) -> String {
    match (nic.presence, nic.pods.is_empty()) {
        (Presence::OnHost, true) => "host".into(),
        (Presence::OnHost, false) => format!("host, children in {}", join(&nic.pods, ",")),
        (Presence::InPod, true) => "pod".into(),
        (Presence::InPod, false) => format!("pod {}", join(&nic.pods, ",")),
        (Presence::Gone, _) => "gone".into(),
    }
}

fn health(status: Status) -> &'static str {
    match status {
        Status::Healthy => "Healthy",
        Status::Unhealthy => "Unhealthy",
        Status::Unknown => "Unknown",
    }
}

/// Columns padded to their widest cell, two spaces apart; the last column is not padded.
fn columns(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(header).chain(rows) {
        let last = row.len().saturating_sub(1);
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
            line.push_str(cell);
            if i < last {
                line.push_str(&" ".repeat(w - cell.chars().count() + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// One table of `items` (`none` when there are none), one row per item.
fn section<T>(items: &[T], none: &str, header: &[&str], row: impl Fn(&T) -> Vec<String>) -> String {
    if items.is_empty() {
        format!("{none}\n")
    } else {
        columns(header, items.iter().map(row).collect())
    }
}

/// Pure: the status as three tables (NICs, claims, blocks), each unhealthy NIC's message under
/// the first.
pub fn table(status: &NodeStatus) -> String {
    let mut out = format!("NODE {}\n\n", status.node);
    out.push_str(&section(
        &status.nics,
        "no published NICs",
        &["DEVICE", "IFNAME", "RAIL", "WHERE", "ADDRESSES", "HEALTH"],
        |n| {
            vec![
                n.device.clone(),
                n.if_name.clone(),
                n.rail_index.to_string(),
                location(n),
                join(&n.addresses, ","),
                format!("{} ({})", health(n.health.status), n.health.reason),
            ]
        },
    ));
    for n in status.nics.iter().filter(|n| n.health.status == Status::Unhealthy) {
        out.push_str(&format!("unhealthy {}: {}\n", n.device, n.health.message));
    }
    out.push('\n');
    out.push_str(&section(
        &status.claims,
        "no prepared claims",
        &["CLAIM", "POD(S)", "DEVICES", "IPS"],
        |c| {
            let devices: Vec<String> = c
                .devices
                .iter()
                .map(|d| format!("{}={}", d.pod_if_name, d.device))
                .collect();
            let ips: Vec<String> = c.devices.iter().flat_map(|d| &d.ips).map(ToString::to_string).collect();
            vec![
                format!("{}/{}", c.namespace, c.name),
                join(&c.pods, ","),
                join(&devices, ","),
                join(&ips, ","),
            ]
        },
    ));
    out.push('\n');
    out.push_str(&section(
        &status.blocks,
        "no NicNodeBlocks for this node",
        &["NETWORK", "RAIL", "CIDR", "FREE"],
        |b| {
            vec![
                b.network.clone(),
                b.rail_index.to_string(),
                b.cidr.to_string(),
                b.free.to_string(),
            ]
        },
    ));
    out
}

#[cfg(test)]
mod tests {
    use multinic_api::config::AttachmentMode;
    use multinic_kubelet_plugin::status::{BlockStatus, ClaimDeviceStatus, ClaimStatus, HealthStatus};

    use super::*;

    fn nic(
        device: &str,
        rail: u32,
        presence: Presence,
        pods: &[&str],
        addresses: &[&str],
        health: Status,
    ) -> NicStatus {
        let reason = match health {
            Status::Healthy => "LinkUp",
            Status::Unhealthy => "CarrierDown",
            Status::Unknown => "InPod",
        };
        NicStatus {
            device: device.into(),
            if_name: format!("ens{rail}"),
            rail_index: rail,
            presence,
            pods: pods.iter().map(|p| p.to_string()).collect(),
            addresses: addresses.iter().map(|a| a.parse().unwrap()).collect(),
            health: HealthStatus {
                status: health,
                reason: reason.into(),
                message: format!("{reason} on ens{rail}: check its cable"),
            },
        }
    }

    fn status() -> NodeStatus {
        NodeStatus {
            version: STATUS_VERSION,
            node: "node-a".into(),
            nics: vec![
                nic(
                    "pci-0000-10-00-0",
                    0,
                    Presence::OnHost,
                    &[],
                    &["192.168.1.10/24"],
                    Status::Healthy,
                ),
                nic(
                    "pci-0000-10-00-1",
                    1,
                    Presence::InPod,
                    &["ml/pod-a"],
                    &["10.10.7.9/29"],
                    Status::Unknown,
                ),
                nic(
                    "pci-0000-10-00-2",
                    2,
                    Presence::OnHost,
                    &["ml/pod-b", "ml/pod-c"],
                    &[],
                    Status::Unhealthy,
                ),
            ],
            claims: vec![ClaimStatus {
                namespace: "ml".into(),
                name: "claim-a".into(),
                uid: "uid-a".into(),
                network: Some("rails".into()),
                pods: vec!["ml/pod-a".into()],
                devices: vec![ClaimDeviceStatus {
                    device: "pci-0000-10-00-1".into(),
                    pod_if_name: "net1".into(),
                    mode: AttachmentMode::HostDevice,
                    rail_index: Some(1),
                    ips: vec!["10.10.7.9/29".parse().unwrap()],
                }],
            }],
            blocks: vec![BlockStatus {
                network: "rails".into(),
                rail_index: 0,
                cidr: "10.10.7.0/29".parse().unwrap(),
                node_address: None,
                free: 6,
            }],
        }
    }

    #[test]
    fn table_lists_nics_claims_and_blocks() {
        assert_eq!(
            table(&status()),
            "\
NODE node-a

DEVICE            IFNAME  RAIL  WHERE                                ADDRESSES        HEALTH
pci-0000-10-00-0  ens0    0     host                                 192.168.1.10/24  Healthy (LinkUp)
pci-0000-10-00-1  ens1    1     pod ml/pod-a                         10.10.7.9/29     Unknown (InPod)
pci-0000-10-00-2  ens2    2     host, children in ml/pod-b,ml/pod-c  -                Unhealthy (CarrierDown)
unhealthy pci-0000-10-00-2: CarrierDown on ens2: check its cable

CLAIM       POD(S)    DEVICES                IPS
ml/claim-a  ml/pod-a  net1=pci-0000-10-00-1  10.10.7.9/29

NETWORK  RAIL  CIDR          FREE
rails    0     10.10.7.0/29  6
"
        );
    }

    #[test]
    fn an_empty_node_says_what_it_lacks() {
        let empty = NodeStatus {
            nics: vec![],
            claims: vec![],
            blocks: vec![],
            ..status()
        };
        assert_eq!(
            table(&empty),
            "NODE node-a\n\nno published NICs\n\nno prepared claims\n\nno NicNodeBlocks for this node\n"
        );
    }

    #[test]
    fn json_output_round_trips() {
        let json = render(&status(), StatusOutput::Json).unwrap();
        assert_eq!(serde_json::from_str::<NodeStatus>(&json).unwrap(), status());
    }

    #[test]
    fn endpoints_are_http_host_port_urls() {
        let t = target("http://127.0.0.1:9177", "status").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.authority.as_str(), t.path.as_str()),
            ("127.0.0.1", 9177, "127.0.0.1:9177", "/status")
        );
        let t = target("http://[::1]:9177/", "metrics").unwrap();
        assert_eq!((t.host.as_str(), t.port, t.path.as_str()), ("::1", 9177, "/metrics"));
        assert_eq!(target("http://node-a", "status").unwrap().port, 80);
        for bad in ["https://127.0.0.1:9177", "http://", "not a url"] {
            let error = target(bad, "status").unwrap_err().to_string();
            assert!(
                error.starts_with(&format!("--endpoint {bad:?} is not an http://host:port URL")),
                "{error}"
            );
        }
    }
}
