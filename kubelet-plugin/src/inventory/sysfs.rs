//! Hardware facts of netdevs from sysfs (`<root>/class/net`, `<root>/bus/pci`, `<root>/class/infiniband`).
//!
//! Reading is best effort: a fact that cannot be read is left out, never an error, because sysfs
//! differs between kernels and drivers. The parsing helpers are pure and tested on their own; the
//! fixture trees under `tests/fixtures` exercise the reader end to end.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// PCI facts of the function behind a netdev.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PciFacts {
    /// BDF, e.g. `0000:3b:00.0`.
    pub address: String,
    pub vendor: u16,
    pub device: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numa_node: Option<u32>,
    /// `pci<domain>:<bus>` of the root complex, as `resource.kubernetes.io/pcieRoot` wants it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pcie_root: Option<String>,
    /// SR-IOV PF: VFs the function supports / has enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sriov_total_vfs: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sriov_num_vfs: Option<u32>,
    /// SR-IOV VF: BDF of its PF, its index there and the PF's netdev.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub physfn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vf_index: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pf_netdev: Option<String>,
}

impl PciFacts {
    pub fn is_sriov_pf(&self) -> bool {
        self.sriov_total_vfs.is_some_and(|n| n > 0)
    }

    pub fn is_sriov_vf(&self) -> bool {
        self.physfn.is_some()
    }
}

/// The RDMA device of a netdev.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RdmaFacts {
    /// e.g. `mlx5_0`.
    pub device: String,
    /// `Ethernet` (RoCE) or `InfiniBand`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_layer: Option<String>,
    /// The verbs character device, e.g. `uverbs0` (`/dev/infiniband/uverbs0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uverbs: Option<String>,
}

/// What sysfs says about one netdev.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SysfsNetdev {
    /// `class/net/<if>/device` exists (the netdev has a bus parent).
    pub has_device: bool,
    /// The netdev lives under `devices/virtual`.
    pub virtual_device: bool,
    /// `ARPHRD_*` from `type`.
    pub link_type: Option<u16>,
    pub speed_mbps: Option<u32>,
    /// `bonding_slave/` exists.
    pub bond_slave: bool,
    pub pci: Option<PciFacts>,
    pub rdma: Option<RdmaFacts>,
    /// The state number of its RDMA port (`class/infiniband/<dev>/ports/<n>/state`, e.g.
    /// `4: ACTIVE`); kept out of [`RdmaFacts`], which the node ledger stores, since it changes
    /// with the link.
    pub rdma_port_state: Option<u8>,
}

/// What `read_all` resolves once for all netdevs.
struct Tree {
    /// Canonical `<root>/devices`.
    devices: Option<PathBuf>,
    /// Canonical PCI device dir → RDMA device names.
    rdma_by_pci: HashMap<PathBuf, Vec<String>>,
    /// Netdev name → software RDMA devices on it (rxe, siw: no `device` link, a `parent` file).
    rdma_by_netdev: HashMap<String, Vec<String>>,
}

/// Reads sysfs below a root (`/sys` on a host, a fixture tree in tests).
#[derive(Debug, Clone)]
pub struct SysfsReader {
    root: PathBuf,
}

impl SysfsReader {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Facts for each of the named netdevs.
    pub fn read_all<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> HashMap<String, SysfsNetdev> {
        let (rdma_by_pci, rdma_by_netdev) = self.rdma_devices();
        let tree = Tree {
            devices: fs::canonicalize(self.root.join("devices")).ok(),
            rdma_by_pci,
            rdma_by_netdev,
        };
        names
            .into_iter()
            .map(|name| (name.to_string(), self.read(name, &tree)))
            .collect()
    }

    fn read(&self, if_name: &str, tree: &Tree) -> SysfsNetdev {
        let net = self.root.join("class/net").join(if_name);
        let Ok(canonical) = fs::canonicalize(&net) else {
            return SysfsNetdev::default();
        };
        let device = fs::canonicalize(net.join("device")).ok();
        let mut facts = SysfsNetdev {
            has_device: device.is_some(),
            virtual_device: tree
                .devices
                .as_ref()
                .is_some_and(|d| canonical.starts_with(d.join("virtual"))),
            link_type: read_trimmed(&net.join("type")).and_then(|t| t.parse().ok()),
            speed_mbps: read_trimmed(&net.join("speed")).and_then(|s| parse_speed(&s)),
            bond_slave: net.join("bonding_slave").is_dir(),
            pci: None,
            rdma: None,
            rdma_port_state: None,
        };
        let Some(dev) = device else { return facts };
        let Some(address) = dev
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| is_bdf(n))
            .map(str::to_string)
        else {
            return facts;
        };
        let port = read_trimmed(&net.join("dev_port"))
            .and_then(|p| p.parse::<u32>().ok())
            .unwrap_or(0)
            + 1;
        let rdma = tree.rdma_by_pci.get(&dev).or_else(|| tree.rdma_by_netdev.get(if_name));
        facts.rdma = rdma.and_then(|devs| {
            let device = devs.first()?.clone();
            let port_dir = self
                .root
                .join("class/infiniband")
                .join(&device)
                .join(format!("ports/{port}"));
            let link_layer = read_trimmed(&port_dir.join("link_layer"));
            facts.rdma_port_state = read_trimmed(&port_dir.join("state")).and_then(|s| parse_port_state(&s));
            let uverbs = first_entry(&dev.join("infiniband_verbs")).or_else(|| self.uverbs_of(&device));
            Some(RdmaFacts {
                device,
                link_layer,
                uverbs,
            })
        });
        let physfn = fs::canonicalize(dev.join("physfn")).ok();
        facts.pci = Some(PciFacts {
            vendor: read_trimmed(&dev.join("vendor"))
                .and_then(|v| parse_hex_id(&v))
                .unwrap_or(0),
            device: read_trimmed(&dev.join("device"))
                .and_then(|v| parse_hex_id(&v))
                .unwrap_or(0),
            driver: fs::read_link(dev.join("driver"))
                .ok()
                .and_then(|p| p.file_name().and_then(|n| n.to_str()).map(str::to_string)),
            numa_node: read_trimmed(&dev.join("numa_node")).and_then(|n| parse_numa(&n)),
            pcie_root: self.pcie_root(&address, &dev, tree),
            sriov_total_vfs: read_trimmed(&dev.join("sriov_totalvfs")).and_then(|n| n.parse().ok()),
            sriov_num_vfs: read_trimmed(&dev.join("sriov_numvfs")).and_then(|n| n.parse().ok()),
            vf_index: physfn.as_deref().and_then(|pf| vf_index(pf, &dev)),
            pf_netdev: physfn.as_deref().and_then(first_netdev),
            physfn: physfn
                .as_deref()
                .and_then(|p| p.file_name()?.to_str().map(str::to_string)),
            address,
        });
        facts
    }

    /// The root complex as the upstream `deviceattribute` helper computes it: resolve
    /// `bus/pci/devices/<bdf>` and take the first component below `devices/`.
    fn pcie_root(&self, address: &str, dev: &Path, tree: &Tree) -> Option<String> {
        let resolved =
            fs::canonicalize(self.root.join("bus/pci/devices").join(address)).unwrap_or_else(|_| dev.to_path_buf());
        pcie_root_from_path(tree.devices.as_ref()?, &resolved)
    }

    /// RDMA device names by canonical PCI device dir (from `class/infiniband/*/device`), and, for
    /// software devices that have no `device` link (rxe, siw live under `devices/virtual`), by the
    /// netdev their `parent` file names.
    fn rdma_devices(&self) -> (HashMap<PathBuf, Vec<String>>, HashMap<String, Vec<String>>) {
        let mut by_pci: HashMap<PathBuf, Vec<String>> = HashMap::new();
        let mut by_netdev: HashMap<String, Vec<String>> = HashMap::new();
        let Ok(entries) = fs::read_dir(self.root.join("class/infiniband")) else {
            return (by_pci, by_netdev);
        };
        let mut entries: Vec<_> = entries.filter_map(|e| e.ok()).collect();
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if let Ok(dev) = fs::canonicalize(entry.path().join("device")) {
                by_pci.entry(dev).or_default().push(name);
            } else if let Some(parent) = read_trimmed(&entry.path().join("parent")).filter(|p| !p.is_empty()) {
                by_netdev.entry(parent).or_default().push(name);
            }
        }
        (by_pci, by_netdev)
    }

    /// The verbs character device of an RDMA device whose PCI function has no
    /// `infiniband_verbs/` (software devices): the `class/infiniband_verbs/*` entry whose `ibdev`
    /// names it.
    fn uverbs_of(&self, rdma_device: &str) -> Option<String> {
        let mut names: Vec<String> = fs::read_dir(self.root.join("class/infiniband_verbs"))
            .ok()?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with("uverbs"))
            .collect();
        names.sort();
        names.into_iter().find(|n| {
            read_trimmed(&self.root.join("class/infiniband_verbs").join(n).join("ibdev")).as_deref()
                == Some(rdma_device)
        })
    }
}

fn read_trimmed(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

/// Parses `0x15b3` (or `15b3`).
pub fn parse_hex_id(s: &str) -> Option<u16> {
    u16::from_str_radix(s.trim().trim_start_matches("0x"), 16).ok()
}

/// `numa_node` is -1 when the platform has no NUMA information.
pub fn parse_numa(s: &str) -> Option<u32> {
    s.trim().parse::<i64>().ok().and_then(|n| u32::try_from(n).ok())
}

/// `speed` is -1 (or unreadable) when the link is down or the driver does not say.
pub fn parse_speed(s: &str) -> Option<u32> {
    s.trim()
        .parse::<i64>()
        .ok()
        .and_then(|n| u32::try_from(n).ok())
        .filter(|n| *n > 0)
}

/// A PCI BDF with domain: `dddd:bb:dd.f`, lowercase hex.
pub fn is_bdf(s: &str) -> bool {
    let b = s.as_bytes();
    let hex = |r: std::ops::Range<usize>| b[r].iter().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c));
    b.len() == 12
        && b[4] == b':'
        && b[7] == b':'
        && b[10] == b'.'
        && hex(0..4)
        && hex(5..7)
        && hex(8..10)
        && hex(11..12)
}

/// `<devices>/pci0000:3a/0000:3a:00.0/0000:3b:00.0` → `pci0000:3a`.
pub fn pcie_root_from_path(devices: &Path, device: &Path) -> Option<String> {
    let first = device.strip_prefix(devices).ok()?.components().next()?;
    let first = first.as_os_str().to_str()?;
    first.starts_with("pci").then(|| first.to_string())
}

/// The N of the `virtfnN` link of the PF that points at this VF.
fn vf_index(pf: &Path, vf: &Path) -> Option<u32> {
    fs::read_dir(pf).ok()?.filter_map(|e| e.ok()).find_map(|e| {
        let name = e.file_name().into_string().ok()?;
        let n = name.strip_prefix("virtfn")?.parse().ok()?;
        (fs::canonicalize(e.path()).ok()? == vf).then_some(n)
    })
}

fn first_netdev(pci_dir: &Path) -> Option<String> {
    first_entry(&pci_dir.join("net"))
}

/// The first directory entry by name.
fn first_entry(dir: &Path) -> Option<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    names.sort();
    names.into_iter().next()
}

/// The number before the colon of a port `state` file (`4: ACTIVE`).
fn parse_port_state(text: &str) -> Option<u8> {
    text.split_once(':')?.0.trim().parse().ok()
}

/// The name of an RDMA port state number (`enum ib_port_state`, include/rdma/ib_verbs.h).
pub fn port_state_name(state: u8) -> &'static str {
    match state {
        0 => "NOP",
        1 => "DOWN",
        2 => "INIT",
        3 => "ARMED",
        4 => "ACTIVE",
        5 => "ACTIVE_DEFER",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pure_parsers() {
        assert_eq!(parse_hex_id("0x15b3\n"), Some(0x15b3));
        assert_eq!(parse_hex_id("zz"), None);
        assert_eq!(parse_numa("-1"), None);
        assert_eq!(parse_numa("1"), Some(1));
        assert_eq!(parse_speed("-1"), None);
        assert_eq!(parse_speed("200000"), Some(200_000));
        assert!(is_bdf("0000:3b:00.0"));
        assert!(!is_bdf("0000:3B:00.0"));
        assert!(!is_bdf("3b:00.0"));
        assert!(!is_bdf("pci0000:00"));
        let devices = Path::new("/sys/devices");
        assert_eq!(
            pcie_root_from_path(devices, Path::new("/sys/devices/pci0000:3a/0000:3a:00.0/0000:3b:00.0")).as_deref(),
            Some("pci0000:3a")
        );
        assert_eq!(
            pcie_root_from_path(devices, Path::new("/sys/devices/virtual/net/veth0")),
            None
        );
        assert_eq!(pcie_root_from_path(devices, Path::new("/elsewhere/pci0000:00")), None);
    }

    /// Soft-RoCE as the kernel lays it out (seen in the QEMU guest, e2e/vm): the rxe device lives
    /// under `devices/virtual/infiniband` with no `device` link, names its netdev in `parent`, and
    /// its verbs device is `devices/virtual/infiniband_verbs/uverbsN` with an `ibdev` file.
    #[test]
    fn soft_roce_device_found_through_parent() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let mk = |p: &str| fs::create_dir_all(root.join(p)).unwrap();
        let put = |p: &str, text: &str| fs::write(root.join(p), text).unwrap();
        let pci = "devices/pci0000:20/0000:20:00.0/0000:21:00.0";
        mk(&format!("{pci}/net/enp33s0"));
        mk("bus/pci/drivers/igb");
        put(&format!("{pci}/vendor"), "0x8086\n");
        put(&format!("{pci}/device"), "0x10c9\n");
        symlink("../../../../bus/pci/drivers/igb", root.join(pci).join("driver")).unwrap();
        symlink("../../../0000:21:00.0", root.join(pci).join("net/enp33s0/device")).unwrap();
        mk("class/net");
        symlink(format!("../../{pci}/net/enp33s0"), root.join("class/net/enp33s0")).unwrap();
        for (n, parent) in [("rxe0", "enp33s0"), ("rxe1", "enp34s0")] {
            mk(&format!("devices/virtual/infiniband/{n}/ports/1"));
            put(
                &format!("devices/virtual/infiniband/{n}/parent"),
                &format!("{parent}\n"),
            );
            put(
                &format!("devices/virtual/infiniband/{n}/ports/1/link_layer"),
                "Ethernet\n",
            );
        }
        mk("class/infiniband");
        mk("class/infiniband_verbs");
        for (u, ib) in [("uverbs0", "rxe1"), ("uverbs1", "rxe0")] {
            mk(&format!("devices/virtual/infiniband_verbs/{u}"));
            put(
                &format!("devices/virtual/infiniband_verbs/{u}/ibdev"),
                &format!("{ib}\n"),
            );
            symlink(
                format!("../../devices/virtual/infiniband_verbs/{u}"),
                root.join("class/infiniband_verbs").join(u),
            )
            .unwrap();
        }
        for n in ["rxe0", "rxe1"] {
            symlink(
                format!("../../devices/virtual/infiniband/{n}"),
                root.join("class/infiniband").join(n),
            )
            .unwrap();
        }
        put("devices/virtual/infiniband/rxe0/ports/1/state", "4: ACTIVE\n");
        let facts = SysfsReader::new(root).read_all(["enp33s0"]);
        assert_eq!(facts["enp33s0"].rdma_port_state, Some(4));
        let rdma = facts["enp33s0"].rdma.clone();
        assert_eq!(
            rdma,
            Some(RdmaFacts {
                device: "rxe0".into(),
                link_layer: Some("Ethernet".into()),
                uverbs: Some("uverbs1".into()),
            })
        );
        assert_eq!(facts["enp33s0"].pci.as_ref().map(|p| p.vendor), Some(0x8086));
    }

    #[test]
    fn port_states() {
        assert_eq!(parse_port_state("4: ACTIVE"), Some(4));
        assert_eq!(parse_port_state("1: DOWN"), Some(1));
        assert_eq!(parse_port_state("ACTIVE"), None);
        assert_eq!(parse_port_state(""), None);
        assert_eq!(port_state_name(4), "ACTIVE");
        assert_eq!(port_state_name(1), "DOWN");
        assert_eq!(port_state_name(9), "unknown");
    }

    #[test]
    fn missing_netdev_yields_no_facts() {
        let dir = tempfile::tempdir().unwrap();
        let facts = SysfsReader::new(dir.path()).read_all(["eth0"]);
        assert_eq!(facts["eth0"], SysfsNetdev::default());
    }
}
