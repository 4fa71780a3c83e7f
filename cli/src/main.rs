//! `multinic`: the command line for humans (wiring; every command's work is in the library).

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use multinic_api::setup::{LogFormat, init_tracing};
use multinic_cli::inventory::{self, Output};
use multinic_cli::{bench, demo, install, status, vmcheck};
use multinic_kubelet_plugin::setup::InventoryArgs;

#[derive(Debug, Parser)]
#[command(
    name = "multinic",
    version,
    about = "multinic-dra: inspect and try the DRA driver for NICs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format (logs go to stderr).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the ResourceSlices this host would publish, with no cluster. Excluded netdevs and
    /// the reason are listed on stderr.
    Inventory {
        /// Pool / node name to put in the slices; default: env NODE_NAME, else the hostname.
        #[arg(long, env = "NODE_NAME")]
        node_name: Option<String>,
        #[command(flatten)]
        inventory: InventoryArgs,
        /// Read links, addresses and routes from this JSON file (as in the test fixtures) instead of
        /// rtnetlink.
        #[arg(long)]
        netlink_snapshot: Option<PathBuf>,
        /// Output format.
        #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Yaml)]
        output: Output,
    },
    /// Print what a node plugin's ledger holds: each NIC (rail, where it is, addresses, health),
    /// each prepared claim with its pods, the node's blocks with their free addresses. Reads
    /// GET /status of the plugin's metrics port; run it inside the plugin pod:
    /// `kubectl exec -n multinic-system ds/multinic-kubelet-plugin -c plugin -- multinic status`.
    Status(status::StatusArgs),
    /// Run the benchmarks (needs root) and print one table; exits non-zero if any run failed.
    Bench(Box<bench::BenchArgs>),
    /// Run the whole path on this host with no cluster (needs root): sandbox node, real plugin,
    /// claim, NodePrepareResources, CNI ADD into a pod netns, then a checked teardown.
    Demo(demo::DemoArgs),
    /// Install multinic-cni into the host's CNI bin dir and, with --chain-into, chain it into the
    /// primary conflist (the node DaemonSet's init container runs this).
    InstallCni(install::InstallArgs),
    /// Print the CustomResourceDefinitions (MultiNicNetwork with its CEL rules, NicNodeBlocks) as
    /// YAML; `deploy/crds.yaml` is this output.
    Crd,
    /// The checks of the QEMU guest suite (e2e/vm), run inside the guest on real devices.
    #[command(hide = true)]
    VmCheck(vmcheck::VmCheckArgs),
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    match cli.command {
        Command::Inventory {
            node_name,
            inventory,
            netlink_snapshot,
            output,
        } => {
            print!(
                "{}",
                inventory::render(node_name, &inventory, netlink_snapshot.as_deref(), output).await?
            );
            Ok(())
        }
        Command::Status(args) => {
            print!("{}", status::run(&args).await?);
            Ok(())
        }
        Command::Bench(args) => Ok(bench::run(*args).await?),
        Command::Demo(args) => Ok(demo::run(args).await?),
        Command::InstallCni(args) => Ok(install::run(args)?),
        Command::VmCheck(args) => Ok(vmcheck::run(args).await?),
        Command::Crd => {
            print!("{}", multinic_api::crd::crds_yaml()?);
            Ok(())
        }
    }
}
