//! Test-only fault injection: a command stops where a crash would.

use crate::error::CniError;

/// Test-only fault injection (see [`fault_from_env`]). Every fault stops the command with an
/// error and without rollback, as a crash at that step would.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// ADD: once this many devices are applied (`after-device-N`).
    AfterDevice(usize),
    /// ADD: once the addresses of the N-th device are added, before it is up and routed
    /// (`after-addresses-N`).
    AfterAddresses(usize),
    /// ADD: once the routes of the N-th device are added, before its policy rules
    /// (`after-routes-N`).
    AfterRoutes(usize),
    /// DEL: once this many links are reverted (`del-after-device-N`).
    DelAfterDevice(usize),
}

impl Fault {
    fn parse(spec: &str) -> Option<Self> {
        let (make, n): (fn(usize) -> Self, &str) = if let Some(n) = spec.strip_prefix("after-device-") {
            (Self::AfterDevice, n)
        } else if let Some(n) = spec.strip_prefix("after-addresses-") {
            (Self::AfterAddresses, n)
        } else if let Some(n) = spec.strip_prefix("after-routes-") {
            (Self::AfterRoutes, n)
        } else {
            (Self::DelAfterDevice, spec.strip_prefix("del-after-device-")?)
        };
        Some(make(n.parse().ok()?))
    }

    /// The error of this fault when it is the one armed.
    pub(super) fn hit(fault: Option<Fault>, here: Fault, device: &str) -> Result<(), CniError> {
        if fault != Some(here) {
            return Ok(());
        }
        let (step, after) = match here {
            Self::AfterDevice(n) => ("device", n),
            Self::AfterAddresses(n) => ("the addresses of device", n),
            Self::AfterRoutes(n) => ("the routes of device", n),
            Self::DelAfterDevice(n) => ("reverting link", n),
        };
        Err(CniError::FaultInjected {
            step,
            after,
            device: device.to_string(),
        })
    }
}

/// Env var that enables the fault-injection hook in a build without the `fault-injection` feature.
pub const TEST_MODE_ENV: &str = "MULTINIC_CNI_TEST_MODE";
/// The fault, e.g. `after-device-3`.
pub const FAULT_ENV: &str = "MULTINIC_CNI_FAULT";

/// Reads `MULTINIC_CNI_FAULT`. Honoured only when built with the `fault-injection` feature or
/// when `MULTINIC_CNI_TEST_MODE=1`; otherwise ignored (a production node never aborts on it).
pub fn fault_from_env(get: impl Fn(&str) -> Option<String>) -> Option<Fault> {
    let enabled = cfg!(feature = "fault-injection") || get(TEST_MODE_ENV).as_deref() == Some("1");
    if !enabled {
        return None;
    }
    Fault::parse(&get(FAULT_ENV)?)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn fault_hook_needs_test_mode() {
        let on = env_of(&[(TEST_MODE_ENV, "1"), (FAULT_ENV, "after-device-3")]);
        assert_eq!(fault_from_env(on), Some(Fault::AfterDevice(3)));
        let off = env_of(&[(FAULT_ENV, "after-device-3")]);
        assert_eq!(fault_from_env(off).is_some(), cfg!(feature = "fault-injection"));
        assert_eq!(
            fault_from_env(env_of(&[(TEST_MODE_ENV, "1"), (FAULT_ENV, "boom")])),
            None
        );
        for (spec, fault) in [
            ("after-addresses-2", Fault::AfterAddresses(2)),
            ("after-routes-1", Fault::AfterRoutes(1)),
            ("del-after-device-4", Fault::DelAfterDevice(4)),
        ] {
            assert_eq!(
                fault_from_env(env_of(&[(TEST_MODE_ENV, "1"), (FAULT_ENV, spec)])),
                Some(fault)
            );
        }
        assert_eq!(
            fault_from_env(env_of(&[(TEST_MODE_ENV, "1"), (FAULT_ENV, "after-routes-x")])),
            None
        );
    }
}
