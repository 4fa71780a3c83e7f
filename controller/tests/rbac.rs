//! The controller's RBAC (`deploy/controller-rbac.yaml`) is exactly what it calls: the binary runs
//! against the test API server through a network's life (create, reconcile, delete) and a lease
//! renewal; every request is mapped to an RBAC permission and compared in both directions.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use multinic_testkit::FakeApiServer;
use multinic_testkit::rbac::{granted_to, permissions_of};
use serde_json::json;

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tick.tick().await;
    }
}

#[tokio::test]
async fn controller_rbac_matches_its_calls() {
    let dir = tempfile::tempdir().unwrap();
    let (server, kubeconfig) = FakeApiServer::start_with_kubeconfig(dir.path()).await.unwrap();
    server
        .insert(json!({"apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice", "metadata": {"name": "n1-multinic.dev-0"},
            "spec": {"driver": "multinic.dev", "nodeName": "n1", "pool": {"name": "n1", "generation": 1, "resourceSliceCount": 1},
                     "devices": [{"name": "pci-0000-16-00-0", "attributes": {"multinic.dev/railIndex": {"int": 0}}}]}}))
        .unwrap();
    server
        .insert(
            json!({"apiVersion": "multinic.dev/v1alpha1", "kind": "MultiNicNetwork", "metadata": {"name": "rails"},
            "spec": {"ipam": {"type": "rails", "subnet": "10.10.0.0/16", "hostBlock": 8, "interfaceBlock": 2}}}),
        )
        .unwrap();
    // A pool network; node n9 holds a grant but publishes nothing: the controller reads its Node
    // (gone) and takes the grant back.
    server
        .insert(
            json!({"apiVersion": "multinic.dev/v1alpha1", "kind": "MultiNicNetwork", "metadata": {"name": "flat"},
            "spec": {"attachment": {"mode": "macvlan"}, "ipam": {"type": "pool", "subnet": "10.30.0.0/24"}}}),
        )
        .unwrap();
    server
        .insert(json!({"apiVersion": "multinic.dev/v1alpha1", "kind": "NicNodeBlocks", "metadata": {"name": "flat.n9", "labels": {"multinic.dev/network": "flat"}},
            "spec": {"network": "flat", "nodeName": "n9", "blocks": [], "grantedBlocks": ["10.30.0.0/28"]}}))
        .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_multinic-controller"))
        .args([
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--metrics-address",
            "127.0.0.1:0",
        ])
        .args(["--identity", "replica-a", "--lease-seconds", "3"])
        .env("POD_NAMESPACE", "multinic-system")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _child = Kill(child);
    wait_until("the blocks", || {
        server
            .get("multinic.dev/v1alpha1", "NicNodeBlocks", None, "rails.n1")
            .is_some()
    })
    .await;
    wait_until("n1's pool object, and n9's gone with its grant", || {
        server
            .get("multinic.dev/v1alpha1", "NicNodeBlocks", None, "flat.n1")
            .is_some()
            && server
                .get("multinic.dev/v1alpha1", "NicNodeBlocks", None, "flat.n9")
                .is_none()
    })
    .await;
    // The network goes: the controller removes its class and blocks, then the finalizer.
    let api: kube::Api<multinic_api::crd::MultiNicNetwork> = kube::Api::all(server.client());
    api.delete("rails", &Default::default()).await.unwrap();
    wait_until("the network to be gone", || {
        server
            .get("multinic.dev/v1alpha1", "MultiNicNetwork", None, "rails")
            .is_none()
    })
    .await;
    // A renewal of the lease (every second with --lease-seconds 3).
    wait_until("a lease renewal", || {
        server
            .requests()
            .iter()
            .any(|r| r.method == "PUT" && r.path.contains("/leases/"))
    })
    .await;

    let used: BTreeSet<_> = server
        .requests()
        .iter()
        .filter(|r| r.status < 400 || r.status == 404 || r.status == 409)
        // The test's own request (the user deleting the network) is not the controller's.
        .filter(|r| !(r.method == "DELETE" && r.path.ends_with("/multinicnetworks/rails")))
        .flat_map(permissions_of)
        .collect();
    let yaml =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/controller-rbac.yaml")).unwrap();
    let (cluster, namespaced) = granted_to(&yaml, "multinic-controller");
    let granted: BTreeSet<_> = cluster.union(&namespaced).cloned().collect();
    let missing: Vec<_> = used.difference(&granted).collect();
    let unused: Vec<_> = granted.difference(&used).collect();
    assert!(missing.is_empty(), "calls without RBAC: {missing:?}");
    assert!(unused.is_empty(), "RBAC never used: {unused:?}");
    assert!(
        namespaced.iter().all(|(g, _, _, _)| g == "coordination.k8s.io"),
        "only the lease is namespaced"
    );
}
