//! Host tests of the shared decision logic (the same code the XDP program runs).
//! Expected replies are written out byte by byte here, independently of the
//! code under test.

use std::collections::HashMap;

use vip_common::frame::Frame;
use vip_common::frame::announce::{gratuitous_arp, unsolicited_na};
use vip_common::frame::craft::{arp_request, neighbour_solicitation};
use vip_common::maps::{STATE_ACTIVE, STATE_INACTIVE};
use vip_common::{Outcome, PassReason, Proto, VipEntry, VipKey, VipTable, process};

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

struct Table(HashMap<VipKey, VipEntry>);

impl VipTable for Table {
    fn lookup(&self, key: &VipKey) -> Option<VipEntry> {
        self.0.get(key).copied()
    }
}

fn table(state: u8, deadline: u64) -> Table {
    let mut m = HashMap::new();
    m.insert(VipKey::v4(VIP4), VipEntry::new(OUR_MAC, state, deadline));
    m.insert(VipKey::v6(VIP6), VipEntry::new(OUR_MAC, state, deadline));
    Table(m)
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
    assert!(
        matches!(o, Outcome::Passed { reason: r, .. } if r == reason),
        "{o:?} (want {reason:?})"
    );
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

#[test]
fn everything_else_passes_unchanged() {
    let t = active();
    let other4 = [192, 0, 2, 7];
    expect_pass(
        arp_request(PEER_MAC, PEER4, other4, None),
        &t,
        PassReason::NotVip,
    );
    expect_pass(gratuitous_arp(PEER_MAC, VIP4), &t, PassReason::Gratuitous);
    let mut reply = arp_request(PEER_MAC, PEER4, VIP4, None);
    reply[21] = 2;
    expect_pass(reply, &t, PassReason::NotRequest);
    let mut bad_hlen = arp_request(PEER_MAC, PEER4, VIP4, None);
    bad_hlen[18] = 8;
    expect_pass(bad_hlen, &t, PassReason::Malformed);
    let mut bad_plen = arp_request(PEER_MAC, PEER4, VIP4, None);
    bad_plen[19] = 16;
    expect_pass(bad_plen, &t, PassReason::Malformed);
    let mut mcast_src = arp_request(PEER_MAC, PEER4, VIP4, None);
    mcast_src[6] = 0x01;
    expect_pass(mcast_src, &t, PassReason::BadSourceMac);
    let full = arp_request(PEER_MAC, PEER4, VIP4, None);
    for len in [0, 5, 13, 14, 20, 41] {
        expect_pass(full[..len].to_vec(), &t, PassReason::Truncated);
    }
    // Sender is another VIP known to the map.
    let mut m = active().0;
    m.insert(
        VipKey::v4(PEER4),
        VipEntry::new(OUR_MAC, STATE_ACTIVE, NOW + 1),
    );
    expect_pass(
        arp_request(PEER_MAC, PEER4, VIP4, None),
        &Table(m),
        PassReason::SenderIsVip,
    );

    let ns = neighbour_solicitation(PEER_MAC, PEER6, VIP6, true, false, None);
    let mut hop = ns.clone();
    hop[14 + 7] = 64;
    expect_pass(hop, &t, PassReason::BadHopLimit);
    let mut csum = ns.clone();
    csum[14 + 40 + 2] ^= 0xff;
    expect_pass(csum, &t, PassReason::BadChecksum);
    let mut mcast6 = ns.clone();
    mcast6[6] = 0x33;
    expect_pass(mcast6, &t, PassReason::BadSourceMac);
    expect_pass(ns[..70].to_vec(), &t, PassReason::Truncated);
    expect_pass(
        neighbour_solicitation(PEER_MAC, VIP6, VIP6, true, false, None),
        &t,
        PassReason::SenderIsVip,
    );
    let mut other6 = VIP6;
    other6[15] = 0x99;
    expect_pass(
        neighbour_solicitation(PEER_MAC, PEER6, other6, true, false, None),
        &t,
        PassReason::NotVip,
    );
    expect_pass(
        unsolicited_na(PEER_MAC, PEER6),
        &t,
        PassReason::OtherProtocol,
    );
    expect_pass(vec![0u8; 60], &t, PassReason::OtherProtocol);
}

#[test]
fn every_single_bit_flip_of_a_request_is_handled_without_panic() {
    let t = active();
    for base in [
        arp_request(PEER_MAC, PEER4, VIP4, None),
        arp_request(PEER_MAC, PEER4, VIP4, Some(7)),
        neighbour_solicitation(PEER_MAC, PEER6, VIP6, true, false, None),
        neighbour_solicitation(PEER_MAC, PEER6, VIP6, false, true, Some(9)),
    ] {
        for i in 0..base.len() * 8 {
            let mut f = base.clone();
            f[i / 8] ^= 1 << (i % 8);
            let (o, out) = run(f.clone(), &t);
            match o {
                Outcome::Passed { .. } | Outcome::Fenced(_) => assert_eq!(out, f),
                Outcome::Answered(_) => {
                    // Only flips that keep the request valid (e.g. in the
                    // payload padding or the sender MAC) may be answered.
                    assert!(out.len() >= f.len());
                }
            }
        }
    }
}

#[test]
fn one_tag_of_either_kind_is_handled_and_two_are_passed() {
    let base = arp_request(PEER_MAC, PEER4, VIP4, Some(0x0064));
    let mut qinq_outer = base.clone();
    qinq_outer[12..14].copy_from_slice(&[0x88, 0xa8]);
    let (o, out) = run(qinq_outer, &active());
    assert_eq!(o, Outcome::Answered(Proto::Arp));
    assert_eq!(&out[12..14], &[0x88, 0xa8], "the 802.1ad tag is kept");
    // Two tags: the inner ethertype is a tag again; not parsed, passed.
    let mut two = base[..16].to_vec();
    two.extend_from_slice(&[0x81, 0x00, 0x00, 0x07]);
    two.extend_from_slice(&base[16..]);
    two[12..14].copy_from_slice(&[0x88, 0xa8]);
    expect_pass(two, &active(), PassReason::OtherProtocol);
}
