//! The `multinic` command line as a library: `main.rs` parses arguments and calls each command's
//! `run`; the integration tests drive the same sandbox fixtures (network namespaces, the plugin
//! binary beside a fake API server, CNI calls) that `demo` and `bench` use.

pub mod bench;
pub mod demo;
pub mod fsio;
pub mod install;
pub mod inventory;
pub mod status;
pub mod vmcheck;
