//! The node plugin's RBAC is exactly what its code calls (issue 8, acceptance 4).
//!
//! The plugin runs its real API paths against the in-process API server: publishing the pool
//! (first publish with a stale slice to delete, then a republish), prepare (claim, NicNodeBlocks,
//! claim status), unprepare, the start-up reconcile that releases the plan of a deleted claim, and
//! the peer-routes loop (watches and lists of MultiNicNetworks and NicNodeBlocks; no network is
//! `l3` here, so it installs no route), and the pool loop (the status of its node's NicNodeBlocks
//! in a `pool` network).
//! Every request the server saw is mapped to an RBAC (apiGroup, resource, verb) the way the API
//! server authorizes it, and the set is compared with the ClusterRole in
//! `deploy/kubelet-plugin-rbac.yaml` in both directions: nothing missing, nothing unused.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use multinic_api::crd::node_blocks_name;
use multinic_api::rails::RailsLayout;
use multinic_kubelet_plugin::driver::{ClaimRef, Driver, DriverOptions, KubeClaimApi};
use multinic_kubelet_plugin::inventory::{Inventory, Nic};
use multinic_kubelet_plugin::publish::{KubeSliceStore, PublishOutcome, Publisher};
use multinic_kubelet_plugin::slices::{SliceOptions, slice_name};
use multinic_testkit::rbac::{Permission, granted_to, permissions_of};
use multinic_testkit::{FakeApiServer, fixtures};
use serde_json::{Value, json};

const NODE: &str = "node-r";
const DRIVER: &str = "multinic.dev";
const SA: &str = "multinic-kubelet-plugin";

fn nic(rail: usize) -> Nic {
    fixtures::roce_nic(rail)
}

fn inventory(n: usize) -> Inventory {
    Inventory {
        nics: (0..n).map(nic).collect(),
        ..Default::default()
    }
}

/// The rules of the plugin's ClusterRole, expanded; also checks the binding names the service
/// account of the DaemonSet.
fn granted() -> BTreeSet<Permission> {
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let text = std::fs::read_to_string(deploy.join("kubelet-plugin-rbac.yaml")).unwrap();
    let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    let of_kind = |kind: &str| -> Vec<&Value> { docs.iter().filter(|d| d["kind"] == kind).collect() };
    assert!(of_kind("Role").is_empty(), "the plugin needs no namespaced Role");
    let roles = of_kind("ClusterRole");
    assert_eq!(roles.len(), 1, "one ClusterRole");
    let binding = of_kind("ClusterRoleBinding");
    assert_eq!(binding.len(), 1);
    assert_eq!(binding[0]["roleRef"]["name"], roles[0]["metadata"]["name"]);
    assert_eq!(
        binding[0]["subjects"],
        json!([{"kind": "ServiceAccount", "name": SA, "namespace": "multinic-system"}])
    );
    let ds = std::fs::read_to_string(deploy.join("kubelet-plugin.yaml")).unwrap();
    assert!(ds.contains(&format!("serviceAccountName: {SA}")));
    let (cluster, namespaced) = granted_to(&text, SA);
    assert!(namespaced.is_empty());
    cluster
}

#[tokio::test]
async fn rbac_matches_the_calls_the_plugin_makes() {
    let api = FakeApiServer::start().await;
    let layout = RailsLayout::new("10.20.0.0/16".parse().unwrap(), 8, 2).unwrap();
    api.insert(json!({
        "apiVersion": "multinic.dev/v1alpha1", "kind": "NicNodeBlocks",
        "metadata": {"name": node_blocks_name("rails", NODE)},
        "spec": {"network": "rails", "nodeName": NODE, "hostIndex": 3,
                 "blocks": (0..2).map(|k| json!({"railIndex": k, "cidr": layout.block(3, k).unwrap().to_string()})).collect::<Vec<_>>()},
    }))
    .unwrap();
    // A slice of an older generation that the first publish must delete.
    api.insert(json!({
        "apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice",
        "metadata": {"name": slice_name(NODE, DRIVER, 1)},
        "spec": {"driver": DRIVER, "nodeName": NODE, "pool": {"name": NODE, "generation": 1, "resourceSliceCount": 2}, "devices": []},
    }))
    .unwrap();

    // Publishing: list the pool, apply (create), delete the stale slice; then a change (apply).
    // The pool's slices are watched, to publish again after the kubelet wipes them.
    let store = KubeSliceStore::new(api.client());
    let mut deleted = Box::pin(store.deleted_slices(&SliceOptions::new(NODE)));
    let watching = tokio::spawn(async move { while futures::StreamExt::next(&mut deleted).await.is_some() {} });
    let publisher = Publisher::new(store, SliceOptions::new(NODE));
    assert!(matches!(
        publisher.publish(&inventory(2)).await.unwrap(),
        PublishOutcome::Published { .. }
    ));
    assert!(matches!(
        publisher.publish(&inventory(1)).await.unwrap(),
        PublishOutcome::Published { .. }
    ));
    assert_eq!(
        api.list("resource.k8s.io/v1", "ResourceSlice", None).len(),
        1,
        "the stale slice was deleted"
    );

    // Prepare, unprepare, and the reconcile at start.
    let state = tempfile::tempdir().unwrap();
    let opts = DriverOptions::new(NODE, state.path(), Some(state.path().join("cdi")));
    let table = publisher.table();
    let device = table
        .get(&multinic_kubelet_plugin::slices::device_name(&nic(0)))
        .unwrap();
    let claim = |name: &str| -> ClaimRef {
        let created = api
            .insert(json!({
                "apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
                "metadata": {"name": name, "namespace": "ml"},
                "spec": {"devices": {"requests": [{"name": "nics", "exactly": {"deviceClassName": "rails"}}]}},
                "status": {
                    "allocation": {"devices": {
                        "results": [{"request": "nics", "driver": DRIVER, "pool": NODE, "device": device.device.name}],
                        "config": [{"source": "FromClass", "opaque": {"driver": DRIVER, "parameters": {
                            "network": "rails", "attachment": {"mode": "macvlan"},
                            "ipam": {"type": "rails", "subnet": "10.20.0.0/16", "hostBlock": 8, "interfaceBlock": 2}}}}],
                    }},
                    "reservedFor": [{"resource": "pods", "name": format!("{name}-pod"), "uid": format!("pod-{name}")}],
                },
            }))
            .unwrap();
        ClaimRef {
            namespace: "ml".into(),
            name: name.into(),
            uid: created["metadata"]["uid"].as_str().unwrap().into(),
        }
    };
    let (kept, gone) = (claim("kept"), claim("gone"));
    let driver = Driver::new(KubeClaimApi::new(api.client()), table.clone(), opts.clone()).unwrap();
    driver.prepare(&kept).await.unwrap();
    driver.prepare(&gone).await.unwrap();
    // A failing prepare (a device this node does not publish) records a Warning event on the
    // claim, and its retry extends the event's series.
    let foreign = api
        .insert(json!({
            "apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
            "metadata": {"name": "foreign", "namespace": "ml"},
            "spec": {"devices": {"requests": [{"name": "nics", "exactly": {"deviceClassName": "rails"}}]}},
            "status": {"allocation": {"devices": {"results": [{"request": "nics", "driver": DRIVER, "pool": NODE, "device": "no-such-device"}]}},
                       "reservedFor": [{"resource": "pods", "name": "foreign-pod", "uid": "pod-foreign"}]},
        }))
        .unwrap();
    let foreign = ClaimRef {
        namespace: "ml".into(),
        name: "foreign".into(),
        uid: foreign["metadata"]["uid"].as_str().unwrap().into(),
    };
    for _ in 0..2 {
        assert!(driver.prepare(&foreign).await.is_err());
    }
    driver.unprepare(&kept).await.unwrap();
    drop(driver);
    api.delete("resource.k8s.io/v1", "ResourceClaim", Some("ml"), "gone")
        .unwrap();
    let restarted = Driver::new(KubeClaimApi::new(api.client()), table.clone(), opts).unwrap();
    assert_eq!(restarted.reconcile().await, 1);
    // A pool network of this node: the pool loop writes the node's request to its status.
    api.insert(
        json!({"apiVersion": "multinic.dev/v1alpha1", "kind": "MultiNicNetwork", "metadata": {"name": "flat"},
        "spec": {"ipam": {"type": "pool", "subnet": "10.30.0.0/24"}}}),
    )
    .unwrap();
    api.insert(json!({"apiVersion": "multinic.dev/v1alpha1", "kind": "NicNodeBlocks",
        "metadata": {"name": node_blocks_name("flat", NODE)},
        "spec": {"network": "flat", "nodeName": NODE, "blocks": []}}))
        .unwrap();

    // The peer-routes loop: until it has listed and watched both kinds and synced once.
    let handle = multinic_kubelet_plugin::inventory::netlink::connect().unwrap();
    let (stores, changes) = multinic_kubelet_plugin::cluster::watch(api.client());
    let stores_pool = stores.clone();
    let routes = tokio::spawn(multinic_kubelet_plugin::routes::run_peer_routes(
        stores,
        changes,
        NODE.into(),
        table,
        handle,
        Duration::from_secs(3600),
    ));
    let seen = |resource: &str, watch: bool| {
        api.requests().iter().any(|r| {
            r.method == "GET"
                && r.path.ends_with(resource)
                && (r.has_query("watch", "true") || r.has_query("watch", "1")) == watch
        })
    };
    let want = |resource: &'static str| [(resource, false), (resource, true)];
    tokio::time::timeout(Duration::from_secs(30), async {
        while !seen("resourceslices", true) {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the pool's slices are watched");
    tokio::time::timeout(Duration::from_secs(30), async {
        while !want("multinicnetworks")
            .into_iter()
            .chain(want("nicnodeblocks"))
            .all(|(r, w)| seen(r, w))
        {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the peer-routes loop lists and watches MultiNicNetworks and NicNodeBlocks");
    let requests_pool = tokio::spawn(multinic_kubelet_plugin::pool::run(
        std::sync::Arc::new(restarted),
        kube::Api::all(api.client()),
        stores_pool,
        NODE.into(),
        Duration::from_millis(20),
    ));
    let status_path = format!("/nicnodeblocks/{}/status", node_blocks_name("flat", NODE));
    tokio::time::timeout(Duration::from_secs(30), async {
        while !api
            .requests()
            .iter()
            .any(|r| r.method == "PATCH" && r.path.ends_with(&status_path))
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the pool loop writes the node's request");
    requests_pool.abort();
    routes.abort();
    watching.abort();

    let requests = api.requests();
    assert!(!requests.is_empty());
    let used: BTreeSet<Permission> = requests.iter().flat_map(permissions_of).collect();
    let granted = granted();
    let show = |s: &BTreeSet<Permission>| -> Vec<String> {
        s.iter()
            .map(|(g, r, v, n)| {
                format!(
                    "{}/{r}:{v}{}",
                    if g.is_empty() { "core" } else { g },
                    if n.is_empty() { String::new() } else { format!("[{n}]") }
                )
            })
            .collect()
    };
    println!("verbs the plugin uses: {:?}", show(&used));
    let missing: BTreeSet<Permission> = used.difference(&granted).cloned().collect();
    let unused: BTreeSet<Permission> = granted.difference(&used).cloned().collect();
    assert!(
        missing.is_empty(),
        "the plugin calls what its ClusterRole does not grant: {:?}",
        show(&missing)
    );
    assert!(
        unused.is_empty(),
        "the ClusterRole grants what the plugin never calls: {:?}",
        show(&unused)
    );
}
