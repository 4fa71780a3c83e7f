//! The device part of the node ledger (design.md §9): every NIC the node has published, by
//! identity, with its `railIndex` assigned once and persisted in the state dir, and the facts it
//! had when last seen on the host.
//!
//! * **Identity**: the PCI address, else the MAC address, else the interface name
//!   ([`Identity::of`]). Two netdevs on one PCI function (multi-port cards) are told apart by
//!   interface name.
//! * **railIndex**: a NIC seen for the first time takes the lowest index no identity holds, in PCI
//!   order among the NICs first seen together (so a fresh node numbers its rails by PCI order,
//!   as before). The index never changes afterwards: not when another NIC moves into a pod, not
//!   when this one comes back, not on restart. Entries are kept for NICs that are gone, so a NIC
//!   that is removed and added back gets its old index.
//! * **Presence**: the live inventory (rtnetlink + sysfs) only says which identities are on the
//!   host now. A NIC that is not on the host but whose device a plan holds is in a pod: it stays
//!   published with the facts it had, so the slice, the scheduler and peer routes keep seeing it.
//!
//! Reading and writing the file is at the edge ([`LedgerFile`]); [`DeviceLedger`] is plain data.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::inventory::Nic;

/// File name in the state dir.
pub const LEDGER_FILE: &str = "ledger.json";
/// Version of the ledger file format; readers reject other versions.
pub const LEDGER_VERSION: u32 = 1;
/// Largest ledger file a reader accepts (a node has at most a few hundred NICs).
pub const MAX_LEDGER_BYTES: u64 = 4 * 1024 * 1024;

/// Stable identity of a NIC.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Identity(pub String);

impl Identity {
    /// `pci:<BDF>`, else `mac:<mac>`, else `name:<ifname>`.
    pub fn of(nic: &Nic) -> Self {
        match (&nic.pci, &nic.mac) {
            (Some(pci), _) => Self(format!("pci:{}", pci.address)),
            (None, Some(mac)) if !mac.is_empty() => Self(format!("mac:{mac}")),
            _ => Self(format!("name:{}", nic.if_name)),
        }
    }
}

/// Identities of `nics`, unique: a second netdev on the same PCI function gets `/<ifname>`.
pub fn identities(nics: &[Nic]) -> Vec<Identity> {
    let mut count: BTreeMap<Identity, usize> = BTreeMap::new();
    for nic in nics {
        *count.entry(Identity::of(nic)).or_default() += 1;
    }
    nics.iter()
        .map(|nic| {
            let id = Identity::of(nic);
            if count.get(&id).copied().unwrap_or(0) > 1 {
                Identity(format!("{}/{}", id.0, nic.if_name))
            } else {
                id
            }
        })
        .collect()
}

/// One NIC the node has published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgerEntry {
    pub rail_index: u32,
    /// The NIC as last seen on the host.
    pub nic: Nic,
}

/// Where a NIC is now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Presence {
    OnHost,
    InPod,
    Gone,
}

/// The NICs of the node, by identity.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceLedger {
    pub entries: BTreeMap<Identity, LedgerEntry>,
}

/// A NIC to publish: its facts and its rail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rail<'a> {
    pub nic: &'a Nic,
    pub rail_index: u32,
    pub presence: Presence,
}

impl DeviceLedger {
    /// Records the NICs now on the host: known identities keep their rail and take the fresh
    /// facts; new ones take the lowest free rails in PCI order. Returns whether anything changed.
    pub fn observe(&mut self, live: &[Nic]) -> bool {
        let ids = identities(live);
        let mut changed = false;
        let mut new: Vec<(&Identity, &Nic)> = Vec::new();
        for (id, nic) in ids.iter().zip(live) {
            match self.entries.get_mut(id) {
                Some(entry) => {
                    // sysfs reports no speed for a link that is down (`speed` reads -1): the NIC
                    // keeps the speed it was last seen with, so one that is set down on its way
                    // into a pod keeps its `speedMbps` attribute and its bandwidth capacity.
                    let mut fresh = nic.clone();
                    fresh.speed_mbps = fresh.speed_mbps.or(entry.nic.speed_mbps);
                    if entry.nic != fresh {
                        entry.nic = fresh;
                        changed = true;
                    }
                }
                None => new.push((id, nic)),
            }
        }
        new.sort_by_key(|(_, nic)| nic.order_key());
        let mut taken: BTreeSet<u32> = self.entries.values().map(|e| e.rail_index).collect();
        let mut next = 0u32;
        for (id, nic) in new {
            while taken.contains(&next) {
                next += 1;
            }
            taken.insert(next);
            self.entries.insert(
                id.clone(),
                LedgerEntry {
                    rail_index: next,
                    nic: nic.clone(),
                },
            );
            changed = true;
        }
        changed
    }

    /// Where each known NIC is: on the host when `live` has it, in a pod when not but a plan
    /// holds its device name (`in_pods`; `device_name` maps a NIC to that name), else gone.
    pub fn presence(
        &self,
        live: &[Nic],
        in_pods: &BTreeSet<String>,
        device_name: impl Fn(&Nic) -> String,
    ) -> BTreeMap<Identity, Presence> {
        let on_host: BTreeSet<Identity> = identities(live).into_iter().collect();
        self.entries
            .iter()
            .map(|(id, entry)| {
                let p = if on_host.contains(id) {
                    Presence::OnHost
                } else if in_pods.contains(&device_name(&entry.nic)) {
                    Presence::InPod
                } else {
                    Presence::Gone
                };
                (id.clone(), p)
            })
            .collect()
    }

    /// What to publish, in rail order: the NICs on the host (as last observed) and the ones in a
    /// pod, with the facts they had on the host.
    pub fn rails<'a>(
        &'a self,
        live: &[Nic],
        in_pods: &BTreeSet<String>,
        device_name: impl Fn(&Nic) -> String,
    ) -> Vec<Rail<'a>> {
        let presence = self.presence(live, in_pods, device_name);
        let mut out: Vec<Rail<'a>> = self
            .entries
            .iter()
            .filter_map(|(id, entry)| match presence.get(id) {
                Some(&p @ (Presence::OnHost | Presence::InPod)) => Some(Rail {
                    nic: &entry.nic,
                    rail_index: entry.rail_index,
                    presence: p,
                }),
                _ => None,
            })
            .collect();
        out.sort_by_key(|r| r.rail_index);
        out
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("ledger {path}: {source}; check that the state dir is a writable hostPath mount")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(
        "ledger {path} is corrupt ({reason}); rails would be renumbered without it: restore it from a backup, or delete it only on a node with no prepared claims"
    )]
    Corrupt { path: PathBuf, reason: String },
    #[error(
        "ledger {path} has version {found}, this binary reads version {LEDGER_VERSION}; upgrade all multinic components together"
    )]
    Version { path: PathBuf, found: u64 },
}

#[derive(Serialize, Deserialize)]
struct OnDisk {
    version: u32,
    #[serde(flatten)]
    ledger: DeviceLedger,
}

/// The ledger file in the state dir.
#[derive(Debug, Clone)]
pub struct LedgerFile {
    path: PathBuf,
}

impl LedgerFile {
    pub fn new(state_dir: &Path) -> Self {
        Self {
            path: state_dir.join(LEDGER_FILE),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The stored ledger; empty when there is none yet (a new node).
    pub fn load(&self) -> Result<DeviceLedger, LedgerError> {
        let body = match multinic_api::fsutil::read_bounded(&self.path, MAX_LEDGER_BYTES) {
            Ok(body) => body,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(DeviceLedger::default()),
            Err(source) => {
                return Err(LedgerError::Io {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        parse(&self.path, &body)
    }

    /// Writes the ledger crash-safely (temp file, fsync, rename, fsync of the directory: a
    /// reader sees the old or the new ledger, and a rail once published survives a crash).
    pub fn store(&self, ledger: &DeviceLedger) -> Result<(), LedgerError> {
        let body = serde_json::to_vec_pretty(&OnDisk {
            version: LEDGER_VERSION,
            ledger: ledger.clone(),
        })
        .map_err(|e| LedgerError::Corrupt {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        multinic_api::fsutil::write_atomic(&self.path, &body, 0o600).map_err(|source| LedgerError::Io {
            path: self.path.clone(),
            source,
        })
    }
}

/// Parses a ledger file body.
pub fn parse(path: &Path, body: &[u8]) -> Result<DeviceLedger, LedgerError> {
    let corrupt = |reason: String| LedgerError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| corrupt(e.to_string()))?;
    let found = value
        .get("version")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| corrupt("it has no numeric version".into()))?;
    if found != u64::from(LEDGER_VERSION) {
        return Err(LedgerError::Version {
            path: path.to_path_buf(),
            found,
        });
    }
    let disk: OnDisk = serde_json::from_value(value).map_err(|e| corrupt(e.to_string()))?;
    let mut seen = BTreeSet::new();
    for (id, entry) in &disk.ledger.entries {
        if !seen.insert(entry.rail_index) {
            return Err(corrupt(format!(
                "railIndex {} is held twice (again by {})",
                entry.rail_index, id.0
            )));
        }
    }
    Ok(disk.ledger)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::PciFacts;

    fn pci_nic(name: &str, bdf: &str) -> Nic {
        Nic {
            if_name: name.into(),
            if_index: 1,
            mac: Some(format!("02:00:00:00:00:{:02x}", name.len())),
            mtu: 9000,
            speed_mbps: None,
            link_type: crate::inventory::LinkType::Ethernet,
            pci: Some(PciFacts {
                address: bdf.into(),
                ..Default::default()
            }),
            rdma: None,
            virtual_device: false,
            ipv4: None,
            ipv6: None,
            pf_name: None,
        }
    }

    #[test]
    fn a_link_down_keeps_the_last_known_speed() {
        let mut ledger = DeviceLedger::default();
        let mut nic = veth("eth1", "02:00:00:00:00:aa");
        nic.speed_mbps = Some(10_000);
        assert!(ledger.observe(std::slice::from_ref(&nic)));
        // Down (sysfs speed -1): the speed stays, nothing changed.
        let mut down = nic.clone();
        down.speed_mbps = None;
        assert!(!ledger.observe(std::slice::from_ref(&down)));
        let speed = |l: &DeviceLedger| l.entries.values().next().and_then(|e| e.nic.speed_mbps);
        assert_eq!(speed(&ledger), Some(10_000));
        // A new reading replaces it.
        let mut faster = nic.clone();
        faster.speed_mbps = Some(25_000);
        assert!(ledger.observe(std::slice::from_ref(&faster)));
        assert_eq!(speed(&ledger), Some(25_000));
    }

    fn veth(name: &str, mac: &str) -> Nic {
        Nic {
            pci: None,
            mac: Some(mac.into()),
            virtual_device: true,
            ..pci_nic(name, "")
        }
    }

    fn rails_of(ledger: &DeviceLedger, live: &[Nic], in_pods: &[&str]) -> Vec<(String, u32, Presence)> {
        let in_pods: BTreeSet<String> = in_pods.iter().map(|s| s.to_string()).collect();
        ledger
            .rails(live, &in_pods, |n| n.if_name.clone())
            .into_iter()
            .map(|r| (r.nic.if_name.clone(), r.rail_index, r.presence))
            .collect()
    }

    #[test]
    fn a_fresh_node_numbers_rails_by_pci_order() {
        let nics = [
            pci_nic("b", "0000:5e:00.0"),
            pci_nic("a", "0000:3b:00.0"),
            veth("v", "02:aa:00:00:00:01"),
        ];
        let mut ledger = DeviceLedger::default();
        assert!(ledger.observe(&nics));
        assert!(!ledger.observe(&nics), "nothing new the second time");
        assert_eq!(
            rails_of(&ledger, &nics, &[]),
            [
                ("a".into(), 0, Presence::OnHost),
                ("b".into(), 1, Presence::OnHost),
                ("v".into(), 2, Presence::OnHost)
            ]
        );
    }

    #[test]
    fn a_nic_in_a_pod_keeps_its_rail_and_the_others_are_not_renumbered() {
        let nics: Vec<Nic> = (0..4)
            .map(|k| veth(&format!("rail{k}"), &format!("02:00:00:00:01:{k:02x}")))
            .collect();
        let mut ledger = DeviceLedger::default();
        ledger.observe(&nics);
        // rail1 moved into a pod: gone from the host netns, held by a plan.
        let live = [nics[0].clone(), nics[2].clone(), nics[3].clone()];
        assert!(!ledger.observe(&live));
        assert_eq!(
            rails_of(&ledger, &live, &["rail1"]),
            [
                ("rail0".into(), 0, Presence::OnHost),
                ("rail1".into(), 1, Presence::InPod),
                ("rail2".into(), 2, Presence::OnHost),
                ("rail3".into(), 3, Presence::OnHost)
            ]
        );
        // No plan holds it: not published, but its rail stays reserved.
        assert_eq!(rails_of(&ledger, &live, &[]).len(), 3);
        let p = ledger.presence(&live, &BTreeSet::new(), |n| n.if_name.clone());
        assert_eq!(p[&Identity("mac:02:00:00:00:01:01".into())], Presence::Gone);
    }

    #[test]
    fn a_later_nic_takes_the_next_free_rail_and_a_returning_one_its_old_rail() {
        let a = pci_nic("a", "0000:3b:00.0");
        let c = pci_nic("c", "0000:af:00.0");
        let mut ledger = DeviceLedger::default();
        ledger.observe(&[a.clone(), c.clone()]);
        // b sorts between a and c by PCI address, but arrives later: next free rail (2).
        let b = pci_nic("b", "0000:5e:00.0");
        assert!(ledger.observe(&[a.clone(), b.clone(), c.clone()]));
        assert_eq!(ledger.entries[&Identity::of(&b)].rail_index, 2);
        // a is removed and comes back (renamed): rail 0 again.
        ledger.observe(&[b.clone(), c.clone()]);
        let a2 = Nic {
            if_name: "a-new".into(),
            ..a.clone()
        };
        assert!(ledger.observe(&[a2.clone(), b, c]), "the new facts are recorded");
        assert_eq!(ledger.entries[&Identity::of(&a2)].rail_index, 0);
        assert_eq!(ledger.entries[&Identity::of(&a2)].nic.if_name, "a-new");
    }

    #[test]
    fn two_netdevs_on_one_function_get_distinct_identities() {
        let nics = [pci_nic("p0", "0000:3b:00.0"), pci_nic("p1", "0000:3b:00.0")];
        assert_eq!(
            identities(&nics),
            [
                Identity("pci:0000:3b:00.0/p0".into()),
                Identity("pci:0000:3b:00.0/p1".into())
            ]
        );
        let mut ledger = DeviceLedger::default();
        ledger.observe(&nics);
        assert_eq!(ledger.entries.len(), 2);
    }

    #[test]
    fn the_file_round_trips_and_rejects_what_it_cannot_trust() {
        let dir = tempfile::tempdir().unwrap();
        let file = LedgerFile::new(dir.path());
        assert_eq!(file.load().unwrap(), DeviceLedger::default(), "no file: a new node");
        let mut ledger = DeviceLedger::default();
        ledger.observe(&[pci_nic("a", "0000:3b:00.0"), veth("v", "02:aa:00:00:00:01")]);
        file.store(&ledger).unwrap();
        assert_eq!(file.load().unwrap(), ledger);

        let p = file.path().to_path_buf();
        std::fs::write(&p, b"{").unwrap();
        assert!(matches!(file.load(), Err(LedgerError::Corrupt { .. })));
        std::fs::write(&p, br#"{"version": 9, "entries": {}}"#).unwrap();
        assert!(matches!(file.load(), Err(LedgerError::Version { found: 9, .. })));
        std::fs::write(&p, br#"{"entries": {}}"#).unwrap();
        assert!(
            matches!(file.load(), Err(LedgerError::Corrupt { .. })),
            "no version is not version 0"
        );
        let twice = serde_json::json!({"version": 1, "entries": {
            "name:a": {"railIndex": 0, "nic": serde_json::to_value(veth("a", "")).unwrap()},
            "name:b": {"railIndex": 0, "nic": serde_json::to_value(veth("b", "")).unwrap()}}});
        std::fs::write(&p, twice.to_string()).unwrap();
        let err = file.load().unwrap_err();
        assert!(err.to_string().contains("railIndex 0 is held twice"), "{err}");
    }
}
