//! Crash matrix of CNI ADD and DEL (issue 8, acceptance 1; design.md §8), through the real binary
//! in private network namespaces.
//!
//! Each fault point (`MULTINIC_CNI_FAULT`, honoured with `MULTINIC_CNI_TEST_MODE=1`) stops the
//! plugin there without rollback, as a crash would. The runtime then does what it does after a
//! failed ADD/DEL: retries ADD on the same sandbox, or DELs and builds a new sandbox (new netns,
//! new container ID) and ADDs there; a failed DEL is retried. After every step that succeeds the
//! invariants hold: every host NIC is in the host netns under its original name (or attached to
//! exactly the live pod), no pod-named or marked link is left on the host, no duplicate IP.

mod common;

use std::collections::HashSet;

use common::*;
use multinic_api::AttachmentMode;

const DEVICES: usize = 3;

/// fm1, fm2 move into the pod (host-device); fm3 stays on the host as a macvlan parent.
fn three(claim: &str, pod_uid: &str) -> multinic_api::Plan {
    let devices = (1..=DEVICES)
        .map(|i| {
            let mode = if i == 3 {
                AttachmentMode::Macvlan
            } else {
                AttachmentMode::HostDevice
            };
            let mut d = device(
                &format!("fm{i}"),
                &format!("net{i}"),
                mode,
                &format!("10.{}.7.2/24", 60 + i),
                &format!("10.{}.0.0/16", 160 + i),
                Some(300 + i as u32),
            );
            d.mtu = Some(1400);
            d
        })
        .collect();
    plan(claim, pod_uid, devices)
}

fn pod_nets(pod: &Ns) -> Vec<String> {
    let mut n: Vec<String> = pod.link_names().into_iter().filter(|n| n.starts_with("net")).collect();
    n.sort();
    n
}

/// Nothing of the pod is attached: host NICs home under their names, with MTU and state restored.
fn assert_detached(case: &str, host: &Ns, pod: &Ns) {
    let names = host.link_names();
    for k in 1..=DEVICES {
        let name = format!("fm{k}");
        let link = host
            .link(&name)
            .unwrap_or_else(|| panic!("{case}: {name} is not in the host netns: {names:?}"));
        assert_eq!(link["mtu"], 1500, "{case}: {name} MTU not restored");
        assert_eq!(
            has_flag(&link, "UP"),
            k != 2,
            "{case}: {name} up/down state not restored"
        );
    }
    assert!(
        names.iter().all(|n| !n.starts_with("net")),
        "{case}: pod-named link on the host: {names:?}"
    );
    assert!(
        marked_links(host).is_empty(),
        "{case}: marked links on the host: {:?}",
        marked_links(host)
    );
    assert!(
        pod_nets(pod).is_empty(),
        "{case}: links left in the pod: {:?}",
        pod_nets(pod)
    );
    assert!(marked_links(pod).is_empty(), "{case}");
}

/// Fully attached to `pod`: net1..3 up with their planned address, nothing pod-named on the host.
fn assert_attached(case: &str, host: &Ns, pod: &Ns) {
    assert_eq!(pod_nets(pod), ["net1", "net2", "net3"], "{case}");
    let mut seen = HashSet::new();
    for k in 1..=DEVICES {
        let name = format!("net{k}");
        let addrs = pod.addrs(&name);
        assert_eq!(addrs, [format!("10.{}.7.2/24", 60 + k)], "{case}: {name} addresses");
        assert!(
            addrs.iter().all(|a| seen.insert(a.clone())),
            "{case}: duplicate IP {addrs:?}"
        );
        assert!(
            has_flag(&pod.link(&name).unwrap_or_default(), "UP"),
            "{case}: {name} down"
        );
    }
    let names = host.link_names();
    assert!(
        names.iter().all(|n| !n.starts_with("net")),
        "{case}: pod-named link on the host: {names:?}"
    );
    assert!(
        host.link("fm3").is_some(),
        "{case}: the macvlan parent stays on the host"
    );
    assert!(host.link("fm1").is_none() && host.link("fm2").is_none(), "{case}");
    assert!(marked_links(host).is_empty(), "{case}");
}

#[derive(Debug, Clone, Copy)]
enum Recovery {
    /// The runtime retries ADD on the same sandbox (e.g. it restarted while the plugin ran).
    RetryAdd,
    /// The runtime DELs the failed attachment, then ADDs in a new sandbox.
    DelThenNewSandbox,
    /// A failed DEL is retried.
    RetryDel,
}

fn run_case(fault: &str, recovery: Recovery) {
    let case = format!("{fault} / {recovery:?}");
    // The N of the fault: how far the crashed command got.
    let n: usize = fault.rsplit('-').next().and_then(|n| n.parse().ok()).unwrap_or(0);
    let first = |k: usize| (1..=k).map(|i| format!("net{i}")).collect::<Vec<_>>();
    let host = Ns::new("h");
    let pod = Ns::new("p");
    add_veths(&host, "fm", DEVICES, |k| k != 2);
    let state = State::new(&[three("claim-fm", "pod-fm")]);
    let conf = state.conf(&format!("fm-{}", tag("n")), "1.1.0");
    let call = |c, ctr, pod: &Ns| Call::new(c, ctr, pod.path(), "pod-fm");
    let faulty = |c| {
        call(c, "ctr-fm1", &pod)
            .with("MULTINIC_CNI_TEST_MODE", "1")
            .with("MULTINIC_CNI_FAULT", fault)
    };

    if matches!(recovery, Recovery::RetryDel) {
        cni(&host, &call("ADD", "ctr-fm1", &pod), &conf).expect_ok();
        assert_attached(&case, &host, &pod);
        let crashed = cni(&host, &faulty("DEL"), &conf);
        assert_eq!(
            crashed.code(),
            Some(199),
            "{case}: fault not injected: {}",
            crashed.stdout
        );
        assert_eq!(pod_nets(&pod).len(), DEVICES - n, "{case}: DEL stopped after {n} links");
        cni(&host, &call("DEL", "ctr-fm1", &pod), &conf).expect_ok();
        assert_detached(&case, &host, &pod);
        return;
    }

    let crashed = cni(&host, &faulty("ADD"), &conf);
    assert_eq!(
        crashed.code(),
        Some(199),
        "{case}: fault not injected: {}",
        crashed.stdout
    );
    assert_eq!(pod_nets(&pod), first(n), "{case}: ADD stopped at device {n}");
    if fault.starts_with("after-addresses") {
        let link = pod.link(&format!("net{n}")).unwrap_or_default();
        assert!(!has_flag(&link, "UP"), "{case}: stopped before the device is up");
    }
    assert!(
        host.link_names().iter().all(|n| !n.starts_with("net")),
        "{case}: even mid-ADD nothing is pod-named on the host"
    );
    match recovery {
        Recovery::RetryAdd => {
            let result = cni(&host, &call("ADD", "ctr-fm1", &pod), &conf).expect_ok();
            assert_eq!(result["interfaces"].as_array().map(Vec::len), Some(DEVICES), "{case}");
            assert_attached(&case, &host, &pod);
            cni(&host, &call("CHECK", "ctr-fm1", &pod), &conf).expect_ok();
            cni(&host, &call("DEL", "ctr-fm1", &pod), &conf).expect_ok();
            assert_detached(&case, &host, &pod);
        }
        Recovery::DelThenNewSandbox => {
            cni(&host, &call("DEL", "ctr-fm1", &pod), &conf).expect_ok();
            assert_detached(&case, &host, &pod);
            let sandbox = Ns::new("p");
            cni(&host, &call("ADD", "ctr-fm2", &sandbox), &conf).expect_ok();
            assert_attached(&case, &host, &sandbox);
            assert!(pod_nets(&pod).is_empty(), "{case}: the old sandbox got nothing back");
            cni(&host, &call("DEL", "ctr-fm2", &sandbox), &conf).expect_ok();
            assert_detached(&case, &host, &sandbox);
        }
        Recovery::RetryDel => unreachable!(),
    }
}

#[test]
fn every_add_and_del_fault_point_recovers() {
    if !can_run_as_root("every_add_and_del_fault_point_recovers") {
        return;
    }
    let mut cases = Vec::new();
    for k in 1..=DEVICES {
        for step in ["after-device", "after-addresses", "after-routes"] {
            for recovery in [Recovery::RetryAdd, Recovery::DelThenNewSandbox] {
                cases.push((format!("{step}-{k}"), recovery));
            }
        }
        cases.push((format!("del-after-device-{k}"), Recovery::RetryDel));
    }
    let points: HashSet<&str> = cases.iter().map(|(f, _)| f.as_str()).collect();
    let mut survived = 0;
    for (fault, recovery) in &cases {
        run_case(fault, *recovery);
        survived += 1;
    }
    println!(
        "cni fault matrix: survived {}/{} fault points ({survived}/{} crash-and-recover cases)",
        points.len(),
        points.len(),
        cases.len()
    );
    assert_eq!(survived, cases.len());
}
