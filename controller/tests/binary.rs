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
    let server = FakeApiServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).unwrap();
    server
        .insert(json!({"apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice", "metadata": {"name": "n1-multinic.dev-0"},
            "spec": {"driver": "multinic.dev", "nodeName": "n1", "pool": {"name": "n1", "generation": 1, "resourceSliceCount": 1},
                     "devices": [{"name": "pci-0000-16-00-0", "attributes": {"multinic.dev/rdma": {"bool": true}, "multinic.dev/railIndex": {"int": 0}}}]}}))
        .unwrap();
    server
        .insert(json!({"apiVersion": "multinic.dev/v1alpha1", "kind": "MultiNicNetwork", "metadata": {"name": "rails"},
            "spec": {"selector": "device.attributes[\"multinic.dev\"].rdma", "ipam": {"type": "rails", "subnet": "10.10.0.0/16", "hostBlock": 8, "interfaceBlock": 2}}}))
        .unwrap();
    let _controller = controller(&kubeconfig, &[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    loop {
        tick.tick().await;
        let class = server.get("resource.k8s.io/v1", "DeviceClass", None, "rails");
        let blocks = server.get("multinic.dev/v1alpha1", "NicNodeBlocks", None, "rails.n1");
        if class.is_some() && blocks.is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "no DeviceClass/NicNodeBlocks after 30 s");
    }
    assert_eq!(lease_holder(&server), Some(json!("replica-a")));
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
