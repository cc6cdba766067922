//! The HTTPS side: accepting connections here; routing and the gates in front
//! of the API ([`route`]), request bodies ([`decode`]), the writing verbs
//! ([`write`]), list and watch ([`read`]).

mod decode;
mod read;
mod request;
mod route;
mod write;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::Frame;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::faults::PartitionMode;
use super::{Shared, lock};

use route::handle;
pub(crate) use write::init_new_meta;

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
