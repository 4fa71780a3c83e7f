//! Process setup shared by the long-running binaries (kubelet plugin, controller, `multinic`):
//! logging, the Kubernetes client, the hostname and the shutdown signal.

use std::path::{Path, PathBuf};
use std::sync::Arc;

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
    Ok(kube::Client::try_from(kube_config(kubeconfig).await?)?)
}

/// Called with the verb and resource ([`request_kind`]) of every request a client sends.
pub type RequestHook = Arc<dyn Fn(&'static str, &str) + Send + Sync>;

/// Like [`kube_client`], calling `hook` for every request before it is sent (a component counts
/// its API requests with it).
pub async fn counted_kube_client(kubeconfig: Option<&Path>, hook: RequestHook) -> Result<kube::Client, SetupError> {
    let builder = kube::client::ClientBuilder::try_from(kube_config(kubeconfig).await?)?;
    let layer = tower::util::MapRequestLayer::new(move |request: http::Request<kube::client::Body>| {
        let (verb, resource) = request_kind(request.method(), request.uri().path(), request.uri().query());
        hook(verb, &resource);
        request
    });
    Ok(builder.with_layer(&layer).build())
}

/// The verb and resource of an API request, as the API server's `apiserver_request_total` names
/// them (`verb` lowercase; `resource` with its subresource: `resourceclaims/status`), from its
/// method, path and query. A path that is not under `/api/v1` or `/apis/<group>/<version>` (e.g.
/// `/version`) is resource `""`.
pub fn request_kind(method: &http::Method, path: &str, query: Option<&str>) -> (&'static str, String) {
    let parts: Vec<&str> = path.trim_matches('/').split('/').filter(|p| !p.is_empty()).collect();
    let rest: &[&str] = match parts.as_slice() {
        ["api", _version, rest @ ..] => rest,
        ["apis", _group, _version, rest @ ..] => rest,
        _ => &[],
    };
    // `namespaces/<ns>/<resource>…` is namespaced; `namespaces[/<name>[/<sub>]]` is the Namespace.
    let rest = match rest {
        ["namespaces", _ns, resource, tail @ ..] => {
            let mut v = vec![*resource];
            v.extend_from_slice(tail);
            v
        }
        other => other.to_vec(),
    };
    let (resource, named) = match rest.as_slice() {
        [] => (String::new(), false),
        [resource] => ((*resource).to_string(), false),
        [resource, _name] => ((*resource).to_string(), true),
        [resource, _name, sub, ..] => (format!("{resource}/{sub}"), true),
    };
    let watch = query.is_some_and(|q| q.split('&').any(|kv| kv == "watch=true" || kv == "watch=1"));
    let verb = match *method {
        http::Method::GET if watch => "watch",
        http::Method::GET if named => "get",
        http::Method::GET => "list",
        http::Method::POST => "create",
        http::Method::PUT => "update",
        http::Method::PATCH => "patch",
        http::Method::DELETE if named => "delete",
        http::Method::DELETE => "deletecollection",
        _ => "other",
    };
    (verb, resource)
}

async fn kube_config(kubeconfig: Option<&Path>) -> Result<kube::Config, SetupError> {
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
    Ok(config)
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

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    #[test]
    fn request_kind_names_verb_and_resource_as_the_api_server_does() {
        let kind = |m: Method, path: &str, q: Option<&str>| {
            let (verb, resource) = request_kind(&m, path, q);
            format!("{verb} {resource}")
        };
        let claim = "/apis/resource.k8s.io/v1/namespaces/ns/resourceclaims/c1";
        assert_eq!(kind(Method::GET, claim, None), "get resourceclaims");
        assert_eq!(
            kind(Method::PATCH, &format!("{claim}/status"), Some("fieldManager=x")),
            "patch resourceclaims/status"
        );
        assert_eq!(
            kind(
                Method::GET,
                "/apis/resource.k8s.io/v1/resourceslices",
                Some("fieldSelector=spec.nodeName%3Dn")
            ),
            "list resourceslices"
        );
        assert_eq!(
            kind(
                Method::GET,
                "/apis/multinic.dev/v1alpha1/nicnodeblocks",
                Some("watch=true&resourceVersion=5")
            ),
            "watch nicnodeblocks"
        );
        assert_eq!(
            kind(Method::POST, "/apis/resource.k8s.io/v1/resourceslices", None),
            "create resourceslices"
        );
        assert_eq!(
            kind(Method::PUT, "/apis/resource.k8s.io/v1/resourceslices/s", None),
            "update resourceslices"
        );
        assert_eq!(
            kind(
                Method::DELETE,
                "/apis/resource.k8s.io/v1/resourceslices",
                Some("labelSelector=a")
            ),
            "deletecollection resourceslices"
        );
        assert_eq!(
            kind(Method::DELETE, "/api/v1/namespaces/ns/pods/p", None),
            "delete pods"
        );
        // The Namespace itself, core group.
        assert_eq!(kind(Method::GET, "/api/v1/namespaces/ns", None), "get namespaces");
        assert_eq!(kind(Method::GET, "/api/v1/namespaces", None), "list namespaces");
        assert_eq!(kind(Method::GET, "/api/v1/nodes/n1/status", None), "get nodes/status");
        assert_eq!(kind(Method::GET, "/version", None), "list ");
        assert_eq!(kind(Method::HEAD, "/api/v1/nodes", None), "other nodes");
    }
}
