//! Process setup shared by the long-running binaries (kubelet plugin, controller, `multinic`):
//! logging, the Kubernetes client, the hostname and the shutdown signal.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("kubeconfig {path}: {source}; pass --kubeconfig or run in a pod with a service account")]
    Kubeconfig {
        path: PathBuf,
        source: kube::config::KubeconfigError,
    },
    #[error(
        "no Kubernetes client configuration: not in a cluster ({incluster}) and no usable kubeconfig ({infer}); pass --kubeconfig"
    )]
    NoConfig {
        incluster: kube::config::InClusterError,
        infer: kube::config::InferConfigError,
    },
    #[error("building the Kubernetes client: {0}")]
    Client(#[from] kube::Error),
    #[error("reading the hostname from {HOSTNAME_FILE}: {0}")]
    Hostname(std::io::Error),
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Logs to stderr; `RUST_LOG` overrides the default `info` level.
pub fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second initialisation (tests) is harmless: keep the first subscriber.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// A client from `--kubeconfig`, else in-cluster, else `KUBECONFIG`/`~/.kube/config`.
pub async fn kube_client(kubeconfig: Option<&Path>) -> Result<kube::Client, SetupError> {
    let config = match kubeconfig {
        Some(path) => {
            let bad = |source| SetupError::Kubeconfig {
                path: path.to_path_buf(),
                source,
            };
            let kc = kube::config::Kubeconfig::read_from(path).map_err(bad)?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(bad)?
        }
        None => match kube::Config::incluster() {
            Ok(config) => config,
            Err(incluster) => kube::Config::infer()
                .await
                .map_err(|infer| SetupError::NoConfig { incluster, infer })?,
        },
    };
    Ok(kube::Client::try_from(config)?)
}

const HOSTNAME_FILE: &str = "/proc/sys/kernel/hostname";

/// This host's name (the kernel's, as `hostname` prints it).
pub fn hostname() -> Result<String, SetupError> {
    let name = std::fs::read_to_string(HOSTNAME_FILE).map_err(SetupError::Hostname)?;
    Ok(name.trim().to_string())
}

/// Resolves on SIGTERM (pod deletion) or SIGINT.
pub async fn shutdown_signal() -> std::io::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => Ok(()),
        r = tokio::signal::ctrl_c() => r,
    }
}
