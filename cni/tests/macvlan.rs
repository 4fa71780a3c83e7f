//! Acceptance 2: macvlan children on 2 shared parents, 4 pods.

mod common;

use common::*;
use multinic_api::AttachmentMode;
use serde_json::Value;

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
    if !can_run_as_root("macvlan_two_parents_four_pods") {
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
    if !can_run_as_root("macvlan_unmarked_child_is_adopted_and_foreign_link_refused") {
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

/// IPv6 link-local addresses and their routes come and go with the kernel's autoconfiguration
/// (a device returned to the host gets a new one, tentative until DAD ends); none is ours.
fn without_link_local(v: Value) -> Value {
    let is_link_local = |x: &Value| {
        ["dst", "local"]
            .iter()
            .any(|k| x[*k].as_str().is_some_and(|a| a.starts_with("fe80") || a == "ff00::/8"))
    };
    match v {
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .filter(|x| !is_link_local(x))
                .map(without_link_local)
                .collect(),
        ),
        Value::Object(mut map) => {
            if let Some(info) = map.remove("addr_info") {
                map.insert("addr_info".into(), without_link_local(info));
            }
            Value::Object(map)
        }
        other => other,
    }
}

/// What an attachment can leave in a netns: every link (name, kind, group, alias, MTU, flags),
/// every address, every route of every table, every policy rule (IPv6 link-local ones aside).
fn netns_state(ns: &Ns) -> Value {
    let links: Vec<Value> = ns
        .links()
        .iter()
        .map(|l| {
            serde_json::json!([
                l["ifname"],
                l["linkinfo"]["info_kind"],
                l["group"],
                l["ifalias"],
                l["mtu"],
                l["flags"]
            ])
        })
        .collect();
    serde_json::json!({
        "links": links,
        "addrs": without_link_local(ns.ip_json(&["addr", "show"]))
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| serde_json::json!([a["ifname"], a["addr_info"]]))
            .collect::<Vec<_>>(),
        "routes4": ns.ip_json(&["-4", "route", "show", "table", "all"]),
        "routes6": without_link_local(ns.ip_json(&["-6", "route", "show", "table", "all"])),
        "rules4": ns.ip_json(&["-4", "rule", "show"]),
        "rules6": ns.ip_json(&["-6", "rule", "show"]),
    })
}

fn eight_children(claim: &str, pod_uid: &str) -> multinic_api::Plan {
    let devices = (1..=8)
        .map(|i| {
            device(
                &format!("gd{i}"),
                &format!("net{i}"),
                AttachmentMode::Macvlan,
                &format!("10.{}.3.2/24", 70 + i),
                &format!("10.{}.0.0/16", 170 + i),
                Some(400 + i as u32),
            )
        })
        .collect();
    plan(claim, pod_uid, devices)
}

/// Issue 17: the 8 children of one attachment share its link group; DEL deletes them (one
/// RTM_DELLINK by group) and their policy rules, and leaves both netns exactly as before ADD.
#[test]
fn macvlan_del_by_group_leaves_nothing_behind() {
    if !can_run_as_root("macvlan_del_by_group_leaves_nothing_behind") {
        return;
    }
    let host = Ns::new("h");
    add_veths(&host, "gd", 8, |_| true);
    let pod = Ns::new("p");
    let state = State::new(&[eight_children("claim-gd", "pod-gd")]);
    let conf = state.conf(&format!("grp-{}", tag("g")), "1.0.0");
    let call = |c| Call::new(c, "ctr-gd", pod.path(), "pod-gd");
    let (host_before, pod_before) = (netns_state(&host), netns_state(&pod));

    cni(&host, &call("ADD"), &conf).expect_ok();
    let groups: Vec<Value> = (1..=8)
        .map(|i| pod.link(&format!("net{i}")).unwrap_or_default()["group"].clone())
        .collect();
    assert!(groups.iter().all(|g| *g == groups[0]), "one group: {groups:?}");
    assert_ne!(groups[0], "default", "the children are not in the default group");
    let rules = pod.ip_json(&["-4", "rule", "show"]);
    assert_eq!(
        rules
            .as_array()
            .map_or(0, |r| r.iter().filter(|r| r["priority"] == 1000).count()),
        8,
        "{rules}"
    );
    assert_ne!(netns_state(&pod), pod_before);

    cni(&host, &call("DEL"), &conf).expect_ok();
    assert_eq!(netns_state(&pod), pod_before, "DEL left something in the pod");
    assert_eq!(netns_state(&host), host_before, "DEL changed the host");
    cni(&host, &call("DEL"), &conf).expect_ok();
    assert_eq!(netns_state(&pod), pod_before);
}

/// A link of someone else in the attachment's group: DEL must not delete it (no group delete),
/// and still removes every child of ours, one by one.
#[test]
fn macvlan_del_spares_a_foreign_link_in_the_group() {
    if !can_run_as_root("macvlan_del_spares_a_foreign_link_in_the_group") {
        return;
    }
    let host = Ns::new("h");
    add_veths(&host, "gd", 8, |_| true);
    let pod = Ns::new("p");
    let state = State::new(&[eight_children("claim-gf", "pod-gf")]);
    let conf = state.conf(&format!("grp-{}", tag("f")), "1.0.0");
    let call = |c| Call::new(c, "ctr-gf", pod.path(), "pod-gf");
    let host_before = netns_state(&host);
    pod.ip(&["link", "add", "other", "type", "veth", "peer", "name", "other-p"]);
    let pod_before = netns_state(&pod);

    cni(&host, &call("ADD"), &conf).expect_ok();
    let group = pod.link("net1").unwrap_or_default()["group"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    pod.ip(&["link", "set", "other", "group", &group]);
    cni(&host, &call("DEL"), &conf).expect_ok();
    let other = pod
        .link("other")
        .unwrap_or_else(|| panic!("the foreign link was deleted"));
    assert_eq!(other["group"], group.as_str());
    pod.ip(&["link", "set", "other", "group", "default"]);
    assert_eq!(netns_state(&pod), pod_before, "DEL left something in the pod");
    assert_eq!(netns_state(&host), host_before, "DEL changed the host");
}

/// Children and moved devices in one attachment: the children go by group, the moved devices
/// return to the host; nothing is left on either side.
#[test]
fn mixed_host_device_and_macvlan_del_leaves_nothing_behind() {
    if !can_run_as_root("mixed_host_device_and_macvlan_del_leaves_nothing_behind") {
        return;
    }
    let host = Ns::new("h");
    add_veths(&host, "gd", 5, |k| k != 2);
    let pod = Ns::new("p");
    let mut mixed = eight_children("claim-gm", "pod-gm");
    mixed.devices.truncate(5);
    for d in &mut mixed.devices[..2] {
        d.mode = AttachmentMode::HostDevice;
    }
    let state = State::new(&[mixed]);
    let conf = state.conf(&format!("grp-{}", tag("m")), "1.0.0");
    let call = |c| Call::new(c, "ctr-gm", pod.path(), "pod-gm");
    let (host_before, pod_before) = (netns_state(&host), netns_state(&pod));

    cni(&host, &call("ADD"), &conf).expect_ok();
    assert_eq!(pod.link_names().len(), 6, "{:?}", pod.link_names());
    assert_eq!(
        pod.link("net1").unwrap_or_default()["group"],
        "default",
        "moved devices keep their group"
    );
    cni(&host, &call("DEL"), &conf).expect_ok();
    assert_eq!(netns_state(&pod), pod_before, "DEL left something in the pod");
    assert_eq!(netns_state(&host), host_before, "DEL did not restore the host");
}
