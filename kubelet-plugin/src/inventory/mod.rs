//! NIC inventory: which netdevs of this host become DRA devices, with which facts.
//!
//! Reading is split from deciding. [`netlink`] reads links, addresses and routes into a
//! [`HostSnapshot`]; [`sysfs`] reads per-netdev hardware facts into [`SysfsNetdev`]; [`build_inventory`]
//! is a pure function over both that applies the exclusions of design.md §4 and the admin filters.

pub mod filter;
pub mod netlink;
pub mod sysfs;

use std::collections::{BTreeMap, HashMap};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

pub use filter::{FilterError, Filters};
pub use sysfs::{PciFacts, RdmaFacts, SysfsNetdev, SysfsReader};

/// The main routing table.
pub const RT_TABLE_MAIN: u32 = 254;
/// ARPHRD_LOOPBACK.
const ARPHRD_LOOPBACK: u16 = 772;
/// ARPHRD_INFINIBAND.
pub const ARPHRD_INFINIBAND: u16 = 32;
/// Link kinds that aggregate other links; a link enslaved to one of them is in use by the host.
const AGGREGATING_KINDS: &[&str] = &["bond", "team", "bridge", "openvswitch"];
/// Drivers that bind a function for user-space I/O; such a function is not a netdev we may hand out.
const USERSPACE_DRIVERS: &[&str] = &["vfio-pci", "uio_pci_generic", "igb_uio"];

/// One netdev as rtnetlink reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LinkInfo {
    pub index: u32,
    pub name: String,
    /// `IFLA_INFO_KIND` (veth, bond, macvlan, ...); `None` for plain hardware netdevs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    pub mtu: u32,
    /// `IFLA_MASTER`: the bond/bridge/vrf this link is enslaved to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master: Option<u32>,
    /// `IFLA_LINK`: the parent of a vlan/macvlan/ipvlan child.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<u32>,
    /// Administratively up (`IFF_UP`) and the carrier (`IFLA_CARRIER`, `None` when not reported).
    #[serde(default)]
    pub state: LinkState,
    /// `ARPHRD_*` type.
    #[serde(default)]
    pub link_type: u16,
    #[serde(default)]
    pub loopback: bool,
}

/// One address of a link, IPv4 or IPv6.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AddrInfo {
    pub index: u32,
    pub cidr: IpNet,
}

/// One IPv4 route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteInfo {
    pub dst: Ipv4Net,
    /// Output interfaces (several for a multipath route).
    pub oifs: Vec<u32>,
    #[serde(default = "main_table")]
    pub table: u32,
}

fn main_table() -> u32 {
    RT_TABLE_MAIN
}

/// What rtnetlink says about the host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostSnapshot {
    pub links: Vec<LinkInfo>,
    #[serde(default)]
    pub addresses: Vec<AddrInfo>,
    #[serde(default)]
    pub routes: Vec<RouteInfo>,
}

/// Ethernet or InfiniBand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkType {
    Ethernet,
    Infiniband,
}

impl LinkType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ethernet => "ethernet",
            Self::Infiniband => "infiniband",
        }
    }
}

/// A NIC that may be published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Nic {
    pub if_name: String,
    pub if_index: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    pub mtu: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speed_mbps: Option<u32>,
    pub link_type: LinkType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pci: Option<PciFacts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rdma: Option<RdmaFacts>,
    pub virtual_device: bool,
    /// The host's first IPv4 address on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<Ipv4Net>,
    /// The host's first IPv6 address on it that is not link-local (fe80::/10): a peer's gateway
    /// for this node's IPv6 blocks must be routable from other rails' subnets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<Ipv6Net>,
    /// Netdev name of the PF when this is an SR-IOV VF.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pf_name: Option<String>,
}

impl Nic {
    /// The order of rails: PCI address first (NICs without one last), then interface name.
    pub fn order_key(&self) -> (bool, String, String) {
        match &self.pci {
            Some(pci) => (false, pci.address.clone(), self.if_name.clone()),
            None => (true, String::new(), self.if_name.clone()),
        }
    }
}

/// Why a netdev is not published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "reason", content = "detail")]
pub enum Exclusion {
    Loopback,
    /// Carries the default route.
    Uplink,
    /// A VF or child of the uplink.
    UplinkChild(String),
    /// Enslaved to a bond, team or bridge.
    Enslaved(String),
    /// Bound to vfio/uio.
    UserspaceDriver(String),
    /// Virtual, and `--allow-virtual` is off.
    Virtual,
    /// Left out by an admin filter.
    Filtered(String),
}

/// Whether a link can pass traffic, as rtnetlink reports it. Kept apart from [`Nic`]: it changes
/// with cables and peers, not with the NIC's identity, so the node ledger does not store it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LinkState {
    /// `IFF_UP`.
    pub up: bool,
    /// `IFLA_CARRIER`; `None` when the message has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carrier: Option<bool>,
    /// The state number of the NIC's RDMA port (sysfs), if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rdma_port: Option<u8>,
}

impl Default for LinkState {
    /// An up link of unknown carrier (what a fixture without link state describes).
    fn default() -> Self {
        Self {
            up: true,
            carrier: None,
            rdma_port: None,
        }
    }
}

/// The decision for every netdev of the host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    /// Published NICs, in rail order.
    pub nics: Vec<Nic>,
    /// The link state of each published NIC, by interface name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub links: BTreeMap<String, LinkState>,
    /// Netdevs left out, by name, with the reason.
    pub excluded: BTreeMap<String, Exclusion>,
}

/// Reads the sysfs facts of the snapshot's links and decides which are published.
pub fn collect(snapshot: &HostSnapshot, sysfs: &SysfsReader, filters: &Filters) -> Inventory {
    let facts = sysfs.read_all(snapshot.links.iter().map(|l| l.name.as_str()));
    build_inventory(snapshot, &facts, filters)
}

/// Pure: decides which netdevs are published. `sysfs` maps interface names to their facts; a
/// netdev without an entry is treated as having no hardware parent.
pub fn build_inventory(snapshot: &HostSnapshot, sysfs: &HashMap<String, SysfsNetdev>, filters: &Filters) -> Inventory {
    let by_index: HashMap<u32, &LinkInfo> = snapshot.links.iter().map(|l| (l.index, l)).collect();
    let uplinks: Vec<u32> = snapshot
        .routes
        .iter()
        .filter(|r| r.table == RT_TABLE_MAIN && r.dst.prefix_len() == 0)
        .flat_map(|r| r.oifs.iter().copied())
        .collect();
    let uplink_pcis: Vec<&str> = uplinks
        .iter()
        .filter_map(|i| by_index.get(i))
        .filter_map(|l| sysfs.get(&l.name)?.pci.as_ref().map(|p| p.address.as_str()))
        .collect();
    let empty = SysfsNetdev::default();

    let mut inventory = Inventory::default();
    for link in &snapshot.links {
        let facts = sysfs.get(&link.name).unwrap_or(&empty);
        if let Some(reason) = exclusion(link, facts, &by_index, &uplinks, &uplink_pcis, filters) {
            inventory.excluded.insert(link.name.clone(), reason);
            continue;
        }
        let mine = || snapshot.addresses.iter().filter(|a| a.index == link.index);
        let ipv4 = mine().find_map(|a| match a.cidr {
            IpNet::V4(net) => Some(net),
            IpNet::V6(_) => None,
        });
        let ipv6 = mine().find_map(|a| match a.cidr {
            IpNet::V6(net) if !is_link_local(&net) => Some(net),
            _ => None,
        });
        let link_type = if link.link_type == ARPHRD_INFINIBAND || facts.link_type == Some(ARPHRD_INFINIBAND) {
            LinkType::Infiniband
        } else {
            LinkType::Ethernet
        };
        let state = LinkState {
            rdma_port: facts.rdma_port_state,
            ..link.state
        };
        inventory.links.insert(link.name.clone(), state);
        inventory.nics.push(Nic {
            if_name: link.name.clone(),
            if_index: link.index,
            mac: link.mac.clone(),
            mtu: link.mtu,
            speed_mbps: facts.speed_mbps,
            link_type,
            pci: facts.pci.clone(),
            rdma: facts.rdma.clone(),
            virtual_device: is_virtual(link, facts),
            ipv4,
            ipv6,
            pf_name: facts.pci.as_ref().and_then(|p| p.pf_netdev.clone()),
        });
    }
    inventory.nics.sort_by_key(Nic::order_key);
    inventory
}

/// fe80::/10 (RFC 4291 §2.5.6).
fn is_link_local(net: &Ipv6Net) -> bool {
    net.addr().segments()[0] & 0xffc0 == 0xfe80
}

fn is_virtual(link: &LinkInfo, facts: &SysfsNetdev) -> bool {
    facts.pci.is_none() && (link.kind.is_some() || facts.virtual_device || !facts.has_device)
}

fn exclusion(
    link: &LinkInfo,
    facts: &SysfsNetdev,
    by_index: &HashMap<u32, &LinkInfo>,
    uplinks: &[u32],
    uplink_pcis: &[&str],
    filters: &Filters,
) -> Option<Exclusion> {
    if link.loopback || link.link_type == ARPHRD_LOOPBACK || link.name == "lo" {
        return Some(Exclusion::Loopback);
    }
    if uplinks.contains(&link.index) {
        return Some(Exclusion::Uplink);
    }
    if let Some(parent) = link.parent.filter(|p| uplinks.contains(p)) {
        let name = by_index
            .get(&parent)
            .map_or_else(|| parent.to_string(), |l| l.name.clone());
        return Some(Exclusion::UplinkChild(name));
    }
    if let Some(pf) = facts.pci.as_ref().and_then(|p| p.physfn.as_deref())
        && uplink_pcis.contains(&pf)
    {
        return Some(Exclusion::UplinkChild(pf.to_string()));
    }
    if let Some(master) = link.master.and_then(|m| by_index.get(&m))
        && master.kind.as_deref().is_some_and(|k| AGGREGATING_KINDS.contains(&k))
    {
        return Some(Exclusion::Enslaved(master.name.clone()));
    }
    if facts.bond_slave {
        return Some(Exclusion::Enslaved("bond".into()));
    }
    if let Some(driver) = facts.pci.as_ref().and_then(|p| p.driver.as_deref())
        && USERSPACE_DRIVERS.contains(&driver)
    {
        return Some(Exclusion::UserspaceDriver(driver.to_string()));
    }
    if is_virtual(link, facts) && !filters.allow_virtual {
        return Some(Exclusion::Virtual);
    }
    filters.reject(&link.name, facts.pci.as_ref()).map(Exclusion::Filtered)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(index: u32, name: &str) -> LinkInfo {
        LinkInfo {
            index,
            name: name.into(),
            kind: None,
            mac: Some(format!("02:00:00:00:00:{index:02x}")),
            mtu: 1500,
            master: None,
            parent: None,
            link_type: 1,
            loopback: false,
            state: LinkState::default(),
        }
    }

    fn pci(addr: &str) -> SysfsNetdev {
        SysfsNetdev {
            has_device: true,
            pci: Some(PciFacts {
                address: addr.into(),
                vendor: 0x15b3,
                device: 0x101d,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn exclusions_follow_design() {
        let mut lo = link(1, "lo");
        lo.loopback = true;
        let uplink = link(2, "eno1");
        let mut vlan = link(3, "eno1.100");
        vlan.kind = Some("vlan".into());
        vlan.parent = Some(2);
        let mut bond = link(4, "bond0");
        bond.kind = Some("bond".into());
        let mut slave = link(5, "ens2f0");
        slave.master = Some(4);
        let mut veth = link(6, "veth0");
        veth.kind = Some("veth".into());
        let vfio = link(7, "ens3");
        let uplink_vf = link(8, "eno1v0");
        let rail = link(9, "ens1f0");
        let snapshot = HostSnapshot {
            links: vec![lo, uplink, vlan, bond, slave, veth, vfio, uplink_vf, rail],
            addresses: vec![
                AddrInfo {
                    index: 9,
                    cidr: "fe80::1/64".parse().unwrap(),
                },
                AddrInfo {
                    index: 9,
                    cidr: "fd00:192:168:1::5/64".parse().unwrap(),
                },
                AddrInfo {
                    index: 9,
                    cidr: "192.168.1.5/24".parse().unwrap(),
                },
            ],
            routes: vec![RouteInfo {
                dst: "0.0.0.0/0".parse().unwrap(),
                oifs: vec![2],
                table: RT_TABLE_MAIN,
            }],
        };
        let mut sysfs = HashMap::new();
        sysfs.insert("eno1".to_string(), pci("0000:01:00.0"));
        sysfs.insert("ens2f0".to_string(), pci("0000:02:00.0"));
        let mut vfio_facts = pci("0000:03:00.0");
        vfio_facts.pci.as_mut().unwrap().driver = Some("vfio-pci".into());
        sysfs.insert("ens3".to_string(), vfio_facts);
        let mut vf = pci("0000:01:00.2");
        vf.pci.as_mut().unwrap().physfn = Some("0000:01:00.0".into());
        sysfs.insert("eno1v0".to_string(), vf);
        sysfs.insert("ens1f0".to_string(), pci("0000:3b:00.0"));

        let inv = build_inventory(&snapshot, &sysfs, &Filters::default());
        let names: Vec<_> = inv.nics.iter().map(|n| n.if_name.as_str()).collect();
        assert_eq!(names, ["ens1f0"]);
        assert_eq!(inv.nics[0].ipv4, Some("192.168.1.5/24".parse().unwrap()));
        assert_eq!(
            inv.nics[0].ipv6,
            Some("fd00:192:168:1::5/64".parse().unwrap()),
            "the first IPv6 address that is not link-local"
        );
        assert_eq!(inv.excluded["lo"], Exclusion::Loopback);
        assert_eq!(inv.excluded["eno1"], Exclusion::Uplink);
        assert_eq!(inv.excluded["eno1.100"], Exclusion::UplinkChild("eno1".into()));
        assert_eq!(inv.excluded["ens2f0"], Exclusion::Enslaved("bond0".into()));
        assert_eq!(inv.excluded["veth0"], Exclusion::Virtual);
        assert_eq!(inv.excluded["ens3"], Exclusion::UserspaceDriver("vfio-pci".into()));
        assert_eq!(inv.excluded["eno1v0"], Exclusion::UplinkChild("0000:01:00.0".into()));
        assert_eq!(inv.excluded["bond0"], Exclusion::Virtual);

        let allow = Filters::new(true, &[], &[], &[], &[]).unwrap();
        let inv = build_inventory(&snapshot, &sysfs, &allow);
        let names: Vec<_> = inv.nics.iter().map(|n| n.if_name.as_str()).collect();
        assert_eq!(
            names,
            ["ens1f0", "bond0", "veth0"],
            "PCI NICs first, then virtual by name"
        );
        assert!(inv.nics[2].virtual_device);
    }

    #[test]
    fn rail_order_is_pci_order_not_name_order() {
        let snapshot = HostSnapshot {
            links: vec![link(2, "a"), link(3, "b"), link(4, "c")],
            ..Default::default()
        };
        let sysfs: HashMap<_, _> = [("a", "0000:86:00.0"), ("b", "0000:0c:00.0"), ("c", "0000:3b:00.1")]
            .into_iter()
            .map(|(n, a)| (n.to_string(), pci(a)))
            .collect();
        let inv = build_inventory(&snapshot, &sysfs, &Filters::default());
        let names: Vec<_> = inv.nics.iter().map(|n| n.if_name.as_str()).collect();
        assert_eq!(names, ["b", "c", "a"]);
    }
}
