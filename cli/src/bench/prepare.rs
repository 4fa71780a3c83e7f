//! Row 5: NodePrepareResources latency with no kernel work: the kubelet-like client calls the
//! in-process plugin over its unix socket; the plugin reads the claim, writes the plan file
//! (durably, batched with concurrent prepares) and the claim status. Claims have 8 NICs each. Two claim backends: the fake API
//! server over HTTP (its CPU is in this process, on the same 2 cores), and memory (the plugin's
//! own cost: gRPC, plan building, plan store).

use std::time::Instant;

use multinic_api::rails::RailsLayout;
use multinic_testkit::fixtures::veth_nic;

use super::dra::{self, BenchClaim, DraError, Plugin};
use super::error::{RowError, to_u32};
use super::stats::{Row, Unit, percentile};

const NICS: usize = 8;
const SEQUENTIAL_CALLS: usize = 50;
const CONCURRENT: usize = 100;

/// /16, 64 hosts, 8 rails, /25 blocks (room for 100 claims × 8 NICs).
fn layout() -> Result<RailsLayout, DraError> {
    dra::rails_layout("10.20.0.0/16", 6, 3)
}

/// One run of single-claim calls, `SEQUENTIAL_CALLS` one after another or `CONCURRENT` at once:
/// per-call latencies in ms. The claims are unprepared and deleted afterwards.
async fn calls(
    plugin: &Plugin,
    client: &mut dra::Client,
    params: &serde_json::Value,
    concurrent: bool,
) -> Result<Vec<f64>, RowError> {
    let devices: Vec<&str> = plugin.devices.iter().map(String::as_str).collect();
    let n = if concurrent { CONCURRENT } else { SEQUENTIAL_CALLS };
    let claims = (0..n)
        .map(|_| plugin.api.insert_claim(&devices, params))
        .collect::<Result<Vec<_>, DraError>>()?;
    let mut lat = Vec::with_capacity(claims.len());
    if concurrent {
        let tasks: Vec<_> = claims
            .iter()
            .map(|c| {
                let (mut client, claim) = (client.clone(), c.v1());
                tokio::spawn(async move {
                    let t = Instant::now();
                    dra::prepare(&mut client, vec![claim]).await?;
                    Ok::<_, DraError>(t.elapsed().as_secs_f64() * 1e3)
                })
            })
            .collect();
        for t in tasks {
            lat.push(t.await??);
        }
    } else {
        for c in &claims {
            let t = Instant::now();
            dra::prepare(client, vec![c.v1()]).await?;
            lat.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    dra::unprepare(client, claims.iter().map(BenchClaim::v1).collect()).await?;
    for c in &claims {
        plugin.api.delete_claim(c);
    }
    Ok(lat)
}

async fn bench_backend(runs: usize, in_memory: bool) -> Vec<Row> {
    let api = if in_memory {
        "claim API in memory"
    } else {
        "fake API server over HTTP"
    };
    let cases = [
        format!("NodePrepareResources, 1 claim at a time ({NICS} NICs), {api}"),
        format!("NodePrepareResources, {CONCURRENT} concurrent claims ({NICS} NICs each), {api}"),
    ];
    let mut samples: [Vec<Vec<f64>>; 2] = [Vec::new(), Vec::new()];
    let outcome: Result<(), RowError> = async {
        let layout = layout()?;
        let nics: Vec<_> = (0..NICS)
            .map(|k| {
                let index = to_u32("interface index of NIC", k)?;
                Ok(veth_nic(&format!("nic{k}"), index + 2))
            })
            .collect::<Result<_, RowError>>()?;
        let plugin = Plugin::start(&nics, &layout, in_memory).await?;
        let mut client = plugin.client().await?;
        let params = dra::params(&layout, "host-device");
        calls(&plugin, &mut client, &params, false)
            .await
            .map_err(RowError::phase("warm-up".into()))?;
        for run in 0..runs {
            samples[0].push(
                calls(&plugin, &mut client, &params, false)
                    .await
                    .map_err(RowError::phase(format!("run {run}, 1 claim")))?,
            );
            samples[1].push(
                calls(&plugin, &mut client, &params, true)
                    .await
                    .map_err(RowError::phase(format!("run {run}, {CONCURRENT} concurrent")))?,
            );
        }
        Ok(())
    }
    .await;
    let mut rows = Vec::new();
    for (case, runs) in cases.iter().zip(&samples) {
        for (p, label) in [(50.0, "p50"), (99.0, "p99")] {
            let mut row = Row::new("5", format!("{case}: {label} per call"), Unit::Ms);
            let per_run: Vec<f64> = runs.iter().map(|lat| percentile(lat, p)).collect();
            row.record(&per_run, &outcome);
            if p == 99.0 {
                // Issue 17: 100 concurrent < 20 ms; 1 claim < 1 ms in memory (< 2 ms over HTTP,
                // issue 7).
                let limit = match (case == &cases[1], in_memory) {
                    (true, _) => 20.0,
                    (false, true) => 1.0,
                    (false, false) => 2.0,
                };
                row.target = format!("< {limit} ms");
                row.met = row.ours.map(|s| s.median < limit);
            }
            rows.push(row);
        }
    }
    rows
}

pub async fn bench(runs: usize) -> Vec<Row> {
    let mut rows = bench_backend(runs, false).await;
    rows.extend(bench_backend(runs, true).await);
    rows
}
