//! Evaluating a network's CEL device selector against published devices, the way the scheduler
//! sees them (`device.driver`, `device.attributes["<domain>"].<id>`).

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;

use k8s_openapi::api::resource::v1::{Device, DeviceAttribute, ResourceSlice};
use kube::core::cel::{KubeCelExt, cel};
use multinic_api::crd::MultiNicNetwork;

#[derive(Debug, thiserror::Error)]
pub enum SelectorError {
    #[error("selector {expression:?} does not compile: {message}; fix spec.selector")]
    Compile { expression: String, message: String },
    #[error("selector {expression:?} failed on device {device}: {message}; fix spec.selector")]
    Eval {
        expression: String,
        device: String,
        message: String,
    },
    #[error(
        "device {device} of node {node} has no valid railIndex attribute; the node's multinic kubelet plugin is too old or broken — upgrade or restart it"
    )]
    NoRailIndex { node: String, device: String },
}

/// A compiled selector (`None` selects every device of the driver).
pub struct Selector {
    expression: Option<String>,
    program: Option<cel::Program>,
}

impl Selector {
    pub fn compile(expression: Option<&str>) -> Result<Self, SelectorError> {
        let program = expression
            .map(|e| {
                cel::Program::compile(e).map_err(|err| SelectorError::Compile {
                    expression: e.to_string(),
                    message: err.to_string(),
                })
            })
            .transpose()?;
        Ok(Self {
            expression: expression.map(str::to_string),
            program,
        })
    }

    /// Whether the device of `driver` matches. Errors name the device.
    pub fn matches(&self, driver: &str, device: &Device) -> Result<bool, SelectorError> {
        let Some(program) = &self.program else { return Ok(true) };
        let expression = self.expression.clone().unwrap_or_default();
        let err = |message: String| SelectorError::Eval {
            expression: expression.clone(),
            device: device.name.clone(),
            message,
        };
        let mut ctx = cel::Context::default().with_all();
        ctx.add_variable("device", device_value(driver, device))
            .map_err(|e| err(e.to_string()))?;
        match program.execute(&ctx) {
            Ok(cel::Value::Bool(b)) => Ok(b),
            // A missing attribute is "no match", as for the scheduler.
            Err(e) if e.to_string().contains("No such key") => Ok(false),
            Ok(other) => Err(err(format!("result is {other:?}, not a bool"))),
            Err(e) => Err(err(e.to_string())),
        }
    }
}

/// `{driver, attributes: {domain: {id: value}}}`; unqualified names belong to the driver's domain.
/// Serialized straight into CEL values (not through `serde_json::Value`, whose non-negative
/// numbers become CEL `uint`, which never equals an `int` literal such as `railIndex == 3`).
pub fn device_value(driver: &str, device: &Device) -> CelDevice {
    let mut attributes: BTreeMap<String, BTreeMap<String, CelAttribute>> = BTreeMap::new();
    for (name, attr) in device.attributes.iter().flatten() {
        let (domain, id) = name.split_once('/').unwrap_or((driver, name));
        attributes
            .entry(domain.to_string())
            .or_default()
            .insert(id.to_string(), attribute_value(attr));
    }
    CelDevice {
        driver: driver.to_string(),
        attributes,
    }
}

/// The `device` variable of a selector.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CelDevice {
    pub driver: String,
    pub attributes: BTreeMap<String, BTreeMap<String, CelAttribute>>,
}

/// One attribute value as CEL sees it (`int` is a CEL `int`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(untagged)]
pub enum CelAttribute {
    Bool(bool),
    Int(i64),
    String(String),
}

fn attribute_value(a: &DeviceAttribute) -> CelAttribute {
    if let Some(b) = a.bool {
        CelAttribute::Bool(b)
    } else if let Some(i) = a.int {
        CelAttribute::Int(i)
    } else {
        CelAttribute::String(a.string.clone().or_else(|| a.version.clone()).unwrap_or_default())
    }
}

/// What a node's matching devices say about its rails.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeRails {
    /// Highest matching `railIndex` + 1.
    pub rails: u32,
    /// Rail index → the rail NIC's own addresses (its `ipv4` and `ipv6` attributes, prefix
    /// dropped, IPv4 first), for the rails whose NIC has one.
    pub addresses: BTreeMap<u32, Vec<IpAddr>>,
    /// Matching devices, and how many of them carry a `NoSchedule`/`NoExecute` taint (the node
    /// plugin taints an unhealthy NIC; the scheduler places no new claim on it).
    pub devices: u32,
    pub tainted: u32,
}

impl NodeRails {
    /// Whether a new claim can get one of the node's matching devices.
    pub fn has_usable_device(&self) -> bool {
        self.devices > self.tainted
    }
}

fn tainted(device: &Device) -> bool {
    device
        .taints
        .iter()
        .flatten()
        .any(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
}

/// Node → its rails, over the slices of `driver` and the devices `selector` matches.
pub fn matching_nodes<'a>(
    driver: &str,
    selector: &Selector,
    slices: impl IntoIterator<Item = &'a ResourceSlice>,
) -> Result<BTreeMap<String, NodeRails>, SelectorError> {
    let mut nodes: BTreeMap<String, NodeRails> = BTreeMap::new();
    let attr = |device: &Device, id: &str| {
        device
            .attributes
            .as_ref()
            .and_then(|a| a.get(&format!("{driver}/{id}")))
            .cloned()
    };
    for slice in slices.into_iter().filter(|s| s.spec.driver == driver) {
        let Some(node) = &slice.spec.node_name else { continue };
        for device in slice.spec.devices.iter().flatten() {
            if selector.matches(driver, device)? {
                let rail = attr(device, "railIndex")
                    .and_then(|a| a.int)
                    .and_then(|i| u32::try_from(i).ok())
                    .ok_or_else(|| SelectorError::NoRailIndex {
                        node: node.clone(),
                        device: device.name.clone(),
                    })?;
                let entry = nodes.entry(node.clone()).or_default();
                entry.rails = entry.rails.max(rail + 1);
                entry.devices += 1;
                entry.tainted += u32::from(tainted(device));
                // The plugin publishes `ipv4` and `ipv6` as the interface's addresses in CIDR
                // form; the first device of a rail with an address of a family gives it.
                for (name, v4) in [("ipv4", true), ("ipv6", false)] {
                    let Some(ip) = attr(device, name)
                        .and_then(|a| a.string)
                        .and_then(|s| s.parse::<IpNet>().ok())
                        .map(|n| n.addr())
                        .filter(|ip| ip.is_ipv4() == v4)
                    else {
                        continue;
                    };
                    let known = entry.addresses.entry(rail).or_default();
                    if !known.iter().any(|k| k.is_ipv4() == v4) {
                        known.push(ip);
                    }
                }
            }
        }
    }
    Ok(nodes)
}

/// The networks that one version of a node's slice concerns: those whose selector matches one of
/// its devices (a device the selector fails on counts: the network reports the failure). Only
/// these can see the node's rails change when the slice changes, so only these are reconciled;
/// the watch hands over the slice's version before and after a change, so a device that stops
/// matching still reaches the network it left. Slices of other drivers or without a node concern
/// no network (`matching_nodes` skips them), nor do networks whose selector does not compile
/// (they are invalid whatever the nodes publish).
pub fn networks_for_slice<'a>(
    driver: &str,
    slice: &ResourceSlice,
    networks: impl IntoIterator<Item = &'a MultiNicNetwork>,
) -> Vec<&'a MultiNicNetwork> {
    if slice.spec.driver != driver || slice.spec.node_name.is_none() {
        return Vec::new();
    }
    networks
        .into_iter()
        .filter(|net| {
            Selector::compile(net.spec.selector.as_deref()).is_ok_and(|selector| {
                slice
                    .spec
                    .devices
                    .iter()
                    .flatten()
                    .any(|device| selector.matches(driver, device).unwrap_or(true))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use kube::ResourceExt;

    use super::*;

    fn device(name: &str, rdma: bool, rail: i64) -> Device {
        let attrs = BTreeMap::from([
            (
                "multinic.dev/rdma".to_string(),
                DeviceAttribute {
                    bool: Some(rdma),
                    ..Default::default()
                },
            ),
            (
                "multinic.dev/railIndex".to_string(),
                DeviceAttribute {
                    int: Some(rail),
                    ..Default::default()
                },
            ),
            (
                "resource.kubernetes.io/pcieRoot".to_string(),
                DeviceAttribute {
                    string: Some("pci0000:15".into()),
                    ..Default::default()
                },
            ),
        ]);
        Device {
            name: name.into(),
            attributes: Some(attrs),
            ..Default::default()
        }
    }

    #[test]
    fn selectors_see_qualified_attributes() {
        let s = Selector::compile(Some(r#"device.attributes["multinic.dev"].rdma == true && device.attributes["resource.kubernetes.io"].pcieRoot == "pci0000:15""#)).unwrap();
        assert!(s.matches("multinic.dev", &device("a", true, 0)).unwrap());
        assert!(!s.matches("multinic.dev", &device("b", false, 0)).unwrap());
        let missing = Selector::compile(Some(r#"device.attributes["multinic.dev"].nope == 1"#)).unwrap();
        assert!(!missing.matches("multinic.dev", &device("a", true, 0)).unwrap());
        assert!(Selector::compile(Some("device.driver ==")).is_err());
        assert!(
            Selector::compile(None)
                .unwrap()
                .matches("multinic.dev", &device("a", false, 0))
                .unwrap()
        );
    }

    /// CEL integer literals are `int`: an attribute's int must compare equal to them (the
    /// scheduler's `railIndex == 3` matched a device that this evaluation once did not).
    #[test]
    fn int_attributes_compare_with_int_literals() {
        for (expr, want) in [
            (r#"device.attributes["multinic.dev"].railIndex == 3"#, true),
            (r#"device.attributes["multinic.dev"].railIndex == 2"#, false),
            (r#"device.attributes["multinic.dev"].railIndex >= 3"#, true),
            (r#"device.attributes["multinic.dev"].railIndex < 3"#, false),
            (r#"device.attributes["multinic.dev"].railIndex in [1, 3]"#, true),
        ] {
            let s = Selector::compile(Some(expr)).unwrap();
            assert_eq!(
                s.matches("multinic.dev", &device("a", true, 3)).unwrap(),
                want,
                "{expr}"
            );
        }
    }

    #[test]
    fn rails_per_node_follow_the_highest_matching_rail() {
        let slice = |node: &str, devices: Vec<Device>| ResourceSlice {
            metadata: Default::default(),
            spec: k8s_openapi::api::resource::v1::ResourceSliceSpec {
                driver: "multinic.dev".into(),
                node_name: Some(node.into()),
                devices: Some(devices),
                ..Default::default()
            },
        };
        let s = Selector::compile(Some(r#"device.attributes["multinic.dev"].rdma"#)).unwrap();
        let mut with_address = device("b", true, 3);
        if let Some(a) = with_address.attributes.as_mut() {
            a.insert(
                "multinic.dev/ipv4".into(),
                DeviceAttribute {
                    string: Some("192.168.3.11/24".into()),
                    ..Default::default()
                },
            );
            a.insert(
                "multinic.dev/ipv6".into(),
                DeviceAttribute {
                    string: Some("fd00:192:168:3::11/64".into()),
                    ..Default::default()
                },
            );
        }
        with_address.taints = Some(vec![k8s_openapi::api::resource::v1::DeviceTaint {
            key: "multinic.dev/unhealthy".into(),
            effect: "NoSchedule".into(),
            value: Some("CarrierDown".into()),
            time_added: None,
        }]);
        let slices = vec![
            slice("n1", vec![device("a", true, 0), with_address, device("c", false, 5)]),
            slice("n2", vec![device("a", false, 0)]),
        ];
        assert_eq!(
            matching_nodes("multinic.dev", &s, &slices).unwrap(),
            BTreeMap::from([(
                "n1".to_string(),
                NodeRails {
                    rails: 4,
                    addresses: BTreeMap::from([(
                        3,
                        vec!["192.168.3.11".parse().unwrap(), "fd00:192:168:3::11".parse().unwrap()]
                    )]),
                    devices: 2,
                    tainted: 1,
                }
            )])
        );
        // A matching device without a usable railIndex is an error, not rail 0.
        let broken = vec![slice("n3", vec![device("x", true, -1)])];
        assert!(matches!(
            matching_nodes("multinic.dev", &s, &broken),
            Err(SelectorError::NoRailIndex { node, device }) if node == "n3" && device == "x"
        ));
    }

    fn network(name: &str, selector: Option<&str>) -> MultiNicNetwork {
        serde_json::from_value(
            serde_json::json!({"apiVersion": "multinic.dev/v1alpha1", "kind": "MultiNicNetwork",
            "metadata": {"name": name}, "spec": {"selector": selector}}),
        )
        .unwrap()
    }

    #[test]
    fn a_slice_concerns_only_the_networks_that_select_its_devices() {
        let networks = [
            network("rdma", Some(r#"device.attributes["multinic.dev"].rdma == true"#)),
            network("plain", Some(r#"device.attributes["multinic.dev"].rdma == false"#)),
            network("all", None),
            network(
                "elsewhere",
                Some(r#"device.attributes["resource.kubernetes.io"].pcieRoot == "pci0000:99""#),
            ),
            network("broken", Some("device.attributes[")),
            // Fails on every device (an int is no bool): the network must learn of it.
            network("failing", Some(r#"device.attributes["multinic.dev"].railIndex"#)),
        ];
        let slice = |driver: &str, node: Option<&str>, devices: Vec<Device>| ResourceSlice {
            metadata: Default::default(),
            spec: k8s_openapi::api::resource::v1::ResourceSliceSpec {
                driver: driver.into(),
                node_name: node.map(str::to_string),
                devices: Some(devices),
                ..Default::default()
            },
        };
        let names = |s: &ResourceSlice| -> Vec<String> {
            networks_for_slice("multinic.dev", s, &networks)
                .iter()
                .map(|n| n.name_any())
                .collect()
        };
        let rdma_node = slice(
            "multinic.dev",
            Some("n1"),
            vec![device("a", true, 0), device("b", true, 1)],
        );
        assert_eq!(names(&rdma_node), ["rdma", "all", "failing"]);
        let plain_node = slice("multinic.dev", Some("n2"), vec![device("a", false, 0)]);
        assert_eq!(names(&plain_node), ["plain", "all", "failing"]);
        let empty = slice("multinic.dev", Some("n3"), vec![]);
        assert!(names(&empty).is_empty(), "a node without devices is in no network");
        let foreign = slice("gpu.example.com", Some("n1"), vec![device("a", true, 0)]);
        assert!(names(&foreign).is_empty(), "another driver's slice");
        let unattached = slice("multinic.dev", None, vec![device("a", true, 0)]);
        assert!(names(&unattached).is_empty(), "a slice without a node");
    }
}
