//! Reconciling one MultiNicNetwork: its DeviceClass, its nodes' NicNodeBlocks, its status.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use ipnet::IpNet;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::resource::v1::{
    CELDeviceSelector, DeviceClass, DeviceClassConfiguration, DeviceClassSpec, DeviceSelector,
    OpaqueDeviceConfiguration, ResourceSlice,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, OwnerReference, Time};
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{self, Event as FinalizerEvent, finalizer};
use kube::runtime::reflector::Store;
use kube::{Resource, ResourceExt};
use multinic_api::config::{ConfigError, IpamType, NetworkConfig};
use multinic_api::crd::{
    MultiNicNetwork, MultiNicNetworkSpec, MultiNicNetworkStatus, NicNodeBlocks, NicNodeBlocksSpec, RailBlock,
    node_blocks_name,
};
use multinic_api::names::{API_VERSION, DRIVER_NAME};
use multinic_api::pool::PoolLayout;
use multinic_api::rails::RailsLayouts;
use serde_json::{Value, json};

use crate::blocks::{self, Assignment};
use crate::pool::{self, NodePool};
use crate::selector::{NodeRails, Selector, SelectorError, matching_nodes};

/// Field manager of everything the controller writes.
pub const MANAGER: &str = "multinic-controller";
/// Finalizer that lets the controller remove what it created.
pub const FINALIZER: &str = "multinic.dev/cleanup";
/// Label on DeviceClasses and NicNodeBlocks naming their network.
pub const NETWORK_LABEL: &str = "multinic.dev/network";

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("MultiNicNetwork {network}: {what}: {source}")]
    Kube {
        network: String,
        what: String,
        source: kube::Error,
    },
    #[error(
        "MultiNicNetwork {network}: the finalizer {FINALIZER}: {message}; the object as read from the API server is malformed"
    )]
    Finalizer { network: String, message: String },
    #[error(
        "MultiNicNetwork {network}: the ResourceSlice watch ended before its first list; the controller is stopping"
    )]
    SlicesGone { network: String },
}

/// Shared by all reconciles.
pub struct Context {
    pub client: kube::Client,
    /// The driver's ResourceSlices, from the controller's one watch of them.
    pub slices: Store<ResourceSlice>,
}

/// What a reconcile decided (for status and tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ready { nodes: usize },
    Invalid(String),
    Exhausted { nodes: usize, message: String },
}

/// The opaque parameters the DeviceClass carries: the network as our driver reads it.
pub fn network_config(name: &str, spec: &MultiNicNetworkSpec) -> Result<(NetworkConfig, Value), ConfigError> {
    let mut params = json!({
        "apiVersion": API_VERSION,
        "kind": "NetworkConfig",
        "network": name,
        "attachment": spec.attachment,
        "ipam": spec.ipam,
        "routing": spec.routing,
    });
    if let (Some(prefix), Some(map)) = (&spec.interface_name_prefix, params.as_object_mut()) {
        map.insert("interfaceNamePrefix".into(), Value::String(prefix.clone()));
    }
    let config = NetworkConfig::from_values([&params])?;
    Ok((config, params))
}

/// The DeviceClass of a network: our driver, the network's selector, the config as opaque
/// parameters, owned by the network.
pub fn device_class(net: &MultiNicNetwork, params: &Value) -> DeviceClass {
    let cel = |expression: String| DeviceSelector {
        cel: Some(CELDeviceSelector { expression }),
    };
    let mut selectors = vec![cel(format!("device.driver == \"{DRIVER_NAME}\""))];
    selectors.extend(net.spec.selector.clone().map(cel));
    DeviceClass {
        metadata: owned_meta(net, net.name_any()),
        spec: DeviceClassSpec {
            selectors: Some(selectors),
            config: Some(vec![DeviceClassConfiguration {
                opaque: Some(OpaqueDeviceConfiguration {
                    driver: DRIVER_NAME.to_string(),
                    parameters: RawExtension(params.clone()),
                }),
            }]),
            ..Default::default()
        },
    }
}

/// The NicNodeBlocks of `node` in a network, owned by the network.
pub fn blocks_object(net: &MultiNicNetwork, node: &str, host: u32, blocks: Vec<RailBlock>) -> NicNodeBlocks {
    let name = node_blocks_name(&net.name_any(), node);
    let mut object = NicNodeBlocks::new(
        &name,
        NicNodeBlocksSpec {
            network: net.name_any(),
            node_name: node.to_string(),
            host_index: host,
            granted_blocks: Vec::new(),
            blocks,
        },
    );
    object.metadata = owned_meta(net, name);
    object
}

/// `name`, the network label and the network as controlling owner.
fn owned_meta(net: &MultiNicNetwork, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        labels: Some(BTreeMap::from([(NETWORK_LABEL.to_string(), net.name_any())])),
        owner_references: Some(vec![OwnerReference {
            api_version: MultiNicNetwork::api_version(&()).into_owned(),
            kind: MultiNicNetwork::kind(&()).into_owned(),
            name: net.name_any(),
            uid: net.meta().uid.clone().unwrap_or_default(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }]),
        ..Default::default()
    }
}

/// Reconciles one network behind the finalizer [`FINALIZER`]: it is added before anything is
/// created, and removed once [`cleanup_network`] has deleted what the network created.
pub async fn reconcile(net: Arc<MultiNicNetwork>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let name = net.name_any();
    let networks: Api<MultiNicNetwork> = Api::all(ctx.client.clone());
    finalizer(&networks, FINALIZER, net, |event| async {
        match event {
            FinalizerEvent::Apply(net) => {
                let outcome = apply_network(&ctx, &net).await?;
                tracing::info!(network = %net.name_any(), ?outcome, "reconciled");
                Ok(Action::requeue(Duration::from_secs(300)))
            }
            FinalizerEvent::Cleanup(net) => {
                cleanup_network(&ctx.client, &net).await?;
                tracing::info!(network = %net.name_any(), "deleted its DeviceClass and NicNodeBlocks");
                Ok(Action::await_change())
            }
        }
    })
    .await
    .map_err(|error| finalizer_error(&name, error))
}

/// The finalizer's errors as ours, each naming the network.
fn finalizer_error(network: &str, error: finalizer::Error<ReconcileError>) -> ReconcileError {
    let kube = |what: &str, source| ReconcileError::Kube {
        network: network.to_string(),
        what: format!("{what} the finalizer {FINALIZER}"),
        source,
    };
    match error {
        finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e,
        finalizer::Error::AddFinalizer(source) => kube("adding", source),
        finalizer::Error::RemoveFinalizer(source) => kube("removing", source),
        other @ (finalizer::Error::UnnamedObject | finalizer::Error::InvalidFinalizer) => ReconcileError::Finalizer {
            network: network.to_string(),
            message: other.to_string(),
        },
    }
}

/// Retries failed reconciles with a delay.
pub fn error_policy(net: Arc<MultiNicNetwork>, error: &ReconcileError, _: Arc<Context>) -> Action {
    tracing::warn!(network = %net.name_any(), %error, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(10))
}

/// Deletes the DeviceClass and the NicNodeBlocks of a network that is going away.
pub async fn cleanup_network(client: &kube::Client, net: &MultiNicNetwork) -> Result<(), ReconcileError> {
    let name = net.name_any();
    let classes: Api<DeviceClass> = Api::all(client.clone());
    let node_blocks: Api<NicNodeBlocks> = Api::all(client.clone());
    delete_ignoring_missing(&classes, &name)
        .await
        .map_err(kube_err(&name, "deleting the DeviceClass"))?;
    for nb in list_ours(&node_blocks, &name)
        .await
        .map_err(kube_err(&name, "listing NicNodeBlocks"))?
    {
        delete_ignoring_missing(&node_blocks, &nb.name_any())
            .await
            .map_err(kube_err(&name, "deleting NicNodeBlocks"))?;
    }
    Ok(())
}

fn kube_err(network: &str, what: &str) -> impl FnOnce(kube::Error) -> ReconcileError {
    let (network, what) = (network.to_string(), what.to_string());
    move |source| ReconcileError::Kube { network, what, source }
}

/// Objects per page of [`list_ours`]: a network of 7,500 nodes is 15 requests, and no response
/// (or its parse) holds every object at once; the managed fields, which the reconcile never reads,
/// are dropped per page (they are most of an object's size).
const LIST_PAGE: u32 = 500;

/// The NicNodeBlocks of `network`, listed in pages of [`LIST_PAGE`], without managed fields.
async fn list_ours(api: &Api<NicNodeBlocks>, network: &str) -> Result<Vec<NicNodeBlocks>, kube::Error> {
    let mut params = ListParams::default()
        .labels(&format!("{NETWORK_LABEL}={network}"))
        .limit(LIST_PAGE);
    let mut out = Vec::new();
    loop {
        let page = api.list(&params).await?;
        out.extend(page.items.into_iter().map(|mut nb| {
            nb.metadata.managed_fields = None;
            nb
        }));
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => return Ok(out),
        }
    }
}

/// Makes the DeviceClass, the NicNodeBlocks and the status of a network match its spec and the
/// nodes' slices in `ctx.slices` (callable directly: tests, one-shot runs).
pub async fn apply_network(ctx: &Context, net: &MultiNicNetwork) -> Result<Outcome, ReconcileError> {
    let name = net.name_any();
    let client = &ctx.client;
    let networks: Api<MultiNicNetwork> = Api::all(client.clone());
    let classes: Api<DeviceClass> = Api::all(client.clone());
    let node_blocks: Api<NicNodeBlocks> = Api::all(client.clone());

    let validated = network_config(&name, &net.spec)
        .map_err(|e| e.to_string())
        .and_then(|(config, params)| {
            let selector = Selector::compile(net.spec.selector.as_deref()).map_err(|e: SelectorError| e.to_string())?;
            let layout = match config.ipam.kind {
                IpamType::Rails => Some(config.rails_layouts().map_err(|e| e.to_string())?),
                _ => None,
            };
            let pool = match config.ipam.kind {
                IpamType::Pool => Some(config.pool_layout().map_err(|e| e.to_string())?),
                _ => None,
            };
            Ok((params, selector, layout, pool))
        });
    let (params, selector, layout, pool) = match validated {
        Ok(v) => v,
        Err(message) => {
            let outcome = Outcome::Invalid(message);
            write_status(&networks, net, &outcome, None)
                .await
                .map_err(kube_err(&name, "writing the status"))?;
            return Ok(outcome);
        }
    };

    let apply = PatchParams::apply(MANAGER).force();
    classes
        .patch(&name, &apply, &Patch::Apply(device_class(net, &params)))
        .await
        .map_err(kube_err(&name, "applying the DeviceClass"))?;

    // Until the first list of slices is in, no node is known: blocks would be deleted.
    ctx.slices
        .wait_until_ready()
        .await
        .map_err(|_| ReconcileError::SlicesGone { network: name.clone() })?;
    let slices = ctx.slices.state();
    let nodes = match matching_nodes(DRIVER_NAME, &selector, slices.iter().map(Arc::as_ref)) {
        Ok(nodes) => nodes,
        Err(e) => {
            let outcome = Outcome::Invalid(e.to_string());
            write_status(&networks, net, &outcome, None)
                .await
                .map_err(kube_err(&name, "writing the status"))?;
            return Ok(outcome);
        }
    };

    let existing = list_ours(&node_blocks, &name)
        .await
        .map_err(kube_err(&name, "listing NicNodeBlocks"))?;
    if let Some(pool) = pool {
        let (outcome, summary) = apply_pool(ctx, net, &pool, &nodes, &existing).await?;
        write_status(&networks, net, &outcome, Some(summary))
            .await
            .map_err(kube_err(&name, "writing the status"))?;
        return Ok(outcome);
    }
    let summary;
    let outcome = match layout {
        Some(layout) => {
            let recorded: BTreeMap<String, u32> = existing
                .iter()
                .map(|nb| (nb.spec.node_name.clone(), nb.spec.host_index))
                .collect();
            let wanted: BTreeSet<String> = nodes.keys().cloned().collect();
            let assignment = blocks::assign(&layout, &recorded, &wanted);
            let (mut with_blocks, mut desired) = (BTreeSet::new(), Vec::new());
            let mut problems = assignment
                .exhausted
                .iter()
                .map(|n| format!("node {n}: no host index left"))
                .collect::<Vec<_>>();
            for (node, rails) in &nodes {
                // A node without a host index is in `exhausted`, reported above.
                let Some(&host) = assignment.hosts.get(node) else {
                    continue;
                };
                let (rails, addresses) = (rails.rails, &rails.addresses);
                let usable = u32::try_from(layout.rails()).unwrap_or(u32::MAX).min(rails);
                if rails > usable {
                    problems.push(format!("node {node}: {rails} rails, the network has room for {usable}"));
                }
                // Not written rather than written without blocks.
                let rail_blocks = match blocks::node_blocks(&layout, host, usable, addresses) {
                    Ok(b) => b,
                    Err(e) => {
                        problems.push(format!("node {node}: {e}"));
                        continue;
                    }
                };
                desired.push(blocks_object(net, node, host, rail_blocks));
                with_blocks.insert(node.clone());
            }
            apply_changed(&node_blocks, &existing, desired)
                .await
                .map_err(kube_err(&name, "applying NicNodeBlocks"))?;
            delete_stale(&node_blocks, &existing, &assignment)
                .await
                .map_err(kube_err(&name, "deleting NicNodeBlocks"))?;
            summary = NodeSummary::of(&nodes, Some(&with_blocks));
            if problems.is_empty() {
                Outcome::Ready {
                    nodes: assignment.hosts.len(),
                }
            } else {
                Outcome::Exhausted {
                    nodes: assignment.hosts.len(),
                    message: exhausted_message(&layout, &problems),
                }
            }
        }
        None => {
            // Not a rails network (any more): it owns no blocks.
            delete_stale(&node_blocks, &existing, &Assignment::default())
                .await
                .map_err(kube_err(&name, "deleting NicNodeBlocks"))?;
            summary = NodeSummary::of(&nodes, None);
            Outcome::Ready { nodes: nodes.len() }
        }
    };
    write_status(&networks, net, &outcome, Some(summary))
        .await
        .map_err(kube_err(&name, "writing the status"))?;
    Ok(outcome)
}

/// The `pool` part of [`apply_network`]: every node that publishes selected devices gets a
/// NicNodeBlocks; [`pool::grant`] decides the grants from what all of them say (read by a
/// consistent list, so no block is granted twice). A node that no longer publishes selected
/// devices keeps its object while it holds grants and its Node exists (its pods may still hold
/// addresses); once the Node is gone (one GET, only for such a node) the object and its grants go.
async fn apply_pool(
    ctx: &Context,
    net: &MultiNicNetwork,
    layout: &PoolLayout,
    nodes: &BTreeMap<String, NodeRails>,
    existing: &[NicNodeBlocks],
) -> Result<(Outcome, NodeSummary), ReconcileError> {
    let name = net.name_any();
    let node_blocks: Api<NicNodeBlocks> = Api::all(ctx.client.clone());
    let node_objects: Api<Node> = Api::all(ctx.client.clone());
    let mut inputs: BTreeMap<String, NodePool> = nodes
        .keys()
        .map(|n| {
            let selected = NodePool {
                selected: true,
                ..Default::default()
            };
            (n.clone(), selected)
        })
        .collect();
    for nb in existing {
        let status = nb.status.clone().unwrap_or_default();
        inputs.insert(
            nb.spec.node_name.clone(),
            NodePool {
                granted: nb.spec.granted_blocks.clone(),
                want: status.want_blocks.unwrap_or(0),
                released: status.released_blocks,
                selected: nodes.contains_key(&nb.spec.node_name),
            },
        );
    }
    let exclude = &net.spec.ipam.exclude;
    let grants = pool::grant(layout, exclude, &inputs);
    let (mut with_blocks, mut desired) = (BTreeSet::new(), Vec::new());
    for (node, granted) in &grants.granted {
        let object = node_blocks_name(&name, node);
        if !nodes.contains_key(node) {
            let gone = granted.is_empty()
                || node_objects
                    .get_metadata_opt(node)
                    .await
                    .map_err(kube_err(
                        &name,
                        "reading the Node of a pool node without selected devices",
                    ))?
                    .is_none();
            if gone {
                delete_ignoring_missing(&node_blocks, &object)
                    .await
                    .map_err(kube_err(&name, "deleting NicNodeBlocks"))?;
                continue;
            }
        }
        let mut body = blocks_object(net, node, 0, Vec::new());
        body.spec.granted_blocks = granted.clone();
        desired.push(body);
        with_blocks.insert(node.clone());
    }
    apply_changed(&node_blocks, existing, desired)
        .await
        .map_err(kube_err(&name, "applying NicNodeBlocks"))?;
    let summary = NodeSummary::of(nodes, Some(&with_blocks));
    let outcome = if grants.short.is_empty() {
        Outcome::Ready { nodes: nodes.len() }
    } else {
        Outcome::Exhausted {
            nodes: nodes.len(),
            message: pool_exhausted_message(layout, exclude, &grants.short),
        }
    };
    Ok((outcome, summary))
}

/// The `Exhausted` message of a pool network: who misses how many blocks, and the fixes.
pub fn pool_exhausted_message(layout: &PoolLayout, exclude: &[IpNet], short: &BTreeMap<String, u32>) -> String {
    let nodes: Vec<String> = short.iter().map(|(n, m)| format!("node {n} wants {m} more")).collect();
    let excluding = match exclude {
        [] => String::new(),
        x => format!(
            " excluding {}",
            x.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
        ),
    };
    format!(
        "pool {}{excluding} has no free /{} block: {}; grow ipam.subnet, shrink ipam.exclude, lengthen ipam.blockPrefix or release claims",
        layout.subnet,
        layout.block_prefix,
        nodes.join(", ")
    )
}

/// The node and device counts of a network's status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeSummary {
    pub ready_nodes: u32,
    pub devices: u32,
    pub unhealthy_devices: u32,
}

impl NodeSummary {
    /// Pure: over the matching nodes; with `with_blocks` (a `rails` network) a node is ready only
    /// when its blocks were written.
    pub fn of(nodes: &BTreeMap<String, NodeRails>, with_blocks: Option<&BTreeSet<String>>) -> Self {
        nodes.iter().fold(Self::default(), |acc, (node, rails)| {
            let blocks = with_blocks.is_none_or(|b| b.contains(node));
            Self {
                ready_nodes: acc.ready_nodes + u32::from(blocks && rails.has_usable_device()),
                devices: acc.devices + rails.devices,
                unhealthy_devices: acc.unhealthy_devices + rails.tainted,
            }
        })
    }
}

fn exhausted_message(layout: &RailsLayouts, problems: &[String]) -> String {
    let subnets: Vec<String> = layout.subnets().iter().map(ToString::to_string).collect();
    format!(
        "{}; the subnet {} gives {} hosts x {} rails: grow the subnet, hostBlock or interfaceBlock",
        problems.join("; "),
        subnets.join(" and "),
        layout.hosts(),
        layout.rails()
    )
}

/// NicNodeBlocks applied at once by [`apply_changed`]. The API server admits 200 mutating
/// requests in flight by default (`--max-mutating-requests-inflight`,
/// `staging/src/k8s.io/apiserver/pkg/server/options/server_run_options.go`); 16 keeps the
/// controller a small share of that while a first reconcile of thousands of nodes is not one
/// round trip after another.
const APPLY_CONCURRENCY: usize = 16;

/// Whether `current` already says what a server-side apply of `desired` would write: its spec,
/// its network label and its controlling owner. A reconcile of a network whose nodes did not
/// change therefore writes no NicNodeBlocks at all (the status, written by the node, is not ours).
fn up_to_date(current: &NicNodeBlocks, desired: &NicNodeBlocks) -> bool {
    let label = |nb: &NicNodeBlocks| nb.labels().get(NETWORK_LABEL).cloned();
    let owner = |nb: &NicNodeBlocks| {
        nb.owner_references()
            .iter()
            .find(|o| o.controller == Some(true))
            .map(|o| (o.uid.clone(), o.name.clone(), o.kind.clone()))
    };
    current.spec == desired.spec && label(current) == label(desired) && owner(current) == owner(desired)
}

/// Applies each of `desired` (server-side, forced) that is not [`up_to_date`] with its object in
/// `existing`, [`APPLY_CONCURRENCY`] at a time; the first error stops the rest (the next reconcile
/// applies what is still different).
async fn apply_changed(
    api: &Api<NicNodeBlocks>,
    existing: &[NicNodeBlocks],
    desired: Vec<NicNodeBlocks>,
) -> Result<(), kube::Error> {
    let current: BTreeMap<String, &NicNodeBlocks> = existing.iter().map(|nb| (nb.name_any(), nb)).collect();
    let apply = PatchParams::apply(MANAGER).force();
    let changed = desired
        .into_iter()
        .filter(|body| current.get(&body.name_any()).is_none_or(|nb| !up_to_date(nb, body)));
    futures::stream::iter(changed.map(Ok))
        .try_for_each_concurrent(APPLY_CONCURRENCY, |body| {
            let apply = &apply;
            async move {
                api.patch(&body.name_any(), apply, &Patch::Apply(&body)).await?;
                Ok(())
            }
        })
        .await
}

async fn delete_stale(
    api: &Api<NicNodeBlocks>,
    existing: &[NicNodeBlocks],
    keep: &Assignment,
) -> Result<(), kube::Error> {
    for nb in existing
        .iter()
        .filter(|nb| !keep.hosts.contains_key(&nb.spec.node_name))
    {
        delete_ignoring_missing(api, &nb.name_any()).await?;
    }
    Ok(())
}

async fn delete_ignoring_missing<K>(api: &Api<K>, name: &str) -> Result<(), kube::Error>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

/// The conditions of an outcome: `Ready`, `Invalid` and `Exhausted`, each True or False.
pub fn conditions(outcome: &Outcome, previous: &[Condition], generation: Option<i64>) -> Vec<Condition> {
    let (ready, invalid, exhausted) = match outcome {
        Outcome::Ready { nodes } => (
            (true, "Reconciled", format!("DeviceClass and blocks for {nodes} nodes")),
            None,
            None,
        ),
        Outcome::Invalid(m) => ((false, "Invalid", m.clone()), Some(m.clone()), None),
        Outcome::Exhausted { message, .. } => ((false, "Exhausted", message.clone()), None, Some(message.clone())),
    };
    let make = |type_: &str, status: bool, reason: &str, message: String| {
        let status = if status { "True" } else { "False" }.to_string();
        // Keep the transition time while the status stays the same.
        let last_transition_time = previous
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .map(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| Time(k8s_openapi::jiff::Timestamp::now()));
        Condition {
            type_: type_.into(),
            status,
            reason: reason.into(),
            message,
            last_transition_time,
            observed_generation: generation,
        }
    };
    vec![
        make("Ready", ready.0, ready.1, ready.2),
        match invalid {
            Some(m) => make("Invalid", true, "InvalidSpec", m),
            None => make("Invalid", false, "Valid", String::new()),
        },
        match exhausted {
            Some(m) => make("Exhausted", true, "AddressSpaceExhausted", m),
            None => make("Exhausted", false, "Sufficient", String::new()),
        },
    ]
}

async fn write_status(
    api: &Api<MultiNicNetwork>,
    net: &MultiNicNetwork,
    outcome: &Outcome,
    summary: Option<NodeSummary>,
) -> Result<(), kube::Error> {
    let previous = net.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default();
    let nodes = match outcome {
        Outcome::Ready { nodes } | Outcome::Exhausted { nodes, .. } => Some(u32::try_from(*nodes).unwrap_or(u32::MAX)),
        Outcome::Invalid(_) => None,
    };
    let status = MultiNicNetworkStatus {
        conditions: conditions(outcome, &previous, net.meta().generation),
        device_class_name: (!matches!(outcome, Outcome::Invalid(_))).then(|| net.name_any()),
        nodes,
        ready_nodes: summary.map(|s| s.ready_nodes),
        devices: summary.map(|s| s.devices),
        unhealthy_devices: summary.map(|s| s.unhealthy_devices),
    };
    let body = json!({"apiVersion": API_VERSION, "kind": "MultiNicNetwork", "metadata": {"name": net.name_any()}, "status": status});
    api.patch_status(
        &net.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(body),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use multinic_api::crd::NicNodeBlocksStatus;

    use super::*;

    fn net() -> MultiNicNetwork {
        serde_json::from_value(json!({"apiVersion": API_VERSION, "kind": "MultiNicNetwork",
            "metadata": {"name": "rails", "uid": "u-1"},
            "spec": {"selector": "device.attributes[\"multinic.dev\"].rdma",
                     "ipam": {"type": "rails", "subnet": "10.10.0.0/16", "hostBlock": 8, "interfaceBlock": 2}}}))
        .unwrap()
    }

    fn owned_metadata(name: &str) -> Value {
        json!({"name": name, "labels": {NETWORK_LABEL: "rails"},
            "ownerReferences": [{"apiVersion": API_VERSION, "kind": "MultiNicNetwork", "name": "rails",
                                 "uid": "u-1", "controller": true, "blockOwnerDeletion": true}]})
    }

    // The apply bodies are whole objects (apiVersion, kind, metadata, spec) with exactly the
    // fields the controller owns.
    #[test]
    fn summary_counts_ready_nodes_and_unhealthy_devices() {
        let rails = |devices, tainted| NodeRails {
            devices,
            tainted,
            ..Default::default()
        };
        let nodes = BTreeMap::from([
            ("a".to_string(), rails(4, 0)),
            ("b".to_string(), rails(2, 1)),
            ("c".to_string(), rails(1, 1)),
            ("d".to_string(), rails(3, 0)),
        ]);
        // d has no blocks (a rails network that could not give it a host index).
        let with_blocks = BTreeSet::from(["a".to_string(), "b".to_string(), "c".to_string()]);
        let rails_summary = NodeSummary::of(&nodes, Some(&with_blocks));
        assert_eq!(
            rails_summary,
            NodeSummary {
                ready_nodes: 2,
                devices: 10,
                unhealthy_devices: 2
            }
        );
        assert_eq!(NodeSummary::of(&nodes, None).ready_nodes, 3);
    }

    #[test]
    fn only_what_an_apply_would_change_makes_an_object_out_of_date() {
        let block = |cidr: &str| RailBlock {
            rail_index: 0,
            cidr: cidr.parse().unwrap(),
            node_address: None,
        };
        let desired = blocks_object(&net(), "n1", 3, vec![block("10.10.3.0/26")]);
        let mut read = desired.clone();
        read.metadata.resource_version = Some("7".into());
        read.metadata.managed_fields = Some(Vec::new());
        read.status = Some(NicNodeBlocksStatus {
            want_blocks: Some(2),
            released_blocks: Vec::new(),
        });
        assert!(
            up_to_date(&read, &desired),
            "server fields and the node's status are not ours"
        );

        let changed = |edit: &dyn Fn(&mut NicNodeBlocks)| {
            let mut nb = read.clone();
            edit(&mut nb);
            up_to_date(&nb, &desired)
        };
        assert!(!changed(&|nb| nb.spec.host_index = 4));
        assert!(!changed(&|nb| nb.spec.blocks = vec![block("10.10.4.0/26")]));
        assert!(!changed(
            &|nb| nb.spec.granted_blocks = vec!["10.10.0.0/29".parse().unwrap()]
        ));
        assert!(!changed(&|nb| nb.metadata.labels = None));
        assert!(!changed(&|nb| nb.metadata.owner_references = None));
        // The network was deleted and made again under the same name: a new uid to own it.
        assert!(!changed(
            &|nb| nb.metadata.owner_references.as_mut().unwrap()[0].uid = "u-2".into()
        ));
    }

    #[test]
    fn the_pool_exhausted_message_names_the_nodes_and_the_fixes() {
        let layout = PoolLayout::new("10.99.0.0/26".parse().unwrap(), Some(29)).unwrap();
        let short = BTreeMap::from([("a".to_string(), 1), ("b".to_string(), 2)]);
        assert_eq!(
            pool_exhausted_message(&layout, &["10.99.0.0/27".parse().unwrap()], &short),
            "pool 10.99.0.0/26 excluding 10.99.0.0/27 has no free /29 block: node a wants 1 more, node b wants 2 more; \
             grow ipam.subnet, shrink ipam.exclude, lengthen ipam.blockPrefix or release claims"
        );
    }

    #[test]
    fn the_device_class_body_is_the_whole_object() {
        let net = net();
        let (_, params) = network_config("rails", &net.spec).unwrap();
        assert_eq!(
            serde_json::to_value(device_class(&net, &params)).unwrap(),
            json!({"apiVersion": "resource.k8s.io/v1", "kind": "DeviceClass",
            "metadata": owned_metadata("rails"),
            "spec": {
                "selectors": [{"cel": {"expression": "device.driver == \"multinic.dev\""}},
                              {"cel": {"expression": "device.attributes[\"multinic.dev\"].rdma"}}],
                "config": [{"opaque": {"driver": "multinic.dev", "parameters": params}}],
            }})
        );
    }

    #[test]
    fn the_node_blocks_body_is_the_whole_object() {
        let blocks = vec![RailBlock {
            rail_index: 0,
            cidr: "10.10.1.0/26".parse().unwrap(),
            node_address: Some("192.168.0.7".parse().unwrap()),
        }];
        assert_eq!(
            serde_json::to_value(blocks_object(&net(), "n1", 1, blocks)).unwrap(),
            json!({"apiVersion": API_VERSION, "kind": "NicNodeBlocks",
                "metadata": owned_metadata("rails.n1"),
                "spec": {"network": "rails", "nodeName": "n1", "hostIndex": 1,
                         "blocks": [{"railIndex": 0, "cidr": "10.10.1.0/26", "nodeAddress": "192.168.0.7"}]}})
        );
    }
}
