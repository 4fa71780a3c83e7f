//! The load tool of rows 11-13: simulated nodes for the real API server and scheduler. Pure
//! builders of a fake node's Node and ResourceSlices (the slices the kubelet plugin would publish
//! for its NICs, built by the plugin's own `slices` code), and the API I/O at the edge: creates
//! and deletes, `concurrency` requests at a time, each retried with backoff while the API server
//! is overloaded.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::{Node, NodeSpec, NodeStatus, Taint};
use k8s_openapi::api::resource::v1::ResourceSlice;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use multinic_api::retry::{Backoff, RepeatGate};
use multinic_kubelet_plugin::inventory::Nic;
use multinic_kubelet_plugin::slices::{SliceOptions, build_device_table, build_slices};
use multinic_testkit::fixtures::roce_nic;

/// Label on every object the load tool and the scale rows create (the same as row 10's).
pub const LABEL: (&str, &str) = ("app.kubernetes.io/part-of", "multinic-bench");
/// The taint of every fake node (`NoSchedule`): the DaemonSet controller makes no pod for a node
/// whose `NoSchedule` taints the pod does not tolerate (kubernetes
/// `pkg/controller/daemon/daemon_controller.go`, `NodeShouldRunDaemonPod`), so the driver's own
/// DaemonSet stays off the fake nodes: no plugin pod that no kubelet will ever run, per node, in
/// the API server, the scheduler and the controller-manager while the rows measure them. The
/// rows' pods tolerate every taint.
pub const FAKE_NODE_TAINT: &str = "multinic.dev/bench-fake-node";
/// How many times one create or delete is tried while the API server answers 429/5xx.
const ATTEMPTS: usize = 6;

/// Why the load tool failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{what}: {source}; is the API server up and the kubeconfig's user allowed to do that?")]
    Kube { what: String, source: kube::Error },
}

/// The name of fake node `index`.
pub fn node_name(index: usize) -> String {
    format!("bench-node-{index:05}")
}

/// The NICs of fake node `index`: `rails` RoCE NICs (400 Gb/s, RDMA, one PCIe root), as the
/// inventory reports a GPU node's; the MACs differ from node to node.
pub fn node_nics(index: usize, rails: usize) -> Vec<Nic> {
    (0..rails)
        .map(|k| {
            let mut nic: Nic = roce_nic(k);
            nic.mac = Some(format!(
                "02:{:02x}:{:02x}:{:02x}:00:{:02x}",
                (index >> 16) & 0xff,
                (index >> 8) & 0xff,
                index & 0xff,
                k & 0xff
            ));
            nic
        })
        .collect()
}

fn labels(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL.0.to_string(), LABEL.1.to_string()),
        ("kubernetes.io/hostname".to_string(), name.to_string()),
    ])
}

/// A fake node: labelled, with room for 110 pods, no conditions (no kubelet posts them: the
/// node lifecycle controller taints it not-ready, then unreachable; the rows' pods tolerate
/// that), tainted [`FAKE_NODE_TAINT`]. The status goes in with the create: Nodes keep it (kubernetes
/// `pkg/registry/core/node/strategy.go`, `PrepareForCreate` drops only disabled fields), as the
/// kubelet's registration does.
pub fn node(index: usize) -> Node {
    let name = node_name(index);
    let resources = BTreeMap::from([
        ("cpu".to_string(), Quantity("64".into())),
        ("memory".to_string(), Quantity("512Gi".into())),
        ("pods".to_string(), Quantity("110".into())),
    ]);
    Node {
        metadata: ObjectMeta {
            labels: Some(labels(&name)),
            name: Some(name),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            taints: Some(vec![Taint {
                key: FAKE_NODE_TAINT.to_string(),
                effect: "NoSchedule".to_string(),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: Some(NodeStatus {
            capacity: Some(resources.clone()),
            allocatable: Some(resources),
            ..Default::default()
        }),
    }
}

/// The ResourceSlices the kubelet plugin publishes for fake node `index` with `rails` NICs (pool =
/// node, generation 1), labelled.
pub fn node_slices(index: usize, rails: usize) -> Vec<ResourceSlice> {
    let name = node_name(index);
    let opts = SliceOptions::new(name.clone());
    let devices: Vec<_> = build_device_table(&node_nics(index, rails), &opts)
        .into_iter()
        .map(|p| p.device)
        .collect();
    let mut slices = build_slices(&devices, &opts, 1);
    for s in &mut slices {
        s.metadata.labels = Some(labels(&name));
    }
    slices
}

/// The selector of every object the load tool made.
pub fn selector() -> ListParams {
    ListParams::default().labels(&format!("{}={}", LABEL.0, LABEL.1))
}

/// Whether an error is the API server shedding load (429, 5xx) or a connection failure: worth
/// another try.
fn transient(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(status) => status.code == 429 || status.code >= 500,
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

/// `op` until it succeeds, a non-transient error, or [`ATTEMPTS`] tries; repeats of a transient
/// error are logged at a bounded rate (`gate`, shared by the whole batch).
async fn retried<T, F, Fut>(what: &str, gate: &tokio::sync::Mutex<RepeatGate>, mut op: F) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
    let mut attempt = 1;
    loop {
        match op().await {
            Err(e) if transient(&e) && attempt < ATTEMPTS => {
                if let Some(not_logged) = gate.lock().await.failure(std::time::Instant::now()) {
                    tracing::warn!(error = %e, what, not_logged, "API server busy; retrying");
                }
                attempt += 1;
                tokio::time::sleep(backoff.next_delay()).await;
            }
            other => return other,
        }
    }
}

/// Creates fake nodes `indices` and their slices, `concurrency` nodes at a time (a node, then its
/// slices). A node or slice that exists already is kept.
pub async fn create_nodes(
    client: &kube::Client,
    indices: std::ops::Range<usize>,
    rails: usize,
    concurrency: usize,
) -> Result<(), LoadError> {
    let nodes = Api::<Node>::all(client.clone());
    let slices = Api::<ResourceSlice>::all(client.clone());
    let gate = tokio::sync::Mutex::new(RepeatGate::default());
    let pp = PostParams::default();
    let exists = |r: Result<(), kube::Error>| match r {
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        other => other,
    };
    futures::stream::iter(indices)
        .map(|i| {
            let (nodes, slices, gate, pp) = (&nodes, &slices, &gate, &pp);
            async move {
                let node = node(i);
                let name = node_name(i);
                exists(retried(&name, gate, || async { nodes.create(pp, &node).await.map(drop) }).await).map_err(
                    |source| LoadError::Kube {
                        what: format!("creating fake node {name}"),
                        source,
                    },
                )?;
                for slice in node_slices(i, rails) {
                    let slice_name = slice.metadata.name.clone().unwrap_or_default();
                    exists(
                        retried(&slice_name, gate, || async {
                            slices.create(pp, &slice).await.map(drop)
                        })
                        .await,
                    )
                    .map_err(|source| LoadError::Kube {
                        what: format!("creating ResourceSlice {slice_name} of fake node {name}"),
                        source,
                    })?;
                }
                Ok::<(), LoadError>(())
            }
        })
        .buffer_unordered(concurrency.max(1))
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// Creates `objects` with `api`, `concurrency` at a time, each retried while the API server
/// sheds load.
pub async fn create_all<K>(api: &Api<K>, objects: Vec<K>, concurrency: usize) -> Result<(), LoadError>
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
    K::DynamicType: Default,
{
    let gate = tokio::sync::Mutex::new(RepeatGate::default());
    let pp = PostParams::default();
    futures::stream::iter(objects)
        .map(|object| {
            let (gate, pp) = (&gate, &pp);
            async move {
                let name = object.meta().name.clone().unwrap_or_default();
                retried(&name, gate, || api.create(pp, &object))
                    .await
                    .map(drop)
                    .map_err(|source| LoadError::Kube {
                        what: format!("creating {} {name}", K::kind(&K::DynamicType::default())),
                        source,
                    })
            }
        })
        .buffer_unordered(concurrency.max(1))
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// Deletes every fake node and its slices (by [`LABEL`]); returns how many nodes there were.
pub async fn delete_nodes(client: &kube::Client) -> Result<usize, LoadError> {
    let gate = tokio::sync::Mutex::new(RepeatGate::default());
    let (dp, lp) = (DeleteParams::default(), selector());
    let slices = Api::<ResourceSlice>::all(client.clone());
    retried("fake ResourceSlices", &gate, || slices.delete_collection(&dp, &lp))
        .await
        .map_err(|source| LoadError::Kube {
            what: "deleting the fake nodes' ResourceSlices".into(),
            source,
        })?;
    let nodes = Api::<Node>::all(client.clone());
    let deleted = retried("fake nodes", &gate, || nodes.delete_collection(&dp, &lp))
        .await
        .map_err(|source| LoadError::Kube {
            what: "deleting the fake nodes".into(),
            source,
        })?;
    Ok(deleted.left().map_or(0, |list| list.items.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use multinic_kubelet_plugin::slices::validate_device;

    #[test]
    fn a_fake_node_has_room_for_pods_and_the_bench_label() {
        let n = node(42);
        assert_eq!(n.metadata.name.as_deref(), Some("bench-node-00042"));
        let labels = n.metadata.labels.unwrap_or_default();
        assert_eq!(labels.get(LABEL.0).map(String::as_str), Some(LABEL.1));
        assert_eq!(
            labels.get("kubernetes.io/hostname").map(String::as_str),
            Some("bench-node-00042")
        );
        let status = n.status.unwrap_or_default();
        let pods = status.allocatable.unwrap_or_default().get("pods").cloned();
        assert_eq!(pods, Some(Quantity("110".into())));
        assert!(status.conditions.is_none(), "no kubelet: no conditions");
        let taints = n.spec.unwrap_or_default().taints.unwrap_or_default();
        assert_eq!(taints.len(), 1, "{taints:?}");
        assert_eq!(
            (taints[0].key.as_str(), taints[0].effect.as_str()),
            (FAKE_NODE_TAINT, "NoSchedule")
        );
    }

    #[test]
    fn a_fake_node_publishes_what_the_plugin_would_for_its_nics() {
        let slices = node_slices(7, 8);
        assert_eq!(slices.len(), 1);
        let s = &slices[0];
        assert_eq!(s.metadata.name.as_deref(), Some("bench-node-00007-multinic.dev-0"));
        assert_eq!(s.spec.driver, "multinic.dev");
        assert_eq!(s.spec.node_name.as_deref(), Some("bench-node-00007"));
        assert_eq!(s.spec.pool.name, "bench-node-00007");
        assert_eq!((s.spec.pool.generation, s.spec.pool.resource_slice_count), (1, 1));
        let devices = s.spec.devices.clone().unwrap_or_default();
        assert_eq!(devices.len(), 8);
        for d in &devices {
            assert_eq!(validate_device(d), Vec::<String>::new(), "{}", d.name);
            let attrs = d.attributes.clone().unwrap_or_default();
            // What the scale network selects and row 12's constraint matches.
            assert_eq!(attrs.get("multinic.dev/rdma").and_then(|a| a.bool), Some(true));
            assert_eq!(attrs.get("multinic.dev/speedMbps").and_then(|a| a.int), Some(400_000));
        }
        let rails: Vec<i64> = devices
            .iter()
            .filter_map(|d| d.attributes.as_ref()?.get("multinic.dev/railIndex")?.int)
            .collect();
        assert_eq!(rails, (0..8).collect::<Vec<i64>>());
        // Same NIC layout on every node, but no two nodes share a MAC.
        let mac = |i: usize| node_nics(i, 8)[3].mac.clone();
        assert_ne!(mac(1), mac(256));
        assert_ne!(mac(1), mac(65_537));
        assert_eq!(node_nics(3, 8)[0].if_name, node_nics(4, 8)[0].if_name);
    }

    #[test]
    fn more_nics_than_a_slice_holds_split_into_one_pool() {
        let slices = node_slices(0, 130);
        assert_eq!(slices.len(), 2);
        assert!(slices.iter().all(|s| s.spec.pool.resource_slice_count == 2));
    }

    #[test]
    fn only_overload_is_retried() {
        let api = |code: u16| {
            kube::Error::Api(Box::new(kube::core::Status {
                code,
                ..Default::default()
            }))
        };
        assert!(transient(&api(429)) && transient(&api(503)));
        assert!(!transient(&api(409)) && !transient(&api(403)));
    }
}
