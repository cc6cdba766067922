//! The client's continuous probes: ARP requests for the VIP every probe
//! interval, and TCP connects to VIP:6443 every ~10 ms, each on a dedicated OS
//! thread inside the client namespace (precise timing, no async scheduler in
//! the way). Replies are attributed to the probe window they arrive in.

use std::collections::VecDeque;
use std::io::Read as _;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::record::{Probe, Reply, TcpAttempt};
use crate::netns::NetNs;
use crate::packet_socket::{EtherType, PacketSocket, parse_arp};

/// Errors of the probes.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("opening the ARP socket in {ns}: {source}")]
    Socket {
        ns: String,
        #[source]
        source: crate::packet_socket::Error,
    },
    #[error("entering namespace {ns}: {source}")]
    Netns {
        ns: String,
        #[source]
        source: crate::netns::Error,
    },
    #[error("starting a probe thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// TCP port of the stand-in API server on the VIP.
pub const SERVICE_PORT: u16 = 8443;
/// Interval between TCP connects.
pub const TCP_INTERVAL: Duration = Duration::from_millis(10);
/// Connect (and read) timeout of one TCP attempt.
pub const TCP_TIMEOUT: Duration = Duration::from_millis(50);
/// Parallel TCP probe threads; together they start one attempt per TCP_INTERVAL.
pub const TCP_LANES: u32 = 6;
const _: () = assert!(TCP_INTERVAL.as_millis() * TCP_LANES as u128 > TCP_TIMEOUT.as_millis());
/// Hard bound on the life of a probe thread.
const MAX_LIFETIME: Duration = Duration::from_secs(3600);
/// At most this many records are kept per kind (oldest dropped).
const MAX_RECORDS: usize = 500_000;

/// What the client sees right now (updated after every probe).
#[derive(Clone, Debug, Default)]
pub struct ClientView {
    /// MAC that answered the last ARP window, `None` if nobody did.
    pub arp_mac: Option<[u8; 6]>,
    /// Consecutive windows answered by `arp_mac` alone.
    pub arp_streak: u32,
    /// ARP windows sent so far.
    pub arp_probes: u64,
    /// ARP windows with at least one reply.
    pub arp_answered: u64,
    /// Windows answered by two different MACs (split brain).
    pub split_brain: u64,
    /// Node that answered the last TCP attempt (`None`: it failed).
    pub tcp_node: Option<String>,
    /// Consecutive TCP successes from `tcp_node`.
    pub tcp_streak: u32,
    pub tcp_ok: u64,
    pub tcp_fail: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Default)]
struct Buffers {
    arp: VecDeque<Probe>,
    ns: VecDeque<Probe>,
    tcp: VecDeque<TcpAttempt>,
}

/// Running probes. Stopped (threads joined) on drop.
pub struct Prober {
    epoch: Instant,
    stop: Arc<AtomicBool>,
    buffers: Arc<Mutex<Buffers>>,
    view: watch::Receiver<ClientView>,
    threads: Vec<JoinHandle<()>>,
}

/// Spawn a named OS thread that first enters `ns` (network namespace only).
pub(crate) fn spawn_in_ns(
    ns: &NetNs,
    name: &str,
    f: impl FnOnce() + Send + 'static,
) -> Result<JoinHandle<()>, ProbeError> {
    let file = ns.open_file().map_err(|source| ProbeError::Netns {
        ns: ns.name().to_owned(),
        source,
    })?;
    let ns_name = ns.name().to_owned();
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            if let Err(e) = nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET) {
                eprintln!("vip-lab: setns into {ns_name} failed: {e}");
                return;
            }
            drop(file);
            f();
        })
        .map_err(ProbeError::Thread)
}

impl Prober {
    /// Start probing `vip` from the client (`ns`, interface `ifname` with
    /// `mac` and `client_ip`). Times are measured from `epoch`.
    pub fn start(
        ns: &NetNs,
        ifname: &str,
        client_ip: Ipv4Addr,
        vip: Ipv4Addr,
        v6: Option<(Ipv6Addr, Ipv6Addr)>,
        probe_interval: Duration,
        epoch: Instant,
    ) -> Result<Self, ProbeError> {
        let sock = ns
            .try_run(|| PacketSocket::open(ifname, EtherType::Arp))
            .map_err(|source| ProbeError::Netns {
                ns: ns.name().to_owned(),
                source,
            })?
            .map_err(|source| ProbeError::Socket {
                ns: ns.name().to_owned(),
                source,
            })?;
        let stop = Arc::new(AtomicBool::new(false));
        let buffers = Arc::new(Mutex::new(Buffers::default()));
        let (tx, view) = watch::channel(ClientView::default());
        let tx = Arc::new(tx);
        let mut threads = Vec::new();
        {
            let (stop, buffers, tx) = (stop.clone(), buffers.clone(), tx.clone());
            let interval = probe_interval.max(Duration::from_millis(1));
            threads.push(
                std::thread::Builder::new()
                    .name("vip-lab-arp".into())
                    .spawn(move || {
                        arp_loop(&sock, client_ip, vip, interval, epoch, &stop, &buffers, &tx)
                    })
                    .map_err(ProbeError::Thread)?,
            );
        }
        if let Some((client_ip6, vip6)) = v6 {
            let ns_sock = ns
                .try_run(|| PacketSocket::open(ifname, EtherType::Ipv6))
                .map_err(|source| ProbeError::Netns {
                    ns: ns.name().to_owned(),
                    source,
                })?
                .map_err(|source| ProbeError::Socket {
                    ns: ns.name().to_owned(),
                    source,
                })?;
            let (stop, buffers) = (stop.clone(), buffers.clone());
            let interval = probe_interval.max(Duration::from_millis(1));
            threads.push(
                std::thread::Builder::new()
                    .name("vip-lab-ns".into())
                    .spawn(move || {
                        ns_loop(&ns_sock, client_ip6, vip6, interval, epoch, &stop, &buffers)
                    })
                    .map_err(ProbeError::Thread)?,
            );
        }
        // TCP_LANES threads, staggered by TCP_INTERVAL, each on a period of
        // TCP_LANES * TCP_INTERVAL (longer than TCP_TIMEOUT): an attempt
        // starts every TCP_INTERVAL whatever the previous ones are doing, so
        // a hanging connect does not hide the recovery behind its timeout.
        for lane in 0..TCP_LANES {
            let (stop, buffers, tx) = (stop.clone(), buffers.clone(), tx.clone());
            threads.push(spawn_in_ns(ns, "vip-lab-tcp", move || {
                tcp_loop(
                    vip,
                    epoch,
                    epoch + TCP_INTERVAL * lane,
                    &stop,
                    &buffers,
                    &tx,
                );
            })?);
        }
        Ok(Self {
            epoch,
            stop,
            buffers,
            view,
            threads,
        })
    }

    /// The instant probe times are measured from.
    pub fn epoch(&self) -> Instant {
        self.epoch
    }

    /// A receiver of the client's view, updated after every probe.
    pub fn view(&self) -> watch::Receiver<ClientView> {
        self.view.clone()
    }

    /// Take every record gathered so far (times since the epoch).
    pub fn take(&self) -> (Vec<Probe>, Vec<TcpAttempt>) {
        let mut b = lock(&self.buffers);
        (b.arp.drain(..).collect(), b.tcp.drain(..).collect())
    }

    /// Take the NS probes gathered so far (times since the epoch).
    pub fn take_ns(&self) -> Vec<Probe> {
        lock(&self.buffers).ns.drain(..).collect()
    }

    /// Stop the threads and wait for them.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop();
    }
}

/// NS for the IPv6 VIP every `interval`; replies are solicited NAs whose
/// target is the VIP, attributed to the window they arrive in.
fn ns_loop(
    sock: &PacketSocket,
    client_ip6: Ipv6Addr,
    vip6: Ipv6Addr,
    interval: Duration,
    epoch: Instant,
    stop: &AtomicBool,
    buffers: &Mutex<Buffers>,
) {
    let target = vip6.octets();
    let request = vip_common::frame::craft::neighbour_solicitation(
        sock.mac(),
        client_ip6.octets(),
        target,
        true,
        false,
        None,
    );
    let me = client_ip6.octets();
    // A solicited NA for the VIP, addressed to us: an answer to a probe. The
    // new leader's unsolicited NAs (to all-nodes, Solicited clear) are
    // announcements, not answers, and must not count as a second responder.
    let is_na = |f: &[u8]| {
        f.len() >= 78
            && f[12..14] == [0x86, 0xdd]
            && f[20] == 58
            && f[38..54] == me
            && f[54] == 136
            && f[58] & 0x40 != 0
            && f[62..78] == target
    };
    let started = Instant::now();
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) && started.elapsed() < MAX_LIFETIME {
        let sent_at = Instant::now();
        if let Err(e) = sock.send(&request) {
            eprintln!("vip-lab: NS probe send failed: {e}");
        }
        let window_end = next.max(sent_at) + interval;
        let replies = collect_window(sock, window_end, epoch, interval, "NS", |f| {
            is_na(f).then(|| {
                let mut mac = [0u8; 6];
                mac.copy_from_slice(&f[6..12]);
                mac
            })
        });
        push_bounded(
            &mut lock(buffers).ns,
            Probe {
                sent: sent_at.duration_since(epoch),
                replies,
            },
        );
        next = window_end;
    }
}

/// Receives until `window_end` every frame for which `answer` names the MAC
/// that answered, with its arrival time. Bounded by `window_end`.
fn collect_window(
    sock: &PacketSocket,
    window_end: Instant,
    epoch: Instant,
    interval: Duration,
    kind: &str,
    answer: impl Fn(&[u8]) -> Option<[u8; 6]>,
) -> Vec<Reply> {
    let mut replies = Vec::new();
    loop {
        match sock.recv_matching(window_end, |f| answer(f).is_some()) {
            Ok(Some(frame)) => {
                if let Some(mac) = answer(&frame) {
                    replies.push(Reply {
                        at: epoch.elapsed(),
                        mac,
                    });
                }
            }
            Ok(None) => return replies,
            Err(e) => {
                eprintln!("vip-lab: {kind} probe receive failed: {e}");
                std::thread::sleep(interval);
                return replies;
            }
        }
    }
}

fn push_bounded<T>(q: &mut VecDeque<T>, item: T) {
    q.push_back(item);
    if q.len() > MAX_RECORDS {
        q.pop_front();
    }
}

#[expect(
    clippy::too_many_arguments,
    reason = "a thread body with its captured state"
)]
fn arp_loop(
    sock: &PacketSocket,
    client_ip: Ipv4Addr,
    vip: Ipv4Addr,
    interval: Duration,
    epoch: Instant,
    stop: &AtomicBool,
    buffers: &Mutex<Buffers>,
    tx: &watch::Sender<ClientView>,
) {
    let request =
        vip_common::frame::craft::arp_request(sock.mac(), client_ip.octets(), vip.octets(), None);
    let started = Instant::now();
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) && started.elapsed() < MAX_LIFETIME {
        let sent_at = Instant::now();
        if let Err(e) = sock.send(&request) {
            eprintln!("vip-lab: ARP probe send failed: {e}");
        }
        let window_end = next.max(sent_at) + interval;
        let replies = collect_window(sock, window_end, epoch, interval, "ARP", |f| {
            parse_arp(f)
                .filter(|a| a.op == 2 && a.sender_ip == vip)
                .map(|a| a.sender_mac)
        });
        let first = replies.first().map(|r| r.mac);
        let split = replies.iter().any(|r| Some(r.mac) != first);
        tx.send_modify(|v| {
            v.arp_probes += 1;
            if first.is_some() {
                v.arp_answered += 1;
            }
            if split {
                v.split_brain += 1;
            }
            match (first, split) {
                (Some(m), false) if v.arp_mac == Some(m) => v.arp_streak += 1,
                (Some(m), false) => {
                    v.arp_mac = Some(m);
                    v.arp_streak = 1;
                }
                _ => {
                    v.arp_mac = first;
                    v.arp_streak = 0;
                }
            }
        });
        push_bounded(
            &mut lock(buffers).arp,
            Probe {
                sent: sent_at.duration_since(epoch),
                replies,
            },
        );
        next = window_end;
    }
}

fn tcp_attempt(vip: Ipv4Addr) -> Option<String> {
    let addr = SocketAddr::from((vip, SERVICE_PORT));
    let mut stream = TcpStream::connect_timeout(&addr, TCP_TIMEOUT).ok()?;
    stream.set_read_timeout(Some(TCP_TIMEOUT)).ok()?;
    let mut buf = [0u8; 64];
    let mut len = 0;
    // Bounded: at most buf.len() bytes, each read bounded by the timeout.
    while len < buf.len() {
        match stream.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(_) => return None,
        }
    }
    let name = String::from_utf8_lossy(&buf[..len]).trim().to_owned();
    (!name.is_empty()).then_some(name)
}

fn tcp_loop(
    vip: Ipv4Addr,
    epoch: Instant,
    first: Instant,
    stop: &AtomicBool,
    buffers: &Mutex<Buffers>,
    tx: &watch::Sender<ClientView>,
) {
    let started = Instant::now();
    let period = TCP_INTERVAL * TCP_LANES;
    let mut next = first;
    std::thread::sleep(next.saturating_duration_since(Instant::now()));
    while !stop.load(Ordering::Relaxed) && started.elapsed() < MAX_LIFETIME {
        let t0 = Instant::now();
        let node = tcp_attempt(vip);
        let took = t0.elapsed();
        tx.send_modify(|v| {
            match &node {
                Some(n) => {
                    v.tcp_ok += 1;
                    if v.tcp_node.as_ref() == Some(n) {
                        v.tcp_streak += 1;
                    } else {
                        v.tcp_streak = 1;
                    }
                }
                None => {
                    v.tcp_fail += 1;
                    v.tcp_streak = 0;
                }
            }
            v.tcp_node.clone_from(&node);
        });
        push_bounded(
            &mut lock(buffers).tcp,
            TcpAttempt {
                started: t0.duration_since(epoch),
                took,
                node,
            },
        );
        next = (next + period).max(Instant::now());
        // Pacing of a periodic probe, not synchronisation.
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
}
