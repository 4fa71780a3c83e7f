//! The multinic-dra node plugin: NIC inventory, ResourceSlice publishing and the kubelet DRA service.

pub mod inventory;
pub mod publish;
pub mod setup;
pub mod slices;
