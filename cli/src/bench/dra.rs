//! The node plugin in process, as in `kubelet-plugin/tests/dra_plugin.rs`: the real driver with
//! its kube client talking HTTP to the in-process fake API server, served on a real unix socket,
//! and a kubelet-like gRPC client.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipnet::Ipv4Net;
use k8s_openapi::api::resource::v1::{AllocatedDeviceStatus, ResourceClaim};
use multinic_api::crd::{NicNodeBlocks, node_blocks_name};
use multinic_api::plan::{PlanError, PlanStore};
use multinic_api::rails::{RailsError, RailsLayout};
use multinic_kubelet_plugin::driver::{ApiError, ClaimApi, ClaimRef, Driver, DriverOptions, KubeClaimApi};
use multinic_kubelet_plugin::grpc::{self, DraService, ServeError};
use multinic_kubelet_plugin::inventory::Nic;
use multinic_kubelet_plugin::metrics::Metrics;
use multinic_kubelet_plugin::publish::DeviceTable;
use multinic_kubelet_plugin::slices::{SliceOptions, build_device_table};
use multinic_proto::dra::v1;
use multinic_testkit::FakeApiServer;
use serde_json::{Value, json};
use tonic::transport::Channel;

use super::fixtures::{FixtureError, temp_dir};

pub const NODE: &str = "bench-node";
pub const NETWORK: &str = "bench";
pub const DRIVER: &str = "multinic.dev";
pub const HOST_INDEX: u32 = 7;

pub type Client = v1::dra_plugin_client::DraPluginClient<Channel>;

/// `e` followed by each of its sources not already in the text: a transport error's own message
/// ("transport error") leaves out the cause (the socket's I/O error).
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let more = cause.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        next = cause.source();
    }
    text
}

/// `RailsLayout::new` on a subnet written as text.
pub fn rails_layout(subnet: &'static str, host_bits: u8, iface_bits: u8) -> Result<RailsLayout, DraError> {
    let net = subnet.parse().map_err(|source| DraError::Subnet { subnet, source })?;
    RailsLayout::new(net, host_bits, iface_bits).map_err(|source| DraError::Layout {
        subnet,
        host_bits,
        iface_bits,
        source,
    })
}

/// A failure of the node plugin (in process, or its binary run by [`super::rss::Proc`]), of the
/// fake API server (its thread or its objects), of a kubelet-like gRPC call, or a rails layout of
/// the bench, demo or VM checks that does not hold.
#[derive(Debug, thiserror::Error)]
pub enum DraError {
    #[error(transparent)]
    Fixture(#[from] FixtureError),
    #[error("subnet {subnet:?} is not an IPv4 CIDR: {source}")]
    Subnet {
        subnet: &'static str,
        source: ipnet::AddrParseError,
    },
    #[error("rails layout {subnet} hostBlock {host_bits} interfaceBlock {iface_bits}: {source}")]
    Layout {
        subnet: &'static str,
        host_bits: u8,
        iface_bits: u8,
        source: RailsError,
    },
    #[error(
        "block (host {HOST_INDEX}, rail {rail}) of NicNodeBlocks {}: {source}",
        node_blocks_name(NETWORK, NODE)
    )]
    Block { rail: u32, source: RailsError },
    #[error("{what} does not decode: {source}")]
    Decode { what: String, source: serde_json::Error },
    #[error("the in-memory claim map is poisoned: a thread of the bench panicked while holding it")]
    Poisoned,
    #[error("the fake API server: {action}: {source}")]
    Api {
        action: String,
        source: multinic_testkit::Error,
    },
    #[error("the fake API server assigned no uid to ResourceClaim bench/{claim}")]
    NoUid { claim: String },
    #[error("connecting to {path}: {}; is the plugin serving there?", with_causes(.source))]
    Connect {
        path: PathBuf,
        source: tonic::transport::Error,
    },
    #[error("{call}: {source}")]
    Rpc { call: &'static str, source: tonic::Status },
    #[error("{call}: claim {uid}: {error}")]
    Claim {
        call: &'static str,
        uid: String,
        error: String,
    },
    #[error("NodePrepareResources gave no answer for claim {uid}")]
    NoAnswer { uid: String },
    #[error("reading the plans left in {state}: {source}")]
    Plans { state: PathBuf, source: PlanError },
    #[error("{nics} NICs are more rails than a u32 counts")]
    TooManyNics { nics: usize },
    #[error("starting the driver: {0}")]
    Driver(#[from] PlanError),
    #[error(transparent)]
    Serve(#[from] ServeError),
    #[error("entering netns {netns} for the fake API server: {source}")]
    Setns { netns: String, source: nix::Error },
    #[error("starting the fake API server's tokio runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("the fake API server's thread ended before it reported how it started")]
    ApiThread,
    #[error("spawning {bin}: {source}")]
    Spawn { bin: PathBuf, source: std::io::Error },
    #[error("{bin} was spawned without a stderr pipe")]
    NoStderr { bin: PathBuf },
    #[error("plugin not serving {nics} published NICs after {timeout:?}; log:\n{log}")]
    NotReady {
        nics: usize,
        timeout: Duration,
        log: String,
    },
    #[error("plugin exited before serving; log:\n{log}")]
    Exited { log: String },
    #[error("reading {path}: {source}")]
    Status { path: String, source: std::io::Error },
    #[error("{key} missing or not a number of kB in {path}")]
    StatusKey { key: String, path: String },
}

/// Block (HOST_INDEX, `rail`) of the bench node in `layout`.
pub fn block(layout: &RailsLayout, rail: u32) -> Result<Ipv4Net, DraError> {
    layout
        .block(HOST_INDEX, rail)
        .map_err(|source| DraError::Block { rail, source })
}

/// The device table of `nics` as the bench node publishes them, and the device names in rail
/// order.
pub fn publish(nics: &[Nic]) -> (DeviceTable, Vec<String>) {
    let table = DeviceTable::default();
    let published = build_device_table(nics, &SliceOptions::new(NODE));
    let mut ordered: Vec<_> = published
        .iter()
        .map(|p| (p.rail_index, p.device.name.clone()))
        .collect();
    ordered.sort();
    table.set(&published);
    (table, ordered.into_iter().map(|(_, n)| n).collect())
}

/// The opaque config of the bench network.
pub fn params(layout: &RailsLayout, mode: &str) -> Value {
    json!({
        "apiVersion": "multinic.dev/v1alpha1", "kind": "NetworkConfig", "network": NETWORK,
        "attachment": {"mode": mode},
        "ipam": {"type": "rails", "subnet": layout.subnet.to_string(),
                 "hostBlock": layout.host_bits, "interfaceBlock": layout.iface_bits},
        "routing": {"mode": "l3", "policyRouting": true},
    })
}

/// `NicNodeBlocks <network>.<node>` with blocks (HOST_INDEX, 0..rails).
pub fn blocks_json(layout: &RailsLayout, rails: u32) -> Result<Value, DraError> {
    let blocks = (0..rails)
        .map(|k| Ok(json!({"railIndex": k, "cidr": block(layout, k)?.to_string()})))
        .collect::<Result<Vec<Value>, DraError>>()?;
    Ok(json!({
        "apiVersion": "multinic.dev/v1alpha1", "kind": "NicNodeBlocks",
        "metadata": {"name": node_blocks_name(NETWORK, NODE)},
        "spec": {"network": NETWORK, "nodeName": NODE, "hostIndex": HOST_INDEX, "blocks": blocks},
    }))
}

/// Seeds the node's blocks into the fake API server.
pub fn insert_blocks(api: &FakeApiServer, layout: &RailsLayout, rails: u32) -> Result<(), DraError> {
    insert_object(
        api,
        blocks_json(layout, rails)?,
        &format!("NicNodeBlocks {}", node_blocks_name(NETWORK, NODE)),
    )?;
    Ok(())
}

/// A claim API in memory: claims and blocks from maps, status writes accepted and dropped. Used
/// to measure the plugin without any API server.
#[derive(Clone)]
pub struct MemApi {
    claims: Arc<Mutex<HashMap<String, ResourceClaim>>>,
    blocks: Arc<NicNodeBlocks>,
}

impl MemApi {
    pub fn new(layout: &RailsLayout, rails: u32) -> Result<Self, DraError> {
        let blocks = serde_json::from_value(blocks_json(layout, rails)?).map_err(|source| DraError::Decode {
            what: format!("NicNodeBlocks {}", node_blocks_name(NETWORK, NODE)),
            source,
        })?;
        Ok(Self {
            claims: Arc::default(),
            blocks: Arc::new(blocks),
        })
    }

    fn insert(&self, obj: Value) -> Result<(), DraError> {
        let name = obj["metadata"]["name"].as_str().unwrap_or_default().to_string();
        let rc: ResourceClaim = serde_json::from_value(obj).map_err(|source| DraError::Decode {
            what: format!("ResourceClaim bench/{name}"),
            source,
        })?;
        self.claims.lock().map_err(|_| DraError::Poisoned)?.insert(name, rc);
        Ok(())
    }

    fn delete(&self, name: &str) {
        if let Ok(mut c) = self.claims.lock() {
            c.remove(name);
        }
    }
}

impl ClaimApi for MemApi {
    async fn get_claim(&self, _namespace: &str, name: &str) -> Result<Option<ResourceClaim>, ApiError> {
        Ok(self.claims.lock().ok().and_then(|c| c.get(name).cloned()))
    }

    async fn apply_status(&self, _claim: &ClaimRef, _devices: Vec<AllocatedDeviceStatus>) -> Result<bool, ApiError> {
        Ok(true)
    }

    async fn get_node_blocks(&self, _name: &str) -> Result<Option<NicNodeBlocks>, ApiError> {
        Ok(Some((*self.blocks).clone()))
    }

    /// Benches prepare claims that succeed; a failure has nobody to tell.
    async fn warn(&self, _claim: &ClaimRef, _reason: &'static str, _note: String) -> Result<(), ApiError> {
        Ok(())
    }
}

/// Where claims live for a bench: the fake API server (HTTP) or memory.
pub enum Backend {
    Fake(FakeApiServer),
    Mem(MemApi),
}

impl Backend {
    pub fn insert_claim(&self, devices: &[&str], params: &Value) -> Result<BenchClaim, DraError> {
        match self {
            Backend::Fake(api) => insert_claim(api, devices, params),
            Backend::Mem(mem) => {
                let n = CLAIMS.fetch_add(1, Ordering::Relaxed);
                let name = format!("c{n}");
                let uid = format!("00000000-0000-0000-0000-{n:012}");
                mem.insert(claim_json(&name, &uid, devices, params))?;
                Ok(BenchClaim {
                    pod_uid: format!("pod-{name}"),
                    name,
                    uid,
                })
            }
        }
    }

    pub fn delete_claim(&self, claim: &BenchClaim) {
        match self {
            Backend::Fake(api) => delete_claim(api, claim),
            Backend::Mem(mem) => mem.delete(&claim.name),
        }
    }
}

/// A claim as the kubelet names it, plus the pod it is reserved for.
#[derive(Debug, Clone)]
pub struct BenchClaim {
    pub name: String,
    pub uid: String,
    pub pod_uid: String,
}

impl BenchClaim {
    pub fn v1(&self) -> v1::Claim {
        v1::Claim {
            namespace: "bench".into(),
            uid: self.uid.clone(),
            name: self.name.clone(),
        }
    }
}

static CLAIMS: AtomicUsize = AtomicUsize::new(0);

/// An allocated claim for `devices` (request "nics", class config `params`), as the scheduler
/// leaves it, reserved for pod `pod-<name>`.
pub fn claim_json(name: &str, uid: &str, devices: &[&str], params: &Value) -> Value {
    let results: Vec<Value> = devices
        .iter()
        .map(|d| json!({"request": "nics", "driver": DRIVER, "pool": NODE, "device": d}))
        .collect();
    json!({
        "apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
        "metadata": {"name": name, "namespace": "bench", "uid": uid},
        "spec": {"devices": {"requests": [{"name": "nics", "exactly": {"deviceClassName": NETWORK, "count": devices.len()}}]}},
        "status": {
            "allocation": {"devices": {
                "results": results,
                "config": [{"source": "FromClass", "opaque": {"driver": DRIVER, "parameters": params}}],
            }},
            "reservedFor": [{"resource": "pods", "name": format!("{name}-pod"), "uid": format!("pod-{name}")}],
        },
    })
}

/// Creates an allocated claim in the fake API server.
pub fn insert_claim(api: &FakeApiServer, devices: &[&str], params: &Value) -> Result<BenchClaim, DraError> {
    let n = CLAIMS.fetch_add(1, Ordering::Relaxed);
    let name = format!("c{n}");
    let obj = claim_json(&name, &format!("00000000-0000-0000-0000-{n:012}"), devices, params);
    let uid = insert_object(api, obj, &format!("ResourceClaim bench/{name}"))?["metadata"]["uid"]
        .as_str()
        .ok_or_else(|| DraError::NoUid { claim: name.clone() })?
        .to_string();
    Ok(BenchClaim {
        pod_uid: format!("pod-{name}"),
        name,
        uid,
    })
}

/// `api.insert(obj)`, the error naming `what` (kind and name).
pub fn insert_object(api: &FakeApiServer, obj: Value, what: &str) -> Result<Value, DraError> {
    api.insert(obj).map_err(|source| DraError::Api {
        action: format!("inserting {what}"),
        source,
    })
}

pub fn delete_claim(api: &FakeApiServer, claim: &BenchClaim) {
    let _ = api.delete("resource.k8s.io/v1", "ResourceClaim", Some("bench"), &claim.name);
}

/// A gRPC channel over a unix socket (its `:authority` is one that h2 accepts).
pub async fn unix_channel(path: &Path) -> Result<tonic::transport::Channel, DraError> {
    grpc::unix_channel("http://localhost", path)
        .await
        .map_err(|source| DraError::Connect {
            path: path.to_path_buf(),
            source,
        })
}

/// A kubelet-side client over the DRA unix socket.
pub async fn connect(path: &Path) -> Result<Client, DraError> {
    Ok(v1::dra_plugin_client::DraPluginClient::new(unix_channel(path).await?))
}

/// NodePrepareResources for `claims`; any per-claim error is an error.
pub async fn prepare(
    client: &mut Client,
    claims: Vec<v1::Claim>,
) -> Result<v1::NodePrepareResourcesResponse, DraError> {
    let resp = client
        .node_prepare_resources(v1::NodePrepareResourcesRequest { claims })
        .await;
    answer("NodePrepareResources", resp, |r| {
        r.claims.iter().map(|(uid, c)| (uid, &c.error)).collect()
    })
}

/// NodePrepareResources for `claim` alone: its answer.
pub async fn prepare_one(client: &mut Client, claim: &BenchClaim) -> Result<v1::NodePrepareResourceResponse, DraError> {
    let mut resp = prepare(client, vec![claim.v1()]).await?;
    resp.claims
        .remove(&claim.uid)
        .ok_or_else(|| DraError::NoAnswer { uid: claim.uid.clone() })
}

/// The claim uids of the plans left in the plugin's state dir `state`.
pub fn plans_left(state: &Path) -> Result<Vec<String>, DraError> {
    PlanStore::new(state).claim_uids().map_err(|source| DraError::Plans {
        state: state.to_path_buf(),
        source,
    })
}

/// NodeUnprepareResources for `claims`; any per-claim error is an error.
pub async fn unprepare(client: &mut Client, claims: Vec<v1::Claim>) -> Result<(), DraError> {
    let resp = client
        .node_unprepare_resources(v1::NodeUnprepareResourcesRequest { claims })
        .await;
    answer("NodeUnprepareResources", resp, |r| {
        r.claims.iter().map(|(uid, c)| (uid, &c.error)).collect()
    })
    .map(drop)
}

/// The answer of `call`, unless the call failed or `errors` (claim uid, error) names a claim that
/// failed.
fn answer<R>(
    call: &'static str,
    resp: Result<tonic::Response<R>, tonic::Status>,
    errors: impl FnOnce(&R) -> Vec<(&String, &String)>,
) -> Result<R, DraError> {
    let resp = resp.map_err(|source| DraError::Rpc { call, source })?.into_inner();
    if let Some((uid, error)) = errors(&resp).into_iter().find(|(_, e)| !e.is_empty()) {
        return Err(DraError::Claim {
            call,
            uid: uid.clone(),
            error: error.clone(),
        });
    }
    Ok(resp)
}

/// The in-process node plugin.
pub struct Plugin {
    pub api: Backend,
    pub state: tempfile::TempDir,
    _sockets: tempfile::TempDir,
    pub socket: PathBuf,
    /// Published device names, in rail order.
    pub devices: Vec<String>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Plugin {
    /// Publishes `nics` into the driver's table, seeds the node's blocks and serves the DRA
    /// socket; claims are read from the fake API server, or from memory when `in_memory`.
    pub async fn start(nics: &[Nic], layout: &RailsLayout, in_memory: bool) -> Result<Self, DraError> {
        let rails = u32::try_from(nics.len()).map_err(|_| DraError::TooManyNics { nics: nics.len() })?;
        let (table, devices) = publish(nics);
        let state = temp_dir("plugin's state")?;
        let sockets = temp_dir("plugin's socket")?;
        let opts = DriverOptions::new(NODE, state.path(), Some(state.path().join("cdi")));
        let socket = sockets.path().join("plugins/multinic.dev").join(grpc::DRA_SOCKET);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let api = if in_memory {
            let mem = MemApi::new(layout, rails)?;
            serve(Driver::new(mem.clone(), table, opts)?, &socket, stopped)?;
            Backend::Mem(mem)
        } else {
            let api = FakeApiServer::try_start().await.map_err(|source| DraError::Api {
                action: "starting".into(),
                source,
            })?;
            insert_blocks(&api, layout, rails)?;
            let client = api.try_client().map_err(|source| DraError::Api {
                action: "building a client".into(),
                source,
            })?;
            serve(Driver::new(KubeClaimApi::new(client), table, opts)?, &socket, stopped)?;
            Backend::Fake(api)
        };
        Ok(Self {
            api,
            state,
            _sockets: sockets,
            socket,
            devices,
            stop: Some(stop),
        })
    }

    pub async fn client(&self) -> Result<Client, DraError> {
        connect(&self.socket).await
    }
}

fn serve<A: ClaimApi>(
    driver: Driver<A>,
    socket: &Path,
    stopped: tokio::sync::oneshot::Receiver<()>,
) -> Result<(), DraError> {
    let listener = grpc::bind_socket(socket)?;
    let service = DraService::new(Arc::new(driver), Arc::new(Metrics::new()));
    let path = socket.to_path_buf();
    tokio::spawn(async move {
        if let Err(e) = grpc::serve_dra(listener, &path, service, async { stopped.await.unwrap_or(()) }).await {
            eprintln!("bench: DRA server: {e}");
        }
    });
    Ok(())
}

impl Drop for Plugin {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
