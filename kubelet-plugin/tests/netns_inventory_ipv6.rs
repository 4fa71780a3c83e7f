//! The inventory reads both families from the kernel: in a netns made by the test, a rail NIC
//! with an IPv4 address, its link-local IPv6 address and a global IPv6 one publishes `ipv4` and
//! `ipv6` (the global one), which the controller records as the node's `nodeAddress` of each
//! family. Needs root; with `CI=true` a missing privilege fails.

use std::collections::HashMap;

use futures::TryStreamExt;
use multinic_kubelet_plugin::inventory::filter::Filters;
use multinic_kubelet_plugin::inventory::{build_inventory, netlink};
use multinic_testkit::fixtures;

mod common;
use netlink_packet_route::address::{AddressAttribute, AddressFlags};
use rtnetlink::{LinkUnspec, LinkVeth};

#[test]
fn a_rail_nic_publishes_its_ipv4_and_its_global_ipv6_address() {
    if !fixtures::can_run_as_root("a_rail_nic_publishes_its_ipv4_and_its_global_ipv6_address") {
        return;
    }
    common::in_new_netns(|| async move {
        let handle = netlink::connect().unwrap();
        handle
            .link()
            .add(LinkVeth::new("rail0", "rail0p").build())
            .execute()
            .await
            .unwrap();
        let index = handle
            .link()
            .get()
            .match_name("rail0".to_string())
            .execute()
            .try_next()
            .await
            .unwrap()
            .unwrap()
            .header
            .index;
        for (ip, len) in [("fe80::99", 64), ("fd00:192:168:7::5", 64), ("192.168.7.5", 24)] {
            let mut req = handle.address().add(index, ip.parse().unwrap(), len);
            if ip.contains(':') {
                req.message_mut()
                    .attributes
                    .push(AddressAttribute::Flags(AddressFlags::Nodad));
            }
            req.execute().await.unwrap();
        }
        handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .unwrap();

        let snapshot = netlink::read_snapshot(&handle).await.unwrap();
        let mine: Vec<String> = snapshot
            .addresses
            .iter()
            .filter(|a| a.index == index)
            .map(|a| a.cidr.to_string())
            .collect();
        for want in ["fe80::99/64", "fd00:192:168:7::5/64", "192.168.7.5/24"] {
            assert!(mine.iter().any(|m| m == want), "{want} missing from {mine:?}");
        }
        let filters = Filters::new(true, &["rail0".into()], &[], &[], &[]).unwrap();
        let inv = build_inventory(&snapshot, &HashMap::new(), &filters);
        let nic = inv.nics.iter().find(|n| n.if_name == "rail0").expect("rail0 published");
        assert_eq!(nic.ipv4.map(|n| n.to_string()).as_deref(), Some("192.168.7.5/24"));
        assert_eq!(
            nic.ipv6.map(|n| n.to_string()).as_deref(),
            Some("fd00:192:168:7::5/64"),
            "the global address, not the link-local one"
        );
        println!("inventory: rail0 ipv4 192.168.7.5/24, ipv6 fd00:192:168:7::5/64 (fe80::99 left out)");
    });
}
