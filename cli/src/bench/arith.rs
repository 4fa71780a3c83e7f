//! Rows 6 and 8: pure computation, no I/O — ResourceSlice build, the controller's block
//! assignment, and the node's address allocator.

use std::collections::{BTreeMap, BTreeSet};
use std::hint::black_box;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use multinic_api::config::NetworkConfig;
use multinic_api::rails::{RailsLayout, RailsLayouts};
use multinic_controller::blocks;
use multinic_kubelet_plugin::inventory::Nic;
use multinic_kubelet_plugin::plan_builder::{DeviceInput, PlanInput, build_plan};
use multinic_kubelet_plugin::slices::{SliceOptions, build_device_table, build_slices};
use multinic_testkit::fixtures::roce_nic;

use super::error::RowError;
use super::stats::{Row, Summary, Unit};

/// Runs `f` enough times for ≥ 2 ms per run; returns µs per call for each run.
fn time_runs(runs: usize, mut f: impl FnMut()) -> Vec<f64> {
    let start = Instant::now();
    f();
    let once = start.elapsed().max(Duration::from_nanos(100));
    let iters = (Duration::from_millis(2).as_nanos() / once.as_nanos()).clamp(1, 100_000) as u32;
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..iters {
                f();
            }
            t.elapsed().as_secs_f64() * 1e6 / f64::from(iters)
        })
        .collect()
}

pub fn slices(runs: usize) -> Vec<Row> {
    [8usize, 64, 512]
        .into_iter()
        .map(|n| {
            let nics: Vec<Nic> = (0..n).map(roce_nic).collect();
            let opts = SliceOptions::new("bench-node");
            let mut slice_count = 0;
            let us = time_runs(runs, || {
                let table = build_device_table(black_box(&nics), &opts);
                let devices: Vec<_> = table.iter().map(|p| p.device.clone()).collect();
                let slices = build_slices(&devices, &opts, 1);
                slice_count = slices.len();
                black_box(slices);
            });
            let mut row = Row::new(
                "6",
                format!("ResourceSlice build, {n} NICs ({slice_count} slice(s)), no I/O"),
                Unit::Us,
            );
            row.ours = Summary::of(&us);
            row
        })
        .collect()
}

pub fn blocks(runs: usize) -> Vec<Row> {
    let layout = RailsLayout::new("10.0.0.0/8".parse().unwrap_or_default(), 14, 3).map(RailsLayouts::from);
    [1_000usize, 10_000]
        .into_iter()
        .map(|nodes| {
            let case = format!("controller block assignment (blocks::assign + 8 blocks per node), {nodes} nodes");
            let Ok(layout) = layout else {
                return Row::failed("6", case, "layout 10.0.0.0/8 hostBlock 14 interfaceBlock 3 rejected");
            };
            let names: BTreeSet<String> = (0..nodes).map(|i| format!("node-{i:05}")).collect();
            let mut failed = false;
            let us = time_runs(runs, || {
                let assignment = blocks::assign(&layout, &BTreeMap::new(), black_box(&names));
                failed |= assignment.hosts.len() != nodes;
                for &h in assignment.hosts.values() {
                    match blocks::node_blocks(&layout, h, 8, &BTreeMap::new()) {
                        Ok(b) => {
                            black_box(b);
                        }
                        Err(_) => failed = true,
                    }
                }
            });
            if failed {
                return Row::failed("6", case, "not every node got a host index and 8 blocks");
            }
            let mut row = Row::new("6", case, Unit::Us);
            row.ours = Summary::of(&us);
            row
        })
        .collect()
}

/// Claims (of 8 NICs, one address each) allocated and then released per sweep of row 8.
const ALLOC_CLAIMS: usize = 100;

/// Row 8: the pure allocator — `build_plan` (rails IPAM: first free address of the NIC's block
/// that is not leased) against the node's leased set, then the set's insert of the new addresses,
/// for 100 claims × 8 NICs; then every address released. No lock, no I/O. Addresses per second.
pub fn allocator(runs: usize) -> Row {
    let case =
        format!("pure allocator: build_plan (rails, 8 NICs) + lease set, {ALLOC_CLAIMS} claims then release, no I/O");
    let mut row = Row::new("8", case.clone(), Unit::PerSec);
    row.target = "≥ 1,000,000/s".into();
    let setup = || -> Result<PlanInput, RowError> {
        // /16, hostBlock 6, interfaceBlock 3: /25 blocks, room for 100 claims per rail.
        let layout: RailsLayout = super::dra::rails_layout("10.20.0.0/16", 6, 3)?;
        let nics: Vec<Nic> = (0..8).map(roce_nic).collect();
        let config = NetworkConfig::from_values([&super::dra::params(&layout, "host-device")])?;
        let blocks = (0..8u32)
            .map(|k| Ok((k, vec![IpNet::V4(super::dra::block(&layout, k)?)])))
            .collect::<Result<BTreeMap<_, _>, RowError>>()?;
        Ok(PlanInput {
            claim_uid: "bench-claim".into(),
            namespace: "bench".into(),
            name: "bench-claim".into(),
            pods: Vec::new(),
            devices: build_device_table(&nics, &SliceOptions::new(super::dra::NODE))
                .into_iter()
                .map(|p| DeviceInput {
                    request: "nics".into(),
                    pool: super::dra::NODE.into(),
                    published: p,
                    config: config.clone(),
                })
                .collect(),
            blocks: BTreeMap::from([(super::dra::NETWORK.to_string(), blocks)]),
            pool: BTreeMap::new(),
        })
    };
    let input = match setup() {
        Ok(input) => input,
        Err(e) => return Row::failed("8", case, e),
    };
    let addresses = (ALLOC_CLAIMS * input.devices.len()) as f64;
    let mut failure = None;
    let us = time_runs(runs, || {
        let mut leased: BTreeSet<IpAddr> = BTreeSet::new();
        let mut plans = Vec::with_capacity(ALLOC_CLAIMS);
        for _ in 0..ALLOC_CLAIMS {
            match build_plan(black_box(&input), &leased) {
                Ok(plan) => {
                    leased.extend(plan.devices.iter().flat_map(|d| d.ips.iter().map(|n| n.addr())));
                    plans.push(plan);
                }
                Err(e) => failure = Some(e.to_string()),
            }
        }
        if leased.len() != ALLOC_CLAIMS * input.devices.len() {
            failure.get_or_insert_with(|| format!("{} addresses leased, not unique", leased.len()));
        }
        for plan in &plans {
            for ip in plan.devices.iter().flat_map(|d| d.ips.iter().map(|n| n.addr())) {
                leased.remove(&ip);
            }
        }
        black_box(leased);
    });
    if let Some(e) = failure {
        return Row::failed("8", case, e);
    }
    let rates: Vec<f64> = us.iter().map(|us| addresses / (us / 1e6)).collect();
    row.ours = Summary::of(&rates);
    row.met = row.ours.map(|s| s.median >= 1_000_000.0);
    row
}
