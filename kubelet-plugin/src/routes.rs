//! L3 peer routes for `routing.mode: l3` networks (design.md §5): on each rail, a route to every
//! peer node's block of that rail. Our routes carry their own route protocol number, so the sync
//! only ever adds or removes routes it owns and never touches foreign ones. Both address families:
//! a dual-stack network's peers have an IPv4 and an IPv6 block per rail, each routed on its own
//! (via the peer's address of that family when its NicNodeBlocks names one, else on-link).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use futures::TryStreamExt;
use ipnet::IpNet;
use multinic_api::crd::NicNodeBlocks;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteFlags, RouteMessage, RouteProtocol, RouteScope};
use rtnetlink::{Handle, RouteMessageBuilder};

use multinic_api::retry::RepeatGate;

use crate::cluster::{Changes, ClusterStores};
use crate::inventory::RT_TABLE_MAIN;
use crate::ledger::Presence;

/// `rtm_protocol` of routes installed by multinic (unassigned in `/etc/iproute2/rt_protos`).
pub const RTPROT_MULTINIC: u8 = 201;

/// One route to a peer's block, out of one local rail interface: via the peer's own address on
/// that rail when its NicNodeBlocks names one, else on-link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PeerRoute {
    pub dst: IpNet,
    pub oif: u32,
    pub via: Option<IpAddr>,
}

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error(
        "rtnetlink {what} of peer route {route:?}: {source}; peer routes come from the peers' NicNodeBlocks (their blocks and nodeAddress) and this node's rail NICs, check both"
    )]
    Netlink {
        what: &'static str,
        route: Option<PeerRoute>,
        source: rtnetlink::Error,
    },
    #[error(
        "peer route {route:?} cannot be built: {reason}; the peers' NicNodeBlocks (their blocks and nodeAddress) are corrupt"
    )]
    Build { route: PeerRoute, reason: String },
}

/// Pure: the routes this node wants. `blocks` are every NicNodeBlocks of the l3 networks,
/// `rails` maps this node's rail index to the interface index of its rail NIC.
pub fn desired_routes<'a>(
    node: &str,
    blocks: impl IntoIterator<Item = &'a NicNodeBlocks>,
    rails: &BTreeMap<u32, u32>,
) -> BTreeSet<PeerRoute> {
    blocks
        .into_iter()
        .filter(|nb| nb.spec.node_name != node)
        .flat_map(|nb| nb.spec.blocks.iter())
        .filter_map(|b| {
            rails.get(&b.rail_index).map(|&oif| PeerRoute {
                dst: b.cidr,
                oif,
                // A gateway of the other family would be refused by the kernel: on-link instead.
                via: b.node_address.filter(|a| a.is_ipv4() == b.cidr.addr().is_ipv4()),
            })
        })
        .collect()
}

fn route_ip(addr: &RouteAddress) -> Option<IpAddr> {
    match addr {
        RouteAddress::Inet(ip) => Some(IpAddr::V4(*ip)),
        RouteAddress::Inet6(ip) => Some(IpAddr::V6(*ip)),
        _ => None,
    }
}

fn ours(msg: &RouteMessage) -> Option<PeerRoute> {
    if !matches!(msg.header.address_family, AddressFamily::Inet | AddressFamily::Inet6)
        || msg.header.protocol != RouteProtocol::Other(RTPROT_MULTINIC)
    {
        return None;
    }
    let mut dst = None;
    let mut oif = None;
    let mut via = None;
    let mut table = u32::from(msg.header.table);
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Destination(a) => dst = route_ip(a),
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Gateway(a) => via = route_ip(a),
            RouteAttribute::Table(t) => table = *t,
            _ => {}
        }
    }
    (table == RT_TABLE_MAIN).then_some(())?;
    Some(PeerRoute {
        dst: IpNet::new(dst?, msg.header.destination_prefix_length).ok()?,
        oif: oif?,
        via,
    })
}

/// RTM_NEWROUTE of a peer route, in the family of its destination. Of the IPv6 route attributes
/// the kernel reads (`rtm_to_fib6_config`, net/ipv6/route.c), these are RTA_DST, RTA_OIF,
/// RTA_GATEWAY, RTA_TABLE and the header's protocol and flags; `RTNH_F_ONLINK` is honoured for IPv6
/// gateways as for IPv4 ones (`ip6_validate_gw`).
fn message(route: &PeerRoute) -> Result<RouteMessage, String> {
    let builder = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(route.dst.network(), route.dst.prefix_len())
        .map_err(|e| e.to_string())?
        .output_interface(route.oif)
        .protocol(RouteProtocol::Other(RTPROT_MULTINIC))
        .table_id(RT_TABLE_MAIN);
    Ok(match route.via {
        // `onlink`: the peer's rail address need not be in a subnet of this node's rail NIC.
        Some(via) => {
            let mut msg = builder
                .gateway(via)
                .map_err(|e| e.to_string())?
                .scope(RouteScope::Universe)
                .build();
            msg.header.flags |= RouteFlags::Onlink;
            msg
        }
        None => builder.scope(RouteScope::Link).build(),
    })
}

/// What a sync changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub added: usize,
    pub removed: usize,
}

/// Makes our routes in the main table exactly `desired`; foreign routes are left alone.
pub async fn sync_routes(handle: &Handle, desired: &BTreeSet<PeerRoute>) -> Result<SyncReport, RouteError> {
    let mut current: Vec<(PeerRoute, RouteMessage)> = Vec::new();
    for family in [AddressFamily::Inet, AddressFamily::Inet6] {
        let mut query = RouteMessage::default();
        query.header.address_family = family;
        let dump = handle
            .route()
            .get(query)
            .execute()
            .try_collect::<Vec<_>>()
            .await
            .map_err(|source| RouteError::Netlink {
                what: "dump",
                route: None,
                source,
            })?;
        current.extend(dump.into_iter().filter_map(|m| ours(&m).map(|r| (r, m))));
    }
    let have: BTreeSet<PeerRoute> = current.iter().map(|(r, _)| *r).collect();
    let mut report = SyncReport::default();
    for (route, msg) in current.into_iter().filter(|(r, _)| !desired.contains(r)) {
        handle
            .route()
            .del(msg)
            .execute()
            .await
            .map_err(|source| RouteError::Netlink {
                what: "delete",
                route: Some(route),
                source,
            })?;
        report.removed += 1;
    }
    // One peer's bad route (say, a nodeAddress the kernel refuses) must not keep the others out:
    // every add is tried, the first failure is reported.
    let mut failed = None;
    for route in desired.difference(&have) {
        let msg = match message(route) {
            Ok(msg) => msg,
            Err(reason) => {
                failed.get_or_insert(RouteError::Build { route: *route, reason });
                continue;
            }
        };
        match handle.route().add(msg).execute().await {
            Ok(()) => report.added += 1,
            Err(source) => {
                failed.get_or_insert(RouteError::Netlink {
                    what: "add",
                    route: Some(*route),
                    source,
                });
            }
        }
    }
    failed.map_or(Ok(report), Err)
}

/// Installs this node's peer routes for every `routing.mode: l3` network, again after every change
/// seen by the cluster watches or in the device table (a rail NIC back from a pod needs its routes
/// again: the kernel dropped them when it left) — a burst is synced once — and at every resync,
/// until the watches end. Reads the watch-backed stores only: no list per event.
pub async fn run_peer_routes(
    stores: ClusterStores,
    changes: Changes,
    node: String,
    table: crate::publish::DeviceTable,
    handle: Handle,
    resync: std::time::Duration,
) {
    use futures::{FutureExt, StreamExt};
    use multinic_api::config::RoutingMode;

    let ticks = tokio_stream::wrappers::IntervalStream::new(tokio::time::interval(resync)).map(|_| ());
    let devices = Box::pin(table.changes());
    let mut events = futures::stream::select(futures::stream::select(changes, devices), ticks);
    let mut gate = RepeatGate::default();
    while events.next().await.is_some() {
        // Coalesce what is already queued (a list of many objects arrives as many events).
        while let Some(Some(())) = events.next().now_or_never() {}
        table.wait_ready().await;
        if !stores.is_ready() {
            // The first lists are still arriving; their last event brings us back here.
            continue;
        }
        let l3: BTreeSet<String> = stores
            .networks
            .state()
            .iter()
            .filter(|n| n.spec.routing.mode == RoutingMode::L3)
            .filter_map(|n| n.metadata.name.clone())
            .collect();
        let blocks = stores.blocks.state();
        let blocks = blocks
            .iter()
            .map(|nb| nb.as_ref())
            .filter(|nb| l3.contains(&nb.spec.network));
        // Only rails whose NIC is on the host: one in a pod has no interface here.
        let rails: BTreeMap<u32, u32> = table
            .all()
            .into_iter()
            .filter(|d| d.presence == Presence::OnHost)
            .map(|d| (d.rail_index, d.nic.if_index))
            .collect();
        match sync_routes(&handle, &desired_routes(&node, blocks, &rails)).await {
            Ok(report) => {
                if let Some(failures) = gate.success() {
                    tracing::info!(failures, "syncing peer routes works again");
                }
                if report != SyncReport::default() {
                    tracing::info!(added = report.added, removed = report.removed, "peer routes synced");
                }
            }
            Err(error) => {
                if let Some(not_logged) = gate.failure(std::time::Instant::now()) {
                    tracing::warn!(%error, not_logged, "syncing peer routes");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use multinic_api::crd::{NicNodeBlocksSpec, RailBlock};

    use super::*;

    fn nb(node: &str, host: u32) -> NicNodeBlocks {
        NicNodeBlocks::new(
            &format!("rails.{node}"),
            NicNodeBlocksSpec {
                network: "rails".into(),
                node_name: node.into(),
                host_index: host,
                granted_blocks: Vec::new(),
                blocks: (0..2)
                    .map(|k| RailBlock {
                        rail_index: k,
                        cidr: format!("10.10.{host}.{}/26", k * 64).parse().unwrap(),
                        // Host 2 publishes its rail addresses; host 1 does not.
                        node_address: (host == 2).then(|| format!("192.168.{k}.2").parse().unwrap()),
                    })
                    .collect(),
            },
        )
    }

    #[test]
    fn peers_blocks_go_out_of_the_matching_rail_and_own_blocks_are_skipped() {
        let blocks = [nb("me", 0), nb("p1", 1), nb("p2", 2)];
        let rails = BTreeMap::from([(0, 10), (1, 11)]);
        let got: Vec<(String, u32, Option<String>)> = desired_routes("me", &blocks, &rails)
            .iter()
            .map(|r| (r.dst.to_string(), r.oif, r.via.map(|v| v.to_string())))
            .collect();
        let via = |s: &str| Some(s.to_string());
        assert_eq!(
            got,
            [
                ("10.10.1.0/26".to_string(), 10, None),
                ("10.10.1.64/26".to_string(), 11, None),
                ("10.10.2.0/26".to_string(), 10, via("192.168.0.2")),
                ("10.10.2.64/26".to_string(), 11, via("192.168.1.2"))
            ]
        );
        // A rail this node does not have gets no route.
        assert_eq!(desired_routes("me", &blocks, &BTreeMap::from([(1, 11)])).len(), 2);
    }

    #[test]
    fn dual_stack_peers_get_a_route_per_family() {
        let mut peer = nb("p2", 2);
        peer.spec.blocks.push(RailBlock {
            rail_index: 0,
            cidr: "fd00:10:0:0:200::/74".parse().unwrap(),
            node_address: Some("fd00:192:168::2".parse().unwrap()),
        });
        // A v4 nodeAddress on a v6 block (a corrupt object) is not used as the gateway.
        peer.spec.blocks.push(RailBlock {
            rail_index: 1,
            cidr: "fd00:10:0:0:240::/74".parse().unwrap(),
            node_address: Some("192.168.1.2".parse().unwrap()),
        });
        let rails = BTreeMap::from([(0, 10), (1, 11)]);
        let got: Vec<(String, Option<String>)> = desired_routes("me", &[peer], &rails)
            .iter()
            .filter(|r| r.dst.addr().is_ipv6())
            .map(|r| (r.dst.to_string(), r.via.map(|v| v.to_string())))
            .collect();
        assert_eq!(
            got,
            [
                ("fd00:10:0:0:200::/74".to_string(), Some("fd00:192:168::2".to_string())),
                ("fd00:10:0:0:240::/74".to_string(), None)
            ]
        );
        // The message is an IPv6 one, and what the kernel dumps back parses as ours.
        let route = PeerRoute {
            dst: "fd00:10:0:0:200::/74".parse().unwrap(),
            oif: 10,
            via: Some("fd00:192:168::2".parse().unwrap()),
        };
        let msg = message(&route).unwrap();
        assert_eq!(msg.header.address_family, AddressFamily::Inet6);
        assert!(msg.header.flags.contains(RouteFlags::Onlink));
        assert_eq!(ours(&msg), Some(route));
    }
}
