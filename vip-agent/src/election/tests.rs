//! Deterministic tests of the election state machine on tokio's paused clock
//! with the in-memory store. Virtual time only advances when every task is
//! idle, so "at exactly t" assertions are exact.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::memory::{MemoryClient, MemoryServer, Mode};
use super::*;

const T0_NANOS: u64 = 1_000_000_000_000;

#[derive(Clone)]
struct TestClock {
    base: Instant,
    wall_skew: SignedDuration,
}

impl TestClock {
    fn new(base: Instant) -> Self {
        Self {
            base,
            wall_skew: SignedDuration::ZERO,
        }
    }
    /// Monotonic time `secs` after the test's base.
    fn at(&self, secs: f64) -> MonoTime {
        MonoTime(T0_NANOS).saturating_add(Duration::from_secs_f64(secs))
    }
    fn secs(&self, t: MonoTime) -> f64 {
        t.saturating_duration_since(MonoTime(T0_NANOS))
            .as_secs_f64()
    }
}

impl Clock for TestClock {
    fn mono(&self) -> MonoTime {
        MonoTime(T0_NANOS).saturating_add(self.base.elapsed())
    }
    fn wall(&self) -> Timestamp {
        let start = Timestamp::from_second(1_780_000_000).expect("valid");
        start
            .checked_add(SignedDuration::try_from(self.base.elapsed()).expect("small"))
            .and_then(|t| t.checked_add(self.wall_skew))
            .expect("in range")
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Call {
    Lead(MonoTime),
    /// Holder of the stored Lease at the moment follow() was called.
    Follow(Option<String>),
}

/// Records every call and the intervals during which this node answers.
struct RecFence {
    clock: TestClock,
    server: MemoryServer,
    calls: Mutex<Vec<(MonoTime, Call)>>,
    /// [start, end) during which the data plane answers.
    intervals: Mutex<Vec<(MonoTime, MonoTime)>>,
    fail_lead: AtomicBool,
}

impl RecFence {
    fn new(clock: &TestClock, server: &MemoryServer) -> Arc<Self> {
        Arc::new(Self {
            clock: clock.clone(),
            server: server.clone(),
            calls: Mutex::default(),
            intervals: Mutex::default(),
            fail_lead: AtomicBool::new(false),
        })
    }
    fn calls(&self) -> Vec<(MonoTime, Call)> {
        self.calls.lock().expect("lock").clone()
    }
    fn leads(&self) -> Vec<(MonoTime, MonoTime)> {
        self.calls()
            .into_iter()
            .filter_map(|(t, c)| match c {
                Call::Lead(d) => Some((t, d)),
                Call::Follow(_) => None,
            })
            .collect()
    }
    fn follows(&self) -> Vec<MonoTime> {
        self.calls()
            .into_iter()
            .filter_map(|(t, c)| matches!(c, Call::Follow(_)).then_some(t))
            .collect()
    }
}

impl Fence for RecFence {
    async fn lead(&self, deadline: MonoTime) -> anyhow::Result<()> {
        let now = self.clock.mono();
        self.calls
            .lock()
            .expect("lock")
            .push((now, Call::Lead(deadline)));
        if self.fail_lead.load(Ordering::SeqCst) {
            anyhow::bail!("injected dataplane failure");
        }
        let mut iv = self.intervals.lock().expect("lock");
        match iv.last_mut() {
            Some((_, end)) if *end > now => *end = deadline,
            _ => iv.push((now, deadline)),
        }
        Ok(())
    }
    async fn follow(&self) -> anyhow::Result<()> {
        let now = self.clock.mono();
        let holder = self
            .server
            .lease()
            .as_ref()
            .and_then(lease::holder)
            .map(str::to_owned);
        self.calls
            .lock()
            .expect("lock")
            .push((now, Call::Follow(holder)));
        if let Some((_, end)) = self.intervals.lock().expect("lock").last_mut()
            && *end > now
        {
            *end = now;
        }
        Ok(())
    }
}

struct Node {
    client: MemoryClient,
    fence: Arc<RecFence>,
    health: watch::Sender<bool>,
    status: watch::Receiver<Status>,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), ElectionError>>,
}

/// The timings these tests were written for (kube-vip's 5 s / 3 s / 1 s);
/// the agent's own defaults are faster, the properties are the same.
fn cfg(identity: &str) -> ElectionConfig {
    ElectionConfig {
        lease_duration: Duration::from_secs(5),
        renew_deadline: Duration::from_secs(3),
        retry_period: Duration::from_secs(1),
        ..ElectionConfig::new(identity)
    }
}

fn spawn_node(
    identity: &str,
    clock: &TestClock,
    client: MemoryClient,
    fence: Arc<RecFence>,
    healthy: bool,
) -> Node {
    let (health, health_rx) = watch::channel(healthy);
    let (status_tx, status) = watch::channel(Status::default());
    let shutdown = CancellationToken::new();
    let task = {
        let (client, fence, clock, shutdown) = (
            client.clone(),
            fence.clone(),
            clock.clone(),
            shutdown.clone(),
        );
        let cfg = cfg(identity);
        tokio::spawn(async move {
            run_with_clock(
                &client, &cfg, &*fence, &clock, health_rx, shutdown, status_tx,
            )
            .await
        })
    };
    Node {
        client,
        fence,
        health,
        status,
        shutdown,
        task,
    }
}

fn node(identity: &str, clock: &TestClock, server: &MemoryServer, healthy: bool) -> Node {
    let c = clock.clone();
    let client = server.client(Arc::new(move || c.mono()));
    let fence = RecFence::new(clock, server);
    spawn_node(identity, clock, client, fence, healthy)
}

async fn wait_for(n: &mut Node, what: &str, pred: impl FnMut(&Status) -> bool) {
    tokio::time::timeout(Duration::from_secs(3600), n.status.wait_for(pred))
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
        .expect("elector alive");
}

async fn wait_leading(n: &mut Node) {
    wait_for(n, "leading", |s| s.role == Role::Leading).await;
}

/// A Lease held by `holder` with a wall clock `wall_secs`.
fn held(holder: &str, wall_secs: i64, ld: Duration) -> Lease {
    let mut l = lease::new_lease(
        DEFAULT_LEASE_NAME,
        DEFAULT_NAMESPACE,
        holder,
        ld,
        Timestamp::from_second(wall_secs).expect("valid"),
    );
    l.metadata.resource_version = None;
    l
}

/// Outsider renews what is stored (keeps holder, bumps renewTime).
fn outsider_renew(server: &MemoryServer, wall_secs: i64) {
    let cur = server.lease().expect("lease");
    let l = lease::renew(
        &cur,
        Duration::from_secs(5),
        Timestamp::from_second(wall_secs).expect("valid"),
    );
    server.put(l);
}

#[tokio::test(start_paused = true)]
async fn creates_lease_when_absent_and_leads() {
    let clock = TestClock::new(Instant::now());
    let server = MemoryServer::default();
    let mut a = node("a", &clock, &server, true);
    wait_leading(&mut a).await;
    let l = server.lease().expect("created");
    assert_eq!(lease::holder(&l), Some("a"));
    let spec = l.spec.as_ref().expect("spec");
    assert_eq!(spec.lease_duration_seconds, Some(5));
    assert_eq!(spec.lease_transitions, Some(0));
    assert!(spec.acquire_time.is_some() && spec.renew_time.is_some());
    let creates = a.client.requests("create");
    assert_eq!(creates, vec![clock.at(0.0)]);
    assert_eq!(a.fence.leads(), vec![(clock.at(0.0), clock.at(3.0))]);
    // Renews every retry_period push the deadline to send + renew_deadline.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(
        a.fence.leads(),
        (0..4)
            .map(|k| (clock.at(k as f64), clock.at(k as f64 + 3.0)))
            .collect::<Vec<_>>()
    );
    let spec = server.lease().and_then(|l| l.spec).expect("spec");
    assert_eq!(spec.lease_transitions, Some(0));
    a.shutdown.cancel();
    a.task.await.expect("join").expect("ok");
}

#[tokio::test(start_paused = true)]
async fn released_lease_is_acquired_on_the_watch_event() {
    let clock = TestClock::new(Instant::now());
    let server = MemoryServer::default();
    server.put(held("x", 100, Duration::from_secs(5)));
    let mut b = node("b", &clock, &server, true);
    // Outsider keeps renewing, then releases at t=2.5.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    outsider_renew(&server, 101);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let cur = server.lease().expect("lease");
    server.put(lease::release(
        &cur,
        Timestamp::from_second(102).expect("v"),
    ));
    wait_leading(&mut b).await;
    assert_eq!(b.fence.leads()[0], (clock.at(2.5), clock.at(5.5)));
    // Only GET + WATCH before the acquiring PUT: no polling.
    let ops: Vec<_> = b
        .client
        .log
        .lock()
        .expect("lock")
        .iter()
        .map(|r| r.op)
        .collect();
    assert_eq!(&ops[..3], &["get", "watch", "replace"]);
    let l = server.lease().expect("lease");
    assert_eq!(lease::holder(&l), Some("b"));
    assert_eq!(lease::transitions(&l), 1);
}

async fn takeover_time(record_wall_secs: i64, own_skew_secs: i64, record_ld: Duration) -> f64 {
    let mut clock = TestClock::new(Instant::now());
    clock.wall_skew = SignedDuration::from_secs(own_skew_secs);
    let server = MemoryServer::default();
    server.put(held("x", record_wall_secs, record_ld));
    let mut b = node("b", &clock, &server, true);
    // The outsider renews at t=1,2,3 (with its own wall clock), then dies.
    for k in 1..=3 {
        tokio::time::sleep_until(clock.base + Duration::from_secs(k)).await;
        outsider_renew(&server, record_wall_secs + k as i64);
        // keep the record's duration
        let mut l = server.lease().expect("lease");
        l.spec.as_mut().expect("spec").lease_duration_seconds =
            Some(lease::lease_duration_seconds(record_ld));
        server.put(l);
    }
    wait_leading(&mut b).await;
    let (t, _) = b.fence.leads()[0];
    let l = server.lease().expect("lease");
    assert_eq!(lease::holder(&l), Some("b"));
    // b's own wall time (skewed) is what it wrote, nothing else.
    let spec = l.spec.as_ref().expect("spec");
    assert_eq!(spec.renew_time.as_ref().map(|m| m.0), Some(clock.wall()));
    b.shutdown.cancel();
    b.task.await.expect("join").expect("ok");
    clock.secs(t)
}

#[tokio::test(start_paused = true)]
async fn no_takeover_before_observed_plus_lease_duration() {
    // Last record observed at t=3 -> takeover at exactly 3 + 5.
    assert_eq!(
        takeover_time(1_780_000_000, 0, Duration::from_secs(5)).await,
        8.0
    );
    // A longer leaseDurationSeconds in the record wins.
    assert_eq!(
        takeover_time(1_780_000_000, 0, Duration::from_secs(9)).await,
        12.0
    );
}

#[tokio::test(start_paused = true)]
async fn wall_clock_skew_changes_nothing() {
    let year = 365 * 24 * 3600;
    for (record_wall, own_skew) in [
        (1_780_000_000 + year, 0),
        (1_780_000_000 - year, 0),
        (1_780_000_000, 3600),
        (1_780_000_000, -3600),
        (0, 7 * year),
    ] {
        assert_eq!(
            takeover_time(record_wall, own_skew, Duration::from_secs(5)).await,
            8.0,
            "record wall {record_wall}, own skew {own_skew}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn renew_conflict_rereads_and_never_overwrites_another_holder() {
    let clock = TestClock::new(Instant::now());
    let server = MemoryServer::default();
    let mut a = node("a", &clock, &server, true);
    wait_leading(&mut a).await;
    // Someone edits a label: the rv changes but the lease is still ours.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut l = server.lease().expect("lease");
    l.metadata.labels = Some([("k".to_owned(), "v".to_owned())].into());
    server.put(l);
    tokio::time::sleep(Duration::from_millis(1000)).await; // t=2.5
    assert_eq!(a.status.borrow().role, Role::Leading);
    // Renew at t=2 conflicted, re-read, renewed again at once.
    let replaces = a.client.requests("replace");
    assert_eq!(replaces, vec![clock.at(1.0), clock.at(2.0), clock.at(2.0)]);
    assert_eq!(
        a.fence.leads().last(),
        Some(&(clock.at(2.0), clock.at(5.0)))
    );
    // Now another holder takes it (as if by force).
    let cur = server.lease().expect("lease");
    let taken = server.put(lease::acquire(
        &cur,
        "x",
        Duration::from_secs(5),
        Timestamp::from_second(1).expect("v"),
    ));
    wait_for(&mut a, "following x", |s| {
        s.role
            == Role::Following {
                holder: Some("x".into()),
            }
    })
    .await;
    // follow() at the next renew (t=3), no write after the conflict.
    assert_eq!(a.fence.follows(), vec![clock.at(3.0)]);
    tokio::time::sleep(Duration::from_secs(4)).await; // t=7: x's record is 4.5 s old for a
    assert_eq!(server.lease(), Some(taken));
    assert_eq!(a.client.requests("replace").len(), 4);
    assert_eq!(a.fence.leads().len(), 3);
}

async fn renew_failure_case(mode: Mode) {
    let clock = TestClock::new(Instant::now());
    let server = MemoryServer::default();
    let mut a = node("a", &clock, &server, true);
    wait_leading(&mut a).await;
    tokio::time::sleep_until(clock.base + Duration::from_millis(4500)).await;
    // Renews sent at 0 (create), 1, 2, 3, 4 succeeded; now the API is lost.
    server.set_mode(0, mode);
    wait_for(&mut a, "follow", |s| s.role != Role::Leading).await;
    let follows = a.fence.follows();
    assert_eq!(
        follows,
        vec![clock.at(7.0)],
        "follow at last send (4) + renew_deadline"
    );
    // Every deadline given to lead() is the send time of a create/replace + rd.
    let sends: Vec<_> = a.client.requests("");
    for (_, d) in a.fence.leads() {
        let s = MonoTime(d.0 - 3_000_000_000);
        assert!(sends.contains(&s), "deadline {d:?} not a send time + rd");
    }
    assert_eq!(a.fence.leads().last().map(|x| x.1), Some(clock.at(7.0)));
    // The API comes back at once; a must still wait lease_duration like anyone.
    server.set_mode(0, Mode::Up);
    wait_leading(&mut a).await;
    let (t, _) = *a.fence.leads().last().expect("lead");
    assert!(
        t >= clock.at(12.0),
        "re-acquired at {} < 7 + 5",
        clock.secs(t)
    );
    assert!(t <= clock.at(13.0), "re-acquired late at {}", clock.secs(t));
}

#[tokio::test(start_paused = true)]
async fn renew_errors_follow_by_the_deadline() {
    renew_failure_case(Mode::Fail).await;
}

#[tokio::test(start_paused = true)]
async fn hung_renews_follow_by_the_deadline() {
    renew_failure_case(Mode::Hang).await;
}

#[tokio::test(start_paused = true)]
async fn graceful_stop_follows_then_releases_and_follower_takes_over_at_once() {
    let clock = TestClock::new(Instant::now());
    let server = MemoryServer::default();
    let mut a = node("a", &clock, &server, true);
    wait_leading(&mut a).await;
    let mut b = node("b", &clock, &server, true);
    tokio::time::sleep(Duration::from_millis(10_250)).await;
    assert_eq!(b.fence.leads(), vec![]);
    a.shutdown.cancel();
    a.task.await.expect("join").expect("clean stop");
    // follow() ran while the stored lease was still a's, then it was released.
    let last = a.fence.calls().last().cloned().expect("calls");
    assert_eq!(last, (clock.at(10.25), Call::Follow(Some("a".into()))));
    wait_leading(&mut b).await;
    assert_eq!(b.fence.leads()[0], (clock.at(10.25), clock.at(13.25)));
    let l = server.lease().expect("lease");
    assert_eq!(lease::holder(&l), Some("b"));
    assert_eq!(lease::transitions(&l), 1);
}

#[tokio::test(start_paused = true)]
async fn release_record_matches_client_go() {
    let clock = TestClock::new(Instant::now());
    let server = MemoryServer::default();
    let mut a = node("a", &clock, &server, true);
    wait_leading(&mut a).await;
    a.shutdown.cancel();
    a.task.await.expect("join").expect("ok");
    let spec = server.lease().and_then(|l| l.spec).expect("spec");
    assert_eq!(spec.holder_identity.as_deref(), Some(""));
    assert_eq!(spec.lease_duration_seconds, Some(1));
}

#[tokio::test(start_paused = true)]
async fn graceful_stop_release_is_bounded() {
    let clock = TestClock::new(Instant::now());
    let server = MemoryServer::default();
    let mut a = node("a", &clock, &server, true);
    wait_leading(&mut a).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.set_mode(0, Mode::Hang);
    a.shutdown.cancel();
    a.task.await.expect("join").expect("ok");
    assert_eq!(a.fence.follows(), vec![clock.at(1.5)]);
    assert_eq!(clock.mono(), clock.at(2.5), "release gave up after 1 s");
}

#[tokio::test(start_paused = true)]
async fn unhealthy_leader_steps_down_and_never_reacquires_while_unhealthy() {
    let clock = TestClock::new(Instant::now());
    let server = MemoryServer::default();
    let mut a = node("a", &clock, &server, true);
    wait_leading(&mut a).await;
    let mut b = node("b", &clock, &server, true);
    tokio::time::sleep(Duration::from_millis(2200)).await;
    a.health.send_replace(false);
    wait_leading(&mut b).await;
    assert_eq!(b.fence.leads()[0].0, clock.at(2.2));
    assert_eq!(a.fence.follows(), vec![clock.at(2.2)]);
    // b goes away for good (killed, no release); a, unhealthy, does not take over.
    b.task.abort();
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(a.fence.leads().len(), 3);
    assert_eq!(lease::holder(&server.lease().expect("l")), Some("b"));
    // Healthy again: it takes over once b's record is lease_duration old.
    a.health.send_replace(true);
    wait_leading(&mut a).await;
    assert_eq!(a.fence.leads().last().map(|x| x.0), Some(clock.at(32.2)));
}

#[tokio::test(start_paused = true)]
async fn unhealthy_node_never_creates_or_acquires() {
    let clock = TestClock::new(Instant::now());
    let server = MemoryServer::default();
    let mut a = node("a", &clock, &server, false);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(server.lease().is_none());
    assert_eq!(
        a.client.requests("").len(),
        2,
        "one GET + one WATCH, no polling"
    );
    assert!(!a.status.borrow().healthy);
    a.health.send_replace(true);
    wait_leading(&mut a).await;
    assert_eq!(a.fence.leads()[0].0, clock.at(60.0));
}

#[tokio::test(start_paused = true)]
async fn forbidden_never_leads_and_explains_rbac() {
    let clock = TestClock::new(Instant::now());
    let server = MemoryServer::default();
    let c = clock.clone();
    let client = server.client(Arc::new(move || c.mono()));
    client
        .inject
        .lock()
        .expect("lock")
        .push_back(("get", StoreError::Forbidden("leases is forbidden".into())));
    let fence = RecFence::new(&clock, &server);
    let a = spawn_node("a", &clock, client, fence, true);
    let err = a.task.await.expect("join").expect_err("forbidden");
    let msg = err.to_string();
    assert!(
        msg.contains("coordination.k8s.io") && msg.contains("leases"),
        "{msg}"
    );
    assert!(a.fence.calls().is_empty());
    assert!(server.lease().is_none());
}

#[tokio::test(start_paused = true)]
async fn forbidden_on_renew_steps_down_first() {
    let clock = TestClock::new(Instant::now());
    let server = MemoryServer::default();
    let mut a = node("a", &clock, &server, true);
    wait_leading(&mut a).await;
    a.client
        .inject
        .lock()
        .expect("lock")
        .push_back(("replace", StoreError::Forbidden("nope".into())));
    let r = (&mut a.task).await.expect("join");
    assert!(matches!(r, Err(ElectionError::Forbidden { .. })));
    assert_eq!(a.fence.follows(), vec![clock.at(1.0)]);
}

#[tokio::test(start_paused = true)]
async fn fence_lead_failure_steps_down_and_releases() {
    let clock = TestClock::new(Instant::now());
    let server = MemoryServer::default();
    let c = clock.clone();
    let client = server.client(Arc::new(move || c.mono()));
    let fence = RecFence::new(&clock, &server);
    fence.fail_lead.store(true, Ordering::SeqCst);
    let a = spawn_node("a", &clock, client, fence, true);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(a.fence.follows(), vec![clock.at(0.0)]);
    assert_eq!(lease::holder(&server.lease().expect("l")), None);
    assert_eq!(a.status.borrow().role, Role::Following { holder: None });
}

#[tokio::test(start_paused = true)]
async fn follower_makes_no_requests_at_steady_state() {
    let clock = TestClock::new(Instant::now());
    let server = MemoryServer::default();
    let mut a = node("a", &clock, &server, true);
    wait_leading(&mut a).await;
    let b = node("b", &clock, &server, true);
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(b.client.requests("").len(), 2, "GET + WATCH in 10 minutes");
    assert_eq!(b.status.borrow().api_requests, 2);
    let renews = a.client.requests("replace").len();
    assert!((599..=600).contains(&renews), "{renews} renews");
    assert_eq!(
        b.status.borrow().role,
        Role::Following {
            holder: Some("a".into())
        }
    );
}

#[tokio::test(start_paused = true)]
async fn watch_reconnects_with_capped_backoff_and_relists_on_gone() {
    let clock = TestClock::new(Instant::now());
    let server = MemoryServer::default();
    server.put(held("x", 1, Duration::from_secs(5)));
    let mut b = node("b", &clock, &server, true);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let id_b = 0;
    server.set_mode(id_b, Mode::Fail);
    // Keep the outsider alive while b is cut off.
    for k in 1..=4 {
        tokio::time::sleep_until(clock.base + Duration::from_secs(k)).await;
        outsider_renew(&server, k as i64);
    }
    let watches = b.client.requests("watch");
    let gaps: Vec<_> = watches
        .windows(2)
        .map(|w| w[1].saturating_duration_since(w[0]))
        .collect();
    assert!(gaps.len() >= 5, "{gaps:?}");
    assert!(
        gaps.iter().all(|g| *g <= Duration::from_secs(1)),
        "{gaps:?}"
    );
    // (gaps[0] is from the initial watch to the first reconnect)
    assert!(
        gaps[1..].windows(2).all(|w| w[1] >= w[0]),
        "backoff grows: {gaps:?}"
    );
    assert_eq!(gaps[1], Duration::from_millis(100), "{gaps:?}");
    // History compacted while b was away: resuming gets 410 -> re-list.
    server.compact();
    server.set_mode(id_b, Mode::Up);
    let gets_before = b.client.requests("get").len();
    tokio::time::sleep(Duration::from_millis(1100)).await; // t=5.1
    assert_eq!(b.client.requests("get").len(), gets_before + 1, "re-listed");
    // Released while watched: acquired at once.
    let cur = server.lease().expect("l");
    server.put(lease::release(&cur, Timestamp::from_second(9).expect("v")));
    wait_leading(&mut b).await;
    assert_eq!(b.fence.leads()[0].0, clock.at(5.1));
}

#[tokio::test(start_paused = true)]
async fn deleted_lease_is_recreated_only_after_lease_duration() {
    let clock = TestClock::new(Instant::now());
    let server = MemoryServer::default();
    server.put(held("x", 1, Duration::from_secs(5)));
    let mut b = node("b", &clock, &server, true);
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Deleted by an admin under a live holder (only watchers notice).
    {
        let l = server.lease().expect("l");
        server.delete(l);
    }
    wait_leading(&mut b).await;
    assert_eq!(b.fence.leads()[0].0, clock.at(5.0), "observed at 0, + 5");
}

#[test]
fn config_validation_names_flags() {
    let mut c = ElectionConfig::new("n");
    assert!(c.validate().is_ok());
    c.renew_deadline = Duration::from_millis(4600);
    let e = c.validate().expect_err("too close").to_string();
    assert!(
        e.contains("--renew-deadline") && e.contains("--lease-duration"),
        "{e}"
    );
    c.renew_deadline = Duration::from_secs(3);
    c.retry_period = Duration::from_secs(3);
    assert!(
        c.validate()
            .expect_err("retry")
            .to_string()
            .contains("--retry-period")
    );
    c.retry_period = Duration::ZERO;
    assert_eq!(
        c.validate(),
        Err(ConfigError::Zero {
            flag: "--retry-period"
        })
    );
    // Sub-second settings are fine.
    let c = ElectionConfig {
        lease_duration: Duration::from_millis(900),
        renew_deadline: Duration::from_millis(600),
        retry_period: Duration::from_millis(200),
        ..ElectionConfig::new("n")
    };
    assert!(c.validate().is_ok());
    assert_eq!(c.margin(), Duration::from_millis(250));
}

// ---------------------------------------------------------------------------
// Storm: three electors on one store, random faults, latencies, health flips,
// kills and restarts. The fence intervals of different nodes never overlap.

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn overlaps(a: &[(MonoTime, MonoTime)], b: &[(MonoTime, MonoTime)]) -> Option<String> {
    for &(s1, e1) in a {
        for &(s2, e2) in b {
            if s1 < e1 && s2 < e2 && s1 < e2 && s2 < e1 {
                return Some(format!("[{s1:?},{e1:?}) vs [{s2:?},{e2:?})"));
            }
        }
    }
    None
}

async fn storm(seed: u64) -> u64 {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut clock = TestClock::new(Instant::now());
    let server = MemoryServer::default();
    let names = ["a", "b", "c"];
    let mut nodes: Vec<Node> = Vec::new();
    for (i, n) in names.iter().enumerate() {
        clock.wall_skew = SignedDuration::from_secs(rng.below(7200) as i64 - 3600);
        let c = clock.clone();
        let client = server.client(Arc::new(move || c.mono()));
        assert_eq!(nodes.len(), i);
        let fence = RecFence::new(&clock, &server);
        nodes.push(spawn_node(n, &clock, client, fence, true));
    }
    let end = clock.base + Duration::from_secs(120);
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(rng.below(1500))).await;
        let i = rng.below(3) as usize;
        match rng.below(10) {
            0 | 1 => server.set_mode(i, Mode::Fail),
            2 => server.set_mode(i, Mode::Hang),
            3 | 4 => server.set_mode(i, Mode::Up),
            5 => {
                let h = !*nodes[i].health.borrow();
                nodes[i].health.send_replace(h);
            }
            6 => {
                let lat = (
                    Duration::from_millis(rng.below(400)),
                    Duration::from_millis(rng.below(400)),
                );
                *nodes[i].client.latency.lock().expect("lock") = lat;
            }
            7 => {
                // Kill (no release, fence stays until its deadline) and restart.
                nodes[i].task.abort();
                let _ = (&mut nodes[i].task).await;
                let n = &nodes[i];
                let (client, fence) = (n.client.clone(), n.fence.clone());
                let healthy = *n.health.borrow();
                nodes[i] = spawn_node(names[i], &clock, client, fence, healthy);
            }
            8 => {
                // Graceful stop and restart.
                nodes[i].shutdown.cancel();
                let _ = (&mut nodes[i].task).await;
                let n = &nodes[i];
                let (client, fence) = (n.client.clone(), n.fence.clone());
                let healthy = *n.health.borrow();
                nodes[i] = spawn_node(names[i], &clock, client, fence, healthy);
            }
            _ => {}
        }
    }
    // Calm: everything up and healthy; somebody must lead again.
    for (i, n) in nodes.iter().enumerate() {
        server.set_mode(i, Mode::Up);
        *n.client.latency.lock().expect("lock") = (Duration::ZERO, Duration::ZERO);
        n.health.send_replace(true);
    }
    tokio::time::sleep(Duration::from_secs(12)).await;
    let leaders = nodes
        .iter()
        .filter(|n| n.status.borrow().role == Role::Leading)
        .count();
    assert_eq!(leaders, 1, "seed {seed}: exactly one leader after calm");
    for n in &nodes {
        n.shutdown.cancel();
    }
    for n in &mut nodes {
        let _ = (&mut n.task).await;
    }
    let mut takeovers = 0;
    for i in 0..3 {
        let a = nodes[i].fence.intervals.lock().expect("lock").clone();
        takeovers += a.len() as u64;
        // lead() deadlines are always a request send time + renew_deadline.
        let sends = nodes[i].client.requests("");
        for (_, d) in nodes[i].fence.leads() {
            assert!(
                sends.contains(&MonoTime(d.0 - 3_000_000_000)),
                "seed {seed}: node {i} deadline not send+rd"
            );
        }
        for (j, other) in nodes.iter().enumerate().skip(i + 1) {
            let b = other.fence.intervals.lock().expect("lock").clone();
            if let Some(o) = overlaps(&a, &b) {
                panic!("seed {seed}: nodes {i} and {j} answered at once: {o}");
            }
        }
    }
    takeovers
}

#[tokio::test(start_paused = true)]
async fn storm_never_two_leaders() {
    let mut takeovers = 0;
    for seed in 1..=200 {
        takeovers += storm(seed).await;
    }
    // The storm must actually move leadership around.
    assert!(takeovers > 200, "only {takeovers} leadership intervals");
}

/// A renew still in flight when the stop was decided commits after the
/// leader last read the record (here: the record changed under it while it
/// still names it). The release must conflict, re-read, and release the newer
/// record, so a follower takes over at once instead of after the lease.
#[tokio::test(start_paused = true)]
async fn release_retries_after_a_conflict_with_our_own_newer_record() {
    let clock = TestClock::new(Instant::now());
    let server = MemoryServer::default();
    let mut a = node("a", &clock, &server, true);
    wait_leading(&mut a).await;
    let mut b = node("b", &clock, &server, true);
    tokio::time::sleep(Duration::from_millis(1250)).await;
    let mut l = server.lease().expect("lease");
    l.metadata.annotations = Some([("touched".to_string(), "yes".to_string())].into());
    server.put(l);
    a.shutdown.cancel();
    a.task.await.expect("join").expect("clean stop");
    wait_leading(&mut b).await;
    assert_eq!(b.fence.leads()[0].0, clock.at(1.25), "taken over at once");
    assert_eq!(lease::holder(&server.lease().expect("lease")), Some("b"));
}
