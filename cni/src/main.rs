//! `multinic-cni` entry point: the process's environment, stdin and stdout (the work is in
//! [`entry`]).
//!
//! [`entry`]: multinic_cni::entry

use std::process::ExitCode;

fn main() -> ExitCode {
    multinic_cni::entry::invoke(|k| std::env::var(k).ok(), std::io::stdin(), std::io::stdout().lock())
}
