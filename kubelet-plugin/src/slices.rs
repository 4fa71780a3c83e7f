//! Pure ResourceSlice building (design.md §4, limits of dra-reference.md).

use std::collections::BTreeMap;

use k8s_openapi::api::resource::v1::{
    CapacityRequestPolicy, CapacityRequestPolicyRange, Device, DeviceAttribute, DeviceCapacity, ResourcePool,
    ResourceSlice, ResourceSliceSpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use multinic_api::hash::fnv1a64;
use multinic_api::names::{DRIVER_NAME, PCIE_ROOT_ATTRIBUTE};

use crate::health::{Health, HealthInputs};
use crate::inventory::Nic;
use crate::ledger::{Presence, Rail};

/// Devices per slice (API limit).
pub const MAX_DEVICES_PER_SLICE: usize = 128;
/// Attributes plus capacities per device (API limit).
pub const MAX_ATTRIBUTES_AND_CAPACITIES: usize = 32;
/// Bytes of a string or version attribute (API limit).
pub const MAX_ATTRIBUTE_STRING_BYTES: usize = 64;
/// Length of a DNS label.
pub const MAX_DNS_LABEL: usize = 63;
/// Length of the identifier part of a qualified name.
pub const MAX_ATTRIBUTE_ID: usize = 32;
/// Capacity consumed per pod in shared mode.
pub const PODS_CAPACITY: &str = "multinic.dev/pods";
/// Link bandwidth in bits/s, in shared mode when the NIC's speed is known.
pub const BANDWIDTH_CAPACITY: &str = "multinic.dev/bandwidth";

/// What the slices are for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceOptions {
    pub driver: String,
    pub node_name: String,
    /// Shared mode: publish devices with `allowMultipleAllocations` and this many `multinic.dev/pods`.
    pub shared_pods: Option<u32>,
}

impl SliceOptions {
    pub fn new(node_name: impl Into<String>) -> Self {
        Self {
            driver: DRIVER_NAME.to_string(),
            node_name: node_name.into(),
            shared_pods: None,
        }
    }
}

/// The longest prefix of `s` with at most `max` bytes that ends on a character boundary.
pub fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Device name: `pci-0000-3b-00-0` from the PCI address, else the interface name made a DNS label.
pub fn device_name(nic: &Nic) -> String {
    match &nic.pci {
        Some(pci) => dns_label(&format!("pci-{}", pci.address)),
        None => dns_label(&nic.if_name),
    }
}

/// Lowercase, every other character than `[a-z0-9]` becomes `-`, no leading/trailing `-`, ≤ 63 bytes.
/// A name that had to change gets a short stable hash so that distinct inputs stay distinct.
pub fn dns_label(raw: &str) -> String {
    let mapped: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let trimmed = mapped.trim_matches('-');
    let lossless = trimmed.len() <= MAX_DNS_LABEL
        && !trimmed.is_empty()
        && raw
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == ':' || c == '.')
        && raw.to_ascii_lowercase() == raw
        && trimmed.len() == mapped.len();
    if lossless {
        return trimmed.to_string();
    }
    let hash = format!("{:08x}", fnv1a64(&[raw]) as u32);
    let keep = truncate_utf8(trimmed, MAX_DNS_LABEL - hash.len() - 1).trim_end_matches('-');
    if keep.is_empty() {
        format!("if-{hash}")
    } else {
        format!("{keep}-{hash}")
    }
}

fn string(v: &str) -> DeviceAttribute {
    DeviceAttribute {
        string: Some(truncate_utf8(v, MAX_ATTRIBUTE_STRING_BYTES).to_string()),
        ..Default::default()
    }
}

fn int(v: impl Into<i64>) -> DeviceAttribute {
    DeviceAttribute {
        int: Some(v.into()),
        ..Default::default()
    }
}

fn boolean(v: bool) -> DeviceAttribute {
    DeviceAttribute {
        bool: Some(v),
        ..Default::default()
    }
}

/// The attributes of design.md §4, in priority order (kept first when the limit bites).
pub fn device_attributes(nic: &Nic, rail_index: u32) -> Vec<(String, DeviceAttribute)> {
    let q = |id: &str| format!("{DRIVER_NAME}/{id}");
    let mut attrs = vec![
        (q("ifName"), string(&nic.if_name)),
        (q("railIndex"), int(i64::from(rail_index))),
        (q("linkType"), string(nic.link_type.as_str())),
        (q("rdma"), boolean(nic.rdma.is_some())),
        (q("virtual"), boolean(nic.virtual_device)),
        (q("mtu"), int(nic.mtu)),
    ];
    let pci = nic.pci.as_ref();
    attrs.push((q("sriovPF"), boolean(pci.is_some_and(|p| p.is_sriov_pf()))));
    attrs.push((q("sriovVF"), boolean(pci.is_some_and(|p| p.is_sriov_vf()))));
    if let Some(root) = pci.and_then(|p| p.pcie_root.as_deref()) {
        attrs.push((PCIE_ROOT_ATTRIBUTE.to_string(), string(root)));
    }
    if let Some(numa) = pci.and_then(|p| p.numa_node) {
        attrs.push((q("numaNode"), int(numa)));
    }
    if let Some(rdma) = &nic.rdma {
        attrs.push((q("rdmaDevice"), string(&rdma.device)));
    }
    if let Some(pci) = pci {
        attrs.push((q("pciAddress"), string(&pci.address)));
        attrs.push((q("pciVendor"), string(&format!("{:04x}", pci.vendor))));
        attrs.push((q("pciDevice"), string(&format!("{:04x}", pci.device))));
        if let Some(driver) = &pci.driver {
            attrs.push((q("driver"), string(driver)));
        }
        if let Some(index) = pci.vf_index {
            attrs.push((q("vfIndex"), int(index)));
        }
        if let Some(total) = pci.sriov_total_vfs.filter(|n| *n > 0) {
            attrs.push((q("sriovTotalVFs"), int(total)));
            attrs.push((q("sriovNumVFs"), int(pci.sriov_num_vfs.unwrap_or(0))));
        }
    }
    if let Some(pf) = &nic.pf_name {
        attrs.push((q("pfName"), string(pf)));
    }
    if let Some(speed) = nic.speed_mbps {
        attrs.push((q("speedMbps"), int(speed)));
    }
    if let Some(mac) = &nic.mac {
        attrs.push((q("mac"), string(mac)));
    }
    if let Some(ipv4) = nic.ipv4 {
        attrs.push((q("ipv4"), string(&ipv4.to_string())));
    }
    if let Some(ipv6) = nic.ipv6 {
        attrs.push((q("ipv6"), string(&ipv6.to_string())));
    }
    attrs
}

/// A published device and the NIC behind it.
#[derive(Debug, Clone, PartialEq)]
pub struct PublishedDevice {
    pub device: Device,
    pub nic: Nic,
    pub rail_index: u32,
    /// On the host now, or in a pod (then `nic` holds the facts it had on the host).
    pub presence: Presence,
    /// What the node sees of it ([`crate::health`]); an unhealthy device is published tainted.
    pub health: Health,
}

/// Devices for the NICs, `railIndex` by PCI order, names unique within the pool.
pub fn build_devices(nics: &[Nic], opts: &SliceOptions) -> Vec<Device> {
    build_device_table(nics, opts).into_iter().map(|p| p.device).collect()
}

/// Like [`build_devices`], keeping the NIC and rail of each device: the rails a fresh node
/// ledger gives these NICs (PCI order).
pub fn build_device_table(nics: &[Nic], opts: &SliceOptions) -> Vec<PublishedDevice> {
    let mut ledger = crate::ledger::DeviceLedger::default();
    ledger.observe(nics);
    let (links, parents) = (BTreeMap::new(), std::collections::BTreeSet::new());
    build_rail_devices(
        &ledger.rails(nics, &Default::default(), device_name),
        opts,
        HealthInputs {
            links: &links,
            parents: &parents,
        },
    )
}

/// The consumable capacities of a shared device (DRAConsumableCapacity; rules of
/// `validateRequestPolicyRange`, kubernetes `pkg/apis/resource/validation/validation.go`):
/// - `multinic.dev/pods` = `pods`; a claim that does not ask for it consumes 1 (`default`), at most
///   `pods`. Without a `requestPolicy` a claim that does not ask would consume the whole capacity,
///   i.e. the device would not be shared at all. `step` 1 only when `min + step` fits (`pods` ≥ 2).
/// - `multinic.dev/bandwidth` = the link speed in bits/s (`<Mb/s>M`) when sysfs says it; a claim
///   that does not ask consumes 0 (no reservation), one that asks reserves in steps of 1 Mb/s.
pub fn shared_capacity(pods: u32, speed_mbps: Option<u32>) -> BTreeMap<String, DeviceCapacity> {
    let pods_policy = CapacityRequestPolicy {
        default: Some(Quantity("1".into())),
        valid_range: Some(CapacityRequestPolicyRange {
            min: Quantity("1".into()),
            max: Some(Quantity(pods.to_string())),
            step: (pods >= 2).then(|| Quantity("1".into())),
        }),
        valid_values: None,
    };
    let mut caps = BTreeMap::from([(
        PODS_CAPACITY.to_string(),
        DeviceCapacity {
            value: Quantity(pods.to_string()),
            request_policy: Some(pods_policy),
        },
    )]);
    if let Some(speed) = speed_mbps.filter(|s| *s > 0) {
        let policy = CapacityRequestPolicy {
            default: Some(Quantity("0".into())),
            valid_range: Some(CapacityRequestPolicyRange {
                min: Quantity("0".into()),
                max: None,
                step: Some(Quantity("1M".into())),
            }),
            valid_values: None,
        };
        caps.insert(
            BANDWIDTH_CAPACITY.to_string(),
            DeviceCapacity {
                value: Quantity(format!("{speed}M")),
                request_policy: Some(policy),
            },
        );
    }
    caps
}

/// The devices of NICs whose rails the node ledger decided, in the order given, with their health.
pub fn build_rail_devices(rails: &[Rail<'_>], opts: &SliceOptions, health: HealthInputs<'_>) -> Vec<PublishedDevice> {
    let mut used = std::collections::HashSet::new();
    rails
        .iter()
        .map(|&Rail { nic, rail_index: rail, presence }| {
            let mut name = device_name(nic);
            if !used.insert(name.clone()) {
                // Two netdevs on one PCI function (multi-port cards): tell them apart by interface.
                name = dns_label(&format!("{name}-{}", nic.if_name));
                used.insert(name.clone());
            }
            let capacity = opts
                .shared_pods
                .map(|pods| shared_capacity(pods, nic.speed_mbps))
                .unwrap_or_default();
            let room = MAX_ATTRIBUTES_AND_CAPACITIES - capacity.len();
            let mut attrs = device_attributes(nic, rail);
            if attrs.len() > room {
                tracing::warn!(device = %name, dropped = attrs.len() - room, "attribute limit reached; lowest-priority attributes left out");
                attrs.truncate(room);
            }
            let health = crate::health::assess(&name, &nic.if_name, presence, health);
            let device = Device {
                name,
                attributes: Some(attrs.into_iter().collect()),
                capacity: (!capacity.is_empty()).then_some(capacity),
                allow_multiple_allocations: opts.shared_pods.map(|_| true),
                taints: crate::health::taint(&health).map(|t| vec![t]),
                ..Default::default()
            };
            PublishedDevice {
                device,
                nic: nic.clone(),
                rail_index: rail,
                presence,
                health,
            }
        })
        .collect()
}

/// Name of the slice with this index of the node's pool: a DNS subdomain ≤ 253.
pub fn slice_name(node_name: &str, driver: &str, index: usize) -> String {
    let suffix = format!("-{driver}-{index}");
    let node = truncate_utf8(node_name, 253 - suffix.len()).trim_end_matches(['-', '.']);
    format!("{node}{suffix}")
}

/// The slices of the node's pool at `generation`: ≤ 128 devices each, all with the same generation
/// and count. An empty device list still yields one (empty) slice so that the pool exists.
pub fn build_slices(devices: &[Device], opts: &SliceOptions, generation: i64) -> Vec<ResourceSlice> {
    let chunks: Vec<&[Device]> = if devices.is_empty() {
        vec![&[]]
    } else {
        devices.chunks(MAX_DEVICES_PER_SLICE).collect()
    };
    let count = i64::try_from(chunks.len()).unwrap_or(i64::MAX);
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, chunk)| ResourceSlice {
            metadata: ObjectMeta {
                name: Some(slice_name(&opts.node_name, &opts.driver, i)),
                ..Default::default()
            },
            spec: ResourceSliceSpec {
                driver: opts.driver.clone(),
                node_name: Some(opts.node_name.clone()),
                pool: ResourcePool {
                    name: opts.node_name.clone(),
                    generation,
                    resource_slice_count: count,
                },
                devices: Some(chunk.to_vec()),
                ..Default::default()
            },
        })
        .collect()
}

/// Checks a device against the API server's validation rules (dra-reference.md); returns every
/// violation. Used before publishing and by the tests.
pub fn validate_device(device: &Device) -> Vec<String> {
    let mut errors = Vec::new();
    if !is_dns_label(&device.name) {
        errors.push(format!("name {:?} is not a DNS label", device.name));
    }
    let attrs = device.attributes.as_ref().map_or(0, |a| a.len());
    let caps = device.capacity.as_ref().map_or(0, |c| c.len());
    if attrs + caps > MAX_ATTRIBUTES_AND_CAPACITIES {
        errors.push(format!(
            "{} attributes and capacities, over {MAX_ATTRIBUTES_AND_CAPACITIES}",
            attrs + caps
        ));
    }
    for (name, attr) in device.attributes.iter().flatten() {
        if let Err(e) = validate_qualified_name(name) {
            errors.push(e);
        }
        let set = [
            attr.int.is_some(),
            attr.bool.is_some(),
            attr.string.is_some(),
            attr.version.is_some(),
        ];
        if set.iter().filter(|s| **s).count() != 1 {
            errors.push(format!(
                "attribute {name} must have exactly one of int, bool, string, version"
            ));
        }
        for s in [&attr.string, &attr.version].into_iter().flatten() {
            if s.len() > MAX_ATTRIBUTE_STRING_BYTES {
                errors.push(format!(
                    "attribute {name} is {} bytes, over {MAX_ATTRIBUTE_STRING_BYTES}",
                    s.len()
                ));
            }
        }
    }
    for name in device.capacity.iter().flat_map(|c| c.keys()) {
        if let Err(e) = validate_qualified_name(name) {
            errors.push(e);
        }
    }
    errors
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, ≤ 63.
pub fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_DNS_LABEL
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// Dot-separated DNS labels, ≤ `max`.
pub fn is_dns_subdomain(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && s.split('.').all(is_dns_label)
}

/// `[<domain>/]<id>`: domain a DNS subdomain ≤ 63, id a C identifier ≤ 32.
pub fn validate_qualified_name(name: &str) -> Result<(), String> {
    let (domain, id) = match name.split_once('/') {
        Some((d, i)) => (Some(d), i),
        None => (None, name),
    };
    if let Some(domain) = domain
        && !is_dns_subdomain(domain, 63)
    {
        return Err(format!(
            "qualified name {name:?}: domain is not a DNS subdomain of at most 63 bytes"
        ));
    }
    let c_ident = id.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !c_ident || id.len() > MAX_ATTRIBUTE_ID {
        return Err(format!(
            "qualified name {name:?}: {id:?} is not a C identifier of at most {MAX_ATTRIBUTE_ID} bytes"
        ));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use multinic_testkit::fixtures::roce_nic;

    use super::*;

    pub(crate) fn nic(i: usize) -> Nic {
        roce_nic(i)
    }

    #[test]
    fn one_hundred_thirty_devices_make_two_slices_of_one_pool() {
        let nics: Vec<Nic> = (0..130).map(nic).collect();
        let opts = SliceOptions::new("gpu-node-7");
        let devices = build_devices(&nics, &opts);
        let slices = build_slices(&devices, &opts, 5);
        assert_eq!(slices.len(), 2);
        assert_eq!(slices[0].spec.devices.as_ref().unwrap().len(), 128);
        assert_eq!(slices[1].spec.devices.as_ref().unwrap().len(), 2);
        for s in &slices {
            assert_eq!(s.spec.pool.name, "gpu-node-7");
            assert_eq!(s.spec.pool.generation, 5);
            assert_eq!(s.spec.pool.resource_slice_count, 2);
            assert_eq!(s.spec.node_name.as_deref(), Some("gpu-node-7"));
            assert!(is_dns_subdomain(s.metadata.name.as_deref().unwrap(), 253));
        }
        assert_ne!(slices[0].metadata.name, slices[1].metadata.name);
        let mut names = std::collections::HashSet::new();
        for (rail, d) in slices.iter().flat_map(|s| s.spec.devices.iter().flatten()).enumerate() {
            assert!(validate_device(d).is_empty(), "{}: {:?}", d.name, validate_device(d));
            assert!(names.insert(d.name.clone()), "duplicate device name {}", d.name);
            let attrs = d.attributes.as_ref().unwrap();
            assert_eq!(attrs["multinic.dev/railIndex"].int, Some(i64::try_from(rail).unwrap()));
        }
    }

    #[test]
    fn over_long_strings_are_cut_on_a_char_boundary() {
        // 63 ASCII bytes then a 3-byte character: the cut must not split it.
        let long = format!("{}€tail", "a".repeat(63));
        assert_eq!(truncate_utf8(&long, 64), "a".repeat(63));
        assert_eq!(truncate_utf8("€€", 4), "€");
        assert_eq!(truncate_utf8("short", 64), "short");
        let mut n = nic(0);
        n.pci.as_mut().unwrap().driver = Some(long.clone());
        let devices = build_devices(&[n], &SliceOptions::new("n"));
        let driver = devices[0].attributes.as_ref().unwrap()["multinic.dev/driver"]
            .string
            .clone()
            .unwrap();
        assert_eq!(driver, "a".repeat(63));
        assert!(validate_device(&devices[0]).is_empty());
    }

    #[test]
    fn device_names_are_stable_dns_labels() {
        let n = nic(0);
        assert_eq!(device_name(&n), "pci-0000-10-00-0");
        let mut v = nic(1);
        v.pci = None;
        v.if_name = "eth0".into();
        assert_eq!(device_name(&v), "eth0");
        v.if_name = "Eth_0".into();
        let name = device_name(&v);
        assert!(is_dns_label(&name) && name.starts_with("eth-0-"), "{name}");
        assert_ne!(dns_label("Eth_0"), dns_label("eth-0"));
        assert_eq!(dns_label("Eth_0"), dns_label("Eth_0"));
        assert!(is_dns_label(&dns_label(&"x".repeat(100))));
        assert!(is_dns_label(&dns_label("---")));
    }

    #[test]
    fn two_netdevs_on_one_function_get_distinct_names() {
        let a = nic(0);
        let mut b = nic(0);
        b.if_name = "ens0p1".into();
        let devices = build_devices(&[a, b], &SliceOptions::new("n"));
        assert_ne!(devices[0].name, devices[1].name);
        assert!(devices.iter().all(|d| validate_device(d).is_empty()));
    }

    #[test]
    fn shared_mode_adds_capacity_and_multiple_allocations() {
        let opts = SliceOptions {
            shared_pods: Some(16),
            ..SliceOptions::new("n")
        };
        let d = &build_devices(&[nic(0)], &opts)[0];
        assert_eq!(d.allow_multiple_allocations, Some(true));
        let caps = d.capacity.as_ref().unwrap();
        assert_eq!(caps[PODS_CAPACITY].value.0, "16");
        // Without a default a claim would consume all 16, i.e. the NIC would not be shared.
        let policy = caps[PODS_CAPACITY].request_policy.as_ref().unwrap();
        assert_eq!(policy.default, Some(Quantity("1".into())));
        let range = policy.valid_range.as_ref().unwrap();
        assert_eq!(
            (range.min.0.as_str(), range.max.as_ref().unwrap().0.as_str()),
            ("1", "16")
        );
        assert_eq!(range.step, Some(Quantity("1".into())));
        assert!(validate_device(d).is_empty());
    }

    #[test]
    fn shared_capacity_follows_the_api_request_policy_rules() {
        // One pod: min + step would exceed the capacity, which the API server rejects.
        let one = shared_capacity(1, None);
        let range = one[PODS_CAPACITY]
            .request_policy
            .as_ref()
            .unwrap()
            .valid_range
            .clone()
            .unwrap();
        assert_eq!(range.step, None);
        assert!(!one.contains_key(BANDWIDTH_CAPACITY));
        // A known speed adds bandwidth in bits/s, not reserved unless a claim asks.
        let caps = shared_capacity(4, Some(100_000));
        let bw = &caps[BANDWIDTH_CAPACITY];
        assert_eq!(bw.value.0, "100000M");
        let policy = bw.request_policy.as_ref().unwrap();
        assert_eq!(policy.default, Some(Quantity("0".into())));
        assert_eq!(policy.valid_range.as_ref().unwrap().step, Some(Quantity("1M".into())));
        // sysfs reports 0 for some virtual links: no bandwidth capacity then.
        assert!(!shared_capacity(4, Some(0)).contains_key(BANDWIDTH_CAPACITY));
    }

    #[test]
    fn validation_catches_each_rule() {
        let mut d = build_devices(&[nic(0)], &SliceOptions::new("n")).remove(0);
        assert!(validate_device(&d).is_empty());
        d.name = "Bad_Name".into();
        let attrs = d.attributes.as_mut().unwrap();
        attrs.insert("multinic.dev/1bad".into(), int(1));
        attrs.insert("bad domain/x".into(), int(1));
        attrs.insert(
            "multinic.dev/both".into(),
            DeviceAttribute {
                int: Some(1),
                bool: Some(true),
                ..Default::default()
            },
        );
        attrs.insert(
            "multinic.dev/long".into(),
            DeviceAttribute {
                string: Some("x".repeat(65)),
                ..Default::default()
            },
        );
        for i in 0..20 {
            attrs.insert(format!("multinic.dev/extra{i}"), int(i));
        }
        let errors = validate_device(&d);
        for needle in ["DNS label", "1bad", "bad domain", "exactly one", "65 bytes", "over 32"] {
            assert!(
                errors.iter().any(|e| e.contains(needle)),
                "missing {needle:?} in {errors:?}"
            );
        }
    }

    #[test]
    fn empty_inventory_still_publishes_the_pool() {
        let slices = build_slices(&[], &SliceOptions::new("n"), 1);
        assert_eq!(slices.len(), 1);
        assert_eq!(slices[0].spec.pool.resource_slice_count, 1);
    }

    #[test]
    fn slice_names_fit_for_long_node_names() {
        let node = "n".repeat(253);
        let name = slice_name(&node, DRIVER_NAME, 3);
        assert!(name.len() <= 253 && name.ends_with("-multinic.dev-3"));
    }
}
