//! The plugin's error type and its CNI error JSON (spec "Error" section).

use serde_json::{Value, json};

use multinic_api::PlanError;

/// Plugin-specific error codes (the spec reserves 0-99).
pub mod codes {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const CONTAINER_UNKNOWN: u32 = 3;
    pub const INVALID_ENV: u32 = 4;
    pub const IO: u32 = 5;
    pub const DECODE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_AGAIN: u32 = 11;
    pub const NOT_AVAILABLE: u32 = 50;
    /// A netlink step on a device failed.
    pub const DEVICE: u32 = 100;
    /// CHECK found the pod's network different from the plan.
    pub const CHECK_MISMATCH: u32 = 101;
    /// A device or name is held by something else.
    pub const CONFLICT: u32 = 102;
    /// The test-only fault injection hook fired.
    pub const FAULT_INJECTED: u32 = 199;
}

#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error("cniVersion {version:?} is not supported; this plugin speaks {supported}")]
    IncompatibleVersion { version: String, supported: String },
    #[error("environment variable {var} is required for {command}")]
    MissingEnv { var: &'static str, command: &'static str },
    #[error("environment variable {var}={value:?} is invalid: {reason}")]
    InvalidEnv {
        var: &'static str,
        value: String,
        reason: String,
    },
    #[error("CNI_NETNS {path:?} is not a network namespace ({reason}); the runtime must pass the pod's netns path")]
    NotNetns { path: String, reason: String },
    #[error("CNI_NETNS {path:?} does not exist ({reason}); the pod sandbox is gone")]
    NetnsGone { path: String, reason: String },
    #[error("cannot decode the network configuration on stdin: {0}")]
    Decode(String),
    #[error("invalid network configuration: {0}")]
    InvalidConfig(String),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("{0}")]
    Plan(#[from] PlanError),
    #[error("device {device}: {step} failed: {cause}")]
    Device {
        device: String,
        step: String,
        cause: String,
    },
    #[error("device {device}: {problem}")]
    Conflict { device: String, problem: String },
    #[error("CHECK: device {device}: {problem}")]
    Check { device: String, problem: String },
    #[error("state dir {path} is not readable: {source}; mount the multinic state dir (hostPath) on the node")]
    NotAvailable { path: String, source: std::io::Error },
    #[error("fault injected after {step} {after} ({device}); set by MULTINIC_CNI_FAULT, a test-only hook")]
    FaultInjected {
        step: &'static str,
        after: usize,
        device: String,
    },
}

impl CniError {
    /// The spec's error code.
    pub fn code(&self) -> u32 {
        match self {
            Self::IncompatibleVersion { .. } => codes::INCOMPATIBLE_VERSION,
            Self::MissingEnv { .. } | Self::InvalidEnv { .. } | Self::NotNetns { .. } => codes::INVALID_ENV,
            Self::NetnsGone { .. } => codes::CONTAINER_UNKNOWN,
            Self::Decode(_) => codes::DECODE,
            Self::InvalidConfig(_) => codes::INVALID_CONFIG,
            Self::Io { .. } => codes::IO,
            Self::Plan(PlanError::Io { .. }) => codes::IO,
            Self::Plan(_) => codes::INVALID_CONFIG,
            Self::Device { .. } => codes::DEVICE,
            Self::Conflict { .. } => codes::CONFLICT,
            Self::Check { .. } => codes::CHECK_MISMATCH,
            Self::NotAvailable { .. } => codes::NOT_AVAILABLE,
            Self::FaultInjected { .. } => codes::FAULT_INJECTED,
        }
    }

    /// A short line for `details`, naming what to look at.
    fn details(&self) -> String {
        match self {
            Self::Device { device, .. } | Self::Conflict { device, .. } | Self::Check { device, .. } => {
                format!("device={device}")
            }
            Self::Plan(e) => format!("plan: {e}"),
            _ => String::new(),
        }
    }

    /// The CNI error object printed on stdout.
    pub fn to_json(&self, cni_version: &str) -> Value {
        let mut v = json!({
            "cniVersion": cni_version,
            "code": self.code(),
            "msg": self.to_string(),
        });
        let details = self.details();
        if !details.is_empty() {
            v["details"] = Value::String(details);
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_json_has_code_msg_and_device() {
        let e = CniError::Device {
            device: "ens1f0".into(),
            step: "move into the pod netns as net1".into(),
            cause: "File exists (os error 17)".into(),
        };
        let j = e.to_json("1.1.0");
        assert_eq!(j["cniVersion"], "1.1.0");
        assert_eq!(j["code"], 100);
        let msg = j["msg"].as_str().unwrap_or_default();
        assert!(msg.contains("ens1f0") && msg.contains("File exists"), "{msg}");
        assert_eq!(j["details"], "device=ens1f0");
        let e = CniError::MissingEnv {
            var: "CNI_NETNS",
            command: "ADD",
        };
        assert_eq!(e.to_json("1.0.0")["code"], 4);
        assert!(e.to_json("1.0.0").get("details").is_none());
    }
}
