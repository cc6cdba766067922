//! The follower's watch: no requests at steady state, capped reconnect
//! backoff, re-list on 410 Gone, a deleted Lease.

use super::*;

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
