//! Acceptance (issue 13, 1): rails stay put while pods hold NICs, with the real
//! `multinic-kubelet-plugin` and `multinic-cni` binaries in network namespaces made by the test.
//!
//! A node netns with 4 veth NICs (peers in another netns) and a peer node's blocks of an
//! `routing.mode: l3` network. Pod A takes the rail-1 NIC (host-device: the NIC moves); the plugin
//! is restarted; a claim for the rail-2 NIC gets an address of block (host, 2) on pod B's `net1`;
//! the plugin is restarted again. Throughout, the slice lists all 4 NICs with the rails and
//! attributes of the first publish, and the peer route of each rail leaves through that rail's
//! NIC while it is on the node. Needs root; with `CI=true` a missing privilege fails.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use multinic_api::rails::RailsLayout;
use multinic_cli::bench::dra::{self, BenchClaim, Client};
use multinic_cli::bench::fixtures::{CniCall, Netns, VethNode, exec_cni_async};
use multinic_cli::bench::rss::{NsApi, Proc};
use multinic_testkit::FakeApiServer;
use serde_json::{Value, json};

const NICS: usize = 4;
const PEER: &str = "peer-node";
const PEER_HOST: u32 = 3;

fn bins() -> (PathBuf, PathBuf) {
    let dir = Path::new(env!("CARGO_BIN_EXE_multinic"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let (plugin, cni) = (dir.join("multinic-kubelet-plugin"), dir.join("multinic-cni"));
    for bin in [&plugin, &cni] {
        assert!(
            bin.exists(),
            "{} is missing: run `cargo test --workspace` (it builds every binary)",
            bin.display()
        );
    }
    (plugin, cni)
}

fn ip_json(args: &[&str]) -> Value {
    let out = std::process::Command::new("ip")
        .arg("-j")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("ip: {e}"));
    assert!(
        out.status.success(),
        "ip -j {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

/// Every published device by name (the whole JSON, attributes included).
fn published(api: &FakeApiServer) -> BTreeMap<String, Value> {
    api.list("resource.k8s.io/v1", "ResourceSlice", None)
        .iter()
        .flat_map(|s| s["spec"]["devices"].as_array().cloned().unwrap_or_default())
        .filter_map(|d| Some((d["name"].as_str()?.to_string(), d)))
        .collect()
}

fn rail_of(device: &Value) -> i64 {
    device["attributes"]["multinic.dev/railIndex"]["int"]
        .as_i64()
        .unwrap_or_else(|| panic!("no railIndex on {device}"))
}

fn if_name(device: &Value) -> String {
    device["attributes"]["multinic.dev/ifName"]["string"]
        .as_str()
        .unwrap_or_else(|| panic!("no ifName on {device}"))
        .to_string()
}

/// Our peer routes in the node netns: destination -> device.
fn peer_routes(node: &Netns) -> BTreeMap<String, String> {
    ip_json(&["-n", &node.name, "route", "show", "proto", "201"])
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| Some((r["dst"].as_str()?.to_string(), r["dev"].as_str()?.to_string())))
        .collect()
}

/// Waits until the node's peer routes are `want` (the route loop runs after each publish).
async fn wait_routes(node: &Netns, want: &BTreeMap<String, String>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = peer_routes(node);
        if &got == want {
            return;
        }
        assert!(Instant::now() < deadline, "peer routes {got:?}, wanted {want:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The IPv4 address of `ifname` in `pod`.
fn pod_addr(pod: &Netns, ifname: &str) -> std::net::Ipv4Addr {
    let v = ip_json(&["-n", &pod.name, "-4", "addr", "show", "dev", ifname]);
    v[0]["addr_info"][0]["local"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("{ifname} in {} has no IPv4 address: {v}", pod.name))
}

struct Sandbox {
    node: Netns,
    api: NsApi,
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
    plugin: PathBuf,
    cni: PathBuf,
    layout: RailsLayout,
}

impl Sandbox {
    /// (Re)starts the plugin on the same state dir and waits until it serves all NICs.
    async fn plugin(&self) -> (Proc, Client) {
        let proc = Proc::start(
            &self.plugin,
            Some(&self.node),
            dra::NODE,
            self.dir.path(),
            &self.kubeconfig,
            &["--allow-virtual"],
        )
        .unwrap_or_else(|e| panic!("starting the plugin: {e:#}"));
        proc.wait_ready(NICS, Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("{e:#}"));
        let client = dra::connect(&self.dir.path().join("plugins").join("dra.sock"))
            .await
            .unwrap_or_else(|e| panic!("dialling the plugin: {e:#}"));
        (proc, client)
    }

    async fn cni(&self, command: &'static str, claim: &BenchClaim, pod: &Netns) {
        let conf = json!({"cniVersion": "1.1.0", "name": "rails", "type": "multinic-cni",
                          "stateDir": self.dir.path().join("state")});
        let host = self.node.file.try_clone().unwrap_or_else(|e| panic!("{e}"));
        exec_cni_async(
            self.cni.clone(),
            host,
            CniCall::for_pod(command, format!("ctr-{}", claim.name), pod, &claim.pod_uid, &self.cni),
            conf,
        )
        .await
        .unwrap_or_else(|e| panic!("CNI {command}: {e:#}"));
    }

    /// An allocated host-device claim for `device`, prepared and attached to a new pod netns.
    async fn pod_with(&self, client: &mut Client, device: &str) -> (BenchClaim, Netns) {
        let params = dra::params(&self.layout, "host-device");
        let claim = dra::insert_claim(&self.api.api, &[device], &params).unwrap_or_else(|e| panic!("{e:#}"));
        let resp = dra::prepare(client, vec![claim.v1()])
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        let prepared = &resp.claims[&claim.uid];
        assert!(prepared.error.is_empty(), "prepare {device}: {}", prepared.error);
        let pod = Netns::new("ledgerpod").unwrap_or_else(|e| panic!("{e:#}"));
        self.cni("ADD", &claim, &pod).await;
        (claim, pod)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rails_hold_while_pods_take_nics_and_the_plugin_restarts() {
    if !multinic_testkit::fixtures::can_run_as_root("rails_hold_while_pods_take_nics_and_the_plugin_restarts") {
        return;
    }
    let (plugin, cni) = bins();
    let sandbox = VethNode::new("ledger", NICS, None, |k| (format!("lnic{k}"), format!("lpeer{k}")))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let node = sandbox.node;
    let api = NsApi::start(Some(&node)).unwrap_or_else(|e| panic!("{e:#}"));
    let layout = RailsLayout::new("10.10.0.0/16".parse().unwrap(), 8, 5).unwrap();
    dra::insert_blocks(&api.api, &layout, NICS as u32).unwrap_or_else(|e| panic!("{e:#}"));
    api.api
        .insert(json!({"apiVersion": "multinic.dev/v1alpha1", "kind": "MultiNicNetwork",
            "metadata": {"name": dra::NETWORK},
            "spec": {"routing": {"mode": "l3"},
                     "ipam": {"type": "rails", "subnet": "10.10.0.0/16", "hostBlock": 8, "interfaceBlock": 5}}}))
        .unwrap_or_else(|e| panic!("{e}"));
    let peer_blocks: Vec<Value> = (0..NICS as u32)
        .map(|k| json!({"railIndex": k, "cidr": layout.block(PEER_HOST, k).unwrap().to_string()}))
        .collect();
    api.api
        .insert(json!({"apiVersion": "multinic.dev/v1alpha1", "kind": "NicNodeBlocks",
            "metadata": {"name": format!("{}.{PEER}", dra::NETWORK)},
            "spec": {"network": dra::NETWORK, "nodeName": PEER, "hostIndex": PEER_HOST, "blocks": peer_blocks}}))
        .unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    api.api.write_kubeconfig(&kubeconfig).unwrap();
    let sb = Sandbox {
        node,
        api,
        dir,
        kubeconfig,
        plugin,
        cni,
        layout,
    };

    // First publish: the rails every later check compares against.
    let (proc, mut client) = sb.plugin().await;
    let first = published(&sb.api.api);
    assert_eq!(first.len(), NICS, "{first:?}");
    let by_rail: BTreeMap<i64, (String, String)> = first
        .iter()
        .map(|(name, d)| (rail_of(d), (name.clone(), if_name(d))))
        .collect();
    assert_eq!(by_rail.keys().copied().collect::<Vec<_>>(), [0, 1, 2, 3], "{first:?}");
    let routes_with = |rails: &[i64]| -> BTreeMap<String, String> {
        rails
            .iter()
            .map(|&k| {
                let block = sb.layout.block(PEER_HOST, u32::try_from(k).unwrap()).unwrap();
                (block.to_string(), by_rail[&k].1.clone())
            })
            .collect()
    };
    wait_routes(&sb.node, &routes_with(&[0, 1, 2, 3])).await;

    // Pod A takes the rail-1 NIC: it leaves the node, its rail and its slice entry stay.
    let (claim_a, pod_a) = sb.pod_with(&mut client, &by_rail[&1].0).await;
    let a_addr = pod_addr(&pod_a, "net1");
    assert!(
        sb.layout.block(dra::HOST_INDEX, 1).unwrap().contains(&a_addr),
        "pod A's net1 {a_addr} is not in block (host, rail 1)"
    );
    wait_routes(&sb.node, &routes_with(&[0, 2, 3])).await;
    drop(client);
    drop(proc);

    let (proc, mut client) = sb.plugin().await;
    assert_eq!(
        published(&sb.api.api),
        first,
        "after pod A took the rail-1 NIC and a plugin restart"
    );
    wait_routes(&sb.node, &routes_with(&[0, 2, 3])).await;

    // Pod B claims the rail-2 NIC: an address of block (host, 2) on its net1.
    let (claim_b, pod_b) = sb.pod_with(&mut client, &by_rail[&2].0).await;
    let b_addr = pod_addr(&pod_b, "net1");
    assert!(
        sb.layout.block(dra::HOST_INDEX, 2).unwrap().contains(&b_addr),
        "pod B's net1 {b_addr} is not in block (host, rail 2)"
    );
    assert_eq!(published(&sb.api.api), first, "after pod B took the rail-2 NIC");
    wait_routes(&sb.node, &routes_with(&[0, 3])).await;
    drop(client);
    drop(proc);

    let (proc, mut client) = sb.plugin().await;
    assert_eq!(published(&sb.api.api), first, "after a second plugin restart");
    wait_routes(&sb.node, &routes_with(&[0, 3])).await;

    // Both pods go: the NICs come back under their names, on their rails.
    for (claim, pod) in [(&claim_a, &pod_a), (&claim_b, &pod_b)] {
        sb.cni("DEL", claim, pod).await;
        dra::unprepare(&mut client, vec![claim.v1()])
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
    }
    wait_routes(&sb.node, &routes_with(&[0, 1, 2, 3])).await;
    assert_eq!(published(&sb.api.api), first, "after both pods left");
    drop(client);
    drop(proc);
}
