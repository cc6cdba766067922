//! `/metrics`, `/healthz` (`/livez`), `/readyz` over HTTP/1.1 (hyper), one
//! request per connection, bounded: at most [`MAX_CONNECTIONS`] at once, the
//! request head read within [`HEAD_TIMEOUT`] into at most [`MAX_HEAD`] bytes,
//! a whole connection within [`CONNECTION_TIMEOUT`].

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::encoding::prometheus_text;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::Metrics;

pub const MAX_CONNECTIONS: usize = 16;
pub const MAX_HEAD: usize = 8192;
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds `addr` ("" = disabled).
pub async fn bind(addr: &str) -> anyhow::Result<Option<TcpListener>> {
    if addr.is_empty() {
        return Ok(None);
    }
    let sa: SocketAddr = addr
        .parse()
        .map_err(|e| anyhow::anyhow!("--metrics-addr {addr:?}: {e}; fix: give IP:PORT such as 0.0.0.0:2112, or an empty value to disable"))?;
    let l = TcpListener::bind(sa)
        .await
        .map_err(|e| anyhow::anyhow!("--metrics-addr {addr}: cannot listen: {e}"))?;
    Ok(Some(l))
}

/// Serves until `shutdown`.
pub async fn serve(listener: TcpListener, metrics: Metrics, shutdown: CancellationToken) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (tcp, peer) = tokio::select! {
            () = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => { warn!(error = %e, "metrics accept"); continue; }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            debug!(%peer, "metrics: too many connections; closed");
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = service_fn(move |req| {
                let response = respond(&metrics, &req);
                debug!(%peer, method = %req.method(), path = req.uri().path(), status = response.status().as_u16(), "metrics request");
                async move { Ok::<_, Infallible>(response) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .keep_alive(false)
                .max_buf_size(MAX_HEAD)
                .timer(TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .serve_connection(TokioIo::new(tcp), service);
            match tokio::time::timeout(CONNECTION_TIMEOUT, conn).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => debug!(%peer, error = %e, "metrics connection"),
                Err(_) => debug!(%peer, "metrics connection timed out"),
            }
        });
    }
}

fn respond(metrics: &Metrics, req: &http::Request<Incoming>) -> Response<Full<Bytes>> {
    let text = |code: StatusCode, body: &'static str| reply(code, "text/plain", body.into());
    if req.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    }
    match req.uri().path() {
        "/metrics" => match metrics.render() {
            Ok(body) => reply(StatusCode::OK, prometheus_text::CONTENT_TYPE, body.into()),
            Err(e) => {
                warn!(error = %e, "encoding /metrics failed");
                text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "encoding the metrics failed\n",
                )
            }
        },
        "/healthz" | "/livez" => text(StatusCode::OK, "ok\n"),
        "/readyz" if metrics.ready() => text(StatusCode::OK, "ok\n"),
        "/readyz" => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: XDP responder not attached yet\n",
        ),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn reply(code: StatusCode, content_type: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = code;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    r
}
