//! An in-process fake Kubernetes API server for multinic-dra tests and the demo.
//!
//! [`FakeApiServer`] serves plain HTTP/1.1 on `127.0.0.1:<random port>` and keeps objects in
//! memory. It implements the calls the multinic driver makes against `resource.k8s.io/v1`
//! (`resourceclaims` with `status`, `resourceslices`, `deviceclasses`), `coordination.k8s.io/v1`
//! (`leases`) and `multinic.dev/v1alpha1` (`multinicnetworks` with `status`, `nicnodeblocks` with `status`): get,
//! list, watch, create, update,
//! server-side apply, merge patch and delete: the calls the multinic binaries, `multinic demo` and
//! the benches make. It rejects what the real API server rejects for those calls (validation of
//! the DRA objects, optimistic concurrency, apply conflicts, status-subresource semantics), with
//! `Status` bodies shaped like upstream's.
//!
//! What the real API server does for those calls is checked by `tests/api` (feature
//! `real-cluster`), which runs against a real kube-apiserver.
//!
//! ```no_run
//! # async fn demo() {
//! let server = multinic_testkit::FakeApiServer::start().await;
//! let client = server.client();
//! # let _ = client;
//! # }
//! ```

mod field;
pub mod fixtures;
pub mod process;
pub mod rbac;
mod resources;
mod selectors;
mod server;
mod ssa;
mod status;
mod store;
mod strategy;
mod util;
mod validate;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;

/// Errors of the testkit API.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Binding or serving failed.
    #[error("fake API server I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The `apiVersion`/kind is not one the fake server serves.
    #[error("unknown resource {api_version} {kind}")]
    UnknownResource { api_version: String, kind: String },
    /// The object is not a JSON object with `apiVersion`, `kind` and `metadata.name`.
    #[error("invalid object: {0}")]
    InvalidObject(String),
    /// Building the kube client failed.
    #[error("kube client: {0}")]
    Kube(#[from] kube::Error),
    /// Writing the kubeconfig failed.
    #[error("kubeconfig: {0}")]
    Kubeconfig(String),
}

/// One request the server received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// HTTP method, e.g. `PATCH`.
    pub method: String,
    /// URL path, e.g. `/apis/resource.k8s.io/v1/namespaces/default/resourceclaims/c/status`.
    pub path: String,
    /// Raw query string (without `?`).
    pub query: String,
    /// The `Content-Type` header, if any.
    pub content_type: Option<String>,
    /// The `fieldManager` query parameter, if any.
    pub field_manager: Option<String>,
    /// HTTP status of the response (200 for watches that were started).
    pub status: u16,
}

impl RequestRecord {
    /// Whether the query string has `key=value`.
    pub fn has_query(&self, key: &str, value: &str) -> bool {
        store::Query::parse(&self.query).get(key) == Some(value)
    }
}

/// The fake API server. Dropping it stops the server and ends its watches.
pub struct FakeApiServer {
    addr: SocketAddr,
    shared: Arc<server::Shared>,
    accept_task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for FakeApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeApiServer").field("addr", &self.addr).finish()
    }
}

impl FakeApiServer {
    /// Starts a server on `127.0.0.1:<random port>`.
    ///
    /// # Panics
    /// When no loopback port can be bound (use [`FakeApiServer::try_start`] to handle that).
    pub async fn start() -> FakeApiServer {
        match Self::try_start().await {
            Ok(s) => s,
            Err(e) => panic!("cannot start the fake API server: {e}"),
        }
    }

    /// Starts a server on `127.0.0.1:<random port>`.
    pub async fn try_start() -> Result<FakeApiServer, Error> {
        Self::try_start_on("127.0.0.1:0".parse().map_err(|e| Error::Kubeconfig(format!("{e}")))?).await
    }

    /// Starts a server on `addr` (for tests where a client was pointed at a closed port first).
    pub async fn try_start_on(addr: SocketAddr) -> Result<FakeApiServer, Error> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(server::Shared::new());
        let accept_task = tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(FakeApiServer {
            addr,
            shared,
            accept_task,
        })
    }

    /// The base URL, `http://127.0.0.1:<port>`.
    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A `kube::Client` for this server (default namespace `default`).
    ///
    /// # Panics
    /// When kube cannot build a client for a plain-HTTP URL (use [`FakeApiServer::try_client`]).
    pub fn client(&self) -> kube::Client {
        match self.try_client() {
            Ok(c) => c,
            Err(e) => panic!("cannot build a kube client for the fake API server: {e}"),
        }
    }

    /// A `kube::Client` for this server.
    pub fn try_client(&self) -> Result<kube::Client, Error> {
        let uri: hyper::Uri = self.url().parse().map_err(|e| Error::Kubeconfig(format!("{e}")))?;
        let config = kube::Config::new(uri);
        Ok(kube::Client::try_from(config)?)
    }

    /// Starts a server and writes its kubeconfig to `<dir>/kubeconfig` (for a binary under test
    /// run with `--kubeconfig`); returns both.
    pub async fn start_with_kubeconfig(dir: &Path) -> Result<(Self, std::path::PathBuf), Error> {
        let server = Self::start().await;
        let kubeconfig = dir.join("kubeconfig");
        server.write_kubeconfig(&kubeconfig)?;
        Ok((server, kubeconfig))
    }

    /// Writes a kubeconfig for this server (cluster/context/user `fake`, namespace `default`) to
    /// `path`, for binaries run with `--kubeconfig`.
    pub fn write_kubeconfig(&self, path: impl AsRef<Path>) -> Result<(), Error> {
        std::fs::write(path.as_ref(), kubeconfig_yaml(&self.url()))?;
        Ok(())
    }

    fn resource(api_version: &str, kind: &str) -> Result<&'static resources::ResourceDef, Error> {
        resources::lookup(api_version, kind).ok_or_else(|| Error::UnknownResource {
            api_version: api_version.into(),
            kind: kind.into(),
        })
    }

    /// Seeds an object directly, as if written to etcd: no validation and no strategy (a claim's
    /// `status.allocation` can be set this way, as the scheduler would), but uid,
    /// creationTimestamp, generation and a new resourceVersion are assigned and watchers see
    /// ADDED (or MODIFIED when it replaces an object of the same name). Namespaced objects
    /// without a namespace go to `default`. Returns the stored object.
    pub fn insert(&self, obj: Value) -> Result<Value, Error> {
        let av = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
        let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
        let rd = Self::resource(av, kind)?;
        if obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .is_empty()
        {
            return Err(Error::InvalidObject("metadata.name is required".into()));
        }
        Ok(self.shared.state().insert(rd, obj))
    }

    /// An object as the API would return it. `kind` may be the kind, the plural or the lower-case kind.
    pub fn get(&self, api_version: &str, kind: &str, namespace: Option<&str>, name: &str) -> Option<Value> {
        let rd = Self::resource(api_version, kind).ok()?;
        self.shared.state().get(rd, namespace.unwrap_or(""), name).ok()
    }

    /// All objects of a kind, in one namespace or (for `None`) all, sorted by namespace and name.
    pub fn list(&self, api_version: &str, kind: &str, namespace: Option<&str>) -> Vec<Value> {
        match Self::resource(api_version, kind) {
            Ok(rd) => self.shared.state().all(rd, namespace),
            Err(_) => Vec::new(),
        }
    }

    /// Deletes an object directly (ignoring finalizers); returns it if it existed.
    pub fn delete(&self, api_version: &str, kind: &str, namespace: Option<&str>, name: &str) -> Option<Value> {
        let rd = Self::resource(api_version, kind).ok()?;
        self.shared.state().remove(rd, namespace.unwrap_or(""), name)
    }

    /// The requests received so far, oldest first.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.state().log.clone()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.shared.state().log.clear();
    }
}

/// A kubeconfig YAML for a plain-HTTP API server at `url` (cluster/context/user `fake`, namespace
/// `default`); also for a server that is not there yet.
fn kubeconfig_yaml(url: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {url}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: default\ncurrent-context: fake\nusers:\n- name: fake\n  user: {{}}\n"
    )
}

/// A loopback address nothing listens on, and a kubeconfig for it written to `path` (for tests
/// of a binary started while the API server is down; [`FakeApiServer::try_start_on`] can bring
/// one up there later).
pub fn closed_port_kubeconfig(path: &Path) -> Result<SocketAddr, Error> {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    std::fs::write(path, kubeconfig_yaml(&format!("http://{addr}")))?;
    Ok(addr)
}

async fn accept_loop(listener: TcpListener, shared: Arc<server::Shared>) {
    let mut shutdown = shared.shutdown.subscribe();
    loop {
        let accepted = tokio::select! {
            c = listener.accept() => c,
            _ = shutdown.changed() => return,
        };
        let Ok((stream, _)) = accepted else { continue };
        tokio::spawn(serve_connection(stream, shared.clone()));
    }
}

async fn serve_connection(stream: tokio::net::TcpStream, shared: Arc<server::Shared>) {
    let mut conn_shutdown = shared.shutdown.subscribe();
    let svc_shared = shared.clone();
    let svc = service_fn(move |req| server::handle(svc_shared.clone(), req));
    let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!("fake API server connection ended: {e}");
            }
        }
        _ = conn_shutdown.changed() => {}
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.shared.shutdown.send_replace(true);
        self.accept_task.abort();
    }
}
