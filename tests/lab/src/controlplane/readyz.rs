//! Polling kube-apiserver's `/readyz` from inside a node namespace, over TLS
//! with the super-admin client certificate.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use super::Error;
use super::process::Process;
use crate::netns::NetNs;

/// Time between two `/readyz` requests while waiting.
const POLL: Duration = Duration::from_millis(100);

/// A rustls client trusting `ca_pem` and presenting `cert_pem`/`key_pem`.
pub fn client_config(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<Arc<rustls::ClientConfig>, Error> {
    let tls = |e: &dyn std::fmt::Display| Error::Tls(e.to_string());
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(ca.map_err(|e| tls(&e))?).map_err(|e| tls(&e))?;
    }
    let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls(&e))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| tls(&e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls(&e))?
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .map_err(|e| tls(&e))?;
    Ok(Arc::new(cfg))
}

/// One `GET path` to `addr` (certificate checked for `server_name`): the
/// status code and the body.
pub fn get(
    cfg: &Arc<rustls::ClientConfig>,
    addr: SocketAddr,
    server_name: &str,
    path: &str,
) -> Result<(u16, String), String> {
    let name = ServerName::try_from(server_name.to_owned()).map_err(|e| e.to_string())?;
    let conn = rustls::ClientConnection::new(cfg.clone(), name).map_err(|e| e.to_string())?;
    let sock =
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let mut tls = rustls::StreamOwned::new(conn, sock);
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: {server_name}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    // The server closes the connection: an unclean close still leaves the
    // whole reply in `raw`.
    let _ = tls.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no HTTP reply ({} bytes)", raw.len()))?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    Ok((status, body))
}

/// Polls `https://addr/readyz` from inside `ns` until it answers 200, a
/// process of `watch` exits (its log tail in the error) or `timeout` passes.
pub fn wait_ready(
    ns: &NetNs,
    cfg: &Arc<rustls::ClientConfig>,
    addr: SocketAddr,
    watch: &mut [&mut Process],
    timeout: Duration,
) -> Result<Duration, Error> {
    let started = Instant::now();
    let deadline = started + timeout;
    loop {
        for p in watch.iter_mut() {
            if let Some(status) = p.exited() {
                return Err(Error::Exited {
                    name: p.name().to_owned(),
                    status,
                    tail: p.tail(30),
                });
            }
        }
        let reply = ns
            .try_run(|| get(cfg, addr, "kubernetes", "/readyz"))
            .map_err(|e| Error::Tls(e.to_string()))?;
        let last = match reply {
            Ok((200, _)) => return Ok(started.elapsed()),
            Ok((code, body)) => format!("HTTP {code}: {}", body.trim()),
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            return Err(Error::NotReady {
                addr,
                timeout,
                last,
                tail: watch.last().map(|p| p.tail(30)).unwrap_or_default(),
            });
        }
        std::thread::sleep(POLL);
    }
}
