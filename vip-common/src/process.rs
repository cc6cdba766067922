//! The responder's decision logic, generic over how packet bytes are reached.
//!
//! The XDP program implements [`Packet`] over `xdp_md` (every access bounds
//! checked against `data_end`), the host implements it over a byte vector
//! ([`crate::frame::Frame`]) for unit tests and fuzzing. Both run this code.

use crate::checksum::{nd_checksum, nd_checksum_ok};
use crate::headers::*;
use crate::maps::{PassReason, RefuseReason, VipEntry, VipKey};

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
    /// Records a conflicting claim on `key` by `mac` (the program writes the
    /// `CLAIMS` map). The default records nothing.
    fn record_claim(&self, key: &VipKey, mac: [u8; 6], proto: Proto) {
        let _ = (key, mac, proto);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Arp,
    Ns,
}

/// At most this many 802.1Q/802.1ad tags are followed; a frame with more is
/// dropped ([`Outcome::TooDeep`]): the kernel strips any number of VLAN-0
/// (priority) tags, so a deeper frame could hide an ARP request from us.
pub const MAX_VLAN_TAGS: usize = 4;
/// At most this many IPv6 extension headers are followed before ICMPv6; a
/// frame with more is dropped ([`Outcome::TooDeep`]).
pub const MAX_IPV6_EXT: usize = 4;

/// What to do with a frame. The rule
/// (docs/design.md#1-the-program-answers-or-drops-every-request-for-a-vip): a
/// request for a VIP is answered or dropped, never left to the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The frame was rewritten in place into the reply: send it back (XDP_TX).
    Answered(Proto),
    /// A request for a known VIP whose entry is inactive or expired: drop it,
    /// so the kernel never answers behind the program's back.
    Fenced(Proto),
    /// A request for a known VIP in a form this program does not answer:
    /// dropped whatever the entry's state.
    Refused(Proto, RefuseReason),
    /// Another MAC claims a VIP this node answers for (ARP reply, gratuitous
    /// ARP, neighbour advertisement): recorded; dropped when it is a request
    /// (a gratuitous ARP request), passed otherwise (the kernel never answers
    /// replies or advertisements).
    /// The claim itself was handed to [`VipTable::record_claim`].
    Claimed { proto: Proto, dropped: bool },
    /// More VLAN tags or IPv6 extension headers than the program follows: dropped.
    TooDeep,
    /// Not a request for a VIP: left to the kernel, unchanged.
    Passed { reason: PassReason },
}

impl Outcome {
    /// Whether the frame leaves the program unchanged and goes to the kernel.
    pub fn passes(&self) -> bool {
        matches!(
            self,
            Outcome::Passed { .. } | Outcome::Claimed { dropped: false, .. }
        )
    }
}

#[inline(always)]
const fn pass(reason: PassReason) -> Outcome {
    Outcome::Passed { reason }
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
        return pass(PassReason::Truncated);
    };
    let mut ethertype = eth.ethertype();
    let mut l3 = ETH_LEN;
    let mut tags = 0;
    while tags < MAX_VLAN_TAGS && (ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD) {
        let Some(vlan) = pkt.load::<VlanHdr>(l3) else {
            return pass(PassReason::Truncated);
        };
        ethertype = vlan.inner_ethertype();
        l3 += VLAN_LEN;
        tags += 1;
    }
    match ethertype {
        ETH_P_ARP => arp(pkt, &eth, l3, vips, now),
        ETH_P_IPV6 => ipv6(pkt, &eth, l3, vips, now),
        ETH_P_8021Q | ETH_P_8021AD => Outcome::TooDeep,
        _ => pass(PassReason::OtherProtocol),
    }
}

#[inline(always)]
fn is_bad_sender_v4(ip: &[u8; 4]) -> bool {
    // Multicast, limited broadcast, loopback. 0.0.0.0 is an ARP probe: fine.
    ip[0] >= 224 || ip[0] == 127
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
        return pass(PassReason::Truncated);
    };
    // Linux accepts hardware type 1 (Ethernet) and 6 (IEEE 802) on Ethernet
    // devices (net/ipv4/arp.c, arp_process); hlen must be the device's (6).
    let htype = a.htype();
    if (htype != ARP_HTYPE_ETHER && htype != ARP_HTYPE_IEEE802)
        || a.ptype() != ARP_PTYPE_IPV4
        || a.hlen != 6
        || a.plen != 4
    {
        return pass(PassReason::Malformed);
    }
    match a.oper() {
        ARP_OP_REQUEST => {}
        ARP_OP_REPLY => return arp_claim(&a, vips, now, false),
        _ => return pass(PassReason::NotRequest),
    }
    let Some(entry) = vips.lookup(&VipKey::v4(a.tpa)) else {
        return pass(PassReason::NotVip);
    };
    let refuse = |r| Outcome::Refused(Proto::Arp, r);
    if a.spa == a.tpa {
        return match arp_claim(&a, vips, now, true) {
            c @ Outcome::Claimed { .. } => c,
            _ => refuse(RefuseReason::Gratuitous),
        };
    }
    if !is_unicast_mac(&eth.src) || !is_unicast_mac(&a.sha) || is_bad_sender_v4(&a.spa) {
        return refuse(RefuseReason::BadSender);
    }
    if vips.lookup(&VipKey::v4(a.spa)).is_some() {
        return refuse(RefuseReason::SenderIsVip);
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
        return refuse(RefuseReason::NoRoom);
    }
    Outcome::Answered(Proto::Arp)
}

/// An ARP reply or gratuitous request whose sender IP is a VIP this node
/// answers for, from another MAC, is a conflicting claim.
#[inline(always)]
fn arp_claim<T: VipTable, C: Clock>(a: &ArpHdr, vips: &T, now: &C, request: bool) -> Outcome {
    let key = VipKey::v4(a.spa);
    match vips.lookup(&key) {
        Some(e) if e.mac != a.sha && e.answers_at(now.now_ns()) => {
            vips.record_claim(&key, a.sha, Proto::Arp);
            Outcome::Claimed {
                proto: Proto::Arp,
                dropped: request,
            }
        }
        _ => pass(PassReason::NotRequest),
    }
}

#[inline(always)]
fn is_ext_header(nh: u8) -> bool {
    nh == IPPROTO_HOPOPTS
        || nh == IPPROTO_ROUTING
        || nh == IPPROTO_DSTOPTS
        || nh == IPPROTO_FRAGMENT
}

#[inline(always)]
fn ipv6<P: Packet, T: VipTable, C: Clock>(
    pkt: &mut P,
    eth: &EthHdr,
    l3: usize,
    vips: &T,
    now: &C,
) -> Outcome {
    let Some(ip) = pkt.load::<Ipv6Hdr>(l3) else {
        return pass(PassReason::Truncated);
    };
    if ip.version() != 6 {
        return pass(PassReason::Malformed);
    }
    // Follow extension headers: Linux delivers ICMPv6 behind hop-by-hop,
    // routing (segments left 0) and destination options headers to ndisc.
    let mut nh = ip.next_header;
    let mut l4 = l3 + IPV6_LEN;
    let mut ext = 0;
    while ext < MAX_IPV6_EXT && is_ext_header(nh) {
        let Some(h) = pkt.load::<[u8; 4]>(l4) else {
            return pass(PassReason::Truncated);
        };
        if nh == IPPROTO_FRAGMENT {
            // Only a first fragment carries the ICMPv6 header.
            if u16::from_be_bytes([h[2], h[3]]) & 0xfff8 != 0 {
                return pass(PassReason::OtherProtocol);
            }
            l4 += 8;
        } else {
            l4 += (h[1] as usize + 1) * 8;
        }
        nh = h[0];
        ext += 1;
    }
    if is_ext_header(nh) {
        return Outcome::TooDeep;
    }
    if nh != IPPROTO_ICMPV6 {
        return pass(PassReason::OtherProtocol);
    }
    let Some(msg) = pkt.load::<NdMsg>(l4) else {
        return pass(PassReason::Truncated);
    };
    match msg.icmp_type {
        ICMPV6_NS => {}
        ICMPV6_NA => return na_claim(pkt, eth, &ip, l4, &msg, vips, now),
        _ => return pass(PassReason::OtherProtocol),
    }
    let Some(entry) = vips.lookup(&VipKey::v6(msg.target)) else {
        return pass(PassReason::NotVip);
    };
    // From here on the frame is an NS for a VIP: answered or dropped.
    let refuse = |r| Outcome::Refused(Proto::Ns, r);
    if ext != 0 {
        return refuse(RefuseReason::ExtensionHeaders);
    }
    if msg.code != 0 {
        return refuse(RefuseReason::BadCode);
    }
    if !is_unicast_mac(&eth.src) || ip.src[0] == 0xff {
        return refuse(RefuseReason::BadSender);
    }
    if ip.hop_limit != 255 {
        return refuse(RefuseReason::BadHopLimit);
    }
    let opt = match ip.payload_len() as usize {
        ND_LEN => None,
        len if len == ND_LEN + ND_OPT_LEN => match pkt.load::<NdOpt>(l4 + ND_LEN) {
            Some(o) => Some(o),
            None => return refuse(RefuseReason::BadCode),
        },
        len if len > ND_LEN + ND_OPT_LEN && len % 8 == 0 => {
            return refuse(RefuseReason::Options);
        }
        _ => return refuse(RefuseReason::BadCode),
    };
    if !nd_checksum_ok(&ip.src, &ip.dst, &msg, opt.as_ref()) {
        return refuse(RefuseReason::BadChecksum);
    }
    let dad = ip.src == [0u8; 16];
    let to_group = ip.dst == solicited_node(&msg.target);
    if !(to_group || (ip.dst == msg.target && !dad)) {
        return refuse(RefuseReason::BadDestination);
    }
    if let Some(o) = opt {
        let known = o.len == 1
            && ((o.opt_type == ND_OPT_SLLA && !dad) || (o.opt_type == ND_OPT_NONCE && dad));
        if !known {
            return refuse(RefuseReason::Options);
        }
    }
    if ip.src == msg.target || (!dad && vips.lookup(&VipKey::v6(ip.src)).is_some()) {
        return refuse(RefuseReason::SenderIsVip);
    }
    if !entry.answers_at(now.now_ns()) {
        return Outcome::Fenced(Proto::Ns);
    }

    // Build the solicited advertisement in place: NS (24 or 32 bytes) -> NA + TLLA (32 bytes).
    if opt.is_none() && !pkt.grow_tail(ND_OPT_LEN) {
        return refuse(RefuseReason::NoRoom);
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
        return refuse(RefuseReason::NoRoom);
    }
    Outcome::Answered(Proto::Ns)
}

/// A neighbour advertisement for a VIP this node answers for, from another
/// MAC (its target link-layer address option, else its Ethernet source), is
/// a conflicting claim. Advertisements are always passed: the kernel never
/// answers them.
#[inline(always)]
fn na_claim<P: Packet, T: VipTable, C: Clock>(
    pkt: &P,
    eth: &EthHdr,
    ip: &Ipv6Hdr,
    l4: usize,
    msg: &NdMsg,
    vips: &T,
    now: &C,
) -> Outcome {
    let key = VipKey::v6(msg.target);
    let Some(entry) = vips.lookup(&key) else {
        return pass(PassReason::NotRequest);
    };
    let mut mac = eth.src;
    if ip.payload_len() as usize >= ND_LEN + ND_OPT_LEN
        && let Some(o) = pkt.load::<NdOpt>(l4 + ND_LEN)
        && o.opt_type == ND_OPT_TLLA
        && o.len == 1
    {
        mac = o.data;
    }
    if mac != entry.mac && entry.answers_at(now.now_ns()) {
        vips.record_claim(&key, mac, Proto::Ns);
        return Outcome::Claimed {
            proto: Proto::Ns,
            dropped: false,
        };
    }
    pass(PassReason::NotRequest)
}
