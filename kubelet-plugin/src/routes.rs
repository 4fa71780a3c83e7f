//! L3 peer routes for `routing.mode: l3` networks (design.md §5): on each rail, a route to every
//! peer node's block of that rail. Our routes carry their own route protocol number, so the sync
//! only ever adds or removes routes it owns and never touches foreign ones.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use futures::TryStreamExt;
use ipnet::Ipv4Net;
use multinic_api::crd::NicNodeBlocks;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope};
use rtnetlink::{Handle, RouteMessageBuilder};

use crate::inventory::RT_TABLE_MAIN;

/// `rtm_protocol` of routes installed by multinic (unassigned in `/etc/iproute2/rt_protos`).
pub const RTPROT_MULTINIC: u8 = 201;

/// One route to a peer's block, out of one local rail interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PeerRoute {
    pub dst: Ipv4Net,
    pub oif: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("rtnetlink {what} {route:?}: {source}")]
    Netlink {
        what: &'static str,
        route: Option<PeerRoute>,
        source: rtnetlink::Error,
    },
}

/// Pure: the routes this node wants. `blocks` are every NicNodeBlocks of the l3 networks,
/// `rails` maps this node's rail index to the interface index of its rail NIC.
pub fn desired_routes(node: &str, blocks: &[NicNodeBlocks], rails: &BTreeMap<u32, u32>) -> BTreeSet<PeerRoute> {
    blocks
        .iter()
        .filter(|nb| nb.spec.node_name != node)
        .flat_map(|nb| nb.spec.blocks.iter())
        .filter_map(|b| rails.get(&b.rail_index).map(|&oif| PeerRoute { dst: b.cidr, oif }))
        .collect()
}

fn ours(msg: &RouteMessage) -> Option<PeerRoute> {
    if msg.header.address_family != AddressFamily::Inet || msg.header.protocol != RouteProtocol::Other(RTPROT_MULTINIC)
    {
        return None;
    }
    let mut dst = Ipv4Addr::UNSPECIFIED;
    let mut oif = None;
    let mut table = u32::from(msg.header.table);
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = *ip,
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Table(t) => table = *t,
            _ => {}
        }
    }
    (table == RT_TABLE_MAIN).then_some(())?;
    Some(PeerRoute {
        dst: Ipv4Net::new(dst, msg.header.destination_prefix_length).ok()?,
        oif: oif?,
    })
}

fn message(route: &PeerRoute) -> RouteMessage {
    RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(route.dst.network(), route.dst.prefix_len())
        .output_interface(route.oif)
        .protocol(RouteProtocol::Other(RTPROT_MULTINIC))
        .scope(RouteScope::Link)
        .table_id(RT_TABLE_MAIN)
        .build()
}

/// What a sync changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub added: usize,
    pub removed: usize,
}

/// Makes our routes in the main table exactly `desired`; foreign routes are left alone.
pub async fn sync_routes(handle: &Handle, desired: &BTreeSet<PeerRoute>) -> Result<SyncReport, RouteError> {
    let mut query = RouteMessage::default();
    query.header.address_family = AddressFamily::Inet;
    let current: Vec<(PeerRoute, RouteMessage)> = handle
        .route()
        .get(query)
        .execute()
        .try_collect::<Vec<_>>()
        .await
        .map_err(|source| RouteError::Netlink {
            what: "dump",
            route: None,
            source,
        })?
        .into_iter()
        .filter_map(|m| ours(&m).map(|r| (r, m)))
        .collect();
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
    for route in desired.difference(&have) {
        handle
            .route()
            .add(message(route))
            .execute()
            .await
            .map_err(|source| RouteError::Netlink {
                what: "add",
                route: Some(*route),
                source,
            })?;
        report.added += 1;
    }
    Ok(report)
}

/// Installs this node's peer routes for every `routing.mode: l3` network, again after every change
/// of MultiNicNetworks or NicNodeBlocks and at every resync, until the watches end.
pub async fn run_peer_routes(
    client: kube::Client,
    node: String,
    table: crate::publish::DeviceTable,
    handle: Handle,
    resync: std::time::Duration,
) {
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, watcher};
    use multinic_api::config::RoutingMode;
    use multinic_api::crd::MultiNicNetwork;

    let networks: kube::Api<MultiNicNetwork> = kube::Api::all(client.clone());
    let blocks: kube::Api<NicNodeBlocks> = kube::Api::all(client);
    let changes = futures::stream::select(
        watcher(networks.clone(), watcher::Config::default())
            .touched_objects()
            .map(|_| ())
            .boxed(),
        watcher(blocks.clone(), watcher::Config::default())
            .touched_objects()
            .map(|_| ())
            .boxed(),
    );
    let mut ticks = tokio_stream::wrappers::IntervalStream::new(tokio::time::interval(resync)).map(|_| ());
    let mut events = futures::stream::select(changes, &mut ticks);
    while events.next().await.is_some() {
        table.wait_ready().await;
        let l3: BTreeSet<String> = match networks.list(&Default::default()).await {
            Ok(list) => list
                .items
                .into_iter()
                .filter(|n| n.spec.routing.mode == RoutingMode::L3)
                .filter_map(|n| n.metadata.name)
                .collect(),
            Err(error) => {
                tracing::warn!(%error, "listing MultiNicNetworks for peer routes");
                continue;
            }
        };
        let all = match blocks.list(&Default::default()).await {
            Ok(list) => list
                .items
                .into_iter()
                .filter(|nb| l3.contains(&nb.spec.network))
                .collect::<Vec<_>>(),
            Err(error) => {
                tracing::warn!(%error, "listing NicNodeBlocks for peer routes");
                continue;
            }
        };
        let rails: BTreeMap<u32, u32> = table
            .all()
            .into_iter()
            .map(|d| (d.rail_index, d.nic.if_index))
            .collect();
        match sync_routes(&handle, &desired_routes(&node, &all, &rails)).await {
            Ok(report) if report != SyncReport::default() => {
                tracing::info!(added = report.added, removed = report.removed, "peer routes synced")
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "syncing peer routes"),
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
                blocks: (0..2)
                    .map(|k| RailBlock {
                        rail_index: k,
                        cidr: format!("10.10.{host}.{}/26", k * 64).parse().unwrap(),
                    })
                    .collect(),
            },
        )
    }

    #[test]
    fn peers_blocks_go_out_of_the_matching_rail_and_own_blocks_are_skipped() {
        let blocks = [nb("me", 0), nb("p1", 1), nb("p2", 2)];
        let rails = BTreeMap::from([(0, 10), (1, 11)]);
        let got: Vec<(String, u32)> = desired_routes("me", &blocks, &rails)
            .iter()
            .map(|r| (r.dst.to_string(), r.oif))
            .collect();
        assert_eq!(
            got,
            [
                ("10.10.1.0/26".to_string(), 10),
                ("10.10.1.64/26".to_string(), 11),
                ("10.10.2.0/26".to_string(), 10),
                ("10.10.2.64/26".to_string(), 11)
            ]
        );
        // A rail this node does not have gets no route.
        assert_eq!(desired_routes("me", &blocks, &BTreeMap::from([(1, 11)])).len(), 2);
    }
}
