//! Kubernetes Lease leader election, fenced by a CLOCK_MONOTONIC deadline.
//!
//! Safety (docs/design.md#the-fence-timeline-invariant-1): a leader whose acquire/renew request `k` was SENT at
//! `S_k` tells the data plane to answer until `S_k + renew_deadline`, never
//! longer. A follower records `observed` = the local monotonic time at which it
//! first saw the current record (which is after that record was committed, so
//! after `S_k`) and may take over only after `observed + lease_duration`.
//! Because `renew_deadline + margin < lease_duration`, the old leader is silent
//! before anyone can acquire, whatever happens to its process. Wall-clock
//! fields in the Lease are written for humans only and never compared.
//!
//! Takeover is a compare-and-swap on `resourceVersion`, so only one node can
//! win a given record; loss of the Lease, renew failures up to the deadline,
//! ill health and shutdown all call [`Fence::follow`] before anything else
//! (and the Lease is released only after `follow()` succeeded).

pub mod client;
pub mod health;
pub mod kube_store;
pub mod lease;
pub mod store;

#[cfg(test)]
mod memory;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::core::WatchEvent;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::clock::MonoTime;
pub use lease::Observation;
pub use store::{LeaseEvents, LeaseStore, StoreError};

/// Lab knob: shift the wall clock this node WRITES into `acquireTime` /
/// `renewTime` by this many seconds (may be negative, fractional). It exists
/// so tests can show that wall-clock skew changes no decision. Never set it in
/// production.
pub const WALL_CLOCK_SKEW_ENV: &str = "VIP_AGENT_WALL_CLOCK_SKEW_SECS";

/// Bound on the time spent releasing the Lease on stop / step-down.
pub const RELEASE_TIMEOUT: Duration = Duration::from_secs(1);

/// Server-side timeout asked for each watch request (the API server ends the
/// watch after this; the follower reconnects from the last resourceVersion).
pub const WATCH_TIMEOUT_SECS: u32 = 290;

const WATCH_BACKOFF_MIN: Duration = Duration::from_millis(50);
const WATCH_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Election settings. See [`ElectionConfig::validate`] for the rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElectionConfig {
    /// Lease name (default `vip-control-plane`).
    pub lease_name: String,
    /// Lease namespace (default `kube-system`).
    pub namespace: String,
    /// This node's identity, written as `holderIdentity` (the node name).
    pub identity: String,
    /// How long followers wait, from first seeing a record, before taking over.
    pub lease_duration: Duration,
    /// How long the leader answers after SENDING its last successful renew.
    pub renew_deadline: Duration,
    /// Interval between renews (leader) / retries after a failed request.
    pub retry_period: Duration,
}

/// Proposed defaults; see the module docs / report.
pub const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(3);
pub const DEFAULT_RENEW_DEADLINE: Duration = Duration::from_secs(2);
pub const DEFAULT_RETRY_PERIOD: Duration = Duration::from_millis(500);
pub const DEFAULT_LEASE_NAME: &str = "vip-control-plane";
pub const DEFAULT_NAMESPACE: &str = "kube-system";

impl ElectionConfig {
    /// Defaults for everything but the identity.
    pub fn new(identity: impl Into<String>) -> Self {
        Self {
            lease_name: DEFAULT_LEASE_NAME.to_owned(),
            namespace: DEFAULT_NAMESPACE.to_owned(),
            identity: identity.into(),
            lease_duration: DEFAULT_LEASE_DURATION,
            renew_deadline: DEFAULT_RENEW_DEADLINE,
            retry_period: DEFAULT_RETRY_PERIOD,
        }
    }

    /// Required slack between the leader going silent and a follower taking
    /// over: `max(250 ms, lease_duration / 10)`. It absorbs clock-rate
    /// differences between nodes and frames already queued at the deadline.
    pub fn margin(&self) -> Duration {
        Duration::from_millis(250).max(self.lease_duration / 10)
    }

    /// Timeout of each non-renew API request (GET, POST, acquire PUT, watch
    /// open): `renew_deadline / 2`. A renew's timeout is additionally capped by
    /// the time left until the current fence deadline.
    pub fn request_timeout(&self) -> Duration {
        self.renew_deadline / 2
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let named = [
            ("--lease-duration", self.lease_duration),
            ("--renew-deadline", self.renew_deadline),
            ("--retry-period", self.retry_period),
        ];
        for (flag, d) in named {
            if d.is_zero() {
                return Err(ConfigError::Zero { flag });
            }
        }
        if self.identity.is_empty() {
            return Err(ConfigError::EmptyIdentity);
        }
        if self.lease_name.is_empty() || self.namespace.is_empty() {
            return Err(ConfigError::EmptyLeaseName);
        }
        if self.lease_duration > Duration::from_secs(i32::MAX as u64) {
            return Err(ConfigError::TooLong);
        }
        if self.retry_period >= self.renew_deadline {
            return Err(ConfigError::RetryNotBelowRenew {
                retry: self.retry_period,
                renew: self.renew_deadline,
            });
        }
        let margin = self.margin();
        if self.renew_deadline + margin >= self.lease_duration {
            return Err(ConfigError::RenewNotBelowLease {
                renew: self.renew_deadline,
                margin,
                lease: self.lease_duration,
            });
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{flag} must be greater than zero")]
    Zero { flag: &'static str },
    #[error("--node-name (the election identity) must not be empty")]
    EmptyIdentity,
    #[error("the lease name and namespace must not be empty (--lease-name, --lease-namespace)")]
    EmptyLeaseName,
    #[error("--lease-duration must be below 2^31 seconds")]
    TooLong,
    #[error(
        "--retry-period ({retry:?}) must be shorter than --renew-deadline ({renew:?}): \
         lower --retry-period (e.g. renew-deadline / 3) or raise --renew-deadline"
    )]
    RetryNotBelowRenew { retry: Duration, renew: Duration },
    #[error(
        "--renew-deadline ({renew:?}) + safety margin ({margin:?}) must be shorter than \
         --lease-duration ({lease:?}), otherwise an old leader could still answer when a \
         follower takes over: lower --renew-deadline or raise --lease-duration"
    )]
    RenewNotBelowLease {
        renew: Duration,
        margin: Duration,
        lease: Duration,
    },
    #[error("{WALL_CLOCK_SKEW_ENV}={value:?} is not a number of seconds")]
    BadSkew { value: String },
}

#[derive(Debug, thiserror::Error)]
pub enum ElectionError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(
        "forbidden to {verb} Lease {namespace}/{name} as {identity}: {message}. This node will \
         not lead. Fix: grant the agent's user an RBAC Role in {namespace} with apiGroups \
         [\"coordination.k8s.io\"], resources [\"leases\"], verbs [\"get\", \"list\", \"watch\", \
         \"create\", \"update\"] (see deploy/ RBAC manifests)"
    )]
    Forbidden {
        verb: &'static str,
        namespace: String,
        name: String,
        identity: String,
        message: String,
    },
    #[error("fence.follow() failed on stop, the lease was NOT released: {0:#}")]
    Fence(anyhow::Error),
}

/// What the data plane must do. Implemented by the agent's dataplane owner.
pub trait Fence: Send + Sync {
    /// Answer for the VIP until `deadline` (CLOCK_MONOTONIC). Called after every
    /// successful acquire/renew, with deadline = (moment that request was SENT)
    /// + renew_deadline. Must have taken effect when it returns.
    fn lead(&self, deadline: MonoTime) -> impl Future<Output = anyhow::Result<()>> + Send;
    /// Stop answering (entry inactive first, then address removed). Must have
    /// taken effect when it returns.
    fn follow(&self) -> impl Future<Output = anyhow::Result<()>> + Send;
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    Leading,
    Following { holder: Option<String> },
}

/// Published on every change, for metrics and logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub role: Role,
    /// Fence deadline last given to `lead()`, while leading.
    pub fence_deadline: Option<MonoTime>,
    /// Health gate as last seen.
    pub healthy: bool,
    /// `leaseTransitions` of the last record seen.
    pub lease_transitions: i32,
    /// Times this node became leader.
    pub acquisitions: u64,
    pub renewals: u64,
    pub renew_failures: u64,
    /// API requests made (each GET/POST/PUT and each watch opened).
    pub api_requests: u64,
    /// Watches opened.
    pub watch_starts: u64,
}

impl Default for Status {
    fn default() -> Self {
        Self {
            role: Role::Following { holder: None },
            fence_deadline: None,
            healthy: true,
            lease_transitions: 0,
            acquisitions: 0,
            renewals: 0,
            renew_failures: 0,
            api_requests: 0,
            watch_starts: 0,
        }
    }
}

/// The two clocks the election reads. Monotonic for every decision; wall only
/// for the human-readable Lease fields.
pub trait Clock: Send + Sync {
    fn mono(&self) -> MonoTime;
    fn wall(&self) -> Timestamp;
}

/// CLOCK_MONOTONIC + the system wall clock shifted by the lab skew knob.
#[derive(Clone, Debug, Default)]
pub struct SystemClock {
    skew: SignedDuration,
}

impl SystemClock {
    /// Reads [`WALL_CLOCK_SKEW_ENV`] (absent: no skew).
    pub fn from_env() -> Result<Self, ConfigError> {
        let skew = match std::env::var(WALL_CLOCK_SKEW_ENV) {
            Ok(v) if !v.trim().is_empty() => {
                let secs: f64 = v
                    .trim()
                    .parse()
                    .map_err(|_| ConfigError::BadSkew { value: v.clone() })?;
                SignedDuration::try_from_secs_f64(secs)
                    .map_err(|_| ConfigError::BadSkew { value: v.clone() })?
            }
            _ => SignedDuration::ZERO,
        };
        if !skew.is_zero() {
            warn!(
                skew_secs = skew.as_secs_f64(),
                "lab knob {WALL_CLOCK_SKEW_ENV} set: wall clock written into the Lease is skewed"
            );
        }
        Ok(Self { skew })
    }
}

impl Clock for SystemClock {
    fn mono(&self) -> MonoTime {
        MonoTime::now()
    }
    fn wall(&self) -> Timestamp {
        Timestamp::now()
            .checked_add(self.skew)
            .unwrap_or_else(|_| Timestamp::now())
    }
}

/// Run the election until `shutdown` is cancelled (graceful: `follow()` then
/// release) or a fatal error (403 Forbidden, bad config).
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
    };
    info!(
        identity = %cfg.identity,
        lease = %format!("{}/{}", cfg.namespace, cfg.lease_name),
        lease_duration = ?cfg.lease_duration,
        renew_deadline = ?cfg.renew_deadline,
        retry_period = ?cfg.retry_period,
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
                } => {
                    if let Next::Shutdown = self.lead_phase(*lease, sent, deadline).await? {
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

    fn forbidden(&self, verb: &'static str, message: String) -> ElectionError {
        error!(identity = %self.cfg.identity, verb, %message, "403 Forbidden on the Lease: this node will not lead");
        ElectionError::Forbidden {
            verb,
            namespace: self.cfg.namespace.clone(),
            name: self.cfg.lease_name.clone(),
            identity: self.cfg.identity.clone(),
            message,
        }
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

    /// Forget the watch and reconnect at `at`.
    fn drop_watch(&mut self, at: MonoTime) {
        self.watch = None;
        self.watch_retry_at = at;
    }

    fn watch_failed(&mut self) {
        let at = self.now().saturating_add(self.watch_backoff);
        self.watch_backoff = (self.watch_backoff * 2).min(WATCH_BACKOFF_MAX);
        self.drop_watch(at);
    }

    /// GET the Lease (re-list). Errors other than 403 just schedule a retry.
    async fn refresh(&mut self) -> Result<bool, ElectionError> {
        match call(&self.status, self.store.get(), self.cfg.request_timeout()).await {
            Ok(Some(l)) => {
                self.observe(l);
                Ok(true)
            }
            Ok(None) => {
                self.observe_absent();
                Ok(true)
            }
            Err(StoreError::Forbidden(m)) => Err(self.forbidden("get", m)),
            Err(e) => {
                warn!(identity = %self.cfg.identity, error = %e, "reading the lease failed; retrying");
                self.retry_at = self.now().saturating_add(self.cfg.retry_period);
                Ok(false)
            }
        }
    }

    async fn open_watch(&mut self) -> Result<(), ElectionError> {
        let rv = self.watch_rv.clone();
        self.status.send_modify(|s| s.watch_starts += 1);
        match call(
            &self.status,
            self.store.watch(&rv),
            self.cfg.request_timeout(),
        )
        .await
        {
            Ok(stream) => {
                debug!(identity = %self.cfg.identity, resource_version = %rv, "watch opened");
                self.watch = Some(stream);
                self.watch_opened_at = self.now();
            }
            Err(StoreError::Gone) => self.relist().await?,
            Err(StoreError::Forbidden(m)) => return Err(self.forbidden("watch", m)),
            Err(e) => {
                debug!(identity = %self.cfg.identity, error = %e, backoff = ?self.watch_backoff, "watch failed to open");
                self.watch_failed();
            }
        }
        Ok(())
    }

    /// 410 Gone: re-read the Lease and watch from its version.
    async fn relist(&mut self) -> Result<(), ElectionError> {
        debug!(identity = %self.cfg.identity, "watch version gone; re-listing");
        self.watch = None;
        if self.refresh().await? {
            self.watch_retry_at = self.now();
        } else {
            self.watch_failed();
        }
        Ok(())
    }

    async fn on_event(
        &mut self,
        ev: Option<Result<WatchEvent<Lease>, StoreError>>,
    ) -> Result<(), ElectionError> {
        match ev {
            Some(Ok(WatchEvent::Added(l) | WatchEvent::Modified(l))) => {
                self.watch_backoff = WATCH_BACKOFF_MIN;
                self.observe(l);
            }
            Some(Ok(WatchEvent::Deleted(l))) => {
                self.watch_backoff = WATCH_BACKOFF_MIN;
                if let Some(rv) = &l.metadata.resource_version {
                    self.watch_rv.clone_from(rv);
                }
                info!(identity = %self.cfg.identity, "lease deleted");
                self.observe_absent();
            }
            Some(Ok(WatchEvent::Bookmark(b))) => {
                self.watch_backoff = WATCH_BACKOFF_MIN;
                self.watch_rv = b.metadata.resource_version;
            }
            Some(Ok(WatchEvent::Error(st))) if st.code == 410 => self.relist().await?,
            Some(Err(StoreError::Gone)) => self.relist().await?,
            Some(Ok(WatchEvent::Error(st))) if st.code == 403 => {
                return Err(self.forbidden("watch", st.message.clone()));
            }
            Some(Err(StoreError::Forbidden(m))) => return Err(self.forbidden("watch", m)),
            Some(Ok(WatchEvent::Error(st))) => {
                debug!(identity = %self.cfg.identity, code = st.code, message = %st.message, "watch error event");
                self.watch_failed();
            }
            Some(Err(e)) => {
                debug!(identity = %self.cfg.identity, error = %e, "watch stream error");
                self.watch_failed();
            }
            None => {
                // Normal end (server timeout): reconnect at once, unless the
                // watch died right after opening (then back off).
                let now = self.now();
                if now.saturating_duration_since(self.watch_opened_at) >= WATCH_BACKOFF_MAX {
                    self.watch_backoff = WATCH_BACKOFF_MIN;
                    self.drop_watch(now);
                } else {
                    self.watch_failed();
                }
            }
        }
        Ok(())
    }

    /// When the follower should next act (GET / create / acquire), if at all.
    fn action_at(&self) -> Option<MonoTime> {
        let healthy = self.healthy();
        match &self.known {
            Known::Unknown => Some(self.retry_at),
            Known::Absent { not_before } => healthy.then(|| (*not_before).max(self.retry_at)),
            Known::Present { lease, obs } => healthy.then(|| {
                lease::may_acquire_at(lease, obs.at, self.cfg.lease_duration).max(self.retry_at)
            }),
        }
    }

    async fn follow_phase(&mut self) -> Result<Next, ElectionError> {
        loop {
            self.publish_following();
            let action = self.action_at().map(|t| self.instant_at(t));
            let open_watch = (self.watch.is_none() && !matches!(self.known, Known::Unknown))
                .then(|| self.instant_at(self.watch_retry_at));
            tokio::select! {
                biased;
                () = self.shutdown.cancelled() => return Ok(Next::Shutdown),
                r = self.health.changed(), if self.health_open => {
                    if r.is_err() {
                        self.health_open = false;
                    }
                }
                ev = next_event(&mut self.watch) => self.on_event(ev).await?,
                () = sleep_opt(open_watch) => self.open_watch().await?,
                () = sleep_opt(action) => {
                    if let Some(next) = self.act().await? {
                        return Ok(next);
                    }
                }
            }
        }
    }

    /// The follower's timer fired: GET, create or acquire.
    async fn act(&mut self) -> Result<Option<Next>, ElectionError> {
        let sent = self.now();
        let wall = self.clock.wall();
        let timeout = self.cfg.request_timeout();
        let cfg = self.cfg;
        let (result, verb, prev_holder) = match &self.known {
            Known::Unknown => {
                self.refresh().await?;
                return Ok(None);
            }
            Known::Absent { .. } => {
                let l = lease::new_lease(
                    &cfg.lease_name,
                    &cfg.namespace,
                    &cfg.identity,
                    cfg.lease_duration,
                    wall,
                );
                (
                    call(&self.status, self.store.create(&l), timeout).await,
                    "create",
                    None,
                )
            }
            Known::Present { lease: cur, .. } => {
                let prev = lease::holder(cur).map(str::to_owned);
                let l = lease::acquire(cur, &cfg.identity, cfg.lease_duration, wall);
                // The record expired on our clock without any event: the watch
                // may be silently dead, so reopen it after this attempt.
                if prev.is_some() {
                    self.drop_watch(self.watch_retry_at);
                }
                (
                    call(&self.status, self.store.replace(&l), timeout).await,
                    "update",
                    prev,
                )
            }
        };
        match result {
            Ok(l) => {
                let deadline = sent.saturating_add(cfg.renew_deadline);
                info!(
                    identity = %cfg.identity,
                    previous_holder = prev_holder.as_deref().unwrap_or(""),
                    transitions = lease::transitions(&l),
                    latency = ?self.now().saturating_duration_since(sent),
                    fence_deadline_in = ?deadline.saturating_duration_since(self.now()),
                    "acquired the lease"
                );
                Ok(Some(Next::Lead {
                    lease: Box::new(l),
                    sent,
                    deadline,
                }))
            }
            Err(StoreError::Forbidden(m)) => Err(self.forbidden(verb, m)),
            Err(StoreError::AlreadyExists | StoreError::Conflict | StoreError::NotFound) => {
                debug!(identity = %cfg.identity, verb, "lost the race for the lease; re-reading");
                if !self.refresh().await? {
                    self.retry_at = self.now().saturating_add(cfg.retry_period);
                }
                Ok(None)
            }
            Err(e) => {
                warn!(identity = %cfg.identity, verb, error = %e, "taking the lease failed; retrying");
                self.retry_at = self.now().saturating_add(cfg.retry_period);
                Ok(None)
            }
        }
    }

    fn publish_leading(&self, deadline: MonoTime, lease: &Lease) {
        let t = lease::transitions(lease);
        let healthy = self.healthy();
        self.status.send_modify(|s| {
            s.role = Role::Leading;
            s.fence_deadline = Some(deadline);
            s.healthy = healthy;
            s.lease_transitions = t;
        });
    }

    /// Stop answering; then, only if that worked and `release`, give the Lease
    /// back. Afterwards this node is a follower that knows the resulting record.
    async fn step_down(&mut self, lease: Lease, release: bool, why: &str) -> anyhow::Result<()> {
        let now = self.now();
        let followed = self.fence.follow().await;
        info!(
            identity = %self.cfg.identity,
            reason = why,
            release,
            follow_took = ?self.now().saturating_duration_since(now),
            "stepping down"
        );
        // Whatever we learn below, our own last record starts a fresh
        // lease_duration: we do not re-acquire before it like anyone else.
        let obs = Observation::new(&lease, self.now());
        if let Some(rv) = &lease.metadata.resource_version {
            self.watch_rv.clone_from(rv);
        }
        self.known = Known::Present {
            lease: Box::new(lease.clone()),
            obs,
        };
        self.retry_at = self.now();
        self.watch_retry_at = self.now();
        if let Err(e) = followed {
            error!(identity = %self.cfg.identity, error = %format!("{e:#}"), "fence.follow() failed; NOT releasing the lease (the fence deadline still expires by itself)");
            return Err(e);
        }
        if release {
            self.release(lease).await;
        }
        Ok(())
    }

    /// Clears the holder so watching followers take over at once. A renew
    /// that was in flight when we decided to stop may have committed after
    /// `lease` was read: on a conflict, re-read and release again while the
    /// record still names us. Bounded by [`RELEASE_TIMEOUT`] in total.
    async fn release(&mut self, mut lease: Lease) {
        let until = self.now().saturating_add(RELEASE_TIMEOUT);
        loop {
            let left = until.saturating_duration_since(self.now());
            if left.is_zero() {
                warn!(identity = %self.cfg.identity, "releasing the lease timed out; followers will take over after the lease duration");
                return;
            }
            let released = lease::release(&lease, self.clock.wall());
            match call(&self.status, self.store.replace(&released), left).await {
                Ok(l) => {
                    info!(identity = %self.cfg.identity, "lease released");
                    self.observe(l);
                    return;
                }
                Err(StoreError::Conflict) => {
                    let left = until.saturating_duration_since(self.now());
                    match call(&self.status, self.store.get(), left).await {
                        Ok(Some(cur))
                            if lease::holder(&cur) == Some(self.cfg.identity.as_str()) =>
                        {
                            debug!(identity = %self.cfg.identity, "release conflicted with our own last renew; releasing the newer record");
                            lease = cur;
                        }
                        Ok(other) => {
                            debug!(identity = %self.cfg.identity, "lease no longer ours; nothing to release");
                            match other {
                                Some(cur) => self.observe(cur),
                                None => self.observe_absent(),
                            }
                            return;
                        }
                        Err(e) => {
                            warn!(identity = %self.cfg.identity, error = %e, "releasing the lease failed; followers will take over after the lease duration");
                            return;
                        }
                    }
                }
                Err(e) => {
                    warn!(identity = %self.cfg.identity, error = %e, "releasing the lease failed; followers will take over after the lease duration");
                    return;
                }
            }
        }
    }

    async fn lead_phase(
        &mut self,
        mut lease: Lease,
        mut sent: MonoTime,
        mut deadline: MonoTime,
    ) -> Result<Next, ElectionError> {
        self.watch = None;
        let cfg = self.cfg;
        if let Err(e) = self.fence.lead(deadline).await {
            error!(identity = %cfg.identity, error = %format!("{e:#}"), "fence.lead() failed after acquiring; stepping down");
            let _ = self.step_down(lease, true, "fence.lead failed").await;
            // Give healthier nodes a chance before trying again.
            self.retry_at = self.now().saturating_add(cfg.lease_duration);
            return Ok(Next::Follow);
        }
        self.status.send_modify(|s| s.acquisitions += 1);
        self.publish_leading(deadline, &lease);
        info!(identity = %cfg.identity, "leading");
        let mut next_renew = sent.saturating_add(cfg.retry_period);
        loop {
            let deadline_at = self.instant_at(deadline);
            let renew_at = self.instant_at(next_renew);
            tokio::select! {
                biased;
                () = self.shutdown.cancelled() => {
                    return self.stop_leading(lease).await;
                }
                r = self.health.changed(), if self.health_open => {
                    if r.is_err() {
                        self.health_open = false;
                    } else if !self.healthy() {
                        warn!(identity = %cfg.identity, "unhealthy while leading");
                        let _ = self.step_down(lease, true, "unhealthy").await;
                        return Ok(Next::Follow);
                    }
                }
                () = tokio::time::sleep_until(deadline_at) => {
                    warn!(
                        identity = %cfg.identity,
                        last_renew_sent_ago = ?self.now().saturating_duration_since(sent),
                        "could not renew the lease before the fence deadline"
                    );
                    let _ = self.step_down(lease, false, "renew deadline passed").await;
                    return Ok(Next::Follow);
                }
                () = tokio::time::sleep_until(renew_at) => {
                    let s = self.now();
                    let req = lease::renew(&lease, cfg.lease_duration, self.clock.wall());
                    let timeout = cfg.request_timeout().min(deadline.saturating_duration_since(s));
                    let res = tokio::select! {
                        biased;
                        () = self.shutdown.cancelled() => {
                            return self.stop_leading(lease).await;
                        }
                        r = call(&self.status, self.store.replace(&req), timeout) => r,
                    };
                    match res {
                        Ok(l) => {
                            let new_deadline = s.saturating_add(cfg.renew_deadline);
                            if let Err(e) = self.fence.lead(new_deadline).await {
                                error!(identity = %cfg.identity, error = %format!("{e:#}"), "fence.lead() failed on renew; stepping down");
                                let _ = self.step_down(l, true, "fence.lead failed").await;
                                self.retry_at = self.now().saturating_add(cfg.lease_duration);
                                return Ok(Next::Follow);
                            }
                            debug!(
                                identity = %cfg.identity,
                                latency = ?self.now().saturating_duration_since(s),
                                fence_deadline_in = ?new_deadline.saturating_duration_since(self.now()),
                                "renewed"
                            );
                            lease = l;
                            sent = s;
                            deadline = new_deadline;
                            next_renew = s.saturating_add(cfg.retry_period);
                            self.status.send_modify(|st| st.renewals += 1);
                            self.publish_leading(deadline, &lease);
                        }
                        Err(StoreError::Conflict | StoreError::NotFound) => {
                            match call(&self.status, self.store.get(), timeout.min(cfg.request_timeout())).await {
                                Ok(Some(cur)) if lease::holder(&cur) == Some(cfg.identity.as_str()) => {
                                    // Still ours (someone touched other fields): renew at once.
                                    debug!(identity = %cfg.identity, "renew conflict, lease still ours");
                                    lease = cur;
                                    next_renew = self.now();
                                }
                                Ok(other) => {
                                    warn!(
                                        identity = %cfg.identity,
                                        holder = other.as_ref().and_then(lease::holder).unwrap_or(""),
                                        "lost the lease"
                                    );
                                    let _ = self.step_down(lease, false, "lease taken or deleted").await;
                                    match other {
                                        Some(cur) => self.observe(cur),
                                        None => self.observe_absent(),
                                    }
                                    return Ok(Next::Follow);
                                }
                                Err(StoreError::Forbidden(m)) => {
                                    let _ = self.step_down(lease, false, "forbidden").await;
                                    return Err(self.forbidden("get", m));
                                }
                                Err(e) => {
                                    self.status.send_modify(|st| st.renew_failures += 1);
                                    warn!(identity = %cfg.identity, error = %e, "re-reading after a renew conflict failed");
                                    next_renew = self.now().saturating_add(cfg.retry_period);
                                }
                            }
                        }
                        Err(StoreError::Forbidden(m)) => {
                            let _ = self.step_down(lease, false, "forbidden").await;
                            return Err(self.forbidden("update", m));
                        }
                        Err(e) => {
                            self.status.send_modify(|st| st.renew_failures += 1);
                            warn!(
                                identity = %cfg.identity,
                                error = %e,
                                fence_deadline_in = ?deadline.saturating_duration_since(self.now()),
                                "renew failed"
                            );
                            next_renew = self.now().saturating_add(cfg.retry_period);
                        }
                    }
                }
            }
        }
    }

    async fn stop_leading(&mut self, lease: Lease) -> Result<Next, ElectionError> {
        info!(identity = %self.cfg.identity, "shutdown while leading");
        self.step_down(lease, true, "shutdown")
            .await
            .map_err(ElectionError::Fence)?;
        self.publish_following();
        Ok(Next::Shutdown)
    }
}
