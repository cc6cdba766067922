//! Named network namespaces for the lab and the tests.
//!
//! A [`NetNs`] is created with `ip netns add` under a name `vl<pid>-<n>-<tag>`
//! and deleted on drop. Everything this process creates (namespaces and links
//! in the root namespace) is also written down in a process-wide registry, so
//! that [`teardown_all`] (called by the optional signal and panic handlers) can
//! remove it, and so that [`cleanup_stale`] can recognise and remove the
//! leftovers of earlier runs whose process is gone.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sched::{CloneFlags, setns};
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, kill, sigaction};
use nix::unistd::Pid;

/// Prefix of every name this crate creates: `vl<pid>-`.
pub const PREFIX: &str = "vl";

/// Where `ip netns add` bind-mounts the namespaces.
const NETNS_RUN_DIR: &str = "/run/netns";

/// Errors of the namespace helpers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot run `{cmd}`: {source}")]
    Spawn {
        cmd: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{cmd}` failed ({status}): {stderr}")]
    Command {
        cmd: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("cannot open namespace {name}: {source}")]
    Open {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("setns into {name} failed: {source}")]
    Setns {
        name: String,
        #[source]
        source: Errno,
    },
    #[error("invalid name {0:?}: use 1-12 characters [a-z0-9-]")]
    InvalidTag(String),
    #[error("cannot read {what}: {detail}")]
    Parse { what: String, detail: String },
    #[error("timed out after {timeout:?} waiting for {what}")]
    Timeout { what: String, timeout: Duration },
    #[error("cannot write sysctl {path}: {source}")]
    Sysctl {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Result of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

// ---------------------------------------------------------------------------
// Registry

#[derive(Default)]
struct Registry {
    namespaces: BTreeSet<String>,
    root_links: BTreeSet<String>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    namespaces: BTreeSet::new(),
    root_links: BTreeSet::new(),
});

fn registry() -> MutexGuard<'static, Registry> {
    // A panic while the lock is held leaves the sets consistent (single inserts
    // and removes), so a poisoned lock is still usable.
    REGISTRY.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Names of the namespaces this process created and has not deleted yet.
pub fn registered_namespaces() -> Vec<String> {
    registry().namespaces.iter().cloned().collect()
}

/// Record a link created in the ROOT namespace (name should come from
/// [`root_link_name`]) so that [`teardown_all`] and [`cleanup_stale`] remove it.
pub fn track_root_link(name: &str) {
    registry().root_links.insert(name.to_owned());
}

/// Forget a root-namespace link (after deleting it yourself).
pub fn untrack_root_link(name: &str) {
    registry().root_links.remove(name);
}

/// Delete a tracked root-namespace link and forget it.
pub fn delete_root_link(name: &str) -> Result<()> {
    let res = run_checked(Command::new("ip").args(["link", "del", "dev", name]));
    untrack_root_link(name);
    res.map(drop)
}

/// Remove everything this process registered: root links first, then the
/// namespaces (which destroys the links inside them). Errors are printed, not
/// returned: this runs from signal and panic handlers.
///
/// Caution: this also removes namespaces other threads of this process are
/// still using (e.g. other tests of the same test binary).
pub fn teardown_all() {
    let (links, namespaces) = {
        let mut reg = registry();
        (
            std::mem::take(&mut reg.root_links),
            std::mem::take(&mut reg.namespaces),
        )
    };
    for link in links {
        if let Err(e) = run_checked(Command::new("ip").args(["link", "del", "dev", &link])) {
            eprintln!("vip-lab teardown: {e}");
        }
    }
    for ns in namespaces {
        if let Err(e) = delete_namespace(&ns) {
            eprintln!("vip-lab teardown: {e}");
        }
    }
}

static SIGNAL_PIPE_WR: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(sig: libc::c_int) {
    let fd = SIGNAL_PIPE_WR.load(Ordering::Relaxed);
    if fd >= 0 {
        // Signal numbers fit in a byte.
        let byte = sig as u8;
        // SAFETY: write(2) is async-signal-safe; `byte` outlives the call and
        // the fd stays open for the life of the process (it is leaked below).
        unsafe { libc::write(fd, (&raw const byte).cast(), 1) };
    }
}

/// On SIGINT or SIGTERM, tear down everything registered ([`teardown_all`]),
/// then die of the same signal. Installs once; later calls do nothing.
///
/// The handler only writes to a pipe; a watcher thread does the work, so
/// nothing unsafe runs in signal context.
pub fn install_signal_cleanup() -> Result<(), Errno> {
    static INSTALLED: OnceLock<Result<(), Errno>> = OnceLock::new();
    *INSTALLED.get_or_init(|| {
        let (rd, wr): (OwnedFd, OwnedFd) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        // The write end must live as long as the handler may run: forever.
        SIGNAL_PIPE_WR.store(std::os::fd::IntoRawFd::into_raw_fd(wr), Ordering::Relaxed);
        std::thread::Builder::new()
            .name("vip-lab-signal".into())
            .spawn(move || {
                let mut byte = [0u8; 1];
                loop {
                    match nix::unistd::read(&rd, &mut byte) {
                        Ok(1) => break,
                        Err(Errno::EINTR) => continue,
                        _ => return,
                    }
                }
                let sig = i32::from(byte[0]);
                eprintln!("vip-lab: signal {sig}: tearing down namespaces");
                teardown_all();
                if let Ok(signal) = Signal::try_from(sig) {
                    let dfl = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
                    // SAFETY: restoring the default disposition is always sound.
                    let _ = unsafe { sigaction(signal, &dfl) };
                    let _ = nix::sys::signal::raise(signal);
                }
                std::process::exit(128 + sig);
            })
            .map_err(|_| Errno::EAGAIN)?;
        let action = SigAction::new(
            SigHandler::Handler(on_signal),
            SaFlags::SA_RESTART,
            SigSet::empty(),
        );
        for signal in [Signal::SIGINT, Signal::SIGTERM] {
            // SAFETY: `on_signal` only calls the async-signal-safe write(2).
            unsafe { sigaction(signal, &action) }?;
        }
        Ok(())
    })
}

/// Make any panic (after the previous hook has printed it) tear down
/// everything registered. Meant for the lab binary and for `panic = "abort"`
/// builds; with unwinding, the drops already clean up. Do NOT use it in a test
/// binary whose tests run in parallel: one failing test would remove the
/// namespaces of the others.
pub fn install_panic_cleanup() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            previous(info);
            teardown_all();
        }));
    });
}

/// What [`cleanup_stale`] removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StaleReport {
    pub namespaces: Vec<String>,
    pub root_links: Vec<String>,
}

/// The pid in a name `vl<pid>-...`, if the name has that form.
pub fn owner_pid(name: &str) -> Option<i32> {
    let rest = name.strip_prefix(PREFIX)?;
    let (digits, _) = rest.split_once('-')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn pid_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // Signal 0 only checks for existence; EPERM means it exists.
    !matches!(kill(Pid::from_raw(pid), None), Err(Errno::ESRCH))
}

/// SIGKILLs every process whose network namespace is `name` (`ip netns pids`),
/// e.g. the etcd and kube-apiserver of a killed run. Best effort.
fn kill_processes_in(name: &str) {
    let Ok(out) = run_checked(Command::new("ip").args(["netns", "pids", name])) else {
        return;
    };
    for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        if let Ok(pid) = pid.parse::<i32>() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// Remove namespaces (from `/run/netns`) and root-namespace links named
/// `vl<pid>-...` whose pid is no longer running: the leftovers of a run that
/// was killed before it could clean up (processes still in such a namespace
/// are killed first). Names of live processes (including
/// this one) are left alone.
pub fn cleanup_stale() -> Result<StaleReport> {
    let mut report = StaleReport::default();
    let me = std::process::id() as i32;
    let is_stale = |name: &str| owner_pid(name).is_some_and(|pid| pid != me && !pid_alive(pid));

    // Links first: a stale root link may be the peer of a veth in a stale namespace.
    let out = run_checked(Command::new("ip").args(["-o", "link", "show"]))?;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // "12: name@peer: <FLAGS> ..." or "12: name: <FLAGS> ..."
        let Some(name) = line.split(": ").nth(1) else {
            continue;
        };
        let name = name.split('@').next().unwrap_or(name);
        if is_stale(name) {
            match run_checked(Command::new("ip").args(["link", "del", "dev", name])) {
                Ok(_) => report.root_links.push(name.to_owned()),
                // Deleting one end of a veth removes the other: ignore "cannot find".
                Err(Error::Command { stderr, .. }) if stderr.contains("Cannot find") => {}
                Err(e) => return Err(e),
            }
        }
    }

    let entries = match std::fs::read_dir(NETNS_RUN_DIR) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(report),
        Err(e) => {
            return Err(Error::Parse {
                what: NETNS_RUN_DIR.into(),
                detail: e.to_string(),
            });
        }
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if is_stale(&name) {
            kill_processes_in(&name);
            delete_namespace(&name)?;
            report.namespaces.push(name);
        }
    }
    Ok(report)
}

// ---------------------------------------------------------------------------
// Commands

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        s.push(' ');
        s.push_str(&arg.to_string_lossy());
    }
    s
}

/// Run `cmd`, capture its output, and turn a non-zero exit into an error that
/// carries the command line and its stderr.
pub fn run_checked(cmd: &mut Command) -> Result<Output> {
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|source| Error::Spawn {
            cmd: describe(cmd),
            source,
        })?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(Error::Command {
            cmd: describe(cmd),
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

fn delete_namespace(name: &str) -> Result<()> {
    let res = run_checked(Command::new("ip").args(["netns", "delete", name]));
    registry().namespaces.remove(name);
    match res {
        Ok(_) => Ok(()),
        // Already gone (e.g. removed by teardown_all): fine.
        Err(Error::Command { .. }) if !std::path::Path::new(NETNS_RUN_DIR).join(name).exists() => {
            Ok(())
        }
        Err(e) => Err(e),
    }
}

// ---------------------------------------------------------------------------
// NetNs

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name `vl<pid>-<tag>` for a link in the root namespace, at most 15 bytes.
pub fn root_link_name(tag: &str) -> Result<String> {
    let name = format!("{PREFIX}{}-{tag}", std::process::id());
    if tag.is_empty() || name.len() > 15 || !valid_tag(tag) {
        return Err(Error::InvalidTag(tag.to_owned()));
    }
    Ok(name)
}

fn valid_tag(tag: &str) -> bool {
    (1..=12).contains(&tag.len())
        && tag
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// A named network namespace, deleted on drop.
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Create `vl<pid>-<n>-<tag>` with `ip netns add` and bring its loopback up.
    pub fn new(tag: &str) -> Result<Self> {
        if !valid_tag(tag) {
            return Err(Error::InvalidTag(tag.to_owned()));
        }
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{PREFIX}{}-{n}-{tag}", std::process::id());
        // Register before creating, so a signal arriving in between still removes it.
        registry().namespaces.insert(name.clone());
        if let Err(e) = run_checked(Command::new("ip").args(["netns", "add", &name])) {
            registry().namespaces.remove(&name);
            return Err(e);
        }
        let ns = Self { name };
        ns.exec_ok(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name (as in `ip netns list`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Open the namespace file (for `setns`, or to attach something from outside).
    pub fn open_file(&self) -> Result<File> {
        File::open(self.path()).map_err(|source| Error::Open {
            name: self.name.clone(),
            source,
        })
    }

    /// Path of the namespace's bind mount.
    pub fn path(&self) -> std::path::PathBuf {
        std::path::Path::new(NETNS_RUN_DIR).join(&self.name)
    }

    /// Run `f` on a fresh thread that has entered this namespace (sockets it
    /// creates belong here and keep working from any thread afterwards).
    pub fn try_run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        let file = self.open_file()?;
        std::thread::scope(|scope| {
            let handle = std::thread::Builder::new()
                .name(format!("ns-{}", self.name))
                .spawn_scoped(scope, move || {
                    setns(&file, CloneFlags::CLONE_NEWNET).map_err(|source| Error::Setns {
                        name: self.name.clone(),
                        source,
                    })?;
                    drop(file);
                    Ok(f())
                })
                .map_err(|source| Error::Open {
                    name: self.name.clone(),
                    source,
                })?;
            match handle.join() {
                Ok(res) => res,
                Err(payload) => std::panic::resume_unwind(payload),
            }
        })
    }

    /// [`Self::try_run`], panicking if the namespace cannot be entered.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        match self.try_run(f) {
            Ok(v) => v,
            Err(e) => panic!("{e}"),
        }
    }

    /// `ip netns exec NAME program`: add arguments, then spawn or run it.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// [`Self::command`] for tokio.
    pub fn tokio_command(&self, program: impl AsRef<OsStr>) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Run `ip -n NAME <args>`; stdout on success, an error with the command
    /// line and stderr otherwise.
    pub fn exec_ok(&self, args: &[&str]) -> Result<String> {
        let out = run_checked(Command::new("ip").args(["-n", &self.name]).args(args))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Write a sysctl of this namespace, e.g. `("net/ipv6/conf/all/disable_ipv6", "0")`.
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        // /proc/sys/net resolves against the netns of the opening thread.
        self.try_run(|| std::fs::write(&path, value))?
            .map_err(|source| Error::Sysctl {
                path: path.clone(),
                source,
            })
    }

    /// `ip -j -d link show dev IF`, parsed.
    pub fn link_json(&self, ifname: &str) -> Result<serde_json::Value> {
        let out = self.exec_ok(&["-j", "-d", "link", "show", "dev", ifname])?;
        let mut v: serde_json::Value = serde_json::from_str(&out).map_err(|e| Error::Parse {
            what: format!("ip -j link show dev {ifname}"),
            detail: e.to_string(),
        })?;
        match v.get_mut(0) {
            Some(link) => Ok(link.take()),
            None => Err(Error::Parse {
                what: format!("link {ifname}"),
                detail: "empty answer".into(),
            }),
        }
    }

    /// Poll netlink (`ip -j -d link show`) until `pred` holds for the link,
    /// every 10 ms, at most `timeout`.
    pub fn wait_link(
        &self,
        ifname: &str,
        what: &str,
        timeout: Duration,
        mut pred: impl FnMut(&serde_json::Value) -> bool,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let link = self.link_json(ifname)?;
            if pred(&link) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout {
                    what: format!("{what} of {ifname} in {} (last state: {link})", self.name),
                    timeout,
                });
            }
            // Polling interval of a bounded wait, not a synchronisation sleep.
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Wait until the link is operationally up with carrier (operstate UP, LOWER_UP).
    pub fn wait_oper_up(&self, ifname: &str, timeout: Duration) -> Result<()> {
        self.wait_link(ifname, "operstate UP", timeout, link_oper_up)
    }
}

/// operstate "UP" and the LOWER_UP flag (carrier).
pub fn link_oper_up(link: &serde_json::Value) -> bool {
    let lower_up = link["flags"]
        .as_array()
        .is_some_and(|f| f.iter().any(|x| x == "LOWER_UP"));
    link["operstate"] == "UP" && lower_up
}

/// A bridge port in state "forwarding".
pub fn bridge_port_forwarding(link: &serde_json::Value) -> bool {
    link["linkinfo"]["info_slave_data"]["state"] == "forwarding"
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if let Err(e) = delete_namespace(&self.name) {
            eprintln!("vip-lab: cannot delete namespace {}: {e}", self.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_pid_parses_only_our_names() {
        assert_eq!(owner_pid("vl123-0-a"), Some(123));
        assert_eq!(owner_pid("vl123-x"), Some(123));
        assert_eq!(owner_pid("vlx-0-a"), None);
        assert_eq!(owner_pid("vl-0-a"), None);
        assert_eq!(owner_pid("vl123"), None);
        assert_eq!(owner_pid("eth0"), None);
    }

    #[test]
    fn tags_are_checked() {
        assert!(valid_tag("sw"));
        assert!(valid_tag("node-1"));
        assert!(!valid_tag(""));
        assert!(!valid_tag("UPPER"));
        assert!(!valid_tag("a/b"));
        assert!(!valid_tag("thirteenchars"));
    }
}
