//! DEL, and the revert it shares with a failed ADD and with GC: every link marked with the
//! attachment goes back (a child is deleted, a moved device returns to the host).

use std::os::fd::AsRawFd;

use multinic_api::Plan;
use tracing::{info, warn};

use super::ctx::{Ctx, dev_err, marked, pod_nl};
use super::fault::Fault;
use super::plans::pod_plans;
use crate::alias::{LinkKind, Mark};
use crate::args::CniEnv;
use crate::config::NetConf;
use crate::error::CniError;
use crate::netns::{self, Netns};
use crate::nl::{self, Link, Nl, describe, errno};
use crate::rdma::{RdmaError, RdmaNl};

pub(super) async fn del(env: &CniEnv, conf: &NetConf, fault: Option<Fault>) -> Result<(), CniError> {
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

/// In exclusive RDMA netns mode, returns the RDMA devices of `plans` found in the pod to the host.
/// Best effort (the kernel returns them itself when the pod netns is destroyed): failures are
/// logged, and the first is returned after every device was tried.
pub(super) fn rdma_to_host(plans: &[Plan], pod_ns: &Netns) -> Result<(), CniError> {
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
    // One socket in the pod and one mode query for all devices.
    let mut pod = match RdmaNl::open_in(&pod_ns.file).and_then(|mut p| Ok((p.exclusive()?, p))) {
        Ok((true, p)) => p,
        Ok((false, _)) => return Ok(()),
        Err(e) => {
            let (dev, rdma) = wanted
                .next()
                .map(|(d, r)| (d.host_if_name.as_str(), r))
                .unwrap_or_default();
            return Err(fail(dev, rdma, e));
        }
    };
    let mut first = None;
    for (dev, rdma) in wanted {
        let r = match pod.move_to(rdma, &host.file) {
            Ok(()) => Ok(true),
            Err(RdmaError::NoDevice(_)) => Ok(false),
            Err(e) => Err(e),
        };
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

/// Puts one link we attached back: a child is deleted; a moved device returns to the host under
/// its original name with its original MTU and up/down state.
pub(super) async fn revert_in_pod(ctx: &Ctx, pod: &Nl, link: &Link, mark: &Mark) -> Result<(), CniError> {
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
pub(super) async fn revert_attachment(ctx: &Ctx, pod: Option<&Nl>, fault: Option<Fault>) -> Result<(), CniError> {
    let attachment = ctx.attachment.clone();
    revert_matching(ctx, pod, &|m: &Mark| m.attachment == attachment, fault).await
}

pub(super) async fn revert_matching(
    ctx: &Ctx,
    pod: Option<&Nl>,
    select: &dyn Fn(&Mark) -> bool,
    fault: Option<Fault>,
) -> Result<(), CniError> {
    let mut first_err = None;
    let mut reverted = 0;
    if let Some(pod) = pod {
        let links = pod.links().await.map_err(|e| CniError::Device {
            device: "(pod netns)".into(),
            step: "list links".into(),
            cause: describe(&e),
        })?;
        let mut rest = marked(links.clone(), select);
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
    for (link, mark) in marked(links, select) {
        if let Err(e) = restore_on_host(ctx, &link, &mark).await {
            warn!(error = %e, "restore on the host failed");
            first_err.get_or_insert(e);
        }
        reverted += 1;
        Fault::hit(fault, Fault::DelAfterDevice(reverted), &mark.host_if_name)?;
    }
    first_err.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alias::{attachment_key, network_key};

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
