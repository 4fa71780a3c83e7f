//! The cluster inputs of the node (design.md §9): MultiNicNetworks and NicNodeBlocks in
//! watch-backed stores, one watch each, never a list per event. Watches retry with kube-runtime's
//! watcher backoff (client-go's reflector delays: 0.8 s doubling to 30 s) and log a repeating
//! failure at a bounded rate ([`multinic_api::retry::RepeatGate`]), so a down API server costs a
//! few requests and a few log lines a minute, and the stores fill again by themselves when it is
//! back.

use std::pin::Pin;

use futures::{Stream, StreamExt};
use kube::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use multinic_api::crd::{MultiNicNetwork, NicNodeBlocks};
use multinic_api::retry::RepeatGate;

/// Read side of the watches.
#[derive(Clone)]
pub struct ClusterStores {
    pub networks: Store<MultiNicNetwork>,
    pub blocks: Store<NicNodeBlocks>,
}

/// Yields `()` after every change seen by either watch. The watches run only while this stream
/// is polled.
pub type Changes = Pin<Box<dyn Stream<Item = ()> + Send>>;

impl ClusterStores {
    /// Whether both watches have completed their first list. Not a wait: the stores fill only
    /// while [`Changes`] is polled, so its consumer checks this after each change instead.
    pub fn is_ready(&self) -> bool {
        use futures::FutureExt;
        matches!(self.networks.wait_until_ready().now_or_never(), Some(Ok(())))
            && matches!(self.blocks.wait_until_ready().now_or_never(), Some(Ok(())))
    }
}

/// Starts (lazily) the two watches.
pub fn watch(client: kube::Client) -> (ClusterStores, Changes) {
    let (networks, net_changes) = reflect(Api::<MultiNicNetwork>::all(client.clone()), "MultiNicNetworks");
    let (blocks, block_changes) = reflect(Api::<NicNodeBlocks>::all(client), "NicNodeBlocks");
    (
        ClusterStores { networks, blocks },
        futures::stream::select(net_changes, block_changes).boxed(),
    )
}

fn reflect<K>(api: Api<K>, what: &'static str) -> (Store<K>, impl Stream<Item = ()> + Send + 'static)
where
    K: kube::Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let mut gate = RepeatGate::default();
    let changes = watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .filter_map(move |event| {
            let change = match event {
                Ok(_) => {
                    if let Some(failures) = gate.success() {
                        tracing::info!(what, failures, "watch works again");
                    }
                    Some(())
                }
                Err(error) => {
                    if let Some(not_logged) = gate.failure(std::time::Instant::now()) {
                        tracing::warn!(what, %error, not_logged, "watch failed; retrying with backoff");
                    }
                    None
                }
            };
            futures::future::ready(change)
        });
    (reader, changes)
}
