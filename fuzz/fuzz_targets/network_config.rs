//! The opaque `NetworkConfig` (DeviceClass and claim `parameters`): layered JSON merged and parsed
//! strictly, then used the way prepare uses it (request selection, rails layout, interface names,
//! plan building against the node's blocks).
//!
//! Input format: layers separated by a 0xFF byte (never valid inside JSON text).
#![no_main]

use std::collections::{BTreeMap, BTreeSet, HashSet};

use k8s_openapi::api::resource::v1::{DeviceAllocationConfiguration, OpaqueDeviceConfiguration};
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use libfuzzer_sys::fuzz_target;
use multinic_api::config::{IpamType, MAX_PARAMETERS_BYTES, NetworkConfig, validate_ifname};
use multinic_kubelet_plugin::inventory::{LinkType, Nic};
use multinic_kubelet_plugin::plan_builder::{DeviceInput, PlanInput, build_plan, request_config};
use multinic_kubelet_plugin::slices::{SliceOptions, build_device_table};

fn nic(rail: usize) -> Nic {
    Nic {
        if_name: format!("ens{rail}np0"),
        if_index: 10 + rail as u32,
        mac: Some(format!("02:00:00:00:00:{rail:02x}")),
        mtu: 9000,
        speed_mbps: None,
        link_type: LinkType::Ethernet,
        pci: None,
        rdma: None,
        virtual_device: false,
        ipv4: Some("192.168.0.10/24".parse().unwrap()),
        ipv6: None,
        pf_name: None,
    }
}

fuzz_target!(|data: &[u8]| {
    let layers: Vec<&[u8]> = data.split(|b| *b == 0xff).take(8).collect();
    let parsed = NetworkConfig::from_layers(layers.iter().copied());

    // The same layers as the API server hands them over (already parsed JSON values) agree.
    let values: Option<Vec<serde_json::Value>> = layers
        .iter()
        .map(|l| {
            (l.len() <= MAX_PARAMETERS_BYTES)
                .then(|| serde_json::from_slice(l).ok())
                .flatten()
        })
        .collect();
    if let Some(values) = &values {
        let from_values = NetworkConfig::from_values(values.iter());
        assert_eq!(parsed.is_ok(), from_values.is_ok(), "{parsed:?} vs {from_values:?}");
        // ... and through the claim's allocation config entries, class layers first.
        let entries: Vec<DeviceAllocationConfiguration> = values
            .iter()
            .enumerate()
            .map(|(i, v)| DeviceAllocationConfiguration {
                source: if i % 2 == 0 { "FromClass" } else { "FromClaim" }.into(),
                requests: None,
                opaque: Some(OpaqueDeviceConfiguration {
                    driver: "multinic.dev".into(),
                    parameters: RawExtension(v.clone()),
                }),
            })
            .collect();
        let _ = request_config(&entries, "multinic.dev", "nics/sub");
    }

    let Ok(config) = parsed else { return };
    config.validate().expect("a parsed config validates again");
    for position in 0..4 {
        let name = config.pod_if_name(position);
        if position >= config.interface_names.len() {
            assert!(validate_ifname(&name).is_ok(), "generated name {name:?}");
        }
    }
    // Serialising and parsing again gives the same config.
    let again = NetworkConfig::from_values([&serde_json::to_value(&config).expect("serialise")]).expect("reparse");
    assert_eq!(again, config);

    // Plan building with this config on a node whose blocks follow the config's layout.
    // Both families of a dual-stack config: one block of each per rail.
    let mut blocks = BTreeMap::new();
    if config.ipam.kind == IpamType::Rails
        && let Ok(layouts) = config.rails_layouts()
    {
        let rails: BTreeMap<u32, _> = (0..2u32)
            .filter_map(|r| Some((r, layouts.blocks(1, r).ok()?)))
            .collect();
        for b in rails.values().flatten() {
            assert!(layouts.holds(b), "block {b} of the layouts is one of theirs");
        }
        blocks.insert(config.network.clone().unwrap_or_default(), rails);
    }
    // A pool network: the first two blocks of its layout granted to the node.
    let mut pool = BTreeMap::new();
    if let Ok(layout) = config.pool_layout() {
        let granted: Vec<ipnet::IpNet> = layout.blocks().take(2).map(ipnet::IpNet::V4).collect();
        pool.insert(config.network.clone().unwrap_or_default(), granted);
    }
    let published = build_device_table(&[nic(0), nic(1)], &SliceOptions::new("node-a"));
    let input = PlanInput {
        claim_uid: "0b6e5a3c-1111".into(),
        namespace: "ml".into(),
        name: "c".into(),
        pods: vec![],
        devices: published
            .into_iter()
            .map(|p| DeviceInput {
                request: "nics".into(),
                pool: "node-a".into(),
                published: p,
                config: config.clone(),
            })
            .collect(),
        blocks,
        pool,
    };
    let leased: BTreeSet<std::net::IpAddr> = ["10.10.1.1", "10.10.0.1"].iter().map(|s| s.parse().unwrap()).collect();
    if let Ok(plan) = build_plan(&input, &leased) {
        let mut seen = HashSet::new();
        for d in &plan.devices {
            for ip in &d.ips {
                assert!(
                    !leased.contains(&ip.addr()) || config.ipam.kind == IpamType::Host,
                    "leased {ip}"
                );
                assert!(
                    seen.insert(ip.addr()) || config.ipam.kind == IpamType::Host,
                    "duplicate {ip}"
                );
            }
        }
        let body = serde_json::to_vec(&plan).expect("plan serialises");
        let back = multinic_api::plan::parse_plan(std::path::Path::new("fuzz.json"), &body).expect("plan reparses");
        assert_eq!(back, plan);
    }
});
