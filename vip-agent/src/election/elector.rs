//! The elector: its state and what both halves share; it follows the Lease
//! in [`follow`] (watch, GET, create, acquire) and, once it holds it, leads
//! in [`lead`] (renew, step down, release).

use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::core::WatchEvent;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};
use vip_common::events;

use super::events::{EventSink, Narrator, StepDown};
use super::lease::{self, Observation};
use super::store::{LeaseEvents, LeaseStore, StoreError};
use super::{Clock, ElectionConfig, ElectionError, Fence, Role, Status, SystemClock};
use crate::clock::MonoTime;
use crate::peer::{self, PeerStats, Peers};

mod follow;
mod lead;
mod lead_fast;

/// Bound on the time spent releasing the Lease on stop / step-down.
pub const RELEASE_TIMEOUT: Duration = Duration::from_secs(1);

/// Server-side timeout asked for each watch request (the API server ends the
/// watch after this; the follower reconnects from the last resourceVersion).
pub const WATCH_TIMEOUT_SECS: u32 = 290;

const WATCH_BACKOFF_MIN: Duration = Duration::from_millis(50);
const WATCH_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Wait before the next request after a 403 Forbidden.
pub const FORBIDDEN_RETRY: Duration = Duration::from_secs(2);

/// Run the election until `shutdown` is cancelled (graceful: `follow()` then
/// release) or a fatal error (bad config, a fence that fails on stop).
pub async fn run<S: LeaseStore, F: Fence>(
    store: &S,
    cfg: &ElectionConfig,
    fence: &F,
    health: watch::Receiver<bool>,
    shutdown: CancellationToken,
    status: watch::Sender<Status>,
) -> Result<(), ElectionError> {
    let clock = SystemClock::from_env()?;
    run_with_clock(store, cfg, fence, &clock, health, shutdown, status).await
}

/// [`run`] with everything it talks to besides the Lease and the fence:
/// the Kubernetes Events (which never block: see [`super::events`]) and,
/// with `--fast-path`, the peer channel.
pub async fn run_with_links<S: LeaseStore, F: Fence>(
    store: &S,
    cfg: &ElectionConfig,
    fence: &F,
    links: Links,
) -> Result<(), ElectionError> {
    let clock = SystemClock::from_env()?;
    run_linked(store, cfg, fence, &clock, links).await
}

/// [`run`] with an explicit clock (tests drive it with tokio's paused time).
pub async fn run_with_clock<S: LeaseStore, F: Fence, C: Clock>(
    store: &S,
    cfg: &ElectionConfig,
    fence: &F,
    clock: &C,
    health: watch::Receiver<bool>,
    shutdown: CancellationToken,
    status: watch::Sender<Status>,
) -> Result<(), ElectionError> {
    let links = Links {
        health,
        shutdown,
        status,
        events: EventSink::default(),
        peers: None,
    };
    run_linked(store, cfg, fence, clock, links).await
}

/// What the elector reads and writes besides the Lease and the fence.
pub struct Links {
    pub health: watch::Receiver<bool>,
    pub shutdown: CancellationToken,
    pub status: watch::Sender<Status>,
    pub events: EventSink,
    /// The fast path (docs/peer-promises.md), when on.
    pub peers: Option<Peers>,
}

pub(in crate::election) async fn run_linked<S: LeaseStore, F: Fence, C: Clock>(
    store: &S,
    cfg: &ElectionConfig,
    fence: &F,
    clock: &C,
    links: Links,
) -> Result<(), ElectionError> {
    let Links {
        health,
        shutdown,
        status,
        events,
        peers,
    } = links;
    cfg.validate()?;
    let now = clock.mono();
    let mut e = Elector {
        store,
        cfg,
        fence,
        clock,
        health,
        health_open: true,
        shutdown,
        status,
        known: Known::Unknown,
        retry_at: now,
        watch: None,
        watch_rv: String::new(),
        watch_backoff: WATCH_BACKOFF_MIN,
        watch_retry_at: now,
        watch_opened_at: now,
        narrator: Narrator::new(events, &cfg.identity),
        peers,
        release_not_before: None,
    };
    info!(
        identity = %cfg.identity,
        lease = %format!("{}/{}", cfg.namespace, cfg.lease_name),
        lease_duration = ?cfg.lease_duration,
        renew_deadline = ?cfg.renew_deadline,
        retry_period = ?cfg.retry_period,
        event = events::ELECTION_STARTING,
        "leader election starting"
    );
    e.run().await
}

/// What this node knows about the Lease.
enum Known {
    /// Nothing yet (startup, or after a failed re-list).
    Unknown,
    /// The Lease does not exist; it may be created from `not_before` on
    /// (later than now when it was deleted under a holder we had seen).
    Absent {
        not_before: MonoTime,
    },
    Present {
        lease: Box<Lease>,
        obs: Observation,
    },
}

enum Next {
    Shutdown,
    Follow,
    Lead {
        lease: Box<Lease>,
        sent: MonoTime,
        deadline: MonoTime,
        /// Fast path: the fence stays closed before this (rules 4 and 5).
        answer_from: Option<MonoTime>,
    },
}

struct Elector<'a, S, F, C> {
    store: &'a S,
    cfg: &'a ElectionConfig,
    fence: &'a F,
    clock: &'a C,
    health: watch::Receiver<bool>,
    health_open: bool,
    shutdown: CancellationToken,
    status: watch::Sender<Status>,
    known: Known,
    /// Follower: no acquire/create/GET before this (after a failed attempt).
    retry_at: MonoTime,
    watch: Option<LeaseEvents>,
    watch_rv: String,
    watch_backoff: Duration,
    watch_retry_at: MonoTime,
    watch_opened_at: MonoTime,
    /// Kubernetes Events (never blocks).
    narrator: Narrator,
    /// The fast path, when on.
    peers: Option<Peers>,
    /// Fast path, rule 9: a leader releases no earlier than its `answer_from`.
    release_not_before: Option<MonoTime>,
}

/// One API request, counted, bounded by `timeout`. (A free function so that
/// only the status field is borrowed across the await.)
async fn call<T>(
    status: &watch::Sender<Status>,
    fut: impl Future<Output = Result<T, StoreError>>,
    timeout: Duration,
) -> Result<T, StoreError> {
    status.send_modify(|s| s.api_requests += 1);
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(StoreError::Timeout),
    }
}

/// The fast path learns the record: the members it lists, and where to say
/// Hello when it does not list this agent.
fn observe_peers(peers: &Peers, lease: &Lease, me: &str) {
    if let Some(rv) = &lease.metadata.resource_version {
        peers.set_known_rv(rv);
    }
    let members = peer::record::members(lease);
    peers.set_members_seen(members.as_ref().map_or(0, |m| m.len()));
    let hello_to = members.and_then(|m| {
        let holder = lease::holder(lease)?;
        if m.contains_key(me) || holder == me {
            None
        } else {
            m.get(holder).copied()
        }
    });
    peers.set_hello_to(hello_to);
}

async fn next_event(w: &mut Option<LeaseEvents>) -> Option<Result<WatchEvent<Lease>, StoreError>> {
    match w {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

async fn sleep_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl<S: LeaseStore, F: Fence, C: Clock> Elector<'_, S, F, C> {
    async fn run(&mut self) -> Result<(), ElectionError> {
        loop {
            match self.follow_phase().await? {
                Next::Shutdown => return Ok(()),
                Next::Follow => {}
                Next::Lead {
                    lease,
                    sent,
                    deadline,
                    answer_from,
                } => {
                    let next = match (self.peers.clone(), answer_from) {
                        (Some(peers), Some(from)) => {
                            self.lead_fast_phase(&peers, *lease, sent, from).await?
                        }
                        _ => self.lead_phase(*lease, sent, deadline).await?,
                    };
                    if let Next::Shutdown = next {
                        return Ok(());
                    }
                }
            }
        }
    }

    fn now(&self) -> MonoTime {
        self.clock.mono()
    }

    fn instant_at(&self, t: MonoTime) -> tokio::time::Instant {
        tokio::time::Instant::now() + t.saturating_duration_since(self.now())
    }

    fn healthy(&self) -> bool {
        *self.health.borrow()
    }

    /// A 403 Forbidden on the Lease: this node does not lead (it never
    /// takes the Lease, a leader has stepped down before this is called) and
    /// tries again after [`FORBIDDEN_RETRY`]. Not fatal: a restarted API
    /// server answers 403 for a moment until its RBAC cache is filled, and
    /// RBAC applied after the agent started must take effect without a
    /// restart (a static pod that exits lands in CrashLoopBackOff, minutes).
    fn forbidden(&mut self, verb: &'static str, message: String) {
        let err = ElectionError::Forbidden {
            verb,
            namespace: self.cfg.namespace.clone(),
            name: self.cfg.lease_name.clone(),
            identity: self.cfg.identity.clone(),
            message,
        };
        error!(identity = %self.cfg.identity, verb, error = %err, retry_in = ?FORBIDDEN_RETRY, event = events::FORBIDDEN, "403 Forbidden on the Lease: not leading, retrying");
        let text = err.to_string();
        self.status.send_modify(|s| {
            s.forbidden += 1;
            s.forbidden_message = Some(text);
        });
        let at = self.now().saturating_add(FORBIDDEN_RETRY);
        self.retry_at = at;
        self.watch = None;
        self.watch_retry_at = at;
    }

    fn holder_name(&self) -> Option<String> {
        match &self.known {
            Known::Present { lease, .. } => lease::holder(lease).map(str::to_owned),
            _ => None,
        }
    }

    fn publish_following(&self) {
        let holder = self.holder_name();
        let healthy = self.healthy();
        let transitions = match &self.known {
            Known::Present { lease, .. } => Some(lease::transitions(lease)),
            _ => None,
        };
        self.status.send_if_modified(|s| {
            let before = s.clone();
            s.role = Role::Following {
                holder: holder.clone(),
            };
            s.fence_deadline = None;
            s.healthy = healthy;
            if let Some(t) = transitions {
                s.lease_transitions = t;
            }
            *s != before
        });
    }

    /// A record seen (GET, watch, write response).
    fn observe(&mut self, lease: Lease) {
        let now = self.now();
        if let Some(rv) = &lease.metadata.resource_version {
            self.watch_rv.clone_from(rv);
        }
        self.narrator.observed(&lease);
        let changed = match &mut self.known {
            Known::Present { lease: l, obs } => {
                let changed = obs.update(&lease, now);
                **l = lease;
                changed
            }
            _ => {
                let obs = Observation::new(&lease, now);
                self.known = Known::Present {
                    lease: Box::new(lease),
                    obs,
                };
                true
            }
        };
        if let (Some(p), Known::Present { lease, .. }) = (&self.peers, &self.known) {
            observe_peers(p, lease, &self.cfg.identity);
        }
        if changed {
            // New information: act on it at once (e.g. a release).
            self.retry_at = now;
            if let Known::Present { lease, .. } = &self.known {
                debug!(
                    identity = %self.cfg.identity,
                    holder = lease::holder(lease).unwrap_or(""),
                    resource_version = lease.metadata.resource_version.as_deref().unwrap_or(""),
                    "lease record observed"
                );
            }
        }
    }

    /// The Lease is known to be absent.
    fn observe_absent(&mut self) {
        let now = self.now();
        let not_before = match &self.known {
            // Deleted under a holder: that holder may still answer until its
            // deadline; wait as if the record had expired.
            Known::Present { lease, obs } => {
                lease::may_acquire_at(lease, obs.at, self.cfg.lease_duration).max(now)
            }
            Known::Absent { not_before } => *not_before,
            Known::Unknown => now,
        };
        self.known = Known::Absent { not_before };
        self.retry_at = now;
    }
}
