//! Routing: a request to its route and verb, the gates in front of the API
//! (faults, partitions, recording), and the answer.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, USER_AGENT};
use http::{HeaderValue, Method, Request, Response};
use hyper::body::Incoming;
use serde_json::{Value, json};

use super::decode::{check_accept, field_validation, read_json, read_optional_json};
use super::read::{list, watch};
use super::request::{Reply, ReqCtx, is_client_fault, partition_gate, strip_marker};
use super::write::{create, delete, get, patch, update};
use super::{Body, ConnCtx};
use crate::faults::identity_from_user_agent;
use crate::status::ApiError;
use crate::tls::ADMIN_USER;
use crate::validate::{parse_bool, parse_query};
use crate::{RejectedRequest, RequestRecord, Shared, Verb, WarningRecord, chance};

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Route {
    /// `/apis/coordination.k8s.io/v1[/namespaces/{ns}]/leases`
    Leases(Option<String>),
    /// `/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{name}`
    Lease(String, String),
    Version,
    Health,
    NotFound,
}

pub(super) fn route(path: &str) -> Route {
    let segs: Vec<&str> = path.strip_prefix('/').unwrap_or(path).split('/').collect();
    match segs.as_slice() {
        ["version"] => Route::Version,
        ["readyz" | "livez" | "healthz"] => Route::Health,
        ["apis", "coordination.k8s.io", "v1", "leases"] => Route::Leases(None),
        [
            "apis",
            "coordination.k8s.io",
            "v1",
            "namespaces",
            ns,
            "leases",
        ] if !ns.is_empty() => Route::Leases(Some((*ns).to_owned())),
        [
            "apis",
            "coordination.k8s.io",
            "v1",
            "namespaces",
            ns,
            "leases",
            name,
        ] if !ns.is_empty() && !name.is_empty() => {
            Route::Lease((*ns).to_owned(), (*name).to_owned())
        }
        _ => Route::NotFound,
    }
}

pub(super) fn verb_of(route: &Route, method: &Method, query: &BTreeMap<String, String>) -> Verb {
    let watch = query
        .get("watch")
        .is_some_and(|w| parse_bool("watch", w).unwrap_or(false));
    match (route, method.as_str()) {
        (Route::Leases(_), "GET") if watch => Verb::Watch,
        (Route::Leases(_), "GET") => Verb::List,
        (Route::Leases(Some(_)), "POST") => Verb::Create,
        (Route::Lease(..), "GET") => Verb::Get,
        (Route::Lease(..), "PUT") => Verb::Update,
        (Route::Lease(..), "PATCH") => Verb::Patch,
        (Route::Lease(..), "DELETE") => Verb::Delete,
        _ => Verb::Other,
    }
}

pub(super) fn json_response(code: u16, v: &Value, warnings: &[String]) -> Response<Body> {
    let mut body = serde_json::to_vec(v).expect("a JSON value always serializes");
    body.push(b'\n');
    let mut b = Response::builder()
        .status(code)
        .header(CONTENT_TYPE, "application/json")
        .header("Cache-Control", "no-cache, private");
    for w in warnings {
        let text = format!("299 - \"{}\"", w.replace('"', "\\\""));
        if let Ok(hv) = HeaderValue::from_str(&text) {
            b = b.header("Warning", hv);
        }
    }
    b.body(Body::Full(Some(Bytes::from(body))))
        .expect("static response parts are valid")
}

pub(super) async fn handle(
    shared: Arc<Shared>,
    ctx: Arc<ConnCtx>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let arrived = Instant::now();
    let identity = req
        .headers()
        .get(USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .and_then(identity_from_user_agent)
        .map(str::to_owned);
    let method = req.method().clone();
    let uri = req.uri().to_string();
    let route = route(req.uri().path());
    let query = parse_query(req.uri().query());
    let verb = query
        .as_ref()
        .map_or(Verb::Other, |q| verb_of(&route, &method, q));
    shared.count(identity.as_deref(), verb);
    let mut record = RequestRecord {
        at_ms: shared.elapsed_ms(arrived),
        duration_ms: 0.0,
        identity: identity.clone(),
        peer: ctx.peer,
        method: method.to_string(),
        uri: uri.clone(),
        verb,
        status: 0,
    };
    tracing::debug!(identity = ?identity, %method, %uri, "request");

    let ip = ctx.peer.ip();
    let reply = if !partition_gate(&shared, identity.as_deref(), ip).await {
        Reply::Drop
    } else {
        let latency = shared.faults.borrow().latency_for(identity.as_deref());
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let req_ctx = ReqCtx {
            shared: &shared,
            ctx: &ctx,
            identity: identity.as_deref(),
            ip,
            verb,
        };
        match query {
            Err(e) => Reply::from(e),
            Ok(q) => match process(&req_ctx, route, req, q).await {
                Ok(r) => r,
                Err(e) => Reply::from(e),
            },
        }
    };
    record.duration_ms = arrived.elapsed().as_secs_f64() * 1000.0;
    let response = match reply {
        Reply::Drop => {
            shared.record(record);
            tracing::debug!(identity = ?identity, %uri, "closing the connection without an answer");
            ctx.kill.cancel();
            // The connection task drops this future together with the connection.
            std::future::pending::<()>().await;
            unreachable!("a pending future never completes");
        }
        Reply::Json(code, v, warnings) => {
            if code >= 400 && v["kind"] == "Status" && is_client_fault(&v) {
                shared.record_rejected(RejectedRequest {
                    identity: identity.clone(),
                    method: method.to_string(),
                    uri: uri.clone(),
                    code,
                    reason: v["reason"].as_str().unwrap_or_default().to_owned(),
                    message: v["message"].as_str().unwrap_or_default().to_owned(),
                });
            }
            for w in &warnings {
                shared.record_warning(WarningRecord {
                    identity: identity.clone(),
                    uri: uri.clone(),
                    warning: w.clone(),
                });
            }
            json_response(code, &strip_marker(v), &warnings)
        }
        Reply::Raw(r) => r,
    };
    record.status = response.status().as_u16();
    shared.record(record);
    Ok(response)
}

pub(super) async fn process(
    rc: &ReqCtx<'_>,
    route: Route,
    req: Request<Incoming>,
    query: BTreeMap<String, String>,
) -> Result<Reply, ApiError> {
    let (ns, name) = match route {
        Route::Version => return Ok(Reply::Json(200, version(), Vec::new())),
        Route::Health => {
            let unhealthy = rc.shared.faults.borrow().is_unhealthy(rc.identity);
            let (code, body): (u16, &'static [u8]) = if unhealthy {
                (500, b"[-]etcd failed: reason withheld\nreadyz check failed")
            } else {
                (200, b"ok")
            };
            let r = Response::builder()
                .status(code)
                .header(CONTENT_TYPE, "text/plain; charset=utf-8")
                .body(Body::Full(Some(Bytes::from_static(body))))
                .expect("static response parts are valid");
            return Ok(Reply::Raw(r));
        }
        Route::NotFound => return Err(ApiError::path_not_found()),
        Route::Leases(ns) => (ns, None),
        Route::Lease(ns, name) => (Some(ns), Some(name)),
    };
    if rc.verb == Verb::Other {
        return Err(ApiError::method_not_allowed());
    }
    check_accept(req.headers())?;
    let dry_run = match query.get("dryRun").map(String::as_str) {
        None | Some("") => false,
        Some("All") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "Invalid dry run value: {other:?}"
            )));
        }
    };

    // Authorization and server-side faults, in the order a real server meets them.
    let faults = rc.shared.faults.borrow().clone();
    if faults.is_forbidden(rc.identity) {
        return Err(ApiError::forbidden(
            ADMIN_USER,
            rc.verb.as_str(),
            name.as_deref(),
            ns.as_deref(),
        ));
    }
    if faults.drop_applies(rc.identity, rc.ip)
        && !faults.drop_after_commit
        && chance(faults.drop_probability)
    {
        return Ok(Reply::Drop);
    }
    if faults.error_applies(rc.identity, rc.ip) && chance(faults.error_probability) {
        return Err(ApiError::injected(faults.error_code));
    }
    let drop_after = faults.drop_applies(rc.identity, rc.ip)
        && faults.drop_after_commit
        && chance(faults.drop_probability);

    let (parts, body) = req.into_parts();
    let reply = match (rc.verb, ns, name) {
        (Verb::Watch, ns, _) => watch(rc, ns, &query)?,
        (Verb::List, ns, _) => list(rc.shared, ns.as_deref(), &query)?,
        (Verb::Get, Some(ns), Some(name)) => get(rc.shared, &ns, &name, &query)?,
        (Verb::Create, Some(ns), None) => {
            let v = read_json(
                &parts.headers,
                body,
                &["application/json", "application/yaml"],
            )
            .await?;
            create(rc.shared, &ns, v, dry_run, field_validation(&query)?)?
        }
        (Verb::Update, Some(ns), Some(name)) => {
            let v = read_json(
                &parts.headers,
                body,
                &["application/json", "application/yaml"],
            )
            .await?;
            update(rc.shared, &ns, &name, v, dry_run, field_validation(&query)?)?
        }
        (Verb::Patch, Some(ns), Some(name)) => {
            let v = read_json(&parts.headers, body, &["application/merge-patch+json"]).await?;
            patch(
                rc.shared,
                &ns,
                &name,
                &v,
                dry_run,
                field_validation(&query)?,
            )?
        }
        (Verb::Delete, Some(ns), Some(name)) => {
            let v = read_optional_json(&parts.headers, body).await?;
            delete(rc.shared, &ns, &name, v.as_ref(), dry_run)?
        }
        _ => return Err(ApiError::method_not_allowed()),
    };
    if drop_after && !matches!(reply, Reply::Raw(_)) {
        return Ok(Reply::Drop);
    }
    Ok(reply)
}

pub(super) fn version() -> Value {
    json!({
        "major": "1", "minor": "33", "emulationMajor": "1", "emulationMinor": "33",
        "minCompatibilityMajor": "1", "minCompatibilityMinor": "32",
        "gitVersion": "v1.33.0", "gitCommit": "vip-lab", "gitTreeState": "clean",
        "buildDate": "2025-04-23T00:00:00Z", "goVersion": "go1.24.2", "compiler": "gc",
        "platform": "linux/amd64",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(
            route("/apis/coordination.k8s.io/v1/namespaces/kube-system/leases"),
            Route::Leases(Some("kube-system".into()))
        );
        assert_eq!(
            route("/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/vip"),
            Route::Lease("kube-system".into(), "vip".into())
        );
        assert_eq!(
            route("/apis/coordination.k8s.io/v1/leases"),
            Route::Leases(None)
        );
        assert_eq!(
            route("/apis/coordination.k8s.io/v1/namespaces/x/leases/"),
            Route::NotFound
        );
        assert_eq!(route("/api/v1/pods"), Route::NotFound);
        assert_eq!(route("/readyz"), Route::Health);
    }
}
