//! Row 7: peak RSS of the real `multinic-kubelet-plugin` binary, run by `ip netns exec` in a
//! namespace holding 64 veth NICs (their peers are in another namespace, so exactly 64 are
//! published with `--allow-virtual`), talking to the fake API server listening in that namespace.
//! After it serves the kubelet, 100 claims of 8 NICs are prepared over its DRA socket; then
//! VmHWM is read from /proc/<pid>/status.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use multinic_api::rails::RailsLayout;
use multinic_testkit::FakeApiServer;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::dra::{self, BenchClaim, DraError};
use super::error::RowError;
use super::fixtures::{FixtureError, Netns, VethNode, temp_dir};
use super::stats::{Row, Summary, Unit};

/// `api.write_kubeconfig(path)`, the error naming the file.
pub fn write_kubeconfig(api: &FakeApiServer, path: &Path) -> Result<(), DraError> {
    api.write_kubeconfig(path).map_err(|source| DraError::Api {
        action: format!("writing the kubeconfig {}", path.display()),
        source,
    })
}

const NICS: usize = 64;
const CLAIMS: usize = 100;
const PER_CLAIM: usize = 8;
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// /16, 16 hosts, 64 rails, /26 blocks.
fn layout() -> Result<RailsLayout, DraError> {
    dra::rails_layout("10.30.0.0/16", 4, 6)
}

/// The fake API server driven by its own thread and runtime, with its listening socket in `ns`
/// (`None`: the caller's netns).
pub struct NsApi {
    pub api: FakeApiServer,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NsApi {
    pub fn start(ns: Option<&Netns>) -> Result<Self, DraError> {
        let fd = ns
            .map(|ns| Ok::<_, FixtureError>((ns.name.clone(), ns.dup_file()?)))
            .transpose()?;
        let (tx, rx) = mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let started = (|| {
                if let Some((netns, fd)) = &fd {
                    nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|source| DraError::Setns {
                        netns: netns.clone(),
                        source,
                    })?;
                }
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(DraError::Runtime)?;
                let api = rt
                    .block_on(FakeApiServer::try_start())
                    .map_err(|source| DraError::Api {
                        action: "starting".into(),
                        source,
                    })?;
                Ok::<_, DraError>((rt, api))
            })();
            match started {
                Ok((rt, api)) => {
                    if tx.send(Ok(api)).is_ok() {
                        rt.block_on(async { stopped.await.unwrap_or(()) });
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        });
        let api = rx.recv().map_err(|_| DraError::ApiThread)??;
        Ok(Self {
            api,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl NsApi {
    /// The ResourceSlices the server holds, typed.
    pub fn slices(&self) -> Result<Vec<k8s_openapi::api::resource::v1::ResourceSlice>, DraError> {
        self.api
            .list("resource.k8s.io/v1", "ResourceSlice", None)
            .into_iter()
            .map(serde_json::from_value)
            .collect::<Result<_, _>>()
            .map_err(|source| DraError::Decode {
                what: "a ResourceSlice in the fake API server (as a v1 ResourceSlice)".into(),
                source,
            })
    }
}

impl Drop for NsApi {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A running plugin binary (bench, demo, VM checks); killed (SIGTERM, then waited for) on drop.
pub struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Proc {
    /// Starts `bin` for node `node` with its directories under `dir`, metrics on a free port and
    /// JSON logs (read back by [`Proc::wait_ready`]), then the `extra` flags; inside `ns` (through
    /// `ip netns exec`) when one is given.
    pub fn start(
        bin: &Path,
        ns: Option<&Netns>,
        node: &str,
        dir: &Path,
        kubeconfig: &Path,
        extra: &[&str],
    ) -> Result<Self, DraError> {
        let arg = |p: &str| dir.join(p).display().to_string();
        let mut cmd = match ns {
            Some(ns) => {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", &ns.name]).arg(bin);
                cmd
            }
            None => Command::new(bin),
        };
        let mut child = cmd
            .args(["--node-name", node, "--kubeconfig"])
            .arg(kubeconfig)
            .args(["--plugin-dir", &arg("plugins"), "--registry-dir", &arg("registry")])
            .args(["--state-dir", &arg("state"), "--cdi-dir", &arg("cdi")])
            .args(["--metrics-address", "127.0.0.1:0", "--log-format", "json"])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| DraError::Spawn {
                bin: bin.to_path_buf(),
                source,
            })?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| DraError::NoStderr { bin: bin.to_path_buf() })?;
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Self { child, lines })
    }

    /// Waits for the "serving the kubelet" log line (sockets bound, plans reconciled) and for a
    /// "published ResourceSlices" line with all `nics` (the device table is filled before the
    /// slices are written, so the two may come in either order).
    pub fn wait_ready(&self, nics: usize, timeout: Duration) -> Result<(), DraError> {
        let deadline = Instant::now() + timeout;
        let mut log = Vec::new();
        let (mut serving, mut published) = (false, false);
        while !(serving && published) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
                    match v["message"].as_str() {
                        Some("serving the kubelet") => serving = true,
                        Some("published ResourceSlices") => published = v["devices"].as_u64() == Some(nics as u64),
                        _ => {}
                    }
                    log.push(line);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(DraError::NotReady {
                        nics,
                        timeout,
                        log: log.join("\n"),
                    });
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(DraError::Exited { log: log.join("\n") });
                }
            }
        }
        Ok(())
    }

    /// (VmHWM, VmRSS) in MiB.
    fn memory(&self) -> Result<(f64, f64), DraError> {
        let path = format!("/proc/{}/status", self.child.id());
        let status = std::fs::read_to_string(&path).map_err(|source| DraError::Status {
            path: path.clone(),
            source,
        })?;
        let mib = |key: &str| -> Result<f64, DraError> {
            status_mib(&status, key).ok_or_else(|| DraError::StatusKey {
                key: key.to_string(),
                path: path.clone(),
            })
        };
        Ok((mib("VmHWM:")?, mib("VmRSS:")?))
    }
}

/// The value of `key` (`VmHWM:`, `VmRSS:`, in kB) of a /proc/<pid>/status text, in MiB.
pub fn status_mib(status: &str, key: &str) -> Option<f64> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

/// Device names of the published ResourceSlices.
fn published(api: &FakeApiServer) -> Vec<String> {
    api.list("resource.k8s.io/v1", "ResourceSlice", None)
        .iter()
        .flat_map(|s| s["spec"]["devices"].as_array().cloned().unwrap_or_default())
        .filter_map(|d| d["name"].as_str().map(str::to_string))
        .collect()
}

async fn one_run(bin: &Path, ns: &Netns, api: &FakeApiServer, kubeconfig: &Path) -> Result<(f64, f64), RowError> {
    let dir = temp_dir("plugin")?;
    let proc = Proc::start(bin, Some(ns), dra::NODE, dir.path(), kubeconfig, &["--allow-virtual"])?;
    proc.wait_ready(NICS, READY_TIMEOUT)?;
    let mut devices = published(api);
    devices.sort();
    if devices.len() != NICS {
        return Err(RowError::Published {
            got: devices.len(),
            want: NICS,
        });
    }
    let params = dra::params(&layout()?, "host-device");
    let claims = (0..CLAIMS)
        .map(|i| {
            let mine: Vec<&str> = (0..PER_CLAIM)
                .map(|j| devices[(i * PER_CLAIM + j) % NICS].as_str())
                .collect();
            dra::insert_claim(api, &mine, &params)
        })
        .collect::<Result<Vec<BenchClaim>, DraError>>()?;
    let mut client = dra::connect(&dir.path().join("plugins").join("dra.sock")).await?;
    for chunk in claims.chunks(10) {
        dra::prepare(&mut client, chunk.iter().map(BenchClaim::v1).collect()).await?;
    }
    let mem = proc.memory()?;
    drop(proc);
    for c in &claims {
        dra::delete_claim(api, c);
    }
    Ok(mem)
}

pub async fn bench(bin: &Path, runs: usize) -> (Row, String) {
    let mut row = Row::new(
        "7",
        format!("peak RSS (VmHWM), multinic-kubelet-plugin binary, {NICS} NICs published, {CLAIMS} claims prepared"),
        Unit::MiB,
    );
    row.target = "< 20 MiB".into();
    let (mut hwm, mut rss) = (Vec::new(), Vec::new());
    let outcome: Result<(), RowError> = async {
        if !bin.exists() {
            return Err(RowError::MissingBin { bin: bin.to_path_buf() });
        }
        let sandbox = VethNode::new("rss", NICS, None, |k| (format!("rv{k:02}"), format!("rp{k:02}")))?;
        let ns = &sandbox.node;
        let api = NsApi::start(Some(ns))?;
        let rails = u32::try_from(NICS).map_err(|_| DraError::TooManyNics { nics: NICS })?;
        dra::insert_blocks(&api.api, &layout()?, rails)?;
        let conf = temp_dir("kubeconfig")?;
        let kubeconfig = conf.path().join("kubeconfig");
        write_kubeconfig(&api.api, &kubeconfig)?;
        for run in 0..runs {
            let (h, r) = one_run(bin, ns, &api.api, &kubeconfig)
                .await
                .map_err(RowError::phase(format!("run {run}")))?;
            hwm.push(h);
            rss.push(r);
        }
        Ok(())
    }
    .await;
    row.record(&hwm, &outcome);
    row.met = row.ours.map(|s| s.median < 20.0);
    let note = format!(
        "RSS at the end (VmRSS) median {:.1} MiB",
        Summary::of(&rss).map_or(f64::NAN, |s| s.median)
    );
    (row, note)
}
