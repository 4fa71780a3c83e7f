//! DeviceClass validation and the multinic.dev custom resources.

use either::Either;
use k8s_openapi::api::resource::v1::DeviceClass;
use kube::Api;
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::{Scope, cause_fields, multinic_api, status};

fn class_json(t: &Scope, base: &str, selectors: usize, configs: usize) -> Value {
    let sel: Vec<Value> = (0..selectors)
        .map(|i| json!({"cel": {"expression": format!("device.attributes[\"multinic.dev\"].railIndex == {i}")}}))
        .collect();
    let cfg: Vec<Value> = (0..configs)
        .map(|i| json!({"opaque": {"driver": "multinic.dev", "parameters": {"network": format!("n{i}")}}}))
        .collect();
    json!({"apiVersion": "resource.k8s.io/v1", "kind": "DeviceClass", "metadata": {"name": t.name(base)},
           "spec": {"selectors": sel, "config": cfg}})
}

async fn create(t: &Scope, v: Value) -> Result<DeviceClass, kube::Error> {
    let c: DeviceClass = serde_json::from_value(v).expect("class fixture");
    t.classes().create(&PostParams::default(), &c).await
}

#[tokio::test]
async fn device_class_limits() {
    let t = Scope::new("classlimits").await;
    let c = create(&t, class_json(&t, "ok", 32, 32))
        .await
        .expect("32 selectors and configs are fine");
    assert_eq!(c.metadata.generation, Some(1));
    let s = status(create(&t, class_json(&t, "sel", 33, 0)).await);
    assert!(
        s.message
            .contains("spec.selectors: Too many: 33: must have at most 32 items"),
        "{}",
        s.message
    );
    let s = status(create(&t, class_json(&t, "cfg", 0, 33)).await);
    assert!(
        s.message
            .contains("spec.config: Too many: 33: must have at most 32 items"),
        "{}",
        s.message
    );

    let mut v = class_json(&t, "big", 1, 1);
    v["spec"]["config"][0]["opaque"]["parameters"] = json!({"blob": "x".repeat(10 * 1024)});
    let s = status(create(&t, v).await);
    assert!(
        s.message
            .contains("spec.config[0].opaque.parameters: Too long: may not be more than 10240 bytes"),
        "{}",
        s.message
    );
    let mut v = class_json(&t, "arr", 1, 1);
    v["spec"]["config"][0]["opaque"]["parameters"] = json!([1]);
    let s = status(create(&t, v).await);
    assert!(s.message.contains("must be a valid JSON object"), "{}", s.message);
    let mut v = class_json(&t, "drv", 1, 1);
    v["spec"]["config"][0]["opaque"]["driver"] = json!("Not A Driver");
    let s = status(create(&t, v).await);
    assert_eq!(cause_fields(&s), vec!["spec.config[0].opaque.driver"]);
    let mut v = class_json(&t, "cel", 1, 0);
    v["spec"]["selectors"][0] = json!({});
    let s = status(create(&t, v).await);
    assert_eq!(cause_fields(&s), vec!["spec.selectors[0].cel"]);
}

#[tokio::test]
async fn device_class_generation() {
    let t = Scope::new("classgen").await;
    let api = t.classes();
    create(&t, class_json(&t, "c", 1, 0)).await.expect("create");
    let p = json!({"spec": {"selectors": [{"cel": {"expression": "true"}}]}});
    let c = api
        .patch(&t.name("c"), &PatchParams::default(), &Patch::Merge(&p))
        .await
        .expect("patch");
    assert_eq!(c.metadata.generation, Some(2));
}

fn networks_api(t: &Scope) -> Api<DynamicObject> {
    multinic_api(t.client.clone(), "MultiNicNetwork", "multinicnetworks")
}

fn network(name: &str, subnet: &str) -> Value {
    json!({"apiVersion": "multinic.dev/v1alpha1", "kind": "MultiNicNetwork", "metadata": {"name": name},
           "spec": {"ipam": {"type": "rails", "subnet": subnet}}})
}

fn dynamic(v: Value) -> DynamicObject {
    serde_json::from_value(v).expect("dynamic object")
}

#[tokio::test]
async fn custom_resource_status_subresource() {
    let t = Scope::new("crstatus").await;
    let api = networks_api(&t);
    let name = t.name("rails");
    let mut v = network(&name, "192.168.0.0/16");
    v["status"] = json!({"nodes": 3});
    let created = api.create(&PostParams::default(), &dynamic(v)).await.expect("create");
    assert!(created.data.get("status").is_none(), "status is dropped on create");
    assert_eq!(created.metadata.generation, Some(1));

    // Status apply changes only status; generation stays.
    let cond = |ty: &str| json!({"type": ty, "status": "True", "reason": "Ok", "message": "", "lastTransitionTime": "2025-01-01T00:00:00Z"});
    let st = json!({"apiVersion": "multinic.dev/v1alpha1", "kind": "MultiNicNetwork", "metadata": {"name": name},
                    "spec": {"ipam": {"subnet": "10.0.0.0/8"}}, "status": {"conditions": [cond("Ready")]}});
    let o = api
        .patch_status(&name, &PatchParams::apply("controller"), &Patch::Apply(&st))
        .await
        .expect("status apply");
    assert_eq!(o.data["spec"]["ipam"]["subnet"], "192.168.0.0/16");
    assert_eq!(o.metadata.generation, Some(1));
    // The CRD's conditions list has no list type, so it is atomic: another manager's
    // conditions conflict with the first one's, and a forced apply replaces the whole list.
    let st2 = json!({"apiVersion": "multinic.dev/v1alpha1", "kind": "MultiNicNetwork", "metadata": {"name": name},
                     "status": {"conditions": [cond("Synced")]}});
    let s = status(
        api.patch_status(&name, &PatchParams::apply("other"), &Patch::Apply(&st2))
            .await,
    );
    assert_eq!(s.code, 409, "{}", s.message);
    assert!(s.message.contains(".status.conditions"), "{}", s.message);
    let o = api
        .patch_status(&name, &PatchParams::apply("other").force(), &Patch::Apply(&st2))
        .await
        .expect("forced status apply");
    let types: Vec<&str> = o.data["status"]["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .filter_map(|c| c["type"].as_str())
        .collect();
    assert_eq!(types, vec!["Synced"]);

    // The POST made its client own the spec, so another manager changing it conflicts unless it
    // forces.
    let cfg = network(&name, "10.0.0.0/8");
    let s = status(
        api.patch(&name, &PatchParams::apply("controller"), &Patch::Apply(&cfg))
            .await,
    );
    assert_eq!(s.code, 409);
    assert!(s.message.contains(".spec.ipam.subnet"), "{}", s.message);
    // Spec change on the main resource bumps generation and keeps status.
    let o = api
        .patch(&name, &PatchParams::apply("controller").force(), &Patch::Apply(&cfg))
        .await
        .expect("apply");
    assert_eq!(o.metadata.generation, Some(2));
    assert_eq!(o.data["status"]["conditions"].as_array().map(Vec::len), Some(1));

    // Custom resources require a resourceVersion on PUT.
    let mut cur = api.get(&name).await.expect("get");
    cur.metadata.resource_version = None;
    let s = status(api.replace(&name, &PostParams::default(), &cur).await);
    assert_eq!(s.code, 422);
    assert!(
        s.message
            .contains("metadata.resourceVersion: Invalid value: 0: must be specified for an update"),
        "{}",
        s.message
    );

    // Delete of a custom resource answers a Status naming it.
    match api.delete(&name, &DeleteParams::default()).await.expect("delete") {
        Either::Right(s) => {
            assert!(s.is_success(), "{s:?}");
            assert_eq!(s.details.map(|d| d.name), Some(name.clone()));
        }
        Either::Left(o) => panic!("expected a Status, got {o:?}"),
    }
}

#[tokio::test]
async fn nic_node_blocks_are_served() {
    let t = Scope::new("blocks").await;
    let api = multinic_api(t.client.clone(), "NicNodeBlocks", "nicnodeblocks");
    let name = t.name("rails.node-a");
    let v = json!({"apiVersion": "multinic.dev/v1alpha1", "kind": "NicNodeBlocks", "metadata": {"name": name},
                   "spec": {"network": "rails", "nodeName": "node-a", "hostIndex": 3,
                            "blocks": [{"railIndex": 0, "cidr": "192.168.4.0/24"}]}});
    let created = api
        .patch(&name, &PatchParams::apply("multinic-controller"), &Patch::Apply(&v))
        .await
        .expect("apply-create");
    assert_eq!(created.data["spec"]["blocks"][0]["cidr"], "192.168.4.0/24");
    // The status subresource (a `pool` node's requests, multinic_api::pool): a status written
    // through the main resource is dropped, and so is an unknown spec field; the write is a no-op
    // and the generation stays.
    let p = json!({"status": {"wantBlocks": 2}, "spec": {"unknown": 1}});
    let o = api
        .patch(&name, &PatchParams::default(), &Patch::Merge(&p))
        .await
        .expect("merge");
    assert!(o.data.get("status").is_none(), "{:?}", o.data);
    assert!(o.data["spec"].get("unknown").is_none(), "{:?}", o.data);
    assert_eq!(o.metadata.generation, Some(1));
    // Through /status the node's fields are stored, a spec change in the same write is not, an
    // unknown status field is pruned, and the generation still stays.
    let p = json!({"status": {"wantBlocks": 2, "releasedBlocks": ["10.98.0.32/29"], "note": "x"},
                   "spec": {"hostIndex": 9}});
    let o = api
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&p))
        .await
        .expect("status merge");
    assert_eq!(o.data["status"]["wantBlocks"], 2, "{:?}", o.data);
    assert_eq!(o.data["status"]["releasedBlocks"][0], "10.98.0.32/29");
    assert!(o.data["status"].get("note").is_none(), "{:?}", o.data);
    assert_eq!(o.data["spec"]["hostIndex"], 3, "{:?}", o.data);
    assert_eq!(o.metadata.generation, Some(1));
    let got = api.get_status(&name).await.expect("get status");
    assert_eq!(got.data["status"]["wantBlocks"], 2);
}

/// The CRD's CEL rules on the real API server, per address family: an IPv6 or dual-stack `rails`
/// network is admitted; a family whose prefix arithmetic leaves no address bits is refused with
/// the rule's message, and so is a subnet of the wrong family. Dual-stack blocks are served.
#[tokio::test]
async fn ipv6_and_dual_stack_networks_follow_the_cel_rules() {
    let t = Scope::new("cel6").await;
    let api = networks_api(&t);
    let create = |suffix: &str, ipam: Value| {
        let v = json!({"apiVersion": "multinic.dev/v1alpha1", "kind": "MultiNicNetwork",
                       "metadata": {"name": t.name(suffix)}, "spec": {"ipam": ipam}});
        let api = api.clone();
        async move { api.create(&PostParams::default(), &dynamic(v)).await }
    };
    let admitted = [
        (
            "v6",
            json!({"type": "rails", "subnet6": "fd00:10::/64", "hostBlock": 32, "interfaceBlock": 30}),
        ),
        (
            "dual",
            json!({"type": "rails", "subnet": "10.10.0.0/16", "subnet6": "fd00:10::/64", "hostBlock": 8,
                   "interfaceBlock": 2, "exclude": ["10.10.0.0/30", "fd00:10::/120"]}),
        ),
    ];
    for (suffix, ipam) in admitted {
        create(suffix, ipam.clone())
            .await
            .unwrap_or_else(|e| panic!("{ipam} refused: {e}"));
    }
    let refused = [
        (
            "v6-bits",
            json!({"type": "rails", "subnet6": "fd00::/64", "hostBlock": 32, "interfaceBlock": 31}),
            "at most 126 bits",
        ),
        (
            "dual-v4-bits",
            json!({"type": "rails", "subnet": "10.0.0.0/24", "subnet6": "fd00::/64", "hostBlock": 8}),
            "at most 30 bits",
        ),
        (
            "dual-v6-bits",
            json!({"type": "rails", "subnet": "10.0.0.0/8", "subnet6": "fd00::/124", "hostBlock": 4}),
            "at most 126 bits",
        ),
        (
            "v6-family",
            json!({"type": "rails", "subnet6": "10.0.0.0/8"}),
            "must be an IPv6 CIDR",
        ),
        (
            "no-subnet",
            json!({"type": "rails", "hostBlock": 4}),
            "needs ipam.subnet (IPv4), ipam.subnet6",
        ),
    ];
    for (suffix, ipam, needle) in refused {
        let s = status(create(suffix, ipam.clone()).await);
        assert_eq!(s.code, 422, "{ipam}: {}", s.message);
        assert!(s.message.contains(needle), "{ipam}: {}", s.message);
    }
    for suffix in ["v6", "dual"] {
        api.delete(&t.name(suffix), &DeleteParams::default())
            .await
            .expect("delete");
    }

    let blocks = multinic_api(t.client.clone(), "NicNodeBlocks", "nicnodeblocks");
    let name = t.name("dual.node-a");
    let v = json!({"apiVersion": "multinic.dev/v1alpha1", "kind": "NicNodeBlocks", "metadata": {"name": name},
                   "spec": {"network": "dual", "nodeName": "node-a", "hostIndex": 7,
                            "blocks": [{"railIndex": 0, "cidr": "10.10.7.0/26", "nodeAddress": "192.168.0.7"},
                                       {"railIndex": 0, "cidr": "fd00:10:0:0:700::/74", "nodeAddress": "fd00:192:168::7"}]}});
    let o = blocks
        .patch(&name, &PatchParams::apply("multinic-controller"), &Patch::Apply(&v))
        .await
        .expect("apply dual-stack blocks");
    assert_eq!(o.data["spec"]["blocks"][1]["cidr"], "fd00:10:0:0:700::/74");
    assert_eq!(o.data["spec"]["blocks"][1]["nodeAddress"], "fd00:192:168::7");
    blocks
        .delete(&name, &DeleteParams::default())
        .await
        .expect("delete blocks");
}
