//! What keeps a node from leading: ill health, 403 Forbidden, a failing
//! fence.

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
