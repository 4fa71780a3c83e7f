//! The opaque network configuration (`parameters` of a DeviceClass or claim `opaque` config).
//!
//! Layers (class-level first, then claim-level, per request) are merged as JSON objects: a key of a
//! later layer replaces the same key of an earlier one, nested objects merge key by key, arrays are
//! replaced whole. The merged object is then parsed strictly (unknown fields are errors).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::names::API_VERSION;
use crate::pool::PoolLayout;
use crate::rails::{RailsError, RailsLayout, RailsLayouts, gateway_in};

/// Largest accepted opaque parameters object (the API server's limit, 10 KiB).
pub const MAX_PARAMETERS_BYTES: usize = 10 * 1024;
/// Linux `IFNAMSIZ - 1`.
pub const MAX_IFNAME_LEN: usize = 15;
/// The kind of the opaque parameters object.
pub const NETWORK_CONFIG_KIND: &str = "NetworkConfig";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error(
        "opaque config layer {layer} is not a JSON object; parameters must be an object such as {{\"apiVersion\":\"{API_VERSION}\",\"kind\":\"{NETWORK_CONFIG_KIND}\"}}"
    )]
    NotAnObject { layer: usize },
    #[error(
        "opaque config layer {layer} is {size} bytes, over the {MAX_PARAMETERS_BYTES}-byte limit; shrink the parameters"
    )]
    TooLarge { layer: usize, size: usize },
    #[error("opaque config: {0}; fix the parameters of the DeviceClass or the claim config")]
    Parse(String),
    #[error("opaque config: apiVersion {0:?} is not supported; use {API_VERSION:?}")]
    ApiVersion(String),
    #[error("opaque config: kind {0:?} is not supported; use {NETWORK_CONFIG_KIND:?}")]
    Kind(String),
    #[error("opaque config: {0}")]
    Invalid(String),
}

/// How a device reaches the pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum AttachmentMode {
    /// Move the netdev into the pod netns.
    #[default]
    HostDevice,
    /// Move an SR-IOV VF netdev into the pod netns.
    SriovVf,
    /// Create a bridge-mode macvlan child of the device in the pod netns.
    Macvlan,
    /// Create an ipvlan L2 child.
    IpvlanL2,
    /// Create an ipvlan L3 child.
    IpvlanL3,
}

impl AttachmentMode {
    /// Whether the pod gets a child link (the host device stays and may be shared).
    pub fn is_shared(self) -> bool {
        matches!(self, Self::Macvlan | Self::IpvlanL2 | Self::IpvlanL3)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::HostDevice => "host-device",
            Self::SriovVf => "sriov-vf",
            Self::Macvlan => "macvlan",
            Self::IpvlanL2 => "ipvlan-l2",
            Self::IpvlanL3 => "ipvlan-l3",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum IpamType {
    /// Per-host, per-rail blocks from `NicNodeBlocks`.
    Rails,
    /// Reuse the host's address of the NIC.
    Host,
    /// One subnet shared by every node: the controller grants each node blocks of it on demand
    /// (`NicNodeBlocks`), the node assigns pod addresses inside its blocks ([`crate::pool`]).
    Pool,
    /// Addresses listed in the config, in device order.
    Static,
    /// No addresses.
    #[default]
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RoutingMode {
    L3,
    #[default]
    None,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Attachment {
    #[serde(default)]
    pub mode: AttachmentMode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Ipam {
    #[serde(rename = "type", default)]
    pub kind: IpamType,
    /// `rails`: the IPv4 subnet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<Ipv4Net>,
    /// `rails`: the IPv6 subnet; with `subnet` too the network is dual-stack (every pod interface
    /// gets one address of each family, from block (h, k) of each subnet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    // The family is checked by the CRD's CEL rules; the length bounds their cost.
    #[schemars(with = "Option<String>", length(max = 49))]
    pub subnet6: Option<Ipv6Net>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_block: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface_block: Option<u8>,
    /// `pool`: prefix length of the blocks of `subnet` the controller grants to nodes (default
    /// /28, kept within the subnet's prefix and 16 bits past it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_prefix: Option<u8>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    /// Ranges of either family no pod gets an address from.
    // Both bounds keep the CEL cost of `exclude.all(x, isCIDR(x))` inside the API server's budget
    // (unbounded strings exceed it); 49 bytes is the longest IPv6 CIDR text
    // (`ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255/128`).
    #[schemars(length(max = 64), inner(length(max = 49)), with = "Vec<String>")]
    pub exclude: Vec<IpNet>,
    /// `static`: one CIDR per device, in device order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(with = "Vec<String>")] // IpNet's oneOf schema is not structural (the API server refuses the CRD)
    pub addresses: Vec<IpNet>,
    /// One IPv4 gateway for every interface (not with `gatewayIndex`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Ipv4Addr>,
    /// `rails`: every interface block's gateway is its network address + `gatewayIndex` (1 = the
    /// first usable address), per family; no pod gets it. Each interface routes via the gateway of
    /// its own rail's block.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_index: Option<u32>,
    /// Static addresses for named pods, whatever the IPAM type. They must lie outside the
    /// network's dynamic ranges (outside `subnet`/`subnet6`, or inside an `exclude` entry), so no
    /// node ever hands them to another pod. A named pod's interfaces get `ipam.gateway`, not a
    /// `gatewayIndex` gateway (their addresses are in no rails block).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    // The bound keeps the CEL cost of the rules over it inside the API server's budget.
    #[schemars(length(max = 256))]
    pub pod_addresses: Vec<PodAddresses>,
}

/// The static addresses of one pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodAddresses {
    /// `<namespace>/<pod name>`.
    #[schemars(length(max = 317))]
    pub pod: String,
    /// One CIDR per device of the pod's claim, in device order.
    #[schemars(length(max = 32), inner(length(max = 49)), with = "Vec<String>")]
    pub addresses: Vec<IpNet>,
}

/// Longest `podAddresses` key: a namespace (63 bytes), '/', a pod name (253 bytes).
const MAX_POD_KEY_LEN: usize = 63 + 1 + 253;

impl Ipam {
    /// Whether the network hands `ip` out by itself (from its rails blocks or its pool): inside
    /// `subnet` or `subnet6` and not excluded.
    pub fn is_dynamic(&self, ip: IpAddr) -> bool {
        let in_subnet = match ip {
            IpAddr::V4(a) => self.subnet.is_some_and(|s| s.contains(&a)),
            IpAddr::V6(a) => self.subnet6.is_some_and(|s| s.contains(&a)),
        };
        in_subnet && !self.exclude.iter().any(|x| x.contains(&ip))
    }

    /// The static addresses of pod `namespace`/`name`, if `podAddresses` names it.
    pub fn pod_addresses_of(&self, namespace: &str, name: &str) -> Option<&[IpNet]> {
        self.pod_addresses
            .iter()
            .find(|p| {
                p.pod
                    .split_once('/')
                    .is_some_and(|(ns, pod)| ns == namespace && pod == name)
            })
            .map(|p| p.addresses.as_slice())
    }

    /// `podAddresses`: `<namespace>/<pod>` keys, at least one address each, none in a dynamic
    /// range ([`is_dynamic`](Self::is_dynamic)) and none given to two pods.
    fn validate_pod_addresses(&self) -> Result<(), ConfigError> {
        let mut owners: BTreeMap<IpAddr, &str> = BTreeMap::new();
        let mut pods = std::collections::BTreeSet::new();
        for PodAddresses { pod, addresses } in &self.pod_addresses {
            if !pods.insert(pod) {
                return Err(ConfigError::Invalid(format!(
                    "ipam.podAddresses names pod {pod:?} twice; keep one entry per pod"
                )));
            }
            let well_formed = pod.len() <= MAX_POD_KEY_LEN
                && pod
                    .split_once('/')
                    .is_some_and(|(ns, name)| !ns.is_empty() && !name.is_empty() && !name.contains('/'));
            if !well_formed {
                return Err(ConfigError::Invalid(format!(
                    "ipam.podAddresses pod {pod:?} must be <namespace>/<pod name>"
                )));
            }
            if addresses.is_empty() {
                return Err(ConfigError::Invalid(format!(
                    "ipam.podAddresses of pod {pod:?} is empty; list one CIDR per device of the pod's claim"
                )));
            }
            for cidr in addresses {
                let ip = cidr.addr();
                if self.is_dynamic(ip) {
                    return Err(ConfigError::Invalid(format!(
                        "ipam.podAddresses of pod {pod:?}: {cidr} is inside the range the network hands out by itself, so another pod could get it; add it (or a range holding it) to ipam.exclude, or pick an address outside subnet/subnet6"
                    )));
                }
                if let Some(other) = owners.insert(ip, pod) {
                    return Err(ConfigError::Invalid(format!(
                        "ipam.podAddresses gives {ip} to both {other:?} and {pod:?}; give each pod its own addresses"
                    )));
                }
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Routing {
    #[serde(default)]
    pub mode: RoutingMode,
    #[serde(default)]
    pub policy_routing: bool,
    /// The pod's default route (per family) goes via the gateway of its first interface that has
    /// one of that family, replacing the primary network's default route. Not with
    /// `policyRouting`, where each interface's table has its default route via its gateway and
    /// the main table keeps the primary network's.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub default_route: bool,
}

/// The merged, parsed opaque config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Name of the MultiNicNetwork this config belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    #[serde(default)]
    pub attachment: Attachment,
    #[serde(default)]
    pub ipam: Ipam,
    #[serde(default)]
    pub routing: Routing,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface_name_prefix: Option<String>,
    /// Explicit pod interface names, in device order; overrides the prefix.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interface_names: Vec<String>,
}

impl NetworkConfig {
    /// Default pod interface name prefix.
    pub const DEFAULT_PREFIX: &'static str = "net";

    /// Merge the layers in order (earlier ones are overridden by later ones) and parse the result.
    pub fn from_layers<'a>(layers: impl IntoIterator<Item = &'a [u8]>) -> Result<Self, ConfigError> {
        let mut values = Vec::new();
        for (layer, raw) in layers.into_iter().enumerate() {
            if raw.len() > MAX_PARAMETERS_BYTES {
                return Err(ConfigError::TooLarge { layer, size: raw.len() });
            }
            values.push(serde_json::from_slice(raw).map_err(|e| ConfigError::Parse(format!("layer {layer}: {e}")))?);
        }
        Self::from_values(&values)
    }

    /// Like [`from_layers`](Self::from_layers) for layers already parsed (the API server has
    /// bounded their size).
    pub fn from_values<'a>(layers: impl IntoIterator<Item = &'a Value>) -> Result<Self, ConfigError> {
        let mut merged = Value::Object(Map::new());
        for (layer, value) in layers.into_iter().enumerate() {
            if !value.is_object() {
                return Err(ConfigError::NotAnObject { layer });
            }
            merge_into(&mut merged, value.clone());
        }
        let config: NetworkConfig = serde_json::from_value(merged).map_err(|e| ConfigError::Parse(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks that do not need the devices: identity, names, prefix arithmetic.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(v) = &self.api_version
            && v != API_VERSION
        {
            return Err(ConfigError::ApiVersion(v.clone()));
        }
        if let Some(k) = &self.kind
            && k != NETWORK_CONFIG_KIND
        {
            return Err(ConfigError::Kind(k.clone()));
        }
        let prefix = self.prefix();
        // The longest generated name is prefix + up to 3 digits.
        if prefix.is_empty() || prefix.len() + 3 > MAX_IFNAME_LEN {
            return Err(ConfigError::Invalid(format!(
                "interfaceNamePrefix {prefix:?} must be 1..={} bytes",
                MAX_IFNAME_LEN - 3
            )));
        }
        validate_ifname(prefix).map_err(|e| ConfigError::Invalid(format!("interfaceNamePrefix: {e}")))?;
        for name in &self.interface_names {
            validate_ifname(name).map_err(|e| ConfigError::Invalid(format!("interfaceNames: {e}")))?;
        }
        if let Some(mtu) = self.attachment.mtu
            && !(68..=65535).contains(&mtu)
        {
            return Err(ConfigError::Invalid(format!(
                "attachment.mtu {mtu} is outside 68..=65535"
            )));
        }
        if self.ipam.kind == IpamType::Rails {
            let layouts = self
                .rails_layouts()
                .map_err(|e| ConfigError::Invalid(format!("ipam: {e}")))?;
            if layouts.v4.is_none() && layouts.v6.is_none() {
                return Err(ConfigError::Invalid(
                    "ipam.type rails needs ipam.subnet (IPv4, e.g. 10.10.0.0/16), ipam.subnet6 (IPv6, e.g. fd00:10::/64) or both".into(),
                ));
            }
        }
        if self.ipam.kind == IpamType::Pool {
            self.pool_layout()?;
        }
        self.validate_gateways()?;
        self.ipam.validate_pod_addresses()
    }

    /// `gatewayIndex` inside every interface block, and `defaultRoute` with a gateway to use.
    fn validate_gateways(&self) -> Result<(), ConfigError> {
        if let Some(index) = self.ipam.gateway_index {
            if self.ipam.kind != IpamType::Rails {
                return Err(ConfigError::Invalid(
                    "ipam.gatewayIndex picks a gateway inside each rails interface block and needs ipam.type rails; use ipam.gateway for one gateway of every interface".into(),
                ));
            }
            if self.ipam.gateway.is_some() {
                return Err(ConfigError::Invalid(
                    "ipam.gateway and ipam.gatewayIndex exclude each other; keep one".into(),
                ));
            }
            // Every block of a layout has the same size: block (0, 0) stands for all of them.
            let blocks = self
                .rails_layouts()
                .and_then(|l| l.blocks(0, 0))
                .map_err(|e| ConfigError::Invalid(format!("ipam: {e}")))?;
            if let Some(block) = blocks.iter().find(|b| gateway_in(**b, index).is_none()) {
                return Err(ConfigError::Invalid(format!(
                    "ipam.gatewayIndex {index} is not a usable address of the /{} interface blocks (block {block} would not hold it); pick an index from 1 to the block's last usable address",
                    block.prefix_len()
                )));
            }
        }
        if self.routing.default_route {
            if self.routing.policy_routing {
                return Err(ConfigError::Invalid(
                    "routing.defaultRoute and routing.policyRouting exclude each other: with policyRouting each interface's table already has its default route via its gateway; turn one off".into(),
                ));
            }
            if self.ipam.gateway.is_none() && self.ipam.gateway_index.is_none() {
                return Err(ConfigError::Invalid(
                    "routing.defaultRoute needs a gateway; set ipam.gatewayIndex (rails) or ipam.gateway".into(),
                ));
            }
        }
        Ok(())
    }

    /// The block layout of a `pool` config: its IPv4 `subnet` in blocks of `blockPrefix`.
    pub fn pool_layout(&self) -> Result<PoolLayout, ConfigError> {
        if self.ipam.subnet6.is_some() {
            return Err(ConfigError::Invalid(
                "ipam.type pool takes an IPv4 ipam.subnet only; use rails for IPv6 (ipam.subnet6)".into(),
            ));
        }
        let subnet = self.ipam.subnet.ok_or_else(|| {
            ConfigError::Invalid(
                "ipam.type pool needs ipam.subnet, the range shared by all nodes (e.g. 10.10.0.0/24)".into(),
            )
        })?;
        PoolLayout::new(subnet, self.ipam.block_prefix).map_err(|e| ConfigError::Invalid(e.to_string()))
    }

    /// The `rails` block layouts of this config: one per subnet it names, with the same block bits.
    pub fn rails_layouts(&self) -> Result<RailsLayouts, RailsError> {
        let (host, iface) = (
            self.ipam.host_block.unwrap_or(0),
            self.ipam.interface_block.unwrap_or(0),
        );
        Ok(RailsLayouts {
            v4: self.ipam.subnet.map(|s| RailsLayout::new(s, host, iface)).transpose()?,
            v6: self
                .ipam
                .subnet6
                .map(|s| RailsLayout::new6(s, host, iface))
                .transpose()?,
        })
    }

    pub fn prefix(&self) -> &str {
        self.interface_name_prefix.as_deref().unwrap_or(Self::DEFAULT_PREFIX)
    }

    /// The pod interface name of the device at `position` (0-based) in plan order.
    pub fn pod_if_name(&self, position: usize) -> String {
        match self.interface_names.get(position) {
            Some(name) => name.clone(),
            None => format!("{}{}", self.prefix(), position + 1),
        }
    }
}

/// Whether the kernel accepts `name` as an interface name: the rule of `dev_valid_name` in the
/// Linux source (net/core/dev.c), byte by byte: 1..=15 bytes (`IFNAMSIZ - 1`), not "." or "..",
/// no '/', ':' or whitespace, where whitespace is the kernel's `isspace()` (lib/ctype.c: \t \n \v
/// \f \r, space and the byte 0xA0). Other bytes, non-ASCII included, are accepted, as the kernel
/// does. A NUL byte is refused too: the name reaches the kernel as a C string.
pub fn validate_ifname(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_IFNAME_LEN {
        return Err(format!("interface name {name:?} must be 1..={MAX_IFNAME_LEN} bytes"));
    }
    let kernel_space = |b: u8| matches!(b, b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | b' ' | 0xa0);
    if name == "."
        || name == ".."
        || name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b == 0 || kernel_space(b))
    {
        return Err(format!(
            "interface name {name:?} may not be '.', '..' or contain '/', ':', NUL or whitespace"
        ));
    }
    Ok(())
}

fn merge_into(base: &mut Value, overlay: Value) {
    match (base, overlay) {
        (Value::Object(base), Value::Object(overlay)) => {
            for (key, value) in overlay {
                match base.get_mut(&key) {
                    Some(existing) if existing.is_object() && value.is_object() => merge_into(existing, value),
                    _ => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (base, overlay) => *base = overlay,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(layers: &[&str]) -> Result<NetworkConfig, ConfigError> {
        NetworkConfig::from_layers(layers.iter().map(|l| l.as_bytes()))
    }

    #[test]
    fn claim_layer_overrides_class_layer_key_by_key() {
        let c = parse(&[
            r#"{"apiVersion":"multinic.dev/v1alpha1","kind":"NetworkConfig","attachment":{"mode":"macvlan","mtu":9000},
               "ipam":{"type":"rails","subnet":"10.10.0.0/16","hostBlock":8,"interfaceBlock":2}}"#,
            r#"{"attachment":{"mtu":1500},"interfaceNamePrefix":"rdma"}"#,
        ])
        .unwrap();
        assert_eq!(c.attachment.mode, AttachmentMode::Macvlan);
        assert_eq!(c.attachment.mtu, Some(1500));
        assert_eq!(c.ipam.kind, IpamType::Rails);
        assert_eq!(c.ipam.host_block, Some(8));
        assert_eq!(c.pod_if_name(0), "rdma1");
    }

    #[test]
    fn defaults_when_no_layers() {
        let c = NetworkConfig::from_layers(std::iter::empty()).unwrap();
        assert_eq!(c.attachment.mode, AttachmentMode::HostDevice);
        assert_eq!(c.ipam.kind, IpamType::None);
        assert_eq!(c.pod_if_name(3), "net4");
    }

    #[test]
    fn explicit_names_win_over_prefix() {
        let c = parse(&[r#"{"interfaceNames":["ib0","ib1"]}"#]).unwrap();
        assert_eq!(c.pod_if_name(1), "ib1");
        assert_eq!(c.pod_if_name(2), "net3");
    }

    #[test]
    fn malformed_configs_are_errors() {
        assert!(matches!(parse(&["[1]"]), Err(ConfigError::NotAnObject { layer: 0 })));
        assert!(matches!(parse(&["{"]), Err(ConfigError::Parse(_))));
        assert!(matches!(parse(&[r#"{"bogus":1}"#]), Err(ConfigError::Parse(_))));
        assert!(matches!(
            parse(&[r#"{"attachment":{"mode":"tap"}}"#]),
            Err(ConfigError::Parse(_))
        ));
        assert!(matches!(
            parse(&[r#"{"apiVersion":"v9"}"#]),
            Err(ConfigError::ApiVersion(_))
        ));
        assert!(matches!(parse(&[r#"{"kind":"Pod"}"#]), Err(ConfigError::Kind(_))));
        assert!(matches!(
            parse(&[r#"{"interfaceNamePrefix":"a/b"}"#]),
            Err(ConfigError::Invalid(_))
        ));
        assert!(matches!(
            parse(&[r#"{"interfaceNamePrefix":"abcdefghijklm"}"#]),
            Err(ConfigError::Invalid(_))
        ));
        assert!(matches!(
            parse(&[r#"{"attachment":{"mtu":10}}"#]),
            Err(ConfigError::Invalid(_))
        ));
        let big = format!(r#"{{"network":"{}"}}"#, "x".repeat(MAX_PARAMETERS_BYTES));
        assert!(matches!(parse(&[&big]), Err(ConfigError::TooLarge { .. })));
    }

    #[test]
    fn rails_prefix_arithmetic_is_checked() {
        let err = parse(&[r#"{"ipam":{"type":"rails","subnet":"10.0.0.0/30","hostBlock":8}}"#]).unwrap_err();
        assert!(err.to_string().contains("hostBlock 8"), "{err}");
        assert!(parse(&[r#"{"ipam":{"type":"rails"}}"#]).is_err());
        assert!(
            parse(&[r#"{"ipam":{"type":"rails","subnet":"10.10.0.0/16","hostBlock":8,"interfaceBlock":2}}"#]).is_ok()
        );
    }

    #[test]
    fn ipv6_and_dual_stack_rails() {
        let v6 =
            parse(&[r#"{"ipam":{"type":"rails","subnet6":"fd00:10::/64","hostBlock":8,"interfaceBlock":2}}"#]).unwrap();
        let layouts = v6.rails_layouts().unwrap();
        assert!(layouts.v4.is_none());
        assert_eq!(layouts.v6.unwrap().block_prefix(), 74);
        let dual = parse(&[
            r#"{"ipam":{"type":"rails","subnet":"10.10.0.0/16","subnet6":"fd00:10::/64","hostBlock":8,"interfaceBlock":2,
                "exclude":["10.10.0.0/30","fd00:10::/120"]}}"#,
        ])
        .unwrap();
        assert_eq!(dual.rails_layouts().unwrap().subnets().len(), 2);
        assert_eq!(dual.ipam.exclude[1].to_string(), "fd00:10::/120");
        // Each family is checked: the IPv4 subnet passes, the IPv6 one leaves no address bits.
        let err = parse(&[r#"{"ipam":{"type":"rails","subnet":"10.0.0.0/8","subnet6":"fd00::/122","hostBlock":4,"interfaceBlock":2}}"#])
            .unwrap_err();
        assert!(
            err.to_string().contains("fd00::/122") && err.to_string().contains("/126"),
            "{err}"
        );
        let err = parse(&[r#"{"ipam":{"type":"rails","subnet":"10.0.0.0/24","subnet6":"fd00::/64","hostBlock":4,"interfaceBlock":3}}"#])
            .unwrap_err();
        assert!(err.to_string().contains("10.0.0.0/24"), "{err}");
        // The family of each field is fixed.
        assert!(matches!(
            parse(&[r#"{"ipam":{"type":"rails","subnet6":"10.0.0.0/8"}}"#]),
            Err(ConfigError::Parse(_))
        ));
        assert!(matches!(
            parse(&[r#"{"ipam":{"type":"rails","subnet":"fd00::/64"}}"#]),
            Err(ConfigError::Parse(_))
        ));
        let err = parse(&[r#"{"ipam":{"type":"rails","hostBlock":4}}"#]).unwrap_err();
        assert!(err.to_string().contains("subnet6"), "{err}");
    }

    #[test]
    fn gateway_index_is_checked_against_the_blocks() {
        let rails =
            r#""type":"rails","subnet":"10.10.0.0/16","subnet6":"fd00:10::/64","hostBlock":8,"interfaceBlock":2"#;
        let ok = parse(&[&format!(
            r#"{{"ipam":{{{rails},"gatewayIndex":62}},"routing":{{"defaultRoute":true}}}}"#
        )])
        .unwrap();
        assert_eq!(ok.ipam.gateway_index, Some(62));
        assert!(ok.routing.default_route);
        for (config, says) in [
            // /26 blocks: 63 is the broadcast address.
            (
                format!(r#"{{"ipam":{{{rails},"gatewayIndex":63}}}}"#),
                "gatewayIndex 63",
            ),
            (format!(r#"{{"ipam":{{{rails},"gatewayIndex":0}}}}"#), "gatewayIndex 0"),
            (
                r#"{"ipam":{"type":"static","addresses":["10.0.0.1/24"],"gatewayIndex":1}}"#.to_string(),
                "needs ipam.type rails",
            ),
            (
                format!(r#"{{"ipam":{{{rails},"gatewayIndex":1,"gateway":"10.10.0.1"}}}}"#),
                "exclude each other",
            ),
            (
                format!(
                    r#"{{"ipam":{{{rails},"gatewayIndex":1}},"routing":{{"defaultRoute":true,"policyRouting":true}}}}"#
                ),
                "policyRouting",
            ),
            (
                format!(r#"{{"ipam":{{{rails}}},"routing":{{"defaultRoute":true}}}}"#),
                "needs a gateway",
            ),
        ] {
            let err = parse(&[&config]).unwrap_err().to_string();
            assert!(err.contains(says), "{config}: {err}");
        }
    }

    #[test]
    fn pod_addresses_stay_out_of_the_dynamic_ranges() {
        let ipam = r#""type":"rails","subnet":"10.10.0.0/16","subnet6":"fd00:10::/64","hostBlock":8,"interfaceBlock":2,
                      "exclude":["10.10.255.0/24"]"#;
        let ok = parse(&[&format!(
            r#"{{"ipam":{{{ipam},"podAddresses":[{{"pod":"ml/trainer-0","addresses":["10.10.255.1/16","192.168.9.1/24"]}}]}}}}"#
        )])
        .unwrap();
        let got = ok.ipam.pod_addresses_of("ml", "trainer-0").unwrap();
        assert_eq!(got[1].to_string(), "192.168.9.1/24");
        assert!(ok.ipam.pod_addresses_of("ml", "trainer-1").is_none());
        assert!(ok.ipam.pod_addresses_of("other", "trainer-0").is_none());
        for (addresses, says) in [
            (
                r#"[{"pod":"ml/a","addresses":["10.10.3.1/16"]}]"#,
                "10.10.3.1/16 is inside the range",
            ),
            (
                r#"[{"pod":"ml/a","addresses":["fd00:10::5/64"]}]"#,
                "fd00:10::5/64 is inside the range",
            ),
            (
                r#"[{"pod":"ml/a","addresses":["10.10.255.1/16"]},{"pod":"ml/b","addresses":["10.10.255.1/16"]}]"#,
                "to both",
            ),
            (
                r#"[{"pod":"ml/a","addresses":["10.10.255.1/16"]},{"pod":"ml/a","addresses":["10.10.255.2/16"]}]"#,
                "twice",
            ),
            (r#"[{"pod":"ml/a","addresses":[]}]"#, "is empty"),
            (
                r#"[{"pod":"a","addresses":["192.168.0.1/24"]}]"#,
                "<namespace>/<pod name>",
            ),
            (
                r#"[{"pod":"/a","addresses":["192.168.0.1/24"]}]"#,
                "<namespace>/<pod name>",
            ),
            (
                r#"[{"pod":"ml/a/b","addresses":["192.168.0.1/24"]}]"#,
                "<namespace>/<pod name>",
            ),
        ] {
            let err = parse(&[&format!(r#"{{"ipam":{{{ipam},"podAddresses":{addresses}}}}}"#)])
                .unwrap_err()
                .to_string();
            assert!(err.contains(says), "{addresses}: {err}");
        }
    }

    #[test]
    fn pool_configs_are_checked() {
        let c = parse(&[r#"{"ipam":{"type":"pool","subnet":"10.20.0.0/24","exclude":["10.20.0.0/25"]}}"#]).unwrap();
        assert_eq!(c.pool_layout().unwrap().block_prefix, 28);
        let c = parse(&[r#"{"ipam":{"type":"pool","subnet":"10.20.0.0/24","blockPrefix":29}}"#]).unwrap();
        assert_eq!(c.pool_layout().unwrap().blocks().count(), 32);
        for (bad, needle) in [
            (r#"{"ipam":{"type":"pool"}}"#, "needs ipam.subnet"),
            (
                r#"{"ipam":{"type":"pool","subnet":"10.20.0.0/24","blockPrefix":20}}"#,
                "blockPrefix 20",
            ),
            (
                r#"{"ipam":{"type":"pool","subnet":"10.20.0.0/24","subnet6":"fd00::/64"}}"#,
                "IPv4 ipam.subnet only",
            ),
        ] {
            let err = parse(&[bad]).unwrap_err();
            assert!(err.to_string().contains(needle), "{bad}: {err}");
        }
    }

    #[test]
    fn ifnames_follow_the_kernel_rule() {
        for good in ["net1", "a", &"a".repeat(15), "eth\u{1}", "r\u{e9}seau"] {
            assert!(validate_ifname(good).is_ok(), "{good:?}");
        }
        // "\u{e0}" is the bytes C3 A0: the kernel's isspace() takes 0xA0 for a space.
        for bad in [
            "",
            ".",
            "..",
            "a b",
            "a\tb",
            "a/b",
            "a:b",
            "a\0b",
            "\u{e0}",
            &"a".repeat(16),
            "\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}",
        ] {
            assert!(validate_ifname(bad).is_err(), "{bad:?}");
        }
    }
}
