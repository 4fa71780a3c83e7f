//! multinic-controller: turns `MultiNicNetwork` objects into DeviceClasses and per-node
//! `NicNodeBlocks` (design.md §5).

pub mod blocks;
pub mod daemon;
pub mod lease;
pub mod metrics;
pub mod pool;
pub mod reconcile;
pub mod selector;
pub mod slices;
