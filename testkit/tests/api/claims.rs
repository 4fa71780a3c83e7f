//! ResourceClaim status subresource, status validation and server-side apply of status.devices.

use k8s_openapi::api::resource::v1::ResourceClaim;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::{DRIVER, Scope, apply_device_status, cause_fields, claim, claim_json, dev_status, status};

fn devices(c: &ResourceClaim) -> Vec<String> {
    c.status
        .as_ref()
        .and_then(|s| s.devices.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|d| d.device)
        .collect()
}

fn managers(c: &ResourceClaim) -> Vec<(String, String, String)> {
    c.metadata
        .managed_fields
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|m| {
            (
                m.manager.unwrap_or_default(),
                m.operation.unwrap_or_default(),
                m.subresource.unwrap_or_default(),
            )
        })
        .collect()
}

#[tokio::test]
async fn create_ignores_status() {
    let t = Scope::new("createstatus").await;
    let api = t.claims();
    let mut c = claim_json("c1");
    c["status"] = json!({"allocation": {"devices": {"results": []}}});
    let created = api.create(&PostParams::default(), &claim(c)).await.expect("create");
    assert!(created.status.and_then(|s| s.allocation).is_none());
}

#[tokio::test]
async fn spec_is_immutable() {
    let t = Scope::new("immutable").await;
    let api = t.claims();
    let mut c = api
        .create(&PostParams::default(), &claim(claim_json("c1")))
        .await
        .expect("create");
    if let Some(r) = c.spec.devices.as_mut().and_then(|d| d.requests.as_mut()) {
        r[0].name = "other".into();
    }
    let s = status(api.replace("c1", &PostParams::default(), &c).await);
    assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"));
    assert!(
        s.message
            .starts_with("ResourceClaim.resource.k8s.io \"c1\" is invalid: spec: Invalid value:"),
        "{}",
        s.message
    );
    assert!(s.message.ends_with("field is immutable"), "{}", s.message);
    assert_eq!(cause_fields(&s), vec!["spec"]);
    // Labels may change.
    let mut c = api.get("c1").await.expect("get");
    c.metadata.labels = Some([("a".to_string(), "b".to_string())].into());
    api.replace("c1", &PostParams::default(), &c)
        .await
        .expect("label update");
}

#[tokio::test]
async fn main_resource_writes_ignore_status() {
    let t = Scope::new("mainstatus").await;
    let api = t.claims();
    t.allocated_claim("c1", &["eth1"]).await;
    let mut c = api.get("c1").await.expect("get");
    if let Some(st) = c.status.as_mut() {
        st.allocation = None;
    }
    c.metadata.labels = Some([("x".to_string(), "y".to_string())].into());
    let updated = api.replace("c1", &PostParams::default(), &c).await.expect("update");
    assert!(
        updated.status.and_then(|s| s.allocation).is_some(),
        "status must be kept on the main resource"
    );
    assert_eq!(
        updated.metadata.labels.and_then(|l| l.get("x").cloned()).as_deref(),
        Some("y")
    );
    // The same through apply and merge patch.
    let p = json!({"status": {"allocation": null}});
    let patched = api
        .patch("c1", &PatchParams::default(), &Patch::Merge(&p))
        .await
        .expect("merge");
    assert!(patched.status.and_then(|s| s.allocation).is_some());
}

#[tokio::test]
async fn status_writes_ignore_spec_and_metadata() {
    let t = Scope::new("statusspec").await;
    let api = t.claims();
    let before = t.allocated_claim("c1", &["eth1"]).await;
    let mut c = before.clone();
    if let Some(r) = c.spec.devices.as_mut().and_then(|d| d.requests.as_mut()) {
        r[0].name = "changed".into();
    }
    c.metadata.labels = Some([("x".to_string(), "y".to_string())].into());
    if let Some(st) = c.status.as_mut() {
        st.devices = Some(vec![
            serde_json::from_value(dev_status("eth1", json!({}))).expect("device"),
        ]);
    }
    let after = api
        .replace_status("c1", &PostParams::default(), &c)
        .await
        .expect("replace status");
    assert_eq!(after.spec, before.spec, "spec must be reset on /status");
    assert!(after.metadata.labels.is_none(), "labels must be reset on /status");
    assert_eq!(devices(&after), vec!["eth1"]);
    // Apply to /status with a spec: the spec is ignored.
    let p = json!({"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim", "metadata": {"name": "c1"},
                   "spec": {"devices": {"requests": []}}});
    let applied = api
        .patch_status("c1", &PatchParams::apply("x"), &Patch::Apply(&p))
        .await
        .expect("apply");
    assert_eq!(applied.spec, before.spec);
}

#[tokio::test]
async fn status_device_must_be_allocated() {
    let t = Scope::new("allocated").await;
    let api = t.claims();
    api.create(&PostParams::default(), &claim(claim_json("unallocated")))
        .await
        .expect("create");
    let s = status(apply_device_status(&api, "unallocated", DRIVER, json!([dev_status("eth1", json!({}))])).await);
    assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"));
    assert!(
        s.message.contains(
            "status.devices[0]: Invalid value: {\"Driver\":\"multinic.dev\",\"Pool\":\"node-a\",\"Device\":\"eth1\",\"ShareID\":\"\"}: must be an allocated device in the claim"
        ),
        "{}",
        s.message
    );

    t.allocated_claim("c1", &["eth1"]).await;
    let s = status(apply_device_status(&api, "c1", DRIVER, json!([dev_status("eth9", json!({}))])).await);
    assert_eq!(s.code, 422);
    assert_eq!(cause_fields(&s), vec!["status.devices[0]"]);
    apply_device_status(&api, "c1", DRIVER, json!([dev_status("eth1", json!({}))]))
        .await
        .expect("allocated device");
}

#[tokio::test]
async fn status_on_missing_claim_is_not_found() {
    let t = Scope::new("missing").await;
    let api = t.claims();
    let s = status(apply_device_status(&api, "ghost", DRIVER, json!([dev_status("eth1", json!({}))])).await);
    assert_eq!((s.code, s.reason.as_str()), (404, "NotFound"));
}

#[tokio::test]
async fn network_data_validation() {
    let t = Scope::new("networkdata").await;
    let api = t.claims();
    t.allocated_claim("c1", &["eth1"]).await;
    let cases: Vec<(Value, &str, &str)> = vec![
        (
            json!({"interfaceName": "x".repeat(257)}),
            "status.devices[0].networkData.interfaceName",
            "Too long: may not be more than 256 bytes",
        ),
        (
            json!({"hardwareAddress": "x".repeat(129)}),
            "status.devices[0].networkData.hardwareAddress",
            "Too long: may not be more than 128 bytes",
        ),
        (
            json!({"ips": (0..17).map(|i| format!("10.0.0.{i}/24")).collect::<Vec<_>>()}),
            "status.devices[0].networkData.ips",
            "Too many: 17: must have at most 16 items",
        ),
        (
            json!({"ips": ["10.0.0.1"]}),
            "status.devices[0].networkData.ips[0]",
            "must be a valid address in CIDR form, (e.g. 10.9.8.7/24 or 2001:db8::1/64)",
        ),
        (
            json!({"ips": ["2001:DB8::1/64"]}),
            "status.devices[0].networkData.ips[0]",
            "must be in canonical form (\"2001:db8::1/64\")",
        ),
        (
            json!({"ips": ["10.0.0.1/24", "10.0.0.1/24"]}),
            "status.devices[0].networkData.ips[1]",
            "Duplicate value",
        ),
    ];
    for (nd, field, needle) in cases {
        let s = status(
            apply_device_status(
                &api,
                "c1",
                DRIVER,
                json!([dev_status("eth1", json!({"networkData": nd}))]),
            )
            .await,
        );
        assert_eq!(s.code, 422, "{}", s.message);
        assert!(
            cause_fields(&s).iter().any(|f| f == field),
            "{field} not in {:?}",
            cause_fields(&s)
        );
        assert!(s.message.contains(needle), "{needle} not in {}", s.message);
    }
    // The interface address form (host bits set) is what upstream wants.
    let ok = json!({"interfaceName": "net1", "ips": ["10.0.0.5/24", "2001:db8::5/64"], "hardwareAddress": "aa:bb:cc:dd:ee:ff"});
    let c = apply_device_status(
        &api,
        "c1",
        DRIVER,
        json!([dev_status("eth1", json!({"networkData": ok}))]),
    )
    .await
    .expect("valid");
    let nd = c
        .status
        .and_then(|s| s.devices)
        .and_then(|d| d[0].network_data.clone())
        .expect("networkData");
    assert_eq!(
        nd.ips,
        Some(vec!["10.0.0.5/24".to_string(), "2001:db8::5/64".to_string()])
    );
}

fn condition(ty: &str, reason: &str) -> Value {
    json!({"type": ty, "status": "True", "reason": reason, "message": "", "lastTransitionTime": "2025-01-01T00:00:00Z"})
}

#[tokio::test]
async fn conditions_and_data_validation() {
    let t = Scope::new("conditions").await;
    let api = t.claims();
    t.allocated_claim("c1", &["eth1"]).await;
    let nine: Vec<Value> = (0..9).map(|i| condition(&format!("C{i}"), "Ok")).collect();
    let s = status(
        apply_device_status(
            &api,
            "c1",
            DRIVER,
            json!([dev_status("eth1", json!({"conditions": nine}))]),
        )
        .await,
    );
    assert!(
        s.message
            .contains("status.devices[0].conditions: Too many: 9: must have at most 8 items"),
        "{}",
        s.message
    );
    let bad = vec![condition("Ready", "not a reason")];
    let s = status(
        apply_device_status(
            &api,
            "c1",
            DRIVER,
            json!([dev_status("eth1", json!({"conditions": bad}))]),
        )
        .await,
    );
    assert!(
        cause_fields(&s).contains(&"status.devices[0].conditions[0].reason".to_string()),
        "{}",
        s.message
    );
    let big = json!({"blob": "x".repeat(10 * 1024)});
    let s = status(apply_device_status(&api, "c1", DRIVER, json!([dev_status("eth1", json!({"data": big}))])).await);
    assert!(
        s.message
            .contains("status.devices[0].data: Too long: may not be more than 10240 bytes"),
        "{}",
        s.message
    );
    let s = status(apply_device_status(&api, "c1", DRIVER, json!([dev_status("eth1", json!({"data": [1, 2]}))])).await);
    assert!(s.message.contains("must be a valid JSON object"), "{}", s.message);
    let ok = vec![condition("Ready", "Prepared")];
    apply_device_status(
        &api,
        "c1",
        DRIVER,
        json!([dev_status("eth1", json!({"conditions": ok, "data": {"a": 1}}))]),
    )
    .await
    .expect("valid conditions and data");
}

#[tokio::test]
async fn status_devices_merge_by_key_across_managers() {
    let t = Scope::new("mergekey").await;
    let api = t.claims();
    t.allocated_claim("c1", &["eth1", "eth2"]).await;
    apply_device_status(
        &api,
        "c1",
        "driver-a",
        json!([dev_status("eth1", json!({"data": {"v": 1}}))]),
    )
    .await
    .expect("apply a");
    let c = apply_device_status(
        &api,
        "c1",
        "driver-b",
        json!([dev_status("eth2", json!({"data": {"v": 2}}))]),
    )
    .await
    .expect("apply b");
    assert_eq!(devices(&c), vec!["eth1", "eth2"], "B's apply keeps A's entry");
    let m = managers(&c);
    assert!(
        m.contains(&("driver-a".into(), "Apply".into(), "status".into())),
        "{m:?}"
    );
    assert!(
        m.contains(&("driver-b".into(), "Apply".into(), "status".into())),
        "{m:?}"
    );
    let mf = c.metadata.managed_fields.clone().expect("managedFields");
    let a = mf
        .iter()
        .find(|e| e.manager.as_deref() == Some("driver-a"))
        .and_then(|e| e.fields_v1.clone())
        .expect("fields of driver-a");
    assert!(
        a.0["f:status"]["f:devices"]
            .get("k:{\"device\":\"eth1\",\"driver\":\"multinic.dev\",\"pool\":\"node-a\"}")
            .is_some(),
        "{}",
        a.0
    );

    // A re-applies without its entry: only A's entry goes.
    let c = apply_device_status(&api, "c1", "driver-a", json!([]))
        .await
        .expect("apply a, empty");
    assert_eq!(devices(&c), vec!["eth2"]);
    // And a field A set and no longer sets is removed, while B's fields stay.
    apply_device_status(
        &api,
        "c1",
        "driver-a",
        json!([dev_status(
            "eth1",
            json!({"data": {"v": 1}, "networkData": {"interfaceName": "net1"}})
        )]),
    )
    .await
    .expect("apply a");
    let c = apply_device_status(
        &api,
        "c1",
        "driver-a",
        json!([dev_status("eth1", json!({"data": {"v": 1}}))]),
    )
    .await
    .expect("apply a without networkData");
    let st = c.status.and_then(|s| s.devices).unwrap_or_default();
    assert!(
        st.iter()
            .find(|d| d.device == "eth1")
            .and_then(|d| d.network_data.clone())
            .is_none()
    );
    assert!(st.iter().any(|d| d.device == "eth2"));
}

#[tokio::test]
async fn apply_conflicts_between_managers() {
    let t = Scope::new("conflicts").await;
    let api = t.claims();
    t.allocated_claim("c1", &["eth1"]).await;
    apply_device_status(
        &api,
        "c1",
        "driver-a",
        json!([dev_status("eth1", json!({"data": {"v": 1}}))]),
    )
    .await
    .expect("apply a");
    // Same value: shared ownership, no conflict.
    apply_device_status(
        &api,
        "c1",
        "driver-b",
        json!([dev_status("eth1", json!({"data": {"v": 1}}))]),
    )
    .await
    .expect("same value does not conflict");
    // Different value: conflict. `data` is a RawExtension, atomic for server-side apply: the
    // conflict is on the whole field, with both owners.
    let s = status(
        apply_device_status(
            &api,
            "c1",
            "driver-c",
            json!([dev_status("eth1", json!({"data": {"v": 2}}))]),
        )
        .await,
    );
    assert_eq!((s.code, s.reason.as_str()), (409, "Conflict"));
    assert!(
        s.message
            .starts_with("Apply failed with 2 conflicts: conflicts with \"driver-a\" with subresource \"status\""),
        "{}",
        s.message
    );
    assert!(
        s.message
            .contains("- .status.devices[device=\"eth1\",driver=\"multinic.dev\",pool=\"node-a\"].data\n"),
        "{}",
        s.message
    );
    let causes = s.details.expect("details").causes;
    assert!(causes.iter().all(|c| c.reason == "FieldManagerConflict"));
    // Forced: the value changes and the others lose the field.
    let pp = PatchParams::apply("driver-c").force();
    let patch = json!({"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim", "metadata": {"name": "c1"},
                       "status": {"devices": [dev_status("eth1", json!({"data": {"v": 2}}))]}});
    let c = api
        .patch_status("c1", &pp, &Patch::Apply(&patch))
        .await
        .expect("forced apply");
    let data = c.status.and_then(|s| s.devices).map(|d| d[0].data.clone());
    assert_eq!(data.flatten().map(|d| d.0), Some(json!({"v": 2})));
    // driver-a no longer owns data.v, so it can apply without it and the value stays.
    let c = apply_device_status(&api, "c1", "driver-a", json!([]))
        .await
        .expect("apply a, empty");
    assert_eq!(devices(&c), vec!["eth1"], "driver-c still owns the entry");
}

#[tokio::test]
async fn allocation_through_status_is_validated_and_immutable() {
    let t = Scope::new("allocation").await;
    let api = t.claims();
    api.create(&PostParams::default(), &claim(claim_json("c1")))
        .await
        .expect("create");
    let alloc = |request: &str, device: &str| {
        json!({"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim", "metadata": {"name": "c1"},
               "status": {"allocation": {"devices": {"results": [
                   {"request": request, "driver": DRIVER, "pool": "node-a", "device": device}]}}}})
    };
    let pp = PatchParams::apply("kube-scheduler");
    let s = status(
        api.patch_status("c1", &pp, &Patch::Apply(&alloc("unknown", "eth1")))
            .await,
    );
    assert!(
        cause_fields(&s).contains(&"status.allocation.devices.results[0].request".to_string()),
        "{}",
        s.message
    );
    api.patch_status("c1", &pp, &Patch::Apply(&alloc("nics", "eth1")))
        .await
        .expect("allocate");
    let s = status(api.patch_status("c1", &pp, &Patch::Apply(&alloc("nics", "eth2"))).await);
    assert!(s.message.contains("status.allocation: Invalid value:"), "{}", s.message);
    assert!(s.message.contains("field is immutable"), "{}", s.message);
}

#[tokio::test]
async fn deallocation_drops_device_status() {
    let t = Scope::new("dealloc").await;
    let api = t.claims();
    t.allocated_claim("c1", &["eth1"]).await;
    apply_device_status(&api, "c1", DRIVER, json!([dev_status("eth1", json!({}))]))
        .await
        .expect("status");
    let mut c = api.get("c1").await.expect("get");
    if let Some(st) = c.status.as_mut() {
        st.allocation = None;
    }
    let after = api
        .replace_status("c1", &PostParams::default(), &c)
        .await
        .expect("deallocate");
    assert!(devices(&after).is_empty());
}

#[tokio::test]
async fn owner_references_merge_by_uid() {
    let t = Scope::new("owners").await;
    let api = t.claims();
    // Owners that exist: with dangling owner references the garbage collector of a real cluster
    // deletes the claim (or drops the references) at a moment of its choosing.
    let maps = kube::Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(t.client.clone(), &t.ns);
    let mut uid = std::collections::BTreeMap::new();
    for name in ["p1", "p2"] {
        let made = maps
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": name}})).expect("a ConfigMap"),
            )
            .await
            .expect("owner ConfigMap");
        uid.insert(name, made.metadata.uid.expect("a uid"));
    }
    let owner = |name: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "name": name, "uid": uid[name]});
    let mut cfg = claim_json("c1");
    cfg["metadata"]["ownerReferences"] = json!([owner("p1")]);
    api.patch("c1", &PatchParams::apply("a"), &Patch::Apply(&cfg))
        .await
        .expect("a");
    // The claim's request list is atomic and was defaulted (allocationMode) after a's apply, so
    // another manager applying the same, undefaulted spec changes it: a conflict.
    let mut same_spec = claim_json("c1");
    same_spec["metadata"]["ownerReferences"] = json!([owner("p2")]);
    let s = status(
        api.patch("c1", &PatchParams::apply("b"), &Patch::Apply(&same_spec))
            .await,
    );
    assert_eq!(s.code, 409, "{}", s.message);
    assert!(s.message.contains(".spec.devices.requests"), "{}", s.message);
    // b applying only its owner reference: the list merges by uid.
    let refs = json!({"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
                      "metadata": {"name": "c1", "ownerReferences": [owner("p2")]}});
    let c = api
        .patch("c1", &PatchParams::apply("b"), &Patch::Apply(&refs))
        .await
        .expect("b");
    let uids: Vec<String> = c
        .metadata
        .owner_references
        .unwrap_or_default()
        .into_iter()
        .map(|o| o.uid)
        .collect();
    assert_eq!(uids, vec![uid["p1"].clone(), uid["p2"].clone()]);
}

#[tokio::test]
async fn applying_an_empty_device_list_removes_entries_with_nested_keyed_lists() {
    let t = Scope::new("emptylist").await;
    let api = t.claims();
    t.allocated_claim("c1", &["eth1", "eth2"]).await;
    let entry = |d: &str| {
        dev_status(
            d,
            json!({"networkData": {"interfaceName": "net1", "ips": ["10.0.0.1/24"]}, "conditions": [condition("Ready", "Prepared")]}),
        )
    };
    apply_device_status(&api, "c1", DRIVER, json!([entry("eth1"), entry("eth2")]))
        .await
        .expect("apply entries");
    let c = apply_device_status(&api, "c1", DRIVER, json!([]))
        .await
        .expect("an empty list is valid and removes what the manager owned");
    assert!(devices(&c).is_empty(), "{:?}", devices(&c));
    let stored = api.get("c1").await.expect("get");
    assert!(
        stored
            .status
            .as_ref()
            .and_then(|s| s.devices.as_ref())
            .is_none_or(|d| d.is_empty()),
        "no half-removed entry is left: {:?}",
        stored.status
    );
}
