//! Kernel fixtures: network namespaces made with `ip`, rtnetlink handles bound to a namespace, and
//! running a CNI plugin through the real protocol (env + stdin, process in the host netns).

use std::fs::File;
use std::io::Write as _;
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, bail};
use serde_json::Value;

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A short name unique to this process and call (fits IFNAMSIZ with a short prefix).
pub fn unique(prefix: &str) -> String {
    format!("{prefix}{}x{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed))
}

/// Runs `ip <args>`; the error carries its stderr.
pub fn ip(args: &[&str]) -> anyhow::Result<()> {
    run_out("ip", args).map(drop)
}

/// Runs `program args`: its stdout, or an error with its stderr.
pub fn run_out(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program} (is it installed?)"))?;
    if !out.status.success() {
        bail!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

/// Runs a batch of `ip` commands in one process (`ip -batch -`), for fixtures with many links.
pub fn ip_batch(ns: Option<&str>, lines: &[String]) -> anyhow::Result<()> {
    let mut cmd = Command::new("ip");
    if let Some(ns) = ns {
        cmd.args(["-n", ns]);
    }
    let mut child = cmd
        .args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running ip -batch (install iproute2)")?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(lines.join("\n").as_bytes())?;
        stdin.write_all(b"\n")?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("ip -batch: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// A named network namespace (`ip netns add`), deleted on drop.
pub struct Netns {
    pub name: String,
    pub file: File,
}

impl Netns {
    pub fn new(prefix: &str) -> anyhow::Result<Self> {
        let name = format!("mnb-{}", unique(prefix));
        ip(&["netns", "add", &name])?;
        let path = format!("/run/netns/{name}");
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) => {
                let _ = ip(&["netns", "del", &name]);
                return Err(e).with_context(|| format!("opening {path}"));
            }
        };
        let ns = Self { name, file };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    pub fn ip(&self, args: &[&str]) -> anyhow::Result<()> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// A rtnetlink handle whose socket lives in this namespace (opened on a helper thread that
    /// `setns`es and exits); its connection runs on the current tokio runtime.
    pub fn netlink(&self) -> anyhow::Result<rtnetlink::Handle> {
        let fd = self.file.try_clone()?;
        let rt = tokio::runtime::Handle::current();
        let made = std::thread::scope(|s| {
            s.spawn(|| {
                nix::sched::setns(fd.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
                let _guard = rt.enter();
                let (conn, handle, _) = rtnetlink::new_connection()?;
                Ok::<_, std::io::Error>((conn, handle))
            })
            .join()
        });
        let (conn, handle) = made
            .map_err(|_| anyhow::anyhow!("netns helper thread panicked"))?
            .with_context(|| format!("netlink socket in netns {}", self.name))?;
        rt.spawn(conn);
        Ok(handle)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
    }
}

/// A sandbox node: netns `node` holding `n` veth NICs named by `names(k)` = (NIC, peer), up (with
/// `mtu` when given); the peers, up, sit in netns `peers`, so each NIC has a carrier and is
/// published once. Both namespaces go on drop.
pub struct VethNode {
    pub node: Netns,
    pub peers: Netns,
}

impl VethNode {
    pub fn new(
        tag: &str,
        n: usize,
        mtu: Option<u32>,
        names: impl Fn(usize) -> (String, String),
    ) -> anyhow::Result<Self> {
        let node = Netns::new(tag)?;
        let peers = Netns::new(&format!("{tag}p"))?;
        let (mut links, mut up) = (Vec::new(), Vec::new());
        for k in 0..n {
            let (nic, peer) = names(k);
            links.push(format!(
                "link add {nic} type veth peer name {peer} netns {}",
                peers.name
            ));
            links.push(match mtu {
                Some(m) => format!("link set {nic} mtu {m} up"),
                None => format!("link set {nic} up"),
            });
            up.push(format!("link set {peer} up"));
        }
        ip_batch(Some(&node.name), &links)?;
        ip_batch(Some(&peers.name), &up)?;
        Ok(Self { node, peers })
    }
}

/// One CNI invocation.
#[derive(Debug, Clone)]
pub struct CniCall {
    pub command: &'static str,
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    pub pod_uid: String,
    pub cni_path: PathBuf,
}

impl CniCall {
    /// `command` for the container `container_id` of pod `pod_uid` in `pod`, `CNI_IFNAME` eth0
    /// (the primary network's), `CNI_PATH` the directory of `cni_bin`.
    pub fn for_pod(command: &'static str, container_id: String, pod: &Netns, pod_uid: &str, cni_bin: &Path) -> Self {
        Self {
            command,
            container_id,
            netns: pod.path(),
            ifname: "eth0".into(),
            pod_uid: pod_uid.to_string(),
            cni_path: cni_bin.parent().map(PathBuf::from).unwrap_or_default(),
        }
    }
}

/// Runs `program` as a CNI plugin with its process in `host` (setns between fork and exec, as a
/// runtime does). Returns the parsed stdout (`Null` when empty); a failed run is an error with
/// the plugin's output.
pub fn exec_cni(program: &Path, host: &File, call: &CniCall, conf: &Value) -> anyhow::Result<Value> {
    let ns = host.try_clone()?;
    let mut cmd = Command::new(program);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("CNI_COMMAND", call.command)
        .env("CNI_CONTAINERID", &call.container_id)
        .env("CNI_NETNS", &call.netns)
        .env("CNI_IFNAME", &call.ifname)
        .env(
            "CNI_ARGS",
            format!(
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME=pod-{0};K8S_POD_UID={0}",
                call.pod_uid
            ),
        )
        .env("CNI_PATH", &call.cni_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: between fork and exec only setns(2) runs, which is async-signal-safe, on an fd
    // opened before the fork.
    unsafe {
        cmd.pre_exec(move || {
            nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)
        });
    }
    let mut child = cmd.spawn().with_context(|| format!("spawning {}", program.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(conf.to_string().as_bytes())?;
    }
    let out = child.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let stdout: Value = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).with_context(|| format!("{} printed non-JSON: {text}", program.display()))?
    };
    if !out.status.success() {
        bail!(
            "{} {} failed: {stdout} / stderr: {}",
            program.display(),
            call.command,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(stdout)
}

/// [`exec_cni`] on the blocking pool, so the runtime's workers keep serving.
pub async fn exec_cni_async(program: PathBuf, host: File, call: CniCall, conf: Value) -> anyhow::Result<Value> {
    tokio::task::spawn_blocking(move || exec_cni(&program, &host, &call, &conf)).await?
}

/// Names of the links in a namespace.
pub async fn link_names(handle: &rtnetlink::Handle) -> anyhow::Result<Vec<String>> {
    use futures::TryStreamExt;
    use netlink_packet_route::link::LinkAttribute;
    let links: Vec<_> = handle.link().get().execute().try_collect().await?;
    Ok(links
        .iter()
        .filter_map(|l| {
            l.attributes.iter().find_map(|a| match a {
                LinkAttribute::IfName(n) => Some(n.clone()),
                _ => None,
            })
        })
        .collect())
}
