//! Acceptance 3: chained after the reference `bridge` + `host-local` plugins in one conflist,
//! executed the way a runtime does (ADD in order with prevResult, DEL in reverse order).

mod common;

use std::path::{Path, PathBuf};

use common::*;
use multinic_api::AttachmentMode;
use serde_json::{Value, json};

const REFERENCE_PLUGINS: &str = "/usr/lib/cni";

/// A minimal runtime: runs every plugin of `conflist` for `command`.
struct Runtime {
    cni_path: PathBuf,
    conflist: Value,
}

impl Runtime {
    fn plugin_conf(&self, plugin: &Value, prev: Option<&Value>) -> Value {
        let mut conf = plugin.clone();
        conf["cniVersion"] = self.conflist["cniVersion"].clone();
        conf["name"] = self.conflist["name"].clone();
        if let Some(prev) = prev {
            conf["prevResult"] = prev.clone();
        }
        conf
    }

    fn plugins(&self) -> Vec<Value> {
        self.conflist["plugins"].as_array().cloned().unwrap_or_default()
    }

    fn exec(&self, host: &Ns, call: &Call, plugin: &Value, prev: Option<&Value>) -> Outcome {
        let ty = plugin["type"].as_str().unwrap_or_default();
        let mut call = call.clone();
        call.cni_path = Some(self.cni_path.clone());
        exec_plugin(&self.cni_path.join(ty), host, &call, &self.plugin_conf(plugin, prev))
    }

    /// ADD in order, each plugin gets the previous result; returns the final result.
    fn add(&self, host: &Ns, call: &Call) -> Value {
        let mut prev: Option<Value> = None;
        for plugin in self.plugins() {
            let out = self.exec(host, call, &plugin, prev.as_ref());
            assert!(out.ok, "ADD {} failed: {} {}", plugin["type"], out.stdout, out.stderr);
            prev = Some(out.stdout);
        }
        prev.unwrap_or(Value::Null)
    }

    /// DEL in reverse order with the cached result as prevResult.
    fn del(&self, host: &Ns, call: &Call, cached: Option<&Value>) {
        for plugin in self.plugins().iter().rev() {
            let out = self.exec(host, call, plugin, cached);
            assert!(out.ok, "DEL {} failed: {} {}", plugin["type"], out.stdout, out.stderr);
        }
    }
}

fn cni_path_dir(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap_or_else(|e| panic!("{e}"));
    for p in ["bridge", "host-local", "loopback"] {
        std::os::unix::fs::symlink(Path::new(REFERENCE_PLUGINS).join(p), bin.join(p)).unwrap_or_else(|e| panic!("{e}"));
    }
    std::os::unix::fs::symlink(BIN, bin.join("multinic-cni")).unwrap_or_else(|e| panic!("{e}"));
    bin
}

#[test]
fn chained_after_bridge_and_host_local() {
    if !can_run_as_root("chained_after_bridge_and_host_local") {
        return;
    }
    if !Path::new(REFERENCE_PLUGINS).join("bridge").exists() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "install containernetworking-plugins (Debian) for the chained test"
        );
        eprintln!("SKIP chained_after_bridge_and_host_local: no {REFERENCE_PLUGINS}/bridge");
        return;
    }
    let host = Ns::new("h");
    let pod = Ns::new("p");
    add_veths(&host, "cd", 3, |_| true);
    let devices = (1..=3)
        .map(|i| {
            device(
                &format!("cd{i}"),
                &format!("net{i}"),
                AttachmentMode::HostDevice,
                &format!("192.168.{i}.2/24"),
                &format!("192.{}.0.0/16", 200 + i),
                None,
            )
        })
        .collect();
    let state = State::new(&[plan("claim-chain", "pod-chain", devices)]);
    let cni_path = cni_path_dir(state.path());
    let runtime = Runtime {
        cni_path,
        conflist: json!({
            "cniVersion": "1.0.0",
            "name": format!("k8s-{}", tag("c")),
            "plugins": [
                {
                    "type": "bridge", "bridge": "mnbr0", "isGateway": true, "ipMasq": false,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": "10.244.7.0/24"}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": state.path().join("ipam"),
                    }
                },
                {"type": "multinic-cni", "stateDir": state.path()}
            ]
        }),
    };
    let call = Call::new("ADD", "ctr-chain", pod.path(), "pod-chain");
    let result = runtime.add(&host, &call);

    // eth0 from the bridge plugin, net1..net3 from ours.
    let eth0 = pod.addrs("eth0");
    assert_eq!(eth0.len(), 1, "eth0: {eth0:?}");
    assert!(eth0[0].starts_with("10.244.7."), "{eth0:?}");
    for i in 1..=3 {
        assert_eq!(pod.addrs(&format!("net{i}")), [format!("192.168.{i}.2/24")]);
    }
    let routes = pod.ip_json(&["route", "show"]);
    let has = |dst: &str, dev: &str| {
        routes
            .as_array()
            .is_some_and(|rs| rs.iter().any(|r| r["dst"] == dst && r["dev"] == dev))
    };
    assert!(has("default", "eth0"), "eth0 keeps the default route: {routes}");
    assert!(has("192.201.0.0/16", "net1"), "{routes}");

    // The merged result keeps eth0's entries first and points our IPs at our interfaces.
    let ifs = result["interfaces"].as_array().cloned().unwrap_or_default();
    let names: Vec<&str> = ifs.iter().filter_map(|i| i["name"].as_str()).collect();
    let eth0_index = names
        .iter()
        .position(|n| *n == "eth0")
        .unwrap_or_else(|| panic!("{names:?}"));
    assert_eq!(names[0], "mnbr0");
    assert_eq!(&names[names.len() - 3..], ["net1", "net2", "net3"]);
    let ips = result["ips"].as_array().cloned().unwrap_or_default();
    assert_eq!(ips.len(), 4);
    assert_eq!(ips[0]["interface"], eth0_index);
    assert_eq!(ips[0]["address"], eth0[0].as_str());
    for (k, ip) in ips[1..].iter().enumerate() {
        assert_eq!(ip["address"], format!("192.168.{}.2/24", k + 1));
        assert_eq!(ip["interface"], names.len() - 3 + k);
    }
    let result_routes = result["routes"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        result_routes[0]["dst"], "0.0.0.0/0",
        "bridge's route first: {result_routes:?}"
    );

    // CHECK, then DEL in reverse order.
    let check = runtime.exec(
        &host,
        &Call::new("CHECK", "ctr-chain", pod.path(), "pod-chain"),
        &runtime.plugins()[1],
        Some(&result),
    );
    assert!(check.ok, "{}", check.stdout);
    runtime.del(
        &host,
        &Call::new("DEL", "ctr-chain", pod.path(), "pod-chain"),
        Some(&result),
    );
    let left = pod.link_names();
    assert!(left.iter().all(|n| n == "lo"), "pod still has {left:?}");
    for i in 1..=3 {
        assert!(host.link(&format!("cd{i}")).is_some());
    }
    assert!(marked_links(&host).is_empty());
}
