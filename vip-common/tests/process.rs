//! Host tests of the shared decision logic (the same code the XDP program runs).
//! Expected replies are written out byte by byte here, independently of the
//! code under test.

use std::cell::RefCell;
use std::collections::HashMap;

use vip_common::frame::Frame;
use vip_common::frame::announce::{gratuitous_arp, unsolicited_na};
use vip_common::frame::craft::{arp_request, neighbour_solicitation};
use vip_common::frame::variants::{Ext, kernel_accepted, with_ipv6_ext, with_vlan_tags};
use vip_common::maps::{STATE_ACTIVE, STATE_INACTIVE};
use vip_common::{Outcome, PassReason, Proto, RefuseReason, VipEntry, VipKey, VipTable, process};

const OUR_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];
const PEER_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x02];
const VIP4: [u8; 4] = [192, 0, 2, 100];
const PEER4: [u8; 4] = [192, 0, 2, 2];
const VIP6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x64,
];
const PEER6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02,
];
const NOW: u64 = 1_000_000_000;

struct Table(
    HashMap<VipKey, VipEntry>,
    RefCell<Vec<(VipKey, [u8; 6], Proto)>>,
);

impl VipTable for Table {
    fn lookup(&self, key: &VipKey) -> Option<VipEntry> {
        self.0.get(key).copied()
    }
    fn record_claim(&self, key: &VipKey, mac: [u8; 6], proto: Proto) {
        self.1.borrow_mut().push((*key, mac, proto));
    }
}

fn tbl(m: HashMap<VipKey, VipEntry>) -> Table {
    Table(m, RefCell::new(Vec::new()))
}

fn table(state: u8, deadline: u64) -> Table {
    let mut m = HashMap::new();
    m.insert(VipKey::v4(VIP4), VipEntry::new(OUR_MAC, state, deadline));
    m.insert(VipKey::v6(VIP6), VipEntry::new(OUR_MAC, state, deadline));
    tbl(m)
}

fn active() -> Table {
    table(STATE_ACTIVE, NOW + 1)
}

fn run(bytes: Vec<u8>, t: &Table) -> (Outcome, Vec<u8>) {
    let mut f = Frame::new(bytes);
    let o = process(&mut f, t, &NOW);
    (o, f.bytes)
}

fn expect_pass(bytes: Vec<u8>, t: &Table, reason: PassReason) {
    let (o, out) = run(bytes.clone(), t);
    assert_eq!(o, Outcome::Passed { reason });
    assert_eq!(out, bytes, "a passed frame must be unchanged");
}

#[test]
fn arp_request_for_active_vip_gets_exact_reply() {
    let (o, out) = run(arp_request(PEER_MAC, PEER4, VIP4, None), &active());
    assert_eq!(o, Outcome::Answered(Proto::Arp));
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
fn vlan_tagged_arp_keeps_its_tag() {
    let (o, out) = run(arp_request(PEER_MAC, PEER4, VIP4, Some(0x0064)), &active());
    assert_eq!(o, Outcome::Answered(Proto::Arp));
    assert_eq!(&out[12..18], &[0x81, 0x00, 0x00, 0x64, 0x08, 0x06]);
    assert_eq!(&out[18 + 6..18 + 8], &[0, 2]);
}

#[test]
fn ns_for_active_vip_gets_exact_na() {
    let (o, out) = run(
        neighbour_solicitation(PEER_MAC, PEER6, VIP6, true, false, None),
        &active(),
    );
    assert_eq!(o, Outcome::Answered(Proto::Ns));
    #[rustfmt::skip]
    let mut want = vec![
        0x02, 0, 0, 0, 0, 0x02,   0x02, 0, 0, 0, 0, 0x01,   0x86, 0xdd,
        0x60, 0, 0, 0,  0x00, 0x20,  58, 255,
    ];
    want.extend_from_slice(&VIP6);
    want.extend_from_slice(&PEER6);
    // ICMPv6: type 136, code 0, checksum (below), flags S|O, target, TLLA.
    want.extend_from_slice(&[136, 0, 0, 0, 0x60, 0, 0, 0]);
    want.extend_from_slice(&VIP6);
    want.extend_from_slice(&[2, 1, 0x02, 0, 0, 0, 0, 0x01]);
    // Checksum computed here by a plain one's-complement sum, independent of
    // vip_common::checksum.
    let mut sum: u32 = 0;
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&VIP6);
    pseudo.extend_from_slice(&PEER6);
    pseudo.extend_from_slice(&[0, 0, 0, 32, 0, 0, 0, 58]);
    pseudo.extend_from_slice(&want[54..]);
    for w in pseudo.chunks(2) {
        sum += u32::from(w[0]) << 8 | u32::from(w[1]);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let c = !(sum as u16);
    want[56] = (c >> 8) as u8;
    want[57] = c as u8;
    assert_eq!(out, want);
}

#[test]
fn ns_without_option_grows_by_the_tlla() {
    let req = neighbour_solicitation(PEER_MAC, PEER6, VIP6, false, true, None);
    assert_eq!(req.len(), 14 + 40 + 24);
    let (o, out) = run(req, &active());
    assert_eq!(o, Outcome::Answered(Proto::Ns));
    assert_eq!(out.len(), 14 + 40 + 32);
    assert_eq!(&out[14 + 40 + 24..], &[2, 1, 0x02, 0, 0, 0, 0, 0x01]);
}

#[test]
fn dad_probe_is_answered_to_all_nodes_without_solicited_flag() {
    let (o, out) = run(
        neighbour_solicitation(PEER_MAC, [0; 16], VIP6, false, false, None),
        &active(),
    );
    assert_eq!(o, Outcome::Answered(Proto::Ns));
    assert_eq!(&out[0..6], &[0x33, 0x33, 0, 0, 0, 1]);
    assert_eq!(
        out[14 + 24..14 + 40],
        [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]
    );
    assert_eq!(out[14 + 40 + 4], 0x20);
}

#[test]
fn fenced_vips_are_dropped_not_passed() {
    for t in [
        table(STATE_INACTIVE, NOW + 1_000_000),
        table(STATE_ACTIVE, NOW),
        table(STATE_ACTIVE, NOW - 1),
    ] {
        assert_eq!(
            run(arp_request(PEER_MAC, PEER4, VIP4, None), &t).0,
            Outcome::Fenced(Proto::Arp)
        );
        assert_eq!(
            run(
                neighbour_solicitation(PEER_MAC, PEER6, VIP6, true, false, None),
                &t
            )
            .0,
            Outcome::Fenced(Proto::Ns)
        );
    }
}

fn expect_refused(bytes: Vec<u8>, t: &Table, proto: Proto, reason: RefuseReason) {
    let (o, out) = run(bytes.clone(), t);
    assert_eq!(o, Outcome::Refused(proto, reason));
    assert_eq!(out, bytes, "a dropped frame must be unchanged");
}

#[test]
fn frames_that_are_not_requests_for_a_vip_pass_unchanged() {
    let t = active();
    let other4 = [192, 0, 2, 7];
    expect_pass(
        arp_request(PEER_MAC, PEER4, other4, None),
        &t,
        PassReason::NotVip,
    );
    // Another host's gratuitous ARP (not for a VIP).
    expect_pass(gratuitous_arp(PEER_MAC, other4), &t, PassReason::NotVip);
    let mut reply = arp_request(PEER_MAC, PEER4, VIP4, None);
    reply[21] = 2;
    expect_pass(reply, &t, PassReason::NotRequest);
    let mut rarp = arp_request(PEER_MAC, PEER4, VIP4, None);
    rarp[21] = 3;
    expect_pass(rarp, &t, PassReason::NotRequest);
    let mut bad_hlen = arp_request(PEER_MAC, PEER4, VIP4, None);
    bad_hlen[18] = 8;
    expect_pass(bad_hlen, &t, PassReason::Malformed);
    let mut bad_plen = arp_request(PEER_MAC, PEER4, VIP4, None);
    bad_plen[19] = 16;
    expect_pass(bad_plen, &t, PassReason::Malformed);
    let mut htype = arp_request(PEER_MAC, PEER4, VIP4, None);
    htype[15] = 7;
    expect_pass(htype, &t, PassReason::Malformed);
    let full = arp_request(PEER_MAC, PEER4, VIP4, None);
    for len in [0, 5, 13, 14, 20, 41] {
        expect_pass(full[..len].to_vec(), &t, PassReason::Truncated);
    }
    let ns = neighbour_solicitation(PEER_MAC, PEER6, VIP6, true, false, None);
    expect_pass(ns[..70].to_vec(), &t, PassReason::Truncated);
    let mut other6 = VIP6;
    other6[15] = 0x99;
    expect_pass(
        neighbour_solicitation(PEER_MAC, PEER6, other6, true, false, None),
        &t,
        PassReason::NotVip,
    );
    // An NS for another target behind a hop-by-hop header is the kernel's.
    expect_pass(
        with_ipv6_ext(
            &neighbour_solicitation(PEER_MAC, PEER6, other6, true, false, None),
            Ext::HopByHop,
        ),
        &t,
        PassReason::NotVip,
    );
    // A non-first fragment carries no ICMPv6 header.
    let mut frag = with_ipv6_ext(&ns, Ext::Fragment);
    frag[14 + 40 + 3] = 0x08;
    expect_pass(frag, &t, PassReason::OtherProtocol);
    expect_pass(unsolicited_na(PEER_MAC, PEER6), &t, PassReason::NotRequest);
    expect_pass(vec![0u8; 60], &t, PassReason::OtherProtocol);
}

#[test]
fn requests_for_a_vip_in_forms_not_answered_are_dropped_never_passed() {
    for t in [active(), table(STATE_INACTIVE, 0)] {
        // Our own gratuitous ARP form for the VIP, with our MAC: not a claim.
        expect_refused(
            gratuitous_arp(OUR_MAC, VIP4),
            &t,
            Proto::Arp,
            RefuseReason::Gratuitous,
        );
        let mut mcast_src = arp_request(PEER_MAC, PEER4, VIP4, None);
        mcast_src[6] = 0x01;
        expect_refused(mcast_src, &t, Proto::Arp, RefuseReason::BadSender);
        let mut mcast_spa = arp_request(PEER_MAC, PEER4, VIP4, None);
        mcast_spa[28] = 224;
        expect_refused(mcast_spa, &t, Proto::Arp, RefuseReason::BadSender);
        // Sender is another VIP known to the map.
        let mut m = t.0.clone();
        m.insert(
            VipKey::v4(PEER4),
            VipEntry::new(OUR_MAC, STATE_ACTIVE, NOW + 1),
        );
        expect_refused(
            arp_request(PEER_MAC, PEER4, VIP4, None),
            &tbl(m),
            Proto::Arp,
            RefuseReason::SenderIsVip,
        );

        let ns = neighbour_solicitation(PEER_MAC, PEER6, VIP6, true, false, None);
        let mut hop = ns.clone();
        hop[14 + 7] = 64;
        expect_refused(hop, &t, Proto::Ns, RefuseReason::BadHopLimit);
        let mut csum = ns.clone();
        csum[14 + 40 + 2] ^= 0xff;
        expect_refused(csum, &t, Proto::Ns, RefuseReason::BadChecksum);
        let mut code = ns.clone();
        code[14 + 40 + 1] = 1;
        expect_refused(code, &t, Proto::Ns, RefuseReason::BadCode);
        let mut mcast6 = ns.clone();
        mcast6[6] = 0x33;
        expect_refused(mcast6, &t, Proto::Ns, RefuseReason::BadSender);
        expect_refused(
            neighbour_solicitation(PEER_MAC, VIP6, VIP6, true, false, None),
            &t,
            Proto::Ns,
            RefuseReason::SenderIsVip,
        );
        for ext in [Ext::HopByHop, Ext::DestOpts, Ext::Routing, Ext::Fragment] {
            expect_refused(
                with_ipv6_ext(&ns, ext),
                &t,
                Proto::Ns,
                RefuseReason::ExtensionHeaders,
            );
        }
    }
}

#[test]
fn kernel_accepted_variants_are_answered_when_active_and_dropped_when_fenced() {
    let node_mac = OUR_MAC;
    for v in kernel_accepted(PEER_MAC, PEER4, PEER6, VIP4, VIP6, node_mac) {
        let proto = if v.arp { Proto::Arp } else { Proto::Ns };
        let (o, _) = run(v.frame.clone(), &active());
        if v.answered_when_active {
            assert_eq!(o, Outcome::Answered(proto), "{}", v.name);
        } else {
            assert!(
                matches!(o, Outcome::Refused(p, _) if p == proto),
                "{}: {o:?}",
                v.name
            );
        }
        for t in [table(STATE_INACTIVE, NOW + 1), table(STATE_ACTIVE, NOW)] {
            let (o, out) = run(v.frame.clone(), &t);
            assert!(
                matches!(o, Outcome::Fenced(p) | Outcome::Refused(p, _) if p == proto),
                "{}: {o:?}",
                v.name
            );
            assert_eq!(out, v.frame, "{}", v.name);
        }
    }
}

#[test]
fn htype_6_and_probes_are_answered_like_the_kernel_does() {
    let mut req = arp_request(PEER_MAC, PEER4, VIP4, None);
    req[15] = 6;
    let (o, out) = run(req, &active());
    assert_eq!(o, Outcome::Answered(Proto::Arp));
    assert_eq!(&out[14..16], &[0, 6], "the request's hardware type is kept");
    assert_eq!(&out[20..22], &[0, 2]);
    // RFC 5227 probe: sender IP 0.0.0.0; the reply's target IP is 0.0.0.0.
    let (o, out) = run(arp_request(PEER_MAC, [0; 4], VIP4, None), &active());
    assert_eq!(o, Outcome::Answered(Proto::Arp));
    assert_eq!(&out[0..6], &PEER_MAC);
    assert_eq!(&out[32..38], &PEER_MAC);
    assert_eq!(&out[38..42], &[0, 0, 0, 0]);
}

#[test]
fn claims_by_another_mac_are_reported_only_while_we_answer() {
    let t = active();
    // A gratuitous ARP request for our VIP from another MAC: claimed, dropped.
    assert_eq!(
        run(gratuitous_arp(PEER_MAC, VIP4), &t).0,
        Outcome::Claimed {
            proto: Proto::Arp,
            dropped: true
        }
    );
    assert_eq!(
        t.1.borrow().last(),
        Some(&(VipKey::v4(VIP4), PEER_MAC, Proto::Arp))
    );
    // An ARP reply from the VIP with another MAC: claimed, passed.
    let mut reply = gratuitous_arp(PEER_MAC, VIP4);
    reply[21] = 2;
    let (o, out) = run(reply.clone(), &t);
    assert_eq!(
        o,
        Outcome::Claimed {
            proto: Proto::Arp,
            dropped: false
        }
    );
    assert!(o.passes());
    assert_eq!(out, reply);
    // An unsolicited NA for our VIP with another MAC.
    assert_eq!(
        run(unsolicited_na(PEER_MAC, VIP6), &t).0,
        Outcome::Claimed {
            proto: Proto::Ns,
            dropped: false
        }
    );
    assert_eq!(
        t.1.borrow().last(),
        Some(&(VipKey::v6(VIP6), PEER_MAC, Proto::Ns))
    );
    assert_eq!(t.1.borrow().len(), 3);
    // Not claims: our own MAC, or a node that does not answer (another
    // node's takeover announcements reach every follower).
    assert_eq!(
        run(unsolicited_na(OUR_MAC, VIP6), &t).0,
        Outcome::Passed {
            reason: PassReason::NotRequest
        }
    );
    let fenced = table(STATE_ACTIVE, NOW);
    let claims_before = t.1.borrow().len();
    assert_eq!(
        run(unsolicited_na(PEER_MAC, VIP6), &fenced).0,
        Outcome::Passed {
            reason: PassReason::NotRequest
        }
    );
    assert_eq!(
        run(reply, &fenced).0,
        Outcome::Passed {
            reason: PassReason::NotRequest
        }
    );
    assert_eq!(
        run(gratuitous_arp(PEER_MAC, VIP4), &fenced).0,
        Outcome::Refused(Proto::Arp, RefuseReason::Gratuitous)
    );
    assert_eq!(t.1.borrow().len(), claims_before);
    assert!(fenced.1.borrow().is_empty());
}

#[test]
fn every_single_bit_flip_of_a_request_is_handled_without_panic() {
    let t = active();
    for base in [
        arp_request(PEER_MAC, PEER4, VIP4, None),
        arp_request(PEER_MAC, PEER4, VIP4, Some(7)),
        neighbour_solicitation(PEER_MAC, PEER6, VIP6, true, false, None),
        neighbour_solicitation(PEER_MAC, PEER6, VIP6, false, true, Some(9)),
        with_ipv6_ext(
            &neighbour_solicitation(PEER_MAC, PEER6, VIP6, true, false, None),
            Ext::HopByHop,
        ),
    ] {
        for i in 0..base.len() * 8 {
            let mut f = base.clone();
            f[i / 8] ^= 1 << (i % 8);
            let (o, out) = run(f.clone(), &t);
            match o {
                Outcome::Answered(_) => {
                    // Only flips that keep the request valid (e.g. in the
                    // payload padding or the sender MAC) may be answered.
                    assert!(out.len() >= f.len());
                }
                _ => assert_eq!(out, f),
            }
        }
    }
}

#[test]
fn vlan_stacks_up_to_four_tags_are_followed_and_deeper_ones_dropped() {
    let base = arp_request(PEER_MAC, PEER4, VIP4, Some(0x0064));
    let mut qinq_outer = base.clone();
    qinq_outer[12..14].copy_from_slice(&[0x88, 0xa8]);
    let (o, out) = run(qinq_outer, &active());
    assert_eq!(o, Outcome::Answered(Proto::Arp));
    assert_eq!(&out[12..14], &[0x88, 0xa8], "the 802.1ad tag is kept");
    let plain = arp_request(PEER_MAC, PEER4, VIP4, None);
    for n in 2..=4 {
        let tags: Vec<(u16, u16)> = (0..n).map(|i| (0x8100, i as u16)).collect();
        let f = with_vlan_tags(&plain, &tags);
        let (o, out) = run(f.clone(), &active());
        assert_eq!(o, Outcome::Answered(Proto::Arp), "{n} tags");
        assert_eq!(&out[12..12 + 4 * n], &f[12..12 + 4 * n], "tags kept");
        assert_eq!(&out[12 + 4 * n..14 + 4 * n], &[0x08, 0x06]);
        assert_eq!(
            run(f, &table(STATE_INACTIVE, 0)).0,
            Outcome::Fenced(Proto::Arp),
            "{n} tags"
        );
    }
    let five: Vec<(u16, u16)> = (0..5).map(|_| (0x8100, 0)).collect();
    let (o, out) = run(with_vlan_tags(&plain, &five), &active());
    assert_eq!(o, Outcome::TooDeep);
    assert_eq!(out, with_vlan_tags(&plain, &five));
}

#[test]
fn ipv6_extension_chains_deeper_than_followed_are_dropped() {
    let ns = neighbour_solicitation(PEER_MAC, PEER6, VIP6, true, false, None);
    let mut f = ns.clone();
    for _ in 0..4 {
        f = with_ipv6_ext(&f, Ext::DestOpts);
    }
    assert!(matches!(
        run(f.clone(), &active()).0,
        Outcome::Refused(Proto::Ns, RefuseReason::ExtensionHeaders)
    ));
    f = with_ipv6_ext(&f, Ext::HopByHop);
    assert_eq!(run(f, &active()).0, Outcome::TooDeep);
}
