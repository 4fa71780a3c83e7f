//! The plan: what `NodePrepareResources` decided for one claim, and what the CNI plugin applies.
//!
//! Stored one file per claim under `<state-dir>/plans/<claim-uid>.json`, written to a temporary file,
//! made durable and renamed, so a reader sees either the old or the new plan, never a torn one.
//! Concurrent writers are committed as one batch ([`PlanStore::write_batch`]): one `syncfs` and one
//! directory `fsync` cover every plan of the batch.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::config::AttachmentMode;

/// Version of the plan file format. Bump on incompatible changes; readers reject other versions.
pub const PLAN_VERSION: u32 = 1;
/// Largest plan file a reader accepts.
pub const MAX_PLAN_BYTES: u64 = 1024 * 1024;
/// Subdirectory of the plans dir holding `<pod-uid>/<claim-uid>` markers.
const POD_INDEX: &str = "pods";
/// Longest accepted claim UID (Kubernetes UIDs are 36 characters).
const MAX_UID_LEN: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("claim UID {0:?} is not a valid UID (1..=64 of [A-Za-z0-9-]); refusing to use it as a file name")]
    BadUid(String),
    #[error(
        "pod UID {0:?} (K8S_POD_UID in CNI_ARGS) is not a valid UID (1..=64 of [A-Za-z0-9-]); the container runtime must pass the pod's metadata.uid"
    )]
    BadPodUid(String),
    #[error("plan file {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("plan file {path} is over {MAX_PLAN_BYTES} bytes; it is not a plan written by multinic")]
    TooLarge { path: PathBuf },
    #[error("plan file {path} is corrupt ({reason}); delete it and let the kubelet prepare the claim again")]
    Corrupt { path: PathBuf, reason: String },
    #[error(
        "plan file {path} has version {found}, this binary reads version {PLAN_VERSION}; upgrade all multinic components together"
    )]
    Version { path: PathBuf, found: u32 },
}

/// A pod that the claim is reserved for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodRef {
    pub uid: String,
    pub name: String,
}

/// A route inside the pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlannedRoute {
    pub dst: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
}

/// The default route (`0.0.0.0/0` or `::/0`) of the family of `addr`.
pub fn default_route(addr: IpAddr) -> IpNet {
    match addr {
        IpAddr::V4(_) => IpNet::V4(Default::default()),
        IpAddr::V6(_) => IpNet::V6(Default::default()),
    }
}

/// One device of the plan, in pod interface order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlannedDevice {
    /// The claim request that got the device.
    pub request: String,
    pub pool: String,
    /// Device name in the ResourceSlice.
    pub device: String,
    /// The netdev on the host (the device itself, or the parent of a child link).
    pub host_if_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rail_index: Option<u32>,
    /// Interface name inside the pod.
    pub pod_if_name: String,
    pub mode: AttachmentMode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Hardware address of the host device (moved modes) at prepare time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default)]
    pub ips: Vec<IpNet>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    #[serde(default)]
    pub routes: Vec<PlannedRoute>,
    /// Routing table for this interface when policy routing is on (a rule sends traffic from its
    /// addresses to this table).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rdma_device: Option<String>,
}

/// The plan of one claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub version: u32,
    #[serde(rename = "claimUID")]
    pub claim_uid: String,
    pub namespace: String,
    pub name: String,
    /// Pods the claim is reserved for (from `status.reservedFor`).
    #[serde(default)]
    pub pods: Vec<PodRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    pub devices: Vec<PlannedDevice>,
}

impl Plan {
    /// Whether this plan belongs to the pod (by UID, else by namespace and name).
    pub fn is_for_pod(&self, pod_uid: Option<&str>, namespace: &str, name: &str) -> bool {
        match pod_uid {
            Some(uid) if !uid.is_empty() => self.pods.iter().any(|p| p.uid == uid),
            _ => self.namespace == namespace && self.pods.iter().any(|p| p.name == name),
        }
    }
}

fn is_uid(uid: &str) -> bool {
    !uid.is_empty() && uid.len() <= MAX_UID_LEN && uid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Validates a claim UID for use as a file name (no path traversal).
pub fn validate_uid(uid: &str) -> Result<(), PlanError> {
    if is_uid(uid) {
        Ok(())
    } else {
        Err(PlanError::BadUid(uid.to_string()))
    }
}

/// Validates a pod UID (from the CNI caller's `K8S_POD_UID`) for use as a directory name.
pub fn validate_pod_uid(uid: &str) -> Result<(), PlanError> {
    if is_uid(uid) {
        Ok(())
    } else {
        Err(PlanError::BadPodUid(uid.to_string()))
    }
}

/// Plans on disk, one file per claim.
#[derive(Debug, Clone)]
pub struct PlanStore {
    dir: PathBuf,
}

impl PlanStore {
    /// `state_dir/plans`.
    pub fn new(state_dir: &Path) -> Self {
        Self {
            dir: state_dir.join("plans"),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path_of(&self, claim_uid: &str) -> Result<PathBuf, PlanError> {
        validate_uid(claim_uid)?;
        Ok(self.dir.join(format!("{claim_uid}.json")))
    }

    /// Atomically and durably writes one plan (0600); see [`PlanStore::write_batch`].
    pub fn write(&self, plan: &Plan) -> Result<(), PlanError> {
        self.write_batch(&[plan]).pop().unwrap_or(Ok(()))
    }

    /// Writes a batch of plans, each atomically (0600), and returns once all of them are durable:
    /// one result per plan, in order. A plan whose result is `Ok` survives a crash or power loss
    /// from then on; an `Err` plan may or may not be on disk (the caller removes it).
    ///
    /// Which syncs make a rename durable, and why there are two per batch and none per file:
    ///
    /// 1. Every plan is written to `.<uid>.json.tmp` and its pod index markers are created; nothing
    ///    is synced yet.
    /// 2. **`syncfs` on the state filesystem** writes back the data and metadata of every file and
    ///    directory written in step 1 (one writeback + one journal commit for the whole batch,
    ///    instead of an `fsync` per temp file). It must happen *before* the renames: a rename can
    ///    reach the disk before the renamed file's data (ext4 delayed allocation, XFS), and after a
    ///    crash the plan's name would then point at an empty or partial file. It also makes the
    ///    markers durable before the plan, which is the order readers need (a marker without a plan
    ///    is ignored, a plan without its marker is invisible to CNI ADD). Since Linux 5.8, `syncfs`
    ///    reports writeback errors of the filesystem (a failure of another file on it fails the
    ///    batch: safe, never a false success). Its cost includes other writers' dirty data on the
    ///    same filesystem, so the state dir should not share a busy filesystem.
    /// 3. The temp files are renamed over the plan files (atomic for readers).
    /// 4. **`fsync` of the plans directory** makes the renames durable: a rename is a change to the
    ///    directory, and only syncing the directory commits it (the file's own `fsync` does not
    ///    cover its name). One directory sync covers every rename of the batch.
    pub fn write_batch(&self, plans: &[&Plan]) -> Vec<Result<(), PlanError>> {
        let mut results: Vec<Result<(), PlanError>> = Vec::with_capacity(plans.len());
        let mut staged = Vec::with_capacity(plans.len());
        let dir = match create_private_dir(&self.dir).and_then(|()| File::open(&self.dir)) {
            Ok(dir) => dir,
            Err(e) => return plans.iter().map(|_| Err(self.dir_error(&e))).collect(),
        };
        for (i, plan) in plans.iter().enumerate() {
            match self.stage(plan) {
                Ok((tmp, path)) => {
                    staged.push((i, tmp, path));
                    results.push(Ok(()));
                }
                Err(e) => results.push(Err(e)),
            }
        }
        if staged.is_empty() {
            return results;
        }
        if let Err(e) = nix::unistd::syncfs(&dir) {
            let e = std::io::Error::from(e);
            for (i, tmp, _) in staged {
                let _ = fs::remove_file(tmp);
                results[i] = Err(self.dir_error(&e));
            }
            return results;
        }
        let mut renamed = Vec::with_capacity(staged.len());
        for (i, tmp, path) in staged {
            match fs::rename(&tmp, &path) {
                Ok(()) => renamed.push(i),
                Err(source) => results[i] = Err(PlanError::Io { path, source }),
            }
        }
        if let Err(e) = dir.sync_all() {
            for i in renamed {
                results[i] = Err(self.dir_error(&e));
            }
        }
        results
    }

    /// Step 1 of [`PlanStore::write_batch`] for one plan: the pod index markers, then the temp
    /// file (unsynced). Returns (temp path, plan path).
    fn stage(&self, plan: &Plan) -> Result<(PathBuf, PathBuf), PlanError> {
        let path = self.path_of(&plan.claim_uid)?;
        // The pod index first: a marker without a plan is ignored, a plan without its marker
        // would be invisible to the CNI plugin.
        for pod in &plan.pods {
            let marker = self.pod_dir(&pod.uid)?.join(&plan.claim_uid);
            let io = |source| PlanError::Io {
                path: marker.clone(),
                source,
            };
            create_private_dir(marker.parent().unwrap_or(&self.dir)).map_err(io)?;
            OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&marker)
                .map_err(io)?;
        }
        let tmp = self.dir.join(format!(".{}.json.tmp", plan.claim_uid));
        let body = serde_json::to_vec_pretty(plan).map_err(|e| PlanError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut file| file.write_all(&body))
            .map_err(|source| PlanError::Io {
                path: tmp.clone(),
                source,
            })?;
        Ok((tmp, path))
    }

    /// A failure that concerns the whole batch, as the error of one of its plans.
    fn dir_error(&self, e: &std::io::Error) -> PlanError {
        PlanError::Io {
            path: self.dir.clone(),
            source: std::io::Error::new(e.kind(), e.to_string()),
        }
    }

    /// Loads the plan of a claim; `Ok(None)` when there is none.
    pub fn load(&self, claim_uid: &str) -> Result<Option<Plan>, PlanError> {
        let path = self.path_of(claim_uid)?;
        match load_file(&path) {
            Ok(plan) => Ok(Some(plan)),
            Err(PlanError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Removes a plan, then the pod index markers of the pods it lists; a missing plan is success.
    /// Not synced: a removal lost in a crash brings the plan back, and the plugin releases plans
    /// whose claim is gone when it starts.
    pub fn remove(&self, plan: &Plan) -> Result<(), PlanError> {
        remove_if_present(&self.path_of(&plan.claim_uid)?)?;
        for pod in &plan.pods {
            let dir = self.pod_dir(&pod.uid)?;
            remove_if_present(&dir.join(&plan.claim_uid))?;
            // Drop the pod's directory once it is empty; a concurrent writer recreates it.
            let _ = fs::remove_dir(&dir);
        }
        Ok(())
    }

    fn pod_dir(&self, pod_uid: &str) -> Result<PathBuf, PlanError> {
        validate_pod_uid(pod_uid)?;
        Ok(self.dir.join(POD_INDEX).join(pod_uid))
    }

    /// The plans indexed under a pod UID (what CNI ADD needs), without reading any other plan.
    /// Markers whose plan is gone are skipped.
    pub fn load_for_pod(&self, pod_uid: &str) -> Result<(Vec<Plan>, Vec<PlanError>), PlanError> {
        let dir = self.pod_dir(pod_uid)?;
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), Vec::new())),
            Err(source) => return Err(PlanError::Io { path: dir, source }),
        };
        let mut uids: Vec<String> = entries
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        uids.sort();
        let mut plans = Vec::new();
        let mut errors = Vec::new();
        for uid in uids {
            match self.load(&uid) {
                Ok(Some(plan)) => plans.push(plan),
                Ok(None) => {}
                Err(e) => errors.push(e),
            }
        }
        Ok((plans, errors))
    }

    /// The claim UIDs that have a plan file (temporary files are ignored).
    pub fn claim_uids(&self) -> Result<Vec<String>, PlanError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(PlanError::Io {
                    path: self.dir.clone(),
                    source,
                });
            }
        };
        let mut uids = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| PlanError::Io {
                path: self.dir.clone(),
                source,
            })?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(uid) = name.strip_suffix(".json")
                && validate_uid(uid).is_ok()
            {
                uids.push(uid.to_string());
            }
        }
        uids.sort();
        Ok(uids)
    }

    /// Every readable plan, plus the errors of the unreadable ones.
    pub fn load_all(&self) -> Result<(Vec<Plan>, Vec<PlanError>), PlanError> {
        let mut plans = Vec::new();
        let mut errors = Vec::new();
        for uid in self.claim_uids()? {
            match self.load(&uid) {
                Ok(Some(plan)) => plans.push(plan),
                Ok(None) => {}
                Err(e) => errors.push(e),
            }
        }
        Ok((plans, errors))
    }
}

fn remove_if_present(path: &Path) -> Result<(), PlanError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(PlanError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Reads and checks one plan file.
pub fn load_file(path: &Path) -> Result<Plan, PlanError> {
    let io = |source| PlanError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    let mut body = Vec::new();
    file.take(MAX_PLAN_BYTES + 1).read_to_end(&mut body).map_err(io)?;
    parse_plan(path, &body)
}

/// Parses plan bytes; never panics on corrupt input.
pub fn parse_plan(path: &Path, body: &[u8]) -> Result<Plan, PlanError> {
    if body.len() as u64 > MAX_PLAN_BYTES {
        return Err(PlanError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    #[derive(Deserialize)]
    struct Versioned {
        version: u32,
    }
    let corrupt = |e: serde_json::Error| PlanError::Corrupt {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let Versioned { version } = serde_json::from_slice(body).map_err(corrupt)?;
    if version != PLAN_VERSION {
        return Err(PlanError::Version {
            path: path.to_path_buf(),
            found: version,
        });
    }
    let plan: Plan = serde_json::from_slice(body).map_err(corrupt)?;
    if plan.claim_uid.is_empty() || validate_uid(&plan.claim_uid).is_err() {
        return Err(PlanError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("bad claimUID {:?}", plan.claim_uid),
        });
    }
    Ok(plan)
}

/// Creates a directory (and parents) with mode 0750 for the leaf.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    fs::create_dir_all(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o750))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample(uid: &str) -> Plan {
        Plan {
            version: PLAN_VERSION,
            claim_uid: uid.into(),
            namespace: "ml".into(),
            name: "train-0-nics".into(),
            pods: vec![PodRef {
                uid: "pod-uid-1".into(),
                name: "train-0".into(),
            }],
            network: Some("rdma-rails".into()),
            devices: vec![PlannedDevice {
                request: "nics".into(),
                pool: "node-a".into(),
                device: "pci-0000-3b-00-0".into(),
                host_if_name: "ens1f0".into(),
                rail_index: Some(0),
                pod_if_name: "net1".into(),
                mode: AttachmentMode::HostDevice,
                mtu: Some(9000),
                mac: Some("02:00:00:00:00:01".into()),
                ips: vec!["10.10.0.1/30".parse().unwrap()],
                gateway: None,
                routes: vec![PlannedRoute {
                    dst: "10.10.0.0/16".parse().unwrap(),
                    gateway: None,
                }],
                table: Some(101),
                rdma_device: Some("mlx5_0".into()),
            }],
        }
    }

    #[test]
    fn write_load_remove_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = PlanStore::new(dir.path());
        let plan = sample("0b6e5a3c-1111-2222-3333-444455556666");
        assert!(store.load(&plan.claim_uid).unwrap().is_none());
        store.write(&plan).unwrap();
        store.write(&plan).unwrap();
        assert_eq!(store.load(&plan.claim_uid).unwrap(), Some(plan.clone()));
        let mode = fs::metadata(store.path_of(&plan.claim_uid).unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(store.claim_uids().unwrap(), vec![plan.claim_uid.clone()]);
        store.remove(&plan).unwrap();
        store.remove(&plan).unwrap();
        assert!(store.claim_uids().unwrap().is_empty());
    }

    #[test]
    fn pod_index_finds_only_the_pods_plans() {
        let dir = tempfile::tempdir().unwrap();
        let store = PlanStore::new(dir.path());
        let a = sample("aaaa-1");
        let mut b = sample("bbbb-2");
        b.pods[0].uid = "pod-uid-2".into();
        store.write(&a).unwrap();
        store.write(&b).unwrap();
        // A corrupt plan of another pod does not disturb this pod's lookup.
        fs::write(store.path_of("cccc-3").unwrap(), b"{").unwrap();
        let (plans, errors) = store.load_for_pod("pod-uid-1").unwrap();
        assert_eq!((plans, errors.len()), (vec![a.clone()], 0));
        assert!(store.load_for_pod("pod-uid-9").unwrap().0.is_empty());
        // A bad pod UID names the CNI field it came from, not a claim.
        let bad = store.load_for_pod("../x").unwrap_err();
        assert!(matches!(bad, PlanError::BadPodUid(_)));
        assert!(bad.to_string().contains("K8S_POD_UID"), "{bad}");
        store.remove(&a).unwrap();
        assert!(store.load_for_pod("pod-uid-1").unwrap().0.is_empty());
        assert!(
            !dir.path().join("plans/pods/pod-uid-1").exists(),
            "empty pod dir removed"
        );
        assert_eq!(store.load_for_pod("pod-uid-2").unwrap().0, vec![b]);
        assert_eq!(
            store.claim_uids().unwrap(),
            vec!["bbbb-2", "cccc-3"],
            "the index is not a plan"
        );
    }

    #[test]
    fn a_batch_writes_every_plan_and_reports_each_failure_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = PlanStore::new(dir.path());
        let mut plans: Vec<Plan> = (0..5).map(|i| sample(&format!("batch-{i}"))).collect();
        plans[2].claim_uid = "../escape".into();
        // Something in the way of plan 3's temp file.
        fs::create_dir_all(store.dir().join(".batch-3.json.tmp/x")).unwrap();
        let refs: Vec<&Plan> = plans.iter().collect();
        let results = store.write_batch(&refs);
        assert_eq!(results.len(), 5);
        assert!(matches!(results[2], Err(PlanError::BadUid(_))), "{:?}", results[2]);
        assert!(matches!(results[3], Err(PlanError::Io { .. })), "{:?}", results[3]);
        for i in [0, 1, 4] {
            assert!(results[i].is_ok(), "{i}: {:?}", results[i]);
            assert_eq!(store.load(&plans[i].claim_uid).unwrap().as_ref(), Some(&plans[i]));
        }
        assert_eq!(store.claim_uids().unwrap(), ["batch-0", "batch-1", "batch-4"]);
        let (for_pod, errors) = store.load_for_pod("pod-uid-1").unwrap();
        assert!(errors.is_empty());
        assert_eq!(for_pod.len(), 3, "every written plan is in the pod index");
        assert!(store.write_batch(&[]).is_empty());

        // No plans directory possible: every plan of the batch fails, none is reported written.
        let file = dir.path().join("not-a-dir");
        fs::write(&file, b"").unwrap();
        let blocked = PlanStore::new(&file);
        let results = blocked.write_batch(&[&plans[0], &plans[1]]);
        assert!(
            results.iter().all(|r| matches!(r, Err(PlanError::Io { .. }))),
            "{results:?}"
        );
    }

    #[test]
    fn traversal_uids_are_refused() {
        let store = PlanStore::new(Path::new("/nonexistent"));
        for bad in ["../etc/passwd", "a/b", "", ".", "x".repeat(65).as_str()] {
            assert!(matches!(store.path_of(bad), Err(PlanError::BadUid(_))), "{bad}");
        }
    }

    #[test]
    fn corrupt_truncated_and_foreign_files_are_errors() {
        let p = Path::new("x.json");
        let good = serde_json::to_vec(&sample("abc")).unwrap();
        for cut in [0, 1, good.len() / 2, good.len() - 1] {
            assert!(
                matches!(parse_plan(p, &good[..cut]), Err(PlanError::Corrupt { .. })),
                "cut at {cut}"
            );
        }
        assert!(matches!(
            parse_plan(p, br#"{"version":7}"#),
            Err(PlanError::Version { found: 7, .. })
        ));
        let mut bad_uid = sample("abc");
        bad_uid.claim_uid = "../x".into();
        assert!(matches!(
            parse_plan(p, &serde_json::to_vec(&bad_uid).unwrap()),
            Err(PlanError::Corrupt { .. })
        ));
        assert!(parse_plan(p, &good).is_ok());
    }

    #[test]
    fn pod_matching_prefers_uid() {
        let plan = sample("abc");
        assert!(plan.is_for_pod(Some("pod-uid-1"), "other", "other"));
        assert!(!plan.is_for_pod(Some("pod-uid-2"), "ml", "train-0"));
        assert!(plan.is_for_pod(None, "ml", "train-0"));
        assert!(plan.is_for_pod(Some(""), "ml", "train-0"));
        assert!(!plan.is_for_pod(None, "default", "train-0"));
    }
}
