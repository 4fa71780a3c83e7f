//! Pure plan building (design.md §6): allocated devices + configs + the node's blocks → a [`Plan`]
//! with pod interface names and IPs, given the addresses already leased on this node.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net};
use multinic_api::config::{IpamType, NetworkConfig, RoutingMode};
use multinic_api::plan::{PLAN_VERSION, Plan, PlannedDevice, PlannedRoute, PodRef};
use multinic_api::rails::usable;

use crate::slices::PublishedDevice;

/// First policy-routing table; netK uses `TABLE_BASE + K`.
pub const TABLE_BASE: u32 = 100;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    #[error(
        "device {device}: ipam type rails needs the node's NicNodeBlocks for network {network:?}; is multinic-controller running and does the network select this node's devices?"
    )]
    NoBlocks { device: String, network: String },
    #[error(
        "device {device}: NicNodeBlocks has no block for rail {rail}; the network's interfaceBlock is too small for this node's rails"
    )]
    NoRailBlock { device: String, rail: u32 },
    #[error(
        "device {device}: block {block} is exhausted (every usable address is leased); grow the network's subnet or hostBlock/interfaceBlock, or release claims"
    )]
    Exhausted { device: String, block: Ipv4Net },
    #[error(
        "device {device}: ipam type host needs an IPv4 address on host interface {if_name}; assign one or use another IPAM type"
    )]
    NoHostAddress { device: String, if_name: String },
    #[error(
        "device {device}: ipam type static lists {given} addresses for {needed} devices; add one CIDR per device to ipam.addresses"
    )]
    StaticCount {
        device: String,
        given: usize,
        needed: usize,
    },
    #[error("device {device}: static address {ip} is already leased on this node")]
    StaticTaken { device: String, ip: IpAddr },
    #[error("ipam type pool is not supported by this version; use rails, host, static or none")]
    PoolUnsupported,
    #[error(
        "NicNodeBlocks block {block} of rail {rail} is not a /{prefix} inside {layout}; the network's subnet or block bits changed after the controller assigned blocks — re-create the network"
    )]
    ForeignBlock {
        rail: u32,
        block: Ipv4Net,
        layout: Ipv4Net,
        prefix: u8,
    },
    #[error("ipam: {0}")]
    Rails(#[from] multinic_api::rails::RailsError),
    #[error("two devices would both be named {0} in the pod; set distinct interfaceNames")]
    DuplicateName(String),
}

/// One allocated device with its config, in plan order.
#[derive(Debug, Clone)]
pub struct DeviceInput {
    pub request: String,
    pub pool: String,
    pub published: PublishedDevice,
    pub config: NetworkConfig,
}

/// Everything the plan of one claim depends on.
#[derive(Debug, Clone)]
pub struct PlanInput {
    pub claim_uid: String,
    pub namespace: String,
    pub name: String,
    pub pods: Vec<PodRef>,
    /// Devices in plan order (request order, then rail index).
    pub devices: Vec<DeviceInput>,
    /// The node's blocks per network: rail index → block.
    pub blocks: BTreeMap<String, BTreeMap<u32, Ipv4Net>>,
}

/// Builds the plan; `leased` are the addresses other claims hold on this node.
pub fn build_plan(input: &PlanInput, leased: &BTreeSet<IpAddr>) -> Result<Plan, BuildError> {
    // This claim's own addresses so far (a handful: a list beats a hash set).
    let mut taken: Vec<IpAddr> = Vec::new();
    let mut devices = Vec::with_capacity(input.devices.len());
    let mut names = HashSet::new();
    for (position, d) in input.devices.iter().enumerate() {
        let cfg = &d.config;
        let nic = &d.published.nic;
        let name = d.published.device.name.clone();
        let pod_if_name = cfg.pod_if_name(position);
        if !names.insert(pod_if_name.clone()) {
            return Err(BuildError::DuplicateName(pod_if_name));
        }
        let is_free = |ip: &IpAddr| !leased.contains(ip) && !taken.contains(ip);
        let ips: Vec<IpNet> = match cfg.ipam.kind {
            IpamType::None => Vec::new(),
            IpamType::Pool => return Err(BuildError::PoolUnsupported),
            IpamType::Host => {
                let cidr = nic.ipv4.ok_or_else(|| BuildError::NoHostAddress {
                    device: name.clone(),
                    if_name: nic.if_name.clone(),
                })?;
                vec![IpNet::V4(cidr)]
            }
            IpamType::Static => {
                let cidr = *cfg.ipam.addresses.get(position).ok_or(BuildError::StaticCount {
                    device: name.clone(),
                    given: cfg.ipam.addresses.len(),
                    needed: input.devices.len(),
                })?;
                if !is_free(&cidr.addr()) {
                    return Err(BuildError::StaticTaken {
                        device: name,
                        ip: cidr.addr(),
                    });
                }
                vec![cidr]
            }
            IpamType::Rails => {
                let network = cfg.network.clone().unwrap_or_default();
                let blocks = input.blocks.get(&network).ok_or_else(|| BuildError::NoBlocks {
                    device: name.clone(),
                    network: network.clone(),
                })?;
                let block = *blocks.get(&d.published.rail_index).ok_or(BuildError::NoRailBlock {
                    device: name.clone(),
                    rail: d.published.rail_index,
                })?;
                // The block's leased addresses in order, walked alongside the candidates: the first
                // free one costs one comparison per leased address before it, not a set lookup.
                let mut held = leased
                    .range(IpAddr::V4(block.network())..=IpAddr::V4(block.broadcast()))
                    .peekable();
                let ip = usable(block, &cfg.ipam.exclude)
                    .map(IpAddr::V4)
                    .find(|ip| {
                        while held.next_if(|h| *h < ip).is_some() {}
                        held.peek() != Some(&ip) && !taken.contains(ip)
                    })
                    .ok_or(BuildError::Exhausted {
                        device: name.clone(),
                        block,
                    })?;
                vec![IpNet::new(ip, block.prefix_len()).unwrap_or(IpNet::V4(block))]
            }
        };
        taken.extend(ips.iter().map(IpNet::addr));
        let routes = match (cfg.routing.mode, cfg.ipam.subnet) {
            (RoutingMode::L3, Some(subnet)) => vec![PlannedRoute {
                dst: IpNet::V4(subnet),
                gateway: None,
            }],
            _ => Vec::new(),
        };
        let mtu = match cfg.attachment.mtu {
            Some(m) => Some(m.min(nic.mtu)),
            None => Some(nic.mtu),
        };
        devices.push(PlannedDevice {
            request: d.request.clone(),
            pool: d.pool.clone(),
            device: name,
            host_if_name: nic.if_name.clone(),
            rail_index: Some(d.published.rail_index),
            pod_if_name,
            mode: cfg.attachment.mode,
            mtu,
            mac: if cfg.attachment.mode.is_shared() {
                None
            } else {
                nic.mac.clone()
            },
            ips,
            gateway: cfg.ipam.gateway.map(IpAddr::V4),
            routes,
            table: cfg
                .routing
                .policy_routing
                .then(|| TABLE_BASE + u32::try_from(position).unwrap_or(0) + 1),
            rdma_device: nic.rdma.as_ref().map(|r| r.device.clone()),
        });
    }
    Ok(Plan {
        version: PLAN_VERSION,
        claim_uid: input.claim_uid.clone(),
        namespace: input.namespace.clone(),
        name: input.name.clone(),
        pods: input.pods.clone(),
        network: input.devices.iter().find_map(|d| d.config.network.clone()),
        devices,
    })
}

/// The blocks of a `rails` config, checked against its layout: rail index → block.
pub fn check_blocks(
    config: &NetworkConfig,
    blocks: &[multinic_api::crd::RailBlock],
) -> Result<BTreeMap<u32, Ipv4Net>, BuildError> {
    if let Some(subnet) = config.ipam.subnet {
        let layout = config.rails_layout(subnet)?;
        if let Some(b) = blocks
            .iter()
            .find(|b| !layout.subnet.contains(&b.cidr) || b.cidr.prefix_len() != layout.block_prefix())
        {
            return Err(BuildError::ForeignBlock {
                rail: b.rail_index,
                block: b.cidr,
                layout: layout.subnet,
                prefix: layout.block_prefix(),
            });
        }
    }
    Ok(blocks.iter().map(|b| (b.rail_index, b.cidr)).collect())
}

#[cfg(test)]
mod tests {
    use multinic_api::rails::RailsLayout;

    use super::*;
    use crate::slices::{SliceOptions, build_device_table, tests::nic};

    fn input(n: usize, config: &str, host: u32) -> PlanInput {
        let cfg = NetworkConfig::from_layers([config.as_bytes()]).unwrap();
        let table = build_device_table(&(0..n).map(nic).collect::<Vec<_>>(), &SliceOptions::new("node-a"));
        let layout = RailsLayout::new("10.10.0.0/16".parse().unwrap(), 8, 2).unwrap();
        let blocks = (0..4).map(|k| (k, layout.block(host, k).unwrap())).collect();
        PlanInput {
            claim_uid: "uid-1".into(),
            namespace: "ml".into(),
            name: "c".into(),
            pods: vec![],
            devices: table
                .into_iter()
                .map(|p| DeviceInput {
                    request: "nics".into(),
                    pool: "node-a".into(),
                    published: p,
                    config: cfg.clone(),
                })
                .collect(),
            blocks: BTreeMap::from([("rails".to_string(), blocks)]),
        }
    }

    const RAILS: &str = r#"{"network":"rails","ipam":{"type":"rails","subnet":"10.10.0.0/16","hostBlock":8,"interfaceBlock":2},"routing":{"policyRouting":true}}"#;

    #[test]
    fn rails_ips_follow_host_and_rail() {
        let plan = build_plan(&input(4, RAILS, 7), &BTreeSet::new()).unwrap();
        let got: Vec<(String, String, Option<u32>)> = plan
            .devices
            .iter()
            .map(|d| (d.pod_if_name.clone(), d.ips[0].to_string(), d.table))
            .collect();
        assert_eq!(
            got,
            [
                ("net1".to_string(), "10.10.7.1/26".to_string(), Some(101)),
                ("net2".to_string(), "10.10.7.65/26".to_string(), Some(102)),
                ("net3".to_string(), "10.10.7.129/26".to_string(), Some(103)),
                ("net4".to_string(), "10.10.7.193/26".to_string(), Some(104)),
            ]
        );
    }

    #[test]
    fn leased_addresses_are_skipped_and_exhaustion_is_an_error() {
        let leased: BTreeSet<IpAddr> = ["10.10.7.1", "10.10.7.2"].iter().map(|s| s.parse().unwrap()).collect();
        let plan = build_plan(&input(1, RAILS, 7), &leased).unwrap();
        assert_eq!(plan.devices[0].ips[0].to_string(), "10.10.7.3/26");
        let all: BTreeSet<IpAddr> = "10.10.7.0/26"
            .parse::<Ipv4Net>()
            .unwrap()
            .hosts()
            .map(IpAddr::V4)
            .collect();
        assert!(matches!(
            build_plan(&input(1, RAILS, 7), &all),
            Err(BuildError::Exhausted { .. })
        ));
    }

    #[test]
    fn blocks_outside_the_layout_are_refused() {
        let cfg = NetworkConfig::from_layers([RAILS.as_bytes()]).unwrap();
        let block = |cidr: &str| multinic_api::crd::RailBlock {
            rail_index: 0,
            cidr: cidr.parse().unwrap(),
            node_address: None,
        };
        assert!(check_blocks(&cfg, &[block("10.10.7.0/26")]).is_ok());
        for bad in ["10.11.7.0/26", "10.10.7.0/25"] {
            assert!(
                matches!(check_blocks(&cfg, &[block(bad)]), Err(BuildError::ForeignBlock { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn other_ipam_types() {
        let none = build_plan(&input(2, "{}", 0), &BTreeSet::new()).unwrap();
        assert!(none.devices.iter().all(|d| d.ips.is_empty() && d.table.is_none()));
        let st = r#"{"ipam":{"type":"static","addresses":["192.168.0.5/24","192.168.1.5/24"]}}"#;
        let plan = build_plan(&input(2, st, 0), &BTreeSet::new()).unwrap();
        assert_eq!(plan.devices[1].ips[0].to_string(), "192.168.1.5/24");
        assert!(matches!(
            build_plan(&input(3, st, 0), &BTreeSet::new()),
            Err(BuildError::StaticCount { .. })
        ));
        let host = r#"{"ipam":{"type":"host"}}"#;
        assert!(matches!(
            build_plan(&input(1, host, 0), &BTreeSet::new()),
            Err(BuildError::NoHostAddress { .. })
        ));
        let pool = r#"{"ipam":{"type":"pool"}}"#;
        assert_eq!(
            build_plan(&input(1, pool, 0), &BTreeSet::new()).unwrap_err(),
            BuildError::PoolUnsupported
        );
        let mtu = r#"{"attachment":{"mode":"macvlan","mtu":65000}}"#;
        let plan = build_plan(&input(1, mtu, 0), &BTreeSet::new()).unwrap();
        assert_eq!(plan.devices[0].mtu, Some(9000), "never above the parent's MTU");
        assert_eq!(plan.devices[0].mac, None, "children get their own MAC");
        let dup = r#"{"interfaceNames":["a","a"]}"#;
        assert!(matches!(
            build_plan(&input(2, dup, 0), &BTreeSet::new()),
            Err(BuildError::DuplicateName(_))
        ));
    }
}
