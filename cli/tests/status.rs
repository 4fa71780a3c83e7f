//! `multinic status` against the plugin's real metrics endpoint: a driver over a state dir with a
//! plan (loaded as after a restart), a device table with NICs on the host and in a pod, the
//! node's blocks in the watch-backed store; the endpoint of `daemon::exposition` on a free port;
//! the `multinic` binary as a user runs it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Output;
use std::sync::Arc;

use k8s_openapi::api::resource::v1::{AllocatedDeviceStatus, ResourceClaim};
use kube::runtime::reflector;
use kube::runtime::watcher::Event;
use multinic_api::crd::{NicNodeBlocks, NicNodeBlocksSpec, RailBlock, node_blocks_name};
use multinic_api::plan::{PLAN_VERSION, Plan, PlanStore, PlannedDevice, PodRef};
use multinic_cli::status;
use multinic_kubelet_plugin::daemon;
use multinic_kubelet_plugin::driver::{ApiError, ClaimApi, ClaimRef, Driver, DriverOptions};
use multinic_kubelet_plugin::health::{HealthInputs, assess};
use multinic_kubelet_plugin::inventory::{LinkState, Nic};
use multinic_kubelet_plugin::ledger::Presence;
use multinic_kubelet_plugin::metrics::Metrics;
use multinic_kubelet_plugin::publish::DeviceTable;
use multinic_kubelet_plugin::slices::{SliceOptions, build_device_table};
use multinic_testkit::fixtures;
use serde_json::Value;

const NODE: &str = "node-a";
const CLAIM_UID: &str = "0b7c1c9e-7d2e-4f0a-9c1e-0000000000a1";

/// The API server as unprepare sees it: the claim's status is applied, nothing else is asked.
struct NoApi;

impl ClaimApi for NoApi {
    async fn get_claim(&self, _: &str, _: &str) -> Result<Option<ResourceClaim>, ApiError> {
        Ok(None)
    }
    async fn apply_status(&self, _: &ClaimRef, _: Vec<AllocatedDeviceStatus>) -> Result<bool, ApiError> {
        Ok(true)
    }
    async fn get_node_blocks(&self, _: &str) -> Result<Option<NicNodeBlocks>, ApiError> {
        Ok(None)
    }
    async fn warn(&self, _: &ClaimRef, _: &'static str, _: String) -> Result<(), ApiError> {
        Ok(())
    }
}

fn planned(device: &str, if_name: &str, rail: u32, pod_if_name: &str, ip: &str) -> PlannedDevice {
    multinic_testkit::fixtures::planned_device(NODE, device, if_name, rail, pod_if_name, ip)
}

struct Node {
    _state: tempfile::TempDir,
    driver: Arc<Driver<NoApi>>,
    addr: SocketAddr,
}

/// Four RoCE NICs: rail 0 on the host (up, carrier, a host address), rails 1 and 2 in pod ml/pod-a
/// (claim ml/claim-a), rail 3 on the host without carrier; blocks (host 7, rail k) of `rails`
/// and a block of another node.
async fn node() -> Node {
    let mut nics: Vec<Nic> = (0..4).map(fixtures::roce_nic).collect();
    nics[0].ipv4 = Some("192.168.0.10/24".parse().unwrap());
    let mut devices = build_device_table(&nics, &SliceOptions::new(NODE));
    let links: BTreeMap<String, LinkState> = [(0, true), (3, false)]
        .into_iter()
        .map(|(i, carrier)| {
            let state = LinkState {
                up: true,
                carrier: Some(carrier),
                rdma_port: None,
            };
            (nics[i].if_name.clone(), state)
        })
        .collect();
    let parents = Default::default();
    for d in &mut devices {
        if matches!(d.rail_index, 1 | 2) {
            d.presence = Presence::InPod;
        }
        let inputs = HealthInputs {
            links: &links,
            parents: &parents,
        };
        d.health = assess(&d.device.name, &d.nic.if_name, d.presence, inputs);
    }
    let plan = Plan {
        version: PLAN_VERSION,
        claim_uid: CLAIM_UID.into(),
        namespace: "ml".into(),
        name: "claim-a".into(),
        pods: vec![PodRef {
            uid: "5d1f0c2a-0000-4000-8000-0000000000a1".into(),
            name: "pod-a".into(),
        }],
        network: Some("rails".into()),
        devices: vec![
            planned(&devices[1].device.name, &nics[1].if_name, 1, "net1", "10.10.7.9/29"),
            planned(&devices[2].device.name, &nics[2].if_name, 2, "net2", "10.10.7.17/29"),
        ],
    };
    let state = tempfile::tempdir().unwrap();
    PlanStore::new(state.path()).write(&plan).unwrap();
    let table = DeviceTable::default();
    table.set(&devices);

    let (blocks, mut writer) = reflector::store();
    for (node, host) in [(NODE, 7u8), ("node-b", 8)] {
        let spec = NicNodeBlocksSpec {
            network: "rails".into(),
            node_name: node.into(),
            host_index: u32::from(host),
            granted_blocks: Vec::new(),
            blocks: (0..4u8)
                .map(|k| RailBlock {
                    rail_index: u32::from(k),
                    cidr: format!("10.10.{host}.{}/29", k * 8).parse().unwrap(),
                    node_address: (k == 0).then(|| "192.168.0.10".parse().unwrap()),
                })
                .collect(),
        };
        writer.apply_watcher_event(&Event::Apply(NicNodeBlocks::new(
            &node_blocks_name("rails", node),
            spec,
        )));
    }

    let driver = Arc::new(
        Driver::new(NoApi, table, DriverOptions::new(NODE, state.path(), None))
            .unwrap()
            .with_blocks(blocks),
    );
    let listener = multinic_api::observe::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let exposition = daemon::exposition(driver.clone(), Arc::new(Metrics::new()));
    tokio::spawn(multinic_api::observe::serve(listener, Arc::new(exposition)));
    Node {
        _state: state,
        driver,
        addr,
    }
}

/// `multinic status ARGS...`.
async fn multinic_status(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_multinic"))
            .arg("status")
            .args(args)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "multinic status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_prints_the_ledger_of_a_running_plugin_as_a_table_and_as_json() {
    let node = node().await;
    let endpoint = format!("http://{}", node.addr);

    let table = stdout(&multinic_status(vec![format!("--endpoint={endpoint}")]).await);
    println!("{table}");
    assert_eq!(
        table,
        "\
NODE node-a

DEVICE            IFNAME      RAIL  WHERE         ADDRESSES        HEALTH
pci-0000-10-00-0  ens9999np0  0     host          192.168.0.10/24  Healthy (LinkUp)
pci-0000-10-00-1  ens9998np0  1     pod ml/pod-a  10.10.7.9/29     Unknown (InPod)
pci-0000-10-00-2  ens9997np0  2     pod ml/pod-a  10.10.7.17/29    Unknown (InPod)
pci-0000-10-00-3  ens9996np0  3     host          -                Unhealthy (CarrierDown)
unhealthy pci-0000-10-00-3: link carrier down on ens9996np0: check its cable, switch port or peer

CLAIM       POD(S)    DEVICES                                      IPS
ml/claim-a  ml/pod-a  net1=pci-0000-10-00-1,net2=pci-0000-10-00-2  10.10.7.9/29,10.10.7.17/29

NETWORK  RAIL  CIDR           FREE
rails    0     10.10.7.0/29   6
rails    1     10.10.7.8/29   5
rails    2     10.10.7.16/29  5
rails    3     10.10.7.24/29  6
"
    );

    let json = stdout(&multinic_status(vec![format!("--endpoint={endpoint}"), "-o".into(), "json".into()]).await);
    let doc: Value = serde_json::from_str(&json).unwrap();
    assert_eq!((doc["version"].as_u64(), doc["node"].as_str()), (Some(1), Some(NODE)));
    let nics = doc["nics"].as_array().unwrap();
    assert_eq!(nics.len(), 4, "{json}");
    assert_eq!(
        nics[1],
        serde_json::json!({
            "device": "pci-0000-10-00-1", "ifName": "ens9998np0", "railIndex": 1, "presence": "inPod",
            "pods": ["ml/pod-a"], "addresses": ["10.10.7.9/29"],
            "health": {"status": "Unknown", "reason": "InPod",
                       "message": "ens9998np0 is in a pod's network namespace; its link is seen from there only"},
        })
    );
    assert_eq!(nics[3]["health"]["status"], "Unhealthy");
    assert_eq!(doc["claims"][0]["uid"], CLAIM_UID);
    assert_eq!(doc["claims"][0]["devices"][1]["podIfName"], "net2");
    assert_eq!(
        doc["blocks"].as_array().map(Vec::len),
        Some(4),
        "only node-a's blocks: {json}"
    );
    assert_eq!(doc["blocks"][0]["nodeAddress"], "192.168.0.10");

    // Live state, not a snapshot: unprepare releases the claim and its addresses.
    let claim = ClaimRef {
        namespace: "ml".into(),
        uid: CLAIM_UID.into(),
        name: "claim-a".into(),
    };
    node.driver.unprepare(&claim).await.unwrap();
    let after = status::fetch(&endpoint).await.unwrap();
    assert!(after.claims.is_empty(), "{after:?}");
    assert!(after.blocks.iter().all(|b| b.free == 6), "{:?}", after.blocks);
    assert!(after.nics.iter().all(|n| n.pods.is_empty()), "{:?}", after.nics);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_names_the_endpoint_and_the_fix_when_no_plugin_answers() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let out = multinic_status(vec![format!("--endpoint={endpoint}")]).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot reach the plugin at {endpoint}: ")) && stderr.contains("or pass --endpoint"),
        "{stderr}"
    );

    // A metrics endpoint without /status (the controller's) is named as such.
    let listener = multinic_api::observe::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let controller = multinic_controller::metrics::Metrics::default();
    tokio::spawn(multinic_api::observe::serve(listener, Arc::new(controller)));
    let error = status::fetch(&format!("http://{addr}")).await.unwrap_err().to_string();
    assert!(
        error.contains("answered 404: this endpoint serves no /status"),
        "{error}"
    );
}
