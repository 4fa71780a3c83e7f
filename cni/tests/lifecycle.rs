//! Acceptance 4: idempotency, DEL in odd states, crash (fault injection) and retry; plus GC,
//! netns checks and the no-plan pass-through through the real binary.

mod common;

use common::*;
use multinic_api::AttachmentMode;
use multinic_cni::alias::{LinkKind, Mark, attachment_key, network_key};
use serde_json::json;

fn five(claim: &str, pod_uid: &str, prefix: &str) -> multinic_api::Plan {
    let devices = (1..=5)
        .map(|i| {
            device(
                &format!("{prefix}{i}"),
                &format!("net{i}"),
                AttachmentMode::HostDevice,
                &format!("10.{i}.1.2/24"),
                &format!("10.{}.0.0/16", 200 + i),
                Some(200 + i as u32),
            )
        })
        .collect();
    plan(claim, pod_uid, devices)
}

/// Host NICs `<prefix>1..=n` are back, unmarked, and no host link carries a pod name.
fn assert_host_restored(host: &Ns, prefix: &str, n: usize) {
    let names = host.link_names();
    for k in 1..=n {
        assert!(
            names.contains(&format!("{prefix}{k}")),
            "{prefix}{k} missing on host: {names:?}"
        );
    }
    assert!(
        names.iter().all(|n| !n.starts_with("net")),
        "host device left under a pod name: {names:?}"
    );
    assert!(
        marked_links(host).is_empty(),
        "marked links on host: {:?}",
        marked_links(host)
    );
}

fn pod_nets(pod: &Ns) -> Vec<String> {
    pod.link_names().into_iter().filter(|n| n.starts_with("net")).collect()
}

#[test]
fn add_twice_del_twice() {
    if !can_run_as_root("add_twice_del_twice") {
        return;
    }
    let host = Ns::new("h");
    let pod = Ns::new("p");
    add_veths(&host, "ld", 5, |_| true);
    let state = State::new(&[five("claim-twice", "pod-twice", "ld")]);
    let conf = state.conf(&format!("rails-{}", tag("t")), "1.0.0");
    let call = |c| Call::new(c, "ctr-twice", pod.path(), "pod-twice");
    let first = cni(&host, &call("ADD"), &conf).expect_ok();
    let second = cni(&host, &call("ADD"), &conf).expect_ok();
    assert_eq!(first, second, "a repeated ADD gives the same result");
    assert_eq!(pod_nets(&pod).len(), 5);
    cni(&host, &call("CHECK"), &conf).expect_ok();
    cni(&host, &call("DEL"), &conf).expect_ok();
    cni(&host, &call("DEL"), &conf).expect_ok();
    assert!(pod_nets(&pod).is_empty());
    assert_host_restored(&host, "ld", 5);
}

#[test]
fn del_without_add_and_without_netns() {
    if !can_run_as_root("del_without_add_and_without_netns") {
        return;
    }
    let host = Ns::new("h");
    let pod = Ns::new("p");
    let state = State::new(&[]);
    let conf = state.conf(&format!("rails-{}", tag("d")), "1.0.0");
    cni(&host, &Call::new("DEL", "ctr-none", pod.path(), "pod-none"), &conf).expect_ok();
    cni(&host, &Call::new("DEL", "ctr-none", String::new(), "pod-none"), &conf).expect_ok();
    cni(
        &host,
        &Call::new("DEL", "ctr-none", "/run/netns/does-not-exist-mn".into(), "pod-none"),
        &conf,
    )
    .expect_ok();
}

#[test]
fn del_after_the_netns_is_gone() {
    if !can_run_as_root("del_after_the_netns_is_gone") {
        return;
    }
    let host = Ns::new("h");
    let mut pod = Ns::new("p");
    add_veths(&host, "gd", 5, |_| true);
    let state = State::new(&[five("claim-gone", "pod-gone", "gd")]);
    let conf = state.conf(&format!("rails-{}", tag("g")), "1.0.0");
    let path = pod.path();
    cni(&host, &Call::new("ADD", "ctr-gone", path.clone(), "pod-gone"), &conf).expect_ok();
    pod.delete();
    // veths die with their netns; physical NICs come back to the root netns (see the next test).
    cni(&host, &Call::new("DEL", "ctr-gone", path, "pod-gone"), &conf).expect_ok();
    let names = host.link_names();
    assert!(names.iter().all(|n| !n.starts_with("net")), "{names:?}");
    assert!(marked_links(&host).is_empty());
}

/// A physical NIC whose pod netns died comes back to the host under its pod name; DEL (and GC)
/// must rename it back, restore its MTU and state and drop the mark.
#[test]
fn del_restores_a_nic_returned_under_its_pod_name() {
    if !can_run_as_root("del_restores_a_nic_returned_under_its_pod_name") {
        return;
    }
    let host = Ns::new("h");
    let network = format!("rails-{}", tag("r"));
    let state = State::new(&[]);
    let conf = state.conf(&network, "1.0.0");
    host.ip(&["link", "add", "net1", "type", "veth", "peer", "name", "rp1"]);
    host.ip(&["link", "set", "net1", "mtu", "9000"]);
    let mark = Mark {
        claim_uid: "claim-ret".into(),
        host_if_name: "rnic0".into(),
        network: network_key(&network),
        attachment: attachment_key(&network, "ctr-ret", "eth0"),
        kind: LinkKind::Moved,
        host_was_up: true,
        host_mtu: 1500,
    };
    host.ip(&["link", "set", "net1", "alias", &mark.to_string()]);
    cni(
        &host,
        &Call::new("DEL", "ctr-ret", "/run/netns/gone-mn".into(), "pod-ret"),
        &conf,
    )
    .expect_ok();
    let link = host
        .link("rnic0")
        .unwrap_or_else(|| panic!("not renamed back: {:?}", host.link_names()));
    assert_eq!(link["mtu"], 1500);
    assert!(has_flag(&link, "UP"));
    assert!(host.link("net1").is_none());
    assert!(marked_links(&host).is_empty());
}

#[test]
fn crash_after_third_device_then_del_then_add() {
    if !can_run_as_root("crash_after_third_device_then_del_then_add") {
        return;
    }
    let host = Ns::new("h");
    let pod = Ns::new("p");
    add_veths(&host, "fd", 5, |k| k != 2);
    let state = State::new(&[five("claim-fault", "pod-fault", "fd")]);
    let conf = state.conf(&format!("rails-{}", tag("f")), "1.0.0");
    let call = |c| Call::new(c, "ctr-fault", pod.path(), "pod-fault");

    let crashed = cni(
        &host,
        &call("ADD")
            .with("MULTINIC_CNI_TEST_MODE", "1")
            .with("MULTINIC_CNI_FAULT", "after-device-3"),
        &conf,
    );
    assert!(!crashed.ok, "fault was not injected: {}", crashed.stdout);
    assert_eq!(crashed.code(), Some(199));
    assert_eq!(pod_nets(&pod), ["net1", "net2", "net3"], "aborted after the 3rd device");

    // Without test mode the hook is ignored.
    let ignored = cni(&host, &call("ADD").with("MULTINIC_CNI_FAULT", "after-device-1"), &conf);
    if cfg!(feature = "fault-injection") {
        assert!(!ignored.ok);
    } else {
        ignored.expect_ok();
        assert_eq!(pod_nets(&pod).len(), 5);
    }

    cni(&host, &call("DEL"), &conf).expect_ok();
    assert!(pod_nets(&pod).is_empty());
    assert_host_restored(&host, "fd", 5);
    assert!(
        !has_flag(&host.link("fd2").unwrap_or_default(), "UP"),
        "fd2 was down before"
    );

    let result = cni(&host, &call("ADD"), &conf).expect_ok();
    assert_eq!(result["interfaces"].as_array().map(Vec::len), Some(5));
    assert_eq!(pod_nets(&pod).len(), 5);
    cni(&host, &call("DEL"), &conf).expect_ok();
    assert_host_restored(&host, "fd", 5);
}

#[test]
fn gc_reverts_only_invalid_attachments() {
    if !can_run_as_root("gc_reverts_only_invalid_attachments") {
        return;
    }
    let host = Ns::new("h");
    let pod_a = Ns::new("pa");
    let pod_b = Ns::new("pb");
    add_veths(&host, "ga", 2, |_| true);
    add_veths(&host, "gb", 2, |_| true);
    let two = |claim: &str, pod_uid: &str, prefix: &str| {
        let mut p = five(claim, pod_uid, prefix);
        p.devices.truncate(2);
        p
    };
    let state = State::new(&[two("claim-ga", "pod-ga", "ga"), two("claim-gb", "pod-gb", "gb")]);
    let network = format!("rails-{}", tag("gc"));
    let conf = state.conf(&network, "1.1.0");
    cni(&host, &Call::new("ADD", "ctr-ga", pod_a.path(), "pod-ga"), &conf).expect_ok();
    cni(&host, &Call::new("ADD", "ctr-gb", pod_b.path(), "pod-gb"), &conf).expect_ok();

    let mut gc_conf = conf.clone();
    gc_conf["cni.dev/valid-attachments"] = json!([{"containerID": "ctr-ga", "ifname": "eth0"}]);
    cni(&host, &Call::new("GC", "", String::new(), ""), &gc_conf).expect_ok();
    assert_eq!(pod_nets(&pod_a), ["net1", "net2"], "valid attachment kept");
    assert!(pod_nets(&pod_b).is_empty(), "invalid attachment removed");
    assert!(host.link("gb1").is_some() && host.link("gb2").is_some());
    assert!(host.link("ga1").is_none());

    // GC without a valid list refuses rather than removing everything.
    let refused = cni(&host, &Call::new("GC", "", String::new(), ""), &conf);
    assert!(!refused.ok);
    assert_eq!(pod_nets(&pod_a).len(), 2);
    cni(&host, &Call::new("DEL", "ctr-ga", pod_a.path(), "pod-ga"), &conf).expect_ok();
    assert_host_restored(&host, "ga", 2);
}

#[test]
fn refuses_a_netns_that_is_not_a_netns() {
    if !can_run_as_root("refuses_a_netns_that_is_not_a_netns") {
        return;
    }
    let host = Ns::new("h");
    add_veths(&host, "nd", 1, |_| true);
    let mut p = five("claim-nn", "pod-nn", "nd");
    p.devices.truncate(1);
    let state = State::new(&[p]);
    let conf = state.conf(&format!("rails-{}", tag("n")), "1.0.0");
    let file = state.path().join("not-a-netns");
    std::fs::write(&file, b"").unwrap_or_else(|e| panic!("{e}"));
    for bad in [file.display().to_string(), "/proc/self/ns/mnt".to_string()] {
        let out = cni(&host, &Call::new("ADD", "ctr-nn", bad.clone(), "pod-nn"), &conf);
        assert!(!out.ok, "{bad} accepted");
        assert_eq!(out.code(), Some(4), "{}", out.stdout);
        assert!(
            out.stdout["msg"]
                .as_str()
                .unwrap_or("")
                .contains("not a network namespace")
        );
    }
    assert!(host.link("nd1").is_some(), "nothing was moved");
}

#[test]
fn no_plan_passes_prev_result_through_the_binary() {
    if !can_run_as_root("no_plan_passes_prev_result_through_the_binary") {
        return;
    }
    let host = Ns::new("h");
    let pod = Ns::new("p");
    let state = State::new(&[]);
    let mut conf = state.conf("k8s-pod-network", "1.0.0");
    let prev = json!({
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "eth0", "sandbox": pod.path()}],
        "ips": [{"address": "10.244.1.7/24", "interface": 0}],
    });
    conf["prevResult"] = prev.clone();
    let out = cni(&host, &Call::new("ADD", "ctr-np", pod.path(), "pod-np"), &conf).expect_ok();
    assert_eq!(out, prev);
    let version = cni(
        &host,
        &Call::new("VERSION", "", String::new(), ""),
        &json!({"cniVersion": "1.1.0"}),
    );
    assert_eq!(version.expect_ok()["supportedVersions"], json!(["1.0.0", "1.1.0"]));
    cni(&host, &Call::new("STATUS", "", String::new(), ""), &conf).expect_ok();
}
