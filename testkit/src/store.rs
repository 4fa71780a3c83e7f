//! The in-memory object store and the API operations on it.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::RequestRecord;
use crate::field::FieldError;
use crate::resources::{Kind, ResourceDef};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::ssa::{self, ManagedEntry};
use crate::status::ApiError;
use crate::strategy::{self, meta, meta_str, set_meta};
use crate::util;
use crate::validate;

/// How many watch events are kept for resuming watches.
pub const HISTORY_LIMIT: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change, as kept for watches.
#[derive(Debug)]
pub struct EventRec {
    pub rv: u64,
    pub res: &'static ResourceDef,
    pub ty: EventType,
    pub obj: Value,
    pub prev: Option<Value>,
}

/// A stored object: the object without `managedFields`, plus its managed fields.
#[derive(Debug, Clone)]
pub struct Stored {
    pub obj: Value,
    pub managed: Vec<ManagedEntry>,
}

impl Stored {
    /// The object as the API returns it.
    pub fn render(&self) -> Value {
        let mut v = self.obj.clone();
        if !self.managed.is_empty() {
            set_meta(&mut v, "managedFields", Some(ssa::render(&self.managed)));
        }
        v
    }
}

/// The subresource addressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sub {
    Main,
    Status,
}

impl Sub {
    fn name(self) -> &'static str {
        match self {
            Sub::Main => "",
            Sub::Status => "status",
        }
    }
}

/// The PATCH content types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Apply,
    Merge,
    /// RFC 6902 (`application/json-patch+json`).
    Json,
}

type Key = (String, String, String);

fn key(rd: &ResourceDef, ns: &str, name: &str) -> Key {
    (
        rd.qualified_resource(),
        if rd.namespaced { ns.to_string() } else { String::new() },
        name.to_string(),
    )
}

/// Options of a write.
#[derive(Debug, Clone, Default)]
pub struct WriteOpts {
    pub manager: String,
    pub dry_run: bool,
    pub force: bool,
}

/// Parsed query parameters.
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub pairs: Vec<(String, String)>,
}

impl Query {
    pub fn parse(raw: &str) -> Self {
        Self {
            pairs: form_urlencoded::parse(raw.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        }
    }

    pub fn get(&self, k: &str) -> Option<&str> {
        self.pairs.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str())
    }

    pub fn flag(&self, k: &str) -> bool {
        matches!(self.get(k), Some("true") | Some("1"))
    }
}

/// Where a watch starts.
pub struct WatchStart {
    pub initial: Vec<Value>,
    pub history: Vec<Arc<EventRec>>,
    pub rx: broadcast::Receiver<Arc<EventRec>>,
    pub start_rv: u64,
    pub error: Option<ApiError>,
}

/// Selects the events of one watch.
#[derive(Debug, Clone)]
pub struct WatchFilter {
    pub rd: &'static ResourceDef,
    pub namespace: Option<String>,
    pub labels: Option<LabelSelector>,
    pub fields: Option<FieldSelector>,
}

impl WatchFilter {
    fn matches(&self, obj: &Value) -> bool {
        if let Some(ns) = &self.namespace
            && meta_str(obj, "namespace") != ns
        {
            return false;
        }
        self.labels.as_ref().map(|l| l.matches(obj)).unwrap_or(true)
            && self.fields.as_ref().map(|f| f.matches(self.rd, obj)).unwrap_or(true)
    }

    /// The event this watch sees for a change, if any (objects entering or leaving the
    /// selection become ADDED or DELETED).
    pub fn event_for(&self, ev: &EventRec) -> Option<(EventType, Value)> {
        if !std::ptr::eq(ev.res, self.rd) {
            return None;
        }
        let now = self.matches(&ev.obj);
        match ev.ty {
            EventType::Modified => {
                let before = ev.prev.as_ref().map(|p| self.matches(p)).unwrap_or(false);
                match (before, now) {
                    (true, true) => Some((EventType::Modified, ev.obj.clone())),
                    (false, true) => Some((EventType::Added, ev.obj.clone())),
                    (true, false) => Some((EventType::Deleted, ev.obj.clone())),
                    (false, false) => None,
                }
            }
            ty => now.then(|| (ty, ev.obj.clone())),
        }
    }
}

/// The server state.
pub struct State {
    pub rv: u64,
    objects: BTreeMap<Key, Stored>,
    history: VecDeque<Arc<EventRec>>,
    /// Events with a resourceVersion above this are in `history`.
    floor: u64,
    pub log: Vec<RequestRecord>,
    events: broadcast::Sender<Arc<EventRec>>,
}

fn check_body_object(body: &Value) -> Result<(), ApiError> {
    if body.is_object() {
        Ok(())
    } else {
        Err(ApiError::bad_request("the body of the request must be a JSON object"))
    }
}

/// Checks apiVersion/kind, fills them in, and reconciles the namespace with the URL.
fn normalize(rd: &ResourceDef, ns: &str, mut obj: Value) -> Result<Value, ApiError> {
    check_body_object(&obj)?;
    if let Some(av) = obj.get("apiVersion").and_then(Value::as_str)
        && av != rd.api_version()
    {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({av}) does not match the expected API version ({})",
            rd.api_version()
        )));
    }
    if let Some(k) = obj.get("kind").and_then(Value::as_str)
        && k != rd.kind
    {
        return Err(ApiError::bad_request(format!(
            "{} in version \"{}\" cannot be handled as a {}: the kind in the data ({k}) does not match",
            rd.kind, rd.version, rd.kind
        )));
    }
    if let Some(o) = obj.as_object_mut() {
        o.insert("apiVersion".into(), json!(rd.api_version()));
        o.insert("kind".into(), json!(rd.kind));
    }
    let body_ns = meta_str(&obj, "namespace").to_string();
    if rd.namespaced {
        if body_ns.is_empty() {
            set_meta(&mut obj, "namespace", Some(json!(ns)));
        } else if body_ns != ns {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
    } else {
        set_meta(&mut obj, "namespace", None);
    }
    Ok(obj)
}

fn check_name(obj: &mut Value, name: &str) -> Result<(), ApiError> {
    let body_name = meta_str(obj, "name").to_string();
    if body_name.is_empty() {
        set_meta(obj, "name", Some(json!(name)));
    } else if body_name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    Ok(())
}

fn invalid(rd: &ResourceDef, obj: &Value, errs: Vec<FieldError>) -> Result<(), ApiError> {
    if errs.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid_object(rd, meta_str(obj, "name"), &errs))
    }
}

/// A managed-fields list sent by the client in an update, if it differs from the stored one.
fn client_managed(body: &Value, old: &[ManagedEntry]) -> Option<Vec<ManagedEntry>> {
    let mf = meta(body, "managedFields")?;
    if *mf == ssa::render(old) {
        return None;
    }
    ssa::parse_entries(mf)
}

fn same_ignoring_time(a: &[ManagedEntry], b: &[ManagedEntry]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.manager == y.manager
                && x.operation == y.operation
                && x.subresource == y.subresource
                && x.fields == y.fields
        })
}

impl State {
    pub fn new() -> Self {
        let (events, _) = broadcast::channel(4096);
        Self {
            rv: 0,
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            floor: 0,
            log: Vec::new(),
            events,
        }
    }

    fn push_event(&mut self, rd: &'static ResourceDef, ty: EventType, obj: Value, prev: Option<Value>) {
        let ev = Arc::new(EventRec {
            rv: self.rv,
            res: rd,
            ty,
            obj,
            prev,
        });
        self.history.push_back(ev.clone());
        while self.history.len() > HISTORY_LIMIT {
            if let Some(old) = self.history.pop_front() {
                self.floor = old.rv;
            }
        }
        // No receivers is fine.
        let _ = self.events.send(ev);
    }

    /// Stores (or, for `None`, deletes) an object with a new resourceVersion and records the event.
    fn commit(&mut self, rd: &'static ResourceDef, k: Key, new: Option<Stored>, ty: EventType) -> Value {
        self.rv += 1;
        let rv = json!(self.rv.to_string());
        let prev = self.objects.get(&k).map(Stored::render);
        match new {
            Some(mut s) => {
                set_meta(&mut s.obj, "resourceVersion", Some(rv));
                let out = s.render();
                self.objects.insert(k, s);
                self.push_event(rd, ty, out.clone(), prev);
                out
            }
            None => {
                let mut last = match self.objects.remove(&k) {
                    Some(s) => s.render(),
                    None => Value::Null,
                };
                set_meta(&mut last, "resourceVersion", Some(rv));
                self.push_event(rd, EventType::Deleted, last.clone(), prev);
                last
            }
        }
    }

    pub fn stored(&self, rd: &ResourceDef, ns: &str, name: &str) -> Option<&Stored> {
        self.objects.get(&key(rd, ns, name))
    }

    /// GET of one object.
    pub fn get(&self, rd: &ResourceDef, ns: &str, name: &str) -> Result<Value, ApiError> {
        self.stored(rd, ns, name)
            .map(Stored::render)
            .ok_or_else(|| ApiError::not_found(rd, name))
    }

    fn matching(
        &self,
        rd: &ResourceDef,
        ns: Option<&str>,
        labels: &Option<LabelSelector>,
        fields: &Option<FieldSelector>,
    ) -> Vec<(&Key, &Stored)> {
        let qr = rd.qualified_resource();
        self.objects
            .iter()
            .filter(|((r, n, _), s)| {
                *r == qr
                    && ns.map(|ns| ns == n).unwrap_or(true)
                    && labels.as_ref().map(|l| l.matches(&s.obj)).unwrap_or(true)
                    && fields.as_ref().map(|f| f.matches(rd, &s.obj)).unwrap_or(true)
            })
            .collect()
    }

    fn selectors(rd: &ResourceDef, q: &Query) -> Result<(Option<LabelSelector>, Option<FieldSelector>), ApiError> {
        let labels = q
            .get("labelSelector")
            .filter(|s| !s.is_empty())
            .map(LabelSelector::parse)
            .transpose()?;
        let fields = q
            .get("fieldSelector")
            .filter(|s| !s.is_empty())
            .map(|f| FieldSelector::parse(f, rd))
            .transpose()?;
        Ok((labels, fields))
    }

    /// LIST with selectors and `limit`/`continue`.
    pub fn list(&self, rd: &ResourceDef, ns: Option<&str>, q: &Query) -> Result<Value, ApiError> {
        let (labels, fields) = Self::selectors(rd, q)?;
        if q.get("resourceVersionMatch") == Some("Exact")
            && let Some(rv) = q.get("resourceVersion").and_then(|r| r.parse::<u64>().ok())
            && rv != self.rv
        {
            return Err(ApiError::expired(format!(
                "too old resource version: {rv} ({})",
                self.rv
            )));
        }
        let start: Option<(String, String)> = match q.get("continue").filter(|c| !c.is_empty()) {
            None => None,
            Some(token) => Some(decode_continue(token)?),
        };
        let limit = q.get("limit").and_then(|l| l.parse::<usize>().ok()).filter(|l| *l > 0);
        let all = self.matching(rd, ns, &labels, &fields);
        let remaining: Vec<&(&Key, &Stored)> = all
            .iter()
            .filter(|((_, n, name), _)| {
                start
                    .as_ref()
                    .map(|(sn, sname)| (n, name) > (sn, sname))
                    .unwrap_or(true)
            })
            .collect();
        let take = limit.unwrap_or(remaining.len()).min(remaining.len());
        let items: Vec<Value> = remaining[..take].iter().map(|(_, s)| s.render()).collect();
        let mut metadata = json!({"resourceVersion": self.rv.to_string()});
        if take < remaining.len()
            && let Some(((_, n, name), _)) = remaining.get(take.saturating_sub(1))
            && let Some(m) = metadata.as_object_mut()
        {
            m.insert("continue".into(), json!(encode_continue(n, name)));
            m.insert("remainingItemCount".into(), json!(remaining.len() - take));
        }
        Ok(json!({
            "kind": format!("{}List", rd.kind),
            "apiVersion": rd.api_version(),
            "metadata": metadata,
            "items": items,
        }))
    }

    /// Starts a watch: the initial events, the replayed history and the live receiver.
    pub fn watch(&self, filter: &WatchFilter, q: &Query) -> Result<WatchStart, ApiError> {
        let rv_param = q.get("resourceVersion").unwrap_or("");
        // Streaming lists: no client of the fake uses them; tests/api checks upstream's.
        if q.flag("sendInitialEvents") {
            return Err(ApiError::bad_request(
                "the fake API server does not implement sendInitialEvents",
            ));
        }
        let rx = self.events.subscribe();
        let mut start = WatchStart {
            initial: Vec::new(),
            history: Vec::new(),
            rx,
            start_rv: self.rv,
            error: None,
        };
        if rv_param.is_empty() || rv_param == "0" {
            start.initial = self
                .matching(filter.rd, filter.namespace.as_deref(), &filter.labels, &filter.fields)
                .into_iter()
                .map(|(_, s)| s.render())
                .collect();
            return Ok(start);
        }
        let rv: u64 = rv_param
            .parse()
            .map_err(|_| ApiError::bad_request(format!("invalid resource version \"{rv_param}\"")))?;
        if rv < self.floor {
            start.error = Some(ApiError::expired(format!(
                "too old resource version: {rv} ({})",
                self.floor + 1
            )));
            return Ok(start);
        }
        start.history = self.history.iter().filter(|e| e.rv > rv).cloned().collect();
        start.start_rv = rv.max(self.floor);
        Ok(start)
    }

    /// POST (and apply-create).
    pub fn create(
        &mut self,
        rd: &'static ResourceDef,
        ns: &str,
        body: Value,
        managed: Option<Vec<ManagedEntry>>,
        opts: &WriteOpts,
    ) -> Result<Value, ApiError> {
        let mut obj = normalize(rd, ns, body)?;
        if meta_str(&obj, "name").is_empty() {
            let gen_name = meta_str(&obj, "generateName").to_string();
            if !gen_name.is_empty() {
                set_meta(
                    &mut obj,
                    "name",
                    Some(json!(format!("{gen_name}{}", util::name_suffix()))),
                );
            }
        }
        let mut obj = strategy::decode(rd, obj)?;
        strategy::prepare_create(rd, &mut obj);
        strategy::apply_defaults(rd, &mut obj);
        set_meta(&mut obj, "uid", Some(json!(util::new_uid())));
        let now = util::now_rfc3339();
        set_meta(&mut obj, "creationTimestamp", Some(json!(now)));
        set_meta(&mut obj, "resourceVersion", None);
        invalid(rd, &obj, validate::validate_create(rd, &obj))?;
        let name = meta_str(&obj, "name").to_string();
        let k = key(rd, ns, &name);
        if self.objects.contains_key(&k) {
            return Err(ApiError::already_exists(rd, &name));
        }
        let managed = managed.unwrap_or_else(|| ssa::track_update(rd, None, &obj, &[], &opts.manager, "", &now));
        let stored = Stored { obj, managed };
        if opts.dry_run {
            return Ok(stored.render());
        }
        Ok(self.commit(rd, k, Some(stored), EventType::Added))
    }

    /// The common update path (PUT, merge/JSON patch, apply on an existing object).
    #[allow(clippy::too_many_arguments)]
    fn write_existing(
        &mut self,
        rd: &'static ResourceDef,
        ns: &str,
        name: &str,
        sub: Sub,
        new: Value,
        managed: Option<Vec<ManagedEntry>>,
        uid_precondition: bool,
        opts: &WriteOpts,
    ) -> Result<Value, ApiError> {
        let k = key(rd, ns, name);
        let old = self
            .objects
            .get(&k)
            .cloned()
            .ok_or_else(|| ApiError::not_found(rd, name))?;
        let mut new = normalize(rd, ns, new)?;
        check_name(&mut new, name)?;
        let client_mf = client_managed(&new, &old.managed);
        let mut new = strategy::decode(rd, new)?;
        strategy::apply_defaults(rd, &mut new);
        set_meta(&mut new, "managedFields", None);
        let new_uid = meta_str(&new, "uid").to_string();
        let old_uid = meta_str(&old.obj, "uid").to_string();
        if uid_precondition && !new_uid.is_empty() && new_uid != old_uid {
            return Err(ApiError::precondition_failed(
                rd,
                ns,
                name,
                &format!("Precondition failed: UID in precondition: {new_uid}, UID in object meta: {old_uid}"),
            ));
        }
        let new_rv = meta_str(&new, "resourceVersion").to_string();
        if new_rv.is_empty() {
            if !rd.allow_unconditional_update() {
                return Err(ApiError::invalid(
                    rd.group,
                    rd.plural,
                    name,
                    &[FieldError::invalid(
                        "metadata.resourceVersion",
                        crate::field::BadValue::Int(0),
                        "must be specified for an update",
                    )],
                ));
            }
        } else if new_rv != meta_str(&old.obj, "resourceVersion") {
            return Err(ApiError::optimistic_lock(rd, name));
        }
        match sub {
            Sub::Main => strategy::prepare_update(rd, &mut new, &old.obj),
            Sub::Status => strategy::prepare_status_update(rd, &mut new, &old.obj),
        }
        strategy::keep_system_meta(&mut new, &old.obj);
        set_meta(&mut new, "resourceVersion", meta(&old.obj, "resourceVersion").cloned());
        let errs = match sub {
            Sub::Main => validate::validate_update(rd, &new, &old.obj),
            Sub::Status => validate::validate_status_update(rd, &new, &old.obj),
        };
        invalid(rd, &new, errs)?;
        let now = util::now_rfc3339();
        let managed = match (managed, client_mf) {
            (Some(m), _) => m,
            (None, Some(m)) => m,
            (None, None) => ssa::track_update(rd, Some(&old.obj), &new, &old.managed, &opts.manager, sub.name(), &now),
        };
        let deleting = meta(&new, "deletionTimestamp").is_some();
        let no_finalizers = meta(&new, "finalizers")
            .and_then(Value::as_array)
            .map(Vec::is_empty)
            .unwrap_or(true);
        if new == old.obj && same_ignoring_time(&managed, &old.managed) {
            return Ok(old.render());
        }
        let stored = Stored { obj: new, managed };
        if opts.dry_run {
            return Ok(stored.render());
        }
        if deleting && no_finalizers {
            self.objects.insert(k.clone(), stored);
            return Ok(self.commit(rd, k, None, EventType::Deleted));
        }
        Ok(self.commit(rd, k, Some(stored), EventType::Modified))
    }

    /// PUT of the object or its status.
    pub fn update(
        &mut self,
        rd: &'static ResourceDef,
        ns: &str,
        name: &str,
        sub: Sub,
        body: Value,
        opts: &WriteOpts,
    ) -> Result<Value, ApiError> {
        check_body_object(&body)?;
        self.write_existing(rd, ns, name, sub, body, None, true, opts)
    }

    /// PATCH of the object or its status. Returns the object and whether it was created.
    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &mut self,
        rd: &'static ResourceDef,
        ns: &str,
        name: &str,
        sub: Sub,
        ptype: PatchType,
        patch: Value,
        opts: &WriteOpts,
    ) -> Result<(Value, bool), ApiError> {
        match ptype {
            PatchType::Merge => {
                let mut doc = self
                    .stored(rd, ns, name)
                    .map(|s| s.obj.clone())
                    .ok_or_else(|| ApiError::not_found(rd, name))?;
                check_body_object(&patch)?;
                json_patch::merge(&mut doc, &patch);
                let out = self.write_existing(rd, ns, name, sub, doc, None, false, opts)?;
                Ok((out, false))
            }
            PatchType::Json => {
                let mut doc = self
                    .stored(rd, ns, name)
                    .map(|s| s.obj.clone())
                    .ok_or_else(|| ApiError::not_found(rd, name))?;
                let ops: json_patch::Patch = serde_json::from_value(patch)
                    .map_err(|e| ApiError::bad_request(format!("error decoding JSON patch: {e}")))?;
                // kube-apiserver's JSON patch takes a missing member as null in `test`.
                let ops: Vec<json_patch::PatchOperation> = ops
                    .0
                    .into_iter()
                    .filter(|op| {
                        !matches!(op, json_patch::PatchOperation::Test(t)
                            if t.value.is_null() && doc.pointer(t.path.as_str()).is_none())
                    })
                    .collect();
                json_patch::patch(&mut doc, &ops).map_err(|e| ApiError::patch_failed(e.to_string()))?;
                let out = self.write_existing(rd, ns, name, sub, doc, None, false, opts)?;
                Ok((out, false))
            }
            PatchType::Apply => self.apply(rd, ns, name, sub, patch, opts),
        }
    }

    fn apply(
        &mut self,
        rd: &'static ResourceDef,
        ns: &str,
        name: &str,
        sub: Sub,
        cfg: Value,
        opts: &WriteOpts,
    ) -> Result<(Value, bool), ApiError> {
        check_body_object(&cfg)?;
        let av = cfg.get("apiVersion").and_then(Value::as_str).unwrap_or("");
        if av != rd.api_version() {
            return Err(ApiError::bad_request(format!(
                "Incorrect version specified in apply patch. Specified patch version: {av}, expected: {}",
                rd.api_version()
            )));
        }
        let kind = cfg.get("kind").and_then(Value::as_str).unwrap_or("");
        if kind != rd.kind {
            return Err(ApiError::bad_request(format!(
                "Incorrect kind specified in apply patch. Specified patch kind: {kind}, expected: {}",
                rd.kind
            )));
        }
        if meta(&cfg, "managedFields").is_some() {
            return Err(ApiError::bad_request("metadata.managedFields must be nil"));
        }
        let cfg_name = meta_str(&cfg, "name");
        if !cfg_name.is_empty() && cfg_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({cfg_name}) does not match the name on the URL ({name})"
            )));
        }
        let cfg_ns = meta_str(&cfg, "namespace");
        if rd.namespaced && !cfg_ns.is_empty() && cfg_ns != ns {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        ssa::check_config(rd, &cfg)?;
        // Fields the strategy resets are not owned: status on the main resource, everything
        // but status on the status subresource.
        let mut owned_cfg = cfg.clone();
        if let Some(o) = owned_cfg.as_object_mut() {
            match sub {
                Sub::Main if rd.has_status => {
                    o.remove("status");
                }
                Sub::Main => {}
                Sub::Status => {
                    o.retain(|k, _| k == "apiVersion" || k == "kind" || k == "metadata" || k == "status");
                    if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
                        m.retain(|k, _| k == "name" || k == "namespace" || k == "uid" || k == "resourceVersion");
                    }
                }
            }
        }
        let now = util::now_rfc3339();
        let existing = self.stored(rd, ns, name).cloned();
        let mut base = json!({"apiVersion": rd.api_version(), "kind": rd.kind, "metadata": {"name": name}});
        if rd.namespaced {
            set_meta(&mut base, "namespace", Some(json!(ns)));
        }
        match existing {
            None if sub == Sub::Status => Err(ApiError::not_found(rd, name)),
            None => {
                let uid = meta_str(&cfg, "uid");
                if !uid.is_empty() {
                    return Err(ApiError::conflict(
                        rd,
                        name,
                        &format!(
                            "uid mismatch: the provided object specified uid {uid}, and no existing object was found"
                        ),
                    ));
                }
                let (merged, managed) = ssa::apply(
                    rd,
                    None,
                    base,
                    &[],
                    &owned_cfg,
                    &opts.manager,
                    sub.name(),
                    opts.force,
                    &now,
                )?;
                let out = self.create(rd, ns, merged, Some(managed), opts)?;
                Ok((out, true))
            }
            Some(old) => {
                let (merged, managed) = ssa::apply(
                    rd,
                    Some(&old.obj),
                    base,
                    &old.managed,
                    &owned_cfg,
                    &opts.manager,
                    sub.name(),
                    opts.force,
                    &now,
                )?;
                let out = self.write_existing(rd, ns, name, sub, merged, Some(managed), false, opts)?;
                Ok((out, false))
            }
        }
    }

    /// DELETE of one object. Returns the response body and HTTP code.
    pub fn delete(
        &mut self,
        rd: &'static ResourceDef,
        ns: &str,
        name: &str,
        options: &Value,
        dry_run: bool,
    ) -> Result<(Value, u16), ApiError> {
        let k = key(rd, ns, name);
        let old = self
            .objects
            .get(&k)
            .cloned()
            .ok_or_else(|| ApiError::not_found(rd, name))?;
        let uid = meta_str(&old.obj, "uid").to_string();
        // No client of the fake deletes with preconditions; tests/api checks upstream's.
        if options.get("preconditions").is_some_and(|p| !p.is_null()) {
            return Err(ApiError::bad_request(
                "the fake API server does not implement delete preconditions",
            ));
        }
        let has_finalizers = meta(&old.obj, "finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
        if has_finalizers {
            if meta(&old.obj, "deletionTimestamp").is_some() || dry_run {
                return Ok((old.render(), 202));
            }
            let mut s = old.clone();
            set_meta(&mut s.obj, "deletionTimestamp", Some(json!(util::now_rfc3339())));
            set_meta(&mut s.obj, "deletionGracePeriodSeconds", Some(json!(0)));
            if rd.behaviour != Kind::ResourceClaim
                && let Some(g) = meta(&s.obj, "generation").and_then(Value::as_i64)
            {
                set_meta(&mut s.obj, "generation", Some(json!(g + 1)));
            }
            return Ok((self.commit(rd, k, Some(s), EventType::Modified), 202));
        }
        let last = if dry_run {
            old.render()
        } else {
            self.commit(rd, k, None, EventType::Deleted)
        };
        if rd.return_deleted_object() {
            return Ok((last, 200));
        }
        Ok((
            json!({
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": {"name": name, "group": rd.group, "kind": rd.plural, "uid": uid},
            }),
            200,
        ))
    }

    /// Seeds an object directly, like writing to etcd: no strategy and no validation, but system
    /// metadata is assigned. Replaces an existing object of the same name.
    pub fn insert(&mut self, rd: &'static ResourceDef, mut obj: Value) -> Value {
        if let Some(o) = obj.as_object_mut() {
            o.insert("apiVersion".into(), json!(rd.api_version()));
            o.insert("kind".into(), json!(rd.kind));
        }
        let ns = if rd.namespaced {
            let ns = meta_str(&obj, "namespace").to_string();
            if ns.is_empty() {
                set_meta(&mut obj, "namespace", Some(json!("default")));
                "default".to_string()
            } else {
                ns
            }
        } else {
            set_meta(&mut obj, "namespace", None);
            String::new()
        };
        let name = meta_str(&obj, "name").to_string();
        let k = key(rd, &ns, &name);
        let existing = self.objects.get(&k).cloned();
        if meta_str(&obj, "uid").is_empty() {
            let uid = existing
                .as_ref()
                .map(|e| meta_str(&e.obj, "uid").to_string())
                .unwrap_or_else(util::new_uid);
            set_meta(&mut obj, "uid", Some(json!(uid)));
        }
        if meta_str(&obj, "creationTimestamp").is_empty() {
            let ts = existing
                .as_ref()
                .map(|e| meta_str(&e.obj, "creationTimestamp").to_string())
                .unwrap_or_else(util::now_rfc3339);
            set_meta(&mut obj, "creationTimestamp", Some(json!(ts)));
        }
        if rd.behaviour != Kind::ResourceClaim && meta(&obj, "generation").is_none() {
            set_meta(&mut obj, "generation", Some(json!(1)));
        }
        let managed = match meta(&obj, "managedFields").and_then(ssa::parse_entries) {
            Some(m) => m,
            None => existing.as_ref().map(|e| e.managed.clone()).unwrap_or_default(),
        };
        set_meta(&mut obj, "managedFields", None);
        let ty = if existing.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        self.commit(rd, k, Some(Stored { obj, managed }), ty)
    }

    /// Deletes an object directly (no finalizers, no preconditions).
    pub fn remove(&mut self, rd: &'static ResourceDef, ns: &str, name: &str) -> Option<Value> {
        let k = key(rd, ns, name);
        if self.objects.contains_key(&k) {
            Some(self.commit(rd, k, None, EventType::Deleted))
        } else {
            None
        }
    }

    /// All objects of a resource (optionally in one namespace), rendered.
    pub fn all(&self, rd: &ResourceDef, ns: Option<&str>) -> Vec<Value> {
        self.matching(rd, ns, &None, &None)
            .into_iter()
            .map(|(_, s)| s.render())
            .collect()
    }
}

impl Default for State {
    fn default() -> Self {
        Self::new()
    }
}

fn encode_continue(ns: &str, name: &str) -> String {
    format!("{ns}\u{0}{name}").bytes().map(|b| format!("{b:02x}")).collect()
}

fn decode_continue(token: &str) -> Result<(String, String), ApiError> {
    let bad = || ApiError::bad_request(format!("continue key is not valid: {token}"));
    if !token.len().is_multiple_of(2) {
        return Err(bad());
    }
    let bytes: Result<Vec<u8>, _> = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(token.get(i..i + 2).unwrap_or(""), 16))
        .collect();
    let s = String::from_utf8(bytes.map_err(|_| bad())?).map_err(|_| bad())?;
    let (ns, name) = s.split_once('\u{0}').ok_or_else(bad)?;
    Ok((ns.to_string(), name.to_string()))
}
