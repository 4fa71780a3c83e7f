//! The grant decision of `pool` networks (the protocol is in [`multinic_api::pool`]): pure, over
//! what the nodes' NicNodeBlocks say, so a restarted controller derives the same grants.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;
use multinic_api::pool::PoolLayout;

/// What one node's NicNodeBlocks says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodePool {
    /// `spec.grantedBlocks`.
    pub granted: Vec<IpNet>,
    /// `status.wantBlocks` (0 when the node has not asked).
    pub want: u32,
    /// `status.releasedBlocks`.
    pub released: Vec<IpNet>,
    /// The node publishes devices the network selects (only such nodes get new blocks).
    pub selected: bool,
}

/// The outcome of one grant round.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    /// Node → its grants after this round, in address order (every node of the input).
    pub granted: BTreeMap<String, Vec<IpNet>>,
    /// Nodes that want more blocks than are free, with how many they miss.
    pub short: BTreeMap<String, u32>,
    /// Blocks of the subnet no node holds or is releasing that have a usable address.
    pub free: usize,
}

/// Decides the grants. Each node keeps every granted block it has not released (also a block the
/// layout no longer holds: only the node knows whether a plan holds an address in it). A block is
/// free when it is in no node's grants and no node's `releasedBlocks` (so a released block is
/// granted again only after its node has seen it taken back) and has a usable address (excludes
/// are skipped by [`PoolLayout::addresses`]). Free blocks go, lowest first, one at a time to the
/// selected node missing the most (then by name), until no node misses any or none is free.
pub fn grant(layout: &PoolLayout, exclude: &[IpNet], nodes: &BTreeMap<String, NodePool>) -> Grants {
    let mut out = Grants::default();
    let mut taken: BTreeSet<IpNet> = BTreeSet::new();
    for (node, pool) in nodes {
        let released: BTreeSet<&IpNet> = pool.released.iter().collect();
        let mut kept: Vec<IpNet> = pool.granted.iter().filter(|b| !released.contains(b)).copied().collect();
        kept.sort();
        kept.dedup();
        taken.extend(pool.granted.iter().chain(&pool.released).copied());
        out.granted.insert(node.clone(), kept);
    }
    let mut free = layout
        .blocks()
        .map(IpNet::V4)
        .filter(|b| !taken.iter().any(|t| t.contains(b) || b.contains(t)))
        .filter(|b| layout.addresses(*b, exclude).next().is_some());
    let missing = |granted: &BTreeMap<String, Vec<IpNet>>, node: &str, pool: &NodePool| {
        let held = granted.get(node).map_or(0, Vec::len);
        (pool.want as usize).saturating_sub(held)
    };
    loop {
        let neediest = nodes
            .iter()
            .filter(|(_, p)| p.selected)
            .map(|(n, p)| (missing(&out.granted, n, p), n))
            .filter(|(m, _)| *m > 0)
            // The most missing first; of equals, the first name.
            .max_by(|a, b| a.0.cmp(&b.0).then_with(|| b.1.cmp(a.1)));
        let Some((_, node)) = neediest else { break };
        let Some(block) = free.next() else {
            for (n, p) in nodes.iter().filter(|(_, p)| p.selected) {
                let m = missing(&out.granted, n, p);
                if m > 0 {
                    out.short.insert(n.clone(), u32::try_from(m).unwrap_or(u32::MAX));
                }
            }
            break;
        };
        if let Some(g) = out.granted.get_mut(node) {
            g.push(block);
            g.sort();
        }
    }
    out.free = free.count();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn layout() -> PoolLayout {
        PoolLayout::new("10.99.0.0/26".parse().unwrap(), Some(29)).unwrap()
    }

    /// The Graphcore shape, small: the first half of the subnet excluded.
    fn exclude() -> Vec<IpNet> {
        vec![net("10.99.0.0/27")]
    }

    fn node(granted: &[&str], want: u32, released: &[&str]) -> NodePool {
        NodePool {
            granted: granted.iter().map(|b| net(b)).collect(),
            want,
            released: released.iter().map(|b| net(b)).collect(),
            selected: true,
        }
    }

    fn strings(g: &Grants, node: &str) -> Vec<String> {
        g.granted[node].iter().map(ToString::to_string).collect()
    }

    #[test]
    fn grant_table() {
        struct Case {
            what: &'static str,
            nodes: Vec<(&'static str, NodePool)>,
            want: Vec<(&'static str, Vec<&'static str>)>,
            short: Vec<(&'static str, u32)>,
            free: usize,
        }
        let cases = [
            Case {
                what: "first asks: lowest usable blocks, excluded ones skipped, one each in turn",
                nodes: vec![
                    ("a", node(&[], 2, &[])),
                    ("b", node(&[], 1, &[])),
                    ("c", node(&[], 0, &[])),
                ],
                want: vec![
                    ("a", vec!["10.99.0.32/29", "10.99.0.40/29"]),
                    ("b", vec!["10.99.0.48/29"]),
                    ("c", vec![]),
                ],
                short: vec![],
                free: 1,
            },
            Case {
                what: "kept grants stay, more than the range has: the short node is named",
                nodes: vec![
                    ("a", node(&["10.99.0.32/29", "10.99.0.40/29"], 3, &[])),
                    ("b", node(&["10.99.0.48/29"], 3, &[])),
                ],
                want: vec![
                    ("a", vec!["10.99.0.32/29", "10.99.0.40/29"]),
                    ("b", vec!["10.99.0.48/29", "10.99.0.56/29"]),
                ],
                short: vec![("a", 1), ("b", 1)],
                free: 0,
            },
            Case {
                what: "a released block leaves the grant and is not granted while still listed as released",
                nodes: vec![
                    ("a", node(&["10.99.0.32/29", "10.99.0.40/29"], 1, &["10.99.0.40/29"])),
                    ("b", node(&["10.99.0.48/29", "10.99.0.56/29"], 3, &[])),
                ],
                want: vec![
                    ("a", vec!["10.99.0.32/29"]),
                    ("b", vec!["10.99.0.48/29", "10.99.0.56/29"]),
                ],
                short: vec![("b", 1)],
                free: 0,
            },
            Case {
                what: "once the node dropped it from releasedBlocks the block is free again",
                nodes: vec![
                    ("a", node(&["10.99.0.32/29"], 1, &[])),
                    ("b", node(&["10.99.0.48/29", "10.99.0.56/29"], 3, &[])),
                ],
                want: vec![
                    ("a", vec!["10.99.0.32/29"]),
                    ("b", vec!["10.99.0.40/29", "10.99.0.48/29", "10.99.0.56/29"]),
                ],
                short: vec![],
                free: 0,
            },
            Case {
                what: "a grant outside the layout (the network changed) is kept and its range not granted",
                nodes: vec![("a", node(&["10.99.0.32/28"], 2, &[])), ("b", node(&[], 2, &[]))],
                want: vec![
                    ("a", vec!["10.99.0.32/28", "10.99.0.56/29"]),
                    ("b", vec!["10.99.0.48/29"]),
                ],
                short: vec![("b", 1)],
                free: 0,
            },
            Case {
                what: "wanting fewer than held takes nothing away",
                nodes: vec![("a", node(&["10.99.0.32/29", "10.99.0.40/29"], 0, &[]))],
                want: vec![("a", vec!["10.99.0.32/29", "10.99.0.40/29"])],
                short: vec![],
                free: 2,
            },
        ];
        for case in cases {
            let nodes: BTreeMap<String, NodePool> = case.nodes.into_iter().map(|(n, p)| (n.to_string(), p)).collect();
            let got = grant(&layout(), &exclude(), &nodes);
            for (n, want) in &case.want {
                assert_eq!(strings(&got, n), *want, "{}: node {n}", case.what);
            }
            let short: BTreeMap<String, u32> = case.short.iter().map(|(n, m)| (n.to_string(), *m)).collect();
            assert_eq!(got.short, short, "{}", case.what);
            assert_eq!(got.free, case.free, "{}", case.what);
            // Never one block in two nodes' grants.
            let all: Vec<&IpNet> = got.granted.values().flatten().collect();
            let distinct: BTreeSet<&IpNet> = all.iter().copied().collect();
            assert_eq!(all.len(), distinct.len(), "{}", case.what);
        }
    }

    #[test]
    fn unselected_nodes_keep_their_grants_but_get_no_more() {
        let mut gone = node(&["10.99.0.32/29"], 3, &[]);
        gone.selected = false;
        let nodes = BTreeMap::from([("a".to_string(), gone)]);
        let got = grant(&layout(), &exclude(), &nodes);
        assert_eq!(strings(&got, "a"), ["10.99.0.32/29"]);
        assert!(got.short.is_empty());
        assert_eq!(got.free, 3);
    }
}
