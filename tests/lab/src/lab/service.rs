//! A tiny TCP service on VIP:6443 in each node namespace, standing in for the
//! API server: it answers every connection with the node's name and closes.
//! Bound with IP_FREEBIND so it listens before the VIP is configured; it
//! accepts only while the node holds the address.

use std::io::Write as _;
use std::net::{Ipv4Addr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::probe::{ProbeError, spawn_in_ns};
use crate::netns::NetNs;

/// Errors of the VIP service.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{op} for {vip}:{port} in {ns}: {source}")]
    Sys {
        op: &'static str,
        vip: Ipv4Addr,
        port: u16,
        ns: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Netns(#[from] crate::netns::Error),
    #[error(transparent)]
    Thread(#[from] ProbeError),
}

/// Hard bound on the life of a service thread.
const MAX_LIFETIME: Duration = Duration::from_secs(3600);

/// The running service; stopped on drop.
pub struct VipService {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

fn freebind_listener(
    vip: Ipv4Addr,
    port: u16,
) -> Result<TcpListener, (&'static str, std::io::Error)> {
    let err = |op| (op, std::io::Error::last_os_error());
    // SAFETY: plain socket(2); the result is checked and owned right away.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(err("socket"));
    }
    // SAFETY: `fd` is a fresh descriptor nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let one: libc::c_int = 1;
    for (level, opt, name) in [
        (libc::SOL_IP, libc::IP_FREEBIND, "setsockopt(IP_FREEBIND)"),
        (
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            "setsockopt(SO_REUSEADDR)",
        ),
    ] {
        // SAFETY: setsockopt reads one int from a live local.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                level,
                opt,
                (&raw const one).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(err(name));
        }
    }
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(vip).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: bind reads a sockaddr_in of the given size from a live local.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&raw const addr).cast(),
            size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(err("bind"));
    }
    // SAFETY: listen on a bound socket we own.
    if unsafe { libc::listen(fd.as_raw_fd(), 128) } < 0 {
        return Err(err("listen"));
    }
    let listener = TcpListener::from(fd);
    listener
        .set_nonblocking(true)
        .map_err(|e| ("set_nonblocking", e))?;
    Ok(listener)
}

impl VipService {
    /// Listen on `vip:port` inside `ns`, answering with `name`.
    pub fn start(ns: &NetNs, vip: Ipv4Addr, port: u16, name: &str) -> Result<Self, ServiceError> {
        let listener = ns
            .try_run(|| freebind_listener(vip, port))?
            .map_err(|(op, source)| ServiceError::Sys {
                op,
                vip,
                port,
                ns: ns.name().to_owned(),
                source,
            })?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let answer = format!("{name}\n").into_bytes();
        // The listener already belongs to the node namespace; the thread only serves it.
        let thread = spawn_in_ns(ns, &format!("svc-{name}"), move || {
            serve(&listener, &answer, &flag);
        })?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

fn serve(listener: &TcpListener, answer: &[u8], stop: &AtomicBool) {
    let started = Instant::now();
    while !stop.load(Ordering::Relaxed) && started.elapsed() < MAX_LIFETIME {
        let mut pfd = libc::pollfd {
            fd: listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll on one live pollfd, 50 ms at most (so `stop` is seen).
        let rc = unsafe { libc::poll(&raw mut pfd, 1, 50) };
        if rc <= 0 {
            continue;
        }
        // Bounded: the listener is non-blocking, at most 64 per wake-up.
        for _ in 0..64 {
            match listener.accept() {
                Ok((mut s, _)) => {
                    let _ = s.set_nonblocking(false);
                    let _ = s.set_write_timeout(Some(Duration::from_millis(100)));
                    let _ = s.write_all(answer);
                }
                Err(_) => break,
            }
        }
    }
}

impl Drop for VipService {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
