//! The kubelet-facing gRPC services on unix sockets: plugin registration and the DRA service
//! (`v1` and `v1beta1`, same behaviour). Every accepted connection goes through
//! [`crate::authority::AuthorityFix`], so the kubelet's `:authority` (a socket path) is accepted.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use futures::TryStreamExt;
use futures::future::join_all;
use multinic_proto::dra::{v1, v1beta1};
use multinic_proto::registration::{
    InfoRequest, PluginInfo, RegistrationStatus, RegistrationStatusResponse, registration_server,
};
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Request, Response, Status};

use crate::authority::AuthorityFix;
use crate::health::HealthService;
use multinic_proto::health::{v1 as health_v1, v1alpha1 as health_v1alpha1};

use crate::driver::{ClaimApi, ClaimRef, Driver, PrepareError};
use crate::metrics::Metrics;

/// Socket file names.
pub const DRA_SOCKET: &str = "dra.sock";

/// Registration socket name in the registry dir: `<driver>-reg.sock`.
pub fn registration_socket(driver: &str) -> String {
    format!("{driver}-reg.sock")
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("socket {path}: {source}; check that the directory is a writable hostPath mount")]
    Socket { path: PathBuf, source: std::io::Error },
    #[error("gRPC server on {path}: {source}")]
    Serve {
        path: PathBuf,
        source: tonic::transport::Error,
    },
}

/// The DRA service, shared by both API versions.
pub struct DraService<A> {
    driver: Arc<Driver<A>>,
    metrics: Arc<Metrics>,
}

impl<A> Clone for DraService<A> {
    fn clone(&self) -> Self {
        Self {
            driver: self.driver.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

impl<A: ClaimApi> DraService<A> {
    pub fn new(driver: Arc<Driver<A>>, metrics: Arc<Metrics>) -> Self {
        Self { driver, metrics }
    }

    /// Runs `op` for every claim concurrently; a failing claim gets its own error (logged), never
    /// failing the others. Records the call's metrics. Returns claim UID → result.
    async fn per_claim<T, F, Fut>(
        &self,
        method: &'static str,
        claims: Vec<v1::Claim>,
        op: F,
    ) -> HashMap<String, Result<T, String>>
    where
        F: Fn(ClaimRef) -> Fut,
        Fut: std::future::Future<Output = (ClaimRef, Result<T, PrepareError>)>,
    {
        let start = Instant::now();
        let results = join_all(claims.into_iter().map(|c| {
            op(ClaimRef {
                namespace: c.namespace,
                uid: c.uid,
                name: c.name,
            })
        }))
        .await;
        let mut failed = false;
        let results = results
            .into_iter()
            .map(|(claim, result)| {
                let result = result.map_err(|error| {
                    tracing::warn!(%claim, %error, method, "claim failed");
                    failed = true;
                    error.to_string()
                });
                (claim.uid, result)
            })
            .collect();
        let outcome = if failed { "claim_error" } else { "ok" };
        self.metrics.record_rpc(method, outcome, start.elapsed().as_secs_f64());
        results
    }

    /// Prepares every claim concurrently.
    pub async fn prepare(&self, claims: Vec<v1::Claim>) -> v1::NodePrepareResourcesResponse {
        let results = self
            .per_claim("NodePrepareResources", claims, |claim| async move {
                let result = self.driver.prepare(&claim).await;
                (claim, result)
            })
            .await;
        let claims = results
            .into_iter()
            .map(|(uid, result)| {
                let response = match result {
                    Ok(devices) => v1::NodePrepareResourceResponse {
                        devices: devices
                            .into_iter()
                            .map(|d| v1::Device {
                                request_names: vec![d.request],
                                pool_name: d.pool,
                                device_name: d.device,
                                cdi_device_ids: d.cdi_device_ids,
                                share_id: d.share_id,
                            })
                            .collect(),
                        error: String::new(),
                    },
                    Err(error) => v1::NodePrepareResourceResponse {
                        devices: Vec::new(),
                        error,
                    },
                };
                (uid, response)
            })
            .collect();
        v1::NodePrepareResourcesResponse { claims }
    }

    /// Unprepares every claim concurrently.
    pub async fn unprepare(&self, claims: Vec<v1::Claim>) -> v1::NodeUnprepareResourcesResponse {
        let results = self
            .per_claim("NodeUnprepareResources", claims, |claim| async move {
                let result = self.driver.unprepare(&claim).await;
                (claim, result)
            })
            .await;
        let claims = results
            .into_iter()
            .map(|(uid, result)| {
                (
                    uid,
                    v1::NodeUnprepareResourceResponse {
                        error: result.err().unwrap_or_default(),
                    },
                )
            })
            .collect();
        v1::NodeUnprepareResourcesResponse { claims }
    }
}

#[tonic::async_trait]
impl<A: ClaimApi> v1::dra_plugin_server::DraPlugin for DraService<A> {
    async fn node_prepare_resources(
        &self,
        request: Request<v1::NodePrepareResourcesRequest>,
    ) -> Result<Response<v1::NodePrepareResourcesResponse>, Status> {
        Ok(Response::new(self.prepare(request.into_inner().claims).await))
    }

    async fn node_unprepare_resources(
        &self,
        request: Request<v1::NodeUnprepareResourcesRequest>,
    ) -> Result<Response<v1::NodeUnprepareResourcesResponse>, Status> {
        Ok(Response::new(self.unprepare(request.into_inner().claims).await))
    }
}

fn claims_from_v1beta1(claims: Vec<v1beta1::Claim>) -> Vec<v1::Claim> {
    claims
        .into_iter()
        .map(|c| v1::Claim {
            namespace: c.namespace,
            uid: c.uid,
            name: c.name,
        })
        .collect()
}

#[tonic::async_trait]
impl<A: ClaimApi> v1beta1::dra_plugin_server::DraPlugin for DraService<A> {
    async fn node_prepare_resources(
        &self,
        request: Request<v1beta1::NodePrepareResourcesRequest>,
    ) -> Result<Response<v1beta1::NodePrepareResourcesResponse>, Status> {
        let response = self.prepare(claims_from_v1beta1(request.into_inner().claims)).await;
        let claims = response
            .claims
            .into_iter()
            .map(|(uid, r)| {
                let devices = r
                    .devices
                    .into_iter()
                    .map(|d| v1beta1::Device {
                        request_names: d.request_names,
                        pool_name: d.pool_name,
                        device_name: d.device_name,
                        cdi_device_ids: d.cdi_device_ids,
                    })
                    .collect();
                (
                    uid,
                    v1beta1::NodePrepareResourceResponse {
                        devices,
                        error: r.error,
                    },
                )
            })
            .collect();
        Ok(Response::new(v1beta1::NodePrepareResourcesResponse { claims }))
    }

    async fn node_unprepare_resources(
        &self,
        request: Request<v1beta1::NodeUnprepareResourcesRequest>,
    ) -> Result<Response<v1beta1::NodeUnprepareResourcesResponse>, Status> {
        let response = self.unprepare(claims_from_v1beta1(request.into_inner().claims)).await;
        let claims = response
            .claims
            .into_iter()
            .map(|(uid, r)| (uid, v1beta1::NodeUnprepareResourceResponse { error: r.error }))
            .collect();
        Ok(Response::new(v1beta1::NodeUnprepareResourcesResponse { claims }))
    }
}

/// The registration service the kubelet's plugin watcher talks to.
pub struct RegistrationService {
    pub driver_name: String,
    pub endpoint: PathBuf,
    pub metrics: Arc<Metrics>,
}

#[tonic::async_trait]
impl registration_server::Registration for RegistrationService {
    async fn get_info(&self, _: Request<InfoRequest>) -> Result<Response<PluginInfo>, Status> {
        Ok(Response::new(PluginInfo {
            r#type: multinic_proto::DRA_PLUGIN_TYPE.into(),
            name: self.driver_name.clone(),
            endpoint: self.endpoint.display().to_string(),
            supported_versions: vec![
                multinic_proto::DRA_PLUGIN_SERVICE_V1.into(),
                multinic_proto::DRA_PLUGIN_SERVICE_V1BETA1.into(),
                multinic_proto::DRA_RESOURCE_HEALTH_SERVICE_V1.into(),
                multinic_proto::DRA_RESOURCE_HEALTH_SERVICE_V1ALPHA1.into(),
            ],
        }))
    }

    async fn notify_registration_status(
        &self,
        request: Request<RegistrationStatus>,
    ) -> Result<Response<RegistrationStatusResponse>, Status> {
        let status = request.into_inner();
        if status.plugin_registered {
            tracing::info!(driver = %self.driver_name, "registered with the kubelet");
        } else {
            tracing::error!(driver = %self.driver_name, error = %status.error, "the kubelet rejected the registration; /healthz now fails so the pod is restarted");
        }
        self.metrics
            .registered
            .store(status.plugin_registered, Ordering::Relaxed);
        Ok(Response::new(RegistrationStatusResponse {}))
    }
}

/// A client channel to the gRPC server on the unix socket `path`: the kubelet's side of our
/// sockets, for the tests and `multinic bench`. `uri` sets the `:authority` the client sends
/// (`http://localhost`, or what the kubelet sends, to exercise [`AuthorityFix`]).
pub async fn unix_channel(
    uri: &'static str,
    path: &Path,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    let path = path.to_path_buf();
    tonic::transport::Endpoint::from_static(uri)
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(path).await?,
                ))
            }
        }))
        .await
}

/// Binds a unix socket with mode 0600 in a 0750 directory, removing a stale socket first.
pub fn bind_socket(path: &Path) -> Result<UnixListener, ServeError> {
    let err = |source| ServeError::Socket {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        multinic_api::plan::create_private_dir(dir).map_err(err)?;
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(err(e)),
        _ => {}
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    Ok(listener)
}

/// Serves the DRA service (v1 + v1beta1) on `listener` until `shutdown` resolves.
pub async fn serve_dra<A: ClaimApi>(
    listener: UnixListener,
    path: &Path,
    service: DraService<A>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ServeError> {
    let health = HealthService::new(service.driver.table(), service.driver.node_name());
    tonic::transport::Server::builder()
        .add_service(v1::dra_plugin_server::DraPluginServer::new(service.clone()))
        .add_service(v1beta1::dra_plugin_server::DraPluginServer::new(service))
        .add_service(health_v1alpha1::dra_resource_health_server::DraResourceHealthServer::new(health.clone()))
        .add_service(health_v1::dra_resource_health_server::DraResourceHealthServer::new(
            health,
        ))
        .serve_with_incoming_shutdown(incoming(listener), shutdown)
        .await
        .map_err(|source| ServeError::Serve {
            path: path.to_path_buf(),
            source,
        })
}

/// The connections of `listener`, each behind the `:authority` fix.
fn incoming(
    listener: UnixListener,
) -> impl futures::Stream<Item = std::io::Result<AuthorityFix<tokio::net::UnixStream>>> {
    UnixListenerStream::new(listener).map_ok(AuthorityFix::new)
}

/// Serves the registration service on `listener` until `shutdown` resolves.
pub async fn serve_registration(
    listener: UnixListener,
    path: &Path,
    service: RegistrationService,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ServeError> {
    tonic::transport::Server::builder()
        .add_service(registration_server::RegistrationServer::new(service))
        .serve_with_incoming_shutdown(incoming(listener), shutdown)
        .await
        .map_err(|source| ServeError::Serve {
            path: path.to_path_buf(),
            source,
        })
}
