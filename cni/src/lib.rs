//! `multinic-cni`: the CNI plugin of multinic-dra (design.md §7).
//!
//! It reads the plans the kubelet plugin wrote for the pod (`<stateDir>/plans/*.json`), and applies
//! each planned device inside the pod's network namespace over rtnetlink: the host netdev is moved
//! (`host-device`, `sriov-vf`) or a child is created (`macvlan`, `ipvlan-l2`, `ipvlan-l3`), renamed
//! to the planned name, given its MTU, addresses, routes and (with a table) a policy rule, and set
//! up. Every link is marked with an alias ([`alias::Mark`]) naming the claim, the host device and
//! the CNI attachment, so DEL and GC find and restore it without the plan.
//!
//! Modules: [`args`], [`config`], [`result`], [`alias`] are pure; [`netns`] and [`nl`] talk to the
//! kernel; [`plugin`] runs the commands; [`entry`] is one invocation as a process.
//!
//! Fault injection (tests only): `MULTINIC_CNI_FAULT=after-device-N` (also `after-addresses-N`,
//! `after-routes-N`, `del-after-device-N`) makes ADD (DEL) stop with an error, without rollback. It is honoured only when the binary is built with the
//! `fault-injection` feature or when `MULTINIC_CNI_TEST_MODE=1` is set.

pub mod alias;
pub mod args;
pub mod config;
pub mod entry;
pub mod error;
pub mod netns;
pub mod nl;
pub mod plugin;
pub mod rdma;
pub mod result;

pub use error::CniError;
