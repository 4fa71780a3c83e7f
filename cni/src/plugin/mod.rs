//! The CNI commands: ADD ([`add`]), DEL and the revert shared with ADD and GC ([`del`]), CHECK
//! ([`check`]), GC ([`gc`]), and here STATUS and VERSION. The pieces they share: the pod's plans
//! ([`plans`]), the netlink context of an attachment ([`ctx`]) and test fault injection ([`fault`]).

mod add;
mod check;
mod ctx;
mod del;
mod fault;
mod gc;
mod plans;
#[cfg(test)]
mod testutil;

use serde_json::Value;

use crate::args::{CniEnv, Command};
use crate::config::{NetConf, answer_version, parse_conf, version_result};
use crate::error::CniError;

pub use fault::{FAULT_ENV, Fault, TEST_MODE_ENV, fault_from_env};
pub use plans::{pod_plans, validate_devices};

/// Runs one invocation; `Ok(Some(json))` is printed on stdout, `Ok(None)` prints nothing.
pub fn run(env: &CniEnv, stdin: &[u8], fault: Option<Fault>) -> Result<Option<Value>, CniError> {
    if env.command == Command::Version {
        return Ok(Some(version_result(&answer_version(stdin))));
    }
    let conf = parse_conf(stdin)?;
    if env.command == Command::Status {
        return status(&conf).map(|()| None);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| CniError::Io {
            what: "start the async runtime".into(),
            source,
        })?;
    rt.block_on(async {
        match env.command {
            Command::Add => add::add(env, &conf, fault).await.map(Some),
            Command::Del => del::del(env, &conf, fault).await.map(|()| None),
            Command::Check => check::check(env, &conf).await.map(|()| None),
            Command::Gc => gc::gc(&conf).await.map(|()| None),
            Command::Status | Command::Version => Ok(None),
        }
    })
}

/// STATUS: ready when the state dir is readable.
fn status(conf: &NetConf) -> Result<(), CniError> {
    std::fs::read_dir(&conf.state_dir)
        .map(|_| ())
        .map_err(|source| CniError::NotAvailable {
            path: conf.state_dir.display().to_string(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::testutil::cni_env;

    #[test]
    fn no_plan_passes_prev_result_through() {
        let dir = tempfile::tempdir().unwrap();
        let prev = serde_json::json!({"cniVersion":"1.0.0","interfaces":[{"name":"eth0"}],"ips":[]});
        let stdin = serde_json::json!({
            "cniVersion": "1.0.0", "name": "n", "type": "multinic-cni",
            "stateDir": dir.path(), "prevResult": prev,
        });
        let out = run(&cni_env(Some("pod-1")), stdin.to_string().as_bytes(), None).unwrap();
        assert_eq!(out, Some(prev));
        let version = run(
            &CniEnv {
                command: Command::Version,
                ..cni_env(None)
            },
            b"",
            None,
        )
        .unwrap()
        .unwrap_or_default();
        assert_eq!(version["cniVersion"], "1.1.0");
    }

    #[test]
    fn status_needs_a_readable_state_dir() {
        let dir = tempfile::tempdir().unwrap();
        let ok = serde_json::json!({"cniVersion":"1.1.0","name":"n","stateDir": dir.path()});
        let env = CniEnv {
            command: Command::Status,
            ..cni_env(None)
        };
        assert_eq!(run(&env, ok.to_string().as_bytes(), None).unwrap(), None);
        let gone = serde_json::json!({"cniVersion":"1.1.0","name":"n","stateDir": dir.path().join("x")});
        let err = run(&env, gone.to_string().as_bytes(), None).unwrap_err();
        assert_eq!(err.code(), 50);
    }
}
