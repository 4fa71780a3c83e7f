//! `multinic-kubelet-plugin`: the node DaemonSet of multinic-dra.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use multinic_kubelet_plugin::inventory::netlink;
use multinic_kubelet_plugin::publish::{InventorySource, KubeSliceStore, LoopTiming, Publisher, run_publish_loop};
use multinic_kubelet_plugin::setup::{self, InventoryArgs, LogFormat};
use multinic_kubelet_plugin::slices::SliceOptions;

/// Publishes this node's NICs as DRA ResourceSlices.
#[derive(Debug, Parser)]
#[command(name = "multinic-kubelet-plugin", version)]
struct Args {
    /// Name of this node (the pool name).
    #[arg(long, env = "NODE_NAME")]
    node_name: Option<String>,
    /// Kubeconfig file; default: in-cluster config, then KUBECONFIG / ~/.kube/config.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    #[command(flatten)]
    inventory: InventoryArgs,
    /// Quiet time after the last link/address/route event before republishing, in milliseconds.
    #[arg(long, default_value_t = 250)]
    debounce_ms: u64,
    /// Republish at least this often, in seconds (also retries failed publishes).
    #[arg(long, default_value_t = 60)]
    resync_seconds: u64,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    setup::init_tracing(args.log_format);
    let node = setup::node_name(args.node_name)?;
    let filters = args.inventory.filters()?;
    let client = setup::kube_client(args.kubeconfig.as_ref()).await?;
    let opts = SliceOptions {
        shared_pods: args.inventory.shared_pods,
        ..SliceOptions::new(node.clone())
    };
    let publisher = Publisher::new(KubeSliceStore::new(client), opts);
    let handle = netlink::connect().context("rtnetlink")?;
    let source = InventorySource {
        handle,
        sysfs: args.inventory.sysfs(),
        filters,
    };
    let events = netlink::subscribe().context("rtnetlink link events")?;
    let timing = LoopTiming {
        debounce: std::time::Duration::from_millis(args.debounce_ms),
        resync: std::time::Duration::from_secs(args.resync_seconds.max(1)),
    };
    tracing::info!(node = %node, sysfs = %args.inventory.sysfs_root.display(), "starting");
    tokio::select! {
        () = run_publish_loop(&publisher, &source, events, timing) => anyhow::bail!("rtnetlink event stream ended"),
        r = tokio::signal::ctrl_c() => { r.context("signal handler")?; tracing::info!("interrupted; exiting"); }
    }
    Ok(())
}
