//! Our custom resources (group `multinic.dev`, version `v1alpha1`, cluster-scoped).

use std::net::IpAddr;

use ipnet::IpNet;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::config::{Attachment, Ipam, Routing};

/// The portable network (design.md §5).
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "multinic.dev",
    version = "v1alpha1",
    kind = "MultiNicNetwork",
    plural = "multinicnetworks"
)]
#[kube(status = "MultiNicNetworkStatus", shortname = "mnn")]
#[kube(printcolumn = r#"{"name":"Mode","type":"string","jsonPath":".spec.attachment.mode"}"#)]
#[kube(printcolumn = r#"{"name":"IPAM","type":"string","jsonPath":".spec.ipam.type"}"#)]
#[kube(printcolumn = r#"{"name":"Subnet","type":"string","jsonPath":".spec.ipam.subnet"}"#)]
#[kube(printcolumn = r#"{"name":"Nodes","type":"integer","jsonPath":".status.nodes"}"#)]
#[kube(printcolumn = r#"{"name":"Ready-Nodes","type":"integer","jsonPath":".status.readyNodes"}"#)]
#[kube(printcolumn = r#"{"name":"Unhealthy","type":"integer","jsonPath":".status.unhealthyDevices"}"#)]
#[kube(
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#
)]
#[kube(printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#)]
#[serde(rename_all = "camelCase")]
pub struct MultiNicNetworkSpec {
    /// CEL expression over the device, added to the DeviceClass selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    #[serde(default)]
    pub attachment: Attachment,
    #[serde(default)]
    pub ipam: Ipam,
    #[serde(default)]
    pub routing: Routing,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface_name_prefix: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MultiNicNetworkStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_class_name: Option<String>,
    /// Nodes with devices the network selects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<u32>,
    /// Of those, the nodes that can take a pod now: their blocks are written (`rails` IPAM) and
    /// at least one selected device is not tainted unhealthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_nodes: Option<u32>,
    /// Selected devices over all nodes, and how many of them are tainted (a NIC without carrier,
    /// gone from the host, or with its RDMA port down).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devices: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unhealthy_devices: Option<u32>,
}

/// The blocks of one node in one `rails` or `pool` network; named `<network>.<node>`. The spec
/// is written by the controller only; the status by the node only (the requests of a `pool`
/// network: the protocol is in multinic_api::pool).
#[derive(CustomResource, Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "multinic.dev",
    version = "v1alpha1",
    kind = "NicNodeBlocks",
    plural = "nicnodeblocks"
)]
#[kube(status = "NicNodeBlocksStatus")]
#[serde(rename_all = "camelCase")]
pub struct NicNodeBlocksSpec {
    pub network: String,
    pub node_name: String,
    /// `rails`: the node's host index *h* in the network (stable while the node exists); 0 in a
    /// `pool` network.
    #[serde(default)]
    pub host_index: u32,
    /// `rails`: one block per rail and address family (a dual-stack network lists an IPv4 and an
    /// IPv6 block for each rail, IPv4 first); empty in a `pool` network.
    pub blocks: Vec<RailBlock>,
    /// `pool`: the blocks of the network's subnet granted to this node, in address order. Only
    /// the controller writes them; no block is granted to two nodes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(with = "Vec<String>")]
    pub granted_blocks: Vec<IpNet>,
}

/// A `pool` network's requests of the node (written by the node plugin of `spec.nodeName`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NicNodeBlocksStatus {
    /// How many blocks the node wants to hold: those it keeps, plus one when its free addresses
    /// are below the low watermark.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub want_blocks: Option<u32>,
    /// Granted blocks the node gives back (no plan holds an address in them); it never allocates
    /// from a block listed here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(with = "Vec<String>")]
    pub released_blocks: Vec<IpNet>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RailBlock {
    pub rail_index: u32,
    /// The block, IPv4 or IPv6.
    #[schemars(with = "String")]
    pub cidr: IpNet,
    /// The node's own address on this rail in the block's family (for IPv4 the address its rail
    /// NIC publishes as `ipv4`), when it has one. Peers route this block `via` it: a pod's address
    /// on an ipvlan-l3 child never answers ARP, so an on-link route to the block reaches nobody
    /// (design.md §5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub node_address: Option<IpAddr>,
}

/// Name of the NicNodeBlocks of a node in a network.
pub fn node_blocks_name(network: &str, node: &str) -> String {
    format!("{network}.{node}")
}

/// CEL rules (`x-kubernetes-validations`) that reject impossible networks at admission, by schema
/// path below `spec`. The same rules are evaluated in the tests with kube's CEL implementation.
pub const NETWORK_RULES: &[(&str, &str, &str)] = &[
    (
        "attachment",
        "!has(self.mode) || self.mode in ['host-device', 'sriov-vf', 'macvlan', 'ipvlan-l2', 'ipvlan-l3']",
        "attachment.mode must be one of host-device, sriov-vf, macvlan, ipvlan-l2, ipvlan-l3",
    ),
    (
        "attachment",
        "!has(self.mtu) || (self.mtu >= 68 && self.mtu <= 65535)",
        "attachment.mtu must be within 68..65535",
    ),
    (
        "ipam",
        "!has(self.type) || self.type in ['rails', 'host', 'pool', 'static', 'none']",
        "ipam.type must be one of rails, host, pool, static, none",
    ),
    (
        "ipam",
        "!has(self.subnet) || (isCIDR(self.subnet) && cidr(self.subnet).ip().family() == 4)",
        "ipam.subnet must be an IPv4 CIDR such as 10.10.0.0/16",
    ),
    (
        "ipam",
        "!has(self.subnet6) || (isCIDR(self.subnet6) && cidr(self.subnet6).ip().family() == 6)",
        "ipam.subnet6 must be an IPv6 CIDR such as fd00:10::/64",
    ),
    (
        "ipam",
        "!has(self.exclude) || self.exclude.all(x, isCIDR(x))",
        "every ipam.exclude entry must be a CIDR such as 10.10.0.0/30 or fd00:10::/120",
    ),
    (
        "ipam",
        "!has(self.type) || self.type != 'rails' || has(self.subnet) || has(self.subnet6)",
        "ipam.type rails needs ipam.subnet (IPv4), ipam.subnet6 (IPv6) or both",
    ),
    // The prefix rule of `RailsLayout::new`, once per family: 2 bits left for pod addresses.
    (
        "ipam",
        "!has(self.type) || self.type != 'rails' || !has(self.subnet) || !isCIDR(self.subnet) || \
         cidr(self.subnet).prefixLength() + (has(self.hostBlock) ? self.hostBlock : 0) + \
         (has(self.interfaceBlock) ? self.interfaceBlock : 0) <= 30",
        "subnet prefix + hostBlock + interfaceBlock must be at most 30 bits so every interface block holds pod \
         addresses; use a larger subnet or fewer block bits",
    ),
    (
        "ipam",
        "!has(self.type) || self.type != 'rails' || !has(self.subnet6) || !isCIDR(self.subnet6) || \
         cidr(self.subnet6).prefixLength() + (has(self.hostBlock) ? self.hostBlock : 0) + \
         (has(self.interfaceBlock) ? self.interfaceBlock : 0) <= 126",
        "subnet6 prefix + hostBlock + interfaceBlock must be at most 126 bits so every interface block holds pod \
         addresses; use a larger subnet6 or fewer block bits",
    ),
    // The gateway rules of `NetworkConfig::validate` that need no block arithmetic.
    (
        "ipam",
        "!has(self.gatewayIndex) || (has(self.type) && self.type == 'rails' && !has(self.gateway) && \
         self.gatewayIndex >= 1)",
        "ipam.gatewayIndex (1 = a block's first usable address) needs ipam.type rails and no ipam.gateway",
    ),
    (
        "ipam",
        "!has(self.podAddresses) || self.podAddresses.all(p, p.pod.matches('^[^/]+/[^/]+$') && \
         p.addresses.all(x, isCIDR(x)))",
        "every ipam.podAddresses entry needs pod: <namespace>/<pod name> and addresses that are CIDRs",
    ),
    (
        "ipam",
        "!has(self.type) || self.type != 'pool' || (has(self.subnet) && !has(self.subnet6))",
        "ipam.type pool needs ipam.subnet (IPv4, the range shared by all nodes) and takes no ipam.subnet6",
    ),
    (
        "ipam",
        "!has(self.type) || self.type != 'pool' || !has(self.subnet) || !isCIDR(self.subnet) || \
         !has(self.blockPrefix) || (self.blockPrefix >= cidr(self.subnet).prefixLength() && self.blockPrefix <= 32 && \
         self.blockPrefix - cidr(self.subnet).prefixLength() <= 16)",
        "ipam.blockPrefix must be between the subnet's prefix length and 32, and at most 16 bits longer than it",
    ),
    (
        "routing",
        "!has(self.mode) || self.mode in ['l3', 'none']",
        "routing.mode must be l3 or none",
    ),
    (
        "routing",
        "!has(self.defaultRoute) || !self.defaultRoute || !has(self.policyRouting) || !self.policyRouting",
        "routing.defaultRoute and routing.policyRouting exclude each other: with policyRouting each interface's table has its default route via its gateway",
    ),
];

/// The MultiNicNetwork CRD with [`NETWORK_RULES`] attached.
pub fn multinicnetwork_crd()
-> k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition {
    use kube::CustomResourceExt;
    let mut crd = MultiNicNetwork::crd();
    for version in &mut crd.spec.versions {
        let Some(spec) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
            .and_then(|s| s.properties.as_mut())
            .and_then(|p| p.get_mut("spec"))
        else {
            continue;
        };
        for (field, rule, message) in NETWORK_RULES {
            if let Some(target) = spec.properties.as_mut().and_then(|p| p.get_mut(*field)) {
                target.x_kubernetes_validations.get_or_insert_with(Vec::new).push(
                    k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::ValidationRule {
                        rule: (*rule).to_string(),
                        message: Some((*message).to_string()),
                        ..Default::default()
                    },
                );
            }
        }
    }
    crd
}

/// Every CRD of the project as one multi-document YAML (what `multinic crd` prints and
/// `deploy/crds.yaml` and the chart's `crds/crds.yaml` hold).
pub fn crds_yaml() -> Result<String, serde_yaml::Error> {
    use kube::CustomResourceExt;
    let mut out =
        String::from("# Generated by `multinic crd`; do not edit. A test checks it matches the Rust types.\n");
    for doc in [
        serde_yaml::to_string(&multinicnetwork_crd())?,
        serde_yaml::to_string(&NicNodeBlocks::crd())?,
    ] {
        out.push_str("---\n");
        out.push_str(&doc);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use kube::core::cel::Validator;
    use serde_json::{Value, json};

    use super::*;

    fn schema() -> Value {
        let crd = multinicnetwork_crd();
        serde_json::to_value(
            crd.spec.versions[0]
                .schema
                .as_ref()
                .unwrap()
                .open_api_v3_schema
                .as_ref()
                .unwrap(),
        )
        .unwrap()
    }

    fn check(spec: Value) -> Result<(), String> {
        let object = json!({"apiVersion": "multinic.dev/v1alpha1", "kind": "MultiNicNetwork",
            "metadata": {"name": "n"}, "spec": spec});
        Validator::new()
            .validate(&schema(), &object, None)
            .map_err(|e| format!("{e:?}"))
    }

    #[test]
    fn valid_networks_pass_the_rules() {
        check(json!({"attachment": {"mode": "host-device", "mtu": 9000},
            "ipam": {"type": "rails", "subnet": "10.10.0.0/16", "hostBlock": 8, "interfaceBlock": 2,
                     "exclude": ["10.10.0.0/30"]},
            "routing": {"mode": "l3", "policyRouting": true}}))
        .unwrap();
        check(json!({"ipam": {"type": "none"}})).unwrap();
        check(json!({"attachment": {"mode": "macvlan"},
            "ipam": {"type": "pool", "subnet": "10.20.0.0/24", "blockPrefix": 28, "exclude": ["10.20.0.0/25"]}}))
        .unwrap();
        check(json!({})).unwrap();
        check(json!({"ipam": {"type": "rails", "subnet6": "fd00:10::/64", "hostBlock": 32, "interfaceBlock": 30}}))
            .unwrap();
        check(
            json!({"ipam": {"type": "rails", "subnet": "10.10.0.0/16", "subnet6": "fd00:10::/64",
                     "hostBlock": 8, "interfaceBlock": 2, "exclude": ["10.10.0.0/30", "fd00:10::/120"]},
            "routing": {"mode": "l3"}}),
        )
        .unwrap();
        check(
            json!({"ipam": {"type": "rails", "subnet": "10.10.0.0/16", "hostBlock": 8, "interfaceBlock": 2,
                     "gatewayIndex": 1, "exclude": ["10.10.255.0/24"],
                     "podAddresses": [{"pod": "ml/trainer-0", "addresses": ["10.10.255.1/16", "10.10.255.2/16"]}]},
            "routing": {"defaultRoute": true}}),
        )
        .unwrap();
    }

    #[test]
    fn impossible_ipv6_networks_are_rejected_by_the_crd_rules() {
        let cases = [
            (
                json!({"ipam": {"type": "rails", "subnet6": "fd00::/64", "hostBlock": 32, "interfaceBlock": 31}}),
                "at most 126 bits",
            ),
            (
                json!({"ipam": {"type": "rails", "subnet6": "fd00::/120", "hostBlock": 8}}),
                "at most 126 bits",
            ),
            // Dual stack: each family is checked on its own.
            (
                json!({"ipam": {"type": "rails", "subnet": "10.0.0.0/24", "subnet6": "fd00::/64", "hostBlock": 8}}),
                "at most 30 bits",
            ),
            (
                json!({"ipam": {"type": "rails", "subnet": "10.0.0.0/8", "subnet6": "fd00::/124", "hostBlock": 4}}),
                "at most 126 bits",
            ),
            (json!({"ipam": {"type": "rails", "subnet6": "10.0.0.0/8"}}), "IPv6 CIDR"),
            (json!({"ipam": {"type": "rails", "subnet6": "fd00::/129"}}), "IPv6 CIDR"),
            (json!({"ipam": {"type": "rails", "hostBlock": 4}}), "needs ipam.subnet"),
        ];
        for (spec, needle) in cases {
            let err = check(spec.clone()).expect_err(&format!("{spec} should be rejected"));
            assert!(err.contains(needle), "{spec}: {err}");
        }
    }

    #[test]
    fn impossible_networks_are_rejected_by_the_crd_rules() {
        let cases = [
            (
                json!({"ipam": {"type": "rails", "subnet": "10.0.0.0/30", "hostBlock": 8}}),
                "at most 30 bits",
            ),
            (
                json!({"ipam": {"type": "rails", "subnet": "10.0.0.0/16", "hostBlock": 10, "interfaceBlock": 6}}),
                "at most 30 bits",
            ),
            (json!({"attachment": {"mode": "tap"}}), "attachment.mode"),
            (json!({"ipam": {"type": "rails", "subnet": "10.0.0.0/33"}}), "IPv4 CIDR"),
            (json!({"ipam": {"type": "rails", "subnet": "fd00::/64"}}), "IPv4 CIDR"),
            (json!({"ipam": {"type": "rails"}}), "needs ipam.subnet"),
            (json!({"ipam": {"type": "dhcp"}}), "ipam.type"),
            (json!({"ipam": {"type": "static", "exclude": ["nope"]}}), "exclude"),
            (json!({"routing": {"mode": "bgp"}}), "routing.mode"),
            (json!({"ipam": {"type": "pool"}}), "pool needs ipam.subnet"),
            (
                json!({"ipam": {"type": "pool", "subnet": "10.0.0.0/24", "subnet6": "fd00::/64"}}),
                "pool needs ipam.subnet",
            ),
            (
                json!({"ipam": {"type": "pool", "subnet": "10.0.0.0/24", "blockPrefix": 20}}),
                "blockPrefix",
            ),
            (
                json!({"ipam": {"type": "pool", "subnet": "10.0.0.0/8", "blockPrefix": 28}}),
                "blockPrefix",
            ),
            (json!({"attachment": {"mtu": 10}}), "mtu"),
            (json!({"ipam": {"type": "static", "gatewayIndex": 1}}), "gatewayIndex"),
            (
                json!({"ipam": {"type": "rails", "subnet": "10.0.0.0/16", "gatewayIndex": 1, "gateway": "10.0.0.1"}}),
                "gatewayIndex",
            ),
            (
                json!({"ipam": {"type": "rails", "subnet": "10.0.0.0/16", "gatewayIndex": 0}}),
                "gatewayIndex",
            ),
            (
                json!({"ipam": {"type": "none", "podAddresses": [{"pod": "trainer-0", "addresses": ["10.0.0.1/24"]}]}}),
                "podAddresses",
            ),
            (
                json!({"ipam": {"type": "none", "podAddresses": [{"pod": "ml/trainer-0", "addresses": ["10.0.0.1"]}]}}),
                "podAddresses",
            ),
            (
                json!({"routing": {"defaultRoute": true, "policyRouting": true}}),
                "defaultRoute",
            ),
        ];
        for (spec, needle) in cases {
            let err = check(spec.clone()).expect_err(&format!("{spec} should be rejected"));
            assert!(err.contains(needle), "{spec}: {err}");
        }
    }

    #[test]
    fn crd_has_printer_columns_and_is_cluster_scoped() {
        let crd = multinicnetwork_crd();
        assert_eq!(crd.spec.scope, "Cluster");
        let cols: Vec<String> = crd.spec.versions[0]
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.clone())
            .collect();
        assert_eq!(
            cols,
            [
                "Mode",
                "IPAM",
                "Subnet",
                "Nodes",
                "Ready-Nodes",
                "Unhealthy",
                "Ready",
                "Age"
            ]
        );
        assert!(crd.spec.versions[0].subresources.as_ref().unwrap().status.is_some());
    }

    /// Both committed copies: kustomize's and the Helm chart's (`crds/`, which Helm installs
    /// as is and cannot take from outside the chart).
    #[test]
    fn committed_crds_match_the_rust_types() {
        let generated = crds_yaml().unwrap();
        for file in ["deploy/crds.yaml", "deploy/helm/multinic-dra/crds/crds.yaml"] {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(file);
            if std::env::var_os("UPDATE_GOLDEN").is_some() {
                std::fs::write(&path, &generated).unwrap();
            }
            let committed = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                committed == generated,
                "{file} is stale: run `UPDATE_GOLDEN=1 cargo test -p multinic-api committed_crds`"
            );
        }
    }
}
