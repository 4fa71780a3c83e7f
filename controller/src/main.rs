//! `multinic-controller`: MultiNicNetwork → DeviceClass + per-node NicNodeBlocks, with leader
//! election so that two replicas are safe.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use futures::StreamExt;
use k8s_openapi::api::resource::v1::{DeviceClass, ResourceSlice};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use kube::{Api, Client};
use multinic_api::crd::{MultiNicNetwork, NicNodeBlocks};
use multinic_api::observe;
use multinic_api::retry::RepeatGate;
use multinic_controller::lease::LeaseLock;
use multinic_controller::metrics::Metrics;
use multinic_controller::reconcile::{self, Context};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Turns MultiNicNetworks into DeviceClasses and per-node NicNodeBlocks.
#[derive(Debug, Parser)]
#[command(name = "multinic-controller", version)]
struct Args {
    /// Kubeconfig file; default: in-cluster config, then KUBECONFIG / ~/.kube/config.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Address of /metrics and /healthz.
    #[arg(long, default_value = ":9178")]
    metrics_address: String,
    /// Namespace of the leader-election Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "multinic-system")]
    leader_election_namespace: String,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "multinic-controller")]
    leader_election_id: String,
    /// This replica's identity in the Lease; default: env POD_NAME, else the hostname.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Lease duration in seconds; the leader renews every third of it.
    #[arg(long, default_value_t = 15)]
    lease_seconds: u64,
    /// Log format (`RUST_LOG` sets the level).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

async fn client(kubeconfig: Option<&PathBuf>) -> anyhow::Result<Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kc =
                kube::config::Kubeconfig::read_from(path).with_context(|| format!("kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?
        }
        None => match kube::Config::incluster() {
            Ok(c) => c,
            Err(_) => kube::Config::infer()
                .await
                .context("no in-cluster config and no kubeconfig; pass --kubeconfig")?,
        },
    };
    Ok(Client::try_from(config)?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Text => fmt.init(),
        LogFormat::Json => fmt.json().flatten_event(true).init(),
    }
    let client = client(args.kubeconfig.as_ref()).await?;
    let metrics = Arc::new(Metrics::default());
    let listener = observe::bind(&args.metrics_address)
        .await
        .context("--metrics-address")?;
    tokio::spawn(observe::serve(listener, metrics.clone()));

    let identity = match args.identity.filter(|i| !i.is_empty()) {
        Some(i) => i,
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .context("hostname")?,
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
    tokio::spawn(async move {
        loop {
            tick.tick().await;
            match lock.try_acquire_or_renew(k8s_openapi::jiff::Timestamp::now()).await {
                Ok(true) => {}
                // Another replica may now act: stop at once; the pod restarts as a standby.
                Ok(false) => fail("lost the leader lease"),
                Err(error) => fail(&format!("renewing the leader lease: {error}")),
            }
        }
    });

    let networks: Api<MultiNicNetwork> = Api::all(client.clone());
    let controller = Controller::new(networks, watcher::Config::default())
        .owns(Api::<DeviceClass>::all(client.clone()), watcher::Config::default())
        .owns(Api::<NicNodeBlocks>::all(client.clone()), watcher::Config::default());
    let store = controller.store();
    let slices = watcher::Config::default().fields("spec.driver=multinic.dev");
    let ctx = Arc::new(Context { client: client.clone() });
    let mut watch_gate = RepeatGate::default();
    controller
        // Any slice change may change which nodes a network covers.
        .watches(Api::<ResourceSlice>::all(client), slices, move |_| {
            store
                .state()
                .into_iter()
                .map(|n| ObjectRef::from_obj(n.as_ref()))
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
        })
        .await;
    Ok(())
}

fn fail(why: &str) -> ! {
    tracing::error!(why, "exiting");
    std::process::exit(1)
}
