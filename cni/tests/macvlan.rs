//! Acceptance 2: macvlan children on 2 shared parents, 4 pods.

mod common;

use common::*;
use multinic_api::AttachmentMode;

fn pod_plan(p: usize, mtu: u32) -> multinic_api::Plan {
    let devices = (1..=2)
        .map(|i| {
            let mut d = device(
                &format!("mv{i}"),
                &format!("net{i}"),
                AttachmentMode::Macvlan,
                &format!("172.{}.0.{}/24", 16 + i, 10 + p),
                &format!("172.{}.0.0/16", 20 + i),
                Some(10 * p as u32 + i as u32),
            );
            d.mtu = Some(mtu);
            d
        })
        .collect();
    plan(&format!("claim-mv{p}"), &format!("pod-mv{p}"), devices)
}

#[test]
fn macvlan_two_parents_four_pods() {
    if !require_root("macvlan_two_parents_four_pods") {
        return;
    }
    let host = Ns::new("h");
    add_veths(&host, "mv", 2, |_| true);
    for parent in ["mv1", "mv2"] {
        host.ip(&["link", "set", parent, "mtu", "9000"]);
    }
    let pods: Vec<Ns> = (1..=4).map(|_| Ns::new("p")).collect();
    let mut plans: Vec<_> = (1..=4).map(|p| pod_plan(p, 9000)).collect();
    plans.push(pod_plan(5, 9001));
    let state = State::new(&plans);
    let conf = state.conf(&format!("shared-{}", tag("m")), "1.0.0");
    let call = |c, p: usize, pod: &Ns| -> Outcome {
        let ctr = format!("ctr-mv{p}");
        let uid = format!("pod-mv{p}");
        cni(&host, &Call::new(c, &ctr, pod.path(), &uid), &conf)
    };

    for (k, pod) in pods.iter().enumerate() {
        let p = k + 1;
        let result = call("ADD", p, pod).expect_ok();
        assert_eq!(result["interfaces"][1]["name"], "net2");
        for i in 1..=2 {
            let name = format!("net{i}");
            let link = pod.link(&name).unwrap_or_else(|| panic!("pod {p}: {name} missing"));
            assert_eq!(link["linkinfo"]["info_kind"], "macvlan", "{link}");
            assert_eq!(link["linkinfo"]["info_data"]["mode"], "bridge", "{link}");
            assert_eq!(link["mtu"], 9000);
            assert!(has_flag(&link, "UP"));
            assert_eq!(pod.addrs(&name), [format!("172.{}.0.{}/24", 16 + i, 10 + p)]);
            let mac = result["interfaces"][i - 1]["mac"].as_str().unwrap_or_default();
            assert_eq!(link["address"], mac, "result MAC matches the link");
        }
        let table = (10 * p + 1).to_string();
        let routes = pod.ip_json(&["route", "show", "table", &table]);
        assert!(
            routes
                .as_array()
                .is_some_and(|r| r.iter().any(|r| r["dst"] == "default" && r["dev"] == "net1")),
            "pod {p} table {table}: {routes}"
        );
        call("CHECK", p, pod).expect_ok();
    }
    // The parents stay on the host, shared.
    assert!(host.link("mv1").is_some() && host.link("mv2").is_some());

    // An MTU above the parent's is refused, naming the device and the fix.
    let extra = Ns::new("p");
    let refused = call("ADD", 5, &extra);
    assert!(!refused.ok);
    assert_eq!(refused.code(), Some(102));
    let msg = refused.stdout["msg"].as_str().unwrap_or_default();
    assert!(
        msg.contains("mv1") && msg.contains("9001") && msg.contains("9000"),
        "{msg}"
    );
    assert!(extra.link_names().iter().all(|n| n == "lo"));

    for (k, pod) in pods.iter().enumerate() {
        call("DEL", k + 1, pod).expect_ok();
        call("DEL", k + 1, pod).expect_ok();
        assert!(pod.link_names().iter().all(|n| n == "lo"), "{:?}", pod.link_names());
    }
    let parent = host.link("mv1").unwrap_or_default();
    assert_eq!(parent["mtu"], 9000);
    assert!(has_flag(&parent, "UP"));
    assert!(marked_links(&host).is_empty());
}

/// A crash between creating a child and marking it leaves an unmarked macvlan under the planned
/// name; the retried ADD adopts it and DEL removes it. A foreign link under that name is refused.
#[test]
fn macvlan_unmarked_child_is_adopted_and_foreign_link_refused() {
    if !require_root("macvlan_unmarked_child_is_adopted_and_foreign_link_refused") {
        return;
    }
    let host = Ns::new("h");
    add_veths(&host, "mv", 2, |_| true);
    for parent in ["mv1", "mv2"] {
        host.ip(&["link", "set", parent, "mtu", "9000"]);
    }
    let pod = Ns::new("p");
    let state = State::new(&[pod_plan(1, 9000)]);
    let conf = state.conf(&format!("shared-{}", tag("u")), "1.0.0");
    let call = |c| Call::new(c, "ctr-mvu", pod.path(), "pod-mv1");
    host.ip(&[
        "link", "add", "link", "mv1", "name", "net1", "netns", &pod.name, "type", "macvlan", "mode", "bridge",
    ]);
    cni(&host, &call("ADD"), &conf).expect_ok();
    let alias = pod.link("net1").unwrap_or_default()["ifalias"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(alias.starts_with("multinic:claim-mv1:mv1:"), "{alias}");
    cni(&host, &call("DEL"), &conf).expect_ok();
    assert!(pod.link_names().iter().all(|n| n == "lo"), "{:?}", pod.link_names());

    // A link we did not create (a veth) under the planned name is never taken over.
    pod.ip(&["link", "add", "net1", "type", "veth", "peer", "name", "other"]);
    let refused = cni(&host, &call("ADD"), &conf);
    assert!(!refused.ok);
    assert_eq!(refused.code(), Some(102));
    assert!(refused.stdout["msg"].as_str().unwrap_or_default().contains("net1"));
    assert!(pod.link("net1").is_some(), "the foreign link is untouched");
    assert!(pod.link("net2").is_none(), "the failed ADD was rolled back");
}
