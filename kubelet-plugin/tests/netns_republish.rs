//! Acceptance: in a network namespace made by the test, adding and deleting veth "NICs" (with
//! allow-virtual) changes what is published within 1 s, without a restart.
//!
//! Needs root (CAP_SYS_ADMIN for unshare, CAP_NET_ADMIN for links). Runs whenever it can; with
//! `CI=true` a missing privilege is a failure, elsewhere the test prints why it skipped.

use std::time::{Duration, Instant};

use futures::TryStreamExt;
use multinic_kubelet_plugin::inventory::{Filters, SysfsReader, netlink};
use multinic_kubelet_plugin::publish::{InventorySource, LoopTiming, MemorySliceStore, Publisher, run_publish_loop};
use multinic_kubelet_plugin::slices::SliceOptions;
use multinic_testkit::fixtures;

mod common;
use rtnetlink::LinkVeth;

/// Waits until `cond` holds, polling the store's change counter; returns the time it took.
async fn wait_for(store: &MemorySliceStore, deadline: Duration, cond: impl Fn(&MemorySliceStore) -> bool) -> Duration {
    let start = Instant::now();
    let mut changes = store.changes();
    while !cond(store) {
        let left = deadline.checked_sub(start.elapsed()).unwrap_or_default();
        if tokio::time::timeout(left, changes.changed()).await.is_err() {
            panic!(
                "condition not met within {deadline:?}; published devices: {:?}",
                store.device_names()
            );
        }
    }
    start.elapsed()
}

#[test]
fn veth_nics_added_and_deleted_are_republished_within_a_second() {
    if !fixtures::can_run_as_root("veth_nics_added_and_deleted_are_republished_within_a_second") {
        return;
    }
    // The namespace belongs to this thread only; every netlink socket below is opened from it.
    common::in_new_netns(|| async move {
        let sysfs = tempfile::tempdir().unwrap();
        let handle = netlink::connect().unwrap();
        let source = InventorySource {
            handle: handle.clone(),
            sysfs: SysfsReader::new(sysfs.path()),
            filters: Filters::new(true, &[], &[], &[], &[]).unwrap(),
        };
        let store = MemorySliceStore::new();
        let publisher = Publisher::new(store.clone(), SliceOptions::new("netns-node"));
        let events = netlink::subscribe().unwrap();
        let timing = LoopTiming {
            debounce: Duration::from_millis(250),
            resync: Duration::from_secs(3600),
        };
        let publish_loop = run_publish_loop(&publisher, &source, events, futures::stream::pending(), timing);

        let body = async {
            wait_for(&store, Duration::from_secs(5), |s| !s.slices().is_empty()).await;
            assert!(
                store.device_names().is_empty(),
                "only lo exists, and it is never published"
            );

            handle
                .link()
                .add(LinkVeth::new("mnic0a", "mnic0b").build())
                .execute()
                .await
                .unwrap();
            let added = wait_for(&store, Duration::from_secs(1), |s| {
                let names = s.device_names();
                names.contains("mnic0a") && names.contains("mnic0b")
            })
            .await;
            println!("veth pair added: republished after {added:?}");

            let link = handle
                .link()
                .get()
                .match_name("mnic0a".to_string())
                .execute()
                .try_next()
                .await
                .unwrap()
                .unwrap();
            handle.link().del(link.header.index).execute().await.unwrap();
            let deleted = wait_for(&store, Duration::from_secs(1), |s| s.device_names().is_empty()).await;
            println!("veth pair deleted: republished after {deleted:?}");

            let generations: Vec<i64> = store.slices().values().map(|s| s.spec.pool.generation).collect();
            assert_eq!(generations, [3], "one slice, generation bumped once per change");
        };
        tokio::select! {
            () = publish_loop => panic!("the publish loop ended"),
            () = body => {}
        }
    });
}
