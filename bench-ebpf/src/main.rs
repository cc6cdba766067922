//! XDP programs of the data-plane benchmark (`vip-lab bench dataplane`).
//!
//! * `bench_gen`: the flood generator, run through BPF_PROG_TEST_RUN in
//!   live-frames mode on the generator's veth. It rewrites EVERY header byte
//!   of the frame (an ARP request or an ICMPv6 neighbour solicitation for the
//!   VIP) from the configuration and a per-CPU sequence number, then returns
//!   `XDP_TX` (the kernel turns it into a transmit out of that veth). Live
//!   mode recycles its pages with whatever the receiver made of them (an
//!   XDP responder rewrites a request into a reply in place), so nothing of
//!   the template passed as `data_in` may be trusted after the first round.
//!   Every `legit_every`-th frame comes from the generator's real MAC and
//!   address; the others from spoofed senders: random locally administered
//!   MACs, IPv4 hosts of 192.0.2.0/24 (10-199), 198.51.100.0/24 and
//!   203.0.113.0/24, IPv6 hosts of 2001:db8::/64 with a random interface id.
//!   With `tail_call` set it tail-calls `JUMP[0]` instead of returning (to
//!   run another program on a fresh request: the per-packet cost test).
//! * `bench_count`: on the generator's veth: counts ARP replies (not
//!   gratuitous) and solicited neighbour advertisements, split into those for
//!   the real sender (legitimate) and the others, and drops them; drops other
//!   ARP / ICMPv6 too (announcements, ...), passes the rest.
//! * `bench_tx`: the empty program (`XDP_TX`), the cost baseline.
#![no_std]
#![no_main]

use aya_ebpf::bindings::xdp_action;
use aya_ebpf::macros::{map, xdp};
use aya_ebpf::maps::{Array, PerCpuArray, ProgramArray};
use aya_ebpf::programs::XdpContext;

/// Configuration, index 0. Layout shared with `vip_bench::dataplane::GenConfig`
/// (repr(C), u64 fields only, same order).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct GenConfig {
    /// 0: ARP request, 1: neighbour solicitation.
    pub proto: u64,
    /// Every n-th frame is a legitimate request (0: never, 1: always).
    pub legit_every: u64,
    /// 1: tail-call `JUMP[0]` instead of returning `XDP_TX`.
    pub tail_call: u64,
    /// The generator's MAC in the low 48 bits (byte 0 most significant).
    pub real_mac: u64,
    /// The generator's IPv4 address (byte 0 most significant, low 32 bits).
    pub real_ip4: u64,
    /// The generator's IPv6 address, high and low halves (byte 0 most significant).
    pub real_ip6_hi: u64,
    pub real_ip6_lo: u64,
    /// The VIPs.
    pub vip4: u64,
    pub vip6_hi: u64,
    pub vip6_lo: u64,
    /// One's complement sum (unfolded) of every NS checksum word except the
    /// source address and the source link-layer address option's MAC.
    pub ns_sum_base: u64,
}

/// Per-CPU counters of the generator and the reply counter.
pub mod idx {
    pub const SEQ: u32 = 0;
    pub const SENT: u32 = 1;
    pub const LEGIT_SENT: u32 = 2;
    pub const ARP_REPLY_LEGIT: u32 = 3;
    pub const ARP_REPLY_SPOOFED: u32 = 4;
    pub const NA_LEGIT: u32 = 5;
    pub const NA_SPOOFED: u32 = 6;
    pub const OTHER_ND: u32 = 7;
    pub const PASSED: u32 = 8;
    pub const TAIL_CALL_FAILED: u32 = 9;
    pub const LEN: u32 = 10;
}

#[map(name = "GEN_CFG")]
static GEN_CFG: Array<GenConfig> = Array::with_max_entries(1, 0);

#[map(name = "GEN_STATS")]
static GEN_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(idx::LEN, 0);

#[map(name = "JUMP")]
static JUMP: ProgramArray = ProgramArray::with_max_entries(1, 0);

const ARP_LEN: usize = 42;
const NS_LEN: usize = 86;

#[inline(always)]
fn add(index: u32, n: u64) {
    if let Some(c) = GEN_STATS.get_ptr_mut(index) {
        // SAFETY: per-CPU array slot; only this CPU touches it while we run.
        unsafe { *c += n };
    }
}

/// splitmix64: a cheap, well-mixed hash of the sequence number.
#[inline(always)]
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A frame of at least `len` bytes, as a raw pointer to its first byte.
#[inline(always)]
fn frame(ctx: &XdpContext, len: usize) -> Option<*mut u8> {
    let start = ctx.data();
    if start + len > ctx.data_end() {
        return None;
    }
    Some(start as *mut u8)
}

/// Writes the `n` low bytes of `v`, most significant first, at `p + off`.
#[inline(always)]
fn put(p: *mut u8, off: usize, v: u64, n: usize) {
    let mut i = 0;
    while i < n {
        let byte = (v >> (8 * (n - 1 - i))) as u8;
        // SAFETY: callers checked (through `frame`) that the frame holds
        // ARP_LEN or NS_LEN bytes, and every `off + n` stays below that.
        unsafe { p.add(off + i).write_volatile(byte) };
        i += 1;
    }
}

/// Sum of the 16-bit words of the `n` (even) low bytes of `v`.
#[inline(always)]
fn words(v: u64, n: usize) -> u64 {
    let mut s = 0;
    let mut i = 0;
    while i < n / 2 {
        s += (v >> (16 * i)) & 0xffff;
        i += 1;
    }
    s
}

#[xdp]
pub fn bench_gen(ctx: XdpContext) -> u32 {
    let Some(cfg) = GEN_CFG.get(0) else {
        return xdp_action::XDP_ABORTED;
    };
    let seq = match GEN_STATS.get_ptr_mut(idx::SEQ) {
        // SAFETY: per-CPU slot, see `add`.
        Some(p) => unsafe {
            let s = *p;
            *p = s + 1;
            s
        },
        None => return xdp_action::XDP_ABORTED,
    };
    let legit = cfg.legit_every != 0 && seq % cfg.legit_every == 0;
    let r = mix(seq);
    // Locally administered unicast: 02:xx:xx:xx:xx:xx.
    let mac = if legit {
        cfg.real_mac
    } else {
        (0x02u64 << 40) | (r & 0xff_ffff_ffff)
    };
    let built = if cfg.proto == 0 {
        arp(&ctx, cfg, legit, mac, r)
    } else {
        ns(&ctx, cfg, legit, mac, r)
    };
    if !built {
        return xdp_action::XDP_ABORTED;
    }
    add(idx::SENT, 1);
    if legit {
        add(idx::LEGIT_SENT, 1);
    }
    if cfg.tail_call != 0 {
        // SAFETY: the helper either jumps (never returns) or fails.
        unsafe { JUMP.tail_call(&ctx, 0) };
        add(idx::TAIL_CALL_FAILED, 1);
        return xdp_action::XDP_ABORTED;
    }
    xdp_action::XDP_TX
}

#[inline(always)]
fn arp(ctx: &XdpContext, cfg: &GenConfig, legit: bool, mac: u64, r: u64) -> bool {
    let Some(p) = frame(ctx, ARP_LEN) else {
        return false;
    };
    let ip = if legit {
        cfg.real_ip4
    } else {
        // 190 + 254 + 254 hosts: 192.0.2.10-199, 198.51.100.1-254, 203.0.113.1-254.
        let h = (r >> 40) % 698;
        if h < 190 {
            0xc000_0200 | (10 + h)
        } else if h < 444 {
            0xc633_6400 | (h - 190 + 1)
        } else {
            0xcb00_7100 | (h - 444 + 1)
        }
    };
    put(p, 0, 0xffff_ffff_ffff, 6);
    put(p, 6, mac, 6);
    put(p, 12, 0x0806, 2);
    put(p, 14, 0x0001_0800_0604_0001, 8);
    put(p, 22, mac, 6);
    put(p, 28, ip, 4);
    put(p, 32, 0, 6);
    put(p, 38, cfg.vip4, 4);
    true
}

#[inline(always)]
fn ns(ctx: &XdpContext, cfg: &GenConfig, legit: bool, mac: u64, r: u64) -> bool {
    let Some(p) = frame(ctx, NS_LEN) else {
        return false;
    };
    let (hi, lo) = if legit {
        (cfg.real_ip6_hi, cfg.real_ip6_lo)
    } else {
        // 2001:db8::/64, interface id 0x01xx_xxxx_xxxx_xxxx (never ::1, ::2, ::200).
        (0x2001_0db8_0000_0000, (1u64 << 56) | (r >> 8))
    };
    // Ethernet: to the VIP's solicited-node group.
    put(p, 0, 0x3333_ff00_0000 | (cfg.vip6_lo & 0xff_ffff), 6);
    put(p, 6, mac, 6);
    put(p, 12, 0x86dd, 2);
    // IPv6: version 6, payload 32, next header 58, hop limit 255.
    put(p, 14, 0x6000_0000_0020_3aff, 8);
    put(p, 22, hi, 8);
    put(p, 30, lo, 8);
    put(p, 38, 0xff02_0000_0000_0000, 8);
    put(p, 46, 0x0000_0001_ff00_0000 | (cfg.vip6_lo & 0xff_ffff), 8);
    // ICMPv6 NS: type 135, code 0, checksum, reserved, target, SLLA option.
    let mut sum = cfg.ns_sum_base + words(hi, 8) + words(lo, 8) + words(mac, 6);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    let check = !sum & 0xffff;
    put(p, 54, 0x8700, 2);
    put(p, 56, check, 2);
    put(p, 58, 0, 4);
    put(p, 62, cfg.vip6_hi, 8);
    put(p, 70, cfg.vip6_lo, 8);
    put(p, 78, 0x0101, 2);
    put(p, 80, mac, 6);
    true
}

/// Reads `n` bytes at `off` as a big-endian integer, if inside the frame.
#[inline(always)]
fn get(ctx: &XdpContext, off: usize, n: usize) -> Option<u64> {
    let start = ctx.data();
    if start + off + n > ctx.data_end() {
        return None;
    }
    let mut v = 0u64;
    let mut i = 0;
    while i < n {
        // SAFETY: checked above that the bytes lie inside the frame.
        v = (v << 8) | u64::from(unsafe { *((start + off + i) as *const u8) });
        i += 1;
    }
    Some(v)
}

#[xdp]
pub fn bench_count(ctx: XdpContext) -> u32 {
    let Some(cfg) = GEN_CFG.get(0) else {
        return xdp_action::XDP_PASS;
    };
    match get(&ctx, 12, 2) {
        Some(0x0806) => {
            // ARP: op at 20, sender / target protocol address at 28 / 38.
            // Gratuitous replies (sender == target: the agent's announcements) are not answers.
            match (get(&ctx, 20, 2), get(&ctx, 28, 4), get(&ctx, 38, 4)) {
                (Some(2), Some(spa), Some(tpa)) if spa != tpa && tpa == cfg.real_ip4 => {
                    add(idx::ARP_REPLY_LEGIT, 1)
                }
                (Some(2), Some(spa), Some(tpa)) if spa != tpa => add(idx::ARP_REPLY_SPOOFED, 1),
                _ => add(idx::OTHER_ND, 1),
            }
            xdp_action::XDP_DROP
        }
        Some(0x86dd) => {
            if get(&ctx, 20, 1) != Some(58) {
                add(idx::PASSED, 1);
                return xdp_action::XDP_PASS;
            }
            // Neighbour advertisement: type 136 at 54, flags at 58 (Solicited =
            // 0x40; unsolicited ones are the agent's announcements), destination at 38.
            let kind = na_kind(&ctx, cfg);
            add(kind, 1);
            xdp_action::XDP_DROP
        }
        _ => {
            add(idx::PASSED, 1);
            xdp_action::XDP_PASS
        }
    }
}

/// The counter slot of an IPv6 ICMPv6 frame.
#[inline(always)]
fn na_kind(ctx: &XdpContext, cfg: &GenConfig) -> u32 {
    let Some(head) = get(ctx, 54, 8) else {
        return idx::OTHER_ND;
    };
    // type(1) code(1) checksum(2) flags(1) reserved(3)
    let is_na = (head >> 56) == 136;
    let solicited = (head >> 24) & 0x40 != 0;
    if !is_na || !solicited {
        return idx::OTHER_ND;
    }
    let Some(hi) = get(ctx, 38, 8) else {
        return idx::OTHER_ND;
    };
    let Some(lo) = get(ctx, 46, 8) else {
        return idx::OTHER_ND;
    };
    if hi == cfg.real_ip6_hi && lo == cfg.real_ip6_lo {
        idx::NA_LEGIT
    } else {
        idx::NA_SPOOFED
    }
}

#[xdp]
pub fn bench_tx(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_TX
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
