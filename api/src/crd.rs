//! Our custom resources (group `multinic.dev`, version `v1alpha1`, cluster-scoped).

use ipnet::Ipv4Net;
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
#[kube(status = "MultiNicNetworkStatus")]
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<u32>,
}

/// The blocks of one node in one `rails` network; named `<network>.<node>`.
#[derive(CustomResource, Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "multinic.dev",
    version = "v1alpha1",
    kind = "NicNodeBlocks",
    plural = "nicnodeblocks"
)]
#[serde(rename_all = "camelCase")]
pub struct NicNodeBlocksSpec {
    pub network: String,
    pub node_name: String,
    /// The node's host index *h* in the network (stable while the node exists).
    pub host_index: u32,
    /// One block per rail.
    pub blocks: Vec<RailBlock>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RailBlock {
    pub rail_index: u32,
    #[schemars(with = "String")]
    pub cidr: Ipv4Net,
}

/// Name of the NicNodeBlocks of a node in a network.
pub fn node_blocks_name(network: &str, node: &str) -> String {
    format!("{network}.{node}")
}
