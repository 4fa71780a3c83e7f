//! multinic-controller: turns `MultiNicNetwork` objects into DeviceClasses and per-node
//! `NicNodeBlocks` (design.md §5).

pub mod blocks;
