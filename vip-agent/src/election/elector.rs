//! The elector: follows the Lease (watch, GET, create, acquire) and, once it
//! holds it, leads in [`lead`] (renew, step down, release).

use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::core::WatchEvent;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};
use vip_common::events;

use super::lease::{self, Observation};
use super::store::{LeaseEvents, LeaseStore, StoreError};
use super::{Clock, ElectionConfig, ElectionError, Fence, Role, Status, SystemClock};
use crate::clock::MonoTime;

mod lead;

/// Bound on the time spent releasing the Lease on stop / step-down.
pub const RELEASE_TIMEOUT: Duration = Duration::from_secs(1);

/// Server-side timeout asked for each watch request (the API server ends the
/// watch after this; the follower reconnects from the last resourceVersion).
pub const WATCH_TIMEOUT_SECS: u32 = 290;

const WATCH_BACKOFF_MIN: Duration = Duration::from_millis(50);
const WATCH_BACKOFF_MAX: Duration = Duration::from_secs(1);

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
                    event = events::LEASE_ACQUIRED,
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
}
