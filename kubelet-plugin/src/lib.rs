//! The multinic-dra node plugin: NIC inventory, ResourceSlice publishing and the kubelet DRA service.

pub mod authority;
pub mod cdi;
pub mod cluster;
pub mod daemon;
pub mod driver;
pub mod grpc;
pub mod health;
pub mod inventory;
pub mod leases;
pub mod ledger;
pub mod metrics;
pub mod plan_builder;
pub mod pool;
pub mod publish;
pub mod routes;
pub mod setup;
pub mod slices;
pub mod status;
pub mod uevent;
