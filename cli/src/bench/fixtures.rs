//! Kernel fixtures: network namespaces made with `ip`, rtnetlink handles bound to a namespace, and
//! running a CNI plugin through the real protocol (env + stdin, process in the host netns).

use std::fs::File;
use std::io::Write as _;
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;

/// A failure of a kernel fixture: a process (`ip`, a CNI plugin) that did not run or failed, a
/// network namespace that could not be opened or entered.
#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    #[error("running {program}: {source}; {fix}")]
    Spawn {
        program: String,
        fix: &'static str,
        source: std::io::Error,
    },
    #[error("{command}: {stderr}")]
    Failed { command: String, stderr: String },
    #[error("talking to {program} over its stdin/stdout: {source}")]
    Pipe { program: String, source: std::io::Error },
    #[error("opening {path} (made by `ip netns add`): {source}")]
    OpenNetns { path: String, source: std::io::Error },
    #[error("duplicating the file of netns {netns}: {source}")]
    DupNetns { netns: String, source: std::io::Error },
    #[error("the helper thread opening a netlink socket in netns {netns} panicked")]
    HelperPanicked { netns: String },
    #[error("netlink socket in netns {netns}: {source}")]
    NetlinkSocket { netns: String, source: std::io::Error },
    #[error("{program} {command} printed non-JSON: {text}: {source}")]
    CniOutput {
        program: PathBuf,
        command: &'static str,
        text: String,
        source: serde_json::Error,
    },
    #[error("{program} {command} failed: {stdout} / stderr: {stderr}")]
    CniFailed {
        program: PathBuf,
        command: &'static str,
        stdout: Value,
        stderr: String,
    },
    #[error("the blocking task running a CNI plugin did not finish: {0}")]
    CniTask(#[from] tokio::task::JoinError),
    #[error("listing the links of a netns over rtnetlink: {0}")]
    Links(#[source] rtnetlink::Error),
    #[error("creating the {what} temp dir: {source}")]
    TempDir { what: &'static str, source: std::io::Error },
}

/// A new temp dir; the error names what it is for.
pub fn temp_dir(what: &'static str) -> Result<tempfile::TempDir, FixtureError> {
    tempfile::tempdir().map_err(|source| FixtureError::TempDir { what, source })
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A short name unique to this process and call (fits IFNAMSIZ with a short prefix).
pub fn unique(prefix: &str) -> String {
    format!("{prefix}{}x{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed))
}

/// Runs `ip <args>`; the error carries its stderr.
pub fn ip(args: &[&str]) -> Result<(), FixtureError> {
    run_out("ip", args).map(drop)
}

/// Runs `program args`: its stdout, or an error with its stderr.
pub fn run_out(program: &str, args: &[&str]) -> Result<String, FixtureError> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|source| FixtureError::Spawn {
            program: program.to_string(),
            fix: "is it installed?",
            source,
        })?;
    if !out.status.success() {
        return Err(FixtureError::Failed {
            command: format!("{program} {}", args.join(" ")),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

/// Runs a batch of `ip` commands in one process (`ip -batch -`), for fixtures with many links.
pub fn ip_batch(ns: Option<&str>, lines: &[String]) -> Result<(), FixtureError> {
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
        .map_err(|source| FixtureError::Spawn {
            program: "ip -batch".into(),
            fix: "install iproute2",
            source,
        })?;
    let pipe = |source| FixtureError::Pipe {
        program: "ip -batch".into(),
        source,
    };
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(lines.join("\n").as_bytes()).map_err(pipe)?;
        stdin.write_all(b"\n").map_err(pipe)?;
    }
    let out = child.wait_with_output().map_err(pipe)?;
    if !out.status.success() {
        return Err(FixtureError::Failed {
            command: format!("ip{} -batch", ns.map(|ns| format!(" -n {ns}")).unwrap_or_default()),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

/// A named network namespace (`ip netns add`), deleted on drop.
pub struct Netns {
    pub name: String,
    pub file: File,
}

impl Netns {
    pub fn new(prefix: &str) -> Result<Self, FixtureError> {
        let name = format!("mnb-{}", unique(prefix));
        ip(&["netns", "add", &name])?;
        let path = format!("/run/netns/{name}");
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(source) => {
                let _ = ip(&["netns", "del", &name]);
                return Err(FixtureError::OpenNetns { path, source });
            }
        };
        let ns = Self { name, file };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// A second handle on the namespace's file (for a CNI call's `setns`).
    pub fn dup_file(&self) -> Result<File, FixtureError> {
        self.file.try_clone().map_err(|source| FixtureError::DupNetns {
            netns: self.name.clone(),
            source,
        })
    }

    pub fn ip(&self, args: &[&str]) -> Result<(), FixtureError> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// A rtnetlink handle whose socket lives in this namespace; see [`netlink_in`].
    pub fn netlink(&self) -> Result<rtnetlink::Handle, FixtureError> {
        netlink_in(self.dup_file()?, &self.name)
    }
}

/// A rtnetlink handle whose socket lives in the network namespace of `fd` (`netns` names it in
/// errors), opened on a helper thread that `setns`es and exits; its connection runs on the
/// current tokio runtime.
pub fn netlink_in(fd: File, netns: &str) -> Result<rtnetlink::Handle, FixtureError> {
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
        .map_err(|_| FixtureError::HelperPanicked {
            netns: netns.to_string(),
        })?
        .map_err(|source| FixtureError::NetlinkSocket {
            netns: netns.to_string(),
            source,
        })?;
    rt.spawn(conn);
    Ok(handle)
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
    ) -> Result<Self, FixtureError> {
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
pub fn exec_cni(program: &Path, host: &File, call: &CniCall, conf: &Value) -> Result<Value, FixtureError> {
    let name = || format!("{} {}", program.display(), call.command);
    let pipe = |source| FixtureError::Pipe {
        program: name(),
        source,
    };
    let ns = host.try_clone().map_err(|source| FixtureError::DupNetns {
        netns: format!("given to {}", name()),
        source,
    })?;
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
    let mut child = cmd.spawn().map_err(|source| FixtureError::Spawn {
        program: name(),
        fix: "check the plugin's path (--cni-bin, --cni-plugins-dir)",
        source,
    })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(conf.to_string().as_bytes()).map_err(pipe)?;
    }
    let out = child.wait_with_output().map_err(pipe)?;
    let text = String::from_utf8_lossy(&out.stdout);
    let stdout: Value = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).map_err(|source| FixtureError::CniOutput {
            program: program.to_path_buf(),
            command: call.command,
            text: text.to_string(),
            source,
        })?
    };
    if !out.status.success() {
        return Err(FixtureError::CniFailed {
            program: program.to_path_buf(),
            command: call.command,
            stdout,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(stdout)
}

/// [`exec_cni`] on the blocking pool, so the runtime's workers keep serving.
pub async fn exec_cni_async(program: PathBuf, host: File, call: CniCall, conf: Value) -> Result<Value, FixtureError> {
    tokio::task::spawn_blocking(move || exec_cni(&program, &host, &call, &conf)).await?
}

/// Names of the links in a namespace.
pub async fn link_names(handle: &rtnetlink::Handle) -> Result<Vec<String>, FixtureError> {
    use futures::TryStreamExt;
    use netlink_packet_route::link::LinkAttribute;
    let links: Vec<_> = handle
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(FixtureError::Links)?;
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
