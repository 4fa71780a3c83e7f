//! Plans and CNI environments for the unit tests of the commands.

use multinic_api::plan::{PLAN_VERSION, PodRef};
use multinic_api::{AttachmentMode, Plan, PlannedDevice};

use crate::args::{CniEnv, Command, PodArgs};

pub(super) fn plan(uid: &str, pod_uid: &str, names: &[&str]) -> Plan {
    Plan {
        version: PLAN_VERSION,
        claim_uid: uid.into(),
        namespace: "ml".into(),
        name: "c".into(),
        pods: vec![PodRef {
            uid: pod_uid.into(),
            name: "train-0".into(),
        }],
        network: None,
        devices: names
            .iter()
            .enumerate()
            .map(|(i, n)| PlannedDevice {
                request: "nics".into(),
                pool: "node".into(),
                device: format!("dev-{i}"),
                host_if_name: format!("ens{i}"),
                rail_index: Some(i as u32),
                pod_if_name: n.to_string(),
                mode: AttachmentMode::HostDevice,
                mtu: None,
                mac: None,
                ips: vec![],
                gateway: None,
                routes: vec![],
                table: None,
                rdma_device: None,
            })
            .collect(),
    }
}

pub(super) fn cni_env(uid: Option<&str>) -> CniEnv {
    CniEnv {
        command: Command::Add,
        container_id: "c1".into(),
        netns: "/nonexistent".into(),
        ifname: "eth0".into(),
        pod: PodArgs {
            uid: uid.map(str::to_string),
            namespace: Some("ml".into()),
            name: Some("train-0".into()),
        },
    }
}
