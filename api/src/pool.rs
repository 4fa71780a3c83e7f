//! `pool` IPAM arithmetic: one flat IPv4 subnet shared by every node of the cluster, handed out to
//! nodes in blocks of `blockPrefix` bits on demand.
//!
//! The grant protocol (the controller is the only writer of grants, a node the only writer of its
//! requests) lives in `NicNodeBlocks <network>.<node>`:
//!
//! * `spec.grantedBlocks` (the controller): the blocks of the subnet this node may allocate from.
//!   A block is in at most one node's grants, and never in a grant while any node still lists it
//!   in `status.releasedBlocks`.
//! * `status.wantBlocks` (the node, its own object's status subresource): how many blocks it wants
//!   to hold, one more than it keeps when its free addresses fall below the low watermark
//!   ([`PoolLayout::low_watermark`]), so it asks ahead of need.
//! * `status.releasedBlocks` (the node): granted blocks it gives back. A node offers a block only
//!   when no plan holds an address in it, decides that under its lease lock, and from that moment
//!   never allocates from it again: in memory until the status write lands, then from the status
//!   itself (which survives a restart of the plugin). The controller removes a released block from
//!   the grants, and only then may grant it again (to anyone); the node then drops it from
//!   `releasedBlocks`.
//!
//! Excluded addresses are skipped by the allocator ([`PoolLayout::addresses`], the one rule, also
//! used by the controller to grant only blocks with at least one usable address).

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net};

use crate::rails::usable_in;

/// Block prefix length of a `pool` network that does not name one: 16 addresses per block.
pub const DEFAULT_BLOCK_PREFIX: u8 = 28;
/// Most blocks a pool network's subnet may be split into (2^16): the controller walks them.
pub const MAX_BLOCK_BITS: u8 = 16;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error(
        "ipam.blockPrefix {block_prefix} must be within /{}..=/32 for subnet {subnet}; use a longer block prefix or a larger subnet",
        subnet.prefix_len()
    )]
    BlockPrefix { subnet: Ipv4Net, block_prefix: u8 },
    #[error(
        "ipam.blockPrefix {block_prefix} splits subnet {subnet} into more than 2^{MAX_BLOCK_BITS} blocks; use a block prefix of at most /{}",
        u16::from(subnet.prefix_len()) + u16::from(MAX_BLOCK_BITS)
    )]
    TooManyBlocks { subnet: Ipv4Net, block_prefix: u8 },
}

/// The blocks of a `pool` network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolLayout {
    pub subnet: Ipv4Net,
    pub block_prefix: u8,
}

impl PoolLayout {
    /// The layout of `subnet` in blocks of `/block_prefix`; by default [`DEFAULT_BLOCK_PREFIX`],
    /// but never longer than [`MAX_BLOCK_BITS`] past the subnet's nor shorter than the subnet's.
    pub fn new(subnet: Ipv4Net, block_prefix: Option<u8>) -> Result<Self, PoolError> {
        let subnet = subnet.trunc();
        let p = subnet.prefix_len();
        let block_prefix = block_prefix.unwrap_or(DEFAULT_BLOCK_PREFIX.max(p).min(p + MAX_BLOCK_BITS));
        if block_prefix < subnet.prefix_len() || block_prefix > 32 {
            return Err(PoolError::BlockPrefix { subnet, block_prefix });
        }
        if block_prefix - subnet.prefix_len() > MAX_BLOCK_BITS {
            return Err(PoolError::TooManyBlocks { subnet, block_prefix });
        }
        Ok(Self { subnet, block_prefix })
    }

    /// Every block of the subnet, in address order.
    pub fn blocks(&self) -> impl Iterator<Item = Ipv4Net> {
        // `new` checked the prefix, so the split cannot fail.
        self.subnet.subnets(self.block_prefix).into_iter().flatten()
    }

    /// Whether `block` is one of [`blocks`](Self::blocks).
    pub fn holds(&self, block: &IpNet) -> bool {
        matches!(block, IpNet::V4(b) if self.subnet.contains(b) && b.prefix_len() == self.block_prefix)
    }

    /// The addresses of `block` a pod may get: the subnet's usable addresses inside the block
    /// (not the subnet's network or broadcast address), none inside `exclude`.
    pub fn addresses<'a>(&self, block: IpNet, exclude: &'a [IpNet]) -> impl Iterator<Item = IpAddr> + 'a {
        usable_in(IpNet::V4(self.subnet), block, exclude)
    }

    /// A pod's address: `ip` with the subnet's prefix (the pool is one flat subnet).
    pub fn address(&self, ip: IpAddr) -> IpNet {
        IpNet::new(ip, self.subnet.prefix_len()).unwrap_or(IpNet::V4(self.subnet))
    }

    /// Addresses per block.
    pub fn block_size(&self) -> u64 {
        1u64 << (32 - u32::from(self.block_prefix))
    }

    /// A node asks for another block when fewer addresses than this are free in its blocks:
    /// half a block, at least one.
    pub fn low_watermark(&self) -> u64 {
        (self.block_size() / 2).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn blocks_addresses_and_excludes() {
        let l = PoolLayout::new("10.99.0.0/26".parse().unwrap(), Some(29)).unwrap();
        assert_eq!(l.blocks().count(), 8);
        assert_eq!(l.blocks().nth(4).unwrap().to_string(), "10.99.0.32/29");
        assert!(l.holds(&net("10.99.0.32/29")));
        assert!(!l.holds(&net("10.99.0.32/28")) && !l.holds(&net("10.98.0.0/29")) && !l.holds(&net("fd00::/125")));
        // The subnet's network and broadcast addresses are no pod's; a block's own are.
        let first: Vec<String> = l.addresses(net("10.99.0.0/29"), &[]).map(|a| a.to_string()).collect();
        assert_eq!(first.first().unwrap(), "10.99.0.1");
        assert_eq!(first.len(), 7);
        let second: Vec<IpAddr> = l.addresses(net("10.99.0.8/29"), &[]).collect();
        assert_eq!(second.len(), 8);
        assert_eq!(second[0].to_string(), "10.99.0.8");
        assert_eq!(l.addresses(net("10.99.0.56/29"), &[]).count(), 7);
        // Excludes are skipped; a block wholly excluded has none.
        let exclude = [net("10.99.0.0/27"), net("10.99.0.33/32")];
        assert_eq!(l.addresses(net("10.99.0.8/29"), &exclude).count(), 0);
        let got: Vec<String> = l
            .addresses(net("10.99.0.32/29"), &exclude)
            .map(|a| a.to_string())
            .collect();
        assert_eq!(
            got,
            [
                "10.99.0.32",
                "10.99.0.34",
                "10.99.0.35",
                "10.99.0.36",
                "10.99.0.37",
                "10.99.0.38",
                "10.99.0.39"
            ]
        );
        // A block outside the subnet has none.
        assert_eq!(l.addresses(net("10.98.0.0/29"), &[]).count(), 0);
        assert_eq!(l.address("10.99.0.34".parse().unwrap()).to_string(), "10.99.0.34/26");
        assert_eq!((l.block_size(), l.low_watermark()), (8, 4));
    }

    #[test]
    fn block_prefixes_are_checked() {
        let s: Ipv4Net = "10.0.0.0/24".parse().unwrap();
        assert_eq!(PoolLayout::new(s, None).unwrap().block_prefix, 28);
        assert_eq!(
            PoolLayout::new("10.0.0.0/30".parse().unwrap(), None)
                .unwrap()
                .block_prefix,
            30
        );
        let err = PoolLayout::new(s, Some(23)).unwrap_err();
        assert!(err.to_string().contains("/24..=/32"), "{err}");
        assert!(PoolLayout::new(s, Some(33)).is_err());
        assert_eq!(
            PoolLayout::new("10.0.0.0/8".parse().unwrap(), None)
                .unwrap()
                .block_prefix,
            24
        );
        let err = PoolLayout::new("10.0.0.0/8".parse().unwrap(), Some(28)).unwrap_err();
        assert!(err.to_string().contains("at most /24"), "{err}");
        assert_eq!(PoolLayout::new(s, Some(32)).unwrap().low_watermark(), 1);
    }
}
