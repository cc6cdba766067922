//! Kubernetes Events: the story the elector tells, and that telling it
//! never changes the election (a stuck or forbidden events API, a full
//! queue: the same instants as without events).

use k8s_openapi::api::events::v1::Event;
use tokio::sync::mpsc;

use super::*;
use crate::election::events::{
    ElectionEvent, EventApi, POST_TIMEOUT, Reason, Reporter, post_events,
};

fn node_with_events(
    identity: &str,
    clock: &TestClock,
    server: &MemoryServer,
    capacity: usize,
) -> (Node, EventSink, mpsc::Receiver<ElectionEvent>) {
    let c = clock.clone();
    let client = server.client(Arc::new(move || c.mono()));
    let fence = RecFence::new(clock, server);
    let (sink, rx) = EventSink::channel(capacity);
    let n = spawn_node_with_events(identity, clock, client, fence, true, sink.clone());
    (n, sink, rx)
}

fn strs(v: &[(Reason, &str)]) -> Vec<(Reason, String)> {
    v.iter().map(|(r, s)| (*r, (*s).to_owned())).collect()
}

fn drain(rx: &mut mpsc::Receiver<ElectionEvent>) -> Vec<(Reason, String)> {
    let mut v = Vec::new();
    while let Ok(e) = rx.try_recv() {
        v.push((e.reason, e.note));
    }
    v
}

#[tokio::test(start_paused = true)]
async fn graceful_failover_then_ill_health_then_a_crash_tell_their_story() {
    let clock = TestClock::new(Instant::now());
    let server = MemoryServer::default();
    let (mut a, _, mut a_rx) = node_with_events("a", &clock, &server, 16);
    wait_leading(&mut a).await;
    let (mut b, _, mut b_rx) = node_with_events("b", &clock, &server, 16);
    tokio::time::sleep(Duration::from_secs(2)).await;
    a.shutdown.cancel();
    a.task.await.expect("join").expect("clean stop");
    wait_leading(&mut b).await;
    let (mut c, _, mut c_rx) = node_with_events("c", &clock, &server, 16);
    tokio::time::sleep(Duration::from_secs(2)).await;
    b.health.send_replace(false);
    wait_leading(&mut c).await;
    // c is killed: no step-down, no release; b (healthy again) takes over
    // once c's record is a lease duration old.
    c.task.abort();
    b.health.send_replace(true);
    wait_for(&mut b, "leading again", |s| s.acquisitions == 2).await;
    let a_story = drain(&mut a_rx);
    let b_story = drain(&mut b_rx);
    let c_story = drain(&mut c_rx);
    assert_eq!(
        a_story,
        strs(&[
            (
                Reason::LeaderElected,
                "a became leader: the lease did not exist (created it)"
            ),
            (
                Reason::StepDownShutdown,
                "a stepped down: the agent is shutting down; releasing the lease"
            ),
            (
                Reason::LeaderReleased,
                "a released the lease (shutdown); followers take over at once"
            ),
        ])
    );
    assert_eq!(
        b_story,
        strs(&[
            (
                Reason::LeaderElected,
                "b became leader: previous holder a released the lease"
            ),
            (
                Reason::StepDownUnhealthy,
                "b stepped down: its health check failed; releasing the lease"
            ),
            (
                Reason::LeaderReleased,
                "b released the lease (unhealthy); followers take over at once"
            ),
            (
                Reason::LeaderElected,
                "b became leader: c's lease expired (not renewed within the lease duration)"
            ),
        ])
    );
    assert_eq!(
        c_story,
        strs(&[(
            Reason::LeaderElected,
            "c became leader: previous holder b released the lease"
        )])
    );
}

/// Never answers.
struct Hang;

impl EventApi for Hang {
    async fn create(&self, _: &Event) -> Result<(), StoreError> {
        std::future::pending().await
    }
}

/// Answers 403 at once.
struct Forbid;

impl EventApi for Forbid {
    async fn create(&self, _: &Event) -> Result<(), StoreError> {
        Err(StoreError::Forbidden("events is forbidden".into()))
    }
}

fn reporter(identity: &str) -> Reporter {
    Reporter {
        namespace: DEFAULT_NAMESPACE.into(),
        lease_name: DEFAULT_LEASE_NAME.into(),
        identity: identity.into(),
    }
}

/// The same takeover instants as `graceful_stop_follows_then_releases_and_follower_takes_over_at_once`
/// (no events), with a's events API hanging (queue of 1: events dropped)
/// and b's answering 403.
#[tokio::test(start_paused = true)]
async fn stuck_or_forbidden_events_do_not_change_the_election() {
    let clock = TestClock::new(Instant::now());
    let server = MemoryServer::default();
    let (mut a, a_sink, a_rx) = node_with_events("a", &clock, &server, 1);
    let a_stats = a_sink.stats();
    let a_poster = tokio::spawn(post_events(
        Hang,
        reporter("a"),
        a_rx,
        a_sink.stats(),
        POST_TIMEOUT,
    ));
    drop(a_sink);
    wait_leading(&mut a).await;
    let (mut b, b_sink, b_rx) = node_with_events("b", &clock, &server, 1);
    let b_stats = b_sink.stats();
    let b_poster = tokio::spawn(post_events(
        Forbid,
        reporter("b"),
        b_rx,
        b_sink.stats(),
        POST_TIMEOUT,
    ));
    drop(b_sink);
    tokio::time::sleep(Duration::from_millis(10_250)).await;
    assert_eq!(b.fence.leads(), vec![]);
    a.shutdown.cancel();
    a.task.await.expect("join").expect("clean stop");
    let last = a.fence.calls().last().cloned().expect("calls");
    assert_eq!(last, (clock.at(10.25), Call::Follow(Some("a".into()))));
    wait_leading(&mut b).await;
    assert_eq!(b.fence.leads()[0], (clock.at(10.25), clock.at(13.25)));
    // a renewed every second throughout (its poster was stuck all along).
    let a_leads = a.fence.leads();
    assert_eq!(a_leads.len(), 11, "{a_leads:?}");
    // a: LeaderElected went to the (stuck) poster, the step-down was queued,
    // the release found the queue full.
    assert_eq!(a_stats.queued.load(Ordering::Relaxed), 2);
    assert_eq!(a_stats.dropped.load(Ordering::Relaxed), 1);
    // The posters end once their elector is gone and the queue is drained.
    a_poster.await.expect("a's poster");
    assert_eq!(a_stats.failed.load(Ordering::Relaxed), 2, "timed out");
    b.shutdown.cancel();
    b.task.await.expect("join").expect("clean stop");
    b_poster.await.expect("b's poster");
    // Three events (elected, step-down, release): each refused with a 403,
    // or dropped when the queue of 1 was still full.
    let refused = b_stats.failed.load(Ordering::Relaxed);
    assert_eq!(refused + b_stats.dropped.load(Ordering::Relaxed), 3);
    assert!(refused >= 1);
    assert_eq!(b_stats.posted.load(Ordering::Relaxed), 0);
}

/// Lost to another holder, then (API gone) a missed renew deadline and,
/// once back, the re-acquisition of its own expired record.
#[tokio::test(start_paused = true)]
async fn lost_lease_and_missed_deadline_are_told() {
    let clock = TestClock::new(Instant::now());
    let server = MemoryServer::default();
    let (mut a, _, mut rx) = node_with_events("a", &clock, &server, 16);
    wait_leading(&mut a).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let cur = server.lease().expect("lease");
    server.put(lease::acquire(
        &cur,
        "x",
        Duration::from_secs(5),
        Timestamp::from_second(1).expect("v"),
    ));
    wait_for(&mut a, "following x", |s| s.role != Role::Leading).await;
    // x never renews: a takes over once x's record is a lease duration old.
    wait_for(&mut a, "leading again", |s| s.acquisitions == 2).await;
    server.set_mode(0, Mode::Fail);
    wait_for(&mut a, "stepped down", |s| s.role != Role::Leading).await;
    server.set_mode(0, Mode::Up);
    wait_for(&mut a, "leading a third time", |s| s.acquisitions == 3).await;
    assert_eq!(
        drain(&mut rx),
        strs(&[
            (
                Reason::LeaderElected,
                "a became leader: the lease did not exist (created it)"
            ),
            (Reason::LeaseLost, "a lost the lease to x and stepped down"),
            (
                Reason::LeaderElected,
                "a became leader: x's lease expired (not renewed within the lease duration)"
            ),
            (
                Reason::StepDownRenewDeadline,
                "a stepped down: it could not renew the lease before its renew deadline"
            ),
            (
                Reason::LeaderElected,
                "a became leader: its own earlier lease expired"
            ),
        ])
    );
}
