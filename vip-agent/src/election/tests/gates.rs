//! What keeps a node from leading: ill health, 403 Forbidden (retried, never
//! fatal), a failing fence.

use super::*;

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
async fn forbidden_never_leads_and_retries_until_allowed() {
    let clock = TestClock::new(Instant::now());
    let server = MemoryServer::default();
    let c = clock.clone();
    let client = server.client(Arc::new(move || c.mono()));
    // Forbidden twice (RBAC not there yet, or an API server whose
    // authorizer has not caught up since its restart), then allowed.
    for _ in 0..2 {
        client
            .inject
            .lock()
            .expect("lock")
            .push_back(("get", StoreError::Forbidden("leases is forbidden".into())));
    }
    let fence = RecFence::new(&clock, &server);
    let mut a = spawn_node("a", &clock, client, fence, true);
    wait_for(&mut a, "the first 403", |s| s.forbidden >= 1).await;
    assert!(a.fence.leads().is_empty(), "no lead while forbidden");
    assert!(server.lease().is_none());
    // Not fatal: it keeps trying, FORBIDDEN_RETRY apart, and leads once allowed.
    wait_leading(&mut a).await;
    assert_eq!(a.status.borrow().forbidden, 2);
    let first_lead = a.fence.leads()[0].0;
    assert!(
        first_lead >= clock.at(2.0 * super::super::elector::FORBIDDEN_RETRY.as_secs_f64()),
        "led at {first_lead:?}, before two retries"
    );
    assert!(!a.task.is_finished());
}

#[tokio::test(start_paused = true)]
async fn forbidden_on_renew_steps_down_first_then_retries() {
    let clock = TestClock::new(Instant::now());
    let server = MemoryServer::default();
    let mut a = node("a", &clock, &server, true);
    wait_leading(&mut a).await;
    a.client
        .inject
        .lock()
        .expect("lock")
        .push_back(("replace", StoreError::Forbidden("nope".into())));
    wait_for(&mut a, "stepped down on 403", |s| {
        s.forbidden == 1 && s.role != Role::Leading
    })
    .await;
    // The fence went first, at the failed renew.
    assert_eq!(a.fence.follows(), vec![clock.at(1.0)]);
    // Allowed again: it leads again later, the task never ended.
    wait_leading(&mut a).await;
    assert!(!a.task.is_finished());
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
