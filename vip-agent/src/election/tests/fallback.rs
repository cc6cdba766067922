//! The election through [`FallbackStore`]: admin forbidden (as admin.conf
//! before kubeadm's binding), super-admin at hand; the node leads with
//! super-admin, switches back once admin is allowed, and the fence never
//! notices (no renew skipped, no deadline extended, no step-down).

use std::path::{Path, PathBuf};

use super::super::credentials::Kubeconfig;
use super::super::fallback::{FallbackStore, SuperAdmin};
use super::*;

/// A client whose every request is refused with 403 while `allowed` is
/// false: RBAC without (then with) the binding.
#[derive(Clone)]
struct Rbac {
    inner: MemoryClient,
    clock: TestClock,
    allowed: Arc<AtomicBool>,
    refused: Arc<Mutex<Vec<(&'static str, MonoTime)>>>,
}

impl Rbac {
    fn check(&self, op: &'static str) -> Result<(), StoreError> {
        if self.allowed.load(Ordering::SeqCst) {
            Ok(())
        } else {
            let at = self.clock.mono();
            self.refused.lock().expect("lock").push((op, at));
            Err(StoreError::Forbidden(format!(
                "leases is forbidden: {op} by group kubeadm:cluster-admins"
            )))
        }
    }
}

impl LeaseStore for Rbac {
    async fn get(&self) -> Result<Option<Lease>, StoreError> {
        self.check("get")?;
        self.inner.get().await
    }
    async fn create(&self, lease: &Lease) -> Result<Lease, StoreError> {
        self.check("create")?;
        self.inner.create(lease).await
    }
    async fn replace(&self, lease: &Lease) -> Result<Lease, StoreError> {
        self.check("replace")?;
        self.inner.replace(lease).await
    }
    async fn watch(&self, rv: &str) -> Result<LeaseEvents, StoreError> {
        self.check("watch")?;
        self.inner.watch(rv).await
    }
}

/// The super-admin "file": there or not.
struct Fake(Option<Rbac>);

impl SuperAdmin<Rbac> for Fake {
    async fn load(&self) -> Result<Rbac, String> {
        self.0
            .clone()
            .ok_or_else(|| "/etc/kubernetes/super-admin.conf does not exist".to_owned())
    }
}

struct Setup {
    admin: Rbac,
    super_admin: Rbac,
    fence: Arc<RecFence>,
    switches: Arc<Mutex<Vec<(MonoTime, Kubeconfig)>>>,
    status: watch::Receiver<Status>,
    task: JoinHandle<Result<(), ElectionError>>,
    _shutdown: CancellationToken,
}

fn rbac(clock: &TestClock, server: &MemoryServer, allowed: bool) -> Rbac {
    let c = clock.clone();
    Rbac {
        inner: server.client(Arc::new(move || c.mono())),
        clock: clock.clone(),
        allowed: Arc::new(AtomicBool::new(allowed)),
        refused: Arc::default(),
    }
}

/// Node "a" with admin forbidden and a super-admin (allowed iff
/// `super_admin_ok`, present iff `present`).
fn start(clock: &TestClock, server: &MemoryServer, present: bool, super_admin_ok: bool) -> Setup {
    let admin = rbac(clock, server, false);
    let super_admin = rbac(clock, server, super_admin_ok);
    let fence = RecFence::new(clock, server);
    let switches: Arc<Mutex<Vec<(MonoTime, Kubeconfig)>>> = Arc::default();
    let store = {
        let (c, sw) = (clock.clone(), switches.clone());
        FallbackStore::new(
            admin.clone(),
            Path::new("/etc/kubernetes/admin.conf"),
            Some((
                Fake(present.then(|| super_admin.clone())),
                PathBuf::from("/etc/kubernetes/super-admin.conf"),
            )),
            move |k| sw.lock().expect("lock").push((c.mono(), k)),
        )
    };
    let (_health, health_rx) = watch::channel(true);
    let (status_tx, status) = watch::channel(Status::default());
    let shutdown = CancellationToken::new();
    let task = {
        let (fence, clock, shutdown) = (fence.clone(), clock.clone(), shutdown.clone());
        let cfg = cfg("a");
        tokio::spawn(async move {
            let _health = _health;
            tokio::select! {
                biased;
                r = run_with_clock(&store, &cfg, &*fence, &clock, health_rx, shutdown, status_tx) => r,
                () = store.probe_admin(cfg.retry_period, cfg.request_timeout()) => unreachable!("runs for ever"),
            }
        })
    };
    Setup {
        admin,
        super_admin,
        fence,
        switches,
        status,
        task,
        _shutdown: shutdown,
    }
}

#[tokio::test(start_paused = true)]
async fn leads_with_super_admin_then_switches_back_without_touching_the_fence() {
    let clock = TestClock::new(Instant::now());
    let server = MemoryServer::default();
    let mut s = start(&clock, &server, true, true);
    tokio::time::timeout(
        Duration::from_secs(60),
        s.status.wait_for(|st| st.role == Role::Leading),
    )
    .await
    .expect("leads")
    .expect("alive");
    // The first request (GET, t=0) was refused with admin and sent again
    // with super-admin at once; super-admin created the Lease at t=0.
    assert_eq!(
        s.admin.refused.lock().expect("lock").first(),
        Some(&("get", clock.at(0.0)))
    );
    assert_eq!(
        *s.switches.lock().expect("lock"),
        vec![
            (clock.at(0.0), Kubeconfig::Admin),
            (clock.at(0.0), Kubeconfig::SuperAdmin)
        ]
    );
    assert_eq!(s.super_admin.inner.requests("create"), vec![clock.at(0.0)]);
    assert_eq!(s.fence.leads()[0], (clock.at(0.0), clock.at(3.0)));
    assert_eq!(
        lease::holder(&server.lease().expect("lease")),
        Some("a"),
        "created through super-admin"
    );

    // kubeadm creates the binding at t=3.5 (through the VIP this node answers).
    tokio::time::sleep_until(Instant::now() + Duration::from_millis(3500)).await;
    s.admin.allowed.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(4)).await; // t=7.5
    // The admin probe (every retry period, 1 s, since t=0) is allowed at t=4.
    assert_eq!(
        s.switches.lock().expect("lock").last(),
        Some(&(clock.at(4.0), Kubeconfig::Admin))
    );
    // Renewals every second, none skipped, each fence deadline = its send
    // time + renew deadline; super-admin sent those before t=4, admin after.
    let leads = s.fence.leads();
    let expected: Vec<_> = (0..=7)
        .map(|k| (clock.at(k as f64), clock.at(k as f64 + 3.0)))
        .collect();
    assert_eq!(leads, expected);
    assert!(s.fence.follows().is_empty(), "never stepped down");
    let sa_renews = s.super_admin.inner.requests("replace");
    let admin_renews = s.admin.inner.requests("replace");
    assert_eq!(
        sa_renews,
        (1..=4).map(|k| clock.at(k as f64)).collect::<Vec<_>>(),
        "the renew at t=4 left before the probe's answer was handled"
    );
    assert_eq!(
        admin_renews,
        (5..=7).map(|k| clock.at(k as f64)).collect::<Vec<_>>()
    );
    assert_eq!(s.status.borrow().role, Role::Leading);
    assert!(!s.task.is_finished());
}

#[tokio::test(start_paused = true)]
async fn forbidden_without_super_admin_never_leads_naming_both_fixes() {
    let clock = TestClock::new(Instant::now());
    let server = MemoryServer::default();
    let mut s = start(&clock, &server, false, true);
    // Not fatal (retried, see gates.rs), but never leading, and explained.
    let msg = tokio::time::timeout(
        Duration::from_secs(60),
        s.status.wait_for(|st| st.forbidden >= 2),
    )
    .await
    .expect("403s")
    .expect("elector alive")
    .forbidden_message
    .clone()
    .expect("the 403 explained");
    assert!(!s.task.is_finished());
    for needle in [
        "kubeadm:cluster-admins",
        "--super-admin-kubeconfig",
        "/etc/kubernetes/super-admin.conf does not exist",
        "/etc/kubernetes/admin.conf",
    ] {
        assert!(msg.contains(needle), "{needle} missing: {msg}");
    }
    assert!(s.fence.calls().is_empty());
    assert!(server.lease().is_none());
    assert_eq!(s.switches.lock().expect("lock").len(), 1, "never switched");
}

#[tokio::test(start_paused = true)]
async fn super_admin_forbidden_too_never_leads() {
    let clock = TestClock::new(Instant::now());
    let server = MemoryServer::default();
    let mut s = start(&clock, &server, true, false);
    let msg = tokio::time::timeout(
        Duration::from_secs(60),
        s.status.wait_for(|st| st.forbidden >= 2),
    )
    .await
    .expect("403s")
    .expect("elector alive")
    .forbidden_message
    .clone()
    .expect("the 403 explained");
    assert!(!s.task.is_finished());
    assert!(msg.contains("--super-admin-kubeconfig"), "{msg}");
    assert!(s.fence.calls().is_empty());
    assert!(server.lease().is_none());
}
