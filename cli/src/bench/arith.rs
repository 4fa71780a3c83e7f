//! Row 6: pure computation, no I/O — ResourceSlice build and the controller's block assignment.

use std::collections::{BTreeMap, BTreeSet};
use std::hint::black_box;
use std::time::{Duration, Instant};

use multinic_api::rails::RailsLayout;
use multinic_controller::blocks;
use multinic_kubelet_plugin::inventory::{LinkType, Nic, PciFacts, RdmaFacts};
use multinic_kubelet_plugin::slices::{SliceOptions, build_device_table, build_slices};

use super::stats::{Row, Summary, Unit};

/// A RoCE NIC with PCI and RDMA facts (every attribute the slices carry).
fn roce_nic(i: usize) -> Nic {
    Nic {
        if_name: format!("ens{i}np0"),
        if_index: u32::try_from(i).unwrap_or(0) + 2,
        mac: Some(format!("b8:3f:d2:00:{:02x}:{:02x}", i / 256, i % 256)),
        mtu: 9000,
        speed_mbps: Some(400_000),
        link_type: LinkType::Ethernet,
        pci: Some(PciFacts {
            address: format!("0000:{:02x}:{:02x}.{}", 0x10 + i / 64, (i / 8) % 8, i % 8),
            vendor: 0x15b3,
            device: 0x1021,
            driver: Some("mlx5_core".into()),
            ..Default::default()
        }),
        rdma: Some(RdmaFacts {
            device: format!("mlx5_{i}"),
            link_layer: Some("Ethernet".into()),
            uverbs: Some(format!("uverbs{i}")),
        }),
        virtual_device: false,
        ipv4: None,
        pf_name: None,
    }
}

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
    let layout = RailsLayout::new("10.0.0.0/8".parse().unwrap_or_default(), 14, 3);
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
                    match blocks::node_blocks(&layout, h, 8) {
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
