//! The calls the multinic driver makes, against a real kube-apiserver: validation of the DRA
//! objects, optimistic concurrency, preconditions, server-side apply, status subresources,
//! selectors, watches and the multinic.dev custom resources. These are the semantics the fake in
//! `testkit/src` imitates; where the two disagree, this suite says what upstream does.
//!
//! Built only with `--features real-cluster`. The API server is the one of the kubeconfig named by
//! `MULTINIC_E2E_KUBECONFIG` (e2e/cluster/test.sh passes the cluster's admin kubeconfig); without
//! it every test fails. Each test works in a namespace of its own and gives its cluster-scoped
//! objects names ending in its id (`-rapi...`); dropping its [`Scope`] deletes both, also when
//! the test failed. The CRDs of `deploy/crds.yaml` are created when missing; a multinic
//! controller must not run meanwhile (it would reconcile the suite's MultiNicNetworks).

mod claims;
mod classes;
mod crud;
mod slices;
mod watch;

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::resource::v1::{DeviceClass, ResourceClaim, ResourceSlice};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
};
use kube::{Api, Client};
use serde_json::{Value, json};

pub const DRIVER: &str = "multinic.dev";
/// The environment variable naming the kubeconfig of the real API server.
pub const KUBECONFIG_ENV: &str = "MULTINIC_E2E_KUBECONFIG";

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

/// A client for the API server of `$MULTINIC_E2E_KUBECONFIG`.
async fn connect() -> Client {
    let path = std::env::var_os(KUBECONFIG_ENV).unwrap_or_else(|| {
        panic!("{KUBECONFIG_ENV} is not set: the real-cluster suite needs the kubeconfig of a real kube-apiserver")
    });
    let kc = kube::config::Kubeconfig::read_from(&path)
        .unwrap_or_else(|e| panic!("{KUBECONFIG_ENV}={}: {e}", path.to_string_lossy()));
    let config = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{KUBECONFIG_ENV}={}: {e}", path.to_string_lossy()));
    Client::try_from(config).unwrap_or_else(|e| panic!("kube client: {e}"))
}

/// `<plural>` of multinic.dev/v1alpha1 as a dynamic API.
pub fn multinic_api(client: Client, kind: &str, plural: &str) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(DRIVER, "v1alpha1", kind), plural);
    Api::all_with(client, &ar)
}

/// Creates the CRDs of `deploy/crds.yaml` that do not exist yet and waits until all are
/// established. Once per test process.
async fn ensure_crds(client: &Client) {
    static DONE: tokio::sync::Mutex<bool> = tokio::sync::Mutex::const_new(false);
    let mut done = DONE.lock().await;
    if *done {
        return;
    }
    let text = include_str!("../../../deploy/crds.yaml");
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut names = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let v = <Value as serde::Deserialize>::deserialize(doc).unwrap_or_else(|e| panic!("deploy/crds.yaml: {e}"));
        if v.is_null() {
            continue;
        }
        let crd: CustomResourceDefinition =
            serde_json::from_value(v).unwrap_or_else(|e| panic!("deploy/crds.yaml: {e}"));
        let name = crd.metadata.name.clone().unwrap_or_default();
        match api.create(&PostParams::default(), &crd).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => panic!("create CRD {name}: {e}"),
        }
        names.push(name);
    }
    for name in names {
        wait_until(Duration::from_secs(30), || async {
            let crd = api.get(&name).await.map_err(|e| e.to_string())?;
            let established = crd
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            if established {
                Ok(())
            } else {
                Err(format!("CRD {name} not established"))
            }
        })
        .await;
    }
    *done = true;
}

/// Retries `f` until it succeeds, failing after `limit`.
pub async fn wait_until<T, E: std::fmt::Debug, F: std::future::Future<Output = Result<T, E>>>(
    limit: Duration,
    mut f: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) => assert!(Instant::now() < deadline, "still failing after {limit:?}: {e:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// This process's part of every id: unique across runs (the clock) and across processes (the pid).
static RUN: LazyLock<String> = LazyLock::new(|| {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!("{:06x}", (secs ^ u64::from(std::process::id()) << 12) & 0xff_ffff)
});
static NEXT: AtomicU32 = AtomicU32::new(0);

/// One test's corner of the cluster: a namespace of its own and a suffix for the names of its
/// cluster-scoped objects. Dropping it deletes both.
pub struct Scope {
    pub client: Client,
    /// The namespace, `rapi-<tag>-<id>`.
    pub ns: String,
    /// `rapi<run><n>`: the suffix of every cluster-scoped name of this test.
    pub id: String,
}

impl Scope {
    /// Connects, makes sure the CRDs exist, and creates the test's namespace.
    pub async fn new(tag: &str) -> Scope {
        let client = connect().await;
        ensure_crds(&client).await;
        let id = format!("rapi{}{:02}", *RUN, NEXT.fetch_add(1, Ordering::Relaxed));
        let ns = format!("rapi-{tag}-{id}");
        assert!(ns.len() <= 63, "namespace name {ns} is too long");
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let obj: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}}))
            .unwrap_or_else(|e| panic!("namespace fixture: {e}"));
        namespaces
            .create(&PostParams::default(), &obj)
            .await
            .unwrap_or_else(|e| panic!("create namespace {ns}: {e}"));
        Scope { client, ns, id }
    }

    /// `base-<id>`: the name of a cluster-scoped object (or a node, pool) of this test.
    pub fn name(&self, base: &str) -> String {
        format!("{base}-{}", self.id)
    }

    pub fn claims(&self) -> Api<ResourceClaim> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    pub fn slices(&self) -> Api<ResourceSlice> {
        Api::all(self.client.clone())
    }

    pub fn classes(&self) -> Api<DeviceClass> {
        Api::all(self.client.clone())
    }

    /// A valid ResourceSlice named `base-<id>` for node `node-<id>` with `n` devices.
    pub fn slice_json(&self, base: &str, node: &str, n: usize) -> Value {
        slice_json(&self.name(base), &self.name(node), n)
    }

    /// Creates a claim and allocates `devices` (pool `node-a`) to it through the status
    /// subresource, as the scheduler does.
    pub async fn allocated_claim(&self, name: &str, devices: &[&str]) -> ResourceClaim {
        let api = self.claims();
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
}

/// The cluster-scoped kinds the suite writes.
fn cluster_scoped(client: &Client) -> Vec<Api<DynamicObject>> {
    let builtin = |kind: &str, plural: &str| {
        let ar = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("resource.k8s.io", "v1", kind), plural);
        Api::all_with(client.clone(), &ar)
    };
    vec![
        builtin("ResourceSlice", "resourceslices"),
        builtin("DeviceClass", "deviceclasses"),
        multinic_api(client.clone(), "MultiNicNetwork", "multinicnetworks"),
        multinic_api(client.clone(), "NicNodeBlocks", "nicnodeblocks"),
    ]
}

/// Deletes the namespace and every cluster-scoped object whose name ends in `-<id>` (finalizers
/// removed first). Problems are reported, not raised: this runs from `Drop`.
async fn clean_up(ns: &str, id: &str) -> Vec<String> {
    let client = connect().await;
    let mut problems = Vec::new();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    if let Err(e) = namespaces.delete(ns, &DeleteParams::background()).await {
        problems.push(format!("delete namespace {ns}: {e}"));
    }
    let suffix = format!("-{id}");
    for api in cluster_scoped(&client) {
        let list = match api.list(&ListParams::default()).await {
            Ok(l) => l,
            Err(kube::Error::Api(s)) if s.code == 404 => continue,
            Err(e) => {
                problems.push(format!("list: {e}"));
                continue;
            }
        };
        for obj in list.items {
            let Some(name) = obj.metadata.name.clone().filter(|n| n.ends_with(&suffix)) else {
                continue;
            };
            if obj.metadata.finalizers.as_ref().is_some_and(|f| !f.is_empty()) {
                let p = json!({"metadata": {"finalizers": null}});
                if let Err(e) = api.patch(&name, &PatchParams::default(), &Patch::Merge(&p)).await {
                    problems.push(format!("remove the finalizers of {name}: {e}"));
                }
            }
            match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => problems.push(format!("delete {name}: {e}")),
            }
        }
    }
    problems
}

impl Drop for Scope {
    fn drop(&mut self) {
        let (ns, id) = (self.ns.clone(), self.id.clone());
        // The test's runtime may be unwinding: clean up on a thread with a runtime of its own.
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build();
            match rt {
                Ok(rt) => rt.block_on(clean_up(&ns, &id)),
                Err(e) => vec![format!("runtime: {e}")],
            }
        })
        .join();
        match done {
            Ok(problems) if problems.is_empty() => {}
            Ok(problems) => eprintln!("cleanup of {} left something behind: {problems:?}", self.ns),
            Err(_) => eprintln!("cleanup of {} panicked", self.ns),
        }
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

/// A ResourceClaim asking for 2 devices of class `rdma` (which need not exist).
pub fn claim_json(name: &str) -> Value {
    json!({
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": name},
        "spec": {"devices": {"requests": [{"name": "nics", "exactly": {"deviceClassName": "rdma", "count": 2}}]}}
    })
}

pub fn claim(v: Value) -> ResourceClaim {
    serde_json::from_value(v).unwrap_or_else(|e| panic!("claim fixture: {e}"))
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

/// Names of the listed objects that belong to the test (end in `-<id>`), in list order.
pub fn ours<K: kube::Resource>(t: &Scope, items: Vec<K>) -> Vec<String> {
    let suffix = format!("-{}", t.id);
    items
        .into_iter()
        .filter_map(|o| o.meta().name.clone())
        .filter(|n| n.ends_with(&suffix))
        .map(|n| n.trim_end_matches(&suffix).to_string())
        .collect()
}
