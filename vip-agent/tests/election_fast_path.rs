//! The fast path (docs/peer-promises.md) end to end in one process: three
//! electors with real peer sockets on loopback, the lab's Lease API server
//! (TLS, client certificates, real CAS), and a recording fence, so the
//! invariant is checked exactly on the deadlines the data plane would get:
//! the answering intervals of different nodes never overlap. A "crash" stops
//! an elector and its peer thread and leaves its last deadline in force, as
//! the kernel fence does. No root needed.

use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use vip_agent::clock::MonoTime;
use vip_agent::election::client::{ClientOptions, build_client};
use vip_agent::election::events::EventSink;
use vip_agent::election::kube_store::KubeLeaseStore;
use vip_agent::election::{self, ElectionConfig, ElectionError, Fence, Links, Role, Status};
use vip_agent::peer::{self, Peers, Timing};
use vip_lease_server::{LeaseServer, LeaseServerHandle, LeaseServerOptions};

const NS: &str = "kube-system";
const NAME: &str = "vip-control-plane";

fn cfg(identity: &str) -> ElectionConfig {
    ElectionConfig {
        lease_duration: Duration::from_secs(3),
        renew_deadline: Duration::from_secs(2),
        retry_period: Duration::from_secs(1),
        ..ElectionConfig::new(identity)
    }
}

/// (call time, deadline) of a lead(); follow() as `None`.
type FenceCall = (MonoTime, Option<MonoTime>);

/// Every call the elector made, in order.
#[derive(Clone, Default)]
struct RecFence(Arc<Mutex<Vec<FenceCall>>>);

impl Fence for RecFence {
    async fn lead(&self, deadline: MonoTime) -> anyhow::Result<()> {
        self.0
            .lock()
            .unwrap()
            .push((MonoTime::now(), Some(deadline)));
        Ok(())
    }
    async fn follow(&self) -> anyhow::Result<()> {
        self.0.lock().unwrap().push((MonoTime::now(), None));
        Ok(())
    }
}

impl RecFence {
    /// When this node's data plane would answer: from a lead() call until
    /// the latest deadline written (a later, shorter one cuts it) or follow().
    fn intervals(&self) -> Vec<(MonoTime, MonoTime)> {
        let mut out = Vec::new();
        let mut cur: Option<(MonoTime, MonoTime)> = None;
        for (t, d) in self.0.lock().unwrap().iter().copied() {
            cur = match (d, cur) {
                (Some(d), Some((s, e))) if t < e => Some((s, d.max(t))),
                (Some(d), c) => {
                    out.extend(c);
                    (d > t).then_some((t, d))
                }
                (None, Some((s, e))) => {
                    out.push((s, e.min(t)));
                    None
                }
                (None, None) => None,
            };
        }
        out.extend(cur);
        out
    }

    fn first_lead_after(&self, t: MonoTime) -> Option<MonoTime> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .find(|(at, d)| d.is_some_and(|d| d > *at) && *at >= t)
            .map(|(at, _)| *at)
    }
}

struct Node {
    id: String,
    fence: RecFence,
    peers: Peers,
    status: watch::Receiver<Status>,
    stop: CancellationToken,
    task: Option<JoinHandle<Result<(), ElectionError>>>,
}

fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free UDP port")
        .port()
}

async fn spawn(kubeconfig: &std::path::Path, id: &str, key: Option<&[u8]>) -> Node {
    let mut opts = ClientOptions::new(id);
    opts.kubeconfig = kubeconfig.to_path_buf();
    opts.api_server = None;
    let client = build_client(&opts).await.expect("client");
    let store = KubeLeaseStore::new(client, NS, NAME);
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let peers = Peers::new(id.to_owned(), addr, Timing::DEFAULT, MonoTime::now());
    if let Some(k) = key {
        peers.set_key(peer::wire::key(k).expect("32 bytes"));
    }
    let stop = CancellationToken::new();
    peer::socket::spawn(addr, peers.clone(), stop.clone()).expect("peer socket");
    let fence = RecFence::default();
    let (status_tx, status) = watch::channel(Status::default());
    let c = cfg(id);
    let f = fence.clone();
    let links_stop = stop.clone();
    let p = peers.clone();
    let task = tokio::spawn(async move {
        let (_h, health) = watch::channel(true);
        let links = Links {
            health,
            shutdown: links_stop,
            status: status_tx,
            events: EventSink::default(),
            peers: Some(p),
        };
        election::run_with_links(&store, &c, &f, links).await
    });
    Node {
        id: id.to_owned(),
        fence,
        peers,
        status,
        stop,
        task: Some(task),
    }
}

fn leaders(nodes: &[Node]) -> Vec<usize> {
    (0..nodes.len())
        .filter(|&i| matches!(nodes[i].status.borrow().role, Role::Leading))
        .collect()
}

fn holder(server: &LeaseServerHandle) -> Option<String> {
    server
        .lease(NS, NAME)
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
        .filter(|h| !h.is_empty())
}

fn members(server: &LeaseServerHandle) -> usize {
    server
        .lease(NS, NAME)
        .as_ref()
        .and_then(peer::record::members)
        .map_or(0, |m| m.len())
}

/// Polls (every 10 ms) until `ok` or `timeout`.
async fn until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {timeout:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn assert_never_two(nodes: &[Node]) {
    let all: Vec<(String, Vec<(MonoTime, MonoTime)>)> = nodes
        .iter()
        .map(|n| (n.id.clone(), n.fence.intervals()))
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

async fn start(key: Option<&[u8]>) -> (LeaseServerHandle, Dir, Vec<Node>) {
    let server = LeaseServer::start(LeaseServerOptions::default())
        .await
        .expect("lease server");
    let dir = Dir::new();
    let kc = dir.0.join("kubeconfig");
    server.write_kubeconfig(&kc).unwrap();
    let mut nodes = Vec::new();
    for i in 0..3 {
        nodes.push(spawn(&kc, &format!("node{i}"), key).await);
    }
    (server, dir, nodes)
}

/// A crash: the elector and its peer thread stop; its last deadline stays.
/// (Aborted before the shutdown token is cancelled: no release.)
async fn crash(n: &mut Node) {
    if let Some(t) = n.task.take() {
        t.abort();
        let _ = t.await;
    }
    n.stop.cancel();
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

const KEY: &[u8; 32] = b"0123456789abcdef0123456789abcdef";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_leader_is_replaced_fast_and_never_overlapped() {
    let (server, _dir, mut nodes) = start(Some(KEY)).await;
    until(
        "one leader, three members in the record",
        Duration::from_secs(10),
        || leaders(&nodes).len() == 1 && members(&server) == 3,
    )
    .await;
    let l = leaders(&nodes)[0];
    assert_eq!(holder(&server).as_deref(), Some(nodes[l].id.as_str()));
    // Steady state: the leader's fence runs about P - eps ahead (promises),
    // far less than the renew deadline.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (at, d) = *nodes[l].fence.0.lock().unwrap().last().unwrap();
    let ahead = d.expect("leading").saturating_duration_since(at);
    assert!(
        ahead <= Duration::from_millis(100),
        "fence {ahead:?} ahead: not held by promises"
    );
    for (i, n) in nodes.iter().enumerate() {
        let s = n.peers.stats();
        let acks = s.received[1].load(std::sync::atomic::Ordering::Relaxed);
        let hbs = s.received[0].load(std::sync::atomic::Ordering::Relaxed);
        if i == l {
            assert!(acks > 10, "leader got {acks} acks");
        } else {
            assert!(hbs > 10, "{} got {hbs} heartbeats", n.id);
        }
    }

    for round in 0..2 {
        let l = leaders(&nodes)[0];
        let old = nodes[l].id.clone();
        let at = MonoTime::now();
        crash(&mut nodes[l]).await;
        until("a new leader", Duration::from_secs(2), || {
            leaders(&nodes).iter().any(|&i| i != l) && holder(&server).is_some_and(|h| h != old)
        })
        .await;
        let new = *leaders(&nodes).iter().find(|&&i| i != l).unwrap();
        let first = nodes[new].fence.first_lead_after(at).expect("answering");
        let took = first.saturating_duration_since(at);
        eprintln!(
            "round {round}: {old} crashed, {} answers {took:?} later",
            nodes[new].id
        );
        // Generous: the slow path would take the lease duration, 3 s.
        assert!(
            took < Duration::from_millis(1000),
            "fast takeover took {took:?}"
        );
        assert_never_two(&nodes);
        if round == 0 {
            // Bring the crashed node back: it says Hello and is added again.
            let kc = _dir.0.join("kubeconfig");
            nodes[l] = spawn(&kc, &old, Some(KEY)).await;
            until(
                "the restarted node listed again",
                Duration::from_secs(15),
                || members(&server) == 3,
            )
            .await;
        }
    }
    assert_never_two(&nodes);
    assert!(server.rejected().is_empty(), "{:?}", server.rejected());
    stop_all(nodes).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_key_the_slow_path_works_and_nothing_is_sent() {
    let (server, _dir, mut nodes) = start(None).await;
    until("one leader", Duration::from_secs(10), || {
        leaders(&nodes).len() == 1
    })
    .await;
    let l = leaders(&nodes)[0];
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(members(&server), 1, "only the holder is listed");
    let (at, d) = *nodes[l].fence.0.lock().unwrap().last().unwrap();
    assert!(
        d.expect("leading").saturating_duration_since(at) > Duration::from_millis(500),
        "without members the fence is the renew deadline's"
    );
    let old = nodes[l].id.clone();
    let crashed_at = MonoTime::now();
    crash(&mut nodes[l]).await;
    until(
        "a new leader by the slow path",
        Duration::from_secs(6),
        || holder(&server).is_some_and(|h| h != old),
    )
    .await;
    let new = nodes
        .iter()
        .position(|n| n.id == holder(&server).unwrap())
        .unwrap();
    until("it answers", Duration::from_secs(1), || {
        nodes[new].fence.first_lead_after(crashed_at).is_some()
    })
    .await;
    let took = nodes[new]
        .fence
        .first_lead_after(crashed_at)
        .unwrap()
        .saturating_duration_since(crashed_at);
    eprintln!("no key: {old} crashed, slow takeover after {took:?}");
    assert!(
        took > Duration::from_millis(1500),
        "{took:?}: not the slow path"
    );
    for n in &nodes {
        let s = n.peers.stats();
        for k in 0..3 {
            assert_eq!(s.sent[k].load(std::sync::atomic::Ordering::Relaxed), 0);
        }
    }
    assert_never_two(&nodes);
    stop_all(nodes).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_replayed_and_garbage_datagrams_are_counted_and_change_nothing() {
    let (server, _dir, nodes) = start(Some(KEY)).await;
    until("one leader, three members", Duration::from_secs(10), || {
        leaders(&nodes).len() == 1 && members(&server) == 3
    })
    .await;
    let l = leaders(&nodes)[0];
    let m = (l + 1) % 3;
    let to = nodes[m].peers.my_addr();
    let holder_before = holder(&server);
    let transitions = |s: &LeaseServerHandle| {
        s.lease(NS, NAME)
            .and_then(|l| l.spec)
            .and_then(|s| s.lease_transitions)
    };
    let before = transitions(&server);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    // A heartbeat claiming to be the leader's, under another key.
    let forged = peer::wire::Message {
        seq: u64::MAX,
        sender: nodes[l].id.clone(),
        body: peer::wire::Body::Heartbeat {
            holder: nodes[l].id.clone(),
            resource_version: "1".into(),
            t_n: 1,
        },
    };
    let other = peer::wire::key(&[7u8; 32]).unwrap();
    sock.send_to(&forged.encode(&other), to).unwrap();
    // Garbage.
    sock.send_to(b"VIPP\x01\x01garbage", to).unwrap();
    // A replay: a valid, old message (sequence number 1) under the real key.
    let old = peer::wire::Message {
        seq: 1,
        ..forged.clone()
    };
    sock.send_to(&old.encode(&peer::wire::key(KEY).unwrap()), to)
        .unwrap();
    let s = nodes[m].peers.stats();
    let r = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    until("all three counted", Duration::from_secs(2), || {
        r(&s.rejected_mac) >= 1 && r(&s.rejected_malformed) >= 1 && r(&s.rejected_replay) >= 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(holder(&server), holder_before);
    assert_eq!(transitions(&server), before);
    assert_never_two(&nodes);
    stop_all(nodes).await;
    server.shutdown().await;
}

struct Dir(std::path::PathBuf);

impl Dir {
    fn new() -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "vip-fast-path-{}-{}",
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
