//! The loaded XDP program, run by the kernel through BPF_PROG_TEST_RUN
//! (aya `TestRun`): byte-exact replies, untouched passes, fenced drops, and
//! counters. Needs root (CAP_BPF); skips with a reason otherwise.

use std::net::IpAddr;

use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray};
use aya::programs::{TestRun, TestRunOptions, Xdp};
use aya::{Ebpf, EbpfLoader};
use vip_agent::clock::MonoTime;
use vip_agent::dataplane::{OBJECT, key_of};
use vip_common::frame::Frame;
use vip_common::frame::announce::{gratuitous_arp, unsolicited_na};
use vip_common::frame::craft::{arp_request, neighbour_solicitation};
use vip_common::frame::variants::{Ext, with_ipv6_ext, with_vlan_tags};
use vip_common::maps::{
    CLAIMS_MAP, COUNTERS_LEN, COUNTERS_MAP, Counter, PROGRAM_NAME, STATE_ACTIVE, STATE_INACTIVE,
    VIPS_MAP,
};
use vip_common::{ClaimRecord, Outcome, PassReason, RefuseReason, VipEntry, VipTable, process};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;

const OUR_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const VIP4: [u8; 4] = [192, 0, 2, 100];
const PEER4: [u8; 4] = [192, 0, 2, 2];
const VIP6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x64,
];
const PEER6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02,
];

struct Prog {
    ebpf: Ebpf,
    vips: BpfHashMap<MapData, vip_common::VipKey, VipEntry>,
    counters: PerCpuArray<MapData, u64>,
    claims: BpfHashMap<MapData, vip_common::VipKey, ClaimRecord>,
}

impl Prog {
    fn load() -> Self {
        let mut ebpf = EbpfLoader::new().load(OBJECT).expect("load object");
        let vips = BpfHashMap::try_from(ebpf.take_map(VIPS_MAP).unwrap()).unwrap();
        let counters = PerCpuArray::try_from(ebpf.take_map(COUNTERS_MAP).unwrap()).unwrap();
        let claims = BpfHashMap::try_from(ebpf.take_map(CLAIMS_MAP).unwrap()).unwrap();
        let p: &mut Xdp = ebpf.program_mut(PROGRAM_NAME).unwrap().try_into().unwrap();
        p.load().expect("verifier accepts the program");
        Prog {
            ebpf,
            vips,
            counters,
            claims,
        }
    }

    fn claim(&self, vip: [u8; 4]) -> Option<ClaimRecord> {
        self.claims.get(&key_of(IpAddr::from(vip)), 0).ok()
    }

    fn set(&mut self, state: u8, deadline: MonoTime) {
        for ip in [IpAddr::from(VIP4), IpAddr::from(VIP6)] {
            self.vips
                .insert(
                    key_of(ip),
                    VipEntry::new(OUR_MAC, state, deadline.as_nanos()),
                    0,
                )
                .unwrap();
        }
    }

    fn active(&mut self) {
        self.set(
            STATE_ACTIVE,
            MonoTime::now().saturating_add(std::time::Duration::from_secs(60)),
        );
    }

    /// Runs one frame; returns (action, output frame).
    fn run(&mut self, input: &[u8]) -> (u32, Vec<u8>) {
        let (action, out, _) = self.run_repeat(input, 1);
        (action, out)
    }

    fn run_repeat(&mut self, input: &[u8], repeat: u32) -> (u32, Vec<u8>, std::time::Duration) {
        let p: &mut Xdp = self
            .ebpf
            .program_mut(PROGRAM_NAME)
            .unwrap()
            .try_into()
            .unwrap();
        let mut out = vec![0u8; 512];
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(input);
        opts.data_out = Some(&mut out);
        opts.repeat = repeat;
        let r = p.test_run(opts).expect("test_run");
        out.truncate(r.data_size_out as usize);
        (r.return_value, out, r.duration)
    }

    fn counters(&self) -> [u64; COUNTERS_LEN as usize] {
        let mut v = [0u64; COUNTERS_LEN as usize];
        for (i, c) in v.iter_mut().enumerate() {
            *c = self.counters.get(&(i as u32), 0).unwrap().iter().sum();
        }
        v
    }
}

/// The host model of the map, to compare the kernel with the shared logic.
struct Model(std::collections::HashMap<vip_common::VipKey, VipEntry>);
impl VipTable for Model {
    fn lookup(&self, k: &vip_common::VipKey) -> Option<VipEntry> {
        self.0.get(k).copied()
    }
}

#[test]
fn arp_request_gets_byte_exact_reply() {
    vip_lab::require_root!();
    let mut p = Prog::load();
    p.active();
    let (action, out) = p.run(&arp_request(PEER_MAC, PEER4, VIP4, None));
    assert_eq!(action, XDP_TX);
    #[rustfmt::skip]
    let mut want = vec![
        0x02, 0, 0, 0, 0, 0x02,   0x02, 0, 0, 0, 0, 0x01,   0x08, 0x06,
        0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x02,
        0x02, 0, 0, 0, 0, 0x01,  192, 0, 2, 100,
        0x02, 0, 0, 0, 0, 0x02,  192, 0, 2, 2,
    ];
    want.resize(60, 0);
    assert_eq!(out, want);
}

#[test]
fn neighbour_solicitation_gets_byte_exact_advertisement() {
    vip_lab::require_root!();
    let mut p = Prog::load();
    p.active();
    for (slla, unicast, vlan) in [
        (true, false, None),
        (false, true, None),
        (true, false, Some(42u16)),
    ] {
        let req = neighbour_solicitation(PEER_MAC, PEER6, VIP6, slla, unicast, vlan);
        let (action, out) = p.run(&req);
        assert_eq!(
            action, XDP_TX,
            "slla={slla} unicast={unicast} vlan={vlan:?}"
        );
        let l3 = if vlan.is_some() { 18 } else { 14 };
        let mut want = Vec::new();
        want.extend_from_slice(&PEER_MAC);
        want.extend_from_slice(&OUR_MAC);
        if let Some(tci) = vlan {
            want.extend_from_slice(&[0x81, 0x00]);
            want.extend_from_slice(&tci.to_be_bytes());
        }
        want.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0, 0, 32, 58, 255]);
        want.extend_from_slice(&VIP6);
        want.extend_from_slice(&PEER6);
        want.extend_from_slice(&[136, 0, 0, 0, 0x60, 0, 0, 0]);
        want.extend_from_slice(&VIP6);
        want.extend_from_slice(&[2, 1]);
        want.extend_from_slice(&OUR_MAC);
        // Independent checksum: RFC 1071 over pseudo header + message.
        let mut sum: u32 = 0;
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&VIP6);
        pseudo.extend_from_slice(&PEER6);
        pseudo.extend_from_slice(&[0, 0, 0, 32, 0, 0, 0, 58]);
        pseudo.extend_from_slice(&want[l3 + 40..]);
        for w in pseudo.chunks(2) {
            sum += (u32::from(w[0]) << 8) | u32::from(w[1]);
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        let c = (!(sum as u16)).to_be_bytes();
        want[l3 + 42] = c[0];
        want[l3 + 43] = c[1];
        assert_eq!(out, want, "slla={slla} unicast={unicast} vlan={vlan:?}");
    }
}

#[test]
fn frames_it_passes_or_drops_come_back_unchanged() {
    vip_lab::require_root!();
    let mut p = Prog::load();
    p.active();
    let ns = neighbour_solicitation(PEER_MAC, PEER6, VIP6, true, false, None);
    // Not requests for a VIP: the kernel's.
    let mut reply = arp_request(PEER_MAC, PEER4, VIP4, None);
    reply[21] = 2;
    let mut hlen = arp_request(PEER_MAC, PEER4, VIP4, None);
    hlen[18] = 7;
    let mut plen = arp_request(PEER_MAC, PEER4, VIP4, None);
    plen[19] = 6;
    let passes: Vec<(&str, Vec<u8>)> = vec![
        (
            "other target",
            arp_request(PEER_MAC, PEER4, [192, 0, 2, 7], None),
        ),
        ("ipv4-ish junk", vec![0u8; 60]),
        // (Frames shorter than an Ethernet header are refused by
        // BPF_PROG_TEST_RUN itself; the host tests cover them.)
        ("ethernet header only", vec![0xff; 14]),
        ("arp reply", reply),
        ("wrong hlen", hlen),
        ("wrong plen", plen),
        (
            "truncated arp",
            arp_request(PEER_MAC, PEER4, VIP4, None)[..30].to_vec(),
        ),
        (
            "ns for other target",
            neighbour_solicitation(PEER_MAC, PEER6, PEER6, true, false, None),
        ),
    ];
    for (name, frame) in passes {
        let (action, out) = p.run(&frame);
        assert_eq!(action, XDP_PASS, "{name}");
        assert_eq!(out, frame, "{name}: frame must be unchanged");
    }
    // Requests for the (active) VIP in forms the program does not answer:
    // dropped, never passed (the kernel must not answer them either).
    let mut mc = arp_request(PEER_MAC, PEER4, VIP4, None);
    mc[6] |= 1;
    let mut bc = arp_request(PEER_MAC, PEER4, VIP4, None);
    bc[6..12].copy_from_slice(&[0xff; 6]);
    let mut hop = ns.clone();
    hop[21] = 254;
    let mut csum = ns.clone();
    csum[14 + 40 + 3] ^= 1;
    let dropped: Vec<(&str, Vec<u8>)> = vec![
        (
            "gratuitous, another MAC (a claim)",
            gratuitous_arp(PEER_MAC, VIP4),
        ),
        (
            "sender is the VIP (gratuitous probe for it)",
            arp_request(PEER_MAC, VIP4, VIP4, None),
        ),
        ("multicast source mac", mc),
        ("broadcast source mac", bc),
        ("ns hop limit 254", hop),
        ("ns bad checksum", csum),
        ("truncated ns", ns[..80].to_vec()),
        (
            "ns behind a hop-by-hop header",
            with_ipv6_ext(&ns, Ext::HopByHop),
        ),
    ];
    for (name, frame) in dropped {
        let (action, out) = p.run(&frame);
        assert_eq!(action, XDP_DROP, "{name}");
        assert_eq!(out, frame, "{name}: frame must be unchanged");
    }
}

#[test]
fn fenced_vips_are_dropped_and_counted() {
    vip_lab::require_root!();
    let mut p = Prog::load();
    let before = p.counters();
    // Inactive.
    p.set(
        STATE_INACTIVE,
        MonoTime::now().saturating_add(std::time::Duration::from_secs(60)),
    );
    assert_eq!(p.run(&arp_request(PEER_MAC, PEER4, VIP4, None)).0, XDP_DROP);
    assert_eq!(
        p.run(&neighbour_solicitation(
            PEER_MAC, PEER6, VIP6, true, false, None
        ))
        .0,
        XDP_DROP
    );
    // Active, but the deadline has passed (kernel monotonic clock).
    p.set(STATE_ACTIVE, MonoTime::now());
    assert_eq!(p.run(&arp_request(PEER_MAC, PEER4, VIP4, None)).0, XDP_DROP);
    assert_eq!(
        p.run(&neighbour_solicitation(
            PEER_MAC, PEER6, VIP6, false, true, None
        ))
        .0,
        XDP_DROP
    );
    // Active with a deadline ahead: answered.
    p.active();
    assert_eq!(p.run(&arp_request(PEER_MAC, PEER4, VIP4, None)).0, XDP_TX);
    assert_eq!(
        p.run(&neighbour_solicitation(
            PEER_MAC, PEER6, VIP6, true, false, None
        ))
        .0,
        XDP_TX
    );
    // Our own gratuitous ARP form: refused (dropped), not passed.
    assert_eq!(p.run(&gratuitous_arp(OUR_MAC, VIP4)).0, XDP_DROP);
    // Another MAC's gratuitous ARP for our active VIP: a claim, dropped and
    // recorded in CLAIMS.
    assert_eq!(p.run(&gratuitous_arp(PEER_MAC, VIP4)).0, XDP_DROP);
    assert_eq!(p.run(&[0u8; 60]).0, XDP_PASS);
    // Deeper than followed: dropped.
    let five: Vec<(u16, u16)> = (0..5).map(|_| (0x8100, 0)).collect();
    assert_eq!(
        p.run(&with_vlan_tags(
            &arp_request(PEER_MAC, PEER4, VIP4, None),
            &five
        ))
        .0,
        XDP_DROP
    );

    let after = p.counters();
    let d = |c: u32| after[c as usize] - before[c as usize];
    assert_eq!(
        d(Counter::ArpRequests as u32),
        4,
        "3 requests + 1 gratuitous request of ours seen"
    );
    assert_eq!(d(Counter::NsRequests as u32), 3);
    assert_eq!(d(Counter::ArpFenced as u32), 2);
    assert_eq!(d(Counter::NsFenced as u32), 2);
    assert_eq!(d(Counter::ArpAnswered as u32), 1);
    assert_eq!(d(Counter::NsAnswered as u32), 1);
    assert_eq!(d(Counter::ArpRefused as u32), 1);
    assert_eq!(d(RefuseReason::Gratuitous.counter_index()), 1);
    assert_eq!(d(Counter::ArpClaims as u32), 1);
    assert_eq!(d(Counter::TooDeep as u32), 1);
    assert_eq!(d(PassReason::OtherProtocol.counter_index()), 1);
    let claim = p.claim(VIP4).expect("the claim is recorded");
    assert_eq!(claim.mac, PEER_MAC);
    assert_eq!(claim.family, 4);
    assert!(claim.count >= 1);
}

#[test]
fn kernel_agrees_with_the_host_model_on_mutated_frames() {
    vip_lab::require_root!();
    let mut p = Prog::load();
    p.active();
    let mut model = std::collections::HashMap::new();
    for ip in [IpAddr::from(VIP4), IpAddr::from(VIP6)] {
        model.insert(key_of(ip), VipEntry::new(OUR_MAC, STATE_ACTIVE, u64::MAX));
    }
    let model = Model(model);
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let bases = [
        arp_request(PEER_MAC, PEER4, VIP4, None),
        arp_request(PEER_MAC, PEER4, VIP4, Some(5)),
        neighbour_solicitation(PEER_MAC, PEER6, VIP6, true, false, None),
        neighbour_solicitation(PEER_MAC, PEER6, VIP6, false, true, Some(9)),
        neighbour_solicitation(PEER_MAC, [0; 16], VIP6, false, false, None),
        with_ipv6_ext(
            &neighbour_solicitation(PEER_MAC, PEER6, VIP6, true, false, None),
            Ext::HopByHop,
        ),
        with_vlan_tags(
            &arp_request(PEER_MAC, PEER4, VIP4, None),
            &[(0x88a8, 0), (0x8100, 0)],
        ),
        gratuitous_arp(PEER_MAC, VIP4),
        unsolicited_na(PEER_MAC, VIP6),
    ];
    for i in 0..6000 {
        let mut f = bases[i % bases.len()].clone();
        let flips = 1 + (rnd() % 3) as usize;
        for _ in 0..flips {
            let pos = (rnd() as usize) % f.len();
            f[pos] ^= 1 << (rnd() % 8);
        }
        if rnd() % 8 == 0 {
            let len = (rnd() as usize) % f.len();
            f.truncate(len.max(14)); // the kernel's test runner needs >= ETH_HLEN
        }
        let mut host = Frame::new(f.clone());
        let want = process(&mut host, &model, &0u64);
        let (action, out) = p.run(&f);
        let want_action = match want {
            Outcome::Answered(_) => XDP_TX,
            o if o.passes() => XDP_PASS,
            _ => XDP_DROP,
        };
        assert_eq!(action, want_action, "frame {f:02x?}: host said {want:?}");
        assert_eq!(out, host.bytes, "frame {f:02x?}");
    }
}

/// Average kernel-measured run time over `runs` single runs. With a repeat
/// count above 1 the kernel re-runs the program on the frame it already
/// rewrote (the reply, which is then passed), so answered frames are timed
/// one by one.
fn mean_ns(p: &mut Prog, frame: &[u8], want: u32, runs: u32) -> f64 {
    let mut total = std::time::Duration::ZERO;
    for _ in 0..runs {
        let (a, _, d) = p.run_repeat(frame, 1);
        assert_eq!(a, want);
        total += d;
    }
    total.as_nanos() as f64 / f64::from(runs)
}

/// Not a timing assert: prints the per-packet cost for the closing notes.
#[test]
fn per_packet_cost_is_reported() {
    vip_lab::require_root!();
    let mut p = Prog::load();
    p.active();
    let runs = 100_000;
    let arp = mean_ns(
        &mut p,
        &arp_request(PEER_MAC, PEER4, VIP4, None),
        XDP_TX,
        runs,
    );
    let ns = mean_ns(
        &mut p,
        &neighbour_solicitation(PEER_MAC, PEER6, VIP6, true, false, None),
        XDP_TX,
        runs,
    );
    let other = mean_ns(
        &mut p,
        &arp_request(PEER_MAC, PEER4, [192, 0, 2, 7], None),
        XDP_PASS,
        runs,
    );
    // Passed frames are not rewritten, so a large repeat count is exact here.
    let (a, _, d) = p.run_repeat(&[0u8; 60], 1_000_000);
    assert_eq!(a, XDP_PASS);
    let (b, _, e) = p.run_repeat(
        &arp_request(PEER_MAC, PEER4, [192, 0, 2, 7], None),
        1_000_000,
    );
    assert_eq!(b, XDP_PASS);
    eprintln!(
        "BPF_PROG_TEST_RUN ns/packet: ARP answered {arp:.0} (mean of {runs} single runs), NS answered {ns:.0} \
         (same), ARP for another target passed {other:.0} (same) / {e} (repeat 1e6), non-ARP frame passed {d} (repeat 1e6)",
        d = d.as_nanos(),
        e = e.as_nanos()
    );
}
