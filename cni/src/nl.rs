//! The netlink layer: pure message builders (unit-tested at the message level) and a thin async
//! wrapper around a rtnetlink handle bound to one netns.

use std::net::IpAddr;
use std::os::fd::RawFd;

use futures::TryStreamExt;
use ipnet::IpNet;
use multinic_api::hash::fnv1a64;
use multinic_api::names::format_mac;
use multinic_api::{AttachmentMode, PlannedDevice};
use netlink_packet_route::AddressFamily;
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoIpVlan, InfoKind, InfoMacVlan, IpVlanMode, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
    MacVlanMode,
};
use netlink_packet_route::route::{RouteMessage, RouteScope};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use rtnetlink::{
    AddressMessageBuilder, Handle, IpVersion, LinkDelRequest, LinkIpVlan, LinkMacVlan, LinkUnspec, RouteMessageBuilder,
};

use crate::result::AppliedRoute;

/// Priority of our `from <addr> lookup <table>` rules: before `main` (32766).
pub const RULE_PRIORITY: u32 = 1000;

/// A link as we care about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub alias: Option<String>,
    pub mtu: Option<u32>,
    pub max_mtu: Option<u32>,
    pub up: bool,
    pub kind: Option<String>,
    /// IFLA_LINK: the parent's index (in the netns of IFLA_LINK_NETNSID when present).
    pub parent: Option<u32>,
    pub mac: Option<String>,
    /// IFLA_GROUP (0 is the default group).
    pub group: u32,
}

impl Link {
    pub fn from_message(msg: &LinkMessage) -> Self {
        let mut link = Link {
            index: msg.header.index,
            name: String::new(),
            alias: None,
            mtu: None,
            max_mtu: None,
            up: msg.header.flags.contains(LinkFlags::Up),
            kind: None,
            parent: None,
            mac: None,
            group: 0,
        };
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(n) => link.name = n.clone(),
                LinkAttribute::IfAlias(a) if !a.is_empty() => link.alias = Some(a.clone()),
                LinkAttribute::Mtu(m) => link.mtu = Some(*m),
                LinkAttribute::MaxMtu(m) => link.max_mtu = Some(*m),
                LinkAttribute::Link(p) => link.parent = Some(*p),
                LinkAttribute::Group(g) => link.group = *g,
                LinkAttribute::Address(a) if a.len() == 6 => link.mac = Some(format_mac(a)),
                LinkAttribute::LinkInfo(infos) => {
                    for info in infos {
                        if let LinkInfo::Kind(k) = info {
                            link.kind = Some(k.to_string());
                        }
                    }
                }
                _ => {}
            }
        }
        link
    }
}

/// Host side, before a move: down, and marked with our alias.
pub fn take_message(index: u32, alias: &str) -> LinkMessage {
    LinkUnspec::new_with_index(index).down().alias(alias).build()
}

/// Moves a link into the netns `ns_fd` under `new_name` (rename and move in one request, so the
/// device is never seen in the target netns under its old name).
pub fn move_message(index: u32, ns_fd: RawFd, new_name: &str) -> LinkMessage {
    LinkUnspec::new_with_index(index)
        .setns_by_fd(ns_fd)
        .name(new_name)
        .build()
}

/// The link group of an attachment's children: 31 bits of the attachment key's hash (below 2^31,
/// so `ip link show group N`, which parses a signed int, can name it), never 0 (the default group
/// every other link is in, and one the kernel refuses to delete by).
pub fn link_group(attachment: &str) -> u32 {
    match fnv1a64(&[attachment]) as u32 & 0x7fff_ffff {
        0 => 1,
        g => g,
    }
}

/// Creates a child of `parent` (an index in the socket's netns) directly in netns `ns_fd`, in link
/// group `group` (so DEL removes all children of the attachment with one [`group_del_message`]).
/// `None` for modes that move the device instead.
pub fn child_message(
    mode: AttachmentMode,
    name: &str,
    parent: u32,
    ns_fd: RawFd,
    mtu: Option<u32>,
    group: u32,
) -> Option<LinkMessage> {
    let mut msg = match mode {
        AttachmentMode::Macvlan => LinkMacVlan::new(name, parent, MacVlanMode::Bridge)
            .setns_by_fd(ns_fd)
            .build(),
        AttachmentMode::IpvlanL2 => LinkIpVlan::new(name, parent, IpVlanMode::L2).setns_by_fd(ns_fd).build(),
        AttachmentMode::IpvlanL3 => LinkIpVlan::new(name, parent, IpVlanMode::L3).setns_by_fd(ns_fd).build(),
        AttachmentMode::HostDevice | AttachmentMode::SriovVf => return None,
    };
    if let Some(mtu) = mtu {
        msg.attributes.push(LinkAttribute::Mtu(mtu));
    }
    // rtnl_create_link (net/core/rtnetlink.c) applies IFLA_GROUP before the device registers, so a
    // child is never seen outside its group.
    msg.attributes.push(LinkAttribute::Group(group));
    Some(msg)
}

/// RTM_DELLINK for every link of `group` in the socket's netns, as one kernel operation.
///
/// From net/core/rtnetlink.c: `rtnl_dellink` with `ifi_index` 0 and no IFLA_IFNAME/IFLA_ALT_IFNAME
/// but IFLA_GROUP calls `rtnl_group_dellink`, which refuses group 0 (`EPERM`), returns `ENODEV`
/// when no link is in the group and `EOPNOTSUPP` (deleting nothing) when one of them cannot be
/// deleted (no `rtnl_link_ops->dellink`, e.g. a physical NIC); otherwise it queues every member with
/// its `dellink` and unregisters them all in one `unregister_netdevice_many`, i.e. one RCU barrier
/// for the whole group instead of one per link.
pub fn group_del_message(group: u32) -> LinkMessage {
    let mut msg = LinkMessage::default();
    msg.header.index = 0;
    msg.attributes.push(LinkAttribute::Group(group));
    msg
}

/// The attributes of a child message that tests and logs look at: (kind, ipvlan mode, macvlan
/// mode, parent index).
pub fn describe_child(msg: &LinkMessage) -> (Option<InfoKind>, Option<IpVlanMode>, Option<MacVlanMode>, Option<u32>) {
    let mut out = (None, None, None, None);
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::Link(p) => out.3 = Some(*p),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    match info {
                        LinkInfo::Kind(k) => out.0 = Some(k.clone()),
                        LinkInfo::Data(InfoData::IpVlan(d)) => {
                            for i in d {
                                if let InfoIpVlan::Mode(m) = i {
                                    out.1 = Some(*m);
                                }
                            }
                        }
                        LinkInfo::Data(InfoData::MacVlan(d)) => {
                            for i in d {
                                if let InfoMacVlan::Mode(m) = i {
                                    out.2 = Some(*m);
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    out
}

fn same_family(a: IpAddr, b: IpAddr) -> bool {
    a.is_ipv4() == b.is_ipv4()
}

/// The routes a device gets, in install order.
///
/// * Without a table: the planned routes in `main`. A route without a gateway uses the device's
///   gateway (same family), else it is on-link.
/// * With a table: in that table, the connected subnet of each address, the planned routes, and a
///   default route via the device's gateway when there is one. `main` keeps only the kernel's
///   connected routes; a rule per address (see [`device_rules`]) sends traffic from the address
///   to the table, so it leaves via this interface.
pub fn device_routes(dev: &PlannedDevice) -> Vec<AppliedRoute> {
    let gw_for = |dst: &IpNet, gw: Option<IpAddr>| gw.or(dev.gateway.filter(|g| same_family(*g, dst.addr())));
    let mut routes: Vec<AppliedRoute> = Vec::new();
    let push = |routes: &mut Vec<AppliedRoute>, r: AppliedRoute| {
        if !routes.contains(&r) {
            routes.push(r);
        }
    };
    // With a table: the connected subnet of each address first.
    for ip in dev.table.iter().flat_map(|_| &dev.ips) {
        push(
            &mut routes,
            AppliedRoute {
                dst: ip.trunc(),
                gw: None,
                table: dev.table,
            },
        );
    }
    for r in &dev.routes {
        push(
            &mut routes,
            AppliedRoute {
                dst: r.dst.trunc(),
                gw: gw_for(&r.dst, r.gateway),
                table: dev.table,
            },
        );
    }
    if let (Some(table), Some(gw)) = (dev.table, dev.gateway) {
        let dst = multinic_api::plan::default_route(gw);
        if !routes.iter().any(|r| r.dst == dst) {
            push(
                &mut routes,
                AppliedRoute {
                    dst,
                    gw: Some(gw),
                    table: Some(table),
                },
            );
        }
    }
    routes
}

/// The source of a connected route in a policy table: the device's address in that subnet.
fn pref_source(dev: &PlannedDevice, route: &AppliedRoute) -> Option<IpAddr> {
    // IPv6 addresses are tentative until DAD completes and cannot be a preferred source yet.
    if route.gw.is_some() || route.table.is_none() || !route.dst.addr().is_ipv4() {
        return None;
    }
    dev.ips.iter().find(|ip| ip.trunc() == route.dst).map(|ip| ip.addr())
}

/// The RTM_NEWROUTE message for one route via `ifindex`.
pub fn route_message(dev: &PlannedDevice, route: &AppliedRoute, ifindex: u32) -> Result<RouteMessage, String> {
    let mut b = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(route.dst.addr(), route.dst.prefix_len())
        .map_err(|e| e.to_string())?
        .output_interface(ifindex);
    if let Some(gw) = route.gw {
        b = b.gateway(gw).map_err(|e| e.to_string())?;
    } else {
        b = b.scope(RouteScope::Link);
    }
    if let Some(src) = pref_source(dev, route) {
        b = b.pref_source(src).map_err(|e| e.to_string())?;
    }
    if let Some(table) = route.table {
        b = b.table_id(table);
    }
    Ok(b.build())
}

/// The policy rules of a device: `from <addr>/<32|128> lookup <table>` per address.
pub fn device_rules(dev: &PlannedDevice) -> Vec<(IpAddr, u32)> {
    match dev.table {
        Some(table) => dev.ips.iter().map(|ip| (ip.addr(), table)).collect(),
        None => Vec::new(),
    }
}

/// The RTM_NEWADDR message for `ip` on link `index`. An IPv6 address carries `IFA_F_NODAD`
/// (0x02, include/uapi/linux/if_addr.h): the pod's address comes from this node's own block, so
/// Duplicate Address Detection has nothing to find, and without the flag the address stays
/// tentative (unusable as a source, `ipv6_dev_get_saddr` in net/ipv6/addrconf.c) for the ~1 s DAD
/// takes after the link is up. `inet6_rtm_newaddr` (net/ipv6/addrconf.c) reads the flags from
/// IFA_FLAGS when present, else from `ifa_flags`: both are set.
pub fn address_message(index: u32, ip: IpNet) -> AddressMessage {
    match ip {
        IpNet::V4(net) => AddressMessageBuilder::<std::net::Ipv4Addr>::new()
            .index(index)
            .address(net.addr(), net.prefix_len())
            .build(),
        IpNet::V6(net) => {
            let mut msg = AddressMessageBuilder::<std::net::Ipv6Addr>::new()
                .index(index)
                .address(net.addr(), net.prefix_len())
                .build();
            msg.header.flags |= AddressHeaderFlags::Nodad;
            msg.attributes.push(AddressAttribute::Flags(AddressFlags::Nodad));
            msg
        }
    }
}

/// The errno of a netlink error, if it is one.
pub fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| c.get().abs()),
        _ => None,
    }
}

/// A readable cause: "File exists (os error 17)".
pub fn describe(e: &rtnetlink::Error) -> String {
    match e {
        rtnetlink::Error::NetlinkError(m) if m.code.is_some() => m.to_io().to_string(),
        other => other.to_string(),
    }
}

const EEXIST: i32 = nix::libc::EEXIST;
const ENODEV: i32 = nix::libc::ENODEV;
const ENOENT: i32 = nix::libc::ENOENT;

/// A rtnetlink handle in one netns.
#[derive(Clone)]
pub struct Nl {
    handle: Handle,
}

impl Nl {
    pub fn new(handle: Handle) -> Self {
        Self { handle }
    }

    pub async fn links(&self) -> Result<Vec<Link>, rtnetlink::Error> {
        let msgs: Vec<LinkMessage> = self.handle.link().get().execute().try_collect().await?;
        Ok(msgs.iter().map(Link::from_message).collect())
    }

    /// The link named `name`, or `None`.
    pub async fn link(&self, name: &str) -> Result<Option<Link>, rtnetlink::Error> {
        let mut stream = self.handle.link().get().match_name(name.to_string()).execute();
        match stream.try_next().await {
            Ok(Some(msg)) => Ok(Some(Link::from_message(&msg))),
            Ok(None) => Ok(None),
            Err(e) if matches!(errno(&e), Some(ENODEV)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn link_by_index(&self, index: u32) -> Result<Option<Link>, rtnetlink::Error> {
        let mut stream = self.handle.link().get().match_index(index).execute();
        match stream.try_next().await {
            Ok(Some(msg)) => Ok(Some(Link::from_message(&msg))),
            Ok(None) => Ok(None),
            Err(e) if matches!(errno(&e), Some(ENODEV)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn set(&self, msg: LinkMessage) -> Result<(), rtnetlink::Error> {
        self.handle.link().set(msg).execute().await
    }

    pub async fn add(&self, msg: LinkMessage) -> Result<(), rtnetlink::Error> {
        self.handle.link().add(msg).execute().await
    }

    /// Deletes a link; a link that is already gone is success.
    pub async fn del(&self, index: u32) -> Result<(), rtnetlink::Error> {
        match self.handle.link().del(index).execute().await {
            Err(e) if matches!(errno(&e), Some(ENODEV)) => Ok(()),
            other => other,
        }
    }

    /// Deletes every link of a group in one request ([`group_del_message`]); an empty group is
    /// success.
    pub async fn del_group(&self, group: u32) -> Result<(), rtnetlink::Error> {
        let req = LinkDelRequest::new_with_message(self.handle.clone(), group_del_message(group));
        match req.execute().await {
            Err(e) if matches!(errno(&e), Some(ENODEV)) => Ok(()),
            other => other,
        }
    }

    pub async fn set_up(&self, index: u32, up: bool) -> Result<(), rtnetlink::Error> {
        let b = LinkUnspec::new_with_index(index);
        self.set(if up { b.up() } else { b.down() }.build()).await
    }

    pub async fn set_mtu(&self, index: u32, mtu: u32) -> Result<(), rtnetlink::Error> {
        self.set(LinkUnspec::new_with_index(index).mtu(mtu).build()).await
    }

    pub async fn set_alias(&self, index: u32, alias: &str) -> Result<(), rtnetlink::Error> {
        self.set(LinkUnspec::new_with_index(index).alias(alias).build()).await
    }

    /// Adds an address ([`address_message`]); an existing one is success.
    pub async fn add_address(&self, index: u32, ip: IpNet) -> Result<(), rtnetlink::Error> {
        let mut req = self.handle.address().add(index, ip.addr(), ip.prefix_len());
        *req.message_mut() = address_message(index, ip);
        match req.execute().await {
            Err(e) if matches!(errno(&e), Some(EEXIST)) => Ok(()),
            other => other,
        }
    }

    pub async fn addresses(&self, index: u32) -> Result<Vec<IpNet>, rtnetlink::Error> {
        let msgs: Vec<_> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await?;
        Ok(address_nets(&msgs)
            .into_iter()
            .filter(|(i, _)| *i == index)
            .map(|(_, net)| net)
            .collect())
    }

    /// The addresses of the links in `indexes`, from one dump of the netns.
    pub async fn addresses_of(&self, indexes: &[u32]) -> Result<Vec<IpNet>, rtnetlink::Error> {
        let msgs: Vec<_> = self.handle.address().get().execute().try_collect().await?;
        Ok(address_nets(&msgs)
            .into_iter()
            .filter(|(i, _)| indexes.contains(i))
            .map(|(_, net)| net)
            .collect())
    }

    /// Adds or replaces a route (idempotent).
    pub async fn add_route(&self, msg: RouteMessage) -> Result<(), rtnetlink::Error> {
        self.handle.route().add(msg).replace().execute().await
    }

    pub async fn routes(&self, family: IpVersion, table: u32) -> Result<Vec<RouteMessage>, rtnetlink::Error> {
        let mut b = match family {
            IpVersion::V4 => RouteMessageBuilder::<std::net::Ipv4Addr>::new().build(),
            IpVersion::V6 => RouteMessageBuilder::<std::net::Ipv6Addr>::new().build(),
        };
        b.header.table = 0;
        let msgs: Vec<RouteMessage> = self.handle.route().get(b).execute().try_collect().await?;
        Ok(msgs.into_iter().filter(|m| route_table(m) == table).collect())
    }

    /// Adds `from <src> lookup <table>`; an existing rule is success.
    pub async fn add_rule(&self, src: IpAddr, table: u32) -> Result<(), rtnetlink::Error> {
        let req = self
            .handle
            .rule()
            .add()
            .table_id(table)
            .priority(RULE_PRIORITY)
            .action(RuleAction::ToTable);
        let res = match src {
            IpAddr::V4(a) => req.v4().source_prefix(a, 32).execute().await,
            IpAddr::V6(a) => req.v6().source_prefix(a, 128).execute().await,
        };
        match res {
            Err(e) if matches!(errno(&e), Some(EEXIST)) => Ok(()),
            other => other,
        }
    }

    pub async fn rules(&self) -> Result<Vec<RuleMessage>, rtnetlink::Error> {
        let mut v4: Vec<RuleMessage> = self.handle.rule().get(IpVersion::V4).execute().try_collect().await?;
        let v6: Vec<RuleMessage> = self.handle.rule().get(IpVersion::V6).execute().try_collect().await?;
        v4.extend(v6);
        Ok(v4)
    }

    /// Deletes our rules whose source is exactly one of `addrs`; missing rules are success.
    pub async fn del_rules_from(&self, addrs: &[IpAddr]) -> Result<(), rtnetlink::Error> {
        for rule in self.rules().await? {
            if let Some((src, _)) = our_rule(&rule)
                && addrs.contains(&src)
            {
                match self.handle.rule().del(rule).execute().await {
                    Err(e) if matches!(errno(&e), Some(ENOENT)) => {}
                    other => other?,
                }
            }
        }
        Ok(())
    }
}

/// (link index, address) of each address message.
fn address_nets(msgs: &[netlink_packet_route::address::AddressMessage]) -> Vec<(u32, IpNet)> {
    let mut out = Vec::new();
    for m in msgs {
        for a in &m.attributes {
            if let AddressAttribute::Address(ip) = a
                && let Ok(net) = IpNet::new(*ip, m.header.prefix_len)
            {
                out.push((m.header.index, net));
            }
        }
    }
    out
}

/// The table of a route message (the attribute wins over the 8-bit header field).
pub fn route_table(m: &RouteMessage) -> u32 {
    m.attributes
        .iter()
        .find_map(|a| match a {
            netlink_packet_route::route::RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(m.header.table))
}

/// `(source address, table)` when the rule is one of ours: priority [`RULE_PRIORITY`], a host
/// source prefix, lookup a table.
pub fn our_rule(rule: &RuleMessage) -> Option<(IpAddr, u32)> {
    let full = match rule.header.family {
        AddressFamily::Inet => 32,
        AddressFamily::Inet6 => 128,
        _ => return None,
    };
    if rule.header.src_len != full {
        return None;
    }
    let mut src = None;
    let mut prio = None;
    let mut table = u32::from(rule.header.table);
    for a in &rule.attributes {
        match a {
            RuleAttribute::Source(ip) => src = Some(*ip),
            RuleAttribute::Priority(p) => prio = Some(*p),
            RuleAttribute::Table(t) => table = *t,
            _ => {}
        }
    }
    (prio == Some(RULE_PRIORITY)).then_some(())?;
    Some((src?, table))
}

#[cfg(test)]
mod tests {
    use multinic_api::plan::PlannedRoute;
    use netlink_packet_route::route::RouteAttribute;

    use super::*;

    fn dev(table: Option<u32>) -> PlannedDevice {
        PlannedDevice {
            request: "nics".into(),
            pool: "node-a".into(),
            device: "pci-0000-3b-00-0".into(),
            host_if_name: "ens1f0".into(),
            rail_index: Some(0),
            pod_if_name: "net1".into(),
            mode: AttachmentMode::HostDevice,
            mtu: Some(9000),
            mac: None,
            ips: vec!["10.10.0.5/24".parse().unwrap()],
            gateway: Some("10.10.0.1".parse().unwrap()),
            routes: vec![
                PlannedRoute {
                    dst: "10.20.0.0/16".parse().unwrap(),
                    gateway: None,
                },
                PlannedRoute {
                    dst: "10.30.0.0/16".parse().unwrap(),
                    gateway: Some("10.10.0.254".parse().unwrap()),
                },
            ],
            table,
            rdma_device: None,
        }
    }

    #[test]
    fn ipvlan_messages_carry_kind_mode_and_parent() {
        for (mode, want) in [
            (AttachmentMode::IpvlanL2, IpVlanMode::L2),
            (AttachmentMode::IpvlanL3, IpVlanMode::L3),
        ] {
            let msg = child_message(mode, "net1", 7, 42, Some(1500), 9).unwrap();
            let (kind, ipvlan, macvlan, parent) = describe_child(&msg);
            assert_eq!(kind, Some(InfoKind::IpVlan));
            assert_eq!(ipvlan, Some(want));
            assert_eq!(macvlan, None);
            assert_eq!(parent, Some(7));
            assert!(msg.attributes.contains(&LinkAttribute::IfName("net1".into())));
            assert!(msg.attributes.contains(&LinkAttribute::NetNsFd(42)));
            assert!(msg.attributes.contains(&LinkAttribute::Mtu(1500)));
        }
        // On the wire: IFLA_INFO_KIND "ipvlan" and IFLA_IPVLAN_MODE l2=0, l3=1.
        assert_eq!(InfoKind::IpVlan.to_string(), "ipvlan");
        assert_eq!(u16::from(IpVlanMode::L2), 0);
        assert_eq!(u16::from(IpVlanMode::L3), 1);
        let bytes = {
            use netlink_packet_core::Emitable;
            let msg = child_message(AttachmentMode::IpvlanL3, "net1", 7, 42, None, 9).unwrap();
            let mut buf = vec![0u8; msg.buffer_len()];
            msg.emit(&mut buf);
            buf
        };
        assert!(bytes.windows(7).any(|w| w == b"ipvlan\0"), "IFLA_INFO_KIND on the wire");
        // IFLA_LINK (5) = 7: nla header len 8, type 5, then u32 7.
        assert!(
            bytes.windows(8).any(|w| w == [8, 0, 5, 0, 7, 0, 0, 0]),
            "IFLA_LINK on the wire"
        );
        // IFLA_IPVLAN_MODE (1) = 1 (l3): len 6, type 1, u16 1.
        assert!(
            bytes.windows(6).any(|w| w == [6, 0, 1, 0, 1, 0]),
            "IFLA_IPVLAN_MODE on the wire"
        );
    }

    #[test]
    fn macvlan_is_bridge_mode_and_moved_modes_have_no_child() {
        let msg = child_message(AttachmentMode::Macvlan, "net2", 9, 3, None, 77).unwrap();
        let (kind, _, macvlan, parent) = describe_child(&msg);
        assert_eq!(kind, Some(InfoKind::MacVlan));
        assert_eq!(macvlan, Some(MacVlanMode::Bridge));
        assert_eq!(parent, Some(9));
        assert!(msg.attributes.contains(&LinkAttribute::Group(77)));
        assert!(child_message(AttachmentMode::HostDevice, "x", 1, 1, None, 77).is_none());
        assert!(child_message(AttachmentMode::SriovVf, "x", 1, 1, None, 77).is_none());
    }

    #[test]
    fn group_delete_is_one_request_by_group_only() {
        use netlink_packet_core::Emitable;
        let msg = group_del_message(0x1234_5678);
        assert_eq!(msg.header.index, 0, "no ifindex: the kernel then looks at IFLA_GROUP");
        assert_eq!(msg.attributes, vec![LinkAttribute::Group(0x1234_5678)]);
        let mut buf = vec![0u8; msg.buffer_len()];
        msg.emit(&mut buf);
        // ifinfomsg (16 bytes), then IFLA_GROUP (27): len 8, type 27, u32.
        assert_eq!(&buf[16..], [8, 0, 27, 0, 0x78, 0x56, 0x34, 0x12]);
        // Stable, per attachment, never the default group 0.
        let a = crate::alias::attachment_key("net", "ctr-1", "eth0");
        let b = crate::alias::attachment_key("net", "ctr-2", "eth0");
        assert_eq!(link_group(&a), link_group(&a));
        assert_ne!(link_group(&a), link_group(&b));
        assert!((1..=0x7fff_ffff).contains(&link_group(&a)));
    }

    #[test]
    fn move_and_take_messages() {
        let m = move_message(4, 11, "net3");
        assert_eq!(m.header.index, 4);
        assert!(m.attributes.contains(&LinkAttribute::NetNsFd(11)));
        assert!(m.attributes.contains(&LinkAttribute::IfName("net3".into())));
        let t = take_message(4, "multinic:x");
        assert!(t.header.change_mask.contains(LinkFlags::Up));
        assert!(!t.header.flags.contains(LinkFlags::Up));
        assert!(t.attributes.contains(&LinkAttribute::IfAlias("multinic:x".into())));
    }

    #[test]
    fn ipv6_addresses_skip_dad_and_ipv4_ones_carry_no_flags() {
        use netlink_packet_core::Emitable;
        let msg = address_message(7, "fd00:10::5/74".parse().unwrap());
        assert_eq!(msg.header.family, AddressFamily::Inet6);
        assert_eq!((msg.header.index, msg.header.prefix_len), (7, 74));
        assert!(msg.header.flags.contains(AddressHeaderFlags::Nodad));
        assert!(msg.attributes.contains(&AddressAttribute::Flags(AddressFlags::Nodad)));
        let mut buf = vec![0u8; msg.buffer_len()];
        msg.emit(&mut buf);
        // ifaddrmsg: family AF_INET6 (10), prefix 74, flags IFA_F_NODAD (0x02); then IFA_FLAGS
        // (8): len 8, type 8, u32 0x02.
        assert_eq!(&buf[..3], [10, 74, 0x02]);
        assert!(
            buf.windows(8).any(|w| w == [8, 0, 8, 0, 2, 0, 0, 0]),
            "IFA_FLAGS on the wire"
        );
        let v4 = address_message(7, "10.10.0.5/26".parse().unwrap());
        assert_eq!(v4.header.family, AddressFamily::Inet);
        assert!(v4.header.flags.is_empty());
        assert!(!v4.attributes.iter().any(|a| matches!(a, AddressAttribute::Flags(_))));
    }

    #[test]
    fn dual_stack_routes_and_rules_per_family() {
        let mut d = dev(Some(101));
        d.ips = vec!["10.10.0.5/24".parse().unwrap(), "fd00:10::5/74".parse().unwrap()];
        d.routes = vec![
            PlannedRoute {
                dst: "10.10.0.0/16".parse().unwrap(),
                gateway: None,
            },
            PlannedRoute {
                dst: "fd00:10::/64".parse().unwrap(),
                gateway: None,
            },
        ];
        let r = device_routes(&d);
        let got: Vec<(String, Option<String>)> = r
            .iter()
            .map(|r| (r.dst.to_string(), r.gw.map(|g| g.to_string())))
            .collect();
        assert_eq!(
            got,
            [
                ("10.10.0.0/24".to_string(), None),
                ("fd00:10::/74".to_string(), None),
                ("10.10.0.0/16".to_string(), Some("10.10.0.1".to_string())),
                ("fd00:10::/64".to_string(), None),
                ("0.0.0.0/0".to_string(), Some("10.10.0.1".to_string())),
            ],
            "the IPv4 gateway is never used for an IPv6 route"
        );
        assert_eq!(
            device_rules(&d),
            vec![
                ("10.10.0.5".parse().unwrap(), 101),
                ("fd00:10::5".parse().unwrap(), 101)
            ]
        );
        let msg = route_message(&d, &r[3], 5).unwrap();
        assert_eq!(msg.header.address_family, AddressFamily::Inet6);
        assert_eq!(route_table(&msg), 101);
    }

    #[test]
    fn routes_without_table_go_to_main() {
        let r = device_routes(&dev(None));
        assert_eq!(r.len(), 2);
        assert!(r.iter().all(|r| r.table.is_none()));
        assert_eq!(r[0].gw, Some("10.10.0.1".parse().unwrap()), "device gateway fills in");
        assert_eq!(r[1].gw, Some("10.10.0.254".parse().unwrap()));
        let mut on_link = dev(None);
        on_link.gateway = None;
        assert_eq!(device_routes(&on_link)[0].gw, None);
        assert!(device_rules(&dev(None)).is_empty());
    }

    #[test]
    fn policy_routing_table_and_rules() {
        let d = dev(Some(101));
        let r = device_routes(&d);
        let dsts: Vec<String> = r.iter().map(|r| r.dst.to_string()).collect();
        assert_eq!(dsts, ["10.10.0.0/24", "10.20.0.0/16", "10.30.0.0/16", "0.0.0.0/0"]);
        assert!(r.iter().all(|r| r.table == Some(101)));
        assert_eq!(device_rules(&d), vec![("10.10.0.5".parse().unwrap(), 101)]);
        let msg = route_message(&d, &r[0], 5).unwrap();
        assert_eq!(msg.header.scope, RouteScope::Link);
        assert_eq!(route_table(&msg), 101);
        assert!(msg.attributes.contains(&RouteAttribute::Oif(5)));
        assert!(
            msg.attributes
                .iter()
                .any(|a| matches!(a, RouteAttribute::PrefSource(_))),
            "connected route in the table has the interface's source"
        );
        let msg = route_message(&d, &r[3], 5).unwrap();
        assert_eq!(msg.header.scope, RouteScope::Universe);
        assert_eq!(msg.header.destination_prefix_length, 0);
    }
}
