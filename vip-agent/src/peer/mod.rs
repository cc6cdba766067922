//! The fast path: peer promises (docs/peer-promises.md). Off unless
//! `--fast-path`; with it, the leader's fence is held open between Lease
//! renewals by promises the other agents make over UDP, and a member that
//! stops hearing the leader takes over by CAS at once.
//!
//! Layout: the messages on the wire (`wire`), the membership annotation in
//! the Lease (`record`), one agent's knowledge and the rules it follows
//! (`state`), the UDP socket task (`socket`), the key (`key`), the leader's
//! fence from the promises (`fence`). The elector (election/elector/
//! lead_fast.rs and follow.rs) drives it through [`Peers`].

pub mod fence;
pub mod key;
pub mod record;
pub mod socket;
pub mod state;
pub mod wire;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;

use crate::clock::MonoTime;
pub use state::PeerStats;
use state::State;

/// The fast path's timers (docs/peer-promises.md, "Parameters for 150 ms").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// `h`: the leader heartbeats every member this often.
    pub heartbeat: Duration,
    /// `H`: a member takes over after this long without a heartbeat.
    pub silence: Duration,
    /// `P`: an ack promises not to answer for this long after the heartbeat.
    pub promise: Duration,
    /// `eps`: margin for clock rates (>= 10 % of `P`).
    pub margin: Duration,
}

impl Timing {
    pub const DEFAULT: Timing = Timing {
        heartbeat: Duration::from_millis(20),
        silence: Duration::from_millis(80),
        promise: Duration::from_millis(100),
        margin: Duration::from_millis(10),
    };

    /// A member whose newest ack is older than this is removed (3 rounds
    /// lost), before its promise holds the fence shut at `P - eps`.
    pub fn remove_after(&self) -> Duration {
        self.heartbeat * 3
    }

    /// The rules docs/peer-promises.md puts on the timers, given the
    /// election's `renew_deadline` and `retry_period`; an error names the
    /// flag and the fix.
    pub fn check(&self, renew_deadline: Duration, retry_period: Duration) -> Result<(), String> {
        if self.heartbeat.is_zero() {
            return Err("--heartbeat-interval must be > 0".into());
        }
        if self.margin * 10 < self.promise {
            return Err(format!(
                "--promise-margin {:?} is under 10 % of --promise {:?}: clocks that drift 10 % apart could \
                 break the promise (rule 8: eps >= rho * P); raise --promise-margin",
                self.margin, self.promise
            ));
        }
        if self.promise < self.remove_after() + self.margin + self.heartbeat {
            return Err(format!(
                "--promise {:?} must be at least 4 heartbeat intervals plus --promise-margin ({:?}): \
                 a member is removed after 3 lost rounds and its removal needs time before the promise \
                 runs out",
                self.promise,
                self.remove_after() + self.margin + self.heartbeat
            ));
        }
        if self.silence < self.heartbeat * 2 {
            return Err(format!(
                "--takeover-silence {:?} must be at least 2 heartbeat intervals ({:?}), or a single lost \
                 heartbeat moves the VIP",
                self.silence,
                self.heartbeat * 2
            ));
        }
        if self.promise + retry_period >= renew_deadline {
            return Err(format!(
                "--promise {:?} + --retry-period {:?} must be under --renew-deadline {:?}: the leader stops \
                 heartbeating at its last renew + renew deadline - promise (rule 7) and must renew before \
                 that; lower --retry-period or raise --renew-deadline",
                self.promise, retry_period, renew_deadline
            ));
        }
        Ok(())
    }
}

/// The agent's view of the peer channel, shared by the socket task and the
/// elector. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Peers {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    timing: Timing,
    state: Mutex<State>,
    /// Bumped when something the leader acts on arrived (an ack, a Hello).
    changed: watch::Sender<u64>,
    stats: PeerStats,
}

impl Peers {
    /// `now`: the process start (rule 6: the promise floor is `now + P`).
    pub fn new(me: String, my_addr: SocketAddr, timing: Timing, now: MonoTime) -> Self {
        Self {
            inner: Arc::new(Inner {
                timing,
                state: Mutex::new(State::new(me, my_addr, timing.promise, now)),
                changed: watch::Sender::new(0),
                stats: PeerStats::default(),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic under this lock is a bug that aborts the task anyway; the
        // state stays usable (every update is a single assignment).
        self.inner
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn timing(&self) -> Timing {
        self.inner.timing
    }

    pub fn stats(&self) -> &PeerStats {
        &self.inner.stats
    }

    pub fn me(&self) -> String {
        self.state().me.clone()
    }

    pub fn my_addr(&self) -> SocketAddr {
        self.state().my_addr
    }

    pub fn set_key(&self, key: ring::hmac::Key) {
        self.state().key = Some(key);
        self.inner
            .stats
            .key_ready
            .store(1, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn key_ready(&self) -> bool {
        self.state().key.is_some()
    }

    pub fn promise_until(&self, released_by: Option<&str>) -> MonoTime {
        self.state().promise_until(released_by)
    }

    pub fn set_acking(&self, on: bool) {
        self.state().set_acking(on);
    }

    pub fn last_heartbeat(&self, holder: &str) -> Option<MonoTime> {
        self.state().last_heartbeat(holder)
    }

    /// The resourceVersion of a record just read (rule 1).
    pub fn set_known_rv(&self, rv: &str) {
        self.state().set_known_rv(rv);
    }

    /// Where to say Hello (the holder, when the record does not list us).
    pub fn set_hello_to(&self, to: Option<SocketAddr>) {
        self.state().hello_to = to;
    }

    pub fn set_members_seen(&self, n: usize) {
        self.inner
            .stats
            .members
            .store(n as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// Begin leading: heartbeat `targets` until `heartbeat_until`. Stops
    /// acking (the elector already did before its CAS).
    pub fn start_leading(
        &self,
        resource_version: String,
        targets: BTreeMap<String, SocketAddr>,
        heartbeat_until: MonoTime,
        now: MonoTime,
    ) {
        let mut s = self.state();
        s.set_acking(false);
        s.start_leading(resource_version, targets, heartbeat_until, now);
    }

    /// After a successful write: the new version, fence members and rule 7's bound.
    pub fn update_leading(
        &self,
        resource_version: String,
        targets: BTreeMap<String, SocketAddr>,
        heartbeat_until: MonoTime,
    ) {
        if let Some(l) = &mut self.state().leading {
            l.resource_version = resource_version;
            l.targets = targets;
            l.heartbeat_until = heartbeat_until;
        }
    }

    /// Heartbeat these too (a member added: counted from the send, rule 3).
    pub fn set_targets(&self, targets: BTreeMap<String, SocketAddr>) {
        if let Some(l) = &mut self.state().leading {
            l.targets = targets;
        }
    }

    /// Stop heartbeating and ack again (after the fence is closed).
    pub fn stop_leading(&self) {
        let mut s = self.state();
        s.leading = None;
        s.set_acking(true);
    }

    /// The leader's acks: per agent, `T_m` of its newest ack; and the start
    /// of this leadership.
    pub fn acks(&self) -> (MonoTime, BTreeMap<String, MonoTime>) {
        let s = self.state();
        match &s.leading {
            Some(l) => (
                l.since,
                l.acks.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            ),
            None => (MonoTime(0), BTreeMap::new()),
        }
    }

    pub fn acked_candidates(&self, now: MonoTime) -> Vec<(String, SocketAddr)> {
        self.state().acked_candidates(now)
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.changed.subscribe()
    }

    fn bump(&self) {
        self.inner.changed.send_modify(|n| *n = n.wrapping_add(1));
    }
}
