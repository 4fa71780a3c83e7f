//! Acceptance 1: 8 host-device NICs through the real CNI protocol.

mod common;

use common::*;
use multinic_api::AttachmentMode;

/// Plan of 8 devices: pod net(i) gets host hd(9-i) so plan order, not name order, decides.
fn eight_device_plan(claim: &str, pod_uid: &str) -> multinic_api::Plan {
    let devices = (1..=8)
        .map(|i| {
            let host = 9 - i;
            let mut d = device(
                &format!("hd{host}"),
                &format!("net{i}"),
                AttachmentMode::HostDevice,
                &format!("10.{i}.0.2/24"),
                &format!("10.{}.0.0/16", 100 + i),
                Some(100 + i as u32),
            );
            d.mtu = Some(9000);
            d
        })
        .collect();
    plan(claim, pod_uid, devices)
}

#[test]
fn host_device_eight_nics_add_check_del() {
    if !can_run_as_root("host_device_eight_nics_add_check_del") {
        return;
    }
    let host = Ns::new("h");
    let pod = Ns::new("p");
    // Odd NICs up, even NICs down: DEL must restore each as it was.
    add_veths(&host, "hd", 8, |k| k % 2 == 1);
    let state = State::new(&[eight_device_plan("claim-hd8", "pod-hd8")]);
    let conf = state.conf(&format!("rails-{}", tag("a")), "1.1.0");

    let result = cni(&host, &Call::new("ADD", "ctr-hd8", pod.path(), "pod-hd8"), &conf).expect_ok();

    // The result lists net1..net8 in plan order with their IPs.
    let ifs = result["interfaces"].as_array().cloned().unwrap_or_default();
    let names: Vec<&str> = ifs.iter().filter_map(|i| i["name"].as_str()).collect();
    assert_eq!(names, ["net1", "net2", "net3", "net4", "net5", "net6", "net7", "net8"]);
    assert!(
        ifs.iter()
            .all(|i| i["sandbox"] == pod.path().as_str() && i["mtu"] == 9000)
    );
    let ips = result["ips"].as_array().cloned().unwrap_or_default();
    assert_eq!(ips.len(), 8);
    for (i, ip) in ips.iter().enumerate() {
        assert_eq!(ip["address"], format!("10.{}.0.2/24", i + 1));
        assert_eq!(ip["interface"], i);
        assert_eq!(ip["gateway"], format!("10.{}.0.1", i + 1));
    }
    // 1.1 reports the policy-table routes with their table.
    let routes = result["routes"].as_array().cloned().unwrap_or_default();
    assert!(routes.iter().any(|r| r["dst"] == "10.101.0.0/16" && r["table"] == 101));

    // Inside the pod: names, MTU, addresses, up, the original device (by MAC of the host veth).
    for i in 1..=8 {
        let name = format!("net{i}");
        let link = pod.link(&name).unwrap_or_else(|| panic!("{name} missing in pod"));
        assert_eq!(link["mtu"], 9000, "{name}");
        assert!(has_flag(&link, "UP"), "{name} is not up: {link}");
        assert_eq!(link["linkinfo"]["info_kind"], "veth");
        let alias = link["ifalias"].as_str().unwrap_or_default();
        assert!(
            alias.starts_with(&format!("multinic:claim-hd8:hd{}:", 9 - i)),
            "{name} alias {alias}"
        );
        assert_eq!(pod.addrs(&name), [format!("10.{i}.0.2/24")]);
        // Policy routing: table 100+i has the connected route, the planned route and a default.
        let table = (100 + i).to_string();
        let routes = pod.ip_json(&["route", "show", "table", &table]);
        let dsts: Vec<String> = routes
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|r| {
                format!(
                    "{}|{}|{}",
                    r["dst"].as_str().unwrap_or(""),
                    r["gateway"].as_str().unwrap_or(""),
                    r["dev"].as_str().unwrap_or("")
                )
            })
            .collect();
        for want in [
            format!("10.{i}.0.0/24||{name}"),
            format!("10.{}.0.0/16|10.{i}.0.1|{name}", 100 + i),
            format!("default|10.{i}.0.1|{name}"),
        ] {
            assert!(dsts.contains(&want), "table {table} lacks {want}: {dsts:?}");
        }
    }
    let rules = pod.ip_json(&["rule", "show"]);
    for i in 1..=8 {
        let found = rules.as_array().is_some_and(|rs| {
            rs.iter().any(|r| {
                r["priority"] == 1000
                    && r["src"] == format!("10.{i}.0.2")
                    && r["table"].to_string().trim_matches('"') == (100 + i).to_string()
            })
        });
        assert!(found, "no rule from 10.{i}.0.2 lookup {}: {rules}", 100 + i);
    }
    assert!(
        host.link_names()
            .iter()
            .all(|n| !n.starts_with("hd") || n.contains('p')),
        "NICs left on the host"
    );

    // CHECK agrees; a manual change makes it fail naming the device.
    cni(&host, &Call::new("CHECK", "ctr-hd8", pod.path(), "pod-hd8"), &conf).expect_ok();
    pod.ip(&["link", "set", "net3", "mtu", "1400"]);
    let bad = cni(&host, &Call::new("CHECK", "ctr-hd8", pod.path(), "pod-hd8"), &conf);
    assert!(!bad.ok);
    assert_eq!(bad.code(), Some(101));
    assert!(
        bad.stdout["msg"].as_str().unwrap_or("").contains("net3"),
        "{}",
        bad.stdout
    );

    // DEL returns all 8 under their original names, MTU and up/down state.
    cni(&host, &Call::new("DEL", "ctr-hd8", pod.path(), "pod-hd8"), &conf).expect_ok();
    for k in 1..=8 {
        let name = format!("hd{k}");
        let link = host
            .link(&name)
            .unwrap_or_else(|| panic!("{name} not back on the host"));
        assert_eq!(link["mtu"], 1500, "{name}");
        assert_eq!(has_flag(&link, "UP"), k % 2 == 1, "{name} state: {link}");
        assert!(
            link.get("ifalias").is_none_or(|a| a == ""),
            "{name} still marked: {link}"
        );
    }
    assert!(
        pod.link_names().iter().all(|n| !n.starts_with("net")),
        "{:?}",
        pod.link_names()
    );
    let rules = pod.ip_json(&["rule", "show"]);
    assert!(
        !rules
            .as_array()
            .is_some_and(|rs| rs.iter().any(|r| r["priority"] == 1000)),
        "policy rules left: {rules}"
    );
}
