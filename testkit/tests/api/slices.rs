//! ResourceSlice validation and apply semantics.

use k8s_openapi::api::resource::v1::ResourceSlice;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::{Scope, cause_fields, device, slice, status};

async fn create(t: &Scope, v: Value) -> Result<ResourceSlice, kube::Error> {
    t.slices().create(&PostParams::default(), &slice(v)).await
}

/// Deletes the test's slice `base`.
async fn delete(t: &Scope, base: &str) {
    t.slices()
        .delete(&t.name(base), &DeleteParams::default())
        .await
        .unwrap_or_else(|e| panic!("delete {base}: {e}"));
}

/// Creates `v` and expects 422 naming `field` in a cause, with `needle` in the message.
async fn rejects(t: &Scope, v: Value, field: &str, needle: &str) {
    let s = status(create(t, v).await);
    assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"), "{}", s.message);
    assert!(
        cause_fields(&s).iter().any(|f| f == field),
        "no cause for {field}: {:?} / {}",
        cause_fields(&s),
        s.message
    );
    assert!(s.message.contains(needle), "{needle:?} not in {}", s.message);
    let d = s.details.expect("details");
    assert_eq!(
        (d.group.as_str(), d.kind.as_str()),
        ("resource.k8s.io", "ResourceSlice")
    );
}

#[tokio::test]
async fn valid_slice_with_128_devices_is_accepted() {
    let t = Scope::new("slice128").await;
    let s = create(&t, t.slice_json("s1", "node-a", 128))
        .await
        .expect("128 devices are fine");
    assert_eq!(s.spec.devices.map(|d| d.len()), Some(128));
}

#[tokio::test]
async fn too_many_devices() {
    let t = Scope::new("toomanydevices").await;
    let v = t.slice_json("s1", "node-a", 129);
    let s = status(create(&t, v).await);
    assert_eq!(s.code, 422);
    assert_eq!(
        s.message,
        format!(
            "ResourceSlice.resource.k8s.io \"{}\" is invalid: spec.devices: Too many: 129: must have at most 128 items",
            t.name("s1")
        )
    );
    // With taints the limit is 64.
    let mut v = t.slice_json("s2", "node-a", 65);
    v["spec"]["devices"][0]["taints"] = json!([{"key": "k", "effect": "NoSchedule"}]);
    rejects(&t, v, "spec.devices", "must have at most 64 items").await;
}

#[tokio::test]
async fn attribute_values() {
    let t = Scope::new("attrvalues").await;
    let mut v = t.slice_json("s1", "node-a", 1);
    v["spec"]["devices"][0]["attributes"]["multinic.dev/ifName"] = json!({"string": "x".repeat(65)});
    rejects(
        &t,
        v,
        "spec.devices[0].attributes[multinic.dev/ifName].string",
        "Too long: may not be more than 64 bytes",
    )
    .await;

    let mut v = t.slice_json("s1", "node-a", 1);
    v["spec"]["devices"][0]["attributes"]["multinic.dev/ifName"] = json!({"string": "x".repeat(64)});
    create(&t, v).await.expect("64 bytes are fine");
    delete(&t, "s1").await;

    let mut v = t.slice_json("s1", "node-a", 1);
    v["spec"]["devices"][0]["attributes"]["multinic.dev/mtu"] = json!({"int": 9000, "bool": true});
    rejects(
        &t,
        v,
        "spec.devices[0].attributes[multinic.dev/mtu]",
        "exactly one value must be specified",
    )
    .await;

    let mut v = t.slice_json("s1", "node-a", 1);
    v["spec"]["devices"][0]["attributes"]["multinic.dev/mtu"] = json!({});
    rejects(
        &t,
        v,
        "spec.devices[0].attributes[multinic.dev/mtu]",
        "exactly one value must be specified",
    )
    .await;

    let mut v = t.slice_json("s1", "node-a", 1);
    v["spec"]["devices"][0]["attributes"]["multinic.dev/fwVersion"] = json!({"version": "1.2"});
    rejects(
        &t,
        v,
        "spec.devices[0].attributes[multinic.dev/fwVersion].version",
        "semver.org spec 2.0.0",
    )
    .await;

    let mut v = t.slice_json("s1", "node-a", 1);
    v["spec"]["devices"][0]["attributes"]["multinic.dev/fwVersion"] =
        json!({"version": format!("1.2.3-{}", "a".repeat(60))});
    rejects(
        &t,
        v,
        "spec.devices[0].attributes[multinic.dev/fwVersion].version",
        "Too long: may not be more than 64 bytes",
    )
    .await;
}

#[tokio::test]
async fn attribute_and_capacity_names() {
    let t = Scope::new("attrnames").await;
    for bad in ["multinic.dev/if-name", "multinic.dev/", "/ifName", "Bad_Domain!/x"] {
        let mut v = t.slice_json("s1", "node-a", 1);
        v["spec"]["devices"][0]["attributes"][bad] = json!({"bool": true});
        rejects(&t, v, "spec.devices[0].attributes", "Invalid value").await;
    }
    let mut v = t.slice_json("s1", "node-a", 1);
    v["spec"]["devices"][0]["attributes"][format!("multinic.dev/{}", "a".repeat(33))] = json!({"bool": true});
    rejects(
        &t,
        v,
        "spec.devices[0].attributes",
        "Too long: may not be more than 32 bytes",
    )
    .await;
    let mut v = t.slice_json("s1", "node-a", 1);
    v["spec"]["devices"][0]["attributes"][format!("{}.dev/x", "a".repeat(60))] = json!({"bool": true});
    rejects(
        &t,
        v,
        "spec.devices[0].attributes",
        "Too long: may not be more than 63 bytes",
    )
    .await;
    let mut v = t.slice_json("s1", "node-a", 1);
    v["spec"]["devices"][0]["capacity"]["multinic.dev/bad-name"] = json!({"value": "1"});
    rejects(&t, v, "spec.devices[0].capacity", "a valid C identifier").await;
    // More than one slash is not checked at all (upstream's validateQualifiedName, a known TODO).
    let mut v = t.slice_json("s1", "node-a", 1);
    v["spec"]["devices"][0]["attributes"]["a/b/c"] = json!({"bool": true});
    create(&t, v).await.expect("a/b/c is accepted");
    delete(&t, "s1").await;
    // A name without domain is a C identifier.
    let mut v = t.slice_json("s1", "node-a", 1);
    v["spec"]["devices"][0]["attributes"]["plainName"] = json!({"bool": true});
    create(&t, v).await.expect("unqualified attribute names are allowed");
}

#[tokio::test]
async fn at_most_32_attributes_and_capacities() {
    let t = Scope::new("attrcount").await;
    let mut v = t.slice_json("s1", "node-a", 1);
    // 5 attributes + 1 capacity in the fixture; add 27 more to reach 33.
    for i in 0..27 {
        v["spec"]["devices"][0]["attributes"][format!("multinic.dev/extra{i}")] = json!({"int": i});
    }
    rejects(
        &t,
        v.clone(),
        "spec.devices[0]",
        "the total number of attributes and capacities must not exceed 32",
    )
    .await;
    if let Some(a) = v["spec"]["devices"][0]["attributes"].as_object_mut() {
        a.remove("multinic.dev/extra0");
    }
    create(&t, v).await.expect("32 are fine");
}

#[tokio::test]
async fn device_names() {
    let t = Scope::new("devicenames").await;
    for bad in ["Eth1", "pci.0000", &"a".repeat(64), "-x"] {
        let mut v = t.slice_json("s1", "node-a", 1);
        v["spec"]["devices"][0]["name"] = json!(bad);
        rejects(&t, v, "spec.devices[0].name", "Invalid value").await;
    }
    let mut v = t.slice_json("s1", "node-a", 2);
    v["spec"]["devices"][1] = device("dev-0");
    rejects(&t, v, "spec.devices[1]", "Duplicate value: \"dev-0\"").await;
}

#[tokio::test]
async fn driver_and_pool() {
    let t = Scope::new("driverandpool").await;
    let mut v = t.slice_json("s1", "node-a", 1);
    v["spec"]["driver"] = json!(format!("{}.dev", "a".repeat(60)));
    rejects(&t, v, "spec.driver", "Too long: may not be more than 63 bytes").await;
    let mut v = t.slice_json("s1", "node-a", 1);
    v["spec"]["driver"] = json!("not_a_domain");
    rejects(&t, v, "spec.driver", "RFC 1123 subdomain").await;
    let mut v = t.slice_json("s1", "node-a", 1);
    v["spec"]["driver"] = json!("");
    rejects(&t, v, "spec.driver", "spec.driver: Required value").await;

    let mut v = t.slice_json("s1", "node-a", 1);
    v["spec"]["pool"]["name"] = json!("");
    rejects(&t, v, "spec.pool.name", "spec.pool.name: Required value").await;
    let mut v = t.slice_json("s1", "node-a", 1);
    v["spec"]["pool"]["name"] = json!("rack-1/node_a");
    rejects(&t, v, "spec.pool.name", "Invalid value: \"node_a\"").await;
    let mut v = t.slice_json("s1", "node-a", 1);
    v["spec"]["pool"]["name"] = json!(vec!["a".repeat(60); 5].join("/"));
    rejects(&t, v, "spec.pool.name", "Too long: may not be more than 253 bytes").await;
    let mut v = t.slice_json("s1", "node-a", 1);
    v["spec"]["pool"]["name"] = json!("rack-1/node-a");
    create(&t, v).await.expect("segmented pool names are fine");
    delete(&t, "s1").await;

    let mut v = t.slice_json("s1", "node-a", 1);
    v["spec"]["pool"]["generation"] = json!(-1);
    rejects(&t, v, "spec.pool.generation", "must be greater than or equal to zero").await;
    let mut v = t.slice_json("s1", "node-a", 1);
    v["spec"]["pool"]["resourceSliceCount"] = json!(0);
    rejects(&t, v, "spec.pool.resourceSliceCount", "must be greater than zero").await;
}

#[tokio::test]
async fn exactly_one_node_selection() {
    let t = Scope::new("nodeselection").await;
    let mut v = t.slice_json("s1", "node-a", 1);
    v["spec"].as_object_mut().map(|s| s.remove("nodeName"));
    rejects(
        &t,
        v.clone(),
        "spec",
        "exactly one of `nodeName`, `nodeSelector`, `allNodes`, `perDeviceNodeSelection` is required",
    )
    .await;
    let mut both = t.slice_json("s1", "node-a", 1);
    both["spec"]["allNodes"] = json!(true);
    rejects(&t, both, "spec", "but multiple fields are set").await;
    let mut f = v.clone();
    f["spec"]["allNodes"] = json!(false);
    rejects(&t, f, "spec.allNodes", "must be either unset or set to true").await;
    let mut all = v.clone();
    all["spec"]["allNodes"] = json!(true);
    create(&t, all).await.expect("allNodes alone is fine");
    delete(&t, "s1").await;
    let mut sel = v.clone();
    sel["spec"]["nodeSelector"] = json!({"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "a", "operator": "Exists"}]},
        {"matchExpressions": [{"key": "b", "operator": "Exists"}]}
    ]});
    rejects(
        &t,
        sel,
        "spec.nodeSelector.nodeSelectorTerms",
        "must have exactly one node selector term",
    )
    .await;
}

#[tokio::test]
async fn node_name_driver_and_pool_are_immutable() {
    let t = Scope::new("immutable").await;
    let api = t.slices();
    let name = t.name("s1");
    create(&t, t.slice_json("s1", "node-a", 1)).await.expect("create");
    for (ptr, value, field) in [
        ("/spec/nodeName", json!("node-b"), "spec.nodeName"),
        ("/spec/driver", json!("other.dev"), "spec.driver"),
        ("/spec/pool/name", json!("node-b"), "spec.pool.name"),
    ] {
        let mut cur = serde_json::to_value(api.get(&name).await.expect("get")).expect("json");
        if let Some(slot) = cur.pointer_mut(ptr) {
            *slot = value.clone();
        }
        let s = status(api.replace(&name, &PostParams::default(), &slice(cur)).await);
        assert_eq!(s.code, 422);
        assert!(
            s.message
                .contains(&format!("{field}: Invalid value: {value}: field is immutable")),
            "{}",
            s.message
        );
    }
}

#[tokio::test]
async fn apply_creates_and_replaces_the_atomic_device_list() {
    let t = Scope::new("applyatomic").await;
    let api = t.slices();
    let name = t.name("s1");
    let pp = PatchParams::apply("multinic.dev");
    let created = api
        .patch(&name, &pp, &Patch::Apply(&t.slice_json("s1", "node-a", 3)))
        .await
        .expect("apply-create");
    assert_eq!(created.metadata.generation, Some(1));
    let mf = created.metadata.managed_fields.clone().expect("managedFields");
    assert_eq!(mf[0].manager.as_deref(), Some("multinic.dev"));
    assert_eq!(mf[0].operation.as_deref(), Some("Apply"));
    // spec.devices is atomic: the second apply replaces the whole list.
    let mut v = t.slice_json("s1", "node-a", 1);
    v["spec"]["devices"][0]["name"] = json!("only");
    let replaced = api.patch(&name, &pp, &Patch::Apply(&v)).await.expect("apply");
    let names: Vec<String> = replaced
        .spec
        .devices
        .unwrap_or_default()
        .into_iter()
        .map(|d| d.name)
        .collect();
    assert_eq!(names, vec!["only"]);
    assert_eq!(replaced.metadata.generation, Some(2));
    // Another manager changing the list conflicts on the whole list.
    let other = t.slice_json("s1", "node-a", 2);
    let s = status(
        api.patch(&name, &PatchParams::apply("intruder"), &Patch::Apply(&other))
            .await,
    );
    assert_eq!((s.code, s.reason.as_str()), (409, "Conflict"));
    assert!(
        s.message.contains("conflict with \"multinic.dev\": .spec.devices"),
        "{}",
        s.message
    );
    // Validation applies to applied objects too.
    let s = status(
        api.patch(&name, &pp, &Patch::Apply(&t.slice_json("s1", "node-a", 129)))
            .await,
    );
    assert_eq!(s.code, 422);
}
