//! A small model of structured-merge-diff: field sets, apply merge/prune, conflicts and
//! `metadata.managedFields`. Maps are granular, lists follow [`ListType`] (see
//! [`ResourceDef::list_type`]). It implements the rules upstream applies for the shapes our
//! resources have; it is not a general SMD implementation (no schema-driven defaults, no `i:`
//! index paths, no type conversion between versions).

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use crate::resources::{ListType, ResourceDef};
use crate::status::ApiError;

/// One step of a field path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Pe {
    /// A field of a map (`f:name`).
    Field(String),
    /// An item of an associative list, identified by its key fields as canonical JSON (`k:{...}`).
    Key(String),
    /// An item of a set list, identified by its canonical JSON (`v:...`).
    Val(String),
}

pub type Path = Vec<Pe>;
pub type FieldSet = BTreeSet<Path>;

/// The operation of a managed-fields entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Apply,
    Update,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Op::Apply => "Apply",
            Op::Update => "Update",
        }
    }
}

/// One `metadata.managedFields` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct ManagedEntry {
    pub manager: String,
    pub operation: Op,
    pub subresource: String,
    pub api_version: String,
    pub time: String,
    pub fields: FieldSet,
}

impl ManagedEntry {
    fn same_id(&self, manager: &str, op: Op, subresource: &str) -> bool {
        self.manager == manager && self.operation == op && self.subresource == subresource
    }

    /// `printManager` of the upstream field manager.
    fn describe(&self) -> String {
        let mut s = crate::field::go_quote(&self.manager);
        if !self.subresource.is_empty() {
            s = format!("{s} with subresource {}", crate::field::go_quote(&self.subresource));
        }
        if self.operation == Op::Update {
            s = format!("{s} using {} at {}", self.api_version, self.time);
        }
        s
    }
}

/// Canonical JSON (object keys sorted), independent of serde_json's map ordering.
pub fn canonical(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys
                .iter()
                .map(|k| format!("{}:{}", Value::String((*k).clone()), canonical(&m[k.as_str()])))
                .collect();
            format!("{{{}}}", parts.join(","))
        }
        Value::Array(a) => format!("[{}]", a.iter().map(canonical).collect::<Vec<_>>().join(",")),
        other => other.to_string(),
    }
}

/// The key of an associative-list item: canonical JSON of the key fields present.
fn item_key(item: &Value, keys: &[&str]) -> Option<String> {
    let obj = item.as_object()?;
    let mut m = Map::new();
    for k in keys {
        if let Some(v) = obj.get(*k).filter(|v| !v.is_null()) {
            m.insert((*k).to_string(), v.clone());
        }
    }
    if m.is_empty() {
        None
    } else {
        Some(canonical(&Value::Object(m)))
    }
}

/// Fields that are never tracked (`stripMeta` of the upstream field manager).
fn is_ignored(path: &[Pe]) -> bool {
    match path {
        [Pe::Field(f)] => f == "apiVersion" || f == "kind",
        [Pe::Field(m), Pe::Field(f)] if m == "metadata" => matches!(
            f.as_str(),
            "name"
                | "namespace"
                | "uid"
                | "resourceVersion"
                | "generation"
                | "creationTimestamp"
                | "managedFields"
                | "selfLink"
                | "deletionTimestamp"
                | "deletionGracePeriodSeconds"
                | "generateName"
        ),
        _ => false,
    }
}

fn shape_of(path: &[Pe]) -> Vec<String> {
    path.iter()
        .filter_map(|p| match p {
            Pe::Field(f) => Some(f.clone()),
            _ => None,
        })
        .collect()
}

/// The set of fields a value sets.
pub fn field_set(rd: &ResourceDef, v: &Value) -> FieldSet {
    let mut out = FieldSet::new();
    collect(rd, v, &mut Vec::new(), &mut out);
    out
}

fn collect(rd: &ResourceDef, v: &Value, path: &mut Path, out: &mut FieldSet) {
    if is_ignored(path) {
        return;
    }
    match v {
        Value::Null => {}
        Value::Object(_) if rd.atomic_map(&shape_of(path)) => {
            out.insert(path.clone());
        }
        Value::Object(m) => {
            for (k, c) in m {
                path.push(Pe::Field(k.clone()));
                collect(rd, c, path, out);
                path.pop();
            }
        }
        Value::Array(items) => match rd.list_type(&shape_of(path)) {
            ListType::Atomic => {
                out.insert(path.clone());
            }
            ListType::Map(keys) => {
                for item in items {
                    if let Some(k) = item_key(item, keys) {
                        path.push(Pe::Key(k));
                        out.insert(path.clone());
                        collect(rd, item, path, out);
                        path.pop();
                    }
                }
            }
            ListType::Set => {
                for item in items {
                    path.push(Pe::Val(canonical(item)));
                    out.insert(path.clone());
                    path.pop();
                }
            }
        },
        _ => {
            out.insert(path.clone());
        }
    }
}

/// Validates the shape of an apply configuration: items of associative lists need their keys.
pub fn check_config(rd: &ResourceDef, v: &Value) -> Result<(), ApiError> {
    fn walk(rd: &ResourceDef, v: &Value, path: &mut Path) -> Result<(), ApiError> {
        match v {
            Value::Object(m) => {
                for (k, c) in m {
                    path.push(Pe::Field(k.clone()));
                    walk(rd, c, path)?;
                    path.pop();
                }
            }
            Value::Array(items) => {
                if let ListType::Map(keys) = rd.list_type(&shape_of(path)) {
                    for item in items {
                        match item_key(item, keys) {
                            Some(k) => {
                                path.push(Pe::Key(k));
                                walk(rd, item, path)?;
                                path.pop();
                            }
                            None => {
                                return Err(ApiError::internal(format!(
                                    "failed to create typed patch object: {}: element {} has no key fields ({})",
                                    path_string(path),
                                    item,
                                    keys.join(", ")
                                )));
                            }
                        }
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
    walk(rd, v, &mut Vec::new())
}

/// Drops explicit nulls (an apply configuration's `null` means "not set").
pub fn strip_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, c)| !c.is_null())
                .map(|(k, c)| (k.clone(), strip_nulls(c)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_nulls).collect()),
        other => other.clone(),
    }
}

/// Merges an apply configuration into the live object.
pub fn merge(rd: &ResourceDef, live: &mut Value, cfg: &Value) {
    merge_at(rd, live, cfg, &mut Vec::new());
}

fn merge_at(rd: &ResourceDef, live: &mut Value, cfg: &Value, shape: &mut Vec<String>) {
    match (live, cfg) {
        (live @ Value::Object(_), Value::Object(_)) if rd.atomic_map(shape) => *live = strip_nulls(cfg),
        (Value::Object(lm), Value::Object(cm)) => {
            for (k, cv) in cm {
                if cv.is_null() {
                    continue;
                }
                shape.push(k.clone());
                match lm.get_mut(k) {
                    Some(lv) => merge_at(rd, lv, cv, shape),
                    None => {
                        lm.insert(k.clone(), strip_nulls(cv));
                    }
                }
                shape.pop();
            }
        }
        (live @ Value::Array(_), Value::Array(ca)) => match rd.list_type(shape) {
            ListType::Atomic => *live = strip_nulls(cfg),
            ListType::Map(keys) => {
                if let Value::Array(la) = live {
                    for ci in ca {
                        let key = item_key(ci, keys);
                        match la.iter_mut().find(|li| key.is_some() && item_key(li, keys) == key) {
                            Some(li) => merge_at(rd, li, ci, shape),
                            None => la.push(strip_nulls(ci)),
                        }
                    }
                }
            }
            ListType::Set => {
                if let Value::Array(la) = live {
                    for ci in ca {
                        if !la.contains(ci) {
                            la.push(ci.clone());
                        }
                    }
                }
            }
        },
        (live, cfg) => *live = strip_nulls(cfg),
    }
}

/// Removes the field at `path` from `obj`; maps and lists emptied by the removal are removed too
/// (except top-level fields).
pub fn remove_path(obj: &mut Value, path: &[Pe]) {
    remove_at(obj, path, 0);
}

/// Returns true when `node` became empty because of the removal.
fn remove_at(node: &mut Value, path: &[Pe], depth: usize) -> bool {
    let Some((first, rest)) = path.split_first() else {
        return false;
    };

    match (node, first) {
        (Value::Object(m), Pe::Field(f)) => {
            if rest.is_empty() {
                m.remove(f).is_some() && m.is_empty()
            } else {
                let child_empty = m.get_mut(f).map(|c| remove_at(c, rest, depth + 1)).unwrap_or(false);
                if child_empty && depth >= 1 {
                    m.remove(f);
                } else if child_empty {
                    // Keep top-level fields such as `status: {}` but drop what is inside.
                    if let Some(c) = m.get_mut(f)
                        && c.as_object().is_none()
                    {
                        m.remove(f);
                    }
                }
                m.is_empty()
            }
        }
        (Value::Array(a), Pe::Key(k)) => {
            // Key fields stay until the item itself is removed: without them the item could not
            // be found again.
            if let [Pe::Field(f)] = rest
                && serde_json::from_str::<Value>(k)
                    .ok()
                    .is_some_and(|w| w.get(f).is_some())
            {
                return false;
            }
            let pos = a.iter().position(|item| {
                item.as_object()
                    .map(|o| {
                        // Recompute the key with the same key fields as the path element.
                        let wanted: Value = serde_json::from_str(k).unwrap_or(Value::Null);
                        wanted
                            .as_object()
                            .map(|w| w.iter().all(|(wk, wv)| o.get(wk) == Some(wv)) && !w.is_empty())
                            .unwrap_or(false)
                    })
                    .unwrap_or(false)
            });
            if let Some(pos) = pos {
                if rest.is_empty() {
                    a.remove(pos);
                } else {
                    remove_at(&mut a[pos], rest, depth + 1);
                }
            }
            a.is_empty()
        }
        (Value::Array(a), Pe::Val(v)) => {
            if rest.is_empty() {
                a.retain(|item| canonical(item) != *v);
            }
            a.is_empty()
        }
        _ => false,
    }
}

/// Fields added or modified, and fields removed, between two versions of an object.
pub fn diff(rd: &ResourceDef, old: Option<&Value>, new: Option<&Value>) -> (FieldSet, FieldSet) {
    let mut changed = FieldSet::new();
    let mut removed = FieldSet::new();
    diff_at(rd, old, new, &mut Vec::new(), &mut changed, &mut removed);
    (changed, removed)
}

fn diff_at(
    rd: &ResourceDef,
    old: Option<&Value>,
    new: Option<&Value>,
    path: &mut Path,
    changed: &mut FieldSet,
    removed: &mut FieldSet,
) {
    if is_ignored(path) {
        return;
    }
    let old = old.filter(|v| !v.is_null());
    let new = new.filter(|v| !v.is_null());
    match (old, new) {
        (None, None) => {}
        (Some(o), None) => collect(rd, o, path, removed),
        (None, Some(n)) => collect(rd, n, path, changed),
        (Some(o @ Value::Object(_)), Some(n @ Value::Object(_))) if rd.atomic_map(&shape_of(path)) => {
            if o != n {
                changed.insert(path.clone());
            }
        }
        (Some(Value::Object(om)), Some(Value::Object(nm))) => {
            let keys: BTreeSet<&String> = om.keys().chain(nm.keys()).collect();
            for k in keys {
                path.push(Pe::Field(k.clone()));
                diff_at(rd, om.get(k), nm.get(k), path, changed, removed);
                path.pop();
            }
        }
        (Some(o @ Value::Array(oa)), Some(n @ Value::Array(na))) => match rd.list_type(&shape_of(path)) {
            ListType::Atomic => {
                if o != n {
                    changed.insert(path.clone());
                }
            }
            ListType::Map(keys) => {
                let index = |a: &Vec<Value>| -> Vec<(String, Value)> {
                    a.iter()
                        .filter_map(|i| item_key(i, keys).map(|k| (k, i.clone())))
                        .collect()
                };
                let (oi, ni) = (index(oa), index(na));
                let all: BTreeSet<&String> = oi.iter().map(|(k, _)| k).chain(ni.iter().map(|(k, _)| k)).collect();
                for k in all {
                    let ov = oi.iter().find(|(ok, _)| ok == k).map(|(_, v)| v);
                    let nv = ni.iter().find(|(nk, _)| nk == k).map(|(_, v)| v);
                    path.push(Pe::Key(k.clone()));
                    match (ov, nv) {
                        (Some(_), None) => {
                            removed.insert(path.clone());
                        }
                        (None, Some(_)) => {
                            changed.insert(path.clone());
                        }
                        _ => {}
                    }
                    diff_at(rd, ov, nv, path, changed, removed);
                    path.pop();
                }
            }
            ListType::Set => {
                let os: BTreeSet<String> = oa.iter().map(canonical).collect();
                let ns: BTreeSet<String> = na.iter().map(canonical).collect();
                for v in ns.difference(&os) {
                    let mut p = path.clone();
                    p.push(Pe::Val(v.clone()));
                    changed.insert(p);
                }
                for v in os.difference(&ns) {
                    let mut p = path.clone();
                    p.push(Pe::Val(v.clone()));
                    removed.insert(p);
                }
            }
        },
        (Some(o), Some(n)) => {
            if o != n {
                let o_scalar = !o.is_object() && !o.is_array();
                let n_scalar = !n.is_object() && !n.is_array();
                if o_scalar && n_scalar {
                    changed.insert(path.clone());
                } else {
                    collect(rd, o, path, removed);
                    collect(rd, n, path, changed);
                }
            }
        }
    }
}

/// SMD's `Path.String()`.
pub fn path_string(path: &[Pe]) -> String {
    let mut s = String::new();
    for pe in path {
        match pe {
            Pe::Field(f) => {
                s.push('.');
                s.push_str(f);
            }
            Pe::Key(k) => {
                let v: Value = serde_json::from_str(k).unwrap_or(Value::Null);
                let mut parts = Vec::new();
                if let Some(m) = v.as_object() {
                    let mut keys: Vec<&String> = m.keys().collect();
                    keys.sort();
                    for key in keys {
                        parts.push(format!("{}={}", key, canonical(&m[key.as_str()])));
                    }
                }
                s.push_str(&format!("[{}]", parts.join(",")));
            }
            Pe::Val(v) => s.push_str(&format!("[={v}]")),
        }
    }
    s
}

/// The apply step: merges `cfg` into `live` (or a new object), prunes the fields the applier
/// owned before and no longer sets, checks conflicts and computes the new managed fields.
/// Returns the new object and managed fields; the caller still runs strategy and validation.
#[allow(clippy::too_many_arguments)]
pub fn apply(
    rd: &ResourceDef,
    live: Option<&Value>,
    base: Value,
    managed: &[ManagedEntry],
    cfg: &Value,
    manager: &str,
    subresource: &str,
    force: bool,
    now: &str,
) -> Result<(Value, Vec<ManagedEntry>), ApiError> {
    let mut merged = live.cloned().unwrap_or(base);
    merge(rd, &mut merged, cfg);
    let new_set = field_set(rd, cfg);
    let last_set: FieldSet = managed
        .iter()
        .find(|e| e.same_id(manager, Op::Apply, subresource))
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    let mut still_owned: FieldSet = new_set.clone();
    for e in managed.iter().filter(|e| !e.same_id(manager, Op::Apply, subresource)) {
        still_owned.extend(e.fields.iter().cloned());
    }
    let mut to_remove: Vec<&Path> = last_set.difference(&still_owned).collect();
    // Shallowest first: a list item goes as a whole before its (then already gone) fields.
    to_remove.sort_by_key(|p| p.len());
    for p in to_remove {
        remove_path(&mut merged, p);
    }

    // Conflicts are between the applied values and the live ones, before defaulting: an atomic
    // list that the server defaulted (a claim's requests get `allocationMode`) differs from the
    // same list applied without the defaults (tests/api, owner_references_merge_by_uid).
    let (applied_changes, _) = diff(rd, live, Some(&merged));
    // Ownership follows what will be stored: the merged object with the defaults of any decoded object.
    crate::strategy::apply_defaults(rd, &mut merged);
    let (changed, removed) = diff(rd, live, Some(&merged));
    let mut conflicts: Vec<(ManagedEntry, Path)> = Vec::new();
    for e in managed.iter().filter(|e| !e.same_id(manager, Op::Apply, subresource)) {
        for p in e.fields.intersection(&applied_changes) {
            conflicts.push((e.clone(), p.clone()));
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflict_error(&conflicts));
    }
    let mut entries: Vec<ManagedEntry> = Vec::new();
    let mut applier_seen = false;
    for e in managed {
        let mut e = e.clone();
        if e.same_id(manager, Op::Apply, subresource) {
            applier_seen = true;
            e.fields = new_set.clone();
            if !changed.is_empty() || !removed.is_empty() || e.fields != last_set {
                e.time = now.to_string();
            }
        } else {
            e.fields = e.fields.difference(&changed).cloned().collect();
        }
        e.fields = e.fields.difference(&removed).cloned().collect();
        entries.push(e);
    }
    if !applier_seen {
        entries.insert(
            0,
            ManagedEntry {
                manager: manager.to_string(),
                operation: Op::Apply,
                subresource: subresource.to_string(),
                api_version: rd.api_version(),
                time: now.to_string(),
                fields: new_set.difference(&removed).cloned().collect(),
            },
        );
    }
    entries.retain(|e| !e.fields.is_empty());
    Ok((merged, entries))
}

/// Ownership after a non-apply write (create, update, merge/json patch): the writer takes the
/// fields it changed, from everyone else.
pub fn track_update(
    rd: &ResourceDef,
    old: Option<&Value>,
    new: &Value,
    managed: &[ManagedEntry],
    manager: &str,
    subresource: &str,
    now: &str,
) -> Vec<ManagedEntry> {
    let (changed, removed) = diff(rd, old, Some(new));
    let mut entries: Vec<ManagedEntry> = Vec::new();
    let mut seen = false;
    for e in managed {
        let mut e = e.clone();
        if e.same_id(manager, Op::Update, subresource) {
            seen = true;
            e.fields.extend(changed.iter().cloned());
            if !changed.is_empty() {
                e.time = now.to_string();
            }
        } else {
            e.fields = e.fields.difference(&changed).cloned().collect();
        }
        e.fields = e.fields.difference(&removed).cloned().collect();
        entries.push(e);
    }
    if !seen && !changed.is_empty() {
        entries.push(ManagedEntry {
            manager: manager.to_string(),
            operation: Op::Update,
            subresource: subresource.to_string(),
            api_version: rd.api_version(),
            time: now.to_string(),
            fields: changed.difference(&removed).cloned().collect(),
        });
    }
    entries.retain(|e| !e.fields.is_empty());
    entries
}

fn conflict_error(conflicts: &[(ManagedEntry, Path)]) -> ApiError {
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|(e, p)| {
            json!({
                "reason": "FieldManagerConflict",
                "message": format!("conflict with {}", e.describe()),
                "field": path_string(p),
            })
        })
        .collect();
    let message = if let [(e, p)] = conflicts {
        format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            e.describe(),
            path_string(p)
        )
    } else {
        let mut managers: Vec<String> = conflicts.iter().map(|(e, _)| e.describe()).collect();
        managers.sort();
        managers.dedup();
        let mut lines = Vec::new();
        for m in &managers {
            lines.push(format!("conflicts with {m}"));
            for (e, p) in conflicts.iter().filter(|(e, _)| &e.describe() == m) {
                let _ = e;
                lines.push(format!("- {}", path_string(p)));
            }
        }
        format!("Apply failed with {} conflicts: {}", conflicts.len(), lines.join("\n"))
    };
    ApiError::apply_conflict(message, causes)
}

/// `metadata.managedFields` JSON for the entries.
pub fn render(entries: &[ManagedEntry]) -> Value {
    Value::Array(
        entries
            .iter()
            .map(|e| {
                let mut v = json!({
                    "manager": e.manager,
                    "operation": e.operation.as_str(),
                    "apiVersion": e.api_version,
                    "time": e.time,
                    "fieldsType": "FieldsV1",
                    "fieldsV1": encode(&e.fields),
                });
                if !e.subresource.is_empty()
                    && let Some(o) = v.as_object_mut()
                {
                    o.insert("subresource".into(), Value::String(e.subresource.clone()));
                }
                v
            })
            .collect(),
    )
}

fn pe_key(pe: &Pe) -> String {
    match pe {
        Pe::Field(f) => format!("f:{f}"),
        Pe::Key(k) => format!("k:{k}"),
        Pe::Val(v) => format!("v:{v}"),
    }
}

fn insert_path(node: &mut Map<String, Value>, path: &[Pe]) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    let entry = node.entry(pe_key(first)).or_insert_with(|| Value::Object(Map::new()));
    if !entry.is_object() {
        *entry = Value::Object(Map::new());
    }
    if let Some(child) = entry.as_object_mut() {
        if rest.is_empty() {
            if matches!(first, Pe::Key(_)) {
                child.insert(".".into(), Value::Object(Map::new()));
            }
        } else {
            insert_path(child, rest);
        }
    }
}

/// FieldsV1 encoding of a field set.
pub fn encode(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in set {
        insert_path(&mut root, path);
    }
    Value::Object(root)
}

/// Parses FieldsV1; `None` when it is not in the format [`encode`] produces.
pub fn decode(v: &Value) -> Option<FieldSet> {
    fn walk(v: &Value, path: &mut Path, out: &mut FieldSet) -> Option<()> {
        let m = v.as_object()?;
        if m.is_empty() && !path.is_empty() {
            out.insert(path.clone());
        }
        for (k, c) in m {
            if k == "." {
                out.insert(path.clone());
                continue;
            }
            let pe = if let Some(f) = k.strip_prefix("f:") {
                Pe::Field(f.to_string())
            } else if let Some(j) = k.strip_prefix("k:") {
                Pe::Key(canonical(&serde_json::from_str(j).ok()?))
            } else if let Some(j) = k.strip_prefix("v:") {
                Pe::Val(canonical(&serde_json::from_str(j).ok()?))
            } else {
                return None;
            };
            path.push(pe);
            walk(c, path, out)?;
            path.pop();
        }
        Some(())
    }
    let mut out = FieldSet::new();
    walk(v, &mut Vec::new(), &mut out)?;
    Some(out)
}

/// Parses a client-supplied `metadata.managedFields` list.
pub fn parse_entries(v: &Value) -> Option<Vec<ManagedEntry>> {
    let mut out = Vec::new();
    for e in v.as_array()? {
        let op = match e.get("operation").and_then(Value::as_str)? {
            "Apply" => Op::Apply,
            "Update" => Op::Update,
            _ => return None,
        };
        out.push(ManagedEntry {
            manager: e.get("manager").and_then(Value::as_str)?.to_string(),
            operation: op,
            subresource: e.get("subresource").and_then(Value::as_str).unwrap_or("").to_string(),
            api_version: e.get("apiVersion").and_then(Value::as_str).unwrap_or("").to_string(),
            time: e.get("time").and_then(Value::as_str).unwrap_or("").to_string(),
            fields: decode(e.get("fieldsV1")?)?,
        });
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::lookup;

    fn claims() -> &'static ResourceDef {
        lookup("resource.k8s.io/v1", "ResourceClaim").unwrap_or_else(|| panic!("claims"))
    }

    #[test]
    fn encode_decode_roundtrip() {
        let rd = claims();
        let v = json!({"status": {"devices": [{"driver": "d", "pool": "p", "device": "x", "data": {"a": 1}}]},
                       "metadata": {"labels": {"a": "b"}, "finalizers": ["f1"], "name": "n"}});
        let set = field_set(rd, &v);
        assert!(set.contains(&vec![
            Pe::Field("metadata".into()),
            Pe::Field("labels".into()),
            Pe::Field("a".into())
        ]));
        assert!(!set.contains(&vec![Pe::Field("metadata".into()), Pe::Field("name".into())]));
        let enc = encode(&set);
        assert_eq!(decode(&enc), Some(set));
        let key = enc["f:status"]["f:devices"]
            .as_object()
            .and_then(|m| m.keys().next().cloned());
        assert_eq!(
            key.as_deref(),
            Some("k:{\"device\":\"x\",\"driver\":\"d\",\"pool\":\"p\"}")
        );
    }

    #[test]
    fn path_strings() {
        let p = vec![
            Pe::Field("status".into()),
            Pe::Field("devices".into()),
            Pe::Key("{\"device\":\"x\",\"driver\":\"d\",\"pool\":\"p\"}".into()),
            Pe::Field("data".into()),
        ];
        assert_eq!(
            path_string(&p),
            ".status.devices[device=\"x\",driver=\"d\",pool=\"p\"].data"
        );
    }
}
