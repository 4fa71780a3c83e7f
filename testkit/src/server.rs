//! The HTTP/1.1 front end: routing, body decoding, watch streaming and the request log.

use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use crate::RequestRecord;
use crate::resources::{self, ResourceDef};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::status::ApiError;
use crate::store::{EventType, PatchType, Query, State, Sub, WatchFilter, WriteOpts};

pub type Body = BoxBody<Bytes, Infallible>;

/// How often idle watches that allow bookmarks get a BOOKMARK event.
const BOOKMARK_INTERVAL: Duration = Duration::from_secs(1);

/// Largest request body accepted (the apiserver's default limit).
const MAX_BODY: usize = 3 * 1024 * 1024;

/// State shared by the server tasks and the `FakeApiServer` handle.
pub struct Shared {
    state: Mutex<State>,
    pub shutdown: watch::Sender<bool>,
}

impl Shared {
    pub fn new() -> Self {
        Self {
            state: Mutex::new(State::new()),
            shutdown: watch::channel(false).0,
        }
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn json_response(code: u16, v: &Value) -> Response<Body> {
    let bytes = serde_json::to_vec(v).unwrap_or_default();
    let mut resp = Response::new(Full::new(Bytes::from(bytes)).boxed());
    *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

fn error_response(e: &ApiError) -> Response<Body> {
    json_response(e.code, &e.to_status())
}

fn media_type(content_type: &Option<String>) -> String {
    content_type
        .as_deref()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

fn parse_body(bytes: &[u8], media: &str) -> Result<Value, ApiError> {
    let yaml = media == "application/yaml" || media == "application/apply-patch+yaml";
    if yaml {
        serde_yaml::from_slice::<Value>(bytes).map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))
    } else {
        serde_json::from_slice::<Value>(bytes).map_err(|e| ApiError::bad_request(format!("error decoding JSON: {e}")))
    }
}

/// Handles one request; never fails (errors become Status responses).
pub async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let raw_query = req.uri().query().unwrap_or("").to_string();
    let query = Query::parse(&raw_query);
    let content_type = req
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let user_agent = req
        .headers()
        .get(hyper::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let idx = {
        let mut st = shared.state();
        st.log.push(RequestRecord {
            method: method.to_string(),
            path: path.clone(),
            query: raw_query.clone(),
            content_type: content_type.clone(),
            field_manager: query.get("fieldManager").map(str::to_string),
            status: 0,
        });
        st.log.len() - 1
    };
    let resp = dispatch(&shared, req, &method, &path, &query, &content_type, &user_agent).await;
    let code = resp.status().as_u16();
    if let Some(r) = shared.state().log.get_mut(idx) {
        r.status = code;
    }
    Ok(resp)
}

async fn dispatch(
    shared: &Arc<Shared>,
    req: Request<Incoming>,
    method: &Method,
    path: &str,
    query: &Query,
    content_type: &Option<String>,
    user_agent: &str,
) -> Response<Body> {
    let body = if matches!(*method, Method::POST | Method::PUT | Method::PATCH | Method::DELETE) {
        match req.into_body().collect().await {
            Ok(b) => {
                let b = b.to_bytes();
                if b.len() > MAX_BODY {
                    return error_response(&ApiError::too_large("the request body is too large"));
                }
                b
            }
            Err(e) => return error_response(&ApiError::bad_request(format!("error reading body: {e}"))),
        }
    } else {
        Bytes::new()
    };
    match route(shared, method, path, query, content_type, user_agent, &body) {
        Ok(Routed::Response(code, v)) => json_response(code, &v),
        Ok(Routed::Watch(filter)) => start_watch(shared, filter, query),
        Err(e) => error_response(&e),
    }
}

enum Routed {
    Response(u16, Value),
    Watch(WatchFilter),
}

fn discovery(group: &str, version: &str) -> Option<Value> {
    let list: Vec<Value> = resources::RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .flat_map(|r| {
            let verbs = json!(["create", "delete", "get", "list", "patch", "update", "watch"]);
            let mut v = vec![json!({
                "name": r.plural, "singularName": r.kind_name, "namespaced": r.namespaced,
                "kind": r.kind, "verbs": verbs,
            })];
            if r.has_status {
                v.push(json!({
                    "name": format!("{}/status", r.plural), "singularName": "", "namespaced": r.namespaced,
                    "kind": r.kind, "verbs": ["get", "patch", "update"],
                }));
            }
            v
        })
        .collect();
    if list.is_empty() {
        return None;
    }
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": format!("{group}/{version}"), "resources": list}),
    )
}

fn write_opts(query: &Query, user_agent: &str) -> WriteOpts {
    let manager = match query.get("fieldManager").filter(|m| !m.is_empty()) {
        Some(m) => m.to_string(),
        None => {
            // managerOrUserAgent: the user agent up to the first '/'.
            let ua = user_agent.split('/').next().unwrap_or("").to_string();
            if ua.is_empty() { "unknown".to_string() } else { ua }
        }
    };
    WriteOpts {
        manager,
        dry_run: query.get("dryRun") == Some("All"),
        force: query.flag("force"),
    }
}

fn require_media(media: &str, accepted: &[&str]) -> Result<(), ApiError> {
    if media.is_empty() || accepted.contains(&media) {
        Ok(())
    } else {
        Err(ApiError::unsupported_media_type(accepted))
    }
}

/// `ValidatePatchOptions`.
fn validate_patch_options(query: &Query, ptype: PatchType) -> Result<(), ApiError> {
    use crate::field::FieldError;
    let mut errs = Vec::new();
    let manager = query.get("fieldManager").unwrap_or("");
    if ptype == PatchType::Apply {
        if manager.is_empty() {
            errs.push(FieldError::required("fieldManager", "is required for apply patch"));
        }
    } else if query.get("force").is_some() {
        errs.push(FieldError::forbidden(
            "force",
            "may not be specified for non-apply patch",
        ));
    }
    if manager.len() > 128 {
        errs.push(FieldError::too_long("fieldManager", 128));
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid("meta.k8s.io", "PatchOptions", "", &errs))
    }
}

fn route(
    shared: &Arc<Shared>,
    method: &Method,
    path: &str,
    query: &Query,
    content_type: &Option<String>,
    user_agent: &str,
    body: &Bytes,
) -> Result<Routed, ApiError> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segs.as_slice() {
        ["version"] => {
            return Ok(Routed::Response(
                200,
                json!({"major": "1", "minor": "34", "gitVersion": "v1.34.0-multinic-testkit", "platform": "linux/amd64"}),
            ));
        }
        ["apis"] => {
            let groups: Vec<Value> = ["resource.k8s.io/v1", "multinic.dev/v1alpha1"]
                .iter()
                .map(|gv| {
                    let (g, v) = gv.split_once('/').unwrap_or((gv, ""));
                    json!({"name": g, "versions": [{"groupVersion": gv, "version": v}],
                           "preferredVersion": {"groupVersion": gv, "version": v}})
                })
                .collect();
            return Ok(Routed::Response(
                200,
                json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
            ));
        }
        ["apis", g, v] => {
            return if *method == Method::GET {
                discovery(g, v)
                    .map(|d| Routed::Response(200, d))
                    .ok_or_else(ApiError::path_not_found)
            } else {
                Err(ApiError::method_not_allowed())
            };
        }
        _ => {}
    }
    let (rd, ns, rest, namespaced_path): (&'static ResourceDef, String, &[&str], bool) = match segs.as_slice() {
        ["apis", g, v, "namespaces", ns, plural, rest @ ..] => {
            let rd = resources::by_path(g, v, plural).ok_or_else(ApiError::path_not_found)?;
            if !rd.namespaced {
                return Err(ApiError::path_not_found());
            }
            (rd, ns.to_string(), rest, true)
        }
        ["apis", g, v, plural, rest @ ..] => {
            let rd = resources::by_path(g, v, plural).ok_or_else(ApiError::path_not_found)?;
            if rd.namespaced && !rest.is_empty() {
                return Err(ApiError::path_not_found());
            }
            (rd, String::new(), rest, false)
        }
        _ => return Err(ApiError::path_not_found()),
    };
    let media = media_type(content_type);
    let opts = write_opts(query, user_agent);
    let ns_filter = if rd.namespaced && namespaced_path {
        Some(ns.as_str())
    } else {
        None
    };
    match rest {
        [] => match *method {
            Method::GET if query.flag("watch") => {
                let labels = query
                    .get("labelSelector")
                    .filter(|s| !s.is_empty())
                    .map(LabelSelector::parse)
                    .transpose()?;
                let fields = query
                    .get("fieldSelector")
                    .filter(|s| !s.is_empty())
                    .map(|f| FieldSelector::parse(f, rd))
                    .transpose()?;
                Ok(Routed::Watch(WatchFilter {
                    rd,
                    namespace: ns_filter.map(str::to_string),
                    labels,
                    fields,
                }))
            }
            Method::GET => Ok(Routed::Response(200, shared.state().list(rd, ns_filter, query)?)),
            Method::POST if rd.namespaced == namespaced_path => {
                require_media(&media, &["application/json", "application/yaml"])?;
                let v = parse_body(body, &media)?;
                Ok(Routed::Response(201, shared.state().create(rd, &ns, v, None, &opts)?))
            }
            _ => Err(ApiError::method_not_allowed()),
        },
        [name] | [name, "status"] => {
            let sub = if rest.len() == 2 {
                if !rd.has_status {
                    return Err(ApiError::path_not_found());
                }
                Sub::Status
            } else {
                Sub::Main
            };
            match *method {
                Method::GET => Ok(Routed::Response(200, shared.state().get(rd, &ns, name)?)),
                Method::PUT => {
                    require_media(&media, &["application/json", "application/yaml"])?;
                    let v = parse_body(body, &media)?;
                    Ok(Routed::Response(
                        200,
                        shared.state().update(rd, &ns, name, sub, v, &opts)?,
                    ))
                }
                Method::PATCH => {
                    let ptype = match media.as_str() {
                        "application/apply-patch+yaml" => PatchType::Apply,
                        "application/merge-patch+json" => PatchType::Merge,
                        "application/json-patch+json" => PatchType::Json,
                        _ => {
                            return Err(ApiError::unsupported_media_type(&[
                                "application/json-patch+json",
                                "application/merge-patch+json",
                                "application/apply-patch+yaml",
                            ]));
                        }
                    };
                    validate_patch_options(query, ptype)?;
                    let v = parse_body(body, &media)?;
                    let (out, created) = shared.state().patch(rd, &ns, name, sub, ptype, v, &opts)?;
                    Ok(Routed::Response(if created { 201 } else { 200 }, out))
                }
                Method::DELETE if sub == Sub::Main => {
                    let options = if body.is_empty() {
                        Value::Null
                    } else {
                        parse_body(body, "application/json")?
                    };
                    let dry_run = opts.dry_run
                        || options
                            .get("dryRun")
                            .and_then(Value::as_array)
                            .is_some_and(|d| d.iter().any(|x| x == "All"));
                    let (v, code) = shared.state().delete(rd, &ns, name, &options, dry_run)?;
                    Ok(Routed::Response(code, v))
                }
                _ => Err(ApiError::method_not_allowed()),
            }
        }
        _ => Err(ApiError::path_not_found()),
    }
}

fn event_line(ty: &str, obj: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": ty, "object": obj})).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

fn bookmark(rd: &ResourceDef, rv: u64) -> Bytes {
    event_line(
        "BOOKMARK",
        &json!({"kind": rd.kind, "apiVersion": rd.api_version(), "metadata": {"resourceVersion": rv.to_string()}}),
    )
}

fn start_watch(shared: &Arc<Shared>, filter: WatchFilter, query: &Query) -> Response<Body> {
    let start = match shared.state().watch(&filter, query) {
        Ok(s) => s,
        Err(e) => return error_response(&e),
    };
    let allow_bookmarks = query.flag("allowWatchBookmarks");
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1800));
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let mut shutdown = shared.shutdown.subscribe();
    tokio::spawn(async move {
        let mut start = start;
        let rd = filter.rd;
        if let Some(err) = start.error.take() {
            let _ = tx.send(event_line("ERROR", &err.to_status())).await;
            return;
        }
        for obj in &start.initial {
            if tx.send(event_line(EventType::Added.as_str(), obj)).await.is_err() {
                return;
            }
        }
        let mut last_rv = start.start_rv;
        for ev in &start.history {
            last_rv = ev.rv;
            if let Some((ty, obj)) = filter.event_for(ev)
                && tx.send(event_line(ty.as_str(), &obj)).await.is_err()
            {
                return;
            }
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut ticker = tokio::time::interval(BOOKMARK_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            tokio::select! {
                ev = start.rx.recv() => match ev {
                    Ok(ev) => {
                        last_rv = ev.rv;
                        if let Some((ty, obj)) = filter.event_for(&ev)
                            && tx.send(event_line(ty.as_str(), &obj)).await.is_err()
                        {
                            return;
                        }
                    }
                    // Lagged or closed: end the watch; the client resumes from its last resourceVersion.
                    Err(_) => return,
                },
                _ = ticker.tick(), if allow_bookmarks => {
                    if tx.send(bookmark(rd, last_rv)).await.is_err() {
                        return;
                    }
                }
                _ = &mut deadline => return,
                r = shutdown.changed() => if r.is_err() || *shutdown.borrow() { return },
                _ = tx.closed() => return,
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) })
        .map(|b| Ok::<_, Infallible>(Frame::data(b)));
    let mut resp = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}
