//! Acceptance: the checked-in sysfs fixture trees yield the expected slices (golden files).
//! Set `UPDATE_GOLDEN=1` to rewrite the golden files after an intended change, then review the diff.

use std::path::{Path, PathBuf};

use k8s_openapi::api::resource::v1::{Device, ResourceSlice};
use multinic_kubelet_plugin::inventory::{self, Exclusion, Filters, HostSnapshot, Inventory, SysfsReader};
use multinic_kubelet_plugin::slices::{SliceOptions, build_devices, build_slices, validate_device};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn load(name: &str) -> (Inventory, Vec<ResourceSlice>) {
    let dir = fixture(name);
    let snapshot: HostSnapshot =
        serde_json::from_str(&std::fs::read_to_string(dir.join("netlink.json")).unwrap()).unwrap();
    let inv = inventory::collect(&snapshot, &SysfsReader::new(dir.join("sys")), &Filters::default());
    let opts = SliceOptions::new("node-1");
    let slices = build_slices(&build_devices(&inv.nics, &opts), &opts, 1);
    (inv, slices)
}

fn check_golden(name: &str, slices: &[ResourceSlice]) {
    let path = fixture(name).join("expected-slices.yaml");
    let actual = serde_yaml::to_string(slices).unwrap();
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        actual == expected,
        "{name}: slices differ from {}:\n{actual}",
        path.display()
    );
}

fn devices(slices: &[ResourceSlice]) -> Vec<&Device> {
    slices.iter().flat_map(|s| s.spec.devices.iter().flatten()).collect()
}

fn attr<'a>(d: &'a Device, key: &str) -> &'a k8s_openapi::api::resource::v1::DeviceAttribute {
    d.attributes
        .as_ref()
        .and_then(|a| a.get(key))
        .unwrap_or_else(|| panic!("{} has no {key}", d.name))
}

fn s<'a>(d: &'a Device, key: &str) -> &'a str {
    attr(d, &format!("multinic.dev/{key}")).string.as_deref().unwrap()
}

fn i(d: &Device, key: &str) -> i64 {
    attr(d, &format!("multinic.dev/{key}")).int.unwrap()
}

fn b(d: &Device, key: &str) -> bool {
    attr(d, &format!("multinic.dev/{key}")).bool.unwrap()
}

#[test]
fn roce_8_rail_host() {
    let (inv, slices) = load("roce-8rail");
    check_golden("roce-8rail", &slices);
    assert_eq!(inv.excluded.get("eno1"), Some(&Exclusion::Uplink));
    assert_eq!(
        inv.excluded.get("eno1v0"),
        Some(&Exclusion::UplinkChild("0000:01:00.0".into()))
    );
    assert_eq!(inv.excluded.get("lo"), Some(&Exclusion::Loopback));
    assert_eq!(inv.excluded.get("docker0"), Some(&Exclusion::Virtual));
    let facts = SysfsReader::new(fixture("roce-8rail").join("sys")).read_all(["docker0", "ens108np0"]);
    assert!(facts["docker0"].virtual_device, "docker0 lives under devices/virtual");
    assert!(!facts["ens108np0"].virtual_device);
    let devs = devices(&slices);
    assert_eq!(devs.len(), 8);
    // Rails follow PCI order, not interface-name order.
    let names: Vec<&str> = devs.iter().map(|d| s(d, "ifName")).collect();
    assert_eq!(
        names,
        [
            "ens108np0",
            "ens107np0",
            "ens110np0",
            "ens109np0",
            "ens112np0",
            "ens111np0",
            "ens114np0",
            "ens113np0"
        ]
    );
    for (rail, d) in devs.iter().enumerate() {
        assert!(validate_device(d).is_empty(), "{:?}", validate_device(d));
        assert_eq!(i(d, "railIndex"), rail as i64);
        assert_eq!(s(d, "rdmaDevice"), format!("mlx5_{rail}"));
        assert!(b(d, "rdma") && !b(d, "virtual") && !b(d, "sriovVF"));
        assert_eq!(i(d, "numaNode"), if rail < 4 { 0 } else { 1 });
        assert_eq!(s(d, "linkType"), "ethernet");
        assert_eq!(
            (s(d, "pciVendor"), s(d, "pciDevice"), s(d, "driver")),
            ("15b3", "1021", "mlx5_core")
        );
        assert_eq!(i(d, "speedMbps"), 400_000);
        assert_eq!(s(d, "ipv4"), format!("192.168.{rail}.11/24"));
    }
    let roots: Vec<&str> = devs
        .iter()
        .map(|d| attr(d, "resource.kubernetes.io/pcieRoot").string.as_deref().unwrap())
        .collect();
    assert_eq!(
        roots,
        [
            "pci0000:15",
            "pci0000:15",
            "pci0000:37",
            "pci0000:37",
            "pci0000:97",
            "pci0000:97",
            "pci0000:b7",
            "pci0000:b7"
        ]
    );
    assert_eq!(devs[0].name, "pci-0000-16-00-0");
}

#[test]
fn sriov_pf_with_4_vfs() {
    let (inv, slices) = load("sriov-pf-4vfs");
    check_golden("sriov-pf-4vfs", &slices);
    assert!(inv.excluded.contains_key("eno1"));
    let devs = devices(&slices);
    assert_eq!(devs.len(), 5);
    let pf = devs[0];
    assert_eq!(s(pf, "ifName"), "ens2f0np0");
    assert!(b(pf, "sriovPF") && !b(pf, "sriovVF"));
    assert_eq!((i(pf, "sriovTotalVFs"), i(pf, "sriovNumVFs")), (8, 4));
    for (k, vf) in devs[1..].iter().enumerate() {
        assert!(b(vf, "sriovVF") && !b(vf, "sriovPF"));
        assert_eq!(i(vf, "vfIndex"), k as i64);
        assert_eq!(s(vf, "pfName"), "ens2f0np0");
        assert_eq!(s(vf, "ifName"), format!("ens2f0v{k}"));
        assert_eq!(s(vf, "rdmaDevice"), format!("mlx5_{}", k + 1));
        assert_eq!(s(vf, "pciDevice"), "101e");
        assert!(validate_device(vf).is_empty());
    }
}

#[test]
fn infiniband_only_port() {
    let (_, slices) = load("ib-only");
    check_golden("ib-only", &slices);
    let devs = devices(&slices);
    assert_eq!(devs.len(), 1);
    let d = devs[0];
    assert_eq!(s(d, "linkType"), "infiniband");
    assert_eq!(s(d, "rdmaDevice"), "mlx5_ib0");
    assert_eq!(i(d, "mtu"), 4092);
    // A 20-byte IPoIB hardware address is 59 characters: within the 64-byte limit, kept whole.
    assert_eq!(s(d, "mac").len(), 59);
    assert!(validate_device(d).is_empty());
}

#[test]
fn cloud_vm_nic_without_rdma() {
    let (inv, slices) = load("cloud-vm");
    check_golden("cloud-vm", &slices);
    assert_eq!(inv.excluded.get("ens5"), Some(&Exclusion::Uplink));
    assert_eq!(inv.excluded.get("veth1a2b3c"), Some(&Exclusion::Virtual));
    let devs = devices(&slices);
    assert_eq!(devs.len(), 1);
    let d = devs[0];
    assert_eq!(s(d, "ifName"), "ens6");
    assert!(!b(d, "rdma"));
    assert!(d.attributes.as_ref().unwrap().get("multinic.dev/rdmaDevice").is_none());
    assert!(
        d.attributes.as_ref().unwrap().get("multinic.dev/numaNode").is_none(),
        "numa_node -1 is left out"
    );
    assert!(
        d.attributes.as_ref().unwrap().get("multinic.dev/speedMbps").is_none(),
        "speed -1 is left out"
    );
    assert_eq!(s(d, "driver"), "ena");
    assert_eq!(s(d, "ipv4"), "172.31.20.7/20");
}

#[test]
fn admin_filters_apply_to_fixtures() {
    let dir = fixture("roce-8rail");
    let snapshot: HostSnapshot =
        serde_json::from_str(&std::fs::read_to_string(dir.join("netlink.json")).unwrap()).unwrap();
    let filters = Filters::new(
        false,
        &["ens10*".into()],
        &["ens107*".into()],
        &["15b3:1021".into()],
        &[],
    )
    .unwrap();
    let inv = inventory::collect(&snapshot, &SysfsReader::new(dir.join("sys")), &filters);
    let names: Vec<&str> = inv.nics.iter().map(|n| n.if_name.as_str()).collect();
    assert_eq!(names, ["ens108np0", "ens109np0"]);
}
