//! Request validation helpers: query strings, selectors, names, the Lease schema.

use std::collections::BTreeMap;

use k8s_openapi::api::coordination::v1::Lease;
use serde_json::Value;

use super::status::ApiError;

/// Decodes an `application/x-www-form-urlencoded` query; empty pairs (`?&watch=true`, as
/// kube-rs sends) are skipped. Later duplicates win.
pub(crate) fn parse_query(q: Option<&str>) -> Result<BTreeMap<String, String>, ApiError> {
    let mut out = BTreeMap::new();
    for pair in q.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.insert(decode(k)?, decode(v)?);
    }
    Ok(out)
}

fn decode(s: &str) -> Result<String, ApiError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| ApiError::bad_request(format!("invalid URL escape {s:?}")))?;
                out.push(hex);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| ApiError::bad_request("query is not valid UTF-8"))
}

/// Go's `strconv.ParseBool`, which the API server uses for boolean query parameters.
pub(crate) fn parse_bool(name: &str, v: &str) -> Result<bool, ApiError> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" | "" => Ok(false),
        _ => Err(ApiError::bad_request(format!(
            "failed to parse query parameter {name}: strconv.ParseBool: parsing {v:?}: invalid syntax"
        ))),
    }
}

/// A resourceVersion query parameter: `None` for absent/empty, `Some(0)` for "0".
pub(crate) fn parse_rv(v: Option<&String>) -> Result<Option<u64>, ApiError> {
    match v.map(String::as_str) {
        None | Some("") => Ok(None),
        Some(s) => s
            .parse::<u64>()
            .map(Some)
            .map_err(|_| ApiError::bad_request(format!("invalid resource version: {s:?}"))),
    }
}

/// `fieldSelector` on leases: `metadata.name` and `metadata.namespace`, with `=`, `==`, `!=`.
#[derive(Clone, Debug, Default)]
pub(crate) struct FieldSelector {
    terms: Vec<(String, bool, String)>,
}

impl FieldSelector {
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        let mut terms = Vec::new();
        for term in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (field, eq, value) = if let Some((f, v)) = term.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = term.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = term.split_once('=') {
                (f, true, v)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{s}'; can't understand '{term}'"
                )));
            };
            let field = field.trim();
            if field != "metadata.name" && field != "metadata.namespace" {
                return Err(ApiError::bad_request(format!(
                    "Unable to find \"coordination.k8s.io/v1, Resource=leases\" that match label selector \"\", \
                     field selector \"{s}\": field label not supported: {field}"
                )));
            }
            terms.push((field.to_owned(), eq, value.trim().to_owned()));
        }
        Ok(Self { terms })
    }

    pub fn matches(&self, ns: &str, name: &str) -> bool {
        self.terms.iter().all(|(f, eq, v)| {
            let actual = if f == "metadata.name" { name } else { ns };
            (actual == v) == *eq
        })
    }
}

#[derive(Clone, Debug)]
enum LabelTerm {
    Eq(String, String),
    Ne(String, String),
    Exists(String),
    NotExists(String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

/// `labelSelector` (equality- and set-based).
#[derive(Clone, Debug, Default)]
pub(crate) struct LabelSelector {
    terms: Vec<LabelTerm>,
}

impl LabelSelector {
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        let bad = || {
            ApiError::bad_request(format!(
                "unable to parse requirement: invalid label selector {s:?}"
            ))
        };
        let mut parts = Vec::new();
        let (mut depth, mut start) = (0i32, 0usize);
        for (i, c) in s.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                ',' if depth == 0 => {
                    parts.push(&s[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        parts.push(&s[start..]);
        let mut terms = Vec::new();
        for p in parts.into_iter().map(str::trim).filter(|p| !p.is_empty()) {
            let set = |rest: &str| -> Result<Vec<String>, ApiError> {
                let inner = rest
                    .trim()
                    .strip_prefix('(')
                    .and_then(|r| r.strip_suffix(')'))
                    .ok_or_else(bad)?;
                Ok(inner.split(',').map(|v| v.trim().to_owned()).collect())
            };
            let term = if let Some((k, v)) = p.split_once("!=") {
                LabelTerm::Ne(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = p.split_once("==") {
                LabelTerm::Eq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = p.split_once('=') {
                LabelTerm::Eq(k.trim().into(), v.trim().into())
            } else if let Some((k, rest)) = p.split_once(" notin ") {
                LabelTerm::NotIn(k.trim().into(), set(rest)?)
            } else if let Some((k, rest)) = p.split_once(" in ") {
                LabelTerm::In(k.trim().into(), set(rest)?)
            } else if let Some(k) = p.strip_prefix('!') {
                LabelTerm::NotExists(k.trim().into())
            } else if p
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
            {
                LabelTerm::Exists(p.into())
            } else {
                return Err(bad());
            };
            terms.push(term);
        }
        Ok(Self { terms })
    }

    pub fn matches(&self, labels: Option<&BTreeMap<String, String>>) -> bool {
        let get = |k: &str| labels.and_then(|l| l.get(k));
        self.terms.iter().all(|t| match t {
            LabelTerm::Eq(k, v) => get(k) == Some(v),
            LabelTerm::Ne(k, v) => get(k) != Some(v),
            LabelTerm::Exists(k) => get(k).is_some(),
            LabelTerm::NotExists(k) => get(k).is_none(),
            LabelTerm::In(k, vs) => get(k).is_some_and(|v| vs.contains(v)),
            LabelTerm::NotIn(k, vs) => get(k).is_none_or(|v| !vs.contains(v)),
        })
    }
}

const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, \
'-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation \
is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

/// The DNS-1123 subdomain rule for object names; the error text is kube-apiserver's.
pub(crate) fn dns1123_subdomain(name: &str) -> Result<(), String> {
    if name.len() > 253 {
        return Err("must be no more than 253 characters".to_owned());
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if name.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(DNS1123_SUBDOMAIN_MSG.to_owned())
    }
}

const LEASE_FIELDS: &[&str] = &["apiVersion", "kind", "metadata", "spec"];
const META_FIELDS: &[&str] = &[
    "annotations",
    "creationTimestamp",
    "deletionGracePeriodSeconds",
    "deletionTimestamp",
    "finalizers",
    "generateName",
    "generation",
    "labels",
    "managedFields",
    "name",
    "namespace",
    "ownerReferences",
    "resourceVersion",
    "selfLink",
    "uid",
];
const SPEC_FIELDS: &[&str] = &[
    "acquireTime",
    "holderIdentity",
    "leaseDurationSeconds",
    "leaseTransitions",
    "preferredHolder",
    "renewTime",
    "strategy",
];

/// Fields of a Lease body that the `coordination.k8s.io/v1` schema does not know, as the
/// API server names them in its warnings (`unknown field "spec.foo"`).
pub(crate) fn unknown_fields(v: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let mut check = |obj: Option<&serde_json::Map<String, Value>>, known: &[&str], prefix: &str| {
        for k in obj.into_iter().flat_map(|o| o.keys()) {
            if !known.contains(&k.as_str()) {
                out.push(format!("{prefix}{k}"));
            }
        }
    };
    check(v.as_object(), LEASE_FIELDS, "");
    check(
        v.get("metadata").and_then(Value::as_object),
        META_FIELDS,
        "metadata.",
    );
    check(
        v.get("spec").and_then(Value::as_object),
        SPEC_FIELDS,
        "spec.",
    );
    out
}

/// JSON merge patch (RFC 7386).
pub(crate) fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(serde_json::Map::new());
            }
            if let Value::Object(t) = target {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// `ValidateLeaseSpec` of kube-apiserver: (field, cause reason, message).
pub(crate) fn lease_spec_errors(lease: &Lease) -> Vec<(String, &'static str, String)> {
    let mut errs = Vec::new();
    let Some(spec) = &lease.spec else {
        return errs;
    };
    if let Some(d) = spec.lease_duration_seconds
        && d <= 0
    {
        errs.push((
            "spec.leaseDurationSeconds".into(),
            "FieldValueInvalid",
            format!("Invalid value: {d}: must be greater than 0"),
        ));
    }
    if let Some(t) = spec.lease_transitions
        && t < 0
    {
        errs.push((
            "spec.leaseTransitions".into(),
            "FieldValueInvalid",
            format!("Invalid value: {t}: must be greater than or equal to 0"),
        ));
    }
    if let Some(s) = spec.strategy.as_deref()
        && s != "OldestEmulationVersion"
    {
        errs.push((
            "spec.strategy".into(),
            "FieldValueNotSupported",
            format!("Unsupported value: \"{s}\": supported values: \"OldestEmulationVersion\""),
        ));
    }
    if spec
        .preferred_holder
        .as_deref()
        .is_some_and(|p| !p.is_empty())
        && spec.strategy.as_deref().is_none_or(str::is_empty)
    {
        errs.push((
            "spec.preferredHolder".into(),
            "FieldValueForbidden",
            "Forbidden: may only be specified if `strategy` is defined".into(),
        ));
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_skips_empty_pairs() {
        let q = parse_query(Some("&watch=true&fieldSelector=metadata.name%3Dvip&x")).unwrap();
        assert_eq!(q["watch"], "true");
        assert_eq!(q["fieldSelector"], "metadata.name=vip");
        assert_eq!(q["x"], "");
    }

    #[test]
    fn selectors() {
        let f = FieldSelector::parse("metadata.name=a,metadata.namespace!=b").unwrap();
        assert!(f.matches("c", "a"));
        assert!(!f.matches("b", "a"));
        assert!(FieldSelector::parse("spec.holderIdentity=x").is_err());
        let l = LabelSelector::parse("app=vip,tier in (a, b),!gone").unwrap();
        let labels: BTreeMap<_, _> = [
            ("app".to_owned(), "vip".to_owned()),
            ("tier".into(), "b".into()),
        ]
        .into();
        assert!(l.matches(Some(&labels)));
        assert!(!l.matches(None));
    }

    #[test]
    fn names() {
        assert!(dns1123_subdomain("plndr-cp-lock").is_ok());
        assert!(dns1123_subdomain("a.b-c").is_ok());
        assert!(dns1123_subdomain("Bad").is_err());
        assert!(dns1123_subdomain("-a").is_err());
        assert!(dns1123_subdomain("").is_err());
    }

    #[test]
    fn merge() {
        let mut t = serde_json::json!({"a": {"b": 1, "c": 2}, "d": 3});
        merge_patch(
            &mut t,
            &serde_json::json!({"a": {"b": null, "e": 4}, "d": [1]}),
        );
        assert_eq!(t, serde_json::json!({"a": {"c": 2, "e": 4}, "d": [1]}));
    }
}
