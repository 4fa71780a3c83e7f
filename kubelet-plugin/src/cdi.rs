//! CDI specs for the RDMA character devices of a claim's devices, so the container runtime puts
//! `/dev/infiniband/uverbsN` and `rdma_cm` into the containers that use the claim.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use multinic_api::plan::Plan;

use crate::driver::ShareIds;
use crate::publish::DeviceTable;

/// CDI spec version written.
pub const CDI_VERSION: &str = "0.6.0";
/// Device class in CDI kind `<driver>/net`.
const CDI_CLASS: &str = "net";

fn spec_path(dir: &Path, driver: &str, claim_uid: &str) -> PathBuf {
    dir.join(format!("{driver}-{claim_uid}.json"))
}

/// CDI device name: `<claim uid>-<device>`, plus `-<shareID>` for an allocation of a shared
/// device (dra-reference.md: allocations of one shared device differ only by shareID).
fn device_name(claim_uid: &str, device: &str, share_id: Option<&str>) -> String {
    match share_id {
        Some(share) => format!("{claim_uid}-{device}-{share}"),
        None => format!("{claim_uid}-{device}"),
    }
}

/// Fully qualified CDI device id: `multinic.dev/net=<device name>`.
pub fn device_id(driver: &str, claim_uid: &str, device: &str, share_id: Option<&str>) -> String {
    format!("{driver}/{CDI_CLASS}={}", device_name(claim_uid, device, share_id))
}

/// Writes the claim's spec (atomically) when it has RDMA devices; returns device → CDI id.
pub fn write_spec(
    dir: &Path,
    driver: &str,
    plan: &Plan,
    table: &DeviceTable,
    shares: &ShareIds,
) -> std::io::Result<BTreeMap<String, String>> {
    let mut ids = BTreeMap::new();
    let mut devices = Vec::new();
    for d in &plan.devices {
        let Some(uverbs) = table.get(&d.device).and_then(|p| p.nic.rdma.and_then(|r| r.uverbs)) else {
            continue;
        };
        let share = shares.get(&(d.request.clone(), d.device.clone())).map(String::as_str);
        devices.push(serde_json::json!({
            "name": device_name(&plan.claim_uid, &d.device, share),
            "containerEdits": {"deviceNodes": [
                {"path": format!("/dev/infiniband/{uverbs}")},
                {"path": "/dev/infiniband/rdma_cm"},
            ]},
        }));
        ids.insert(d.device.clone(), device_id(driver, &plan.claim_uid, &d.device, share));
    }
    if devices.is_empty() {
        return Ok(ids);
    }
    let spec =
        serde_json::json!({"cdiVersion": CDI_VERSION, "kind": format!("{driver}/{CDI_CLASS}"), "devices": devices});
    let path = spec_path(dir, driver, &plan.claim_uid);
    multinic_api::fsutil::write_atomic(&path, &serde_json::to_vec_pretty(&spec)?, 0o644)?;
    Ok(ids)
}

/// Removes the claim's spec; missing is success.
pub fn remove_spec(dir: &Path, driver: &str, claim_uid: &str) -> std::io::Result<()> {
    match fs::remove_file(spec_path(dir, driver, claim_uid)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_allocations_get_their_share_id_in_the_cdi_id() {
        assert_eq!(
            device_id("multinic.dev", "u1", "mnic0", None),
            "multinic.dev/net=u1-mnic0"
        );
        assert_eq!(
            device_id("multinic.dev", "u1", "mnic0", Some("s-9")),
            "multinic.dev/net=u1-mnic0-s-9"
        );
    }
}
