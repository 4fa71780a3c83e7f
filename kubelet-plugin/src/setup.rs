//! Process setup shared by the binaries: command-line groups, logging, the Kubernetes client.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use multinic_api::names::DEFAULT_SYSFS_ROOT;

use crate::inventory::{FilterError, Filters, SysfsReader};

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("kubeconfig {path}: {source}; pass --kubeconfig or run in a pod with a service account")]
    Kubeconfig {
        path: PathBuf,
        source: kube::config::KubeconfigError,
    },
    #[error(
        "no Kubernetes client configuration: not in a cluster ({incluster}) and no usable kubeconfig ({infer}); pass --kubeconfig"
    )]
    NoConfig {
        incluster: kube::config::InClusterError,
        infer: kube::config::InferConfigError,
    },
    #[error("building the Kubernetes client: {0}")]
    Client(#[from] kube::Error),
    #[error("--node-name (or env NODE_NAME) is required")]
    NoNodeName,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Logs to stderr; `RUST_LOG` overrides the default `info` level.
pub fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second initialisation (tests) is harmless: keep the first subscriber.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// A client from `--kubeconfig`, else in-cluster, else `KUBECONFIG`/`~/.kube/config`.
pub async fn kube_client(kubeconfig: Option<&PathBuf>) -> Result<kube::Client, SetupError> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path).map_err(|source| SetupError::Kubeconfig {
                path: path.clone(),
                source,
            })?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|source| SetupError::Kubeconfig {
                    path: path.clone(),
                    source,
                })?
        }
        None => match kube::Config::incluster() {
            Ok(config) => config,
            Err(incluster) => kube::Config::infer()
                .await
                .map_err(|infer| SetupError::NoConfig { incluster, infer })?,
        },
    };
    Ok(kube::Client::try_from(config)?)
}

/// `--node-name`, falling back to env `NODE_NAME` (clap reads the env).
pub fn node_name(flag: Option<String>) -> Result<String, SetupError> {
    flag.filter(|n| !n.is_empty()).ok_or(SetupError::NoNodeName)
}

/// Inventory flags shared by the plugin and `multinic inventory`.
#[derive(Debug, Clone, Args)]
pub struct InventoryArgs {
    /// Root of sysfs.
    #[arg(long, default_value = DEFAULT_SYSFS_ROOT)]
    pub sysfs_root: PathBuf,
    /// Also publish virtual netdevs (veth, macvlan, bridges...). For labs and tests.
    #[arg(long)]
    pub allow_virtual: bool,
    /// Only publish interfaces whose name matches one of these globs (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub include_interfaces: Vec<String>,
    /// Never publish interfaces whose name matches one of these globs (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub exclude_interfaces: Vec<String>,
    /// Only publish NICs with these PCI IDs: VENDOR or VENDOR:DEVICE in hex (comma-separated), e.g. 15b3.
    #[arg(long, value_delimiter = ',')]
    pub pci_ids: Vec<String>,
    /// Only publish NICs bound to these kernel drivers (comma-separated), e.g. mlx5_core.
    #[arg(long, value_delimiter = ',')]
    pub drivers: Vec<String>,
    /// Shared mode: publish each NIC with allowMultipleAllocations and this many `multinic.dev/pods`
    /// (consumable capacity, needs the DRAConsumableCapacity feature gate).
    #[arg(long)]
    pub shared_pods: Option<u32>,
}

impl InventoryArgs {
    pub fn filters(&self) -> Result<Filters, FilterError> {
        Filters::new(
            self.allow_virtual,
            &self.include_interfaces,
            &self.exclude_interfaces,
            &self.pci_ids,
            &self.drivers,
        )
    }

    pub fn sysfs(&self) -> SysfsReader {
        SysfsReader::new(&self.sysfs_root)
    }
}

/// Resolves on SIGTERM (pod deletion) or SIGINT.
pub async fn shutdown_signal() -> std::io::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => Ok(()),
        r = tokio::signal::ctrl_c() => r,
    }
}
