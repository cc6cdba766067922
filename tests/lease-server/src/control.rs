//! The plain-HTTP control API (bind it to 127.0.0.1): the same operations as
//! [`LeaseServerHandle`](super::LeaseServerHandle), as JSON.
//!
//! | method and path | body | effect |
//! | --- | --- | --- |
//! | `GET /_lab/faults` | | the [`Faults`] in force |
//! | `PUT` or `POST /_lab/faults` | [`Faults`] (missing fields = default) | replace them |
//! | `POST /_lab/partition` | `{"target":{"identity":"a"}\|{"ip":"10.0.0.2"},"mode":"hang\|blackhole\|refuse"}` | partition |
//! | `POST /_lab/forbid` | `{"identity":"a"}` | 403 for that identity |
//! | `POST /_lab/heal` | | remove every fault |
//! | `POST /_lab/restart` | optional `{"downtime_ms":500}` | drop every connection and watch, and the watch history (as a real restart) |
//! | `POST /_lab/compact` | | drop the watch history (old resourceVersions get 410) |
//! | `GET /_lab/counters` | | requests per identity by verb |
//! | `POST /_lab/counters/reset` | | reset them |
//! | `GET /_lab/rejected`, `/_lab/warnings`, `/_lab/requests`, `/_lab/leases` | | the logs and the store |
//!
//! The `/_lab` prefix is optional.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use super::{Faults, LeaseServerHandle, PartitionMode, Target};

pub(crate) async fn serve(handle: LeaseServerHandle, listener: TcpListener) {
    let shutdown = handle.shared.shutdown.clone();
    loop {
        let (tcp, _) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(_) => continue,
            },
        };
        let h = handle.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let h = h.clone();
                async move { Ok::<_, Infallible>(control(h, req).await) }
            });
            let conn =
                hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), svc);
            tokio::select! {
                _ = conn => {}
                _ = stop.cancelled() => {}
            }
        });
    }
}

fn reply(code: StatusCode, v: &Value) -> Response<Full<Bytes>> {
    let mut body = serde_json::to_vec_pretty(v).expect("a JSON value always serializes");
    body.push(b'\n');
    Response::builder()
        .status(code)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("static response parts are valid")
}

fn to_json<T: serde::Serialize>(t: &T) -> Value {
    serde_json::to_value(t).unwrap_or(Value::Null)
}

#[derive(Deserialize)]
struct PartitionReq {
    target: Target,
    #[serde(default)]
    mode: PartitionMode,
}

#[derive(Deserialize, Default)]
struct ForbidReq {
    identity: String,
}

#[derive(Deserialize, Default)]
struct RestartReq {
    #[serde(default)]
    downtime_ms: u64,
}

async fn body_json<T: serde::de::DeserializeOwned + Default>(
    req: Request<Incoming>,
    empty_ok: bool,
) -> Result<T, String> {
    let bytes = Limited::new(req.into_body(), 1 << 20)
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    if bytes.iter().all(u8::is_ascii_whitespace) && empty_ok {
        return Ok(T::default());
    }
    serde_json::from_slice(&bytes).map_err(|e| e.to_string())
}

impl Default for PartitionReq {
    fn default() -> Self {
        Self {
            target: Target::Identity(String::new()),
            mode: PartitionMode::Hang,
        }
    }
}

async fn control(h: LeaseServerHandle, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    let path = path.strip_prefix("/_lab").unwrap_or(&path).to_owned();
    let method = req.method().clone();
    let bad = |e: String| reply(StatusCode::BAD_REQUEST, &json!({"error": e}));
    let ok = || reply(StatusCode::OK, &json!({"ok": true}));
    match (method, path.as_str()) {
        (Method::GET, "/faults") => reply(StatusCode::OK, &to_json(&h.faults())),
        (Method::PUT | Method::POST, "/faults") => match body_json::<Faults>(req, true).await {
            Ok(f) => {
                h.set_faults(f);
                reply(StatusCode::OK, &to_json(&h.faults()))
            }
            Err(e) => bad(e),
        },
        (Method::POST, "/partition") => match body_json::<PartitionReq>(req, false).await {
            Ok(p) => {
                h.partition_with(p.target, p.mode);
                ok()
            }
            Err(e) => bad(e),
        },
        (Method::POST, "/forbid") => match body_json::<ForbidReq>(req, false).await {
            Ok(f) => {
                h.forbid(&f.identity);
                ok()
            }
            Err(e) => bad(e),
        },
        (Method::POST, "/heal") => {
            h.heal();
            ok()
        }
        (Method::POST, "/restart") => match body_json::<RestartReq>(req, true).await {
            Ok(r) => {
                h.restart_with_downtime(Duration::from_millis(r.downtime_ms))
                    .await;
                ok()
            }
            Err(e) => bad(e),
        },
        (Method::POST, "/compact") => {
            h.compact();
            ok()
        }
        (Method::GET, "/counters") => reply(StatusCode::OK, &to_json(&h.counters())),
        (Method::POST, "/counters/reset") => {
            h.reset_counters();
            ok()
        }
        (Method::GET, "/rejected") => reply(StatusCode::OK, &to_json(&h.rejected())),
        (Method::GET, "/warnings") => reply(StatusCode::OK, &to_json(&h.warnings())),
        (Method::GET, "/requests") => reply(StatusCode::OK, &to_json(&h.requests())),
        (Method::GET, "/leases") => reply(StatusCode::OK, &to_json(&h.leases())),
        _ => reply(
            StatusCode::NOT_FOUND,
            &json!({"error": format!("no such control endpoint: {path}")}),
        ),
    }
}
