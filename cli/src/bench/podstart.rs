//! Row 10: what a user sees on a real cluster. Pod creation → Ready and pod delete → NICs back on
//! the host, for a pod whose claim template asks for m NICs (a host-device and a macvlan network)
//! against the same pod with no claim, interleaved run by run on one node. Timed on the bench's
//! side (ms) through watches of the pods and claims; the breakdown (scheduler allocation,
//! prepare, CNI ADD, teardown) comes from the node's logs (kubelet; containerd, which carries
//! multinic-cni's lines) and the plugin's `/metrics`. The bench runs on the node, as root: it
//! watches the NICs come back in `/sys/class/net` (host-device) and the macvlan children leave
//! the pod's netns.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::resource::v1::{ResourceClaim, ResourceClaimTemplate, ResourceSlice};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt as _, watcher};
use multinic_api::crd::{MultiNicNetwork, NicNodeBlocks};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::attach::Mode;
use super::fixtures::{FixtureError, link_names, netlink_in};
use super::plot::StartPoint;
use super::podlog::{self, Micros, NodeEvents, PodRef};
use super::stats::{Row, Summary, Unit, rounds};
use crate::status::{self, StatusError};

/// Label on everything the row creates.
const LABEL: (&str, &str) = ("app.kubernetes.io/part-of", "multinic-bench");
/// Field manager of the row's server-side applies.
const MANAGER: &str = "multinic-bench";
/// Where containerd bind-mounts the pods' network namespaces.
const NETNS_DIR: &str = "/run/netns";
/// How often the NICs are looked at while they come back.
const POLL: Duration = Duration::from_millis(1);
/// Target of issue 17 for macvlan: added median ≤ 100 ms; host-device: ≤ the floor + 50 ms.
const MACVLAN_ADDED_MS: f64 = 100.0;
const HOST_DEVICE_SLACK_MS: f64 = 50.0;

/// Flags of row 10.
#[derive(Debug, Clone, clap::Args)]
pub struct ClusterArgs {
    /// Row 10: kubeconfig of the cluster this node is in (the bench runs on the node).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Row 10: the node to start the pods on; default: the cluster's only node.
    #[arg(long)]
    pub node: Option<String>,
    /// Row 10: namespace of the pods and claim templates (created, and deleted at the end, when
    /// missing).
    #[arg(long, default_value = "multinic-bench")]
    pub namespace: String,
    /// Row 10: NICs per claim.
    #[arg(long, default_value_t = 8)]
    pub nics: usize,
    /// Row 10: an existing host-device MultiNicNetwork to use; default: the bench applies
    /// `multinic-bench-host-device` (10.201.0.0/16) and deletes it at the end.
    #[arg(long)]
    pub host_device_network: Option<String>,
    /// Row 10: an existing macvlan MultiNicNetwork to use; default: the bench applies
    /// `multinic-bench-macvlan` (10.202.0.0/16) and deletes it at the end.
    #[arg(long)]
    pub macvlan_network: Option<String>,
    /// Row 10: the pods' image (needs `sh` and `sleep`; pulled if not present).
    #[arg(long, default_value = "busybox:1.36")]
    pub pod_image: String,
    /// Row 10: the node plugin's metrics port (its --metrics-address; it runs with hostNetwork).
    #[arg(long, default_value = status::DEFAULT_ENDPOINT)]
    pub plugin_metrics: String,
    /// Row 10: the kubelet's log file (klog text, -v=2 or more), for the breakdown.
    #[arg(long)]
    pub kubelet_log: Option<PathBuf>,
    /// Row 10: containerd's log file (it carries the CNI plugins' stderr), for the breakdown.
    #[arg(long)]
    pub containerd_log: Option<PathBuf>,
    /// Row 10: how long one wait (a pod Ready or gone, the NICs back) may take, in seconds.
    #[arg(long, default_value_t = 120)]
    pub pod_timeout: u64,
}

/// Why row 10 could not run, or a run of it failed.
#[derive(Debug, thiserror::Error)]
pub enum PodstartError {
    #[error("row 10 needs --kubeconfig: the cluster this node is in")]
    NoKubeconfig,
    #[error("--nics must be at least 1")]
    NoNics,
    #[error(transparent)]
    Setup(#[from] multinic_api::setup::SetupError),
    #[error("{what}: {source}")]
    Kube { what: String, source: kube::Error },
    #[error("--node not given and the cluster has {count} nodes: pass --node")]
    Node { count: usize },
    #[error("MultiNicNetwork {name} (--{flag}) does not exist")]
    NoNetwork { name: String, flag: &'static str },
    #[error("node {node} publishes {have} multinic.dev devices; a claim of --nics {want} needs that many")]
    FewDevices { node: String, have: usize, want: usize },
    #[error("timed out after {secs} s waiting for {what}")]
    Timeout { what: String, secs: u64 },
    #[error("the watch of the {what} ended")]
    WatchEnded { what: &'static str },
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error(transparent)]
    Fixture(#[from] FixtureError),
    #[error(transparent)]
    Load(#[from] super::load::LoadError),
    #[error("reading the plugin's metrics: {0}")]
    Metrics(#[from] StatusError),
    #[error("the pod manifest: {0}")]
    Manifest(#[source] serde_json::Error),
    #[error("{0}")]
    Unexpected(String),
    #[error("{phase}: {source}")]
    Phase { phase: String, source: Box<PodstartError> },
}

pub(super) fn kube_err(what: impl Into<String>) -> impl FnOnce(kube::Error) -> PodstartError {
    let what = what.into();
    move |source| PodstartError::Kube { what, source }
}

/// Now, on the clock the node's logs use.
fn now() -> Micros {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// Which pod a cycle starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    NoClaim,
    Claim(Mode),
}

impl Variant {
    fn tag(self) -> &'static str {
        match self {
            Variant::NoClaim => "base",
            Variant::Claim(Mode::HostDevice) => "hd",
            Variant::Claim(Mode::Macvlan) => "mv",
        }
    }
}

/// One pod's start and delete, as the bench saw it (watch events, polls) and as the node logged it.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Sample {
    /// Right before the create request.
    pub created: Micros,
    pub claim_allocated: Option<Micros>,
    pub bound: Option<Micros>,
    pub ready: Micros,
    /// Right before the delete request.
    pub delete: Micros,
    /// The NICs back on the host (host-device) or the children gone from the pod (macvlan).
    pub nics_back: Option<Micros>,
    pub gone: Micros,
    pub node: NodeEvents,
    /// The plugin's time for this pod's NodePrepareResources / NodeUnprepareResources.
    pub prepare_ms: Option<f64>,
    pub unprepare_ms: Option<f64>,
}

/// `b − a` in ms.
fn span(a: Option<Micros>, b: Option<Micros>) -> Option<f64> {
    Some((b? - a?) as f64 / 1e3)
}

/// A phase of the breakdown: its label and how it is read off a sample.
type Phase = (&'static str, fn(&Sample) -> Option<f64>);

const START_PHASES: [Phase; 10] = [
    (
        "API create → claim allocated (claim from the template, scheduler allocation)",
        |s| span(Some(s.created), s.claim_allocated),
    ),
    ("API create → pod bound (scheduler)", |s| {
        span(Some(s.created), s.bound)
    }),
    ("pod bound → kubelet SyncLoop ADD", |s| span(s.bound, s.node.sync_add)),
    (
        "SyncLoop ADD → containerd RunPodSandbox (volumes, NodePrepareResources)",
        |s| span(s.node.sync_add, s.node.sandbox_start),
    ),
    ("· NodePrepareResources (plugin's /metrics)", |s| s.prepare_ms),
    (
        "RunPodSandbox → multinic-cni ADD done (netns, bridge, multinic-cni)",
        |s| span(s.node.sandbox_start, s.node.cni_done),
    ),
    ("· multinic-cni: first NIC → attached", |s| {
        span(s.node.cni_first_device, s.node.cni_done)
    }),
    ("multinic-cni done → sandbox returned", |s| {
        span(s.node.cni_done, s.node.sandbox_ready)
    }),
    ("sandbox returned → pod Ready seen (container start, status)", |s| {
        span(s.node.sandbox_ready, Some(s.ready))
    }),
    ("total: API create → pod Ready seen", |s| {
        span(Some(s.created), Some(s.ready))
    }),
];

const DELETE_PHASES: [Phase; 8] = [
    ("API delete → kubelet SyncLoop DELETE", |s| {
        span(Some(s.delete), s.node.sync_delete)
    }),
    (
        "SyncLoop DELETE → containerd StopPodSandbox (container stopped)",
        |s| span(s.node.sync_delete, s.node.stop_sandbox),
    ),
    ("StopPodSandbox → network torn down (CNI DEL)", |s| {
        span(s.node.stop_sandbox, s.node.teardown)
    }),
    ("· multinic-cni DEL: first → last NIC line", |s| {
        span(s.node.cni_del_first, s.node.cni_del_last)
    }),
    ("API delete → NICs back on the host / macvlan children gone", |s| {
        span(Some(s.delete), s.nics_back)
    }),
    (
        "network torn down → pod gone from the API (NodeUnprepareResources, status)",
        |s| span(s.node.teardown, Some(s.gone)),
    ),
    ("· NodeUnprepareResources (plugin's /metrics)", |s| s.unprepare_ms),
    ("total: API delete → pod gone from the API", |s| {
        span(Some(s.delete), Some(s.gone))
    }),
];

fn values(samples: &[Sample], f: fn(&Sample) -> Option<f64>) -> Vec<f64> {
    samples.iter().filter_map(f).collect()
}

fn median_of(v: &[f64]) -> Option<f64> {
    Summary::of(v).map(|s| s.median)
}

/// The breakdown of `ours` against `base` as a Markdown table: per phase the median [min – max]
/// of each, and the difference of the medians.
pub fn breakdown(title: &str, phases: &[Phase], ours: &[Sample], base: &[Sample]) -> String {
    let cell = |v: &[f64]| Summary::of(v).map_or("—".to_string(), |s| Unit::Ms.summary(&s));
    let mut out =
        format!("| {title} | ours: median [min – max] | no claim: median [min – max] | added |\n|---|---|---|---|\n");
    for (label, f) in phases {
        let (o, b) = (values(ours, *f), values(base, *f));
        let added = match (median_of(&o), median_of(&b)) {
            (Some(o), Some(b)) => Unit::Ms.signed(o - b),
            _ => "—".to_string(),
        };
        out.push_str(&format!("| {label} | {} | {} | {added} |\n", cell(&o), cell(&b)));
    }
    out
}

/// The last phase's values (the whole pod start or delete) of each sample.
fn total(phases: &[Phase], samples: &[Sample]) -> Vec<f64> {
    phases.last().map_or_else(Vec::new, |(_, f)| values(samples, *f))
}

/// A row of ours against the no-claim pods, with the difference of the medians.
fn compare(case: String, ours: Vec<f64>, base_name: &str, base: Vec<f64>, outcome: &Result<(), String>) -> Row {
    let mut row = Row::new("10", case, Unit::Ms);
    row.record(&ours, outcome);
    row.baseline = Some((base_name.to_string(), Summary::of(&base)));
    row.added = match (median_of(&ours), median_of(&base)) {
        (Some(o), Some(b)) => Some(o - b),
        _ => None,
    };
    row
}

/// The rows of one mode: pod start against the target, pod gone, NICs back.
pub fn rows(
    mode: Mode,
    nics: usize,
    ours: &[Sample],
    base: &[Sample],
    floor_attach_ms: f64,
    outcome: &Result<(), String>,
) -> Vec<Row> {
    let what = format!("{}, {nics} NICs", mode.as_str());
    let mut start = compare(
        format!("pod create → Ready, {what} vs no claim, same node"),
        total(&START_PHASES, ours),
        "no claim",
        total(&START_PHASES, base),
        outcome,
    );
    let limit = match mode {
        Mode::Macvlan => {
            start.target = format!("≤ {MACVLAN_ADDED_MS:.0} ms added");
            Some(MACVLAN_ADDED_MS)
        }
        Mode::HostDevice if floor_attach_ms.is_finite() => {
            let limit = floor_attach_ms + HOST_DEVICE_SLACK_MS;
            start.target =
                format!("≤ {limit:.2} ms added (netlink floor {floor_attach_ms:.2} + {HOST_DEVICE_SLACK_MS:.0})");
            Some(limit)
        }
        Mode::HostDevice => {
            start.target = "≤ netlink floor + 50 ms added (floor not measured)".into();
            None
        }
    };
    start.met = limit.zip(start.added).map(|(limit, added)| added <= limit);
    let gone = compare(
        format!("pod delete → pod gone from the API, {what} vs no claim"),
        total(&DELETE_PHASES, ours),
        "no claim",
        total(&DELETE_PHASES, base),
        outcome,
    );
    let back_label = match mode {
        Mode::HostDevice => "NICs back on the host",
        Mode::Macvlan => "macvlan children gone",
    };
    let back = compare(
        format!("pod delete → {back_label} (ours) vs pod gone (no claim), {what}"),
        values(ours, |s| span(Some(s.delete), s.nics_back)),
        "no claim, pod gone",
        total(&DELETE_PHASES, base),
        outcome,
    );
    vec![start, gone, back]
}

/// The pod of a cycle: `sh` that exits on SIGTERM (so deletion is not a grace-period wait),
/// pinned to `node` through the scheduler (node affinity, not `nodeName`, so the claim is
/// allocated the normal way); with `template`, one claim from it.
pub fn pod_manifest(name: &str, node: &str, image: &str, template: Option<&str>) -> Value {
    let container = json!({
        "name": "app",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"],
    });
    let spec = json!({
        "terminationGracePeriodSeconds": 1,
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}
        ]}}},
        "containers": [],
    });
    let claim = template.map(|t| json!({"name": "nics", "resourceClaimTemplateName": t}));
    pod_object(name, json!({LABEL.0: LABEL.1}), spec, container, claim)
}

/// A pod of `spec` with the one `container`, which uses the pod's claim `claim` (a
/// `spec.resourceClaims` entry named `nics`) when there is one.
pub(super) fn pod_object(
    name: &str,
    labels: Value,
    mut spec: Value,
    mut container: Value,
    claim: Option<Value>,
) -> Value {
    if let Some(c) = claim {
        spec["resourceClaims"] = json!([c]);
        container["resources"] = json!({"claims": [{"name": "nics"}]});
    }
    spec["containers"] = json!([container]);
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": spec,
    })
}

/// A MultiNicNetwork the bench applies: all of the node's NICs, rails IPAM with `host_block`
/// bits for hosts and `interface_block` for rails.
pub(super) fn network_manifest(name: &str, mode: Mode, subnet: &str, host_block: u32, interface_block: u32) -> Value {
    json!({
        "apiVersion": "multinic.dev/v1alpha1",
        "kind": "MultiNicNetwork",
        "metadata": {"name": name, "labels": {LABEL.0: LABEL.1}},
        "spec": {
            "attachment": {"mode": mode.as_str()},
            "ipam": {"type": "rails", "subnet": subnet, "hostBlock": host_block, "interfaceBlock": interface_block},
        },
    })
}

pub(super) fn template_manifest(name: &str, device_class: &str, nics: usize) -> Value {
    json!({
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaimTemplate",
        "metadata": {"name": name, "labels": {LABEL.0: LABEL.1}},
        "spec": {"spec": {"devices": {"requests": [
            {"name": "nics", "exactly": {"deviceClassName": device_class, "count": nics}}
        ]}}},
    })
}

/// What the watches report, stamped with the time the bench received it.
#[derive(Debug)]
enum Seen {
    Synced,
    Pod {
        name: String,
        bound: bool,
        ready: bool,
    },
    PodGone {
        name: String,
    },
    /// A claim owned by pod `pod`, with the devices allocated to it (none yet: empty).
    Claim {
        pod: String,
        devices: Vec<String>,
    },
    ClaimGone {
        pod: String,
    },
}

fn pod_seen(pod: &Pod, gone: bool) -> Option<Seen> {
    let name = pod.metadata.name.clone()?;
    if gone {
        return Some(Seen::PodGone { name });
    }
    let bound = pod.spec.as_ref().is_some_and(|s| s.node_name.is_some());
    let ready = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    Some(Seen::Pod { name, bound, ready })
}

fn claim_seen(claim: &ResourceClaim, gone: bool) -> Option<Seen> {
    let pod = claim
        .metadata
        .owner_references
        .as_ref()?
        .iter()
        .find(|o| o.kind == "Pod")?
        .name
        .clone();
    if gone {
        return Some(Seen::ClaimGone { pod });
    }
    let devices = claim
        .status
        .as_ref()
        .and_then(|s| s.allocation.as_ref())
        .and_then(|a| a.devices.as_ref())
        .and_then(|d| d.results.as_ref())
        .map(|r| r.iter().map(|r| r.device.clone()).collect())
        .unwrap_or_default();
    Some(Seen::Claim { pod, devices })
}

/// What the bench has seen of one pod, each the first time.
#[derive(Debug, Default, Clone)]
struct PodSeen {
    bound: Option<Micros>,
    ready: Option<Micros>,
    gone: Option<Micros>,
    claim_allocated: Option<Micros>,
    devices: Vec<String>,
    claim_gone: Option<Micros>,
}

fn watch<K>(
    api: Api<K>,
    what: &'static str,
    tx: mpsc::UnboundedSender<(Micros, Seen)>,
    map: fn(&K, bool) -> Option<Seen>,
) -> tokio::task::JoinHandle<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    tokio::spawn(async move {
        let mut events = watcher(api, watcher::Config::default()).default_backoff().boxed();
        while let Some(event) = events.next().await {
            let t = now();
            let seen = match event {
                Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => map(&o, false),
                Ok(watcher::Event::Delete(o)) => map(&o, true),
                Ok(watcher::Event::InitDone) => Some(Seen::Synced),
                Ok(watcher::Event::Init) => None,
                Err(error) => {
                    tracing::warn!(what, %error, "bench watch failed; retrying");
                    None
                }
            };
            if let Some(seen) = seen
                && tx.send((t, seen)).is_err()
            {
                return;
            }
        }
    })
}

/// Where a pod's NICs are watched while it goes.
enum Nics {
    /// Host-device: these host interface names must all be back in the host netns.
    Host(Vec<String>),
    /// Macvlan: the pod's netns must have no `netK` link left (the netlink socket in it keeps it
    /// alive until the bench lets go).
    Pod(rtnetlink::Handle),
}

fn is_pod_nic(name: &str) -> bool {
    name.strip_prefix("net")
        .is_some_and(|k| !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit()))
}

fn on_host(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

struct Cluster {
    args: ClusterArgs,
    node: String,
    pods: Api<Pod>,
    rx: mpsc::UnboundedReceiver<(Micros, Seen)>,
    seen: HashMap<String, PodSeen>,
    watches: Vec<tokio::task::JoinHandle<()>>,
    /// The node's devices: name → host interface name (from its ResourceSlices).
    if_names: HashMap<String, String>,
    /// Claim templates per mode.
    templates: Vec<(Mode, String)>,
    seq: usize,
}

/// What the row made, to delete at the end.
#[derive(Default)]
struct Made {
    namespace: bool,
    networks: Vec<String>,
}

impl Cluster {
    fn timeout(&self) -> Duration {
        Duration::from_secs(self.args.pod_timeout)
    }

    fn apply(&mut self, t: Micros, seen: Seen) {
        match seen {
            Seen::Synced => {}
            Seen::Pod { name, bound, ready } => {
                let p = self.seen.entry(name).or_default();
                if bound {
                    p.bound.get_or_insert(t);
                }
                if ready {
                    p.ready.get_or_insert(t);
                }
            }
            Seen::PodGone { name } => {
                self.seen.entry(name).or_default().gone.get_or_insert(t);
            }
            Seen::Claim { pod, devices } => {
                let p = self.seen.entry(pod).or_default();
                if !devices.is_empty() && p.claim_allocated.is_none() {
                    p.claim_allocated = Some(t);
                    p.devices = devices;
                }
            }
            Seen::ClaimGone { pod } => {
                self.seen.entry(pod).or_default().claim_gone.get_or_insert(t);
            }
        }
    }

    /// Applies watch events until `done` holds for pod `name`.
    async fn wait(&mut self, name: &str, what: &str, done: fn(&PodSeen) -> bool) -> Result<PodSeen, PodstartError> {
        let deadline = tokio::time::Instant::now() + self.timeout();
        loop {
            if let Some(p) = self.seen.get(name).filter(|p| done(p)) {
                return Ok(p.clone());
            }
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some((t, seen))) => self.apply(t, seen),
                Ok(None) => {
                    return Err(PodstartError::WatchEnded {
                        what: "pods and claims",
                    });
                }
                Err(_) => {
                    return Err(PodstartError::Timeout {
                        what: format!("pod {name}: {what}"),
                        secs: self.args.pod_timeout,
                    });
                }
            }
        }
    }

    /// `sum, count` of the plugin's NodePrepareResources and NodeUnprepareResources histograms.
    async fn rpc(&self) -> Result<[Option<(f64, u64)>; 2], PodstartError> {
        let text = status::fetch_metrics(&self.args.plugin_metrics).await?;
        Ok([
            podlog::rpc_seconds(&text, "NodePrepareResources"),
            podlog::rpc_seconds(&text, "NodeUnprepareResources"),
        ])
    }

    fn log_offsets(&self) -> Result<[Option<u64>; 2], PodstartError> {
        let len = |p: &Option<PathBuf>| -> Result<Option<u64>, PodstartError> {
            p.as_ref()
                .map(|p| {
                    std::fs::metadata(p)
                        .map(|m| m.len())
                        .map_err(|source| PodstartError::Io {
                            what: format!("reading the size of {}", p.display()),
                            source,
                        })
                })
                .transpose()
        };
        Ok([len(&self.args.kubelet_log)?, len(&self.args.containerd_log)?])
    }

    /// The node's lines about `pod` written since `offsets`; read again for a while when the last
    /// lines the bench expects (teardown, SyncLoop DELETE) are not there yet.
    async fn node_events(
        &self,
        offsets: [Option<u64>; 2],
        pod: &PodRef,
        near: Micros,
    ) -> Result<NodeEvents, PodstartError> {
        let paths = [&self.args.kubelet_log, &self.args.containerd_log];
        let mut ev = NodeEvents::default();
        for _ in 0..20 {
            ev = NodeEvents::default();
            if let (Some(p), Some(off)) = (paths[0], offsets[0]) {
                podlog::scan_kubelet(&read_from(p, off)?, pod, &mut ev, near);
            }
            if let (Some(p), Some(off)) = (paths[1], offsets[1]) {
                podlog::scan_containerd(&read_from(p, off)?, pod, &mut ev);
            }
            let kubelet_done = paths[0].is_none() || ev.sync_delete.is_some();
            let containerd_done = paths[1].is_none() || ev.teardown.is_some();
            if kubelet_done && containerd_done {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(ev)
    }

    /// One pod, created, Ready, deleted, gone (and its claim gone).
    async fn cycle(&mut self, variant: Variant) -> Result<Sample, PodstartError> {
        self.seq += 1;
        let name = format!("podstart-{}-{}", variant.tag(), self.seq);
        let template = match variant {
            Variant::NoClaim => None,
            Variant::Claim(mode) => self.templates.iter().find(|(m, _)| *m == mode).map(|(_, t)| t.clone()),
        };
        let claim = template.is_some();
        let pod: Pod = serde_json::from_value(pod_manifest(
            &name,
            &self.node,
            &self.args.pod_image,
            template.as_deref(),
        ))
        .map_err(PodstartError::Manifest)?;
        let offsets = self.log_offsets()?;
        let before = if claim { self.rpc().await? } else { [None, None] };

        let created = now();
        let made = self
            .pods
            .create(&PostParams::default(), &pod)
            .await
            .map_err(kube_err(format!("creating pod {name}")))?;
        let mut seen = self.wait(&name, "Ready", |p| p.ready.is_some()).await?;
        let ready = seen.ready.unwrap_or_default();
        if claim {
            // The claim's watch is another stream: its allocation may arrive after the pod's Ready.
            seen = self
                .wait(&name, "its claim allocated", |p| p.claim_allocated.is_some())
                .await?;
        }
        let at_ready = if claim { self.rpc().await? } else { [None, None] };

        let nics = match variant {
            Variant::NoClaim => None,
            Variant::Claim(Mode::HostDevice) => {
                let names = seen
                    .devices
                    .iter()
                    .map(|d| {
                        self.if_names.get(d).cloned().ok_or_else(|| {
                            PodstartError::Unexpected(format!("device {d} is in no ResourceSlice of the node"))
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                if names.len() != self.args.nics {
                    return Err(PodstartError::Unexpected(format!(
                        "the claim of pod {name} holds {} devices, not {}",
                        names.len(),
                        self.args.nics
                    )));
                }
                if let Some(n) = names.iter().find(|n| on_host(n)) {
                    return Err(PodstartError::Unexpected(format!(
                        "{n} is still on the host while pod {name} is Ready"
                    )));
                }
                Some(Nics::Host(names))
            }
            Variant::Claim(Mode::Macvlan) => Some(Nics::Pod(pod_netns(self.args.nics).await?)),
        };

        let delete = now();
        self.pods
            .delete(&name, &DeleteParams::default())
            .await
            .map_err(kube_err(format!("deleting pod {name}")))?;
        let nics_back = match nics {
            Some(n) => Some(self.nics_back(&name, n).await?),
            None => None,
        };
        let seen = if claim {
            self.wait(&name, "gone with its claim", |p| {
                p.gone.is_some() && p.claim_gone.is_some()
            })
            .await?
        } else {
            self.wait(&name, "gone", |p| p.gone.is_some()).await?
        };
        let after = if claim { self.rpc().await? } else { [None, None] };
        let call = |k: usize, a: [Option<(f64, u64)>; 2], b: [Option<(f64, u64)>; 2]| {
            a[k].zip(b[k]).and_then(|(a, b)| podlog::one_call_ms(a, b))
        };
        let pod_ref = PodRef {
            namespace: self.args.namespace.clone(),
            name: name.clone(),
            uid: made.metadata.uid.clone().unwrap_or_default(),
        };
        Ok(Sample {
            created,
            claim_allocated: seen.claim_allocated,
            bound: seen.bound,
            ready,
            delete,
            nics_back,
            gone: seen.gone.unwrap_or_default(),
            node: self.node_events(offsets, &pod_ref, created).await?,
            prepare_ms: call(0, before, at_ready),
            unprepare_ms: call(1, at_ready, after),
        })
    }

    /// Polls until the pod's NICs are back (see [`Nics`]); the time they were first seen back.
    async fn nics_back(&self, name: &str, nics: Nics) -> Result<Micros, PodstartError> {
        let deadline = tokio::time::Instant::now() + self.timeout();
        loop {
            let back = match &nics {
                Nics::Host(names) => names.iter().all(|n| on_host(n)),
                Nics::Pod(handle) => !link_names(handle).await?.iter().any(|n| is_pod_nic(n)),
            };
            if back {
                return Ok(now());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(PodstartError::Timeout {
                    what: format!("the NICs of pod {name} to come back"),
                    secs: self.args.pod_timeout,
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// The tail of `path` from byte `offset` (all of it when the file is shorter: rotated).
fn read_from(path: &Path, offset: u64) -> Result<String, PodstartError> {
    let io = |source| PodstartError::Io {
        what: format!("reading {}", path.display()),
        source,
    };
    let mut f = File::open(path).map_err(io)?;
    let len = f.metadata().map_err(io)?.len();
    f.seek(SeekFrom::Start(if offset > len { 0 } else { offset }))
        .map_err(io)?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).map_err(io)?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// A netlink socket in the network namespace of the one running pod with `nics` pod NICs (the
/// bench's: it starts one at a time).
async fn pod_netns(nics: usize) -> Result<rtnetlink::Handle, PodstartError> {
    let io = |source| PodstartError::Io {
        what: format!("listing {NETNS_DIR}"),
        source,
    };
    for entry in std::fs::read_dir(NETNS_DIR).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let label = path.display().to_string();
        // A netns can go between the listing and the open.
        let Ok(file) = File::open(&path) else { continue };
        let handle = netlink_in(file, &label)?;
        if link_names(&handle).await?.iter().filter(|n| is_pod_nic(n)).count() == nics {
            return Ok(handle);
        }
    }
    Err(PodstartError::Unexpected(format!(
        "no network namespace under {NETNS_DIR} has the pod's {nics} NICs"
    )))
}

/// Polls `check` every 250 ms until it holds.
pub(super) async fn until<F, Fut>(secs: u64, what: String, mut check: F) -> Result<(), PodstartError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool, PodstartError>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !check().await? {
        if tokio::time::Instant::now() > deadline {
            return Err(PodstartError::Timeout { what, secs });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(())
}

/// Waits until the controller wrote the NicNodeBlocks of `node` in `network`.
pub(super) async fn wait_blocks(
    blocks: &Api<NicNodeBlocks>,
    network: &str,
    node: &str,
    secs: u64,
) -> Result<(), PodstartError> {
    let name = multinic_api::crd::node_blocks_name(network, node);
    until(secs, format!("NicNodeBlocks {name}"), || async {
        Ok(blocks
            .get_opt(&name)
            .await
            .map_err(kube_err(format!("reading NicNodeBlocks {name}")))?
            .is_some())
    })
    .await
}

/// The networks, templates and watches of the row; `made` records what to delete.
async fn connect(args: &ClusterArgs, made: &mut Made) -> Result<Cluster, PodstartError> {
    let path = args.kubeconfig.as_deref().ok_or(PodstartError::NoKubeconfig)?;
    if args.nics == 0 {
        return Err(PodstartError::NoNics);
    }
    let client = multinic_api::setup::kube_client(Some(path)).await?;
    let node = match &args.node {
        Some(n) => n.clone(),
        None => {
            let nodes = Api::<Node>::all(client.clone())
                .list(&ListParams::default())
                .await
                .map_err(kube_err("listing nodes"))?;
            match nodes.items.as_slice() {
                [one] => one.metadata.name.clone().unwrap_or_default(),
                all => return Err(PodstartError::Node { count: all.len() }),
            }
        }
    };
    let ns = &args.namespace;
    let namespaces = Api::<Namespace>::all(client.clone());
    if namespaces
        .get_opt(ns)
        .await
        .map_err(kube_err(format!("reading namespace {ns}")))?
        .is_none()
    {
        let manifest =
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": {LABEL.0: LABEL.1}}});
        let object: Namespace = serde_json::from_value(manifest).map_err(PodstartError::Manifest)?;
        namespaces
            .create(&PostParams::default(), &object)
            .await
            .map_err(kube_err(format!("creating namespace {ns}")))?;
        made.namespace = true;
    }

    // The node's devices and their interface names.
    let slices = Api::<ResourceSlice>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(kube_err("listing ResourceSlices"))?;
    let if_names: HashMap<String, String> = slices
        .items
        .iter()
        .filter(|s| s.spec.driver == "multinic.dev" && s.spec.node_name.as_deref() == Some(node.as_str()))
        .flat_map(|s| s.spec.devices.iter().flatten())
        .filter_map(|d| {
            let attrs = d.attributes.as_ref()?;
            let name = ["multinic.dev/ifName", "ifName"]
                .iter()
                .find_map(|k| attrs.get(*k).and_then(|a| a.string.clone()))?;
            Some((d.name.clone(), name))
        })
        .collect();
    if if_names.len() < args.nics {
        return Err(PodstartError::FewDevices {
            node,
            have: if_names.len(),
            want: args.nics,
        });
    }

    let networks = Api::<MultiNicNetwork>::all(client.clone());
    let blocks = Api::<NicNodeBlocks>::all(client.clone());
    let templates_api = Api::<ResourceClaimTemplate>::namespaced(client.clone(), ns);
    let mut templates = Vec::new();
    for (mode, given, flag, subnet) in [
        (
            Mode::HostDevice,
            &args.host_device_network,
            "host-device-network",
            "10.201.0.0/16",
        ),
        (Mode::Macvlan, &args.macvlan_network, "macvlan-network", "10.202.0.0/16"),
    ] {
        let name = match given {
            Some(name) => {
                if networks
                    .get_opt(name)
                    .await
                    .map_err(kube_err(format!("reading MultiNicNetwork {name}")))?
                    .is_none()
                {
                    return Err(PodstartError::NoNetwork {
                        name: name.clone(),
                        flag,
                    });
                }
                name.clone()
            }
            None => {
                let name = format!("multinic-bench-{}", mode.as_str());
                networks
                    .patch(
                        &name,
                        &PatchParams::apply(MANAGER).force(),
                        // 64 hosts, 16 rails.
                        &Patch::Apply(network_manifest(&name, mode, subnet, 6, 4)),
                    )
                    .await
                    .map_err(kube_err(format!("applying MultiNicNetwork {name}")))?;
                made.networks.push(name.clone());
                name
            }
        };
        let ready = || async {
            let net = networks
                .get_opt(&name)
                .await
                .map_err(kube_err(format!("reading MultiNicNetwork {name}")))?;
            Ok(net
                .and_then(|n| n.status)
                .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True")))
        };
        until(args.pod_timeout, format!("MultiNicNetwork {name} Ready"), ready).await?;
        wait_blocks(&blocks, &name, &node, args.pod_timeout).await?;
        let class = networks
            .get_opt(&name)
            .await
            .map_err(kube_err(format!("reading MultiNicNetwork {name}")))?
            .and_then(|n| n.status)
            .and_then(|s| s.device_class_name)
            .unwrap_or_else(|| name.clone());
        let template = format!("podstart-{}", mode.as_str());
        templates_api
            .patch(
                &template,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(template_manifest(&template, &class, args.nics)),
            )
            .await
            .map_err(kube_err(format!("applying ResourceClaimTemplate {template}")))?;
        templates.push((mode, template));
    }

    let (tx, mut rx) = mpsc::unbounded_channel();
    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    let watches = vec![
        watch(pods.clone(), "pods", tx.clone(), pod_seen),
        watch(Api::<ResourceClaim>::namespaced(client, ns), "claims", tx, claim_seen),
    ];
    let mut cluster = Cluster {
        args: args.clone(),
        node,
        pods,
        rx: mpsc::unbounded_channel().1,
        seen: HashMap::new(),
        watches,
        if_names,
        templates,
        seq: 0,
    };
    // Both watches listed before the first pod.
    let mut synced = 0;
    let deadline = tokio::time::Instant::now() + cluster.timeout();
    while synced < 2 {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some((_, Seen::Synced))) => synced += 1,
            Ok(Some((t, seen))) => cluster.apply(t, seen),
            Ok(None) => {
                return Err(PodstartError::WatchEnded {
                    what: "pods and claims",
                });
            }
            Err(_) => {
                return Err(PodstartError::Timeout {
                    what: "the watches of pods and claims to list".into(),
                    secs: args.pod_timeout,
                });
            }
        }
    }
    cluster.rx = rx;
    Ok(cluster)
}

/// Deletes what the row made (its pods, templates, the networks it applied, the namespace it
/// created) and waits for the networks and namespace to be gone; errors are logged.
async fn clean_up(args: &ClusterArgs, made: &Made) {
    let Some(path) = args.kubeconfig.as_deref() else { return };
    let client = match multinic_api::setup::kube_client(Some(path)).await {
        Ok(c) => c,
        Err(error) => return tracing::warn!(%error, "bench clean-up: no client"),
    };
    let ns = &args.namespace;
    let selector = ListParams::default().labels(&format!("{}={}", LABEL.0, LABEL.1));
    let dp = DeleteParams::default();
    if let Err(error) = Api::<Pod>::namespaced(client.clone(), ns)
        .delete_collection(&dp, &selector)
        .await
    {
        tracing::warn!(%error, "bench clean-up: deleting pods");
    }
    if let Err(error) = Api::<ResourceClaimTemplate>::namespaced(client.clone(), ns)
        .delete_collection(&dp, &selector)
        .await
    {
        tracing::warn!(%error, "bench clean-up: deleting claim templates");
    }
    let networks = Api::<MultiNicNetwork>::all(client.clone());
    let namespaces = Api::<Namespace>::all(client);
    for name in &made.networks {
        if let Err(error) = networks.delete(name, &dp).await {
            tracing::warn!(%error, network = %name, "bench clean-up: deleting network");
        }
    }
    if made.namespace
        && let Err(error) = namespaces.delete(ns, &dp).await
    {
        tracing::warn!(%error, namespace = %ns, "bench clean-up: deleting namespace");
    }
    let gone = until(
        args.pod_timeout,
        "the bench's networks and namespace to go".into(),
        || async {
            for name in &made.networks {
                if networks
                    .get_opt(name)
                    .await
                    .map_err(kube_err("reading a network"))?
                    .is_some()
                {
                    return Ok(false);
                }
            }
            Ok(!made.namespace
                || namespaces
                    .get_opt(ns)
                    .await
                    .map_err(kube_err("reading the namespace"))?
                    .is_none())
        },
    )
    .await;
    if let Err(error) = gone {
        tracing::warn!(%error, "bench clean-up");
    }
}

/// The samples of the runs: no-claim pods, and per mode the pods with a claim.
#[derive(Default)]
struct Samples {
    base: Vec<Sample>,
    modes: Vec<(Mode, Vec<Sample>)>,
}

async fn measure(cluster: &mut Cluster, runs: usize, samples: &mut Samples) -> Result<(), PodstartError> {
    let mut order = vec![
        Variant::NoClaim,
        Variant::Claim(Mode::HostDevice),
        Variant::Claim(Mode::Macvlan),
    ];
    for (timed, run) in rounds(runs) {
        for &variant in &order {
            let s = cluster.cycle(variant).await.map_err(|source| PodstartError::Phase {
                phase: format!("{run}, pod {}", variant.tag()),
                source: Box::new(source),
            })?;
            if !timed {
                continue;
            }
            match variant {
                Variant::NoClaim => samples.base.push(s),
                Variant::Claim(mode) => match samples.modes.iter_mut().find(|(m, _)| *m == mode) {
                    Some((_, v)) => v.push(s),
                    None => samples.modes.push((mode, vec![s])),
                },
            }
        }
        // Interleaved: each run starts with the next variant.
        order.rotate_left(1);
    }
    Ok(())
}

/// Row 10: the rows, and the breakdown tables (Markdown) to print below the table.
/// `floor_attach_ms` is the netlink floor's attach of the same number of host-device NICs
/// (row 1), measured in this run.
pub async fn bench(args: &ClusterArgs, runs: usize, floor_attach_ms: f64) -> (Vec<Row>, Vec<String>, Vec<StartPoint>) {
    let mut made = Made::default();
    let mut samples = Samples::default();
    let outcome = match connect(args, &mut made).await {
        Ok(mut cluster) => {
            let r = measure(&mut cluster, runs, &mut samples).await;
            for w in &cluster.watches {
                w.abort();
            }
            r
        }
        Err(e) => Err(e),
    };
    clean_up(args, &made).await;
    let outcome = outcome.map_err(|e| e.to_string());
    let mut rows_out = Vec::new();
    let mut tables = Vec::new();
    let mut points = Vec::new();
    for mode in [Mode::HostDevice, Mode::Macvlan] {
        let ours = samples
            .modes
            .iter()
            .find(|(m, _)| *m == mode)
            .map_or(&[][..], |(_, v)| v.as_slice());
        let start = |s: &[Sample]| median_of(&total(&START_PHASES, s)).unwrap_or(f64::NAN);
        points.push(StartPoint {
            mode: mode.as_str(),
            nics: args.nics,
            with_nics: start(ours),
            no_claim: start(&samples.base),
        });
        rows_out.extend(rows(mode, args.nics, ours, &samples.base, floor_attach_ms, &outcome));
        let what = format!("{} NICs, {}", args.nics, mode.as_str());
        tables.push(breakdown(
            &format!("pod start, {what}"),
            &START_PHASES,
            ours,
            &samples.base,
        ));
        tables.push(breakdown(
            &format!("pod delete, {what}"),
            &DELETE_PHASES,
            ours,
            &samples.base,
        ));
    }
    (rows_out, tables, points)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Micros = 1_796_144_998_000_000;

    /// A sample whose phases are `ms` apart, in order: create, claim, bound, SyncLoop ADD,
    /// RunPodSandbox, first NIC, CNI done, sandbox returned, Ready.
    fn sample(ms: [i64; 8], prepare: f64) -> Sample {
        let mut t = T0;
        let mut at = [0; 8];
        for (k, d) in ms.iter().enumerate() {
            t += d * 1000;
            at[k] = t;
        }
        Sample {
            created: T0,
            claim_allocated: Some(at[0]),
            bound: Some(at[1]),
            ready: at[7],
            delete: at[7] + 1_000_000,
            nics_back: Some(at[7] + 1_300_000),
            gone: at[7] + 1_500_000,
            node: NodeEvents {
                sync_add: Some(at[2]),
                sandbox_start: Some(at[3]),
                cni_first_device: Some(at[4]),
                cni_done: Some(at[5]),
                sandbox_ready: Some(at[6]),
                teardown: Some(at[7] + 1_200_000),
                ..NodeEvents::default()
            },
            prepare_ms: Some(prepare),
            unprepare_ms: None,
        }
    }

    #[test]
    fn rows_compare_medians_and_judge_the_target() {
        let base: Vec<Sample> = (0..3)
            .map(|k| sample([0, 10, 5, 20, 0, 30, 80, 100 + k], 0.0))
            .collect();
        let ours: Vec<Sample> = (0..3)
            .map(|k| sample([40, 10, 5, 30, 10, 200, 80, 100 + k], 8.0))
            .collect();
        // Start: base 245..247 ms (median 246), ours 475..477 (median 476): +230 ms.
        let rows_hd = rows(Mode::HostDevice, 8, &ours, &base, 200.0, &Ok(()));
        assert_eq!(rows_hd.len(), 3);
        let start = &rows_hd[0];
        assert_eq!(start.ours.map(|s| s.median), Some(476.0));
        assert_eq!(start.baseline.as_ref().and_then(|b| b.1).map(|s| s.median), Some(246.0));
        assert_eq!(start.added, Some(230.0));
        assert_eq!(start.met, Some(true), "230 ≤ 200 + 50");
        assert!(start.target.contains("250.00"), "{}", start.target);
        let rows_mv = rows(Mode::Macvlan, 8, &ours, &base, f64::NAN, &Ok(()));
        assert_eq!(rows_mv[0].met, Some(false), "230 > 100");
        // Delete: both 500 ms to gone; NICs back after 300 ms.
        assert_eq!(rows_hd[1].added, Some(0.0));
        assert_eq!(rows_hd[2].ours.map(|s| s.median), Some(300.0));
        assert_eq!(rows_hd[2].added, Some(-200.0));
        // No floor: no verdict for host-device; a failed run marks the rows.
        let unjudged = rows(Mode::HostDevice, 8, &ours, &base, f64::NAN, &Err("boom".into()));
        assert_eq!(unjudged[0].met, None);
        assert!(unjudged.iter().all(|r| r.error.as_deref() == Some("boom")));
    }

    #[test]
    fn breakdown_lists_every_phase_with_the_difference() {
        let mut base = vec![sample([0, 10, 5, 20, 0, 30, 80, 100], 0.0)];
        base[0].claim_allocated = None;
        let mut no_log = sample([40, 10, 5, 30, 10, 200, 80, 100], 8.0);
        let ours = vec![sample([40, 10, 5, 30, 10, 200, 80, 100], 8.0)];
        let table = breakdown("pod start, 8 NICs, host-device", &START_PHASES, &ours, &base);
        assert_eq!(table.lines().count(), 2 + START_PHASES.len());
        assert!(
            table.contains("| RunPodSandbox → multinic-cni ADD done (netns, bridge, multinic-cni) | 210.00 ms [210.00 ms – 210.00 ms] | 30.00 ms [30.00 ms – 30.00 ms] | +180.00 ms |"),
            "{table}"
        );
        // The no-claim pod has no claim: that phase is ours only.
        assert!(
            table.contains("| API create → claim allocated (claim from the template, scheduler allocation) | 40.00 ms [40.00 ms – 40.00 ms] | — | — |"),
            "{table}"
        );
        // Without the logs the log phases are "—", the watch phases remain.
        no_log.node = NodeEvents::default();
        let table = breakdown("x", &DELETE_PHASES, &[no_log], &base);
        assert!(
            table.contains("| StopPodSandbox → network torn down (CNI DEL) | — | — | — |"),
            "{table}"
        );
        assert!(
            table.contains("| total: API delete → pod gone from the API | 500.00 ms"),
            "{table}"
        );
    }

    #[test]
    fn the_pods_differ_only_in_the_claim() {
        let plain = pod_manifest("p", "127.0.0.1", "busybox:1.36", None);
        let mut claimed = pod_manifest("p", "127.0.0.1", "busybox:1.36", Some("podstart-macvlan"));
        assert_eq!(
            claimed["spec"]["resourceClaims"][0]["resourceClaimTemplateName"],
            "podstart-macvlan"
        );
        if let Some(spec) = claimed["spec"].as_object_mut() {
            spec.remove("resourceClaims");
        }
        if let Some(c) = claimed["spec"]["containers"][0].as_object_mut() {
            c.remove("resources");
        }
        assert_eq!(plain, claimed);
        let pod: Result<Pod, _> = serde_json::from_value(plain);
        assert!(pod.is_ok_and(|p| p.spec.is_some_and(|s| s.affinity.is_some())));
        assert!(is_pod_nic("net12") && !is_pod_nic("net") && !is_pod_nic("eth0") && !is_pod_nic("netx"));
    }
}
