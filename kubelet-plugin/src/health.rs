//! Device health (issue 16.3): what the node sees of each published NIC, decided by a pure
//! function ([`assess`]), served to the kubelet as `DRAResourceHealth/NodeWatchResources`
//! (`v1alpha1`, which kubelets 1.34-1.36 call whether or not registration lists it, and `v1`) and
//! published as a `NoSchedule` taint on the device while it is unhealthy.
//!
//! The stream sends the full device list at once, after every change of the device table (a link
//! event, a NIC moved into a pod or back) and every [`RESEND`]; each entry carries
//! [`TIMEOUT_SECONDS`], after which the kubelet treats an entry it has not heard again as unknown
//! (`pkg/kubelet/cm/dra/manager.go`, `HandleWatchResourcesStream`).

use std::collections::{BTreeMap, BTreeSet};
use std::pin::Pin;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::resource::v1::DeviceTaint;
use multinic_proto::health::{v1, v1alpha1};
use tonic::{Request, Response, Status as GrpcStatus};

use crate::inventory::LinkState;
use crate::inventory::sysfs::port_state_name;
use crate::ledger::Presence;
use crate::publish::DeviceTable;
use crate::slices::PublishedDevice;

/// Taint key of an unhealthy device (effect `NoSchedule`; the value is the short reason).
pub const TAINT_KEY: &str = "multinic.dev/unhealthy";
/// `IB_PORT_ACTIVE` and `IB_PORT_ACTIVE_DEFER` (`enum ib_port_state`, include/rdma/ib_verbs.h).
const IB_PORT_ACTIVE: u8 = 4;
const IB_PORT_ACTIVE_DEFER: u8 = 5;
/// The health-check timeout sent with every entry.
pub const TIMEOUT_SECONDS: i64 = 30;
/// How often the full list is sent again without a change (well inside [`TIMEOUT_SECONDS`]).
pub const RESEND: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Status {
    Healthy,
    Unhealthy,
    /// The node cannot tell (the NIC is inside a pod, the link is administratively down, or the
    /// driver reports no carrier).
    Unknown,
}

/// A device's health and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    pub status: Status,
    /// Short reason, a taint value (`CarrierDown`, `GoneFromHost`, ...).
    pub reason: &'static str,
    pub message: String,
}

/// What health decisions read besides the device itself.
#[derive(Debug, Clone, Copy)]
pub struct HealthInputs<'a> {
    /// Link state by interface name (the live inventory).
    pub links: &'a BTreeMap<String, LinkState>,
    /// Device names that plans hold as the parent of a pod's child link (macvlan, ipvlan): such a
    /// NIC stays on the host while the pod uses it.
    pub parents: &'a BTreeSet<String>,
}

/// Pure: the health of a published device `name` (interface `if_name`, at `presence`).
pub fn assess(name: &str, if_name: &str, presence: Presence, inputs: HealthInputs<'_>) -> Health {
    let health = |status, reason, message: String| Health {
        status,
        reason,
        message,
    };
    match presence {
        Presence::OnHost => match inputs.links.get(if_name) {
            Some(LinkState { up: false, .. }) => health(
                Status::Unknown,
                "AdminDown",
                format!("{if_name} is administratively down; its carrier is known once it is up"),
            ),
            Some(LinkState {
                carrier: Some(false), ..
            }) => health(
                Status::Unhealthy,
                "CarrierDown",
                format!("link carrier down on {if_name}: check its cable, switch port or peer"),
            ),
            Some(LinkState {
                rdma_port: Some(port), ..
            }) if !matches!(*port, IB_PORT_ACTIVE | IB_PORT_ACTIVE_DEFER) => health(
                Status::Unhealthy,
                "RdmaPortDown",
                format!(
                    "the RDMA port of {if_name} is {} (state {port}): check the fabric link and the subnet manager",
                    port_state_name(*port)
                ),
            ),
            Some(LinkState {
                carrier: Some(true), ..
            }) => health(Status::Healthy, "LinkUp", format!("{if_name} is up with carrier")),
            Some(LinkState { carrier: None, .. }) | None => health(
                Status::Unknown,
                "NoCarrierInfo",
                format!("the kernel reports no carrier for {if_name}"),
            ),
        },
        Presence::InPod if inputs.parents.contains(name) => health(
            Status::Unhealthy,
            "GoneFromHost",
            format!("{if_name} is gone from the node while a pod's child link uses it: check the NIC and its driver"),
        ),
        Presence::InPod => health(
            Status::Unknown,
            "InPod",
            format!("{if_name} is in a pod's network namespace; its link is seen from there only"),
        ),
        Presence::Gone => health(
            Status::Unhealthy,
            "Gone",
            format!("{if_name} is gone from the node: check the NIC and its driver"),
        ),
    }
}

/// The slice taint of an unhealthy device; none otherwise.
pub fn taint(health: &Health) -> Option<DeviceTaint> {
    (health.status == Status::Unhealthy).then(|| DeviceTaint {
        key: TAINT_KEY.into(),
        value: Some(health.reason.into()),
        effect: "NoSchedule".into(),
        time_added: None,
    })
}

/// Pure: the `NodeWatchResources` message for the devices of pool `pool` at unix time `now`.
pub fn response(pool: &str, devices: &[PublishedDevice], now: i64) -> v1alpha1::NodeWatchResourcesResponse {
    v1alpha1::NodeWatchResourcesResponse {
        devices: devices
            .iter()
            .map(|d| v1alpha1::DeviceHealth {
                device: Some(v1alpha1::DeviceIdentifier {
                    pool_name: pool.to_string(),
                    device_name: d.device.name.clone(),
                }),
                health: match d.health.status {
                    Status::Healthy => v1alpha1::HealthStatus::Healthy,
                    Status::Unhealthy => v1alpha1::HealthStatus::Unhealthy,
                    Status::Unknown => v1alpha1::HealthStatus::Unknown,
                } as i32,
                last_updated_time: now,
                health_check_timeout_seconds: TIMEOUT_SECONDS,
                message: d.health.message.clone(),
            })
            .collect(),
    }
}

/// Serves both health API versions from the device table of pool `pool`.
#[derive(Clone)]
pub struct HealthService {
    table: DeviceTable,
    pool: String,
}

type Responses<T> = Pin<Box<dyn Stream<Item = Result<T, GrpcStatus>> + Send>>;

impl HealthService {
    pub fn new(table: DeviceTable, pool: impl Into<String>) -> Self {
        Self {
            table,
            pool: pool.into(),
        }
    }

    /// The full list now, then after every table change and every [`RESEND`], until the client
    /// goes away.
    fn updates(&self) -> impl Stream<Item = v1alpha1::NodeWatchResourcesResponse> + Send + 'static {
        let ticks = tokio_stream::wrappers::IntervalStream::new(tokio::time::interval(RESEND)).map(|_| ());
        let wakes = futures::stream::select(Box::pin(self.table.changes()), ticks);
        let (table, pool) = (self.table.clone(), self.pool.clone());
        wakes.map(move |()| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
            let message = response(&pool, &table.all(), now);
            tracing::debug!(devices = message.devices.len(), "device health sent");
            message
        })
    }
}

/// `DraResourceHealth` of one API version: the stream of [`HealthService::updates`] converted by
/// `$convert`.
macro_rules! serve_version {
    ($version:ident, $convert:expr) => {
        #[tonic::async_trait]
        impl $version::dra_resource_health_server::DraResourceHealth for HealthService {
            type NodeWatchResourcesStream = Responses<$version::NodeWatchResourcesResponse>;

            async fn node_watch_resources(
                &self,
                _request: Request<$version::NodeWatchResourcesRequest>,
            ) -> Result<Response<Self::NodeWatchResourcesStream>, GrpcStatus> {
                tracing::info!(version = stringify!($version), "kubelet watches device health");
                Ok(Response::new(Box::pin(self.updates().map(|m| Ok($convert(m))))))
            }
        }
    };
}

serve_version!(v1alpha1, std::convert::identity);
serve_version!(v1, to_v1);

/// The same message in `v1` (identical fields and numbers).
fn to_v1(m: v1alpha1::NodeWatchResourcesResponse) -> v1::NodeWatchResourcesResponse {
    v1::NodeWatchResourcesResponse {
        devices: m
            .devices
            .into_iter()
            .map(|d| v1::DeviceHealth {
                device: d.device.map(|i| v1::DeviceIdentifier {
                    pool_name: i.pool_name,
                    device_name: i.device_name,
                }),
                health: d.health,
                last_updated_time: d.last_updated_time,
                health_check_timeout_seconds: d.health_check_timeout_seconds,
                message: d.message,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs<'a>(links: &'a BTreeMap<String, LinkState>, parents: &'a BTreeSet<String>) -> HealthInputs<'a> {
        HealthInputs { links, parents }
    }

    #[test]
    fn decisions() {
        let st = |up, carrier, rdma_port| LinkState { up, carrier, rdma_port };
        let links = BTreeMap::from([
            ("up".to_string(), st(true, Some(true), None)),
            ("nocarrier".to_string(), st(true, Some(false), None)),
            ("admindown".to_string(), st(false, Some(false), None)),
            ("unreported".to_string(), st(true, None, None)),
            ("roce".to_string(), st(true, Some(true), Some(4))),
            ("roce-deferred".to_string(), st(true, Some(true), Some(5))),
            ("roce-portdown".to_string(), st(true, Some(true), Some(1))),
            ("roce-nocarrier".to_string(), st(true, Some(false), Some(1))),
        ]);
        let parents = BTreeSet::from(["dev-parent".to_string()]);
        let cases = [
            ("dev", "up", Presence::OnHost, Status::Healthy, "LinkUp"),
            ("dev", "nocarrier", Presence::OnHost, Status::Unhealthy, "CarrierDown"),
            ("dev", "admindown", Presence::OnHost, Status::Unknown, "AdminDown"),
            ("dev", "unreported", Presence::OnHost, Status::Unknown, "NoCarrierInfo"),
            ("dev", "unlisted", Presence::OnHost, Status::Unknown, "NoCarrierInfo"),
            ("dev", "roce", Presence::OnHost, Status::Healthy, "LinkUp"),
            ("dev", "roce-deferred", Presence::OnHost, Status::Healthy, "LinkUp"),
            (
                "dev",
                "roce-portdown",
                Presence::OnHost,
                Status::Unhealthy,
                "RdmaPortDown",
            ),
            (
                "dev",
                "roce-nocarrier",
                Presence::OnHost,
                Status::Unhealthy,
                "CarrierDown",
            ),
            ("dev", "moved", Presence::InPod, Status::Unknown, "InPod"),
            ("dev-parent", "gone", Presence::InPod, Status::Unhealthy, "GoneFromHost"),
            ("dev", "gone", Presence::Gone, Status::Unhealthy, "Gone"),
        ];
        for (name, if_name, presence, status, reason) in cases {
            let h = assess(name, if_name, presence, inputs(&links, &parents));
            assert_eq!((h.status, h.reason), (status, reason), "{name} {if_name} {presence:?}");
            assert!(h.message.contains(if_name), "{}", h.message);
        }
    }

    #[test]
    fn only_unhealthy_devices_are_tainted() {
        let links = BTreeMap::from([(
            "a".to_string(),
            LinkState {
                up: true,
                carrier: Some(false),
                rdma_port: None,
            },
        )]);
        let parents = BTreeSet::new();
        let down = assess("d", "a", Presence::OnHost, inputs(&links, &parents));
        let t = taint(&down).unwrap();
        assert_eq!(
            (t.key.as_str(), t.effect.as_str(), t.value.as_deref()),
            (TAINT_KEY, "NoSchedule", Some("CarrierDown"))
        );
        let moved = assess("d", "a", Presence::InPod, inputs(&links, &parents));
        assert_eq!(taint(&moved), None);
    }
}
