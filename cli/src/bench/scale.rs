//! Rows 11-13 (issue 17 item 4): the controller, the scheduler and the node plugin on the real API
//! server with simulated nodes ([`load`]: Nodes and the ResourceSlices of `--scale-rails` NICs
//! each, no kubelet).
//! - 11: per size of `--scale-nodes`, the controller's cold apply of a rails network over every
//!   fake node (time until the last node's NicNodeBlocks, against the load tool writing the same
//!   nodes), its API requests (the API server's `apiserver_request_total`, against the linear
//!   extrapolation from the smallest size), and the controller's and the API server's memory.
//! - 12: the scheduler binding `--scale-pods` pods that each hold a claim of `--scale-rails` NICs
//!   with a `matchAttribute` constraint, against the same pods without claims.
//! - 13: the API requests the real node's plugin makes per pod start and per pod delete (its own
//!   `multinic_api_requests_total`), with no fake node and with all of them.
//!
//! Everything made is deleted at the end, also after a failure.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::resource::v1::{ResourceClaim, ResourceClaimTemplate, ResourceSlice};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt as _, watcher};
use multinic_api::crd::{MultiNicNetwork, NicNodeBlocks};
use multinic_controller::reconcile::NETWORK_LABEL;
use serde_json::{Value, json};

use super::attach::Mode;
use super::load::{self, LABEL};
use super::podstart::{self, ClusterArgs, PodstartError, kube_err, until};
use super::rss::status_mib;
use super::stats::{Row, Summary, Unit};
use crate::status;

/// Field manager of the rows' server-side applies.
const MANAGER: &str = "multinic-bench";
/// The network of row 13 (the real node's virtual NICs only, so no fake node is in it).
const STARTS_NETWORK: &str = "multinic-bench-starts";
const STARTS_TEMPLATE: &str = "scale-starts";
/// Label telling row 12's two batches apart.
const BATCH: &str = "multinic.dev/bench-batch";
/// The attribute row 12's claims must agree on.
pub const MATCH_ATTRIBUTE: &str = "multinic.dev/speedMbps";
/// API resources only the controller writes: its requests in `apiserver_request_total`.
const CONTROLLER_RESOURCES: [&str; 3] = ["nicnodeblocks", "multinicnetworks", "deviceclasses"];
/// Targets of issue 17 item 4.
const SCHEDULER_PODS_PER_S: f64 = 50.0;

/// Flags of rows 11-13 (with row 10's cluster flags).
#[derive(Debug, Clone, clap::Args)]
pub struct ScaleArgs {
    /// Rows 11-13: numbers of fake nodes, ascending (row 11 runs at each; rows 12 and the second
    /// half of 13 at the largest).
    #[arg(long, value_delimiter = ',', default_values_t = [1000usize])]
    pub scale_nodes: Vec<usize>,
    /// Rows 11-12: NICs per fake node, and per claim of row 12.
    #[arg(long, default_value_t = 8)]
    pub scale_rails: usize,
    /// Row 12: pods per batch (at most one per fake node: each claim takes a node's NICs).
    #[arg(long, default_value_t = 500)]
    pub scale_pods: usize,
    /// Rows 11-12: API requests of the load tool in flight at once.
    #[arg(long, default_value_t = 32)]
    pub scale_concurrency: usize,
    /// Row 13: pods started (one at a time) at each cluster size.
    #[arg(long, default_value_t = 5)]
    pub scale_starts: usize,
    /// Rows 11-13: how long one wait (all blocks, all pods bound, everything deleted) may take, s.
    #[arg(long, default_value_t = 900)]
    pub scale_timeout: u64,
}

/// Which of rows 11-13 to run.
#[derive(Debug, Clone, Copy)]
pub struct Wanted {
    pub controller: bool,
    pub scheduler: bool,
    pub starts: bool,
}

/// The time target of row 11 for `nodes` (issue 17: 1,000 nodes in < 10 s, 7,500 in < 60 s).
pub fn controller_target_s(nodes: usize) -> Option<f64> {
    match nodes {
        0..=1000 => Some(10.0),
        1001..=7500 => Some(60.0),
        _ => None,
    }
}

/// Host bits of the scale network for `nodes` nodes: room for all of them (at least 4 bits).
pub fn host_bits(nodes: usize) -> u32 {
    (usize::BITS - nodes.leading_zeros()).max(4)
}

/// Bits for `rails` rails (at least 1).
pub fn rail_bits(rails: usize) -> u32 {
    (usize::BITS - rails.saturating_sub(1).leading_zeros()).max(1)
}

/// Every sample of a Prometheus text exposition of counter `name` (`name` or `name_total`): its
/// labels and value.
pub fn counter_samples(text: &str, name: &str) -> Vec<(BTreeMap<String, String>, f64)> {
    let total = format!("{name}_total");
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let (head, value) = line.rsplit_once(' ')?;
            let (metric, labels) = match head.split_once('{') {
                Some((m, rest)) => (m, rest.strip_suffix('}')?),
                None => (head, ""),
            };
            if metric != name && metric != total {
                return None;
            }
            Some((parse_labels(labels), value.trim().parse().ok()?))
        })
        .collect()
}

/// `k="v",k2="v2"` (values with `\"` escapes) as a map.
fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = s;
    while let Some((key, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        value.push(n);
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        out.insert(key.trim_start_matches(',').trim().to_string(), value);
        rest = &after[end..];
    }
    out
}

/// Requests in `apiserver_request_total` to `resources` (any verb but WATCH: a watch is one
/// long request, counted when it ends), by `VERB resource[/subresource]`.
pub fn apiserver_requests(text: &str, resources: &[&str]) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for (labels, v) in counter_samples(text, "apiserver_request") {
        let get = |k: &str| labels.get(k).map_or("", String::as_str);
        if !resources.contains(&get("resource")) || get("verb").eq_ignore_ascii_case("watch") {
            continue;
        }
        let sub = get("subresource");
        let key = if sub.is_empty() {
            format!("{} {}", get("verb"), get("resource"))
        } else {
            format!("{} {}/{sub}", get("verb"), get("resource"))
        };
        *out.entry(key).or_insert(0.0) += v;
    }
    out
}

/// The plugin's `multinic_api_requests_total` by `verb resource`.
pub fn plugin_requests(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for (labels, v) in counter_samples(text, "multinic_api_requests") {
        let get = |k: &str| labels.get(k).map_or("", String::as_str);
        *out.entry(format!("{} {}", get("verb"), get("resource"))).or_insert(0.0) += v;
    }
    out
}

/// `after − before` per key (keys with no change left out).
pub fn delta(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    after
        .iter()
        .filter_map(|(k, a)| {
            let d = a - before.get(k).copied().unwrap_or(0.0);
            (d != 0.0).then(|| (k.clone(), d))
        })
        .collect()
}

/// Takes `n` off the first of `keys` (compared case-insensitively) that has that many; a key
/// left at 0 is removed.
pub fn subtract(m: &mut BTreeMap<String, f64>, keys: &[&str], n: f64) {
    let key = m
        .iter()
        .find(|(k, v)| **v >= n && keys.iter().any(|want| k.eq_ignore_ascii_case(want)))
        .map(|(k, _)| k.clone());
    if let Some(k) = key {
        let left = m.get(&k).copied().unwrap_or(0.0) - n;
        if left == 0.0 {
            m.remove(&k);
        } else {
            m.insert(k, left);
        }
    }
}

fn total(m: &BTreeMap<String, f64>) -> f64 {
    m.values().sum()
}

fn breakdown(m: &BTreeMap<String, f64>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k} {v:.0}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether `cmdline` (NUL-separated, from /proc/<pid>/cmdline) runs the program `name`.
pub fn runs_program(cmdline: &[u8], name: &str) -> bool {
    let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or_default();
    Path::new(&*String::from_utf8_lossy(argv0))
        .file_name()
        .is_some_and(|f| f == name)
}

/// (VmRSS, VmHWM) in MiB of the first host process running `name`, `None` if none does.
fn process_memory(name: &str) -> Option<(f64, f64)> {
    let entries = std::fs::read_dir("/proc").ok()?;
    entries.flatten().find_map(|e| {
        let dir = e.path();
        let cmdline = std::fs::read(dir.join("cmdline")).ok()?;
        if !runs_program(&cmdline, name) {
            return None;
        }
        let status = std::fs::read_to_string(dir.join("status")).ok()?;
        Some((status_mib(&status, "VmRSS:")?, status_mib(&status, "VmHWM:")?))
    })
}

/// The machine and its load, for the notes.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .and_then(|r| r.split_once(':'))
                .map(|(_, m)| m.trim())
        })
        .unwrap_or("unknown CPU")
        .to_string();
    let cores = cpuinfo.lines().filter(|l| l.starts_with("processor")).count();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or("?".to_string(), |kib| format!("{:.1} GiB", kib / 1024.0 / 1024.0));
    format!("{cores} cores ({model}), {mem} RAM, load average {}", load_average())
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The scale network: the fake nodes' RDMA NICs (the real node's veths are not), host-device,
/// rails IPAM in 100.64.0.0/10 with room for `nodes` nodes and `rails` rails.
pub fn scale_network(name: &str, nodes: usize, rails: usize) -> Value {
    let mut net = podstart::network_manifest(
        name,
        Mode::HostDevice,
        "100.64.0.0/10",
        host_bits(nodes),
        rail_bits(rails),
    );
    net["spec"]["selector"] = json!("device.attributes[\"multinic.dev\"].rdma == true");
    net
}

/// Row 12's claim: `rails` NICs of `class`, all with the same [`MATCH_ATTRIBUTE`].
pub fn claim_manifest(name: &str, class: &str, rails: usize) -> Value {
    json!({
        "apiVersion": "resource.k8s.io/v1",
        "kind": "ResourceClaim",
        "metadata": {"name": name, "labels": {LABEL.0: LABEL.1}},
        "spec": {"devices": {
            "requests": [{"name": "nics", "exactly": {"deviceClassName": class, "count": rails}}],
            "constraints": [{"requests": ["nics"], "matchAttribute": MATCH_ATTRIBUTE}],
        }},
    })
}

/// Row 12's pod: on any fake node (never started: no kubelet), tolerating the taints the node
/// lifecycle controller puts on nodes that never report; with `claim`, that claim.
pub fn fake_node_pod(name: &str, batch: &str, image: &str, claim: Option<&str>) -> Value {
    let container = json!({"name": "app", "image": image, "command": ["sleep", "3600"]});
    let spec = json!({
        "terminationGracePeriodSeconds": 0,
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": LABEL.0, "operator": "In", "values": [LABEL.1]}]}
        ]}}},
        "tolerations": [{"operator": "Exists"}],
    });
    let claim = claim.map(|c| json!({"name": "nics", "resourceClaimName": c}));
    podstart::pod_object(name, json!({LABEL.0: LABEL.1, BATCH: batch}), spec, container, claim)
}

/// Row 13 at one cluster size: the plugin's requests per pod start and per pod delete.
#[derive(Debug, Clone, Default, PartialEq)]
struct Counts {
    start: Vec<f64>,
    stop: Vec<f64>,
}

/// A watch of `api`'s objects with `labels`: (when seen, name) for every applied object `pick`
/// names, and an empty name once the initial list is in.
fn watch_names<K>(
    api: Api<K>,
    labels: String,
    pick: fn(&K) -> Option<String>,
) -> (
    tokio::task::JoinHandle<()>,
    tokio::sync::mpsc::UnboundedReceiver<(Instant, String)>,
)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let mut events = watcher(api, watcher::Config::default().labels(&labels))
            .default_backoff()
            .boxed();
        while let Some(e) = events.next().await {
            let msg = match e {
                Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => pick(&o),
                Ok(watcher::Event::InitDone) => Some(String::new()),
                _ => None,
            };
            if let Some(m) = msg
                && tx.send((Instant::now(), m)).is_err()
            {
                return;
            }
        }
    });
    (task, rx)
}

/// Whether the watch of [`watch_names`] listed within `secs`.
async fn listed(rx: &mut tokio::sync::mpsc::UnboundedReceiver<(Instant, String)>, secs: u64) -> bool {
    let list = async {
        while let Some((_, m)) = rx.recv().await {
            if m.is_empty() {
                return true;
            }
        }
        false
    };
    tokio::time::timeout(Duration::from_secs(secs), list).await == Ok(true)
}

/// What the rows made, to delete at the end.
#[derive(Default)]
struct Made {
    namespace: bool,
    networks: Vec<String>,
    fake_nodes: bool,
}

struct Scale<'a> {
    client: kube::Client,
    cluster: &'a ClusterArgs,
    args: &'a ScaleArgs,
    made: Made,
    rows: Vec<Row>,
    notes: Vec<String>,
}

fn parse<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, PodstartError> {
    serde_json::from_value(v).map_err(PodstartError::Manifest)
}

impl Scale<'_> {
    fn timeout(&self) -> u64 {
        self.args.scale_timeout
    }

    async fn apiserver_metrics(&self) -> Result<String, PodstartError> {
        let request = http::Request::get("/metrics")
            .body(Vec::new())
            .map_err(|e| PodstartError::Unexpected(format!("the /metrics request: {e}")))?;
        self.client
            .request_text(request)
            .await
            .map_err(kube_err("reading the API server's /metrics"))
    }

    async fn controller_requests(&self) -> Result<BTreeMap<String, f64>, PodstartError> {
        Ok(apiserver_requests(
            &self.apiserver_metrics().await?,
            &CONTROLLER_RESOURCES,
        ))
    }

    /// Polls the controller's request count until it has not changed for 2 s (its last reconcile
    /// of an apply is done), at most the timeout; the last count.
    async fn settled_requests(&self) -> Result<BTreeMap<String, f64>, PodstartError> {
        let deadline = Instant::now() + Duration::from_secs(self.timeout());
        let mut last = self.controller_requests().await?;
        loop {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let now = self.controller_requests().await?;
            if now == last || Instant::now() > deadline {
                return Ok(now);
            }
            last = now;
        }
    }

    async fn apply_network(&mut self, name: &str, body: Value) -> Result<(), PodstartError> {
        Api::<MultiNicNetwork>::all(self.client.clone())
            .patch(name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(body))
            .await
            .map_err(kube_err(format!("applying MultiNicNetwork {name}")))?;
        if !self.made.networks.iter().any(|n| n == name) {
            self.made.networks.push(name.to_string());
        }
        Ok(())
    }

    /// The network's DeviceClass once the network is Ready with `nodes` nodes (`None`: any
    /// count), and how many GETs of it that took.
    async fn network_ready(&self, name: &str, nodes: Option<u32>) -> Result<(String, f64), PodstartError> {
        let api = Api::<MultiNicNetwork>::all(self.client.clone());
        let class = std::cell::RefCell::new(None);
        let gets = std::cell::Cell::new(0.0);
        until(self.timeout(), format!("MultiNicNetwork {name} Ready"), || {
            let (api, class, gets) = (api.clone(), &class, &gets);
            async move {
                gets.set(gets.get() + 1.0);
                let status = api
                    .get_opt(name)
                    .await
                    .map_err(kube_err(format!("reading MultiNicNetwork {name}")))?
                    .and_then(|n| n.status);
                let ready = status.as_ref().is_some_and(|s| {
                    s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                        && nodes.is_none_or(|n| s.nodes == Some(n))
                });
                if ready {
                    *class.borrow_mut() = status.and_then(|s| s.device_class_name);
                }
                Ok(ready)
            }
        })
        .await?;
        let class = class.into_inner().unwrap_or_else(|| name.to_string());
        Ok((class, gets.get()))
    }

    async fn delete_network(&mut self, name: &str) -> Result<(), PodstartError> {
        let api = Api::<MultiNicNetwork>::all(self.client.clone());
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(kube_err(format!("deleting MultiNicNetwork {name}"))(e)),
        }
        until(
            self.timeout(),
            format!("MultiNicNetwork {name} and its blocks to go"),
            || {
                let api = api.clone();
                async move {
                    Ok(api
                        .get_opt(name)
                        .await
                        .map_err(kube_err(format!("reading MultiNicNetwork {name}")))?
                        .is_none())
                }
            },
        )
        .await?;
        self.made.networks.retain(|n| n != name);
        Ok(())
    }

    /// The real node (the cluster's only node without the bench label, or `--node`).
    async fn real_node(&self) -> Result<String, PodstartError> {
        if let Some(n) = &self.cluster.node {
            return Ok(n.clone());
        }
        let nodes = Api::<Node>::all(self.client.clone())
            .list(&ListParams::default().labels(&format!("!{}", LABEL.0)))
            .await
            .map_err(kube_err("listing nodes"))?;
        match nodes.items.as_slice() {
            [one] => Ok(one.metadata.name.clone().unwrap_or_default()),
            all => Err(PodstartError::Node { count: all.len() }),
        }
    }

    async fn ensure_namespace(&mut self) -> Result<(), PodstartError> {
        let ns = &self.cluster.namespace;
        let namespaces = Api::<Namespace>::all(self.client.clone());
        if namespaces
            .get_opt(ns)
            .await
            .map_err(kube_err(format!("reading namespace {ns}")))?
            .is_none()
        {
            let object: Namespace = parse(
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": {LABEL.0: LABEL.1}}}),
            )?;
            namespaces
                .create(&PostParams::default(), &object)
                .await
                .map_err(kube_err(format!("creating namespace {ns}")))?;
            self.made.namespace = true;
        }
        Ok(())
    }

    /// Row 13's network and template on the real node `node`.
    async fn starts_setup(&mut self, node: &str) -> Result<(), PodstartError> {
        let mut net = podstart::network_manifest(STARTS_NETWORK, Mode::HostDevice, "10.203.0.0/16", 6, 4);
        net["spec"]["selector"] = json!("device.attributes[\"multinic.dev\"].virtual == true");
        self.apply_network(STARTS_NETWORK, net).await?;
        let (class, _) = self.network_ready(STARTS_NETWORK, None).await?;
        let blocks = Api::<NicNodeBlocks>::all(self.client.clone());
        podstart::wait_blocks(&blocks, STARTS_NETWORK, node, self.timeout()).await?;
        Api::<ResourceClaimTemplate>::namespaced(self.client.clone(), &self.cluster.namespace)
            .patch(
                STARTS_TEMPLATE,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(podstart::template_manifest(STARTS_TEMPLATE, &class, self.cluster.nics)),
            )
            .await
            .map_err(kube_err(format!("applying ResourceClaimTemplate {STARTS_TEMPLATE}")))?;
        Ok(())
    }

    async fn plugin_requests(&self) -> Result<BTreeMap<String, f64>, PodstartError> {
        Ok(plugin_requests(
            &status::fetch_metrics(&self.cluster.plugin_metrics).await?,
        ))
    }

    /// `--scale-starts` pods with a claim on the real node, one at a time: the plugin's requests
    /// per start (create → Ready) and per delete (delete → pod and claim gone), and the breakdown
    /// of all starts.
    async fn starts(&self, node: &str, tag: &str) -> Result<(Vec<f64>, Vec<f64>, String), PodstartError> {
        let ns = &self.cluster.namespace;
        let pods = Api::<Pod>::namespaced(self.client.clone(), ns);
        let claims = Api::<ResourceClaim>::namespaced(self.client.clone(), ns);
        let secs = self.cluster.pod_timeout;
        let (mut start, mut stop) = (Vec::new(), Vec::new());
        let mut all = BTreeMap::new();
        for k in 0..self.args.scale_starts {
            let name = format!("scale-start-{tag}-{k}");
            let pod: Pod = parse(podstart::pod_manifest(
                &name,
                node,
                &self.cluster.pod_image,
                Some(STARTS_TEMPLATE),
            ))?;
            let before = self.plugin_requests().await?;
            pods.create(&PostParams::default(), &pod)
                .await
                .map_err(kube_err(format!("creating pod {name}")))?;
            until(secs, format!("pod {name} Ready"), || {
                let pods = pods.clone();
                let name = name.clone();
                async move {
                    let pod = pods
                        .get_opt(&name)
                        .await
                        .map_err(kube_err(format!("reading pod {name}")))?;
                    Ok(pod
                        .and_then(|p| p.status)
                        .and_then(|s| s.conditions)
                        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True")))
                }
            })
            .await?;
            let ready = self.plugin_requests().await?;
            pods.delete(&name, &DeleteParams::default())
                .await
                .map_err(kube_err(format!("deleting pod {name}")))?;
            until(secs, format!("pod {name} and its claim to go"), || {
                let (pods, claims, name) = (pods.clone(), claims.clone(), name.clone());
                async move {
                    let pod = pods
                        .get_opt(&name)
                        .await
                        .map_err(kube_err(format!("reading pod {name}")))?;
                    let left = claims
                        .list(&ListParams::default())
                        .await
                        .map_err(kube_err("listing claims"))?;
                    Ok(pod.is_none() && left.items.is_empty())
                }
            })
            .await?;
            let gone = self.plugin_requests().await?;
            let d = delta(&before, &ready);
            start.push(total(&d));
            stop.push(total(&delta(&ready, &gone)));
            for (key, v) in d {
                *all.entry(key).or_insert(0.0) += v;
            }
        }
        Ok((start, stop, breakdown(&all)))
    }

    /// Creates fake nodes up to `to`; the time it took, s.
    async fn grow(&mut self, from: usize, to: usize) -> Result<f64, PodstartError> {
        self.made.fake_nodes = true;
        let t = Instant::now();
        load::create_nodes(
            &self.client,
            from..to,
            self.args.scale_rails,
            self.args.scale_concurrency,
        )
        .await?;
        Ok(t.elapsed().as_secs_f64())
    }

    /// Row 11 at `nodes` fake nodes (all created): the cold apply of a rails network.
    async fn controller(
        &mut self,
        nodes: usize,
        load_s: f64,
        smallest: &mut Option<(usize, f64)>,
        memory_before: [Option<(f64, f64)>; 2],
        keep: bool,
    ) -> Result<String, PodstartError> {
        let name = format!("multinic-bench-scale-{nodes}");
        let rails = self.args.scale_rails;
        // The watch of this network's blocks lists before the count starts (its WATCH request is
        // not counted).
        let blocks = Api::<NicNodeBlocks>::all(self.client.clone());
        let label = format!("{NETWORK_LABEL}={name}");
        let (watch, mut rx) = watch_names(blocks, label, |b: &NicNodeBlocks| b.metadata.name.clone());
        if !listed(&mut rx, self.timeout()).await {
            watch.abort();
            return Err(PodstartError::WatchEnded { what: "NicNodeBlocks" });
        }
        let before = self.controller_requests().await?;
        let t0 = Instant::now();
        self.apply_network(&name, scale_network(&name, nodes, rails)).await?;
        let mut seen = std::collections::HashSet::new();
        let all_blocks = tokio::time::timeout(Duration::from_secs(self.timeout()), async {
            while seen.len() < nodes {
                match rx.recv().await {
                    Some((_, m)) if !m.is_empty() => {
                        seen.insert(m);
                    }
                    Some(_) => {}
                    None => return false,
                }
            }
            true
        })
        .await;
        let blocks_s = t0.elapsed().as_secs_f64();
        watch.abort();
        if all_blocks != Ok(true) {
            return Err(PodstartError::Timeout {
                what: format!(
                    "NicNodeBlocks of network {name} for all {nodes} fake nodes (seen {})",
                    seen.len()
                ),
                secs: self.timeout(),
            });
        }
        let want = u32::try_from(nodes).unwrap_or(u32::MAX);
        let (_, own_gets) = self.network_ready(&name, Some(want)).await?;
        let ready_s = t0.elapsed().as_secs_f64();
        let after = self.settled_requests().await?;
        // Less the bench's own: its apply and its GETs of the network's status.
        let mut requests = delta(&before, &after);
        subtract(
            &mut requests,
            &["APPLY multinicnetworks", "PATCH multinicnetworks"],
            1.0,
        );
        subtract(&mut requests, &["GET multinicnetworks"], own_gets);
        let count = total(&requests);

        let mut time = Row::new(
            "11",
            format!("controller: NicNodeBlocks of all {nodes} fake nodes × {rails} rails (cold apply)"),
            Unit::S,
        );
        time.ours = Summary::of(&[blocks_s]);
        time.baseline = Some((
            format!(
                "load tool writing the {nodes} nodes + slices ({} at a time)",
                self.args.scale_concurrency
            ),
            Summary::of(&[load_s]),
        ));
        if let Some(limit) = controller_target_s(nodes) {
            time.target = format!("< {limit:.0} s");
            time.met = Some(blocks_s < limit);
        }
        let mut req = Row::new(
            "11",
            format!("controller API requests for that apply, {nodes} nodes"),
            Unit::Count,
        );
        req.ours = Summary::of(&[count]);
        req.target = "linear in nodes (≤ the smallest size's × nodes/size)".into();
        match *smallest {
            None => *smallest = Some((nodes, count)),
            Some((n0, c0)) => {
                let linear = c0 * nodes as f64 / n0 as f64;
                req.baseline = Some((format!("{c0:.0} at {n0} nodes × {nodes}/{n0}"), Summary::of(&[linear])));
                req.ratio = Some(("ours ÷ linear".into(), count / linear));
                req.met = Some(count <= linear);
            }
        }
        self.rows.push(time);
        self.rows.push(req);
        for (k, (program, label)) in [
            ("multinic-controller", "multinic-controller"),
            ("kube-apiserver", "kube-apiserver"),
        ]
        .into_iter()
        .enumerate()
        {
            let mut row = Row::new("11", format!("{label} memory (VmHWM) at {nodes} fake nodes"), Unit::MiB);
            match process_memory(program) {
                Some((rss, hwm)) => {
                    row.ours = Summary::of(&[hwm]);
                    self.notes.push(format!(
                        "{label} at {nodes} fake nodes: VmRSS {rss:.1} MiB, VmHWM {hwm:.1} MiB"
                    ));
                }
                None => row.error = Some(format!("no host process runs {program} (read from /proc)")),
            }
            row.baseline = Some((
                "before the load (no fake node)".into(),
                memory_before[k].and_then(|m| Summary::of(&[m.1])),
            ));
            row.target = "reported".into();
            self.rows.push(row);
        }
        if !keep {
            self.delete_network(&name).await?;
        }
        Ok(format!(
            "row 11, {nodes} nodes: all blocks after {blocks_s:.2} s, network Ready with {nodes} nodes after {ready_s:.2} s; controller requests: {}",
            breakdown(&requests)
        ))
    }

    /// One batch of row 12: `pods` pods created `concurrency` at a time; pods per second from the
    /// first create to the last pod bound.
    async fn batch(&self, batch: &str, claims: Option<&[String]>) -> Result<f64, PodstartError> {
        let ns = &self.cluster.namespace;
        let pods = Api::<Pod>::namespaced(self.client.clone(), ns);
        let n = self.args.scale_pods;
        let pick = |p: &Pod| p.spec.as_ref()?.node_name.as_ref().and(p.metadata.name.clone());
        let (watch, mut rx) = watch_names(pods.clone(), format!("{BATCH}={batch}"), pick);
        let secs = self.timeout();
        let result = async {
            if !listed(&mut rx, secs).await {
                return Err(PodstartError::WatchEnded { what: "pods" });
            }
            let manifests = (0..n)
                .map(|k| {
                    let claim = claims.map(|c| c[k].as_str());
                    parse::<Pod>(fake_node_pod(
                        &format!("scale-{batch}-{k}"),
                        batch,
                        &self.cluster.pod_image,
                        claim,
                    ))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let t0 = Instant::now();
            load::create_all(&pods, manifests, self.args.scale_concurrency).await?;
            let mut bound: HashMap<String, Instant> = HashMap::new();
            let done = tokio::time::timeout(Duration::from_secs(secs), async {
                while bound.len() < n {
                    match rx.recv().await {
                        Some((t, m)) if !m.is_empty() => {
                            bound.entry(m).or_insert(t);
                        }
                        Some(_) => {}
                        None => return false,
                    }
                }
                true
            })
            .await;
            if done != Ok(true) {
                return Err(PodstartError::Timeout {
                    what: format!("{n} pods of batch {batch} bound ({} bound)", bound.len()),
                    secs,
                });
            }
            let last = bound.values().max().copied().unwrap_or(t0);
            Ok(n as f64 / last.duration_since(t0).as_secs_f64().max(1e-6))
        }
        .await;
        watch.abort();
        result
    }

    /// Force-deletes the pods of row 12's batch `batch` (they never started: no kubelet to
    /// finish a graceful delete) and waits for them to go.
    async fn delete_batch(&self, batch: &str) -> Result<(), PodstartError> {
        let pods = Api::<Pod>::namespaced(self.client.clone(), &self.cluster.namespace);
        let selector = ListParams::default().labels(&format!("{BATCH}={batch}"));
        pods.delete_collection(&DeleteParams::default().grace_period(0), &selector)
            .await
            .map_err(kube_err(format!("deleting the pods of batch {batch}")))?;
        until(self.timeout(), format!("the pods of batch {batch} to go"), || {
            let (pods, selector) = (pods.clone(), selector.clone());
            async move {
                Ok(pods
                    .list(&selector.limit(1))
                    .await
                    .map_err(kube_err("listing pods"))?
                    .items
                    .is_empty())
            }
        })
        .await
    }

    /// Deletes row 12's claims and waits for them to go (the claim controller removes the
    /// scheduler's finalizer once the pods are gone).
    async fn delete_claims(&self) -> Result<(), PodstartError> {
        let claims = Api::<ResourceClaim>::namespaced(self.client.clone(), &self.cluster.namespace);
        claims
            .delete_collection(&DeleteParams::default(), &load::selector())
            .await
            .map_err(kube_err("deleting row 12's claims"))?;
        until(self.timeout(), "row 12's claims to go".into(), || {
            let claims = claims.clone();
            async move {
                Ok(claims
                    .list(&load::selector().limit(1))
                    .await
                    .map_err(kube_err("listing claims"))?
                    .items
                    .is_empty())
            }
        })
        .await
    }

    /// Row 12 on `nodes` fake nodes with `class` (the scale network's DeviceClass).
    async fn scheduler(&mut self, nodes: usize, class: &str) -> Result<String, PodstartError> {
        let (n, rails) = (self.args.scale_pods, self.args.scale_rails);
        if n > nodes {
            return Err(PodstartError::Unexpected(format!(
                "--scale-pods {n} needs at least {n} fake nodes (each claim takes all {rails} NICs of one); the largest --scale-nodes is {nodes}"
            )));
        }
        let claims_api = Api::<ResourceClaim>::namespaced(self.client.clone(), &self.cluster.namespace);
        let names: Vec<String> = (0..n).map(|k| format!("scale-claim-{k}")).collect();
        let objects = names
            .iter()
            .map(|c| parse::<ResourceClaim>(claim_manifest(c, class, rails)))
            .collect::<Result<Vec<_>, _>>()?;
        load::create_all(&claims_api, objects, self.args.scale_concurrency).await?;
        let base = self.batch("base", None).await?;
        self.delete_batch("base").await?;
        let ours = self.batch("claim", Some(&names)).await?;
        self.delete_batch("claim").await?;
        self.delete_claims().await?;
        let mut row = Row::new(
            "12",
            format!(
                "scheduler: {n} pods × {rails} NICs, matchAttribute {MATCH_ATTRIBUTE}, {nodes} fake nodes (first create → last bound)"
            ),
            Unit::PerSec,
        );
        row.ours = Summary::of(&[ours]);
        row.baseline = Some(("the same pods, no claim".into(), Summary::of(&[base])));
        row.ratio = Some(("ours ÷ no claim".into(), ours / base));
        row.target = format!("≥ {SCHEDULER_PODS_PER_S:.0} pods/s");
        row.met = Some(ours >= SCHEDULER_PODS_PER_S);
        self.rows.push(row);
        Ok(format!(
            "row 12: {ours:.1} pods/s with claims, {base:.1} pods/s without, pods created {} at a time",
            self.args.scale_concurrency
        ))
    }

    async fn run(&mut self, wanted: Wanted, starts: &mut [Option<Counts>; 2]) -> Result<(), PodstartError> {
        self.ensure_namespace().await?;
        let node = self.real_node().await?;
        // A run that was killed may have left fake nodes.
        if load::delete_nodes(&self.client).await? > 0 {
            self.notes.push("deleted fake nodes a previous run left".into());
        }
        let memory_before = [process_memory("multinic-controller"), process_memory("kube-apiserver")];
        if wanted.starts {
            self.starts_setup(&node).await?;
            let (start, stop, how) = self.starts(&node, "small").await?;
            self.notes.push(format!(
                "row 13, no fake node: the plugin's requests over all starts: {how}"
            ));
            starts[0] = Some(Counts { start, stop });
        }
        let mut sizes = self.args.scale_nodes.clone();
        sizes.sort_unstable();
        sizes.dedup();
        let largest = sizes.last().copied().unwrap_or(0);
        if wanted.controller || wanted.scheduler {
            let (mut have, mut load_s, mut smallest) = (0, 0.0, None);
            for (i, &size) in sizes.iter().enumerate() {
                load_s += self.grow(have, size).await?;
                have = size;
                let last = i + 1 == sizes.len();
                if wanted.controller || last {
                    let note = self
                        .controller(size, load_s, &mut smallest, memory_before, last)
                        .await?;
                    if wanted.controller {
                        self.notes.push(note);
                    }
                }
            }
            if !wanted.controller {
                self.rows.retain(|r| r.id != "11");
            }
            if wanted.scheduler {
                let name = format!("multinic-bench-scale-{largest}");
                let (class, _) = self.network_ready(&name, None).await?;
                let note = self.scheduler(largest, &class).await?;
                self.notes.push(note);
            }
        }
        if wanted.starts {
            if largest > 0 && !self.made.fake_nodes {
                self.grow(0, largest).await?;
            }
            let (start, stop, how) = self.starts(&node, "large").await?;
            self.notes.push(format!(
                "row 13, {largest} fake nodes: the plugin's requests over all starts: {how}"
            ));
            starts[1] = Some(Counts { start, stop });
        }
        Ok(())
    }

    /// Deletes what the rows made; errors are logged.
    async fn clean_up(&mut self) {
        let ns = self.cluster.namespace.clone();
        let warn = |what: &str, e: &dyn std::fmt::Display| tracing::warn!(error = %e, "scale clean-up: {what}");
        let pods = Api::<Pod>::namespaced(self.client.clone(), &ns);
        if let Err(e) = pods
            .delete_collection(&DeleteParams::default().grace_period(0), &load::selector())
            .await
        {
            warn("deleting pods", &e);
        }
        let claims = Api::<ResourceClaim>::namespaced(self.client.clone(), &ns);
        if let Err(e) = claims
            .delete_collection(&DeleteParams::default(), &load::selector())
            .await
        {
            warn("deleting claims", &e);
        }
        let templates = Api::<ResourceClaimTemplate>::namespaced(self.client.clone(), &ns);
        if let Err(e) = templates
            .delete_collection(&DeleteParams::default(), &load::selector())
            .await
        {
            warn("deleting claim templates", &e);
        }
        for name in self.made.networks.clone() {
            if let Err(e) = self.delete_network(&name).await {
                warn("deleting a network", &e);
            }
        }
        if self.made.fake_nodes
            && let Err(e) = load::delete_nodes(&self.client).await
        {
            warn("deleting the fake nodes", &e);
        }
        let namespaces = Api::<Namespace>::all(self.client.clone());
        if self.made.namespace
            && let Err(e) = namespaces.delete(&ns, &DeleteParams::default()).await
        {
            warn("deleting the namespace", &e);
        }
        let (client, made_ns) = (self.client.clone(), self.made.namespace);
        let gone = until(
            self.timeout(),
            "the fake nodes, their slices and the namespace to go".into(),
            || {
                let (client, ns) = (client.clone(), ns.clone());
                async move {
                    let one = load::selector().limit(1);
                    let nodes = Api::<Node>::all(client.clone())
                        .list(&one)
                        .await
                        .map_err(kube_err("listing nodes"))?;
                    let slices = Api::<ResourceSlice>::all(client.clone())
                        .list(&one)
                        .await
                        .map_err(kube_err("listing slices"))?;
                    let ns_left = made_ns
                        && Api::<Namespace>::all(client)
                            .get_opt(&ns)
                            .await
                            .map_err(kube_err("reading the namespace"))?
                            .is_some();
                    Ok(nodes.items.is_empty() && slices.items.is_empty() && !ns_left)
                }
            },
        )
        .await;
        if let Err(e) = gone {
            warn("waiting", &e);
        }
    }
}

/// Row 13's rows: requests per start and per delete at the largest size against no fake node.
fn starts_rows(nics: usize, largest: usize, starts: &[Option<Counts>; 2], error: Option<&str>) -> Vec<Row> {
    let pick = |s: &Counts, start: bool| if start { s.start.clone() } else { s.stop.clone() };
    [
        ("start (create → Ready)", true),
        ("delete (delete → pod and claim gone)", false),
    ]
    .into_iter()
    .map(|(what, start)| {
        let mut row = Row::new(
            "13",
            format!("node plugin API requests per pod {what}, {nics} NICs, {largest} fake nodes"),
            Unit::Count,
        );
        let small = starts[0].as_ref().and_then(|s| Summary::of(&pick(s, start)));
        row.ours = starts[1].as_ref().and_then(|s| Summary::of(&pick(s, start)));
        row.baseline = Some(("no fake node".into(), small));
        row.target = "constant (≤ with no fake node)".into();
        row.met = row.ours.zip(small).map(|(o, s)| o.median <= s.median);
        row.error = error.map(str::to_string);
        row
    })
    .collect()
}

/// Rows 11-13 and their notes.
pub async fn bench(cluster: &ClusterArgs, args: &ScaleArgs, wanted: Wanted) -> (Vec<Row>, Vec<String>) {
    let fail = |e: &dyn std::fmt::Display| (vec![Row::failed("11", "rows 11-13: setup", e)], Vec::new());
    let Some(path) = cluster.kubeconfig.as_deref() else {
        return fail(&PodstartError::NoKubeconfig);
    };
    let client = match multinic_api::setup::kube_client(Some(path)).await {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    let mut scale = Scale {
        client,
        cluster,
        args,
        made: Made::default(),
        rows: Vec::new(),
        notes: vec![format!("rows 11-13 start: {}", machine())],
    };
    let mut starts = [None, None];
    let outcome = scale.run(wanted, &mut starts).await;
    scale.clean_up().await;
    scale
        .notes
        .push(format!("rows 11-13 end: load average {}", load_average()));
    let error = outcome.err().map(|e| e.to_string());
    let largest = args.scale_nodes.iter().copied().max().unwrap_or(0);
    if wanted.starts {
        scale
            .rows
            .extend(starts_rows(cluster.nics, largest, &starts, error.as_deref()));
    }
    if let Some(e) = error
        && !scale.rows.iter().any(|r| r.error.is_some())
    {
        scale.rows.push(Row::failed("11", "rows 11-13", e));
    }
    (scale.rows, scale.notes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const APISERVER: &str = r#"# HELP apiserver_request_total [STABLE] Counter of apiserver requests
# TYPE apiserver_request_total counter
apiserver_request_total{code="200",component="apiserver",dry_run="",group="multinic.dev",resource="nicnodeblocks",scope="cluster",subresource="",verb="LIST",version="v1alpha1"} 3
apiserver_request_total{code="201",component="apiserver",dry_run="",group="multinic.dev",resource="nicnodeblocks",scope="resource",subresource="",verb="APPLY",version="v1alpha1"} 1000
apiserver_request_total{code="200",component="apiserver",dry_run="",group="multinic.dev",resource="nicnodeblocks",scope="cluster",subresource="",verb="WATCH",version="v1alpha1"} 7
apiserver_request_total{code="200",component="apiserver",dry_run="",group="multinic.dev",resource="multinicnetworks",scope="resource",subresource="status",verb="APPLY",version="v1alpha1"} 2
apiserver_request_total{code="200",component="apiserver",dry_run="",group="",resource="pods",scope="resource",subresource="",verb="GET",version="v1"} 99
apiserver_request_duration_seconds_count{resource="nicnodeblocks",verb="APPLY"} 1000
"#;

    #[test]
    fn the_controllers_requests_are_read_off_the_api_servers_metrics() {
        let r = apiserver_requests(APISERVER, &CONTROLLER_RESOURCES);
        assert_eq!(
            r,
            BTreeMap::from([
                ("APPLY multinicnetworks/status".to_string(), 2.0),
                ("APPLY nicnodeblocks".to_string(), 1000.0),
                ("LIST nicnodeblocks".to_string(), 3.0),
            ])
        );
        let mut later = r.clone();
        *later.entry("APPLY nicnodeblocks".into()).or_default() += 10.0;
        assert_eq!(
            delta(&r, &later),
            BTreeMap::from([("APPLY nicnodeblocks".to_string(), 10.0)])
        );
        assert_eq!(total(&later), 1015.0);
        subtract(&mut later, &["apply NICNODEBLOCKS"], 1.0);
        subtract(&mut later, &["LIST nicnodeblocks"], 3.0);
        subtract(&mut later, &["GET nicnodeblocks"], 1.0);
        assert_eq!(
            later,
            BTreeMap::from([
                ("APPLY multinicnetworks/status".to_string(), 2.0),
                ("APPLY nicnodeblocks".to_string(), 1009.0),
            ])
        );
    }

    #[test]
    fn the_plugins_requests_come_from_its_own_counter() {
        let text = "# TYPE multinic_api_requests counter\nmultinic_api_requests_total{verb=\"get\",resource=\"resourceclaims\"} 4\nmultinic_api_requests_total{verb=\"patch\",resource=\"resourceclaims/status\"} 4\nmultinic_grpc_requests_total{method=\"x\",outcome=\"ok\"} 9\n";
        let r = plugin_requests(text);
        assert_eq!(total(&r), 8.0);
        assert_eq!(r.get("patch resourceclaims/status"), Some(&4.0));
        let labels = parse_labels(r#"a="x\"y",b="",c="z""#);
        assert_eq!(labels.get("a").map(String::as_str), Some("x\"y"));
        assert_eq!(labels.get("b").map(String::as_str), Some(""));
        assert_eq!(labels.get("c").map(String::as_str), Some("z"));
    }

    #[test]
    fn the_scale_network_has_room_for_every_node_and_rail() {
        assert_eq!(host_bits(100), 7);
        assert_eq!(host_bits(1000), 10);
        assert_eq!(host_bits(7500), 13);
        assert_eq!(host_bits(1), 4);
        assert_eq!((rail_bits(8), rail_bits(9), rail_bits(1)), (3, 4, 1));
        for (nodes, rails) in [(100, 8), (7500, 8), (7500, 16)] {
            let net = scale_network("n", nodes, rails);
            let layout = multinic_api::rails::RailsLayout::new(
                "100.64.0.0/10".parse().unwrap_or_default(),
                net["spec"]["ipam"]["hostBlock"].as_u64().unwrap_or(0) as u8,
                net["spec"]["ipam"]["interfaceBlock"].as_u64().unwrap_or(0) as u8,
            );
            let layout = layout.map_err(|e| e.to_string());
            assert!(
                layout
                    .as_ref()
                    .is_ok_and(|l| l.hosts() >= nodes as u64 && l.rails() >= rails as u64),
                "{nodes} × {rails}: {layout:?}"
            );
        }
        let parsed: Result<MultiNicNetwork, _> = serde_json::from_value(scale_network("n", 10, 8));
        assert!(parsed.is_ok_and(|n| n.spec.selector.is_some_and(|s| s.contains("rdma"))));
    }

    #[test]
    fn targets_follow_the_issue() {
        assert_eq!(controller_target_s(100), Some(10.0));
        assert_eq!(controller_target_s(1000), Some(10.0));
        assert_eq!(controller_target_s(7500), Some(60.0));
        assert_eq!(controller_target_s(10_000), None);
    }

    #[test]
    fn row_12s_pods_differ_only_in_the_claim_and_tolerate_every_taint() {
        let plain = fake_node_pod("p", "base", "busybox:1.36", None);
        let mut claimed = fake_node_pod("p", "base", "busybox:1.36", Some("c"));
        assert_eq!(claimed["spec"]["resourceClaims"][0]["resourceClaimName"], "c");
        if let Some(spec) = claimed["spec"].as_object_mut() {
            spec.remove("resourceClaims");
        }
        if let Some(c) = claimed["spec"]["containers"][0].as_object_mut() {
            c.remove("resources");
        }
        assert_eq!(plain, claimed);
        let pod: Result<Pod, _> = serde_json::from_value(plain);
        let spec = pod.ok().and_then(|p| p.spec).unwrap_or_default();
        let tolerations = spec.tolerations.unwrap_or_default();
        assert_eq!(tolerations.len(), 1);
        assert_eq!(tolerations[0].operator.as_deref(), Some("Exists"));
        assert!(tolerations[0].key.is_none() && tolerations[0].effect.is_none());
        let claim: Result<ResourceClaim, _> = serde_json::from_value(claim_manifest("c", "cls", 8));
        let devices = claim.ok().and_then(|c| c.spec.devices).unwrap_or_default();
        let constraints = devices.constraints.unwrap_or_default();
        assert_eq!(constraints[0].match_attribute.as_deref(), Some(MATCH_ATTRIBUTE));
        let requests = devices.requests.unwrap_or_default();
        assert_eq!(requests[0].exactly.as_ref().and_then(|e| e.count), Some(8));
    }

    #[test]
    fn a_process_is_found_by_its_program_name() {
        assert!(runs_program(
            b"/usr/local/bin/multinic-controller\0--log-format=json\0",
            "multinic-controller"
        ));
        assert!(runs_program(b"kube-apiserver\0--etcd-servers=x\0", "kube-apiserver"));
        assert!(!runs_program(b"/bin/sh\0-c\0kube-apiserver\0", "kube-apiserver"));
        assert!(!runs_program(b"", "kube-apiserver"));
    }

    #[test]
    fn row_13_compares_the_medians_at_both_sizes() {
        let starts = [
            Some(Counts {
                start: vec![2.0, 2.0, 3.0],
                stop: vec![1.0, 1.0, 1.0],
            }),
            Some(Counts {
                start: vec![2.0, 2.0, 2.0],
                stop: vec![1.0, 2.0, 2.0],
            }),
        ];
        let rows = starts_rows(4, 100, &starts, None);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].met, Some(true));
        assert_eq!(rows[1].met, Some(false), "deletes went from 1 to 2");
        let none = starts_rows(4, 100, &[None, None], Some("boom"));
        assert!(
            none.iter()
                .all(|r| r.met.is_none() && r.error.as_deref() == Some("boom"))
        );
    }
}
