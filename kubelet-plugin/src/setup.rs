//! Command-line groups shared by the plugin and `multinic inventory`.

use std::path::PathBuf;

use clap::Args;
use multinic_api::names::DEFAULT_SYSFS_ROOT;

use crate::inventory::{FilterError, Filters, SysfsReader};

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
