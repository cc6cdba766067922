//! The two timing histograms, process-wide so that the election and the
//! announcer record into them directly (a lock held for one bucket update,
//! never across an await): the election never waits on metrics. A module of
//! its own, below both `election` and `metrics` (which exposes them).
//!
//! - `vip_agent_renew_latency_seconds`: every renew, success or failure, from
//!   the request SENT to its answer (or its timeout), measured in the elector.
//! - `vip_agent_takeover_seconds`: from acquiring the Lease to the first
//!   gratuitous ARP / unsolicited NA sent for it.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::metrics::histogram::Histogram;

use crate::clock::MonoTime;

/// Renew latency buckets: 1 ms .. 2 s (a renew past the renew deadline has
/// failed anyway).
pub const RENEW_BUCKETS: [f64; 11] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0,
];

/// Takeover buckets: 100 us .. 1 s.
pub const TAKEOVER_BUCKETS: [f64; 13] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

pub(crate) struct Timings {
    pub(crate) renew: Histogram,
    pub(crate) takeover: Histogram,
    /// CLOCK_MONOTONIC ns of the last acquisition not yet announced; 0: none.
    takeover_from: AtomicU64,
}

/// The agent's (one per process).
pub(crate) static TIMINGS: LazyLock<Timings> = LazyLock::new(Timings::new);

impl Timings {
    fn new() -> Self {
        Self {
            renew: Histogram::new(RENEW_BUCKETS),
            takeover: Histogram::new(TAKEOVER_BUCKETS),
            takeover_from: AtomicU64::new(0),
        }
    }

    fn renew_answered(&self, latency: Duration) {
        self.renew.observe(latency.as_secs_f64());
    }

    fn lease_acquired(&self, at: MonoTime) {
        self.takeover_from
            .store(at.as_nanos().max(1), Ordering::Relaxed);
    }

    fn announced(&self, at: MonoTime) {
        let from = self.takeover_from.swap(0, Ordering::Relaxed);
        if from != 0 {
            let took = at.saturating_duration_since(MonoTime(from));
            self.takeover.observe(took.as_secs_f64());
        }
    }
}

/// A renew request was answered (or failed) `latency` after it was sent.
pub fn renew_answered(latency: Duration) {
    TIMINGS.renew_answered(latency);
}

/// This node has just acquired the Lease: the takeover clock starts.
pub fn lease_acquired() {
    TIMINGS.lease_acquired(MonoTime::now());
}

/// Announcement frames were sent: the first ones after an acquisition stop
/// the takeover clock.
pub(crate) fn announced() {
    TIMINGS.announced(MonoTime::now());
}

#[cfg(test)]
mod tests {
    use prometheus_client::encoding::prometheus_text;
    use prometheus_client::registry::Registry;

    use super::*;

    /// The histogram's `_count` and `_sum`.
    fn observed(h: &Histogram) -> (u64, f64) {
        let mut r = Registry::default();
        r.register("h", "h", h.clone());
        let mut text = String::new();
        prometheus_text::encode(&mut text, &r).unwrap();
        let value = |s: &str| -> f64 {
            text.lines()
                .find_map(|l| l.strip_prefix(s)?.trim().parse().ok())
                .unwrap()
        };
        (value("h_count ") as u64, value("h_sum "))
    }

    #[test]
    fn one_takeover_per_acquisition_ended_by_the_first_announcement() {
        let t = Timings::new();
        let at = MonoTime(1_000_000_000);
        t.announced(at);
        assert_eq!(observed(&t.takeover).0, 0, "no acquisition, no takeover");
        t.lease_acquired(at);
        t.announced(at.saturating_add(Duration::from_micros(1500)));
        t.announced(at.saturating_add(Duration::from_secs(3)));
        assert_eq!(observed(&t.takeover), (1, 0.0015));
        t.lease_acquired(at.saturating_add(Duration::from_secs(10)));
        t.announced(at.saturating_add(Duration::from_millis(10_020)));
        let (n, sum) = observed(&t.takeover);
        assert_eq!(n, 2);
        assert!((sum - 0.0215).abs() < 1e-9, "{sum}");
    }

    #[test]
    fn every_renew_is_observed() {
        let t = Timings::new();
        t.renew_answered(Duration::from_millis(3));
        t.renew_answered(Duration::from_millis(700));
        assert_eq!(observed(&t.renew), (2, 0.703));
    }
}
