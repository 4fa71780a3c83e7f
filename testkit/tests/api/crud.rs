//! Generic verbs, errors, preconditions, selectors and pagination.

use either::Either;
use k8s_openapi::api::resource::v1::{ResourceClaim, ResourceSlice};
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use serde_json::json;

use crate::{Scope, claim, claim_json, ours, raw, slice, status};

#[tokio::test]
async fn create_get_list_delete() {
    let t = Scope::new("crud").await;
    let api = t.claims();
    let created = api
        .create(&PostParams::default(), &claim(claim_json("c1")))
        .await
        .expect("create");
    let uid = created.metadata.uid.clone().expect("uid assigned");
    assert_eq!(uid.len(), 36);
    assert!(created.metadata.creation_timestamp.is_some());
    assert!(created.metadata.resource_version.is_some());
    // Defaulting: allocationMode ExactCount.
    let req = &created
        .spec
        .devices
        .as_ref()
        .expect("devices")
        .requests
        .as_ref()
        .expect("requests")[0];
    assert_eq!(
        req.exactly.as_ref().and_then(|e| e.allocation_mode.as_deref()),
        Some("ExactCount")
    );

    let got = api.get("c1").await.expect("get");
    assert_eq!(got.metadata.uid.as_deref(), Some(uid.as_str()));
    let list = api.list(&ListParams::default()).await.expect("list");
    assert_eq!(list.items.len(), 1);
    assert!(list.metadata.resource_version.is_some());

    // The resource.k8s.io registries set ReturnDeletedObject: the answer is the claim, not a Status.
    match api.delete("c1", &DeleteParams::default()).await.expect("delete") {
        Either::Left(o) => assert_eq!(o.metadata.uid, Some(uid)),
        Either::Right(s) => panic!("expected the deleted claim, got {s:?}"),
    }
    let s = status(api.get("c1").await);
    assert_eq!((s.code, s.reason.as_str()), (404, "NotFound"));
    assert_eq!(s.message, "resourceclaims.resource.k8s.io \"c1\" not found");
}

#[tokio::test]
async fn create_existing_is_already_exists() {
    let t = Scope::new("exists").await;
    let api = t.slices();
    api.create(&PostParams::default(), &slice(t.slice_json("s1", "node-a", 1)))
        .await
        .expect("create");
    let s = status(
        api.create(&PostParams::default(), &slice(t.slice_json("s1", "node-a", 1)))
            .await,
    );
    assert_eq!((s.code, s.reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(
        s.message,
        format!("resourceslices.resource.k8s.io \"{}\" already exists", t.name("s1"))
    );
}

#[tokio::test]
async fn resource_versions_grow_across_kinds() {
    let t = Scope::new("rv").await;
    let claims = t.claims();
    let slices = t.slices();
    let a = claims
        .create(&PostParams::default(), &claim(claim_json("c1")))
        .await
        .expect("claim");
    let b = slices
        .create(&PostParams::default(), &slice(t.slice_json("s1", "node-a", 1)))
        .await
        .expect("slice");
    let c = claims
        .create(&PostParams::default(), &claim(claim_json("c2")))
        .await
        .expect("claim");
    let rv = |m: &Option<String>| m.as_deref().and_then(|v| v.parse::<u64>().ok()).expect("numeric rv");
    let (a, b, c) = (
        rv(&a.metadata.resource_version),
        rv(&b.metadata.resource_version),
        rv(&c.metadata.resource_version),
    );
    assert!(a < b && b < c, "{a} {b} {c}");
}

#[tokio::test]
async fn stale_resource_version_on_put_conflicts() {
    let t = Scope::new("stale").await;
    let api = t.slices();
    let name = t.name("s1");
    let first = api
        .create(&PostParams::default(), &slice(t.slice_json("s1", "node-a", 1)))
        .await
        .expect("create");
    let mut second = first.clone();
    second.metadata.labels = Some([("a".to_string(), "b".to_string())].into());
    let updated = api
        .replace(&name, &PostParams::default(), &second)
        .await
        .expect("update");
    assert_ne!(updated.metadata.resource_version, first.metadata.resource_version);
    // `first` carries the old resourceVersion now.
    let s = status(api.replace(&name, &PostParams::default(), &first).await);
    assert_eq!((s.code, s.reason.as_str()), (409, "Conflict"));
    assert_eq!(
        s.message,
        format!(
            "Operation cannot be fulfilled on resourceslices.resource.k8s.io \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
        )
    );
    // Without a resourceVersion the update is unconditional for resource.k8s.io (AllowUnconditionalUpdate).
    let mut unconditional = updated.clone();
    unconditional.metadata.resource_version = None;
    unconditional.metadata.labels = Some([("a".to_string(), "c".to_string())].into());
    api.replace(&name, &PostParams::default(), &unconditional)
        .await
        .expect("unconditional update");
}

#[tokio::test]
async fn put_with_other_uid_fails_the_uid_precondition() {
    let t = Scope::new("putuid").await;
    let api = t.slices();
    let name = t.name("s1");
    let mut obj = api
        .create(&PostParams::default(), &slice(t.slice_json("s1", "node-a", 1)))
        .await
        .expect("create");
    let real = obj.metadata.uid.clone().expect("uid");
    obj.metadata.uid = Some("6a4b1c6e-0000-4000-8000-000000000000".into());
    let s = status(api.replace(&name, &PostParams::default(), &obj).await);
    assert_eq!((s.code, s.reason.as_str()), (409, "Conflict"));
    assert!(
        s.message.contains(&format!(
            "Precondition failed: UID in precondition: 6a4b1c6e-0000-4000-8000-000000000000, UID in object meta: {real}"
        )),
        "{}",
        s.message
    );
}

#[tokio::test]
async fn apply_with_other_uid_is_rejected() {
    let t = Scope::new("applyuid").await;
    let api = t.slices();
    let name = t.name("s1");
    api.create(&PostParams::default(), &slice(t.slice_json("s1", "node-a", 1)))
        .await
        .expect("create");
    let mut cfg = t.slice_json("s1", "node-a", 1);
    cfg["metadata"]["uid"] = json!("6a4b1c6e-0000-4000-8000-000000000000");
    // Upstream (kubernetes#127625): an apply naming another uid fails as an immutable-field change.
    let s = status(api.patch(&name, &PatchParams::apply("a"), &Patch::Apply(&cfg)).await);
    assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"));
    assert!(
        s.message
            .contains("metadata.uid: Invalid value: \"6a4b1c6e-0000-4000-8000-000000000000\": field is immutable"),
        "{}",
        s.message
    );
    // An apply naming a uid cannot create an object.
    let name2 = t.name("s2");
    let mut cfg = t.slice_json("s2", "node-b", 1);
    cfg["metadata"]["uid"] = json!("6a4b1c6e-0000-4000-8000-000000000000");
    let s = status(api.patch(&name2, &PatchParams::apply("a"), &Patch::Apply(&cfg)).await);
    assert_eq!((s.code, s.reason.as_str()), (409, "Conflict"));
    assert!(
        s.message.contains("uid mismatch: the provided object specified uid"),
        "{}",
        s.message
    );
    // A matching uid works as a guard.
    let real = api.get(&name).await.expect("get").metadata.uid.expect("uid");
    let mut cfg = t.slice_json("s1", "node-a", 1);
    cfg["metadata"]["uid"] = json!(real);
    api.patch(&name, &PatchParams::apply("a"), &Patch::Apply(&cfg))
        .await
        .expect("apply with matching uid");
}

#[tokio::test]
async fn delete_preconditions() {
    let t = Scope::new("delpre").await;
    let api = t.slices();
    let name = t.name("s1");
    let obj = api
        .create(&PostParams::default(), &slice(t.slice_json("s1", "node-a", 1)))
        .await
        .expect("create");
    let wrong_uid = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some("00000000-0000-4000-8000-000000000000".into()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    let s = status(api.delete(&name, &wrong_uid).await);
    assert_eq!((s.code, s.reason.as_str()), (409, "Conflict"));
    let real_uid = obj.metadata.uid.clone().unwrap_or_default();
    assert_eq!(
        s.message,
        format!(
            "Operation cannot be fulfilled on ResourceSlice.resource.k8s.io \"{name}\": the UID in the precondition (00000000-0000-4000-8000-000000000000) does not match the UID in record ({real_uid}). The object might have been deleted and then recreated"
        )
    );
    let wrong_rv = DeleteParams {
        preconditions: Some(Preconditions {
            uid: None,
            resource_version: Some("999".into()),
        }),
        ..DeleteParams::default()
    };
    let s = status(api.delete(&name, &wrong_rv).await);
    assert_eq!(s.code, 409);
    let real_rv = obj.metadata.resource_version.clone().unwrap_or_default();
    assert_eq!(
        s.message,
        format!(
            "Operation cannot be fulfilled on ResourceSlice.resource.k8s.io \"{name}\": the ResourceVersion in the precondition (999) does not match the ResourceVersion in record ({real_rv}). The object might have been modified"
        )
    );
    let right = DeleteParams {
        preconditions: Some(Preconditions {
            uid: obj.metadata.uid.clone(),
            resource_version: obj.metadata.resource_version.clone(),
        }),
        ..DeleteParams::default()
    };
    api.delete(&name, &right)
        .await
        .expect("delete with matching preconditions");
    assert_eq!(status(api.get(&name).await).code, 404);
}

#[tokio::test]
async fn finalizers_delay_deletion() {
    let t = Scope::new("finalizers").await;
    let api = t.slices();
    let name = t.name("s1");
    let mut s = slice(t.slice_json("s1", "node-a", 1));
    s.metadata.finalizers = Some(vec!["multinic.dev/cleanup".into()]);
    api.create(&PostParams::default(), &s).await.expect("create");
    match api.delete(&name, &DeleteParams::default()).await.expect("delete") {
        Either::Left(o) => assert!(o.metadata.deletion_timestamp.is_some()),
        Either::Right(s) => panic!("expected the object pending finalization, got {s:?}"),
    }
    let patch = json!({"metadata": {"finalizers": null}});
    api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("remove finalizer");
    assert_eq!(status(api.get(&name).await).code, 404);
}

#[tokio::test]
async fn apply_without_field_manager_is_invalid() {
    let t = Scope::new("nomanager").await;
    let path = format!("/apis/resource.k8s.io/v1/resourceslices/{}", t.name("s1"));
    let body = t.slice_json("s1", "node-a", 1).to_string();
    let s = status(raw(&t.client, "PATCH", &path, "application/apply-patch+yaml", &body).await);
    // Upstream validates PatchOptions: 422, not 400.
    assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        s.message,
        "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch"
    );
    let s = status(
        raw(
            &t.client,
            "PATCH",
            &format!("{path}?force=true"),
            "application/merge-patch+json",
            "{}",
        )
        .await,
    );
    assert_eq!(s.code, 422);
    assert!(
        s.message
            .contains("force: Forbidden: may not be specified for non-apply patch"),
        "{}",
        s.message
    );
}

#[tokio::test]
async fn unsupported_media_type_and_method() {
    let t = Scope::new("media").await;
    let client = &t.client;
    let s = status(
        raw(
            client,
            "POST",
            "/apis/resource.k8s.io/v1/resourceslices",
            "text/plain",
            "x",
        )
        .await,
    );
    assert_eq!((s.code, s.reason.as_str()), (415, "UnsupportedMediaType"));
    let s = status(
        raw(
            client,
            "PATCH",
            &format!("/apis/multinic.dev/v1alpha1/multinicnetworks/{}", t.name("n")),
            "application/strategic-merge-patch+json",
            "{}",
        )
        .await,
    );
    assert_eq!((s.code, s.reason.as_str()), (415, "UnsupportedMediaType"));
    assert!(s.message.contains("application/apply-patch+yaml"), "{}", s.message);
    let s = status(
        raw(
            client,
            "POST",
            &format!("/apis/resource.k8s.io/v1/resourceslices/{}", t.name("s1")),
            "application/json",
            "{}",
        )
        .await,
    );
    assert_eq!((s.code, s.reason.as_str()), (405, "MethodNotAllowed"));
    let s = status(
        raw(
            client,
            "GET",
            "/apis/resource.k8s.io/v1/widgets",
            "application/json",
            "",
        )
        .await,
    );
    assert_eq!(s.code, 404);
    let s = status(
        raw(
            client,
            "POST",
            "/apis/resource.k8s.io/v1/resourceslices",
            "application/json",
            "{nope",
        )
        .await,
    );
    assert_eq!((s.code, s.reason.as_str()), (400, "BadRequest"));
}

#[tokio::test]
async fn wrongly_typed_fields_are_bad_requests() {
    let t = Scope::new("types").await;
    let mut v = t.slice_json("s1", "node-a", 1);
    v["spec"]["pool"]["generation"] = json!("one");
    let s = status(
        raw(
            &t.client,
            "POST",
            "/apis/resource.k8s.io/v1/resourceslices",
            "application/json",
            &v.to_string(),
        )
        .await,
    );
    assert_eq!((s.code, s.reason.as_str()), (400, "BadRequest"));
    assert!(
        s.message
            .starts_with("ResourceSlice in version \"v1\" cannot be handled as a ResourceSlice"),
        "{}",
        s.message
    );
}

#[tokio::test]
async fn generation_changes_with_the_spec_only() {
    let t = Scope::new("generation").await;
    let api = t.slices();
    let name = t.name("s1");
    let created = api
        .create(&PostParams::default(), &slice(t.slice_json("s1", "node-a", 1)))
        .await
        .expect("create");
    assert_eq!(created.metadata.generation, Some(1));
    let labels = json!({"metadata": {"labels": {"x": "y"}}});
    let relabeled = api
        .patch(&name, &PatchParams::default(), &Patch::Merge(&labels))
        .await
        .expect("label");
    assert_eq!(relabeled.metadata.generation, Some(1));
    let spec = json!({"spec": {"pool": {"generation": 2}}});
    let respec = api
        .patch(&name, &PatchParams::default(), &Patch::Merge(&spec))
        .await
        .expect("spec");
    assert_eq!(respec.metadata.generation, Some(2));
    // A no-op write does not bump the resourceVersion.
    let again = api
        .patch(&name, &PatchParams::default(), &Patch::Merge(&spec))
        .await
        .expect("no-op");
    assert_eq!(again.metadata.resource_version, respec.metadata.resource_version);
}

#[tokio::test]
async fn selectors() {
    let t = Scope::new("selectors").await;
    let api = t.slices();
    for (name, node, tier) in [
        ("s1", "node-a", "gold"),
        ("s2", "node-b", "silver"),
        ("s3", "node-a", "bronze"),
    ] {
        let mut s = slice(t.slice_json(name, node, 1));
        s.metadata.labels = Some([("tier".to_string(), tier.to_string())].into());
        api.create(&PostParams::default(), &s).await.expect("create");
    }
    let scope = &t;
    let list = |lp: ListParams| {
        let api = api.clone();
        async move { ours(scope, api.list(&lp).await.expect("list").items) }
    };
    let node_a = t.name("node-a");
    assert_eq!(
        list(ListParams::default().fields(&format!("spec.nodeName={node_a}"))).await,
        vec!["s1", "s3"]
    );
    let fields = format!(
        "spec.nodeName={node_a},spec.driver=multinic.dev,metadata.name!={}",
        t.name("s1")
    );
    assert_eq!(list(ListParams::default().fields(&fields)).await, vec!["s3"]);
    assert_eq!(
        list(ListParams::default().labels("tier in (gold,silver)")).await,
        vec!["s1", "s2"]
    );
    assert_eq!(
        list(ListParams::default().labels("tier!=gold,tier")).await,
        vec!["s2", "s3"]
    );
    assert!(list(ListParams::default().labels("!tier")).await.is_empty());
    // Upstream only supports metadata.name, spec.nodeName and spec.driver for slices.
    let s = status(
        api.list(&ListParams::default().fields(&format!("spec.pool.name={node_a}")))
            .await,
    );
    assert_eq!((s.code, s.reason.as_str()), (400, "BadRequest"));
    assert!(s.message.contains("field label not supported"), "{}", s.message);
    // Claims: metadata.namespace works.
    let claims: Api<ResourceClaim> = Api::all(t.client.clone());
    t.claims()
        .create(&PostParams::default(), &claim(claim_json("c1")))
        .await
        .expect("claim");
    let in_ns = claims
        .list(&ListParams::default().fields(&format!("metadata.namespace={}", t.ns)))
        .await
        .expect("list");
    let names: Vec<_> = in_ns.items.into_iter().filter_map(|c| c.metadata.name).collect();
    assert_eq!(names, vec!["c1"]);
}

#[tokio::test]
async fn pagination() {
    let t = Scope::new("pages").await;
    let api = t.slices();
    let label = format!("test={}", t.id);
    for i in 0..5 {
        let mut s = slice(t.slice_json(&format!("s{i}"), "node-a", 1));
        s.metadata.labels = Some([("test".to_string(), t.id.clone())].into());
        api.create(&PostParams::default(), &s).await.expect("create");
    }
    let first = api
        .list(&ListParams::default().labels(&label).limit(2))
        .await
        .expect("page 1");
    assert_eq!(first.items.len(), 2);
    let token = first.metadata.continue_.clone().expect("continue token");
    let second = api
        .list(&ListParams::default().labels(&label).limit(2).continue_token(&token))
        .await
        .expect("page 2");
    assert_eq!(second.items[0].metadata.name, Some(t.name("s2")));
    let all = api
        .list(&ListParams::default().labels(&label).limit(10))
        .await
        .expect("all");
    assert_eq!(all.items.len(), 5);
    assert!(all.metadata.continue_.as_deref().unwrap_or("").is_empty());
}

#[tokio::test]
async fn merge_and_json_patch() {
    let t = Scope::new("patch").await;
    let api = t.slices();
    let name = t.name("s1");
    api.create(&PostParams::default(), &slice(t.slice_json("s1", "node-a", 1)))
        .await
        .expect("create");
    let path = format!("/apis/resource.k8s.io/v1/resourceslices/{name}");
    let ops = json!([{"op": "replace", "path": "/spec/pool/generation", "value": 5}]).to_string();
    raw(&t.client, "PATCH", &path, "application/json-patch+json", &ops)
        .await
        .expect("json patch");
    assert_eq!(api.get(&name).await.expect("get").spec.pool.generation, 5);
    let ops = json!([{"op": "test", "path": "/spec/pool/generation", "value": 6}]).to_string();
    let s = status(raw(&t.client, "PATCH", &path, "application/json-patch+json", &ops).await);
    assert_eq!(s.code, 422, "{}", s.message);
    // A missing member tests as null (kube-runtime's finalizer helper relies on it).
    let ops = json!([{"op": "test", "path": "/metadata/annotations", "value": null},
                     {"op": "add", "path": "/metadata/annotations", "value": {"a": "b"}}])
    .to_string();
    raw(&t.client, "PATCH", &path, "application/json-patch+json", &ops)
        .await
        .expect("test of a missing member against null");
    let annotations = api.get(&name).await.expect("get").metadata.annotations;
    assert_eq!(annotations.unwrap_or_default().get("a").map(String::as_str), Some("b"));
    let s = status(
        api.patch(&t.name("nope"), &PatchParams::default(), &Patch::Merge(&json!({})))
            .await,
    );
    assert_eq!(s.code, 404);
    // Validation runs on patched objects too.
    let s = status(
        api.patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"pool": {"resourceSliceCount": 0}}})),
        )
        .await,
    );
    assert_eq!(s.code, 422);
}

#[tokio::test]
async fn delete_collection() {
    let t = Scope::new("delcoll").await;
    let api: Api<ResourceSlice> = t.slices();
    for (name, node) in [("s1", "node-a"), ("s2", "node-b"), ("s3", "node-a")] {
        api.create(&PostParams::default(), &slice(t.slice_json(name, node, 1)))
            .await
            .expect("create");
    }
    api.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().fields(&format!("spec.nodeName={}", t.name("node-a"))),
    )
    .await
    .expect("delete collection");
    let left = api.list(&ListParams::default()).await.expect("list");
    assert_eq!(ours(&t, left.items), vec!["s2"]);
}
