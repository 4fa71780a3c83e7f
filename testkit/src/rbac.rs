//! RBAC checks for tests: what the test API server's request log needs, and what a deploy YAML
//! grants a service account.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::RequestRecord;

/// (apiGroup, resource[/subresource], verb, resourceName); the name is empty for a rule that
/// names no resources.
pub type Permission = (String, String, String, String);

/// The synthetic subresource that Kubernetes 1.36 checks, besides `resourceclaims/status`, on a
/// write of `status.devices` (KEP-5304, kubernetes PR #134947; the DRA hardening guide on
/// kubernetes.io): verb `associated-node:<verb>` for a node-local writer, resource name = the
/// driver whose entries change.
const CLAIM_DRIVER_SUBRESOURCE: &str = "resourceclaims/driver";

/// The permissions the API server's authorizer checks for the request.
///
/// A write of `resourceclaims/status` also needs [`CLAIM_DRIVER_SUBRESOURCE`] with
/// `associated-node:<verb>` for the driver whose entries it changes. Our drivers write only
/// their own entries, with their driver name as the server-side-apply field manager
/// (`multinic_api::names::FIELD_MANAGER`), so the resource name is taken from the request's
/// `fieldManager`.
pub fn permissions_of(r: &RequestRecord) -> Vec<Permission> {
    let parts: Vec<&str> = r.path.trim_matches('/').split('/').collect();
    let (group, rest) = match parts.as_slice() {
        ["api", _version, rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => panic!("not a resource request: {} {}", r.method, r.path),
    };
    let rest = match rest {
        ["namespaces", _ns, rest @ ..] if !rest.is_empty() => rest,
        rest => rest,
    };
    let (resource, named) = match rest {
        [resource] => (resource.to_string(), false),
        [resource, _name] => (resource.to_string(), true),
        [resource, _name, sub] => (format!("{resource}/{sub}"), true),
        _ => panic!("unexpected path {}", r.path),
    };
    let watch = r.has_query("watch", "true") || r.has_query("watch", "1");
    let mut verbs = match (r.method.as_str(), named) {
        ("GET", true) if watch => vec!["watch"],
        ("GET", true) => vec!["get"],
        ("GET", false) if watch => vec!["watch"],
        ("GET", false) => vec!["list"],
        ("POST", _) => vec!["create"],
        ("PUT", _) => vec!["update"],
        ("PATCH", _) => vec!["patch"],
        ("DELETE", true) => vec!["delete"],
        ("DELETE", false) => vec!["deletecollection"],
        (m, _) => panic!("unexpected method {m} {}", r.path),
    };
    // Server-side apply of an object that does not exist yet is also authorized as `create`.
    let apply = r
        .content_type
        .as_deref()
        .is_some_and(|c| c.starts_with("application/apply-patch"));
    if r.method == "PATCH" && apply && r.status == 201 {
        verbs.push("create");
    }
    let mut out: Vec<Permission> = verbs
        .iter()
        .map(|v| (group.to_string(), resource.clone(), v.to_string(), String::new()))
        .collect();
    if group == "resource.k8s.io" && resource == "resourceclaims/status" {
        for v in verbs.iter().filter(|v| ["patch", "update"].contains(v)) {
            out.push((
                group.to_string(),
                CLAIM_DRIVER_SUBRESOURCE.to_string(),
                format!("associated-node:{v}"),
                r.field_manager.clone().unwrap_or_default(),
            ));
        }
    }
    out
}

/// Every permission the ClusterRoles and Roles bound to `service_account` grant in the
/// multi-document RBAC YAML, one per listed resource name (an empty name where the rule lists
/// none). Panics on wildcards and nonResourceURLs, which these checks do not model. Returns
/// (cluster-wide, namespaced).
pub fn granted_to(yaml: &str, service_account: &str) -> (BTreeSet<Permission>, BTreeSet<Permission>) {
    let docs: Vec<Value> = serde_yaml::Deserializer::from_str(yaml)
        .map(|d| serde::Deserialize::deserialize(d).unwrap_or_else(|e| panic!("RBAC YAML: {e}")))
        .collect();
    let bound = |binding_kind: &str, role_kind: &str| -> BTreeSet<Permission> {
        let mut out = BTreeSet::new();
        for binding in docs.iter().filter(|d| d["kind"] == binding_kind) {
            let subjects = binding["subjects"].as_array().cloned().unwrap_or_default();
            if !subjects
                .iter()
                .any(|s| s["kind"] == "ServiceAccount" && s["name"] == service_account)
            {
                continue;
            }
            let role_name = &binding["roleRef"]["name"];
            let role = docs
                .iter()
                .find(|d| d["kind"] == role_kind && &d["metadata"]["name"] == role_name)
                .unwrap_or_else(|| panic!("{binding_kind} refers to a missing {role_kind} {role_name}"));
            out.extend(rules(role));
        }
        out
    };
    (bound("ClusterRoleBinding", "ClusterRole"), bound("RoleBinding", "Role"))
}

fn rules(role: &Value) -> BTreeSet<Permission> {
    let strings = |v: &Value, key: &str| -> Vec<String> {
        v[key]
            .as_array()
            .unwrap_or_else(|| panic!("rule without {key}: {v}"))
            .iter()
            .map(|s| s.as_str().unwrap_or_default().to_string())
            .collect()
    };
    let mut granted = BTreeSet::new();
    for rule in role["rules"].as_array().into_iter().flatten() {
        assert!(rule.get("nonResourceURLs").is_none());
        let names = match rule.get("resourceNames") {
            Some(_) => strings(rule, "resourceNames"),
            None => vec![String::new()],
        };
        for group in strings(rule, "apiGroups") {
            for resource in strings(rule, "resources") {
                for verb in strings(rule, "verbs") {
                    assert!(
                        ![&group, &resource, &verb].contains(&&"*".to_string()),
                        "wildcard in {rule}"
                    );
                    for name in &names {
                        granted.insert((group.clone(), resource.clone(), verb.clone(), name.clone()));
                    }
                }
            }
        }
    }
    granted
}
