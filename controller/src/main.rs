//! `multinic-controller`: MultiNicNetwork → DeviceClass + per-node NicNodeBlocks, with leader
//! election so that two replicas are safe (the work is in [`daemon`]).
//!
//! [`daemon`]: multinic_controller::daemon

use clap::Parser;
use multinic_api::setup::init_tracing;
use multinic_controller::daemon::{Args, run};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_tracing(args.log_format);
    Ok(run(args).await?)
}
