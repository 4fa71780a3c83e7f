//! The `multinic-controller` binary end to end against the test API server: it takes the lease,
//! watches networks and slices, and writes the DeviceClass and blocks.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use multinic_testkit::FakeApiServer;
use serde_json::json;

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
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
    let child = Command::new(env!("CARGO_BIN_EXE_multinic-controller"))
        .args([
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--metrics-address",
            "127.0.0.1:0",
            "--identity",
            "replica-a",
        ])
        .env("POD_NAMESPACE", "multinic-system")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let _child = Kill(child);
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
    let lease = server
        .get(
            "coordination.k8s.io/v1",
            "Lease",
            Some("multinic-system"),
            "multinic-controller",
        )
        .unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "replica-a");
}
