//! `multinic-kubelet-plugin`: the node DaemonSet of multinic-dra (the work is in [`daemon`]).
//!
//! [`daemon`]: multinic_kubelet_plugin::daemon

use clap::Parser;
use multinic_api::setup::init_tracing;
use multinic_kubelet_plugin::daemon::{Args, run};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_tracing(args.log_format);
    Ok(run(args).await?)
}
