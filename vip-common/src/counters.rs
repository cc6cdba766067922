//! The counters kept once per protocol, and the one mapping from (what
//! happened, protocol) to a [`Counter`] index. The XDP program counts with it
//! and the agent's metrics read with it, so the two cannot disagree.

use crate::maps::Counter;
use crate::process::Proto;

/// What happened to a request for a VIP (or a claim on one), counted
/// separately for ARP and for neighbour discovery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtoCounter {
    /// Seen (any form, any entry state).
    Requests,
    Answered,
    /// Dropped: the entry is inactive or expired.
    Fenced,
    /// Dropped because of its form ([`crate::RefuseReason`]).
    Refused,
    /// Another MAC claimed the VIP while this node answered for it.
    Claims,
}

impl ProtoCounter {
    pub const ALL: [ProtoCounter; 5] = [
        ProtoCounter::Requests,
        ProtoCounter::Answered,
        ProtoCounter::Fenced,
        ProtoCounter::Refused,
        ProtoCounter::Claims,
    ];

    /// The counter for this event and protocol.
    #[inline(always)]
    pub const fn of(self, proto: Proto) -> Counter {
        match (self, proto) {
            (ProtoCounter::Requests, Proto::Arp) => Counter::ArpRequests,
            (ProtoCounter::Requests, Proto::Ns) => Counter::NsRequests,
            (ProtoCounter::Answered, Proto::Arp) => Counter::ArpAnswered,
            (ProtoCounter::Answered, Proto::Ns) => Counter::NsAnswered,
            (ProtoCounter::Fenced, Proto::Arp) => Counter::ArpFenced,
            (ProtoCounter::Fenced, Proto::Ns) => Counter::NsFenced,
            (ProtoCounter::Refused, Proto::Arp) => Counter::ArpRefused,
            (ProtoCounter::Refused, Proto::Ns) => Counter::NsRefused,
            (ProtoCounter::Claims, Proto::Arp) => Counter::ArpClaims,
            (ProtoCounter::Claims, Proto::Ns) => Counter::NsClaims,
        }
    }

    /// [`Self::of`] as an index into the counters map.
    #[inline(always)]
    pub const fn index(self, proto: Proto) -> u32 {
        self.of(proto) as u32
    }
}

impl Proto {
    pub const ALL: [Proto; 2] = [Proto::Arp, Proto::Ns];

    /// A stable lower-case label (the metrics' `proto` label).
    pub const fn label(self) -> &'static str {
        match self {
            Proto::Arp => "arp",
            Proto::Ns => "ns",
        }
    }

    /// The address family of the VIP it asks for ([`crate::maps::FAMILY_V4`]
    /// or [`crate::maps::FAMILY_V6`]; also [`crate::ClaimRecord::family`]).
    pub const fn family(self) -> u8 {
        match self {
            Proto::Arp => crate::maps::FAMILY_V4,
            Proto::Ns => crate::maps::FAMILY_V6,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pair_has_its_own_counter_below_pass_base() {
        let mut seen = std::vec::Vec::new();
        for k in ProtoCounter::ALL {
            for p in Proto::ALL {
                let i = k.index(p);
                assert!(i < Counter::PassBase as u32, "{k:?} {p:?}");
                assert!(!seen.contains(&i), "{k:?} {p:?} shares index {i}");
                seen.push(i);
            }
        }
        assert_eq!(seen.len(), 10);
    }
}
