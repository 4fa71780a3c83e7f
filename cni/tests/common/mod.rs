//! Fixtures for the kernel tests: private network namespaces, veth NICs, plans, and running the
//! built `multinic-cni` binary (or any CNI plugin) through the real CNI protocol.
//!
//! Kernel tests need root. With `CI=true` they fail when not root; otherwise they print why they
//! skip and pass.

#![allow(dead_code)]

use std::fs::File;
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ipnet::IpAdd;
use multinic_api::plan::{PLAN_VERSION, PlanStore, PlannedRoute, PodRef};
use multinic_api::{AttachmentMode, Plan, PlannedDevice};
use serde_json::{Value, json};

pub use multinic_testkit::fixtures::can_run_as_root;

pub const BIN: &str = env!("CARGO_BIN_EXE_multinic-cni");

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A unique short tag for this process and call.
pub fn tag(prefix: &str) -> String {
    format!("{prefix}{}x{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed))
}

pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A named network namespace (`ip netns add`), deleted on drop.
pub struct Ns {
    pub name: String,
    deleted: bool,
}

impl Ns {
    pub fn new(prefix: &str) -> Self {
        let name = format!("mn-{}", tag(prefix));
        run_ok(Command::new("ip").args(["netns", "add", &name]));
        let ns = Ns { name, deleted: false };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    pub fn ip(&self, args: &[&str]) -> String {
        run_ok(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }

    pub fn ip_status(&self, args: &[&str]) -> bool {
        Command::new("ip")
            .arg("-n")
            .arg(&self.name)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    pub fn ip_json(&self, args: &[&str]) -> Value {
        let out = run_ok(Command::new("ip").arg("-j").arg("-n").arg(&self.name).args(args));
        if out.trim().is_empty() {
            return json!([]);
        }
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("ip -j {args:?}: {e}: {out}"))
    }

    /// `ip -d link show` of every link, by name.
    pub fn links(&self) -> Vec<Value> {
        self.ip_json(&["-d", "link", "show"])
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    pub fn link(&self, name: &str) -> Option<Value> {
        self.links().into_iter().find(|l| l["ifname"] == name)
    }

    pub fn link_names(&self) -> Vec<String> {
        self.links()
            .iter()
            .filter_map(|l| l["ifname"].as_str().map(str::to_string))
            .collect()
    }

    /// Addresses (`a.b.c.d/len`) of a link.
    pub fn addrs(&self, name: &str) -> Vec<String> {
        let v = self.ip_json(&["addr", "show", "dev", name]);
        v[0]["addr_info"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|i| i["scope"] != "link")
                    .map(|i| format!("{}/{}", i["local"].as_str().unwrap_or(""), i["prefixlen"]))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Deletes the namespace now (what happens when a sandbox dies).
    pub fn delete(&mut self) {
        if !self.deleted {
            let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
            self.deleted = true;
        }
    }

    pub fn open(&self) -> File {
        File::open(self.path()).unwrap_or_else(|e| panic!("open {}: {e}", self.path()))
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        self.delete();
    }
}

/// Adds veth pairs `<prefix>k` / `<prefix>pk` in `ns` (k = 1..=n), both ends up when `up(k)`.
pub fn add_veths(ns: &Ns, prefix: &str, n: usize, up: impl Fn(usize) -> bool) {
    for k in 1..=n {
        let a = format!("{prefix}{k}");
        let b = format!("{prefix}p{k}");
        ns.ip(&["link", "add", &a, "type", "veth", "peer", "name", &b]);
        ns.ip(&["link", "set", &b, "up"]);
        if up(k) {
            ns.ip(&["link", "set", &a, "up"]);
        }
    }
}

/// A planned device with one address, its `.1` as gateway and one extra route to `route`.
pub fn device(host: &str, pod: &str, mode: AttachmentMode, ip: &str, route: &str, table: Option<u32>) -> PlannedDevice {
    let net: ipnet::IpNet = ip.parse().unwrap_or_else(|e| panic!("{ip}: {e}"));
    let gw: std::net::IpAddr = match net {
        ipnet::IpNet::V4(n) => n.network().saturating_add(1).into(),
        ipnet::IpNet::V6(n) => n.network().saturating_add(1).into(),
    };
    PlannedDevice {
        request: "nics".into(),
        pool: "node".into(),
        device: format!("dev-{host}"),
        host_if_name: host.into(),
        rail_index: None,
        pod_if_name: pod.into(),
        mode,
        mtu: None,
        mac: None,
        ips: vec![net],
        gateway: Some(gw),
        routes: vec![PlannedRoute {
            dst: route.parse().unwrap_or_else(|e| panic!("{route}: {e}")),
            gateway: None,
        }],
        table,
        rdma_device: None,
    }
}

pub fn plan(claim_uid: &str, pod_uid: &str, devices: Vec<PlannedDevice>) -> Plan {
    Plan {
        version: PLAN_VERSION,
        claim_uid: claim_uid.into(),
        namespace: "ml".into(),
        name: format!("{claim_uid}-nics"),
        pods: vec![PodRef {
            uid: pod_uid.into(),
            name: format!("pod-{pod_uid}"),
        }],
        network: Some("rails".into()),
        devices,
    }
}

/// A state dir with plans.
pub struct State {
    pub dir: tempfile::TempDir,
}

impl State {
    pub fn new(plans: &[Plan]) -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let store = PlanStore::new(dir.path());
        for p in plans {
            store.write(p).unwrap_or_else(|e| panic!("write plan: {e}"));
        }
        State { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn conf(&self, network: &str, version: &str) -> Value {
        json!({
            "cniVersion": version,
            "name": network,
            "type": "multinic-cni",
            "stateDir": self.path(),
        })
    }
}

/// One plugin run.
#[derive(Debug)]
pub struct Outcome {
    pub ok: bool,
    pub stdout: Value,
    pub stderr: String,
}

impl Outcome {
    pub fn code(&self) -> Option<u64> {
        self.stdout["code"].as_u64()
    }

    #[track_caller]
    pub fn expect_ok(self) -> Value {
        assert!(self.ok, "plugin failed: {} / stderr: {}", self.stdout, self.stderr);
        self.stdout
    }
}

/// The invocation parameters.
#[derive(Clone)]
pub struct Call<'a> {
    pub command: &'a str,
    pub container_id: &'a str,
    pub netns: String,
    pub ifname: &'a str,
    pub pod_uid: &'a str,
    pub extra_env: Vec<(&'a str, String)>,
    pub cni_path: Option<PathBuf>,
}

impl<'a> Call<'a> {
    pub fn new(command: &'a str, container_id: &'a str, netns: String, pod_uid: &'a str) -> Self {
        Call {
            command,
            container_id,
            netns,
            ifname: "eth0",
            pod_uid,
            extra_env: Vec::new(),
            cni_path: None,
        }
    }

    pub fn with(mut self, k: &'a str, v: impl Into<String>) -> Self {
        self.extra_env.push((k, v.into()));
        self
    }
}

/// Runs `program` as a CNI plugin with its process in the netns `host` (via setns in pre_exec).
pub fn exec_plugin(program: &Path, host: &Ns, call: &Call, conf: &Value) -> Outcome {
    let ns_file = host.open();
    let mut cmd = Command::new(program);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("CNI_COMMAND", call.command)
        .env("CNI_CONTAINERID", call.container_id)
        .env("CNI_NETNS", &call.netns)
        .env("CNI_IFNAME", call.ifname)
        .env(
            "CNI_ARGS",
            format!(
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=ml;K8S_POD_NAME=pod-{0};K8S_POD_UID={0}",
                call.pod_uid
            ),
        )
        .env(
            "CNI_PATH",
            call.cni_path.clone().unwrap_or_else(|| PathBuf::from("/usr/lib/cni")),
        )
        .env("MULTINIC_CNI_LOG", "debug")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in &call.extra_env {
        cmd.env(k, v);
    }
    // SAFETY: between fork and exec we only call setns(2), which is async-signal-safe, on an fd
    // opened before the fork.
    unsafe {
        cmd.pre_exec(move || {
            nix::sched::setns(ns_file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)
        });
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", program.display()));
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(conf.to_string().as_bytes());
    }
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("wait: {e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    let stdout = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {text}"))
    };
    Outcome {
        ok: out.status.success(),
        stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs our binary.
pub fn cni(host: &Ns, call: &Call, conf: &Value) -> Outcome {
    exec_plugin(Path::new(BIN), host, call, conf)
}

/// Waits until `f` holds, or panics after `deadline`.
pub fn wait_for(what: &str, deadline: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < deadline, "timed out waiting for {what}");
        std::thread::yield_now();
    }
}

/// Links in `ns` that carry a multinic mark.
pub fn marked_links(ns: &Ns) -> Vec<String> {
    ns.links()
        .iter()
        .filter(|l| l["ifalias"].as_str().is_some_and(|a| a.starts_with("multinic:")))
        .filter_map(|l| l["ifname"].as_str().map(str::to_string))
        .collect()
}

pub fn has_flag(link: &Value, flag: &str) -> bool {
    link["flags"].as_array().is_some_and(|f| f.iter().any(|x| x == flag))
}
