//! Leader election through the real kube client, TLS and client certificates,
//! against the lab's Lease API server (which rejects anything a real API
//! server would). In-process electors with a recording fence, so the
//! invariant is checked exactly: the answering intervals (lead() .. min(deadline,
//! follow())) of different nodes never overlap. Loopback only; no root needed.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use vip_agent::clock::MonoTime;
use vip_agent::election::client::{ClientOptions, build_client};
use vip_agent::election::kube_store::KubeLeaseStore;
use vip_agent::election::{self, Clock, ElectionConfig, ElectionError, Fence, Role, Status};
use vip_lease_server::{LeaseServer, LeaseServerHandle, LeaseServerOptions, PartitionMode, Target};

const NS: &str = "kube-system";
const NAME: &str = "vip-control-plane";

fn cfg(identity: &str) -> ElectionConfig {
    ElectionConfig {
        lease_duration: Duration::from_millis(1000),
        renew_deadline: Duration::from_millis(600),
        retry_period: Duration::from_millis(200),
        ..ElectionConfig::new(identity)
    }
}

#[derive(Default)]
struct Rec {
    /// (call time, deadline) of every lead(), and every follow() time.
    events: Vec<(MonoTime, Option<MonoTime>)>,
}

#[derive(Clone, Default)]
struct RecFence(Arc<Mutex<Rec>>);

impl Fence for RecFence {
    async fn lead(&self, deadline: MonoTime) -> anyhow::Result<()> {
        self.0
            .lock()
            .unwrap()
            .events
            .push((MonoTime::now(), Some(deadline)));
        Ok(())
    }
    async fn follow(&self) -> anyhow::Result<()> {
        self.0.lock().unwrap().events.push((MonoTime::now(), None));
        Ok(())
    }
}

impl RecFence {
    /// Intervals during which this node's data plane would answer.
    fn intervals(&self, now: MonoTime) -> Vec<(MonoTime, MonoTime)> {
        let mut out = Vec::new();
        let mut cur: Option<(MonoTime, MonoTime)> = None;
        for (t, d) in self.0.lock().unwrap().events.iter().copied() {
            match (d, cur) {
                (Some(d), None) => cur = Some((t, d)),
                (Some(d), Some((s, e))) if t < e => cur = Some((s, e.max(d))),
                (Some(d), Some(c)) => {
                    out.push(c);
                    cur = Some((t, d));
                }
                (None, Some((s, e))) => {
                    out.push((s, e.min(t)));
                    cur = None;
                }
                (None, None) => {}
            }
        }
        if let Some((s, e)) = cur {
            out.push((s, e.min(now.max(s))));
        }
        out
    }
}

/// A wall clock far off from everybody else's (the monotonic clock is real).
struct SkewedClock(SignedDuration);
impl Clock for SkewedClock {
    fn mono(&self) -> MonoTime {
        MonoTime::now()
    }
    fn wall(&self) -> Timestamp {
        Timestamp::now().checked_add(self.0).unwrap()
    }
}

struct Node {
    id: String,
    fence: RecFence,
    status: watch::Receiver<Status>,
    stop: CancellationToken,
    task: Option<JoinHandle<Result<(), ElectionError>>>,
}

async fn spawn(kubeconfig: &std::path::Path, id: &str, skew: Option<SignedDuration>) -> Node {
    let mut opts = ClientOptions::new(id);
    opts.kubeconfig = kubeconfig.to_path_buf();
    opts.api_server = None;
    let client = build_client(&opts)
        .await
        .expect("client from the lab kubeconfig");
    let store = KubeLeaseStore::new(client, NS, NAME);
    let fence = RecFence::default();
    let (status_tx, status) = watch::channel(Status::default());
    let stop = CancellationToken::new();
    let c = cfg(id);
    let f = fence.clone();
    let s = stop.clone();
    let task = tokio::spawn(async move {
        let (_h, health) = watch::channel(true);
        let _keep = _h;
        match skew {
            Some(k) => {
                election::run_with_clock(&store, &c, &f, &SkewedClock(k), health, s, status_tx)
                    .await
            }
            None => election::run(&store, &c, &f, health, s, status_tx).await,
        }
    });
    Node {
        id: id.to_owned(),
        fence,
        status,
        stop,
        task: Some(task),
    }
}

fn leaders(nodes: &[Node]) -> Vec<String> {
    nodes
        .iter()
        .filter(|n| matches!(n.status.borrow().role, Role::Leading))
        .map(|n| n.id.clone())
        .collect()
}

/// No two nodes' answering intervals overlap.
fn assert_never_two(nodes: &[Node]) {
    let now = MonoTime::now();
    let all: Vec<(String, Vec<(MonoTime, MonoTime)>)> = nodes
        .iter()
        .map(|n| (n.id.clone(), n.fence.intervals(now)))
        .collect();
    for (i, (a, ia)) in all.iter().enumerate() {
        for (b, ib) in &all[i + 1..] {
            for x in ia {
                for y in ib {
                    assert!(
                        x.1 <= y.0 || y.1 <= x.0,
                        "{a} answered {:?}..{:?} while {b} answered {:?}..{:?}",
                        x.0,
                        x.1,
                        y.0,
                        y.1
                    );
                }
            }
        }
    }
}

async fn holder(server: &LeaseServerHandle) -> Option<String> {
    server
        .lease(NS, NAME)
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
        .filter(|h| !h.is_empty())
}

/// Waits until exactly one node leads and the Lease names it.
async fn one_leader(server: &LeaseServerHandle, nodes: &mut [Node], timeout: Duration) -> usize {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let l = leaders(nodes);
        if l.len() == 1 && holder(server).await.as_deref() == Some(l[0].as_str()) {
            return nodes.iter().position(|n| n.id == l[0]).unwrap();
        }
        assert!(l.len() <= 1, "two leaders at once: {l:?}");
        let waits: Vec<_> = nodes
            .iter_mut()
            .map(|n| Box::pin(n.status.changed()))
            .collect();
        if tokio::time::timeout_at(deadline, futures::future::select_all(waits))
            .await
            .is_err()
        {
            panic!(
                "no single leader within {timeout:?}: leaders {:?}, holder {:?}",
                leaders(nodes),
                holder(server).await
            );
        }
    }
}

async fn start(n: usize) -> (LeaseServerHandle, tempdir::Dir, Vec<Node>) {
    let server = LeaseServer::start(LeaseServerOptions::default())
        .await
        .expect("lease server");
    let dir = tempdir::Dir::new();
    let kc = dir.0.join("kubeconfig");
    server.write_kubeconfig(&kc).unwrap();
    let mut nodes = Vec::new();
    for i in 0..n {
        nodes.push(spawn(&kc, &format!("node{i}"), None).await);
    }
    (server, dir, nodes)
}

mod tempdir {
    pub struct Dir(pub std::path::PathBuf);
    impl Dir {
        pub fn new() -> Self {
            use std::sync::atomic::{AtomicU32, Ordering};
            static N: AtomicU32 = AtomicU32::new(0);
            let p = std::env::temp_dir().join(format!(
                "vip-election-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&p).unwrap();
            Self(p)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

async fn stop_all(nodes: Vec<Node>) {
    for n in &nodes {
        n.stop.cancel();
    }
    for mut n in nodes {
        if let Some(t) = n.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
    }
}

async fn graceful_and_crash(n: usize) {
    let (server, _dir, mut nodes) = start(n).await;
    let first = one_leader(&server, &mut nodes, Duration::from_secs(5)).await;
    assert!(
        server.rejected().is_empty(),
        "requests a real API server would reject: {:?}",
        server.rejected()
    );

    // Graceful stop: released, taken over at once by a watcher.
    let stopped_at = MonoTime::now();
    let gone = nodes.remove(first);
    gone.stop.cancel();
    let mut gone = gone;
    gone.task.take().unwrap().await.unwrap().unwrap();
    let second = one_leader(&server, &mut nodes, Duration::from_secs(3)).await;
    let takeover = nodes[second].fence.0.lock().unwrap().events[0]
        .0
        .saturating_duration_since(stopped_at);
    eprintln!("{n} electors: graceful takeover {takeover:?} after stop was requested");
    assert!(
        takeover < Duration::from_millis(500),
        "graceful takeover took {takeover:?}"
    );
    let mut all = vec![gone];

    // Crash (the task is dropped: no release): takeover after lease expiry.
    let crashed = nodes.remove(second);
    let crashed_at = MonoTime::now();
    crashed.task.as_ref().unwrap().abort();
    let third = one_leader(&server, &mut nodes, Duration::from_secs(5)).await;
    let events = nodes[third].fence.0.lock().unwrap().events.clone();
    let took = events
        .iter()
        .find(|(t, d)| d.is_some() && *t >= crashed_at)
        .unwrap()
        .0
        .saturating_duration_since(crashed_at);
    eprintln!("{n} electors: crash takeover {took:?} (lease 1s, retry 200ms)");
    assert!(
        took <= Duration::from_millis(1000 + 200 + 500),
        "crash takeover took {took:?}"
    );
    all.push(crashed);
    all.extend(nodes);
    assert_never_two(&all);
    assert!(server.rejected().is_empty(), "{:?}", server.rejected());
    stop_all(all).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_electors_one_leader_graceful_and_crash_takeover() {
    graceful_and_crash(3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_electors_one_leader_graceful_and_crash_takeover() {
    graceful_and_crash(5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_leader_falls_silent_before_anyone_acquires() {
    let (server, _dir, mut nodes) = start(3).await;
    for mode in [PartitionMode::Refuse, PartitionMode::Hang] {
        let l = one_leader(&server, &mut nodes, Duration::from_secs(5)).await;
        let id = nodes[l].id.clone();
        server.partition_with(Target::Identity(id.clone()), mode);
        // Someone else takes over; the cut-off leader stepped down by itself.
        let taken = server
            .wait_for_lease(NS, NAME, Duration::from_secs(5), |l| {
                l.and_then(|l| l.spec.as_ref())
                    .and_then(|s| s.holder_identity.as_deref())
                    .is_some_and(|h| !h.is_empty() && h != id)
            })
            .await;
        assert!(taken.is_some(), "nobody took over from partitioned {id}");
        server.heal();
        assert_never_two(&nodes);
    }
    assert!(server.rejected().is_empty(), "{:?}", server.rejected());
    stop_all(nodes).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_server_restart_and_error_storm_keep_one_leader() {
    let (server, _dir, mut nodes) = start(5).await;
    one_leader(&server, &mut nodes, Duration::from_secs(5)).await;
    server.restart().await;
    one_leader(&server, &mut nodes, Duration::from_secs(5)).await;
    // Conflict/error storm: latency, dropped answers after commit, 5xx.
    server.update_faults(|f| {
        f.latency = Duration::from_millis(30);
        f.drop_probability = 0.2;
        f.drop_after_commit = true;
        f.error_probability = 0.2;
        f.error_code = 500;
    });
    let storm_end = tokio::time::Instant::now() + Duration::from_secs(6);
    while tokio::time::Instant::now() < storm_end {
        let l = leaders(&nodes);
        assert!(l.len() <= 1, "two leaders believed at once: {l:?}");
        let waits: Vec<_> = nodes
            .iter_mut()
            .map(|n| Box::pin(n.status.changed()))
            .collect();
        let _ = tokio::time::timeout_at(storm_end, futures::future::select_all(waits)).await;
    }
    server.heal();
    server.set_faults(Default::default());
    one_leader(&server, &mut nodes, Duration::from_secs(5)).await;
    assert_never_two(&nodes);
    let counts: BTreeMap<_, _> = server.counters().into_iter().collect();
    eprintln!("requests per identity during the storm test: {counts:?}");
    assert!(server.rejected().is_empty(), "{:?}", server.rejected());
    stop_all(nodes).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wall_clock_far_off_changes_nothing() {
    let server = LeaseServer::start(LeaseServerOptions::default())
        .await
        .unwrap();
    let dir = tempdir::Dir::new();
    let kc = dir.0.join("kubeconfig");
    server.write_kubeconfig(&kc).unwrap();
    // The leader's wall clock is a year ahead: its renewTime says the lease is
    // valid for a year. Followers must still take over one lease duration after
    // they last saw a change.
    let mut nodes = vec![spawn(&kc, "skewed", Some(SignedDuration::from_hours(24 * 365))).await];
    one_leader(&server, &mut nodes, Duration::from_secs(5)).await;
    nodes.push(spawn(&kc, "normal1", None).await);
    nodes.push(spawn(&kc, "normal2", Some(SignedDuration::from_hours(-24 * 365))).await);
    let skewed = nodes.remove(0);
    let crashed_at = MonoTime::now();
    skewed.task.as_ref().unwrap().abort();
    let l = one_leader(&server, &mut nodes, Duration::from_secs(5)).await;
    let took = nodes[l].fence.0.lock().unwrap().events[0]
        .0
        .saturating_duration_since(crashed_at);
    eprintln!("takeover from a leader with a wall clock a year ahead: {took:?}");
    assert!(took <= Duration::from_millis(1700), "{took:?}");
    nodes.push(skewed);
    assert_never_two(&nodes);
    stop_all(nodes).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rbac_forbidden_never_leads_and_leads_once_allowed() {
    let server = LeaseServer::start(LeaseServerOptions::default())
        .await
        .unwrap();
    let dir = tempdir::Dir::new();
    let kc = dir.0.join("kubeconfig");
    server.write_kubeconfig(&kc).unwrap();
    server.forbid("denied");
    let mut n = spawn(&kc, "denied", None).await;
    // Every request answered 403: it keeps trying (not fatal), never answers.
    tokio::time::timeout(
        Duration::from_secs(10),
        n.status.wait_for(|s| s.forbidden >= 2),
    )
    .await
    .expect("403s within 10 s")
    .expect("elector alive");
    assert!(
        !n.task.as_ref().expect("task").is_finished(),
        "a 403 must not stop the elector"
    );
    assert!(
        n.fence.intervals(MonoTime::now()).is_empty(),
        "a forbidden node must never answer"
    );
    assert_eq!(holder(&server).await, None);
    // The RBAC rule arrives: it leads without a restart.
    server.heal();
    tokio::time::timeout(
        Duration::from_secs(10),
        n.status.wait_for(|s| s.role == Role::Leading),
    )
    .await
    .expect("leads within 10 s of being allowed")
    .expect("elector alive");
    assert_eq!(holder(&server).await.as_deref(), Some("denied"));
    n.stop.cancel();
    server.shutdown().await;
}
