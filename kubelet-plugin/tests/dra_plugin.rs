//! Acceptance of the kubelet side: a kubelet-emulating gRPC client over real unix sockets, the
//! plugin's kube client talking HTTP to the in-process test API server.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ipnet::{IpNet, Ipv4Net};
use multinic_api::crd::node_blocks_name;
use multinic_api::plan::PlanStore;
use multinic_api::rails::RailsLayout;
use multinic_kubelet_plugin::driver::{ClaimRef, Driver, DriverOptions, FaultPoint, KubeClaimApi, PrepareError};
use multinic_kubelet_plugin::grpc::{self, DraService, RegistrationService};
use multinic_kubelet_plugin::inventory::Nic;
use multinic_kubelet_plugin::metrics::Metrics;
use multinic_kubelet_plugin::publish::DeviceTable;
use multinic_kubelet_plugin::slices::{SliceOptions, build_device_table};
use multinic_proto::dra::{v1, v1beta1};
use multinic_proto::registration::{InfoRequest, RegistrationStatus, registration_client::RegistrationClient};
use multinic_testkit::{FakeApiServer, fixtures};
use serde_json::{Value, json};
use tonic::transport::Channel;

const NODE: &str = "node-a";
const HOST_INDEX: u32 = 7;
const RAILS: &str = "rails";

fn nic(rail: usize) -> Nic {
    fixtures::roce_nic(rail)
}

fn layout() -> RailsLayout {
    RailsLayout::new("10.10.0.0/16".parse().unwrap(), 8, 2).unwrap()
}

fn rails_params(extra: Value) -> Value {
    let mut p = json!({
        "apiVersion": "multinic.dev/v1alpha1", "kind": "NetworkConfig", "network": RAILS,
        "ipam": {"type": "rails", "subnet": "10.10.0.0/16", "hostBlock": 8, "interfaceBlock": 2},
        "routing": {"policyRouting": true},
    });
    if let (Some(p), Some(e)) = (p.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            p.insert(k.clone(), v.clone());
        }
    }
    p
}

struct Harness {
    api: FakeApiServer,
    state: tempfile::TempDir,
    sockets: tempfile::TempDir,
    table: DeviceTable,
    driver: Arc<Driver<KubeClaimApi>>,
    devices: Vec<String>,
    shutdown: Vec<tokio::sync::oneshot::Sender<()>>,
}

impl Harness {
    async fn new(fault: Option<FaultPoint>) -> Self {
        let api = FakeApiServer::start().await;
        let blocks: Vec<Value> = (0..4)
            .map(|k| json!({"railIndex": k, "cidr": layout().block(HOST_INDEX, k).unwrap().to_string()}))
            .collect();
        api.insert(json!({
            "apiVersion": "multinic.dev/v1alpha1", "kind": "NicNodeBlocks",
            "metadata": {"name": node_blocks_name(RAILS, NODE)},
            "spec": {"network": RAILS, "nodeName": NODE, "hostIndex": HOST_INDEX, "blocks": blocks},
        }))
        .unwrap();
        let table = DeviceTable::default();
        let published = build_device_table(&(0..4).map(nic).collect::<Vec<_>>(), &SliceOptions::new(NODE));
        let devices = published.iter().map(|p| p.device.name.clone()).collect();
        table.set(&published);
        let state = tempfile::tempdir().unwrap();
        let sockets = tempfile::tempdir().unwrap();
        let driver = Arc::new(new_driver(&api, &table, state.path(), fault));
        Self {
            api,
            state,
            sockets,
            table,
            driver,
            devices,
            shutdown: vec![],
        }
    }

    /// A driver over the same state dir, as after a restart.
    fn new_driver(&self, fault: Option<FaultPoint>) -> Driver<KubeClaimApi> {
        new_driver(&self.api, &self.table, self.state.path(), fault)
    }

    fn plans(&self) -> PlanStore {
        PlanStore::new(self.state.path())
    }

    /// Serves the DRA and registration sockets; returns (dra socket, registration socket).
    fn serve(&mut self) -> (PathBuf, PathBuf) {
        let metrics = Arc::new(Metrics::new());
        let dra = self.sockets.path().join("plugins/multinic.dev").join(grpc::DRA_SOCKET);
        let reg = self
            .sockets
            .path()
            .join("plugins_registry")
            .join(grpc::registration_socket("multinic.dev"));
        let (tx1, rx1) = tokio::sync::oneshot::channel::<()>();
        let (tx2, rx2) = tokio::sync::oneshot::channel::<()>();
        let service = DraService::new(self.driver.clone(), metrics.clone());
        let listener = grpc::bind_socket(&dra).unwrap();
        let path = dra.clone();
        tokio::spawn(async move { grpc::serve_dra(listener, &path, service, async { rx1.await.unwrap_or(()) }).await });
        let listener = grpc::bind_socket(&reg).unwrap();
        let (path, endpoint) = (reg.clone(), dra.clone());
        let registration = RegistrationService {
            driver_name: "multinic.dev".into(),
            endpoint,
            metrics,
        };
        tokio::spawn(async move {
            grpc::serve_registration(listener, &path, registration, async { rx2.await.unwrap_or(()) }).await
        });
        self.shutdown.extend([tx1, tx2]);
        (dra, reg)
    }

    /// Creates an allocated claim for the given devices (all from request "nics").
    fn claim(&self, name: &str, devices: &[&str], params: Value) -> ClaimRef {
        let results: Vec<Value> = devices
            .iter()
            .map(|d| json!({"request": "nics", "driver": "multinic.dev", "pool": NODE, "device": d}))
            .collect();
        let created = self
            .api
            .insert(json!({
                "apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
                "metadata": {"name": name, "namespace": "ml"},
                "spec": {"devices": {"requests": [{"name": "nics", "exactly": {"deviceClassName": RAILS, "count": devices.len()}}]}},
                "status": {
                    "allocation": {"devices": {
                        "results": results,
                        "config": [{"source": "FromClass", "opaque": {"driver": "multinic.dev", "parameters": params}}],
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

    fn claim_status(&self, c: &ClaimRef) -> Value {
        self.api
            .get("resource.k8s.io/v1", "ResourceClaim", Some("ml"), &c.name)
            .unwrap()["status"]
            .clone()
    }
}

fn new_driver(
    api: &FakeApiServer,
    table: &DeviceTable,
    state: &Path,
    fault: Option<FaultPoint>,
) -> Driver<KubeClaimApi> {
    let opts = DriverOptions {
        fault,
        ..DriverOptions::new(NODE, state, Some(state.join("cdi")))
    };
    Driver::new(KubeClaimApi::new(api.client()), table.clone(), opts).unwrap()
}

async fn connect(path: &Path) -> Channel {
    // The `:authority` grpc-go (the kubelet) sends over a unix socket.
    grpc::unix_channel("http://[::]:50051", path).await.unwrap()
}

fn v1_claim(c: &ClaimRef) -> v1::Claim {
    v1::Claim {
        namespace: c.namespace.clone(),
        uid: c.uid.clone(),
        name: c.name.clone(),
    }
}

fn ips_of(status: &Value) -> Vec<(String, String)> {
    status["devices"]
        .as_array()
        .map(|d| {
            d.iter()
                .map(|e| {
                    let nd = &e["networkData"];
                    (
                        nd["interfaceName"].as_str().unwrap_or("").to_string(),
                        nd["ips"][0].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn kubelet_registers_then_prepares_and_unprepares_over_v1_and_v1beta1() {
    let mut h = Harness::new(None).await;
    let (dra, reg) = h.serve();
    for socket in [&dra, &reg] {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(socket).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(
            std::fs::metadata(socket.parent().unwrap())
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o750
        );
    }

    let mut registration = RegistrationClient::new(connect(&reg).await);
    let info = registration.get_info(InfoRequest {}).await.unwrap().into_inner();
    assert_eq!(info.r#type, "DRAPlugin");
    assert_eq!(info.name, "multinic.dev");
    assert_eq!(info.endpoint, dra.display().to_string());
    assert_eq!(
        info.supported_versions,
        [
            "v1.DRAPlugin",
            "v1beta1.DRAPlugin",
            "v1.DRAResourceHealth",
            "v1alpha1.DRAResourceHealth"
        ]
    );
    registration
        .notify_registration_status(RegistrationStatus {
            plugin_registered: true,
            error: String::new(),
        })
        .await
        .unwrap();

    let channel = connect(&dra).await;
    // The health stream (both versions) opens with every published device of the pool.
    use multinic_proto::health::{v1 as h1, v1alpha1 as h1a};
    macro_rules! first_message {
        ($client:expr, $request:expr) => {
            $client
                .node_watch_resources($request)
                .await
                .unwrap()
                .into_inner()
                .message()
                .await
                .unwrap()
                .unwrap()
        };
    }
    let first = first_message!(
        h1a::dra_resource_health_client::DraResourceHealthClient::new(channel.clone()),
        h1a::NodeWatchResourcesRequest {}
    );
    let named: Vec<(String, String)> = first
        .devices
        .iter()
        .map(|d| {
            d.device
                .clone()
                .map(|i| (i.pool_name, i.device_name))
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(
        named,
        h.devices
            .iter()
            .map(|d| (NODE.to_string(), d.clone()))
            .collect::<Vec<_>>()
    );
    let first_v1 = first_message!(
        h1::dra_resource_health_client::DraResourceHealthClient::new(channel.clone()),
        h1::NodeWatchResourcesRequest {}
    );
    assert_eq!(first_v1.devices.len(), h.devices.len());
    let mut v1c = v1::dra_plugin_client::DraPluginClient::new(channel.clone());
    let mut v1b = v1beta1::dra_plugin_client::DraPluginClient::new(channel);
    let a = h.claim("a", &[&h.devices[0], &h.devices[1]], rails_params(json!({})));
    let b = h.claim("b", &[&h.devices[2]], rails_params(json!({})));

    let resp = v1c
        .node_prepare_resources(v1::NodePrepareResourcesRequest {
            claims: vec![v1_claim(&a)],
        })
        .await
        .unwrap()
        .into_inner();
    let r = &resp.claims[&a.uid];
    assert_eq!(r.error, "");
    let got: Vec<(&str, &str)> = r
        .devices
        .iter()
        .map(|d| (d.pool_name.as_str(), d.device_name.as_str()))
        .collect();
    assert_eq!(got, [(NODE, h.devices[0].as_str()), (NODE, h.devices[1].as_str())]);
    assert_eq!(r.devices[0].request_names, ["nics"]);
    assert_eq!(
        r.devices[0].cdi_device_ids,
        [format!("multinic.dev/net={}-{}", a.uid, h.devices[0])]
    );

    let beta = v1beta1::Claim {
        namespace: b.namespace.clone(),
        uid: b.uid.clone(),
        name: b.name.clone(),
    };
    let resp = v1b
        .node_prepare_resources(v1beta1::NodePrepareResourcesRequest {
            claims: vec![beta.clone()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.claims[&b.uid].error, "");
    assert_eq!(resp.claims[&b.uid].devices[0].device_name, h.devices[2]);
    assert_eq!(ips_of(&h.claim_status(&b)).len(), 1);

    let resp = v1b
        .node_unprepare_resources(v1beta1::NodeUnprepareResourcesRequest { claims: vec![beta] })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.claims[&b.uid].error, "");
    let resp = v1c
        .node_unprepare_resources(v1::NodeUnprepareResourcesRequest {
            claims: vec![v1_claim(&a)],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.claims[&a.uid].error, "");
    assert!(ips_of(&h.claim_status(&a)).is_empty(), "our status entries are cleared");
    assert!(h.plans().claim_uids().unwrap().is_empty());
    assert!(h.driver.leased().await.is_empty());
    // Unknown claims are success.
    let ghost = ClaimRef {
        namespace: "ml".into(),
        uid: "00000000-dead".into(),
        name: "ghost".into(),
    };
    let resp = v1c
        .node_unprepare_resources(v1::NodeUnprepareResourcesRequest {
            claims: vec![v1_claim(&ghost)],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.claims[&ghost.uid].error, "");
}

#[tokio::test]
async fn four_rails_get_rail_ordered_names_and_per_host_per_rail_ips() {
    let mut h = Harness::new(None).await;
    let (dra, _) = h.serve();
    let mut client = v1::dra_plugin_client::DraPluginClient::new(connect(&dra).await);
    // Allocation results in scrambled order: the plan orders by rail.
    let d = h.devices.clone();
    let c = h.claim("four", &[&d[2], &d[0], &d[3], &d[1]], rails_params(json!({})));
    let req = v1::NodePrepareResourcesRequest {
        claims: vec![v1_claim(&c)],
    };
    let first = client.node_prepare_resources(req.clone()).await.unwrap().into_inner();
    assert_eq!(first.claims[&c.uid].error, "");
    let status = h.claim_status(&c);
    let got = ips_of(&status);
    assert_eq!(got.len(), 4);
    for (k, (if_name, ip)) in got.iter().enumerate() {
        assert_eq!(if_name, &format!("net{}", k + 1));
        let ip: IpNet = ip.parse().unwrap();
        let block: Ipv4Net = layout().block(HOST_INDEX, k as u32).unwrap();
        assert!(
            IpNet::V4(block).contains(&ip.addr()),
            "net{} = {ip} not in block (host {HOST_INDEX}, rail {k}) {block}",
            k + 1
        );
        assert_eq!(ip.prefix_len(), block.prefix_len());
        let entry = &status["devices"][k];
        assert_eq!(entry["device"], d[k].as_str());
        assert_eq!(entry["conditions"][0]["type"], "Ready");
        assert_eq!(
            entry["networkData"]["hardwareAddress"],
            format!("b8:3f:d2:00:00:{k:02x}")
        );
    }
    // Prepared again (the kubelet retries): the same answer and the same addresses.
    let again = client.node_prepare_resources(req).await.unwrap().into_inner();
    assert_eq!(first, again);
    assert_eq!(ips_of(&h.claim_status(&c)), got);
    let plan = h.plans().load(&c.uid).unwrap().unwrap();
    assert_eq!(
        plan.devices.iter().map(|d| d.pod_if_name.as_str()).collect::<Vec<_>>(),
        ["net1", "net2", "net3", "net4"]
    );
    assert_eq!(plan.pods[0].uid, "pod-four");
}

#[tokio::test]
async fn two_hundred_concurrent_claims_get_distinct_ips_and_all_are_released() {
    let mut h = Harness::new(None).await;
    let (dra, _) = h.serve();
    let mut client = v1::dra_plugin_client::DraPluginClient::new(connect(&dra).await);
    let shared = rails_params(json!({"attachment": {"mode": "macvlan"}}));
    let claims: Vec<ClaimRef> = (0..200)
        .map(|i| h.claim(&format!("c{i}"), &[&h.devices[i % 4]], shared.clone()))
        .collect();
    let resp = client
        .node_prepare_resources(v1::NodePrepareResourcesRequest {
            claims: claims.iter().map(v1_claim).collect(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.claims.len(), 200);
    let mut seen = HashSet::new();
    for c in &claims {
        assert_eq!(resp.claims[&c.uid].error, "", "{}", c.name);
        for (_, ip) in ips_of(&h.claim_status(c)) {
            assert!(seen.insert(ip.clone()), "duplicate IP {ip}");
        }
    }
    assert_eq!(seen.len(), 200);
    assert_eq!(h.driver.leased().await.len(), 200);
    let resp = client
        .node_unprepare_resources(v1::NodeUnprepareResourcesRequest {
            claims: claims.iter().map(v1_claim).collect(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(resp.claims.values().all(|r| r.error.is_empty()));
    assert!(h.driver.leased().await.is_empty());
    assert!(h.plans().claim_uids().unwrap().is_empty());
}

#[tokio::test]
async fn crash_after_plan_write_then_restart_keeps_ips_and_releases_deleted_claims() {
    let h = Harness::new(Some(FaultPoint::AfterPlanWrite)).await;
    let d = h.devices.clone();
    let c = h.claim("crashy", &[&d[0], &d[1]], rails_params(json!({})));
    let err = h.driver.prepare(&c).await.unwrap_err();
    assert!(
        matches!(
            err,
            PrepareError::Fault {
                point: FaultPoint::AfterPlanWrite,
                ..
            }
        ),
        "{err}"
    );
    let written = h.plans().load(&c.uid).unwrap().expect("plan written before the crash");
    assert!(ips_of(&h.claim_status(&c)).is_empty(), "status was never applied");

    // Restart: a new process state from the state dir, then the kubelet's retry.
    let restarted = h.new_driver(None);
    assert_eq!(restarted.reconcile().await, 0);
    restarted.prepare(&c).await.unwrap();
    let plan = h.plans().load(&c.uid).unwrap().unwrap();
    assert_eq!(plan, written, "the retry returns the plan written before the crash");
    let plan_ips: HashSet<IpAddr> = plan
        .devices
        .iter()
        .flat_map(|d| d.ips.iter().map(|n| n.addr()))
        .collect();
    assert_eq!(restarted.leased().await, plan_ips, "no leaked lease");
    assert_eq!(ips_of(&h.claim_status(&c)).len(), 2);

    // A claim prepared, then deleted while the plugin is down, is released at start.
    let gone = h.claim("gone", &[&d[2]], rails_params(json!({})));
    restarted.prepare(&gone).await.unwrap();
    assert!(h.plans().load(&gone.uid).unwrap().is_some());
    drop(restarted);
    h.api
        .delete("resource.k8s.io/v1", "ResourceClaim", Some("ml"), "gone")
        .unwrap();
    let again = h.new_driver(None);
    assert_eq!(again.reconcile().await, 1);
    assert!(h.plans().load(&gone.uid).unwrap().is_none());
    assert_eq!(again.leased().await, plan_ips);
    assert_eq!(again.prepared_claims().await, vec![c.uid.clone()]);
}

#[tokio::test]
async fn bad_inputs_fail_per_claim_and_allocate_nothing() {
    let mut h = Harness::new(None).await;
    let (dra, _) = h.serve();
    let mut client = v1::dra_plugin_client::DraPluginClient::new(connect(&dra).await);
    let d = h.devices.clone();
    let good = h.claim("good", &[&d[0]], rails_params(json!({})));
    let missing = ClaimRef {
        namespace: "ml".into(),
        uid: "11111111-aaaa".into(),
        name: "missing".into(),
    };
    let mut wrong_uid = h.claim("wrong-uid", &[&d[1]], rails_params(json!({})));
    wrong_uid.uid = "22222222-bbbb".into();
    let no_device = h.claim("no-device", &["pci-0000-ff-00-0"], rails_params(json!({})));
    let malformed = h.claim("malformed", &[&d[1]], json!({"attachment": {"mode": "teleport"}}));
    let exhausted = h.claim(
        "exhausted",
        &[&d[1]],
        rails_params(json!({"ipam": {
        "type": "rails", "subnet": "10.10.0.0/16", "hostBlock": 8, "interfaceBlock": 2, "exclude": ["10.10.0.0/16"]}})),
    );
    let cases = [
        (&missing, "not found"),
        (&wrong_uid, "re-created"),
        (&no_device, "not in this node's inventory"),
        (&malformed, "teleport"),
        (&exhausted, "exhausted"),
    ];
    let mut claims: Vec<v1::Claim> = cases.iter().map(|(c, _)| v1_claim(c)).collect();
    claims.push(v1_claim(&good));
    let resp = client
        .node_prepare_resources(v1::NodePrepareResourcesRequest { claims })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.claims[&good.uid].error, "", "one bad claim never fails the others");
    for (c, cause) in cases {
        let error = &resp.claims[&c.uid].error;
        assert!(
            error.contains(&format!("ResourceClaim ml/{}", c.name)),
            "error does not name the claim: {error}"
        );
        assert!(
            error.contains(cause),
            "error for {} does not say {cause:?}: {error}",
            c.name
        );
        assert!(resp.claims[&c.uid].devices.is_empty());
    }
    let good_plan = h.plans().load(&good.uid).unwrap().unwrap();
    assert_eq!(
        h.plans().claim_uids().unwrap(),
        vec![good.uid.clone()],
        "nothing allocated for the bad claims"
    );
    let leased: HashSet<IpAddr> = good_plan
        .devices
        .iter()
        .flat_map(|d| d.ips.iter().map(|n| n.addr()))
        .collect();
    assert_eq!(h.driver.leased().await, leased);
    let statuses: BTreeMap<&str, usize> = cases
        .iter()
        .filter(|(c, _)| c.name != "missing")
        .map(|(c, _)| (c.name.as_str(), ips_of(&h.claim_status(c)).len()))
        .collect();
    assert!(statuses.values().all(|n| *n == 0), "{statuses:?}");
}

#[tokio::test]
async fn blocks_of_a_recreated_network_are_read_again() {
    let h = Harness::new(None).await;
    let d = h.devices.clone();
    let first = h.claim("before", &[&d[0]], rails_params(json!({})));
    h.driver.prepare(&first).await.unwrap();
    // The network is re-created with another subnet; the controller rewrites the node's blocks.
    let other = RailsLayout::new("10.11.0.0/16".parse().unwrap(), 8, 2).unwrap();
    let blocks: Vec<Value> = (0..4)
        .map(|k| json!({"railIndex": k, "cidr": other.block(HOST_INDEX, k).unwrap().to_string()}))
        .collect();
    h.api
        .insert(json!({
            "apiVersion": "multinic.dev/v1alpha1", "kind": "NicNodeBlocks",
            "metadata": {"name": node_blocks_name(RAILS, NODE)},
            "spec": {"network": RAILS, "nodeName": NODE, "hostIndex": HOST_INDEX, "blocks": blocks},
        }))
        .unwrap();
    let params =
        rails_params(json!({"ipam": {"type": "rails", "subnet": "10.11.0.0/16", "hostBlock": 8, "interfaceBlock": 2}}));
    let second = h.claim("after", &[&d[1]], params);
    h.driver.prepare(&second).await.unwrap();
    let (_, ip) = ips_of(&h.claim_status(&second)).remove(0);
    let ip: IpNet = ip.parse().unwrap();
    assert!(
        IpNet::V4(other.block(HOST_INDEX, 1).unwrap()).contains(&ip.addr()),
        "{ip} not from the new blocks"
    );
}

/// Dual stack through prepare: the node's NicNodeBlocks has an IPv4 and an IPv6 block per rail;
/// each device of the claim gets an address of both, in its rail's blocks, and the claim's
/// `networkData.ips` lists both as CIDR strings, IPv4 first. Unprepare frees both: the next claim
/// on the same NICs gets the same addresses.
#[tokio::test]
async fn dual_stack_claims_get_both_families_in_network_data() {
    let h = Harness::new(None).await;
    let v6 = RailsLayout::new6("fd00:10::/64".parse().unwrap(), 8, 2).unwrap();
    let blocks: Vec<Value> = (0..4)
        .flat_map(|k| {
            [
                json!({"railIndex": k, "cidr": layout().block(HOST_INDEX, k).unwrap().to_string()}),
                json!({"railIndex": k, "cidr": v6.block(HOST_INDEX, k).unwrap().to_string()}),
            ]
        })
        .collect();
    h.api
        .insert(json!({
            "apiVersion": "multinic.dev/v1alpha1", "kind": "NicNodeBlocks",
            "metadata": {"name": node_blocks_name(RAILS, NODE)},
            "spec": {"network": RAILS, "nodeName": NODE, "hostIndex": HOST_INDEX, "blocks": blocks},
        }))
        .unwrap();
    let params = rails_params(
        json!({"ipam": {"type": "rails", "subnet": "10.10.0.0/16", "subnet6": "fd00:10::/64",
                                               "hostBlock": 8, "interfaceBlock": 2}}),
    );
    let d = h.devices.clone();
    let nd = |c: &ClaimRef| -> Vec<(String, Vec<String>)> {
        let status = h.claim_status(c);
        let mut out: Vec<(String, Vec<String>)> = status["devices"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                let ips = e["networkData"]["ips"].as_array().into_iter().flatten();
                (
                    e["networkData"]["interfaceName"].as_str().unwrap_or("").to_string(),
                    ips.filter_map(|i| i.as_str().map(str::to_string)).collect(),
                )
            })
            .collect();
        out.sort();
        out
    };
    let first = h.claim("dual", &[&d[0], &d[1]], params.clone());
    h.driver.prepare(&first).await.unwrap();
    let got = nd(&first);
    assert_eq!(
        got,
        [
            (
                "net1".to_string(),
                vec!["10.10.7.1/26".to_string(), "fd00:10::700:0:0:1/74".to_string()]
            ),
            (
                "net2".to_string(),
                vec!["10.10.7.65/26".to_string(), "fd00:10::740:0:0:1/74".to_string()]
            ),
        ]
    );
    for (k, (_, ips)) in got.iter().enumerate() {
        let v6_ip: IpNet = ips[1].parse().unwrap();
        assert!(IpNet::V6(v6.block(HOST_INDEX, k as u32).unwrap()).contains(&v6_ip.addr()));
    }
    h.driver.unprepare(&first).await.unwrap();
    let second = h.claim("dual-again", &[&d[0], &d[1]], params);
    h.driver.prepare(&second).await.unwrap();
    assert_eq!(nd(&second), got, "unprepare freed the addresses of both families");
}

/// Issue 13, acceptance 3: the NIC left the host netns (the CNI moved it into the pod) and the
/// kubelet retries the prepare: the same plan and the same CDI IDs come back, because the device
/// stays published from the ledger while a plan holds it.
#[tokio::test]
async fn a_prepare_retried_after_the_nic_moved_into_the_pod_returns_the_same_plan_and_cdi_ids() {
    use multinic_kubelet_plugin::inventory::Inventory;
    use multinic_kubelet_plugin::ledger::Presence;
    use multinic_kubelet_plugin::publish::{MemorySliceStore, Publisher};

    let h = Harness::new(None).await;
    let publisher = Publisher::new(MemorySliceStore::new(), SliceOptions::new(NODE));
    let nics: Vec<Nic> = (0..4).map(nic).collect();
    publisher
        .publish(&Inventory {
            nics: nics.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    let table = publisher.table();
    let driver = new_driver(&h.api, &table, h.state.path(), None);
    let device = table.all().into_iter().find(|d| d.rail_index == 1).unwrap().device.name;
    let claim = h.claim("moved", &[&device], rails_params(json!({})));
    let first = driver.prepare(&claim).await.unwrap();
    assert_eq!(first[0].cdi_device_ids.len(), 1, "an RDMA NIC gets a CDI device");
    let plan = h.plans().load(&claim.uid).unwrap().unwrap();

    // The NIC is gone from the host netns.
    let mut without = nics.clone();
    without.remove(1);
    publisher
        .publish(&Inventory {
            nics: without,
            ..Default::default()
        })
        .await
        .unwrap();
    let held = table.get(&device).expect("still published while the plan holds it");
    assert_eq!((held.rail_index, held.presence), (1, Presence::InPod));

    let again = driver.prepare(&claim).await.unwrap();
    assert_eq!(
        again.iter().map(|d| (&d.device, &d.cdi_device_ids)).collect::<Vec<_>>(),
        first.iter().map(|d| (&d.device, &d.cdi_device_ids)).collect::<Vec<_>>()
    );
    assert_eq!(h.plans().load(&claim.uid).unwrap().unwrap(), plan);
    driver.unprepare(&claim).await.unwrap();
    assert!(table.in_pods().is_empty(), "released with the plan");
}

/// Issue 13, acceptance 4: the API requests of a pod start (prepare of its claim) do not grow
/// with the number of nodes and networks in the cluster: 1 vs 200 NicNodeBlocks (and as many
/// networks) present. The driver reads the blocks from the plugin's watch-backed store, as the
/// daemon wires it: no NicNodeBlocks request at all.
#[tokio::test]
async fn api_requests_per_pod_start_do_not_grow_with_nodes_and_networks() {
    use futures::StreamExt;
    let mut counts = Vec::new();
    for others in [0usize, 199] {
        let mut h = Harness::new(None).await;
        for i in 0..others {
            let network = format!("net-{i}");
            h.api
                .insert(json!({"apiVersion": "multinic.dev/v1alpha1", "kind": "MultiNicNetwork", "metadata": {"name": network},
                    "spec": {"ipam": {"type": "rails", "subnet": "10.30.0.0/16", "hostBlock": 8, "interfaceBlock": 2}}}))
                .unwrap();
            let blocks: Vec<Value> = (0..4)
                .map(|k| json!({"railIndex": k, "cidr": layout().block(1 + i as u32 % 200, k).unwrap().to_string()}))
                .collect();
            h.api
                .insert(json!({
                    "apiVersion": "multinic.dev/v1alpha1", "kind": "NicNodeBlocks",
                    "metadata": {"name": node_blocks_name(RAILS, &format!("node-{i}"))},
                    "spec": {"network": RAILS, "nodeName": format!("node-{i}"), "hostIndex": 1 + i, "blocks": blocks},
                }))
                .unwrap();
        }
        let present = h.api.list("multinic.dev/v1alpha1", "NicNodeBlocks", None).len();
        let (stores, mut changes) = multinic_kubelet_plugin::cluster::watch(h.api.client());
        while !stores.is_ready() || stores.blocks.state().len() < present {
            changes.next().await.unwrap();
        }
        let watching = tokio::spawn(async move { while changes.next().await.is_some() {} });
        h.driver = Arc::new(h.new_driver(None).with_blocks(stores.blocks.clone()));
        let claim = h.claim("pod-start", &[&h.devices[0], &h.devices[1]], rails_params(json!({})));
        h.api.clear_requests();
        h.driver.prepare(&claim).await.unwrap();
        // The two watches are opened once per plugin start (one may be opening now), not per pod.
        let calls: Vec<String> = h
            .api
            .requests()
            .iter()
            .filter(|r| !r.query.split('&').any(|q| q == "watch=true"))
            .map(|r| format!("{} {}", r.method, r.path))
            .collect();
        println!("{present} NicNodeBlocks: {} requests: {calls:?}", calls.len());
        watching.abort();
        assert!(
            !calls.iter().any(|c| c.contains("nicnodeblocks")),
            "blocks come from the watch: {calls:?}"
        );
        counts.push((present, calls.len()));
    }
    assert_eq!(counts[0].0, 1);
    assert_eq!(counts[1].0, 200);
    assert_eq!(counts[0].1, counts[1].1, "{counts:?}");
    assert!(counts[0].1 <= 2, "claim get, status apply: {counts:?}");
}

/// A block the watch has not delivered yet is read from the API server: prepare right after the
/// controller created the node's blocks does not fail for a lagging watch.
#[tokio::test]
async fn blocks_missing_from_the_watch_store_are_read_from_the_api() {
    let mut h = Harness::new(None).await;
    let (empty, _writer) = kube::runtime::reflector::store();
    h.driver = Arc::new(h.new_driver(None).with_blocks(empty));
    let claim = h.claim("lagging-watch", &[&h.devices[0]], rails_params(json!({})));
    h.api.clear_requests();
    h.driver.prepare(&claim).await.unwrap();
    let reads = h
        .api
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path.contains("nicnodeblocks"))
        .count();
    assert_eq!(reads, 1);
}

/// Issue 15.4: a failed prepare of an existing claim is a `Warning` event on the claim (reason
/// `PrepareFailed`, the error in the note); the kubelet's retry extends the same event's series.
#[tokio::test]
async fn a_failed_prepare_is_a_warning_event_on_the_claim() {
    let h = Harness::new(None).await;
    let claim = h.claim(
        "bad-config",
        &[&h.devices[0]],
        rails_params(json!({"ipam": {"type": "rails", "noSuchField": 1}})),
    );
    for _ in 0..2 {
        let error = h.driver.prepare(&claim).await.unwrap_err().to_string();
        assert!(error.contains("noSuchField"), "{error}");
    }
    let events = h.api.list("events.k8s.io/v1", "Event", Some("ml"));
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0];
    assert_eq!(e["type"], "Warning");
    assert_eq!(e["reason"], "PrepareFailed");
    assert_eq!(e["reportingController"], "multinic.dev/kubelet-plugin");
    assert_eq!(e["regarding"]["kind"], "ResourceClaim");
    assert_eq!(e["regarding"]["name"], "bad-config");
    assert_eq!(e["regarding"]["uid"], claim.uid.as_str());
    assert!(e["note"].as_str().unwrap().contains("noSuchField"), "{e}");
    assert_eq!(e["series"]["count"], 2, "{e}");

    // A claim that does not exist gets no event (there is nothing to attach it to).
    let ghost = ClaimRef {
        namespace: "ml".into(),
        name: "ghost".into(),
        uid: "ghost-uid".into(),
    };
    assert!(h.driver.prepare(&ghost).await.is_err());
    assert_eq!(h.api.list("events.k8s.io/v1", "Event", Some("ml")).len(), 1);
}
