//! A host as the inventory reads it: the rtnetlink snapshot (`netlink.json` of a fixture) and the
//! sysfs attribute files of a netdev (`class/net/<if>/...`, its PCI function, its RDMA port).
//!
//! Input format: the first line is the sysfs file contents, separated by `|`, in the order of
//! [`FILES`]; the rest is a `HostSnapshot` JSON. The files go into a small fixture tree (one PCI
//! NIC `eth0` with an RDMA device) that is read with `SysfsReader`, then the inventory and the
//! ResourceSlices are built from the snapshot and those facts. Never panics; every published
//! device passes the API server's validation.
#![no_main]

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use multinic_kubelet_plugin::inventory::sysfs::{is_bdf, parse_hex_id, parse_numa, parse_speed, pcie_root_from_path};
use multinic_kubelet_plugin::inventory::{Filters, HostSnapshot, SysfsReader, build_inventory};
use multinic_kubelet_plugin::slices::{SliceOptions, build_devices, build_slices, validate_device};

const BDF: &str = "0000:3b:00.0";
/// Attribute files written from the input, relative to the fixture root.
const FILES: &[&str] = &[
    "devices/pci0000:3a/0000:3b:00.0/net/eth0/type",
    "devices/pci0000:3a/0000:3b:00.0/net/eth0/speed",
    "devices/pci0000:3a/0000:3b:00.0/net/eth0/dev_port",
    "devices/pci0000:3a/0000:3b:00.0/vendor",
    "devices/pci0000:3a/0000:3b:00.0/device",
    "devices/pci0000:3a/0000:3b:00.0/numa_node",
    "devices/pci0000:3a/0000:3b:00.0/sriov_totalvfs",
    "devices/pci0000:3a/0000:3b:00.0/sriov_numvfs",
    "class/infiniband/mlx5_0/ports/1/link_layer",
];

/// The fixture tree, created once per process.
fn root() -> &'static Path {
    static ROOT: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &ROOT
        .get_or_init(|| {
            let dir = tempfile::tempdir().expect("tempdir");
            let r = dir.path().to_path_buf();
            let pci = r.join("devices/pci0000:3a").join(BDF);
            for d in [
                pci.join("net/eth0"),
                pci.join("infiniband_verbs/uverbs0"),
                r.join("class/net"),
                r.join("class/infiniband/mlx5_0/ports/1"),
                r.join("bus/pci/devices"),
                r.join("bus/pci/drivers/mlx5_core"),
                r.join("devices/virtual/net/veth0"),
            ] {
                std::fs::create_dir_all(d).expect("mkdir");
            }
            symlink(pci.join("net/eth0"), r.join("class/net/eth0")).expect("symlink");
            symlink(&pci, pci.join("net/eth0/device")).expect("symlink");
            symlink(r.join("bus/pci/drivers/mlx5_core"), pci.join("driver")).expect("symlink");
            symlink(&pci, r.join("bus/pci/devices").join(BDF)).expect("symlink");
            symlink(&pci, r.join("class/infiniband/mlx5_0/device")).expect("symlink");
            symlink(r.join("devices/virtual/net/veth0"), r.join("class/net/veth0")).expect("symlink");
            (dir, r)
        })
        .1
}

fuzz_target!(|data: &[u8]| {
    let (head, snapshot) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let head = String::from_utf8_lossy(head);
    let values: Vec<&str> = head.split('|').collect();
    for v in &values {
        let _ = (parse_hex_id(v), parse_numa(v), parse_speed(v), is_bdf(v));
        let _ = pcie_root_from_path(Path::new("/sys/devices"), &Path::new("/sys/devices").join(v));
    }
    let root = root();
    for (i, file) in FILES.iter().enumerate() {
        let path = root.join(file);
        match values.get(i) {
            Some(v) => std::fs::write(&path, v.as_bytes()).expect("write fixture file"),
            None => {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
    let facts = SysfsReader::new(root).read_all(["eth0", "veth0", "missing0", "../../etc"]);
    let eth0 = &facts["eth0"];
    assert!(eth0.has_device && !eth0.virtual_device);
    assert_eq!(eth0.pci.as_ref().map(|p| p.address.as_str()), Some(BDF));
    assert!(facts["veth0"].virtual_device);

    let Ok(mut snapshot) = serde_json::from_slice::<HostSnapshot>(snapshot) else {
        return;
    };
    snapshot.links.truncate(512);
    let mut sysfs = std::collections::HashMap::new();
    for l in &snapshot.links {
        let f = match l.name.as_str() {
            "eth0" | "veth0" => facts[l.name.as_str()].clone(),
            _ => Default::default(),
        };
        sysfs.insert(l.name.clone(), f);
    }
    for filters in [
        Filters::default(),
        Filters::new(true, &[], &[], &[], &[]).expect("filters"),
    ] {
        let inventory = build_inventory(&snapshot, &sysfs, &filters);
        let opts = SliceOptions::new("node-1");
        let devices = build_devices(&inventory.nics, &opts);
        for d in &devices {
            let problems = validate_device(d);
            assert!(problems.is_empty(), "{}: {problems:?}", d.name);
        }
        let slices = build_slices(&devices, &opts, 1);
        let published: usize = slices.iter().map(|s| s.spec.devices.as_ref().map_or(0, Vec::len)).sum();
        assert_eq!(published, devices.len());
    }
});
