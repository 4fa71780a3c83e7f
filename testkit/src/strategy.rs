//! Per-kind create/update preparation, defaulting and decoding (the registry "strategy").

use serde_json::{Value, json};

use crate::resources::{Kind, ResourceDef};
use crate::status::ApiError;

/// Sets (or removes, for `None`) a metadata field.
pub fn set_meta(obj: &mut Value, field: &str, value: Option<Value>) {
    let Some(o) = obj.as_object_mut() else { return };
    let m = o.entry("metadata").or_insert_with(|| json!({}));
    if !m.is_object() {
        *m = json!({});
    }
    if let Some(m) = m.as_object_mut() {
        match value {
            Some(v) => {
                m.insert(field.into(), v);
            }
            None => {
                m.remove(field);
            }
        }
    }
}

/// Reads a metadata field.
pub fn meta<'a>(obj: &'a Value, field: &str) -> Option<&'a Value> {
    obj.get("metadata").and_then(|m| m.get(field)).filter(|v| !v.is_null())
}

pub fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    meta(obj, field).and_then(Value::as_str).unwrap_or("")
}

fn generation(obj: &Value) -> i64 {
    meta(obj, "generation").and_then(Value::as_i64).unwrap_or(0)
}

fn set_top(obj: &mut Value, field: &str, value: Option<Value>) {
    if let Some(o) = obj.as_object_mut() {
        match value {
            Some(v) => {
                o.insert(field.into(), v);
            }
            None => {
                o.remove(field);
            }
        }
    }
}

/// Decodes the object through the typed API (built-in kinds), which rejects wrongly typed fields
/// with 400 like the apiserver's decoder and drops unknown fields.
pub fn decode(rd: &ResourceDef, obj: Value) -> Result<Value, ApiError> {
    use k8s_openapi::api::resource::v1::{DeviceClass, ResourceClaim, ResourceSlice};
    fn rt<T: serde::de::DeserializeOwned + serde::Serialize>(rd: &ResourceDef, obj: Value) -> Result<Value, ApiError> {
        let typed: T = serde_json::from_value(obj).map_err(|e| {
            ApiError::bad_request(format!(
                "{} in version \"{}\" cannot be handled as a {}: {}",
                rd.kind, rd.version, rd.kind, e
            ))
        })?;
        serde_json::to_value(typed).map_err(|e| ApiError::internal(e.to_string()))
    }
    match rd.behaviour {
        Kind::ResourceClaim => rt::<ResourceClaim>(rd, obj),
        Kind::ResourceSlice => rt::<ResourceSlice>(rd, obj),
        Kind::DeviceClass => rt::<DeviceClass>(rd, obj),
        Kind::Custom => Ok(obj),
    }
}

fn default_exactly(r: &mut Value) {
    if let Some(o) = r.as_object_mut() {
        if o.get("allocationMode").is_none_or(|v| v.is_null()) {
            o.insert("allocationMode".into(), json!("ExactCount"));
        }
        if o.get("allocationMode").and_then(Value::as_str) == Some("ExactCount")
            && o.get("count").is_none_or(|v| v.is_null())
        {
            o.insert("count".into(), json!(1));
        }
        if let Some(tols) = o.get_mut("tolerations").and_then(Value::as_array_mut) {
            for t in tols.iter_mut().filter_map(Value::as_object_mut) {
                if t.get("operator").is_none_or(|v| v.is_null()) {
                    t.insert("operator".into(), json!("Equal"));
                }
            }
        }
    }
}

/// Defaulting (`SetDefaults_*` of `resource.k8s.io/v1`).
pub fn apply_defaults(rd: &ResourceDef, obj: &mut Value) {
    if rd.behaviour != Kind::ResourceClaim {
        return;
    }
    if let Some(requests) = obj.pointer_mut("/spec/devices/requests").and_then(Value::as_array_mut) {
        for r in requests {
            if let Some(e) = r.get_mut("exactly").filter(|v| !v.is_null()) {
                default_exactly(e);
            }
            if let Some(subs) = r.get_mut("firstAvailable").and_then(Value::as_array_mut) {
                for s in subs {
                    default_exactly(s);
                }
            }
        }
    }
}

/// `PrepareForCreate` plus the parts of `BeforeCreate` that reset metadata.
pub fn prepare_create(rd: &ResourceDef, obj: &mut Value) {
    match rd.behaviour {
        Kind::ResourceClaim => {
            set_top(obj, "status", None);
            set_meta(obj, "generation", None);
        }
        Kind::ResourceSlice | Kind::DeviceClass => set_meta(obj, "generation", Some(json!(1))),
        Kind::Custom => {
            if rd.has_status {
                set_top(obj, "status", None);
            }
            set_meta(obj, "generation", Some(json!(1)));
        }
    }
    set_meta(obj, "deletionTimestamp", None);
    set_meta(obj, "deletionGracePeriodSeconds", None);
    set_meta(obj, "managedFields", None);
}

/// `PrepareForUpdate` of the main resource, after `BeforeUpdate` copied the generation.
pub fn prepare_update(rd: &ResourceDef, new: &mut Value, old: &Value) {
    let old_gen = generation(old);
    set_meta(new, "generation", meta(old, "generation").cloned());
    match rd.behaviour {
        Kind::ResourceClaim => set_top(new, "status", old.get("status").cloned()),
        Kind::ResourceSlice | Kind::DeviceClass => {
            if new.get("spec") != old.get("spec") {
                set_meta(new, "generation", Some(json!(old_gen + 1)));
            }
        }
        Kind::Custom => {
            if rd.has_status {
                set_top(new, "status", old.get("status").cloned());
            }
            // Without a status subresource every change outside metadata counts.
            let strip = |v: &Value| {
                let mut v = v.clone();
                if let Some(o) = v.as_object_mut() {
                    o.remove("metadata");
                    if rd.has_status {
                        o.remove("status");
                    }
                }
                v
            };
            if strip(new) != strip(old) {
                set_meta(new, "generation", Some(json!(old_gen + 1)));
            }
        }
    }
}

/// `PrepareForUpdate` of the status subresource.
pub fn prepare_status_update(rd: &ResourceDef, new: &mut Value, old: &Value) {
    match rd.behaviour {
        Kind::Custom => {
            // Everything but the status is taken from the stored object.
            let status = new.get("status").cloned();
            let rv = meta(new, "resourceVersion").cloned();
            *new = old.clone();
            set_top(new, "status", status);
            set_meta(new, "resourceVersion", rv);
        }
        _ => {
            set_top(new, "spec", old.get("spec").cloned());
            // metav1.ResetObjectMetaForStatus
            for f in [
                "deletionTimestamp",
                "generation",
                "labels",
                "annotations",
                "finalizers",
                "ownerReferences",
            ] {
                set_meta(new, f, meta(old, f).cloned());
            }
            if rd.behaviour == Kind::ResourceClaim {
                drop_deallocated_status_devices(new, old);
            }
        }
    }
}

/// `dropDeallocatedStatusDevices`: status entries of devices that were allocated before and are
/// not allocated any more are dropped.
fn drop_deallocated_status_devices(new: &mut Value, old: &Value) {
    let ids = |v: &Value| -> Vec<(String, String, String)> {
        v.pointer("/status/allocation/devices/results")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|r| {
                        let f = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("").to_string();
                        (f("driver"), f("pool"), f("device"))
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let old_ids = ids(old);
    let new_ids = ids(new);
    let deallocated: Vec<&(String, String, String)> = old_ids.iter().filter(|i| !new_ids.contains(i)).collect();
    if deallocated.is_empty() {
        return;
    }
    if let Some(devices) = new.pointer_mut("/status/devices").and_then(Value::as_array_mut) {
        devices.retain(|d| {
            let f = |k: &str| d.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            !deallocated.contains(&&(f("driver"), f("pool"), f("device")))
        });
        if devices.is_empty()
            && let Some(status) = new.get_mut("status").and_then(Value::as_object_mut)
        {
            status.remove("devices");
        }
    }
}

/// The parts of `BeforeUpdate` that keep system metadata.
pub fn keep_system_meta(new: &mut Value, old: &Value) {
    if meta_str(new, "uid").is_empty() {
        set_meta(new, "uid", meta(old, "uid").cloned());
    }
    set_meta(new, "creationTimestamp", meta(old, "creationTimestamp").cloned());
    if meta(old, "deletionTimestamp").is_some() {
        set_meta(new, "deletionTimestamp", meta(old, "deletionTimestamp").cloned());
        set_meta(
            new,
            "deletionGracePeriodSeconds",
            meta(old, "deletionGracePeriodSeconds").cloned(),
        );
    } else {
        set_meta(new, "deletionTimestamp", None);
        set_meta(new, "deletionGracePeriodSeconds", None);
    }
}
