//! The CNI commands: ADD, DEL, CHECK, STATUS, GC, VERSION.

use std::collections::HashSet;
use std::os::fd::AsRawFd;

use multinic_api::plan::PlanStore;
use multinic_api::{AttachmentMode, Plan, PlannedDevice};
use serde_json::Value;
use tracing::{info, warn};

use crate::alias::{LinkKind, Mark, attachment_key, network_key};
use crate::args::{CniEnv, Command, valid_ifname};
use crate::config::{NetConf, parse_conf, sniff_version, version_result};
use crate::error::CniError;
use crate::netns::{self, Netns};
use crate::nl::{self, Link, Nl, describe, errno};
use crate::rdma::{RdmaError, RdmaNl};
use crate::result::{AppliedDevice, merge_result, pass_through};

/// Test-only fault injection (see [`fault_from_env`]). Every fault stops the command with an
/// error and without rollback, as a crash at that step would.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// ADD: once this many devices are applied (`after-device-N`).
    AfterDevice(usize),
    /// ADD: once the addresses of the N-th device are added, before it is up and routed
    /// (`after-addresses-N`).
    AfterAddresses(usize),
    /// ADD: once the routes of the N-th device are added, before its policy rules
    /// (`after-routes-N`).
    AfterRoutes(usize),
    /// DEL: once this many links are reverted (`del-after-device-N`).
    DelAfterDevice(usize),
}

impl Fault {
    fn parse(spec: &str) -> Option<Self> {
        let (make, n): (fn(usize) -> Self, &str) = if let Some(n) = spec.strip_prefix("after-device-") {
            (Self::AfterDevice, n)
        } else if let Some(n) = spec.strip_prefix("after-addresses-") {
            (Self::AfterAddresses, n)
        } else if let Some(n) = spec.strip_prefix("after-routes-") {
            (Self::AfterRoutes, n)
        } else {
            (Self::DelAfterDevice, spec.strip_prefix("del-after-device-")?)
        };
        Some(make(n.parse().ok()?))
    }

    /// The error of this fault when it is the one armed.
    fn hit(fault: Option<Fault>, here: Fault, device: &str) -> Result<(), CniError> {
        if fault != Some(here) {
            return Ok(());
        }
        let (step, after) = match here {
            Self::AfterDevice(n) => ("device", n),
            Self::AfterAddresses(n) => ("the addresses of device", n),
            Self::AfterRoutes(n) => ("the routes of device", n),
            Self::DelAfterDevice(n) => ("reverting link", n),
        };
        Err(CniError::FaultInjected {
            step,
            after,
            device: device.to_string(),
        })
    }
}

/// Env var that enables the fault-injection hook in a build without the `fault-injection` feature.
pub const TEST_MODE_ENV: &str = "MULTINIC_CNI_TEST_MODE";
/// The fault, e.g. `after-device-3`.
pub const FAULT_ENV: &str = "MULTINIC_CNI_FAULT";

/// Reads `MULTINIC_CNI_FAULT`. Honoured only when built with the `fault-injection` feature or
/// when `MULTINIC_CNI_TEST_MODE=1`; otherwise ignored (a production node never aborts on it).
pub fn fault_from_env(get: impl Fn(&str) -> Option<String>) -> Option<Fault> {
    let enabled = cfg!(feature = "fault-injection") || get(TEST_MODE_ENV).as_deref() == Some("1");
    if !enabled {
        return None;
    }
    Fault::parse(&get(FAULT_ENV)?)
}

/// Runs one invocation; `Ok(Some(json))` is printed on stdout, `Ok(None)` prints nothing.
pub fn run(env: &CniEnv, stdin: &[u8], fault: Option<Fault>) -> Result<Option<Value>, CniError> {
    if env.command == Command::Version {
        let v = sniff_version(stdin).unwrap_or_else(|| "1.1.0".to_string());
        return Ok(Some(version_result(&v)));
    }
    let conf = parse_conf(stdin)?;
    if env.command == Command::Status {
        return status(&conf).map(|()| None);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| CniError::Io {
            what: "start the async runtime".into(),
            source,
        })?;
    rt.block_on(async {
        match env.command {
            Command::Add => add(env, &conf, fault).await.map(Some),
            Command::Del => del(env, &conf, fault).await.map(|()| None),
            Command::Check => check(env, &conf).await.map(|()| None),
            Command::Gc => gc(&conf).await.map(|()| None),
            Command::Status | Command::Version => Ok(None),
        }
    })
}

/// STATUS: ready when the state dir is readable.
fn status(conf: &NetConf) -> Result<(), CniError> {
    std::fs::read_dir(&conf.state_dir)
        .map(|_| ())
        .map_err(|source| CniError::NotAvailable {
            path: conf.state_dir.display().to_string(),
            source,
        })
}

/// The plans of the pod, in claim UID order. Unreadable plan files of this pod fail the call
/// (with a pod UID only the pod's own plans are read; without one, any unreadable plan fails it):
/// attaching half of a pod's NICs silently is worse than a retried ADD.
pub fn pod_plans(conf: &NetConf, env: &CniEnv) -> Result<Vec<Plan>, CniError> {
    if !env.pod.identifies_a_pod() {
        return Ok(Vec::new());
    }
    let store = PlanStore::new(&conf.state_dir);
    // By pod UID only this pod's plans are read; without one, every plan is read and filtered.
    let (plans, mut errors) = match env.pod.uid.as_deref().filter(|u| !u.is_empty()) {
        Some(uid) => store.load_for_pod(uid)?,
        None => store.load_all()?,
    };
    if !errors.is_empty() {
        return Err(CniError::Plan(errors.remove(0)));
    }
    let namespace = env.pod.namespace.as_deref().unwrap_or_default();
    let name = env.pod.name.as_deref().unwrap_or_default();
    Ok(plans
        .into_iter()
        .filter(|p| p.is_for_pod(env.pod.uid.as_deref(), namespace, name))
        .collect())
}

/// Pure checks of the pod's devices before touching anything.
pub fn validate_devices(plans: &[Plan], cni_ifname: &str) -> Result<(), CniError> {
    let mut names = HashSet::new();
    for plan in plans {
        for dev in &plan.devices {
            if !valid_ifname(&dev.pod_if_name) {
                return Err(CniError::InvalidConfig(format!(
                    "claim {}: device {} has an invalid pod interface name {:?}",
                    plan.claim_uid, dev.host_if_name, dev.pod_if_name
                )));
            }
            if !valid_ifname(&dev.host_if_name) {
                return Err(CniError::InvalidConfig(format!(
                    "claim {}: device {} has an invalid host interface name",
                    plan.claim_uid, dev.device
                )));
            }
            if dev.pod_if_name == cni_ifname {
                return Err(CniError::Conflict {
                    device: dev.host_if_name.clone(),
                    problem: format!(
                        "its pod name {} is the runtime's interface (CNI_IFNAME); change interfaceNamePrefix",
                        dev.pod_if_name
                    ),
                });
            }
            if !names.insert(dev.pod_if_name.as_str()) {
                return Err(CniError::Conflict {
                    device: dev.host_if_name.clone(),
                    problem: format!(
                        "pod interface name {} is planned twice for this pod (claim {}); give the claims distinct interfaceNamePrefix values",
                        dev.pod_if_name, plan.claim_uid
                    ),
                });
            }
        }
    }
    Ok(())
}

/// Netlink handles and identity of one attachment.
struct Ctx {
    host: Nl,
    host_ns: Netns,
    network: String,
    attachment: String,
}

fn dev_err(device: &str, step: impl Into<String>, e: &rtnetlink::Error) -> CniError {
    CniError::Device {
        device: device.to_string(),
        step: step.into(),
        cause: describe(e),
    }
}

fn io_err(what: &str) -> impl Fn(std::io::Error) -> CniError + '_ {
    move |source| CniError::Io {
        what: what.to_string(),
        source,
    }
}

impl Ctx {
    fn new(conf: &NetConf, env: &CniEnv) -> Result<Self, CniError> {
        let host_ns = netns::current()?;
        let host = Nl::new(netns::connect_here().map_err(io_err("open a netlink socket in the host netns"))?);
        Ok(Self {
            host,
            host_ns,
            network: network_key(&conf.name),
            attachment: attachment_key(&conf.name, &env.container_id, &env.ifname),
        })
    }
}

fn pod_nl(ns: &Netns) -> Result<Nl, CniError> {
    netns::connect_in(ns).map(Nl::new).map_err(|source| CniError::Io {
        what: format!("open a netlink socket in netns {}", ns.path),
        source,
    })
}

async fn add(env: &CniEnv, conf: &NetConf, fault: Option<Fault>) -> Result<Value, CniError> {
    let plans = pod_plans(conf, env)?;
    if plans.iter().all(|p| p.devices.is_empty()) {
        info!(container = %env.container_id, "no multinic plan for this pod; passing prevResult through");
        return Ok(pass_through(&conf.cni_version, conf.prev_result.as_ref()));
    }
    validate_devices(&plans, &env.ifname)?;
    let pod_ns = netns::open(&env.netns)?;
    let ctx = Ctx::new(conf, env)?;
    let pod = pod_nl(&pod_ns)?;
    let mut applied = Vec::new();
    for plan in &plans {
        for dev in &plan.devices {
            match apply_device(&ctx, &pod, &pod_ns, plan, dev, (applied.len() + 1, fault)).await {
                Ok(a) => applied.push(a),
                // A test fault stands for a crash: nothing is rolled back.
                Err(e @ CniError::FaultInjected { .. }) => return Err(e),
                Err(e) => {
                    warn!(error = %e, "ADD failed; reverting this attachment");
                    if let Err(re) = revert_attachment(&ctx, Some(&pod), None).await {
                        warn!(error = %re, "revert after a failed ADD failed; DEL will retry");
                    }
                    if let Err(re) = rdma_to_host(&plans, &pod_ns) {
                        warn!(error = %re, "returning RDMA devices after a failed ADD failed; DEL will retry");
                    }
                    return Err(e);
                }
            }
            Fault::hit(fault, Fault::AfterDevice(applied.len()), &dev.host_if_name)?;
        }
    }
    info!(container = %env.container_id, devices = applied.len(), "attached");
    merge_result(&conf.cni_version, conf.prev_result.as_ref(), &env.netns, &applied)
}

/// Whether a pod link is the one we attached for this device and attachment.
fn is_ours(link: &Link, plan: &Plan, dev: &PlannedDevice, attachment: &str) -> bool {
    link.alias.as_deref().and_then(Mark::parse).is_some_and(|m| {
        m.claim_uid == plan.claim_uid && m.host_if_name == dev.host_if_name && m.attachment == attachment
    })
}

fn check_mtu(dev: &PlannedDevice, limit: Option<u32>, what: &str) -> Result<(), CniError> {
    if let (Some(mtu), Some(limit)) = (dev.mtu, limit)
        && mtu > limit
    {
        return Err(CniError::Conflict {
            device: dev.host_if_name.clone(),
            problem: format!(
                "planned MTU {mtu} for {} is above {what} {limit}; raise the host NIC's MTU or lower attachment.mtu",
                dev.pod_if_name
            ),
        });
    }
    Ok(())
}

async fn apply_device(
    ctx: &Ctx,
    pod: &Nl,
    pod_ns: &Netns,
    plan: &Plan,
    dev: &PlannedDevice,
    fault: (usize, Option<Fault>),
) -> Result<AppliedDevice, CniError> {
    let name = &dev.host_if_name;
    let existing = pod
        .link(&dev.pod_if_name)
        .await
        .map_err(|e| dev_err(name, format!("look up {} in the pod netns", dev.pod_if_name), &e))?;
    let index = match existing {
        Some(l) if is_ours(&l, plan, dev, &ctx.attachment) => l.index,
        Some(l) if is_unmarked_child_of(ctx, &l, dev).await => {
            // A crash between creating the child and marking it: adopt it.
            mark_child(ctx, pod, plan, dev, &l).await?;
            l.index
        }
        Some(l) => {
            return Err(CniError::Conflict {
                device: name.clone(),
                problem: format!(
                    "the pod already has an interface {} (alias {:?}) that multinic did not attach for claim {}; rename it or change interfaceNamePrefix",
                    l.name,
                    l.alias.unwrap_or_default(),
                    plan.claim_uid
                ),
            });
        }
        None if dev.mode.is_shared() => attach_child(ctx, pod, pod_ns, plan, dev).await?,
        None => attach_moved(ctx, pod, pod_ns, plan, dev).await?,
    };
    configure(pod, dev, index, fault).await
}

async fn host_link(ctx: &Ctx, dev: &PlannedDevice) -> Result<Link, CniError> {
    let name = &dev.host_if_name;
    ctx.host
        .link(name)
        .await
        .map_err(|e| dev_err(name, "look up on the host", &e))?
        .ok_or_else(|| CniError::Device {
            device: name.clone(),
            step: "look up on the host".into(),
            cause: "no such interface in the host netns (is the NIC present, and not attached to another pod?)".into(),
        })
}

async fn attach_moved(ctx: &Ctx, pod: &Nl, pod_ns: &Netns, plan: &Plan, dev: &PlannedDevice) -> Result<u32, CniError> {
    let name = &dev.host_if_name;
    let h = host_link(ctx, dev).await?;
    let mark = match h.alias.as_deref().and_then(Mark::parse) {
        // Half-applied by an earlier attempt of this attachment: keep the state it recorded.
        Some(m) if m.attachment == ctx.attachment && m.claim_uid == plan.claim_uid => m,
        Some(m) => {
            return Err(CniError::Conflict {
                device: name.clone(),
                problem: format!(
                    "it is marked as taken by claim {} for another attachment; wait for that pod's DEL (or a CNI GC) to return it",
                    m.claim_uid
                ),
            });
        }
        None => {
            if let Some(a) = &h.alias {
                warn!(device = %name, alias = %a, "replacing a foreign interface alias; it is not restored on DEL");
            }
            Mark {
                claim_uid: plan.claim_uid.clone(),
                host_if_name: name.clone(),
                network: ctx.network.clone(),
                attachment: ctx.attachment.clone(),
                kind: LinkKind::Moved,
                host_was_up: h.up,
                host_mtu: h.mtu.unwrap_or(1500),
            }
        }
    };
    check_mtu(dev, h.max_mtu, "the device's maximum MTU")?;
    if let Some(rdma) = dev.rdma_device.as_deref() {
        rdma_into_pod(name, rdma, pod_ns)?;
    }
    ctx.host
        .set(nl::take_message(h.index, &mark.to_string()))
        .await
        .map_err(|e| dev_err(name, "mark and set down on the host", &e))?;
    ctx.host
        .set(nl::move_message(h.index, pod_ns.file.as_raw_fd(), &dev.pod_if_name))
        .await
        .map_err(|e| dev_err(name, format!("move into the pod netns as {}", dev.pod_if_name), &e))?;
    let moved = pod
        .link(&dev.pod_if_name)
        .await
        .map_err(|e| dev_err(name, "look up after the move", &e))?
        .ok_or_else(|| CniError::Device {
            device: name.clone(),
            step: "look up after the move".into(),
            cause: format!("{} is not in the pod netns", dev.pod_if_name),
        })?;
    info!(device = %name, pod_if = %dev.pod_if_name, "moved into the pod");
    Ok(moved.index)
}

/// In exclusive RDMA netns mode, moves the NIC's RDMA device into the pod. Done before the netdev
/// moves, so an RDMA device the kernel cannot move fails the ADD with nothing changed.
fn rdma_into_pod(device: &str, rdma: &str, pod_ns: &Netns) -> Result<(), CniError> {
    let step = || format!("move its RDMA device {rdma} into the pod (RDMA netns mode exclusive)");
    let fail = |e: RdmaError| CniError::Device {
        device: device.to_string(),
        step: step(),
        cause: format!(
            "{e}; an RDMA driver without namespace support (soft-RoCE rxe, for one) cannot be moved: \
             run `rdma system set netns shared` on the node, or give pods NICs whose RDMA driver supports it"
        ),
    };
    let host = netns::current()?;
    let mut nl = RdmaNl::open_in(&host.file).map_err(fail)?;
    if !nl.exclusive().map_err(fail)? {
        return Ok(());
    }
    match nl.move_to(rdma, &pod_ns.file) {
        Ok(()) => {
            info!(device, rdma, "RDMA device moved into the pod");
            Ok(())
        }
        // A retried ADD: it may be in the pod already.
        Err(RdmaError::NoDevice(_)) if RdmaNl::open_in(&pod_ns.file).and_then(|mut p| p.index_of(rdma)).is_ok() => {
            Ok(())
        }
        Err(e) => Err(fail(e)),
    }
}

/// In exclusive RDMA netns mode, returns the RDMA devices of `plans` found in the pod to the host.
/// Best effort (the kernel returns them itself when the pod netns is destroyed): failures are
/// logged, and the first is returned after every device was tried.
fn rdma_to_host(plans: &[Plan], pod_ns: &Netns) -> Result<(), CniError> {
    let mut wanted = plans
        .iter()
        .flat_map(|p| &p.devices)
        .filter_map(|d| Some((d, d.rdma_device.as_deref()?)))
        .peekable();
    if wanted.peek().is_none() {
        return Ok(());
    }
    let fail = |device: &str, rdma: &str, e: RdmaError| CniError::Device {
        device: device.to_string(),
        step: format!("return its RDMA device {rdma} to the host"),
        cause: format!("{e}; it returns to the host when the pod's network namespace is deleted"),
    };
    let host = netns::current()?;
    let mut first = None;
    for (dev, rdma) in wanted {
        let r = RdmaNl::open_in(&pod_ns.file).and_then(|mut pod| {
            if !pod.exclusive()? {
                return Ok(false);
            }
            match pod.move_to(rdma, &host.file) {
                Ok(()) => Ok(true),
                Err(RdmaError::NoDevice(_)) => Ok(false),
                Err(e) => Err(e),
            }
        });
        match r {
            Ok(true) => info!(device = %dev.host_if_name, rdma, "RDMA device returned to the host"),
            Ok(false) => {}
            Err(e) => {
                let e = fail(&dev.host_if_name, rdma, e);
                warn!(error = %e, "RDMA device not returned");
                first.get_or_insert(e);
            }
        }
    }
    first.map_or(Ok(()), Err)
}

async fn attach_child(ctx: &Ctx, pod: &Nl, pod_ns: &Netns, plan: &Plan, dev: &PlannedDevice) -> Result<u32, CniError> {
    let name = &dev.host_if_name;
    let parent = host_link(ctx, dev).await?;
    check_mtu(dev, parent.mtu, "the parent's MTU")?;
    let msg = nl::child_message(
        dev.mode,
        &dev.pod_if_name,
        parent.index,
        pod_ns.file.as_raw_fd(),
        dev.mtu,
        nl::link_group(&ctx.attachment),
    )
    .ok_or_else(|| CniError::InvalidConfig(format!("mode {} does not create a child", dev.mode.as_str())))?;
    let step = format!(
        "create {} child {} in the pod netns",
        dev.mode.as_str(),
        dev.pod_if_name
    );
    ctx.host.add(msg).await.map_err(|e| {
        let mut err = dev_err(name, step.clone(), &e);
        if let (CniError::Device { cause, .. }, Some(nix::libc::EOPNOTSUPP)) = (&mut err, errno(&e)) {
            cause.push_str("; the kernel lacks this link type (load the macvlan/ipvlan module)");
        }
        err
    })?;
    let child = pod
        .link(&dev.pod_if_name)
        .await
        .map_err(|e| dev_err(name, "look up the new child", &e))?
        .ok_or_else(|| CniError::Device {
            device: name.clone(),
            step: "look up the new child".into(),
            cause: format!("{} is not in the pod netns", dev.pod_if_name),
        })?;
    if let Err(e) = mark_child(ctx, pod, plan, dev, &child).await {
        // Unmarked, DEL could not find it: remove it now.
        let _ = pod.del(child.index).await;
        return Err(e);
    }
    info!(device = %name, pod_if = %dev.pod_if_name, mode = dev.mode.as_str(), "created child in the pod");
    Ok(child.index)
}

/// Whether `link` (in the pod, under the planned name) is an unmarked child of the planned parent
/// of the planned kind: what a crash between creating and marking a child leaves behind.
async fn is_unmarked_child_of(ctx: &Ctx, link: &Link, dev: &PlannedDevice) -> bool {
    let kind = match dev.mode {
        AttachmentMode::Macvlan => "macvlan",
        AttachmentMode::IpvlanL2 | AttachmentMode::IpvlanL3 => "ipvlan",
        AttachmentMode::HostDevice | AttachmentMode::SriovVf => return false,
    };
    if link.alias.is_some() || link.kind.as_deref() != Some(kind) {
        return false;
    }
    match ctx.host.link(&dev.host_if_name).await {
        Ok(Some(parent)) => link.parent == Some(parent.index),
        _ => false,
    }
}

/// Marks a child with our alias; the host fields record the parent's state (informational).
async fn mark_child(ctx: &Ctx, pod: &Nl, plan: &Plan, dev: &PlannedDevice, child: &Link) -> Result<(), CniError> {
    let name = &dev.host_if_name;
    let parent = host_link(ctx, dev).await?;
    let mark = Mark {
        claim_uid: plan.claim_uid.clone(),
        host_if_name: name.clone(),
        network: ctx.network.clone(),
        attachment: ctx.attachment.clone(),
        kind: LinkKind::Child,
        host_was_up: parent.up,
        host_mtu: parent.mtu.unwrap_or(1500),
    };
    pod.set_alias(child.index, &mark.to_string())
        .await
        .map_err(|e| dev_err(name, format!("mark child {}", dev.pod_if_name), &e))
}

/// MTU, addresses, up, routes, policy rules — each step idempotent. `fault`: the 1-based position
/// of the device in this ADD and the armed test fault.
async fn configure(
    pod: &Nl,
    dev: &PlannedDevice,
    index: u32,
    (position, fault): (usize, Option<Fault>),
) -> Result<AppliedDevice, CniError> {
    let name = &dev.pod_if_name;
    if let Some(mtu) = dev.mtu {
        pod.set_mtu(index, mtu)
            .await
            .map_err(|e| dev_err(name, format!("set MTU {mtu}"), &e))?;
    }
    for ip in &dev.ips {
        pod.add_address(index, *ip)
            .await
            .map_err(|e| dev_err(name, format!("add address {ip}"), &e))?;
    }
    Fault::hit(fault, Fault::AfterAddresses(position), &dev.host_if_name)?;
    pod.set_up(index, true).await.map_err(|e| dev_err(name, "set up", &e))?;
    let routes = nl::device_routes(dev);
    for r in &routes {
        let what = match r.table {
            Some(t) => format!("add route {} in table {t}", r.dst),
            None => format!("add route {}", r.dst),
        };
        let msg = nl::route_message(dev, r, index).map_err(|cause| CniError::Device {
            device: name.clone(),
            step: what.clone(),
            cause,
        })?;
        pod.add_route(msg).await.map_err(|e| dev_err(name, what.clone(), &e))?;
    }
    Fault::hit(fault, Fault::AfterRoutes(position), &dev.host_if_name)?;
    for (src, table) in nl::device_rules(dev) {
        pod.add_rule(src, table)
            .await
            .map_err(|e| dev_err(name, format!("add rule from {src} lookup {table}"), &e))?;
    }
    let link = pod
        .link_by_index(index)
        .await
        .map_err(|e| dev_err(name, "read back", &e))?;
    Ok(AppliedDevice {
        name: name.clone(),
        mac: link.as_ref().and_then(|l| l.mac.clone()),
        mtu: link.as_ref().and_then(|l| l.mtu),
        ips: dev.ips.clone(),
        gateway: dev.gateway,
        routes,
    })
}

/// Puts one link we attached back: a child is deleted; a moved device returns to the host under
/// its original name with its original MTU and up/down state.
async fn revert_in_pod(ctx: &Ctx, pod: &Nl, link: &Link, mark: &Mark) -> Result<(), CniError> {
    let dev = &mark.host_if_name;
    // The policy rules name only a source address, not the link: they outlive a deleted child.
    let addrs: Vec<_> = pod
        .addresses(link.index)
        .await
        .map_err(|e| dev_err(dev, "list addresses", &e))?
        .iter()
        .map(|n| n.addr())
        .collect();
    pod.del_rules_from(&addrs)
        .await
        .map_err(|e| dev_err(dev, "delete policy rules", &e))?;
    match mark.kind {
        LinkKind::Child => pod
            .del(link.index)
            .await
            .map_err(|e| dev_err(dev, format!("delete child {}", link.name), &e)),
        LinkKind::Moved => {
            pod.set_up(link.index, false)
                .await
                .map_err(|e| dev_err(dev, format!("set {} down", link.name), &e))?;
            pod.set(nl::move_message(link.index, ctx.host_ns.file.as_raw_fd(), dev))
                .await
                .map_err(|e| {
                    let mut err = dev_err(dev, format!("return {} to the host", link.name), &e);
                    if let (CniError::Device { cause, .. }, Some(nix::libc::EEXIST)) = (&mut err, errno(&e)) {
                        cause.push_str(&format!("; the host already has an interface named {dev}; rename it"));
                    }
                    err
                })?;
            let back = ctx
                .host
                .link(dev)
                .await
                .map_err(|e| dev_err(dev, "look up after the return", &e))?;
            match back {
                Some(l) => restore_on_host(ctx, &l, mark).await,
                None => Err(CniError::Device {
                    device: dev.clone(),
                    step: "look up after the return".into(),
                    cause: "not found on the host".into(),
                }),
            }
        }
    }
}

/// A marked link in the host netns: half-applied, or returned by the kernel when its pod netns
/// died. Restore the name, MTU, state, and clear the mark.
async fn restore_on_host(ctx: &Ctx, link: &Link, mark: &Mark) -> Result<(), CniError> {
    let dev = &mark.host_if_name;
    let host = &ctx.host;
    if mark.kind == LinkKind::Child {
        return host
            .del(link.index)
            .await
            .map_err(|e| dev_err(dev, format!("delete stray child {}", link.name), &e));
    }
    if link.name != *dev {
        host.set_up(link.index, false)
            .await
            .map_err(|e| dev_err(dev, format!("set {} down", link.name), &e))?;
        host.set(
            rtnetlink::LinkUnspec::new_with_index(link.index)
                .name(dev.as_str())
                .build(),
        )
        .await
        .map_err(|e| dev_err(dev, format!("rename {} back to {dev}", link.name), &e))?;
    }
    if link.mtu != Some(mark.host_mtu) {
        host.set_mtu(link.index, mark.host_mtu)
            .await
            .map_err(|e| dev_err(dev, format!("restore MTU {}", mark.host_mtu), &e))?;
    }
    host.set_alias(link.index, "")
        .await
        .map_err(|e| dev_err(dev, "clear the multinic mark", &e))?;
    host.set_up(link.index, mark.host_was_up)
        .await
        .map_err(|e| dev_err(dev, if mark.host_was_up { "set up" } else { "set down" }, &e))?;
    info!(device = %dev, "returned to the host");
    Ok(())
}

/// The selected children that can go in one group delete, taken out of `selected`: per link
/// group, when every link of the pod in that group is a selected child whose mark names the
/// attachment the group belongs to (so the request deletes nothing it should not). Children
/// without their group (created by an older version, or regrouped by someone) stay in `selected`
/// and are deleted one by one.
fn child_groups(pod_links: &[Link], selected: &mut Vec<(Link, Mark)>) -> Vec<(u32, Vec<(Link, Mark)>)> {
    let in_own_group = |l: &Link, m: &Mark| m.kind == LinkKind::Child && l.group == nl::link_group(&m.attachment);
    let mut groups: Vec<u32> = selected
        .iter()
        .filter(|(l, m)| in_own_group(l, m))
        .map(|(l, _)| l.group)
        .collect();
    groups.sort_unstable();
    groups.dedup();
    let mut out = Vec::new();
    for group in groups {
        let members = selected
            .iter()
            .filter(|(l, m)| l.group == group && in_own_group(l, m))
            .count();
        if pod_links.iter().filter(|l| l.group == group).count() != members {
            continue;
        }
        let (take, keep): (Vec<_>, Vec<_>) = std::mem::take(selected)
            .into_iter()
            .partition(|(l, m)| l.group == group && in_own_group(l, m));
        *selected = keep;
        out.push((group, take));
    }
    out
}

/// Reverts every link marked with this attachment, in the pod (if any) and on the host.
/// Keeps going after an error and returns the first one.
/// `fault` is the armed test fault of DEL (`None` elsewhere).
async fn revert_attachment(ctx: &Ctx, pod: Option<&Nl>, fault: Option<Fault>) -> Result<(), CniError> {
    let attachment = ctx.attachment.clone();
    revert_matching(ctx, pod, &|m: &Mark| m.attachment == attachment, fault).await
}

async fn revert_matching(
    ctx: &Ctx,
    pod: Option<&Nl>,
    select: &dyn Fn(&Mark) -> bool,
    fault: Option<Fault>,
) -> Result<(), CniError> {
    let mut first_err = None;
    let mut reverted = 0;
    let marked = |links: Vec<Link>| -> Vec<(Link, Mark)> {
        links
            .into_iter()
            .filter_map(|l| {
                let m = l.alias.as_deref().and_then(Mark::parse)?;
                select(&m).then_some((l, m))
            })
            .collect()
    };
    if let Some(pod) = pod {
        let links = pod.links().await.map_err(|e| CniError::Device {
            device: "(pod netns)".into(),
            step: "list links".into(),
            cause: describe(&e),
        })?;
        let mut rest = marked(links.clone());
        for (group, members) in child_groups(&links, &mut rest) {
            // The policy rules name only a source address, not the link: they outlive it.
            let indexes: Vec<u32> = members.iter().map(|(l, _)| l.index).collect();
            let rules = async {
                let addrs: Vec<_> = pod.addresses_of(&indexes).await?.iter().map(|n| n.addr()).collect();
                pod.del_rules_from(&addrs).await
            };
            if let Err(e) = rules.await {
                let err = dev_err(
                    "(pod netns)",
                    format!("delete the policy rules of link group {group}"),
                    &e,
                );
                warn!(error = %err, "revert failed");
                first_err.get_or_insert(err);
            }
            match pod.del_group(group).await {
                Ok(()) => {
                    info!(
                        group,
                        children = members.len(),
                        "deleted the attachment's children in one request"
                    );
                    for (_, mark) in &members {
                        reverted += 1;
                        Fault::hit(fault, Fault::DelAfterDevice(reverted), &mark.host_if_name)?;
                    }
                }
                Err(e) => {
                    warn!(group, error = %describe(&e), "deleting a link group failed; deleting its children one by one");
                    rest.extend(members);
                }
            }
        }
        for (link, mark) in rest {
            if let Err(e) = revert_in_pod(ctx, pod, &link, &mark).await {
                warn!(error = %e, "revert failed");
                first_err.get_or_insert(e);
            }
            reverted += 1;
            Fault::hit(fault, Fault::DelAfterDevice(reverted), &mark.host_if_name)?;
        }
    }
    let links = ctx.host.links().await.map_err(|e| CniError::Device {
        device: "(host netns)".into(),
        step: "list links".into(),
        cause: describe(&e),
    })?;
    for (link, mark) in marked(links) {
        if let Err(e) = restore_on_host(ctx, &link, &mark).await {
            warn!(error = %e, "restore on the host failed");
            first_err.get_or_insert(e);
        }
        reverted += 1;
        Fault::hit(fault, Fault::DelAfterDevice(reverted), &mark.host_if_name)?;
    }
    first_err.map_or(Ok(()), Err)
}

async fn del(env: &CniEnv, conf: &NetConf, fault: Option<Fault>) -> Result<(), CniError> {
    let ctx = Ctx::new(conf, env)?;
    let pod_ns = if env.netns.is_empty() {
        None
    } else {
        match netns::open(&env.netns) {
            Ok(ns) => Some(ns),
            // Gone, or a leftover mount point of a dead sandbox: nothing to revert in it.
            Err(e @ (CniError::NetnsGone { .. } | CniError::NotNetns { .. })) => {
                info!(reason = %e, "pod netns unavailable; cleaning up the host side only");
                None
            }
            Err(e) => return Err(e),
        }
    };
    let pod = pod_ns.as_ref().map(pod_nl).transpose()?;
    // RDMA devices first: an unreadable plan must not keep the netdevs in the pod.
    let rdma = match (&pod_ns, pod_plans(conf, env)) {
        (Some(ns), Ok(plans)) => rdma_to_host(&plans, ns),
        (Some(_), Err(e)) => {
            warn!(error = %e, "plans unreadable; RDMA devices return to the host with the pod's netns");
            Ok(())
        }
        (None, _) => Ok(()),
    };
    revert_attachment(&ctx, pod.as_ref(), fault).await?;
    rdma
}

async fn check(env: &CniEnv, conf: &NetConf) -> Result<(), CniError> {
    let plans = pod_plans(conf, env)?;
    if plans.iter().all(|p| p.devices.is_empty()) {
        return Ok(());
    }
    let pod_ns = netns::open(&env.netns)?;
    let pod = pod_nl(&pod_ns)?;
    let attachment = attachment_key(&conf.name, &env.container_id, &env.ifname);
    let rules: Vec<_> = pod
        .rules()
        .await
        .map_err(|e| dev_err("(pod netns)", "list rules", &e))?
        .iter()
        .filter_map(nl::our_rule)
        .collect();
    for plan in &plans {
        for dev in &plan.devices {
            let bad = |problem: String| CniError::Check {
                device: format!("{} ({})", dev.pod_if_name, dev.host_if_name),
                problem,
            };
            let link = pod
                .link(&dev.pod_if_name)
                .await
                .map_err(|e| dev_err(&dev.pod_if_name, "look up", &e))?
                .ok_or_else(|| bad("missing from the pod netns".into()))?;
            if !is_ours(&link, plan, dev, &attachment) {
                return Err(bad(format!("not attached by multinic for claim {}", plan.claim_uid)));
            }
            if let Some(mtu) = dev.mtu
                && link.mtu != Some(mtu)
            {
                return Err(bad(format!("MTU is {:?}, planned {mtu}", link.mtu)));
            }
            if !link.up {
                return Err(bad("is down".into()));
            }
            let addrs = pod
                .addresses(link.index)
                .await
                .map_err(|e| dev_err(&dev.pod_if_name, "list addresses", &e))?;
            for ip in &dev.ips {
                if !addrs.contains(ip) {
                    return Err(bad(format!("address {ip} is missing")));
                }
            }
            for rule in nl::device_rules(dev) {
                if !rules.contains(&rule) {
                    return Err(bad(format!("rule from {} lookup {} is missing", rule.0, rule.1)));
                }
            }
        }
    }
    Ok(())
}

/// GC (spec 1.1): revert every link of this network whose attachment is not in
/// `cni.dev/valid-attachments`, in every network namespace we can find and on the host.
async fn gc(conf: &NetConf) -> Result<(), CniError> {
    let valid: HashSet<String> = conf
        .valid_attachments
        .as_ref()
        .ok_or_else(|| CniError::InvalidConfig("GC needs cni.dev/valid-attachments".into()))?
        .iter()
        .map(|a| attachment_key(&conf.name, &a.container_id, &a.ifname))
        .collect();
    let host_ns = netns::current()?;
    let host_id = host_ns.id().map_err(io_err("stat the host netns"))?;
    let ctx = Ctx {
        host: Nl::new(netns::connect_here().map_err(io_err("open a netlink socket in the host netns"))?),
        host_ns,
        network: network_key(&conf.name),
        attachment: String::new(),
    };
    let network = ctx.network.clone();
    let select = move |m: &Mark| m.network == network && !valid.contains(&m.attachment);
    let mut first_err = None;
    for ns in netns::enumerate(host_id) {
        let pod = match pod_nl(&ns) {
            Ok(p) => p,
            Err(e) => {
                warn!(error = %e, "GC: skipping netns");
                continue;
            }
        };
        let links = match pod.links().await {
            Ok(l) => l,
            Err(e) => {
                warn!(netns = %ns.path, error = %describe(&e), "GC: cannot list links");
                continue;
            }
        };
        let stale: Vec<(Link, Mark)> = links
            .into_iter()
            .filter_map(|l| {
                let m = l.alias.as_deref().and_then(Mark::parse)?;
                select(&m).then_some((l, m))
            })
            .collect();
        for (link, mark) in stale {
            info!(netns = %ns.path, link = %link.name, claim = %mark.claim_uid, "GC: reverting a stale attachment");
            if let Err(e) = revert_in_pod(&ctx, &pod, &link, &mark).await {
                first_err.get_or_insert(e);
            }
        }
    }
    if let Err(e) = revert_matching(&ctx, None, &select, None).await {
        first_err.get_or_insert(e);
    }
    first_err.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use multinic_api::plan::{PLAN_VERSION, PodRef};

    use super::*;
    use crate::args::PodArgs;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| map.get(k).cloned()
    }

    fn plan(uid: &str, pod_uid: &str, names: &[&str]) -> Plan {
        Plan {
            version: PLAN_VERSION,
            claim_uid: uid.into(),
            namespace: "ml".into(),
            name: "c".into(),
            pods: vec![PodRef {
                uid: pod_uid.into(),
                name: "train-0".into(),
            }],
            network: None,
            devices: names
                .iter()
                .enumerate()
                .map(|(i, n)| PlannedDevice {
                    request: "nics".into(),
                    pool: "node".into(),
                    device: format!("dev-{i}"),
                    host_if_name: format!("ens{i}"),
                    rail_index: Some(i as u32),
                    pod_if_name: n.to_string(),
                    mode: AttachmentMode::HostDevice,
                    mtu: None,
                    mac: None,
                    ips: vec![],
                    gateway: None,
                    routes: vec![],
                    table: None,
                    rdma_device: None,
                })
                .collect(),
        }
    }

    fn cni_env(uid: Option<&str>) -> CniEnv {
        CniEnv {
            command: Command::Add,
            container_id: "c1".into(),
            netns: "/nonexistent".into(),
            ifname: "eth0".into(),
            pod: PodArgs {
                uid: uid.map(str::to_string),
                namespace: Some("ml".into()),
                name: Some("train-0".into()),
            },
        }
    }

    #[test]
    fn fault_hook_needs_test_mode() {
        let on = env_of(&[(TEST_MODE_ENV, "1"), (FAULT_ENV, "after-device-3")]);
        assert_eq!(fault_from_env(on), Some(Fault::AfterDevice(3)));
        let off = env_of(&[(FAULT_ENV, "after-device-3")]);
        assert_eq!(fault_from_env(off).is_some(), cfg!(feature = "fault-injection"));
        assert_eq!(
            fault_from_env(env_of(&[(TEST_MODE_ENV, "1"), (FAULT_ENV, "boom")])),
            None
        );
        for (spec, fault) in [
            ("after-addresses-2", Fault::AfterAddresses(2)),
            ("after-routes-1", Fault::AfterRoutes(1)),
            ("del-after-device-4", Fault::DelAfterDevice(4)),
        ] {
            assert_eq!(
                fault_from_env(env_of(&[(TEST_MODE_ENV, "1"), (FAULT_ENV, spec)])),
                Some(fault)
            );
        }
        assert_eq!(
            fault_from_env(env_of(&[(TEST_MODE_ENV, "1"), (FAULT_ENV, "after-routes-x")])),
            None
        );
    }

    #[test]
    fn device_validation() {
        assert!(validate_devices(&[plan("a", "p", &["net1", "net2"])], "eth0").is_ok());
        assert!(matches!(
            validate_devices(&[plan("a", "p", &["net1"]), plan("b", "p", &["net1"])], "eth0"),
            Err(CniError::Conflict { .. })
        ));
        assert!(matches!(
            validate_devices(&[plan("a", "p", &["eth0"])], "eth0"),
            Err(CniError::Conflict { .. })
        ));
        assert!(matches!(
            validate_devices(&[plan("a", "p", &["bad/name"])], "eth0"),
            Err(CniError::InvalidConfig(_))
        ));
    }

    #[test]
    fn plans_are_matched_to_the_pod_and_corrupt_files_fail() {
        let dir = tempfile::tempdir().unwrap();
        let store = PlanStore::new(dir.path());
        store.write(&plan("claim-a", "pod-1", &["net1"])).unwrap();
        store.write(&plan("claim-b", "pod-2", &["net1"])).unwrap();
        let conf = parse_conf(
            format!(
                r#"{{"cniVersion":"1.0.0","name":"n","stateDir":"{}"}}"#,
                dir.path().display()
            )
            .as_bytes(),
        )
        .unwrap();
        let got = pod_plans(&conf, &cni_env(Some("pod-1"))).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].claim_uid, "claim-a");
        assert!(pod_plans(&conf, &cni_env(Some("pod-3"))).unwrap().is_empty());
        let mut anonymous = cni_env(None);
        anonymous.pod = PodArgs::default();
        assert!(pod_plans(&conf, &anonymous).unwrap().is_empty());
        // A corrupt plan of this pod fails the call; it does not disturb another pod.
        store.write(&plan("claim-c", "pod-1", &["net2"])).unwrap();
        std::fs::write(store.dir().join("claim-c.json"), b"{").unwrap();
        assert!(matches!(
            pod_plans(&conf, &cni_env(Some("pod-1"))),
            Err(CniError::Plan(_))
        ));
        assert_eq!(pod_plans(&conf, &cni_env(Some("pod-2"))).unwrap().len(), 1);
    }

    #[test]
    fn no_plan_passes_prev_result_through() {
        let dir = tempfile::tempdir().unwrap();
        let prev = serde_json::json!({"cniVersion":"1.0.0","interfaces":[{"name":"eth0"}],"ips":[]});
        let stdin = serde_json::json!({
            "cniVersion": "1.0.0", "name": "n", "type": "multinic-cni",
            "stateDir": dir.path(), "prevResult": prev,
        });
        let out = run(&cni_env(Some("pod-1")), stdin.to_string().as_bytes(), None).unwrap();
        assert_eq!(out, Some(prev));
        let version = run(
            &CniEnv {
                command: Command::Version,
                ..cni_env(None)
            },
            b"",
            None,
        )
        .unwrap()
        .unwrap_or_default();
        assert_eq!(version["cniVersion"], "1.1.0");
    }

    #[test]
    fn status_needs_a_readable_state_dir() {
        let dir = tempfile::tempdir().unwrap();
        let ok = serde_json::json!({"cniVersion":"1.1.0","name":"n","stateDir": dir.path()});
        let env = CniEnv {
            command: Command::Status,
            ..cni_env(None)
        };
        assert_eq!(run(&env, ok.to_string().as_bytes(), None).unwrap(), None);
        let gone = serde_json::json!({"cniVersion":"1.1.0","name":"n","stateDir": dir.path().join("x")});
        let err = run(&env, gone.to_string().as_bytes(), None).unwrap_err();
        assert_eq!(err.code(), 50);
    }

    fn child(index: u32, group: u32, attachment: &str, kind: LinkKind) -> (Link, Mark) {
        let link = Link {
            index,
            name: format!("net{index}"),
            alias: None,
            mtu: None,
            max_mtu: None,
            up: true,
            kind: Some("macvlan".into()),
            parent: None,
            mac: None,
            group,
        };
        let mark = Mark {
            claim_uid: "claim-a".into(),
            host_if_name: format!("ens{index}"),
            network: network_key("n"),
            attachment: attachment.into(),
            kind,
            host_was_up: true,
            host_mtu: 1500,
        };
        (link, mark)
    }

    #[test]
    fn children_go_in_one_group_delete_only_when_the_group_is_all_theirs() {
        let a = attachment_key("n", "ctr-a", "eth0");
        let ga = nl::link_group(&a);
        let lo = child(1, 0, "", LinkKind::Child).0;
        let kids: Vec<_> = (2..5).map(|i| child(i, ga, &a, LinkKind::Child)).collect();
        let pod: Vec<Link> = std::iter::once(lo.clone())
            .chain(kids.iter().map(|k| k.0.clone()))
            .collect();

        let mut selected = kids.clone();
        let groups = child_groups(&pod, &mut selected);
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].0, ga);
        assert_eq!(groups[0].1, kids);
        assert!(selected.is_empty());

        // A link of the pod in that group that is not one of the selected children: no group delete.
        let mut stranger = child(9, ga, &a, LinkKind::Child).0;
        stranger.alias = Some("someone else's".into());
        let crowded: Vec<Link> = pod.iter().cloned().chain([stranger]).collect();
        let mut selected = kids.clone();
        assert!(child_groups(&crowded, &mut selected).is_empty());
        assert_eq!(selected, kids);

        // A moved device is never deleted; a child outside its attachment's group (an older
        // version's) is deleted on its own.
        let moved = child(6, ga, &a, LinkKind::Moved);
        let old = child(7, 0, &a, LinkKind::Child);
        let mixed: Vec<Link> = pod.iter().cloned().chain([moved.0.clone(), old.0.clone()]).collect();
        let mut selected: Vec<_> = kids.iter().cloned().chain([moved.clone(), old.clone()]).collect();
        assert!(
            child_groups(&mixed, &mut selected).is_empty(),
            "the moved device shares the group"
        );
        let without_moved: Vec<Link> = pod.iter().cloned().chain([old.0.clone()]).collect();
        let mut selected: Vec<_> = kids.iter().cloned().chain([old.clone()]).collect();
        let groups = child_groups(&without_moved, &mut selected);
        assert_eq!(groups.len(), 1);
        assert_eq!(selected, vec![old]);
    }
}
