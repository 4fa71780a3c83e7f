//! `rails` IPAM arithmetic (design.md §5): the subnet is split into host blocks of `hostBlock` bits,
//! each host block into interface blocks of `interfaceBlock` bits; node *h*, rail *k* owns block (h, k).
//!
//! The same arithmetic serves both address families ([`Family`]): a dual-stack network has one
//! IPv4 and one IPv6 subnet with the same `hostBlock` and `interfaceBlock`, so node *h*, rail *k*
//! owns block (h, k) of each ([`RailsLayouts`]).

use std::fmt::{Debug, Display};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// Bits an interface block keeps at least for pod addresses, in either family: with fewer, an
/// IPv4 block would hold no address once its network and broadcast addresses are left out.
pub const MIN_ADDRESS_BITS: u8 = 2;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RailsError {
    #[error(
        "subnet {subnet} with hostBlock {host_bits} and interfaceBlock {iface_bits} needs a /{needed} per interface block; the most is /{most} — use a larger subnet or fewer block bits"
    )]
    TooSmall {
        subnet: IpNet,
        host_bits: u8,
        iface_bits: u8,
        needed: u32,
        most: u8,
    },
    #[error(
        "host index {index} is outside 0..{max} (hostBlock {bits} bits); the network is exhausted — grow hostBlock or the subnet"
    )]
    HostIndex { index: u32, max: u64, bits: u8 },
    #[error(
        "rail index {index} is outside 0..{max} (interfaceBlock {bits} bits); this node has more rails than the network allows — grow interfaceBlock"
    )]
    RailIndex { index: u32, max: u64, bits: u8 },
    #[error(
        "block (host {host}, rail {rail}) does not fit in subnet {subnet}; the network's layout is corrupt — re-create the network"
    )]
    Outside { host: u32, rail: u32, subnet: IpNet },
    #[error("{ip}/{prefix} is not a network; the block's prefix length is corrupt — re-create the network")]
    Prefix { ip: IpAddr, prefix: u8 },
}

/// An address family's network type, seen as a `BITS`-bit number and a prefix length: what the
/// block arithmetic needs, so it is written once for both families.
pub trait Family: Copy + Eq + Debug + Display + Into<IpNet> {
    /// Address width: 32 or 128.
    const BITS: u8;
    fn prefix_len(&self) -> u8;
    fn trunc(&self) -> Self;
    /// The network address as a number.
    fn network_bits(&self) -> u128;
    /// The network `bits`/`prefix`, `None` when the prefix is too long for the family.
    fn from_bits(bits: u128, prefix: u8) -> Option<Self>;
}

impl Family for Ipv4Net {
    const BITS: u8 = 32;
    fn prefix_len(&self) -> u8 {
        Ipv4Net::prefix_len(self)
    }
    fn trunc(&self) -> Self {
        Ipv4Net::trunc(self)
    }
    fn network_bits(&self) -> u128 {
        u128::from(u32::from(self.network()))
    }
    fn from_bits(bits: u128, prefix: u8) -> Option<Self> {
        Ipv4Net::new(Ipv4Addr::from(u32::try_from(bits).ok()?), prefix).ok()
    }
}

impl Family for Ipv6Net {
    const BITS: u8 = 128;
    fn prefix_len(&self) -> u8 {
        Ipv6Net::prefix_len(self)
    }
    fn trunc(&self) -> Self {
        Ipv6Net::trunc(self)
    }
    fn network_bits(&self) -> u128 {
        u128::from(self.network())
    }
    fn from_bits(bits: u128, prefix: u8) -> Option<Self> {
        Ipv6Net::new(Ipv6Addr::from(bits), prefix).ok()
    }
}

/// `2^bits`, saturated at `u64::MAX` (a count of host or rail indexes; the indexes are `u32`).
fn count(bits: u8) -> u64 {
    1u64.checked_shl(u32::from(bits)).unwrap_or(u64::MAX)
}

/// The block layout of a `rails` network over one subnet (IPv4 unless named otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RailsLayout<N = Ipv4Net> {
    pub subnet: N,
    pub host_bits: u8,
    pub iface_bits: u8,
}

impl RailsLayout<Ipv4Net> {
    /// The layout over an IPv4 subnet.
    pub fn new(subnet: Ipv4Net, host_bits: u8, iface_bits: u8) -> Result<Self, RailsError> {
        Self::over(subnet, host_bits, iface_bits)
    }
}

impl RailsLayout<Ipv6Net> {
    /// The layout over an IPv6 subnet.
    pub fn new6(subnet: Ipv6Net, host_bits: u8, iface_bits: u8) -> Result<Self, RailsError> {
        Self::over(subnet, host_bits, iface_bits)
    }
}

impl<N: Family> RailsLayout<N> {
    /// The one prefix rule of both families: subnet prefix + hostBlock + interfaceBlock leaves at
    /// least [`MIN_ADDRESS_BITS`] (the most is /30 for IPv4, /126 for IPv6). The sum is taken in
    /// `u32`, so no bit count overflows it.
    fn over(subnet: N, host_bits: u8, iface_bits: u8) -> Result<Self, RailsError> {
        let needed = u32::from(subnet.prefix_len()) + u32::from(host_bits) + u32::from(iface_bits);
        let most = N::BITS - MIN_ADDRESS_BITS;
        if needed > u32::from(most) {
            return Err(RailsError::TooSmall {
                subnet: subnet.into(),
                host_bits,
                iface_bits,
                needed,
                most,
            });
        }
        Ok(Self {
            subnet: subnet.trunc(),
            host_bits,
            iface_bits,
        })
    }

    /// Number of host indexes (saturated at `u64::MAX`).
    pub fn hosts(&self) -> u64 {
        count(self.host_bits)
    }

    /// Number of rails per host (saturated at `u64::MAX`).
    pub fn rails(&self) -> u64 {
        count(self.iface_bits)
    }

    /// Prefix length of an interface block.
    pub fn block_prefix(&self) -> u8 {
        self.subnet
            .prefix_len()
            .saturating_add(self.host_bits)
            .saturating_add(self.iface_bits)
    }

    /// Block (host, rail).
    pub fn block(&self, host: u32, rail: u32) -> Result<N, RailsError> {
        if u64::from(host) >= self.hosts() {
            return Err(RailsError::HostIndex {
                index: host,
                max: self.hosts(),
                bits: self.host_bits,
            });
        }
        if u64::from(rail) >= self.rails() {
            return Err(RailsError::RailIndex {
                index: rail,
                max: self.rails(),
                bits: self.iface_bits,
            });
        }
        let outside = || RailsError::Outside {
            host,
            rail,
            subnet: self.subnet.into(),
        };
        // `new` keeps block_prefix <= BITS - 2, and host < 2^host_bits, rail < 2^iface_bits.
        // Checked anyway: a layout built by hand must not wrap around.
        let corrupt = RailsError::Prefix {
            ip: self.subnet.into().addr(),
            prefix: self.block_prefix(),
        };
        let shift = u32::from(N::BITS.checked_sub(self.block_prefix()).ok_or(corrupt.clone())?);
        let index = u128::from(host)
            .checked_shl(u32::from(self.iface_bits))
            .ok_or_else(outside)?
            | u128::from(rail);
        // A /0 block of a /0 subnet shifts by the full width: its only index is 0.
        let offset = match index {
            0 => 0,
            _ => index
                .checked_shl(shift)
                .filter(|o| o >> shift == index)
                .ok_or_else(outside)?,
        };
        let base = self.subnet.network_bits().checked_add(offset).ok_or_else(outside)?;
        N::from_bits(base, self.block_prefix()).ok_or(corrupt)
    }
}

/// The layouts of a `rails` network: over its IPv4 subnet, its IPv6 subnet, or both (dual
/// stack), with the same block bits, so a node's host index and a NIC's rail index name a block
/// in each family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RailsLayouts {
    pub v4: Option<RailsLayout<Ipv4Net>>,
    pub v6: Option<RailsLayout<Ipv6Net>>,
}

impl From<RailsLayout<Ipv4Net>> for RailsLayouts {
    fn from(v4: RailsLayout<Ipv4Net>) -> Self {
        Self { v4: Some(v4), v6: None }
    }
}

impl From<RailsLayout<Ipv6Net>> for RailsLayouts {
    fn from(v6: RailsLayout<Ipv6Net>) -> Self {
        Self { v4: None, v6: Some(v6) }
    }
}

impl RailsLayouts {
    /// Host indexes every family has room for.
    pub fn hosts(&self) -> u64 {
        self.v4
            .map_or(u64::MAX, |l| l.hosts())
            .min(self.v6.map_or(u64::MAX, |l| l.hosts()))
    }

    /// Rails per host every family has room for.
    pub fn rails(&self) -> u64 {
        self.v4
            .map_or(u64::MAX, |l| l.rails())
            .min(self.v6.map_or(u64::MAX, |l| l.rails()))
    }

    /// The subnets, IPv4 first.
    pub fn subnets(&self) -> Vec<IpNet> {
        let v4 = self.v4.map(|l| IpNet::V4(l.subnet));
        let v6 = self.v6.map(|l| IpNet::V6(l.subnet));
        v4.into_iter().chain(v6).collect()
    }

    /// Block (host, rail) of each family, IPv4 first.
    pub fn blocks(&self, host: u32, rail: u32) -> Result<Vec<IpNet>, RailsError> {
        let v4 = self.v4.map(|l| l.block(host, rail).map(IpNet::V4));
        let v6 = self.v6.map(|l| l.block(host, rail).map(IpNet::V6));
        v4.into_iter().chain(v6).collect()
    }

    /// Whether `block` is a block of this layout: inside the subnet of its family, with the
    /// block prefix length.
    pub fn holds(&self, block: &IpNet) -> bool {
        match block {
            IpNet::V4(b) => self
                .v4
                .is_some_and(|l| l.subnet.contains(b) && b.prefix_len() == l.block_prefix()),
            IpNet::V6(b) => self
                .v6
                .is_some_and(|l| l.subnet.contains(b) && b.prefix_len() == l.block_prefix()),
        }
    }
}

/// The address a pod gets from `block`: `ip` with the block's prefix length.
pub fn address_in(block: IpNet, ip: IpAddr) -> Result<IpNet, RailsError> {
    IpNet::new(ip, block.prefix_len()).map_err(|_| RailsError::Prefix {
        ip,
        prefix: block.prefix_len(),
    })
}

/// The first and last address of `block` a pod may get, as numbers. IPv4 leaves out the network
/// and broadcast addresses (a /31 or /32 has neither, RFC 3021); IPv6 leaves out the
/// Subnet-Router anycast address, the block's first (RFC 4291 §2.6.1; a /127 or /128 has none
/// to spare, RFC 6164).
fn usable_range(block: &IpNet) -> (u128, u128) {
    let (first, last, wide) = match block {
        IpNet::V4(b) => (
            u128::from(u32::from(b.network())),
            u128::from(u32::from(b.broadcast())),
            b.prefix_len() < 31,
        ),
        IpNet::V6(b) => (u128::from(b.network()), u128::from(b.broadcast()), b.prefix_len() < 127),
    };
    match (block, wide) {
        (IpNet::V4(_), true) => (first + 1, last - 1),
        (IpNet::V6(_), true) => (first + 1, last),
        _ => (first, last),
    }
}

fn to_ip(block: &IpNet, n: u128) -> IpAddr {
    match block {
        // `n` is inside a v4 block, so it fits 32 bits.
        IpNet::V4(_) => IpAddr::V4(Ipv4Addr::from(u32::try_from(n).unwrap_or(u32::MAX))),
        IpNet::V6(_) => IpAddr::V6(Ipv6Addr::from(n)),
    }
}

fn to_bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// How many addresses of `block` a pod may get ([`usable`] without excludes), saturated at
/// `u64::MAX` (an IPv6 /64 holds 2^64 - 1).
pub fn usable_count(block: &IpNet) -> u64 {
    let (first, last) = usable_range(block);
    u64::try_from(last - first).map_or(u64::MAX, |n| n.saturating_add(1))
}

/// The gateway of `block` for `ipam.gatewayIndex` `index`: the block's network address plus
/// `index`, when that is a usable address of the block ([`usable_range`]: not the IPv4 network
/// or broadcast address, not the IPv6 Subnet-Router anycast address). Pods never get it (the plan
/// builder skips it).
pub fn gateway_in(block: IpNet, index: u32) -> Option<IpAddr> {
    let (first, last) = usable_range(&block);
    let n = to_bits(block.network()).checked_add(u128::from(index))?;
    (first..=last).contains(&n).then(|| to_ip(&block, n))
}

/// Usable host addresses of a block for pods ([`usable_range`]), none inside `exclude` (entries
/// of the other family are ignored).
///
/// An excluded range is skipped in one step, so a large exclude costs one comparison, not one per
/// address (prepare runs this under the node's lease lock).
pub fn usable<'a>(block: IpNet, exclude: &'a [IpNet]) -> impl Iterator<Item = IpAddr> + 'a {
    let (first, last) = usable_range(&block);
    walk(block, first, last, exclude)
}

/// The addresses of `block`, a part of `subnet`, that a pod may get as an address of `subnet`
/// (a `pool` network: one flat subnet handed out in blocks): [`usable_range`] of the subnet
/// within the block, none inside `exclude`. A block of another family than the subnet, or outside
/// it, has none.
pub fn usable_in<'a>(subnet: IpNet, block: IpNet, exclude: &'a [IpNet]) -> impl Iterator<Item = IpAddr> + 'a {
    let (first, last) = usable_range(&subnet);
    let inside = subnet.contains(&block);
    let (first, last) = (
        first.max(to_bits(block.network())),
        last.min(to_bits(block.broadcast())),
    );
    // An empty range when the block is not inside the subnet.
    let (first, last) = if inside { (first, last) } else { (1, 0) };
    walk(block, first, last, exclude)
}

/// The addresses `first..=last` (numbers of `block`'s family), none inside `exclude`.
fn walk(block: IpNet, first: u128, last: u128, exclude: &[IpNet]) -> impl Iterator<Item = IpAddr> + '_ {
    // `None` once past the last address (also past the family's last address).
    let mut next = Some(first);
    std::iter::from_fn(move || {
        while let Some(n) = next.filter(|n| *n <= last) {
            let ip = to_ip(&block, n);
            match exclude
                .iter()
                .filter(|x| x.contains(&ip))
                .map(|x| to_bits(x.broadcast()))
                .max()
            {
                Some(end) => next = end.checked_add(1),
                None => {
                    next = n.checked_add(1);
                    return Some(ip);
                }
            }
        }
        None
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn gateway_index_counts_from_the_network_address_within_the_usable_range() {
        for (block, index, want) in [
            ("10.10.0.64/26", 1, Some("10.10.0.65")),
            ("10.10.0.64/26", 62, Some("10.10.0.126")),
            // The broadcast and network addresses are never a gateway.
            ("10.10.0.64/26", 63, None),
            ("10.10.0.64/26", 0, None),
            ("10.10.0.64/26", u32::MAX, None),
            // /31 (RFC 3021): both addresses are usable.
            ("10.10.0.6/31", 0, Some("10.10.0.6")),
            ("10.10.0.6/31", 1, Some("10.10.0.7")),
            ("10.10.0.6/31", 2, None),
            // IPv6: the Subnet-Router anycast address (index 0) is not; the last address is.
            ("fd00:10::/120", 0, None),
            ("fd00:10::/120", 1, Some("fd00:10::1")),
            ("fd00:10::/120", 255, Some("fd00:10::ff")),
            ("fd00:10::/120", 256, None),
        ] {
            let got = gateway_in(net(block), index).map(|ip| ip.to_string());
            assert_eq!(got.as_deref(), want, "{block} index {index}");
        }
    }

    #[test]
    fn blocks_of_the_reference_layout() {
        let l = RailsLayout::new("10.10.0.0/16".parse().unwrap(), 8, 2).unwrap();
        assert_eq!(l.block_prefix(), 26);
        assert_eq!(l.block(0, 0).unwrap().to_string(), "10.10.0.0/26");
        assert_eq!(l.block(0, 3).unwrap().to_string(), "10.10.0.192/26");
        assert_eq!(l.block(5, 1).unwrap().to_string(), "10.10.5.64/26");
        assert_eq!(l.block(255, 3).unwrap().to_string(), "10.10.255.192/26");
        assert!(matches!(l.block(256, 0), Err(RailsError::HostIndex { .. })));
        assert!(matches!(l.block(0, 4), Err(RailsError::RailIndex { .. })));
    }

    #[test]
    fn impossible_layouts_are_rejected() {
        assert!(RailsLayout::new("10.0.0.0/30".parse().unwrap(), 8, 0).is_err());
        assert!(RailsLayout::new("10.0.0.0/24".parse().unwrap(), 4, 3).is_err());
        assert!(RailsLayout::new("10.0.0.0/24".parse().unwrap(), 4, 2).is_ok());
    }

    #[test]
    fn ipv6_blocks_of_a_64() {
        let l = RailsLayout::new6("fd00:10::/64".parse().unwrap(), 8, 2).unwrap();
        assert_eq!(l.block_prefix(), 74);
        assert_eq!(l.block(0, 0).unwrap().to_string(), "fd00:10::/74");
        assert_eq!(l.block(0, 1).unwrap().to_string(), "fd00:10:0:0:40::/74");
        assert_eq!(l.block(1, 0).unwrap().to_string(), "fd00:10:0:0:100::/74");
        assert_eq!(l.block(255, 3).unwrap().to_string(), "fd00:10:0:0:ffc0::/74");
        assert!(matches!(l.block(256, 0), Err(RailsError::HostIndex { .. })));
        assert!(matches!(l.block(0, 4), Err(RailsError::RailIndex { .. })));
        // Not truncated by the caller: the layout truncates.
        let l = RailsLayout::new6("fd00:10::1/64".parse().unwrap(), 8, 2).unwrap();
        assert_eq!(l.subnet.to_string(), "fd00:10::/64");
    }

    #[test]
    fn ipv6_big_host_counts_and_the_126_rule() {
        // 32 host bits: every u32 host index has a block, the last one at the end of the subnet.
        let l = RailsLayout::new6("fd00::/64".parse().unwrap(), 32, 30).unwrap();
        assert_eq!(l.block_prefix(), 126);
        assert_eq!(l.hosts(), 1 << 32);
        let last = l.block(u32::MAX, (1 << 30) - 1).unwrap();
        assert_eq!(last.to_string(), "fd00::ffff:ffff:ffff:fffc/126");
        // Over 64 host bits: the count saturates, indexes stay u32.
        let l = RailsLayout::new6("fd00::/8".parse().unwrap(), 100, 8).unwrap();
        assert_eq!(l.hosts(), u64::MAX);
        assert_eq!(l.block(u32::MAX, 255).unwrap().prefix_len(), 116);
        // /127 blocks are refused, like /31 ones; the sum of bits does not wrap.
        let err = RailsLayout::new6("fd00::/64".parse().unwrap(), 32, 31).unwrap_err();
        assert!(err.to_string().contains("the most is /126"), "{err}");
        assert!(RailsLayout::new6("fd00::/64".parse().unwrap(), 255, 255).is_err());
        assert!(RailsLayout::new("10.0.0.0/8".parse().unwrap(), 255, 255).is_err());
        // A /0 subnet with no block bits is one block.
        let l = RailsLayout::new6("::/0".parse().unwrap(), 0, 0).unwrap();
        assert_eq!(l.block(0, 0).unwrap().to_string(), "::/0");
    }

    #[test]
    fn a_layout_built_by_hand_never_wraps() {
        let l = RailsLayout {
            subnet: "fd00::/64".parse::<Ipv6Net>().unwrap(),
            host_bits: 70,
            iface_bits: 0,
        };
        assert!(matches!(
            l.block(u32::MAX, 0),
            Err(RailsError::Outside { .. }) | Err(RailsError::Prefix { .. })
        ));
    }

    #[test]
    fn dual_stack_layouts_share_indexes() {
        let ls = RailsLayouts {
            v4: Some(RailsLayout::new("10.10.0.0/16".parse().unwrap(), 8, 2).unwrap()),
            v6: Some(RailsLayout::new6("fd00:10::/64".parse().unwrap(), 8, 2).unwrap()),
        };
        assert_eq!((ls.hosts(), ls.rails()), (256, 4));
        assert_eq!(
            ls.blocks(5, 1).unwrap(),
            [net("10.10.5.64/26"), net("fd00:10:0:0:540::/74")]
        );
        assert!(ls.holds(&net("fd00:10:0:0:540::/74")));
        assert!(!ls.holds(&net("fd00:10:0:0:540::/80")), "wrong prefix");
        assert!(!ls.holds(&net("fd00:11::/74")), "outside");
        assert_eq!(ls.subnets(), [net("10.10.0.0/16"), net("fd00:10::/64")]);
        let v6 = RailsLayouts { v4: None, ..ls };
        assert_eq!(v6.blocks(0, 0).unwrap(), [net("fd00:10::/74")]);
        assert!(!v6.holds(&net("10.10.0.0/26")), "no IPv4 subnet");
    }

    #[test]
    fn huge_excludes_are_skipped_in_one_step() {
        let block = net("10.0.0.0/8");
        let exclude = vec![net("10.0.0.0/9"), net("10.128.0.0/10")];
        let first: Vec<String> = usable(block, &exclude).take(2).map(|i| i.to_string()).collect();
        assert_eq!(first, ["10.192.0.0", "10.192.0.1"]);
        let all = vec![net("10.0.0.0/8")];
        assert_eq!(usable(block, &all).next(), None);
        let top: Vec<IpAddr> = usable(net("255.255.255.254/31"), &[]).collect();
        assert_eq!(top.len(), 2, "the walk ends at the last address");
        let last = usable(net("10.0.0.0/30"), &[]).collect::<Vec<_>>();
        assert_eq!(last.len(), 2, "network and broadcast are not usable");
    }

    #[test]
    fn usable_skips_network_broadcast_and_excludes() {
        let ips: Vec<String> = usable(net("10.0.0.0/29"), &[net("10.0.0.1/32")])
            .map(|i| i.to_string())
            .collect();
        assert_eq!(ips, ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]);
        assert_eq!(usable_count(&net("10.0.0.0/29")), 6);
        assert_eq!(usable_count(&net("10.0.0.0/31")), 2);
    }

    #[test]
    fn ipv6_usable_addresses() {
        // The Subnet-Router anycast address is left out; the last address is a pod's.
        let ips: Vec<String> = usable(net("fd00::/126"), &[]).map(|i| i.to_string()).collect();
        assert_eq!(ips, ["fd00::1", "fd00::2", "fd00::3"]);
        assert_eq!(usable_count(&net("fd00::/126")), 3);
        assert_eq!(usable_count(&net("fd00::/64")), u64::MAX);
        assert_eq!(usable_count(&net("fd00::/74")), (1 << 54) - 1);
        // A v6 exclude skips a huge range in one step; v4 excludes do not apply.
        let exclude = vec![net("fd00::/65"), net("10.0.0.0/8")];
        assert_eq!(
            usable(net("fd00::/64"), &exclude).next().unwrap().to_string(),
            "fd00::8000:0:0:0"
        );
        // The walk ends at the family's last address.
        let top: Vec<IpAddr> = usable(net("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffc/126"), &[]).collect();
        assert_eq!(top.len(), 3);
        assert_eq!(usable(net("fd00::/64"), &[net("fd00::/64")]).next(), None);
    }

    #[test]
    fn addresses_keep_the_block_prefix() {
        let ip = address_in(net("fd00::/74"), "fd00::5".parse().unwrap()).unwrap();
        assert_eq!(ip.to_string(), "fd00::5/74");
        let ip = address_in(net("10.0.0.0/26"), "10.0.0.5".parse().unwrap()).unwrap();
        assert_eq!(ip.to_string(), "10.0.0.5/26");
    }
}
