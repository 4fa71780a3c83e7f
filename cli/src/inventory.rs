//! `multinic inventory`: the ResourceSlices this host would publish, with no cluster.

use std::path::{Path, PathBuf};

use multinic_api::setup::{SetupError, hostname};
use multinic_kubelet_plugin::inventory::{self, FilterError, HostSnapshot, netlink};
use multinic_kubelet_plugin::setup::InventoryArgs;
use multinic_kubelet_plugin::slices::{SliceOptions, build_devices, build_slices};

#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("reading the netlink snapshot {path}: {source}")]
    ReadSnapshot { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a netlink snapshot (the JSON of the test fixtures): {source}")]
    ParseSnapshot { path: PathBuf, source: serde_json::Error },
    #[error(transparent)]
    Netlink(#[from] netlink::NetlinkError),
    #[error("{0}; pass --node-name")]
    NodeName(#[from] SetupError),
    #[error(transparent)]
    Filters(#[from] FilterError),
    #[error("writing the slices as YAML: {0}")]
    Yaml(#[from] serde_yaml::Error),
    #[error("writing the slices as JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// Output format.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Output {
    Yaml,
    Json,
}

/// Reads the host (or `snapshot_file`), prints each excluded netdev with its reason on stderr and
/// returns the slices as text.
pub async fn render(
    node_name: Option<String>,
    args: &InventoryArgs,
    snapshot_file: Option<&Path>,
    output: Output,
) -> Result<String, InventoryError> {
    let snapshot: HostSnapshot = match snapshot_file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| InventoryError::ReadSnapshot {
                path: path.to_path_buf(),
                source,
            })?;
            serde_json::from_str(&text).map_err(|source| InventoryError::ParseSnapshot {
                path: path.to_path_buf(),
                source,
            })?
        }
        None => netlink::read_snapshot(&netlink::connect()?).await?,
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
    Ok(match output {
        Output::Yaml => serde_yaml::to_string(&slices)?,
        Output::Json => serde_json::to_string_pretty(&slices)? + "\n",
    })
}
