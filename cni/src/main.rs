//! `multinic-cni` entry point: environment and stdin in, result or CNI error JSON on stdout.

use std::io::{Read, Write};
use std::process::ExitCode;

use anyhow::Context;
use multinic_cni::args::parse_env;
use multinic_cni::config::{MAX_STDIN_BYTES, parse_conf, sniff_version};
use multinic_cni::error::CniError;
use multinic_cni::plugin::{fault_from_env, run};
use tracing_subscriber::EnvFilter;

/// Logs go to stderr, or to `logFile` from the config; never to stdout (the CNI result).
fn init_logging(stdin: &[u8]) -> anyhow::Result<()> {
    let conf = parse_conf(stdin).ok();
    let level = std::env::var("MULTINIC_CNI_LOG")
        .ok()
        .or_else(|| conf.as_ref().and_then(|c| c.log_level.clone()))
        .unwrap_or_else(|| "info".to_string());
    let filter = EnvFilter::try_new(&level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(false);
    match conf.and_then(|c| c.log_file) {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .with_context(|| format!("open log file {}", path.display()))?;
            builder.with_writer(std::sync::Mutex::new(file)).init();
        }
        None => builder.with_writer(std::io::stderr).init(),
    }
    Ok(())
}

fn read_stdin() -> Result<Vec<u8>, CniError> {
    let mut buf = Vec::new();
    std::io::stdin()
        .take(MAX_STDIN_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(|source| CniError::Io {
            what: "read the network configuration from stdin".into(),
            source,
        })?;
    Ok(buf)
}

fn main() -> ExitCode {
    let stdin = read_stdin();
    let stdin_bytes = stdin.as_deref().unwrap_or_default();
    if let Err(e) = init_logging(stdin_bytes) {
        eprintln!("multinic-cni: logging disabled: {e:#}");
    }
    let version = sniff_version(stdin_bytes).unwrap_or_else(|| "1.1.0".to_string());
    let outcome = stdin.and_then(|bytes| {
        let env = parse_env(|k| std::env::var(k).ok())?;
        let fault = fault_from_env(|k| std::env::var(k).ok());
        tracing::debug!(command = env.command.as_str(), container = %env.container_id, "invoked");
        run(&env, &bytes, fault)
    });
    let mut out = std::io::stdout().lock();
    match outcome {
        Ok(None) => ExitCode::SUCCESS,
        Ok(Some(result)) => match writeln!(out, "{result}") {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "cannot write the result to stdout");
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            tracing::error!(code = e.code(), error = %e, "failed");
            let _ = writeln!(out, "{}", e.to_json(&version));
            ExitCode::FAILURE
        }
    }
}
