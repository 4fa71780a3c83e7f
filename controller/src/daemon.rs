//! The controller process (`multinic-controller`): its flags and [`run`], which serves the
//! metrics, takes the leader lease and runs the reconcile loop while it leads.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::resource::v1::{DeviceClass, ResourceSlice};
use kube::Api;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use multinic_api::crd::{MultiNicNetwork, NicNodeBlocks};
use multinic_api::names::DRIVER_NAME;
use multinic_api::observe;
use multinic_api::retry::RepeatGate;
use multinic_api::setup::{LogFormat, SetupError, hostname, kube_client};

use crate::lease::LeaseLock;
use crate::metrics::Metrics;
use crate::reconcile::{self, Context};
use crate::selector::networks_for_slice;
use crate::slices;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Setup(#[from] SetupError),
    #[error(transparent)]
    Metrics(#[from] observe::BindError),
    #[error("{0}; pass --identity or set POD_NAME")]
    Identity(SetupError),
    #[error("lost the leader lease to another replica; exiting so the pod restarts as a standby")]
    LostLease,
    #[error("renewing the leader lease: {0}; exiting so that no two replicas act at once")]
    Renew(kube::Error),
}

/// Turns MultiNicNetworks into DeviceClasses and per-node NicNodeBlocks.
#[derive(Debug, Parser)]
#[command(name = "multinic-controller", version)]
pub struct Args {
    /// Kubeconfig file; default: in-cluster config, then KUBECONFIG / ~/.kube/config.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Address of /metrics and /healthz.
    #[arg(long, default_value = ":9178")]
    pub metrics_address: String,
    /// Namespace of the leader-election Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "multinic-system")]
    pub leader_election_namespace: String,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "multinic-controller")]
    pub leader_election_id: String,
    /// This replica's identity in the Lease; default: env POD_NAME, else the hostname.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Lease duration in seconds; the leader renews every third of it.
    #[arg(long, default_value_t = 15)]
    pub lease_seconds: u64,
    /// Log format (`RUST_LOG` sets the level).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Serves the metrics, waits for the leader lease, then reconciles until SIGTERM/SIGINT (`Ok`) or
/// until the lease is lost.
pub async fn run(args: Args) -> Result<(), RunError> {
    let client = kube_client(args.kubeconfig.as_deref()).await?;
    let metrics = Arc::new(Metrics::default());
    let listener = observe::bind(&args.metrics_address).await?;
    tokio::spawn(observe::serve(listener, metrics.clone()));

    let identity = match args.identity.filter(|i| !i.is_empty()) {
        Some(i) => i,
        None => hostname().map_err(RunError::Identity)?,
    };
    let lock = LeaseLock::new(
        client.clone(),
        &args.leader_election_namespace,
        &args.leader_election_id,
        &identity,
        Duration::from_secs(args.lease_seconds.max(3)),
    );
    let renew_every = lock.duration() / 3;
    let mut tick = tokio::time::interval(renew_every);
    let mut gate = RepeatGate::default();
    loop {
        tick.tick().await;
        match lock.try_acquire_or_renew(k8s_openapi::jiff::Timestamp::now()).await {
            Ok(true) => break,
            Ok(false) => {
                gate.success();
                tracing::debug!(%identity, "another replica leads; waiting")
            }
            Err(error) => {
                if let Some(not_logged) = gate.failure(std::time::Instant::now()) {
                    tracing::warn!(%error, not_logged, "leader election failed; retrying");
                }
            }
        }
    }
    tracing::info!(%identity, "leading");
    metrics.set_leader(true);
    // Another replica may act as soon as the lease is lost: the controller stops at once (`run`
    // returns, the pod restarts as a standby).
    let keep_leading = async move {
        loop {
            tick.tick().await;
            match lock.try_acquire_or_renew(k8s_openapi::jiff::Timestamp::now()).await {
                Ok(true) => {}
                Ok(false) => return RunError::LostLease,
                Err(source) => return RunError::Renew(source),
            }
        }
    };
    let networks: Api<MultiNicNetwork> = Api::all(client.clone());
    let controller = Controller::new(networks, watcher::Config::default())
        .owns(Api::<DeviceClass>::all(client.clone()), watcher::Config::default())
        .owns(Api::<NicNodeBlocks>::all(client.clone()), watcher::Config::default());
    let networks = controller.store();
    let (slices, slice_changes) = slices::watch(
        Api::<ResourceSlice>::all(client.clone()),
        watcher::Config::default().fields(&format!("spec.driver={DRIVER_NAME}")),
    );
    let ctx = Arc::new(Context { client, slices });
    let mut watch_gate = RepeatGate::default();
    let reconciling = controller
        // A slice change concerns the networks that select its devices, before or after it.
        .watches_stream(slice_changes, move |slice| {
            let networks = networks.state();
            networks_for_slice(DRIVER_NAME, &slice, networks.iter().map(Arc::as_ref))
                .into_iter()
                .map(ObjectRef::from_obj)
                .collect::<Vec<_>>()
        })
        .shutdown_on_signal()
        .run(reconcile::reconcile, reconcile::error_policy, ctx)
        .for_each(|result| {
            let outcome = if result.is_ok() { "ok" } else { "error" };
            metrics.reconciled(outcome);
            // Reconcile errors are logged by the error policy (per network, every requeue);
            // watch errors are retried by kube-runtime with backoff and logged here, bounded.
            match result {
                Err(kube::runtime::controller::Error::QueueError(error)) => {
                    if let Some(not_logged) = watch_gate.failure(std::time::Instant::now()) {
                        tracing::warn!(%error, not_logged, "watch failed; retrying with backoff");
                    }
                }
                Ok(_) => {
                    if let Some(failures) = watch_gate.success() {
                        tracing::info!(failures, "watches work again");
                    }
                }
                Err(_) => {}
            }
            futures::future::ready(())
        });
    tokio::select! {
        () = reconciling => Ok(()),
        error = keep_leading => Err(error),
    }
}
