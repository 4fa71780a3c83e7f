//! The `multinic-controller` binary end to end against the test API server: it takes the lease,
//! watches networks and slices, and writes the DeviceClass and blocks; with the API server down it
//! stays quiet and idle, and takes the lease once the server is there.

use std::process::Command;
use std::time::{Duration, Instant};

use multinic_testkit::FakeApiServer;
use multinic_testkit::process::Watched;
use serde_json::json;

fn controller(kubeconfig: &std::path::Path, extra: &[&str]) -> Watched {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_multinic-controller"));
    cmd.arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--metrics-address", "127.0.0.1:0", "--identity", "replica-a"])
        .args(extra)
        .env("POD_NAMESPACE", "multinic-system")
        .env("RUST_LOG", "info");
    Watched::spawn(cmd).expect("start multinic-controller")
}

fn lease_holder(server: &FakeApiServer) -> Option<serde_json::Value> {
    server
        .get(
            "coordination.k8s.io/v1",
            "Lease",
            Some("multinic-system"),
            "multinic-controller",
        )
        .map(|l| l["spec"]["holderIdentity"].clone())
}

#[tokio::test]
async fn the_controller_binary_reconciles_networks_it_watches() {
    let dir = tempfile::tempdir().unwrap();
    let (server, kubeconfig) = FakeApiServer::start_with_kubeconfig(dir.path()).await.unwrap();
    server
        .insert(json!({"apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice", "metadata": {"name": "n1-multinic.dev-0"},
            "spec": {"driver": "multinic.dev", "nodeName": "n1", "pool": {"name": "n1", "generation": 1, "resourceSliceCount": 1},
                     "devices": [{"name": "pci-0000-16-00-0", "attributes": {"multinic.dev/rdma": {"bool": true}, "multinic.dev/railIndex": {"int": 0}}}]}}))
        .unwrap();
    server
        .insert(json!({"apiVersion": "multinic.dev/v1alpha1", "kind": "MultiNicNetwork", "metadata": {"name": "rails"},
            "spec": {"selector": "device.attributes[\"multinic.dev\"].rdma", "ipam": {"type": "rails", "subnet": "10.10.0.0/16", "hostBlock": 8, "interfaceBlock": 2}}}))
        .unwrap();
    let running = controller(&kubeconfig, &[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    loop {
        tick.tick().await;
        let class = server.get("resource.k8s.io/v1", "DeviceClass", None, "rails");
        let blocks = server.get("multinic.dev/v1alpha1", "NicNodeBlocks", None, "rails.n1");
        if class.is_some() && blocks.is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no DeviceClass/NicNodeBlocks after 30 s: {:#?}",
            running.lines()
        );
    }
    assert_eq!(lease_holder(&server), Some(json!("replica-a")));
}

fn slice(node: &str, rdma: bool) -> serde_json::Value {
    json!({"apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice", "metadata": {"name": format!("{node}-multinic.dev-0")},
        "spec": {"driver": "multinic.dev", "nodeName": node, "pool": {"name": node, "generation": 1, "resourceSliceCount": 1},
                 "devices": [{"name": "pci-0000-16-00-0", "attributes": {"multinic.dev/rdma": {"bool": rdma}, "multinic.dev/railIndex": {"int": 0}}}]}})
}

fn network(name: &str, rdma: bool, subnet: &str) -> serde_json::Value {
    json!({"apiVersion": "multinic.dev/v1alpha1", "kind": "MultiNicNetwork", "metadata": {"name": name},
        "spec": {"selector": format!("device.attributes[\"multinic.dev\"].rdma == {rdma}"),
                 "ipam": {"type": "rails", "subnet": subnet, "hostBlock": 8, "interfaceBlock": 2}}})
}

async fn wait_for(what: &str, running: &Watched, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "{what} after 30 s: {:#?}", running.lines());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_slice_change_reconciles_only_the_networks_it_concerns_from_one_watch() {
    let dir = tempfile::tempdir().unwrap();
    let (server, kubeconfig) = FakeApiServer::start_with_kubeconfig(dir.path()).await.unwrap();
    server.insert(slice("n1", true)).unwrap();
    server.insert(network("rdma", true, "10.10.0.0/16")).unwrap();
    server.insert(network("plain", false, "10.20.0.0/16")).unwrap();
    let running = controller(&kubeconfig, &[]);
    let blocks = |name: &str| {
        server
            .get("multinic.dev/v1alpha1", "NicNodeBlocks", None, name)
            .is_some()
    };
    let status = |name: &str| {
        server
            .get("multinic.dev/v1alpha1", "MultiNicNetwork", None, name)
            .is_some_and(|n| n["status"]["nodes"].is_number())
    };
    wait_for("no blocks rdma.n1 and no status of plain", &running, || {
        blocks("rdma.n1") && status("plain")
    })
    .await;
    // Let the first reconciles (and those their own writes trigger) settle.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let status_writes = |server: &FakeApiServer, name: &str| {
        server
            .requests()
            .iter()
            .filter(|r| r.method == "PATCH" && r.path.ends_with(&format!("/multinicnetworks/{name}/status")))
            .count()
    };
    server.clear_requests();

    // A new rdma node concerns "rdma" only.
    server.insert(slice("n2", true)).unwrap();
    wait_for("no blocks rdma.n2", &running, || blocks("rdma.n2")).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(status_writes(&server, "rdma") > 0, "rdma was reconciled");
    assert_eq!(
        status_writes(&server, "plain"),
        0,
        "plain selects no device of n2 and was reconciled"
    );

    // n2's NIC stops being rdma: "rdma" (which it leaves) and "plain" (which it joins) follow.
    server.insert(slice("n2", false)).unwrap();
    wait_for("rdma.n2 still there or no plain.n2", &running, || {
        !blocks("rdma.n2") && blocks("plain.n2")
    })
    .await;
    assert!(blocks("rdma.n1"), "n1 is untouched");

    // One watch of slices, no list per reconcile: only the watch's own list and watch requests.
    let slice_requests: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.path.contains("resourceslices"))
        .collect();
    assert!(
        slice_requests.iter().all(|r| r.has_query("watch", "true")),
        "slices are not listed again: {slice_requests:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_api_server_down_the_controller_is_quiet_and_leads_once_it_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let addr = multinic_testkit::closed_port_kubeconfig(&kubeconfig).unwrap();
    let mut controller = controller(&kubeconfig, &["--lease-seconds", "3"]);
    controller
        .observe(Duration::from_secs(5))
        .await
        .assert_quiet("controller, API server down", 50, 0.05);

    let server = FakeApiServer::try_start_on(addr).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while lease_holder(&server).is_none() {
        assert!(
            Instant::now() < deadline,
            "no lease 10 s after the API server came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(lease_holder(&server), Some(json!("replica-a")));
}
