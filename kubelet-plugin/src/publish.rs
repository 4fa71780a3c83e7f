//! Publishing the node's pool: server-side apply of every slice at a new generation, then deletion of
//! the slices the new generation no longer has; republished on rtnetlink events (debounced) and on a
//! periodic resync.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::resource::v1::{Device, ResourceSlice};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use multinic_api::names::FIELD_MANAGER;
use multinic_api::retry::{Backoff, RepeatGate};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::health::HealthInputs;
use crate::inventory::{self, Filters, Inventory, SysfsReader};
use crate::ledger::{DeviceLedger, LedgerError, LedgerFile};
use crate::slices::{PublishedDevice, SliceOptions, build_rail_devices, build_slices, device_name, validate_device};

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("listing ResourceSlices of pool {pool}: {source}")]
    List { pool: String, source: kube::Error },
    #[error(
        "applying ResourceSlice {name}: {source}; check the plugin's RBAC (resourceslices: patch) and the API server log"
    )]
    Apply { name: String, source: kube::Error },
    #[error("deleting stale ResourceSlice {name}: {source}")]
    Delete { name: String, source: kube::Error },
    #[error("reading the inventory: {0}")]
    Inventory(#[from] inventory::netlink::NetlinkError),
    #[error("{0}")]
    Ledger(#[from] LedgerError),
}

impl PublishError {
    /// The API server refused a shared device's consumable capacity: with DRAConsumableCapacity
    /// off it drops `allowMultipleAllocations`, and then validation forbids a `requestPolicy`
    /// ("allowMultipleAllocations must be true", `validateSingleAllocatableDeviceCapacity`,
    /// kubernetes `pkg/apis/resource/validation/validation.go`).
    fn refuses_sharing(&self) -> bool {
        matches!(self, Self::Apply { source: kube::Error::Api(s), .. }
            if s.code == 422 && s.message.contains("allowMultipleAllocations"))
    }
}

/// Whether the API server stored `sent` without the `allowMultipleAllocations` of a device that
/// asked for it: what it does with the DRAConsumableCapacity feature off (the field is dropped on
/// write, `dropDisabledFields` of the ResourceSlice strategy).
pub fn sharing_dropped(sent: &ResourceSlice, stored: &ResourceSlice) -> bool {
    let kept: BTreeSet<&str> = stored
        .spec
        .devices
        .iter()
        .flatten()
        .filter(|d| d.allow_multiple_allocations == Some(true))
        .map(|d| d.name.as_str())
        .collect();
    sent.spec
        .devices
        .iter()
        .flatten()
        .any(|d| d.allow_multiple_allocations == Some(true) && !kept.contains(d.name.as_str()))
}

/// Where slices go. Implemented for the API server and in memory (tests, dry runs).
pub trait SliceStore: Send + Sync {
    /// The slices of our driver on this node.
    fn list_pool(&self, opts: &SliceOptions) -> impl Future<Output = Result<Vec<ResourceSlice>, PublishError>> + Send;
    /// Returns the slice as stored (the API server may drop fields it does not know).
    fn apply(&self, slice: &ResourceSlice) -> impl Future<Output = Result<ResourceSlice, PublishError>> + Send;
    /// Deleting a missing slice is success.
    fn delete(&self, name: &str) -> impl Future<Output = Result<(), PublishError>> + Send;
}

/// The API server, through server-side apply with our field manager.
#[derive(Clone)]
pub struct KubeSliceStore {
    api: Api<ResourceSlice>,
}

impl KubeSliceStore {
    pub fn new(client: kube::Client) -> Self {
        Self { api: Api::all(client) }
    }

    /// Yields the names of the pool's slices that are deleted. The kubelet deletes a node's
    /// slices when it starts and when a driver stays unregistered (kubernetes v1.36.3
    /// `pkg/kubelet/cm/dra/plugin/dra_plugin_manager.go`, `wipeResourceSlices`), also after we
    /// registered again; [`Publisher::republish_if_ours`] then publishes the pool again. One
    /// watch, with kube-runtime's backoff and bounded logging.
    pub fn deleted_slices(&self, opts: &SliceOptions) -> impl Stream<Item = String> + Send + 'static {
        use kube::runtime::{WatchStreamExt, watcher};
        let fields = format!("spec.driver={},spec.nodeName={}", opts.driver, opts.node_name);
        let mut gate = RepeatGate::default();
        watcher(self.api.clone(), watcher::Config::default().fields(&fields))
            .default_backoff()
            .filter_map(move |event| {
                let deleted = match event {
                    Ok(watcher::Event::Delete(slice)) => {
                        gate.success();
                        slice.metadata.name
                    }
                    Ok(_) => {
                        if let Some(failures) = gate.success() {
                            tracing::info!(failures, "ResourceSlice watch works again");
                        }
                        None
                    }
                    Err(error) => {
                        if let Some(not_logged) = gate.failure(std::time::Instant::now()) {
                            tracing::warn!(%error, not_logged, "ResourceSlice watch failed; retrying with backoff");
                        }
                        None
                    }
                };
                futures::future::ready(deleted)
            })
    }
}

impl SliceStore for KubeSliceStore {
    async fn list_pool(&self, opts: &SliceOptions) -> Result<Vec<ResourceSlice>, PublishError> {
        let fields = format!("spec.driver={},spec.nodeName={}", opts.driver, opts.node_name);
        let list = self
            .api
            .list(&ListParams::default().fields(&fields))
            .await
            .map_err(|source| PublishError::List {
                pool: opts.node_name.clone(),
                source,
            })?;
        Ok(list.items)
    }

    async fn apply(&self, slice: &ResourceSlice) -> Result<ResourceSlice, PublishError> {
        let name = slice.metadata.name.clone().unwrap_or_default();
        let mut body = slice.clone();
        body.metadata.managed_fields = None;
        body.metadata.resource_version = None;
        let value = serde_json::json!({
            "apiVersion": "resource.k8s.io/v1",
            "kind": "ResourceSlice",
            "metadata": {"name": name},
            "spec": body.spec,
        });
        self.api
            .patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(value))
            .await
            .map_err(|source| PublishError::Apply { name, source })
    }

    async fn delete(&self, name: &str) -> Result<(), PublishError> {
        match self.api.delete(name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(source) => Err(PublishError::Delete {
                name: name.to_string(),
                source,
            }),
        }
    }
}

/// Slices kept in memory; `changes()` ticks on every write.
#[derive(Clone, Default)]
pub struct MemorySliceStore {
    slices: Arc<Mutex<BTreeMap<String, ResourceSlice>>>,
    version: Arc<watch::Sender<u64>>,
    without_consumable_capacity: bool,
}

impl MemorySliceStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores slices as an API server with DRAConsumableCapacity off does: without
    /// `allowMultipleAllocations`.
    pub fn without_consumable_capacity() -> Self {
        Self {
            without_consumable_capacity: true,
            ..Self::default()
        }
    }

    /// Every stored slice, by name.
    pub fn slices(&self) -> BTreeMap<String, ResourceSlice> {
        self.slices.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Device names over all stored slices.
    pub fn device_names(&self) -> BTreeSet<String> {
        self.slices()
            .values()
            .flat_map(|s| s.spec.devices.iter().flatten().map(|d| d.name.clone()))
            .collect()
    }

    pub fn changes(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    fn write(&self, f: impl FnOnce(&mut BTreeMap<String, ResourceSlice>)) {
        if let Ok(mut slices) = self.slices.lock() {
            f(&mut slices);
        }
        self.version.send_modify(|v| *v += 1);
    }
}

impl SliceStore for MemorySliceStore {
    async fn list_pool(&self, opts: &SliceOptions) -> Result<Vec<ResourceSlice>, PublishError> {
        Ok(self
            .slices()
            .into_values()
            .filter(|s| s.spec.driver == opts.driver && s.spec.node_name.as_deref() == Some(opts.node_name.as_str()))
            .collect())
    }

    async fn apply(&self, slice: &ResourceSlice) -> Result<ResourceSlice, PublishError> {
        let name = slice.metadata.name.clone().unwrap_or_default();
        let mut stored = slice.clone();
        if self.without_consumable_capacity {
            for d in stored.spec.devices.iter_mut().flatten() {
                d.allow_multiple_allocations = None;
            }
        }
        self.write(|s| {
            s.insert(name, stored.clone());
        });
        Ok(stored)
    }

    async fn delete(&self, name: &str) -> Result<(), PublishError> {
        self.write(|s| {
            s.remove(name);
        });
        Ok(())
    }
}

/// One publish pass: done, or stopped because the API server refused shared devices (the next
/// pass publishes them unshared; `state` is `None`, so it starts from a list of the pool).
enum Attempt {
    Done(PublishOutcome),
    SharingRefused,
}

/// What a publish did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishOutcome {
    Unchanged,
    Published {
        generation: i64,
        slices: usize,
        devices: usize,
    },
}

#[derive(Debug, Clone)]
struct Published {
    generation: i64,
    devices: Vec<Device>,
    names: BTreeSet<String>,
}

/// The published devices, by device name: what `NodePrepareResources` may hand out. Also carries
/// the device names that plans hold (kept by the driver), so a NIC that moved into a pod stays
/// published.
#[derive(Clone)]
pub struct DeviceTable {
    inner: Arc<std::sync::RwLock<Option<BTreeMap<String, PublishedDevice>>>>,
    /// Bumped whenever the contents change (the first inventory included).
    version: Arc<tokio::sync::watch::Sender<u64>>,
    /// Device names held by each plan, by claim UID, each with whether the pod has a child link
    /// of it (the NIC stays on the host) rather than the NIC itself.
    held: Arc<std::sync::RwLock<Held>>,
}

/// Claim UID → (device name, the pod has a child link of it).
type Held = BTreeMap<String, Vec<(String, bool)>>;

impl DeviceTable {
    /// Records the devices a plan holds (idempotent: the same claim replaces its entry).
    pub fn hold(&self, plan: &multinic_api::plan::Plan) {
        if let Ok(mut held) = self.held.write() {
            let names = plan
                .devices
                .iter()
                .map(|d| (d.device.clone(), d.mode.is_shared()))
                .collect();
            held.insert(plan.claim_uid.clone(), names);
        }
    }

    /// Forgets the devices of a released claim.
    pub fn release(&self, claim_uid: &str) {
        if let Ok(mut held) = self.held.write() {
            held.remove(claim_uid);
        }
    }

    /// Every device name some plan holds.
    pub fn in_pods(&self) -> BTreeSet<String> {
        self.held_where(|_| true)
    }

    /// The device names plans hold as the parent of a pod's child link.
    pub fn parents(&self) -> BTreeSet<String> {
        self.held_where(|child| child)
    }

    fn held_where(&self, keep: impl Fn(bool) -> bool) -> BTreeSet<String> {
        self.held
            .read()
            .map(|h| {
                h.values()
                    .flatten()
                    .filter(|(_, child)| keep(*child))
                    .map(|(name, _)| name.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn get(&self, name: &str) -> Option<PublishedDevice> {
        self.inner.read().ok()?.as_ref()?.get(name).cloned()
    }

    /// Number of devices, `None` before the first inventory.
    pub fn device_count(&self) -> Option<usize> {
        self.inner.read().ok()?.as_ref().map(BTreeMap::len)
    }

    /// Every device of the last inventory.
    pub fn all(&self) -> Vec<PublishedDevice> {
        self.inner
            .read()
            .ok()
            .and_then(|t| t.as_ref().map(|m| m.values().cloned().collect()))
            .unwrap_or_default()
    }

    pub fn set(&self, devices: &[PublishedDevice]) {
        let next: BTreeMap<String, PublishedDevice> =
            devices.iter().map(|d| (d.device.name.clone(), d.clone())).collect();
        let changed = match self.inner.write() {
            Ok(mut table) if table.as_ref() != Some(&next) => {
                *table = Some(next);
                true
            }
            _ => false,
        };
        if changed {
            self.version.send_modify(|v| *v = v.wrapping_add(1));
        }
    }

    /// Waits until the first inventory has been read.
    pub async fn wait_ready(&self) {
        let mut version = self.version.subscribe();
        while self.device_count().is_none() {
            if version.changed().await.is_err() {
                return;
            }
        }
    }

    /// One item after each change of the table's contents (a NIC appeared, went, moved into a
    /// pod or came back); changes in a burst may arrive as one item.
    pub fn changes(&self) -> impl futures::Stream<Item = ()> + Send + 'static {
        futures::stream::unfold(self.version.subscribe(), |mut rx| async move {
            rx.changed().await.ok()?;
            Some(((), rx))
        })
    }
}

impl Default for DeviceTable {
    fn default() -> Self {
        Self {
            inner: Arc::default(),
            version: Arc::new(tokio::sync::watch::Sender::new(0)),
            held: Arc::default(),
        }
    }
}

/// Publishes the node's pool, bumping the generation on every change. The rails come from the
/// node ledger ([`crate::ledger`]); with [`Publisher::with_ledger_file`] it persists across
/// restarts, otherwise it lives as long as the publisher (tests, `multinic inventory`).
pub struct Publisher<S> {
    store: S,
    opts: SliceOptions,
    state: tokio::sync::Mutex<Option<Published>>,
    table: DeviceTable,
    ledger: std::sync::Mutex<DeviceLedger>,
    ledger_file: Option<LedgerFile>,
    /// Set once the API server refused shared devices (DRAConsumableCapacity off): from then on
    /// the NICs are published unshared, one claim per NIC.
    sharing_refused: AtomicBool,
}

impl<S: SliceStore> Publisher<S> {
    pub fn new(store: S, opts: SliceOptions) -> Self {
        Self {
            store,
            opts,
            state: tokio::sync::Mutex::new(None),
            table: DeviceTable::default(),
            ledger: std::sync::Mutex::new(DeviceLedger::default()),
            ledger_file: None,
            sharing_refused: AtomicBool::new(false),
        }
    }

    /// When a slice we published is deleted behind our back, forgets what was published so the
    /// next publish lists the pool and applies every slice again. Returns whether it was ours
    /// (the slices of older generations that we delete ourselves are not).
    pub async fn republish_if_ours(&self, deleted: &str) -> bool {
        let mut state = self.state.lock().await;
        let ours = state.as_ref().is_some_and(|p| p.names.contains(deleted));
        if ours {
            tracing::warn!(
                slice = deleted,
                "a published ResourceSlice was deleted (kubelet restart?); publishing again"
            );
            *state = None;
        }
        ours
    }

    /// Keeps the ledger in `file`, starting from what it holds.
    pub fn with_ledger_file(mut self, file: LedgerFile) -> Result<Self, LedgerError> {
        self.ledger = std::sync::Mutex::new(file.load()?);
        self.ledger_file = Some(file);
        Ok(self)
    }

    /// The node ledger's devices now.
    pub fn ledger(&self) -> DeviceLedger {
        self.ledger
            .lock()
            .map(|l| l.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Records the live NICs in the ledger (persisting any change before it is published) and
    /// returns the devices to publish: the NICs on the host and the ones plans hold, in rail order.
    fn rails(&self, inventory: &Inventory) -> Result<Vec<PublishedDevice>, PublishError> {
        let mut ledger = self.ledger.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = ledger.clone();
        if next.observe(&inventory.nics)
            && let Some(file) = &self.ledger_file
        {
            // A rail is written down before anyone can see it.
            file.store(&next)?;
        }
        *ledger = next;
        let rails = ledger.rails(&inventory.nics, &self.table.in_pods(), device_name);
        let parents = self.table.parents();
        let health = HealthInputs {
            links: &inventory.links,
            parents: &parents,
        };
        Ok(build_rail_devices(&rails, &self.slice_options(), health))
    }

    /// The options devices are built with: shared mode only while the API server takes it.
    fn slice_options(&self) -> SliceOptions {
        let mut opts = self.opts.clone();
        if self.sharing_refused.load(Ordering::Relaxed) {
            opts.shared_pods = None;
        }
        opts
    }

    /// Whether devices are published shared (`--shared-pods` given and the API server takes it).
    pub fn sharing(&self) -> bool {
        self.opts.shared_pods.is_some() && !self.sharing_refused.load(Ordering::Relaxed)
    }

    /// The devices of the last inventory (updated even when publishing fails).
    pub fn table(&self) -> DeviceTable {
        self.table.clone()
    }

    /// Publishes the NICs if they differ from what was last published. In shared mode, when the
    /// API server turns out not to take shared devices, publishes them again unshared.
    pub async fn publish(&self, inventory: &Inventory) -> Result<PublishOutcome, PublishError> {
        // Ends: once sharing is refused, a pass never asks for it again.
        loop {
            match self.publish_once(inventory).await? {
                Attempt::Done(outcome) => return Ok(outcome),
                Attempt::SharingRefused => {
                    tracing::warn!(
                        pool = %self.opts.node_name,
                        "the API server does not keep allowMultipleAllocations (feature gate DRAConsumableCapacity off): \
                         publishing every NIC unshared, one claim per NIC; turn the gate on in kube-apiserver, \
                         kube-scheduler and kube-controller-manager, or drop --shared-pods"
                    );
                    self.sharing_refused.store(true, Ordering::Relaxed);
                }
            }
        }
    }

    async fn publish_once(&self, inventory: &Inventory) -> Result<Attempt, PublishError> {
        let table: Vec<PublishedDevice> = self
            .rails(inventory)?
            .into_iter()
            .filter(|d| {
                let errors = validate_device(&d.device);
                if !errors.is_empty() {
                    tracing::error!(device = %d.device.name, ?errors, "device fails API validation; not published");
                }
                errors.is_empty()
            })
            .collect();
        self.table.set(&table);
        let devices: Vec<Device> = table.into_iter().map(|d| d.device).collect();
        let mut state = self.state.lock().await;
        if state.as_ref().is_some_and(|p| p.devices == devices) {
            return Ok(Attempt::Done(PublishOutcome::Unchanged));
        }
        let (generation, old_names) = match state.take() {
            Some(p) => (p.generation + 1, p.names),
            None => {
                let existing = self.store.list_pool(&self.opts).await?;
                let generation = existing
                    .iter()
                    .map(|s| s.spec.pool.generation)
                    .max()
                    .map_or(1, |g| g + 1);
                (
                    generation,
                    existing.into_iter().filter_map(|s| s.metadata.name).collect(),
                )
            }
        };
        // On any failure below `state` stays `None`, so the next attempt lists the pool again.
        let slices = build_slices(&devices, &self.opts, generation);
        let shared = self.sharing();
        for slice in &slices {
            match self.store.apply(slice).await {
                Ok(stored) if shared && sharing_dropped(slice, &stored) => return Ok(Attempt::SharingRefused),
                Ok(_) => {}
                Err(e) if shared && e.refuses_sharing() => return Ok(Attempt::SharingRefused),
                Err(e) => return Err(e),
            }
        }
        let names: BTreeSet<String> = slices.iter().filter_map(|s| s.metadata.name.clone()).collect();
        for stale in old_names.difference(&names) {
            self.store.delete(stale).await?;
        }
        let outcome = PublishOutcome::Published {
            generation,
            slices: slices.len(),
            devices: devices.len(),
        };
        tracing::info!(pool = %self.opts.node_name, generation, slices = slices.len(), devices = devices.len(), "published ResourceSlices");
        *state = Some(Published {
            generation,
            devices,
            names,
        });
        Ok(Attempt::Done(outcome))
    }
}

/// Reads the inventory of the socket's network namespace.
#[derive(Clone)]
pub struct InventorySource {
    pub handle: rtnetlink::Handle,
    pub sysfs: SysfsReader,
    pub filters: Filters,
}

impl InventorySource {
    pub async fn read(&self) -> Result<Inventory, PublishError> {
        let snapshot = inventory::netlink::read_snapshot(&self.handle).await?;
        Ok(inventory::collect(&snapshot, &self.sysfs, &self.filters))
    }
}

/// First and longest delay before retrying a failed publish. The cap keeps a returning API server
/// from waiting long for the node's slices (it sees them within this time plus one publish).
pub const PUBLISH_RETRY_MIN: Duration = Duration::from_millis(500);
pub const PUBLISH_RETRY_MAX: Duration = Duration::from_secs(4);

/// Timing of the republish loop.
#[derive(Debug, Clone, Copy)]
pub struct LoopTiming {
    /// Quiet time after the last rtnetlink event before republishing.
    pub debounce: Duration,
    /// Republish at least this often (failures are retried sooner, with backoff).
    pub resync: Duration,
}

impl Default for LoopTiming {
    fn default() -> Self {
        Self {
            debounce: Duration::from_millis(250),
            resync: Duration::from_secs(60),
        }
    }
}

/// Publishes now, then again after each burst of `events`, after one of our slices was deleted
/// by someone else (`deleted`: slice names), and on every resync, until `events` ends.
pub async fn run_publish_loop<S: SliceStore>(
    publisher: &Publisher<S>,
    source: &InventorySource,
    mut events: impl Stream<Item = ()> + Unpin,
    mut deleted: impl Stream<Item = String> + Unpin,
    timing: LoopTiming,
) {
    let mut due = Some(Instant::now());
    let mut resync = tokio::time::interval_at(Instant::now() + timing.resync, timing.resync);
    let mut backoff = Backoff::new(PUBLISH_RETRY_MIN, PUBLISH_RETRY_MAX);
    let mut gate = RepeatGate::default();
    loop {
        let wait = async {
            match due {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            event = events.next() => match event {
                Some(()) => due = Some(Instant::now() + timing.debounce),
                None => return,
            },
            () = wait => {
                due = None;
                match republish(publisher, source).await {
                    Ok(()) => {
                        backoff.reset();
                        if let Some(failures) = gate.success() {
                            tracing::info!(failures, "publishing works again");
                        }
                    }
                    Err(error) => {
                        let retry_in = backoff.next_delay();
                        if let Some(not_logged) = gate.failure(std::time::Instant::now()) {
                            tracing::warn!(%error, ?retry_in, not_logged, "publishing failed; retrying");
                        }
                        due = Some(Instant::now() + retry_in);
                    }
                }
            }
            _ = resync.tick() => due = Some(Instant::now()),
            Some(name) = deleted.next() => {
                if publisher.republish_if_ours(&name).await {
                    due = Some(Instant::now());
                }
            }
        }
    }
}

async fn republish<S: SliceStore>(publisher: &Publisher<S>, source: &InventorySource) -> Result<(), PublishError> {
    let inventory = source.read().await?;
    for (name, reason) in &inventory.excluded {
        tracing::debug!(interface = %name, ?reason, "not published");
    }
    publisher.publish(&inventory).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::Nic;
    use crate::ledger::Presence;
    use crate::slices::tests::nic;

    fn inv(n: usize) -> Inventory {
        Inventory {
            nics: (0..n).map(nic).collect(),
            ..Default::default()
        }
    }

    /// Issue 16.3: a NIC whose carrier drops is published with the `NoSchedule` taint and reported
    /// unhealthy to the kubelet; with the carrier back both go, and the table signals each change.
    #[tokio::test]
    async fn carrier_down_taints_the_device_and_reports_it_unhealthy() {
        use crate::health::{self, Status};
        use crate::inventory::LinkState;
        use futures::StreamExt;
        let store = MemorySliceStore::new();
        let publisher = Publisher::new(store.clone(), SliceOptions::new("node-a"));
        let with_carrier = |carrier: bool| {
            let mut inventory = inv(2);
            for nic in &inventory.nics {
                let carrier = carrier || nic.if_name != inventory.nics[1].if_name;
                inventory.links.insert(
                    nic.if_name.clone(),
                    LinkState {
                        up: true,
                        carrier: Some(carrier),
                        rdma_port: None,
                    },
                );
            }
            inventory
        };
        let taints = |store: &MemorySliceStore| -> Vec<Option<String>> {
            store
                .slices()
                .values()
                .flat_map(|s| s.spec.devices.clone().unwrap_or_default())
                .map(|d| {
                    d.taints.and_then(|t| {
                        t.first()
                            .map(|t| format!("{}={}:{}", t.key, t.value.clone().unwrap_or_default(), t.effect))
                    })
                })
                .collect()
        };
        let mut changes = Box::pin(publisher.table().changes());
        publisher.publish(&with_carrier(true)).await.unwrap();
        changes.next().await.unwrap();
        assert_eq!(taints(&store), vec![None, None]);
        let statuses = |p: &Publisher<MemorySliceStore>| -> Vec<Status> {
            p.table().all().iter().map(|d| d.health.status).collect()
        };
        assert_eq!(statuses(&publisher), vec![Status::Healthy, Status::Healthy]);

        assert!(matches!(
            publisher.publish(&with_carrier(false)).await.unwrap(),
            PublishOutcome::Published { generation: 2, .. }
        ));
        changes.next().await.unwrap();
        assert_eq!(
            taints(&store),
            vec![None, Some(format!("{}=CarrierDown:NoSchedule", health::TAINT_KEY))]
        );
        assert_eq!(statuses(&publisher), vec![Status::Healthy, Status::Unhealthy]);
        let sent = health::response("node-a", &publisher.table().all(), 7);
        let unhealthy: Vec<_> = sent.devices.iter().filter(|d| d.health == 2).collect();
        assert_eq!(unhealthy.len(), 1);
        assert_eq!(unhealthy[0].device.as_ref().unwrap().pool_name, "node-a");
        assert!(
            unhealthy[0].message.contains("carrier down"),
            "{}",
            unhealthy[0].message
        );
        assert_eq!(
            (
                unhealthy[0].last_updated_time,
                unhealthy[0].health_check_timeout_seconds
            ),
            (7, health::TIMEOUT_SECONDS)
        );

        publisher.publish(&with_carrier(true)).await.unwrap();
        changes.next().await.unwrap();
        assert_eq!(taints(&store), vec![None, None]);
        assert_eq!(statuses(&publisher), vec![Status::Healthy, Status::Healthy]);
    }

    fn shared_opts() -> SliceOptions {
        SliceOptions {
            shared_pods: Some(4),
            ..SliceOptions::new("node-a")
        }
    }

    fn stored_devices(store: &MemorySliceStore) -> Vec<Device> {
        store
            .slices()
            .into_values()
            .flat_map(|s| s.spec.devices.into_iter().flatten())
            .collect()
    }

    /// Issue 16.2: with DRAConsumableCapacity on, the NICs stay shared with their capacities.
    #[tokio::test]
    async fn shared_nics_are_published_shared_where_the_api_server_keeps_it() {
        let store = MemorySliceStore::new();
        let publisher = Publisher::new(store.clone(), shared_opts());
        publisher.publish(&inv(2)).await.unwrap();
        assert!(publisher.sharing());
        let devices = stored_devices(&store);
        assert_eq!(devices.len(), 2);
        for d in &devices {
            assert_eq!(d.allow_multiple_allocations, Some(true), "{}", d.name);
            assert!(
                d.capacity
                    .as_ref()
                    .is_some_and(|c| c.contains_key(crate::slices::PODS_CAPACITY))
            );
        }
    }

    /// Issue 16.2: where the API server drops `allowMultipleAllocations` (feature off), the next
    /// pass publishes the NICs the old way: no sharing, no consumable capacity (which validation
    /// would refuse without it), at a new generation.
    #[tokio::test]
    async fn shared_nics_fall_back_to_unshared_where_the_api_server_drops_the_field() {
        let store = MemorySliceStore::without_consumable_capacity();
        let publisher = Publisher::new(store.clone(), shared_opts());
        let outcome = publisher.publish(&inv(2)).await.unwrap();
        assert_eq!(
            outcome,
            PublishOutcome::Published {
                generation: 2,
                slices: 1,
                devices: 2
            }
        );
        assert!(!publisher.sharing());
        for d in &stored_devices(&store) {
            assert_eq!(d.allow_multiple_allocations, None, "{}", d.name);
            assert_eq!(d.capacity, None, "{}", d.name);
        }
        assert_eq!(publisher.publish(&inv(2)).await.unwrap(), PublishOutcome::Unchanged);
    }

    #[test]
    fn only_a_422_naming_allow_multiple_allocations_refuses_sharing() {
        let err = |code, message: &str| PublishError::Apply {
            name: "s".into(),
            source: kube::Error::Api(kube::core::Status::failure(message, "Invalid").with_code(code).boxed()),
        };
        // The message validation gives a requestPolicy without allowMultipleAllocations.
        let forbidden = "ResourceSlice.resource.k8s.io \"n-multinic.dev-1\" is invalid: \
            spec.devices[0].capacity[multinic.dev/pods].requestPolicy: Forbidden: allowMultipleAllocations must be true";
        assert!(err(422, forbidden).refuses_sharing());
        assert!(!err(422, "spec.devices[0].name: Invalid value").refuses_sharing());
        assert!(!err(500, forbidden).refuses_sharing());
    }

    #[test]
    fn sharing_dropped_compares_sent_and_stored_devices() {
        let opts = shared_opts();
        let sent = build_slices(&crate::slices::build_devices(&[nic(0), nic(1)], &opts), &opts, 1).remove(0);
        assert!(!sharing_dropped(&sent, &sent));
        let mut stored = sent.clone();
        if let Some(d) = stored.spec.devices.as_mut().and_then(|d| d.get_mut(1)) {
            d.allow_multiple_allocations = None;
        }
        assert!(sharing_dropped(&sent, &stored));
        let unshared = build_slices(
            &crate::slices::build_devices(&[nic(0)], &SliceOptions::new("n")),
            &opts,
            1,
        )
        .remove(0);
        assert!(!sharing_dropped(&unshared, &unshared));
    }

    #[tokio::test]
    async fn generation_bumps_on_change_and_stale_slices_go() {
        let store = MemorySliceStore::new();
        let publisher = Publisher::new(store.clone(), SliceOptions::new("node-a"));
        assert_eq!(
            publisher.publish(&inv(130)).await.unwrap(),
            PublishOutcome::Published {
                generation: 1,
                slices: 2,
                devices: 130
            }
        );
        assert_eq!(publisher.publish(&inv(130)).await.unwrap(), PublishOutcome::Unchanged);
        assert_eq!(
            publisher.publish(&inv(3)).await.unwrap(),
            PublishOutcome::Published {
                generation: 2,
                slices: 1,
                devices: 3
            }
        );
        let slices = store.slices();
        assert_eq!(slices.len(), 1, "the second slice of generation 1 is deleted");
        let s = slices.values().next().unwrap();
        assert_eq!((s.spec.pool.generation, s.spec.pool.resource_slice_count), (2, 1));
    }

    #[tokio::test]
    async fn a_restart_continues_after_the_highest_existing_generation() {
        let store = MemorySliceStore::new();
        let first = Publisher::new(store.clone(), SliceOptions::new("node-a"));
        first.publish(&inv(130)).await.unwrap();
        first.publish(&inv(129)).await.unwrap();
        let restarted = Publisher::new(store.clone(), SliceOptions::new("node-a"));
        assert_eq!(
            restarted.publish(&inv(2)).await.unwrap(),
            PublishOutcome::Published {
                generation: 3,
                slices: 1,
                devices: 2
            }
        );
        assert_eq!(store.slices().len(), 1);
        // Another node's pool is not ours to touch.
        let other = Publisher::new(store.clone(), SliceOptions::new("node-b"));
        other.publish(&inv(1)).await.unwrap();
        assert_eq!(store.slices().len(), 2);
    }

    /// railIndex of each published device, with its interface name, in rail order.
    fn published_rails(store: &MemorySliceStore) -> Vec<(String, i64)> {
        let mut out: Vec<(String, i64)> = store
            .slices()
            .values()
            .flat_map(|s| s.spec.devices.clone().unwrap_or_default())
            .map(|d| {
                let attrs = d.attributes.unwrap_or_default();
                let if_name = attrs["multinic.dev/ifName"].string.clone().unwrap_or_default();
                (if_name, attrs["multinic.dev/railIndex"].int.unwrap_or(-1))
            })
            .collect();
        out.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
        out
    }

    fn plan_holding(claim: &str, device: &str) -> multinic_api::plan::Plan {
        serde_json::from_value(serde_json::json!({
            "version": 1, "claimUID": claim, "namespace": "ns", "name": claim,
            "devices": [{"request": "nics", "pool": "node-a", "device": device, "hostIfName": "x",
                         "podIfName": "net1", "mode": "host-device"}]
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn rails_survive_a_nic_moving_into_a_pod_later_nics_and_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let store = MemorySliceStore::new();
        let publisher = || {
            Publisher::new(store.clone(), SliceOptions::new("node-a"))
                .with_ledger_file(LedgerFile::new(dir.path()))
                .unwrap()
        };
        let nics: Vec<Nic> = (0..5).map(nic).collect();
        let first = publisher();
        first
            .publish(&Inventory {
                nics: nics[..4].to_vec(),
                ..Default::default()
            })
            .await
            .unwrap();
        let want: Vec<(String, i64)> = (0..4).map(|k| (nics[k].if_name.clone(), k as i64)).collect();
        assert_eq!(published_rails(&store), want);

        // Rail 1's NIC moves into a pod: a plan holds it and it leaves the host netns.
        let name1 = first
            .table()
            .all()
            .into_iter()
            .find(|d| d.rail_index == 1)
            .unwrap()
            .device
            .name;
        first.table().hold(&plan_holding("claim-a", &name1));
        let without1 = vec![nics[0].clone(), nics[2].clone(), nics[3].clone()];
        first
            .publish(&Inventory {
                nics: without1.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(published_rails(&store), want, "still published, nobody renumbered");
        let held = first.table().get(&name1).unwrap();
        assert_eq!((held.rail_index, held.presence), (1, Presence::InPod));

        // Restart while it is in the pod (the driver holds the plans it loads again).
        let second = publisher();
        second.table().hold(&plan_holding("claim-a", &name1));
        second
            .publish(&Inventory {
                nics: without1,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(published_rails(&store), want);

        // A NIC added after start takes the next free rail, whatever its PCI order.
        let mut with4 = nics.clone();
        with4.remove(1);
        second
            .publish(&Inventory {
                nics: with4.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(published_rails(&store).contains(&(nics[4].if_name.clone(), 4)));

        // The claim is released and the NIC is back: same rail. A NIC removed and added back too.
        second.table().release("claim-a");
        second
            .publish(&Inventory {
                nics: nics[1..].to_vec(),
                ..Default::default()
            })
            .await
            .unwrap();
        second
            .publish(&Inventory {
                nics: nics.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        let all: Vec<(String, i64)> = (0..5).map(|k| (nics[k].if_name.clone(), k as i64)).collect();
        assert_eq!(published_rails(&store), all);
        assert_eq!(publisher().ledger(), second.ledger(), "what is published is on disk");
    }
}
