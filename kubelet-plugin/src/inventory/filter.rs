//! Admin filters: interface-name globs, PCI vendor/device IDs, drivers, and whether virtual
//! netdevs may be published.

use globset::{Glob, GlobSet, GlobSetBuilder};

use super::PciFacts;

#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error("interface glob {glob:?}: {source}; use shell-style globs such as 'ens*' or 'ib?'")]
    Glob { glob: String, source: globset::Error },
    #[error("PCI ID {0:?} is not of the form VENDOR or VENDOR:DEVICE in hex, e.g. 15b3 or 15b3:101d")]
    PciId(String),
}

/// A PCI ID filter entry; `device` `None` matches every device of the vendor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PciId {
    pub vendor: u16,
    pub device: Option<u16>,
}

impl std::str::FromStr for PciId {
    type Err = FilterError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || FilterError::PciId(s.to_string());
        let hex = |v: &str| u16::from_str_radix(v.trim_start_matches("0x"), 16).map_err(|_| bad());
        match s.split_once(':') {
            Some((v, d)) => Ok(Self {
                vendor: hex(v)?,
                device: Some(hex(d)?),
            }),
            None => Ok(Self {
                vendor: hex(s)?,
                device: None,
            }),
        }
    }
}

/// Admin filters, built from the command-line flags.
#[derive(Debug, Clone, Default)]
pub struct Filters {
    /// Publish virtual netdevs (veth, macvlan, ...) too.
    pub allow_virtual: bool,
    include: Option<GlobSet>,
    exclude: Option<GlobSet>,
    pci_ids: Vec<PciId>,
    drivers: Vec<String>,
}

impl Filters {
    /// `include`: when non-empty, only matching interface names are published. `exclude`: matching
    /// names never are. `pci_ids`/`drivers`: when non-empty, only NICs with a matching PCI ID / kernel
    /// driver are published.
    pub fn new(
        allow_virtual: bool,
        include: &[String],
        exclude: &[String],
        pci_ids: &[String],
        drivers: &[String],
    ) -> Result<Self, FilterError> {
        Ok(Self {
            allow_virtual,
            include: glob_set(include)?,
            exclude: glob_set(exclude)?,
            pci_ids: pci_ids.iter().map(|s| s.parse()).collect::<Result<_, _>>()?,
            drivers: drivers.to_vec(),
        })
    }

    /// `Some(reason)` when a filter leaves the netdev out.
    pub fn reject(&self, if_name: &str, pci: Option<&PciFacts>) -> Option<String> {
        if let Some(include) = &self.include
            && !include.is_match(if_name)
        {
            return Some("interface name not in --include-interfaces".into());
        }
        if let Some(exclude) = &self.exclude
            && exclude.is_match(if_name)
        {
            return Some("interface name in --exclude-interfaces".into());
        }
        if !self.pci_ids.is_empty() {
            let matched = pci.is_some_and(|p| {
                self.pci_ids
                    .iter()
                    .any(|id| id.vendor == p.vendor && id.device.is_none_or(|d| d == p.device))
            });
            if !matched {
                return Some("PCI ID not in --pci-ids".into());
            }
        }
        if !self.drivers.is_empty() {
            let matched = pci
                .and_then(|p| p.driver.as_deref())
                .is_some_and(|d| self.drivers.iter().any(|x| x == d));
            if !matched {
                return Some("driver not in --drivers".into());
            }
        }
        None
    }
}

fn glob_set(globs: &[String]) -> Result<Option<GlobSet>, FilterError> {
    if globs.is_empty() {
        return Ok(None);
    }
    let mut builder = GlobSetBuilder::new();
    for glob in globs {
        builder.add(Glob::new(glob).map_err(|source| FilterError::Glob {
            glob: glob.clone(),
            source,
        })?);
    }
    builder.build().map(Some).map_err(|source| FilterError::Glob {
        glob: globs.join(","),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mlx(device: u16, driver: &str) -> PciFacts {
        PciFacts {
            address: "0000:3b:00.0".into(),
            vendor: 0x15b3,
            device,
            driver: Some(driver.into()),
            ..Default::default()
        }
    }

    #[test]
    fn globs_ids_and_drivers() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let f = Filters::new(
            false,
            &s(&["ens*", "ib?"]),
            &s(&["ens9*"]),
            &s(&["15b3:101d", "8086"]),
            &s(&["mlx5_core"]),
        )
        .unwrap();
        assert_eq!(f.reject("ens1f0", Some(&mlx(0x101d, "mlx5_core"))), None);
        assert!(f.reject("eth0", Some(&mlx(0x101d, "mlx5_core"))).is_some());
        assert!(f.reject("ens9f0", Some(&mlx(0x101d, "mlx5_core"))).is_some());
        assert!(
            f.reject("ib0", Some(&mlx(0x1017, "mlx5_core"))).is_some(),
            "device id not listed"
        );
        assert!(
            f.reject("ib0", Some(&mlx(0x101d, "ice"))).is_some(),
            "driver not listed"
        );
        assert!(
            f.reject("ib0", None).is_some(),
            "no PCI facts cannot match a PCI filter"
        );
        assert_eq!(Filters::default().reject("anything", None), None);
    }

    #[test]
    fn bad_filters_are_errors() {
        assert!(matches!("xyz".parse::<PciId>(), Err(FilterError::PciId(_))));
        assert!(matches!("15b3:".parse::<PciId>(), Err(FilterError::PciId(_))));
        assert_eq!(
            "0x15b3:101D".parse::<PciId>().unwrap(),
            PciId {
                vendor: 0x15b3,
                device: Some(0x101d)
            }
        );
        assert!(Filters::new(false, &["[".into()], &[], &[], &[]).is_err());
    }
}
