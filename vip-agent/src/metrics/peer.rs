//! The fast path's counters (`vip_agent_peer_*`, `vip_agent_fast_takeovers`),
//! read from the peer channel's atomics when /metrics is asked. No family at
//! all without `--fast-path`.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use super::families::{labelled, single};
use crate::peer::Peers;
use crate::peer::wire::Kind;

#[derive(Debug, Default)]
pub(super) struct PeerCollector(pub(super) Arc<OnceLock<Peers>>);

impl Collector for PeerCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let Some(p) = self.0.get() else {
            return Ok(());
        };
        let s = p.stats();
        let c = |a: &AtomicU64| ConstCounter::new(a.load(Ordering::Relaxed));
        let g = |a: &AtomicU64| {
            ConstGauge::new(i64::try_from(a.load(Ordering::Relaxed)).unwrap_or(i64::MAX))
        };
        let kinds = [Kind::Heartbeat, Kind::Ack, Kind::Hello];
        let mut messages = Vec::new();
        for k in kinds {
            let i = k as usize - 1;
            messages.push(([("kind", k.label()), ("direction", "sent")], c(&s.sent[i])));
            messages.push((
                [("kind", k.label()), ("direction", "received")],
                c(&s.received[i]),
            ));
        }
        labelled(
            &mut enc,
            "vip_agent_peer_messages",
            "Fast path: peer messages sent, and received authenticated and accepted, by kind.",
            messages,
        )?;
        labelled(
            &mut enc,
            "vip_agent_peer_rejected",
            "Fast path: peer datagrams dropped: mac (forged or another key), replay (sequence \
             number not newer), stale (an ack of nothing this leader sent, our own name), \
             malformed, no_key (arrived before the key was loaded).",
            [
                ([("reason", "mac")], c(&s.rejected_mac)),
                ([("reason", "replay")], c(&s.rejected_replay)),
                ([("reason", "stale")], c(&s.rejected_stale)),
                ([("reason", "malformed")], c(&s.rejected_malformed)),
                ([("reason", "no_key")], c(&s.rejected_no_key)),
            ],
        )?;
        single(
            &mut enc,
            "vip_agent_fast_takeovers",
            "Fast path: Lease takeovers by this agent after the holder went silent.",
            c(&s.fast_takeovers),
        )?;
        single(
            &mut enc,
            "vip_agent_peer_members",
            "Fast path: members (holder included) in the Lease record this agent saw last; 0 when \
             its holder does not use the fast path.",
            g(&s.members),
        )?;
        single(
            &mut enc,
            "vip_agent_peer_key_ready",
            "Fast path: 1 once the peer key is loaded (until then the slow path alone).",
            g(&s.key_ready),
        )
    }
}
