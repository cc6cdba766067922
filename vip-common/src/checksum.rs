//! The Internet checksum (RFC 1071) and the ICMPv6 pseudo-header sum.

use crate::headers::{IPPROTO_ICMPV6, NdMsg, NdOpt};

/// Adds big-endian 16-bit words of `bytes` (even length) to `sum`.
#[inline(always)]
pub fn add_words(mut sum: u32, bytes: &[u8]) -> u32 {
    let mut i = 0;
    while i + 1 < bytes.len() {
        sum += u32::from(u16::from_be_bytes([bytes[i], bytes[i + 1]]));
        i += 2;
    }
    sum
}

/// Folds a 32-bit sum into 16 bits (no complement).
#[inline(always)]
pub fn fold(mut sum: u32) -> u16 {
    // Two folds are enough for any sum of fewer than 65536 words.
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// Sum of the ICMPv6 pseudo header plus an ND message and an optional
/// 8-byte option, as carried in the packet (checksum field included).
#[inline(always)]
pub fn nd_sum(src: &[u8; 16], dst: &[u8; 16], msg: &NdMsg, opt: Option<&NdOpt>) -> u16 {
    let len: u32 = if opt.is_some() { 32 } else { 24 };
    let mut sum = add_words(0, src);
    sum = add_words(sum, dst);
    sum += len; // upper-layer packet length (32 bits, high half zero)
    sum += u32::from(IPPROTO_ICMPV6);
    sum += u32::from(u16::from_be_bytes([msg.icmp_type, msg.code]));
    sum += u32::from(u16::from_be_bytes(msg.checksum));
    sum = add_words(sum, &msg.flags);
    sum = add_words(sum, &msg.target);
    if let Some(o) = opt {
        sum += u32::from(u16::from_be_bytes([o.opt_type, o.len]));
        sum = add_words(sum, &o.data);
    }
    fold(sum)
}

/// Whether the checksum carried in `msg` is valid.
#[inline(always)]
pub fn nd_checksum_ok(src: &[u8; 16], dst: &[u8; 16], msg: &NdMsg, opt: Option<&NdOpt>) -> bool {
    nd_sum(src, dst, msg, opt) == 0xffff
}

/// The checksum to store in `msg` (its checksum field is ignored).
#[inline(always)]
pub fn nd_checksum(src: &[u8; 16], dst: &[u8; 16], msg: &NdMsg, opt: Option<&NdOpt>) -> [u8; 2] {
    let mut m = *msg;
    m.checksum = [0, 0];
    (!nd_sum(src, dst, &m, opt)).to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3 example: words 0001 f203 f4f5 f6f7 sum to ddf2.
        let s = add_words(0, &[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]);
        assert_eq!(fold(s), 0xddf2);
    }

    #[test]
    fn computed_checksum_verifies_and_a_flipped_bit_does_not() {
        let src = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        let dst = [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0, 0, 0x10];
        let mut msg = NdMsg {
            icmp_type: 135,
            code: 0,
            checksum: [0; 2],
            flags: [0; 4],
            target: [7; 16],
        };
        let opt = NdOpt {
            opt_type: 1,
            len: 1,
            data: [2, 0, 0, 0, 0, 9],
        };
        msg.checksum = nd_checksum(&src, &dst, &msg, Some(&opt));
        assert!(nd_checksum_ok(&src, &dst, &msg, Some(&opt)));
        assert!(!nd_checksum_ok(&src, &dst, &msg, None));
        msg.target[3] ^= 0x10;
        assert!(!nd_checksum_ok(&src, &dst, &msg, Some(&opt)));
    }
}
