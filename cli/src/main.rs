//! `multinic`: the command line for humans.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use multinic_cli::{bench, demo, install, vmcheck};
use multinic_kubelet_plugin::inventory::{self, HostSnapshot, netlink};
use multinic_kubelet_plugin::setup::{self, InventoryArgs, LogFormat};
use multinic_kubelet_plugin::slices::{SliceOptions, build_devices, build_slices};

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
    /// Run the benchmarks (needs root) and print one table; exits non-zero if any run failed.
    Bench(bench::BenchArgs),
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

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Output {
    Yaml,
    Json,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    setup::init_tracing(cli.log_format);
    match cli.command {
        Command::Inventory {
            node_name,
            inventory,
            netlink_snapshot,
            output,
        } => print_inventory(node_name, &inventory, netlink_snapshot, output).await,
        Command::Bench(args) => bench::run(args).await,
        Command::Demo(args) => demo::run(args).await,
        Command::InstallCni(args) => install::run(args),
        Command::VmCheck(args) => vmcheck::run(args).await,
        Command::Crd => {
            print!("{}", multinic_api::crd::crds_yaml()?);
            Ok(())
        }
    }
}

async fn print_inventory(
    node_name: Option<String>,
    args: &InventoryArgs,
    snapshot_file: Option<PathBuf>,
    output: Output,
) -> anyhow::Result<()> {
    let snapshot: HostSnapshot = match &snapshot_file {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            serde_json::from_str(&text).with_context(|| format!("parsing {} as a netlink snapshot", path.display()))?
        }
        None => {
            let handle = netlink::connect().context("opening rtnetlink")?;
            netlink::read_snapshot(&handle).await?
        }
    };
    let node = match node_name.filter(|n| !n.is_empty()) {
        Some(n) => n,
        None => hostname()?,
    };
    let inv = inventory::collect(&snapshot, &args.sysfs(), &args.filters()?);
    for (name, reason) in &inv.excluded {
        eprintln!("excluded {name}: {}", serde_json::to_string(reason)?);
    }
    let opts = SliceOptions {
        shared_pods: args.shared_pods,
        ..SliceOptions::new(node)
    };
    let slices = build_slices(&build_devices(&inv.nics, &opts), &opts, 1);
    let text = match output {
        Output::Yaml => serde_yaml::to_string(&slices)?,
        Output::Json => serde_json::to_string_pretty(&slices)? + "\n",
    };
    print!("{text}");
    Ok(())
}

fn hostname() -> anyhow::Result<String> {
    let name =
        std::fs::read_to_string("/proc/sys/kernel/hostname").context("reading the hostname; pass --node-name")?;
    Ok(name.trim().to_string())
}
