//! Request bodies and headers: media types, the body limit, JSON and YAML
//! bodies, field validation, decoding a Lease.

use std::collections::BTreeMap;

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_TYPE};
use http_body_util::{BodyExt as _, Limited};
use hyper::body::Incoming;
use k8s_openapi::Resource as _;
use k8s_openapi::api::coordination::v1::Lease;
use serde_json::Value;

use super::MAX_BODY;
use crate::status::ApiError;
use crate::validate::unknown_fields;

/// The server answers JSON only: an `Accept` that excludes it gets 406.
pub(super) fn check_accept(headers: &http::HeaderMap) -> Result<(), ApiError> {
    let Some(accept) = headers.get(ACCEPT).and_then(|v| v.to_str().ok()) else {
        return Ok(());
    };
    if accept.trim().is_empty() {
        return Ok(());
    }
    let ok = accept.split(',').any(|range| {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or_default().to_ascii_lowercase();
        let plain =
            parts.all(|p| !p.starts_with("as=") && !p.starts_with("g=") && !p.starts_with("v="));
        plain && matches!(media.as_str(), "application/json" | "application/*" | "*/*")
    });
    if ok {
        Ok(())
    } else {
        Err(ApiError::not_acceptable())
    }
}

pub(super) fn media_type(headers: &http::HeaderMap) -> String {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

pub(super) async fn read_body(body: Incoming) -> Result<Bytes, ApiError> {
    match Limited::new(body, MAX_BODY).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::too_large()),
        Err(e) => Err(ApiError::bad_request(format!(
            "error reading the request body: {e}"
        ))),
    }
}

/// Reads a body of one of the `accepted` media types (a missing Content-Type means the
/// first one, as kube-apiserver does) into JSON.
pub(super) async fn read_json(
    headers: &http::HeaderMap,
    body: Incoming,
    accepted: &[&str],
) -> Result<Value, ApiError> {
    let mut media = media_type(headers);
    if media.is_empty() {
        media = accepted[0].to_owned();
    }
    if !accepted.contains(&media.as_str()) {
        return Err(ApiError::unsupported_media_type(&media));
    }
    let bytes = read_body(body).await?;
    if media == "application/yaml" {
        serde_saphyr::from_slice::<Value>(&bytes).map_err(|e| {
            ApiError::bad_request(format!("couldn't get version/kind; yaml parse error: {e}"))
        })
    } else {
        serde_json::from_slice::<Value>(&bytes).map_err(|e| {
            ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
        })
    }
}

pub(super) async fn read_optional_json(
    headers: &http::HeaderMap,
    body: Incoming,
) -> Result<Option<Value>, ApiError> {
    let media = media_type(headers);
    let bytes = read_body(body).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    if !media.is_empty() && media != "application/json" {
        return Err(ApiError::unsupported_media_type(&media));
    }
    serde_json::from_slice(&bytes).map(Some).map_err(|e| {
        ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
    })
}

#[derive(Clone, Copy, PartialEq)]
pub(super) enum FieldValidation {
    Ignore,
    Warn,
    Strict,
}

pub(super) fn field_validation(q: &BTreeMap<String, String>) -> Result<FieldValidation, ApiError> {
    match q.get("fieldValidation").map(String::as_str) {
        None | Some("") | Some("Warn") => Ok(FieldValidation::Warn),
        Some("Ignore") => Ok(FieldValidation::Ignore),
        Some("Strict") => Ok(FieldValidation::Strict),
        Some(other) => Err(ApiError::bad_request(format!(
            "fieldValidation parameter unsupported: {other}; must be one of Ignore, Warn or Strict"
        ))),
    }
}

/// Decodes a body into a Lease: type meta checked, unknown fields warned about (or refused
/// with `fieldValidation=Strict`), field types checked by the k8s-openapi decoder.
pub(super) fn decode_lease(
    v: Value,
    fv: FieldValidation,
) -> Result<(Lease, Vec<String>), ApiError> {
    let cannot = |why: String| {
        ApiError::bad_request(format!(
            "Lease in version \"v1\" cannot be handled as a Lease: {why}"
        ))
    };
    if !v.is_object() {
        return Err(cannot(format!("expected an object, got {v}")));
    }
    let api_version = v
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or(Lease::API_VERSION);
    let kind = v.get("kind").and_then(Value::as_str).unwrap_or(Lease::KIND);
    if api_version != Lease::API_VERSION {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({api_version}) does not match the expected API version ({})",
            Lease::API_VERSION
        )));
    }
    if kind != Lease::KIND {
        return Err(ApiError::bad_request(format!(
            "{kind} in version \"v1\" cannot be handled as a Lease: no kind \"{kind}\" is registered for version \
             \"coordination.k8s.io/v1\" in scheme \"pkg/api/legacyscheme/scheme.go:30\""
        )));
    }
    let unknown = unknown_fields(&v);
    let warnings = match fv {
        FieldValidation::Ignore => Vec::new(),
        _ if unknown.is_empty() => Vec::new(),
        FieldValidation::Strict => {
            let list = unknown
                .iter()
                .map(|f| format!("unknown field \"{f}\""))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(ApiError::bad_request(format!(
                "strict decoding error: {list}"
            )));
        }
        FieldValidation::Warn => unknown
            .iter()
            .map(|f| format!("unknown field \"{f}\""))
            .collect(),
    };
    let lease = serde_json::from_value::<Lease>(v).map_err(|e| cannot(e.to_string()))?;
    Ok((lease, warnings))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn decode_checks_type_meta() {
        let ok = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "a"}});
        assert!(decode_lease(ok, FieldValidation::Strict).is_ok());
        let wrong = json!({"apiVersion": "v1", "kind": "Lease", "metadata": {"name": "a"}});
        assert_eq!(
            decode_lease(wrong, FieldValidation::Warn).unwrap_err().code,
            400
        );
        let unknown = json!({"kind": "Lease", "metadata": {"name": "a"}, "spec": {"holder": "x"}});
        let (_, w) = decode_lease(unknown.clone(), FieldValidation::Warn).unwrap();
        assert_eq!(w, vec!["unknown field \"spec.holder\"".to_owned()]);
        assert_eq!(
            decode_lease(unknown, FieldValidation::Strict)
                .unwrap_err()
                .code,
            400
        );
        let badtype = json!({"kind": "Lease", "metadata": {"name": "a"}, "spec": {"leaseDurationSeconds": "x"}});
        assert_eq!(
            decode_lease(badtype, FieldValidation::Warn)
                .unwrap_err()
                .code,
            400
        );
    }
}
