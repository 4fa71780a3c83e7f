//! Rows 1–3: attaching m veth NICs to a pod, full path vs. the netlink floor and the Multus way.
//!
//! Per run and variant a fresh pod netns is made (not timed: the runtime makes the sandbox), then
//! the timed attach, an untimed check that the pod has the m links, the timed detach, and an
//! untimed check that the pod is empty again. The three variants alternate within each run.

use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::Instant;

use futures::TryStreamExt;
use ipnet::Ipv4Net;
use multinic_api::rails::{RailsError, RailsLayout};
use multinic_testkit::fixtures::veth_nic;
use netlink_packet_route::link::{LinkAttribute, MacVlanMode};
use netlink_packet_route::route::RouteScope;
use netlink_packet_route::rule::RuleAction;
use rtnetlink::{Handle, LinkMacVlan, LinkUnspec, RouteMessageBuilder};
use serde_json::{Value, json};

use super::BenchError;
use super::dra::{self, DraError, HOST_INDEX, Plugin};
use super::fixtures::{CniCall, FixtureError, Netns, exec_cni_async, link_names};
use super::stats::{Row, Summary, Unit, ms};

/// A failed run of rows 1–3.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error(transparent)]
    Fixture(#[from] FixtureError),
    #[error(transparent)]
    Dra(#[from] DraError),
    #[error("block (host {HOST_INDEX}, rail {rail}): {source}")]
    Block { rail: usize, source: RailsError },
    #[error("block {block} has no host address")]
    EmptyBlock { block: Ipv4Net },
    #[error("rail {rail} does not fit a u32 rail index")]
    RailIndex { rail: usize },
    #[error("{op}: {source}")]
    Netlink { op: String, source: rtnetlink::Error },
    #[error("no link {name} in the bench's host netns")]
    NoLink { name: String },
    #[error("{what}: the pod has {names:?}, expected lo and {want} NICs")]
    Links {
        what: &'static str,
        names: Vec<String>,
        want: usize,
    },
    #[error("multinic-cni ADD returned {got} interfaces, expected {want}: {result}")]
    Interfaces { got: usize, want: usize, result: Value },
    #[error("{phase}: {source}")]
    Phase { phase: String, source: Box<AttachError> },
}

impl AttachError {
    /// The error of a netlink request; `op` names it (called only on failure: the floor is timed).
    fn netlink(op: impl FnOnce() -> String) -> impl FnOnce(rtnetlink::Error) -> Self {
        move |source| Self::Netlink { op: op(), source }
    }
}

/// `u32::try_from(rail)`, the error naming the rail.
fn rail_u32(rail: usize) -> Result<u32, AttachError> {
    u32::try_from(rail).map_err(|_| AttachError::RailIndex { rail })
}

/// Policy tables start here, as the plugin's (`TABLE_BASE + position`).
const TABLE_BASE: u32 = 100;
const RULE_PRIORITY: u32 = 1000;
/// Link group of the floor's macvlan children (any value but 0, the default group).
const FLOOR_GROUP: u32 = 0x6d6e_0001;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    HostDevice,
    Macvlan,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::HostDevice => "host-device",
            Mode::Macvlan => "macvlan",
        }
    }
}

/// Where the binaries are.
#[derive(Debug, Clone)]
pub struct Bins {
    pub cni: PathBuf,
    pub plugins_dir: PathBuf,
}

/// Timed phases of one run, per variant.
#[derive(Debug, Default, Clone)]
pub struct Phases {
    pub ours: Vec<f64>,
    pub ours_prepare: Vec<f64>,
    pub ours_add: Vec<f64>,
    pub ours_del: Vec<f64>,
    pub ours_unprepare: Vec<f64>,
    pub floor: Vec<f64>,
    pub floor_add: Vec<f64>,
    pub floor_del: Vec<f64>,
    pub multus: Vec<f64>,
    pub multus_add: Vec<f64>,
    pub multus_del: Vec<f64>,
}

/// The outcome of one (mode, m): the floor row, the Multus row and a breakdown line.
pub struct AttachResult {
    pub floor_row: Row,
    pub multus_row: Row,
    pub breakdown: String,
}

/// The rails layout of the attach rows: /16, 64 hosts, 16 rails, /26 blocks.
fn layout() -> Result<RailsLayout, DraError> {
    dra::rails_layout("10.10.0.0/16", 6, 4)
}

struct Fixture {
    host: Netns,
    host_nl: Handle,
    plugin: Plugin,
    client: dra::Client,
    params: Value,
    /// Host interface names in rail order, and each one's block.
    nics: Vec<(String, Ipv4Net)>,
}

impl Fixture {
    async fn new(m: usize, mode: Mode) -> Result<Self, AttachError> {
        let host = Netns::new("h")?;
        let mut batch = Vec::new();
        for k in 1..=m {
            batch.push(format!("link add bv{k:02} type veth peer name bp{k:02}"));
            batch.push(format!("link set bp{k:02} up"));
            batch.push(format!("link set bv{k:02} up"));
        }
        super::fixtures::ip_batch(Some(&host.name), &batch)?;
        let host_nl = host.netlink()?;
        let layout = layout()?;
        let nics: Vec<_> = (1..=m)
            .map(|k| veth_nic(&format!("bv{k:02}"), u32::try_from(k).unwrap_or(0) + 1))
            .collect();
        let plugin = Plugin::start(&nics, &layout, false).await?;
        let client = plugin.client().await?;
        let blocks = (0..m)
            .map(|k| {
                layout
                    .block(HOST_INDEX, rail_u32(k)?)
                    .map_err(|source| AttachError::Block { rail: k, source })
            })
            .collect::<Result<Vec<_>, AttachError>>()?;
        // Rail order = interface-name order (no PCI), which the zero-padded names keep.
        let nics = (1..=m).map(|k| format!("bv{k:02}")).zip(blocks).collect();
        Ok(Self {
            host,
            host_nl,
            plugin,
            client,
            params: dra::params(&layout, mode.as_str()),
            nics,
        })
    }

    fn first_ip(block: &Ipv4Net) -> Result<Ipv4Addr, AttachError> {
        block.hosts().next().ok_or(AttachError::EmptyBlock { block: *block })
    }

    fn call(&self, command: &'static str, pod: &Netns, container: &str, ifname: &str, pod_uid: &str) -> CniCall {
        CniCall {
            command,
            container_id: container.into(),
            netns: pod.path(),
            ifname: ifname.into(),
            pod_uid: pod_uid.into(),
            cni_path: PathBuf::new(),
        }
    }
}

async fn expect_links(pod: &Handle, want: usize, what: &'static str) -> Result<(), AttachError> {
    let names = link_names(pod).await?;
    if names.len() != want + 1 {
        return Err(AttachError::Links { what, names, want });
    }
    Ok(())
}

/// Our full path: NodePrepareResources over the socket, CNI ADD, CNI DEL, NodeUnprepareResources.
async fn run_ours(fx: &mut Fixture, bins: &Bins, m: usize, p: &mut Phases) -> Result<(), AttachError> {
    let pod = Netns::new("p")?;
    let pod_nl = pod.netlink()?;
    let devices: Vec<&str> = fx.plugin.devices.iter().take(m).map(String::as_str).collect();
    let claim = fx.plugin.api.insert_claim(&devices, &fx.params)?;
    let conf = json!({
        "cniVersion": "1.1.0", "name": "bench-net", "type": "multinic-cni",
        "stateDir": fx.plugin.state.path(),
    });
    let container = format!("ctr-{}", claim.name);
    let mut call = fx.call("ADD", &pod, &container, "eth0", &claim.pod_uid);
    call.cni_path = bins.plugins_dir.clone();
    let host = || fx.host.dup_file();

    let t0 = Instant::now();
    dra::prepare(&mut fx.client, vec![claim.v1()]).await?;
    let t_prep = t0.elapsed();
    let result = exec_cni_async(bins.cni.clone(), host()?, call.clone(), conf.clone()).await?;
    let t_add = t0.elapsed();

    let ifaces = result["interfaces"].as_array().map_or(0, Vec::len);
    if ifaces != m {
        return Err(AttachError::Interfaces {
            got: ifaces,
            want: m,
            result,
        });
    }
    expect_links(&pod_nl, m, "after multinic-cni ADD").await?;

    let t1 = Instant::now();
    call.command = "DEL";
    exec_cni_async(bins.cni.clone(), host()?, call, conf).await?;
    let t_cni_del = t1.elapsed();
    dra::unprepare(&mut fx.client, vec![claim.v1()]).await?;
    let t_del = t1.elapsed();
    expect_links(&pod_nl, 0, "after multinic-cni DEL").await?;
    fx.plugin.api.delete_claim(&claim);

    p.ours.push(ms(t_add + t_del));
    p.ours_prepare.push(ms(t_prep));
    p.ours_add.push(ms(t_add - t_prep));
    p.ours_del.push(ms(t_cni_del));
    p.ours_unprepare.push(ms(t_del - t_cni_del));
    Ok(())
}

async fn link_index(handle: &Handle, name: &str) -> Result<u32, AttachError> {
    let msg = handle
        .link()
        .get()
        .match_name(name.to_string())
        .execute()
        .try_next()
        .await
        .map_err(AttachError::netlink(|| format!("looking up link {name}")))?
        .ok_or_else(|| AttachError::NoLink { name: name.to_string() })?;
    Ok(msg.header.index)
}

/// The kernel work alone, issued by the bench: per NIC move+rename (or create the macvlan child
/// in the pod, in one link group), address, up, the two table routes and the rule the plan asks
/// for; then back: per NIC the rule, and the move back (host-device), or one delete of the whole
/// group (macvlan).
async fn run_floor(fx: &Fixture, mode: Mode, p: &mut Phases) -> Result<(), AttachError> {
    let pod = Netns::new("p")?;
    let mut host_idx = Vec::with_capacity(fx.nics.len());
    for (name, _) in &fx.nics {
        host_idx.push(link_index(&fx.host_nl, name).await?);
    }
    let pod_fd = pod.file.as_raw_fd();
    let host_fd = fx.host.file.as_raw_fd();
    let subnet = layout()?.subnet;

    let t0 = Instant::now();
    // The pod socket is part of the floor: any implementation needs one to configure the pod.
    let pod_nl = pod.netlink()?;
    let mut pod_idx = Vec::with_capacity(fx.nics.len());
    for (k, ((name, block), &h)) in fx.nics.iter().zip(&host_idx).enumerate() {
        let pod_name = format!("net{}", k + 1);
        let idx = match mode {
            Mode::HostDevice => {
                // The index survives the move into a fresh netns.
                let msg = LinkUnspec::new_with_index(h)
                    .setns_by_fd(pod_fd)
                    .name(pod_name.clone())
                    .build();
                fx.host_nl
                    .link()
                    .set(msg)
                    .execute()
                    .await
                    .map_err(AttachError::netlink(|| {
                        format!("moving {name} into the pod as {pod_name}")
                    }))?;
                h
            }
            Mode::Macvlan => {
                // Choose the child's index so no lookup is needed; the group lets detach delete
                // all children in one request.
                let idx = 100 + rail_u32(k)?;
                let mut msg = LinkMacVlan::new(&pod_name, h, MacVlanMode::Bridge)
                    .setns_by_fd(pod_fd)
                    .build();
                msg.header.index = idx;
                msg.attributes.push(LinkAttribute::Group(FLOOR_GROUP));
                fx.host_nl
                    .link()
                    .add(msg)
                    .execute()
                    .await
                    .map_err(AttachError::netlink(|| format!("macvlan child of {name}")))?;
                idx
            }
        };
        let ip = Fixture::first_ip(block)?;
        let table = TABLE_BASE + rail_u32(k)? + 1;
        pod_nl
            .address()
            .add(idx, ip.into(), block.prefix_len())
            .execute()
            .await
            .map_err(AttachError::netlink(|| {
                format!("adding {ip}/{} to pod link {idx}", block.prefix_len())
            }))?;
        pod_nl
            .link()
            .set(LinkUnspec::new_with_index(idx).up().build())
            .execute()
            .await
            .map_err(AttachError::netlink(|| format!("setting pod link {idx} up")))?;
        let connected = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(block.network(), block.prefix_len())
            .output_interface(idx)
            .scope(RouteScope::Link)
            .pref_source(ip)
            .table_id(table)
            .build();
        pod_nl
            .route()
            .add(connected)
            .replace()
            .execute()
            .await
            .map_err(AttachError::netlink(|| format!("route to {block} in table {table}")))?;
        let planned = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(subnet.network(), subnet.prefix_len())
            .output_interface(idx)
            .scope(RouteScope::Link)
            .table_id(table)
            .build();
        pod_nl
            .route()
            .add(planned)
            .replace()
            .execute()
            .await
            .map_err(AttachError::netlink(|| format!("route to {subnet} in table {table}")))?;
        pod_nl
            .rule()
            .add()
            .table_id(table)
            .priority(RULE_PRIORITY)
            .action(RuleAction::ToTable)
            .v4()
            .source_prefix(ip, 32)
            .execute()
            .await
            .map_err(AttachError::netlink(|| format!("rule from {ip} to table {table}")))?;
        pod_idx.push((idx, ip, table));
    }
    let t_add = t0.elapsed();

    expect_links(&pod_nl, fx.nics.len(), "after the floor attach").await?;

    let t1 = Instant::now();
    for ((name, _), &(idx, ip, table)) in fx.nics.iter().zip(&pod_idx) {
        let mut rule = pod_nl
            .rule()
            .add()
            .table_id(table)
            .priority(RULE_PRIORITY)
            .action(RuleAction::ToTable)
            .v4()
            .source_prefix(ip, 32);
        let msg = rule.message_mut().clone();
        pod_nl
            .rule()
            .del(msg)
            .execute()
            .await
            .map_err(AttachError::netlink(|| {
                format!("deleting the rule from {ip} to table {table}")
            }))?;
        match mode {
            Mode::HostDevice => {
                let back = LinkUnspec::new_with_index(idx)
                    .setns_by_fd(host_fd)
                    .name(name.clone())
                    .build();
                pod_nl
                    .link()
                    .set(back)
                    .execute()
                    .await
                    .map_err(AttachError::netlink(|| {
                        format!("moving pod link {idx} back to the host as {name}")
                    }))?;
                fx.host_nl
                    .link()
                    .set(LinkUnspec::new_with_index(idx).up().build())
                    .execute()
                    .await
                    .map_err(AttachError::netlink(|| format!("setting {name} up on the host")))?;
            }
            Mode::Macvlan => {}
        }
    }
    if mode == Mode::Macvlan {
        let mut del = pod_nl.link().del(0);
        del.message_mut().attributes.push(LinkAttribute::Group(FLOOR_GROUP));
        del.execute().await.map_err(AttachError::netlink(|| {
            format!("deleting the macvlan children of group {FLOOR_GROUP:#x}")
        }))?;
    }
    let t_del = t1.elapsed();
    expect_links(&pod_nl, 0, "after the floor detach").await?;

    p.floor.push(ms(t_add + t_del));
    p.floor_add.push(ms(t_add));
    p.floor_del.push(ms(t_del));
    Ok(())
}

/// The Multus way: one reference-plugin invocation per NIC (`host-device` or `macvlan`, with
/// `static` IPAM), ADD in order, DEL in reverse.
async fn run_multus(fx: &Fixture, bins: &Bins, mode: Mode, p: &mut Phases) -> Result<(), AttachError> {
    let pod = Netns::new("p")?;
    let pod_nl = pod.netlink()?;
    let container = super::fixtures::unique("multus");
    let confs: Vec<(String, Value)> = fx
        .nics
        .iter()
        .enumerate()
        .map(|(k, (name, block))| {
            let ip = Fixture::first_ip(block)?;
            let ipam = json!({
                "type": "static",
                "addresses": [{"address": format!("{ip}/{}", block.prefix_len())}],
                "routes": [{"dst": format!("10.{}.0.0/16", 100 + k)}],
            });
            let conf = match mode {
                Mode::HostDevice => json!({
                    "cniVersion": "1.0.0", "name": format!("hd-{name}"), "type": "host-device",
                    "device": name, "ipam": ipam,
                }),
                Mode::Macvlan => json!({
                    "cniVersion": "1.0.0", "name": format!("mv-{name}"), "type": "macvlan",
                    "master": name, "mode": "bridge", "ipam": ipam,
                }),
            };
            Ok((format!("net{}", k + 1), conf))
        })
        .collect::<Result<_, AttachError>>()?;
    let program = bins.plugins_dir.join(mode.as_str());
    let call = |command, ifname: &str| {
        let mut c = fx.call(command, &pod, &container, ifname, "multus-pod");
        c.cni_path = bins.plugins_dir.clone();
        c
    };

    let t0 = Instant::now();
    for (ifname, conf) in &confs {
        exec_cni_async(program.clone(), fx.host.dup_file()?, call("ADD", ifname), conf.clone()).await?;
    }
    let t_add = t0.elapsed();
    expect_links(&pod_nl, confs.len(), "after the Multus-way ADDs").await?;
    let t1 = Instant::now();
    for (ifname, conf) in confs.iter().rev() {
        exec_cni_async(program.clone(), fx.host.dup_file()?, call("DEL", ifname), conf.clone()).await?;
    }
    let t_del = t1.elapsed();
    expect_links(&pod_nl, 0, "after the Multus-way DELs").await?;
    p.multus.push(ms(t_add + t_del));
    p.multus_add.push(ms(t_add));
    p.multus_del.push(ms(t_del));
    Ok(())
}

fn median(v: &[f64]) -> f64 {
    Summary::of(v).map_or(f64::NAN, |s| s.median)
}

/// Runs `runs` interleaved runs of the three variants for one (mode, m).
pub async fn bench(bins: &Bins, mode: Mode, m: usize, runs: usize) -> AttachResult {
    let case = format!("attach {} m={m}", mode.as_str());
    let (floor_id, multus_id) = match mode {
        Mode::HostDevice => ("1", "2"),
        Mode::Macvlan => ("3", "3"),
    };
    let mut floor_row = Row::new(floor_id, format!("{case}: ours vs netlink floor"), Unit::Ms);
    let mut multus_row = Row::new(multus_id, format!("{case}: Multus way vs ours"), Unit::Ms);
    let mut p = Phases::default();
    let phase = |phase: String| {
        move |source| AttachError::Phase {
            phase,
            source: Box::new(source),
        }
    };
    let outcome: Result<(), AttachError> = async {
        let mut fx = Fixture::new(m, mode).await?;
        // One untimed warm-up of each variant (page cache, binaries, first connections).
        let mut warm = Phases::default();
        run_ours(&mut fx, bins, m, &mut warm)
            .await
            .map_err(phase("warm-up, ours".into()))?;
        run_floor(&fx, mode, &mut warm)
            .await
            .map_err(phase("warm-up, floor".into()))?;
        run_multus(&fx, bins, mode, &mut warm)
            .await
            .map_err(phase("warm-up, Multus way".into()))?;
        for run in 0..runs {
            run_ours(&mut fx, bins, m, &mut p)
                .await
                .map_err(phase(format!("run {run}, ours")))?;
            run_floor(&fx, mode, &mut p)
                .await
                .map_err(phase(format!("run {run}, netlink floor")))?;
            run_multus(&fx, bins, mode, &mut p)
                .await
                .map_err(phase(format!("run {run}, Multus way")))?;
        }
        Ok(())
    }
    .await;
    if let Err(e) = &outcome {
        floor_row.error = Some(e.to_string());
        multus_row.error = Some(e.to_string());
    }
    floor_row.ours = Summary::of(&p.ours);
    floor_row.baseline = Some(("netlink floor".into(), Summary::of(&p.floor)));
    multus_row.ours = Summary::of(&p.ours);
    multus_row.baseline = Some(("Multus way".into(), Summary::of(&p.multus)));
    let (ours, floor, multus) = (median(&p.ours), median(&p.floor), median(&p.multus));
    if ours.is_finite() && floor.is_finite() {
        floor_row.ratio = Some(("ours/floor".into(), ours / floor));
    }
    if ours.is_finite() && multus.is_finite() {
        multus_row.ratio = Some(("theirs/ours".into(), multus / ours));
    }
    if m == 8 {
        // Issue 17: host-device within 5 % of the floor; macvlan as issue 7 set it.
        let limit = if mode == Mode::HostDevice { 1.05 } else { 1.3 };
        floor_row.target = format!("≤ {limit}×");
        floor_row.met = floor_row.ratio.as_ref().map(|(_, r)| *r <= limit);
        multus_row.target = "≥ 5×".into();
        multus_row.met = multus_row.ratio.as_ref().map(|(_, r)| *r >= 5.0);
    }
    let breakdown = format!(
        "{case}: ours = prepare {:.2} + ADD {:.2} + DEL {:.2} + unprepare {:.2} ms; floor = attach {:.2} + detach {:.2} ms; Multus way = ADD×{m} {:.2} + DEL×{m} {:.2} ms (medians)",
        median(&p.ours_prepare),
        median(&p.ours_add),
        median(&p.ours_del),
        median(&p.ours_unprepare),
        median(&p.floor_add),
        median(&p.floor_del),
        median(&p.multus_add),
        median(&p.multus_del),
    );
    AttachResult {
        floor_row,
        multus_row,
        breakdown,
    }
}

/// Fails early with a readable message when a reference plugin is missing.
pub fn check_plugins(bins: &Bins) -> Result<(), BenchError> {
    for p in ["host-device", "macvlan", "static", "host-local"] {
        let path = bins.plugins_dir.join(p);
        if !path.exists() {
            return Err(BenchError::Missing {
                path,
                fix: "apt-get install -y containernetworking-plugins (or pass --cni-plugins-dir)",
            });
        }
    }
    if !bins.cni.exists() {
        return Err(BenchError::Missing {
            path: bins.cni.clone(),
            fix: "build it with `cargo build --release -p multinic-cni` (or pass --cni-bin)",
        });
    }
    Ok(())
}
