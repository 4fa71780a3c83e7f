//! IPv6 and dual-stack rails in a real pod netns: a host-device NIC with an IPv4 and an IPv6
//! address (policy routing, both families), and a macvlan child with an IPv6 address only (main
//! table). The IPv6 addresses are usable at once (IFA_F_NODAD, never tentative); every route and
//! rule is there per family; DEL removes them all and gives the NIC back without its addresses.

mod common;

use common::*;
use multinic_api::AttachmentMode;
use multinic_api::plan::PlannedRoute;
use serde_json::Value;

fn dual_stack_plan() -> multinic_api::Plan {
    let mut moved = device(
        "ds1",
        "net1",
        AttachmentMode::HostDevice,
        "10.10.7.1/26",
        "10.10.0.0/16",
        Some(101),
    );
    moved.gateway = Some("10.10.7.62".parse().unwrap());
    moved.ips.push("fd00:10::700:0:0:1/74".parse().unwrap());
    moved.routes.push(PlannedRoute {
        dst: "fd00:10::/64".parse().unwrap(),
        gateway: None,
    });
    let mut child = device(
        "ds2",
        "net2",
        AttachmentMode::Macvlan,
        "fd00:20::740:0:0:1/74",
        "fd00:20::/64",
        None,
    );
    child.gateway = None;
    plan("claim-ds", "pod-ds", vec![moved, child])
}

/// `ip -j addr` entries of a link for its global addresses.
fn global_addrs(pod: &Ns, name: &str) -> Vec<Value> {
    let v = pod.ip_json(&["addr", "show", "dev", name]);
    v[0]["addr_info"]
        .as_array()
        .map(|a| a.iter().filter(|i| i["scope"] == "global").cloned().collect())
        .unwrap_or_default()
}

fn has_route(routes: &Value, dst: &str, dev: &str) -> bool {
    routes
        .as_array()
        .is_some_and(|r| r.iter().any(|r| r["dst"] == dst && r["dev"] == dev))
}

#[test]
fn dual_stack_and_ipv6_only_devices_add_check_del() {
    if !can_run_as_root("dual_stack_and_ipv6_only_devices_add_check_del") {
        return;
    }
    let host = Ns::new("h");
    let pod = Ns::new("p");
    add_veths(&host, "ds", 2, |_| true);
    let state = State::new(&[dual_stack_plan()]);
    let conf = state.conf(&format!("rails-{}", tag("ds")), "1.1.0");
    let call = |c| Call::new(c, "ctr-ds", pod.path(), "pod-ds");

    let result = cni(&host, &call("ADD"), &conf).expect_ok();

    // Both families in the result, each with the interface it belongs to; the IPv4 gateway is not
    // given to the IPv6 address.
    let ips: Vec<(String, u64, Option<String>)> = result["ips"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|ip| {
            (
                ip["address"].as_str().unwrap_or_default().to_string(),
                ip["interface"].as_u64().unwrap_or(99),
                ip["gateway"].as_str().map(str::to_string),
            )
        })
        .collect();
    assert_eq!(
        ips,
        [
            ("10.10.7.1/26".to_string(), 0, Some("10.10.7.62".to_string())),
            ("fd00:10::700:0:0:1/74".to_string(), 0, None),
            ("fd00:20::740:0:0:1/74".to_string(), 1, None),
        ]
    );

    // The addresses, IPv6 ones with nodad and never tentative.
    assert_eq!(pod.addrs("net1"), ["10.10.7.1/26", "fd00:10::700:0:0:1/74"]);
    assert_eq!(pod.addrs("net2"), ["fd00:20::740:0:0:1/74"]);
    for (name, v6) in [("net1", "fd00:10::700:0:0:1"), ("net2", "fd00:20::740:0:0:1")] {
        let info = global_addrs(&pod, name);
        let a = info
            .iter()
            .find(|i| i["local"] == v6)
            .unwrap_or_else(|| panic!("{name}: {v6} missing: {info:?}"));
        assert_eq!(a["nodad"], true, "{name}: {a}");
        assert!(a["tentative"].is_null(), "{name}: {v6} is tentative: {a}");
    }

    // net1: policy table 101 of both families, a rule per address.
    let v4 = pod.ip_json(&["-4", "route", "show", "table", "101"]);
    assert!(
        has_route(&v4, "10.10.7.0/26", "net1") && has_route(&v4, "10.10.0.0/16", "net1"),
        "{v4}"
    );
    assert!(has_route(&v4, "default", "net1"), "{v4}");
    let v6 = pod.ip_json(&["-6", "route", "show", "table", "101"]);
    assert!(has_route(&v6, "fd00:10:0:0:700::/74", "net1"), "{v6}");
    assert!(has_route(&v6, "fd00:10::/64", "net1"), "{v6}");
    assert!(
        !has_route(&v6, "default", "net1"),
        "no IPv6 gateway, no IPv6 default: {v6}"
    );
    let rules6 = pod.ip(&["-6", "rule", "show"]);
    assert!(rules6.contains("from fd00:10::700:0:0:1 lookup 101"), "{rules6}");
    let rules4 = pod.ip(&["-4", "rule", "show"]);
    assert!(rules4.contains("from 10.10.7.1 lookup 101"), "{rules4}");
    // net2: the IPv6 route in main, on-link.
    let main6 = pod.ip_json(&["-6", "route", "show", "table", "main"]);
    assert!(has_route(&main6, "fd00:20::/64", "net2"), "{main6}");
    // The pod can use the IPv6 address as a source right away (no DAD wait).
    let get = pod.ip(&["-6", "route", "get", "fd00:20::1"]);
    assert!(
        get.contains("dev net2") && get.contains("src fd00:20::740:0:0:1"),
        "{get}"
    );

    cni(&host, &call("CHECK"), &conf).expect_ok();

    cni(&host, &call("DEL"), &conf).expect_ok();
    cni(&host, &call("DEL"), &conf).expect_ok();
    let names = pod.link_names();
    assert!(names.iter().all(|n| !n.starts_with("net")), "{names:?}");
    let rules6 = pod.ip(&["-6", "rule", "show"]);
    assert!(!rules6.contains("fd00:10::"), "IPv6 rule left: {rules6}");
    let rules4 = pod.ip(&["-4", "rule", "show"]);
    assert!(!rules4.contains("10.10.7.1"), "IPv4 rule left: {rules4}");
    // The NIC is back on the host, with neither of the pod's addresses.
    assert!(host.link("ds1").is_some() && host.link("ds2").is_some());
    assert!(
        global_addrs(&host, "ds1").is_empty(),
        "{:?}",
        global_addrs(&host, "ds1")
    );
    assert!(marked_links(&host).is_empty(), "{:?}", marked_links(&host));
    println!("dual stack: ADD gave net1 IPv4+IPv6 (table 101) and net2 IPv6 (main), nodad; CHECK ok; DEL removed all");
}
