//! Plan files (`<state-dir>/plans/<claim-uid>.json`): written by prepare, read by the plugin at
//! start and by every CNI ADD. A corrupt, truncated or foreign file is an error, never a panic; a
//! plan that loads round-trips and is safe to hand to the CNI plugin and the claim status.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use multinic_api::plan::{PlanStore, parse_plan, validate_uid};
use multinic_cni::plugin::validate_devices;
use multinic_kubelet_plugin::driver::status_entries;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("/var/lib/multinic/plans/x.json");
    // Every prefix of the input is a truncated write that the reader must refuse or accept cleanly.
    for cut in [data.len() / 2, data.len()] {
        let _ = parse_plan(path, &data[..cut]);
    }
    let Ok(plan) = parse_plan(path, data) else { return };
    // The claim UID becomes a file name: never a path outside the store.
    validate_uid(&plan.claim_uid).expect("a loaded plan has a valid claim UID");
    let store = PlanStore::new(Path::new("/var/lib/multinic"));
    let file = store.path_of(&plan.claim_uid).expect("path of a valid uid");
    assert_eq!(file.parent(), Some(store.dir()));
    let body = serde_json::to_vec_pretty(&plan).expect("serialise");
    assert_eq!(parse_plan(path, &body).expect("reparse"), plan);
    let _ = plan.is_for_pod(Some("pod-uid-1"), "ml", "train-0");
    let _ = plan.is_for_pod(None, &plan.namespace, "train-0");
    let _ = validate_devices(std::slice::from_ref(&plan), "eth0");
    let entries = status_entries("multinic.dev", &plan, &Default::default());
    assert_eq!(entries.len(), plan.devices.len());
});
