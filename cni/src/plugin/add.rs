//! ADD: attach every planned device of the pod; on an error, revert this attachment.

use std::os::fd::AsRawFd;

use multinic_api::{AttachmentMode, Plan, PlannedDevice};
use serde_json::Value;
use tracing::{info, warn};

use super::ctx::{Ctx, dev_err, is_ours, pod_nl};
use super::del::{rdma_to_host, revert_attachment};
use super::fault::Fault;
use super::plans::{pod_plans, validate_devices};
use crate::alias::{LinkKind, Mark};
use crate::args::CniEnv;
use crate::config::NetConf;
use crate::error::CniError;
use crate::netns::{self, Netns};
use crate::nl::{self, Link, Nl, errno};
use crate::rdma::{RdmaError, RdmaNl};
use crate::result::{AppliedDevice, merge_result, pass_through};

pub(super) async fn add(env: &CniEnv, conf: &NetConf, fault: Option<Fault>) -> Result<Value, CniError> {
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
            mark_for(ctx, plan, dev, &h, LinkKind::Moved)?
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
    let moved = link_in_pod(pod, dev, "look up after the move").await?;
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

/// The pod's link `dev.pod_if_name`, which must exist now.
async fn link_in_pod(pod: &Nl, dev: &PlannedDevice, step: &str) -> Result<Link, CniError> {
    let name = &dev.host_if_name;
    pod.link(&dev.pod_if_name)
        .await
        .map_err(|e| dev_err(name, step, &e))?
        .ok_or_else(|| CniError::Device {
            device: name.clone(),
            step: step.into(),
            cause: format!("{} is not in the pod netns", dev.pod_if_name),
        })
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
    let child = link_in_pod(pod, dev, "look up the new child").await?;
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

/// Our mark for the host link `host` (the device, or a child's parent) taken for the plan by this
/// attachment, with the state DEL restores: up or down, and the MTU (which the kernel always
/// reports; a link without one is refused rather than given a made-up MTU).
fn mark_for(ctx: &Ctx, plan: &Plan, dev: &PlannedDevice, host: &Link, kind: LinkKind) -> Result<Mark, CniError> {
    let host_mtu = host.mtu.ok_or_else(|| CniError::Device {
        device: dev.host_if_name.clone(),
        step: "read its MTU on the host".into(),
        cause: "the kernel reported none; check the device's driver".into(),
    })?;
    Ok(Mark {
        claim_uid: plan.claim_uid.clone(),
        host_if_name: dev.host_if_name.clone(),
        network: ctx.network.clone(),
        attachment: ctx.attachment.clone(),
        kind,
        host_was_up: host.up,
        host_mtu,
    })
}

/// Marks a child with our alias; the host fields record the parent's state (informational).
async fn mark_child(ctx: &Ctx, pod: &Nl, plan: &Plan, dev: &PlannedDevice, child: &Link) -> Result<(), CniError> {
    let name = &dev.host_if_name;
    let parent = host_link(ctx, dev).await?;
    let mark = mark_for(ctx, plan, dev, &parent, LinkKind::Child)?;
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
