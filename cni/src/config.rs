//! The network configuration on stdin (standalone, chained with `prevResult`, or a Multus delegate).

use std::path::PathBuf;

use serde::Deserialize;
use serde_json::Value;

use multinic_api::names::DEFAULT_STATE_DIR;

use crate::error::CniError;

/// Largest accepted stdin (a config with a big `prevResult` is a few KiB).
pub const MAX_STDIN_BYTES: u64 = 1024 * 1024;
/// CNI versions this plugin implements.
pub const SUPPORTED_VERSIONS: &[&str] = &["1.0.0", "1.1.0"];
/// The version we answer in when the caller names none (VERSION, or a config that does not parse).
pub const LATEST_VERSION: &str = "1.1.0";

/// One entry of `cni.dev/valid-attachments` (GC).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ValidAttachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// What this plugin reads from the network configuration. Other keys are ignored (chained configs
/// carry `runtimeConfig`, `args`, other plugins' keys).
#[derive(Debug, Clone, PartialEq)]
pub struct NetConf {
    pub cni_version: String,
    pub name: String,
    pub plugin_type: String,
    /// Where plans are read from: `<stateDir>/plans/*.json`.
    pub state_dir: PathBuf,
    pub prev_result: Option<Value>,
    pub valid_attachments: Option<Vec<ValidAttachment>>,
    /// Optional log file (default: stderr).
    pub log_file: Option<PathBuf>,
    /// Optional `tracing` filter, e.g. `debug`.
    pub log_level: Option<String>,
}

#[derive(Deserialize)]
struct Raw {
    #[serde(rename = "cniVersion")]
    cni_version: Option<String>,
    name: Option<String>,
    #[serde(rename = "type")]
    plugin_type: Option<String>,
    #[serde(rename = "stateDir")]
    state_dir: Option<PathBuf>,
    #[serde(rename = "prevResult")]
    prev_result: Option<Value>,
    #[serde(rename = "cni.dev/valid-attachments")]
    valid_attachments: Option<Vec<ValidAttachment>>,
    #[serde(rename = "logFile")]
    log_file: Option<PathBuf>,
    #[serde(rename = "logLevel")]
    log_level: Option<String>,
}

/// The `cniVersion` of a config, for error output even when the rest does not parse.
pub fn sniff_version(stdin: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct V {
        #[serde(rename = "cniVersion")]
        v: Option<String>,
    }
    serde_json::from_slice::<V>(stdin).ok().and_then(|v| v.v)
}

/// The version to answer a config in: its `cniVersion`, else [`LATEST_VERSION`].
pub fn answer_version(stdin: &[u8]) -> String {
    sniff_version(stdin).unwrap_or_else(|| LATEST_VERSION.to_string())
}

/// Parses and checks the config; `need_name` is false for VERSION.
pub fn parse_conf(stdin: &[u8]) -> Result<NetConf, CniError> {
    if stdin.len() as u64 > MAX_STDIN_BYTES {
        return Err(CniError::Decode(format!("stdin is over {MAX_STDIN_BYTES} bytes")));
    }
    let raw: Raw = serde_json::from_slice(stdin).map_err(|e| CniError::Decode(e.to_string()))?;
    let cni_version = raw
        .cni_version
        .ok_or_else(|| CniError::InvalidConfig("cniVersion is missing".into()))?;
    check_version(&cni_version)?;
    let name = raw
        .name
        .filter(|n| !n.is_empty())
        .ok_or_else(|| CniError::InvalidConfig("name is missing; every network config needs a name".into()))?;
    let state_dir = raw.state_dir.unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
    if !state_dir.is_absolute() {
        return Err(CniError::InvalidConfig(format!(
            "stateDir {state_dir:?} must be an absolute path"
        )));
    }
    let prev_result = match raw.prev_result {
        Some(Value::Null) | None => None,
        Some(v @ Value::Object(_)) => Some(v),
        Some(_) => return Err(CniError::InvalidConfig("prevResult must be a JSON object".into())),
    };
    Ok(NetConf {
        cni_version,
        name,
        plugin_type: raw.plugin_type.unwrap_or_default(),
        state_dir,
        prev_result,
        valid_attachments: raw.valid_attachments,
        log_file: raw.log_file,
        log_level: raw.log_level,
    })
}

pub fn check_version(version: &str) -> Result<(), CniError> {
    if SUPPORTED_VERSIONS.contains(&version) {
        Ok(())
    } else {
        Err(CniError::IncompatibleVersion {
            version: version.to_string(),
            supported: SUPPORTED_VERSIONS.join(", "),
        })
    }
}

/// Whether the version has the 1.1 result fields (interface `mtu`, route `table`).
pub fn is_1_1(version: &str) -> bool {
    version == LATEST_VERSION
}

/// The VERSION answer.
pub fn version_result(cni_version: &str) -> Value {
    serde_json::json!({
        "cniVersion": cni_version,
        "supportedVersions": SUPPORTED_VERSIONS,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standalone_defaults() {
        let c = parse_conf(br#"{"cniVersion":"1.0.0","name":"rails","type":"multinic-cni"}"#).unwrap();
        assert_eq!(c.state_dir, PathBuf::from("/var/lib/multinic"));
        assert_eq!(c.name, "rails");
        assert!(c.prev_result.is_none());
        assert!(c.valid_attachments.is_none());
    }

    #[test]
    fn chained_with_prev_result_and_extras() {
        let c = parse_conf(
            br#"{"cniVersion":"1.1.0","name":"k8s","type":"multinic-cni","stateDir":"/tmp/s",
                 "runtimeConfig":{"x":1},"prevResult":{"interfaces":[{"name":"eth0"}]},
                 "cni.dev/valid-attachments":[{"containerID":"c1","ifname":"eth0"}],"logLevel":"debug"}"#,
        )
        .unwrap();
        assert_eq!(c.state_dir, PathBuf::from("/tmp/s"));
        assert_eq!(c.prev_result.unwrap()["interfaces"][0]["name"], "eth0");
        assert_eq!(
            c.valid_attachments.unwrap(),
            vec![ValidAttachment {
                container_id: "c1".into(),
                ifname: "eth0".into()
            }]
        );
        assert_eq!(c.log_level.as_deref(), Some("debug"));
    }

    #[test]
    fn bad_configs() {
        assert!(matches!(parse_conf(b"{"), Err(CniError::Decode(_))));
        assert!(matches!(parse_conf(b"[]"), Err(CniError::Decode(_))));
        assert!(matches!(
            parse_conf(br#"{"cniVersion":"0.3.1","name":"x"}"#),
            Err(CniError::IncompatibleVersion { .. })
        ));
        assert!(matches!(
            parse_conf(br#"{"name":"x"}"#),
            Err(CniError::InvalidConfig(_))
        ));
        assert!(matches!(
            parse_conf(br#"{"cniVersion":"1.0.0"}"#),
            Err(CniError::InvalidConfig(_))
        ));
        assert!(matches!(
            parse_conf(br#"{"cniVersion":"1.0.0","name":"x","stateDir":"rel"}"#),
            Err(CniError::InvalidConfig(_))
        ));
        assert!(matches!(
            parse_conf(br#"{"cniVersion":"1.0.0","name":"x","prevResult":3}"#),
            Err(CniError::InvalidConfig(_))
        ));
        let big = vec![b' '; MAX_STDIN_BYTES as usize + 1];
        assert!(matches!(parse_conf(&big), Err(CniError::Decode(_))));
        assert_eq!(
            sniff_version(br#"{"cniVersion":"1.1.0","name":5}"#).as_deref(),
            Some("1.1.0")
        );
    }

    #[test]
    fn version_answer() {
        let v = version_result("1.1.0");
        assert_eq!(v["supportedVersions"], serde_json::json!(["1.0.0", "1.1.0"]));
    }
}
