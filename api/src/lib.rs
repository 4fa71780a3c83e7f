//! Types shared by every multinic-dra component.
//!
//! * [`names`]: the driver name, the attribute domain and the default paths of design.md §2.
//! * [`config`]: the opaque `NetworkConfig` carried by DeviceClasses and claims.
//! * [`plan`]: the per-claim plan written by `NodePrepareResources` and read by the CNI plugin.
//! * [`crd`] (feature `crd`): `MultiNicNetwork` and `NicNodeBlocks`.
//! * [`fsutil`]: crash-safe writes and bounded reads of small state files.
//! * [`hash`]: the stable FNV-1a hash inside link aliases and device names.
//! * [`rails`]: the block arithmetic of `rails` IPAM.
//! * [`pool`]: the blocks of `pool` IPAM (one subnet shared by all nodes, granted in blocks).
//! * [`setup`] (feature `setup`): logging, the Kubernetes client, hostname and signals of the binaries.
//! * [`retry`]: retry delays and bounded-rate reporting of repeating failures (API server loops).

pub mod config;
#[cfg(feature = "crd")]
pub mod crd;
pub mod fsutil;
pub mod hash;
pub mod names;
#[cfg(feature = "http")]
pub mod observe;
pub mod plan;
pub mod pool;
pub mod rails;
pub mod retry;
#[cfg(feature = "setup")]
pub mod setup;

pub use config::{AttachmentMode, IpamType, NetworkConfig};
pub use plan::{Plan, PlanError, PlannedDevice};
