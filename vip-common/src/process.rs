//! The responder's decision logic, generic over how packet bytes are reached.
//!
//! The XDP program implements [`Packet`] over `xdp_md` (every access bounds
//! checked against `data_end`), the host implements it over a byte vector
//! ([`crate::frame::Frame`]) for unit tests and fuzzing. Both run this code.

use crate::checksum::{nd_checksum, nd_checksum_ok};
use crate::headers::*;
use crate::maps::{PassReason, VipEntry, VipKey};

/// Bounds-checked access to a frame.
pub trait Packet {
    /// Copies a `T` out of the frame at `offset`, or `None` if it does not fit.
    fn load<T: Copy>(&self, offset: usize) -> Option<T>;
    /// Writes `value` at `offset`; `false` (and nothing written) if it does not fit.
    fn store<T: Copy>(&mut self, offset: usize, value: &T) -> bool;
    /// Grows the frame by `delta` bytes at its tail; `false` if it cannot.
    fn grow_tail(&mut self, delta: usize) -> bool;
}

/// The VIP map as seen by the program.
pub trait VipTable {
    fn lookup(&self, key: &VipKey) -> Option<VipEntry>;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Arp,
    Ns,
}

/// What to do with a frame. `Answered` means the frame was rewritten in place
/// into the reply and must be sent back out (XDP_TX).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Answered(Proto),
    /// A request for a known VIP whose entry is inactive or expired: drop it,
    /// so the kernel never answers behind the program's back.
    Fenced(Proto),
    /// Leave the frame to the kernel, unchanged. `request` says whether it was
    /// a well-formed request of that protocol (for the "seen" counters).
    Passed {
        reason: PassReason,
        request: Option<Proto>,
    },
}

#[inline(always)]
const fn pass(reason: PassReason, request: Option<Proto>) -> Outcome {
    Outcome::Passed { reason, request }
}

/// The kernel monotonic clock, read only when a VIP entry is found (so
/// frames that are not for a VIP never pay for it).
pub trait Clock {
    fn now_ns(&self) -> u64;
}

impl Clock for u64 {
    #[inline(always)]
    fn now_ns(&self) -> u64 {
        *self
    }
}

/// Decides what to do with one frame at kernel monotonic time `now`, and
/// rewrites it into the answer when the outcome is `Answered`.
#[inline(always)]
pub fn process<P: Packet, T: VipTable, C: Clock>(pkt: &mut P, vips: &T, now: &C) -> Outcome {
    let Some(eth) = pkt.load::<EthHdr>(0) else {
        return pass(PassReason::Truncated, None);
    };
    let mut ethertype = eth.ethertype();
    let mut l3 = ETH_LEN;
    if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        let Some(vlan) = pkt.load::<VlanHdr>(ETH_LEN) else {
            return pass(PassReason::Truncated, None);
        };
        ethertype = vlan.inner_ethertype();
        l3 = ETH_LEN + VLAN_LEN;
    }
    match ethertype {
        ETH_P_ARP => arp(pkt, &eth, l3, vips, now),
        ETH_P_IPV6 => neighbour_solicitation(pkt, &eth, l3, vips, now),
        _ => pass(PassReason::OtherProtocol, None),
    }
}

#[inline(always)]
fn arp<P: Packet, T: VipTable, C: Clock>(
    pkt: &mut P,
    eth: &EthHdr,
    l3: usize,
    vips: &T,
    now: &C,
) -> Outcome {
    let Some(a) = pkt.load::<ArpHdr>(l3) else {
        return pass(PassReason::Truncated, None);
    };
    if a.htype() != ARP_HTYPE_ETHER || a.ptype() != ARP_PTYPE_IPV4 || a.hlen != 6 || a.plen != 4 {
        return pass(PassReason::Malformed, None);
    }
    if a.oper() != ARP_OP_REQUEST {
        return pass(PassReason::NotRequest, None);
    }
    let req = Some(Proto::Arp);
    if !is_unicast_mac(&eth.src) || !is_unicast_mac(&a.sha) {
        return pass(PassReason::BadSourceMac, req);
    }
    if a.spa == a.tpa {
        return pass(PassReason::Gratuitous, req);
    }
    let Some(entry) = vips.lookup(&VipKey::v4(a.tpa)) else {
        return pass(PassReason::NotVip, req);
    };
    if vips.lookup(&VipKey::v4(a.spa)).is_some() {
        return pass(PassReason::SenderIsVip, req);
    }
    if !entry.answers_at(now.now_ns()) {
        return Outcome::Fenced(Proto::Arp);
    }
    let reply_eth = EthHdr {
        dst: a.sha,
        src: entry.mac,
        ethertype: eth.ethertype,
    };
    let reply = ArpHdr {
        oper: ARP_OP_REPLY.to_be_bytes(),
        sha: entry.mac,
        spa: a.tpa,
        tha: a.sha,
        tpa: a.spa,
        ..a
    };
    if !pkt.store(0, &reply_eth) || !pkt.store(l3, &reply) {
        // Unreachable after the loads above succeeded; never answer half-written.
        return pass(PassReason::Truncated, req);
    }
    Outcome::Answered(Proto::Arp)
}

/// A request this program cannot parse fully: dropped if its target is a
/// fenced VIP (so the kernel cannot answer), passed otherwise.
#[inline(always)]
fn unsupported<T: VipTable, C: Clock>(vips: &T, target: &[u8; 16], now: &C) -> Outcome {
    match vips.lookup(&VipKey::v6(*target)) {
        Some(e) if !e.answers_at(now.now_ns()) => Outcome::Fenced(Proto::Ns),
        _ => pass(PassReason::Unsupported, Some(Proto::Ns)),
    }
}

#[inline(always)]
fn neighbour_solicitation<P: Packet, T: VipTable, C: Clock>(
    pkt: &mut P,
    eth: &EthHdr,
    l3: usize,
    vips: &T,
    now: &C,
) -> Outcome {
    let Some(ip) = pkt.load::<Ipv6Hdr>(l3) else {
        return pass(PassReason::Truncated, None);
    };
    if ip.version() != 6 {
        return pass(PassReason::Malformed, None);
    }
    if ip.next_header != IPPROTO_ICMPV6 {
        // Other IPv6 traffic, or extension headers before ICMPv6 (which the
        // kernel refuses for ND anyway, RFC 4861 section 7.1.1).
        return pass(PassReason::OtherProtocol, None);
    }
    let l4 = l3 + IPV6_LEN;
    let Some(icmp_type) = pkt.load::<u8>(l4) else {
        return pass(PassReason::Truncated, None);
    };
    if icmp_type != ICMPV6_NS {
        return pass(PassReason::OtherProtocol, None);
    }
    let Some(msg) = pkt.load::<NdMsg>(l4) else {
        return pass(PassReason::Truncated, None);
    };
    let req = Some(Proto::Ns);
    if msg.code != 0 {
        return pass(PassReason::Malformed, req);
    }
    if !is_unicast_mac(&eth.src) {
        return pass(PassReason::BadSourceMac, req);
    }
    if ip.hop_limit != 255 {
        return pass(PassReason::BadHopLimit, req);
    }
    let opt = match ip.payload_len() as usize {
        ND_LEN => None,
        len if len == ND_LEN + ND_OPT_LEN => match pkt.load::<NdOpt>(l4 + ND_LEN) {
            Some(o) => Some(o),
            None => return pass(PassReason::Truncated, req),
        },
        len if len > ND_LEN + ND_OPT_LEN && len % 8 == 0 => {
            return unsupported(vips, &msg.target, now);
        }
        _ => return pass(PassReason::Malformed, req),
    };
    if !nd_checksum_ok(&ip.src, &ip.dst, &msg, opt.as_ref()) {
        return pass(PassReason::BadChecksum, req);
    }
    if msg.target[0] == 0xff || ip.src[0] == 0xff {
        return pass(PassReason::Malformed, req);
    }
    let dad = ip.src == [0u8; 16];
    let to_group = ip.dst == solicited_node(&msg.target);
    if !(to_group || (ip.dst == msg.target && !dad)) {
        return pass(PassReason::BadDestination, req);
    }
    if let Some(o) = opt {
        let known = o.len == 1
            && ((o.opt_type == ND_OPT_SLLA && !dad) || (o.opt_type == ND_OPT_NONCE && dad));
        if !known {
            return unsupported(vips, &msg.target, now);
        }
    }
    if ip.src == msg.target {
        return pass(PassReason::SenderIsVip, req);
    }
    let Some(entry) = vips.lookup(&VipKey::v6(msg.target)) else {
        return pass(PassReason::NotVip, req);
    };
    if !dad && vips.lookup(&VipKey::v6(ip.src)).is_some() {
        return pass(PassReason::SenderIsVip, req);
    }
    if !entry.answers_at(now.now_ns()) {
        return Outcome::Fenced(Proto::Ns);
    }

    // Build the solicited advertisement in place: NS (24 or 32 bytes) -> NA + TLLA (32 bytes).
    if opt.is_none() && !pkt.grow_tail(ND_OPT_LEN) {
        return pass(PassReason::NoRoom, req);
    }
    let (dst_mac, dst_ip, flags) = if dad {
        // RFC 4861 7.2.4: answer a DAD probe to all-nodes, Solicited clear.
        (ALL_NODES_MAC, ALL_NODES_V6, NA_FLAG_OVERRIDE)
    } else {
        (eth.src, ip.src, NA_FLAG_SOLICITED | NA_FLAG_OVERRIDE)
    };
    let mut na = NdMsg {
        icmp_type: ICMPV6_NA,
        code: 0,
        checksum: [0; 2],
        flags: [flags, 0, 0, 0],
        target: msg.target,
    };
    let tlla = NdOpt {
        opt_type: ND_OPT_TLLA,
        len: 1,
        data: entry.mac,
    };
    na.checksum = nd_checksum(&msg.target, &dst_ip, &na, Some(&tlla));
    let reply_eth = EthHdr {
        dst: dst_mac,
        src: entry.mac,
        ethertype: eth.ethertype,
    };
    let reply_ip = Ipv6Hdr {
        vtc_flow: [0x60, 0, 0, 0],
        payload_len: ((ND_LEN + ND_OPT_LEN) as u16).to_be_bytes(),
        next_header: IPPROTO_ICMPV6,
        hop_limit: 255,
        src: msg.target,
        dst: dst_ip,
    };
    if !pkt.store(0, &reply_eth)
        || !pkt.store(l3, &reply_ip)
        || !pkt.store(l4, &na)
        || !pkt.store(l4 + ND_LEN, &tlla)
    {
        return pass(PassReason::NoRoom, req);
    }
    Outcome::Answered(Proto::Ns)
}
