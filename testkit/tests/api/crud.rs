//! Generic verbs, errors, preconditions, selectors, faults and the request log.

use either::Either;
use k8s_openapi::api::resource::v1::{ResourceClaim, ResourceSlice};
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use multinic_testkit::FakeApiServer;
use serde_json::json;

use crate::{claim, claim_json, raw, slice, slice_json, status};

#[tokio::test]
async fn create_get_list_delete() {
    let server = FakeApiServer::start().await;
    let api: Api<ResourceClaim> = Api::default_namespaced(server.client());
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

    match api.delete("c1", &DeleteParams::default()).await.expect("delete") {
        Either::Right(s) => {
            assert!(s.is_success());
            assert_eq!(s.details.map(|d| d.uid), Some(uid));
        }
        Either::Left(o) => panic!("built-in resources return a Status on delete, got {o:?}"),
    }
    let s = status(api.get("c1").await);
    assert_eq!((s.code, s.reason.as_str()), (404, "NotFound"));
    assert_eq!(s.message, "resourceclaims.resource.k8s.io \"c1\" not found");
    assert!(
        server
            .get("resource.k8s.io/v1", "ResourceClaim", Some("default"), "c1")
            .is_none()
    );
}

#[tokio::test]
async fn create_existing_is_already_exists() {
    let server = FakeApiServer::start().await;
    let api: Api<ResourceSlice> = Api::all(server.client());
    api.create(&PostParams::default(), &slice(slice_json("s1", "node-a", 1)))
        .await
        .expect("create");
    let s = status(
        api.create(&PostParams::default(), &slice(slice_json("s1", "node-a", 1)))
            .await,
    );
    assert_eq!((s.code, s.reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(s.message, "resourceslices.resource.k8s.io \"s1\" already exists");
}

#[tokio::test]
async fn resource_version_is_one_global_counter() {
    let server = FakeApiServer::start().await;
    let claims: Api<ResourceClaim> = Api::default_namespaced(server.client());
    let slices: Api<ResourceSlice> = Api::all(server.client());
    let a = claims
        .create(&PostParams::default(), &claim(claim_json("c1")))
        .await
        .expect("claim");
    let b = slices
        .create(&PostParams::default(), &slice(slice_json("s1", "node-a", 1)))
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
    assert_eq!(server.resource_version(), c);
}

#[tokio::test]
async fn stale_resource_version_on_put_conflicts() {
    let server = FakeApiServer::start().await;
    let api: Api<ResourceSlice> = Api::all(server.client());
    let first = api
        .create(&PostParams::default(), &slice(slice_json("s1", "node-a", 1)))
        .await
        .expect("create");
    let mut second = first.clone();
    second.metadata.labels = Some([("a".to_string(), "b".to_string())].into());
    let updated = api
        .replace("s1", &PostParams::default(), &second)
        .await
        .expect("update");
    assert_ne!(updated.metadata.resource_version, first.metadata.resource_version);
    // `first` carries the old resourceVersion now.
    let s = status(api.replace("s1", &PostParams::default(), &first).await);
    assert_eq!((s.code, s.reason.as_str()), (409, "Conflict"));
    assert_eq!(
        s.message,
        "Operation cannot be fulfilled on resourceslices.resource.k8s.io \"s1\": the object has been modified; please apply your changes to the latest version and try again"
    );
    // Without a resourceVersion the update is unconditional for resource.k8s.io (AllowUnconditionalUpdate).
    let mut unconditional = updated.clone();
    unconditional.metadata.resource_version = None;
    unconditional.metadata.labels = Some([("a".to_string(), "c".to_string())].into());
    api.replace("s1", &PostParams::default(), &unconditional)
        .await
        .expect("unconditional update");
}

#[tokio::test]
async fn put_with_other_uid_fails_the_uid_precondition() {
    let server = FakeApiServer::start().await;
    let api: Api<ResourceSlice> = Api::all(server.client());
    let mut obj = api
        .create(&PostParams::default(), &slice(slice_json("s1", "node-a", 1)))
        .await
        .expect("create");
    let real = obj.metadata.uid.clone().expect("uid");
    obj.metadata.uid = Some("6a4b1c6e-0000-4000-8000-000000000000".into());
    let s = status(api.replace("s1", &PostParams::default(), &obj).await);
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
    let server = FakeApiServer::start().await;
    let api: Api<ResourceSlice> = Api::all(server.client());
    api.create(&PostParams::default(), &slice(slice_json("s1", "node-a", 1)))
        .await
        .expect("create");
    let mut cfg = slice_json("s1", "node-a", 1);
    cfg["metadata"]["uid"] = json!("6a4b1c6e-0000-4000-8000-000000000000");
    // Upstream (kubernetes#127625): an apply naming another uid fails as an immutable-field change.
    let s = status(api.patch("s1", &PatchParams::apply("a"), &Patch::Apply(&cfg)).await);
    assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"));
    assert!(
        s.message
            .contains("metadata.uid: Invalid value: \"6a4b1c6e-0000-4000-8000-000000000000\": field is immutable"),
        "{}",
        s.message
    );
    // An apply naming a uid cannot create an object.
    let mut cfg = slice_json("s2", "node-b", 1);
    cfg["metadata"]["uid"] = json!("6a4b1c6e-0000-4000-8000-000000000000");
    let s = status(api.patch("s2", &PatchParams::apply("a"), &Patch::Apply(&cfg)).await);
    assert_eq!((s.code, s.reason.as_str()), (409, "Conflict"));
    assert!(
        s.message.contains("uid mismatch: the provided object specified uid"),
        "{}",
        s.message
    );
    // A matching uid works as a guard.
    let real = api.get("s1").await.expect("get").metadata.uid.expect("uid");
    let mut cfg = slice_json("s1", "node-a", 1);
    cfg["metadata"]["uid"] = json!(real);
    api.patch("s1", &PatchParams::apply("a"), &Patch::Apply(&cfg))
        .await
        .expect("apply with matching uid");
}

#[tokio::test]
async fn delete_preconditions() {
    let server = FakeApiServer::start().await;
    let api: Api<ResourceSlice> = Api::all(server.client());
    let obj = api
        .create(&PostParams::default(), &slice(slice_json("s1", "node-a", 1)))
        .await
        .expect("create");
    let wrong_uid = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some("00000000-0000-4000-8000-000000000000".into()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    let s = status(api.delete("s1", &wrong_uid).await);
    assert_eq!((s.code, s.reason.as_str()), (409, "Conflict"));
    assert!(
        s.message
            .contains("Precondition failed: UID in precondition: 00000000-0000-4000-8000-000000000000")
    );
    let wrong_rv = DeleteParams {
        preconditions: Some(Preconditions {
            uid: None,
            resource_version: Some("999".into()),
        }),
        ..DeleteParams::default()
    };
    let s = status(api.delete("s1", &wrong_rv).await);
    assert_eq!(s.code, 409);
    assert!(
        s.message
            .contains("Precondition failed: ResourceVersion in precondition: 999"),
        "{}",
        s.message
    );
    let right = DeleteParams {
        preconditions: Some(Preconditions {
            uid: obj.metadata.uid.clone(),
            resource_version: obj.metadata.resource_version.clone(),
        }),
        ..DeleteParams::default()
    };
    api.delete("s1", &right)
        .await
        .expect("delete with matching preconditions");
    assert!(server.list("resource.k8s.io/v1", "resourceslices", None).is_empty());
}

#[tokio::test]
async fn finalizers_delay_deletion() {
    let server = FakeApiServer::start().await;
    let api: Api<ResourceSlice> = Api::all(server.client());
    let mut s = slice(slice_json("s1", "node-a", 1));
    s.metadata.finalizers = Some(vec!["multinic.dev/cleanup".into()]);
    api.create(&PostParams::default(), &s).await.expect("create");
    match api.delete("s1", &DeleteParams::default()).await.expect("delete") {
        Either::Left(o) => assert!(o.metadata.deletion_timestamp.is_some()),
        Either::Right(s) => panic!("expected the object pending finalization, got {s:?}"),
    }
    let patch = json!({"metadata": {"finalizers": null}});
    api.patch("s1", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("remove finalizer");
    assert_eq!(status(api.get("s1").await).code, 404);
}

#[tokio::test]
async fn apply_without_field_manager_is_invalid() {
    let server = FakeApiServer::start().await;
    let client = server.client();
    let body = slice_json("s1", "node-a", 1).to_string();
    let s = status(
        raw(
            &client,
            "PATCH",
            "/apis/resource.k8s.io/v1/resourceslices/s1",
            "application/apply-patch+yaml",
            &body,
        )
        .await,
    );
    // Upstream validates PatchOptions: 422, not 400.
    assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        s.message,
        "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch"
    );
    let s = status(
        raw(
            &client,
            "PATCH",
            "/apis/resource.k8s.io/v1/resourceslices/s1?force=true",
            "application/merge-patch+json",
            "{}",
        )
        .await,
    );
    assert_eq!(s.code, 422);
    assert!(
        s.message
            .contains("force: Forbidden: may not be specified for non-apply patch")
    );
}

#[tokio::test]
async fn unsupported_media_type_and_method() {
    let server = FakeApiServer::start().await;
    let client = server.client();
    let s = status(
        raw(
            &client,
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
            &client,
            "PATCH",
            "/apis/multinic.dev/v1alpha1/multinicnetworks/n",
            "application/strategic-merge-patch+json",
            "{}",
        )
        .await,
    );
    assert_eq!((s.code, s.reason.as_str()), (415, "UnsupportedMediaType"));
    assert!(s.message.contains("application/apply-patch+yaml"));
    let s = status(
        raw(
            &client,
            "POST",
            "/apis/resource.k8s.io/v1/resourceslices/s1",
            "application/json",
            "{}",
        )
        .await,
    );
    assert_eq!((s.code, s.reason.as_str()), (405, "MethodNotAllowed"));
    let s = status(
        raw(
            &client,
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
            &client,
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
    let server = FakeApiServer::start().await;
    let client = server.client();
    let mut v = slice_json("s1", "node-a", 1);
    v["spec"]["pool"]["generation"] = json!("one");
    let s = status(
        raw(
            &client,
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
    let server = FakeApiServer::start().await;
    let api: Api<ResourceSlice> = Api::all(server.client());
    let created = api
        .create(&PostParams::default(), &slice(slice_json("s1", "node-a", 1)))
        .await
        .expect("create");
    assert_eq!(created.metadata.generation, Some(1));
    let labels = json!({"metadata": {"labels": {"x": "y"}}});
    let relabeled = api
        .patch("s1", &PatchParams::default(), &Patch::Merge(&labels))
        .await
        .expect("label");
    assert_eq!(relabeled.metadata.generation, Some(1));
    let spec = json!({"spec": {"pool": {"generation": 2}}});
    let respec = api
        .patch("s1", &PatchParams::default(), &Patch::Merge(&spec))
        .await
        .expect("spec");
    assert_eq!(respec.metadata.generation, Some(2));
    // A no-op write does not bump the resourceVersion.
    let again = api
        .patch("s1", &PatchParams::default(), &Patch::Merge(&spec))
        .await
        .expect("no-op");
    assert_eq!(again.metadata.resource_version, respec.metadata.resource_version);
}

#[tokio::test]
async fn selectors() {
    let server = FakeApiServer::start().await;
    let api: Api<ResourceSlice> = Api::all(server.client());
    for (name, node, tier) in [
        ("s1", "node-a", "gold"),
        ("s2", "node-b", "silver"),
        ("s3", "node-a", "bronze"),
    ] {
        let mut s = slice(slice_json(name, node, 1));
        s.metadata.labels = Some([("tier".to_string(), tier.to_string())].into());
        api.create(&PostParams::default(), &s).await.expect("create");
    }
    let names = |l: kube::core::ObjectList<ResourceSlice>| -> Vec<String> {
        l.items.into_iter().filter_map(|s| s.metadata.name).collect()
    };
    let l = api
        .list(&ListParams::default().fields("spec.nodeName=node-a"))
        .await
        .expect("list");
    assert_eq!(names(l), vec!["s1", "s3"]);
    let l = api
        .list(&ListParams::default().fields("spec.nodeName=node-a,spec.driver=multinic.dev,metadata.name!=s1"))
        .await
        .expect("list");
    assert_eq!(names(l), vec!["s3"]);
    let l = api
        .list(&ListParams::default().labels("tier in (gold,silver)"))
        .await
        .expect("list");
    assert_eq!(names(l), vec!["s1", "s2"]);
    let l = api
        .list(&ListParams::default().labels("tier!=gold,tier"))
        .await
        .expect("list");
    assert_eq!(names(l), vec!["s2", "s3"]);
    let l = api.list(&ListParams::default().labels("!tier")).await.expect("list");
    assert!(names(l).is_empty());
    // Upstream only supports metadata.name, spec.nodeName and spec.driver for slices.
    let s = status(api.list(&ListParams::default().fields("spec.pool.name=node-a")).await);
    assert_eq!((s.code, s.reason.as_str()), (400, "BadRequest"));
    assert!(s.message.contains("field label not supported"), "{}", s.message);
    // Claims: metadata.namespace works.
    let claims: Api<ResourceClaim> = Api::all(server.client());
    assert!(
        claims
            .list(&ListParams::default().fields("metadata.namespace=default"))
            .await
            .expect("list")
            .items
            .is_empty()
    );
}

#[tokio::test]
async fn pagination() {
    let server = FakeApiServer::start().await;
    let api: Api<ResourceSlice> = Api::all(server.client());
    for i in 0..5 {
        api.create(
            &PostParams::default(),
            &slice(slice_json(&format!("s{i}"), "node-a", 1)),
        )
        .await
        .expect("create");
    }
    let first = api.list(&ListParams::default().limit(2)).await.expect("page 1");
    assert_eq!(first.items.len(), 2);
    let token = first.metadata.continue_.clone().expect("continue token");
    let second = api
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .expect("page 2");
    assert_eq!(second.items[0].metadata.name.as_deref(), Some("s2"));
    let all = api.list(&ListParams::default().limit(10)).await.expect("all");
    assert_eq!(all.items.len(), 5);
    assert!(all.metadata.continue_.as_deref().unwrap_or("").is_empty());
}

#[tokio::test]
async fn merge_and_json_patch() {
    let server = FakeApiServer::start().await;
    let api: Api<ResourceSlice> = Api::all(server.client());
    api.create(&PostParams::default(), &slice(slice_json("s1", "node-a", 1)))
        .await
        .expect("create");
    let client = server.client();
    let path = "/apis/resource.k8s.io/v1/resourceslices/s1";
    let ops = json!([{"op": "replace", "path": "/spec/pool/generation", "value": 5}]).to_string();
    raw(&client, "PATCH", path, "application/json-patch+json", &ops)
        .await
        .expect("json patch");
    assert_eq!(api.get("s1").await.expect("get").spec.pool.generation, 5);
    let ops = json!([{"op": "test", "path": "/spec/pool/generation", "value": 6}]).to_string();
    let s = status(raw(&client, "PATCH", path, "application/json-patch+json", &ops).await);
    assert_eq!(s.code, 422);
    let s = status(
        api.patch("nope", &PatchParams::default(), &Patch::Merge(&json!({})))
            .await,
    );
    assert_eq!(s.code, 404);
    // Validation runs on patched objects too.
    let s = status(
        api.patch(
            "s1",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"pool": {"resourceSliceCount": 0}}})),
        )
        .await,
    );
    assert_eq!(s.code, 422);
}

#[tokio::test]
async fn delete_collection() {
    let server = FakeApiServer::start().await;
    let api: Api<ResourceSlice> = Api::all(server.client());
    for (name, node) in [("s1", "node-a"), ("s2", "node-b"), ("s3", "node-a")] {
        api.create(&PostParams::default(), &slice(slice_json(name, node, 1)))
            .await
            .expect("create");
    }
    api.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().fields("spec.nodeName=node-a"),
    )
    .await
    .expect("delete collection");
    let left: Vec<_> = server.list("resource.k8s.io/v1", "ResourceSlice", None);
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["metadata"]["name"], "s2");
}

#[tokio::test]
async fn fail_next_and_unavailable() {
    let server = FakeApiServer::start().await;
    let api: Api<ResourceClaim> = Api::default_namespaced(server.client());
    server.fail_next("/resourceclaims", 500);
    let s = status(api.list(&ListParams::default()).await);
    assert_eq!((s.code, s.reason.as_str()), (500, "InternalError"));
    api.list(&ListParams::default()).await.expect("the failure is one-shot");
    server.fail_next("/other", 409);
    api.list(&ListParams::default())
        .await
        .expect("only matching paths fail");

    server.set_unavailable(true);
    match api.list(&ListParams::default()).await {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 503, "only a request racing the switch sees a status"),
        Err(_) => {}
        Ok(_) => panic!("the server is down"),
    }
    let err = api
        .list(&ListParams::default())
        .await
        .expect_err("connections are refused");
    assert!(!matches!(err, kube::Error::Api(_)), "{err:?}");
    server.set_unavailable(false);
    let lp = ListParams::default();
    crate::wait_until_ok(|| api.list(&lp)).await;
}

#[tokio::test]
async fn overloaded_answers_503() {
    let server = FakeApiServer::start().await;
    // kube retries 503 by default; a client without retries sees it at once.
    let mut config = kube::Config::new(server.url().parse().expect("url"));
    config.default_retry = false;
    let api: Api<ResourceClaim> = Api::default_namespaced(kube::Client::try_from(config).expect("client"));
    server.set_overloaded(true);
    let s = status(api.list(&ListParams::default()).await);
    assert_eq!((s.code, s.reason.as_str()), (503, "ServiceUnavailable"));
    server.set_overloaded(false);
    api.list(&ListParams::default()).await.expect("served again");
}

#[tokio::test]
async fn request_log_records_calls() {
    let server = FakeApiServer::start().await;
    let api: Api<ResourceSlice> = Api::all(server.client());
    api.patch(
        "s1",
        &PatchParams::apply("multinic.dev").force(),
        &Patch::Apply(&slice_json("s1", "node-a", 1)),
    )
    .await
    .expect("apply");
    let log = server.requests();
    let last = log.last().expect("a request");
    assert_eq!(last.method, "PATCH");
    assert_eq!(last.path, "/apis/resource.k8s.io/v1/resourceslices/s1");
    assert_eq!(last.content_type.as_deref(), Some("application/apply-patch+yaml"));
    assert_eq!(last.field_manager.as_deref(), Some("multinic.dev"));
    assert!(last.has_query("force", "true"));
    assert_eq!(last.status, 201);
    server.clear_requests();
    assert!(server.requests().is_empty());
}

#[tokio::test]
async fn kubeconfig_works_for_a_client() {
    let server = FakeApiServer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("kubeconfig");
    server.write_kubeconfig(&path).expect("write");
    let kc = kube::config::Kubeconfig::read_from(&path).expect("parse kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .expect("config");
    assert_eq!(config.cluster_url.to_string().trim_end_matches('/'), server.url());
    let client = kube::Client::try_from(config).expect("client");
    let api: Api<ResourceClaim> = Api::default_namespaced(client);
    api.list(&ListParams::default()).await.expect("list through kubeconfig");
}

#[tokio::test]
async fn insert_seeds_objects_with_metadata() {
    let server = FakeApiServer::start().await;
    let mut c = claim_json("seeded");
    c["status"] = json!({"allocation": {"devices": {"results": [
        {"request": "nics", "driver": "multinic.dev", "pool": "node-a", "device": "eth1"}
    ]}}});
    let stored = server.insert(c).expect("insert");
    assert!(stored["metadata"]["uid"].as_str().is_some());
    let api: Api<ResourceClaim> = Api::default_namespaced(server.client());
    let got = api.get("seeded").await.expect("get");
    assert!(got.status.and_then(|s| s.allocation).is_some());
    assert!(
        server
            .insert(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}}))
            .is_err()
    );
    assert!(
        server
            .delete("resource.k8s.io/v1", "resourceclaims", Some("default"), "seeded")
            .is_some()
    );
}
