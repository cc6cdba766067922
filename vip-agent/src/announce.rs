//! Gratuitous ARP and unsolicited neighbour advertisements over AF_PACKET,
//! sent when this node takes the VIP over: a burst at once, a few repeats,
//! then an optional slow refresh while it leads.

use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use tokio::sync::watch;
use tracing::{debug, warn};
use vip_common::frame::announce::{gratuitous_arp, unsolicited_na};

#[derive(Clone, Debug)]
pub struct AnnounceConfig {
    /// Frames per VIP sent at once on takeover.
    pub burst: u32,
    /// Further single announcements after the burst...
    pub repeats: u32,
    /// ...this far apart.
    pub repeat_interval: Duration,
    /// Then one every this long while leading (zero: never).
    pub refresh_interval: Duration,
}

pub struct Announcer {
    sock: OwnedFd,
    ifindex: u32,
    frames: Vec<Vec<u8>>,
}

impl Announcer {
    pub fn new(ifindex: u32, mac: [u8; 6], vips: &[IpAddr]) -> std::io::Result<Self> {
        // SAFETY: plain socket(2) call; the fd is owned by OwnedFd at once.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh, valid descriptor nobody else owns.
        let sock = unsafe { OwnedFd::from_raw_fd(fd) };
        let frames = vips
            .iter()
            .map(|ip| match ip {
                IpAddr::V4(v4) => gratuitous_arp(mac, v4.octets()),
                IpAddr::V6(v6) => unsolicited_na(mac, v6.octets()),
            })
            .collect();
        Ok(Self {
            sock,
            ifindex,
            frames,
        })
    }

    /// Sends one announcement per VIP. Returns how many frames left.
    pub fn send_once(&self) -> usize {
        let mut sent = 0;
        for frame in &self.frames {
            // SAFETY: sockaddr_ll is plain data; zeroed is a valid start.
            let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_ifindex = self.ifindex as i32;
            addr.sll_halen = 6;
            addr.sll_addr[..6].copy_from_slice(&frame[..6]);
            // SAFETY: buffer and address are valid for the lengths given.
            let n = unsafe {
                libc::sendto(
                    self.sock.as_raw_fd(),
                    frame.as_ptr().cast(),
                    frame.len(),
                    0,
                    (&raw const addr).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            if n < 0 {
                warn!(error = %std::io::Error::last_os_error(), "sending an announcement failed");
            } else {
                sent += 1;
            }
        }
        sent
    }

    /// Runs for as long as `leading` says so: burst + repeats on each rising
    /// edge, then the slow refresh. Returns when the sender is dropped.
    pub async fn run(
        self,
        cfg: AnnounceConfig,
        mut leading: watch::Receiver<bool>,
        sent: impl Fn(usize),
    ) {
        loop {
            // Wait for a rising edge.
            while !*leading.borrow_and_update() {
                if leading.changed().await.is_err() {
                    return;
                }
            }
            for _ in 0..cfg.burst.max(1) {
                sent(self.send_once());
            }
            debug!(burst = cfg.burst, "takeover announced");
            let mut schedule: Vec<Duration> =
                (0..cfg.repeats).map(|_| cfg.repeat_interval).collect();
            loop {
                let next = match schedule.pop() {
                    Some(d) => d,
                    None if cfg.refresh_interval.is_zero() => Duration::MAX,
                    None => cfg.refresh_interval,
                };
                tokio::select! {
                    r = leading.changed() => {
                        if r.is_err() { return; }
                        if !*leading.borrow() { break; }
                    }
                    _ = tokio::time::sleep(next.min(Duration::from_secs(86_400))) => sent(self.send_once()),
                }
            }
        }
    }
}
