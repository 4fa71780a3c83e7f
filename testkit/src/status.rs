//! `kind: Status` error bodies shaped like the ones `k8s.io/apimachinery/pkg/api/errors` builds.

use serde_json::{Value, json};

use crate::field::FieldError;
use crate::resources::ResourceDef;

/// An API error that is sent to the client as a `Status` object.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status code (also `Status.code`).
    pub code: u16,
    /// `Status.reason`, e.g. `NotFound`.
    pub reason: String,
    /// `Status.message`.
    pub message: String,
    /// `Status.details`, if any.
    pub details: Option<Value>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.code, self.reason, self.message)
    }
}

impl ApiError {
    fn new(code: u16, reason: &str, message: impl Into<String>, details: Option<Value>) -> Self {
        Self {
            code,
            reason: reason.to_string(),
            message: message.into(),
            details,
        }
    }

    /// The JSON `Status` body.
    pub fn to_status(&self) -> Value {
        let mut v = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let (Some(details), Some(obj)) = (&self.details, v.as_object_mut()) {
            obj.insert("details".into(), details.clone());
        }
        v
    }

    fn resource_details(rd: &ResourceDef, name: &str) -> Value {
        json!({"name": name, "group": rd.group, "kind": rd.plural})
    }

    /// 404 `<plural>.<group> "<name>" not found`.
    pub fn not_found(rd: &ResourceDef, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{}\" not found", rd.qualified_resource(), name),
            Some(Self::resource_details(rd, name)),
        )
    }

    /// 404 for a path that names no known resource.
    pub fn path_not_found() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
            Some(json!({})),
        )
    }

    /// 409 `<plural>.<group> "<name>" already exists`.
    pub fn already_exists(rd: &ResourceDef, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{}\" already exists", rd.qualified_resource(), name),
            Some(Self::resource_details(rd, name)),
        )
    }

    /// 409 `Operation cannot be fulfilled on <plural>.<group> "<name>": <msg>`.
    pub fn conflict(rd: &ResourceDef, name: &str, msg: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{}\": {}",
                rd.qualified_resource(),
                name,
                msg
            ),
            Some(Self::resource_details(rd, name)),
        )
    }

    /// 409 for the optimistic-concurrency check (`OptimisticLockErrorMsg`).
    pub fn optimistic_lock(rd: &ResourceDef, name: &str) -> Self {
        Self::conflict(
            rd,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// 409 for a failed storage precondition, the way the etcd3 store reports it
    /// (`storage.NewInvalidObjError`, turned into a Conflict by `InterpretUpdateError`/`InterpretDeleteError`).
    pub fn precondition_failed(rd: &ResourceDef, namespace: &str, name: &str, detail: &str) -> Self {
        let key = if namespace.is_empty() {
            format!("/registry/{}/{}/{}", rd.group, rd.plural, name)
        } else {
            format!("/registry/{}/{}/{}/{}", rd.group, rd.plural, namespace, name)
        };
        Self::conflict(
            rd,
            name,
            &format!(
                "StorageError: invalid object, Code: 4, Key: {key}, ResourceVersion: 0, AdditionalErrorMsg: {detail}"
            ),
        )
    }

    /// 409 server-side apply conflict (`errors.NewApplyConflict`).
    pub fn apply_conflict(message: String, causes: Vec<Value>) -> Self {
        Self::new(409, "Conflict", message, Some(json!({ "causes": causes })))
    }

    /// 422 `<Kind>.<group> "<name>" is invalid: <errors>` (`errors.NewInvalid`).
    pub fn invalid(group: &str, kind: &str, name: &str, errs: &[FieldError]) -> Self {
        let qualified_kind = if group.is_empty() {
            kind.to_string()
        } else {
            format!("{kind}.{group}")
        };
        let causes: Vec<Value> = errs
            .iter()
            .map(|e| json!({"reason": e.kind.cause_type(), "message": e.body(), "field": e.field}))
            .collect();
        // ToAggregate drops duplicate messages.
        let mut msgs: Vec<String> = Vec::new();
        for e in errs {
            let m = e.message();
            if !msgs.contains(&m) {
                msgs.push(m);
            }
        }
        let message = match msgs.len() {
            0 => format!("{qualified_kind} \"{name}\" is invalid"),
            1 => format!("{qualified_kind} \"{name}\" is invalid: {}", msgs[0]),
            _ => format!("{qualified_kind} \"{name}\" is invalid: [{}]", msgs.join(", ")),
        };
        Self::new(
            422,
            "Invalid",
            message,
            Some(json!({"name": name, "group": group, "kind": kind, "causes": causes})),
        )
    }

    /// 422 for an object of a resource.
    pub fn invalid_object(rd: &ResourceDef, name: &str, errs: &[FieldError]) -> Self {
        Self::invalid(rd.group, rd.kind, name, errs)
    }

    /// 400 BadRequest.
    pub fn bad_request(msg: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", msg, None)
    }

    /// 422 for a JSON patch that does not apply (a failed `test`, a missing path), as
    /// kube-apiserver answers it.
    pub fn patch_failed(msg: impl Into<String>) -> Self {
        Self::new(422, "Invalid", msg, None)
    }

    /// 405 MethodNotAllowed.
    pub fn method_not_allowed() -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
            None,
        )
    }

    /// 413 RequestEntityTooLarge.
    pub fn too_large(msg: impl Into<String>) -> Self {
        Self::new(413, "RequestEntityTooLarge", msg, None)
    }

    /// 415 UnsupportedMediaType (`negotiation.NewUnsupportedMediaTypeError`).
    pub fn unsupported_media_type(accepted: &[&str]) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: {}",
                accepted.join(", ")
            ),
            None,
        )
    }

    /// 410 Expired (`errors.NewResourceExpired`).
    pub fn expired(msg: impl Into<String>) -> Self {
        Self::new(410, "Expired", msg, None)
    }

    /// 500 InternalError.
    pub fn internal(msg: impl Into<String>) -> Self {
        Self::new(
            500,
            "InternalError",
            format!("Internal error occurred: {}", msg.into()),
            None,
        )
    }
}
