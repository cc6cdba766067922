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
#[cfg(feature = "user")]
// SAFETY: see above.
unsafe impl aya::Pod for ClaimRecord {}

/// Why a frame was passed to the kernel untouched. A frame is passed only
/// when it is not a request for a VIP: the kernel is never left to answer one
/// (docs/design.md#the-kernel-is-never-an-answerer-invariant-2).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PassReason {
    /// Neither ARP nor IPv6 ICMPv6 neighbour discovery (or a non-first fragment).
    OtherProtocol = 0,
    /// Shorter than the headers it claims.
    Truncated = 1,
    /// ARP with a htype/ptype/hlen/plen the kernel does not accept on Ethernet,
    /// IPv6 with a version other than 6.
    Malformed = 2,
    /// ARP that is not a request (reply, RARP, ...), or a neighbour advertisement.
    NotRequest = 3,
    /// The target is not a VIP known to the map.
    NotVip = 4,
}

pub const PASS_REASONS: usize = 5;

/// Why a request FOR A VIP was dropped without an answer although the entry
/// may be active: a form this program does not answer. Dropped, never passed,
/// so the kernel cannot answer it either.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefuseReason {
    /// Gratuitous ARP request (sender IP == target IP == the VIP).
    Gratuitous = 0,
    /// The sender claims to be a VIP.
    SenderIsVip = 1,
    /// Multicast/broadcast/zero source MAC or sender hardware address, or a
    /// multicast/broadcast/loopback sender IP.
    BadSender = 2,
    /// NS with a hop limit other than 255.
    BadHopLimit = 3,
    /// NS with a bad ICMPv6 checksum.
    BadChecksum = 4,
    /// NS with a code other than 0, or a length that is not ND's.
    BadCode = 5,
    /// NS whose destination is neither the target nor its solicited-node group
    /// (or a DAD probe to anything but the group).
    BadDestination = 6,
    /// NS behind IPv6 extension headers (hop-by-hop, routing, destination
    /// options, a first fragment).
    ExtensionHeaders = 7,
    /// NS with options other than one SLLA (or one nonce for DAD).
    Options = 8,
    /// The frame could not be grown to hold the answer.
    NoRoom = 9,
}

pub const REFUSE_REASONS: usize = 10;

/// Index of each counter in the per-CPU counter array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// ARP requests for a VIP seen (any form, any entry state).
    ArpRequests = 0,
    /// Neighbour solicitations for a VIP seen (any form, any entry state).
    NsRequests = 1,
    ArpAnswered = 2,
    NsAnswered = 3,
    /// Requests for a VIP dropped because its entry is inactive or expired.
    ArpFenced = 4,
    NsFenced = 5,
    /// Requests for a VIP dropped because of their form ([`RefuseReason`]).
    ArpRefused = 6,
    NsRefused = 7,
    /// Claims on a VIP by another MAC while this node answers for it.
    ArpClaims = 8,
    NsClaims = 9,
    /// Frames dropped because their headers nest deeper than the program
    /// parses (more VLAN tags or IPv6 extension headers than it follows).
    TooDeep = 10,
    /// `PassBase + PassReason as u32`.
    PassBase = 11,
}

/// `RefuseBase + RefuseReason as u32`.
pub const REFUSE_BASE: u32 = Counter::PassBase as u32 + PASS_REASONS as u32;
pub const COUNTERS_LEN: u32 = REFUSE_BASE + REFUSE_REASONS as u32;

impl PassReason {
    pub const ALL: [PassReason; PASS_REASONS] = [
        PassReason::OtherProtocol,
        PassReason::Truncated,
        PassReason::Malformed,
        PassReason::NotRequest,
        PassReason::NotVip,
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
            PassReason::NotVip => "not_vip",
        }
    }
}

impl RefuseReason {
    pub const ALL: [RefuseReason; REFUSE_REASONS] = [
        RefuseReason::Gratuitous,
        RefuseReason::SenderIsVip,
        RefuseReason::BadSender,
        RefuseReason::BadHopLimit,
        RefuseReason::BadChecksum,
        RefuseReason::BadCode,
        RefuseReason::BadDestination,
        RefuseReason::ExtensionHeaders,
        RefuseReason::Options,
        RefuseReason::NoRoom,
    ];

    pub const fn counter_index(self) -> u32 {
        REFUSE_BASE + self as u32
    }

    /// A stable snake_case label (metrics, logs).
    pub const fn label(self) -> &'static str {
        match self {
            RefuseReason::Gratuitous => "gratuitous",
            RefuseReason::SenderIsVip => "sender_is_vip",
            RefuseReason::BadSender => "bad_sender",
            RefuseReason::BadHopLimit => "bad_hop_limit",
            RefuseReason::BadChecksum => "bad_checksum",
            RefuseReason::BadCode => "bad_code",
            RefuseReason::BadDestination => "bad_destination",
            RefuseReason::ExtensionHeaders => "extension_headers",
            RefuseReason::Options => "options",
            RefuseReason::NoRoom => "no_room",
        }
    }
}

/// Name of the hash map `VipKey -> ClaimRecord`: the last conflicting claim
/// seen for each VIP (another MAC announcing it while this node answers).
pub const CLAIMS_MAP: &str = "CLAIMS";

/// Value of the claims map, written by the program.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClaimRecord {
    /// Claims seen so far (approximate under concurrent CPUs).
    pub count: u64,
    /// `bpf_ktime_get_ns()` of the last one.
    pub last_ns: u64,
    /// The MAC that claimed the VIP last.
    pub mac: [u8; 6],
    /// 4 = ARP, 6 = neighbour advertisement.
    pub family: u8,
    pub _pad: u8,
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
        assert_eq!(size_of::<ClaimRecord>(), 8 + 8 + 6 + 1 + 1);
    }

    #[test]
    fn pass_reason_indices_are_dense_and_in_range() {
        for (i, r) in PassReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
            assert!(r.counter_index() < REFUSE_BASE);
        }
        for (i, r) in RefuseReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
            assert!(r.counter_index() >= REFUSE_BASE && r.counter_index() < COUNTERS_LEN);
        }
        assert!((Counter::TooDeep as u32) < Counter::PassBase as u32);
    }

    #[test]
    fn answers_only_when_active_and_before_deadline() {
        let e = VipEntry::new([2, 0, 0, 0, 0, 1], STATE_ACTIVE, 1000);
        assert!(e.answers_at(999));
        assert!(!e.answers_at(1000));
        assert!(!VipEntry::new([2, 0, 0, 0, 0, 1], STATE_INACTIVE, 1000).answers_at(1));
    }
}
