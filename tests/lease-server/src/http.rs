//! The HTTPS side: accepting connections, faults, routing and the Lease API itself.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_TYPE, USER_AGENT};
use http::{HeaderValue, Method, Request, Response};
use http_body_util::{BodyExt as _, Limited};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::{Resource as _, jiff};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::faults::{PartitionMode, identity_from_user_agent};
use super::status::{ApiError, OPTIMISTIC_LOCK, QUALIFIED, delete_success};
use super::store::{EventType, StoreEvent, watch_line, with_type_meta};
use super::tls::ADMIN_USER;
use super::validate::{
    FieldSelector, LabelSelector, dns1123_subdomain, lease_spec_errors, merge_patch, parse_bool,
    parse_query, parse_rv, unknown_fields,
};
use super::{
    RejectedRequest, RequestRecord, Shared, Verb, WarningRecord, chance, lock, random_u64,
};

/// The kube-apiserver request body limit.
const MAX_BODY: usize = 3 * 1024 * 1024;
/// Default watch timeout when the client gives none (the real server: 30-60 min).
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);

/// Response body: a full buffer or a watch stream.
pub(crate) enum Body {
    Full(Option<Bytes>),
    Stream(mpsc::Receiver<Bytes>),
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Body::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Body::Stream(rx) => rx.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Body::Full(None))
    }
}

/// One TLS connection.
pub(crate) struct ConnCtx {
    peer: SocketAddr,
    /// Cancelled to close the connection without answering (drops, partitions, restarts).
    kill: CancellationToken,
}

pub(crate) async fn accept_loop(shared: Arc<Shared>, listener: TcpListener, tls: TlsAcceptor) {
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let down = lock(&shared.down_until).is_some_and(|until| Instant::now() < until);
        let refused =
            shared.faults.borrow().partition_for(None, peer.ip()) == Some(PartitionMode::Refuse);
        if down || refused {
            tracing::debug!(%peer, down, refused, "connection closed at accept");
            continue;
        }
        let _ = tcp.set_nodelay(true);
        tokio::spawn(serve_conn(shared.clone(), tcp, peer, tls.clone()));
    }
}

async fn serve_conn(shared: Arc<Shared>, tcp: TcpStream, peer: SocketAddr, tls: TlsAcceptor) {
    let generation = shared.generation();
    let stream = tokio::select! {
        _ = generation.cancelled() => return,
        r = tokio::time::timeout(Duration::from_secs(10), tls.accept(tcp)) => match r {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::info!(%peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => return,
        },
    };
    let ctx = Arc::new(ConnCtx {
        peer,
        kill: generation.child_token(),
    });
    let svc = {
        let (shared, ctx) = (shared.clone(), ctx.clone());
        service_fn(move |req| handle(shared.clone(), ctx.clone(), req))
    };
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .serve_connection(TokioIo::new(stream), svc);
    tokio::select! {
        r = conn => if let Err(e) = r {
            tracing::debug!(%peer, error = %e, "connection ended with an error");
        },
        _ = ctx.kill.cancelled() => tracing::debug!(%peer, "connection dropped"),
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Route {
    /// `/apis/coordination.k8s.io/v1[/namespaces/{ns}]/leases`
    Leases(Option<String>),
    /// `/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{name}`
    Lease(String, String),
    Version,
    Health,
    NotFound,
}

fn route(path: &str) -> Route {
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

fn verb_of(route: &Route, method: &Method, query: &BTreeMap<String, String>) -> Verb {
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

enum Reply {
    Json(u16, Value, Vec<String>),
    Raw(Response<Body>),
    /// Close the connection without answering.
    Drop,
}

fn json_response(code: u16, v: &Value, warnings: &[String]) -> Response<Body> {
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

async fn handle(
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

/// Client-fault errors carry a private marker until they are answered.
const CLIENT_FAULT_MARKER: &str = "x-vip-lab-client-fault";

fn is_client_fault(v: &Value) -> bool {
    v.get(CLIENT_FAULT_MARKER).is_some()
}

fn strip_marker(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.remove(CLIENT_FAULT_MARKER);
    }
    v
}

impl From<ApiError> for Reply {
    fn from(e: ApiError) -> Self {
        let mut v = e.to_json();
        if e.client_fault {
            v[CLIENT_FAULT_MARKER] = json!(true);
        }
        Reply::Json(e.code, v, Vec::new())
    }
}

/// Waits out a partition of this client. Returns whether the request may proceed.
async fn partition_gate(shared: &Shared, identity: Option<&str>, ip: IpAddr) -> bool {
    let mut rx = shared.faults.subscribe();
    let mode = rx.borrow_and_update().partition_for(identity, ip);
    match mode {
        None => true,
        Some(PartitionMode::Refuse) => false,
        Some(mode) => {
            tracing::debug!(?identity, %ip, ?mode, "request held by a partition");
            let healed = rx
                .wait_for(|f| f.partition_for(identity, ip).is_none())
                .await
                .is_ok();
            healed && mode == PartitionMode::Hang
        }
    }
}

struct ReqCtx<'a> {
    shared: &'a Arc<Shared>,
    ctx: &'a Arc<ConnCtx>,
    identity: Option<&'a str>,
    ip: IpAddr,
    verb: Verb,
}

async fn process(
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

fn version() -> Value {
    json!({
        "major": "1", "minor": "33", "emulationMajor": "1", "emulationMinor": "33",
        "minCompatibilityMajor": "1", "minCompatibilityMinor": "32",
        "gitVersion": "v1.33.0", "gitCommit": "vip-lab", "gitTreeState": "clean",
        "buildDate": "2025-04-23T00:00:00Z", "goVersion": "go1.24.2", "compiler": "gc",
        "platform": "linux/amd64",
    })
}

/// The server answers JSON only: an `Accept` that excludes it gets 406.
fn check_accept(headers: &http::HeaderMap) -> Result<(), ApiError> {
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

fn media_type(headers: &http::HeaderMap) -> String {
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

async fn read_body(body: Incoming) -> Result<Bytes, ApiError> {
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
async fn read_json(
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

async fn read_optional_json(
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
enum FieldValidation {
    Ignore,
    Warn,
    Strict,
}

fn field_validation(q: &BTreeMap<String, String>) -> Result<FieldValidation, ApiError> {
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
fn decode_lease(v: Value, fv: FieldValidation) -> Result<(Lease, Vec<String>), ApiError> {
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

/// Sets what the server owns on a new object: uid and creationTimestamp.
pub(crate) fn init_new_meta(lease: &mut Lease) {
    let r1 = random_u64();
    let r2 = random_u64();
    let uid = format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        r1 >> 32,
        (r1 >> 16) & 0xffff,
        r1 & 0xfff,
        ((r2 >> 48) & 0x3fff) | 0x8000,
        r2 & 0xffff_ffff_ffff
    );
    let m = &mut lease.metadata;
    m.uid = Some(uid);
    m.resource_version = None;
    m.self_link = None;
    m.deletion_timestamp = None;
    m.deletion_grace_period_seconds = None;
    let now = jiff::Timestamp::now();
    m.creation_timestamp = Some(Time(
        jiff::Timestamp::from_second(now.as_second()).unwrap_or(now),
    ));
}

fn meta_name_errors(lease: &Lease) -> Vec<(String, &'static str, String)> {
    let name = lease.metadata.name.as_deref().unwrap_or_default();
    if name.is_empty() {
        return vec![(
            "metadata.name".into(),
            "FieldValueRequired",
            "Required value: name or generateName is required".into(),
        )];
    }
    match dns1123_subdomain(name) {
        Ok(()) => Vec::new(),
        Err(msg) => vec![(
            "metadata.name".into(),
            "FieldValueInvalid",
            format!("Invalid value: \"{name}\": {msg}"),
        )],
    }
}

fn invalid_lease(name: &str, causes: &[(String, &'static str, String)]) -> ApiError {
    ApiError::invalid(
        "Lease.coordination.k8s.io",
        "Lease",
        "coordination.k8s.io",
        name,
        causes,
    )
}

fn check_namespace(lease: &mut Lease, ns: &str) -> Result<(), ApiError> {
    match lease.metadata.namespace.as_deref() {
        Some(n) if !n.is_empty() && n != ns => Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        )),
        _ => {
            lease.metadata.namespace = Some(ns.to_owned());
            Ok(())
        }
    }
}

fn create(
    shared: &Shared,
    ns: &str,
    v: Value,
    dry_run: bool,
    fv: FieldValidation,
) -> Result<Reply, ApiError> {
    let (mut lease, warnings) = decode_lease(v, fv)?;
    check_namespace(&mut lease, ns)?;
    if lease.metadata.name.as_deref().is_none_or(str::is_empty)
        && let Some(prefix) = lease
            .metadata
            .generate_name
            .as_deref()
            .filter(|p| !p.is_empty())
    {
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        let suffix: String = (0..5)
            .map(|_| ALPHABET[(random_u64() % ALPHABET.len() as u64) as usize] as char)
            .collect();
        lease.metadata.name = Some(format!("{prefix}{suffix}"));
    }
    let name = lease.metadata.name.clone().unwrap_or_default();
    let mut causes = meta_name_errors(&lease);
    causes.extend(lease_spec_errors(&lease));
    if !causes.is_empty() {
        return Err(invalid_lease(&name, &causes));
    }
    if lease
        .metadata
        .resource_version
        .as_deref()
        .is_some_and(|rv| !rv.is_empty())
    {
        let mut e =
            ApiError::internal("resourceVersion should not be set on objects to be created");
        e.client_fault = true;
        return Err(e);
    }
    let mut store = lock(&shared.store);
    if store.get(ns, &name).is_some() {
        return Err(ApiError::already_exists(&name));
    }
    init_new_meta(&mut lease);
    let stored = if dry_run {
        lease
    } else {
        store.commit(lease, EventType::Added)
    };
    Ok(Reply::Json(201, with_type_meta(&stored), warnings))
}

fn body_rv(lease: &Lease) -> Result<u64, ApiError> {
    match lease.metadata.resource_version.as_deref() {
        None | Some("") => Ok(0),
        Some(s) => s.parse().map_err(|_| {
            ApiError::bad_request(format!(
                "metadata.resourceVersion: Invalid value: {s:?}: must be a valid resource version"
            ))
        }),
    }
}

/// The optimistic-concurrency part of an update of `old` by `new` (PUT and PATCH).
fn check_update(name: &str, old: &Lease, new: &Lease) -> Result<(), ApiError> {
    let new_rv = body_rv(new)?;
    if let Some(uid) = new.metadata.uid.as_deref().filter(|u| !u.is_empty())
        && Some(uid) != old.metadata.uid.as_deref()
    {
        return Err(ApiError::conflict(
            name,
            &format!(
                "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                old.metadata.uid.as_deref().unwrap_or_default()
            ),
        ));
    }
    if new_rv == 0 {
        return Err(ApiError::invalid(
            QUALIFIED,
            "leases",
            "coordination.k8s.io",
            name,
            &[(
                "metadata.resourceVersion".into(),
                "FieldValueInvalid",
                "Invalid value: 0x0: must be specified for an update".into(),
            )],
        ));
    }
    if Some(new_rv.to_string().as_str()) != old.metadata.resource_version.as_deref() {
        return Err(ApiError::conflict(name, OPTIMISTIC_LOCK));
    }
    Ok(())
}

/// Commits `new` over `old` (already checked), keeping server-owned metadata; a no-op update
/// is not written (no new resourceVersion, no event), as etcd3 storage does.
fn commit_update(
    store: &mut super::store::Store,
    old: &Lease,
    mut new: Lease,
    dry_run: bool,
) -> Result<Lease, ApiError> {
    new.metadata.uid = old.metadata.uid.clone();
    new.metadata.creation_timestamp = old.metadata.creation_timestamp.clone();
    new.metadata.resource_version = old.metadata.resource_version.clone();
    new.metadata.self_link = None;
    let causes = lease_spec_errors(&new);
    if !causes.is_empty() {
        return Err(invalid_lease(
            new.metadata.name.as_deref().unwrap_or_default(),
            &causes,
        ));
    }
    if &new == old || dry_run {
        return Ok(new);
    }
    Ok(store.commit(new, EventType::Modified))
}

fn update(
    shared: &Shared,
    ns: &str,
    name: &str,
    v: Value,
    dry_run: bool,
    fv: FieldValidation,
) -> Result<Reply, ApiError> {
    let (mut lease, warnings) = decode_lease(v, fv)?;
    let body_name = lease.metadata.name.clone().unwrap_or_default();
    if body_name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    check_namespace(&mut lease, ns)?;
    let mut store = lock(&shared.store);
    let Some(old) = store.get(ns, name).cloned() else {
        // Leases allow create-on-update (AllowCreateOnUpdate() == true).
        let mut causes = meta_name_errors(&lease);
        causes.extend(lease_spec_errors(&lease));
        if !causes.is_empty() {
            return Err(invalid_lease(name, &causes));
        }
        init_new_meta(&mut lease);
        let stored = if dry_run {
            lease
        } else {
            store.commit(lease, EventType::Added)
        };
        return Ok(Reply::Json(201, with_type_meta(&stored), warnings));
    };
    check_update(name, &old, &lease)?;
    let stored = commit_update(&mut store, &old, lease, dry_run)?;
    Ok(Reply::Json(200, with_type_meta(&stored), warnings))
}

fn patch(
    shared: &Shared,
    ns: &str,
    name: &str,
    p: &Value,
    dry_run: bool,
    fv: FieldValidation,
) -> Result<Reply, ApiError> {
    if !p.is_object() {
        return Err(ApiError::bad_request("the patch is not a JSON object"));
    }
    let mut store = lock(&shared.store);
    let Some(old) = store.get(ns, name).cloned() else {
        return Err(ApiError::not_found(name));
    };
    let mut merged = with_type_meta(&old);
    let has_rv = p
        .pointer("/metadata/resourceVersion")
        .is_some_and(|v| !v.is_null());
    merge_patch(&mut merged, p);
    if !has_rv {
        // A patch without a resourceVersion applies to whatever is current.
        merged["metadata"]["resourceVersion"] = json!(old.metadata.resource_version);
    }
    let (lease, warnings) = decode_lease(merged, fv)?;
    if lease.metadata.name.as_deref() != Some(name)
        || lease.metadata.namespace.as_deref() != Some(ns)
    {
        return Err(invalid_lease(
            name,
            &[(
                "metadata.name".into(),
                "FieldValueInvalid",
                "Invalid value: field is immutable".into(),
            )],
        ));
    }
    check_update(name, &old, &lease)?;
    let stored = commit_update(&mut store, &old, lease, dry_run)?;
    Ok(Reply::Json(200, with_type_meta(&stored), warnings))
}

fn delete(
    shared: &Shared,
    ns: &str,
    name: &str,
    opts: Option<&Value>,
    dry_run: bool,
) -> Result<Reply, ApiError> {
    let mut dry_run = dry_run;
    let (mut pre_uid, mut pre_rv) = (None, None);
    if let Some(o) = opts {
        if !o.is_object() {
            return Err(ApiError::bad_request("DeleteOptions must be a JSON object"));
        }
        if let Some(kind) = o.get("kind").and_then(Value::as_str)
            && kind != "DeleteOptions"
        {
            return Err(ApiError::bad_request(format!(
                "no kind \"{kind}\" is registered for DeleteOptions"
            )));
        }
        if let Some(p) = o.get("propagationPolicy").and_then(Value::as_str)
            && !matches!(p, "Orphan" | "Background" | "Foreground")
        {
            return Err(ApiError::invalid(
                "DeleteOptions.meta.k8s.io",
                "DeleteOptions",
                "meta.k8s.io",
                "",
                &[(
                    "propagationPolicy".into(),
                    "FieldValueNotSupported",
                    format!(
                        "Unsupported value: \"{p}\": supported values: \"Foreground\", \"Background\", \"Orphan\", \"nil\""
                    ),
                )],
            ));
        }
        match o.get("dryRun") {
            None | Some(Value::Null) => {}
            Some(Value::Array(a)) if a.iter().all(|x| x == "All") => dry_run |= !a.is_empty(),
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "Invalid dry run value: {other}"
                )));
            }
        }
        pre_uid = o
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(str::to_owned);
        pre_rv = o
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_owned);
    }
    let mut store = lock(&shared.store);
    let Some(old) = store.get(ns, name).cloned() else {
        return Err(ApiError::not_found(name));
    };
    let uid = old.metadata.uid.clone().unwrap_or_default();
    if let Some(want) = pre_uid
        && want != uid
    {
        return Err(ApiError::conflict(
            name,
            &format!("Precondition failed: UID in precondition: {want}, UID in object meta: {uid}"),
        ));
    }
    let cur_rv = old.metadata.resource_version.clone().unwrap_or_default();
    if let Some(want) = pre_rv
        && want != cur_rv
    {
        return Err(ApiError::conflict(
            name,
            &format!(
                "Precondition failed: ResourceVersion in precondition: {want}, ResourceVersion in object meta: {cur_rv}"
            ),
        ));
    }
    if !dry_run {
        store.commit(old, EventType::Deleted);
    }
    Ok(Reply::Json(200, delete_success(name, &uid), Vec::new()))
}

fn get(
    shared: &Shared,
    ns: &str,
    name: &str,
    q: &BTreeMap<String, String>,
) -> Result<Reply, ApiError> {
    parse_rv(q.get("resourceVersion"))?;
    let store = lock(&shared.store);
    match store.get(ns, name) {
        Some(l) => Ok(Reply::Json(200, with_type_meta(l), Vec::new())),
        None => Err(ApiError::not_found(name)),
    }
}

/// A `ListOptions` validation error (422, as kube-apiserver's `ValidateListOptions`).
fn invalid_list_options(field: &str, msg: &str) -> ApiError {
    ApiError::invalid(
        "ListOptions.meta.k8s.io",
        "ListOptions",
        "meta.k8s.io",
        "",
        &[(
            field.to_owned(),
            "FieldValueForbidden",
            format!("Forbidden: {msg}"),
        )],
    )
}

struct Filter {
    ns: Option<String>,
    fields: FieldSelector,
    labels: LabelSelector,
}

impl Filter {
    fn new(ns: Option<String>, q: &BTreeMap<String, String>) -> Result<Self, ApiError> {
        Ok(Self {
            ns,
            fields: FieldSelector::parse(q.get("fieldSelector").map_or("", String::as_str))?,
            labels: LabelSelector::parse(q.get("labelSelector").map_or("", String::as_str))?,
        })
    }

    fn matches(&self, lease: &Lease) -> bool {
        let ns = lease.metadata.namespace.as_deref().unwrap_or_default();
        let name = lease.metadata.name.as_deref().unwrap_or_default();
        self.ns.as_deref().is_none_or(|want| want == ns)
            && self.fields.matches(ns, name)
            && self.labels.matches(lease.metadata.labels.as_ref())
    }
}

fn list(
    shared: &Shared,
    ns: Option<&str>,
    q: &BTreeMap<String, String>,
) -> Result<Reply, ApiError> {
    let rv = parse_rv(q.get("resourceVersion"))?;
    let rv_match = q
        .get("resourceVersionMatch")
        .map(String::as_str)
        .unwrap_or_default();
    if let Some(limit) = q.get("limit")
        && limit.parse::<i64>().is_err()
    {
        return Err(ApiError::bad_request(format!("invalid limit {limit:?}")));
    }
    if q.get("sendInitialEvents").is_some() {
        return Err(invalid_list_options(
            "sendInitialEvents",
            "sendInitialEvents is forbidden for list",
        ));
    }
    match (rv_match, rv) {
        ("", _) => {}
        (_, None) => {
            return Err(invalid_list_options(
                "resourceVersionMatch",
                "resourceVersionMatch is forbidden unless resourceVersion is provided",
            ));
        }
        ("Exact", Some(0)) => {
            return Err(invalid_list_options(
                "resourceVersionMatch",
                "resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
            ));
        }
        ("Exact" | "NotOlderThan", _) => {}
        (other, _) => {
            return Err(ApiError::invalid(
                "ListOptions.meta.k8s.io",
                "ListOptions",
                "meta.k8s.io",
                "",
                &[(
                    "resourceVersionMatch".into(),
                    "FieldValueNotSupported",
                    format!(
                        "Unsupported value: \"{other}\": supported values: \"Exact\", \"NotOlderThan\", \"\""
                    ),
                )],
            ));
        }
    }
    let filter = Filter::new(ns.map(str::to_owned), q)?;
    let store = lock(&shared.store);
    let current = store.rv();
    if let Some(want) = rv.filter(|r| *r > 0) {
        if want > current {
            return Err(ApiError::injected(504).with_message(format!(
                "Too large resource version: {want}, current: {current}"
            )));
        }
        if rv_match == "Exact" && want != current {
            return Err(ApiError::gone(
                "The resourceVersion for the provided list is too old.",
            ));
        }
    }
    let items: Vec<Value> = store
        .list(ns)
        .filter(|l| filter.matches(l))
        .map(|l| serde_json::to_value(l).expect("a Lease always serializes"))
        .collect();
    Ok(Reply::Json(
        200,
        json!({
            "kind": "LeaseList",
            "apiVersion": Lease::API_VERSION,
            "metadata": {"resourceVersion": current.to_string()},
            "items": items,
        }),
        Vec::new(),
    ))
}

impl ApiError {
    fn with_message(mut self, message: String) -> Self {
        self.message = message;
        self
    }
}

fn bookmark_line(rv: u64, initial_events_end: bool) -> Bytes {
    let mut meta = json!({"resourceVersion": rv.to_string(), "creationTimestamp": null});
    if initial_events_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    watch_line(
        "BOOKMARK",
        &json!({"kind": Lease::KIND, "apiVersion": Lease::API_VERSION, "metadata": meta, "spec": {}}),
    )
}

fn watch(
    rc: &ReqCtx<'_>,
    ns: Option<String>,
    q: &BTreeMap<String, String>,
) -> Result<Reply, ApiError> {
    let rv = parse_rv(q.get("resourceVersion"))?;
    let bookmarks = match q.get("allowWatchBookmarks") {
        Some(v) => parse_bool("allowWatchBookmarks", v)?,
        None => false,
    };
    let send_initial = match q.get("sendInitialEvents") {
        Some(v) => Some(parse_bool("sendInitialEvents", v)?),
        None => None,
    };
    let rv_match = q
        .get("resourceVersionMatch")
        .map(String::as_str)
        .unwrap_or_default();
    let timeout = match q.get("timeoutSeconds") {
        Some(t) => Duration::from_secs(
            t.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds {t:?}")))?,
        ),
        None => DEFAULT_WATCH_TIMEOUT,
    };
    if send_initial.is_some() {
        if !bookmarks && send_initial == Some(true) {
            return Err(invalid_list_options(
                "allowWatchBookmarks",
                "sendInitialEvents requires setting allowWatchBookmarks to true",
            ));
        }
        if rv_match != "NotOlderThan" {
            return Err(invalid_list_options(
                "resourceVersionMatch",
                "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
            ));
        }
    } else if !rv_match.is_empty() {
        return Err(invalid_list_options(
            "resourceVersionMatch",
            "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
        ));
    }
    let filter = Filter::new(ns, q)?;
    let initial_state = send_initial.unwrap_or(matches!(rv, None | Some(0)));

    let (tx, body_rx) = mpsc::channel::<Bytes>(256);
    let mut initial: Vec<Bytes> = Vec::new();
    let (rx, start_rv) = {
        let store = lock(&rc.shared.store);
        if initial_state {
            initial.extend(
                store
                    .list(filter.ns.as_deref())
                    .filter(|l| filter.matches(l))
                    .map(|l| watch_line("ADDED", &with_type_meta(l))),
            );
        } else if let Some(after) = rv {
            if after < store.compacted() {
                let e = ApiError::gone(format!(
                    "too old resource version: {after} ({})",
                    store.compacted() + 1
                ));
                initial.push(watch_line("ERROR", &e.to_json()));
                drop(store);
                let _ = tx.try_send(initial.remove(0));
                return Ok(Reply::Raw(stream_response(body_rx)));
            }
            initial.extend(
                store
                    .history_after(after)
                    .filter(|e| filter.matches(&e.object))
                    .map(|e| e.line.clone()),
            );
        }
        (store.subscribe(), store.rv())
    };
    if send_initial == Some(true) {
        initial.push(bookmark_line(start_rv, true));
    }
    let task = WatchTask {
        shared: rc.shared.clone(),
        ctx: rc.ctx.clone(),
        identity: rc.identity.map(str::to_owned),
        ip: rc.ip,
        filter,
        bookmarks: bookmarks.then_some(rc.shared.opts.bookmark_interval),
        timeout,
    };
    tokio::spawn(task.run(tx, rx, initial, start_rv));
    Ok(Reply::Raw(stream_response(body_rx)))
}

fn stream_response(rx: mpsc::Receiver<Bytes>) -> Response<Body> {
    Response::builder()
        .status(200)
        .header(CONTENT_TYPE, "application/json")
        .header("Cache-Control", "no-cache, private")
        .body(Body::Stream(rx))
        .expect("static response parts are valid")
}

struct WatchTask {
    shared: Arc<Shared>,
    ctx: Arc<ConnCtx>,
    identity: Option<String>,
    ip: IpAddr,
    filter: Filter,
    bookmarks: Option<Duration>,
    timeout: Duration,
}

impl WatchTask {
    /// Sends one line, first waiting out a partition of this client. Returns false when the
    /// watch must end.
    async fn send(&self, tx: &mpsc::Sender<Bytes>, line: Bytes) -> bool {
        let partitioned = self
            .shared
            .faults
            .borrow()
            .partition_for(self.identity.as_deref(), self.ip)
            .is_some();
        if partitioned {
            let proceed = tokio::select! {
                p = partition_gate(&self.shared, self.identity.as_deref(), self.ip) => p,
                _ = tx.closed() => return false,
            };
            if !proceed {
                self.ctx.kill.cancel();
                return false;
            }
        }
        tx.send(line).await.is_ok()
    }

    async fn run(
        self,
        tx: mpsc::Sender<Bytes>,
        mut rx: broadcast::Receiver<Arc<StoreEvent>>,
        initial: Vec<Bytes>,
        start_rv: u64,
    ) {
        let deadline = tokio::time::sleep(self.timeout);
        tokio::pin!(deadline);
        for line in initial {
            if !self.send(&tx, line).await {
                return;
            }
        }
        let period = self
            .bookmarks
            .unwrap_or(Duration::from_secs(3600))
            .max(Duration::from_millis(1));
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        let mut last_rv = start_rv;
        loop {
            tokio::select! {
                biased;
                _ = tx.closed() => return,
                _ = &mut deadline => return,
                r = rx.recv() => match r {
                    Ok(ev) => {
                        last_rv = last_rv.max(ev.rv);
                        if self.filter.matches(&ev.object) && !self.send(&tx, ev.line.clone()).await {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "watch fell behind; closing it");
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = ticker.tick(), if self.bookmarks.is_some() => {
                    if !self.send(&tx, bookmark_line(last_rv, false)).await {
                        return;
                    }
                }
            }
        }
    }
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
