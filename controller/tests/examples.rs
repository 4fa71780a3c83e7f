//! Every YAML under `examples/` parses into its Kubernetes type; every MultiNicNetwork passes the
//! CRD's CEL rules and the controller's validation, and its selector compiles and evaluates against
//! the devices of the 8-rail fixture host.

use std::path::{Path, PathBuf};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::resource::v1::{ResourceClaimTemplate, ResourceSlice};
use kube::core::cel::Validator;
use multinic_api::crd::{MultiNicNetwork, multinicnetwork_crd};
use multinic_controller::reconcile::network_config;
use multinic_controller::selector::{Selector, matching_nodes};
use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn docs() -> Vec<(PathBuf, Value)> {
    let mut out = Vec::new();
    for dir in std::fs::read_dir(root().join("examples"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
    {
        for file in std::fs::read_dir(dir.path()).unwrap().flatten() {
            let path = file.path();
            if path.extension().is_some_and(|e| e == "yaml") {
                let text = std::fs::read_to_string(&path).unwrap();
                for doc in serde_yaml::Deserializer::from_str(&text) {
                    let value: Value =
                        serde::Deserialize::deserialize(doc).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                    out.push((path.clone(), value));
                }
            }
        }
    }
    out
}

#[test]
fn every_example_validates() {
    let slices: Vec<ResourceSlice> = serde_yaml::from_str(
        &std::fs::read_to_string(root().join("kubelet-plugin/tests/fixtures/roce-8rail/expected-slices.yaml")).unwrap(),
    )
    .unwrap();
    let crd = multinicnetwork_crd();
    let schema = serde_json::to_value(
        crd.spec.versions[0]
            .schema
            .as_ref()
            .unwrap()
            .open_api_v3_schema
            .as_ref()
            .unwrap(),
    )
    .unwrap();
    let mut counts = std::collections::BTreeMap::new();
    for (path, doc) in docs() {
        let kind = doc["kind"]
            .as_str()
            .unwrap_or_else(|| panic!("{}: no kind", path.display()))
            .to_string();
        let at = path.display();
        match kind.as_str() {
            "MultiNicNetwork" => {
                Validator::new()
                    .validate(&schema, &doc, None)
                    .unwrap_or_else(|e| panic!("{at}: CRD rules: {e:?}"));
                let net: MultiNicNetwork = serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("{at}: {e}"));
                network_config(&net.metadata.name.clone().unwrap_or_default(), &net.spec)
                    .unwrap_or_else(|e| panic!("{at}: {e}"));
                let selector = Selector::compile(net.spec.selector.as_deref()).unwrap_or_else(|e| panic!("{at}: {e}"));
                matching_nodes("multinic.dev", &selector, &slices).unwrap_or_else(|e| panic!("{at}: {e}"));
            }
            "ResourceClaimTemplate" => {
                let t: ResourceClaimTemplate = serde_json::from_value(doc).unwrap_or_else(|e| panic!("{at}: {e}"));
                let requests = t.spec.spec.devices.and_then(|d| d.requests).unwrap_or_default();
                assert!(!requests.is_empty(), "{at}: no requests");
                assert!(
                    requests
                        .iter()
                        .all(|r| r.exactly.as_ref().is_some_and(|e| !e.device_class_name.is_empty())),
                    "{at}"
                );
            }
            "Job" => {
                let _: Job = serde_json::from_value(doc).unwrap_or_else(|e| panic!("{at}: {e}"));
            }
            "Pod" => {
                let pod: Pod = serde_json::from_value(doc).unwrap_or_else(|e| panic!("{at}: {e}"));
                let spec = pod.spec.unwrap_or_default();
                assert!(spec.host_network != Some(true), "{at}: examples never use hostNetwork");
                assert!(
                    spec.containers
                        .iter()
                        .all(|c| c.security_context.as_ref().and_then(|s| s.privileged) != Some(true)),
                    "{at}: examples never run privileged"
                );
            }
            // Kueue's objects (examples/kueue): their schema is Kueue's CRDs, which e2e/cluster
            // installs; test.sh scenario 6 checks these files with `--dry-run=server` there.
            "ResourceFlavor" | "ClusterQueue" | "LocalQueue" => {
                assert_eq!(doc["apiVersion"], "kueue.x-k8s.io/v1beta2", "{at}");
                assert!(
                    doc["metadata"]["name"].as_str().is_some_and(|n| !n.is_empty()),
                    "{at}: no name"
                );
            }
            other => panic!("{at}: unexpected kind {other}"),
        }
        *counts.entry(kind).or_insert(0) += 1;
    }
    println!("validated examples: {counts:?}");
    assert!(counts.get("MultiNicNetwork").copied().unwrap_or(0) >= 4);
}
