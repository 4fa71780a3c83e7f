//! The `/metrics` + `/healthz` (+ `/status`) HTTP endpoint shared by the node plugin and the
//! controller (feature `http`).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};

/// The answer of [`Exposition::status`]: the JSON document of `/status` (`Err`: why it cannot be
/// made), `None` when the component has none (then `/status` is 404).
pub type StatusFuture<'a> = Pin<Box<dyn Future<Output = Option<Result<String, String>>> + Send + 'a>>;

/// What the endpoint exposes.
pub trait Exposition: Send + Sync + 'static {
    /// The Prometheus text exposition, refreshed from live state.
    fn render(&self) -> Pin<Box<dyn Future<Output = String> + Send + '_>>;
    /// `Ok(())` when healthy, else why not.
    fn health(&self) -> Result<(), String>;
    /// The JSON document of `/status`; by default none.
    fn status(&self) -> StatusFuture<'_> {
        Box::pin(async { None })
    }
}

/// Serves `/metrics`, `/healthz` and `/status` on `listener` forever.
pub async fn serve(listener: tokio::net::TcpListener, exposition: Arc<dyn Exposition>) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        let exposition = exposition.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let exposition = exposition.clone();
                async move { Ok::<_, Infallible>(respond(req.uri().path(), exposition.as_ref()).await) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(error) = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await
            {
                tracing::debug!(%peer, %error, "metrics connection");
            }
        });
    }
}

async fn respond(path: &str, exposition: &dyn Exposition) -> Response<Full<Bytes>> {
    let not_found = || (StatusCode::NOT_FOUND, None, "not found\n".to_string());
    let (status, content_type, body) = match path {
        "/metrics" => (StatusCode::OK, None, exposition.render().await),
        "/healthz" => match exposition.health() {
            Ok(()) => (StatusCode::OK, None, "ok\n".to_string()),
            Err(why) => (StatusCode::SERVICE_UNAVAILABLE, None, format!("not ready: {why}\n")),
        },
        "/status" => match exposition.status().await {
            Some(Ok(json)) => (StatusCode::OK, Some("application/json"), json),
            Some(Err(why)) => (StatusCode::INTERNAL_SERVER_ERROR, None, format!("{why}\n")),
            None => not_found(),
        },
        _ => not_found(),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Some(content_type) = content_type {
        let value = hyper::header::HeaderValue::from_static(content_type);
        response.headers_mut().insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}

/// Why a metrics address cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("--metrics-address {address} is not host:port or :port: {source}")]
    Parse {
        address: String,
        source: std::net::AddrParseError,
    },
    #[error("--metrics-address {address}: {source}; pass a free port")]
    Bind { address: String, source: std::io::Error },
}

/// Binds a metrics address (`:9177` means all interfaces).
pub async fn bind(address: &str) -> Result<tokio::net::TcpListener, BindError> {
    let full = if address.starts_with(':') {
        format!("0.0.0.0{address}")
    } else {
        address.to_string()
    };
    let addr: SocketAddr = full.parse().map_err(|source| BindError::Parse {
        address: address.to_string(),
        source,
    })?;
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| BindError::Bind {
            address: address.to_string(),
            source,
        })
}
