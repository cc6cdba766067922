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

use super::events::EventSink;
use super::memory::{MemoryClient, MemoryServer, Mode};
use super::*;
use crate::clock::MonoTime;

mod acquire;
mod config;
mod events;
mod fallback;
mod follower;
mod gates;
mod renew;
mod stop;
mod storm;

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
    spawn_node_with_events(
        identity,
        clock,
        client,
        fence,
        healthy,
        EventSink::default(),
    )
}

fn spawn_node_with_events(
    identity: &str,
    clock: &TestClock,
    client: MemoryClient,
    fence: Arc<RecFence>,
    healthy: bool,
    events: EventSink,
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
            let links = elector::Links {
                health: health_rx,
                shutdown,
                status: status_tx,
                events,
                peers: None,
            };
            elector::run_linked(&client, &cfg, &*fence, &clock, links).await
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
