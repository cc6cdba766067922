//! Stopping: follow first, then release (bounded, client-go's record,
//! retried after a conflict with our own newer record).

use super::*;

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
