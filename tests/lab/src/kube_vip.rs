//! kube-vip v1.0.0 (built by `cargo xtask setup` from `tests/kube-vip/`) in
//! a lab node namespace, run the way its static pod runs, so the benchmark
//! can measure it beside vip-agent and keepalived on the real control plane.
//!
//! One [`KubeVip`] is one `kube-vip manager` process in one node namespace:
//!
//! - **Settings**: exactly the env list of the static pod `kube-vip manifest
//!   pod --interface eth0 --address VIP --controlplane --arp
//!   --leaderElection` prints (vip-agent/tests/fixtures/
//!   kube-vip-v1.0.0-arp-controlplane.yaml; [`pod_env`]): ARP mode, the
//!   control-plane VIP as a /32 on the node interface, Lease election on
//!   `kube-system/plndr-cp-lock` with lease / renew deadline / retry period
//!   in whole seconds ([`Timers`]), `vip_nodename` = the node name (the
//!   pod's `spec.nodeName`), Prometheus on `:2112` (each node namespace has
//!   its own port space).
//! - **Kubeconfig**: kube-vip v1.0.0's `manager` does not read
//!   `--k8sConfigPath` / `k8s_config_file` (those only go into generated
//!   manifests); `pkg/manager/manager.go` (`New`) opens the fixed path
//!   `/etc/kubernetes/admin.conf` (the pod's hostPath mount) and, with
//!   `cp_enable` and without `cp_detect`, replaces the kubeconfig's server
//!   with `kubernetes:6443` (`port`), which the pod's `hostAliases` resolve
//!   to 127.0.0.1: the node's own API server, never the VIP. The same client
//!   runs the Lease election (`pkg/manager/cluster.go`). The wrapper gives
//!   the process the same view: a private mount namespace (`unshare
//!   --mount`) with an overlay on /etc (upper layer on a tmpfs, nothing on
//!   the host changes) where `/etc/kubernetes/admin.conf` is a bind mount of
//!   the node's kubeconfig and `/etc/hosts` has the pod's `127.0.0.1
//!   kubernetes` alias. Inside the node's network namespace 127.0.0.1:6443 is
//!   that node's kube-apiserver (its certificate names `kubernetes`).
//! - **Process**: `nsenter --net=/run/netns/NS -- unshare --mount
//!   --propagation private -- sh -c SCRIPT` where the script sets up the
//!   mounts and `exec`s `kube-vip manager`: the pid we hold is kube-vip's.
//!   Both output streams are captured line by line (echoed with a prefix
//!   when `VIP_LAB_ECHO` is set).
//! - **Leading** (from its log, [`Event::of_line`]): client-go's
//!   `successfully acquired lease kube-system/plndr-cp-lock`, then kube-vip
//!   adds the VIP (a synchronous netlink request in `vipService`) and starts
//!   its ARP broadcaster, logging `INFO layer 2 broadcaster starting`: from
//!   that line on the VIP is on the interface. Losing it: `INFO This node is
//!   becoming a follower within the cluster`, the VIP is deleted, then
//!   `ERROR lost leadership, restarting kube-vip` and kube-vip panics
//!   (exits; in a pod the kubelet restarts it). Every node logs `INFO New
//!   leader leader=NAME` when it sees a new holder.
//! - **Stop**: on SIGTERM a leader cancels its election, releases the Lease
//!   (`ReleaseOnCancel`: another node takes it at its next retry), deletes
//!   the VIP, logs the two lines above and panics (exit status 2, measured:
//!   20 ms after the signal); a follower just exits. SIGKILL leaves the VIP
//!   on the interface (its kernel keeps answering ARP: kube-vip has no
//!   fence). [`Drop`] kills it and removes the VIP it may have left.

use std::io::{BufRead, BufReader, Read};
use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::netns::NetNs;

/// The Lease kube-vip's control-plane election uses (`vip_leasename`).
pub const LEASE_NAME: &str = "plndr-cp-lock";
/// Its namespace (`cp_namespace`).
pub const LEASE_NAMESPACE: &str = "kube-system";
/// The API server port (`port`), also the port of `kubernetes:PORT`.
pub const API_PORT: u16 = 6443;
/// What kube-vip logs before it exits on losing the Lease (by a panic).
pub const EXITING: &str = "lost leadership, restarting kube-vip";
/// Env: the kube-vip binary to use instead of setup's build.
pub const BIN_ENV: &str = "VIP_KUBE_VIP_BIN";

/// Errors of [`KubeVip`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "no kube-vip build: {0}; run `cargo xtask setup` (builds kube-vip v1.0.0 from tests/kube-vip/) or set {BIN_ENV}"
    )]
    NotBuilt(String),
    #[error("invalid kube-vip setting: {0}")]
    Config(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("kube-vip {name}: not {what} within {timeout:?}; last lines:\n{tail}")]
    Timeout {
        name: String,
        what: String,
        timeout: Duration,
        tail: String,
    },
    #[error("kube-vip {name} exited ({status}); last lines:\n{tail}")]
    Exited {
        name: String,
        status: String,
        tail: String,
    },
    #[error("kube-vip {name} is not running")]
    NotRunning { name: String },
    #[error("signal {sig} to kube-vip {name}: {source}")]
    Signal {
        name: String,
        sig: Signal,
        #[source]
        source: nix::Error,
    },
}

/// kube-vip's election timers in whole seconds (`vip_leaseduration`,
/// `vip_renewdeadline`, `vip_retryperiod`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    pub lease: u32,
    pub renew: u32,
    pub retry: u32,
}

impl Timers {
    /// kube-vip's defaults (also client-go's leader election defaults).
    pub const DEFAULTS: Timers = Timers {
        lease: 15,
        renew: 10,
        retry: 2,
    };
    /// The fast settings kube-vip's documentation recommends (and its
    /// `manifest` command prints).
    pub const FAST: Timers = Timers {
        lease: 5,
        renew: 3,
        retry: 1,
    };

    /// client-go's rule: lease > renew > retry * 1.2 > 0.
    fn check(self) -> Result<(), Error> {
        let ok = self.retry > 0
            && u64::from(self.renew) * 10 > u64::from(self.retry) * 12
            && self.lease > self.renew;
        ok.then_some(()).ok_or_else(|| {
            Error::Config(format!(
                "timers {self:?}: need lease > renew > 1.2 * retry > 0"
            ))
        })
    }
}

impl std::fmt::Display for Timers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}s/{}s/{}s", self.lease, self.renew, self.retry)
    }
}

/// The env of kube-vip v1.0.0's static pod (`kube-vip manifest pod
/// --interface IF --address VIP --controlplane --arp --leaderElection`), in
/// its order, with `vip_nodename` (a fieldRef to `spec.nodeName` there)
/// set to `node`, and the timers.
pub fn pod_env(node: &str, ifname: &str, vip: Ipv4Addr, t: Timers) -> Vec<(&'static str, String)> {
    vec![
        ("vip_arp", "true".into()),
        ("port", API_PORT.to_string()),
        ("vip_nodename", node.into()),
        ("vip_interface", ifname.into()),
        ("vip_subnet", "32".into()),
        ("dns_mode", "first".into()),
        ("cp_enable", "true".into()),
        ("cp_namespace", LEASE_NAMESPACE.into()),
        ("vip_leaderelection", "true".into()),
        ("vip_leasename", LEASE_NAME.into()),
        ("vip_leaseduration", t.lease.to_string()),
        ("vip_renewdeadline", t.renew.to_string()),
        ("vip_retryperiod", t.retry.to_string()),
        ("address", vip.to_string()),
        ("prometheus_server", ":2112".into()),
    ]
}

/// The mounts of the static pod, then `exec kube-vip manager`. Arguments:
/// `$1` an empty folder for the tmpfs, `$2` the kubeconfig, `$3` kube-vip.
const POD_SCRIPT: &str = r#"set -e
mount -t tmpfs kube-vip-pod "$1"
mkdir "$1/upper" "$1/work"
mount -t overlay kube-vip-pod -o "lowerdir=/etc,upperdir=$1/upper,workdir=$1/work" /etc
mkdir -p /etc/kubernetes
touch /etc/kubernetes/admin.conf
mount --bind "$2" /etc/kubernetes/admin.conf
hosts=$(cat /etc/hosts)
printf '%s\n# the kube-vip pod hostAliases\n127.0.0.1\tkubernetes\n' "$hosts" > /etc/hosts
exec "$3" manager
"#;

/// What a log line of kube-vip v1.0.0 says about the election.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// client-go: `successfully acquired lease kube-system/plndr-cp-lock`.
    Acquired,
    /// `INFO layer 2 broadcaster starting`: the VIP is on the interface.
    Leading,
    /// `INFO This node is becoming a follower within the cluster` (or the
    /// `lost leadership` line that follows it).
    Lost,
    /// `INFO New leader leader=NAME`.
    NewLeader(String),
}

impl Event {
    /// The event a log line reports, if any.
    pub fn of_line(line: &str) -> Option<Event> {
        if line.contains(&format!(
            "successfully acquired lease {LEASE_NAMESPACE}/{LEASE_NAME}"
        )) {
            Some(Event::Acquired)
        } else if line.contains("INFO layer 2 broadcaster starting") {
            Some(Event::Leading)
        } else if line.contains("becoming a follower within the cluster")
            || line.contains("lost leadership, restarting kube-vip")
        {
            Some(Event::Lost)
        } else {
            let (_, rest) = line.split_once("INFO New leader leader=")?;
            let name = rest.split_whitespace().next()?.trim_matches('"');
            Some(Event::NewLeader(name.to_owned()))
        }
    }
}

/// What a kube-vip v1.0.0 log line says for the lab's timeline, if it is
/// about the election or the VIP (every node's `New leader` lines are not).
pub fn describe(line: &str) -> Option<&'static str> {
    const TEXTS: [(&str, &str); 7] = [
        (
            "successfully acquired lease kube-system/plndr-cp-lock",
            "acquired the Lease",
        ),
        (
            "INFO layer 2 broadcaster starting",
            "VIP address added, gratuitous ARP: answering",
        ),
        ("failed to renew lease", "could not renew the Lease"),
        (
            "Received termination, signaling cluster shutdown",
            "SIGTERM received",
        ),
        (
            "becoming a follower within the cluster",
            "lost the Lease: following",
        ),
        ("INFO deleted address", "VIP address removed"),
        (
            "lost leadership, restarting kube-vip",
            "exits to be restarted (panic)",
        ),
    ];
    TEXTS
        .iter()
        .find(|(needle, _)| line.contains(needle))
        .map(|(_, what)| *what)
}

/// The kube-vip binary: `$VIP_KUBE_VIP_BIN`, or setup's build
/// `<target>/kube-vip/<key>/kube-vip` (key: FNV-1a 64 of tests/kube-vip's
/// go.mod and go.sum, as xtask/src/kube_vip.rs), the target directory being
/// `$CARGO_TARGET_DIR`, the one of the running binary, or `<root>/target`.
pub fn kube_vip_bin() -> Result<PathBuf, Error> {
    if let Some(p) = std::env::var_os(BIN_ENV) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(Error::NotBuilt(format!(
                "{BIN_ENV}={} is not a file",
                p.display()
            )))
        };
    }
    let root = ebpf_build::workspace_root();
    let module = root.join("tests/kube-vip");
    let mut bytes = Vec::new();
    for f in ["go.mod", "go.sum"] {
        let p = module.join(f);
        bytes.extend(
            std::fs::read(&p).map_err(|e| Error::NotBuilt(format!("{}: {e}", p.display())))?,
        );
    }
    let key = bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    let mut targets: Vec<PathBuf> = Vec::new();
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        targets.push(root.join(t));
    }
    // target/<profile>/deps/test-xxxx or target/<profile>/vip-lab
    if let Ok(exe) = std::env::current_exe() {
        targets.extend(exe.ancestors().skip(2).take(2).map(Path::to_path_buf));
    }
    targets.push(root.join("target"));
    let rel = format!("kube-vip/{key:016x}/kube-vip");
    targets
        .iter()
        .map(|t| t.join(&rel))
        .find(|b| b.is_file())
        .ok_or_else(|| Error::NotBuilt(format!("no {rel} in {targets:?}")))
}

/// The kube-vip binary ([`kube_vip_bin`]); otherwise records the skip (a
/// failure under `cargo xtask test`, see [`crate::skip`]).
pub fn require_bin() -> Result<PathBuf, crate::skip::Skipped> {
    kube_vip_bin().map_err(|e| {
        crate::skip::skip(
            &crate::skip::test_name(),
            &crate::skip::Missing {
                reason: e.to_string(),
                fix: "run `cargo xtask setup` (builds kube-vip v1.0.0 from tests/kube-vip/)"
                    .to_owned(),
            },
        )
    })
}

/// A running kube-vip in a node namespace. Drop kills it (SIGKILL), removes
/// the VIP it may have left on the interface and its folder.
pub struct KubeVip {
    name: String,
    ns_name: String,
    ifname: String,
    vip: Ipv4Addr,
    child: Option<Child>,
    mnt: PathBuf,
    /// Every output line with the moment it was read (kube-vip writes each
    /// line at once; its own timestamps have one-second resolution).
    lines: Arc<Mutex<Vec<(Instant, String)>>>,
    rx: mpsc::Receiver<String>,
    /// Leading (from [`Event::Leading`] until [`Event::Lost`]).
    leading: bool,
}

impl std::fmt::Debug for KubeVip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeVip")
            .field("name", &self.name)
            .field("ns", &self.ns_name)
            .field("pid", &self.pid())
            .field("leading", &self.leading)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn pump(
    stream: impl Read + Send + 'static,
    tag: String,
    store: Arc<Mutex<Vec<(Instant, String)>>>,
    tx: mpsc::Sender<String>,
) {
    let echo = std::env::var_os("VIP_LAB_ECHO").is_some();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if echo {
                eprintln!("[{tag}] {line}");
            }
            lock(&store).push((Instant::now(), line.clone()));
            // The receiver may be gone (dropped): the line stays stored.
            let _ = tx.send(line);
        }
    });
}

impl KubeVip {
    /// Start `kube-vip manager` for node `name` in `ns`, holding `vip` on
    /// `ifname` with `timers`, talking to the API server through
    /// `kubeconfig` (the node's admin.conf or super-admin.conf; its server is
    /// replaced by `kubernetes:6443` = 127.0.0.1 in `ns`). `workdir` holds
    /// an empty folder for the process's tmpfs. Returns once the process
    /// runs; [`Self::wait_for_leading`] waits for the VIP.
    pub fn spawn(
        name: &str,
        ns: &NetNs,
        ifname: &str,
        vip: Ipv4Addr,
        timers: Timers,
        kubeconfig: &Path,
        workdir: &Path,
    ) -> anyhow::Result<KubeVip> {
        Ok(Self::try_spawn(
            name, ns, ifname, vip, timers, kubeconfig, workdir,
        )?)
    }

    fn try_spawn(
        name: &str,
        ns: &NetNs,
        ifname: &str,
        vip: Ipv4Addr,
        timers: Timers,
        kubeconfig: &Path,
        workdir: &Path,
    ) -> Result<KubeVip, Error> {
        let bin = kube_vip_bin()?;
        timers.check()?;
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            return Err(Error::Config(format!(
                "node name {name:?}: use [A-Za-z0-9.-]"
            )));
        }
        let kubeconfig = std::fs::canonicalize(kubeconfig).map_err(|source| Error::Io {
            what: format!("kubeconfig {}", kubeconfig.display()),
            source,
        })?;
        // Unique per process and start: several labs may share a workdir,
        // and a dropped predecessor removes its own folder.
        static STARTS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = STARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mnt = workdir.join(format!("kube-vip-{}-{n}-{name}.mnt", std::process::id()));
        std::fs::create_dir_all(&mnt).map_err(|source| Error::Io {
            what: format!("creating {}", mnt.display()),
            source,
        })?;
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", ns.path().display()))
            .args(["--", "unshare", "--mount", "--propagation", "private", "--"])
            .args(["sh", "-c", POD_SCRIPT, "kube-vip-pod"])
            .arg(&mnt)
            .arg(&kubeconfig)
            .arg(&bin)
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .envs(pod_env(name, ifname, vip, timers))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(source) => {
                let _ = std::fs::remove_dir(&mnt);
                return Err(Error::Io {
                    what: format!("starting kube-vip {name}"),
                    source,
                });
            }
        };
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let tag = format!("kube-vip {name}");
        if let Some(out) = child.stdout.take() {
            pump(out, tag.clone(), lines.clone(), tx.clone());
        }
        if let Some(err) = child.stderr.take() {
            pump(err, tag, lines.clone(), tx);
        }
        Ok(KubeVip {
            name: name.to_owned(),
            ns_name: ns.name().to_owned(),
            ifname: ifname.to_owned(),
            vip,
            child: Some(child),
            mnt,
            lines,
            rx,
            leading: false,
        })
    }

    /// The node name given to [`Self::spawn`] (its Lease identity).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Pid of kube-vip, while running.
    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().and_then(|c| i32::try_from(c.id()).ok())
    }

    /// Whether its log says it leads (VIP added) and has not lost it since,
    /// from the lines seen so far; false once it was killed or stopped.
    pub fn is_leader(&mut self) -> bool {
        self.consume();
        self.leading
    }

    fn consume(&mut self) {
        while let Ok(line) = self.rx.try_recv() {
            self.observe(&line);
        }
    }

    fn observe(&mut self, line: &str) {
        match Event::of_line(line) {
            Some(Event::Leading) => self.leading = true,
            Some(Event::Lost) => self.leading = false,
            Some(Event::Acquired | Event::NewLeader(_)) | None => {}
        }
    }

    /// Wait until its log says it leads with the VIP on the interface
    /// (returns at once if it already does).
    pub fn wait_for_leading(&mut self, timeout: Duration) -> anyhow::Result<()> {
        Ok(self.try_wait(timeout, "leading", |k| k.leading)?)
    }

    /// Wait until a line of its output contains `needle` (already printed
    /// ones count).
    pub fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> anyhow::Result<()> {
        let what = format!("printing {needle:?}");
        Ok(self.try_wait(timeout, &what, |k| {
            lock(&k.lines).iter().any(|(_, l)| l.contains(needle))
        })?)
    }

    fn try_wait(
        &mut self,
        timeout: Duration,
        what: &str,
        done: impl Fn(&Self) -> bool,
    ) -> Result<(), Error> {
        let deadline = Instant::now() + timeout;
        loop {
            self.consume();
            if done(self) {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Timeout {
                    name: self.name.clone(),
                    what: what.to_owned(),
                    timeout,
                    tail: self.tail(20),
                });
            }
            match self.rx.recv_timeout(left) {
                Ok(line) => self.observe(&line),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // Both output streams closed: the process is gone.
                    let status = self
                        .child
                        .as_mut()
                        .and_then(|c| c.wait().ok())
                        .map_or_else(|| "not running".to_owned(), |s| s.to_string());
                    self.child = None;
                    return Err(Error::Exited {
                        name: self.name.clone(),
                        status,
                        tail: self.tail(20),
                    });
                }
            }
        }
    }

    /// Send `sig` to kube-vip.
    pub fn signal(&self, sig: Signal) -> anyhow::Result<()> {
        Ok(self.try_signal(sig)?)
    }

    fn try_signal(&self, sig: Signal) -> Result<(), Error> {
        let pid = Pid::from_raw(self.pid().ok_or_else(|| Error::NotRunning {
            name: self.name.clone(),
        })?);
        kill(pid, sig).map_err(|source| Error::Signal {
            name: self.name.clone(),
            sig,
            source,
        })
    }

    /// SIGTERM (a leader releases the Lease and deletes the VIP), wait for
    /// the exit; SIGKILL when it has not exited within `timeout`.
    pub fn stop(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        self.try_signal(Signal::SIGTERM)?;
        if let Some(status) = self.wait_exit(timeout) {
            return Ok(status);
        }
        self.kill();
        anyhow::bail!(
            "kube-vip {} did not exit within {timeout:?} of SIGTERM (killed)",
            self.name
        )
    }

    /// Its exit status once it has exited by itself within `timeout`
    /// (`Duration::ZERO`: has it exited?); `None` while it runs.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut()?;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                self.consume();
                self.leading = false;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            // Polling a child's exit: no event to await without a reaper
            // thread; bounded by `deadline`.
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGKILL and reap. The VIP stays on the interface, as after a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGCONT);
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        self.consume();
        self.leading = false;
    }

    /// The last `n` lines of its output.
    pub fn tail(&self, n: usize) -> String {
        let lines = lock(&self.lines);
        lines[lines.len().saturating_sub(n)..]
            .iter()
            .map(|(_, l)| l.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Every line of its output so far.
    pub fn log(&self) -> Vec<String> {
        lock(&self.lines).iter().map(|(_, l)| l.clone()).collect()
    }

    /// Every line of its output so far, with the moment it was read.
    pub fn log_timed(&self) -> Vec<(Instant, String)> {
        lock(&self.lines).clone()
    }
}

impl Drop for KubeVip {
    fn drop(&mut self) {
        self.kill();
        // A killed leader leaves the VIP configured; the namespace may
        // already be gone, in which case there is nothing to remove.
        let _ = Command::new("ip")
            .args(["-n", &self.ns_name, "addr", "del"])
            .arg(format!("{}/32", self.vip))
            .args(["dev", &self.ifname])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        // The tmpfs lived in kube-vip's mount namespace only: empty here.
        let _ = std::fs::remove_dir(&self.mnt);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The static pod kube-vip v1.0.0 prints (see the migration test of
    /// vip-agent): `name` / `value` pairs of its env, fieldRefs as "".
    fn fixture_env() -> Vec<(String, String)> {
        let yaml =
            include_str!("../../../vip-agent/tests/fixtures/kube-vip-v1.0.0-arp-controlplane.yaml");
        let mut env = Vec::new();
        let mut lines = yaml.lines().map(str::trim).peekable();
        while let Some(l) = lines.next() {
            if let Some(name) = l.strip_prefix("- name: ") {
                let value = lines
                    .peek()
                    .and_then(|v| v.strip_prefix("value: "))
                    .map(|v| v.trim_matches('"').to_owned());
                env.push((name.to_owned(), value.unwrap_or_default()));
            }
            if l == "image: ghcr.io/kube-vip/kube-vip:v1.0.0" {
                break;
            }
        }
        env
    }

    #[test]
    fn the_env_is_the_static_pods() {
        let ours = pod_env("n0", "eth0", Ipv4Addr::new(192, 0, 2, 10), Timers::FAST);
        let theirs = fixture_env();
        let names = |v: Vec<&str>| v.join(",");
        assert_eq!(
            names(ours.iter().map(|(n, _)| *n).collect()),
            names(theirs.iter().map(|(n, _)| n.as_str()).collect()),
        );
        for ((n, ours), (_, theirs)) in ours.iter().zip(&theirs) {
            if *n != "vip_nodename" {
                assert_eq!(ours, theirs, "{n}");
            }
        }
        let defaults = pod_env("n0", "eth0", Ipv4Addr::LOCALHOST, Timers::DEFAULTS);
        let get = |k: &str| {
            defaults
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("vip_leaseduration"), Some("15"));
        assert_eq!(get("vip_renewdeadline"), Some("10"));
        assert_eq!(get("vip_retryperiod"), Some("2"));
        assert_eq!(get("vip_nodename"), Some("n0"));
    }

    /// Lines kube-vip v1.0.0 printed in the lab (tests/kube_vip.rs).
    #[test]
    fn election_lines() {
        let of = Event::of_line;
        assert_eq!(
            of(
                "I1126 15:30:23.538092   31375 leaderelection.go:271] successfully acquired lease kube-system/plndr-cp-lock"
            ),
            Some(Event::Acquired)
        );
        assert_eq!(
            of("2026/11/26 15:30:23 INFO layer 2 broadcaster starting"),
            Some(Event::Leading)
        );
        assert_eq!(
            of("2026/11/26 15:31:11 INFO This node is becoming a follower within the cluster"),
            Some(Event::Lost)
        );
        assert_eq!(
            of("2026/11/26 15:31:11 ERROR lost leadership, restarting kube-vip"),
            Some(Event::Lost)
        );
        assert_eq!(
            of("2026/11/26 15:30:23 INFO New leader leader=n1"),
            Some(Event::NewLeader("n1".into()))
        );
        for none in [
            "I1126 15:30:23.517934   31375 leaderelection.go:257] attempting to acquire leader lease kube-system/plndr-cp-lock...",
            "2026/11/26 15:30:23 INFO cluster membership namespace=kube-system lock=plndr-cp-lock id=n1",
            "2026/11/26 15:30:23 INFO inserting ARP/NDP instance name=192.0.2.200/32-eth0",
            "2026/11/26 15:31:11 INFO deleted address IP=192.0.2.200 interface=eth0",
        ] {
            assert_eq!(of(none), None, "{none}");
        }
    }

    #[test]
    fn timeline_texts() {
        assert_eq!(
            describe("2026/11/26 15:31:11 INFO deleted address IP=192.0.2.200 interface=eth0"),
            Some("VIP address removed")
        );
        assert_eq!(
            describe("2026/11/26 15:30:23 INFO layer 2 broadcaster starting"),
            Some("VIP address added, gratuitous ARP: answering")
        );
        assert_eq!(
            describe("2026/11/26 15:30:23 INFO New leader leader=n1"),
            None
        );
    }

    #[test]
    fn timers_follow_client_gos_rule() {
        assert!(Timers::DEFAULTS.check().is_ok());
        assert!(Timers::FAST.check().is_ok());
        for bad in [(3, 3, 1), (5, 1, 1), (5, 3, 0)] {
            let t = Timers {
                lease: bad.0,
                renew: bad.1,
                retry: bad.2,
            };
            assert!(t.check().is_err(), "{t:?}");
        }
        assert_eq!(Timers::DEFAULTS.to_string(), "15s/10s/2s");
    }
}
