//! The node plugin process (`multinic-kubelet-plugin`): its flags and [`run`], which wires the
//! inventory, the publish loop, the driver, the metrics, the kubelet's gRPC services and the peer
//! routes together until a signal or a failure.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::Parser;
use multinic_api::names::{
    DEFAULT_METRICS_ADDRESS, DEFAULT_PLUGIN_DIR, DEFAULT_REGISTRY_DIR, DEFAULT_STATE_DIR, DRIVER_NAME,
};
use multinic_api::observe;
use multinic_api::plan::PlanError;
use multinic_api::setup::{LogFormat, SetupError, counted_kube_client, shutdown_signal};

use crate::driver::{ClaimApi, Driver, DriverOptions, KubeClaimApi};
use crate::grpc::{self, DraService, RegistrationService, ServeError};
use crate::inventory::{FilterError, netlink};
use crate::ledger::{LedgerError, LedgerFile};
use crate::metrics::{self, Metrics};
use crate::publish::{InventorySource, KubeSliceStore, LoopTiming, Publisher, run_publish_loop};
use crate::setup::InventoryArgs;
use crate::slices::SliceOptions;

/// How often the `pool` requests are decided again besides after every prepare and unprepare
/// (a decision reads memory only; the API server is called when the request changed).
const POOL_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Setup(#[from] SetupError),
    #[error("--node-name (or env NODE_NAME) is required")]
    NoNodeName,
    #[error(transparent)]
    Filters(#[from] FilterError),
    #[error("loading the node ledger: {0}")]
    Ledger(#[from] LedgerError),
    #[error("{what}: {source}")]
    Netlink {
        what: &'static str,
        source: netlink::NetlinkError,
    },
    #[error("loading plans from {path}: {source}")]
    Plans { path: PathBuf, source: PlanError },
    #[error(transparent)]
    Metrics(#[from] observe::BindError),
    #[error("{what}: {source}")]
    Serve { what: &'static str, source: ServeError },
    #[error("the rtnetlink event stream ended; restart the plugin")]
    EventsEnded,
    #[error("installing the signal handler: {0}")]
    Signal(std::io::Error),
}

fn netlink_err(what: &'static str) -> impl Fn(netlink::NetlinkError) -> RunError {
    move |source| RunError::Netlink { what, source }
}

fn serve_err(what: &'static str) -> impl Fn(ServeError) -> RunError {
    move |source| RunError::Serve { what, source }
}

/// Publishes this node's NICs as DRA ResourceSlices and prepares claims for the kubelet.
#[derive(Debug, Parser)]
#[command(name = "multinic-kubelet-plugin", version)]
pub struct Args {
    /// Name of this node (the pool name).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,
    /// Kubeconfig file; default: in-cluster config, then KUBECONFIG / ~/.kube/config.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Directory of the DRA socket.
    #[arg(long, default_value = DEFAULT_PLUGIN_DIR)]
    pub plugin_dir: PathBuf,
    /// Directory the kubelet watches for plugin registration sockets.
    #[arg(long, default_value = DEFAULT_REGISTRY_DIR)]
    pub registry_dir: PathBuf,
    /// State directory: one plan file per prepared claim (the plans are also the IP leases).
    #[arg(long, default_value = DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// Directory for CDI specs of RDMA devices.
    #[arg(long, default_value = "/var/run/cdi")]
    pub cdi_dir: PathBuf,
    /// Address of /metrics, /healthz and /status (`:9177` = all interfaces).
    #[arg(long, default_value = DEFAULT_METRICS_ADDRESS)]
    pub metrics_address: String,
    #[command(flatten)]
    pub inventory: InventoryArgs,
    /// Quiet time after the last link/address/route event before republishing, in milliseconds.
    #[arg(long, default_value_t = 250)]
    pub debounce_ms: u64,
    /// Republish at least this often, in seconds (a failed publish is retried sooner: 0.5 s,
    /// doubling up to 4 s).
    #[arg(long, default_value_t = 60)]
    pub resync_seconds: u64,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// The metrics endpoint of `driver`: `/metrics` with the gauges refreshed from it before each
/// scrape, `/healthz` from `metrics`, `/status` from its node ledger ([`Driver::status`]).
pub fn exposition<A: ClaimApi>(driver: Arc<Driver<A>>, metrics: Arc<Metrics>) -> metrics::PluginExposition {
    let refresh: metrics::Refresh = {
        let (driver, metrics) = (driver.clone(), metrics.clone());
        Arc::new(move || {
            let (driver, metrics) = (driver.clone(), metrics.clone());
            Box::pin(async move {
                metrics.set_published_devices(driver.table().device_count().unwrap_or(0));
                metrics.set_prepared_claims(driver.prepared_claims().await.len());
                for ((network, rail), free) in driver.free_per_rail().await {
                    metrics.set_free_ips(&network, rail, free);
                }
            })
        })
    };
    let status: metrics::StatusSource = {
        let driver = driver.clone();
        Arc::new(move || {
            let driver = driver.clone();
            Box::pin(async move { driver.status().await })
        })
    };
    metrics::PluginExposition {
        metrics,
        refresh,
        status,
    }
}

/// Runs the plugin until SIGTERM/SIGINT (`Ok`) or a failure.
pub async fn run(args: Args) -> Result<(), RunError> {
    let node = args
        .node_name
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or(RunError::NoNodeName)?;
    let filters = args.inventory.filters()?;
    let metrics = Arc::new(Metrics::new());
    let counted = metrics.clone();
    let client = counted_kube_client(
        args.kubeconfig.as_deref(),
        Arc::new(move |verb, resource| counted.api_request(verb, resource)),
    )
    .await?;

    let opts = SliceOptions {
        shared_pods: args.inventory.shared_pods,
        ..SliceOptions::new(node.clone())
    };
    let ledger = LedgerFile::new(&args.state_dir);
    let slice_store = KubeSliceStore::new(client.clone());
    let deleted = Box::pin(slice_store.deleted_slices(&opts));
    let publisher = Publisher::new(slice_store, opts).with_ledger_file(ledger)?;
    let table = publisher.table();
    let handle = netlink::connect().map_err(netlink_err("rtnetlink"))?;
    let source = InventorySource {
        handle,
        sysfs: args.inventory.sysfs(),
        filters,
    };
    let links = netlink::subscribe().map_err(netlink_err("rtnetlink link events"))?;
    // Kernel uevents add what rtnetlink does not carry (RDMA devices, PCI driver binds); without
    // them (no uevents in this network namespace) the resync still catches those changes.
    let events: std::pin::Pin<Box<dyn futures::Stream<Item = ()> + Send>> = match crate::uevent::republish_events() {
        Ok(uevents) => Box::pin(futures::stream::select(links, uevents)),
        Err(error) => {
            tracing::warn!(%error, "no kernel uevents; RDMA and PCI bind changes wait for the resync");
            Box::pin(links)
        }
    };
    let timing = LoopTiming {
        debounce: Duration::from_millis(args.debounce_ms),
        resync: Duration::from_secs(args.resync_seconds.max(1)),
    };

    // One watch each for MultiNicNetworks and NicNodeBlocks, read by prepare and the peer routes.
    let (stores, changes) = crate::cluster::watch(client.clone());
    let driver_opts = DriverOptions::new(node.clone(), args.state_dir.clone(), Some(args.cdi_dir.clone()));
    let driver = Arc::new(
        Driver::new(KubeClaimApi::new(client.clone()), table.clone(), driver_opts)
            .map_err(|source| RunError::Plans {
                path: args.state_dir.clone(),
                source,
            })?
            .with_blocks(stores.blocks.clone()),
    );

    let metrics_listener = observe::bind(&args.metrics_address).await?;
    tokio::spawn(observe::serve(
        metrics_listener,
        Arc::new(exposition(driver.clone(), metrics.clone())),
    ));

    tracing::info!(node = %node, sysfs = %args.inventory.sysfs_root.display(), "starting");
    let publishing = run_publish_loop(&publisher, &source, events, deleted, timing);
    tokio::pin!(publishing);
    // The kubelet may call as soon as we register: have devices and stale plans sorted out first.
    tokio::select! {
        () = table.wait_ready() => {}
        () = &mut publishing => return Err(RunError::EventsEnded),
    }
    metrics.inventory_ready.store(true, Ordering::Relaxed);
    let released = driver.reconcile().await;
    tracing::info!(
        released,
        prepared = driver.prepared_claims().await.len(),
        "reconciled plans with claims"
    );

    let dra_path = args.plugin_dir.join(grpc::DRA_SOCKET);
    let reg_path = args.registry_dir.join(grpc::registration_socket(DRIVER_NAME));
    let dra_listener = grpc::bind_socket(&dra_path).map_err(serve_err("DRA socket"))?;
    let reg_listener = grpc::bind_socket(&reg_path).map_err(serve_err("registration socket"))?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let dra = grpc::serve_dra(
        dra_listener,
        &dra_path,
        DraService::new(driver.clone(), metrics.clone()),
        stopped(stop_rx.clone()),
    );
    let registration = RegistrationService {
        driver_name: DRIVER_NAME.into(),
        endpoint: dra_path.clone(),
        metrics: metrics.clone(),
    };
    let reg = grpc::serve_registration(reg_listener, &reg_path, registration, stopped(stop_rx));
    tracing::info!(dra = %dra_path.display(), registration = %reg_path.display(), "serving the kubelet");

    // The requests of `pool` networks (more blocks, blocks given back) to this node's NicNodeBlocks.
    tokio::spawn(crate::pool::run(
        driver.clone(),
        kube::Api::all(client.clone()),
        stores.clone(),
        node.clone(),
        POOL_EVERY,
    ));
    // Peer routes of `routing.mode: l3` networks, on this node's rails; this task polls the watches.
    tokio::spawn(crate::routes::run_peer_routes(
        stores,
        changes,
        node.clone(),
        table.clone(),
        netlink::connect().map_err(netlink_err("rtnetlink for peer routes"))?,
        Duration::from_secs(args.resync_seconds.max(1)),
    ));
    let result = tokio::select! {
        () = &mut publishing => Err(RunError::EventsEnded),
        r = dra => r.map_err(serve_err("DRA service")),
        r = reg => r.map_err(serve_err("registration service")),
        r = shutdown_signal() => r.map_err(RunError::Signal).map(|()| tracing::info!("terminated; exiting")),
    };
    let _ = stop_tx.send(true);
    // The registration socket goes with us so the kubelet deregisters the plugin.
    let _ = std::fs::remove_file(&reg_path);
    result
}
