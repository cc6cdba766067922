//! An embedded `coordination.k8s.io/v1` Lease API server for the lab and the tests.
//!
//! It speaks the subset of the Kubernetes API that a kube-rs `Api<Lease>` uses (GET, LIST,
//! WATCH, POST, PUT, DELETE and JSON merge PATCH) over HTTPS with client-certificate
//! authentication, with the real server's semantics: one global resourceVersion, optimistic
//! concurrency, `metav1.Status` errors, watch with bookmarks and 410 Gone for compacted
//! history. Faults (latency, dropped answers, 5xx, partitions, 403, restarts) are injected
//! through [`LeaseServerHandle`] or the plain-HTTP control listener (see [`control`]).
//!
//! ```no_run
//! # async fn demo() -> Result<(), vip_lease_server::Error> {
//! use vip_lease_server::{LeaseServer, LeaseServerOptions, Target};
//! let server = LeaseServer::start(LeaseServerOptions::default()).await?;
//! server.write_kubeconfig(std::path::Path::new("/tmp/kubeconfig"))?;
//! server.partition(Target::Identity("node-a".into()));
//! server.heal();
//! server.shutdown().await;
//! # Ok(()) }
//! ```

pub mod control;
mod faults;
mod http;
mod kubeconfig;
mod status;
mod store;
mod tls;
mod validate;

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::coordination::v1::Lease;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use faults::{Faults, Partition, PartitionMode, Target, identity_from_user_agent};
pub use kubeconfig::{ClientCert, kubeconfig_yaml, kubeconfig_yaml_for};
pub use store::{EventType, StoreEvent};
pub use tls::{ADMIN_USER, CertSpec, Pki};

/// Errors of the lease server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Binding or I/O.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// Certificate generation.
    #[error("certificate generation: {0}")]
    Cert(#[from] rcgen::Error),
    /// rustls configuration.
    #[error("TLS configuration: {0}")]
    Tls(String),
    /// Serializing the kubeconfig.
    #[error("kubeconfig: {0}")]
    Yaml(#[from] serde_saphyr::SerializeError),
}

impl From<rustls::Error> for Error {
    fn from(e: rustls::Error) -> Self {
        Error::Tls(e.to_string())
    }
}

/// How to start a [`LeaseServer`].
#[derive(Clone, Debug)]
pub struct LeaseServerOptions {
    /// Where to listen (port 0 picks a free port).
    pub listen: SocketAddr,
    /// The address written into the kubeconfig and the certificate; defaults to the listen
    /// IP, or 127.0.0.1 when that is unspecified.
    pub advertise: Option<IpAddr>,
    /// More subject alternative names for the server certificate (IPs or DNS names).
    pub extra_sans: Vec<String>,
    /// Interval of BOOKMARK events on watches that allow them (the real server: ~1 min).
    pub bookmark_interval: Duration,
    /// How many events the history keeps for watches resuming from a resourceVersion.
    pub history_limit: usize,
    /// How many entries the request log and the rejected-request log keep.
    pub log_limit: usize,
    /// Also serve the plain-HTTP control API here (see [`control`]).
    pub control: Option<SocketAddr>,
    /// Namespace of the kubeconfig context.
    pub namespace: String,
}

impl Default for LeaseServerOptions {
    fn default() -> Self {
        Self {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            advertise: None,
            extra_sans: Vec::new(),
            bookmark_interval: Duration::from_secs(1),
            history_limit: 1000,
            log_limit: 10_000,
            control: None,
            namespace: "kube-system".to_owned(),
        }
    }
}

/// The API verb of a request, as RBAC names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verb {
    /// GET of one Lease.
    Get,
    /// GET of the collection.
    List,
    /// GET of the collection with `watch=true`.
    Watch,
    /// POST.
    Create,
    /// PUT.
    Update,
    /// PATCH.
    Patch,
    /// DELETE.
    Delete,
    /// Anything else (discovery, health, unknown paths, unsupported methods).
    Other,
}

impl Verb {
    /// The RBAC verb name.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Watch => "watch",
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Patch => "patch",
            Verb::Delete => "delete",
            Verb::Other => "other",
        }
    }
}

/// Requests of one identity, by verb.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerbCounts {
    /// GET of one Lease.
    pub get: u64,
    /// LIST.
    pub list: u64,
    /// WATCH.
    pub watch: u64,
    /// POST.
    pub create: u64,
    /// PUT.
    pub update: u64,
    /// PATCH.
    pub patch: u64,
    /// DELETE.
    pub delete: u64,
    /// Anything else.
    pub other: u64,
}

impl VerbCounts {
    /// All requests.
    pub fn total(&self) -> u64 {
        self.get
            + self.list
            + self.watch
            + self.create
            + self.update
            + self.patch
            + self.delete
            + self.other
    }

    /// Lease API requests (everything but `other`).
    pub fn api_total(&self) -> u64 {
        self.total() - self.other
    }

    fn bump(&mut self, verb: Verb) {
        let slot = match verb {
            Verb::Get => &mut self.get,
            Verb::List => &mut self.list,
            Verb::Watch => &mut self.watch,
            Verb::Create => &mut self.create,
            Verb::Update => &mut self.update,
            Verb::Patch => &mut self.patch,
            Verb::Delete => &mut self.delete,
            Verb::Other => &mut self.other,
        };
        *slot += 1;
    }
}

/// One answered (or dropped) request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// Milliseconds since the server started, when the request arrived.
    pub at_ms: f64,
    /// How long until the answer (headers for a watch) was ready, in milliseconds.
    pub duration_ms: f64,
    /// Identity from the User-Agent, if any.
    pub identity: Option<String>,
    /// Peer address.
    pub peer: SocketAddr,
    /// HTTP method.
    pub method: String,
    /// Path and query.
    pub uri: String,
    /// The API verb.
    pub verb: Verb,
    /// Status code answered; 0 when the connection was closed without an answer.
    pub status: u16,
}

/// A request the server refused because the request itself was wrong (a real server would
/// refuse it too): bad path, method, media type, body, or resourceVersion rules.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RejectedRequest {
    /// Identity from the User-Agent, if any.
    pub identity: Option<String>,
    /// HTTP method.
    pub method: String,
    /// Path and query.
    pub uri: String,
    /// Status code.
    pub code: u16,
    /// Status reason.
    pub reason: String,
    /// Status message.
    pub message: String,
}

/// A request the real server accepts with a `Warning` header (unknown fields).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WarningRecord {
    /// Identity from the User-Agent, if any.
    pub identity: Option<String>,
    /// Path and query.
    pub uri: String,
    /// The warning text.
    pub warning: String,
}

/// State shared by the listener, the connections and the handles.
pub(crate) struct Shared {
    opts: LeaseServerOptions,
    addr: SocketAddr,
    advertise: IpAddr,
    pki: Pki,
    started: Instant,
    store: Mutex<store::Store>,
    faults: watch::Sender<Faults>,
    counters: Mutex<BTreeMap<String, VerbCounts>>,
    log: Mutex<VecDeque<RequestRecord>>,
    rejected: Mutex<VecDeque<RejectedRequest>>,
    warnings: Mutex<VecDeque<WarningRecord>>,
    /// Cancelled by a restart (then replaced) and by shutdown: every connection holds a child.
    generation: Mutex<CancellationToken>,
    /// While set and in the future, new connections are closed at once (restart downtime).
    down_until: Mutex<Option<Instant>>,
    shutdown: CancellationToken,
}

/// Locks a std mutex; a poisoned lock only means a panicking test thread, keep going.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn push_bounded<T>(q: &mut VecDeque<T>, item: T, limit: usize) {
    q.push_back(item);
    while q.len() > limit.max(1) {
        q.pop_front();
    }
}

impl Shared {
    fn generation(&self) -> CancellationToken {
        lock(&self.generation).clone()
    }

    fn count(&self, identity: Option<&str>, verb: Verb) {
        lock(&self.counters)
            .entry(identity.unwrap_or_default().to_owned())
            .or_default()
            .bump(verb);
    }

    fn record(&self, r: RequestRecord) {
        push_bounded(&mut lock(&self.log), r, self.opts.log_limit);
    }

    fn record_rejected(&self, r: RejectedRequest) {
        tracing::warn!(identity = ?r.identity, method = %r.method, uri = %r.uri, code = r.code,
            reason = %r.reason, message = %r.message, "rejected request");
        push_bounded(&mut lock(&self.rejected), r, self.opts.log_limit);
    }

    fn record_warning(&self, w: WarningRecord) {
        tracing::warn!(identity = ?w.identity, uri = %w.uri, warning = %w.warning, "request warning");
        push_bounded(&mut lock(&self.warnings), w, self.opts.log_limit);
    }

    fn elapsed_ms(&self, at: Instant) -> f64 {
        at.duration_since(self.started).as_secs_f64() * 1000.0
    }
}

/// Entry point: [`LeaseServer::start`].
pub struct LeaseServer;

impl LeaseServer {
    /// Generates the PKI, binds the listener(s) and starts serving.
    pub async fn start(opts: LeaseServerOptions) -> Result<LeaseServerHandle, Error> {
        let listener = TcpListener::bind(opts.listen).await?;
        Self::start_on(opts, listener).await
    }

    /// Like [`start`](Self::start) on a listener the caller bound (e.g. inside a network
    /// namespace); `opts.listen` is ignored. The listener is made non-blocking here.
    pub async fn start_with_listener(
        opts: LeaseServerOptions,
        listener: std::net::TcpListener,
    ) -> Result<LeaseServerHandle, Error> {
        listener.set_nonblocking(true)?;
        Self::start_on(opts, TcpListener::from_std(listener)?).await
    }

    async fn start_on(
        opts: LeaseServerOptions,
        listener: TcpListener,
    ) -> Result<LeaseServerHandle, Error> {
        let addr = listener.local_addr()?;
        let advertise = opts.advertise.unwrap_or(if addr.ip().is_unspecified() {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            addr.ip()
        });
        let pki = Pki::generate(&[advertise, addr.ip()], &opts.extra_sans)?;
        let tls = tokio_rustls::TlsAcceptor::from(pki.server_config()?);
        let shutdown = CancellationToken::new();
        let control_listener = match opts.control {
            Some(a) => Some(TcpListener::bind(a).await?),
            None => None,
        };
        let control_addr = match &control_listener {
            Some(l) => Some(l.local_addr()?),
            None => None,
        };
        let shared = Arc::new(Shared {
            store: Mutex::new(store::Store::new(opts.history_limit)),
            opts,
            addr,
            advertise,
            pki,
            started: Instant::now(),
            faults: watch::Sender::new(Faults::default()),
            counters: Mutex::default(),
            log: Mutex::default(),
            rejected: Mutex::default(),
            warnings: Mutex::default(),
            generation: Mutex::new(shutdown.child_token()),
            down_until: Mutex::new(None),
            shutdown,
        });
        let mut tasks = vec![tokio::spawn(http::accept_loop(
            shared.clone(),
            listener,
            tls,
        ))];
        let handle_for_control = LeaseServerHandle {
            shared: shared.clone(),
            control_addr,
            tasks: Arc::new(Mutex::new(Vec::new())),
        };
        if let Some(l) = control_listener {
            tasks.push(tokio::spawn(control::serve(handle_for_control, l)));
        }
        tracing::info!(%addr, ?control_addr, "lease server listening");
        Ok(LeaseServerHandle {
            shared,
            control_addr,
            tasks: Arc::new(Mutex::new(tasks)),
        })
    }
}

/// A handle on a running server. Cheap to clone; usable from any task.
#[derive(Clone)]
pub struct LeaseServerHandle {
    shared: Arc<Shared>,
    control_addr: Option<SocketAddr>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl std::fmt::Debug for LeaseServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseServerHandle")
            .field("addr", &self.shared.addr)
            .field("control_addr", &self.control_addr)
            .finish()
    }
}

impl LeaseServerHandle {
    /// The address the HTTPS listener is bound to.
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// The server URL clients use (`https://<advertise>:<port>`).
    pub fn url(&self) -> String {
        format!(
            "https://{}",
            SocketAddr::new(self.shared.advertise, self.shared.addr.port())
        )
    }

    /// The address of the plain-HTTP control API, if started.
    pub fn control_addr(&self) -> Option<SocketAddr> {
        self.control_addr
    }

    /// The generated PKI (CA, client certificate and key).
    pub fn pki(&self) -> &Pki {
        &self.shared.pki
    }

    /// The kubeconfig YAML.
    pub fn kubeconfig_yaml(&self) -> Result<String, Error> {
        kubeconfig::kubeconfig_yaml(&self.url(), &self.shared.opts.namespace, &self.shared.pki)
    }

    /// Writes the kubeconfig (mode 0600).
    pub fn write_kubeconfig(&self, path: &Path) -> Result<(), Error> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let yaml = self.kubeconfig_yaml()?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)?;
        f.write_all(yaml.as_bytes())?;
        Ok(())
    }

    /// The faults in force.
    pub fn faults(&self) -> Faults {
        self.shared.faults.borrow().clone()
    }

    /// Replaces the faults in force.
    pub fn set_faults(&self, faults: Faults) {
        tracing::info!(?faults, "faults set");
        self.shared.faults.send_replace(faults);
    }

    /// Changes the faults in force.
    pub fn update_faults(&self, f: impl FnOnce(&mut Faults)) {
        self.shared.faults.send_modify(f);
        tracing::info!(faults = ?*self.shared.faults.borrow(), "faults updated");
    }

    /// Partitions `target` (requests hang until healed).
    pub fn partition(&self, target: Target) {
        self.partition_with(target, PartitionMode::Hang);
    }

    /// Partitions `target` with the given mode.
    pub fn partition_with(&self, target: Target, mode: PartitionMode) {
        self.update_faults(|f| {
            f.partitions.retain(|p| p.target != target);
            f.partitions.push(Partition { target, mode });
        });
    }

    /// Makes every Lease request of `identity` answer 403 Forbidden.
    pub fn forbid(&self, identity: &str) {
        self.update_faults(|f| f.forbidden.push(identity.to_owned()));
    }

    /// Makes the health endpoints (`/readyz`, `/livez`, `/healthz`) answer 500 for `identity`.
    pub fn fail_health(&self, identity: &str) {
        self.update_faults(|f| {
            if !f.unhealthy.iter().any(|u| u == identity) {
                f.unhealthy.push(identity.to_owned());
            }
        });
    }

    /// Undoes [`fail_health`](Self::fail_health) for `identity`.
    pub fn restore_health(&self, identity: &str) {
        self.update_faults(|f| f.unhealthy.retain(|u| u != identity));
    }

    /// Removes every fault (held requests proceed as their partition mode says).
    pub fn heal(&self) {
        self.set_faults(Faults::default());
    }

    /// Simulates an API server restart: every connection (and so every watch and every held
    /// request) is dropped without an answer; the stored Leases are kept, the event history
    /// is not (as kube-apiserver's watch cache, which starts afresh at the current
    /// resourceVersion): a watch from an older resourceVersion gets 410 Gone.
    pub async fn restart(&self) {
        self.restart_with_downtime(Duration::ZERO).await;
    }

    /// Like [`restart`](Self::restart), and for `downtime` new connections are closed at once.
    pub async fn restart_with_downtime(&self, downtime: Duration) {
        let s = &self.shared;
        *lock(&s.down_until) = (!downtime.is_zero()).then(|| Instant::now() + downtime);
        lock(&s.store).compact();
        let old = std::mem::replace(&mut *lock(&s.generation), s.shutdown.child_token());
        old.cancel();
        tracing::info!(?downtime, "lease server restarted");
        // Let the connection tasks observe the cancellation.
        tokio::task::yield_now().await;
    }

    /// Drops the event history: a watch from any resourceVersion older than the current one
    /// gets 410 Gone.
    pub fn compact(&self) {
        lock(&self.shared.store).compact();
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        lock(&self.shared.store).rv()
    }

    /// A stored Lease.
    pub fn lease(&self, namespace: &str, name: &str) -> Option<Lease> {
        lock(&self.shared.store).get(namespace, name).cloned()
    }

    /// All stored Leases.
    pub fn leases(&self) -> Vec<Lease> {
        lock(&self.shared.store).list(None).cloned().collect()
    }

    /// Creates or replaces a Lease directly (no validation, no resourceVersion check), as an
    /// out-of-band writer would; watches see the change. `metadata.namespace` and
    /// `metadata.name` must be set.
    pub fn upsert_lease(&self, mut lease: Lease) -> Lease {
        let mut store = lock(&self.shared.store);
        let ns = lease.metadata.namespace.clone().unwrap_or_default();
        let name = lease.metadata.name.clone().unwrap_or_default();
        let kind = match store.get(&ns, &name) {
            Some(old) => {
                lease.metadata.uid = old.metadata.uid.clone();
                lease.metadata.creation_timestamp = old.metadata.creation_timestamp.clone();
                EventType::Modified
            }
            None => {
                http::init_new_meta(&mut lease);
                EventType::Added
            }
        };
        store.commit(lease, kind)
    }

    /// Deletes a Lease directly; returns whether it existed.
    pub fn remove_lease(&self, namespace: &str, name: &str) -> bool {
        let mut store = lock(&self.shared.store);
        match store.get(namespace, name).cloned() {
            Some(old) => {
                store.commit(old, EventType::Deleted);
                true
            }
            None => false,
        }
    }

    /// A receiver of every committed change from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<StoreEvent>> {
        lock(&self.shared.store).subscribe()
    }

    /// Waits until the Lease satisfies `pred` (checked now and after every change), up to
    /// `timeout`. Returns the Lease as it was when `pred` held, or `None` on timeout.
    pub async fn wait_for_lease(
        &self,
        namespace: &str,
        name: &str,
        timeout: Duration,
        pred: impl Fn(Option<&Lease>) -> bool,
    ) -> Option<Option<Lease>> {
        let mut rx = {
            let store = lock(&self.shared.store);
            let cur = store.get(namespace, name);
            if pred(cur) {
                return Some(cur.cloned());
            }
            store.subscribe()
        };
        let wait = async {
            loop {
                match rx.recv().await {
                    Ok(ev) if ev.namespace == namespace && ev.name == name => {
                        let cur = (ev.kind != EventType::Deleted).then_some(&ev.object);
                        if pred(cur) {
                            return Some(cur.cloned());
                        }
                    }
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        let cur = self.lease(namespace, name);
                        if pred(cur.as_ref()) {
                            return Some(cur);
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.ok().flatten()
    }

    /// Requests per identity (key `""` = requests without an identity) by verb.
    pub fn counters(&self) -> BTreeMap<String, VerbCounts> {
        lock(&self.shared.counters).clone()
    }

    /// Counters of one identity.
    pub fn counters_for(&self, identity: &str) -> VerbCounts {
        lock(&self.shared.counters)
            .get(identity)
            .copied()
            .unwrap_or_default()
    }

    /// Resets the counters.
    pub fn reset_counters(&self) {
        lock(&self.shared.counters).clear();
    }

    /// Requests refused because they were wrong (bounded log, oldest first).
    pub fn rejected(&self) -> Vec<RejectedRequest> {
        lock(&self.shared.rejected).iter().cloned().collect()
    }

    /// Requests accepted with a warning (unknown fields).
    pub fn warnings(&self) -> Vec<WarningRecord> {
        lock(&self.shared.warnings).iter().cloned().collect()
    }

    /// The request log (bounded, oldest first).
    pub fn requests(&self) -> Vec<RequestRecord> {
        lock(&self.shared.log).iter().cloned().collect()
    }

    /// Stops listening and drops every connection.
    pub async fn shutdown(&self) {
        self.shared.shutdown.cancel();
        let tasks = std::mem::take(&mut *lock(&self.tasks));
        for t in tasks {
            let _ = t.await;
        }
    }
}

/// A pseudo-random u64 (splitmix64 over a time-seeded counter): good enough for fault
/// probabilities, uids and generated names; not for anything secret.
pub(crate) fn random_u64() -> u64 {
    static STATE: AtomicU64 = AtomicU64::new(0);
    let mut s = STATE.load(Ordering::Relaxed);
    if s == 0 {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            | 1;
        let _ = STATE.compare_exchange(0, seed, Ordering::Relaxed, Ordering::Relaxed);
    }
    s = STATE.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
    let mut z = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// True with probability `p`.
pub(crate) fn chance(p: f64) -> bool {
    p >= 1.0 || (p > 0.0 && (random_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p)
}
