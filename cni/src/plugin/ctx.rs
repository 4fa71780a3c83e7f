//! What the commands share: the netlink handles and identity of one attachment, and error helpers.

use multinic_api::{Plan, PlannedDevice};

use crate::alias::{Mark, attachment_key, network_key};
use crate::args::CniEnv;
use crate::config::NetConf;
use crate::error::CniError;
use crate::netns::{self, Netns};
use crate::nl::{Link, Nl, describe};

/// Netlink handles and identity of one attachment.
pub(super) struct Ctx {
    pub(super) host: Nl,
    pub(super) host_ns: Netns,
    pub(super) network: String,
    /// Empty for GC, which acts on many attachments.
    pub(super) attachment: String,
}

pub(super) fn dev_err(device: &str, step: impl Into<String>, e: &rtnetlink::Error) -> CniError {
    CniError::Device {
        device: device.to_string(),
        step: step.into(),
        cause: describe(e),
    }
}

pub(super) fn io_err(what: &str) -> impl Fn(std::io::Error) -> CniError + '_ {
    move |source| CniError::Io {
        what: what.to_string(),
        source,
    }
}

impl Ctx {
    /// The context of the invocation's attachment (ADD, DEL).
    pub(super) fn new(conf: &NetConf, env: &CniEnv) -> Result<Self, CniError> {
        Self::with_attachment(conf, attachment_key(&conf.name, &env.container_id, &env.ifname))
    }

    pub(super) fn with_attachment(conf: &NetConf, attachment: String) -> Result<Self, CniError> {
        let host_ns = netns::current()?;
        let host = Nl::new(netns::connect_here().map_err(io_err("open a netlink socket in the host netns"))?);
        Ok(Self {
            host,
            host_ns,
            network: network_key(&conf.name),
            attachment,
        })
    }
}

pub(super) fn pod_nl(ns: &Netns) -> Result<Nl, CniError> {
    netns::connect_in(ns).map(Nl::new).map_err(|source| CniError::Io {
        what: format!("open a netlink socket in netns {}", ns.path),
        source,
    })
}

/// Whether a pod link is the one we attached for this device and attachment.
pub(super) fn is_ours(link: &Link, plan: &Plan, dev: &PlannedDevice, attachment: &str) -> bool {
    link.alias.as_deref().and_then(Mark::parse).is_some_and(|m| {
        m.claim_uid == plan.claim_uid && m.host_if_name == dev.host_if_name && m.attachment == attachment
    })
}

/// The links that carry our mark and that `select` picks, each with its mark.
pub(super) fn marked(links: Vec<Link>, select: &dyn Fn(&Mark) -> bool) -> Vec<(Link, Mark)> {
    links
        .into_iter()
        .filter_map(|l| {
            let m = l.alias.as_deref().and_then(Mark::parse)?;
            select(&m).then_some((l, m))
        })
        .collect()
}
