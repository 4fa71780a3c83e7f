//! The pod's plans, and the pure checks of their devices before anything is touched.

use std::collections::HashSet;

use multinic_api::Plan;
use multinic_api::config::validate_ifname;
use multinic_api::plan::PlanStore;

use crate::args::CniEnv;
use crate::config::NetConf;
use crate::error::CniError;

/// The plans of the pod, in claim UID order. Unreadable plan files of this pod fail the call
/// (with a pod UID only the pod's own plans are read; without one, any unreadable plan fails it):
/// attaching half of a pod's NICs silently is worse than a retried ADD.
pub fn pod_plans(conf: &NetConf, env: &CniEnv) -> Result<Vec<Plan>, CniError> {
    if !env.pod.identifies_a_pod() {
        return Ok(Vec::new());
    }
    let store = PlanStore::new(&conf.state_dir);
    // By pod UID only this pod's plans are read; without one, every plan is read and filtered.
    let (plans, mut errors) = match env.pod.uid.as_deref().filter(|u| !u.is_empty()) {
        Some(uid) => store.load_for_pod(uid)?,
        None => store.load_all()?,
    };
    if !errors.is_empty() {
        return Err(CniError::Plan(errors.remove(0)));
    }
    let namespace = env.pod.namespace.as_deref().unwrap_or_default();
    let name = env.pod.name.as_deref().unwrap_or_default();
    Ok(plans
        .into_iter()
        .filter(|p| p.is_for_pod(env.pod.uid.as_deref(), namespace, name))
        .collect())
}

/// Pure checks of the pod's devices before touching anything.
pub fn validate_devices(plans: &[Plan], cni_ifname: &str) -> Result<(), CniError> {
    let mut names = HashSet::new();
    for plan in plans {
        for dev in &plan.devices {
            if let Err(reason) = validate_ifname(&dev.pod_if_name) {
                return Err(CniError::InvalidConfig(format!(
                    "claim {}: device {} has an invalid pod interface name: {reason}; fix interfaceNames or interfaceNamePrefix",
                    plan.claim_uid, dev.host_if_name
                )));
            }
            if let Err(reason) = validate_ifname(&dev.host_if_name) {
                return Err(CniError::InvalidConfig(format!(
                    "claim {}: device {} has an invalid host interface name: {reason}; rename the host NIC",
                    plan.claim_uid, dev.device
                )));
            }
            if dev.pod_if_name == cni_ifname {
                return Err(CniError::Conflict {
                    device: dev.host_if_name.clone(),
                    problem: format!(
                        "its pod name {} is the runtime's interface (CNI_IFNAME); change interfaceNamePrefix",
                        dev.pod_if_name
                    ),
                });
            }
            if !names.insert(dev.pod_if_name.as_str()) {
                return Err(CniError::Conflict {
                    device: dev.host_if_name.clone(),
                    problem: format!(
                        "pod interface name {} is planned twice for this pod (claim {}); give the claims distinct interfaceNamePrefix values",
                        dev.pod_if_name, plan.claim_uid
                    ),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::PodArgs;
    use crate::config::parse_conf;
    use crate::plugin::testutil::{cni_env, plan};

    #[test]
    fn device_validation() {
        assert!(validate_devices(&[plan("a", "p", &["net1", "net2"])], "eth0").is_ok());
        assert!(matches!(
            validate_devices(&[plan("a", "p", &["net1"]), plan("b", "p", &["net1"])], "eth0"),
            Err(CniError::Conflict { .. })
        ));
        assert!(matches!(
            validate_devices(&[plan("a", "p", &["eth0"])], "eth0"),
            Err(CniError::Conflict { .. })
        ));
        assert!(matches!(
            validate_devices(&[plan("a", "p", &["bad/name"])], "eth0"),
            Err(CniError::InvalidConfig(_))
        ));
    }

    #[test]
    fn plans_are_matched_to_the_pod_and_corrupt_files_fail() {
        let dir = tempfile::tempdir().unwrap();
        let store = PlanStore::new(dir.path());
        store.write(&plan("claim-a", "pod-1", &["net1"])).unwrap();
        store.write(&plan("claim-b", "pod-2", &["net1"])).unwrap();
        let conf = parse_conf(
            format!(
                r#"{{"cniVersion":"1.0.0","name":"n","stateDir":"{}"}}"#,
                dir.path().display()
            )
            .as_bytes(),
        )
        .unwrap();
        let got = pod_plans(&conf, &cni_env(Some("pod-1"))).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].claim_uid, "claim-a");
        assert!(pod_plans(&conf, &cni_env(Some("pod-3"))).unwrap().is_empty());
        let mut anonymous = cni_env(None);
        anonymous.pod = PodArgs::default();
        assert!(pod_plans(&conf, &anonymous).unwrap().is_empty());
        // A corrupt plan of this pod fails the call; it does not disturb another pod.
        store.write(&plan("claim-c", "pod-1", &["net2"])).unwrap();
        std::fs::write(store.dir().join("claim-c.json"), b"{").unwrap();
        assert!(matches!(
            pod_plans(&conf, &cni_env(Some("pod-1"))),
            Err(CniError::Plan(_))
        ));
        assert_eq!(pod_plans(&conf, &cni_env(Some("pod-2"))).unwrap().len(), 1);
    }
}
