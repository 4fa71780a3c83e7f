//! NodePrepareResources / NodeUnprepareResources for one claim at a time (design.md §6, §8).
//!
//! The plan file is the lease (see [`crate::leases`]): prepare reserves addresses under the lease
//! lock and commits by writing the plan atomically, batched with concurrent prepares; a crash
//! before the write leaves nothing, a crash after it leaves a plan that the retry returns
//! unchanged. On start the plans are reloaded and those whose claim no longer exists are released.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::resource::v1::{AllocatedDeviceStatus, NetworkDeviceData, ResourceClaim};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::{self, ObjectRef, Store};
use multinic_api::config::NetworkConfig;
use multinic_api::crd::{NicNodeBlocks, NicNodeBlocksSpec, node_blocks_name};
use multinic_api::names::{DRIVER_NAME, FIELD_MANAGER};
use multinic_api::plan::{Plan, PlanError, PlanStore};

use crate::cdi;
use crate::leases::Leases;
use crate::plan_builder::{
    BuildError, ClaimError, PlanInput, allocated_devices, build_plan, check_blocks, claim_pods, pool_networks,
    rails_networks,
};
use crate::pool::PoolState;
use crate::publish::DeviceTable;
use crate::status::{self, NodeStatus, StatusInputs, free_addresses};

/// A claim as the kubelet names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRef {
    pub namespace: String,
    pub uid: String,
    pub name: String,
}

impl std::fmt::Display for ClaimRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ResourceClaim {}/{} (uid {})", self.namespace, self.name, self.uid)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Kube(#[from] kube::Error),
}

#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error("{claim}: not found in the API server; it was deleted or the kubelet's view is stale")]
    ClaimNotFound { claim: Box<ClaimRef> },
    #[error(
        "{claim}: the API server has uid {found}; the claim was deleted and re-created, the kubelet will retry with the new one"
    )]
    UidMismatch { claim: Box<ClaimRef>, found: String },
    #[error("{claim}: {source}")]
    Claim { claim: Box<ClaimRef>, source: ClaimError },
    #[error("{claim}: {source}")]
    Build { claim: Box<ClaimRef>, source: BuildError },
    #[error("{claim}: {what}: {source}")]
    Api {
        claim: Box<ClaimRef>,
        what: &'static str,
        source: ApiError,
    },
    #[error("{claim}: {source}")]
    Plan { claim: Box<ClaimRef>, source: PlanError },
    #[error("{claim}: writing the CDI spec: {source}")]
    Cdi {
        claim: Box<ClaimRef>,
        source: std::io::Error,
    },
    #[error("{claim}: fault injected at {point:?}")]
    Fault { claim: Box<ClaimRef>, point: FaultPoint },
}

/// Named steps where tests make prepare or unprepare stop as if the process died there (the
/// error is returned without undoing anything). Only tests set [`DriverOptions::fault`]; the
/// binary always passes `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultPoint {
    /// Prepare: addresses chosen under the lease lock, plan not yet written.
    AfterLease,
    /// Prepare: plan written (the lease is taken), no CDI spec and no claim status yet.
    AfterPlanWrite,
    /// Prepare: claim status applied, the kubelet has not heard back.
    AfterStatusApply,
    /// Unprepare: our claim status entries cleared, CDI spec and plan still there.
    AfterStatusClear,
    /// Unprepare (and release at start): CDI spec removed, plan still there.
    AfterCdiRemove,
}

/// The API calls prepare and unprepare make.
pub trait ClaimApi: Send + Sync + 'static {
    fn get_claim(
        &self,
        namespace: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<ResourceClaim>, ApiError>> + Send;
    /// Server-side-applies our `status.devices` entries (an empty list removes ours). The uid is a
    /// precondition. `Ok(false)` when the claim is gone.
    fn apply_status(
        &self,
        claim: &ClaimRef,
        devices: Vec<AllocatedDeviceStatus>,
    ) -> impl Future<Output = Result<bool, ApiError>> + Send;
    fn get_node_blocks(&self, name: &str) -> impl Future<Output = Result<Option<NicNodeBlocks>, ApiError>> + Send;
    /// Records a `Warning` event regarding the claim (`events.k8s.io/v1`; a repeat of the same
    /// reason and note extends one event's series).
    fn warn(
        &self,
        claim: &ClaimRef,
        reason: &'static str,
        note: String,
    ) -> impl Future<Output = Result<(), ApiError>> + Send;
}

/// `reportingController` of the plugin's events.
pub const EVENT_REPORTER: &str = "multinic.dev/kubelet-plugin";
/// `events.k8s.io/v1` caps an event's note at 1 kB (`pkg/apis/events/validation`).
const EVENT_NOTE_MAX: usize = 1024;

/// [`ClaimApi`] over the API server.
#[derive(Clone)]
pub struct KubeClaimApi {
    client: kube::Client,
    recorder: Recorder,
}

impl KubeClaimApi {
    pub fn new(client: kube::Client) -> Self {
        let recorder = Recorder::new(client.clone(), EVENT_REPORTER.into());
        Self { client, recorder }
    }
}

impl ClaimApi for KubeClaimApi {
    async fn get_claim(&self, namespace: &str, name: &str) -> Result<Option<ResourceClaim>, ApiError> {
        Ok(Api::<ResourceClaim>::namespaced(self.client.clone(), namespace)
            .get_opt(name)
            .await?)
    }

    async fn apply_status(&self, claim: &ClaimRef, devices: Vec<AllocatedDeviceStatus>) -> Result<bool, ApiError> {
        let api = Api::<ResourceClaim>::namespaced(self.client.clone(), &claim.namespace);
        let body = serde_json::json!({
            "apiVersion": "resource.k8s.io/v1",
            "kind": "ResourceClaim",
            "metadata": {"name": claim.name, "namespace": claim.namespace, "uid": claim.uid},
            "status": {"devices": devices},
        });
        match api
            .patch_status(
                &claim.name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(body),
            )
            .await
        {
            Ok(_) => Ok(true),
            // Gone, or replaced by a claim of the same name (uid precondition).
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    async fn get_node_blocks(&self, name: &str) -> Result<Option<NicNodeBlocks>, ApiError> {
        Ok(Api::<NicNodeBlocks>::all(self.client.clone()).get_opt(name).await?)
    }

    async fn warn(&self, claim: &ClaimRef, reason: &'static str, note: String) -> Result<(), ApiError> {
        let regarding = ObjectReference {
            api_version: Some("resource.k8s.io/v1".into()),
            kind: Some("ResourceClaim".into()),
            namespace: Some(claim.namespace.clone()),
            name: Some(claim.name.clone()),
            uid: Some(claim.uid.clone()),
            ..Default::default()
        };
        let event = Event {
            type_: EventType::Warning,
            reason: reason.into(),
            note: Some(crate::slices::truncate_utf8(&note, EVENT_NOTE_MAX).to_string()),
            action: "Prepare".into(),
            secondary: None,
        };
        Ok(self.recorder.publish(&event, &regarding).await?)
    }
}

/// A device handed to the kubelet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedDevice {
    pub request: String,
    pub pool: String,
    pub device: String,
    pub cdi_device_ids: Vec<String>,
    /// The allocation's `shareID` (a device with `allowMultipleAllocations`), returned to the
    /// kubelet as `Device.share_id`.
    pub share_id: Option<String>,
}

/// `shareID` of each of our allocation results, by (request, device).
pub type ShareIds = HashMap<(String, String), String>;

/// The `shareID`s of the allocation results of `driver` in `pool`.
pub fn share_ids(rc: &ResourceClaim, driver: &str, pool: &str) -> ShareIds {
    rc.status
        .as_ref()
        .and_then(|s| s.allocation.as_ref())
        .and_then(|a| a.devices.as_ref())
        .and_then(|d| d.results.as_ref())
        .into_iter()
        .flatten()
        .filter(|r| r.driver == driver && r.pool == pool)
        .filter_map(|r| Some(((r.request.clone(), r.device.clone()), r.share_id.clone()?)))
        .collect()
}

/// Settings of the driver.
#[derive(Debug, Clone)]
pub struct DriverOptions {
    pub driver_name: String,
    pub node_name: String,
    pub state_dir: PathBuf,
    /// Where CDI specs for RDMA devices go (`/var/run/cdi`); `None` disables CDI.
    pub cdi_dir: Option<PathBuf>,
    /// Test-only fault injection: stop prepare/unprepare at this step as a crash would. The
    /// binary sets `None`; there is no flag or environment variable that sets it.
    pub fault: Option<FaultPoint>,
}

impl DriverOptions {
    /// The options of the driver [`DRIVER_NAME`] on `node_name`: plans in `state_dir`, CDI specs in
    /// `cdi_dir` (`None`: no CDI), no fault.
    pub fn new(node_name: impl Into<String>, state_dir: impl Into<PathBuf>, cdi_dir: Option<PathBuf>) -> Self {
        Self {
            driver_name: DRIVER_NAME.into(),
            node_name: node_name.into(),
            state_dir: state_dir.into(),
            cdi_dir,
            fault: None,
        }
    }
}

/// Prepares and unprepares claims on this node.
pub struct Driver<A> {
    api: A,
    table: DeviceTable,
    opts: DriverOptions,
    store: PlanStore,
    leases: Leases,
    /// NicNodeBlocks as the cluster watch sees them ([`crate::cluster::watch`], shared with the
    /// peer routes); empty until [`Driver::with_blocks`].
    blocks: Store<NicNodeBlocks>,
    /// The `pool` blocks decided to be given back, shared with [`crate::pool::run`].
    pool: Arc<PoolState>,
}

impl<A: ClaimApi> Driver<A> {
    /// Loads the plans of the state dir; their addresses are leased again.
    pub fn new(api: A, table: DeviceTable, opts: DriverOptions) -> Result<Self, PlanError> {
        let store = PlanStore::new(&opts.state_dir);
        let (plans, errors) = store.load_all()?;
        for error in errors {
            tracing::error!(%error, "unreadable plan file left in place; its addresses are not leased");
        }
        for plan in &plans {
            table.hold(plan);
        }
        Ok(Self {
            api,
            table,
            opts,
            leases: Leases::new(store.clone(), plans),
            store,
            blocks: reflector::store().0,
            pool: Arc::default(),
        })
    }

    /// Reads the node's blocks from `blocks` (a watch-backed store) instead of the API server;
    /// a block the store does not hold yet, or one that fails the network's checks, is read from
    /// the API server (the watch may lag a just-created or re-created network).
    pub fn with_blocks(mut self, blocks: Store<NicNodeBlocks>) -> Self {
        self.blocks = blocks;
        self
    }

    /// The node's `pool` state ([`crate::pool`]).
    pub fn pool(&self) -> Arc<PoolState> {
        self.pool.clone()
    }

    /// The node's leases.
    pub fn leases(&self) -> &Leases {
        &self.leases
    }

    /// The published devices this driver prepares.
    pub fn table(&self) -> DeviceTable {
        self.table.clone()
    }

    /// The node (and pool) this driver serves.
    pub fn node_name(&self) -> &str {
        &self.opts.node_name
    }

    /// Claim UIDs with a plan.
    pub async fn prepared_claims(&self) -> Vec<String> {
        self.leases.plans().await.into_iter().map(|p| p.claim_uid).collect()
    }

    /// Every leased address.
    pub async fn leased(&self) -> HashSet<IpAddr> {
        self.leases.used().await.into_iter().collect()
    }

    /// Free addresses per (network, rail) over this node's blocks in the watch-backed store; for a
    /// dual-stack rail the fewer of its two blocks (a pod needs one address of each).
    pub async fn free_per_rail(&self) -> BTreeMap<(String, u32), u64> {
        let used = self.leases.used().await;
        let mut free = BTreeMap::new();
        for nb in self
            .blocks
            .state()
            .iter()
            .filter(|nb| nb.spec.node_name == self.opts.node_name)
        {
            for b in &nb.spec.blocks {
                let n = free_addresses(b.cidr, &used);
                free.entry((nb.spec.network.clone(), b.rail_index))
                    .and_modify(|f: &mut u64| *f = (*f).min(n))
                    .or_insert(n);
            }
        }
        free
    }

    /// What the node ledger holds ([`crate::status`]): the device table, the plans, and this
    /// node's blocks in the watch-backed store with their free addresses.
    pub async fn status(&self) -> NodeStatus {
        let plans = self.leases.plans().await;
        let used = self.leases.used().await;
        let blocks: Vec<NicNodeBlocksSpec> = self.blocks.state().iter().map(|nb| nb.spec.clone()).collect();
        status::build(StatusInputs {
            node: &self.opts.node_name,
            devices: &self.table.all(),
            plans: &plans,
            used: &used,
            blocks: &blocks,
        })
    }

    /// Releases the plans whose claim is gone (or was re-created). API errors keep the plan.
    pub async fn reconcile(&self) -> usize {
        let plans = self.leases.plans().await;
        let mut released = 0;
        for plan in plans {
            let claim = ClaimRef {
                namespace: plan.namespace.clone(),
                uid: plan.claim_uid.clone(),
                name: plan.name.clone(),
            };
            match self.api.get_claim(&claim.namespace, &claim.name).await {
                Ok(Some(c)) if c.metadata.uid.as_deref() == Some(claim.uid.as_str()) => {}
                Ok(_) => match self.release(&claim).await {
                    Ok(()) => {
                        released += 1;
                        tracing::info!(%claim, "claim is gone; released its plan and addresses");
                    }
                    Err(error) => tracing::warn!(%claim, %error, "releasing a stale plan failed"),
                },
                Err(error) => tracing::warn!(%claim, %error, "cannot check claim; keeping its plan"),
            }
        }
        released
    }

    fn fault(&self, claim: &ClaimRef, point: FaultPoint) -> Result<(), PrepareError> {
        if self.opts.fault == Some(point) {
            return Err(PrepareError::Fault {
                claim: Box::new(claim.clone()),
                point,
            });
        }
        Ok(())
    }

    /// Prepares one claim; idempotent.
    /// Prepares the claim. A failure of a claim that exists is also recorded as a `Warning` event
    /// (reason `PrepareFailed`) on the claim, so `kubectl describe resourceclaim` shows the cause
    /// and the fix; the event is best effort and never delays the answer more than a second.
    pub async fn prepare(&self, claim: &ClaimRef) -> Result<Vec<PreparedDevice>, PrepareError> {
        let result = self.prepare_claim(claim).await;
        if let Err(error) = &result
            && !matches!(
                error,
                PrepareError::ClaimNotFound { .. } | PrepareError::UidMismatch { .. } | PrepareError::Api { .. }
            )
        {
            let sent = tokio::time::timeout(
                std::time::Duration::from_secs(1),
                self.api.warn(claim, "PrepareFailed", error.to_string()),
            )
            .await;
            match sent {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(%claim, error = %e, "event for the failed prepare not recorded"),
                Err(_) => tracing::debug!(%claim, "event for the failed prepare timed out"),
            }
        }
        result
    }

    async fn prepare_claim(&self, claim: &ClaimRef) -> Result<Vec<PreparedDevice>, PrepareError> {
        let api_err = |what, source| PrepareError::Api {
            claim: Box::new(claim.clone()),
            what,
            source,
        };
        let rc = self
            .api
            .get_claim(&claim.namespace, &claim.name)
            .await
            .map_err(|e| api_err("reading the claim", e))?
            .ok_or_else(|| PrepareError::ClaimNotFound {
                claim: Box::new(claim.clone()),
            })?;
        let found = rc.metadata.uid.clone().unwrap_or_default();
        if found != claim.uid {
            return Err(PrepareError::UidMismatch {
                claim: Box::new(claim.clone()),
                found,
            });
        }
        let existing = self.leases.get(&claim.uid).await;
        let plan = match existing {
            Some(plan) => plan,
            None => {
                let input = self.plan_input(claim, &rc).await?;
                let build = |used: &BTreeSet<IpAddr>| {
                    // Under the lease lock, as the pool decision: a block retired by then is out.
                    let input = match input.pool.is_empty() {
                        true => input.clone(),
                        false => input.without_retired(|network| self.pool.retired(network)),
                    };
                    let plan = build_plan(&input, used).map_err(|source| PrepareError::Build {
                        claim: Box::new(claim.clone()),
                        source,
                    });
                    if !input.pool.is_empty() {
                        // Fewer free addresses (or none): the node may need another block.
                        self.pool.wake();
                    }
                    let plan = plan?;
                    self.fault(claim, FaultPoint::AfterLease)?;
                    Ok(plan)
                };
                let write_err = |source| PrepareError::Plan {
                    claim: Box::new(claim.clone()),
                    source,
                };
                self.leases.lease(&claim.uid, build, write_err).await?
            }
        };
        self.table.hold(&plan);
        self.fault(claim, FaultPoint::AfterPlanWrite)?;
        let shares = share_ids(&rc, &self.opts.driver_name, &self.opts.node_name);
        let cdi_ids = match &self.opts.cdi_dir {
            Some(dir) => {
                cdi::write_spec(dir, &self.opts.driver_name, &plan, &self.table, &shares).map_err(|source| {
                    PrepareError::Cdi {
                        claim: Box::new(claim.clone()),
                        source,
                    }
                })?
            }
            None => BTreeMap::new(),
        };
        let applied = self
            .api
            .apply_status(claim, status_entries(&self.opts.driver_name, &plan, &shares))
            .await;
        if !applied.map_err(|e| api_err("writing the claim status", e))? {
            return Err(PrepareError::ClaimNotFound {
                claim: Box::new(claim.clone()),
            });
        }
        self.fault(claim, FaultPoint::AfterStatusApply)?;
        Ok(plan
            .devices
            .iter()
            .map(|d| PreparedDevice {
                request: d.request.clone(),
                pool: d.pool.clone(),
                device: d.device.clone(),
                cdi_device_ids: cdi_ids.get(&d.device).cloned().into_iter().collect(),
                share_id: shares.get(&(d.request.clone(), d.device.clone())).cloned(),
            })
            .collect())
    }

    /// Unprepares one claim; unknown claims are success.
    pub async fn unprepare(&self, claim: &ClaimRef) -> Result<(), PrepareError> {
        if multinic_api::plan::validate_uid(&claim.uid).is_err() {
            return Ok(());
        }
        let known = self.leases.get(&claim.uid).await.is_some();
        if !known {
            return Ok(());
        }
        self.api
            .apply_status(claim, Vec::new())
            .await
            .map_err(|source| PrepareError::Api {
                claim: Box::new(claim.clone()),
                what: "clearing the claim status",
                source,
            })?;
        self.fault(claim, FaultPoint::AfterStatusClear)?;
        self.release(claim).await
    }

    async fn release(&self, claim: &ClaimRef) -> Result<(), PrepareError> {
        if let Some(dir) = &self.opts.cdi_dir {
            cdi::remove_spec(dir, &self.opts.driver_name, &claim.uid).map_err(|source| PrepareError::Cdi {
                claim: Box::new(claim.clone()),
                source,
            })?;
        }
        self.fault(claim, FaultPoint::AfterCdiRemove)?;
        self.leases
            .release(&claim.uid, |plan| {
                self.store.remove(plan).map_err(|source| PrepareError::Plan {
                    claim: Box::new(claim.clone()),
                    source,
                })
            })
            .await?;
        self.table.release(&claim.uid);
        // Freed addresses: a pool block may be empty now.
        self.pool.wake();
        Ok(())
    }

    /// Reads everything the plan depends on from the claim (no lock held): the claim's devices
    /// and pods, and the node's blocks of its `rails` networks.
    async fn plan_input(&self, claim: &ClaimRef, rc: &ResourceClaim) -> Result<PlanInput, PrepareError> {
        let devices = allocated_devices(rc, &self.opts.driver_name, &self.opts.node_name, |d| self.table.get(d))
            .map_err(|source| PrepareError::Claim {
                claim: Box::new(claim.clone()),
                source,
            })?;
        let mut blocks = BTreeMap::new();
        for (network, config) in rails_networks(&devices) {
            if let Some(checked) = self.checked_blocks(claim, network, config).await? {
                blocks.insert(network.to_string(), checked);
            }
        }
        let mut pool = BTreeMap::new();
        for (network, config) in pool_networks(&devices) {
            pool.insert(network.to_string(), self.pool_blocks(claim, network, config).await?);
        }
        Ok(PlanInput {
            claim_uid: claim.uid.clone(),
            namespace: claim.namespace.clone(),
            name: claim.name.clone(),
            pods: claim_pods(rc),
            devices,
            blocks,
            pool,
        })
    }

    /// The granted blocks of a `pool` network prepare may allocate from (retired ones are taken
    /// out under the lease lock), from the watch-backed store, or read from the API server when
    /// the store does not hold the node's object yet (none: no block granted yet).
    async fn pool_blocks(
        &self,
        claim: &ClaimRef,
        network: &str,
        config: &NetworkConfig,
    ) -> Result<Vec<IpNet>, PrepareError> {
        let layout = config.pool_layout().map_err(|e| PrepareError::Build {
            claim: Box::new(claim.clone()),
            source: BuildError::PoolConfig {
                network: network.to_string(),
                message: e.to_string(),
            },
        })?;
        let name = node_blocks_name(network, &self.opts.node_name);
        let object = match self.blocks.get(&ObjectRef::new(&name)) {
            Some(watched) => Some(watched.as_ref().clone()),
            None => self.read_node_blocks(claim, &name).await?,
        };
        Ok(object.map_or_else(Vec::new, |nb| {
            let released = nb.status.unwrap_or_default().released_blocks;
            crate::pool::usable_blocks(&layout, &nb.spec.granted_blocks, &released, &Default::default())
        }))
    }

    /// The NicNodeBlocks `name` as the API server has it now.
    async fn read_node_blocks(&self, claim: &ClaimRef, name: &str) -> Result<Option<NicNodeBlocks>, PrepareError> {
        self.api
            .get_node_blocks(name)
            .await
            .map_err(|source| PrepareError::Api {
                claim: Box::new(claim.clone()),
                what: "reading NicNodeBlocks",
                source,
            })
    }

    /// The node's blocks of a `rails` network checked against the config; `None` when the node has
    /// none. From the watch-backed store when it holds them and they pass the check; otherwise
    /// (not seen yet, or predating a re-created network) read from the API server.
    async fn checked_blocks(
        &self,
        claim: &ClaimRef,
        network: &str,
        config: &NetworkConfig,
    ) -> Result<Option<BTreeMap<u32, Vec<IpNet>>>, PrepareError> {
        let name = node_blocks_name(network, &self.opts.node_name);
        if let Some(watched) = self.blocks.get(&ObjectRef::new(&name))
            && let Ok(checked) = check_blocks(config, &watched.spec.blocks)
        {
            return Ok(Some(checked));
        }
        let Some(fresh) = self.read_node_blocks(claim, &name).await? else {
            return Ok(None);
        };
        check_blocks(config, &fresh.spec.blocks)
            .map(Some)
            .map_err(|source| PrepareError::Build {
                claim: Box::new(claim.clone()),
                source,
            })
    }
}

/// Our `status.devices` entries for a plan; each carries its allocation's `shareID`, since the API
/// server matches an entry to an allocation result by driver, pool, device and shareID.
pub fn status_entries(driver: &str, plan: &Plan, shares: &ShareIds) -> Vec<AllocatedDeviceStatus> {
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    plan.devices
        .iter()
        .map(|d| AllocatedDeviceStatus {
            driver: driver.to_string(),
            pool: d.pool.clone(),
            device: d.device.clone(),
            share_id: shares.get(&(d.request.clone(), d.device.clone())).cloned(),
            network_data: Some(NetworkDeviceData {
                interface_name: Some(d.pod_if_name.clone()),
                ips: Some(d.ips.iter().map(|ip| ip.to_string()).collect()),
                hardware_address: d.mac.clone(),
            }),
            conditions: Some(vec![Condition {
                type_: "Ready".into(),
                status: "True".into(),
                reason: "Prepared".into(),
                message: format!("{} via {} as {}", d.device, d.mode.as_str(), d.pod_if_name),
                last_transition_time: now.clone(),
                observed_generation: None,
            }]),
            ..Default::default()
        })
        .collect()
}
