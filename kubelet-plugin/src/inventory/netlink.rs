//! rtnetlink side of the inventory: a [`HostSnapshot`] of links, IPv4 and IPv6 addresses and IPv4
//! routes, and a stream of change notifications that triggers a republish.

use std::net::IpAddr;

use futures::{Stream, StreamExt, TryStreamExt};
use ipnet::{IpNet, Ipv4Net};
use multinic_api::names::format_mac;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkInfo as NlLinkInfo, LinkMessage};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
use rtnetlink::{Handle, MulticastGroup};

use super::{AddrInfo, HostSnapshot, LinkInfo, RouteInfo};

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("cannot open an rtnetlink socket: {0}; the plugin needs CAP_NET_ADMIN and the host network namespace")]
    Socket(#[from] std::io::Error),
    #[error("rtnetlink {what} dump failed: {source}")]
    Dump {
        what: &'static str,
        source: rtnetlink::Error,
    },
}

/// Opens an rtnetlink connection; its driver task runs on the current tokio runtime.
pub fn connect() -> Result<Handle, NetlinkError> {
    let (connection, handle, _) = rtnetlink::new_connection()?;
    tokio::spawn(connection);
    Ok(handle)
}

/// Reads links, IPv4 addresses and IPv4 routes of the socket's network namespace.
pub async fn read_snapshot(handle: &Handle) -> Result<HostSnapshot, NetlinkError> {
    let links: Vec<LinkMessage> = handle
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(|source| NetlinkError::Dump { what: "link", source })?;
    let addrs: Vec<AddressMessage> =
        handle
            .address()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|source| NetlinkError::Dump {
                what: "address",
                source,
            })?;
    let mut query = RouteMessage::default();
    query.header.address_family = AddressFamily::Inet;
    let routes: Vec<RouteMessage> = handle
        .route()
        .get(query)
        .execute()
        .try_collect()
        .await
        .map_err(|source| NetlinkError::Dump { what: "route", source })?;
    Ok(HostSnapshot {
        links: links.iter().filter_map(link_from_message).collect(),
        addresses: addrs.iter().filter_map(addr_from_message).collect(),
        routes: routes.iter().filter_map(route_from_message).collect(),
    })
}

/// A stream that yields once per link, IPv4 address or IPv4 route notification.
pub fn subscribe() -> Result<impl Stream<Item = ()> + Send + Unpin, NetlinkError> {
    let groups = [
        MulticastGroup::Link,
        MulticastGroup::Ipv4Ifaddr,
        MulticastGroup::Ipv6Ifaddr,
        MulticastGroup::Ipv4Route,
    ];
    let (connection, _handle, messages) = rtnetlink::new_multicast_connection(&groups)?;
    tokio::spawn(connection);
    Ok(messages.map(|_| ()))
}

/// Pure: the parts of a link message the inventory needs.
pub fn link_from_message(msg: &LinkMessage) -> Option<LinkInfo> {
    let mut info = LinkInfo {
        index: msg.header.index,
        name: String::new(),
        kind: None,
        mac: None,
        mtu: 0,
        master: None,
        parent: None,
        link_type: u16::from(msg.header.link_layer_type),
        loopback: msg.header.flags.contains(LinkFlags::Loopback),
        state: super::LinkState {
            up: msg.header.flags.contains(LinkFlags::Up),
            carrier: None,
            rdma_port: None,
        },
    };
    // With IFLA_LINK_NETNSID, IFLA_LINK is an ifindex in *another* namespace (a veth whose peer
    // lives elsewhere): it names no link here, even when a local link has that index.
    let parent_elsewhere = msg
        .attributes
        .iter()
        .any(|a| matches!(a, LinkAttribute::LinkNetNsId(_)));
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(name) => info.name = name.clone(),
            LinkAttribute::Address(mac) if !mac.is_empty() => info.mac = Some(format_mac(mac)),
            LinkAttribute::Mtu(mtu) => info.mtu = *mtu,
            LinkAttribute::Carrier(c) => info.state.carrier = Some(*c != 0),
            LinkAttribute::Controller(m) => info.master = Some(*m),
            LinkAttribute::Link(p) if *p != 0 && *p != msg.header.index && !parent_elsewhere => info.parent = Some(*p),
            LinkAttribute::LinkInfo(infos) => {
                info.kind = infos.iter().find_map(|i| match i {
                    NlLinkInfo::Kind(kind) => Some(kind.to_string()),
                    _ => None,
                });
            }
            _ => {}
        }
    }
    (!info.name.is_empty()).then_some(info)
}

/// IFA_LOCAL is the local address of an IPv4 point-to-point link (IFA_ADDRESS its peer); an IPv6
/// address comes in IFA_ADDRESS (with IFA_LOCAL only on point-to-point links, then the local one).
fn addr_from_message(msg: &AddressMessage) -> Option<AddrInfo> {
    let local = msg.attributes.iter().find_map(|attr| match attr {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    });
    let address = msg.attributes.iter().find_map(|attr| match attr {
        AddressAttribute::Address(ip) => Some(*ip),
        _ => None,
    });
    let ip: IpAddr = local.or(address)?;
    Some(AddrInfo {
        index: msg.header.index,
        cidr: IpNet::new(ip, msg.header.prefix_len).ok()?,
    })
}

fn route_from_message(msg: &RouteMessage) -> Option<RouteInfo> {
    if msg.header.address_family != AddressFamily::Inet {
        return None;
    }
    let mut dst = std::net::Ipv4Addr::UNSPECIFIED;
    let mut table = u32::from(msg.header.table);
    let mut oifs = Vec::new();
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = *ip,
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Oif(i) => oifs.push(*i),
            RouteAttribute::MultiPath(hops) => oifs.extend(hops.iter().map(|h| h.interface_index)),
            _ => {}
        }
    }
    Some(RouteInfo {
        dst: Ipv4Net::new(dst, msg.header.destination_prefix_length).ok()?,
        oifs,
        table,
    })
}

#[cfg(test)]
mod tests {
    use netlink_packet_route::link::{InfoKind, LinkLayerType};

    use super::*;

    #[test]
    fn link_message_is_parsed() {
        let mut msg = LinkMessage::default();
        msg.header.index = 7;
        msg.header.link_layer_type = LinkLayerType::Ether;
        msg.attributes = vec![
            LinkAttribute::IfName("veth-a".into()),
            LinkAttribute::Address(vec![2, 0, 0, 0, 0, 0xab]),
            LinkAttribute::Mtu(9000),
            LinkAttribute::Controller(3),
            LinkAttribute::Link(5),
            LinkAttribute::LinkInfo(vec![NlLinkInfo::Kind(InfoKind::Veth)]),
        ];
        let info = link_from_message(&msg).unwrap();
        assert_eq!(info.name, "veth-a");
        assert_eq!(info.mac.as_deref(), Some("02:00:00:00:00:ab"));
        assert_eq!((info.mtu, info.master, info.parent), (9000, Some(3), Some(5)));
        assert_eq!(info.kind.as_deref(), Some("veth"));
        assert_eq!(info.link_type, 1);
        msg.attributes.retain(|a| !matches!(a, LinkAttribute::IfName(_)));
        assert!(link_from_message(&msg).is_none(), "a link without a name is skipped");
    }

    #[test]
    fn a_parent_in_another_namespace_is_no_local_parent() {
        // A veth whose peer is ifindex 2 of another netns; ifindex 2 here is the uplink, which
        // must not make this veth an "uplink child" (seen on the real cluster).
        let mut msg = LinkMessage::default();
        msg.header.index = 9;
        msg.attributes = vec![
            LinkAttribute::IfName("rail0".into()),
            LinkAttribute::Link(2),
            LinkAttribute::LinkNetNsId(0),
        ];
        assert_eq!(link_from_message(&msg).unwrap().parent, None);
        msg.attributes.retain(|a| !matches!(a, LinkAttribute::LinkNetNsId(_)));
        assert_eq!(
            link_from_message(&msg).unwrap().parent,
            Some(2),
            "a same-namespace parent"
        );
    }

    #[test]
    fn default_route_is_parsed() {
        let mut msg = RouteMessage::default();
        msg.header.address_family = AddressFamily::Inet;
        msg.header.table = 254;
        msg.attributes = vec![RouteAttribute::Oif(2)];
        let route = route_from_message(&msg).unwrap();
        assert_eq!(route.dst.prefix_len(), 0);
        assert_eq!((route.oifs, route.table), (vec![2], 254));
    }
}
