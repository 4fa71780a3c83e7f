//! Pure plan building (design.md §6): allocated devices + configs + the node's blocks → a [`Plan`]
//! with pod interface names and IPs, given the addresses already leased on this node.
//!
//! The decisions prepare takes from the claim itself are here too, over the claim as read:
//! [`allocated_devices`] (which devices, with which config, in which order), [`claim_pods`] and
//! [`rails_networks`] (whose blocks prepare must read).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::resource::v1::{DeviceAllocationConfiguration, ResourceClaim};
use multinic_api::config::{ConfigError, IpamType, NetworkConfig, RoutingMode};
use multinic_api::plan::{PLAN_VERSION, Plan, PlannedDevice, PlannedRoute, PodRef};
use multinic_api::rails::{address_in, gateway_in, usable};

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
    Exhausted { device: String, block: IpNet },
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
    #[error(
        "device {device}: ipam.podAddresses[\"{pod}\"] lists {given} addresses for {needed} devices; list one CIDR per device of the pod's claim"
    )]
    PodAddressCount {
        device: String,
        pod: String,
        given: usize,
        needed: usize,
    },
    #[error(
        "ipam.podAddresses names pod {pod} but the claim is shared by {pods} pods; static pod addresses need a claim per pod (a ResourceClaimTemplate)"
    )]
    PodAddressesShared { pod: String, pods: usize },
    #[error(
        "device {device}: network {network:?} has no free address in the {blocks} pool blocks granted to this node; the node has asked multinic-controller for another block and the kubelet retries the prepare — if MultiNicNetwork {network} reports Exhausted, grow its ipam.subnet, shrink ipam.exclude or release claims"
    )]
    PoolExhausted {
        device: String,
        network: String,
        blocks: usize,
    },
    #[error("network {network:?}: {message}")]
    PoolConfig { network: String, message: String },
    #[error(
        "NicNodeBlocks block {block} of rail {rail} is not a block of the network's subnets ({subnets}) with its hostBlock/interfaceBlock; the network's subnets or block bits changed after the controller assigned blocks — re-create the network"
    )]
    ForeignBlock { rail: u32, block: IpNet, subnets: String },
    #[error(
        "NicNodeBlocks has no {family} block for rail {rail} but the network has ipam.{field}; the controller has not written it yet — check that multinic-controller is running and up to date"
    )]
    NoFamilyBlock {
        rail: u32,
        family: &'static str,
        field: &'static str,
    },
    #[error("ipam: {0}")]
    Rails(#[from] multinic_api::rails::RailsError),
    #[error("two devices would both be named {0} in the pod; set distinct interfaceNames")]
    DuplicateName(String),
    #[error(
        "the claim has {0} devices, more than policy routing has table numbers for; allocate fewer devices per claim or turn routing.policyRouting off"
    )]
    TooManyDevices(usize),
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
    /// The node's blocks per network: rail index → its blocks, one per family, IPv4 first.
    pub blocks: BTreeMap<String, BTreeMap<u32, Vec<IpNet>>>,
    /// The pool blocks per `pool` network that prepare may allocate from
    /// ([`crate::pool::usable_blocks`]).
    pub pool: BTreeMap<String, Vec<IpNet>>,
}

impl PlanInput {
    /// The input without the pool blocks that `retired` names for their network.
    pub fn without_retired(&self, retired: impl Fn(&str) -> BTreeSet<IpNet>) -> Self {
        let mut input = self.clone();
        for (network, blocks) in &mut input.pool {
            let gone = retired(network);
            blocks.retain(|b| !gone.contains(b));
        }
        input
    }
}

/// Why the allocation of a claim cannot be planned on this node (the caller names the claim).
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error("not allocated; the scheduler has not allocated it yet")]
    NotAllocated,
    #[error("no device of driver {driver} in pool {pool} is allocated to it")]
    NoDevices { driver: String, pool: String },
    #[error(
        "device {device} is not in this node's inventory (it vanished or is excluded); check `multinic inventory` on the node"
    )]
    DeviceNotInInventory { device: String },
    #[error("request {request}: {source}")]
    Config { request: String, source: ConfigError },
    #[error(
        "device {device} is shared (the plugin runs with --shared-pods) and request {request} attaches it with {mode}, which moves the NIC into one pod; use attachment macvlan, ipvlan-l2 or ipvlan-l3 for shared NICs, or run the plugin without --shared-pods"
    )]
    SharedMove {
        device: String,
        request: String,
        mode: &'static str,
    },
    #[error(
        "device {device} is allocated to the claim more than once (shared device, several shareIDs); a pod gets one interface per device: ask for distinct devices (constraints distinctAttribute on multinic.dev/railIndex)"
    )]
    DeviceTwice { device: String },
}

/// The request a result belongs to: `req` for a `req/sub` result of a prioritized list.
fn parent_request(request: &str) -> &str {
    request.split_once('/').map_or(request, |(parent, _)| parent)
}

/// The merged config of a request: our opaque entries that apply to it, class-level first, then
/// claim-level, each in listed order. A `req/sub` result also takes the entries of `req`.
pub fn request_config(
    entries: &[DeviceAllocationConfiguration],
    driver: &str,
    request: &str,
) -> Result<NetworkConfig, ConfigError> {
    let parent = parent_request(request);
    let applies = |e: &&DeviceAllocationConfiguration| {
        e.opaque.as_ref().is_some_and(|o| o.driver == driver)
            && e.requests
                .as_ref()
                .is_none_or(|r| r.is_empty() || r.iter().any(|n| n == request || n == parent))
    };
    let mut layers: Vec<_> = entries.iter().filter(applies).collect();
    layers.sort_by_key(|e| e.source != "FromClass");
    NetworkConfig::from_values(layers.iter().filter_map(|e| e.opaque.as_ref()).map(|o| &o.parameters.0))
}

/// The devices of `driver` in `pool` allocated to the claim, each with the merged config of its
/// request, in plan order: the order of the requests in the claim's spec, then rail index.
/// `published` looks a device up in this node's device table.
pub fn allocated_devices(
    rc: &ResourceClaim,
    driver: &str,
    pool: &str,
    published: impl Fn(&str) -> Option<PublishedDevice>,
) -> Result<Vec<DeviceInput>, ClaimError> {
    let alloc = rc
        .status
        .as_ref()
        .and_then(|s| s.allocation.as_ref())
        .and_then(|a| a.devices.as_ref())
        .ok_or(ClaimError::NotAllocated)?;
    let entries = alloc.config.as_deref().unwrap_or_default();
    let mut configs: HashMap<&str, NetworkConfig> = HashMap::new();
    let mut devices = Vec::new();
    let mut seen = HashSet::new();
    for r in alloc
        .results
        .iter()
        .flatten()
        .filter(|r| r.driver == driver && r.pool == pool)
    {
        if !seen.insert(r.device.as_str()) {
            return Err(ClaimError::DeviceTwice {
                device: r.device.clone(),
            });
        }
        let published = published(&r.device).ok_or_else(|| ClaimError::DeviceNotInInventory {
            device: r.device.clone(),
        })?;
        let config = match configs.get(r.request.as_str()) {
            Some(config) => config.clone(),
            None => {
                let config = request_config(entries, driver, &r.request).map_err(|source| ClaimError::Config {
                    request: r.request.clone(),
                    source,
                })?;
                configs.insert(&r.request, config.clone());
                config
            }
        };
        if r.share_id.is_some() && !config.attachment.mode.is_shared() {
            return Err(ClaimError::SharedMove {
                device: r.device.clone(),
                request: r.request.clone(),
                mode: config.attachment.mode.as_str(),
            });
        }
        devices.push(DeviceInput {
            request: r.request.clone(),
            pool: r.pool.clone(),
            published,
            config,
        });
    }
    if devices.is_empty() {
        return Err(ClaimError::NoDevices {
            driver: driver.to_string(),
            pool: pool.to_string(),
        });
    }
    let order: Vec<&str> = rc
        .spec
        .devices
        .as_ref()
        .and_then(|d| d.requests.as_ref())
        .map(|r| r.iter().map(|r| r.name.as_str()).collect())
        .unwrap_or_default();
    // A result whose request the spec does not list (the API server does not allow one) goes last.
    let position = |request: &str| {
        order
            .iter()
            .position(|n| *n == parent_request(request))
            .unwrap_or(usize::MAX)
    };
    devices.sort_by_key(|d| (position(&d.request), d.published.rail_index));
    Ok(devices)
}

/// The pods the claim is reserved for.
pub fn claim_pods(rc: &ResourceClaim) -> Vec<PodRef> {
    rc.status
        .as_ref()
        .and_then(|s| s.reserved_for.as_ref())
        .into_iter()
        .flatten()
        .filter(|c| c.resource == "pods")
        .map(|c| PodRef {
            uid: c.uid.clone(),
            name: c.name.clone(),
        })
        .collect()
}

/// The network whose NicNodeBlocks a `rails` config takes addresses from.
fn rails_network(config: &NetworkConfig) -> &str {
    config.network.as_deref().unwrap_or_default()
}

/// The `rails` networks of the devices, each with the config of its first device: the networks
/// whose blocks [`PlanInput::blocks`] needs.
pub fn rails_networks(devices: &[DeviceInput]) -> BTreeMap<&str, &NetworkConfig> {
    let mut out = BTreeMap::new();
    for d in devices.iter().filter(|d| d.config.ipam.kind == IpamType::Rails) {
        out.entry(rails_network(&d.config)).or_insert(&d.config);
    }
    out
}

/// The `pool` networks of the devices, each with the config of its first device: the networks
/// whose blocks [`PlanInput::pool`] needs.
pub fn pool_networks(devices: &[DeviceInput]) -> BTreeMap<&str, &NetworkConfig> {
    let mut out = BTreeMap::new();
    for d in devices.iter().filter(|d| d.config.ipam.kind == IpamType::Pool) {
        out.entry(rails_network(&d.config)).or_insert(&d.config);
    }
    out
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
        // The gateways of this device, IPv4 first: `ipam.gateway`, or the rails blocks' own.
        let mut gateways: Vec<IpAddr> = cfg.ipam.gateway.map(IpAddr::V4).into_iter().collect();
        // A listed address (podAddresses, ipam.addresses): the pod gets it unless it is leased.
        let fixed = |cidr: IpNet, device: &str| match is_free(&cidr.addr()) {
            true => Ok(vec![cidr]),
            false => Err(BuildError::StaticTaken {
                device: device.to_string(),
                ip: cidr.addr(),
            }),
        };
        let named = pod_addresses(input, cfg)?;
        let ips: Vec<IpNet> = match (named, cfg.ipam.kind) {
            (Some((pod, addresses)), _) => {
                let cidr = *addresses.get(position).ok_or_else(|| BuildError::PodAddressCount {
                    device: name.clone(),
                    pod,
                    given: addresses.len(),
                    needed: input.devices.len(),
                })?;
                fixed(cidr, &name)?
            }
            (None, IpamType::None) => Vec::new(),
            (None, IpamType::Pool) => {
                let network = rails_network(cfg);
                let layout = cfg.pool_layout().map_err(|e| BuildError::PoolConfig {
                    network: network.to_string(),
                    message: e.to_string(),
                })?;
                let blocks = input.pool.get(network).map(Vec::as_slice).unwrap_or_default();
                let ip = crate::pool::pick(&layout, blocks, &cfg.ipam.exclude, is_free).ok_or_else(|| {
                    BuildError::PoolExhausted {
                        device: name.clone(),
                        network: network.to_string(),
                        blocks: blocks.len(),
                    }
                })?;
                vec![layout.address(ip)]
            }
            (None, IpamType::Host) => {
                let cidr = nic.ipv4.ok_or_else(|| BuildError::NoHostAddress {
                    device: name.clone(),
                    if_name: nic.if_name.clone(),
                })?;
                vec![IpNet::V4(cidr)]
            }
            (None, IpamType::Static) => {
                let cidr = *cfg.ipam.addresses.get(position).ok_or(BuildError::StaticCount {
                    device: name.clone(),
                    given: cfg.ipam.addresses.len(),
                    needed: input.devices.len(),
                })?;
                fixed(cidr, &name)?
            }
            (None, IpamType::Rails) => {
                let network = rails_network(cfg);
                let blocks = input.blocks.get(network).ok_or_else(|| BuildError::NoBlocks {
                    device: name.clone(),
                    network: network.to_string(),
                })?;
                let rail_blocks = blocks.get(&d.published.rail_index).ok_or(BuildError::NoRailBlock {
                    device: name.clone(),
                    rail: d.published.rail_index,
                })?;
                // One address per block: per family of a dual-stack network.
                let mut ips = Vec::with_capacity(rail_blocks.len());
                for &block in rail_blocks {
                    let gateway = cfg.ipam.gateway_index.and_then(|i| gateway_in(block, i));
                    gateways.extend(gateway);
                    // The block's leased addresses in order, walked alongside the candidates: the
                    // first free one costs one comparison per leased address before it, not a set
                    // lookup.
                    let mut held = leased.range(block.network()..=block.broadcast()).peekable();
                    let ip = usable(block, &cfg.ipam.exclude)
                        .find(|ip| {
                            while held.next_if(|h| *h < ip).is_some() {}
                            held.peek() != Some(&ip) && !taken.contains(ip) && gateway != Some(*ip)
                        })
                        .ok_or(BuildError::Exhausted {
                            device: name.clone(),
                            block,
                        })?;
                    ips.push(address_in(block, ip)?);
                }
                ips
            }
        };
        taken.extend(ips.iter().map(IpNet::addr));
        // l3: a route to each subnet of the network, out of this interface.
        let subnets = cfg
            .ipam
            .subnet
            .map(IpNet::V4)
            .into_iter()
            .chain(cfg.ipam.subnet6.map(IpNet::V6));
        let mut routes: Vec<PlannedRoute> = match cfg.routing.mode {
            RoutingMode::L3 => subnets.map(|dst| PlannedRoute { dst, gateway: None }).collect(),
            RoutingMode::None => Vec::new(),
        };
        // defaultRoute: the first device with a gateway of a family takes that family's default.
        if cfg.routing.default_route {
            for &gw in &gateways {
                let dst = multinic_api::plan::default_route(gw);
                if !devices
                    .iter()
                    .any(|d: &PlannedDevice| d.routes.iter().any(|r| r.dst == dst))
                {
                    routes.push(PlannedRoute { dst, gateway: Some(gw) });
                }
            }
        }
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
            gateway: gateways.first().copied(),
            routes,
            table: match cfg.routing.policy_routing {
                true => Some(policy_table(position, input.devices.len())?),
                false => None,
            },
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

/// `<namespace>/<pod>`.
fn pod_key(input: &PlanInput, pod: &str) -> String {
    format!("{}/{pod}", input.namespace)
}

/// The static addresses `podAddresses` gives the claim's pod, with its key (`None` when it names
/// none). A claim shared by several pods cannot give one of them its own addresses.
fn pod_addresses<'a>(input: &PlanInput, cfg: &'a NetworkConfig) -> Result<Option<(String, &'a [IpNet])>, BuildError> {
    let mut named = input.pods.iter().filter_map(|p| {
        Some((
            pod_key(input, &p.name),
            cfg.ipam.pod_addresses_of(&input.namespace, &p.name)?,
        ))
    });
    match named.next() {
        None => Ok(None),
        Some((pod, _)) if input.pods.len() > 1 => Err(BuildError::PodAddressesShared {
            pod,
            pods: input.pods.len(),
        }),
        Some(found) => Ok(Some(found)),
    }
}

/// The policy-routing table of the device at `position`: `TABLE_BASE` + position + 1.
fn policy_table(position: usize, count: usize) -> Result<u32, BuildError> {
    u32::try_from(position)
        .ok()
        .and_then(|p| TABLE_BASE.checked_add(p)?.checked_add(1))
        .ok_or(BuildError::TooManyDevices(count))
}

/// The blocks of a `rails` config, checked against its layouts: rail index → its blocks, one per
/// family of the network, IPv4 first. Every block must be one of the layouts', and every rail
/// must have a block of each family the network has.
pub fn check_blocks(
    config: &NetworkConfig,
    blocks: &[multinic_api::crd::RailBlock],
) -> Result<BTreeMap<u32, Vec<IpNet>>, BuildError> {
    let layouts = config.rails_layouts()?;
    if let Some(b) = blocks.iter().find(|b| !layouts.holds(&b.cidr)) {
        let subnets: Vec<String> = layouts.subnets().iter().map(IpNet::to_string).collect();
        return Err(BuildError::ForeignBlock {
            rail: b.rail_index,
            block: b.cidr,
            subnets: subnets.join(", "),
        });
    }
    let mut out: BTreeMap<u32, Vec<IpNet>> = BTreeMap::new();
    for b in blocks {
        let rail = out.entry(b.rail_index).or_default();
        // One block per family: a repeated family keeps the first.
        if !rail.iter().any(|c| c.addr().is_ipv4() == b.cidr.addr().is_ipv4()) {
            rail.push(b.cidr);
        }
    }
    for (&rail, cidrs) in &mut out {
        cidrs.sort_by_key(|c| c.addr().is_ipv6());
        let has = |v4: bool| cidrs.iter().any(|c| c.addr().is_ipv4() == v4);
        for (present, v4, family, field) in [
            (layouts.v4.is_some(), true, "IPv4", "subnet"),
            (layouts.v6.is_some(), false, "IPv6", "subnet6"),
        ] {
            if present && !has(v4) {
                return Err(BuildError::NoFamilyBlock { rail, family, field });
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use multinic_api::rails::RailsLayout;

    use super::*;
    use crate::slices::{SliceOptions, build_device_table, tests::nic};

    const DRIVER: &str = "multinic.dev";

    /// A claim allocated `results` (request, driver, device) in pool node-a, with `config`
    /// entries and `spec` requests.
    fn claim(requests: &[&str], results: &[(&str, &str, &str)], config: serde_json::Value) -> ResourceClaim {
        let results: Vec<_> = results
            .iter()
            .map(|(request, driver, device)| {
                serde_json::json!({"request": request, "driver": driver, "pool": "node-a", "device": device})
            })
            .collect();
        let requests: Vec<_> = requests.iter().map(|n| serde_json::json!({"name": n})).collect();
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "c", "namespace": "ml"},
            "spec": {"devices": {"requests": requests}},
            "status": {
                "allocation": {"devices": {"results": results, "config": config}},
                "reservedFor": [
                    {"resource": "pods", "name": "train-0", "uid": "pod-1"},
                    {"resource": "jobs", "apiGroup": "batch", "name": "train", "uid": "job-1"},
                ],
            },
        }))
        .unwrap()
    }

    fn opaque(source: &str, requests: Option<&[&str]>, parameters: serde_json::Value) -> serde_json::Value {
        serde_json::json!({
            "source": source,
            "requests": requests,
            "opaque": {"driver": DRIVER, "parameters": parameters},
        })
    }

    /// Issue 16.2: a shared allocation (with a shareID) must get a child link; the same shared
    /// device twice in one claim is refused, not planned as two interfaces of one NIC.
    #[test]
    fn shared_allocations_need_a_child_link_mode_and_distinct_devices() {
        let table = build_device_table(&(0..2).map(nic).collect::<Vec<_>>(), &SliceOptions::new("node-a"));
        let names: Vec<String> = table.iter().map(|p| p.device.name.clone()).collect();
        let lookup = |d: &str| table.iter().find(|p| p.device.name == d).cloned();
        let shared = |config: serde_json::Value, devices: &[&str]| {
            let mut rc = claim(
                &["a"],
                &devices.iter().map(|d| ("a", DRIVER, *d)).collect::<Vec<_>>(),
                config,
            );
            for (i, r) in rc
                .status
                .as_mut()
                .and_then(|s| s.allocation.as_mut())
                .and_then(|a| a.devices.as_mut())
                .and_then(|d| d.results.as_mut())
                .into_iter()
                .flatten()
                .enumerate()
            {
                r.share_id = Some(format!("00000000-0000-0000-0000-00000000000{i}"));
            }
            rc
        };
        let macvlan = serde_json::json!([opaque(
            "FromClass",
            None,
            serde_json::json!({"attachment": {"mode": "macvlan"}})
        )]);
        assert_eq!(
            allocated_devices(&shared(macvlan.clone(), &[&names[0]]), DRIVER, "node-a", lookup)
                .unwrap()
                .len(),
            1
        );
        let moved = allocated_devices(&shared(serde_json::json!([]), &[&names[0]]), DRIVER, "node-a", lookup);
        assert!(
            matches!(&moved, Err(ClaimError::SharedMove { device, mode: "host-device", .. }) if *device == names[0]),
            "{moved:?}"
        );
        let twice = allocated_devices(&shared(macvlan, &[&names[1], &names[1]]), DRIVER, "node-a", lookup);
        assert!(
            matches!(&twice, Err(ClaimError::DeviceTwice { device }) if *device == names[1]),
            "{twice:?}"
        );
    }

    #[test]
    fn allocated_devices_come_in_request_order_then_rail_with_their_merged_config() {
        let table = build_device_table(&(0..3).map(nic).collect::<Vec<_>>(), &SliceOptions::new("node-a"));
        let names: Vec<String> = table.iter().map(|p| p.device.name.clone()).collect();
        let lookup = |d: &str| table.iter().find(|p| p.device.name == d).cloned();
        let config = serde_json::json!([
            opaque(
                "FromClaim",
                Some(&["a"]),
                serde_json::json!({"interfaceNamePrefix": "claim"})
            ),
            opaque(
                "FromClass",
                None,
                serde_json::json!({"interfaceNamePrefix": "class", "network": "n"})
            ),
        ]);
        let rc = claim(
            &["b", "a"],
            &[
                ("a", DRIVER, &names[0]),
                ("b/x", DRIVER, &names[2]),
                ("b/x", DRIVER, &names[1]),
                ("a", "other.dev", "not-ours"),
            ],
            config,
        );
        let got = allocated_devices(&rc, DRIVER, "node-a", lookup).unwrap();
        let order: Vec<(&str, u32, &str)> = got
            .iter()
            .map(|d| (d.request.as_str(), d.published.rail_index, d.config.prefix()))
            .collect();
        assert_eq!(order, [("b/x", 1, "class"), ("b/x", 2, "class"), ("a", 0, "claim")]);
        assert!(got.iter().all(|d| d.config.network.as_deref() == Some("n")));

        let not_allocated: ResourceClaim =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "c"}})).unwrap();
        assert!(matches!(
            allocated_devices(&not_allocated, DRIVER, "node-a", lookup),
            Err(ClaimError::NotAllocated)
        ));
        let others = claim(&["a"], &[("a", "other.dev", &names[0])], serde_json::json!([]));
        assert!(matches!(
            allocated_devices(&others, DRIVER, "node-a", lookup),
            Err(ClaimError::NoDevices { .. })
        ));
        let vanished = claim(&["a"], &[("a", DRIVER, "gone")], serde_json::json!([]));
        assert!(matches!(
            allocated_devices(&vanished, DRIVER, "node-a", lookup),
            Err(ClaimError::DeviceNotInInventory { device }) if device == "gone"
        ));
        let bad = serde_json::json!([opaque("FromClaim", None, serde_json::json!({"attachment": {"mtu": 1}}))]);
        let invalid = claim(&["a"], &[("a", DRIVER, &names[0])], bad);
        assert!(matches!(
            allocated_devices(&invalid, DRIVER, "node-a", lookup),
            Err(ClaimError::Config { request, .. }) if request == "a"
        ));
    }

    #[test]
    fn the_claim_is_reserved_for_its_pods_only() {
        let pods = claim_pods(&claim(&[], &[], serde_json::json!([])));
        assert_eq!(
            pods,
            [PodRef {
                uid: "pod-1".into(),
                name: "train-0".into()
            }]
        );
    }

    #[test]
    fn blocks_are_needed_for_the_rails_networks_only() {
        let mut devices = input(3, RAILS, 7).devices;
        devices[1].config = NetworkConfig::from_layers([br#"{"network":"other"}"#.as_slice()]).unwrap();
        let networks: Vec<&str> = rails_networks(&devices).into_keys().collect();
        assert_eq!(networks, ["rails"]);
    }

    #[test]
    fn policy_tables_follow_the_position_and_never_wrap() {
        assert_eq!(policy_table(0, 1), Ok(TABLE_BASE + 1));
        assert_eq!(policy_table(3, 4), Ok(TABLE_BASE + 4));
        let past = usize::try_from(u32::MAX - TABLE_BASE).unwrap();
        assert_eq!(policy_table(past, past + 1), Err(BuildError::TooManyDevices(past + 1)));
    }

    fn input(n: usize, config: &str, host: u32) -> PlanInput {
        let cfg = NetworkConfig::from_layers([config.as_bytes()]).unwrap();
        let table = build_device_table(&(0..n).map(nic).collect::<Vec<_>>(), &SliceOptions::new("node-a"));
        let layout = RailsLayout::new("10.10.0.0/16".parse().unwrap(), 8, 2).unwrap();
        let layout6 = RailsLayout::new6("fd00:10::/64".parse().unwrap(), 8, 2).unwrap();
        let blocks = (0..4)
            .map(|k| {
                let mut blocks = Vec::new();
                if cfg.ipam.subnet.is_some() || cfg.ipam.subnet6.is_none() {
                    blocks.push(IpNet::V4(layout.block(host, k).unwrap()));
                }
                if cfg.ipam.subnet6.is_some() {
                    blocks.push(IpNet::V6(layout6.block(host, k).unwrap()));
                }
                (k, blocks)
            })
            .collect();
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
            pool: BTreeMap::new(),
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
            .parse::<ipnet::Ipv4Net>()
            .unwrap()
            .hosts()
            .map(IpAddr::V4)
            .collect();
        assert!(matches!(
            build_plan(&input(1, RAILS, 7), &all),
            Err(BuildError::Exhausted { .. })
        ));
    }

    const DUAL: &str = r#"{"network":"rails","ipam":{"type":"rails","subnet":"10.10.0.0/16","subnet6":"fd00:10::/64","hostBlock":8,"interfaceBlock":2,"exclude":["fd00:10:0:0:700::/126"]},"routing":{"mode":"l3","policyRouting":true}}"#;
    const V6: &str = r#"{"network":"rails","ipam":{"type":"rails","subnet6":"fd00:10::/64","hostBlock":8,"interfaceBlock":2},"routing":{"mode":"l3"}}"#;

    #[test]
    fn dual_stack_rails_get_one_address_and_route_per_family() {
        let plan = build_plan(&input(2, DUAL, 7), &BTreeSet::new()).unwrap();
        let ips: Vec<Vec<String>> = plan
            .devices
            .iter()
            .map(|d| d.ips.iter().map(IpNet::to_string).collect())
            .collect();
        // Rail 0's v6 block (fd00:10:0:0:700::/74) starts with an excluded /126.
        assert_eq!(
            ips,
            [
                ["10.10.7.1/26", "fd00:10::700:0:0:4/74"],
                ["10.10.7.65/26", "fd00:10::740:0:0:1/74"]
            ]
        );
        let routes: Vec<String> = plan.devices[0].routes.iter().map(|r| r.dst.to_string()).collect();
        assert_eq!(routes, ["10.10.0.0/16", "fd00:10::/64"]);
        // Leases of both families are skipped.
        let leased: BTreeSet<IpAddr> = ["10.10.7.1", "fd00:10::700:0:0:4"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let plan = build_plan(&input(1, DUAL, 7), &leased).unwrap();
        let ips: Vec<String> = plan.devices[0].ips.iter().map(IpNet::to_string).collect();
        assert_eq!(ips, ["10.10.7.2/26", "fd00:10::700:0:0:5/74"]);
    }

    #[test]
    fn ipv6_only_rails() {
        let plan = build_plan(&input(2, V6, 3), &BTreeSet::new()).unwrap();
        let ips: Vec<String> = plan.devices.iter().map(|d| d.ips[0].to_string()).collect();
        assert_eq!(ips, ["fd00:10::300:0:0:1/74", "fd00:10::340:0:0:1/74"]);
        assert!(plan.devices.iter().all(|d| d.ips.len() == 1));
        let routes: Vec<String> = plan.devices[1].routes.iter().map(|r| r.dst.to_string()).collect();
        assert_eq!(routes, ["fd00:10::/64"]);
        // A full v6 block: the leases of a tiny block cover it.
        let tiny =
            r#"{"network":"rails","ipam":{"type":"rails","subnet6":"fd00::/124","hostBlock":1,"interfaceBlock":1}}"#;
        let mut input = input(1, tiny, 0);
        input
            .blocks
            .get_mut("rails")
            .unwrap()
            .insert(0, vec!["fd00::/126".parse().unwrap()]);
        let all: BTreeSet<IpAddr> = ["fd00::1", "fd00::2", "fd00::3"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert!(matches!(build_plan(&input, &all), Err(BuildError::Exhausted { .. })));
    }

    #[test]
    fn dual_stack_blocks_are_checked_per_family() {
        let cfg = NetworkConfig::from_layers([DUAL.as_bytes()]).unwrap();
        let block = |rail: u32, cidr: &str| multinic_api::crd::RailBlock {
            rail_index: rail,
            cidr: cidr.parse().unwrap(),
            node_address: None,
        };
        let both = [
            block(0, "fd00:10:0:0:700::/74"),
            block(0, "10.10.7.0/26"),
            block(1, "10.10.7.64/26"),
            block(1, "fd00:10:0:0:740::/74"),
        ];
        let checked = check_blocks(&cfg, &both).unwrap();
        assert_eq!(
            checked[&0],
            [
                "10.10.7.0/26".parse::<IpNet>().unwrap(),
                "fd00:10:0:0:700::/74".parse().unwrap()
            ],
            "IPv4 first"
        );
        // An object written before the network had subnet6: the v6 blocks are missing.
        assert_eq!(
            check_blocks(&cfg, &both[1..3]).unwrap_err(),
            BuildError::NoFamilyBlock {
                rail: 0,
                family: "IPv6",
                field: "subnet6"
            }
        );
        for bad in ["fd00:11::/74", "fd00:10::/80"] {
            assert!(
                matches!(
                    check_blocks(&cfg, &[block(0, bad)]),
                    Err(BuildError::ForeignBlock { .. })
                ),
                "{bad}"
            );
        }
        // An IPv6-only network refuses IPv4 blocks.
        let v6 = NetworkConfig::from_layers([V6.as_bytes()]).unwrap();
        let err = check_blocks(&v6, &[block(0, "10.10.7.0/26")]).unwrap_err();
        assert!(err.to_string().contains("fd00:10::/64"), "{err}");
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
    fn gateway_index_gives_each_rail_its_own_gateway_and_no_pod_takes_it() {
        let gw = r#"{"network":"rails","ipam":{"type":"rails","subnet":"10.10.0.0/16","subnet6":"fd00:10::/64","hostBlock":8,"interfaceBlock":2,"gatewayIndex":1},"routing":{"defaultRoute":true}}"#;
        let plan = build_plan(&input(2, gw, 7), &BTreeSet::new()).unwrap();
        let got: Vec<(Vec<String>, Option<String>, Vec<String>)> = plan
            .devices
            .iter()
            .map(|d| {
                (
                    d.ips.iter().map(IpNet::to_string).collect(),
                    d.gateway.map(|g| g.to_string()),
                    d.routes
                        .iter()
                        .map(|r| format!("{} via {:?}", r.dst, r.gateway.map(|g| g.to_string())))
                        .collect(),
                )
            })
            .collect();
        // Index 1 is each block's first usable address: pods start at the second. The default
        // route of each family goes via the first device's gateway of that family, once.
        assert_eq!(
            got,
            [
                (
                    vec!["10.10.7.2/26".into(), "fd00:10::700:0:0:2/74".into()],
                    Some("10.10.7.1".into()),
                    vec![
                        "0.0.0.0/0 via Some(\"10.10.7.1\")".into(),
                        "::/0 via Some(\"fd00:10::700:0:0:1\")".into()
                    ]
                ),
                (
                    vec!["10.10.7.66/26".into(), "fd00:10::740:0:0:2/74".into()],
                    Some("10.10.7.65".into()),
                    vec![]
                ),
            ]
        );
        // Without defaultRoute the gateways stay, the default routes do not.
        let plain = gw.replace(r#","routing":{"defaultRoute":true}"#, "");
        let plan = build_plan(&input(2, &plain, 7), &BTreeSet::new()).unwrap();
        assert_eq!(plan.devices[1].gateway, Some("10.10.7.65".parse().unwrap()));
        assert!(plan.devices.iter().all(|d| d.routes.is_empty()));
        // A fixed ipam.gateway with defaultRoute: the first device routes the default via it.
        let fixed = r#"{"ipam":{"type":"static","addresses":["192.168.0.5/24","192.168.1.5/24"],"gateway":"192.168.0.1"},"routing":{"defaultRoute":true}}"#;
        let plan = build_plan(&input(2, fixed, 0), &BTreeSet::new()).unwrap();
        assert_eq!(plan.devices[0].routes[0].dst.to_string(), "0.0.0.0/0");
        assert!(plan.devices[1].routes.is_empty());
    }

    #[test]
    fn named_pods_get_their_static_addresses() {
        let named = r#"{"network":"rails","ipam":{"type":"rails","subnet":"10.10.0.0/16","hostBlock":8,"interfaceBlock":2,"exclude":["10.10.255.0/24"],
                         "podAddresses":[{"pod":"ml/trainer-0","addresses":["10.10.255.1/16","10.10.255.2/16"]}]}}"#;
        let pod = |name: &str| PodRef {
            uid: format!("uid-{name}"),
            name: name.into(),
        };
        let mut named_input = input(2, named, 7);
        named_input.pods = vec![pod("trainer-0")];
        let plan = build_plan(&named_input, &BTreeSet::new()).unwrap();
        let ips: Vec<String> = plan.devices.iter().map(|d| d.ips[0].to_string()).collect();
        assert_eq!(ips, ["10.10.255.1/16", "10.10.255.2/16"]);
        // Another pod of the same network gets rails addresses.
        let mut other = input(2, named, 7);
        other.pods = vec![pod("trainer-1")];
        let plan = build_plan(&other, &BTreeSet::new()).unwrap();
        assert_eq!(plan.devices[0].ips[0].to_string(), "10.10.7.1/26");
        // A leased static address, too few addresses, a claim shared with another pod: errors.
        let leased = BTreeSet::from(["10.10.255.2".parse().unwrap()]);
        assert!(matches!(
            build_plan(&named_input, &leased),
            Err(BuildError::StaticTaken { .. })
        ));
        let mut three = input(3, named, 7);
        three.pods = vec![pod("trainer-0")];
        let err = build_plan(&three, &BTreeSet::new()).unwrap_err();
        assert!(
            matches!(&err, BuildError::PodAddressCount { pod, given: 2, needed: 3, .. } if pod == "ml/trainer-0"),
            "{err}"
        );
        let mut shared = input(2, named, 7);
        shared.pods = vec![pod("web"), pod("trainer-0")];
        let err = build_plan(&shared, &BTreeSet::new()).unwrap_err();
        assert!(
            matches!(&err, BuildError::PodAddressesShared { pod, pods: 2 } if pod == "ml/trainer-0"),
            "{err}"
        );
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

    const POOL: &str = r#"{"network":"flat","attachment":{"mode":"macvlan"},"ipam":{"type":"pool","subnet":"10.20.0.0/24","blockPrefix":28,"exclude":["10.20.0.0/25"]}}"#;

    /// `pool`: every device gets an address of the one subnet (its prefix, not the block's) from
    /// the blocks granted to the node, first block first, leased and retired ones skipped; none
    /// free is an error naming the network and the fix.
    #[test]
    fn pool_addresses_come_from_the_granted_blocks() {
        let mut input = input(3, POOL, 0);
        let b = |s: &str| s.parse::<IpNet>().unwrap();
        input
            .pool
            .insert("flat".into(), vec![b("10.20.0.128/28"), b("10.20.0.144/28")]);
        let leased: BTreeSet<IpAddr> = (129..=142).map(|i| IpAddr::from([10, 20, 0, i])).collect();
        let plan = build_plan(&input, &leased).unwrap();
        let ips: Vec<String> = plan.devices.iter().map(|d| d.ips[0].to_string()).collect();
        // .128 is the subnet's first address but not excluded: a pool block has no network address.
        assert_eq!(ips, ["10.20.0.128/24", "10.20.0.143/24", "10.20.0.144/24"]);
        // The second block retired: two addresses left in the first, three devices.
        let retired = input.without_retired(|n| match n {
            "flat" => BTreeSet::from([b("10.20.0.144/28")]),
            _ => BTreeSet::new(),
        });
        let err = build_plan(&retired, &leased).unwrap_err();
        assert_eq!(
            err,
            BuildError::PoolExhausted {
                device: plan.devices[2].device.clone(),
                network: "flat".into(),
                blocks: 1
            }
        );
        assert!(
            err.to_string().contains("MultiNicNetwork flat reports Exhausted"),
            "{err}"
        );
        // No blocks granted yet.
        input.pool.clear();
        assert!(matches!(
            build_plan(&input, &BTreeSet::new()),
            Err(BuildError::PoolExhausted { blocks: 0, .. })
        ));
    }
}
