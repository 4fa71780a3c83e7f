//! Fixtures shared by the tests (and benchmarks) of the other crates: NICs as the inventory reports
//! them, and the gate of the tests that need root.
//!
//! The NIC type belongs to the kubelet plugin, which depends on this crate; so a NIC fixture is
//! written once here in the inventory's JSON form (the form of `multinic inventory` and of the
//! netlink snapshots) and deserialized into the caller's type: `let nic: Nic = roce_nic(0);`.

use serde::de::DeserializeOwned;
use serde_json::{Value, json};

fn typed<T: DeserializeOwned>(what: &str, value: Value) -> T {
    match serde_json::from_value(value) {
        Ok(t) => t,
        Err(e) => panic!("fixture {what} no longer matches the type it is read into: {e}"),
    }
}

/// A RoCE NIC, number `i`, with every fact the slices carry: PCI function `0000:BB:DD.F` numbered
/// in `i` order from `0000:10:00.0` (so its rail index is `i` among these NICs), NUMA node `i % 2`,
/// MAC `b8:3f:d2:00:HH:LL`, RDMA device `mlx5_<i>` with verbs node `uverbs<i>`, MTU 9000. The
/// interface names (`ens<9999 - i>np0`) descend while the PCI addresses ascend, so ordering by name
/// instead of by PCI address shows.
pub fn roce_nic<T: DeserializeOwned>(i: usize) -> T {
    let Some(name_number) = 9999usize.checked_sub(i) else {
        panic!("fixture roce_nic numbers NICs 0..=9999, not {i}");
    };
    typed(
        "roce_nic",
        json!({
            "ifName": format!("ens{name_number}np0"),
            "ifIndex": i + 2,
            "mac": format!("b8:3f:d2:00:{:02x}:{:02x}", i / 256, i % 256),
            "mtu": 9000,
            "speedMbps": 400_000,
            "linkType": "ethernet",
            "pci": {
                "address": format!("0000:{:02x}:{:02x}.{}", 0x10 + i / 256, (i / 8) % 32, i % 8),
                "vendor": 0x15b3,
                "device": 0x1021,
                "driver": "mlx5_core",
                "numaNode": i % 2,
                "pcieRoot": "pci0000:00",
            },
            "rdma": {"device": format!("mlx5_{i}"), "linkLayer": "Ethernet", "uverbs": format!("uverbs{i}")},
            "virtualDevice": false,
        }),
    )
}

/// A veth as the inventory reports it with `--allow-virtual`: no PCI function, no RDMA, MTU 1500.
pub fn veth_nic<T: DeserializeOwned>(if_name: &str, if_index: u32) -> T {
    typed(
        "veth_nic",
        json!({
            "ifName": if_name,
            "ifIndex": if_index,
            "mtu": 1500,
            "speedMbps": 10_000,
            "linkType": "ethernet",
            "virtualDevice": true,
        }),
    )
}

/// A planned host-device NIC of request `nics` in pool `pool`: `device` (interface `if_name`, rail
/// `rail`) as `pod_if_name` in the pod with the one address `ip` (CIDR form).
pub fn planned_device<T: DeserializeOwned>(
    pool: &str,
    device: &str,
    if_name: &str,
    rail: u32,
    pod_if_name: &str,
    ip: &str,
) -> T {
    typed(
        "planned_device",
        json!({
            "request": "nics", "pool": pool, "device": device, "hostIfName": if_name,
            "railIndex": rail, "podIfName": pod_if_name, "mode": "host-device", "ips": [ip],
        }),
    )
}

/// Whether a test that needs root (network namespaces, veths) can run: true as root; otherwise it
/// says it skips `test`, and under `CI=true` (where skipping would hide a failure) it panics.
pub fn can_run_as_root(test: &str) -> bool {
    if effective_uid() == Some(0) {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test}: CI=true and not root: this test must run as root"
    );
    eprintln!("SKIP {test}: needs root (network namespaces, veth and macvlan links)");
    false
}

/// The effective user ID: the second number of the `Uid:` line of `/proc/self/status`.
fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let uids = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    uids.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roce_nics_are_distinct_and_in_pci_order() {
        let nics: Vec<Value> = (0..300).map(roce_nic).collect();
        let addresses: Vec<&str> = nics.iter().filter_map(|n| n["pci"]["address"].as_str()).collect();
        assert_eq!(addresses.len(), 300);
        assert!(addresses.windows(2).all(|w| w[0] < w[1]), "PCI addresses ascend");
        assert_eq!(addresses[0], "0000:10:00.0");
        let names: Vec<&str> = nics.iter().filter_map(|n| n["ifName"].as_str()).collect();
        assert!(names.windows(2).all(|w| w[0] > w[1]), "names descend");
        assert!(names.iter().all(|n| n.len() <= 15), "names fit IFNAMSIZ");
    }

    #[test]
    fn the_effective_uid_is_read() {
        assert!(effective_uid().is_some());
    }
}
