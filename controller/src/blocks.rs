//! Pure host-index assignment for `rails` networks (design.md §5): every node that publishes
//! matching devices gets a host index *h*, stable while the node exists (kept from its existing
//! NicNodeBlocks), never shared, and freed only when the node is gone.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use multinic_api::crd::RailBlock;
use multinic_api::rails::{RailsError, RailsLayouts};

/// The outcome of one assignment round.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Assignment {
    /// Node → host index, for every node that has one.
    pub hosts: BTreeMap<String, u32>,
    /// Nodes that need an index but none is left.
    pub exhausted: Vec<String>,
    /// Nodes whose existing index was released (they are gone).
    pub released: Vec<String>,
}

/// Assigns host indexes. `existing` are the indexes recorded in NicNodeBlocks (node → h), `nodes`
/// the nodes that currently publish matching devices. Existing nodes keep their index; gone nodes
/// free theirs; new nodes take the lowest free index, in name order.
pub fn assign(layout: &RailsLayouts, existing: &BTreeMap<String, u32>, nodes: &BTreeSet<String>) -> Assignment {
    let mut out = Assignment::default();
    let mut used = BTreeSet::new();
    for (node, &h) in existing {
        // An index outside the layout (the network shrank) or already taken is not kept.
        if nodes.contains(node) && u64::from(h) < layout.hosts() && used.insert(h) {
            out.hosts.insert(node.clone(), h);
        } else if !nodes.contains(node) {
            out.released.push(node.clone());
        }
    }
    // The free indexes in order; newcomers take them one by one.
    let mut free = (0..=u32::MAX)
        .take_while(|h| u64::from(*h) < layout.hosts())
        .filter(|h| !used.contains(h));
    let newcomers: Vec<&String> = nodes.iter().filter(|n| !out.hosts.contains_key(*n)).collect();
    for node in newcomers {
        match free.next() {
            Some(h) => {
                out.hosts.insert(node.clone(), h);
            }
            None => out.exhausted.push(node.clone()),
        }
    }
    out
}

/// The blocks of host `h` for rails `0..rails`, one per family of the network (IPv4 first), each
/// with the node's own address of its family on that rail where `addresses` has one (peers route
/// the block via it, else on-link).
pub fn node_blocks(
    layout: &RailsLayouts,
    host: u32,
    rails: u32,
    addresses: &BTreeMap<u32, Vec<IpAddr>>,
) -> Result<Vec<RailBlock>, RailsError> {
    let mut out = Vec::new();
    for k in 0..rails {
        for cidr in layout.blocks(host, k)? {
            let node_address = addresses
                .get(&k)
                .and_then(|a| a.iter().find(|a| a.is_ipv4() == cidr.addr().is_ipv4()))
                .copied();
            out.push(RailBlock {
                rail_index: k,
                cidr,
                node_address,
            });
        }
    }
    Ok(out)
}

/// Whether two blocks overlap.
pub fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    use multinic_api::rails::RailsLayout;

    fn layout() -> RailsLayouts {
        RailsLayout::new("10.0.0.0/8".parse().unwrap(), 14, 3).unwrap().into()
    }

    fn nodes(range: std::ops::Range<usize>) -> BTreeSet<String> {
        range.map(|i| format!("node-{i:05}")).collect()
    }

    #[test]
    fn ten_thousand_nodes_times_eight_rails_without_overlap() {
        let l = layout();
        let all = nodes(0..10_000);
        let start = Instant::now();
        let a = assign(&l, &BTreeMap::new(), &all);
        let blocks: Vec<IpNet> = a
            .hosts
            .values()
            .flat_map(|&h| node_blocks(&l, h, 8, &BTreeMap::new()).unwrap())
            .map(|b| b.cidr)
            .collect();
        println!(
            "assigned {} nodes x 8 rails ({} blocks) in {:?}",
            a.hosts.len(),
            blocks.len(),
            start.elapsed()
        );
        assert_eq!(a.hosts.len(), 10_000);
        assert!(a.exhausted.is_empty());
        // Blocks of one prefix length overlap only if equal.
        let distinct: BTreeSet<_> = blocks.iter().collect();
        assert_eq!(distinct.len(), 80_000, "no two blocks overlap");
        assert!(blocks.iter().all(|b| l.holds(b)));
        assert!(!overlaps(&blocks[0], &blocks[1]));
    }

    #[test]
    fn restart_keeps_assignment_and_gone_nodes_free_their_index() {
        let l: RailsLayouts = RailsLayout::new("10.10.0.0/16".parse().unwrap(), 2, 2).unwrap().into();
        let first = assign(&l, &BTreeMap::new(), &nodes(0..3));
        // A restart derives the same answer from the existing objects.
        assert_eq!(assign(&l, &first.hosts, &nodes(0..3)).hosts, first.hosts);
        // node-00001 goes; a newcomer must not get its index while it still exists...
        let mut with_new = nodes(0..3);
        with_new.insert("node-00009".into());
        let a = assign(&l, &first.hosts, &with_new);
        assert_eq!(a.hosts["node-00009"], 3, "the only free index");
        // ...and the network is now full: a fifth node is exhausted.
        with_new.insert("node-00010".into());
        let full = assign(&l, &a.hosts, &with_new);
        assert_eq!(full.exhausted, ["node-00010"]);
        // Once node-00001 is gone its index is reused.
        with_new.remove("node-00001");
        let after = assign(&l, &full.hosts, &with_new);
        assert_eq!(after.released, ["node-00001"]);
        assert_eq!(after.hosts["node-00010"], first.hosts["node-00001"]);
        assert!(after.exhausted.is_empty());
    }

    #[test]
    fn conflicting_or_out_of_range_existing_indexes_are_reassigned() {
        let l: RailsLayouts = RailsLayout::new("10.10.0.0/16".parse().unwrap(), 2, 2).unwrap().into();
        let existing = BTreeMap::from([("a".to_string(), 1), ("b".to_string(), 1), ("c".to_string(), 9)]);
        let all: BTreeSet<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let got = assign(&l, &existing, &all);
        assert_eq!(
            got.hosts,
            BTreeMap::from([("a".into(), 1), ("b".into(), 0), ("c".into(), 2)])
        );
    }

    #[test]
    fn dual_stack_nodes_get_a_block_per_rail_and_family() {
        let l = RailsLayouts {
            v4: Some(RailsLayout::new("10.10.0.0/16".parse().unwrap(), 8, 2).unwrap()),
            v6: Some(RailsLayout::new6("fd00:10::/64".parse().unwrap(), 8, 2).unwrap()),
        };
        let addresses = BTreeMap::from([
            (0, vec!["fd00:192:168::7".parse().unwrap()]),
            (1, vec!["192.168.1.7".parse().unwrap()]),
        ]);
        let got: Vec<(u32, String, Option<String>)> = node_blocks(&l, 7, 2, &addresses)
            .unwrap()
            .into_iter()
            .map(|b| (b.rail_index, b.cidr.to_string(), b.node_address.map(|a| a.to_string())))
            .collect();
        assert_eq!(
            got,
            [
                (0, "10.10.7.0/26".to_string(), None),
                (
                    0,
                    "fd00:10:0:0:700::/74".to_string(),
                    Some("fd00:192:168::7".to_string())
                ),
                (1, "10.10.7.64/26".to_string(), Some("192.168.1.7".to_string())),
                (1, "fd00:10:0:0:740::/74".to_string(), None),
            ]
        );
        // IPv6 only, with many host bits: the host count saturates, assignment still works.
        let v6: RailsLayouts = RailsLayout::new6("fd00::/32".parse().unwrap(), 64, 8).unwrap().into();
        assert_eq!(v6.hosts(), u64::MAX);
        let a = assign(&v6, &BTreeMap::new(), &nodes(0..3));
        assert_eq!(a.hosts.values().copied().collect::<Vec<_>>(), [0, 1, 2]);
        let b = node_blocks(&v6, 2, 1, &BTreeMap::new()).unwrap();
        assert_eq!(b[0].cidr.to_string(), "fd00::2:0:0/104");
    }
}
