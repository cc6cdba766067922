//! Pure Lease-record logic: what to write on create/acquire/renew/release and
//! when a follower may take the lease over. No I/O, no clocks read here.
//!
//! Wall-clock fields (`acquireTime`, `renewTime`) are written with THIS node's
//! wall clock for humans and are never compared with anything. Every decision
//! uses the local monotonic time at which a record was *observed*.
//!
//! `leaseDurationSeconds` is whole seconds: we write `ceil(lease_duration)`
//! (at least 1), so a sub-second or fractional configured duration is rounded
//! UP in the record, which only makes other nodes wait longer (safe). The local
//! decision always uses `max(configured lease_duration, record seconds)`.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;

use crate::clock::MonoTime;

/// `leaseDurationSeconds` for a configured duration: ceil, at least 1.
pub fn lease_duration_seconds(d: Duration) -> i32 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    i32::try_from(secs.max(1)).unwrap_or(i32::MAX)
}

/// The current holder, `None` when absent or empty (released).
pub fn holder(lease: &Lease) -> Option<&str> {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.as_deref())
        .filter(|h| !h.is_empty())
}

/// `leaseTransitions` of the record (0 when absent).
pub fn transitions(lease: &Lease) -> i32 {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.lease_transitions)
        .unwrap_or(0)
}

fn record_duration(lease: &Lease) -> Duration {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.lease_duration_seconds)
        .and_then(|s| u64::try_from(s).ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::ZERO)
}

/// What identifies "a new record" for the purpose of `observed`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct RecordKey {
    resource_version: Option<String>,
    holder: Option<String>,
    renew_time: Option<MicroTime>,
}

impl RecordKey {
    fn of(lease: &Lease) -> Self {
        Self {
            resource_version: lease.metadata.resource_version.clone(),
            holder: holder(lease).map(str::to_owned),
            renew_time: lease.spec.as_ref().and_then(|s| s.renew_time.clone()),
        }
    }
}

/// When (local CLOCK_MONOTONIC) this node first saw the current record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observation {
    key: RecordKey,
    /// First local sighting of this record version.
    pub at: MonoTime,
}

impl Observation {
    /// A fresh observation of `lease` at `now` (use when nothing earlier is known,
    /// or to restart the clock on purpose).
    pub fn new(lease: &Lease, now: MonoTime) -> Self {
        Self {
            key: RecordKey::of(lease),
            at: now,
        }
    }

    /// Keep `self.at` when `lease` is the same record, else restart at `now`.
    /// Returns whether the record changed.
    pub fn update(&mut self, lease: &Lease, now: MonoTime) -> bool {
        let key = RecordKey::of(lease);
        if key == self.key {
            false
        } else {
            *self = Self { key, at: now };
            true
        }
    }
}

/// Earliest local monotonic time at which this node may try to take `lease`:
/// at once when nobody holds it, else `observed + max(lease_duration,
/// record's leaseDurationSeconds)`. A record held by this very identity is
/// treated like anyone else's (after a restart or a lost renew we do not know
/// whether an older incarnation of us still answers until its deadline).
pub fn may_acquire_at(lease: &Lease, observed: MonoTime, lease_duration: Duration) -> MonoTime {
    if holder(lease).is_none() {
        observed
    } else {
        observed.saturating_add(lease_duration.max(record_duration(lease)))
    }
}

fn micro(t: Timestamp) -> MicroTime {
    MicroTime(t)
}

/// A new Lease held by `identity` (POST when the Lease is absent).
pub fn new_lease(
    name: &str,
    namespace: &str,
    identity: &str,
    lease_duration: Duration,
    wall: Timestamp,
) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(identity.to_owned()),
            lease_duration_seconds: Some(lease_duration_seconds(lease_duration)),
            acquire_time: Some(micro(wall)),
            renew_time: Some(micro(wall)),
            lease_transitions: Some(0),
            ..LeaseSpec::default()
        }),
    }
}

/// Take over `current` (PUT with its resourceVersion). `leaseTransitions` is
/// incremented when the holder changes (also from a released, empty holder,
/// as client-go does).
pub fn acquire(
    current: &Lease,
    identity: &str,
    lease_duration: Duration,
    wall: Timestamp,
) -> Lease {
    let mut next = current.clone();
    let prev_holder = holder(current).map(str::to_owned);
    let prev_transitions = transitions(current);
    let spec = next.spec.get_or_insert_with(LeaseSpec::default);
    spec.holder_identity = Some(identity.to_owned());
    spec.lease_duration_seconds = Some(lease_duration_seconds(lease_duration));
    spec.acquire_time = Some(micro(wall));
    spec.renew_time = Some(micro(wall));
    spec.lease_transitions = Some(if prev_holder.as_deref() == Some(identity) {
        prev_transitions
    } else {
        prev_transitions.saturating_add(1)
    });
    next
}

/// Renew `current` (which we hold): only `renewTime` (and the duration) change.
pub fn renew(current: &Lease, lease_duration: Duration, wall: Timestamp) -> Lease {
    let mut next = current.clone();
    let spec = next.spec.get_or_insert_with(LeaseSpec::default);
    spec.lease_duration_seconds = Some(lease_duration_seconds(lease_duration));
    spec.renew_time = Some(micro(wall));
    next
}

/// Release `current` like client-go: holder cleared (empty string),
/// `leaseDurationSeconds: 1`, acquire/renew time now, transitions kept.
pub fn release(current: &Lease, wall: Timestamp) -> Lease {
    let mut next = current.clone();
    let spec = next.spec.get_or_insert_with(LeaseSpec::default);
    spec.holder_identity = Some(String::new());
    spec.lease_duration_seconds = Some(1);
    spec.acquire_time = Some(micro(wall));
    spec.renew_time = Some(micro(wall));
    next
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wall(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).expect("valid")
    }

    #[test]
    fn duration_seconds_rounds_up() {
        assert_eq!(lease_duration_seconds(Duration::from_millis(300)), 1);
        assert_eq!(lease_duration_seconds(Duration::from_secs(5)), 5);
        assert_eq!(lease_duration_seconds(Duration::from_millis(5001)), 6);
        assert_eq!(lease_duration_seconds(Duration::ZERO), 1);
    }

    #[test]
    fn record_transitions_and_release() {
        let ld = Duration::from_secs(5);
        let l = new_lease("vip", "kube-system", "a", ld, wall(100));
        assert_eq!(holder(&l), Some("a"));
        assert_eq!(transitions(&l), 0);
        let l2 = acquire(&l, "b", ld, wall(200));
        assert_eq!(holder(&l2), Some("b"));
        assert_eq!(transitions(&l2), 1);
        let l3 = acquire(&l2, "b", ld, wall(300));
        assert_eq!(transitions(&l3), 1, "same holder: no transition");
        let r = release(&l3, wall(400));
        assert_eq!(holder(&r), None);
        let spec = r.spec.as_ref().expect("spec");
        assert_eq!(spec.holder_identity.as_deref(), Some(""));
        assert_eq!(spec.lease_duration_seconds, Some(1));
        assert_eq!(transitions(&r), 1);
        let r2 = renew(&l3, ld, wall(500));
        assert_eq!(
            r2.spec.as_ref().and_then(|s| s.renew_time.clone()),
            Some(MicroTime(wall(500)))
        );
        assert_eq!(
            r2.spec.as_ref().and_then(|s| s.acquire_time.clone()),
            Some(MicroTime(wall(300)))
        );
    }

    #[test]
    fn expiry_uses_observation_not_record_times() {
        let ld = Duration::from_secs(5);
        // renewTime far in the past or future changes nothing.
        for w in [wall(0), wall(4_000_000_000)] {
            let l = new_lease("vip", "ns", "a", ld, w);
            let at = may_acquire_at(&l, MonoTime(1_000), ld);
            assert_eq!(at, MonoTime(1_000).saturating_add(ld));
        }
        // A longer record duration wins.
        let l = new_lease("vip", "ns", "a", Duration::from_secs(15), wall(0));
        assert_eq!(
            may_acquire_at(&l, MonoTime(0), ld),
            MonoTime(0).saturating_add(Duration::from_secs(15))
        );
        // Released: at once.
        let r = release(&l, wall(0));
        assert_eq!(may_acquire_at(&r, MonoTime(7), ld), MonoTime(7));
    }

    #[test]
    fn observation_resets_only_on_change() {
        let ld = Duration::from_secs(5);
        let mut l = new_lease("vip", "ns", "a", ld, wall(1));
        l.metadata.resource_version = Some("1".into());
        let mut o = Observation::new(&l, MonoTime(10));
        assert!(!o.update(&l, MonoTime(20)));
        assert_eq!(o.at, MonoTime(10));
        let mut l2 = renew(&l, ld, wall(2));
        l2.metadata.resource_version = Some("2".into());
        assert!(o.update(&l2, MonoTime(30)));
        assert_eq!(o.at, MonoTime(30));
    }
}
