//! `multinic crd` prints exactly the committed CRDs: `deploy/crds.yaml` and the Helm chart's copy.

#[test]
fn multinic_crd_prints_the_committed_crds() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_multinic"))
        .arg("crd")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for file in ["deploy/crds.yaml", "deploy/helm/multinic-dra/crds/crds.yaml"] {
        let committed =
            std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(file)).unwrap();
        assert!(
            String::from_utf8_lossy(&out.stdout) == committed,
            "{file} is stale: multinic crd | tee deploy/crds.yaml deploy/helm/multinic-dra/crds/crds.yaml"
        );
    }
}
