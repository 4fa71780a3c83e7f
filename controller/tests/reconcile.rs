//! Acceptance: the controller against the in-process test API server.

use std::sync::Arc;

use k8s_openapi::api::resource::v1::{DeviceClass, ResourceSlice};
use kube::Api;
use kube::api::DeleteParams;
use kube::runtime::watcher::Event;
use multinic_api::crd::{MultiNicNetwork, NicNodeBlocks};
use multinic_controller::reconcile::{Context, FINALIZER, Outcome, apply_network, reconcile};
use multinic_controller::slices::SliceTracker;
use multinic_testkit::FakeApiServer;
use serde_json::{Value, json};

fn slice(node: &str, devices: &[(bool, i64)]) -> Value {
    let devices: Vec<Value> = devices
        .iter()
        .enumerate()
        .map(|(i, (rdma, rail))| {
            json!({"name": format!("pci-0000-{i:02x}-00-0"), "attributes": {
                "multinic.dev/rdma": {"bool": rdma}, "multinic.dev/railIndex": {"int": rail}}})
        })
        .collect();
    json!({"apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice",
        "metadata": {"name": format!("{node}-multinic.dev-0")},
        "spec": {"driver": "multinic.dev", "nodeName": node,
                 "pool": {"name": node, "generation": 1, "resourceSliceCount": 1}, "devices": devices}})
}

fn network(name: &str, selector: &str, ipam: Value) -> Value {
    json!({"apiVersion": "multinic.dev/v1alpha1", "kind": "MultiNicNetwork", "metadata": {"name": name},
        "spec": {"selector": selector, "attachment": {"mode": "host-device"}, "ipam": ipam,
                 "routing": {"mode": "l3", "policyRouting": true}}})
}

fn rails(subnet: &str, host: u8, iface: u8) -> Value {
    json!({"type": "rails", "subnet": subnet, "hostBlock": host, "interfaceBlock": iface})
}

const RDMA: &str = r#"device.attributes["multinic.dev"].rdma == true"#;

/// The context of a reconcile: the slices the server holds now, in a ready store, filled without
/// a request (the reconcile must not list slices itself).
fn context(server: &FakeApiServer) -> Context {
    let (slices, mut tracker) = SliceTracker::new();
    tracker.apply(Event::Init);
    for slice in server.list("resource.k8s.io/v1", "ResourceSlice", None) {
        let slice: ResourceSlice = serde_json::from_value(slice).unwrap();
        tracker.apply(Event::InitApply(slice));
    }
    tracker.apply(Event::InitDone);
    Context {
        client: server.client(),
        slices,
    }
}

async fn get(server: &FakeApiServer, name: &str) -> MultiNicNetwork {
    Api::<MultiNicNetwork>::all(server.client()).get(name).await.unwrap()
}

/// One pass of the spec-to-objects body on the network as the server has it.
async fn apply(server: &FakeApiServer, name: &str) -> Outcome {
    let net = get(server, name).await;
    apply_network(&context(server), &net).await.unwrap()
}

/// One pass of the controller's reconcile (with the finalizer).
async fn reconcile_once(server: &FakeApiServer, name: &str) {
    let net = Arc::new(get(server, name).await);
    reconcile(net, Arc::new(context(server))).await.unwrap();
}

fn blocks(server: &FakeApiServer) -> Vec<(String, u32, Vec<String>)> {
    server
        .list("multinic.dev/v1alpha1", "nicnodeblocks", None)
        .into_iter()
        .map(|nb| {
            let nb: NicNodeBlocks = serde_json::from_value(nb).unwrap();
            (
                nb.spec.node_name,
                nb.spec.host_index,
                nb.spec.blocks.iter().map(|b| b.cidr.to_string()).collect(),
            )
        })
        .collect()
}

#[tokio::test]
async fn network_yields_class_and_blocks_follows_edits_and_cleans_up_on_delete() {
    let server = FakeApiServer::start().await;
    server.insert(slice("n1", &[(true, 0), (true, 1), (false, 2)])).unwrap();
    server.insert(slice("n2", &[(true, 0), (true, 1)])).unwrap();
    server.insert(slice("n3", &[(false, 0)])).unwrap();
    server
        .insert(network("rails", RDMA, rails("10.10.0.0/16", 8, 2)))
        .unwrap();

    // The first pass only adds the finalizer; the next one creates the objects.
    let classes: Api<DeviceClass> = Api::all(server.client());
    reconcile_once(&server, "rails").await;
    let net = get(&server, "rails").await;
    assert_eq!(net.metadata.finalizers.as_deref(), Some(&[FINALIZER.to_string()][..]));
    assert!(
        classes.get_opt("rails").await.unwrap().is_none(),
        "nothing before the finalizer"
    );
    server.clear_requests();
    reconcile_once(&server, "rails").await;
    assert!(
        server.requests().iter().all(|r| !r.path.contains("resourceslices")),
        "nodes come from the store, not a list: {:?}",
        server.requests()
    );
    let class = classes.get("rails").await.unwrap();
    let selectors: Vec<String> = class
        .spec
        .selectors
        .iter()
        .flatten()
        .map(|s| s.cel.as_ref().unwrap().expression.clone())
        .collect();
    assert_eq!(
        selectors,
        [r#"device.driver == "multinic.dev""#.to_string(), RDMA.to_string()]
    );
    let params = &class.spec.config.as_ref().unwrap()[0]
        .opaque
        .as_ref()
        .unwrap()
        .parameters
        .0;
    assert_eq!(params["network"], "rails");
    assert_eq!(params["ipam"]["subnet"], "10.10.0.0/16");
    assert_eq!(
        blocks(&server),
        [
            ("n1".into(), 0, vec!["10.10.0.0/26".into(), "10.10.0.64/26".into()]),
            ("n2".into(), 1, vec!["10.10.1.0/26".into(), "10.10.1.64/26".into()]),
        ]
    );
    let networks: Api<MultiNicNetwork> = Api::all(server.client());
    let status = networks.get("rails").await.unwrap().status.unwrap();
    assert_eq!(status.nodes, Some(2));
    assert_eq!(status.device_class_name.as_deref(), Some("rails"));
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!(ready.status, "True");
    // Idempotent: a second pass changes nothing, and writes no NicNodeBlocks.
    server.clear_requests();
    assert_eq!(apply(&server, "rails").await, Outcome::Ready { nodes: 2 });
    assert_eq!(blocks(&server).len(), 2);
    let writes: Vec<String> = server
        .requests()
        .into_iter()
        .filter(|r| r.method != "GET" && r.path.contains("/nicnodeblocks"))
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert!(writes.is_empty(), "unchanged objects are not applied again: {writes:?}");

    // Editing the selector updates the class and moves the blocks (n1 still matches through its rail-2 device).
    let mut edited = server
        .get("multinic.dev/v1alpha1", "MultiNicNetwork", None, "rails")
        .unwrap();
    edited["spec"]["selector"] = json!(r#"device.attributes["multinic.dev"].rdma == false"#);
    server.insert(edited).unwrap();
    assert_eq!(apply(&server, "rails").await, Outcome::Ready { nodes: 2 });
    let class = classes.get("rails").await.unwrap();
    assert_eq!(
        class.spec.selectors.as_ref().unwrap()[1]
            .cel
            .as_ref()
            .unwrap()
            .expression,
        r#"device.attributes["multinic.dev"].rdma == false"#
    );
    let nodes: Vec<(String, u32)> = blocks(&server).into_iter().map(|(n, h, _)| (n, h)).collect();
    assert_eq!(
        nodes,
        [("n1".to_string(), 0), ("n3".to_string(), 1)],
        "n1 keeps its index, n2's is freed, n3 takes it"
    );

    // Deleting the network removes what it created.
    let net = networks.get("rails").await.unwrap();
    assert!(net.metadata.finalizers.iter().flatten().any(|f| f == FINALIZER));
    networks.delete("rails", &DeleteParams::default()).await.unwrap();
    reconcile_once(&server, "rails").await;
    assert!(classes.get_opt("rails").await.unwrap().is_none());
    assert!(blocks(&server).is_empty());
    assert!(
        networks.get_opt("rails").await.unwrap().is_none(),
        "the finalizer is gone, so is the network"
    );
}

/// More NicNodeBlocks than one list page (500): the reconcile and the cleanup read every page, so
/// every node keeps its host index and the delete leaves none behind.
#[tokio::test]
async fn networks_larger_than_a_list_page_are_read_whole() {
    let server = FakeApiServer::start().await;
    let nodes = 501;
    for n in 0..nodes {
        server.insert(slice(&format!("n{n:03}"), &[(true, 0)])).unwrap();
    }
    server.insert(network("big", RDMA, rails("10.0.0.0/8", 10, 2))).unwrap();
    reconcile_once(&server, "big").await;
    reconcile_once(&server, "big").await;
    let before = blocks(&server);
    assert_eq!(before.len(), nodes);

    server.clear_requests();
    assert_eq!(apply(&server, "big").await, Outcome::Ready { nodes });
    let lists: Vec<String> = server
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path.ends_with("/nicnodeblocks"))
        .map(|r| r.query)
        .collect();
    assert_eq!(lists.len(), 2, "two pages: {lists:?}");
    assert!(lists.iter().all(|q| q.contains("limit=500")), "{lists:?}");
    assert!(lists[1].contains("continue="), "{lists:?}");
    assert_eq!(blocks(&server), before, "every node keeps its host index and blocks");

    Api::<MultiNicNetwork>::all(server.client())
        .delete("big", &DeleteParams::default())
        .await
        .unwrap();
    reconcile_once(&server, "big").await;
    assert!(blocks(&server).is_empty(), "the second page is deleted too");
}

#[tokio::test]
async fn invalid_specs_that_get_through_are_reported_not_applied() {
    let server = FakeApiServer::start().await;
    server.insert(slice("n1", &[(true, 0)])).unwrap();
    server
        .insert(network("tiny", RDMA, rails("10.0.0.0/30", 8, 0)))
        .unwrap();
    server
        .insert(network("bad-cel", "device.attributes[", rails("10.0.0.0/16", 8, 2)))
        .unwrap();
    for (name, needle) in [("tiny", "hostBlock 8"), ("bad-cel", "does not compile")] {
        let Outcome::Invalid(message) = apply(&server, name).await else {
            panic!("{name} should be invalid")
        };
        assert!(message.contains(needle), "{name}: {message}");
        let networks: Api<MultiNicNetwork> = Api::all(server.client());
        let status = networks.get(name).await.unwrap().status.unwrap();
        let invalid = status.conditions.iter().find(|c| c.type_ == "Invalid").unwrap();
        assert_eq!(invalid.status, "True");
        assert!(invalid.message.contains(needle));
        assert!(
            server.get("resource.k8s.io/v1", "DeviceClass", None, name).is_none(),
            "nothing applied for {name}"
        );
    }
    assert!(blocks(&server).is_empty());
}

#[tokio::test]
async fn exhaustion_is_a_condition_naming_the_nodes_and_the_fix() {
    let server = FakeApiServer::start().await;
    for node in ["n1", "n2", "n3"] {
        server.insert(slice(node, &[(true, 0), (true, 1), (true, 2)])).unwrap();
    }
    // 2 hosts x 2 rails: n3 gets no index, and every node has one rail too many.
    server
        .insert(network("small", RDMA, rails("10.0.0.0/24", 1, 1)))
        .unwrap();
    let Outcome::Exhausted { nodes, message } = apply(&server, "small").await else {
        panic!("not exhausted")
    };
    assert_eq!(nodes, 2);
    assert!(message.contains("node n3: no host index left"), "{message}");
    assert!(message.contains("3 rails, the network has room for 2"), "{message}");
    assert!(message.contains("grow the subnet"), "{message}");
    let networks: Api<MultiNicNetwork> = Api::all(server.client());
    let status = networks.get("small").await.unwrap().status.unwrap();
    assert_eq!(
        status
            .conditions
            .iter()
            .find(|c| c.type_ == "Exhausted")
            .unwrap()
            .status,
        "True"
    );
    assert_eq!(blocks(&server).len(), 2);
}
