//! The mark we leave on every link we attach (IFLA_IFALIAS), so DEL and GC can always find and
//! restore it, even when the plan is gone or the process died half-way.
//!
//! Format (at most ~130 bytes, well under the kernel's 255):
//!
//! ```text
//! multinic:<claimUID>:<hostIfName>:<net>:<attachment>:<kind><state><mtu>
//! ```
//!
//! * `net`: 8 hex digits, FNV-1a of the CNI network name (scopes GC to one network config);
//! * `attachment`: 16 hex digits, FNV-1a of `network name \0 containerID \0 CNI_IFNAME` (the CNI
//!   attachment identity, used by DEL and GC);
//! * `kind`: `m` the host netdev itself was moved into the pod, `c` a child link was created;
//! * `state`: `u`/`d`, whether the host netdev was administratively up before we took it;
//! * `mtu`: the host netdev's MTU before we took it (restored on DEL).

use std::fmt;

use multinic_api::config::validate_ifname;
use multinic_api::hash::fnv1a64;

/// Prefix of every alias we write.
pub const ALIAS_PREFIX: &str = "multinic:";

/// Short hash of the network name (GC scope).
pub fn network_key(network: &str) -> String {
    format!("{:08x}", fnv1a64(&[network]) as u32)
}

/// Hash of the CNI attachment identity (network name, container ID, CNI_IFNAME).
pub fn attachment_key(network: &str, container_id: &str, ifname: &str) -> String {
    format!("{:016x}", fnv1a64(&[network, container_id, ifname]))
}

/// How the pod got the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkKind {
    /// The host netdev itself was moved (host-device, sriov-vf).
    Moved,
    /// A child (macvlan, ipvlan) of the host netdev was created.
    Child,
}

/// The parsed alias.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    pub claim_uid: String,
    pub host_if_name: String,
    pub network: String,
    pub attachment: String,
    pub kind: LinkKind,
    /// The host netdev was up before we took it.
    pub host_was_up: bool,
    /// The host netdev's MTU before we took it.
    pub host_mtu: u32,
}

impl fmt::Display for Mark {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            LinkKind::Moved => 'm',
            LinkKind::Child => 'c',
        };
        let state = if self.host_was_up { 'u' } else { 'd' };
        write!(
            f,
            "{ALIAS_PREFIX}{}:{}:{}:{}:{kind}{state}{}",
            self.claim_uid, self.host_if_name, self.network, self.attachment, self.host_mtu
        )
    }
}

impl Mark {
    /// Parses an alias; `None` when it is not ours (or not well formed).
    pub fn parse(alias: &str) -> Option<Mark> {
        let rest = alias.strip_prefix(ALIAS_PREFIX)?;
        let mut it = rest.split(':');
        let claim_uid = it.next()?;
        let host_if_name = it.next()?;
        let network = it.next()?;
        let attachment = it.next()?;
        let flags = it.next()?;
        if it.next().is_some() || claim_uid.is_empty() || validate_ifname(host_if_name).is_err() {
            return None;
        }
        let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
        if !hex(network, 8) || !hex(attachment, 16) {
            return None;
        }
        let mut chars = flags.chars();
        let kind = match chars.next()? {
            'm' => LinkKind::Moved,
            'c' => LinkKind::Child,
            _ => return None,
        };
        let host_was_up = match chars.next()? {
            'u' => true,
            'd' => false,
            _ => return None,
        };
        let host_mtu = chars.as_str().parse().ok()?;
        Some(Mark {
            claim_uid: claim_uid.to_string(),
            host_if_name: host_if_name.to_string(),
            network: network.to_string(),
            attachment: attachment.to_string(),
            kind,
            host_was_up,
            host_mtu,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark() -> Mark {
        Mark {
            claim_uid: "0b6e5a3c-1111-2222-3333-444455556666".into(),
            host_if_name: "ens1f0np0".into(),
            network: network_key("rdma-rails"),
            attachment: attachment_key("rdma-rails", "c0ffee", "eth0"),
            kind: LinkKind::Moved,
            host_was_up: true,
            host_mtu: 1500,
        }
    }

    #[test]
    fn round_trip_and_length() {
        let m = mark();
        let s = m.to_string();
        assert!(
            s.starts_with("multinic:0b6e5a3c-1111-2222-3333-444455556666:ens1f0np0:"),
            "{s}"
        );
        assert!(s.ends_with(":mu1500"), "{s}");
        assert_eq!(Mark::parse(&s), Some(m.clone()));
        let child = Mark {
            kind: LinkKind::Child,
            host_was_up: false,
            ..m
        };
        assert_eq!(Mark::parse(&child.to_string()), Some(child));
        // Longest possible: 64-char UID, 15-char name, 6-digit MTU.
        let long = Mark {
            claim_uid: "a".repeat(64),
            host_if_name: "b".repeat(15),
            host_mtu: 999_999,
            ..mark()
        };
        assert!(long.to_string().len() < 255);
    }

    #[test]
    fn foreign_and_malformed_aliases_are_not_ours() {
        for bad in [
            "",
            "uplink to ToR 3",
            "multinic:",
            "multinic:uid:eth0:1234567:0123456789abcdef:mu1500",
            "multinic:uid:eth0:12345678:0123456789abcdeg:mu1500",
            "multinic:uid:eth0:12345678:0123456789abcdef:xu1500",
            "multinic:uid:eth0:12345678:0123456789abcdef:mx1500",
            "multinic:uid:eth0:12345678:0123456789abcdef:mu",
            "multinic:uid:eth0:12345678:0123456789abcdef:mu1500:extra",
            "multinic::eth0:12345678:0123456789abcdef:mu1500",
            "multinic:uid:waytoolonginterface:12345678:0123456789abcdef:mu1500",
        ] {
            assert_eq!(Mark::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn keys_are_stable_and_distinguish_fields() {
        assert_ne!(attachment_key("n", "ab", "c"), attachment_key("n", "a", "bc"));
        assert_ne!(attachment_key("n1", "c", "eth0"), attachment_key("n2", "c", "eth0"));
        assert_eq!(network_key("x").len(), 8);
        assert_eq!(attachment_key("x", "y", "z").len(), 16);
    }
}
