//! Issue 8, concurrency: 200 pods on one node attach and detach in random order, with parallel
//! prepare/unprepare (the real driver against the test API server) and CNI ADD/DEL (the real
//! binary, each pod in its own netns, macvlan children of 4 shared veth parents). At the end:
//! no lease, no plan, no child or marked link left on the host, the parents unchanged.

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use common::*;
use multinic_kubelet_plugin::driver::{ClaimRef, Driver, DriverOptions, KubeClaimApi};
use multinic_kubelet_plugin::inventory::Nic;
use multinic_kubelet_plugin::publish::DeviceTable;
use multinic_kubelet_plugin::slices::{SliceOptions, build_device_table};
use multinic_testkit::{FakeApiServer, fixtures};
use serde_json::json;

const PODS: usize = 200;
const PARENTS: usize = 4;

/// Deterministic order from a printed seed.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

#[test]
fn two_hundred_pods_attach_and_detach_through_prepare_and_cni() {
    if !can_run_as_root("two_hundred_pods_attach_and_detach_through_prepare_and_cni") {
        return;
    }
    let seed: u64 = std::env::var("MULTINIC_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(7)
                | 1
        });
    println!("seed {seed} (MULTINIC_TEST_SEED replays it)");
    let host = Arc::new(Ns::new("hc"));
    let prefix = tag("cc");
    add_veths(&host, &prefix, PARENTS, |_| true);
    let parents: Vec<String> = (1..=PARENTS).map(|i| format!("{prefix}{i}")).collect();
    let before: Vec<String> = host.link_names();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let api = FakeApiServer::start().await;
        let state = tempfile::tempdir().unwrap();
        let table = DeviceTable::default();
        let nics: Vec<Nic> = parents
            .iter()
            .enumerate()
            .map(|(i, name)| fixtures::veth_nic(name, u32::try_from(i).unwrap()))
            .collect();
        let published = build_device_table(&nics, &SliceOptions::new("node-c"));
        table.set(&published);
        let devices: Vec<String> = published.iter().map(|p| p.device.name.clone()).collect();
        let opts = DriverOptions::new("node-c", state.path(), None);
        let driver = Arc::new(Driver::new(KubeClaimApi::new(api.client()), table, opts).unwrap());
        let params = json!({"attachment": {"mode": "macvlan"},
            "ipam": {"type": "static", "addresses": []}, "interfaceNamePrefix": "net"});
        let mut claims = Vec::new();
        for i in 0..PODS {
            let mut p = params.clone();
            p["ipam"]["addresses"] = json!([format!("10.{}.{}.{}/16", 60 + i % PARENTS, i / 250, 1 + i % 250)]);
            let created = api
                .insert(json!({"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
                    "metadata": {"name": format!("c{i}"), "namespace": "ml"},
                    "spec": {"devices": {"requests": [{"name": "nic", "exactly": {"deviceClassName": "x"}}]}},
                    "status": {"allocation": {"devices": {
                        "results": [{"request": "nic", "driver": "multinic.dev", "pool": "node-c", "device": devices[i % PARENTS]}],
                        "config": [{"source": "FromClass", "opaque": {"driver": "multinic.dev", "parameters": p}}]}},
                        "reservedFor": [{"resource": "pods", "name": format!("pod-c{i}"), "uid": format!("c{i}")}]}}))
                .unwrap();
            claims.push(ClaimRef {
                namespace: "ml".into(),
                name: format!("c{i}"),
                uid: created["metadata"]["uid"].as_str().unwrap().to_string(),
            });
        }
        let conf = json!({"cniVersion": "1.0.0", "name": format!("conc-{prefix}"), "type": "multinic-cni", "stateDir": state.path()});

        // Random order; each pod: prepare -> netns -> ADD -> DEL -> netns gone -> unprepare, 16 at a time.
        let mut order: Vec<usize> = (0..PODS).collect();
        let mut rng = XorShift(seed);
        for i in (1..order.len()).rev() {
            order.swap(i, rng.next(i + 1));
        }
        let limit = Arc::new(tokio::sync::Semaphore::new(16));
        let mut tasks = Vec::new();
        for i in order {
            let (driver, claim, host, conf, limit) = (driver.clone(), claims[i].clone(), host.clone(), conf.clone(), limit.clone());
            tasks.push(tokio::spawn(async move {
                let _permit = limit.acquire_owned().await.unwrap();
                driver.prepare(&claim).await.unwrap_or_else(|e| panic!("prepare c{i}: {e}"));
                let pod_uid = format!("c{i}");
                let ip = tokio::task::spawn_blocking({
                    let (host, conf, pod_uid) = (host.clone(), conf.clone(), pod_uid.clone());
                    move || {
                        let pod = Ns::new("pc");
                        let add = cni(&host, &Call::new("ADD", &pod_uid, pod.path(), &pod_uid), &conf).expect_ok();
                        let ip = add["ips"][0]["address"].as_str().unwrap_or_default().to_string();
                        assert!(pod.link("net1").is_some(), "pod c{i} has no net1");
                        cni(&host, &Call::new("DEL", &pod_uid, pod.path(), &pod_uid), &conf).expect_ok();
                        drop(pod);
                        ip
                    }
                })
                .await
                .unwrap();
                driver.unprepare(&claim).await.unwrap_or_else(|e| panic!("unprepare c{i}: {e}"));
                ip
            }));
        }
        let mut seen = HashSet::new();
        for t in tasks {
            let ip = t.await.unwrap();
            assert!(seen.insert(ip.clone()), "duplicate IP {ip}");
        }
        assert_eq!(seen.len(), PODS);
        assert!(driver.leased().await.is_empty(), "every lease released");
        assert!(driver.prepared_claims().await.is_empty(), "every plan released");
        assert!(multinic_api::plan::PlanStore::new(state.path()).claim_uids().unwrap().is_empty());
    });
    assert!(marked_links(&host).is_empty(), "no marked link left on the host");
    assert_eq!(host.link_names(), before, "the host's links are exactly as before");
    println!("{PODS} pods attached and detached through prepare + CNI in random order");
}
