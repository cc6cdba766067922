//! Kubernetes Events that tell the story of the election in
//! `kubectl get events -n kube-system`: every leadership change and every
//! step-down becomes an `events.k8s.io/v1` Event regarding the Lease.
//!
//! Events never block or delay the election: the elector hands each one to
//! [`EventSink::emit`], a `try_send` into a bounded channel (a full channel
//! drops the event, counts it and warns once), and a separate task
//! ([`post_events`]) creates them on the API server, each request bounded
//! by [`POST_TIMEOUT`]. An unreachable API server or a 403 on events only
//! costs the events.
//!
//! The Events are created directly with `Api<events::v1::Event>` (kube's
//! `client` feature, already in the build) rather than with
//! `kube::runtime::events::Recorder`: the Recorder needs kube's `runtime`
//! feature (kube-runtime and its dependencies, for one call), and its
//! series aggregation (a PATCH of repeated events) does not apply to a
//! failover story where every event is distinct.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::kube_store::classify;
use super::lease;
use super::store::StoreError;

/// `reportingController` of every Event.
pub const REPORTING_CONTROLLER: &str = "vip-agent";
/// Events waiting to be posted; more are dropped (and counted).
pub const CHANNEL_CAPACITY: usize = 64;
/// Bound on each Event's POST.
pub const POST_TIMEOUT: Duration = Duration::from_secs(2);

/// Why an Event was posted (its `reason`, CamelCase as Kubernetes wants).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// This node took the Lease (free, released, or expired).
    LeaderElected,
    /// This node gave the Lease back (holder cleared) after stepping down.
    LeaderReleased,
    /// Lost the Lease: another node holds it, or it was deleted.
    LeaseLost,
    /// The health check failed while leading.
    StepDownUnhealthy,
    /// No renew succeeded before the fence deadline.
    StepDownRenewDeadline,
    /// The agent is stopping (SIGTERM/SIGINT).
    StepDownShutdown,
    /// 403 Forbidden on the Lease while leading.
    StepDownForbidden,
    /// The data plane could not be told to answer.
    StepDownFenceFailed,
}

impl Reason {
    pub const ALL: [Reason; 8] = [
        Reason::LeaderElected,
        Reason::LeaderReleased,
        Reason::LeaseLost,
        Reason::StepDownUnhealthy,
        Reason::StepDownRenewDeadline,
        Reason::StepDownShutdown,
        Reason::StepDownForbidden,
        Reason::StepDownFenceFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::LeaderElected => "LeaderElected",
            Reason::LeaderReleased => "LeaderReleased",
            Reason::LeaseLost => "LeaseLost",
            Reason::StepDownUnhealthy => "StepDownUnhealthy",
            Reason::StepDownRenewDeadline => "StepDownRenewDeadline",
            Reason::StepDownShutdown => "StepDownShutdown",
            Reason::StepDownForbidden => "StepDownForbidden",
            Reason::StepDownFenceFailed => "StepDownFenceFailed",
        }
    }

    /// `Normal` for the expected story, `Warning` for the rest.
    pub fn event_type(self) -> &'static str {
        match self {
            Reason::LeaderElected | Reason::LeaderReleased | Reason::StepDownShutdown => "Normal",
            _ => "Warning",
        }
    }

    /// The Event's `action` (what the reporting node did).
    pub fn action(self) -> &'static str {
        match self {
            Reason::LeaderElected => "Acquire",
            Reason::LeaderReleased => "Release",
            _ => "StepDown",
        }
    }
}

/// Why a leader steps down (the elector's side; also the log's `reason`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StepDown {
    Shutdown,
    Unhealthy,
    RenewDeadline,
    /// Taken by `holder`, or deleted / holder cleared by someone else (`None`).
    Lost {
        holder: Option<String>,
    },
    Forbidden,
    FenceFailed,
}

impl StepDown {
    /// The `reason` field of the "stepping down" log line.
    pub fn log_reason(&self) -> &'static str {
        match self {
            StepDown::Shutdown => "shutdown",
            StepDown::Unhealthy => "unhealthy",
            StepDown::RenewDeadline => "renew deadline passed",
            StepDown::Lost { .. } => "lease taken or deleted",
            StepDown::Forbidden => "forbidden",
            StepDown::FenceFailed => "fence.lead failed",
        }
    }

    fn reason(&self) -> Reason {
        match self {
            StepDown::Shutdown => Reason::StepDownShutdown,
            StepDown::Unhealthy => Reason::StepDownUnhealthy,
            StepDown::RenewDeadline => Reason::StepDownRenewDeadline,
            StepDown::Lost { .. } => Reason::LeaseLost,
            StepDown::Forbidden => Reason::StepDownForbidden,
            StepDown::FenceFailed => Reason::StepDownFenceFailed,
        }
    }

    fn message(&self, me: &str, release: bool) -> String {
        let then = if release { "; releasing the lease" } else { "" };
        match self {
            StepDown::Shutdown => {
                format!("{me} stepped down: the agent is shutting down{then}")
            }
            StepDown::Unhealthy => {
                format!("{me} stepped down: its health check failed{then}")
            }
            StepDown::RenewDeadline => format!(
                "{me} stepped down: it could not renew the lease before its renew deadline{then}"
            ),
            StepDown::Lost { holder: Some(h) } => {
                format!("{me} lost the lease to {h} and stepped down{then}")
            }
            StepDown::Lost { holder: None } => {
                format!("{me} stepped down: the lease was deleted or its holder cleared{then}")
            }
            StepDown::Forbidden => {
                format!("{me} stepped down: 403 Forbidden on the lease (RBAC){then}")
            }
            StepDown::FenceFailed => {
                format!("{me} stepped down: its data plane could not be told to answer{then}")
            }
        }
    }
}

/// One Event, as the elector hands it over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElectionEvent {
    pub reason: Reason,
    pub note: String,
    /// `metadata.uid` of the Lease, when known.
    pub lease_uid: Option<String>,
    /// When it happened (wall clock, for humans; a request's send time).
    pub at: Timestamp,
}

/// Counters of the Events (shared by every clone of the sink and the poster).
#[derive(Debug, Default)]
pub struct EventStats {
    pub queued: AtomicU64,
    /// Dropped because the channel was full (the poster is behind).
    pub dropped: AtomicU64,
    pub posted: AtomicU64,
    pub failed: AtomicU64,
    warned_full: AtomicBool,
}

/// The elector's end: never blocks. The default sink is disabled.
#[derive(Clone, Debug, Default)]
pub struct EventSink {
    tx: Option<mpsc::Sender<ElectionEvent>>,
    stats: Arc<EventStats>,
}

impl EventSink {
    /// A sink and the receiver for [`post_events`].
    pub fn channel(capacity: usize) -> (Self, mpsc::Receiver<ElectionEvent>) {
        let (tx, rx) = mpsc::channel(capacity);
        let sink = Self {
            tx: Some(tx),
            stats: Arc::default(),
        };
        (sink, rx)
    }

    pub fn stats(&self) -> Arc<EventStats> {
        self.stats.clone()
    }

    /// Queue `ev`, or drop it (full channel: counted, warned once; closed
    /// channel or disabled sink: ignored).
    pub fn emit(&self, ev: ElectionEvent) {
        let Some(tx) = &self.tx else { return };
        match tx.try_send(ev) {
            Ok(()) => {
                self.stats.queued.fetch_add(1, Ordering::Relaxed);
            }
            Err(mpsc::error::TrySendError::Full(ev)) => {
                let n = self.stats.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if !self.stats.warned_full.swap(true, Ordering::Relaxed) {
                    warn!(
                        reason = ev.reason.as_str(),
                        dropped = n,
                        "Kubernetes Event dropped: the event queue is full (the API server is slow \
                         or unreachable); the election is not affected. Warned once."
                    );
                } else {
                    debug!(
                        reason = ev.reason.as_str(),
                        dropped = n,
                        "Kubernetes Event dropped"
                    );
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

/// What the elector tells: turns its moments into [`ElectionEvent`]s.
#[derive(Debug, Default)]
pub struct Narrator {
    sink: EventSink,
    identity: String,
    /// Last non-empty holder seen (names who released a free record).
    last_holder: Option<String>,
}

impl Narrator {
    pub fn new(sink: EventSink, identity: &str) -> Self {
        Self {
            sink,
            identity: identity.to_owned(),
            last_holder: None,
        }
    }

    /// A record was seen: remember its holder.
    pub fn observed(&mut self, lease: &Lease) {
        if let Some(h) = lease::holder(lease) {
            self.last_holder = Some(h.to_owned());
        }
    }

    /// Took the Lease with a request sent at `at`; `before` is the record
    /// replaced (`None`: created).
    pub fn elected(&mut self, before: Option<&Lease>, taken: &Lease, at: Timestamp) {
        let me = &self.identity;
        let why = match before {
            None => "the lease did not exist (created it)".to_owned(),
            Some(cur) => match lease::holder(cur) {
                Some(h) if h == me => "its own earlier lease expired".to_owned(),
                Some(h) => format!("{h}'s lease expired (not renewed within the lease duration)"),
                None => match self.last_holder.as_deref() {
                    Some(h) if h != me => format!("previous holder {h} released the lease"),
                    _ => "the lease was free (released)".to_owned(),
                },
            },
        };
        self.last_holder = Some(me.clone());
        self.emit(
            Reason::LeaderElected,
            format!("{me} became leader: {why}"),
            taken,
            at,
        );
    }

    /// Stepped down (the data plane is already silent).
    pub fn stepped_down(&self, cause: &StepDown, release: bool, lease: &Lease, at: Timestamp) {
        self.emit(
            cause.reason(),
            cause.message(&self.identity, release),
            lease,
            at,
        );
    }

    /// The release (holder cleared) sent at `at` was accepted.
    pub fn released(&self, cause: &StepDown, lease: &Lease, at: Timestamp) {
        self.emit(
            Reason::LeaderReleased,
            format!(
                "{} released the lease ({}); followers take over at once",
                self.identity,
                cause.log_reason()
            ),
            lease,
            at,
        );
    }

    fn emit(&self, reason: Reason, note: String, lease: &Lease, at: Timestamp) {
        self.sink.emit(ElectionEvent {
            reason,
            note,
            lease_uid: lease.metadata.uid.clone(),
            at,
        });
    }
}

/// Who reports, about which Lease.
#[derive(Clone, Debug)]
pub struct Reporter {
    pub namespace: String,
    pub lease_name: String,
    /// `reportingInstance`: the node identity.
    pub identity: String,
}

impl Reporter {
    /// The `events.k8s.io/v1` Event for `ev`.
    pub fn event(&self, ev: &ElectionEvent) -> Event {
        let nanos = ev.at.as_nanosecond();
        Event {
            metadata: ObjectMeta {
                // kube's Recorder names them the same way: object + time.
                name: Some(format!("{}.{:x}", self.lease_name, nanos)),
                namespace: Some(self.namespace.clone()),
                ..ObjectMeta::default()
            },
            event_time: Some(MicroTime(ev.at)),
            action: Some(ev.reason.action().to_owned()),
            reason: Some(ev.reason.as_str().to_owned()),
            note: Some(ev.note.clone()),
            type_: Some(ev.reason.event_type().to_owned()),
            regarding: Some(ObjectReference {
                api_version: Some("coordination.k8s.io/v1".to_owned()),
                kind: Some("Lease".to_owned()),
                name: Some(self.lease_name.clone()),
                namespace: Some(self.namespace.clone()),
                uid: ev.lease_uid.clone(),
                ..ObjectReference::default()
            }),
            reporting_controller: Some(REPORTING_CONTROLLER.to_owned()),
            reporting_instance: Some(self.identity.clone()),
            ..Event::default()
        }
    }
}

/// Where Events are created (the API server; a stub in tests).
pub trait EventApi: Send + Sync {
    fn create(&self, ev: &Event) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// [`EventApi`] on `events.k8s.io/v1` in one namespace.
pub struct KubeEvents(Api<Event>);

impl KubeEvents {
    pub fn new(client: kube::Client, namespace: &str) -> Self {
        Self(Api::namespaced(client, namespace))
    }
}

impl EventApi for KubeEvents {
    async fn create(&self, ev: &Event) -> Result<(), StoreError> {
        self.0
            .create(&PostParams::default(), ev)
            .await
            .map(drop)
            .map_err(classify)
    }
}

/// Post every Event received until all senders are gone, each bounded by
/// `timeout`. Failures are counted and logged (the first of a run of
/// failures as a warning, with the fix for a 403; the rest at debug).
pub async fn post_events<A: EventApi>(
    api: A,
    reporter: Reporter,
    mut rx: mpsc::Receiver<ElectionEvent>,
    stats: Arc<EventStats>,
    timeout: Duration,
) {
    let mut failing = false;
    while let Some(ev) = rx.recv().await {
        let event = reporter.event(&ev);
        let r = match tokio::time::timeout(timeout, api.create(&event)).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Timeout),
        };
        match r {
            Ok(()) => {
                stats.posted.fetch_add(1, Ordering::Relaxed);
                if std::mem::take(&mut failing) {
                    info!("posting Kubernetes Events works again");
                }
                debug!(reason = ev.reason.as_str(), note = %ev.note, "event posted");
            }
            Err(e) => {
                stats.failed.fetch_add(1, Ordering::Relaxed);
                if std::mem::replace(&mut failing, true) {
                    debug!(reason = ev.reason.as_str(), error = %e, "posting a Kubernetes Event failed");
                } else if let StoreError::Forbidden(_) = e {
                    warn!(
                        reason = ev.reason.as_str(),
                        error = %e,
                        namespace = %reporter.namespace,
                        "posting a Kubernetes Event is forbidden: grant create on events \
                         (\"\" and events.k8s.io) in this namespace (deploy/rbac.yaml); \
                         the election is not affected"
                    );
                } else {
                    warn!(
                        reason = ev.reason.as_str(),
                        error = %e,
                        "posting a Kubernetes Event failed (dropped); the election is not affected"
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn lease_held_by(holder: Option<&str>) -> Lease {
        let mut l = lease::new_lease(
            "vip",
            "kube-system",
            holder.unwrap_or("x"),
            Duration::from_secs(3),
            Timestamp::UNIX_EPOCH,
        );
        if holder.is_none() {
            l = lease::release(&l, Timestamp::UNIX_EPOCH);
        }
        l.metadata.uid = Some("uid-1".to_owned());
        l
    }

    fn notes(rx: &mut mpsc::Receiver<ElectionEvent>) -> Vec<(Reason, String)> {
        let mut v = Vec::new();
        while let Ok(e) = rx.try_recv() {
            v.push((e.reason, e.note));
        }
        v
    }

    #[test]
    fn the_story_names_nodes_and_causes() {
        let (sink, mut rx) = EventSink::channel(16);
        let mut n = Narrator::new(sink, "b");
        let t = Timestamp::UNIX_EPOCH;
        n.observed(&lease_held_by(Some("a")));
        n.elected(Some(&lease_held_by(None)), &lease_held_by(Some("b")), t);
        n.stepped_down(&StepDown::Unhealthy, true, &lease_held_by(Some("b")), t);
        n.released(&StepDown::Unhealthy, &lease_held_by(None), t);
        n.observed(&lease_held_by(Some("c")));
        n.elected(
            Some(&lease_held_by(Some("c"))),
            &lease_held_by(Some("b")),
            t,
        );
        n.elected(None, &lease_held_by(Some("b")), t);
        let lost = StepDown::Lost {
            holder: Some("c".into()),
        };
        n.stepped_down(&lost, false, &lease_held_by(Some("b")), t);
        let got = notes(&mut rx);
        let want = [
            (
                Reason::LeaderElected,
                "b became leader: previous holder a released the lease",
            ),
            (
                Reason::StepDownUnhealthy,
                "b stepped down: its health check failed; releasing the lease",
            ),
            (
                Reason::LeaderReleased,
                "b released the lease (unhealthy); followers take over at once",
            ),
            (
                Reason::LeaderElected,
                "b became leader: c's lease expired (not renewed within the lease duration)",
            ),
            (
                Reason::LeaderElected,
                "b became leader: the lease did not exist (created it)",
            ),
            (Reason::LeaseLost, "b lost the lease to c and stepped down"),
        ];
        let want: Vec<_> = want.iter().map(|(r, s)| (*r, (*s).to_owned())).collect();
        assert_eq!(got, want);
    }

    /// deploy/README.md documents every reason (section 8).
    #[test]
    fn every_reason_is_documented() {
        let readme = include_str!("../../../deploy/README.md");
        for r in Reason::ALL {
            assert!(
                readme.contains(&format!("| `{}` | {} |", r.as_str(), r.event_type())),
                "deploy/README.md: no row for {}",
                r.as_str()
            );
        }
    }

    #[test]
    fn full_channel_drops_and_counts_without_blocking() {
        let (sink, mut rx) = EventSink::channel(1);
        let n = Narrator::new(sink.clone(), "a");
        let l = lease_held_by(Some("a"));
        for _ in 0..5 {
            n.stepped_down(&StepDown::Shutdown, true, &l, Timestamp::UNIX_EPOCH);
        }
        let s = sink.stats();
        assert_eq!(s.queued.load(Ordering::Relaxed), 1);
        assert_eq!(s.dropped.load(Ordering::Relaxed), 4);
        assert_eq!(notes(&mut rx).len(), 1);
        // Disabled and closed sinks ignore events.
        EventSink::default().emit(ElectionEvent {
            reason: Reason::LeaseLost,
            note: String::new(),
            lease_uid: None,
            at: Timestamp::UNIX_EPOCH,
        });
        drop(rx);
        n.stepped_down(&StepDown::Shutdown, true, &l, Timestamp::UNIX_EPOCH);
        assert_eq!(s.dropped.load(Ordering::Relaxed), 4);
    }

    #[test]
    fn event_regards_the_lease_and_names_the_reporter() {
        let r = Reporter {
            namespace: "kube-system".into(),
            lease_name: "vip-control-plane".into(),
            identity: "node-a".into(),
        };
        let at = Timestamp::from_second(1_780_000_000).expect("valid");
        let e = r.event(&ElectionEvent {
            reason: Reason::StepDownRenewDeadline,
            note: "n".into(),
            lease_uid: Some("u".into()),
            at,
        });
        let v = serde_json::to_value(&e).expect("json");
        assert_eq!(v["apiVersion"], "events.k8s.io/v1");
        assert_eq!(v["kind"], "Event");
        assert_eq!(v["metadata"]["namespace"], "kube-system");
        assert!(
            v["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("vip-control-plane."))
        );
        assert_eq!(v["regarding"]["kind"], "Lease");
        assert_eq!(v["regarding"]["apiVersion"], "coordination.k8s.io/v1");
        assert_eq!(v["regarding"]["name"], "vip-control-plane");
        assert_eq!(v["regarding"]["uid"], "u");
        assert_eq!(v["reportingController"], "vip-agent");
        assert_eq!(v["reportingInstance"], "node-a");
        assert_eq!(v["reason"], "StepDownRenewDeadline");
        assert_eq!(v["type"], "Warning");
        assert_eq!(v["action"], "StepDown");
        assert!(
            v["eventTime"]
                .as_str()
                .is_some_and(|t| t.starts_with("2026-"))
        );
    }

    /// Hangs for ever on the first call, then answers 403.
    struct Stuck {
        calls: Mutex<u32>,
    }

    impl EventApi for Stuck {
        async fn create(&self, _: &Event) -> Result<(), StoreError> {
            let n = {
                let mut c = self.calls.lock().expect("lock");
                *c += 1;
                *c
            };
            if n == 1 {
                std::future::pending::<()>().await;
            }
            Err(StoreError::Forbidden("no".into()))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn poster_times_out_and_goes_on() {
        let (sink, rx) = EventSink::channel(8);
        let n = Narrator::new(sink.clone(), "a");
        let l = lease_held_by(Some("a"));
        for _ in 0..3 {
            n.stepped_down(&StepDown::Shutdown, true, &l, Timestamp::UNIX_EPOCH);
        }
        let stats = sink.stats();
        drop((n, sink));
        let reporter = Reporter {
            namespace: "kube-system".into(),
            lease_name: "vip".into(),
            identity: "a".into(),
        };
        let api = Stuck {
            calls: Mutex::new(0),
        };
        let start = tokio::time::Instant::now();
        post_events(api, reporter, rx, stats.clone(), POST_TIMEOUT).await;
        // One timeout, then two quick 403s; the poster ends with the senders.
        assert_eq!(start.elapsed(), POST_TIMEOUT);
        assert_eq!(stats.failed.load(Ordering::Relaxed), 3);
        assert_eq!(stats.posted.load(Ordering::Relaxed), 0);
    }
}
