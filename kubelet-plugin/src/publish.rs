//! Publishing the node's pool: server-side apply of every slice at a new generation, then deletion of
//! the slices the new generation no longer has; republished on rtnetlink events (debounced) and on a
//! periodic resync.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::resource::v1::{Device, ResourceSlice};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use multinic_api::names::FIELD_MANAGER;
use multinic_api::retry::{Backoff, RepeatGate};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::inventory::{self, Filters, Inventory, SysfsReader};
use crate::slices::{PublishedDevice, SliceOptions, build_device_table, build_slices, validate_device};

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
}

/// Where slices go. Implemented for the API server and in memory (tests, dry runs).
pub trait SliceStore: Send + Sync {
    /// The slices of our driver on this node.
    fn list_pool(&self, opts: &SliceOptions) -> impl Future<Output = Result<Vec<ResourceSlice>, PublishError>> + Send;
    fn apply(&self, slice: &ResourceSlice) -> impl Future<Output = Result<(), PublishError>> + Send;
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

    async fn apply(&self, slice: &ResourceSlice) -> Result<(), PublishError> {
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
            .map(|_| ())
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
}

impl MemorySliceStore {
    pub fn new() -> Self {
        Self::default()
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

    async fn apply(&self, slice: &ResourceSlice) -> Result<(), PublishError> {
        let name = slice.metadata.name.clone().unwrap_or_default();
        self.write(|s| {
            s.insert(name, slice.clone());
        });
        Ok(())
    }

    async fn delete(&self, name: &str) -> Result<(), PublishError> {
        self.write(|s| {
            s.remove(name);
        });
        Ok(())
    }
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

/// The devices of the last inventory read, by device name: what `NodePrepareResources` may hand out.
#[derive(Clone, Default)]
pub struct DeviceTable {
    inner: Arc<std::sync::RwLock<Option<BTreeMap<String, PublishedDevice>>>>,
    ready: Arc<tokio::sync::Notify>,
}

impl DeviceTable {
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
        if let Ok(mut table) = self.inner.write() {
            *table = Some(devices.iter().map(|d| (d.device.name.clone(), d.clone())).collect());
        }
        self.ready.notify_waiters();
    }

    /// Waits until the first inventory has been read.
    pub async fn wait_ready(&self) {
        loop {
            let notified = self.ready.notified();
            if self.device_count().is_some() {
                return;
            }
            notified.await;
        }
    }
}

/// Publishes the node's pool, bumping the generation on every change.
pub struct Publisher<S> {
    store: S,
    opts: SliceOptions,
    state: tokio::sync::Mutex<Option<Published>>,
    table: DeviceTable,
}

impl<S: SliceStore> Publisher<S> {
    pub fn new(store: S, opts: SliceOptions) -> Self {
        Self {
            store,
            opts,
            state: tokio::sync::Mutex::new(None),
            table: DeviceTable::default(),
        }
    }

    /// The devices of the last inventory (updated even when publishing fails).
    pub fn table(&self) -> DeviceTable {
        self.table.clone()
    }

    /// Publishes the NICs if they differ from what was last published.
    pub async fn publish(&self, inventory: &Inventory) -> Result<PublishOutcome, PublishError> {
        let table: Vec<PublishedDevice> = build_device_table(&inventory.nics, &self.opts)
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
            return Ok(PublishOutcome::Unchanged);
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
        for slice in &slices {
            self.store.apply(slice).await?;
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
        Ok(outcome)
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

/// Publishes now, then again after each burst of `events` and on every resync, until `events` ends.
pub async fn run_publish_loop<S: SliceStore>(
    publisher: &Publisher<S>,
    source: &InventorySource,
    mut events: impl Stream<Item = ()> + Unpin,
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
    use crate::slices::tests::nic;

    fn inv(n: usize) -> Inventory {
        Inventory {
            nics: (0..n).map(nic).collect(),
            ..Default::default()
        }
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
}
