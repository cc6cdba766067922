//! XDP responder: answers ARP requests and IPv6 neighbour solicitations for
//! the VIPs in `VIPS` while their entry is active and before its deadline,
//! drops every other request for a VIP (fenced, or a form it does not
//! answer), records conflicting claims in `CLAIMS`, and passes everything
//! that is not a request for a VIP untouched.
//!
//! The decision logic lives in `vip_common::process` (shared with host tests
//! and fuzzers); this file only provides bounds-checked packet access, the
//! maps and the counters.
#![no_std]
#![no_main]

use aya_ebpf::bindings::xdp_action;
use aya_ebpf::helpers::{bpf_ktime_get_ns, bpf_xdp_adjust_tail};
use aya_ebpf::macros::{map, xdp};
use aya_ebpf::maps::{HashMap, PerCpuArray};
use aya_ebpf::programs::XdpContext;
use aya_log_ebpf::warn;
use vip_common::maps::{COUNTERS_LEN, Counter, MAX_VIPS};
use vip_common::{
    ClaimRecord, Clock, Outcome, Packet, Proto, ProtoCounter, RefuseReason, VipEntry, VipKey,
    VipTable, process,
};

// Map names: vip_common::maps::{VIPS_MAP, COUNTERS_MAP, CLAIMS_MAP} (the macro
// takes literals only; the agent opens them by those constants and its
// xdp_program test loads this object by them).
#[map(name = "VIPS")]
static VIPS: HashMap<VipKey, VipEntry> = HashMap::with_max_entries(MAX_VIPS, 0);

#[map(name = "COUNTERS")]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTERS_LEN, 0);

#[map(name = "CLAIMS")]
static CLAIMS: HashMap<VipKey, ClaimRecord> = HashMap::with_max_entries(MAX_VIPS, 0);

/// Program name: vip_common::maps::PROGRAM_NAME.
#[xdp]
pub fn vip_xdp(ctx: XdpContext) -> u32 {
    try_vip_xdp(ctx)
}

/// Never returns XDP_ABORTED. A request for a VIP is answered (XDP_TX) or
/// dropped, never passed: the kernel must not answer it
/// (docs/design.md#1-the-program-answers-or-drops-every-request-for-a-vip).
#[inline(always)]
fn try_vip_xdp(ctx: XdpContext) -> u32 {
    let mut pkt = Xdp { ctx };
    match process(&mut pkt, &Vips, &KernelClock) {
        Outcome::Answered(p) => {
            count(ProtoCounter::Requests.index(p));
            count(ProtoCounter::Answered.index(p));
            xdp_action::XDP_TX
        }
        Outcome::Fenced(p) => {
            count(ProtoCounter::Requests.index(p));
            count(ProtoCounter::Fenced.index(p));
            xdp_action::XDP_DROP
        }
        Outcome::Refused(p, reason) => {
            count(ProtoCounter::Requests.index(p));
            count(ProtoCounter::Refused.index(p));
            count(reason.counter_index());
            if reason == RefuseReason::NoRoom {
                warn!(&pkt.ctx, "vip-ebpf: could not grow a frame to answer an NS");
            }
            xdp_action::XDP_DROP
        }
        Outcome::Claimed { proto, dropped } => {
            count(ProtoCounter::Claims.index(proto));
            if dropped {
                xdp_action::XDP_DROP
            } else {
                xdp_action::XDP_PASS
            }
        }
        Outcome::TooDeep => {
            count(Counter::TooDeep as u32);
            xdp_action::XDP_DROP
        }
        Outcome::Passed { reason } => {
            count(reason.counter_index());
            xdp_action::XDP_PASS
        }
    }
}

/// Remembers the last conflicting claim per VIP for the agent to report.
#[inline(always)]
fn record_claim_in_map(key: &VipKey, mac: [u8; 6], proto: Proto) {
    // SAFETY: the value is copied out at once (see `Vips::lookup`).
    let previous = unsafe { CLAIMS.get(key) }.map_or(0, |c| c.count);
    let record = ClaimRecord {
        count: previous + 1,
        last_ns: KernelClock.now_ns(),
        mac,
        family: proto.family(),
        _pad: 0,
    };
    // A full map (more VIPs claimed than MAX_VIPS) only loses the record;
    // the per-CPU counter above still counts the claim.
    let _ = CLAIMS.insert(key, &record, 0);
}

#[inline(always)]
fn count(index: u32) {
    if let Some(c) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: the pointer comes from a per-CPU array lookup, so it is
        // valid and only this CPU touches it while the program runs.
        unsafe { *c += 1 };
    }
}

struct KernelClock;

impl Clock for KernelClock {
    #[inline(always)]
    fn now_ns(&self) -> u64 {
        // SAFETY: bpf_ktime_get_ns has no preconditions; it reads CLOCK_MONOTONIC.
        unsafe { bpf_ktime_get_ns() }
    }
}

struct Vips;

impl VipTable for Vips {
    #[inline(always)]
    fn lookup(&self, key: &VipKey) -> Option<VipEntry> {
        // SAFETY: the value is copied out at once; a concurrent update by the
        // agent replaces the whole element.
        unsafe { VIPS.get(key) }.copied()
    }

    #[inline(always)]
    fn record_claim(&self, key: &VipKey, mac: [u8; 6], proto: Proto) {
        record_claim_in_map(key, mac, proto);
    }
}

struct Xdp {
    ctx: XdpContext,
}

impl Xdp {
    /// The one bounds check: a pointer to `size_of::<T>()` bytes at `offset`,
    /// or `None` if they are not all inside the frame.
    #[inline(always)]
    fn ptr_at<T>(&self, offset: usize) -> Option<*mut T> {
        let start = self.ctx.data();
        let end = self.ctx.data_end();
        if start + offset + core::mem::size_of::<T>() > end {
            return None;
        }
        Some((start + offset) as *mut T)
    }
}

impl Packet for Xdp {
    #[inline(always)]
    fn load<T: Copy>(&self, offset: usize) -> Option<T> {
        let p = self.ptr_at::<T>(offset)?;
        // SAFETY: ptr_at checked that the bytes lie inside the frame; T is a
        // byte struct (alignment 1 in practice, read unaligned regardless).
        Some(unsafe { core::ptr::read_unaligned(p) })
    }

    #[inline(always)]
    fn store<T: Copy>(&mut self, offset: usize, value: &T) -> bool {
        match self.ptr_at::<T>(offset) {
            Some(p) => {
                // SAFETY: as in `load`; the frame is writable in XDP.
                unsafe { core::ptr::write_unaligned(p, *value) };
                true
            }
            None => false,
        }
    }

    #[inline(always)]
    fn grow_tail(&mut self, delta: usize) -> bool {
        // SAFETY: the helper only needs the xdp_md pointer the kernel gave us;
        // data/data_end are re-read from it on every later access.
        unsafe { bpf_xdp_adjust_tail(self.ctx.ctx, delta as i32) == 0 }
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
