//! Acceptance 5 (kernel part): ipvlan children for real where the kernel has ipvlan. The
//! message-level tests (IFLA_INFO_KIND "ipvlan", IFLA_IPVLAN_MODE, IFLA_LINK) are unit tests in
//! `src/nl.rs` and run everywhere.

mod common;

use common::*;
use multinic_api::AttachmentMode;

#[test]
fn ipvlan_l2_and_l3_where_supported() {
    if !can_run_as_root("ipvlan_l2_and_l3_where_supported") {
        return;
    }
    let host = Ns::new("h");
    add_veths(&host, "iv", 2, |_| true);
    if !host.ip_status(&["link", "add", "ivprobe", "link", "iv1", "type", "ipvlan", "mode", "l2"]) {
        eprintln!("SKIP ipvlan_l2_and_l3_where_supported: this kernel has no ipvlan link type");
        return;
    }
    host.ip(&["link", "del", "ivprobe"]);
    let pod = Ns::new("p");
    let mut l2 = device(
        "iv1",
        "net1",
        AttachmentMode::IpvlanL2,
        "10.50.0.2/24",
        "10.60.0.0/16",
        None,
    );
    l2.mtu = Some(1500);
    let l3 = device(
        "iv2",
        "net2",
        AttachmentMode::IpvlanL3,
        "10.51.0.2/24",
        "10.61.0.0/16",
        Some(151),
    );
    let state = State::new(&[plan("claim-iv", "pod-iv", vec![l2, l3])]);
    let conf = state.conf(&format!("iv-{}", tag("i")), "1.0.0");
    let call = |c| Call::new(c, "ctr-iv", pod.path(), "pod-iv");
    cni(&host, &call("ADD"), &conf).expect_ok();
    for (name, mode) in [("net1", "l2"), ("net2", "l3")] {
        let link = pod.link(name).unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(link["linkinfo"]["info_kind"], "ipvlan");
        assert_eq!(link["linkinfo"]["info_data"]["mode"], mode);
    }
    cni(&host, &call("CHECK"), &conf).expect_ok();
    cni(&host, &call("DEL"), &conf).expect_ok();
    assert!(pod.link_names().iter().all(|n| n == "lo"));
}

/// Where ipvlan is missing, ADD fails with an error that names the device and the cause.
#[test]
fn ipvlan_missing_link_type_is_a_clear_error() {
    if !can_run_as_root("ipvlan_missing_link_type_is_a_clear_error") {
        return;
    }
    let host = Ns::new("h");
    add_veths(&host, "iv", 1, |_| true);
    if host.ip_status(&["link", "add", "ivprobe", "link", "iv1", "type", "ipvlan", "mode", "l2"]) {
        eprintln!("SKIP ipvlan_missing_link_type_is_a_clear_error: this kernel has ipvlan");
        return;
    }
    let pod = Ns::new("p");
    let d = device(
        "iv1",
        "net1",
        AttachmentMode::IpvlanL3,
        "10.52.0.2/24",
        "10.62.0.0/16",
        None,
    );
    let state = State::new(&[plan("claim-ivx", "pod-ivx", vec![d])]);
    let conf = state.conf(&format!("iv-{}", tag("x")), "1.0.0");
    let out = cni(&host, &Call::new("ADD", "ctr-ivx", pod.path(), "pod-ivx"), &conf);
    assert!(!out.ok);
    assert_eq!(out.code(), Some(100));
    let msg = out.stdout["msg"].as_str().unwrap_or_default();
    eprintln!("ADD error: {msg}");
    assert!(msg.contains("iv1") && msg.contains("ipvlan"), "{msg}");
    assert!(pod.link_names().iter().all(|n| n == "lo"));
}
