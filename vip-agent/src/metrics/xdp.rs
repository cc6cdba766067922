//! The XDP program's counters, read from its per-CPU map when /metrics is
//! asked (a [`Collector`]), never from a periodically refreshed copy.

use std::fmt;
use std::path::Path;

use aya::maps::{Map, MapData, MapError, PerCpuArray};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::counter::ConstCounter;
use tracing::warn;
use vip_common::maps::{COUNTERS_LEN, COUNTERS_MAP, Counter};
use vip_common::{PassReason, Proto, ProtoCounter, RefuseReason};

use super::families::{labelled, single};
use crate::dataplane::Counters;

/// Where the counters come from: the pinned map, or (tests) a function.
pub struct XdpCounters {
    read: Box<dyn Fn() -> Result<Counters, MapError> + Send + Sync>,
}

impl fmt::Debug for XdpCounters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("XdpCounters")
    }
}

impl XdpCounters {
    /// Opens the counters map pinned in `pin_dir` by the data plane (its own
    /// file descriptor: a scrape never waits for the data plane's lock).
    pub fn open(pin_dir: &Path) -> Result<Self, MapError> {
        let map = MapData::from_pin(pin_dir.join(COUNTERS_MAP))?;
        let array: PerCpuArray<MapData, u64> = PerCpuArray::try_from(Map::PerCpuArray(map))?;
        Ok(Self::from_fn(move || {
            let mut values = [0u64; COUNTERS_LEN as usize];
            for (i, v) in (0u32..).zip(values.iter_mut()) {
                *v = array.get(&i, 0)?.iter().sum();
            }
            Ok(Counters(values))
        }))
    }

    pub fn from_fn(read: impl Fn() -> Result<Counters, MapError> + Send + Sync + 'static) -> Self {
        Self {
            read: Box::new(read),
        }
    }
}

impl Collector for XdpCounters {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let c = match (self.read)() {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "reading the XDP counters for /metrics failed; the vip_xdp_* families are left out of this scrape");
                return Ok(());
            }
        };
        let by_proto = |k: ProtoCounter| {
            Proto::ALL.map(|p| ([("proto", p.label())], ConstCounter::new(c.get(k.of(p)))))
        };
        labelled(
            &mut enc,
            "vip_xdp_requests",
            "ARP requests / neighbour solicitations for the VIP seen by the XDP program.",
            by_proto(ProtoCounter::Requests),
        )?;
        labelled(
            &mut enc,
            "vip_xdp_answered",
            "Requests for the VIP answered in XDP.",
            by_proto(ProtoCounter::Answered),
        )?;
        labelled(
            &mut enc,
            "vip_xdp_fenced",
            "Requests for the VIP dropped because this node may not answer.",
            by_proto(ProtoCounter::Fenced),
        )?;
        labelled(
            &mut enc,
            "vip_xdp_refused",
            "Requests for the VIP dropped because of their form (never left to the kernel), by reason.",
            RefuseReason::ALL.map(|r| ([("reason", r.label())], ConstCounter::new(c.refused(r)))),
        )?;
        labelled(
            &mut enc,
            "vip_xdp_claims",
            "Conflicting claims: another MAC announced the VIP while this node answered for it.",
            by_proto(ProtoCounter::Claims),
        )?;
        single(
            &mut enc,
            "vip_xdp_too_deep",
            "Frames dropped because they nest more VLAN tags or IPv6 extension headers than the program follows.",
            ConstCounter::new(c.get(Counter::TooDeep)),
        )?;
        labelled(
            &mut enc,
            "vip_xdp_passed",
            "Frames passed to the kernel untouched, by reason.",
            PassReason::ALL.map(|r| ([("reason", r.label())], ConstCounter::new(c.passed(r)))),
        )
    }
}
