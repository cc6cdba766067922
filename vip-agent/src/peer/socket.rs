//! The peer channel's UDP socket: receive, authenticate, hand to the state
//! (which answers heartbeats with acks at once), and send the leader's
//! heartbeats every `h` and a non-member's Hello every second.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::net::UdpSocket;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::wire::{Message, WireError};
use super::{PeerStats, Peers};
use crate::clock::MonoTime;

/// How often a non-member asks the holder to heartbeat it.
pub const HELLO_EVERY: Duration = Duration::from_secs(1);

fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Bind the peer socket (`--peer-address`:`--peer-port`) and run it on its
/// own thread until `shutdown`: heartbeats and acks must not wait behind the
/// agent's other work (a leader whose elector is slow still heartbeats, so
/// its members do not take over; that only restricts them). The thread asks
/// for SCHED_FIFO (priority [`RT_PRIORITY`]) and runs at the normal priority
/// when that is refused (no CAP_SYS_NICE).
pub fn spawn(
    addr: SocketAddr,
    peers: Peers,
    shutdown: CancellationToken,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let socket = std::net::UdpSocket::bind(addr)?;
    socket.set_nonblocking(true)?;
    std::thread::Builder::new()
        .name("vip-peer".into())
        .spawn(move || {
            realtime();
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    warn!(error = %e, "fast path: no runtime for the peer thread; the slow path alone");
                    return;
                }
            };
            rt.block_on(async move {
                match UdpSocket::from_std(socket) {
                    Ok(s) => run(s, peers, shutdown).await,
                    Err(e) => warn!(error = %e, "fast path: peer socket unusable; the slow path alone"),
                }
            });
        })
}

/// SCHED_FIFO priority of the peer thread (low: above every normal thread).
pub const RT_PRIORITY: i32 = 10;

fn realtime() {
    // pthread_setschedparam, not sched_setscheduler: musl (the image) stubs
    // the latter out with ENOSYS.
    // SAFETY: sched_param is plain integers (musl adds a few to glibc's one),
    // so all-zero is a valid value; the call changes only this thread's
    // policy and reads `param` during the call.
    let r = unsafe {
        let mut param: libc::sched_param = std::mem::zeroed();
        param.sched_priority = RT_PRIORITY;
        libc::pthread_setschedparam(libc::pthread_self(), libc::SCHED_FIFO, &param)
    };
    if r == 0 {
        debug!(priority = RT_PRIORITY, "peer thread runs SCHED_FIFO");
    } else {
        warn!(
            error = %std::io::Error::from_raw_os_error(r),
            "peer thread at normal priority (SCHED_FIFO refused: grant CAP_SYS_NICE); under CPU \
             pressure heartbeats may be late and members take over spuriously"
        );
    }
}

async fn send(socket: &UdpSocket, peers: &Peers, out: Vec<(SocketAddr, Message)>) {
    if out.is_empty() {
        return;
    }
    let Some(key) = peers.state().key.clone() else {
        return;
    };
    for (to, m) in out {
        let kind = m.kind();
        let d = m.encode(&key);
        match socket.send_to(&d, to).await {
            Ok(_) => PeerStats::count(&peers.stats().sent[kind as usize - 1]),
            Err(e) => debug!(to = %to, error = %e, "peer message not sent"),
        }
    }
}

/// Runs until `shutdown`.
pub async fn run(socket: UdpSocket, peers: Peers, shutdown: CancellationToken) {
    let mut buf = vec![0u8; super::wire::MAX_DATAGRAM + 1];
    let mut beat = tokio::time::interval(peers.timing().heartbeat);
    beat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut hello = tokio::time::interval(HELLO_EVERY);
    hello.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut hello_to = None;
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            r = socket.recv_from(&mut buf) => {
                let Ok((n, src)) = r else { continue };
                let reply = receive(&peers, &buf[..n], src);
                if let Some(r) = reply {
                    send(&socket, &peers, vec![r]).await;
                }
            }
            _ = beat.tick() => {
                let out = peers.state().heartbeats(MonoTime::now(), wall_ns());
                send(&socket, &peers, out).await;
                // A new Hello target (the record changed): say Hello at once.
                let to = peers.state().hello_to;
                if to != hello_to {
                    hello_to = to;
                    hello.reset_immediately();
                }
            }
            _ = hello.tick() => {
                let out = peers.state().hello(wall_ns());
                send(&socket, &peers, out.into_iter().collect()).await;
            }
        }
    }
}

fn receive(peers: &Peers, datagram: &[u8], src: SocketAddr) -> Option<(SocketAddr, Message)> {
    let stats = peers.stats();
    let mut s = peers.state();
    let Some(key) = &s.key else {
        PeerStats::count(&stats.rejected_no_key);
        return None;
    };
    let msg = match Message::decode(datagram, key) {
        Ok(m) => m,
        Err(WireError::Mac) => {
            PeerStats::count(&stats.rejected_mac);
            return None;
        }
        Err(WireError::Malformed) => {
            PeerStats::count(&stats.rejected_malformed);
            return None;
        }
    };
    let (look, reply) = s.receive(msg, src, MonoTime::now(), wall_ns(), stats);
    drop(s);
    if look {
        peers.bump();
    }
    reply
}
