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
