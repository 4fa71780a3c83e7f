//! `ipam.gatewayIndex` + `routing.defaultRoute` in a real pod netns: the pod already has a primary
//! interface with the primary network's default route (what the CNI before us in the chain left);
//! our plan's first interface takes the pod's default route via its rail's gateway, the second
//! keeps its own gateway for its own block only. The kernel then sends traffic for an address
//! outside every connected subnet out of net1 via the gateway, the result reports the default
//! route that is there, CHECK passes, and DEL gives the NICs back.

mod common;

use common::*;
use multinic_api::AttachmentMode;
use multinic_api::plan::PlannedRoute;
use serde_json::{Value, json};

/// net1 (rail 0, block 10.10.7.0/26, gateway index 1) with the default route, net2 (rail 1,
/// block 10.10.7.64/26, gateway 10.10.7.65) without: the plan the builder makes for
/// `gatewayIndex: 1` and `defaultRoute: true` (kubelet-plugin's plan_builder tests).
fn gateway_plan(prefix: &str) -> multinic_api::Plan {
    let mut net1 = device(
        &format!("{prefix}1"),
        "net1",
        AttachmentMode::Macvlan,
        "10.10.7.2/26",
        "0.0.0.0/0",
        None,
    );
    net1.gateway = Some("10.10.7.1".parse().unwrap());
    net1.routes = vec![PlannedRoute {
        dst: "0.0.0.0/0".parse().unwrap(),
        gateway: Some("10.10.7.1".parse().unwrap()),
    }];
    let mut net2 = device(
        &format!("{prefix}2"),
        "net2",
        AttachmentMode::HostDevice,
        "10.10.7.66/26",
        "10.10.7.64/26",
        None,
    );
    net2.gateway = Some("10.10.7.65".parse().unwrap());
    net2.routes = Vec::new();
    plan("claim-gw", "pod-gw", vec![net1, net2])
}

fn main_routes(pod: &Ns) -> Vec<(String, String, String)> {
    pod.ip_json(&["-4", "route", "show", "table", "main"])
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap_or_default().to_string();
            (s("dst"), s("gateway"), s("dev"))
        })
        .collect()
}

#[test]
fn default_route_moves_to_the_rail_gateway_and_del_gives_the_nics_back() {
    if !can_run_as_root("default_route_moves_to_the_rail_gateway_and_del_gives_the_nics_back") {
        return;
    }
    let prefix = tag("gw");
    let host = Ns::new("h");
    let pod = Ns::new("p");
    add_veths(&host, &prefix, 2, |_| true);
    // The primary network: eth0 with 10.244.0.5/24 and the default route via 10.244.0.1.
    pod.ip(&["link", "add", "eth0", "type", "veth", "peer", "name", "eth0p"]);
    pod.ip(&["addr", "add", "10.244.0.5/24", "dev", "eth0"]);
    pod.ip(&["link", "set", "eth0", "up"]);
    pod.ip(&["link", "set", "eth0p", "up"]);
    pod.ip(&["route", "add", "default", "via", "10.244.0.1", "dev", "eth0"]);

    let state = State::new(&[gateway_plan(&prefix)]);
    let mut conf = state.conf(&format!("rails-{prefix}"), "1.1.0");
    conf["prevResult"] = json!({
        "cniVersion": "1.1.0",
        "interfaces": [{"name": "eth0", "sandbox": pod.path()}],
        "ips": [{"address": "10.244.0.5/24", "gateway": "10.244.0.1", "interface": 0}],
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.244.0.1"}]
    });
    let call = |c| Call::new(c, "ctr-gw", pod.path(), "pod-gw");

    let result = cni(&host, &call("ADD"), &conf).expect_ok();

    let routes = main_routes(&pod);
    let defaults: Vec<&(String, String, String)> = routes.iter().filter(|r| r.0 == "default").collect();
    assert_eq!(
        defaults,
        [&("default".to_string(), "10.10.7.1".to_string(), "net1".to_string())],
        "one default route, via rail 0's gateway: {routes:?}"
    );
    let get = pod.ip(&["-4", "route", "get", "198.51.100.7"]);
    assert!(get.contains("via 10.10.7.1 dev net1"), "{get}");
    // net2 routes only its own block, on-link; its gateway is reported with its address.
    let get = pod.ip(&["-4", "route", "get", "10.10.7.100"]);
    assert!(get.contains("dev net2") && !get.contains("via"), "{get}");
    let reported: Vec<(String, String)> = result["routes"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|r| {
            (
                r["dst"].as_str().unwrap_or("").into(),
                r["gw"].as_str().unwrap_or("").into(),
            )
        })
        .collect();
    assert_eq!(
        reported,
        [("0.0.0.0/0".to_string(), "10.10.7.1".to_string())],
        "the result names the default route that is there, not eth0's"
    );
    let gateways: Vec<Value> = result["ips"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|ip| ip["gateway"].clone())
        .collect();
    assert_eq!(gateways, [json!("10.244.0.1"), json!("10.10.7.1"), json!("10.10.7.65")]);

    cni(&host, &call("CHECK"), &conf).expect_ok();
    cni(&host, &call("DEL"), &conf).expect_ok();
    cni(&host, &call("DEL"), &conf).expect_ok();
    let names = pod.link_names();
    assert!(names.iter().all(|n| !n.starts_with("net")), "{names:?}");
    assert!(
        host.link(&format!("{prefix}2")).is_some(),
        "the moved NIC is back on the host"
    );
    assert!(marked_links(&host).is_empty(), "{:?}", marked_links(&host));
    println!(
        "gateway: ADD put the pod's default route via 10.10.7.1 dev net1 (eth0's via 10.244.0.1 replaced); net2 on-link; CHECK ok; DEL gave the NICs back"
    );
}
