//! What the node ledger holds, as one JSON document: `GET /status` on the metrics port, read by
//! `multinic status`. Built by a pure function ([`build`]) over plain data: the device table, the
//! committed plans, the leased addresses and the node's NicNodeBlocks.
//!
//! The document (version [`STATUS_VERSION`]; a reader rejects other versions):
//!
//! ```json
//! {
//!   "version": 1,
//!   "node": "node-a",
//!   "nics": [{"device": "pci-0000-10-00-0", "ifName": "ens9999np0", "railIndex": 0,
//!             "presence": "onHost" | "inPod", "pods": ["ml/pod-a"],
//!             "addresses": ["10.10.7.1/29"],
//!             "health": {"status": "Healthy" | "Unhealthy" | "Unknown", "reason": "LinkUp", "message": "..."}}],
//!   "claims": [{"namespace": "ml", "name": "claim-a", "uid": "...", "network": "rails",
//!               "pods": ["ml/pod-a"],
//!               "devices": [{"device": "pci-0000-10-00-1", "podIfName": "net1", "mode": "host-device",
//!                            "railIndex": 1, "ips": ["10.10.7.9/29"]}]}],
//!   "blocks": [{"network": "rails", "railIndex": 0, "cidr": "10.10.7.0/29", "nodeAddress": "10.0.0.5", "free": 6}]
//! }
//! ```
//!
//! * `nics`: every published device, by `railIndex`. `pods` are the pods (`namespace/name`) of the
//!   plans that hold the NIC: the pod it moved into (`inPod`), or the pods with a child link of it
//!   (macvlan, ipvlan: the NIC stays `onHost`). `addresses`: the host's IPv4 address on the NIC
//!   while it is on the host, then the addresses the plans give it (or its children) in pods.
//! * `claims`: every prepared claim (one plan each), by namespace and name; `pods` from the
//!   claim's `reservedFor`, `devices` in pod interface order.
//! * `blocks`: this node's blocks of `rails` networks, by network and rail; `free` counts the
//!   usable addresses of the block that no plan (or prepare in flight) holds. A dual-stack
//!   network has an IPv4 and an IPv6 block per rail (`"cidr": "fd00:10::700:0:0:0/74"`).

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;
use multinic_api::config::AttachmentMode;
use multinic_api::crd::NicNodeBlocksSpec;
use multinic_api::plan::Plan;
use multinic_api::rails::usable_count;
use serde::{Deserialize, Serialize};

use crate::health::Status;
use crate::ledger::Presence;
use crate::slices::PublishedDevice;

/// Version of the status document. Bump on incompatible changes.
pub const STATUS_VERSION: u32 = 1;

/// The node ledger as `GET /status` serves it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    pub version: u32,
    pub node: String,
    pub nics: Vec<NicStatus>,
    pub claims: Vec<ClaimStatus>,
    pub blocks: Vec<BlockStatus>,
}

/// One published NIC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NicStatus {
    /// Device name in the ResourceSlice.
    pub device: String,
    /// Interface name on the host (the name it had there while it is in a pod).
    pub if_name: String,
    pub rail_index: u32,
    pub presence: Presence,
    /// `namespace/name` of the pods that hold it.
    #[serde(default)]
    pub pods: Vec<String>,
    #[serde(default)]
    pub addresses: Vec<IpNet>,
    pub health: HealthStatus,
}

/// A NIC's health as the node sees it ([`crate::health::assess`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthStatus {
    pub status: Status,
    pub reason: String,
    pub message: String,
}

/// One prepared claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimStatus {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// `namespace/name` of the pods the claim is reserved for.
    #[serde(default)]
    pub pods: Vec<String>,
    pub devices: Vec<ClaimDeviceStatus>,
}

/// One device of a prepared claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimDeviceStatus {
    pub device: String,
    pub pod_if_name: String,
    pub mode: AttachmentMode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rail_index: Option<u32>,
    #[serde(default)]
    pub ips: Vec<IpNet>,
}

/// One of the node's blocks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BlockStatus {
    pub network: String,
    pub rail_index: u32,
    pub cidr: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_address: Option<IpAddr>,
    pub free: u64,
}

/// What [`build`] reads.
#[derive(Debug, Clone, Copy)]
pub struct StatusInputs<'a> {
    pub node: &'a str,
    /// The device table ([`crate::publish::DeviceTable::all`]).
    pub devices: &'a [PublishedDevice],
    /// The committed plans.
    pub plans: &'a [Plan],
    /// Every leased address (plans and prepares in flight).
    pub used: &'a BTreeSet<IpAddr>,
    /// NicNodeBlocks; those of other nodes are left out.
    pub blocks: &'a [NicNodeBlocksSpec],
}

/// Usable addresses of `cidr` that are not in `used` (counted, not walked: an IPv6 block holds up
/// to 2^64 addresses; saturated at `u64::MAX`).
pub fn free_addresses(cidr: IpNet, used: &BTreeSet<IpAddr>) -> u64 {
    // Only usable addresses are ever leased from a block.
    let held = used.range(cidr.network()..=cidr.broadcast()).count();
    usable_count(&cidr).saturating_sub(u64::try_from(held).unwrap_or(u64::MAX))
}

fn pod_names(plan: &Plan) -> Vec<String> {
    plan.pods
        .iter()
        .map(|p| format!("{}/{}", plan.namespace, p.name))
        .collect()
}

/// Pure: the status document of the node.
pub fn build(inputs: StatusInputs<'_>) -> NodeStatus {
    let mut nics: Vec<NicStatus> = inputs
        .devices
        .iter()
        .map(|d| {
            let name = &d.device.name;
            let mut pods = BTreeSet::new();
            let mut addresses: Vec<IpNet> = match d.presence {
                Presence::OnHost => d.nic.ipv4.map(IpNet::V4).into_iter().collect(),
                Presence::InPod | Presence::Gone => Vec::new(),
            };
            for plan in inputs.plans {
                for planned in plan.devices.iter().filter(|p| &p.device == name) {
                    pods.extend(pod_names(plan));
                    addresses.extend(planned.ips.iter().copied());
                }
            }
            NicStatus {
                device: name.clone(),
                if_name: d.nic.if_name.clone(),
                rail_index: d.rail_index,
                presence: d.presence,
                pods: pods.into_iter().collect(),
                addresses,
                health: HealthStatus {
                    status: d.health.status,
                    reason: d.health.reason.to_string(),
                    message: d.health.message.clone(),
                },
            }
        })
        .collect();
    nics.sort_by(|a, b| (a.rail_index, &a.device).cmp(&(b.rail_index, &b.device)));

    let mut claims: Vec<ClaimStatus> = inputs
        .plans
        .iter()
        .map(|plan| ClaimStatus {
            namespace: plan.namespace.clone(),
            name: plan.name.clone(),
            uid: plan.claim_uid.clone(),
            network: plan.network.clone(),
            pods: pod_names(plan),
            devices: plan
                .devices
                .iter()
                .map(|d| ClaimDeviceStatus {
                    device: d.device.clone(),
                    pod_if_name: d.pod_if_name.clone(),
                    mode: d.mode,
                    rail_index: d.rail_index,
                    ips: d.ips.clone(),
                })
                .collect(),
        })
        .collect();
    claims.sort_by(|a, b| (&a.namespace, &a.name, &a.uid).cmp(&(&b.namespace, &b.name, &b.uid)));

    let mut blocks: Vec<BlockStatus> = inputs
        .blocks
        .iter()
        .filter(|nb| nb.node_name == inputs.node)
        .flat_map(|nb| {
            nb.blocks.iter().map(|b| BlockStatus {
                network: nb.network.clone(),
                rail_index: b.rail_index,
                cidr: b.cidr,
                node_address: b.node_address,
                free: free_addresses(b.cidr, inputs.used),
            })
        })
        .collect();
    blocks.sort_by(|a, b| {
        (&a.network, a.rail_index, a.cidr.addr().is_ipv6()).cmp(&(&b.network, b.rail_index, b.cidr.addr().is_ipv6()))
    });

    NodeStatus {
        version: STATUS_VERSION,
        node: inputs.node.to_string(),
        nics,
        claims,
        blocks,
    }
}

#[cfg(test)]
mod tests {
    use multinic_api::crd::RailBlock;
    use multinic_api::plan::{PLAN_VERSION, PlannedDevice, PodRef};
    use serde_json::json;

    use super::*;
    use crate::health::Health;
    use crate::inventory::Nic;
    use crate::slices::{SliceOptions, build_device_table};

    fn nic(i: usize) -> Nic {
        multinic_testkit::fixtures::roce_nic(i)
    }

    fn planned(device: &str, if_name: &str, rail: u32, ip: &str) -> PlannedDevice {
        multinic_testkit::fixtures::planned_device("node-a", device, if_name, rail, "net1", ip)
    }

    #[test]
    fn status_names_where_each_nic_is_its_claims_and_the_free_addresses_per_block() {
        let mut host = nic(0);
        host.ipv4 = Some("192.168.1.10/24".parse().unwrap());
        let mut devices = build_device_table(&[host, nic(1)], &SliceOptions::new("node-a"));
        devices[0].health = Health {
            status: Status::Healthy,
            reason: "LinkUp",
            message: "ens9999np0 is up with carrier".into(),
        };
        devices[1].presence = Presence::InPod;
        devices[1].health = Health {
            status: Status::Unknown,
            reason: "InPod",
            message: "in a pod".into(),
        };
        let in_pod = devices[1].device.name.clone();
        let plan = Plan {
            version: PLAN_VERSION,
            claim_uid: "uid-a".into(),
            namespace: "ml".into(),
            name: "claim-a".into(),
            pods: vec![PodRef {
                uid: "pod-uid".into(),
                name: "pod-a".into(),
            }],
            network: Some("rails".into()),
            devices: vec![planned(&in_pod, "ens9998np0", 1, "10.10.7.9/29")],
        };
        let used = BTreeSet::from(["10.10.7.9".parse().unwrap()]);
        let blocks = |node: &str, h: u8| NicNodeBlocksSpec {
            network: "rails".into(),
            node_name: node.into(),
            host_index: u32::from(h),
            granted_blocks: Vec::new(),
            blocks: (0..2u8)
                .map(|k| RailBlock {
                    rail_index: u32::from(k),
                    cidr: format!("10.10.{h}.{}/29", k * 8).parse().unwrap(),
                    node_address: None,
                })
                .collect(),
        };
        let status = build(StatusInputs {
            node: "node-a",
            devices: &devices,
            plans: &[plan],
            used: &used,
            blocks: &[blocks("node-b", 3), blocks("node-a", 7)],
        });
        assert_eq!(
            serde_json::to_value(&status).unwrap(),
            json!({
                "version": 1,
                "node": "node-a",
                "nics": [
                    {"device": devices[0].device.name, "ifName": "ens9999np0", "railIndex": 0, "presence": "onHost",
                     "pods": [], "addresses": ["192.168.1.10/24"],
                     "health": {"status": "Healthy", "reason": "LinkUp", "message": "ens9999np0 is up with carrier"}},
                    {"device": in_pod, "ifName": "ens9998np0", "railIndex": 1, "presence": "inPod",
                     "pods": ["ml/pod-a"], "addresses": ["10.10.7.9/29"],
                     "health": {"status": "Unknown", "reason": "InPod", "message": "in a pod"}},
                ],
                "claims": [{"namespace": "ml", "name": "claim-a", "uid": "uid-a", "network": "rails",
                            "pods": ["ml/pod-a"],
                            "devices": [{"device": in_pod, "podIfName": "net1", "mode": "host-device",
                                         "railIndex": 1, "ips": ["10.10.7.9/29"]}]}],
                "blocks": [
                    {"network": "rails", "railIndex": 0, "cidr": "10.10.7.0/29", "free": 6},
                    {"network": "rails", "railIndex": 1, "cidr": "10.10.7.8/29", "free": 5},
                ],
            })
        );
        let text = serde_json::to_string(&status).unwrap();
        assert_eq!(serde_json::from_str::<NodeStatus>(&text).unwrap(), status, "round trip");
    }

    #[test]
    fn ipv6_blocks_are_counted_not_walked() {
        let used: BTreeSet<IpAddr> = ["fd00::1", "fd00::2", "fd00:1::1", "10.0.0.1"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(free_addresses("fd00::/74".parse().unwrap(), &used), (1 << 54) - 3);
        assert_eq!(free_addresses("fd00::/64".parse().unwrap(), &used), u64::MAX - 2);
        assert_eq!(free_addresses("fd00::/126".parse().unwrap(), &used), 1);
        assert_eq!(free_addresses("10.0.0.0/29".parse().unwrap(), &used), 5);
    }
}
