//! Acceptance 1 of issue 14 on recorded evidence: `fixtures/qemu-igb-8rail` is the sysfs (the parts
//! the inventory reads) and the rtnetlink snapshot of the QEMU guest of `e2e/vm` (q35, two NUMA
//! nodes behind two pxb-pcie roots, 8 igb PFs, 2 VFs on the first PF of each node, an rxe device on
//! each PF, a virtio uplink on the default route), recorded by `multinic vm-check` in the guest.
//! Re-record with `VM_WORK=/tmp/vmw e2e/vm/run.sh <bin-dir> inventory` and copy
//! `/tmp/vmw/share/fixture/{sys,netlink.json}` here (then `find sys -type d -empty -exec touch
//! {}/.keep \;` so git keeps the empty dirs). `UPDATE_GOLDEN=1` rewrites expected-slices.yaml.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::resource::v1::{Device, ResourceSlice};
use multinic_kubelet_plugin::inventory::{self, Exclusion, Filters, HostSnapshot, SysfsReader};
use multinic_kubelet_plugin::slices::{SliceOptions, build_devices, build_slices, validate_device};

const NAME: &str = "qemu-igb-8rail";

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(NAME)
}

fn load() -> (inventory::Inventory, Vec<ResourceSlice>) {
    let text = std::fs::read_to_string(dir().join("netlink.json")).expect("fixture netlink.json");
    let snapshot: HostSnapshot = serde_json::from_str(&text).expect("netlink.json parses");
    let inv = inventory::collect(&snapshot, &SysfsReader::new(dir().join("sys")), &Filters::default());
    let opts = SliceOptions::new("node-1");
    let slices = build_slices(&build_devices(&inv.nics, &opts), &opts, 1);
    (inv, slices)
}

fn attr(d: &Device, key: &str) -> Option<String> {
    let a = d.attributes.as_ref()?.get(key)?;
    a.string
        .clone()
        .or_else(|| a.int.map(|i| i.to_string()))
        .or_else(|| a.bool.map(|b| b.to_string()))
}

fn m(d: &Device, key: &str) -> String {
    attr(d, &format!("multinic.dev/{key}")).unwrap_or_else(|| panic!("{} has no multinic.dev/{key}", d.name))
}

#[test]
fn qemu_guest_slices_match_golden() {
    let (_, slices) = load();
    let path = dir().join("expected-slices.yaml");
    let actual = serde_yaml::to_string(&slices).unwrap();
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(actual == expected, "slices differ from {}:\n{actual}", path.display());
}

#[test]
fn qemu_guest_real_pci_numa_sriov_rdma_facts() {
    let (inv, slices) = load();
    assert_eq!(
        inv.excluded.get("enp0s4"),
        Some(&Exclusion::Uplink),
        "{:?}",
        inv.excluded
    );
    assert_eq!(inv.excluded.get("lo"), Some(&Exclusion::Loopback));
    assert_eq!(inv.excluded.get("dummy0"), Some(&Exclusion::Virtual));
    let devs: Vec<&Device> = slices.iter().flat_map(|s| s.spec.devices.iter().flatten()).collect();
    assert_eq!(devs.len(), 12, "8 PFs + 4 VFs");
    for d in &devs {
        assert!(validate_device(d).is_empty(), "{:?}", validate_device(d));
    }
    // Rails in PCI order: the PF and its VFs, root by root.
    let order: Vec<(String, String)> = devs.iter().map(|d| (m(d, "railIndex"), m(d, "ifName"))).collect();
    let want: Vec<(String, String)> = [
        "enp33s0",
        "enp33s0v0",
        "enp33s0v1",
        "enp34s0",
        "enp35s0",
        "enp36s0",
        "enp129s0",
        "enp129s0v0",
        "enp129s0v1",
        "enp130s0",
        "enp131s0",
        "enp132s0",
    ]
    .iter()
    .enumerate()
    .map(|(k, n)| (k.to_string(), n.to_string()))
    .collect();
    assert_eq!(order, want);

    let mut roots: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut rxe = Vec::new();
    for d in &devs {
        let ifn = m(d, "ifName");
        assert_eq!(m(d, "pciVendor"), "8086", "{ifn}");
        assert_eq!(m(d, "linkType"), "ethernet");
        let root = attr(d, "resource.kubernetes.io/pcieRoot").expect("pcieRoot");
        roots
            .entry(format!("{root} numa{}", m(d, "numaNode")))
            .or_default()
            .push(ifn.clone());
        if m(d, "driver") == "igb" {
            assert_eq!((m(d, "pciDevice").as_str(), m(d, "sriovPF").as_str()), ("10c9", "true"));
            assert_eq!(m(d, "sriovTotalVFs"), "7");
            let vfs = if ifn == "enp33s0" || ifn == "enp129s0" {
                "2"
            } else {
                "0"
            };
            assert_eq!(m(d, "sriovNumVFs"), vfs, "{ifn}");
            assert_eq!(m(d, "rdma"), "true", "{ifn}");
            rxe.push(m(d, "rdmaDevice"));
        } else {
            assert_eq!(m(d, "driver"), "igbvf");
            assert_eq!((m(d, "pciDevice").as_str(), m(d, "sriovVF").as_str()), ("10ca", "true"));
            assert_eq!(format!("{}v{}", m(d, "pfName"), m(d, "vfIndex")), ifn);
            assert_eq!(m(d, "rdma"), "false", "{ifn}: igb VFs have no RDMA device");
        }
    }
    assert_eq!(rxe, (0..8).map(|k| format!("rxe{k}")).collect::<Vec<_>>());
    let pfs_vfs = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        roots,
        BTreeMap::from([
            (
                "pci0000:20 numa0".to_string(),
                pfs_vfs(&["enp33s0", "enp33s0v0", "enp33s0v1", "enp34s0", "enp35s0", "enp36s0"])
            ),
            (
                "pci0000:80 numa1".to_string(),
                pfs_vfs(&[
                    "enp129s0",
                    "enp129s0v0",
                    "enp129s0v1",
                    "enp130s0",
                    "enp131s0",
                    "enp132s0"
                ])
            ),
        ])
    );
    // Real addresses, as the guest's sysfs had them.
    let addr: BTreeMap<String, String> = devs.iter().map(|d| (m(d, "ifName"), m(d, "pciAddress"))).collect();
    assert_eq!(addr["enp33s0"], "0000:21:00.0");
    assert_eq!(addr["enp33s0v1"], "0000:21:10.2");
    assert_eq!(addr["enp132s0"], "0000:84:00.0");
    assert_eq!(devs[0].name, "pci-0000-21-00-0");
}
