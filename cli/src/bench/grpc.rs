//! Row 9: what the `:authority` fix in front of tonic (kubelet-plugin/src/authority.rs) costs.
//! A `GetInfo` round trip on a unix socket served through it vs. plain tonic (the client sends
//! `localhost`, which both accept), interleaved run by run; and the rewrite of one request's
//! header block alone.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use multinic_kubelet_plugin::authority::{
    AuthorityRewriter, FLAG_END_HEADERS, FLAG_END_STREAM, FRAME_HEADERS, PREFACE, inspect::client_frame,
};
use multinic_kubelet_plugin::grpc::{self, RegistrationService};
use multinic_kubelet_plugin::metrics::Metrics;
use multinic_proto::registration::registration_client::RegistrationClient;
use multinic_proto::registration::registration_server::RegistrationServer;
use multinic_proto::registration::{InfoRequest, PluginInfo};

use super::dra::DraError;
use super::error::RowError;
use super::fixtures::temp_dir;
use super::stats::{Row, Summary, Unit};

/// Calls per run of the round-trip row.
const CALLS: usize = 200;

fn service(endpoint: &Path) -> RegistrationService {
    RegistrationService {
        driver_name: "multinic.dev".into(),
        endpoint: endpoint.to_path_buf(),
        metrics: Arc::new(Metrics::new()),
    }
}

async fn client(path: PathBuf) -> Result<RegistrationClient<tonic::transport::Channel>, DraError> {
    Ok(RegistrationClient::new(super::dra::unix_channel(&path).await?))
}

/// µs per GetInfo over `CALLS` calls.
async fn round_trips(client: &mut RegistrationClient<tonic::transport::Channel>) -> Result<f64, RowError> {
    let t = Instant::now();
    for _ in 0..CALLS {
        let info: PluginInfo = client
            .get_info(InfoRequest {})
            .await
            .map_err(|source| DraError::Rpc {
                call: "GetInfo",
                source,
            })?
            .into_inner();
        black_box(info);
    }
    Ok(t.elapsed().as_secs_f64() * 1e6 / CALLS as f64)
}

pub async fn bench(runs: usize) -> Vec<Row> {
    let case = format!("GetInfo round trip on a unix socket, {CALLS} calls per run");
    match round_trip_row(runs, &case).await {
        Ok(row) => vec![row, rewrite_row(runs)],
        Err(e) => vec![Row::failed("9", case, e), rewrite_row(runs)],
    }
}

async fn round_trip_row(runs: usize, case: &str) -> Result<Row, RowError> {
    let dir = temp_dir("gRPC sockets")?;
    let (ours, plain) = (dir.path().join("ours.sock"), dir.path().join("plain.sock"));
    let listener = grpc::bind_socket(&ours).map_err(DraError::Serve)?;
    let (path, svc) = (ours.clone(), service(&ours));
    tokio::spawn(async move { grpc::serve_registration(listener, &path, svc, std::future::pending()).await });
    let listener = grpc::bind_socket(&plain).map_err(DraError::Serve)?;
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(RegistrationServer::new(service(&plain)))
            .serve_with_incoming(tokio_stream_wrapper(listener)),
    );
    let (mut a, mut b) = (client(ours).await?, client(plain).await?);
    // Warm both connections.
    round_trips(&mut a).await?;
    round_trips(&mut b).await?;
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        with.push(round_trips(&mut a).await?);
        without.push(round_trips(&mut b).await?);
    }
    let mut row = Row::new("9", case.to_string(), Unit::Us);
    row.ours = Summary::of(&with);
    let base = Summary::of(&without);
    if let (Some(o), Some(p)) = (&row.ours, &base) {
        row.ratio = Some(("ours / plain tonic".into(), o.median / p.median));
    }
    row.baseline = Some(("plain tonic (refuses the kubelet)".into(), base));
    Ok(row)
}

fn tokio_stream_wrapper(
    listener: tokio::net::UnixListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::UnixStream>> {
    futures::stream::unfold(listener, |l| async move { Some((l.accept().await.map(|(s, _)| s), l)) })
}

/// The client→server bytes of one kubelet `GetInfo` call with a socket-path authority, as grpc-go
/// encodes it on a new connection (literals; the rewriter's cost does not depend on indexing).
fn kubelet_request() -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in [
        (&b":method"[..], &b"POST"[..]),
        (b":scheme", b"http"),
        (b":path", b"/pluginregistration.Registration/GetInfo"),
        (
            b":authority",
            b"/var/lib/kubelet/plugins_registry/multinic.dev-reg.sock",
        ),
        (b"content-type", b"application/grpc"),
        (b"user-agent", b"grpc-go/1.79.3"),
        (b"te", b"trailers"),
    ] {
        block.push(0x00);
        for s in [name, value] {
            block.push(u8::try_from(s.len()).unwrap_or(127));
            block.extend_from_slice(s);
        }
    }
    let mut out = PREFACE.to_vec();
    out.extend(client_frame(FRAME_HEADERS, FLAG_END_HEADERS, 1, &block));
    out.extend(client_frame(0x0, FLAG_END_STREAM, 1, &[0, 0, 0, 0, 0]));
    out
}

fn rewrite_row(runs: usize) -> Row {
    let case = "rewrite of one request's header block (connection preface + HEADERS + DATA)";
    let input = kubelet_request();
    let iters = 20_000u32;
    let per_call: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..iters {
                let mut r = AuthorityRewriter::new();
                let _ = black_box(r.feed(black_box(&input)));
                black_box(r.take_output());
            }
            t.elapsed().as_secs_f64() * 1e6 / f64::from(iters)
        })
        .collect();
    let mut row = Row::new("9", case, Unit::Us);
    row.ours = Summary::of(&per_call);
    row
}
