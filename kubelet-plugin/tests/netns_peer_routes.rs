//! Acceptance: in a netns made by the test, L3 peer routes for 3 peer nodes x 2 rails x 2 address
//! families (a dual-stack network) appear on the right interfaces, survive a re-run unchanged,
//! disappear when a peer is removed, and foreign routes are never touched. Needs root; with
//! `CI=true` a missing privilege fails.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::TryStreamExt;
use multinic_api::crd::{NicNodeBlocks, NicNodeBlocksSpec, RailBlock};
use multinic_api::rails::RailsLayout;
use multinic_kubelet_plugin::inventory::netlink;
use multinic_kubelet_plugin::routes::{PeerRoute, RTPROT_MULTINIC, SyncReport, desired_routes, sync_routes};
use multinic_testkit::fixtures;

mod common;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::route::{RouteAttribute, RouteMessage, RouteProtocol, RouteScope};
use rtnetlink::{LinkUnspec, LinkVeth, RouteMessageBuilder};

fn blocks(node: &str, host: u32) -> NicNodeBlocks {
    let layout = RailsLayout::new("10.10.0.0/16".parse().unwrap(), 8, 2).unwrap();
    let layout6 = RailsLayout::new6("fd00:10::/64".parse().unwrap(), 8, 2).unwrap();
    NicNodeBlocks::new(
        &format!("rails.{node}"),
        NicNodeBlocksSpec {
            network: "rails".into(),
            node_name: node.into(),
            host_index: host,
            granted_blocks: Vec::new(),
            blocks: (0..2)
                .flat_map(|k| {
                    [
                        RailBlock {
                            rail_index: k,
                            cidr: layout.block(host, k).unwrap().into(),
                            // Peer 3 publishes its own address on each rail: its blocks go via it.
                            node_address: (host == 3).then(|| IpAddr::V4(Ipv4Addr::new(192, 168, k as u8, 3))),
                        },
                        RailBlock {
                            rail_index: k,
                            cidr: layout6.block(host, k).unwrap().into(),
                            node_address: (host == 3)
                                .then(|| IpAddr::V6(Ipv6Addr::new(0xfd00, 0x192, 0x168, k as u16, 0, 0, 0, 3))),
                        },
                    ]
                })
                .collect(),
        },
    )
}

/// Every main-table route of both families: (dst, oif, ours, gateway).
async fn routes(handle: &rtnetlink::Handle) -> BTreeSet<(String, u32, bool, Option<IpAddr>)> {
    let mut msgs: Vec<RouteMessage> = Vec::new();
    for family in [AddressFamily::Inet, AddressFamily::Inet6] {
        let mut q = RouteMessage::default();
        q.header.address_family = family;
        msgs.extend(handle.route().get(q).execute().try_collect::<Vec<_>>().await.unwrap());
    }
    let ip = |a: &netlink_packet_route::route::RouteAddress| match a {
        netlink_packet_route::route::RouteAddress::Inet(ip) => Some(IpAddr::V4(*ip)),
        netlink_packet_route::route::RouteAddress::Inet6(ip) => Some(IpAddr::V6(*ip)),
        _ => None,
    };
    msgs.iter()
        .filter(|m| m.header.table == 254)
        .filter_map(|m| {
            let dst = m.attributes.iter().find_map(|a| match a {
                RouteAttribute::Destination(a) => ip(a),
                _ => None,
            })?;
            let oif = m.attributes.iter().find_map(|a| match a {
                RouteAttribute::Oif(i) => Some(*i),
                _ => None,
            })?;
            let ours = m.header.protocol == RouteProtocol::Other(RTPROT_MULTINIC);
            let gateway = m.attributes.iter().find_map(|a| match a {
                RouteAttribute::Gateway(a) => ip(a),
                _ => None,
            });
            Some((
                ipnet::IpNet::new(dst, m.header.destination_prefix_length)
                    .ok()?
                    .to_string(),
                oif,
                ours,
                gateway,
            ))
        })
        .collect()
}

#[test]
fn peer_routes_follow_peers_and_leave_foreign_routes_alone() {
    if !fixtures::can_run_as_root("peer_routes_follow_peers_and_leave_foreign_routes_alone") {
        return;
    }
    common::in_new_netns(|| async move {
        let handle = netlink::connect().unwrap();
        let mut rails = BTreeMap::new();
        for k in 0..2u32 {
            let (a, b) = (format!("rail{k}a"), format!("rail{k}b"));
            handle
                .link()
                .add(LinkVeth::new(&a, &b).build())
                .execute()
                .await
                .unwrap();
            for name in [&a, &b] {
                let link = handle
                    .link()
                    .get()
                    .match_name(name.clone())
                    .execute()
                    .try_next()
                    .await
                    .unwrap()
                    .unwrap();
                handle
                    .link()
                    .set(LinkUnspec::new_with_index(link.header.index).up().build())
                    .execute()
                    .await
                    .unwrap();
                if name == &a {
                    rails.insert(k, link.header.index);
                    // A rail NIC with an address of its own, in another subnet than the
                    // peers' rail addresses: `via` routes to them need `onlink`.
                    handle
                        .address()
                        .add(link.header.index, IpAddr::V4(Ipv4Addr::new(172, 16, k as u8, 1)), 24)
                        .execute()
                        .await
                        .unwrap();
                }
            }
        }
        // A foreign route on rail 0 (protocol static) that the sync must never touch.
        let foreign = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(Ipv4Addr::new(10, 99, 0, 0), 24)
            .output_interface(rails[&0])
            .protocol(RouteProtocol::Static)
            .scope(RouteScope::Link)
            .build();
        handle.route().add(foreign).execute().await.unwrap();

        let mut all = vec![blocks("me", 0), blocks("p1", 1), blocks("p2", 2), blocks("p3", 3)];
        let desired = desired_routes("me", &all, &rails);
        assert_eq!(desired.len(), 12, "3 peers x 2 rails x 2 families");
        assert_eq!(
            sync_routes(&handle, &desired).await.unwrap(),
            SyncReport { added: 12, removed: 0 }
        );
        let ours: BTreeSet<(String, u32, Option<IpAddr>)> = routes(&handle)
            .await
            .into_iter()
            .filter(|r| r.2)
            .map(|(d, o, _, g)| (d, o, g))
            .collect();
        let expected: BTreeSet<(String, u32, Option<IpAddr>)> = desired
            .iter()
            .map(|r: &PeerRoute| (r.dst.to_string(), r.oif, r.via))
            .collect();
        assert_eq!(ours, expected);
        assert!(
            ours.contains(&("10.10.2.64/26".to_string(), rails[&1], None)),
            "peer 2's rail-1 block goes out of rail 1, on-link"
        );
        assert!(
            ours.contains(&(
                "10.10.3.64/26".to_string(),
                rails[&1],
                Some("192.168.1.3".parse().unwrap())
            )),
            "peer 3's rail-1 block goes out of rail 1 via peer 3's rail-1 address"
        );
        assert!(
            ours.contains(&("fd00:10:0:0:240::/74".to_string(), rails[&1], None)),
            "peer 2's rail-1 IPv6 block goes out of rail 1, on-link"
        );
        assert!(
            ours.contains(&(
                "fd00:10:0:0:340::/74".to_string(),
                rails[&1],
                Some("fd00:192:168:1::3".parse().unwrap())
            )),
            "peer 3's rail-1 IPv6 block goes via peer 3's rail-1 IPv6 address"
        );

        // A re-run changes nothing.
        assert_eq!(sync_routes(&handle, &desired).await.unwrap(), SyncReport::default());

        // Peer p2 goes: its four routes go, nothing else.
        all.retain(|nb| nb.spec.node_name != "p2");
        let desired = desired_routes("me", &all, &rails);
        assert_eq!(
            sync_routes(&handle, &desired).await.unwrap(),
            SyncReport { added: 0, removed: 4 }
        );
        let now = routes(&handle).await;
        assert_eq!(now.iter().filter(|r| r.2).count(), 8);
        assert!(
            !now.iter()
                .any(|r| r.0.starts_with("10.10.2.") || r.0.starts_with("fd00:10:0:0:2"))
        );
        assert!(
            now.contains(&("10.99.0.0/24".to_string(), rails[&0], false, None)),
            "foreign route kept"
        );
        println!(
            "peer routes: 12 installed (6 IPv4, 6 IPv6), re-run unchanged, 4 removed with their peer, foreign route kept"
        );
    });
}

/// The plugin's loop: l3 networks and NicNodeBlocks from the API server drive the routes, and a
/// deleted peer's routes go without a restart.
#[test]
fn the_route_loop_follows_the_api_server() {
    if !fixtures::can_run_as_root("the_route_loop_follows_the_api_server") {
        return;
    }
    common::in_new_netns(|| async move {
        use multinic_kubelet_plugin::inventory::Nic;
        use multinic_kubelet_plugin::publish::DeviceTable;
        use multinic_kubelet_plugin::slices::{SliceOptions, build_device_table};
        use multinic_testkit::FakeApiServer;
        use serde_json::json;

        let handle = netlink::connect().unwrap();
        // The test API server listens on 127.0.0.1 of this namespace.
        let lo = handle
            .link()
            .get()
            .match_name("lo".to_string())
            .execute()
            .try_next()
            .await
            .unwrap()
            .unwrap();
        handle
            .link()
            .set(LinkUnspec::new_with_index(lo.header.index).up().build())
            .execute()
            .await
            .unwrap();
        let mut nics = Vec::new();
        for k in 0..2u32 {
            let (a, b) = (format!("rl{k}a"), format!("rl{k}b"));
            handle
                .link()
                .add(LinkVeth::new(&a, &b).build())
                .execute()
                .await
                .unwrap();
            for name in [&a, &b] {
                let link = handle
                    .link()
                    .get()
                    .match_name(name.clone())
                    .execute()
                    .try_next()
                    .await
                    .unwrap()
                    .unwrap();
                handle
                    .link()
                    .set(LinkUnspec::new_with_index(link.header.index).up().build())
                    .execute()
                    .await
                    .unwrap();
                if name == &a {
                    nics.push(fixtures::veth_nic::<Nic>(&a, link.header.index));
                }
            }
        }
        let table = DeviceTable::default();
        table.set(&build_device_table(&nics, &SliceOptions::new("me")));
        let server = FakeApiServer::start().await;
        server
                .insert(json!({"apiVersion": "multinic.dev/v1alpha1", "kind": "MultiNicNetwork", "metadata": {"name": "rails"},
                    "spec": {"routing": {"mode": "l3"}, "ipam": {"type": "rails", "subnet": "10.10.0.0/16", "subnet6": "fd00:10::/64", "hostBlock": 8, "interfaceBlock": 2}}}))
                .unwrap();
        for (node, host) in [("me", 0), ("p1", 1), ("p2", 2)] {
            server
                .insert(serde_json::to_value(blocks(node, host)).unwrap())
                .unwrap();
        }
        let (stores, changes) = multinic_kubelet_plugin::cluster::watch(server.client());
        let route_loop = multinic_kubelet_plugin::routes::run_peer_routes(
            stores,
            changes,
            "me".into(),
            table,
            handle.clone(),
            std::time::Duration::from_secs(3600),
        );
        let body = async {
            let wait_for = |n: usize| {
                let handle = handle.clone();
                async move {
                    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
                    let mut tick = tokio::time::interval(std::time::Duration::from_millis(20));
                    loop {
                        tick.tick().await;
                        if routes(&handle).await.iter().filter(|r| r.2).count() == n {
                            return;
                        }
                        assert!(std::time::Instant::now() < deadline, "never reached {n} routes");
                    }
                }
            };
            // 2 peers x 2 rails x 2 families, then 1 peer.
            wait_for(8).await;
            server
                .delete("multinic.dev/v1alpha1", "NicNodeBlocks", None, "rails.p1")
                .unwrap();
            wait_for(4).await;
        };
        tokio::select! {
            () = route_loop => panic!("the route loop ended"),
            () = body => {}
        }
    });
}
