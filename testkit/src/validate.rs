//! Object validation, after `pkg/apis/resource/validation/validation.go` and
//! `apimachinery/pkg/api/validation/objectmeta.go`.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::field::{
    BadValue, FieldError, child, go_quote, index, key, validate_conditions, validate_dns1123_label,
    validate_dns1123_subdomain, validate_driver_name, validate_interface_address, validate_labels_and_annotations,
    validate_pool_name, validate_raw_extension, validate_resource_qualified_name,
};
use crate::resources::{Kind, ResourceDef};

const RESOURCE_SLICE_MAX_DEVICES: usize = 128;
const RESOURCE_SLICE_MAX_DEVICES_WITH_TAINTS_OR_COUNTERS: usize = 64;
const MAX_ATTRIBUTES_AND_CAPACITIES: usize = 32;
const ATTRIBUTE_MAX_VALUE_LENGTH: usize = 64;
const ATTRIBUTE_KEY_MAX_LENGTH: usize = 63 + 1 + 32;
const OPAQUE_PARAMETERS_MAX_LENGTH: usize = 10 * 1024;
const DEVICE_STATUS_DATA_MAX_LENGTH: usize = 10 * 1024;
const DEVICE_STATUS_MAX_CONDITIONS: usize = 8;
const NETWORK_MAX_IPS: usize = 16;
const NETWORK_INTERFACE_NAME_MAX: usize = 256;
const NETWORK_HARDWARE_ADDRESS_MAX: usize = 128;
const DEVICE_SELECTORS_MAX: usize = 32;
const DEVICE_CONFIG_MAX: usize = 32;
const DEVICE_REQUESTS_MAX: usize = 32;
const ALLOCATION_RESULTS_MAX: usize = 32;
const RESERVED_FOR_MAX: usize = 256;
const CEL_EXPRESSION_MAX_LENGTH: usize = 10 * 1024;

fn s<'a>(v: &'a Value, ptr: &str) -> Option<&'a str> {
    v.pointer(ptr).and_then(Value::as_str)
}

fn arr(v: Option<&Value>) -> &[Value] {
    v.and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])
}

/// `ValidateObjectMeta` for a new object (name format, labels, annotations).
pub fn validate_object_meta(obj: &Value) -> Vec<FieldError> {
    let meta = obj.get("metadata").cloned().unwrap_or(Value::Null);
    let mut errs = Vec::new();
    let name = s(obj, "/metadata/name").unwrap_or("");
    if name.is_empty() {
        errs.push(FieldError::required(
            "metadata.name",
            "name or generateName is required",
        ));
    } else {
        errs.extend(validate_dns1123_subdomain(name, "metadata.name"));
    }
    errs.extend(validate_labels_and_annotations(&meta));
    errs
}

/// `ValidateObjectMetaUpdate`: the immutable parts of metadata.
pub fn validate_object_meta_update(new: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for f in ["name", "namespace", "uid", "creationTimestamp"] {
        let p = format!("/metadata/{f}");
        let (n, o) = (new.pointer(&p), old.pointer(&p));
        let n_empty = n.map(|v| v.is_null() || v.as_str() == Some("")).unwrap_or(true);
        let o_empty = o.map(|v| v.is_null() || v.as_str() == Some("")).unwrap_or(true);
        if n != o && !(n_empty && o_empty) {
            errs.push(FieldError::immutable(&format!("metadata.{f}"), n));
        }
    }
    errs
}

/// Validation of a new object of the resource (`strategy.Validate`).
pub fn validate_create(rd: &ResourceDef, obj: &Value) -> Vec<FieldError> {
    let mut errs = validate_object_meta(obj);
    match rd.behaviour {
        Kind::ResourceSlice => errs.extend(validate_slice_spec(obj.get("spec"), None)),
        Kind::DeviceClass => errs.extend(validate_class_spec(obj.get("spec"))),
        Kind::ResourceClaim => errs.extend(validate_claim_spec(obj.get("spec"))),
        Kind::Custom => {}
    }
    errs
}

/// Validation of an update of the main resource (`strategy.ValidateUpdate`).
pub fn validate_update(rd: &ResourceDef, new: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = validate_object_meta_update(new, old);
    match rd.behaviour {
        Kind::ResourceSlice => {
            errs.extend(validate_object_meta(new));
            errs.extend(validate_slice_spec(new.get("spec"), old.get("spec")));
        }
        Kind::DeviceClass => {
            errs.extend(validate_object_meta(new));
            errs.extend(validate_class_spec(new.get("spec")));
        }
        Kind::ResourceClaim => {
            errs.extend(validate_object_meta(new));
            if new.get("spec") != old.get("spec") {
                errs.push(FieldError::immutable("spec", new.get("spec")));
            }
        }
        Kind::Custom => errs.extend(validate_labels_and_annotations(
            &new.get("metadata").cloned().unwrap_or_default(),
        )),
    }
    errs
}

/// Validation of a status update (`statusStrategy.ValidateUpdate`).
pub fn validate_status_update(rd: &ResourceDef, new: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = validate_object_meta_update(new, old);
    if rd.behaviour == Kind::ResourceClaim {
        errs.extend(validate_claim_status(new, old));
    }
    errs
}

fn validate_slice_spec(spec: Option<&Value>, old: Option<&Value>) -> Vec<FieldError> {
    let empty = Value::Null;
    let spec = spec.unwrap_or(&empty);
    let mut errs = Vec::new();
    let driver = s(spec, "/driver").unwrap_or("");
    errs.extend(validate_driver_name(driver, "spec.driver"));
    let pool_name = s(spec, "/pool/name").unwrap_or("");
    errs.extend(validate_pool_name(pool_name, "spec.pool.name"));
    let count = spec
        .pointer("/pool/resourceSliceCount")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if count <= 0 {
        errs.push(FieldError::invalid(
            "spec.pool.resourceSliceCount",
            BadValue::Int(count),
            "must be greater than zero",
        ));
    }
    let generation = spec.pointer("/pool/generation").and_then(Value::as_i64).unwrap_or(0);
    if generation < 0 {
        errs.push(FieldError::invalid(
            "spec.pool.generation",
            BadValue::Int(generation),
            "must be greater than or equal to zero",
        ));
    }
    if let Some(old) = old {
        for (ptr, path) in [
            ("/pool/name", "spec.pool.name"),
            ("/driver", "spec.driver"),
            ("/nodeName", "spec.nodeName"),
        ] {
            if spec.pointer(ptr) != old.pointer(ptr) {
                errs.push(FieldError::immutable(path, spec.pointer(ptr)));
            }
        }
    }

    let mut set_fields: Vec<&str> = Vec::new();
    if let Some(node) = spec.get("nodeName").filter(|v| !v.is_null()) {
        let node = node.as_str().unwrap_or("");
        if node.is_empty() {
            errs.push(FieldError::invalid_str(
                "spec.nodeName",
                node,
                "must be either unset or set to a non-empty string",
            ));
        } else {
            set_fields.push("`nodeName`");
            errs.extend(validate_dns1123_subdomain(node, "spec.nodeName"));
        }
    }
    if let Some(sel) = spec.get("nodeSelector").filter(|v| !v.is_null()) {
        set_fields.push("`nodeSelector`");
        let terms = arr(sel.get("nodeSelectorTerms"));
        if terms.len() != 1 {
            errs.push(FieldError::invalid(
                "spec.nodeSelector.nodeSelectorTerms",
                BadValue::Raw(Value::Array(terms.to_vec()).to_string()),
                "must have exactly one node selector term",
            ));
        }
    }
    for (f, label) in [
        ("allNodes", "`allNodes`"),
        ("perDeviceNodeSelection", "`perDeviceNodeSelection`"),
    ] {
        if let Some(v) = spec.get(f).filter(|v| !v.is_null()) {
            if v.as_bool() == Some(true) {
                set_fields.push(label);
            } else {
                errs.push(FieldError::invalid(
                    &format!("spec.{f}"),
                    BadValue::Bool(false),
                    "must be either unset or set to true",
                ));
            }
        }
    }
    match set_fields.len() {
        0 => errs.push(FieldError::required(
            "spec",
            "exactly one of `nodeName`, `nodeSelector`, `allNodes`, `perDeviceNodeSelection` is required",
        )),
        1 => {}
        _ => errs.push(FieldError::invalid_str(
            "spec",
            &format!("{{{}}}", set_fields.join(", ")),
            "exactly one of `nodeName`, `nodeSelector`, `allNodes`, `perDeviceNodeSelection` is required, but multiple fields are set",
        )),
    }
    let devices = spec.get("devices").filter(|v| !v.is_null());
    if spec.get("sharedCounters").is_some_and(|v| !v.is_null()) && devices.is_some() {
        errs.push(FieldError::invalid_str(
            "spec",
            "",
            "only one of `sharedCounters` or `devices` is allowed",
        ));
    }
    let devices = arr(devices);
    let advanced = devices
        .iter()
        .any(|d| !arr(d.get("taints")).is_empty() || !arr(d.get("consumesCounters")).is_empty());
    let max = if advanced {
        RESOURCE_SLICE_MAX_DEVICES_WITH_TAINTS_OR_COUNTERS
    } else {
        RESOURCE_SLICE_MAX_DEVICES
    };
    if devices.len() > max {
        errs.push(FieldError::too_many("spec.devices", devices.len(), max));
        return errs;
    }
    let per_device = spec.get("perDeviceNodeSelection").and_then(Value::as_bool) == Some(true);
    let mut names: BTreeSet<&str> = BTreeSet::new();
    for (i, d) in devices.iter().enumerate() {
        let p = index("spec.devices", i);
        errs.extend(validate_device(d, &p, per_device));
        let name = d.get("name").and_then(Value::as_str).unwrap_or("");
        if !names.insert(name) {
            errs.push(FieldError::duplicate(&p, BadValue::Str(name.into())));
        }
    }
    errs
}

fn truncate_key(k: &str, max: usize) -> String {
    let max = max.max(16);
    if k.len() <= max {
        return k.to_string();
    }
    let remaining = max - 3;
    let head = remaining.div_ceil(2);
    let tail = remaining / 2;
    match (k.get(..head), k.get(k.len() - tail..)) {
        (Some(h), Some(t)) => format!("{h}...{t}"),
        _ => k.to_string(),
    }
}

fn validate_device(d: &Value, p: &str, per_device: bool) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let name = d.get("name").and_then(Value::as_str).unwrap_or("");
    errs.extend(validate_dns1123_label(name, &child(p, "name")));
    let attrs = d.get("attributes").and_then(Value::as_object);
    let caps = d.get("capacity").and_then(Value::as_object);
    let total = attrs.map(|a| a.len()).unwrap_or(0) + caps.map(|c| c.len()).unwrap_or(0);
    if total > MAX_ATTRIBUTES_AND_CAPACITIES {
        errs.push(FieldError::invalid(
            p,
            BadValue::Int(total as i64),
            &format!("the total number of attributes and capacities must not exceed {MAX_ATTRIBUTES_AND_CAPACITIES}"),
        ));
    }
    let apath = child(p, "attributes");
    for (k, a) in attrs.into_iter().flatten() {
        errs.extend(validate_resource_qualified_name(k, &apath));
        errs.extend(validate_attribute(
            a,
            &key(&apath, &truncate_key(k, ATTRIBUTE_KEY_MAX_LENGTH)),
        ));
    }
    let cpath = child(p, "capacity");
    let multi = d.get("allowMultipleAllocations").and_then(Value::as_bool) == Some(true);
    for (k, c) in caps.into_iter().flatten() {
        errs.extend(validate_resource_qualified_name(k, &cpath));
        if !multi && c.get("requestPolicy").is_some_and(|v| !v.is_null()) {
            errs.push(FieldError::forbidden(
                &child(
                    &key(&cpath, &truncate_key(k, ATTRIBUTE_KEY_MAX_LENGTH)),
                    "requestPolicy",
                ),
                "allowMultipleAllocations must be true",
            ));
        }
    }
    let has_node_fields = ["nodeName", "nodeSelector", "allNodes"]
        .iter()
        .any(|f| d.get(*f).is_some_and(|v| !v.is_null()));
    if !per_device && has_node_fields {
        errs.push(FieldError::invalid(
            p,
            BadValue::Raw("null".into()),
            "`nodeName`, `nodeSelector` and `allNodes` can only be set if `perDeviceNodeSelection` is set to true in the ResourceSlice spec",
        ));
    }
    errs
}

fn validate_attribute(a: &Value, p: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut n = 0;
    for f in [
        "bool", "int", "string", "version", "bools", "ints", "strings", "versions",
    ] {
        if a.get(f).is_some_and(|v| !v.is_null()) {
            n += 1;
        }
    }
    if let Some(sv) = a.get("string").and_then(Value::as_str)
        && sv.len() > ATTRIBUTE_MAX_VALUE_LENGTH
    {
        errs.push(FieldError::too_long(&child(p, "string"), ATTRIBUTE_MAX_VALUE_LENGTH));
    }
    if let Some(vv) = a.get("version").and_then(Value::as_str) {
        let vp = child(p, "version");
        if !crate::field::is_semver(vv) {
            errs.push(FieldError::invalid_str(
                &vp,
                vv,
                "must be a string compatible with semver.org spec 2.0.0",
            ));
        }
        if vv.len() > ATTRIBUTE_MAX_VALUE_LENGTH {
            errs.push(FieldError::too_long(&vp, ATTRIBUTE_MAX_VALUE_LENGTH));
        }
    }
    match n {
        0 => errs.push(FieldError::invalid_str(p, "", "exactly one value must be specified")),
        1 => {}
        _ => errs.push(FieldError::invalid(
            p,
            BadValue::Raw(a.to_string()),
            "exactly one value must be specified",
        )),
    }
    errs
}

fn validate_opaque(config: &Value, p: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    match config.get("opaque").filter(|v| !v.is_null()) {
        None => errs.push(FieldError::required(&child(p, "opaque"), "")),
        Some(o) => {
            let op = child(p, "opaque");
            errs.extend(validate_driver_name(
                o.get("driver").and_then(Value::as_str).unwrap_or(""),
                &child(&op, "driver"),
            ));
            errs.extend(validate_raw_extension(
                o.get("parameters"),
                &child(&op, "parameters"),
                OPAQUE_PARAMETERS_MAX_LENGTH,
            ));
        }
    }
    errs
}

fn validate_selectors(selectors: &[Value], p: &str) -> Vec<FieldError> {
    if selectors.len() > DEVICE_SELECTORS_MAX {
        return vec![FieldError::too_many(p, selectors.len(), DEVICE_SELECTORS_MAX)];
    }
    let mut errs = Vec::new();
    for (i, sel) in selectors.iter().enumerate() {
        let sp = index(p, i);
        match sel.get("cel").filter(|v| !v.is_null()) {
            None => errs.push(FieldError::required(&child(&sp, "cel"), "")),
            Some(cel) => {
                let ep = child(&child(&sp, "cel"), "expression");
                let expr = cel.get("expression").and_then(Value::as_str).unwrap_or("");
                if expr.trim().is_empty() {
                    errs.push(FieldError::required(
                        &ep,
                        "compilation failed: expression must not be empty",
                    ));
                } else if expr.len() > CEL_EXPRESSION_MAX_LENGTH {
                    errs.push(FieldError::too_long(&ep, CEL_EXPRESSION_MAX_LENGTH));
                }
            }
        }
    }
    errs
}

fn validate_class_spec(spec: Option<&Value>) -> Vec<FieldError> {
    let empty = Value::Null;
    let spec = spec.unwrap_or(&empty);
    let mut errs = validate_selectors(arr(spec.get("selectors")), "spec.selectors");
    let configs = arr(spec.get("config"));
    if configs.len() > DEVICE_CONFIG_MAX {
        errs.push(FieldError::too_many("spec.config", configs.len(), DEVICE_CONFIG_MAX));
    } else {
        for (i, c) in configs.iter().enumerate() {
            errs.extend(validate_opaque(c, &index("spec.config", i)));
        }
    }
    errs
}

fn request_names(spec: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for r in arr(spec.pointer("/devices/requests")) {
        let name = r.get("name").and_then(Value::as_str).unwrap_or("").to_string();
        for sub in arr(r.get("firstAvailable")) {
            out.push(format!(
                "{name}/{}",
                sub.get("name").and_then(Value::as_str).unwrap_or("")
            ));
        }
        out.push(name);
    }
    out
}

fn validate_request_ref(name: &str, p: &str, names: &[String]) -> Vec<FieldError> {
    let msg = "must be the name of a request in the claim or the name of a request and a subrequest separated by '/'";
    let segments: Vec<&str> = name.split('/').collect();
    if segments.len() > 2 {
        return vec![FieldError::invalid_str(p, name, msg)];
    }
    let mut errs = Vec::new();
    for seg in segments {
        errs.extend(validate_dns1123_label(seg, p));
    }
    if !names.iter().any(|n| n == name) {
        errs.push(FieldError::invalid_str(p, name, msg));
    }
    errs
}

fn validate_exactly(r: &Value, p: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let class = r.get("deviceClassName").and_then(Value::as_str).unwrap_or("");
    let cp = child(p, "deviceClassName");
    if class.is_empty() {
        errs.push(FieldError::required(&cp, ""));
    } else {
        errs.extend(validate_dns1123_subdomain(class, &cp));
    }
    errs.extend(validate_selectors(arr(r.get("selectors")), &child(p, "selectors")));
    let mode = r.get("allocationMode").and_then(Value::as_str).unwrap_or("");
    let count = r.get("count").and_then(Value::as_i64).unwrap_or(0);
    match mode {
        "All" if count != 0 => errs.push(FieldError::invalid(
            &child(p, "count"),
            BadValue::Int(count),
            "must not be specified when allocationMode is 'All'",
        )),
        "ExactCount" if count <= 0 => errs.push(FieldError::invalid(
            &child(p, "count"),
            BadValue::Int(count),
            "must be greater than zero",
        )),
        "All" | "ExactCount" => {}
        other => errs.push(FieldError::not_supported(
            &child(p, "allocationMode"),
            other,
            &["All", "ExactCount"],
        )),
    }
    errs
}

fn validate_claim_spec(spec: Option<&Value>) -> Vec<FieldError> {
    let empty = Value::Null;
    let spec = spec.unwrap_or(&empty);
    let mut errs = Vec::new();
    let names = request_names(spec);
    let requests = arr(spec.pointer("/devices/requests"));
    let rp = "spec.devices.requests";
    if requests.len() > DEVICE_REQUESTS_MAX {
        errs.push(FieldError::too_many(rp, requests.len(), DEVICE_REQUESTS_MAX));
    } else {
        let mut seen = BTreeSet::new();
        for (i, r) in requests.iter().enumerate() {
            let p = index(rp, i);
            let name = r.get("name").and_then(Value::as_str).unwrap_or("");
            errs.extend(validate_dns1123_label(name, &child(&p, "name")));
            let first = arr(r.get("firstAvailable"));
            let exactly = r.get("exactly").filter(|v| !v.is_null());
            match (exactly, first.is_empty()) {
                (None, true) => errs.push(FieldError::required(
                    &p,
                    "exactly one of `exactly` or `firstAvailable` is required",
                )),
                (Some(_), false) => errs.push(FieldError::invalid(
                    &p,
                    BadValue::Raw("null".into()),
                    "exactly one of `exactly` or `firstAvailable` is required, but multiple fields are set",
                )),
                (Some(e), true) => errs.extend(validate_exactly(e, &child(&p, "exactly"))),
                (None, false) => {
                    for (j, sub) in first.iter().enumerate() {
                        let sp = index(&child(&p, "firstAvailable"), j);
                        errs.extend(validate_dns1123_label(
                            sub.get("name").and_then(Value::as_str).unwrap_or(""),
                            &child(&sp, "name"),
                        ));
                        errs.extend(validate_exactly(sub, &sp));
                    }
                }
            }
            if !seen.insert(name) {
                errs.push(FieldError::duplicate(&p, BadValue::Str(name.into())));
            }
        }
    }
    let constraints = arr(spec.pointer("/devices/constraints"));
    for (i, c) in constraints.iter().enumerate() {
        let p = index("spec.devices.constraints", i);
        for (j, r) in arr(c.get("requests")).iter().enumerate() {
            errs.extend(validate_request_ref(
                r.as_str().unwrap_or(""),
                &index(&child(&p, "requests"), j),
                &names,
            ));
        }
        if let Some(m) = c.get("matchAttribute").and_then(Value::as_str) {
            let mp = child(&p, "matchAttribute");
            errs.extend(validate_resource_qualified_name(m, &mp));
            if !m.contains('/') {
                errs.push(FieldError::invalid_str(
                    &mp,
                    m,
                    "a fully qualified name must be a domain and a name separated by a slash",
                ));
            }
        }
    }
    let configs = arr(spec.pointer("/devices/config"));
    if configs.len() > DEVICE_CONFIG_MAX {
        errs.push(FieldError::too_many(
            "spec.devices.config",
            configs.len(),
            DEVICE_CONFIG_MAX,
        ));
    } else {
        for (i, c) in configs.iter().enumerate() {
            let p = index("spec.devices.config", i);
            for (j, r) in arr(c.get("requests")).iter().enumerate() {
                errs.extend(validate_request_ref(
                    r.as_str().unwrap_or(""),
                    &index(&child(&p, "requests"), j),
                    &names,
                ));
            }
            errs.extend(validate_opaque(c, &p));
        }
    }
    errs
}

/// A shared device ID as upstream prints it in a field error (the struct as JSON).
fn shared_device_id_json(v: &Value) -> String {
    let s = |k: &str| go_quote(v.get(k).and_then(Value::as_str).unwrap_or(""));
    format!(
        "{{\"Driver\":{},\"Pool\":{},\"Device\":{},\"ShareID\":{}}}",
        s("driver"),
        s("pool"),
        s("device"),
        s("shareID")
    )
}

/// `driver/pool/device[/shareID]`, the `String()` of a shared device ID.
fn device_id(v: &Value) -> String {
    let mut id = format!(
        "{}/{}/{}",
        v.get("driver").and_then(Value::as_str).unwrap_or(""),
        v.get("pool").and_then(Value::as_str).unwrap_or(""),
        v.get("device").and_then(Value::as_str).unwrap_or("")
    );
    if let Some(share) = v.get("shareID").and_then(Value::as_str) {
        id.push('/');
        id.push_str(share);
    }
    id
}

fn validate_uid(uid: &str, p: &str) -> Vec<FieldError> {
    let ok = uid.len() == 36
        && uid.chars().enumerate().all(|(i, c)| {
            if [8, 13, 18, 23].contains(&i) {
                c == '-'
            } else {
                c.is_ascii_hexdigit() && !c.is_ascii_uppercase()
            }
        });
    if ok {
        Vec::new()
    } else {
        vec![FieldError::invalid_str(
            p,
            uid,
            "uid must be in RFC 4122 normalized form, `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` with lowercase hexadecimal characters",
        )]
    }
}

fn validate_claim_status(new: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let names = request_names(new.get("spec").unwrap_or(&Value::Null));
    let status = new.get("status").cloned().unwrap_or(Value::Null);
    let old_status = old.get("status").cloned().unwrap_or(Value::Null);
    let reserved = arr(status.get("reservedFor"));
    if reserved.len() > RESERVED_FOR_MAX {
        errs.push(FieldError::too_many(
            "status.reservedFor",
            reserved.len(),
            RESERVED_FOR_MAX,
        ));
    } else {
        let mut seen = BTreeSet::new();
        for (i, r) in reserved.iter().enumerate() {
            let p = index("status.reservedFor", i);
            for f in ["resource", "name", "uid"] {
                if r.get(f).and_then(Value::as_str).unwrap_or("").is_empty() {
                    errs.push(FieldError::required(&child(&p, f), ""));
                }
            }
            let uid = r.get("uid").and_then(Value::as_str).unwrap_or("");
            if !seen.insert(uid) {
                errs.push(FieldError::duplicate(&p, BadValue::Str(uid.into())));
            }
        }
    }
    let allocation = status.get("allocation").filter(|v| !v.is_null());
    let allocated: BTreeSet<String> = allocation
        .map(|a| arr(a.pointer("/devices/results")).iter().map(device_id).collect())
        .unwrap_or_default();
    let mut seen = BTreeSet::new();
    for (i, d) in arr(status.get("devices")).iter().enumerate() {
        let p = index("status.devices", i);
        errs.extend(validate_driver_name(
            d.get("driver").and_then(Value::as_str).unwrap_or(""),
            &child(&p, "driver"),
        ));
        errs.extend(validate_pool_name(
            d.get("pool").and_then(Value::as_str).unwrap_or(""),
            &child(&p, "pool"),
        ));
        errs.extend(validate_dns1123_label(
            d.get("device").and_then(Value::as_str).unwrap_or(""),
            &child(&p, "device"),
        ));
        if let Some(share) = d.get("shareID").and_then(Value::as_str) {
            errs.extend(validate_uid(share, &child(&p, "shareID")));
        }
        let id = device_id(d);
        if !allocated.contains(&id) {
            errs.push(FieldError::invalid(
                &p,
                BadValue::Raw(shared_device_id_json(d)),
                "must be an allocated device in the claim",
            ));
        }
        let conditions = arr(d.get("conditions"));
        let cp = child(&p, "conditions");
        if conditions.len() > DEVICE_STATUS_MAX_CONDITIONS {
            errs.push(FieldError::too_many(
                &cp,
                conditions.len(),
                DEVICE_STATUS_MAX_CONDITIONS,
            ));
        }
        errs.extend(validate_conditions(conditions, &cp));
        if let Some(data) = d.get("data").filter(|v| !v.is_null()) {
            errs.extend(validate_raw_extension(
                Some(data),
                &child(&p, "data"),
                DEVICE_STATUS_DATA_MAX_LENGTH,
            ));
        }
        if let Some(nd) = d.get("networkData").filter(|v| !v.is_null()) {
            let np = child(&p, "networkData");
            if nd.get("interfaceName").and_then(Value::as_str).unwrap_or("").len() > NETWORK_INTERFACE_NAME_MAX {
                errs.push(FieldError::too_long(
                    &child(&np, "interfaceName"),
                    NETWORK_INTERFACE_NAME_MAX,
                ));
            }
            if nd.get("hardwareAddress").and_then(Value::as_str).unwrap_or("").len() > NETWORK_HARDWARE_ADDRESS_MAX {
                errs.push(FieldError::too_long(
                    &child(&np, "hardwareAddress"),
                    NETWORK_HARDWARE_ADDRESS_MAX,
                ));
            }
            let ips = arr(nd.get("ips"));
            let ip_path = child(&np, "ips");
            if ips.len() > NETWORK_MAX_IPS {
                errs.push(FieldError::too_many(&ip_path, ips.len(), NETWORK_MAX_IPS));
            } else {
                let mut seen_ips = BTreeSet::new();
                for (j, ip) in ips.iter().enumerate() {
                    let ip = ip.as_str().unwrap_or("");
                    let p = index(&ip_path, j);
                    errs.extend(validate_interface_address(ip, &p));
                    if !seen_ips.insert(ip) {
                        errs.push(FieldError::duplicate(&p, BadValue::Str(ip.into())));
                    }
                }
            }
        }
        if !seen.insert(id.clone()) {
            errs.push(FieldError::duplicate(&p, BadValue::Raw(id)));
        }
    }
    if !reserved.is_empty() {
        if allocation.is_none() {
            errs.push(FieldError::forbidden(
                "status.reservedFor",
                "may not be specified when `allocated` is not set",
            ));
        } else if new.pointer("/metadata/deletionTimestamp").is_some_and(|v| !v.is_null()) {
            let old_uids: BTreeSet<&str> = arr(old_status.get("reservedFor"))
                .iter()
                .filter_map(|r| r.get("uid").and_then(Value::as_str))
                .collect();
            if reserved
                .iter()
                .any(|r| !old_uids.contains(r.get("uid").and_then(Value::as_str).unwrap_or("")))
            {
                errs.push(FieldError::forbidden(
                    "status.reservedFor",
                    "new entries may not be added while `deallocationRequested` or `deletionTimestamp` are set",
                ));
            }
        }
    }
    let old_allocation = old_status.get("allocation").filter(|v| !v.is_null());
    match (allocation, old_allocation) {
        (Some(a), Some(o)) if a != o => errs.push(FieldError::immutable("status.allocation", Some(a))),
        (Some(a), None) => {
            let results = arr(a.pointer("/devices/results"));
            let rp = "status.allocation.devices.results";
            if results.len() > ALLOCATION_RESULTS_MAX {
                errs.push(FieldError::too_many(rp, results.len(), ALLOCATION_RESULTS_MAX));
            } else {
                for (i, r) in results.iter().enumerate() {
                    let p = index(rp, i);
                    errs.extend(validate_request_ref(
                        r.get("request").and_then(Value::as_str).unwrap_or(""),
                        &child(&p, "request"),
                        &names,
                    ));
                    errs.extend(validate_driver_name(
                        r.get("driver").and_then(Value::as_str).unwrap_or(""),
                        &child(&p, "driver"),
                    ));
                    errs.extend(validate_pool_name(
                        r.get("pool").and_then(Value::as_str).unwrap_or(""),
                        &child(&p, "pool"),
                    ));
                    errs.extend(validate_dns1123_label(
                        r.get("device").and_then(Value::as_str).unwrap_or(""),
                        &child(&p, "device"),
                    ));
                }
            }
        }
        _ => {}
    }
    errs
}
