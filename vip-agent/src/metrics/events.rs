//! `vip_agent_events_total{result}`: what became of the Kubernetes Events the
//! election emitted (election/events.rs), read from its counters when
//! /metrics is asked. Queued events are posted by their own task; `dropped`
//! counts those a full queue refused (the election never waits for Events),
//! `failed` those the API refused or that timed out.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::counter::ConstCounter;

use super::families::labelled;
use crate::election::events::EventStats;

/// Empty until the election starts (no family without an election).
#[derive(Debug, Default)]
pub(super) struct EventsCollector(pub(super) Arc<OnceLock<Arc<EventStats>>>);

impl Collector for EventsCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let Some(s) = self.0.get() else {
            return Ok(());
        };
        let read = |c: &std::sync::atomic::AtomicU64| ConstCounter::new(c.load(Ordering::Relaxed));
        labelled(
            &mut enc,
            "vip_agent_events",
            "Kubernetes Events on the Lease: queued by the election, dropped (queue full), \
             posted, failed (refused by the API or timed out).",
            [
                ([("result", "queued")], read(&s.queued)),
                ([("result", "dropped")], read(&s.dropped)),
                ([("result", "posted")], read(&s.posted)),
                ([("result", "failed")], read(&s.failed)),
            ],
        )
    }
}
