//! Rows 1–3: attaching m veth NICs to a pod, full path vs. the netlink floor and the Multus way.
//!
//! Per run and variant a fresh pod netns is made (not timed: the runtime makes the sandbox), then
//! the timed attach, an untimed check that the pod has the m links, the timed detach, and an
//! untimed check that the pod is empty again. The three variants alternate within each run.

use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use ipnet::Ipv4Net;
use multinic_api::rails::RailsLayout;
use multinic_testkit::fixtures::veth_nic;
use netlink_packet_route::link::{LinkAttribute, LinkMessage, MacVlanMode};
use netlink_packet_route::route::RouteScope;
use netlink_packet_route::rule::RuleAction;
use rtnetlink::{Handle, LinkMacVlan, LinkUnspec, RouteMessageBuilder, RuleAddRequest};
use serde_json::{Value, json};

use super::BenchError;
use super::dra::{self, DraError, Plugin};
use super::error::{RowError, to_u32};
use super::fixtures::{CniCall, Netns, exec_cni_async, link_names};
use super::plot::AttachPoint;
use super::stats::{Row, Summary, Unit, ms, rounds};

/// The error of a netlink request; `op` names it (called only on failure: the floor is timed).
fn netlink(op: impl FnOnce() -> String) -> impl FnOnce(rtnetlink::Error) -> RowError {
    move |source| RowError::Netlink { op: op(), source }
}

/// `u32::try_from(rail)`, the error naming the rail.
fn rail_u32(rail: usize) -> Result<u32, RowError> {
    to_u32("rail index", rail)
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
    pub fn as_str(self) -> &'static str {
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
    /// Ours: the total (prepare, CNI ADD, CNI DEL, unprepare), and the two CNI calls.
    pub ours: AddDel,
    pub ours_prepare: Vec<f64>,
    pub ours_unprepare: Vec<f64>,
    pub floor: AddDel,
    pub multus: AddDel,
}

/// Timed attach and detach of a variant, and the run's total, in ms.
#[derive(Debug, Default, Clone)]
pub struct AddDel {
    pub total: Vec<f64>,
    pub add: Vec<f64>,
    pub del: Vec<f64>,
}

impl AddDel {
    fn push(&mut self, total: Duration, add: Duration, del: Duration) {
        self.total.push(ms(total));
        self.add.push(ms(add));
        self.del.push(ms(del));
    }
}

/// The outcome of one (mode, m): the floor row, the Multus row and a breakdown line.
pub struct AttachResult {
    pub floor_row: Row,
    pub multus_row: Row,
    pub breakdown: String,
    /// Median of the floor's attach alone (ms; `NaN` when no run succeeded): the kernel work of
    /// moving and configuring the m NICs, which row 10 compares a pod start with.
    pub floor_attach_ms: f64,
    /// The medians of attach and detach alone, per variant, for the figure.
    pub point: AttachPoint,
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
    async fn new(m: usize, mode: Mode) -> Result<Self, RowError> {
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
            .map(|k| Ok(dra::block(&layout, rail_u32(k)?)?))
            .collect::<Result<Vec<_>, RowError>>()?;
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

    fn first_ip(block: &Ipv4Net) -> Result<Ipv4Addr, RowError> {
        block.hosts().next().ok_or(RowError::EmptyBlock { block: *block })
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

async fn expect_links(pod: &Handle, want: usize, what: &'static str) -> Result<(), RowError> {
    let names = link_names(pod).await?;
    if names.len() != want + 1 {
        return Err(RowError::Links { what, names, want });
    }
    Ok(())
}

/// Our full path: NodePrepareResources over the socket, CNI ADD, CNI DEL, NodeUnprepareResources.
async fn run_ours(fx: &mut Fixture, bins: &Bins, m: usize, p: &mut Phases) -> Result<(), RowError> {
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
        return Err(RowError::Interfaces {
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

    p.ours.push(t_add + t_del, t_add - t_prep, t_cni_del);
    p.ours_prepare.push(ms(t_prep));
    p.ours_unprepare.push(ms(t_del - t_cni_del));
    Ok(())
}

async fn link_index(handle: &Handle, name: &str) -> Result<u32, RowError> {
    let msg = handle
        .link()
        .get()
        .match_name(name.to_string())
        .execute()
        .try_next()
        .await
        .map_err(netlink(|| format!("looking up link {name}")))?
        .ok_or_else(|| RowError::NoLink { name: name.to_string() })?;
    Ok(msg.header.index)
}

/// `handle.link().set(msg)`; `what` names the request (called only on failure).
async fn set_link(handle: &Handle, msg: LinkMessage, what: impl FnOnce() -> String) -> Result<(), RowError> {
    handle.link().set(msg).execute().await.map_err(netlink(what))
}

/// A link-scope route to `dst` out of pod link `idx` in `table`, from `src` when given.
async fn add_route(handle: &Handle, dst: Ipv4Net, idx: u32, table: u32, src: Option<Ipv4Addr>) -> Result<(), RowError> {
    let mut route = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(dst.network(), dst.prefix_len())
        .output_interface(idx)
        .scope(RouteScope::Link);
    if let Some(src) = src {
        route = route.pref_source(src);
    }
    handle
        .route()
        .add(route.table_id(table).build())
        .replace()
        .execute()
        .await
        .map_err(netlink(|| format!("route to {dst} in table {table}")))
}

/// The rule the plan asks for: traffic from `ip` looks up `table`.
fn rule(handle: &Handle, ip: Ipv4Addr, table: u32) -> RuleAddRequest<Ipv4Addr> {
    handle
        .rule()
        .add()
        .table_id(table)
        .priority(RULE_PRIORITY)
        .action(RuleAction::ToTable)
        .v4()
        .source_prefix(ip, 32)
}

/// The kernel work alone, issued by the bench: per NIC move+rename (or create the macvlan child
/// in the pod, in one link group), address, up, the two table routes and the rule the plan asks
/// for; then back: per NIC the rule, and the move back (host-device), or one delete of the whole
/// group (macvlan).
async fn run_floor(fx: &Fixture, mode: Mode, p: &mut Phases) -> Result<(), RowError> {
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
                set_link(&fx.host_nl, msg, || format!("moving {name} into the pod as {pod_name}")).await?;
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
                    .map_err(netlink(|| format!("macvlan child of {name}")))?;
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
            .map_err(netlink(|| {
                format!("adding {ip}/{} to pod link {idx}", block.prefix_len())
            }))?;
        set_link(&pod_nl, LinkUnspec::new_with_index(idx).up().build(), || {
            format!("setting pod link {idx} up")
        })
        .await?;
        // The connected route (from the NIC's address) and the planned one to the whole subnet.
        add_route(&pod_nl, *block, idx, table, Some(ip)).await?;
        add_route(&pod_nl, subnet, idx, table, None).await?;
        rule(&pod_nl, ip, table)
            .execute()
            .await
            .map_err(netlink(|| format!("rule from {ip} to table {table}")))?;
        pod_idx.push((idx, ip, table));
    }
    let t_add = t0.elapsed();

    expect_links(&pod_nl, fx.nics.len(), "after the floor attach").await?;

    let t1 = Instant::now();
    for ((name, _), &(idx, ip, table)) in fx.nics.iter().zip(&pod_idx) {
        let msg = rule(&pod_nl, ip, table).message_mut().clone();
        pod_nl
            .rule()
            .del(msg)
            .execute()
            .await
            .map_err(netlink(|| format!("deleting the rule from {ip} to table {table}")))?;
        match mode {
            Mode::HostDevice => {
                let back = LinkUnspec::new_with_index(idx)
                    .setns_by_fd(host_fd)
                    .name(name.clone())
                    .build();
                set_link(&pod_nl, back, || {
                    format!("moving pod link {idx} back to the host as {name}")
                })
                .await?;
                set_link(&fx.host_nl, LinkUnspec::new_with_index(idx).up().build(), || {
                    format!("setting {name} up on the host")
                })
                .await?;
            }
            Mode::Macvlan => {}
        }
    }
    if mode == Mode::Macvlan {
        let mut del = pod_nl.link().del(0);
        del.message_mut().attributes.push(LinkAttribute::Group(FLOOR_GROUP));
        del.execute().await.map_err(netlink(|| {
            format!("deleting the macvlan children of group {FLOOR_GROUP:#x}")
        }))?;
    }
    let t_del = t1.elapsed();
    expect_links(&pod_nl, 0, "after the floor detach").await?;

    p.floor.push(t_add + t_del, t_add, t_del);
    Ok(())
}

/// The Multus way: one reference-plugin invocation per NIC (`host-device` or `macvlan`, with
/// `static` IPAM), ADD in order, DEL in reverse.
async fn run_multus(fx: &Fixture, bins: &Bins, mode: Mode, p: &mut Phases) -> Result<(), RowError> {
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
        .collect::<Result<_, RowError>>()?;
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
    p.multus.push(t_add + t_del, t_add, t_del);
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
    let outcome: Result<(), RowError> = async {
        let mut fx = Fixture::new(m, mode).await?;
        // One untimed warm-up of each variant (page cache, binaries, first connections).
        let mut warm = Phases::default();
        for (timed, run) in rounds(runs) {
            let p = if timed { &mut p } else { &mut warm };
            run_ours(&mut fx, bins, m, p)
                .await
                .map_err(RowError::phase(format!("{run}, ours")))?;
            run_floor(&fx, mode, p)
                .await
                .map_err(RowError::phase(format!("{run}, netlink floor")))?;
            run_multus(&fx, bins, mode, p)
                .await
                .map_err(RowError::phase(format!("{run}, Multus way")))?;
        }
        Ok(())
    }
    .await;
    floor_row.record(&p.ours.total, &outcome);
    floor_row.baseline = Some(("netlink floor".into(), Summary::of(&p.floor.total)));
    multus_row.record(&p.ours.total, &outcome);
    multus_row.baseline = Some(("Multus way".into(), Summary::of(&p.multus.total)));
    let (ours, floor, multus) = (median(&p.ours.total), median(&p.floor.total), median(&p.multus.total));
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
        median(&p.ours.add),
        median(&p.ours.del),
        median(&p.ours_unprepare),
        median(&p.floor.add),
        median(&p.floor.del),
        median(&p.multus.add),
        median(&p.multus.del),
    );
    AttachResult {
        floor_row,
        multus_row,
        breakdown,
        floor_attach_ms: median(&p.floor.add),
        point: AttachPoint {
            mode: mode.as_str(),
            m,
            attach: [median(&p.ours.add), median(&p.floor.add), median(&p.multus.add)],
            detach: [median(&p.ours.del), median(&p.floor.del), median(&p.multus.del)],
        },
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
