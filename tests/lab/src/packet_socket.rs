//! AF_PACKET raw sockets for crafting and catching frames in the lab.
//!
//! A socket binds to an interface of the CURRENT thread's network namespace:
//! create it inside [`crate::netns::NetNs::run`], then use it from anywhere.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;

/// Errors of the raw-socket helpers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid interface name {0:?}")]
    BadName(String),
    #[error("no interface {name} in this namespace: {source}")]
    NoSuchInterface { name: String, source: Errno },
    #[error("{op} on {ifname} failed: {source}")]
    Sys {
        op: &'static str,
        ifname: String,
        source: Errno,
    },
    #[error("short send on {ifname}: {sent} of {len} bytes")]
    ShortSend {
        ifname: String,
        sent: usize,
        len: usize,
    },
}

/// Result of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Which frames a socket receives (by EtherType, as in `socket(AF_PACKET, .., proto)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EtherType {
    /// Every frame, incoming and outgoing (`ETH_P_ALL`).
    All,
    /// ARP (0x0806).
    Arp,
    /// IPv4 (0x0800).
    Ipv4,
    /// IPv6 (0x86DD), which carries neighbour discovery.
    Ipv6,
    /// Any other EtherType.
    Other(u16),
}

impl EtherType {
    /// The 16-bit protocol number in host order.
    pub fn value(self) -> u16 {
        match self {
            Self::All => 0x0003,
            Self::Arp => 0x0806,
            Self::Ipv4 => 0x0800,
            Self::Ipv6 => 0x86DD,
            Self::Other(v) => v,
        }
    }
}

/// Index and MAC address of an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IfInfo {
    pub index: u32,
    pub mac: [u8; 6],
}

fn ifreq_for(ifname: &str) -> Result<libc::ifreq> {
    let bytes = ifname.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return Err(Error::BadName(ifname.to_owned()));
    }
    // SAFETY: `ifreq` is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    Ok(req)
}

/// Index of `ifname` in the current thread's namespace.
pub fn ifindex(ifname: &str) -> Result<u32> {
    let c = CString::new(ifname).map_err(|_| Error::BadName(ifname.to_owned()))?;
    nix::net::if_::if_nametoindex(c.as_c_str()).map_err(|source| Error::NoSuchInterface {
        name: ifname.to_owned(),
        source,
    })
}

/// MAC address of `ifname` in the current thread's namespace (SIOCGIFHWADDR).
pub fn mac_address(ifname: &str) -> Result<[u8; 6]> {
    let mut req = ifreq_for(ifname)?;
    let sock = new_socket(libc::AF_INET, libc::SOCK_DGRAM, 0, ifname)?;
    // SAFETY: SIOCGIFHWADDR reads `ifr_name` and writes `ifr_hwaddr` of the
    // `ifreq` we own, which lives across the call.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFHWADDR, &raw mut req) };
    if rc < 0 {
        return Err(Error::NoSuchInterface {
            name: ifname.to_owned(),
            source: Errno::last(),
        });
    }
    // SAFETY: the ioctl succeeded, so the `ifru_hwaddr` member is the one written.
    let data = unsafe { req.ifr_ifru.ifru_hwaddr }.sa_data;
    let mut mac = [0u8; 6];
    for (dst, src) in mac.iter_mut().zip(data) {
        *dst = src as u8;
    }
    Ok(mac)
}

/// Index and MAC of `ifname` in the current thread's namespace.
pub fn interface_info(ifname: &str) -> Result<IfInfo> {
    Ok(IfInfo {
        index: ifindex(ifname)?,
        mac: mac_address(ifname)?,
    })
}

/// Format a MAC as `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn new_socket(
    domain: libc::c_int,
    ty: libc::c_int,
    proto: libc::c_int,
    ifname: &str,
) -> Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, proto) };
    if fd < 0 {
        return Err(Error::Sys {
            op: "socket",
            ifname: ifname.to_owned(),
            source: Errno::last(),
        });
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// An AF_PACKET/SOCK_RAW socket bound to one interface: frames include the
/// Ethernet header, both ways.
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
    ifname: String,
    ifindex: u32,
    mac: [u8; 6],
}

/// Options for [`PacketSocket::open_with`].
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Frames to receive.
    pub ethertype: EtherType,
    /// Do not receive the frames this host sends (`PACKET_IGNORE_OUTGOING`);
    /// only matters for [`EtherType::All`].
    pub ignore_outgoing: bool,
    /// Receive frames for any destination MAC (promiscuous membership).
    pub promiscuous: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            ethertype: EtherType::All,
            ignore_outgoing: true,
            promiscuous: false,
        }
    }
}

impl PacketSocket {
    /// A socket on `ifname` receiving `ethertype` frames, not its own.
    pub fn open(ifname: &str, ethertype: EtherType) -> Result<Self> {
        Self::open_with(
            ifname,
            Options {
                ethertype,
                ..Options::default()
            },
        )
    }

    /// A socket on `ifname` with explicit options.
    pub fn open_with(ifname: &str, opts: Options) -> Result<Self> {
        let info = interface_info(ifname)?;
        // Protocol 0 at creation: the socket receives nothing until bind()
        // sets the protocol AND the interface, so no frame of another
        // interface slips in between.
        let fd = new_socket(libc::AF_PACKET, libc::SOCK_RAW, 0, ifname)?;
        let sys = |op: &'static str| Error::Sys {
            op,
            ifname: ifname.to_owned(),
            source: Errno::last(),
        };

        if opts.ignore_outgoing {
            let one: libc::c_int = 1;
            // SAFETY: setsockopt reads an int from a live local of the right size.
            let rc = unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_PACKET,
                    libc::PACKET_IGNORE_OUTGOING,
                    (&raw const one).cast(),
                    size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if rc < 0 {
                return Err(sys("setsockopt(PACKET_IGNORE_OUTGOING)"));
            }
        }

        let ifindex =
            libc::c_int::try_from(info.index).map_err(|_| Error::BadName(ifname.to_owned()))?;
        if opts.promiscuous {
            // SAFETY: `packet_mreq` is plain old data; all-zero is valid.
            let mut mreq: libc::packet_mreq = unsafe { std::mem::zeroed() };
            mreq.mr_ifindex = ifindex;
            mreq.mr_type = libc::PACKET_MR_PROMISC as libc::c_ushort;
            // SAFETY: setsockopt reads a `packet_mreq` from a live local.
            let rc = unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_PACKET,
                    libc::PACKET_ADD_MEMBERSHIP,
                    (&raw const mreq).cast(),
                    size_of::<libc::packet_mreq>() as libc::socklen_t,
                )
            };
            if rc < 0 {
                return Err(sys("setsockopt(PACKET_ADD_MEMBERSHIP)"));
            }
        }

        // SAFETY: `sockaddr_ll` is plain old data; all-zero is valid.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as libc::c_ushort;
        addr.sll_protocol = opts.ethertype.value().to_be();
        addr.sll_ifindex = ifindex;
        // SAFETY: bind reads a `sockaddr_ll` of the given length from a live local.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const addr).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(sys("bind"));
        }
        Ok(Self {
            fd,
            ifname: ifname.to_owned(),
            ifindex: info.index,
            mac: info.mac,
        })
    }

    /// The bound interface's name.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// The bound interface's index (in the namespace the socket was made in).
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// The bound interface's MAC address when the socket was opened.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// Send one complete Ethernet frame out of the interface.
    pub fn send(&self, frame: &[u8]) -> Result<()> {
        let sent = loop {
            // SAFETY: send reads `frame.len()` bytes from a live slice.
            let rc =
                unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
            if rc >= 0 {
                break rc.unsigned_abs();
            }
            match Errno::last() {
                Errno::EINTR => continue,
                source => {
                    return Err(Error::Sys {
                        op: "send",
                        ifname: self.ifname.clone(),
                        source,
                    });
                }
            }
        };
        if sent != frame.len() {
            return Err(Error::ShortSend {
                ifname: self.ifname.clone(),
                sent,
                len: frame.len(),
            });
        }
        Ok(())
    }

    /// The next frame, or `None` if none arrives within `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Option<Vec<u8>>> {
        let deadline = Instant::now() + timeout;
        // Bounded: each pass either returns or waits for the remaining time.
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            // Round up so a sub-millisecond remainder still waits.
            let ms = left.as_micros().div_ceil(1000).min(60_000) as libc::c_int;
            let mut pfd = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: poll reads and writes exactly one live `pollfd`.
            let rc = unsafe { libc::poll(&raw mut pfd, 1, ms) };
            if rc == 0 {
                if Instant::now() >= deadline {
                    return Ok(None);
                }
                continue;
            }
            if rc < 0 {
                match Errno::last() {
                    Errno::EINTR => continue,
                    source => {
                        return Err(Error::Sys {
                            op: "poll",
                            ifname: self.ifname.clone(),
                            source,
                        });
                    }
                }
            }
            let mut buf = vec![0u8; 65536];
            // SAFETY: recv writes at most `buf.len()` bytes into a live buffer;
            // MSG_DONTWAIT because poll said a frame is ready.
            let rc = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if rc >= 0 {
                buf.truncate(rc.unsigned_abs());
                return Ok(Some(buf));
            }
            match Errno::last() {
                Errno::EINTR | Errno::EAGAIN => {
                    if Instant::now() >= deadline {
                        return Ok(None);
                    }
                }
                source => {
                    return Err(Error::Sys {
                        op: "recv",
                        ifname: self.ifname.clone(),
                        source,
                    });
                }
            }
        }
    }

    /// The first frame for which `pred` holds, or `None` at `deadline`.
    /// Frames that do not match are discarded.
    pub fn recv_matching(
        &self,
        deadline: Instant,
        mut pred: impl FnMut(&[u8]) -> bool,
    ) -> Result<Option<Vec<u8>>> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            match self.recv_timeout(left)? {
                Some(frame) if pred(&frame) => return Ok(Some(frame)),
                Some(_) => {}
                None => return Ok(None),
            }
        }
    }

    /// Discard every frame already queued.
    pub fn drain(&self) -> Result<usize> {
        let mut n = 0;
        while self.recv_timeout(Duration::ZERO)?.is_some() {
            n += 1;
            if n >= 100_000 {
                break;
            }
        }
        Ok(n)
    }
}

impl AsFd for PacketSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// A parsed ARP packet (Ethernet/IPv4 only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpPacket {
    pub eth_dst: [u8; 6],
    pub eth_src: [u8; 6],
    pub op: u16,
    pub sender_mac: [u8; 6],
    pub sender_ip: std::net::Ipv4Addr,
    pub target_mac: [u8; 6],
    pub target_ip: std::net::Ipv4Addr,
}

/// Parse an untagged Ethernet frame carrying an Ethernet/IPv4 ARP packet.
pub fn parse_arp(frame: &[u8]) -> Option<ArpPacket> {
    let six = |at: usize| -> Option<[u8; 6]> { frame.get(at..at + 6)?.try_into().ok() };
    let four = |at: usize| -> Option<[u8; 4]> { frame.get(at..at + 4)?.try_into().ok() };
    let two = |at: usize| -> Option<u16> {
        Some(u16::from_be_bytes(frame.get(at..at + 2)?.try_into().ok()?))
    };
    if two(12)? != 0x0806 || two(14)? != 1 || two(16)? != 0x0800 || frame.get(18..20)? != [6, 4] {
        return None;
    }
    Some(ArpPacket {
        eth_dst: six(0)?,
        eth_src: six(6)?,
        op: two(20)?,
        sender_mac: six(22)?,
        sender_ip: four(28)?.into(),
        target_mac: six(32)?,
        target_ip: four(38)?.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_crafted_arp_request() {
        let mac = [2, 0, 0, 0, 0, 1];
        let f = vip_common::frame::craft::arp_request(mac, [192, 0, 2, 1], [192, 0, 2, 2], None);
        let arp = parse_arp(&f).expect("arp");
        assert_eq!(arp.op, 1);
        assert_eq!(arp.eth_src, mac);
        assert_eq!(arp.eth_dst, [0xff; 6]);
        assert_eq!(arp.sender_mac, mac);
        assert_eq!(arp.sender_ip, std::net::Ipv4Addr::new(192, 0, 2, 1));
        assert_eq!(arp.target_ip, std::net::Ipv4Addr::new(192, 0, 2, 2));
        assert!(parse_arp(&f[..30]).is_none());
    }

    #[test]
    fn ifreq_rejects_bad_names() {
        assert!(ifreq_for("").is_err());
        assert!(ifreq_for("sixteen-chars-xx").is_err());
        assert!(ifreq_for("eth0").is_ok());
    }

    #[test]
    fn formats_mac() {
        assert_eq!(
            format_mac(&[0xde, 0xad, 0, 1, 2, 0xff]),
            "de:ad:00:01:02:ff"
        );
    }
}
