//! The node's side of `pool` IPAM (the protocol is in [`multinic_api::pool`]): which granted
//! blocks prepare may allocate from, the pure "do I need more / which can I return" decision, and
//! the loop that writes it to the status of the node's own NicNodeBlocks.
//!
//! Prepare never calls the API server for a pool address while the node's blocks have one free:
//! it allocates inside [`usable_blocks`] under the lease lock. The loop ([`run`]) decides under the
//! same lock ([`crate::leases::Leases::with_used`]), so a block it offers back cannot receive an
//! address between the decision and the offer; from the decision on the block is *retired* in
//! memory ([`PoolState`]), and once the status write has landed the status itself keeps it out
//! (also after a restart). A block leaves the retired set when the controller has taken it back.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use kube::api::{Api, Patch, PatchParams};
use multinic_api::crd::{MultiNicNetwork, NicNodeBlocks, NicNodeBlocksStatus, node_blocks_name};
use multinic_api::names::{API_VERSION, FIELD_MANAGER};
use multinic_api::pool::PoolLayout;
use multinic_api::retry::RepeatGate;
use multinic_api::{IpamType, NetworkConfig};
use serde_json::json;

use crate::cluster::ClusterStores;
use crate::driver::{ClaimApi, Driver};

/// The granted blocks prepare may allocate from, in address order: blocks of the layout that the
/// node has not released (`released`: the status) nor retired (`retired`: decided, maybe not yet
/// written).
pub fn usable_blocks(
    layout: &PoolLayout,
    granted: &[IpNet],
    released: &[IpNet],
    retired: &BTreeSet<IpNet>,
) -> Vec<IpNet> {
    let mut out: Vec<IpNet> = granted
        .iter()
        .filter(|b| layout.holds(b) && !released.contains(b) && !retired.contains(b))
        .copied()
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The first address of `blocks` (in order) that `is_free` accepts, excludes skipped.
pub fn pick(
    layout: &PoolLayout,
    blocks: &[IpNet],
    exclude: &[IpNet],
    is_free: impl Fn(&IpAddr) -> bool,
) -> Option<IpAddr> {
    blocks
        .iter()
        .find_map(|&b| layout.addresses(b, exclude).find(|ip| is_free(ip)))
}

/// Free addresses of `block`: usable ones no plan holds.
fn free_in(layout: &PoolLayout, block: IpNet, exclude: &[IpNet], used: &BTreeSet<IpAddr>) -> u64 {
    let n = layout.addresses(block, exclude).filter(|ip| !used.contains(ip)).count();
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// What the node writes to its NicNodeBlocks status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolRequest {
    pub want_blocks: u32,
    /// Still granted blocks given back, in address order.
    pub released_blocks: Vec<IpNet>,
    /// Of those, the ones this decision gives back (the caller retires them).
    pub newly_released: Vec<IpNet>,
}

/// The node's decision over its grants and its leased addresses (`used`).
///
/// * A usable block that holds no leased address is given back when the other blocks keep at
///   least the low watermark free ([`PoolLayout::low_watermark`]); the highest first.
/// * A granted block the layout does not hold (the network changed) is given back once empty.
/// * `releasedBlocks` keeps the released blocks that are still granted (the controller has not
///   taken them yet) and adds the new ones.
/// * `wantBlocks` is the usable blocks kept, plus one when fewer than the low watermark are free:
///   the node asks ahead of need, and after a grant it has more than the watermark free, after a
///   return at least the watermark, so it neither asks and returns nor returns and asks in turn.
pub fn decide(
    layout: &PoolLayout,
    exclude: &[IpNet],
    granted: &[IpNet],
    released: &[IpNet],
    retired: &BTreeSet<IpNet>,
    used: &BTreeSet<IpAddr>,
) -> PoolRequest {
    let empty = |b: &IpNet| used.range(b.network()..=b.broadcast()).next().is_none();
    let mut usable = usable_blocks(layout, granted, released, retired);
    let low = layout.low_watermark();
    let mut free: u64 = usable.iter().map(|&b| free_in(layout, b, exclude, used)).sum();
    let mut newly = Vec::new();
    for &b in usable.clone().iter().rev() {
        let f = free_in(layout, b, exclude, used);
        if empty(&b) && free - f >= low {
            free -= f;
            newly.push(b);
            usable.retain(|u| *u != b);
        }
    }
    newly.extend(granted.iter().filter(|b| !layout.holds(b) && empty(b)).copied());
    let mut released_blocks: Vec<IpNet> = granted
        .iter()
        .filter(|b| released.contains(b) || retired.contains(b) || newly.contains(b))
        .copied()
        .collect();
    released_blocks.sort();
    released_blocks.dedup();
    newly.retain(|b| !released.contains(b) && !retired.contains(b));
    let want = usable.len() + usize::from(free < low);
    PoolRequest {
        want_blocks: u32::try_from(want).unwrap_or(u32::MAX),
        released_blocks,
        newly_released: newly,
    }
}

/// The `pool` state of the node that is not in the API: blocks decided to be given back whose
/// removal from the grants the node has not seen yet, per network; and the wake-up of [`run`].
#[derive(Default)]
pub struct PoolState {
    retired: std::sync::Mutex<BTreeSet<(String, IpNet)>>,
    wake: tokio::sync::Notify,
}

impl PoolState {
    /// The retired blocks of `network`.
    pub fn retired(&self, network: &str) -> BTreeSet<IpNet> {
        let retired = self.retired.lock().unwrap_or_else(|p| p.into_inner());
        retired.iter().filter(|(n, _)| n == network).map(|(_, b)| *b).collect()
    }

    fn retire(&self, network: &str, blocks: &[IpNet]) {
        let mut retired = self.retired.lock().unwrap_or_else(|p| p.into_inner());
        retired.extend(blocks.iter().map(|b| (network.to_string(), *b)));
    }

    /// Forgets the retired blocks of `network` that are no longer granted.
    fn taken_back(&self, network: &str, granted: &[IpNet]) {
        let mut retired = self.retired.lock().unwrap_or_else(|p| p.into_inner());
        retired.retain(|(n, b)| n != network || granted.contains(b));
    }

    /// Asks [`run`] to decide again (after a prepare or unprepare, or a prepare that found no
    /// free address).
    pub fn wake(&self) {
        self.wake.notify_one();
    }
}

/// The pool layout and excludes of a network, when it is a valid `pool` network.
pub fn network_pool(net: &MultiNicNetwork) -> Option<(PoolLayout, Vec<IpNet>)> {
    if net.spec.ipam.kind != IpamType::Pool {
        return None;
    }
    let config = NetworkConfig {
        ipam: net.spec.ipam.clone(),
        ..Default::default()
    };
    config.pool_layout().ok().map(|l| (l, net.spec.ipam.exclude.clone()))
}

/// Writes the node's request to the status of its NicNodeBlocks `<network>.<node>` (server-side
/// apply of the status subresource, the plugin's field manager).
pub async fn write_request(
    api: &Api<NicNodeBlocks>,
    network: &str,
    node: &str,
    request: &PoolRequest,
) -> Result<(), kube::Error> {
    let status = NicNodeBlocksStatus {
        want_blocks: Some(request.want_blocks),
        released_blocks: request.released_blocks.clone(),
    };
    let name = node_blocks_name(network, node);
    let body =
        json!({"apiVersion": API_VERSION, "kind": "NicNodeBlocks", "metadata": {"name": name}, "status": status});
    api.patch_status(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(body))
        .await?;
    Ok(())
}

/// Whether the object's status already says `request`.
fn says(nb: &NicNodeBlocks, request: &PoolRequest) -> bool {
    let status = nb.status.clone().unwrap_or_default();
    status.want_blocks == Some(request.want_blocks) && status.released_blocks == request.released_blocks
}

/// Keeps the requests of this node's `pool` networks up to date: after every [`PoolState::wake`]
/// and every `every`, for each pool network with a NicNodeBlocks of this node (from the
/// watch-backed stores; no list), decides under the lease lock and writes the status when it
/// changed. A failed write is retried on the next round (a retired block stays retired meanwhile);
/// repeating failures are logged at a bounded rate.
pub async fn run<A: ClaimApi>(
    driver: Arc<Driver<A>>,
    api: Api<NicNodeBlocks>,
    stores: ClusterStores,
    node: String,
    every: Duration,
) {
    let mut gate = RepeatGate::default();
    let pool = driver.pool();
    loop {
        tokio::select! {
            () = pool.wake.notified() => {}
            () = tokio::time::sleep(every) => {}
        }
        if !stores.is_ready() {
            continue;
        }
        let networks: BTreeMap<String, (PoolLayout, Vec<IpNet>)> = stores
            .networks
            .state()
            .iter()
            .filter_map(|n| Some((n.metadata.name.clone()?, network_pool(n)?)))
            .collect();
        let mut failed = None;
        for nb in stores.blocks.state().iter().filter(|nb| nb.spec.node_name == node) {
            let network = &nb.spec.network;
            let Some((layout, exclude)) = networks.get(network) else {
                continue;
            };
            pool.taken_back(network, &nb.spec.granted_blocks);
            let released = nb.status.clone().unwrap_or_default().released_blocks;
            let request = driver
                .leases()
                .with_used(|used| {
                    let request = decide(
                        layout,
                        exclude,
                        &nb.spec.granted_blocks,
                        &released,
                        &pool.retired(network),
                        used,
                    );
                    pool.retire(network, &request.newly_released);
                    request
                })
                .await;
            if !request.newly_released.is_empty() {
                tracing::info!(%network, blocks = ?request.newly_released, "giving pool blocks back");
            }
            if says(nb, &request) {
                continue;
            }
            match write_request(&api, network, &node, &request).await {
                Ok(()) => tracing::debug!(%network, want = request.want_blocks, "pool request written"),
                Err(error) => failed = Some((network.clone(), error)),
            }
        }
        match failed {
            Some((network, error)) => {
                if let Some(not_logged) = gate.failure(std::time::Instant::now()) {
                    tracing::warn!(%network, %error, not_logged, "writing the pool request failed; retrying");
                }
            }
            None => {
                if let Some(failures) = gate.success() {
                    tracing::info!(failures, "pool requests are written again");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn nets(s: &[&str]) -> Vec<IpNet> {
        s.iter().map(|b| net(b)).collect()
    }

    fn ips(s: &[&str]) -> BTreeSet<IpAddr> {
        s.iter().map(|a| a.parse().unwrap()).collect()
    }

    /// 10.99.0.0/26 in /29 blocks (8 addresses, low watermark 4), the first half excluded.
    fn layout() -> PoolLayout {
        PoolLayout::new("10.99.0.0/26".parse().unwrap(), Some(29)).unwrap()
    }

    #[test]
    fn decide_table() {
        struct Case {
            what: &'static str,
            granted: &'static [&'static str],
            released: &'static [&'static str],
            retired: &'static [&'static str],
            used: &'static [&'static str],
            want: u32,
            released_out: &'static [&'static str],
            newly: &'static [&'static str],
        }
        let cases = [
            Case {
                what: "nothing granted: ask for one block ahead of the first pod",
                granted: &[],
                released: &[],
                retired: &[],
                used: &[],
                want: 1,
                released_out: &[],
                newly: &[],
            },
            Case {
                what: "one empty block, 8 free: keep it (returning it would leave 0 < 4), ask nothing",
                granted: &["10.99.0.32/29"],
                released: &[],
                retired: &[],
                used: &[],
                want: 1,
                released_out: &[],
                newly: &[],
            },
            Case {
                what: "5 of 8 used, 3 free < 4: ask for a second block",
                granted: &["10.99.0.32/29"],
                released: &[],
                retired: &[],
                used: &["10.99.0.32", "10.99.0.33", "10.99.0.34", "10.99.0.35", "10.99.0.36"],
                want: 2,
                released_out: &[],
                newly: &[],
            },
            Case {
                what: "two blocks, the second empty, 3 + 8 free: keep it (3 < 4 without it)",
                granted: &["10.99.0.32/29", "10.99.0.40/29"],
                released: &[],
                retired: &[],
                used: &["10.99.0.32", "10.99.0.33", "10.99.0.34", "10.99.0.35", "10.99.0.36"],
                want: 2,
                released_out: &[],
                newly: &[],
            },
            Case {
                what: "pods gone: two empty blocks, 16 free: give the highest back, keep one",
                granted: &["10.99.0.32/29", "10.99.0.40/29"],
                released: &[],
                retired: &[],
                used: &[],
                want: 1,
                released_out: &["10.99.0.40/29"],
                newly: &["10.99.0.40/29"],
            },
            Case {
                what: "a block with one address leased is never given back; the empty one is",
                granted: &["10.99.0.32/29", "10.99.0.40/29"],
                released: &[],
                retired: &[],
                used: &["10.99.0.41"],
                want: 1,
                released_out: &["10.99.0.32/29"],
                newly: &["10.99.0.32/29"],
            },
            Case {
                what: "released and retired blocks are not counted nor decided again; taken-back ones drop out",
                granted: &["10.99.0.32/29", "10.99.0.40/29", "10.99.0.48/29"],
                released: &["10.99.0.48/29", "10.99.0.56/29"],
                retired: &["10.99.0.40/29"],
                used: &["10.99.0.32"],
                want: 1,
                released_out: &["10.99.0.40/29", "10.99.0.48/29"],
                newly: &[],
            },
            Case {
                what: "a grant the layout no longer holds: never allocated from, given back once empty",
                granted: &["10.99.0.32/29", "10.98.0.0/29"],
                released: &[],
                retired: &[],
                used: &[],
                want: 1,
                released_out: &["10.98.0.0/29"],
                newly: &["10.98.0.0/29"],
            },
        ];
        for c in cases {
            let got = decide(
                &layout(),
                &nets(&["10.99.0.0/27"]),
                &nets(c.granted),
                &nets(c.released),
                &nets(c.retired).into_iter().collect(),
                &ips(c.used),
            );
            assert_eq!(got.want_blocks, c.want, "{}", c.what);
            assert_eq!(got.released_blocks, nets(c.released_out), "{}", c.what);
            assert_eq!(got.newly_released, nets(c.newly), "{}", c.what);
        }
    }

    #[test]
    fn a_returned_block_is_not_asked_for_again_at_once() {
        // After giving a block back the node still has the watermark free: a second decision over
        // the same leases gives nothing more back and asks for nothing.
        let (l, x) = (layout(), nets(&["10.99.0.0/27"]));
        let granted = nets(&["10.99.0.32/29", "10.99.0.40/29"]);
        let first = decide(&l, &x, &granted, &[], &BTreeSet::new(), &BTreeSet::new());
        let retired: BTreeSet<IpNet> = first.newly_released.iter().copied().collect();
        let second = decide(&l, &x, &granted, &[], &retired, &BTreeSet::new());
        assert_eq!((second.want_blocks, second.newly_released.len()), (1, 0));
        assert_eq!(second.released_blocks, first.released_blocks);
    }

    #[test]
    fn usable_blocks_and_pick_skip_released_retired_foreign_and_excluded() {
        let l = layout();
        let granted = nets(&[
            "10.99.0.48/29",
            "10.99.0.0/29",
            "10.99.0.32/29",
            "10.98.0.0/29",
            "10.99.0.40/29",
        ]);
        let retired: BTreeSet<IpNet> = nets(&["10.99.0.40/29"]).into_iter().collect();
        let usable = usable_blocks(&l, &granted, &nets(&["10.99.0.32/29"]), &retired);
        assert_eq!(usable, nets(&["10.99.0.0/29", "10.99.0.48/29"]));
        // 10.99.0.0/29 is wholly excluded: the first address is in the next block.
        let exclude = nets(&["10.99.0.0/27"]);
        let used = ips(&["10.99.0.48"]);
        let got = pick(&l, &usable, &exclude, |ip| !used.contains(ip));
        assert_eq!(got, Some("10.99.0.49".parse().unwrap()));
        assert_eq!(pick(&l, &usable, &exclude, |_| false), None);
    }
}
