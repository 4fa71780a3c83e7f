//! CHECK: every planned device is in the pod, ours, up, with its MTU, addresses and rules.

use super::ctx::{dev_err, is_ours, pod_nl};
use super::plans::pod_plans;
use crate::alias::attachment_key;
use crate::args::CniEnv;
use crate::config::NetConf;
use crate::error::CniError;
use crate::netns;
use crate::nl;

pub(super) async fn check(env: &CniEnv, conf: &NetConf) -> Result<(), CniError> {
    let plans = pod_plans(conf, env)?;
    if plans.iter().all(|p| p.devices.is_empty()) {
        return Ok(());
    }
    let pod_ns = netns::open(&env.netns)?;
    let pod = pod_nl(&pod_ns)?;
    let attachment = attachment_key(&conf.name, &env.container_id, &env.ifname);
    let rules: Vec<_> = pod
        .rules()
        .await
        .map_err(|e| dev_err("(pod netns)", "list rules", &e))?
        .iter()
        .filter_map(nl::our_rule)
        .collect();
    for plan in &plans {
        for dev in &plan.devices {
            let bad = |problem: String| CniError::Check {
                device: format!("{} ({})", dev.pod_if_name, dev.host_if_name),
                problem,
            };
            let link = pod
                .link(&dev.pod_if_name)
                .await
                .map_err(|e| dev_err(&dev.pod_if_name, "look up", &e))?
                .ok_or_else(|| bad("missing from the pod netns".into()))?;
            if !is_ours(&link, plan, dev, &attachment) {
                return Err(bad(format!("not attached by multinic for claim {}", plan.claim_uid)));
            }
            if let Some(mtu) = dev.mtu
                && link.mtu != Some(mtu)
            {
                return Err(bad(format!("MTU is {:?}, planned {mtu}", link.mtu)));
            }
            if !link.up {
                return Err(bad("is down".into()));
            }
            let addrs = pod
                .addresses(link.index)
                .await
                .map_err(|e| dev_err(&dev.pod_if_name, "list addresses", &e))?;
            for ip in &dev.ips {
                if !addrs.contains(ip) {
                    return Err(bad(format!("address {ip} is missing")));
                }
            }
            for rule in nl::device_rules(dev) {
                if !rules.contains(&rule) {
                    return Err(bad(format!("rule from {} lookup {} is missing", rule.0, rule.1)));
                }
            }
        }
    }
    Ok(())
}
