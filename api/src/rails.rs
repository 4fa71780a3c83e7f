//! `rails` IPAM arithmetic (design.md §5): the subnet is split into host blocks of `hostBlock` bits,
//! each host block into interface blocks of `interfaceBlock` bits; node *h*, rail *k* owns block (h, k).

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RailsError {
    #[error(
        "subnet {subnet} with hostBlock {host_bits} and interfaceBlock {iface_bits} needs a /{needed} per interface block; the most is /30 — use a larger subnet or fewer block bits"
    )]
    TooSmall {
        subnet: Ipv4Net,
        host_bits: u8,
        iface_bits: u8,
        needed: u32,
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
    Outside { host: u32, rail: u32, subnet: Ipv4Net },
    #[error("{ip}/{prefix} is not an IPv4 network; the block's prefix length is corrupt — re-create the network")]
    Prefix { ip: Ipv4Addr, prefix: u8 },
}

/// The block layout of a `rails` network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RailsLayout {
    pub subnet: Ipv4Net,
    pub host_bits: u8,
    pub iface_bits: u8,
}

impl RailsLayout {
    pub fn new(subnet: Ipv4Net, host_bits: u8, iface_bits: u8) -> Result<Self, RailsError> {
        let needed = u32::from(subnet.prefix_len()) + u32::from(host_bits) + u32::from(iface_bits);
        if needed > 30 {
            return Err(RailsError::TooSmall {
                subnet,
                host_bits,
                iface_bits,
                needed,
            });
        }
        Ok(Self {
            subnet: subnet.trunc(),
            host_bits,
            iface_bits,
        })
    }

    /// Number of host indexes.
    pub fn hosts(&self) -> u64 {
        1u64 << self.host_bits
    }

    /// Number of rails per host.
    pub fn rails(&self) -> u64 {
        1u64 << self.iface_bits
    }

    /// Prefix length of an interface block.
    pub fn block_prefix(&self) -> u8 {
        self.subnet.prefix_len() + self.host_bits + self.iface_bits
    }

    /// Block (host, rail).
    pub fn block(&self, host: u32, rail: u32) -> Result<Ipv4Net, RailsError> {
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
        let shift = 32 - u32::from(self.block_prefix());
        let offset = ((u64::from(host) << self.iface_bits) | u64::from(rail)) << shift;
        let base = u64::from(u32::from(self.subnet.network())) + offset;
        let addr = u32::try_from(base).map_err(|_| RailsError::Outside {
            host,
            rail,
            subnet: self.subnet,
        })?;
        network(Ipv4Addr::from(addr), self.block_prefix())
    }
}

fn network(ip: Ipv4Addr, prefix: u8) -> Result<Ipv4Net, RailsError> {
    Ipv4Net::new(ip, prefix).map_err(|_| RailsError::Prefix { ip, prefix })
}

/// The address a pod gets from `block`: `ip` with the block's prefix length.
pub fn address_in(block: Ipv4Net, ip: Ipv4Addr) -> Result<Ipv4Net, RailsError> {
    network(ip, block.prefix_len())
}

/// Usable host addresses of a block for pods: all but the network and broadcast addresses, and
/// none inside `exclude`.
///
/// An excluded range is skipped in one step, so a large exclude costs one comparison, not one per
/// address (prepare runs this under the node's lease lock).
pub fn usable(block: Ipv4Net, exclude: &[Ipv4Net]) -> impl Iterator<Item = Ipv4Addr> + '_ {
    let (network, broadcast) = (u32::from(block.network()), u32::from(block.broadcast()));
    // A /31 or /32 has no network and broadcast address to leave out; a wider block has both.
    let (first, last) = match block.prefix_len() {
        31 | 32 => (network, broadcast),
        _ => (network + 1, broadcast - 1),
    };
    // `None` once past the last address (also past 255.255.255.255).
    let mut next = Some(first);
    std::iter::from_fn(move || {
        while let Some(n) = next.filter(|n| *n <= last) {
            let ip = Ipv4Addr::from(n);
            match exclude.iter().filter(|x| x.contains(&ip)).map(Ipv4Net::broadcast).max() {
                Some(end) => next = u32::from(end).checked_add(1),
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
    fn huge_excludes_are_skipped_in_one_step() {
        let block: Ipv4Net = "10.0.0.0/8".parse().unwrap();
        let exclude: Vec<Ipv4Net> = vec!["10.0.0.0/9".parse().unwrap(), "10.128.0.0/10".parse().unwrap()];
        let first: Vec<String> = usable(block, &exclude).take(2).map(|i| i.to_string()).collect();
        assert_eq!(first, ["10.192.0.0", "10.192.0.1"]);
        let all: Vec<Ipv4Net> = vec!["10.0.0.0/8".parse().unwrap()];
        assert_eq!(usable(block, &all).next(), None);
        let top: Vec<Ipv4Addr> = usable("255.255.255.254/31".parse().unwrap(), &[]).collect();
        assert_eq!(top.len(), 2, "the walk ends at the last address");
        let last = usable("10.0.0.0/30".parse().unwrap(), &[]).collect::<Vec<_>>();
        assert_eq!(last.len(), 2, "network and broadcast are not usable");
    }

    #[test]
    fn usable_skips_network_broadcast_and_excludes() {
        let block: Ipv4Net = "10.0.0.0/29".parse().unwrap();
        let ips: Vec<String> = usable(block, &["10.0.0.1/32".parse().unwrap()])
            .map(|i| i.to_string())
            .collect();
        assert_eq!(ips, ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]);
    }
}
