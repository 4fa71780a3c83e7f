//! `multinic install-cni`: what the DaemonSet's init container runs — copy `multinic-cni` into the
//! host's CNI bin dir and, when asked, chain it into the primary network's conflist.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::bench::SiblingError;
use crate::fsio::PathError;

/// The plugin type written into a conflist.
const PLUGIN_TYPE: &str = "multinic-cni";

/// A config that [`chained`] cannot chain into.
#[derive(Debug, thiserror::Error)]
#[error("not a conflist: no \"plugins\" array (only .conflist files can be chained into)")]
pub struct NotAConflist;

/// Why `multinic install-cni` failed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error(transparent)]
    Sibling(#[from] SiblingError),
    #[error(transparent)]
    Io(#[from] PathError),
    #[error("the primary CNI config {path} is not a .conflist; chain multinic-cni by hand or via Multus")]
    NotConflistFile { path: PathBuf },
    #[error("no CNI config in {dir}; install the primary CNI first")]
    NoConfig { dir: PathBuf },
    #[error("{path} is not JSON: {source}")]
    NotJson { path: PathBuf, source: serde_json::Error },
    #[error("{path}: {source}")]
    Chain { path: PathBuf, source: NotAConflist },
    #[error("encoding the chained conflist for {path}: {source}")]
    Encode { path: PathBuf, source: serde_json::Error },
}

#[derive(Debug, clap::Args)]
pub struct InstallArgs {
    /// The multinic-cni binary to install; default: next to this executable.
    #[arg(long)]
    cni_bin: Option<PathBuf>,
    /// The host's CNI binary directory (mounted).
    #[arg(long, default_value = "/host/opt/cni/bin")]
    bin_dir: PathBuf,
    /// Also append multinic-cni to the primary conflist (the first, in name order, in this dir).
    #[arg(long)]
    chain_into: Option<PathBuf>,
    /// stateDir written into the chained plugin's config.
    #[arg(long, default_value = multinic_api::names::DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
}

/// Pure: the conflist with our plugin appended last, unless it is already there (`None`).
pub fn chained(conflist: &Value, state_dir: &Path) -> Result<Option<Value>, NotAConflist> {
    let plugins = conflist.get("plugins").and_then(Value::as_array).ok_or(NotAConflist)?;
    if plugins
        .iter()
        .any(|p| p.get("type").and_then(Value::as_str) == Some(PLUGIN_TYPE))
    {
        return Ok(None);
    }
    let mut out = conflist.clone();
    if let Some(list) = out.get_mut("plugins").and_then(Value::as_array_mut) {
        list.push(json!({"type": PLUGIN_TYPE, "stateDir": state_dir}));
    }
    Ok(Some(out))
}

/// The primary conflist: the first `*.conflist` in name order (what the runtime picks).
fn primary_conflist(dir: &Path) -> Result<PathBuf, InstallError> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(PathError::on("reading", dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("conflist" | "conf" | "json")
            )
        })
        .collect();
    files.sort();
    match files.into_iter().next() {
        Some(p) if p.extension().is_some_and(|e| e == "conflist") => Ok(p),
        Some(path) => Err(InstallError::NotConflistFile { path }),
        None => Err(InstallError::NoConfig { dir: dir.to_path_buf() }),
    }
}

/// Writes `body` to `path` crash-safely (`multinic_api::fsutil::write_atomic`).
fn write_atomically(path: &Path, body: &[u8], mode: u32) -> Result<(), InstallError> {
    multinic_api::fsutil::write_atomic(path, body, mode).map_err(PathError::on("writing", path))?;
    Ok(())
}

pub fn run(args: InstallArgs) -> Result<(), InstallError> {
    let src = match args.cni_bin {
        Some(p) => p,
        None => crate::bench::sibling(PLUGIN_TYPE)?,
    };
    let body = fs::read(&src).map_err(PathError::on("reading", &src))?;
    let dst = args.bin_dir.join(PLUGIN_TYPE);
    write_atomically(&dst, &body, 0o755)?;
    println!("installed {}", dst.display());
    if let Some(dir) = args.chain_into {
        let path = primary_conflist(&dir)?;
        let text = fs::read_to_string(&path).map_err(PathError::on("reading", &path))?;
        let conflist: Value = serde_json::from_str(&text).map_err(|source| InstallError::NotJson {
            path: path.clone(),
            source,
        })?;
        let chain = chained(&conflist, &args.state_dir).map_err(|source| InstallError::Chain {
            path: path.clone(),
            source,
        })?;
        match chain {
            Some(updated) => {
                let body = serde_json::to_string_pretty(&updated).map_err(|source| InstallError::Encode {
                    path: path.clone(),
                    source,
                })?;
                write_atomically(&path, body.as_bytes(), 0o644)?;
                println!("chained {PLUGIN_TYPE} into {}", path.display());
            }
            None => println!("{} already chains {PLUGIN_TYPE}", path.display()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn chaining_appends_once_and_keeps_the_primary() {
        let primary =
            json!({"cniVersion": "1.0.0", "name": "kindnet", "plugins": [{"type": "ptp"}, {"type": "portmap"}]});
        let once = chained(&primary, Path::new("/var/lib/multinic")).unwrap().unwrap();
        let types: Vec<&str> = once["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p["type"].as_str())
            .collect();
        assert_eq!(types, ["ptp", "portmap", "multinic-cni"]);
        assert_eq!(once["plugins"][2]["stateDir"], "/var/lib/multinic");
        assert!(chained(&once, Path::new("/x")).unwrap().is_none(), "idempotent");
        assert!(
            chained(&json!({"type": "bridge"}), Path::new("/x")).is_err(),
            "a .conf is refused"
        );
    }

    #[test]
    fn install_copies_the_binary_and_chains_the_first_conflist() {
        let dir = tempfile::tempdir().unwrap();
        let (bin, net) = (dir.path().join("bin"), dir.path().join("net.d"));
        fs::create_dir_all(&bin).unwrap();
        fs::create_dir_all(&net).unwrap();
        let src = dir.path().join("multinic-cni");
        fs::write(&src, b"#!binary").unwrap();
        fs::write(
            net.join("10-kindnet.conflist"),
            r#"{"cniVersion":"1.0.0","name":"k","plugins":[{"type":"ptp"}]}"#,
        )
        .unwrap();
        fs::write(
            net.join("99-other.conflist"),
            r#"{"cniVersion":"1.0.0","name":"o","plugins":[{"type":"x"}]}"#,
        )
        .unwrap();
        let args = || InstallArgs {
            cni_bin: Some(src.clone()),
            bin_dir: bin.clone(),
            chain_into: Some(net.clone()),
            state_dir: "/var/lib/multinic".into(),
        };
        run(args()).unwrap();
        run(args()).unwrap();
        assert_eq!(fs::read(bin.join("multinic-cni")).unwrap(), b"#!binary");
        assert_eq!(
            fs::metadata(bin.join("multinic-cni")).unwrap().permissions().mode() & 0o777,
            0o755
        );
        let first: Value = serde_json::from_str(&fs::read_to_string(net.join("10-kindnet.conflist")).unwrap()).unwrap();
        assert_eq!(first["plugins"].as_array().unwrap().len(), 2, "chained once");
        let other = fs::read_to_string(net.join("99-other.conflist")).unwrap();
        assert!(!other.contains("multinic"), "only the primary conflist is touched");
    }
}
