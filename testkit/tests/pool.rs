//! `pool` IPAM against a real kube-apiserver with the real, deployed multinic-controller
//! (e2e/cluster/pool.sh runs it; unlike tests/api, the controller must run): three Node objects
//! made by the test, a slice each, one pool network whose range is too small for fixed per-host
//! blocks (10.98.0.0/26 minus its first /27: 31 addresses in four /29 blocks; a fixed split over
//! 4 hosts would give each at most 8), and three node-side clients built on the plugin's own pool
//! code (`decide`, `pick`, `usable_blocks`, `write_request`) drawing addresses from their grants.
//! Node a draws 20 (three blocks), b 5 (the fourth), c gets no block and the network says
//! Exhausted naming c; a and b draw the rest: all 31 addresses, none twice, no block granted to
//! two nodes. Then a frees all of its addresses: it gives two empty blocks back (keeping one),
//! a drops them from its releasedBlocks once they left its grants, the controller grants them to
//! b and c, and c draws from its new block.
//!
//! Built only with `--features real-cluster`; the kubeconfig is `$MULTINIC_E2E_KUBECONFIG`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::resource::v1::ResourceSlice;
use kube::api::{Api, DeleteParams, PostParams};
use kube::{Client, ResourceExt};
use multinic_api::crd::{MultiNicNetwork, NicNodeBlocks, node_blocks_name};
use multinic_api::pool::PoolLayout;
use multinic_kubelet_plugin::pool::{decide, pick, usable_blocks, write_request};
use serde_json::json;

const NET: &str = "pool-rapi";
const NODES: [&str; 3] = ["pool-rapi-a", "pool-rapi-b", "pool-rapi-c"];
const SUBNET: &str = "10.98.0.0/26";
const EXCLUDE: &str = "10.98.0.0/27";

async fn connect() -> Client {
    let path = std::env::var_os("MULTINIC_E2E_KUBECONFIG")
        .unwrap_or_else(|| panic!("MULTINIC_E2E_KUBECONFIG is not set: this test needs a real kube-apiserver"));
    let kc = kube::config::Kubeconfig::read_from(&path).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .unwrap();
    Client::try_from(config).unwrap()
}

/// One node's side: its leased addresses and the blocks it decided to give back.
struct Client3 {
    node: &'static str,
    used: BTreeSet<IpAddr>,
    retired: BTreeSet<IpNet>,
}

impl Client3 {
    /// One round of the plugin's pool loop over the node's object as the API server has it:
    /// decide, retire, write the request when it changed. Returns the object.
    async fn sync(
        &mut self,
        api: &Api<NicNodeBlocks>,
        layout: &PoolLayout,
        exclude: &[IpNet],
    ) -> Option<NicNodeBlocks> {
        let nb = api.get_opt(&node_blocks_name(NET, self.node)).await.unwrap()?;
        self.retired.retain(|b| nb.spec.granted_blocks.contains(b));
        let status = nb.status.clone().unwrap_or_default();
        let request = decide(
            layout,
            exclude,
            &nb.spec.granted_blocks,
            &status.released_blocks,
            &self.retired,
            &self.used,
        );
        self.retired.extend(request.newly_released.iter().copied());
        if status.want_blocks != Some(request.want_blocks) || status.released_blocks != request.released_blocks {
            write_request(api, NET, self.node, &request).await.unwrap();
        }
        Some(nb)
    }

    /// Draws one address from the usable grants of `nb`, as prepare does.
    fn draw(&mut self, nb: &NicNodeBlocks, layout: &PoolLayout, exclude: &[IpNet]) -> Option<IpAddr> {
        let status = nb.status.clone().unwrap_or_default();
        let blocks = usable_blocks(layout, &nb.spec.granted_blocks, &status.released_blocks, &self.retired);
        let ip = pick(layout, &blocks, exclude, |ip| !self.used.contains(ip))?;
        self.used.insert(ip);
        Some(ip)
    }
}

async fn exhausted(networks: &Api<MultiNicNetwork>) -> Option<String> {
    let net = networks.get(NET).await.ok()?;
    net.status?
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Exhausted" && c.status == "True")
        .map(|c| c.message)
}

/// Draws until `client` holds `target` addresses (or, with `None`, until the network is
/// Exhausted and nothing is left to draw), syncing as the plugin's loop does.
async fn draw_until(
    client: &mut Client3,
    target: Option<usize>,
    api: &Api<NicNodeBlocks>,
    networks: &Api<MultiNicNetwork>,
    layout: &PoolLayout,
    exclude: &[IpNet],
) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if target.is_some_and(|t| client.used.len() >= t) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} holds {} addresses, wanted {target:?}",
            client.node,
            client.used.len()
        );
        let Some(nb) = client.sync(api, layout, exclude).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        if client.draw(&nb, layout, exclude).is_some() {
            continue;
        }
        if target.is_none() && exhausted(networks).await.is_some() {
            // A last sync and draw: a grant may have landed between the two reads.
            if let Some(nb) = client.sync(api, layout, exclude).await
                && client.draw(&nb, layout, exclude).is_some()
            {
                continue;
            }
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn cleanup(client: &Client) {
    let networks: Api<MultiNicNetwork> = Api::all(client.clone());
    let slices: Api<ResourceSlice> = Api::all(client.clone());
    let nodes: Api<Node> = Api::all(client.clone());
    let blocks: Api<NicNodeBlocks> = Api::all(client.clone());
    let _ = networks.delete(NET, &DeleteParams::default()).await;
    for n in NODES {
        let _ = slices
            .delete(&format!("{n}-multinic.dev"), &DeleteParams::default())
            .await;
        let _ = nodes.delete(n, &DeleteParams::default()).await;
    }
    // The controller's finalizer removes the network's NicNodeBlocks with it.
    let deadline = Instant::now() + Duration::from_secs(60);
    while leftovers(&networks, &blocks).await {
        assert!(
            Instant::now() < deadline,
            "the network {NET} and its NicNodeBlocks did not go"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Whether the network or a NicNodeBlocks of it still exists (an error counts as existing).
async fn leftovers(networks: &Api<MultiNicNetwork>, blocks: &Api<NicNodeBlocks>) -> bool {
    if !matches!(networks.get_opt(NET).await, Ok(None)) {
        return true;
    }
    for n in NODES {
        if !matches!(blocks.get_opt(&node_blocks_name(NET, n)).await, Ok(None)) {
            return true;
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_a_range_too_small_for_fixed_blocks() {
    let client = connect().await;
    cleanup(&client).await;
    let nodes: Api<Node> = Api::all(client.clone());
    let slices: Api<ResourceSlice> = Api::all(client.clone());
    let networks: Api<MultiNicNetwork> = Api::all(client.clone());
    let api: Api<NicNodeBlocks> = Api::all(client.clone());
    for n in NODES {
        let node: Node = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": n, "labels": {"multinic.dev/test": "pool"}},
            "spec": {"taints": [{"key": "multinic.dev/test", "effect": "NoSchedule"}]}}))
        .unwrap();
        nodes.create(&PostParams::default(), &node).await.unwrap();
        let slice: ResourceSlice = serde_json::from_value(json!({"apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice",
            "metadata": {"name": format!("{n}-multinic.dev")},
            "spec": {"driver": "multinic.dev", "nodeName": n, "pool": {"name": n, "generation": 1, "resourceSliceCount": 1},
                     "devices": [{"name": "pooltest0", "attributes": {
                         "multinic.dev/ifName": {"string": "pooltest0"}, "multinic.dev/railIndex": {"int": 0}}}]}}))
        .unwrap();
        slices.create(&PostParams::default(), &slice).await.unwrap();
    }
    let net: MultiNicNetwork =
        serde_json::from_value(json!({"apiVersion": "multinic.dev/v1alpha1", "kind": "MultiNicNetwork",
        "metadata": {"name": NET},
        "spec": {"selector": "device.attributes[\"multinic.dev\"].ifName == \"pooltest0\"",
                 "attachment": {"mode": "macvlan"},
                 "ipam": {"type": "pool", "subnet": SUBNET, "blockPrefix": 29, "exclude": [EXCLUDE]}}}))
        .unwrap();
    networks.create(&PostParams::default(), &net).await.unwrap();
    let layout = PoolLayout::new(SUBNET.parse().unwrap(), Some(29)).unwrap();
    let exclude: Vec<IpNet> = vec![EXCLUDE.parse().unwrap()];
    let usable: usize = layout
        .blocks()
        .map(|b| layout.addresses(IpNet::V4(b), &exclude).count())
        .sum();
    assert_eq!(usable, 31);

    let mut clients: Vec<Client3> = NODES
        .iter()
        .map(|n| Client3 {
            node: n,
            used: BTreeSet::new(),
            retired: BTreeSet::new(),
        })
        .collect();
    let t = Instant::now();
    let [a, b, c] = &mut clients[..] else {
        unreachable!("three clients")
    };
    // a's pods take 20 addresses (three blocks), b's 5 (the fourth): more than a fixed quarter
    // of the range for a. c asks for a block and gets none: the network says Exhausted, naming c.
    draw_until(a, Some(20), &api, &networks, &layout, &exclude).await;
    draw_until(b, Some(5), &api, &networks, &layout, &exclude).await;
    draw_until(c, None, &api, &networks, &layout, &exclude).await;
    // b asked for a second block too; the message names c once the controller saw c's request.
    let deadline = Instant::now() + Duration::from_secs(60);
    let message = loop {
        match exhausted(&networks).await {
            Some(m) if m.contains("node pool-rapi-c") => break m,
            other => assert!(Instant::now() < deadline, "Exhausted naming c, got {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        message.contains("pool 10.98.0.0/26 excluding 10.98.0.0/27") && message.contains("node pool-rapi-c"),
        "{message}"
    );
    assert!(
        c.used.is_empty(),
        "c drew {:?} with every block granted to a and b",
        c.used
    );
    // a and b draw what is left in their blocks: the whole range, each address once.
    draw_until(a, None, &api, &networks, &layout, &exclude).await;
    draw_until(b, None, &api, &networks, &layout, &exclude).await;
    println!(
        "drawn in {:?}: a {}, b {}, c {} of {usable}; Exhausted: {message}",
        t.elapsed(),
        a.used.len(),
        b.used.len(),
        c.used.len()
    );
    let all: Vec<IpAddr> = clients.iter().flat_map(|c| c.used.iter().copied()).collect();
    let distinct: BTreeSet<IpAddr> = all.iter().copied().collect();
    assert_eq!(all.len(), distinct.len(), "an address drawn by two nodes");
    assert_eq!(all.len(), usable, "every usable address drawn once");
    assert!(all.iter().all(|ip| !exclude[0].contains(ip)));
    let granted = grants(&api).await;
    println!("grants: {granted:?}");
    let blocks: Vec<&IpNet> = granted.values().flatten().collect();
    assert_eq!(
        blocks.len(),
        blocks.iter().collect::<BTreeSet<_>>().len(),
        "a block granted twice"
    );

    // a's pods go: it gives its empty blocks back (keeping one), c draws them.
    let [a, _, c] = &mut clients[..] else {
        unreachable!("three clients")
    };
    a.used.clear();
    let deadline = Instant::now() + Duration::from_secs(60);
    while grants(&api).await.get(a.node).map_or(0, Vec::len) > 1 {
        assert!(
            Instant::now() < deadline,
            "a kept its empty blocks: {:?}",
            grants(&api).await
        );
        a.sync(&api, &layout, &exclude).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // a's loop runs on, as the plugin's does: once the controller took the blocks out of a's
    // grants, a drops them from releasedBlocks, and only then are they free for b and c.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let nb = a.sync(&api, &layout, &exclude).await;
        let listed = nb.and_then(|nb| nb.status).map_or(0, |s| s.released_blocks.len());
        if listed == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "a still lists {listed} released blocks");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let before = c.used.len();
    draw_until(c, Some(before + 8), &api, &networks, &layout, &exclude).await;
    let granted = grants(&api).await;
    println!(
        "after a freed its addresses: c holds {} (was {before}); grants: {granted:?}",
        c.used.len()
    );
    let blocks: Vec<&IpNet> = granted.values().flatten().collect();
    assert_eq!(
        blocks.len(),
        blocks.iter().collect::<BTreeSet<_>>().len(),
        "a block granted twice"
    );
    let all: Vec<IpAddr> = clients.iter().flat_map(|c| c.used.iter().copied()).collect();
    assert_eq!(
        all.len(),
        all.iter().collect::<BTreeSet<_>>().len(),
        "an address drawn by two nodes"
    );
    // Every address a client holds is in one of its own grants.
    for cl in &clients {
        let own = granted.get(cl.node).cloned().unwrap_or_default();
        assert!(
            cl.used.iter().all(|ip| own.iter().any(|b| b.contains(ip))),
            "{} holds an address outside its grants",
            cl.node
        );
    }
    cleanup(&client).await;
}

async fn grants(api: &Api<NicNodeBlocks>) -> BTreeMap<String, Vec<IpNet>> {
    let mut out = BTreeMap::new();
    for n in NODES {
        if let Some(nb) = api.get_opt(&node_blocks_name(NET, n)).await.unwrap() {
            out.insert(nb.spec.node_name.clone(), nb.spec.granted_blocks.clone());
            assert_eq!(nb.name_any(), node_blocks_name(NET, n));
        }
    }
    out
}
