//! GC (spec 1.1): revert the attachments of this network that the runtime no longer knows.

use std::collections::HashSet;

use tracing::{info, warn};

use super::ctx::{Ctx, io_err, marked, pod_nl};
use super::del::{revert_in_pod, revert_matching};
use crate::alias::{Mark, attachment_key};
use crate::config::NetConf;
use crate::error::CniError;
use crate::netns;
use crate::nl::describe;

/// GC (spec 1.1): revert every link of this network whose attachment is not in
/// `cni.dev/valid-attachments`, in every network namespace we can find and on the host.
pub(super) async fn gc(conf: &NetConf) -> Result<(), CniError> {
    let valid: HashSet<String> = conf
        .valid_attachments
        .as_ref()
        .ok_or_else(|| CniError::InvalidConfig("GC needs cni.dev/valid-attachments".into()))?
        .iter()
        .map(|a| attachment_key(&conf.name, &a.container_id, &a.ifname))
        .collect();
    let ctx = Ctx::with_attachment(conf, String::new())?;
    let host_id = ctx.host_ns.id().map_err(io_err("stat the host netns"))?;
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
        for (link, mark) in marked(links, &select) {
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
