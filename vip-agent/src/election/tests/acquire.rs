//! Taking the Lease: create, acquire on the watch event, and never before
//! observed + lease_duration, whatever the wall clocks say.

use super::*;

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
