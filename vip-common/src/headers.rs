//! Wire headers as plain byte structs (alignment 1, no padding).
//!
//! Every multi-byte field is a byte array in network order; accessors convert
//! with `from_be_bytes`/`to_be_bytes` so the byte order is explicit.

pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_IPV6: u16 = 0x86DD;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88A8;
pub const ARP_HTYPE_ETHER: u16 = 1;
/// IEEE 802 networks (RFC 1042); Linux accepts it on Ethernet devices too.
pub const ARP_HTYPE_IEEE802: u16 = 6;
pub const ARP_PTYPE_IPV4: u16 = 0x0800;
pub const ARP_OP_REQUEST: u16 = 1;
pub const ARP_OP_REPLY: u16 = 2;
pub const IPPROTO_ICMPV6: u8 = 58;
pub const IPPROTO_HOPOPTS: u8 = 0;
pub const IPPROTO_ROUTING: u8 = 43;
pub const IPPROTO_FRAGMENT: u8 = 44;
pub const IPPROTO_DSTOPTS: u8 = 60;
pub const ICMPV6_NS: u8 = 135;
pub const ICMPV6_NA: u8 = 136;
pub const ND_OPT_SLLA: u8 = 1;
pub const ND_OPT_TLLA: u8 = 2;
pub const ND_OPT_NONCE: u8 = 14;
/// NA flags (first byte of the reserved word): Solicited, Override.
pub const NA_FLAG_SOLICITED: u8 = 0x40;
pub const NA_FLAG_OVERRIDE: u8 = 0x20;

pub const ETH_LEN: usize = 14;
pub const VLAN_LEN: usize = 4;
pub const ARP_LEN: usize = 28;
pub const IPV6_LEN: usize = 40;
pub const ND_LEN: usize = 24;
pub const ND_OPT_LEN: usize = 8;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EthHdr {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    pub ethertype: [u8; 2],
}

impl EthHdr {
    #[inline(always)]
    pub fn ethertype(&self) -> u16 {
        u16::from_be_bytes(self.ethertype)
    }
}

/// An 802.1Q / 802.1ad tag following the outer ethertype.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VlanHdr {
    pub tci: [u8; 2],
    pub inner_ethertype: [u8; 2],
}

impl VlanHdr {
    #[inline(always)]
    pub fn inner_ethertype(&self) -> u16 {
        u16::from_be_bytes(self.inner_ethertype)
    }
}

/// ARP for IPv4 over Ethernet.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArpHdr {
    pub htype: [u8; 2],
    pub ptype: [u8; 2],
    pub hlen: u8,
    pub plen: u8,
    pub oper: [u8; 2],
    pub sha: [u8; 6],
    pub spa: [u8; 4],
    pub tha: [u8; 6],
    pub tpa: [u8; 4],
}

impl ArpHdr {
    #[inline(always)]
    pub fn htype(&self) -> u16 {
        u16::from_be_bytes(self.htype)
    }
    #[inline(always)]
    pub fn ptype(&self) -> u16 {
        u16::from_be_bytes(self.ptype)
    }
    #[inline(always)]
    pub fn oper(&self) -> u16 {
        u16::from_be_bytes(self.oper)
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv6Hdr {
    pub vtc_flow: [u8; 4],
    pub payload_len: [u8; 2],
    pub next_header: u8,
    pub hop_limit: u8,
    pub src: [u8; 16],
    pub dst: [u8; 16],
}

impl Ipv6Hdr {
    #[inline(always)]
    pub fn version(&self) -> u8 {
        self.vtc_flow[0] >> 4
    }
    #[inline(always)]
    pub fn payload_len(&self) -> u16 {
        u16::from_be_bytes(self.payload_len)
    }
}

/// ICMPv6 neighbour solicitation / advertisement body (without options).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NdMsg {
    pub icmp_type: u8,
    pub code: u8,
    pub checksum: [u8; 2],
    /// Reserved for NS; R/S/O flags in the first byte for NA.
    pub flags: [u8; 4],
    pub target: [u8; 16],
}

/// A neighbour discovery option of length 1 (8 bytes): SLLA, TLLA, nonce.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NdOpt {
    pub opt_type: u8,
    /// In units of 8 bytes.
    pub len: u8,
    pub data: [u8; 6],
}

pub const BROADCAST_MAC: [u8; 6] = [0xff; 6];
pub const ALL_NODES_V6: [u8; 16] = [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
pub const ALL_NODES_MAC: [u8; 6] = [0x33, 0x33, 0, 0, 0, 1];

/// Whether a MAC is usable as the source of a request (unicast, not zero).
#[inline(always)]
pub fn is_unicast_mac(mac: &[u8; 6]) -> bool {
    mac[0] & 1 == 0 && *mac != [0; 6]
}

/// The solicited-node multicast group of an IPv6 address (ff02::1:ffXX:XXXX).
#[inline(always)]
pub fn solicited_node(addr: &[u8; 16]) -> [u8; 16] {
    [
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, addr[13], addr[14], addr[15],
    ]
}

/// The Ethernet multicast MAC of an IPv6 multicast group (33:33 + low 32 bits).
#[inline(always)]
pub fn ipv6_multicast_mac(group: &[u8; 16]) -> [u8; 6] {
    [0x33, 0x33, group[12], group[13], group[14], group[15]]
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn header_sizes_match_the_wire() {
        assert_eq!(size_of::<EthHdr>(), ETH_LEN);
        assert_eq!(size_of::<VlanHdr>(), VLAN_LEN);
        assert_eq!(size_of::<ArpHdr>(), ARP_LEN);
        assert_eq!(size_of::<Ipv6Hdr>(), IPV6_LEN);
        assert_eq!(size_of::<NdMsg>(), ND_LEN);
        assert_eq!(size_of::<NdOpt>(), ND_OPT_LEN);
    }

    #[test]
    fn solicited_node_group_and_mac() {
        let a = [
            0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xab, 0xcd, 0xef,
        ];
        let g = solicited_node(&a);
        assert_eq!(g[..13], [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff]);
        assert_eq!(g[13..], [0xab, 0xcd, 0xef]);
        assert_eq!(ipv6_multicast_mac(&g), [0x33, 0x33, 0xff, 0xab, 0xcd, 0xef]);
    }

    #[test]
    fn unicast_mac() {
        assert!(is_unicast_mac(&[2, 0, 0, 0, 0, 1]));
        assert!(!is_unicast_mac(&[1, 0, 0x5e, 0, 0, 1]));
        assert!(!is_unicast_mac(&BROADCAST_MAC));
        assert!(!is_unicast_mac(&[0; 6]));
    }
}
