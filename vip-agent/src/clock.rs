//! The one clock the fence runs on: CLOCK_MONOTONIC, the clock behind the
//! kernel's `bpf_ktime_get_ns()`. Deadlines written into the VIP map and all
//! lease-expiry decisions use it; wall time is only ever *written* into the
//! Lease for humans (`renewTime`), never trusted for decisions.

use std::time::Duration;

/// Nanoseconds on CLOCK_MONOTONIC (same epoch as `bpf_ktime_get_ns`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MonoTime(pub u64);

impl MonoTime {
    /// Now on CLOCK_MONOTONIC.
    pub fn now() -> Self {
        let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .expect("CLOCK_MONOTONIC is always available on Linux");
        Self(ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64)
    }

    pub fn as_nanos(self) -> u64 {
        self.0
    }

    pub fn saturating_add(self, d: Duration) -> Self {
        Self(
            self.0
                .saturating_add(d.as_nanos().min(u128::from(u64::MAX)) as u64),
        )
    }

    pub fn saturating_sub(self, d: Duration) -> Self {
        Self(
            self.0
                .saturating_sub(d.as_nanos().min(u128::from(u64::MAX)) as u64),
        )
    }

    /// Time from `earlier` to `self`, zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: MonoTime) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_and_arithmetic() {
        let a = MonoTime::now();
        let b = MonoTime::now();
        assert!(b >= a);
        let c = a.saturating_add(Duration::from_millis(1500));
        assert_eq!(c.saturating_duration_since(a), Duration::from_millis(1500));
        assert_eq!(a.saturating_duration_since(c), Duration::ZERO);
    }
}
