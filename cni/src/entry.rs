//! One invocation of the plugin as a process: stdin and environment in, the result or the CNI
//! error JSON on stdout, logs to stderr or to `logFile`.

use std::io::{Read, Write};
use std::process::ExitCode;

use crate::args::parse_env;
use crate::config::{MAX_STDIN_BYTES, answer_version, parse_conf};
use crate::error::CniError;
use crate::plugin::{fault_from_env, run};

/// Runs the invocation that `get` (the environment), `stdin` and `stdout` describe.
pub fn invoke(get: impl Fn(&str) -> Option<String>, stdin: impl Read, mut stdout: impl Write) -> ExitCode {
    let stdin = read_config(stdin);
    let stdin_bytes = stdin.as_deref().unwrap_or_default();
    if let Err(e) = init_logging(stdin_bytes, &get) {
        eprintln!("multinic-cni: logging disabled: {e}");
    }
    let version = answer_version(stdin_bytes);
    let outcome = stdin.and_then(|bytes| {
        let env = parse_env(&get)?;
        let fault = fault_from_env(&get);
        tracing::debug!(command = env.command.as_str(), container = %env.container_id, "invoked");
        run(&env, &bytes, fault)
    });
    match outcome {
        Ok(None) => ExitCode::SUCCESS,
        Ok(Some(result)) => match writeln!(stdout, "{result}") {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "cannot write the result to stdout");
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            tracing::error!(code = e.code(), error = %e, "failed");
            let _ = writeln!(stdout, "{}", e.to_json(&version));
            ExitCode::FAILURE
        }
    }
}

/// The network configuration; one byte over the limit is read so that [`parse_conf`] refuses it.
fn read_config(stdin: impl Read) -> Result<Vec<u8>, CniError> {
    let mut buf = Vec::new();
    stdin
        .take(MAX_STDIN_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(|source| CniError::Io {
            what: "read the network configuration from stdin".into(),
            source,
        })?;
    Ok(buf)
}

/// Logs go to stderr, or to `logFile` from the config; never to stdout (the CNI result). The level
/// is `MULTINIC_CNI_LOG`, else `logLevel` from the config, else `info`.
fn init_logging(stdin: &[u8], get: impl Fn(&str) -> Option<String>) -> Result<(), CniError> {
    let conf = parse_conf(stdin).ok();
    let level = get("MULTINIC_CNI_LOG")
        .or_else(|| conf.as_ref().and_then(|c| c.log_level.clone()))
        .unwrap_or_else(|| "info".to_string());
    let filter =
        tracing_subscriber::EnvFilter::try_new(&level).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(false);
    match conf.and_then(|c| c.log_file) {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|source| CniError::Io {
                    what: format!(
                        "open log file {} (logFile in the network configuration)",
                        path.display()
                    ),
                    source,
                })?;
            builder.with_writer(std::sync::Mutex::new(file)).init();
        }
        None => builder.with_writer(std::io::stderr).init(),
    }
    Ok(())
}
