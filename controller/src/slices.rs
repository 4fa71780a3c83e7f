//! The controller's one watch of ResourceSlices (design.md §9): it fills a reflector store, which
//! the reconciles read nodes and rails from, and yields the slice versions that decide which
//! networks to reconcile (`selector::networks_for_slice`).

use std::collections::HashSet;

use futures::{Stream, StreamExt};
use k8s_openapi::api::resource::v1::ResourceSlice;
use kube::Api;
use kube::runtime::reflector::store::Writer;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, Event, watcher};

/// Keeps the store and says, per watch event, which slice versions it touched.
pub struct SliceTracker {
    writer: Writer<ResourceSlice>,
    reader: Store<ResourceSlice>,
    /// The slices seen since the watch (re)started its list, until the list ends.
    relisted: Option<HashSet<ObjectRef<ResourceSlice>>>,
}

impl SliceTracker {
    /// A tracker and the store it fills (ready after the first complete list).
    pub fn new() -> (Store<ResourceSlice>, Self) {
        let (reader, writer) = reflector::store();
        let tracker = Self {
            writer,
            reader: reader.clone(),
            relisted: None,
        };
        (reader, tracker)
    }

    /// Applies one watch event to the store and returns the slice versions it touched: the
    /// version the store held before (when it differs) and the new one, so that a network a
    /// device leaves is reached as well as one it joins; at the end of a list, the slices that
    /// are gone (deleted while the watch was down).
    /// The store holds each slice without its managed fields, which nothing here reads: the store
    /// is most of the controller's memory, which grows with the nodes (docs/benchmarks.md, row 11).
    pub fn apply(&mut self, mut event: Event<ResourceSlice>) -> Vec<ResourceSlice> {
        if let Event::Apply(slice) | Event::InitApply(slice) | Event::Delete(slice) = &mut event {
            slice.metadata.managed_fields = None;
        }
        let touched = match &event {
            Event::Apply(slice) | Event::Delete(slice) => self.with_previous(slice),
            Event::Init => {
                self.relisted = Some(HashSet::new());
                Vec::new()
            }
            Event::InitApply(slice) => {
                if let Some(seen) = &mut self.relisted {
                    seen.insert(ObjectRef::from_obj(slice));
                }
                self.with_previous(slice)
            }
            Event::InitDone => {
                let seen = self.relisted.take().unwrap_or_default();
                self.reader
                    .state()
                    .into_iter()
                    .filter(|s| !seen.contains(&ObjectRef::from_obj(s.as_ref())))
                    .map(|s| s.as_ref().clone())
                    .collect()
            }
        };
        self.writer.apply_watcher_event(&event);
        touched
    }

    fn with_previous(&self, slice: &ResourceSlice) -> Vec<ResourceSlice> {
        let previous = self
            .reader
            .get(&ObjectRef::from_obj(slice))
            .filter(|p| p.as_ref() != slice)
            .map(|p| p.as_ref().clone());
        previous.into_iter().chain([slice.clone()]).collect()
    }
}

/// The watch of `api` with `config`: the store it fills and the stream of touched slice versions
/// (see [`SliceTracker::apply`]) with the watch's errors, for `Controller::watches_stream`, which
/// polls it, backs off on errors and maps each version to the networks it concerns.
pub fn watch(
    api: Api<ResourceSlice>,
    config: watcher::Config,
) -> (
    Store<ResourceSlice>,
    impl Stream<Item = Result<ResourceSlice, watcher::Error>> + Send,
) {
    let (store, mut tracker) = SliceTracker::new();
    let touched = watcher(api, config).flat_map(move |event| {
        let items: Vec<_> = match event {
            Ok(event) => tracker.apply(event).into_iter().map(Ok).collect(),
            Err(error) => vec![Err(error)],
        };
        futures::stream::iter(items)
    });
    (store, touched)
}

#[cfg(test)]
mod tests {
    use kube::ResourceExt;
    use serde_json::json;

    use super::*;

    fn slice(name: &str, rdma: bool) -> ResourceSlice {
        serde_json::from_value(json!({"apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice",
            "metadata": {"name": name},
            "spec": {"driver": "multinic.dev", "nodeName": "n1",
                     "pool": {"name": "n1", "generation": 1, "resourceSliceCount": 1},
                     "devices": [{"name": "d", "attributes": {"multinic.dev/rdma": {"bool": rdma}}}]}}))
        .unwrap()
    }

    fn rdma(slices: &[ResourceSlice]) -> Vec<(String, bool)> {
        slices
            .iter()
            .map(|s| {
                let device = &s.spec.devices.as_ref().unwrap()[0];
                (
                    s.name_any(),
                    device.attributes.as_ref().unwrap()["multinic.dev/rdma"].bool == Some(true),
                )
            })
            .collect()
    }

    #[tokio::test]
    async fn the_store_keeps_slices_without_managed_fields() {
        let (store, mut tracker) = SliceTracker::new();
        let mut s = slice("a", true);
        s.metadata.managed_fields = Some(vec![Default::default()]);
        tracker.apply(Event::Init);
        tracker.apply(Event::InitApply(s.clone()));
        tracker.apply(Event::InitDone);
        tracker.apply(Event::Apply(s));
        store.wait_until_ready().await.unwrap();
        let stored = store.state();
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].metadata.managed_fields, None);
    }

    #[tokio::test]
    async fn changes_hand_over_the_previous_version_and_relists_the_vanished_slices() {
        let (store, mut tracker) = SliceTracker::new();
        assert!(tracker.apply(Event::Init).is_empty());
        assert_eq!(
            rdma(&tracker.apply(Event::InitApply(slice("a", true)))),
            [("a".into(), true)]
        );
        assert_eq!(
            rdma(&tracker.apply(Event::InitApply(slice("b", true)))),
            [("b".into(), true)]
        );
        assert!(tracker.apply(Event::InitDone).is_empty(), "nothing vanished");
        store.wait_until_ready().await.unwrap();
        assert_eq!(store.len(), 2);

        // A device that stops matching: the old version comes first, then the new one.
        assert_eq!(
            rdma(&tracker.apply(Event::Apply(slice("a", false)))),
            [("a".into(), true), ("a".into(), false)]
        );
        // The same version again is handed over once.
        assert_eq!(
            rdma(&tracker.apply(Event::Apply(slice("a", false)))),
            [("a".into(), false)]
        );
        assert_eq!(
            rdma(&tracker.apply(Event::Delete(slice("a", false)))),
            [("a".into(), false)]
        );
        assert_eq!(store.len(), 1);

        // The watch restarts; "b" was deleted and "c" created meanwhile.
        tracker.apply(Event::Init);
        assert_eq!(
            rdma(&tracker.apply(Event::InitApply(slice("c", true)))),
            [("c".into(), true)]
        );
        assert_eq!(rdma(&tracker.apply(Event::InitDone)), [("b".into(), true)]);
        let names: Vec<String> = store.state().iter().map(|s| s.name_any()).collect();
        assert_eq!(names, ["c"]);
    }
}
