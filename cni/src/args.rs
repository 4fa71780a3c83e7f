//! The CNI environment: `CNI_COMMAND`, `CNI_CONTAINERID`, `CNI_NETNS`, `CNI_IFNAME`, `CNI_ARGS`, `CNI_PATH`.

use multinic_api::config::validate_ifname;

use crate::error::CniError;

/// Longest accepted `CNI_ARGS` (runtimes pass a few hundred bytes).
const MAX_CNI_ARGS: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Status,
    Gc,
    Version,
}

impl Command {
    pub fn parse(s: &str) -> Result<Self, CniError> {
        Ok(match s {
            "ADD" => Self::Add,
            "DEL" => Self::Del,
            "CHECK" => Self::Check,
            "STATUS" => Self::Status,
            "GC" => Self::Gc,
            "VERSION" => Self::Version,
            _ => {
                return Err(CniError::InvalidEnv {
                    var: "CNI_COMMAND",
                    value: s.to_string(),
                    reason: "expected one of ADD, DEL, CHECK, STATUS, GC, VERSION".into(),
                });
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Add => "ADD",
            Self::Del => "DEL",
            Self::Check => "CHECK",
            Self::Status => "STATUS",
            Self::Gc => "GC",
            Self::Version => "VERSION",
        }
    }
}

/// The pod identity from `CNI_ARGS` (`K8S_POD_UID`, `K8S_POD_NAMESPACE`, `K8S_POD_NAME`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodArgs {
    pub uid: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
}

impl PodArgs {
    /// Whether there is anything to match plans against.
    pub fn identifies_a_pod(&self) -> bool {
        self.uid.as_deref().is_some_and(|u| !u.is_empty()) || (self.namespace.is_some() && self.name.is_some())
    }
}

/// Parses `CNI_ARGS` (`K=V;K=V`). Unknown keys are ignored; a pair without `=` is an error.
pub fn parse_cni_args(raw: &str) -> Result<PodArgs, CniError> {
    if raw.len() > MAX_CNI_ARGS {
        return Err(CniError::InvalidEnv {
            var: "CNI_ARGS",
            value: format!("<{} bytes>", raw.len()),
            reason: format!("longer than {MAX_CNI_ARGS} bytes"),
        });
    }
    let mut pod = PodArgs::default();
    for pair in raw.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(CniError::InvalidEnv {
                var: "CNI_ARGS",
                value: raw.to_string(),
                reason: format!("{pair:?} is not KEY=VALUE"),
            });
        };
        let value = value.trim();
        let slot = match key.trim() {
            "K8S_POD_UID" => &mut pod.uid,
            "K8S_POD_NAMESPACE" => &mut pod.namespace,
            "K8S_POD_NAME" => &mut pod.name,
            _ => continue,
        };
        *slot = (!value.is_empty()).then(|| value.to_string());
    }
    Ok(pod)
}

/// The parsed environment of one invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniEnv {
    pub command: Command,
    pub container_id: String,
    /// Empty when the runtime passes none (allowed for DEL).
    pub netns: String,
    pub ifname: String,
    pub pod: PodArgs,
}

/// A container ID per the spec: non-empty, `[A-Za-z0-9_.-]`, starting alphanumeric.
fn valid_container_id(id: &str) -> bool {
    id.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Reads and checks the environment through `get` (so tests need no process environment).
pub fn parse_env(get: impl Fn(&str) -> Option<String>) -> Result<CniEnv, CniError> {
    let command = Command::parse(&get("CNI_COMMAND").unwrap_or_default())?;
    let needs_container = matches!(command, Command::Add | Command::Del | Command::Check);
    let required = |var: &'static str| -> Result<String, CniError> {
        match get(var).filter(|v| !v.is_empty()) {
            Some(v) => Ok(v),
            None if needs_container => Err(CniError::MissingEnv {
                var,
                command: command.as_str(),
            }),
            None => Ok(String::new()),
        }
    };
    let container_id = required("CNI_CONTAINERID")?;
    if needs_container && !valid_container_id(&container_id) {
        return Err(CniError::InvalidEnv {
            var: "CNI_CONTAINERID",
            value: container_id,
            reason: "must be non-empty [A-Za-z0-9_.-] starting with a letter or digit".into(),
        });
    }
    let ifname = required("CNI_IFNAME")?;
    if needs_container && let Err(reason) = validate_ifname(&ifname) {
        return Err(CniError::InvalidEnv {
            var: "CNI_IFNAME",
            value: ifname,
            reason,
        });
    }
    // DEL may come without a netns (the sandbox is gone); ADD and CHECK need one.
    let netns = match command {
        Command::Add | Command::Check => required("CNI_NETNS")?,
        _ => get("CNI_NETNS").unwrap_or_default(),
    };
    let pod = parse_cni_args(&get("CNI_ARGS").unwrap_or_default())?;
    Ok(CniEnv {
        command,
        container_id,
        netns,
        ifname,
        pod,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn cni_args_pod_identity() {
        let a = parse_cni_args(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=ml;K8S_POD_NAME=train-0;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u-1",
        )
        .unwrap();
        assert_eq!(a.uid.as_deref(), Some("u-1"));
        assert_eq!(a.namespace.as_deref(), Some("ml"));
        assert_eq!(a.name.as_deref(), Some("train-0"));
        assert!(a.identifies_a_pod());
        assert_eq!(parse_cni_args("").unwrap(), PodArgs::default());
        assert!(!parse_cni_args(";;K8S_POD_UID=;").unwrap().identifies_a_pod());
        assert!(
            parse_cni_args("K8S_POD_NAME=x;K8S_POD_NAMESPACE=y")
                .unwrap()
                .identifies_a_pod()
        );
        assert!(!parse_cni_args("K8S_POD_NAME=x").unwrap().identifies_a_pod());
        assert!(matches!(
            parse_cni_args("K8S_POD_UID"),
            Err(CniError::InvalidEnv { var: "CNI_ARGS", .. })
        ));
        assert!(parse_cni_args(&"x".repeat(MAX_CNI_ARGS + 1)).is_err());
    }

    #[test]
    fn env_requirements_per_command() {
        let add = parse_env(env(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c0ffee"),
            ("CNI_NETNS", "/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_ARGS", "K8S_POD_UID=u"),
        ]))
        .unwrap();
        assert_eq!(add.command, Command::Add);
        assert_eq!(add.pod.uid.as_deref(), Some("u"));
        let missing = parse_env(env(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c"),
            ("CNI_IFNAME", "eth0"),
        ]));
        assert!(matches!(missing, Err(CniError::MissingEnv { var: "CNI_NETNS", .. })));
        let del = parse_env(env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "c"),
            ("CNI_IFNAME", "eth0"),
        ]))
        .unwrap();
        assert_eq!(del.netns, "");
        assert!(parse_env(env(&[("CNI_COMMAND", "VERSION")])).is_ok());
        assert!(parse_env(env(&[("CNI_COMMAND", "GC")])).is_ok());
        assert!(matches!(
            parse_env(env(&[("CNI_COMMAND", "FROB")])),
            Err(CniError::InvalidEnv { var: "CNI_COMMAND", .. })
        ));
        assert!(matches!(
            parse_env(env(&[
                ("CNI_COMMAND", "DEL"),
                ("CNI_CONTAINERID", "../x"),
                ("CNI_IFNAME", "eth0")
            ])),
            Err(CniError::InvalidEnv {
                var: "CNI_CONTAINERID",
                ..
            })
        ));
        assert!(matches!(
            parse_env(env(&[
                ("CNI_COMMAND", "DEL"),
                ("CNI_CONTAINERID", "c"),
                ("CNI_IFNAME", "a/b")
            ])),
            Err(CniError::InvalidEnv { var: "CNI_IFNAME", .. })
        ));
    }
}
