//! The resources the fake server knows, and their per-kind behaviour (what upstream calls the
//! registry "strategy"): create/update preparation, field selectors and list semantics for
//! server-side apply.

use serde_json::Value;

use crate::status::ApiError;

/// Which built-in behaviour a resource gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    ResourceClaim,
    ResourceSlice,
    DeviceClass,
    /// A custom resource (CRD-backed); see `has_status` for the status subresource.
    Custom,
}

/// Static description of one resource.
#[derive(Debug)]
pub struct ResourceDef {
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub kind_name: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub has_status: bool,
    pub behaviour: Kind,
}

impl ResourceDef {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `<plural>.<group>`, as in NotFound messages.
    pub fn qualified_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// Whether a PUT without `metadata.resourceVersion` is accepted (`AllowUnconditionalUpdate`).
    pub fn allow_unconditional_update(&self) -> bool {
        self.behaviour != Kind::Custom
    }

    /// Whether DELETE returns the deleted object (`ReturnDeletedObject`) rather than a Status:
    /// the resource.k8s.io registries do (kubernetes v1.36.3 `pkg/registry/resource/*/storage`);
    /// leases and custom resources answer a Status (tests/api on a real API server).
    pub fn return_deleted_object(&self) -> bool {
        self.group == "resource.k8s.io"
    }

    /// Whether the map at `shape` is atomic for server-side apply: a `RawExtension` such as a
    /// claim's `status.devices[].data` is owned and replaced as one field.
    pub fn atomic_map(&self, shape: &[String]) -> bool {
        let s: Vec<&str> = shape.iter().map(String::as_str).collect();
        self.behaviour == Kind::ResourceClaim && s.as_slice() == ["status", "devices", "data"]
    }

    /// The field-selector attributes of an object, or an error for an unsupported label.
    pub fn field_value(&self, obj: &Value, label: &str) -> Result<String, ApiError> {
        let meta_str = |f: &str| {
            obj.pointer(&format!("/metadata/{f}"))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        match (self.behaviour, label) {
            (_, "metadata.name") => Ok(meta_str("name")),
            (Kind::ResourceSlice, "spec.nodeName") => Ok(obj
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()),
            (Kind::ResourceSlice, "spec.driver") => Ok(obj
                .pointer("/spec/driver")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()),
            (Kind::ResourceSlice, _) => Err(ApiError::bad_request(format!(
                "field label not supported for {}, Kind={}: {}",
                self.api_version(),
                self.kind,
                label
            ))),
            (_, "metadata.namespace") => Ok(meta_str("namespace")),
            _ => Err(ApiError::bad_request(format!(
                "\"{label}\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\""
            ))),
        }
    }

    /// The list semantics of the list at `shape` (field names from the root, list-item steps omitted).
    pub fn list_type(&self, shape: &[String]) -> ListType {
        let s: Vec<&str> = shape.iter().map(String::as_str).collect();
        match s.as_slice() {
            ["metadata", "ownerReferences"] => ListType::Map(&["uid"]),
            ["metadata", "finalizers"] => ListType::Set,
            // Built-in types declare their conditions a map keyed by type; a CRD's schema (ours
            // say nothing) leaves a list atomic, so a second manager's conditions conflict.
            [.., "conditions"] if self.behaviour != Kind::Custom => ListType::Map(&["type"]),
            ["status", "devices"] if self.behaviour == Kind::ResourceClaim => {
                ListType::Map(&["device", "driver", "pool", "shareID"])
            }
            ["status", "reservedFor"] if self.behaviour == Kind::ResourceClaim => ListType::Map(&["uid"]),
            _ => ListType::Atomic,
        }
    }
}

/// How server-side apply treats a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListType {
    /// Replaced as a whole, owned as one field.
    Atomic,
    /// Items identified by these key fields (sorted by name), merged per item.
    Map(&'static [&'static str]),
    /// Scalar items, each owned separately.
    Set,
}

pub static RESOURCES: &[ResourceDef] = &[
    ResourceDef {
        group: "resource.k8s.io",
        version: "v1",
        plural: "resourceclaims",
        kind_name: "resourceclaim",
        kind: "ResourceClaim",
        namespaced: true,
        has_status: true,
        behaviour: Kind::ResourceClaim,
    },
    ResourceDef {
        group: "resource.k8s.io",
        version: "v1",
        plural: "resourceslices",
        kind_name: "resourceslice",
        kind: "ResourceSlice",
        namespaced: false,
        has_status: false,
        behaviour: Kind::ResourceSlice,
    },
    ResourceDef {
        group: "resource.k8s.io",
        version: "v1",
        plural: "deviceclasses",
        kind_name: "deviceclass",
        kind: "DeviceClass",
        namespaced: false,
        has_status: false,
        behaviour: Kind::DeviceClass,
    },
    ResourceDef {
        group: "coordination.k8s.io",
        version: "v1",
        plural: "leases",
        kind_name: "lease",
        kind: "Lease",
        namespaced: true,
        has_status: false,
        // Stored without schema checks, like a custom resource; PUT carries a resourceVersion.
        behaviour: Kind::Custom,
    },
    ResourceDef {
        group: "events.k8s.io",
        version: "v1",
        plural: "events",
        kind_name: "event",
        kind: "Event",
        namespaced: true,
        has_status: false,
        // Stored without schema checks (the node plugin records prepare failures).
        behaviour: Kind::Custom,
    },
    ResourceDef {
        group: "multinic.dev",
        version: "v1alpha1",
        plural: "multinicnetworks",
        kind_name: "multinicnetwork",
        kind: "MultiNicNetwork",
        namespaced: false,
        has_status: true,
        behaviour: Kind::Custom,
    },
    ResourceDef {
        group: "multinic.dev",
        version: "v1alpha1",
        plural: "nicnodeblocks",
        kind_name: "nicnodeblocks",
        // As defined in multinic-api (`crd.rs`): kind `NicNodeBlocks`, with the status
        // subresource (a pool network's requests of the node).
        kind: "NicNodeBlocks",
        namespaced: false,
        has_status: true,
        behaviour: Kind::Custom,
    },
];

/// Finds a resource by group, version and plural (as in a URL).
pub fn by_path(group: &str, version: &str, plural: &str) -> Option<&'static ResourceDef> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// Finds a resource by `apiVersion` and kind, plural or lower-case kind.
pub fn lookup(api_version: &str, kind_or_plural: &str) -> Option<&'static ResourceDef> {
    RESOURCES.iter().find(|r| {
        r.api_version() == api_version
            && (r.kind == kind_or_plural || r.plural == kind_or_plural || r.kind_name == kind_or_plural)
    })
}
