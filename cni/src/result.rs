//! Building the ADD result: our interfaces, IPs and routes merged into `prevResult`.

use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::{Map, Value, json};

use crate::config::is_1_1;
use crate::error::CniError;

/// A route we installed, as reported in the result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedRoute {
    pub dst: IpNet,
    pub gw: Option<IpAddr>,
    /// `None`: the main table.
    pub table: Option<u32>,
}

/// One device as it ended up in the pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedDevice {
    pub name: String,
    pub mac: Option<String>,
    pub mtu: Option<u32>,
    pub ips: Vec<IpNet>,
    pub gateway: Option<IpAddr>,
    pub routes: Vec<AppliedRoute>,
}

fn array_of(obj: &mut Map<String, Value>, key: &str) -> Result<Vec<Value>, CniError> {
    match obj.remove(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => Ok(a),
        Some(_) => Err(CniError::InvalidConfig(format!("prevResult.{key} must be an array"))),
    }
}

/// Merges our devices into `prev` (kept as is: eth0's interfaces, IPs, routes and DNS stay first).
/// Our IPs point at our interfaces by index, offset by the interfaces already in `prev`.
/// Routes in a policy table are reported with `table` for 1.1 and left out for 1.0 (which has
/// no way to say they are not in the main table).
pub fn merge_result(
    cni_version: &str,
    prev: Option<&Value>,
    sandbox: &str,
    devices: &[AppliedDevice],
) -> Result<Value, CniError> {
    let mut obj = match prev {
        Some(Value::Object(o)) => o.clone(),
        Some(_) => return Err(CniError::InvalidConfig("prevResult must be a JSON object".into())),
        None => Map::new(),
    };
    let v11 = is_1_1(cni_version);
    let mut interfaces = array_of(&mut obj, "interfaces")?;
    let mut ips = array_of(&mut obj, "ips")?;
    let mut routes = array_of(&mut obj, "routes")?;
    for dev in devices {
        let index = interfaces.len();
        let mut iface = json!({ "name": dev.name, "sandbox": sandbox });
        if let Some(mac) = &dev.mac {
            iface["mac"] = json!(mac);
        }
        if v11 && let Some(mtu) = dev.mtu {
            iface["mtu"] = json!(mtu);
        }
        interfaces.push(iface);
        for ip in &dev.ips {
            let mut entry = json!({ "address": ip.to_string(), "interface": index });
            if let Some(gw) = dev.gateway.filter(|gw| gw.is_ipv4() == ip.addr().is_ipv4()) {
                entry["gateway"] = json!(gw.to_string());
            }
            ips.push(entry);
        }
        for r in &dev.routes {
            if r.table.is_some() && !v11 {
                continue;
            }
            // A main-table route of ours replaced the kernel's route to the same destination (the
            // add is a replace; `routing.defaultRoute` takes over the primary's default route):
            // the result reports the one that is there.
            if r.table.is_none() {
                routes.retain(|prev| !is_main_route_to(prev, &r.dst));
            }
            let mut entry = json!({ "dst": r.dst.to_string() });
            if let Some(gw) = r.gw {
                entry["gw"] = json!(gw.to_string());
            }
            if let Some(table) = r.table {
                entry["table"] = json!(table);
            }
            routes.push(entry);
        }
    }
    obj.insert("cniVersion".into(), json!(cni_version));
    obj.insert("interfaces".into(), Value::Array(interfaces));
    obj.insert("ips".into(), Value::Array(ips));
    if !routes.is_empty() {
        obj.insert("routes".into(), Value::Array(routes));
    }
    Ok(Value::Object(obj))
}

/// Whether a result route is `dst` in the main table (no `table`, or table 254).
fn is_main_route_to(route: &Value, dst: &IpNet) -> bool {
    let main = route.get("table").is_none_or(|t| t.as_u64() == Some(254));
    main && route
        .get("dst")
        .and_then(Value::as_str)
        .and_then(|d| d.parse::<IpNet>().ok())
        .is_some_and(|d| d.trunc() == dst.trunc())
}

/// The result when the pod has no plan: `prevResult` unchanged, or an empty result.
pub fn pass_through(cni_version: &str, prev: Option<&Value>) -> Value {
    match prev {
        Some(v) => v.clone(),
        None => json!({ "cniVersion": cni_version }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prev() -> Value {
        json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "cni0", "mac": "aa:aa:aa:aa:aa:aa"},
                {"name": "veth1", "mac": "bb:bb:bb:bb:bb:bb"},
                {"name": "eth0", "mac": "cc:cc:cc:cc:cc:cc", "sandbox": "/run/netns/p"}
            ],
            "ips": [{"address": "10.244.0.5/24", "gateway": "10.244.0.1", "interface": 2}],
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.244.0.1"}],
            "dns": {"nameservers": ["10.96.0.10"]}
        })
    }

    fn devs() -> Vec<AppliedDevice> {
        vec![
            AppliedDevice {
                name: "net1".into(),
                mac: Some("02:00:00:00:00:01".into()),
                mtu: Some(9000),
                ips: vec!["192.168.0.2/24".parse().unwrap()],
                gateway: Some("192.168.0.1".parse().unwrap()),
                routes: vec![
                    AppliedRoute {
                        dst: "192.168.0.0/16".parse().unwrap(),
                        gw: Some("192.168.0.1".parse().unwrap()),
                        table: None,
                    },
                    AppliedRoute {
                        dst: "0.0.0.0/0".parse().unwrap(),
                        gw: Some("192.168.0.1".parse().unwrap()),
                        table: Some(101),
                    },
                ],
            },
            AppliedDevice {
                name: "net2".into(),
                mac: None,
                mtu: None,
                ips: vec!["192.168.4.2/24".parse().unwrap(), "fd00::2/64".parse().unwrap()],
                gateway: None,
                routes: vec![],
            },
        ]
    }

    #[test]
    fn merge_keeps_eth0_and_offsets_indexes() {
        let r = merge_result("1.0.0", Some(&prev()), "/run/netns/p", &devs()).unwrap();
        let ifs = r["interfaces"].as_array().unwrap();
        assert_eq!(ifs.len(), 5);
        assert_eq!(ifs[2]["name"], "eth0");
        assert_eq!(ifs[3]["name"], "net1");
        assert_eq!(ifs[3]["sandbox"], "/run/netns/p");
        assert!(ifs[3].get("mtu").is_none(), "mtu is a 1.1 field");
        let ips = r["ips"].as_array().unwrap();
        assert_eq!(ips[0]["address"], "10.244.0.5/24");
        assert_eq!(ips[0]["interface"], 2);
        assert_eq!(ips[1]["interface"], 3);
        assert_eq!(ips[1]["gateway"], "192.168.0.1");
        assert_eq!(ips[2]["interface"], 4);
        assert_eq!(ips[3]["address"], "fd00::2/64");
        let routes = r["routes"].as_array().unwrap();
        assert_eq!(routes.len(), 2, "table routes are not reported in 1.0: {routes:?}");
        assert_eq!(routes[0]["dst"], "0.0.0.0/0");
        assert_eq!(r["dns"]["nameservers"][0], "10.96.0.10");
    }

    #[test]
    fn a_default_route_of_ours_replaces_the_primary_ones_in_the_result() {
        let mut d = devs();
        d[0].routes.push(AppliedRoute {
            dst: "0.0.0.0/0".parse().unwrap(),
            gw: Some("192.168.0.1".parse().unwrap()),
            table: None,
        });
        let r = merge_result("1.1.0", Some(&prev()), "/run/netns/p", &d).unwrap();
        let main: Vec<(String, String)> = r["routes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r.get("table").is_none())
            .map(|r| (r["dst"].as_str().unwrap().into(), r["gw"].as_str().unwrap_or("").into()))
            .collect();
        assert_eq!(
            main,
            [
                ("192.168.0.0/16".to_string(), "192.168.0.1".to_string()),
                ("0.0.0.0/0".to_string(), "192.168.0.1".to_string())
            ],
            "eth0's default route via 10.244.0.1 is gone from the result"
        );
    }

    #[test]
    fn merge_1_1_reports_mtu_and_tables() {
        let r = merge_result("1.1.0", Some(&prev()), "/run/netns/p", &devs()).unwrap();
        assert_eq!(r["cniVersion"], "1.1.0");
        assert_eq!(r["interfaces"][3]["mtu"], 9000);
        let routes = r["routes"].as_array().unwrap();
        assert_eq!(routes.len(), 3);
        assert_eq!(routes[2]["table"], 101);
    }

    #[test]
    fn standalone_and_pass_through() {
        let r = merge_result("1.0.0", None, "/run/netns/p", &devs()).unwrap();
        assert_eq!(r["interfaces"][0]["name"], "net1");
        assert_eq!(r["ips"][0]["interface"], 0);
        assert_eq!(pass_through("1.0.0", Some(&prev())), prev());
        assert_eq!(pass_through("1.1.0", None), json!({"cniVersion": "1.1.0"}));
        assert!(merge_result("1.0.0", Some(&json!({"ips": 3})), "", &devs()).is_err());
    }
}
