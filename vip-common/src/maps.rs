//! Map layouts shared by the XDP program and the agent.
//!
//! All types are `#[repr(C)]` with fixed-width fields and explicit padding, so
//! the kernel and userspace agree on every byte.

/// Name of the hash map `VipKey -> VipEntry`.
pub const VIPS_MAP: &str = "VIPS";
/// Name of the per-CPU array of `u64` counters indexed by [`Counter`].
pub const COUNTERS_MAP: &str = "COUNTERS";
/// Name of the XDP program.
pub const PROGRAM_NAME: &str = "vip_xdp";
/// How many VIP entries the map holds.
pub const MAX_VIPS: u32 = 64;

pub const FAMILY_V4: u8 = 4;
pub const FAMILY_V6: u8 = 6;

/// Key of the VIP map: an IPv4 address is stored in the first four bytes of
/// `addr` (network order) with the rest zero.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VipKey {
    pub family: u8,
    pub _pad: [u8; 3],
    pub addr: [u8; 16],
}

impl VipKey {
    pub const fn v4(addr: [u8; 4]) -> Self {
        let mut a = [0u8; 16];
        a[0] = addr[0];
        a[1] = addr[1];
        a[2] = addr[2];
        a[3] = addr[3];
        Self {
            family: FAMILY_V4,
            _pad: [0; 3],
            addr: a,
        }
    }

    pub const fn v6(addr: [u8; 16]) -> Self {
        Self {
            family: FAMILY_V6,
            _pad: [0; 3],
            addr,
        }
    }
}

/// The entry is switched off: requests for the VIP are dropped (fenced).
pub const STATE_INACTIVE: u8 = 0;
/// The entry answers while `now < deadline_ns`.
pub const STATE_ACTIVE: u8 = 1;

/// Value of the VIP map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VipEntry {
    /// Kernel monotonic clock (`bpf_ktime_get_ns`, CLOCK_MONOTONIC) in ns;
    /// the program answers only strictly before it.
    pub deadline_ns: u64,
    /// The MAC address to answer with (the interface's).
    pub mac: [u8; 6],
    /// `STATE_ACTIVE` or `STATE_INACTIVE`.
    pub state: u8,
    pub _pad: u8,
}

impl VipEntry {
    pub const fn new(mac: [u8; 6], state: u8, deadline_ns: u64) -> Self {
        Self {
            deadline_ns,
            mac,
            state,
            _pad: 0,
        }
    }

    /// Whether the entry answers at monotonic time `now_ns`.
    #[inline(always)]
    pub fn answers_at(&self, now_ns: u64) -> bool {
        self.state == STATE_ACTIVE && now_ns < self.deadline_ns
    }
}

#[cfg(feature = "user")]
// SAFETY: both types are repr(C), consist of plain integers and byte arrays,
// and have no implicit padding (checked by the size tests below).
unsafe impl aya::Pod for VipKey {}
#[cfg(feature = "user")]
// SAFETY: see above.
unsafe impl aya::Pod for VipEntry {}

/// Why a frame was passed to the kernel untouched.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PassReason {
    /// Neither ARP nor IPv6 ICMPv6 neighbour solicitation.
    OtherProtocol = 0,
    /// Shorter than the headers it claims.
    Truncated = 1,
    /// ARP with wrong htype/ptype/hlen/plen, NS with wrong code, multicast target, ...
    Malformed = 2,
    /// ARP that is not a request (reply, RARP, ...).
    NotRequest = 3,
    /// Gratuitous ARP (sender IP == target IP).
    Gratuitous = 4,
    /// The sender is the VIP itself.
    SenderIsVip = 5,
    /// Multicast/broadcast/zero source MAC.
    BadSourceMac = 6,
    /// NS with a hop limit other than 255.
    BadHopLimit = 7,
    /// NS with a bad ICMPv6 checksum.
    BadChecksum = 8,
    /// The target is not a VIP known to the map.
    NotVip = 9,
    /// NS whose destination is neither the target nor its solicited-node group.
    BadDestination = 10,
    /// NS with options or extension headers this program does not parse
    /// (passed only when the target is active or unknown; fenced targets are dropped).
    Unsupported = 11,
    /// The frame could not be grown to hold the answer.
    NoRoom = 12,
}

pub const PASS_REASONS: usize = 13;

/// Index of each counter in the per-CPU counter array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Well-formed ARP requests seen (any target).
    ArpRequests = 0,
    /// Well-formed neighbour solicitations seen (any target).
    NsRequests = 1,
    ArpAnswered = 2,
    NsAnswered = 3,
    /// Requests for a known VIP dropped because its entry is inactive or expired.
    ArpFenced = 4,
    NsFenced = 5,
    /// `PassBase + PassReason as u32`.
    PassBase = 6,
}

pub const COUNTERS_LEN: u32 = Counter::PassBase as u32 + PASS_REASONS as u32;

impl PassReason {
    pub const ALL: [PassReason; PASS_REASONS] = [
        PassReason::OtherProtocol,
        PassReason::Truncated,
        PassReason::Malformed,
        PassReason::NotRequest,
        PassReason::Gratuitous,
        PassReason::SenderIsVip,
        PassReason::BadSourceMac,
        PassReason::BadHopLimit,
        PassReason::BadChecksum,
        PassReason::NotVip,
        PassReason::BadDestination,
        PassReason::Unsupported,
        PassReason::NoRoom,
    ];

    pub const fn counter_index(self) -> u32 {
        Counter::PassBase as u32 + self as u32
    }

    /// A stable snake_case label (metrics, logs).
    pub const fn label(self) -> &'static str {
        match self {
            PassReason::OtherProtocol => "other_protocol",
            PassReason::Truncated => "truncated",
            PassReason::Malformed => "malformed",
            PassReason::NotRequest => "not_request",
            PassReason::Gratuitous => "gratuitous",
            PassReason::SenderIsVip => "sender_is_vip",
            PassReason::BadSourceMac => "bad_source_mac",
            PassReason::BadHopLimit => "bad_hop_limit",
            PassReason::BadChecksum => "bad_checksum",
            PassReason::NotVip => "not_vip",
            PassReason::BadDestination => "bad_destination",
            PassReason::Unsupported => "unsupported",
            PassReason::NoRoom => "no_room",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{align_of, size_of};

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<VipKey>(), 1 + 3 + 16);
        assert_eq!(align_of::<VipKey>(), 1);
        assert_eq!(size_of::<VipEntry>(), 8 + 6 + 1 + 1);
        assert_eq!(align_of::<VipEntry>(), 8);
    }

    #[test]
    fn pass_reason_indices_are_dense_and_in_range() {
        for (i, r) in PassReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
            assert!(r.counter_index() < COUNTERS_LEN);
        }
    }

    #[test]
    fn answers_only_when_active_and_before_deadline() {
        let e = VipEntry::new([2, 0, 0, 0, 0, 1], STATE_ACTIVE, 1000);
        assert!(e.answers_at(999));
        assert!(!e.answers_at(1000));
        assert!(!VipEntry::new([2, 0, 0, 0, 0, 1], STATE_INACTIVE, 1000).answers_at(1));
    }
}
