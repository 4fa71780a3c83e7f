//! Crash matrix of prepare and unprepare (issue 8, acceptance 1; design.md §8).
//!
//! For each fault point and each thing that can happen while the plugin is down, the driver
//! "crashes" there (the fault returns without undoing anything and the driver, with all its
//! in-memory state, is dropped), a new driver starts over the same state dir and reconciles, the
//! kubelet retries as it would (prepare again, or unprepare once the pod is gone), and then the
//! invariants hold: every lease belongs to a live plan, every plan to a live claim, no duplicate
//! IP, the claim status and the CDI specs match the plans, the pod index has no orphans, and the
//! state files are private.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use multinic_api::crd::node_blocks_name;
use multinic_api::plan::{Plan, PlanStore};
use multinic_api::rails::RailsLayout;
use multinic_kubelet_plugin::driver::{ClaimRef, Driver, DriverOptions, FaultPoint, KubeClaimApi, PrepareError};
use multinic_kubelet_plugin::inventory::Nic;
use multinic_kubelet_plugin::publish::DeviceTable;
use multinic_kubelet_plugin::slices::{SliceOptions, build_device_table};
use multinic_testkit::{FakeApiServer, fixtures};
use serde_json::{Value, json};

const NODE: &str = "node-f";
const DRIVER: &str = "multinic.dev";

fn nic(rail: usize) -> Nic {
    fixtures::roce_nic(rail)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WhileDown {
    /// Nothing changes; the kubelet retries the same call.
    Nothing,
    /// The claim is deleted while the plugin is down; the kubelet unprepares it.
    ClaimDeleted,
}

struct Node {
    api: FakeApiServer,
    state: tempfile::TempDir,
    table: DeviceTable,
    devices: Vec<String>,
}

impl Node {
    async fn new() -> Self {
        let api = FakeApiServer::start().await;
        let layout = RailsLayout::new("10.30.0.0/16".parse().unwrap(), 8, 2).unwrap();
        let blocks: Vec<Value> = (0..4)
            .map(|k| json!({"railIndex": k, "cidr": layout.block(5, k).unwrap().to_string()}))
            .collect();
        api.insert(json!({
            "apiVersion": "multinic.dev/v1alpha1", "kind": "NicNodeBlocks",
            "metadata": {"name": node_blocks_name("rails", NODE)},
            "spec": {"network": "rails", "nodeName": NODE, "hostIndex": 5, "blocks": blocks},
        }))
        .unwrap();
        let table = DeviceTable::default();
        let published = build_device_table(&(0..4).map(nic).collect::<Vec<_>>(), &SliceOptions::new(NODE));
        let devices = published.iter().map(|p| p.device.name.clone()).collect();
        table.set(&published);
        Self {
            api,
            state: tempfile::tempdir().unwrap(),
            table,
            devices,
        }
    }

    /// The plugin started again after a crash (with `ClaimDeleted`, the claim "target" was
    /// deleted while it was down), and how many plans its start released.
    async fn restart(&self, while_down: WhileDown) -> (Driver<KubeClaimApi>, usize) {
        if while_down == WhileDown::ClaimDeleted {
            self.api
                .delete("resource.k8s.io/v1", "ResourceClaim", Some("ml"), "target")
                .unwrap();
        }
        let restarted = self.driver(None);
        let released = restarted.reconcile().await;
        (restarted, released)
    }

    fn driver(&self, fault: Option<FaultPoint>) -> Driver<KubeClaimApi> {
        let opts = DriverOptions {
            fault,
            ..DriverOptions::new(NODE, self.state.path(), Some(self.state.path().join("cdi")))
        };
        Driver::new(KubeClaimApi::new(self.api.client()), self.table.clone(), opts).unwrap()
    }

    fn claim(&self, name: &str, devices: &[usize]) -> ClaimRef {
        let results: Vec<Value> = devices
            .iter()
            .map(|d| json!({"request": "nics", "driver": DRIVER, "pool": NODE, "device": self.devices[*d]}))
            .collect();
        let params = json!({
            "network": "rails", "attachment": {"mode": "macvlan"},
            "ipam": {"type": "rails", "subnet": "10.30.0.0/16", "hostBlock": 8, "interfaceBlock": 2},
            "routing": {"policyRouting": true},
        });
        let created = self
            .api
            .insert(json!({
                "apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
                "metadata": {"name": name, "namespace": "ml"},
                "spec": {"devices": {"requests": [{"name": "nics", "exactly": {"deviceClassName": "rails", "count": devices.len()}}]}},
                "status": {
                    "allocation": {"devices": {"results": results, "config": [{"source": "FromClass", "opaque": {"driver": DRIVER, "parameters": params}}]}},
                    "reservedFor": [{"resource": "pods", "name": format!("{name}-pod"), "uid": format!("pod-{name}")}],
                },
            }))
            .unwrap();
        ClaimRef {
            namespace: "ml".into(),
            name: name.into(),
            uid: created["metadata"]["uid"].as_str().unwrap().into(),
        }
    }

    fn store(&self) -> PlanStore {
        PlanStore::new(self.state.path())
    }

    /// Checks every invariant; returns the prepared claim UIDs.
    async fn check(&self, driver: &Driver<KubeClaimApi>, case: &str) -> BTreeSet<String> {
        let store = self.store();
        let (plans, errors) = store.load_all().unwrap();
        assert!(errors.is_empty(), "{case}: unreadable plans {errors:?}");
        let by_uid: BTreeMap<String, Plan> = plans.into_iter().map(|p| (p.claim_uid.clone(), p)).collect();
        let ips_of =
            |p: &Plan| -> Vec<IpAddr> { p.devices.iter().flat_map(|d| d.ips.iter().map(|n| n.addr())).collect() };

        // No duplicate IP; every lease belongs to a live plan and every plan's addresses are leased.
        let mut all = HashSet::new();
        for p in by_uid.values() {
            for ip in ips_of(p) {
                assert!(all.insert(ip), "{case}: {ip} is in two plans");
            }
        }
        assert_eq!(
            driver.leased().await,
            all,
            "{case}: leases differ from the plans on disk"
        );
        let uids: BTreeSet<String> = by_uid.keys().cloned().collect();
        assert_eq!(
            driver.prepared_claims().await.into_iter().collect::<BTreeSet<_>>(),
            uids,
            "{case}"
        );

        // Every plan belongs to a live claim (same UID); every claim's status shows exactly its plan.
        let claims = self.api.list("resource.k8s.io/v1", "ResourceClaim", Some("ml"));
        let live: BTreeMap<String, &Value> = claims
            .iter()
            .map(|c| (c["metadata"]["uid"].as_str().unwrap().to_string(), c))
            .collect();
        for (uid, p) in &by_uid {
            let claim = live
                .get(uid)
                .unwrap_or_else(|| panic!("{case}: plan {uid} ({}) has no live claim", p.name));
            assert_eq!(claim["metadata"]["name"], p.name.as_str(), "{case}");
        }
        for (uid, claim) in &live {
            let shown: BTreeSet<String> = claim["status"]["devices"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|d| d["driver"] == DRIVER)
                .flat_map(|d| d["networkData"]["ips"].as_array().cloned().unwrap_or_default())
                .map(|ip| ip.as_str().unwrap().to_string())
                .collect();
            let planned: BTreeSet<String> = by_uid
                .get(uid)
                .map(|p| {
                    p.devices
                        .iter()
                        .flat_map(|d| d.ips.iter().map(|n| n.to_string()))
                        .collect()
                })
                .unwrap_or_default();
            assert_eq!(
                shown, planned,
                "{case}: status of {} differs from its plan",
                claim["metadata"]["name"]
            );
        }

        // CDI specs exactly for the plans; pod index markers only for existing plans.
        let cdi: BTreeSet<String> = read_names(&self.state.path().join("cdi"))
            .into_iter()
            .filter_map(|n| {
                Some(
                    n.strip_prefix(&format!("{DRIVER}-"))?
                        .strip_suffix(".json")?
                        .to_string(),
                )
            })
            .collect();
        assert_eq!(cdi, uids, "{case}: CDI specs differ from the plans");
        for pod in read_names(&store.dir().join("pods")) {
            for marker in read_names(&store.dir().join("pods").join(&pod)) {
                assert!(
                    uids.contains(&marker),
                    "{case}: pod index {pod}/{marker} without a plan"
                );
            }
        }

        // State files are private: plans 0600 in 0750 directories.
        for uid in &uids {
            let mode = std::fs::metadata(store.path_of(uid).unwrap())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{case}: plan {uid} mode {mode:o}");
        }
        let mode = std::fs::metadata(store.dir()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o750, "{case}: plans dir mode {mode:o}");
        uids
    }
}

fn read_names(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| d.flatten().filter_map(|e| e.file_name().into_string().ok()).collect())
        .unwrap_or_default()
}

fn is_fault(e: &PrepareError, point: FaultPoint) -> bool {
    matches!(e, PrepareError::Fault { point: p, .. } if *p == point)
}

/// Crash in prepare, restart, retry; then the rest of the claim's life.
async fn prepare_case(point: FaultPoint, while_down: WhileDown) {
    let case = format!("prepare {point:?} / {while_down:?}");
    let node = Node::new().await;
    let bystander = node.claim("bystander", &[0]);
    let target = node.claim("target", &[1, 2]);
    {
        let d = node.driver(None);
        d.prepare(&bystander).await.unwrap();
    }
    let crashing = node.driver(Some(point));
    let err = crashing.prepare(&target).await.unwrap_err();
    assert!(is_fault(&err, point), "{case}: {err}");
    let before = node.store().load(&target.uid).unwrap();
    assert_eq!(
        before.is_some(),
        point != FaultPoint::AfterLease,
        "{case}: the plan is the lease"
    );
    drop(crashing);

    let (restarted, released) = node.restart(while_down).await;
    assert_eq!(
        released,
        usize::from(while_down == WhileDown::ClaimDeleted && before.is_some()),
        "{case}"
    );
    match while_down {
        WhileDown::Nothing => {
            restarted.prepare(&target).await.unwrap();
            if let Some(before) = before {
                assert_eq!(
                    node.store().load(&target.uid).unwrap(),
                    Some(before),
                    "{case}: retry changed the plan"
                );
            }
            assert_eq!(node.check(&restarted, &case).await.len(), 2);
            restarted.unprepare(&target).await.unwrap();
        }
        WhileDown::ClaimDeleted => restarted.unprepare(&target).await.unwrap(),
    }
    assert_eq!(
        node.check(&restarted, &case).await,
        BTreeSet::from([bystander.uid.clone()])
    );
    // The node keeps working: a new claim gets addresses no one else holds.
    let next = node.claim("next", &[1, 2, 3]);
    restarted.prepare(&next).await.unwrap();
    assert_eq!(node.check(&restarted, &case).await.len(), 2);
}

/// Crash in unprepare, restart, retry.
async fn unprepare_case(point: FaultPoint, while_down: WhileDown) {
    let case = format!("unprepare {point:?} / {while_down:?}");
    let node = Node::new().await;
    let bystander = node.claim("bystander", &[0]);
    let target = node.claim("target", &[1, 2]);
    {
        let d = node.driver(None);
        d.prepare(&bystander).await.unwrap();
        d.prepare(&target).await.unwrap();
    }
    let crashing = node.driver(Some(point));
    let err = crashing.unprepare(&target).await.unwrap_err();
    assert!(is_fault(&err, point), "{case}: {err}");
    assert!(
        node.store().load(&target.uid).unwrap().is_some(),
        "{case}: the plan outlives the crash"
    );
    drop(crashing);

    let (restarted, released) = node.restart(while_down).await;
    assert_eq!(released, usize::from(while_down == WhileDown::ClaimDeleted), "{case}");
    restarted.unprepare(&target).await.unwrap();
    assert_eq!(
        node.check(&restarted, &case).await,
        BTreeSet::from([bystander.uid.clone()])
    );
    let next = node.claim("next", &[1, 2]);
    restarted.prepare(&next).await.unwrap();
    assert_eq!(node.check(&restarted, &case).await.len(), 2);
}

#[tokio::test]
async fn every_prepare_and_unprepare_fault_point_recovers() {
    let mut survived = 0;
    let mut total = 0;
    for while_down in [WhileDown::Nothing, WhileDown::ClaimDeleted] {
        for point in [
            FaultPoint::AfterLease,
            FaultPoint::AfterPlanWrite,
            FaultPoint::AfterStatusApply,
        ] {
            total += 1;
            prepare_case(point, while_down).await;
            survived += 1;
        }
        for point in [FaultPoint::AfterStatusClear, FaultPoint::AfterCdiRemove] {
            total += 1;
            unprepare_case(point, while_down).await;
            survived += 1;
        }
    }
    println!("driver fault matrix: survived {survived}/{total} crash cases (5 fault points x 2 while-down cases)");
    assert_eq!(survived, 10);
}

/// Issue 17: a crash while concurrent prepares share plan-store commits. Sixteen claims prepare at
/// once, the driver crashes at each prepare fault point in all of them, a new driver starts over
/// the state dir, and the kubelet retries every claim at once: each plan is whole or absent as
/// the point says, a retry returns the plan that was committed, and the invariants hold (no
/// address twice, leases = plans on disk, status = plans, no orphan index entry). Then every
/// claim is unprepared at once and nothing is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_during_a_batch_of_concurrent_prepares_recovers() {
    for point in [
        FaultPoint::AfterLease,
        FaultPoint::AfterPlanWrite,
        FaultPoint::AfterStatusApply,
    ] {
        let case = format!("batch {point:?}");
        let node = Node::new().await;
        let claims: Vec<ClaimRef> = (0..16)
            .map(|i| node.claim(&format!("b{i}"), &(0..=i % 4).collect::<Vec<_>>()))
            .collect();
        let crashing = node.driver(Some(point));
        let results = futures::future::join_all(claims.iter().map(|c| crashing.prepare(c))).await;
        for r in &results {
            assert!(matches!(r, Err(e) if is_fault(e, point)), "{case}: {r:?}");
        }
        drop(crashing);
        let store = node.store();
        let committed: Vec<Option<Plan>> = claims.iter().map(|c| store.load(&c.uid).unwrap()).collect();
        assert!(
            committed
                .iter()
                .all(|p| p.is_some() == (point != FaultPoint::AfterLease)),
            "{case}: the plan is the lease"
        );

        let restarted = node.driver(None);
        assert_eq!(restarted.reconcile().await, 0, "{case}");
        for r in futures::future::join_all(claims.iter().map(|c| restarted.prepare(c))).await {
            r.unwrap_or_else(|e| panic!("{case}: retry: {e}"));
        }
        for (c, before) in claims.iter().zip(&committed) {
            if let Some(before) = before {
                assert_eq!(
                    store.load(&c.uid).unwrap().as_ref(),
                    Some(before),
                    "{case}: retry changed the plan"
                );
            }
        }
        assert_eq!(node.check(&restarted, &case).await.len(), claims.len());
        for r in futures::future::join_all(claims.iter().map(|c| restarted.unprepare(c))).await {
            r.unwrap_or_else(|e| panic!("{case}: unprepare: {e}"));
        }
        assert!(node.check(&restarted, &case).await.is_empty(), "{case}");
    }
}

/// A small deterministic generator, so a failing order can be replayed from the printed seed.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Issue 8, acceptance 2 (node-plugin side): 200 pods on one node attach and detach in random
/// order, every prepare and unprepare running concurrently, some retried as the kubelet does;
/// a fifth of the pods stay. Then the invariants of the crash matrix hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_pods_attach_and_detach_in_random_order() {
    let seed = std::env::var("MULTINIC_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    println!("seed {seed} (MULTINIC_TEST_SEED replays it)");
    let node = std::sync::Arc::new(Node::new().await);
    let driver = std::sync::Arc::new(node.driver(None));
    let claims: Vec<ClaimRef> = (0..200).map(|i| node.claim(&format!("pod{i}"), &[i % 4])).collect();
    let mut rng = XorShift(seed);
    let mut order: Vec<usize> = (0..claims.len()).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, (rng.next() % (i as u64 + 1)) as usize);
    }
    let mut tasks = Vec::new();
    for i in order {
        let (driver, claim) = (driver.clone(), claims[i].clone());
        let (pause, retry) = (rng.next() % 8, rng.next().is_multiple_of(4));
        tasks.push(tokio::spawn(async move {
            driver
                .prepare(&claim)
                .await
                .unwrap_or_else(|e| panic!("prepare {}: {e}", claim.name));
            if retry {
                driver.prepare(&claim).await.unwrap();
            }
            for _ in 0..pause {
                tokio::task::yield_now().await;
            }
            if i % 5 != 0 {
                driver
                    .unprepare(&claim)
                    .await
                    .unwrap_or_else(|e| panic!("unprepare {}: {e}", claim.name));
                if retry {
                    driver.unprepare(&claim).await.unwrap();
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let staying: BTreeSet<String> = claims.iter().step_by(5).map(|c| c.uid.clone()).collect();
    assert_eq!(node.check(&driver, &format!("seed {seed}")).await, staying);
    // After a restart the same holds, and the rest detach.
    drop(driver);
    let restarted = node.driver(None);
    assert_eq!(restarted.reconcile().await, 0);
    assert_eq!(
        node.check(&restarted, &format!("seed {seed}, restarted")).await,
        staying
    );
    for c in claims.iter().step_by(5) {
        restarted.unprepare(c).await.unwrap();
    }
    assert!(
        node.check(&restarted, &format!("seed {seed}, all gone"))
            .await
            .is_empty()
    );
}
