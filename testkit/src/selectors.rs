//! Label and field selectors (`k8s.io/apimachinery/pkg/labels` and `.../fields` syntax).

use serde_json::Value;

use crate::resources::ResourceDef;
use crate::status::ApiError;

#[derive(Debug, Clone, PartialEq)]
enum LabelOp {
    Eq(String),
    NotEq(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    NotExists,
    Gt(i64),
    Lt(i64),
}

/// A parsed label selector.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector {
    reqs: Vec<(String, LabelOp)>,
}

/// Splits on commas that are not inside parentheses.
fn split_top(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut cur = String::new();
    for c in s.chars() {
        match c {
            '(' => {
                depth += 1;
                cur.push(c);
            }
            ')' => {
                depth -= 1;
                cur.push(c);
            }
            ',' if depth == 0 => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

fn parse_err(req: &str, why: &str) -> ApiError {
    ApiError::bad_request(format!("unable to parse requirement: {req}: {why}"))
}

fn parse_set(req: &str, rest: &str) -> Result<Vec<String>, ApiError> {
    let rest = rest.trim();
    let inner = rest
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| parse_err(req, "found '(', expected: set of values in parentheses"))?;
    Ok(inner
        .split(',')
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect())
}

impl LabelSelector {
    /// Parses `a=b,c!=d,e in (x,y),f notin (z),g,!h`.
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        let mut reqs = Vec::new();
        for raw in split_top(s) {
            let req = raw.trim();
            if req.is_empty() {
                continue;
            }
            if let Some(k) = req.strip_prefix('!') {
                reqs.push((k.trim().to_string(), LabelOp::NotExists));
            } else if let Some((k, v)) = req.split_once("!=") {
                reqs.push((k.trim().to_string(), LabelOp::NotEq(v.trim().to_string())));
            } else if let Some((k, v)) = req.split_once("==") {
                reqs.push((k.trim().to_string(), LabelOp::Eq(v.trim().to_string())));
            } else if let Some((k, v)) = req.split_once('=') {
                reqs.push((k.trim().to_string(), LabelOp::Eq(v.trim().to_string())));
            } else if let Some((k, v)) = req.split_once('>') {
                let n = v
                    .trim()
                    .parse()
                    .map_err(|_| parse_err(req, "for 'Gt', 'Lt' operators, the value must be an integer"))?;
                reqs.push((k.trim().to_string(), LabelOp::Gt(n)));
            } else if let Some((k, v)) = req.split_once('<') {
                let n = v
                    .trim()
                    .parse()
                    .map_err(|_| parse_err(req, "for 'Gt', 'Lt' operators, the value must be an integer"))?;
                reqs.push((k.trim().to_string(), LabelOp::Lt(n)));
            } else if let Some((k, v)) = req.split_once(" notin ") {
                reqs.push((k.trim().to_string(), LabelOp::NotIn(parse_set(req, v)?)));
            } else if let Some((k, v)) = req.split_once(" in ") {
                reqs.push((k.trim().to_string(), LabelOp::In(parse_set(req, v)?)));
            } else if req.contains(char::is_whitespace) || req.contains('(') {
                return Err(parse_err(
                    req,
                    "found unexpected token, expected: in, notin, =, ==, !=, gt, lt",
                ));
            } else {
                reqs.push((req.to_string(), LabelOp::Exists));
            }
        }
        for (k, _) in &reqs {
            if k.is_empty() || !crate::field::is_qualified_name(k).is_empty() {
                return Err(ApiError::bad_request(format!(
                    "unable to parse requirement: invalid label key \"{k}\""
                )));
            }
        }
        Ok(Self { reqs })
    }

    /// Whether an object's labels match.
    pub fn matches(&self, obj: &Value) -> bool {
        let labels = obj.pointer("/metadata/labels").and_then(Value::as_object);
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.reqs.iter().all(|(k, op)| match op {
            LabelOp::Eq(v) => get(k) == Some(v.as_str()),
            LabelOp::NotEq(v) => get(k) != Some(v.as_str()),
            LabelOp::In(vs) => get(k).map(|x| vs.iter().any(|v| v == x)).unwrap_or(false),
            LabelOp::NotIn(vs) => get(k).map(|x| !vs.iter().any(|v| v == x)).unwrap_or(true),
            LabelOp::Exists => get(k).is_some(),
            LabelOp::NotExists => get(k).is_none(),
            LabelOp::Gt(n) => get(k)
                .and_then(|x| x.parse::<i64>().ok())
                .map(|x| x > *n)
                .unwrap_or(false),
            LabelOp::Lt(n) => get(k)
                .and_then(|x| x.parse::<i64>().ok())
                .map(|x| x < *n)
                .unwrap_or(false),
        })
    }
}

/// A parsed field selector.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSelector {
    reqs: Vec<(String, bool, String)>,
}

impl FieldSelector {
    /// Parses `a=b,c!=d` and checks the labels against the resource's selectable fields.
    pub fn parse(s: &str, rd: &ResourceDef) -> Result<Self, ApiError> {
        let mut reqs = Vec::new();
        for raw in s.split(',') {
            let req = raw.trim();
            if req.is_empty() {
                continue;
            }
            let (k, eq, v) = if let Some((k, v)) = req.split_once("!=") {
                (k, false, v)
            } else if let Some((k, v)) = req.split_once("==") {
                (k, true, v)
            } else if let Some((k, v)) = req.split_once('=') {
                (k, true, v)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{s}'; can't understand '{req}'"
                )));
            };
            let k = k.trim().to_string();
            // Reject labels the resource does not support, like upstream's field label conversion.
            rd.field_value(&serde_json::json!({}), &k)?;
            reqs.push((k, eq, v.trim().to_string()));
        }
        Ok(Self { reqs })
    }

    /// Whether an object matches.
    pub fn matches(&self, rd: &ResourceDef, obj: &Value) -> bool {
        self.reqs.iter().all(|(k, eq, v)| {
            let actual = rd.field_value(obj, k).unwrap_or_default();
            (actual == *v) == *eq
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_selectors() {
        let obj = json!({"metadata": {"labels": {"app": "x", "tier": "db"}}});
        let m = |s: &str| LabelSelector::parse(s).map(|l| l.matches(&obj));
        assert_eq!(m("app=x"), Ok(true));
        assert_eq!(m("app==x,tier!=web"), Ok(true));
        assert_eq!(m("app in (x, y),tier notin (web)"), Ok(true));
        assert_eq!(m("app,!missing"), Ok(true));
        assert_eq!(m("app in (y)"), Ok(false));
        assert_eq!(m("missing"), Ok(false));
        assert!(m("app in x").is_err());
    }
}
