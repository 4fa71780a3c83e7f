//! The library side of `multinic`: the commands whose work is not a test harness (the benchmarks,
//! the demo and the VM checks live with the binary).

pub mod inventory;
