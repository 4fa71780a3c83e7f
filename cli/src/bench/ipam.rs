//! Row 4: IPAM allocate + release on one node, ours vs. the reference `host-local` plugin.
//!
//! Ours is the real lease path of `Driver::prepare`/`unprepare` (plan built from the node's
//! blocks, plan file and pod index written and made durable, released by removing the plan), with
//! an in-memory claim API so no HTTP is in the loop. host-local is exec'd the CNI way, one ADD per
//! address and one DEL per address, with its file store in a temp dir. Two variants: one
//! allocation after another on both sides, and all 80 at once on both sides (concurrent prepares
//! share a plan-store commit; host-local serializes on its per-network lock).

use std::path::Path;
use std::time::Instant;

use multinic_api::rails::RailsLayout;
use multinic_kubelet_plugin::driver::{ClaimRef, Driver, DriverOptions};
use multinic_testkit::fixtures::veth_nic;
use serde_json::{Value, json};

use super::dra::{self, Backend, DraError, MemApi, NODE};
use super::error::RowError;
use super::fixtures::{CniCall, Netns, exec_cni_async, temp_dir};
use super::stats::{Row, Summary, Unit, rounds};

/// Addresses allocated (and released) per run: 10 per rail.
const ALLOCATIONS: usize = 80;
const RAILS: u32 = 8;

/// /16, hostBlock 8, interfaceBlock 3: 256 nodes × 8 rails × /27.
fn layout() -> Result<RailsLayout, DraError> {
    dra::rails_layout("10.40.0.0/16", 8, 3)
}

struct Ours {
    driver: Driver<MemApi>,
    claims: Vec<ClaimRef>,
    _state: tempfile::TempDir,
}

fn ours() -> Result<Ours, RowError> {
    let layout = layout()?;
    let nics: Vec<_> = (0..RAILS).map(|k| veth_nic(&format!("rail{k}"), k + 2)).collect();
    let (table, devices) = dra::publish(&nics);
    let mem = MemApi::new(&layout, RAILS)?;
    let backend = Backend::Mem(mem.clone());
    let params = dra::params(&layout, "host-device");
    let claims = (0..ALLOCATIONS)
        .map(|i| {
            let c = backend.insert_claim(&[devices[i % devices.len()].as_str()], &params)?;
            Ok(ClaimRef {
                namespace: "bench".into(),
                uid: c.uid,
                name: c.name,
            })
        })
        .collect::<Result<Vec<_>, RowError>>()?;
    let state = temp_dir("plugin state")?;
    let opts = DriverOptions::new(NODE, state.path(), None);
    Ok(Ours {
        driver: Driver::new(mem, table, opts).map_err(DraError::Driver)?,
        claims,
        _state: state,
    })
}

async fn run_ours(o: &Ours, at_once: bool) -> Result<f64, RowError> {
    let prepare = |source| RowError::Lease { op: "prepare", source };
    let unprepare = |source| RowError::Lease {
        op: "unprepare",
        source,
    };
    let t0 = Instant::now();
    if at_once {
        futures::future::try_join_all(o.claims.iter().map(|c| o.driver.prepare(c)))
            .await
            .map_err(prepare)?;
        futures::future::try_join_all(o.claims.iter().map(|c| o.driver.unprepare(c)))
            .await
            .map_err(unprepare)?;
    } else {
        for c in &o.claims {
            o.driver.prepare(c).await.map_err(prepare)?;
        }
        for c in &o.claims {
            o.driver.unprepare(c).await.map_err(unprepare)?;
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let leased = o.driver.leased().await.len();
    if leased != 0 {
        return Err(RowError::StillLeased { leased });
    }
    Ok(ALLOCATIONS as f64 / secs)
}

async fn run_host_local(program: &Path, plugins_dir: &Path, ns: &Netns, at_once: bool) -> Result<f64, RowError> {
    let layout = layout()?;
    let data = temp_dir("host-local data")?;
    let confs = (0..RAILS)
        .map(|k| {
            let block = dra::block(&layout, k)?;
            Ok(json!({
                "cniVersion": "1.0.0", "name": format!("hl-rail{k}"),
                "ipam": {"type": "host-local", "dataDir": data.path(),
                         "ranges": [[{"subnet": block.to_string()}]]},
            }))
        })
        .collect::<Result<Vec<_>, RowError>>()?;
    let call = |command, i: usize| CniCall {
        command,
        container_id: format!("hl-{i}"),
        netns: ns.path(),
        ifname: format!("net{}", i % RAILS as usize + 1),
        pod_uid: format!("hl-pod-{i}"),
        cni_path: plugins_dir.to_path_buf(),
    };
    let exec = |command, i: usize| -> Result<_, RowError> {
        let (program, host, conf) = (program.to_path_buf(), ns.dup_file()?, confs[i % RAILS as usize].clone());
        Ok(exec_cni_async(program, host, call(command, i), conf))
    };
    let check = |out: &Value| {
        if out["ips"].as_array().is_none_or(|a| a.len() != 1) {
            return Err(RowError::HostLocal { out: out.clone() });
        }
        Ok(())
    };
    let t0 = Instant::now();
    if at_once {
        let adds = (0..ALLOCATIONS)
            .map(|i| exec("ADD", i))
            .collect::<Result<Vec<_>, RowError>>()?;
        for out in futures::future::try_join_all(adds).await? {
            check(&out)?;
        }
        let dels = (0..ALLOCATIONS)
            .map(|i| exec("DEL", i))
            .collect::<Result<Vec<_>, RowError>>()?;
        futures::future::try_join_all(dels).await?;
    } else {
        for i in 0..ALLOCATIONS {
            check(&exec("ADD", i)?.await?)?;
        }
        for i in 0..ALLOCATIONS {
            exec("DEL", i)?.await?;
        }
    }
    Ok(ALLOCATIONS as f64 / t0.elapsed().as_secs_f64())
}

pub async fn bench(plugins_dir: &Path, runs: usize) -> Vec<Row> {
    let mut rows = Vec::new();
    for at_once in [false, true] {
        rows.push(bench_variant(plugins_dir, runs, at_once).await);
    }
    rows
}

async fn bench_variant(plugins_dir: &Path, runs: usize, at_once: bool) -> Row {
    let how = if at_once {
        "all at once (concurrent on both sides)"
    } else {
        "one after another"
    };
    let mut row = Row::new(
        "4",
        format!("IPAM allocate+release, /16 × 8 rails, {ALLOCATIONS} addresses/run, {how}"),
        Unit::PerSec,
    );
    row.target = "≥ 50×".into();
    let (mut ours_rate, mut theirs_rate) = (Vec::new(), Vec::new());
    let outcome: Result<(), RowError> = async {
        let o = ours()?;
        let ns = Netns::new("ipam")?;
        let program = plugins_dir.join("host-local");
        for (timed, run) in rounds(runs) {
            let ours = run_ours(&o, at_once)
                .await
                .map_err(RowError::phase(format!("{run}, ours")))?;
            let theirs = run_host_local(&program, plugins_dir, &ns, at_once)
                .await
                .map_err(RowError::phase(format!("{run}, host-local")))?;
            if timed {
                ours_rate.push(ours);
                theirs_rate.push(theirs);
            }
        }
        Ok(())
    }
    .await;
    row.record(&ours_rate, &outcome);
    let theirs = Summary::of(&theirs_rate);
    row.baseline = Some(("host-local, CNI way".into(), theirs));
    if let (Some(o), Some(t)) = (row.ours, theirs) {
        let ratio = o.median / t.median;
        row.ratio = Some(("ours/theirs".into(), ratio));
        row.met = Some(ratio >= 50.0);
    }
    row
}
