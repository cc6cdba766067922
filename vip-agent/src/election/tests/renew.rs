//! Renewing: conflicts re-read and never overwrite, failures and hung
//! renews follow by the fence deadline.

use super::*;

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
