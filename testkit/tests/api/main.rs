//! Tests of the fake API server through the real `kube::Client`.

mod claims;
mod classes;
mod crud;
mod slices;
mod watch;

use std::time::{Duration, Instant};

use k8s_openapi::api::resource::v1::{ResourceClaim, ResourceSlice};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use multinic_testkit::FakeApiServer;
use serde_json::{Value, json};

pub const DRIVER: &str = "multinic.dev";

/// The `Status` of a failed call.
pub fn status(r: Result<impl std::fmt::Debug, kube::Error>) -> kube::core::Status {
    match r {
        Err(kube::Error::Api(s)) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// Fields named by the causes of a Status.
pub fn cause_fields(s: &kube::core::Status) -> Vec<String> {
    s.details
        .as_ref()
        .map(|d| d.causes.iter().map(|c| c.field.clone()).collect())
        .unwrap_or_default()
}

/// Retries `f` until it succeeds, failing after 10 s.
pub async fn wait_until_ok<T, E: std::fmt::Debug, F: std::future::Future<Output = Result<T, E>>>(
    mut f: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) => assert!(Instant::now() < deadline, "still failing after 10 s: {e:?}"),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A device with a few attributes.
pub fn device(name: &str) -> Value {
    json!({
        "name": name,
        "attributes": {
            "multinic.dev/ifName": {"string": "eth1"},
            "multinic.dev/mtu": {"int": 9000},
            "multinic.dev/rdma": {"bool": true},
            "multinic.dev/fwVersion": {"version": "1.2.3"},
            "resource.kubernetes.io/pcieRoot": {"string": "pci0000:3a"},
        },
        "capacity": {"multinic.dev/speed": {"value": "100Gi"}},
    })
}

/// A valid ResourceSlice for `node` with `n` devices.
pub fn slice_json(name: &str, node: &str, n: usize) -> Value {
    let devices: Vec<Value> = (0..n).map(|i| device(&format!("dev-{i}"))).collect();
    json!({
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceSlice",
        "metadata": {"name": name},
        "spec": {
            "driver": DRIVER,
            "pool": {"name": node, "generation": 1, "resourceSliceCount": 1},
            "nodeName": node,
            "devices": devices,
        }
    })
}

pub fn slice(v: Value) -> ResourceSlice {
    serde_json::from_value(v).unwrap_or_else(|e| panic!("slice fixture: {e}"))
}

/// A ResourceClaim asking for `count` devices of class `rdma`.
pub fn claim_json(name: &str) -> Value {
    json!({
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"devices": {"requests": [{"name": "nics", "exactly": {"deviceClassName": "rdma", "count": 2}}]}}
    })
}

pub fn claim(v: Value) -> ResourceClaim {
    serde_json::from_value(v).unwrap_or_else(|e| panic!("claim fixture: {e}"))
}

/// Creates a claim and allocates `devices` (pool `node-a`) to it through the status
/// subresource, as the scheduler does.
pub async fn allocated_claim(server: &FakeApiServer, name: &str, devices: &[&str]) -> ResourceClaim {
    let api: Api<ResourceClaim> = Api::default_namespaced(server.client());
    api.create(&PostParams::default(), &claim(claim_json(name)))
        .await
        .unwrap_or_else(|e| panic!("create claim: {e}"));
    let results: Vec<Value> = devices
        .iter()
        .map(|d| json!({"request": "nics", "driver": DRIVER, "pool": "node-a", "device": d}))
        .collect();
    let status = json!({
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": name},
        "status": {"allocation": {"devices": {"results": results}}}
    });
    api.patch_status(name, &PatchParams::apply("kube-scheduler"), &Patch::Apply(&status))
        .await
        .unwrap_or_else(|e| panic!("allocate claim: {e}"))
}

/// Applies `status.devices` entries to a claim's status as `manager`.
pub async fn apply_device_status(
    api: &Api<ResourceClaim>,
    name: &str,
    manager: &str,
    devices: Value,
) -> Result<ResourceClaim, kube::Error> {
    let patch = json!({
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": name},
        "status": {"devices": devices}
    });
    api.patch_status(name, &PatchParams::apply(manager), &Patch::Apply(&patch))
        .await
}

/// One `status.devices` entry of pool `node-a`.
pub fn dev_status(device: &str, extra: Value) -> Value {
    let mut v = json!({"driver": DRIVER, "pool": "node-a", "device": device});
    if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
        for (k, x) in e {
            o.insert(k.clone(), x.clone());
        }
    }
    v
}

/// Sends a raw request through the kube client.
pub async fn raw(
    client: &kube::Client,
    method: &str,
    path: &str,
    content_type: &str,
    body: &str,
) -> Result<String, kube::Error> {
    let req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", content_type)
        .body(body.as_bytes().to_vec())
        .unwrap_or_else(|e| panic!("request: {e}"));
    client.request_text(req).await
}
