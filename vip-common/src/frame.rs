//! A host-side [`Packet`] over a byte vector, for tests, fuzzing and the lab.

use std::vec::Vec;

use crate::process::Packet;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub bytes: Vec<u8>,
}

impl Frame {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Self {
            bytes: bytes.into(),
        }
    }
}

impl Packet for Frame {
    fn load<T: Copy>(&self, offset: usize) -> Option<T> {
        let end = offset.checked_add(core::mem::size_of::<T>())?;
        let bytes = self.bytes.get(offset..end)?;
        // SAFETY: `bytes` holds exactly size_of::<T>() initialised bytes; the
        // `T`s used here are byte structs valid for any bit pattern.
        Some(unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
    }

    fn store<T: Copy>(&mut self, offset: usize, value: &T) -> bool {
        let Some(end) = offset.checked_add(core::mem::size_of::<T>()) else {
            return false;
        };
        let Some(bytes) = self.bytes.get_mut(offset..end) else {
            return false;
        };
        // SAFETY: the destination holds exactly size_of::<T>() bytes.
        unsafe { core::ptr::write_unaligned(bytes.as_mut_ptr().cast::<T>(), *value) };
        true
    }

    fn grow_tail(&mut self, delta: usize) -> bool {
        self.bytes.resize(self.bytes.len() + delta, 0);
        true
    }
}

/// Builders for the requests the responder answers (tests, lab probes, fuzz seeds).
pub mod craft {
    use std::vec::Vec;

    use crate::checksum::nd_checksum;
    use crate::headers::*;

    fn eth(out: &mut Vec<u8>, dst: [u8; 6], src: [u8; 6], vlan: Option<u16>, ethertype: u16) {
        out.extend_from_slice(&dst);
        out.extend_from_slice(&src);
        if let Some(tci) = vlan {
            out.extend_from_slice(&ETH_P_8021Q.to_be_bytes());
            out.extend_from_slice(&tci.to_be_bytes());
        }
        out.extend_from_slice(&ethertype.to_be_bytes());
    }

    /// A broadcast ARP request "who has `tpa`? tell `spa`", padded to 60 bytes.
    pub fn arp_request(src_mac: [u8; 6], spa: [u8; 4], tpa: [u8; 4], vlan: Option<u16>) -> Vec<u8> {
        let mut f = Vec::with_capacity(64);
        eth(&mut f, BROADCAST_MAC, src_mac, vlan, ETH_P_ARP);
        f.extend_from_slice(&ARP_HTYPE_ETHER.to_be_bytes());
        f.extend_from_slice(&ARP_PTYPE_IPV4.to_be_bytes());
        f.extend_from_slice(&[6, 4]);
        f.extend_from_slice(&ARP_OP_REQUEST.to_be_bytes());
        f.extend_from_slice(&src_mac);
        f.extend_from_slice(&spa);
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&tpa);
        f.resize(f.len().max(60), 0);
        f
    }

    /// A neighbour solicitation for `target` from `src_ip` (`::` for DAD),
    /// to the solicited-node group unless `unicast`, with an SLLA option when
    /// `slla` (never with an unspecified source).
    pub fn neighbour_solicitation(
        src_mac: [u8; 6],
        src_ip: [u8; 16],
        target: [u8; 16],
        slla: bool,
        unicast: bool,
        vlan: Option<u16>,
    ) -> Vec<u8> {
        let dst_ip = if unicast {
            target
        } else {
            solicited_node(&target)
        };
        let dst_mac = if unicast {
            [0x02, 0, 0, 0, 0, 0xaa]
        } else {
            ipv6_multicast_mac(&dst_ip)
        };
        let mut msg = NdMsg {
            icmp_type: ICMPV6_NS,
            code: 0,
            checksum: [0; 2],
            flags: [0; 4],
            target,
        };
        let opt = NdOpt {
            opt_type: ND_OPT_SLLA,
            len: 1,
            data: src_mac,
        };
        let opt_ref = slla.then_some(&opt);
        msg.checksum = nd_checksum(&src_ip, &dst_ip, &msg, opt_ref);
        let plen: u16 = if slla { 32 } else { 24 };
        let mut f = Vec::with_capacity(96);
        eth(&mut f, dst_mac, src_mac, vlan, ETH_P_IPV6);
        f.extend_from_slice(&[0x60, 0, 0, 0]);
        f.extend_from_slice(&plen.to_be_bytes());
        f.extend_from_slice(&[IPPROTO_ICMPV6, 255]);
        f.extend_from_slice(&src_ip);
        f.extend_from_slice(&dst_ip);
        f.extend_from_slice(&[msg.icmp_type, msg.code]);
        f.extend_from_slice(&msg.checksum);
        f.extend_from_slice(&msg.flags);
        f.extend_from_slice(&msg.target);
        if slla {
            f.extend_from_slice(&[opt.opt_type, opt.len]);
            f.extend_from_slice(&opt.data);
        }
        f
    }
}

/// Request variants the kernel accepts (net/ipv4/arp.c arp_process,
/// net/core/dev.c VLAN handling, net/ipv6/ndisc.c behind exthdrs.c): each is
/// a request for the VIP that a kernel holding the address would answer, so
/// the program must answer or drop every one of them. Used by host tests and
/// by the namespace tests that check the kernel and the program agree.
pub mod variants {
    use std::vec::Vec;

    use super::craft::{arp_request, neighbour_solicitation};
    use crate::headers::*;

    /// Inserts `tags` (TPID, TCI) after the MAC addresses, outermost first.
    pub fn with_vlan_tags(frame: &[u8], tags: &[(u16, u16)]) -> Vec<u8> {
        let mut f = frame[..12].to_vec();
        for (tpid, tci) in tags {
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&tci.to_be_bytes());
        }
        f.extend_from_slice(&frame[12..]);
        f
    }

    /// Which IPv6 extension header to put in front of ICMPv6.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Ext {
        /// Hop-by-hop options with one PadN option.
        HopByHop,
        /// Destination options with one PadN option.
        DestOpts,
        /// Routing header type 0 with segments left 0 (and no addresses),
        /// which the kernel skips.
        Routing,
        /// A fragment header, offset 0, more fragments clear (an atomic
        /// fragment, RFC 6946).
        Fragment,
    }

    /// Inserts one 8-byte extension header between an untagged frame's
    /// IPv6 header and its payload (the ICMPv6 checksum does not change).
    pub fn with_ipv6_ext(frame: &[u8], ext: Ext) -> Vec<u8> {
        let l3 = ETH_LEN;
        let l4 = l3 + IPV6_LEN;
        let inner = frame[l3 + 6];
        let (nh, hdr): (u8, [u8; 8]) = match ext {
            Ext::HopByHop => (IPPROTO_HOPOPTS, [inner, 0, 1, 4, 0, 0, 0, 0]),
            Ext::DestOpts => (IPPROTO_DSTOPTS, [inner, 0, 1, 4, 0, 0, 0, 0]),
            Ext::Routing => (IPPROTO_ROUTING, [inner, 0, 0, 0, 0, 0, 0, 0]),
            Ext::Fragment => (IPPROTO_FRAGMENT, [inner, 0, 0, 0, 0, 0, 0x12, 0x34]),
        };
        let mut f = frame[..l4].to_vec();
        f[l3 + 6] = nh;
        let plen = u16::from_be_bytes([f[l3 + 4], f[l3 + 5]]) + 8;
        f[l3 + 4..l3 + 6].copy_from_slice(&plen.to_be_bytes());
        f.extend_from_slice(&hdr);
        f.extend_from_slice(&frame[l4..]);
        f
    }

    /// The same request with the destination MAC set to `dst`.
    pub fn unicast_to(frame: &[u8], dst: [u8; 6]) -> Vec<u8> {
        let mut f = frame.to_vec();
        f[..6].copy_from_slice(&dst);
        f
    }

    /// A request variant and what a kernel that holds the address does.
    pub struct Variant {
        pub name: &'static str,
        pub frame: Vec<u8>,
        /// ARP (`true`) or NS.
        pub arp: bool,
        /// Whether the program answers it while the VIP's entry is active
        /// (otherwise it drops it: a form it does not answer).
        pub answered_when_active: bool,
    }

    /// Every request form for `vip4`/`vip6` from `mac`/`ip4`/`ip6` that a
    /// Linux kernel holding the VIP on the receiving interface answers.
    /// `node_mac` is the receiving interface's MAC (for unicast variants).
    pub fn kernel_accepted(
        mac: [u8; 6],
        ip4: [u8; 4],
        ip6: [u8; 16],
        vip4: [u8; 4],
        vip6: [u8; 16],
        node_mac: [u8; 6],
    ) -> Vec<Variant> {
        let arp = arp_request(mac, ip4, vip4, None);
        let mut htype6 = arp.clone();
        htype6[14..16].copy_from_slice(&ARP_HTYPE_IEEE802.to_be_bytes());
        let probe = arp_request(mac, [0; 4], vip4, None);
        let ns = neighbour_solicitation(mac, ip6, vip6, true, false, None);
        let ns_unicast = neighbour_solicitation(mac, ip6, vip6, true, true, None);
        let v = |name, frame, arp, answered_when_active| Variant {
            name,
            frame,
            arp,
            answered_when_active,
        };
        std::vec![
            v("arp request", arp.clone(), true, true),
            v("arp request, htype 6 (IEEE 802)", htype6, true, true),
            v("arp probe from 0.0.0.0", probe, true, true),
            v(
                "arp request unicast to the node's MAC",
                unicast_to(&arp, node_mac),
                true,
                true
            ),
            v(
                "arp request behind a VLAN-0 priority tag",
                with_vlan_tags(&arp, &[(ETH_P_8021Q, 0)]),
                true,
                true,
            ),
            v(
                "arp request behind two VLAN-0 tags (802.1ad + 802.1Q)",
                with_vlan_tags(&arp, &[(ETH_P_8021AD, 0), (ETH_P_8021Q, 0)]),
                true,
                true,
            ),
            v("ns to the solicited-node group", ns.clone(), false, true),
            v(
                "ns unicast to the VIP and the node's MAC",
                unicast_to(&ns_unicast, node_mac),
                false,
                true,
            ),
            v(
                "ns behind a VLAN-0 priority tag",
                with_vlan_tags(&ns, &[(ETH_P_8021Q, 0)]),
                false,
                true,
            ),
            v(
                "ns behind a hop-by-hop options header",
                with_ipv6_ext(&ns, Ext::HopByHop),
                false,
                false,
            ),
            v(
                "ns behind a destination options header",
                with_ipv6_ext(&ns, Ext::DestOpts),
                false,
                false,
            ),
        ]
    }
}

/// Announcements sent by the agent when it takes the VIP over.
pub mod announce {
    use std::vec::Vec;

    use crate::checksum::nd_checksum;
    use crate::headers::*;

    /// A gratuitous ARP request (sender IP == target IP == `ip`), broadcast.
    pub fn gratuitous_arp(mac: [u8; 6], ip: [u8; 4]) -> Vec<u8> {
        let mut f = Vec::with_capacity(60);
        f.extend_from_slice(&BROADCAST_MAC);
        f.extend_from_slice(&mac);
        f.extend_from_slice(&ETH_P_ARP.to_be_bytes());
        f.extend_from_slice(&ARP_HTYPE_ETHER.to_be_bytes());
        f.extend_from_slice(&ARP_PTYPE_IPV4.to_be_bytes());
        f.extend_from_slice(&[6, 4]);
        f.extend_from_slice(&ARP_OP_REQUEST.to_be_bytes());
        f.extend_from_slice(&mac);
        f.extend_from_slice(&ip);
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&ip);
        f.resize(60, 0);
        f
    }

    /// An unsolicited neighbour advertisement for `ip` to all-nodes
    /// (Override set, Solicited clear, target link-layer address option).
    pub fn unsolicited_na(mac: [u8; 6], ip: [u8; 16]) -> Vec<u8> {
        let mut na = NdMsg {
            icmp_type: ICMPV6_NA,
            code: 0,
            checksum: [0; 2],
            flags: [NA_FLAG_OVERRIDE, 0, 0, 0],
            target: ip,
        };
        let opt = NdOpt {
            opt_type: ND_OPT_TLLA,
            len: 1,
            data: mac,
        };
        na.checksum = nd_checksum(&ip, &ALL_NODES_V6, &na, Some(&opt));
        let mut f = Vec::with_capacity(86);
        f.extend_from_slice(&ALL_NODES_MAC);
        f.extend_from_slice(&mac);
        f.extend_from_slice(&ETH_P_IPV6.to_be_bytes());
        f.extend_from_slice(&[0x60, 0, 0, 0]);
        f.extend_from_slice(&32u16.to_be_bytes());
        f.extend_from_slice(&[IPPROTO_ICMPV6, 255]);
        f.extend_from_slice(&ip);
        f.extend_from_slice(&ALL_NODES_V6);
        f.extend_from_slice(&[na.icmp_type, na.code]);
        f.extend_from_slice(&na.checksum);
        f.extend_from_slice(&na.flags);
        f.extend_from_slice(&na.target);
        f.extend_from_slice(&[opt.opt_type, opt.len]);
        f.extend_from_slice(&opt.data);
        f
    }
}
