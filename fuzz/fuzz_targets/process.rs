//! Fuzzes the responder's decision logic (the code the XDP program runs) on
//! arbitrary frames: it must never panic; frames it passes or drops must be
//! left unchanged; frames it answers must become well-formed replies.
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use vip_common::checksum::nd_checksum_ok;
use vip_common::frame::Frame;
use vip_common::headers::{NdMsg, NdOpt};
use vip_common::maps::{STATE_ACTIVE, STATE_INACTIVE};
use vip_common::{Outcome, Packet, Proto, VipEntry, VipKey, VipTable, process};

const MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

struct Table(HashMap<VipKey, VipEntry>);
impl VipTable for Table {
    fn lookup(&self, k: &VipKey) -> Option<VipEntry> {
        self.0.get(k).copied()
    }
}

fuzz_target!(|data: &[u8]| {
    // First byte picks the table state; the rest is the frame.
    let Some((&sel, frame)) = data.split_first() else {
        return;
    };
    let state = if sel & 1 == 0 {
        STATE_ACTIVE
    } else {
        STATE_INACTIVE
    };
    let deadline = if sel & 2 == 0 { u64::MAX } else { 0 };
    let mut m = HashMap::new();
    m.insert(
        VipKey::v4([192, 0, 2, 100]),
        VipEntry::new(MAC, state, deadline),
    );
    m.insert(
        VipKey::v6([
            0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x64,
        ]),
        VipEntry::new(MAC, state, deadline),
    );
    let table = Table(m);
    let mut f = Frame::new(frame.to_vec());
    match process(&mut f, &table, &1u64) {
        Outcome::Passed { .. }
        | Outcome::Fenced(_)
        | Outcome::Refused(..)
        | Outcome::Claimed { .. }
        | Outcome::TooDeep => assert_eq!(f.bytes, frame),
        Outcome::Answered(p) => {
            assert!(state == STATE_ACTIVE && deadline == u64::MAX);
            assert_eq!(&f.bytes[6..12], &MAC, "answers from our MAC");
            let mut l3 = 12;
            while f.bytes[l3..l3 + 2] == [0x81, 0x00] || f.bytes[l3..l3 + 2] == [0x88, 0xa8] {
                l3 += 4;
            }
            l3 += 2;
            match p {
                Proto::Arp => {
                    assert_eq!(&f.bytes[l3 + 6..l3 + 8], &[0, 2], "ARP reply");
                    assert_eq!(&f.bytes[l3 + 8..l3 + 14], &MAC);
                    assert_eq!(&f.bytes[l3 + 14..l3 + 18], &[192, 0, 2, 100]);
                }
                Proto::Ns => {
                    let src: [u8; 16] = f.bytes[l3 + 8..l3 + 24].try_into().unwrap();
                    let dst: [u8; 16] = f.bytes[l3 + 24..l3 + 40].try_into().unwrap();
                    let msg: NdMsg = f.load(l3 + 40).unwrap();
                    let opt: NdOpt = f.load(l3 + 64).unwrap();
                    assert_eq!(msg.icmp_type, 136);
                    assert_eq!(f.bytes[l3 + 7], 255, "hop limit");
                    assert_eq!(opt.data, MAC);
                    assert!(nd_checksum_ok(&src, &dst, &msg, Some(&opt)), "NA checksum");
                }
            }
        }
    }
});
