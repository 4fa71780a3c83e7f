//! Reconciling one MultiNicNetwork: its DeviceClass, its nodes' NicNodeBlocks, its status.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::resource::v1::{DeviceClass, ResourceSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use multinic_api::config::{ConfigError, IpamType, NetworkConfig};
use multinic_api::crd::{MultiNicNetwork, MultiNicNetworkSpec, MultiNicNetworkStatus, NicNodeBlocks, node_blocks_name};
use multinic_api::names::{API_VERSION, DRIVER_NAME};
use multinic_api::rails::RailsLayout;
use serde_json::{Value, json};

use crate::blocks::{self, Assignment};
use crate::selector::{Selector, SelectorError, matching_nodes};

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
}

/// Shared by all reconciles.
pub struct Context {
    pub client: kube::Client,
}

/// What a reconcile decided (for status and tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ready { nodes: usize },
    Invalid(String),
    Exhausted { nodes: usize, message: String },
    Deleted,
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
pub fn device_class(net: &MultiNicNetwork, params: &Value) -> Value {
    let mut selectors = vec![json!({"cel": {"expression": format!("device.driver == \"{DRIVER_NAME}\"")}})];
    if let Some(selector) = &net.spec.selector {
        selectors.push(json!({"cel": {"expression": selector}}));
    }
    json!({
        "apiVersion": "resource.k8s.io/v1",
        "kind": "DeviceClass",
        "metadata": {
            "name": net.name_any(),
            "labels": {NETWORK_LABEL: net.name_any()},
            "ownerReferences": [owner_reference(net)],
        },
        "spec": {
            "selectors": selectors,
            "config": [{"opaque": {"driver": DRIVER_NAME, "parameters": params}}],
        },
    })
}

fn owner_reference(net: &MultiNicNetwork) -> Value {
    json!({
        "apiVersion": API_VERSION,
        "kind": "MultiNicNetwork",
        "name": net.name_any(),
        "uid": net.meta().uid.clone().unwrap_or_default(),
        "controller": true,
        "blockOwnerDeletion": true,
    })
}

fn blocks_object(net: &MultiNicNetwork, node: &str, host: u32, blocks: &[multinic_api::crd::RailBlock]) -> Value {
    json!({
        "apiVersion": API_VERSION,
        "kind": "NicNodeBlocks",
        "metadata": {
            "name": node_blocks_name(&net.name_any(), node),
            "labels": {NETWORK_LABEL: net.name_any()},
            "ownerReferences": [owner_reference(net)],
        },
        "spec": {"network": net.name_any(), "nodeName": node, "hostIndex": host, "blocks": blocks},
    })
}

/// Reconciles one network.
pub async fn reconcile(net: Arc<MultiNicNetwork>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let outcome = reconcile_network(&ctx.client, &net).await?;
    tracing::info!(network = %net.name_any(), ?outcome, "reconciled");
    Ok(match outcome {
        Outcome::Deleted => Action::await_change(),
        _ => Action::requeue(Duration::from_secs(300)),
    })
}

/// Retries failed reconciles with a delay.
pub fn error_policy(net: Arc<MultiNicNetwork>, error: &ReconcileError, _: Arc<Context>) -> Action {
    tracing::warn!(network = %net.name_any(), %error, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(10))
}

/// The reconcile body, callable directly (tests, one-shot runs).
pub async fn reconcile_network(client: &kube::Client, net: &MultiNicNetwork) -> Result<Outcome, ReconcileError> {
    let name = net.name_any();
    let kube_err = |what: &str| {
        let (network, what) = (name.clone(), what.to_string());
        move |source| ReconcileError::Kube { network, what, source }
    };
    let networks: Api<MultiNicNetwork> = Api::all(client.clone());
    let classes: Api<DeviceClass> = Api::all(client.clone());
    let node_blocks: Api<NicNodeBlocks> = Api::all(client.clone());
    let ours = ListParams::default().labels(&format!("{NETWORK_LABEL}={name}"));

    if net.meta().deletion_timestamp.is_some() {
        delete_ignoring_missing(&classes, &name)
            .await
            .map_err(kube_err("deleting the DeviceClass"))?;
        for nb in node_blocks
            .list(&ours)
            .await
            .map_err(kube_err("listing NicNodeBlocks"))?
        {
            delete_ignoring_missing(&node_blocks, &nb.name_any())
                .await
                .map_err(kube_err("deleting NicNodeBlocks"))?;
        }
        let remaining: Vec<String> = net.finalizers().iter().filter(|f| *f != FINALIZER).cloned().collect();
        let patch = json!({"metadata": {"finalizers": remaining, "resourceVersion": net.resource_version()}});
        match networks
            .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(kube_err("removing the finalizer")(e)),
        }
        return Ok(Outcome::Deleted);
    }
    if !net.finalizers().iter().any(|f| f == FINALIZER) {
        let mut finalizers = net.finalizers().to_vec();
        finalizers.push(FINALIZER.to_string());
        let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": net.resource_version()}});
        networks
            .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .map_err(kube_err("adding the finalizer"))?;
    }

    let validated = network_config(&name, &net.spec)
        .map_err(|e| e.to_string())
        .and_then(|(config, params)| {
            let selector = Selector::compile(net.spec.selector.as_deref()).map_err(|e: SelectorError| e.to_string())?;
            let layout = match (config.ipam.kind, config.ipam.subnet) {
                (IpamType::Rails, Some(subnet)) => Some(config.rails_layout(subnet).map_err(|e| e.to_string())?),
                _ => None,
            };
            Ok((params, selector, layout))
        });
    let (params, selector, layout) = match validated {
        Ok(v) => v,
        Err(message) => {
            let outcome = Outcome::Invalid(message);
            write_status(&networks, net, &outcome)
                .await
                .map_err(kube_err("writing the status"))?;
            return Ok(outcome);
        }
    };

    let apply = PatchParams::apply(MANAGER).force();
    classes
        .patch(&name, &apply, &Patch::Apply(device_class(net, &params)))
        .await
        .map_err(kube_err("applying the DeviceClass"))?;

    let slices: Api<ResourceSlice> = Api::all(client.clone());
    let slices = slices
        .list(&ListParams::default().fields(&format!("spec.driver={DRIVER_NAME}")))
        .await
        .map_err(kube_err("listing ResourceSlices"))?;
    let nodes = match matching_nodes(DRIVER_NAME, &selector, &slices.items) {
        Ok(nodes) => nodes,
        Err(e) => {
            let outcome = Outcome::Invalid(e.to_string());
            write_status(&networks, net, &outcome)
                .await
                .map_err(kube_err("writing the status"))?;
            return Ok(outcome);
        }
    };

    let existing = node_blocks
        .list(&ours)
        .await
        .map_err(kube_err("listing NicNodeBlocks"))?
        .items;
    let outcome = match layout {
        Some(layout) => {
            let recorded: BTreeMap<String, u32> = existing
                .iter()
                .map(|nb| (nb.spec.node_name.clone(), nb.spec.host_index))
                .collect();
            let wanted: BTreeSet<String> = nodes.keys().cloned().collect();
            let assignment = blocks::assign(&layout, &recorded, &wanted);
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
                let body = blocks_object(net, node, host, &rail_blocks);
                node_blocks
                    .patch(&node_blocks_name(&name, node), &apply, &Patch::Apply(body))
                    .await
                    .map_err(kube_err("applying NicNodeBlocks"))?;
            }
            delete_stale(&node_blocks, &existing, &assignment)
                .await
                .map_err(kube_err("deleting NicNodeBlocks"))?;
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
                .map_err(kube_err("deleting NicNodeBlocks"))?;
            Outcome::Ready { nodes: nodes.len() }
        }
    };
    write_status(&networks, net, &outcome)
        .await
        .map_err(kube_err("writing the status"))?;
    Ok(outcome)
}

fn exhausted_message(layout: &RailsLayout, problems: &[String]) -> String {
    format!(
        "{}; the subnet {} gives {} hosts x {} rails: grow the subnet, hostBlock or interfaceBlock",
        problems.join("; "),
        layout.subnet,
        layout.hosts(),
        layout.rails()
    )
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
        Outcome::Deleted => ((false, "Deleting", String::new()), None, None),
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

async fn write_status(api: &Api<MultiNicNetwork>, net: &MultiNicNetwork, outcome: &Outcome) -> Result<(), kube::Error> {
    let previous = net.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default();
    let nodes = match outcome {
        Outcome::Ready { nodes } | Outcome::Exhausted { nodes, .. } => Some(u32::try_from(*nodes).unwrap_or(u32::MAX)),
        _ => None,
    };
    let status = MultiNicNetworkStatus {
        conditions: conditions(outcome, &previous, net.meta().generation),
        device_class_name: (!matches!(outcome, Outcome::Invalid(_))).then(|| net.name_any()),
        nodes,
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
