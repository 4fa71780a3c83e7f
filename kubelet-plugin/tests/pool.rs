//! Prepare with a `pool` network (issue 16 item 5): the node asks for a block before its first
//! pod, allocates inside its granted blocks with no API call on the pod's path, asks for another
//! block below the low watermark, gives empty blocks back and never allocates from a block it gave
//! back. The test plays the controller by writing `spec.grantedBlocks` itself (the controller's
//! side runs against the real API server in e2e/cluster/pool.sh).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, Patch, PatchParams};
use multinic_api::crd::{NicNodeBlocks, node_blocks_name};
use multinic_kubelet_plugin::driver::{ClaimRef, Driver, DriverOptions, KubeClaimApi, PrepareError};
use multinic_kubelet_plugin::plan_builder::BuildError;
use multinic_kubelet_plugin::publish::DeviceTable;
use multinic_kubelet_plugin::slices::{SliceOptions, build_device_table};
use multinic_testkit::{FakeApiServer, fixtures};
use serde_json::{Value, json};

const NODE: &str = "node-p";
const NET: &str = "flat";

fn params() -> Value {
    json!({"apiVersion": "multinic.dev/v1alpha1", "kind": "NetworkConfig", "network": NET,
           "attachment": {"mode": "macvlan"},
           "ipam": {"type": "pool", "subnet": "10.20.0.0/26", "blockPrefix": 29, "exclude": ["10.20.0.0/27"]}})
}

struct Node {
    api: FakeApiServer,
    driver: Arc<Driver<KubeClaimApi>>,
    device: String,
    _state: tempfile::TempDir,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Node {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Node {
    async fn start() -> Self {
        let api = FakeApiServer::start().await;
        api.insert(
            json!({"apiVersion": "multinic.dev/v1alpha1", "kind": "MultiNicNetwork", "metadata": {"name": NET},
            "spec": {"attachment": {"mode": "macvlan"}, "ipam": params()["ipam"].clone()}}),
        )
        .unwrap();
        api.insert(json!({"apiVersion": "multinic.dev/v1alpha1", "kind": "NicNodeBlocks",
            "metadata": {"name": node_blocks_name(NET, NODE)},
            "spec": {"network": NET, "nodeName": NODE, "blocks": []}}))
            .unwrap();
        let table = DeviceTable::default();
        let published = build_device_table(&[fixtures::roce_nic(0)], &SliceOptions::new(NODE));
        let device = published[0].device.name.clone();
        table.set(&published);
        let state = tempfile::tempdir().unwrap();
        let (stores, mut changes) = multinic_kubelet_plugin::cluster::watch(api.client());
        let opts = DriverOptions::new(NODE, state.path(), None);
        let driver = Arc::new(
            Driver::new(KubeClaimApi::new(api.client()), table, opts)
                .unwrap()
                .with_blocks(stores.blocks.clone()),
        );
        let watching = tokio::spawn(async move { while changes.next().await.is_some() {} });
        let pool = tokio::spawn(multinic_kubelet_plugin::pool::run(
            driver.clone(),
            Api::all(api.client()),
            stores,
            NODE.into(),
            Duration::from_millis(20),
        ));
        Self {
            api,
            driver,
            device,
            _state: state,
            tasks: vec![watching, pool],
        }
    }

    fn claim(&self, name: &str) -> ClaimRef {
        let created = self
            .api
            .insert(json!({
                "apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
                "metadata": {"name": name, "namespace": "ml"},
                "spec": {"devices": {"requests": [{"name": "nics", "exactly": {"deviceClassName": NET}}]}},
                "status": {
                    "allocation": {"devices": {
                        "results": [{"request": "nics", "driver": "multinic.dev", "pool": NODE, "device": self.device}],
                        "config": [{"source": "FromClass", "opaque": {"driver": "multinic.dev", "parameters": params()}}],
                    }},
                    "reservedFor": [{"resource": "pods", "name": format!("{name}-pod"), "uid": format!("pod-{name}")}],
                },
            }))
            .unwrap();
        ClaimRef {
            namespace: "ml".into(),
            name: name.into(),
            uid: created["metadata"]["uid"].as_str().unwrap().to_string(),
        }
    }

    /// The controller's write: the node's grants.
    async fn grant(&self, blocks: &[&str]) {
        let api: Api<NicNodeBlocks> = Api::all(self.api.client());
        let patch = json!({"spec": {"grantedBlocks": blocks}});
        api.patch(
            &node_blocks_name(NET, NODE),
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .await
        .unwrap();
    }

    /// The node's request as its status says it.
    fn status(&self) -> (u64, Vec<String>) {
        let nb = self
            .api
            .get(
                "multinic.dev/v1alpha1",
                "NicNodeBlocks",
                None,
                &node_blocks_name(NET, NODE),
            )
            .unwrap();
        let want = nb["status"]["wantBlocks"].as_u64().unwrap_or(0);
        let released = nb["status"]["releasedBlocks"]
            .as_array()
            .map(|a| a.iter().map(|b| b.as_str().unwrap_or("").to_string()).collect())
            .unwrap_or_default();
        (want, released)
    }

    async fn wait_status(&self, want: u64, released: &[&str]) {
        let wanted = (want, released.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while self.status() != wanted {
            assert!(
                tokio::time::Instant::now() < deadline,
                "status {:?}, waited for {wanted:?}",
                self.status()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Prepares `claim`, retrying while the watch has not brought the latest grants; the address.
    async fn prepare(&self, claim: &ClaimRef) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            match self.driver.prepare(claim).await {
                Ok(_) => break,
                Err(e) => assert!(tokio::time::Instant::now() < deadline, "{e}"),
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let status = self
            .api
            .get("resource.k8s.io/v1", "ResourceClaim", Some("ml"), &claim.name)
            .unwrap()["status"]
            .clone();
        status["devices"][0]["networkData"]["ips"][0]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Reads of the node's NicNodeBlocks by name (the fallback of prepare when the watch has not
    /// brought the object).
    fn blocks_reads(&self) -> usize {
        let name = format!("/nicnodeblocks/{}", node_blocks_name(NET, NODE));
        self.api
            .requests()
            .iter()
            .filter(|r| r.method == "GET" && r.path.ends_with(&name))
            .count()
    }
}

#[tokio::test]
async fn a_pool_node_asks_ahead_allocates_locally_and_gives_empty_blocks_back() {
    let node = Node::start().await;
    // Before any pod: the node asks for one block.
    node.wait_status(1, &[]).await;
    // No block yet: prepare fails naming the network and the fix.
    let first = node.claim("c0");
    match node.driver.prepare(&first).await {
        Err(PrepareError::Build {
            source: BuildError::PoolExhausted { network, blocks: 0, .. },
            ..
        }) => assert_eq!(network, NET),
        other => panic!("expected PoolExhausted, got {other:?}"),
    }

    node.grant(&["10.20.0.32/29"]).await;
    let before = node.blocks_reads();
    let mut claims = vec![first];
    claims.extend((1..5).map(|i| node.claim(&format!("c{i}"))));
    let mut got = Vec::new();
    for c in &claims {
        got.push(node.prepare(c).await);
    }
    // The pool's prefix, from the first granted block; the excluded first half never.
    assert_eq!(
        got,
        [
            "10.20.0.32/26",
            "10.20.0.33/26",
            "10.20.0.34/26",
            "10.20.0.35/26",
            "10.20.0.36/26"
        ]
    );
    println!("5 claims prepared: {got:?}");
    // 3 free < the watermark 4: another block asked for.
    node.wait_status(2, &[]).await;
    node.grant(&["10.20.0.32/29", "10.20.0.40/29"]).await;
    for i in 5..9 {
        let c = node.claim(&format!("c{i}"));
        got.push(node.prepare(&c).await);
        claims.push(c);
    }
    assert_eq!(
        &got[5..],
        ["10.20.0.37/26", "10.20.0.38/26", "10.20.0.39/26", "10.20.0.40/26"]
    );
    // No NicNodeBlocks read on the pod's path: the watch-backed store had them.
    assert_eq!(
        node.blocks_reads(),
        before,
        "prepare read NicNodeBlocks from the API server"
    );

    // Every pod gone, the newest first: the second block empties first and goes back once the
    // first has the watermark free; the first is kept.
    for c in claims.iter().rev() {
        node.driver.unprepare(c).await.unwrap();
    }
    node.wait_status(1, &["10.20.0.40/29"]).await;
    // A block given back is never allocated from, although still granted: the first block's 8
    // addresses, then none.
    let mut again = Vec::new();
    for i in 10..18 {
        let c = node.claim(&format!("d{i}"));
        again.push(node.prepare(&c).await);
    }
    assert!(again.iter().all(|a| a.starts_with("10.20.0.3")), "{again:?}");
    let ninth = node.claim("d99");
    assert!(
        matches!(
            node.driver.prepare(&ninth).await,
            Err(PrepareError::Build {
                source: BuildError::PoolExhausted { blocks: 1, .. },
                ..
            })
        ),
        "the released block 10.20.0.40/29 must not be used"
    );
    // The controller takes it back: the node forgets it, and asks again (0 free).
    node.grant(&["10.20.0.32/29"]).await;
    node.wait_status(2, &[]).await;
    println!("after taking 10.20.0.40/29 back: status {:?}", node.status());
}
