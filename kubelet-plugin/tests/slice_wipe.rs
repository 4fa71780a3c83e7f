//! The kubelet deletes a node's ResourceSlices when it starts, also after the plugin registered
//! again (found on the real cluster: no slices after a kubelet restart). The plugin watches its
//! pool and publishes it again; slices it deletes itself (older generations) do not trigger that.

use std::time::{Duration, Instant};

use futures::StreamExt;
use multinic_kubelet_plugin::inventory::Inventory;
use multinic_kubelet_plugin::publish::{KubeSliceStore, PublishOutcome, Publisher};
use multinic_kubelet_plugin::slices::SliceOptions;
use multinic_testkit::{FakeApiServer, fixtures};

const NODE: &str = "node-w";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slices_wiped_by_the_kubelet_are_published_again() {
    let api = FakeApiServer::start().await;
    let store = KubeSliceStore::new(api.client());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut deleted = Box::pin(store.deleted_slices(&SliceOptions::new(NODE)));
    tokio::spawn(async move {
        while let Some(name) = deleted.next().await {
            let _ = tx.send(name);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while !api
        .requests()
        .iter()
        .any(|r| r.path.ends_with("resourceslices") && r.has_query("watch", "true"))
    {
        assert!(Instant::now() < deadline, "the pool's slices are never watched");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let publisher = Publisher::new(store, SliceOptions::new(NODE));
    let inventory = Inventory {
        nics: (0..2).map(fixtures::roce_nic).collect(),
        ..Default::default()
    };
    assert!(matches!(
        publisher.publish(&inventory).await.unwrap(),
        PublishOutcome::Published { generation: 1, .. }
    ));
    let name = api.list("resource.k8s.io/v1", "ResourceSlice", None)[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    // Nothing changed on the node: without the watch, publish has nothing to do.
    assert_eq!(publisher.publish(&inventory).await.unwrap(), PublishOutcome::Unchanged);

    // The kubelet wipes the node's slices.
    api.delete("resource.k8s.io/v1", "ResourceSlice", None, &name).unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seen, name);
    assert!(publisher.republish_if_ours(&seen).await);
    assert!(matches!(
        publisher.publish(&inventory).await.unwrap(),
        PublishOutcome::Published { .. }
    ));
    assert_eq!(
        api.list("resource.k8s.io/v1", "ResourceSlice", None).len(),
        1,
        "published again"
    );

    // A slice that is not in what we published (an older generation we delete) is not ours.
    assert!(!publisher.republish_if_ours("node-w-multinic.dev-7").await);
    assert_eq!(publisher.publish(&inventory).await.unwrap(), PublishOutcome::Unchanged);
}
