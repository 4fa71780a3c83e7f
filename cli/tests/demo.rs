//! `multinic demo` as a user would run it: as root it exits 0 with net1..netm rail-ordered and a
//! clean teardown; not as root it exits non-zero with a clear message.

use multinic_testkit::fixtures;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

#[test]
fn demo_runs_end_to_end_as_root() {
    if !fixtures::can_run_as_root("demo_runs_end_to_end_as_root") {
        return;
    }
    let exe = Path::new(env!("CARGO_BIN_EXE_multinic"));
    let dir = exe.parent().unwrap();
    let out = Command::new(exe)
        .args(["demo", "--nics", "3", "--plugin-bin"])
        .arg(dir.join("multinic-kubelet-plugin"))
        .arg("--cni-bin")
        .arg(dir.join("multinic-cni"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (k, block) in ["10.10.7.0/29", "10.10.7.8/29", "10.10.7.16/29"].iter().enumerate() {
        assert!(
            stdout.contains(&format!("net{}: ", k + 1)) && stdout.contains(&format!("(host 7, rail {k}) {block}")),
            "{stdout}"
        );
    }
    assert!(stdout.contains("clean: every NIC back in the node"), "{stdout}");
}

#[test]
fn demo_refuses_to_run_without_root() {
    if !fixtures::can_run_as_root("demo_refuses_to_run_without_root") {
        return;
    }
    // Drop to an unprivileged user for the child only.
    let out = Command::new(env!("CARGO_BIN_EXE_multinic"))
        .arg("demo")
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("multinic demo needs root"), "{stderr}");
}
