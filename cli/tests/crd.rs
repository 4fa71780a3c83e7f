//! `multinic crd` prints exactly the committed `deploy/crds.yaml`.

#[test]
fn multinic_crd_prints_the_committed_crds() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_multinic"))
        .arg("crd")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let committed =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/crds.yaml")).unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout) == committed,
        "deploy/crds.yaml is stale: multinic crd > deploy/crds.yaml"
    );
}
