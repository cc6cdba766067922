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

pub(crate) static TIMINGS: LazyLock<Timings> = LazyLock::new(|| Timings {
    renew: Histogram::new(RENEW_BUCKETS),
    takeover: Histogram::new(TAKEOVER_BUCKETS),
    takeover_from: AtomicU64::new(0),
});

/// A renew request was answered (or failed) `latency` after it was sent.
pub fn renew_answered(latency: Duration) {
    TIMINGS.renew.observe(latency.as_secs_f64());
}

/// This node has just acquired the Lease: the takeover clock starts.
pub fn lease_acquired() {
    TIMINGS
        .takeover_from
        .store(MonoTime::now().as_nanos().max(1), Ordering::Relaxed);
}

/// Announcement frames were sent: the first ones after an acquisition stop
/// the takeover clock.
pub(crate) fn announced() {
    let from = TIMINGS.takeover_from.swap(0, Ordering::Relaxed);
    if from != 0 {
        let took = MonoTime::now().saturating_duration_since(MonoTime(from));
        TIMINGS.takeover.observe(took.as_secs_f64());
    }
}
