//! Watches: raw events, resume, bookmarks, 410 Gone, and `kube::runtime::watcher`.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::resource::v1::{ResourceClaim, ResourceSlice};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::watcher;
use multinic_testkit::FakeApiServer;
use serde_json::json;

use crate::{claim, claim_json, slice, slice_json};

const STEP: Duration = Duration::from_secs(10);

async fn next<T, E: std::fmt::Debug>(s: &mut (impl futures::Stream<Item = Result<T, E>> + Unpin)) -> T {
    match tokio::time::timeout(STEP, s.next()).await {
        Ok(Some(Ok(v))) => v,
        other => panic!("no event within {STEP:?}: {:?}", other.map(|o| o.map(|r| r.err()))),
    }
}

fn label(obj: &WatchEvent<ResourceClaim>) -> String {
    match obj {
        WatchEvent::Added(o) => format!("ADDED {}", o.metadata.name.clone().unwrap_or_default()),
        WatchEvent::Modified(o) => format!("MODIFIED {}", o.metadata.name.clone().unwrap_or_default()),
        WatchEvent::Deleted(o) => format!("DELETED {}", o.metadata.name.clone().unwrap_or_default()),
        WatchEvent::Bookmark(_) => "BOOKMARK".into(),
        WatchEvent::Error(e) => format!("ERROR {}", e.code),
    }
}

#[tokio::test]
async fn watch_sees_added_modified_deleted_in_order() {
    let server = FakeApiServer::start().await;
    let api: Api<ResourceClaim> = Api::default_namespaced(server.client());
    let rv = server.resource_version().to_string();
    let mut stream = api.watch(&WatchParams::default(), &rv).await.expect("watch").boxed();
    api.create(&PostParams::default(), &claim(claim_json("c1")))
        .await
        .expect("create");
    let p = json!({"metadata": {"labels": {"a": "b"}}});
    api.patch("c1", &PatchParams::default(), &Patch::Merge(&p))
        .await
        .expect("patch");
    api.delete("c1", &DeleteParams::default()).await.expect("delete");
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(label(&next(&mut stream).await));
    }
    assert_eq!(seen, vec!["ADDED c1", "MODIFIED c1", "DELETED c1"]);
}

#[tokio::test]
async fn watch_resumes_from_a_resource_version() {
    let server = FakeApiServer::start().await;
    let api: Api<ResourceClaim> = Api::default_namespaced(server.client());
    let a = api
        .create(&PostParams::default(), &claim(claim_json("c1")))
        .await
        .expect("create");
    api.create(&PostParams::default(), &claim(claim_json("c2")))
        .await
        .expect("create");
    let p = json!({"metadata": {"labels": {"a": "b"}}});
    api.patch("c1", &PatchParams::default(), &Patch::Merge(&p))
        .await
        .expect("patch");
    let rv = a.metadata.resource_version.expect("rv");
    let mut stream = api.watch(&WatchParams::default(), &rv).await.expect("watch").boxed();
    assert_eq!(label(&next(&mut stream).await), "ADDED c2");
    assert_eq!(label(&next(&mut stream).await), "MODIFIED c1");
    // "0" starts with the current state.
    let mut stream = api.watch(&WatchParams::default(), "0").await.expect("watch").boxed();
    let mut initial = vec![label(&next(&mut stream).await), label(&next(&mut stream).await)];
    initial.sort();
    assert_eq!(initial, vec!["ADDED c1", "ADDED c2"]);
}

#[tokio::test]
async fn too_old_resource_version_is_gone() {
    let server = FakeApiServer::start().await;
    let api: Api<ResourceClaim> = Api::default_namespaced(server.client());
    let a = api
        .create(&PostParams::default(), &claim(claim_json("c1")))
        .await
        .expect("create");
    api.create(&PostParams::default(), &claim(claim_json("c2")))
        .await
        .expect("create");
    server.compact();
    let rv = a.metadata.resource_version.expect("rv");
    let mut stream = api.watch(&WatchParams::default(), &rv).await.expect("watch").boxed();
    match next(&mut stream).await {
        WatchEvent::Error(e) => {
            assert_eq!((e.code, e.reason.as_str()), (410, "Expired"));
            assert!(
                e.message.starts_with(&format!("too old resource version: {rv} (")),
                "{}",
                e.message
            );
        }
        other => panic!("expected a 410 error event, got {}", label(&other)),
    }
}

#[tokio::test]
async fn bookmarks_only_when_allowed() {
    let server = FakeApiServer::start().await;
    server.set_bookmark_interval(Duration::from_millis(20));
    let api: Api<ResourceClaim> = Api::default_namespaced(server.client());
    api.create(&PostParams::default(), &claim(claim_json("c1")))
        .await
        .expect("create");
    let rv = server.resource_version();
    let mut stream = api
        .watch(&WatchParams::default(), &rv.to_string())
        .await
        .expect("watch")
        .boxed();
    match next(&mut stream).await {
        WatchEvent::Bookmark(b) => assert_eq!(b.metadata.resource_version, rv.to_string()),
        other => panic!("expected a bookmark, got {}", label(&other)),
    }
    // Without allowWatchBookmarks the next event is the real change, not a bookmark.
    let mut plain = api
        .watch(&WatchParams::default().disable_bookmarks(), &rv.to_string())
        .await
        .expect("watch")
        .boxed();
    api.create(&PostParams::default(), &claim(claim_json("c2")))
        .await
        .expect("create");
    assert_eq!(label(&next(&mut plain).await), "ADDED c2");
}

#[tokio::test]
async fn selector_watch_turns_leaving_objects_into_deleted() {
    let server = FakeApiServer::start().await;
    let api: Api<ResourceSlice> = Api::all(server.client());
    let rv = server.resource_version().to_string();
    let wp = WatchParams::default().fields("spec.nodeName=node-a").labels("keep=yes");
    let mut stream = api.watch(&wp, &rv).await.expect("watch").boxed();
    let mut s = slice(slice_json("s1", "node-a", 1));
    s.metadata.labels = Some([("keep".to_string(), "yes".to_string())].into());
    api.create(&PostParams::default(), &s).await.expect("create");
    api.create(&PostParams::default(), &slice(slice_json("other", "node-b", 1)))
        .await
        .expect("create other node");
    let p = json!({"metadata": {"labels": {"keep": "no"}}});
    api.patch("s1", &PatchParams::default(), &Patch::Merge(&p))
        .await
        .expect("relabel");
    let first = next(&mut stream).await;
    assert!(matches!(&first, WatchEvent::Added(o) if o.metadata.name.as_deref() == Some("s1")));
    let second = next(&mut stream).await;
    assert!(matches!(&second, WatchEvent::Deleted(o) if o.metadata.name.as_deref() == Some("s1")));
}

#[tokio::test]
async fn unavailable_ends_watches() {
    let server = FakeApiServer::start().await;
    let api: Api<ResourceClaim> = Api::default_namespaced(server.client());
    let mut stream = api.watch(&WatchParams::default(), "0").await.expect("watch").boxed();
    server.set_unavailable(true);
    let end = tokio::time::timeout(STEP, stream.next()).await.expect("the watch ends");
    assert!(end.is_none() || matches!(end, Some(Err(_))));
}

#[tokio::test]
async fn runtime_watcher_works() {
    let server = FakeApiServer::start().await;
    let api: Api<ResourceClaim> = Api::default_namespaced(server.client());
    api.create(&PostParams::default(), &claim(claim_json("before")))
        .await
        .expect("create");
    let mut events = watcher(api.clone(), watcher::Config::default()).boxed();
    // Initial list: Init, InitApply(before), InitDone.
    let mut init = Vec::new();
    loop {
        match next(&mut events).await {
            watcher::Event::Init => {}
            watcher::Event::InitApply(o) => init.push(o.metadata.name.unwrap_or_default()),
            watcher::Event::InitDone => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(init, vec!["before"]);
    api.create(&PostParams::default(), &claim(claim_json("after")))
        .await
        .expect("create");
    match next(&mut events).await {
        watcher::Event::Apply(o) => assert_eq!(o.metadata.name.as_deref(), Some("after")),
        other => panic!("unexpected {other:?}"),
    }
    api.delete("before", &DeleteParams::default()).await.expect("delete");
    match next(&mut events).await {
        watcher::Event::Delete(o) => assert_eq!(o.metadata.name.as_deref(), Some("before")),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn runtime_watcher_with_streaming_lists() {
    let server = FakeApiServer::start().await;
    let api: Api<ResourceSlice> = Api::all(server.client());
    api.create(&PostParams::default(), &slice(slice_json("s1", "node-a", 1)))
        .await
        .expect("create");
    let cfg = watcher::Config::default()
        .streaming_lists()
        .fields("spec.nodeName=node-a");
    let collect = watcher(api.clone(), cfg)
        .try_take_while(|e| futures::future::ready(Ok(!matches!(e, watcher::Event::InitDone))))
        .try_filter_map(|e| async move {
            Ok(match e {
                watcher::Event::InitApply(o) => o.metadata.name,
                _ => None,
            })
        })
        .try_collect::<Vec<String>>();
    let names = tokio::time::timeout(STEP, collect)
        .await
        .expect("in time")
        .expect("streaming list");
    assert_eq!(names, vec!["s1"]);
}
