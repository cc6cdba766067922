//! Debian's keepalived (2.2.7) as a VRRP peer in a lab node namespace, so the
//! benchmark can measure it side by side with vip-agent on the same topology.
//!
//! One [`Keepalived`] is one keepalived process tree (the parent and its VRRP
//! child) in one node namespace, holding the lab VIP on one interface:
//!
//! - **Config** (written to `workdir/keepalived-NAME.conf`): VRRPv3
//!   (`vrrp_version 3`), one `vrrp_instance` with the fixed
//!   [`VIRTUAL_ROUTER_ID`], `advert_int` from `advert` (fractional seconds are
//!   accepted with VRRPv3, e.g. `0.1`; keepalived's default is 1 s),
//!   `virtual_ipaddress { VIP/32 dev IF }`, gratuitous ARP settings left at
//!   their defaults, no scripts, no authentication (VRRPv3 has none).
//! - **Priorities and preemption**: every node gets the same configuration
//!   with `state BACKUP` and `nopreempt` (keepalived only honours `nopreempt`
//!   when the initial state is BACKUP). The first node whose master-down timer
//!   fires becomes MASTER (on equal priority the higher primary address wins
//!   the tie), and a node that failed and came back stays BACKUP instead of
//!   taking the VIP back: a repeat of a scenario causes exactly one failover,
//!   the one under test, as with vip-agent's Lease. Callers normally pass the
//!   same `priority` to every node; with different priorities `nopreempt`
//!   still prevents the extra failover back.
//! - **Process**: started as `nsenter --net=/run/netns/NS -- keepalived -n -l
//!   -D -G -P -R ...` (not `ip netns exec`, which also remounts /sys), in its
//!   own process group, with its own pid files (`-p`, `-r`, `-c`, `-b`) and
//!   config id (`-i`) in `workdir`, so several keepalived processes on one
//!   host do not clash. `-n -l` keeps it in the foreground logging to the
//!   console; both output streams are captured line by line (and echoed with
//!   a prefix when `VIP_LAB_ECHO` is set).
//! - **Signals** ([`Keepalived::signal`]): SIGSTOP, SIGCONT and SIGKILL go to
//!   the whole process group (a crash or a freeze must hit the VRRP child that
//!   does the work; killing only the parent would let the child shut down
//!   gracefully, which is a different scenario); every other signal (SIGTERM,
//!   SIGHUP...) goes to the parent, as keepalived expects.
//!
//! - **Start-up order**: start one node, wait for MASTER, then the others
//!   (they hear its adverts and stay BACKUP). Started at the same instant,
//!   two nodes may both time out and be MASTER for a moment until VRRP
//!   settles the tie (the higher address wins).
//!
//! Note what a SIGKILL leaves behind: the VIP address stays configured on the
//! interface of the killed master, so its kernel keeps answering ARP for it
//! (keepalived has no fence). [`Drop`] removes the address as part of the
//! clean-up; a keepalived started again on that node also removes it.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read};
use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

use crate::netns::NetNs;

/// Where Debian installs keepalived.
pub const KEEPALIVED_BIN: &str = "/usr/sbin/keepalived";

/// The VRRP virtual router id every lab node uses.
pub const VIRTUAL_ROUTER_ID: u8 = 51;

/// Name of the `vrrp_instance` in the generated configuration.
pub const INSTANCE: &str = "VI_LAB";

/// Errors of [`Keepalived`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("keepalived is not installed at {KEEPALIVED_BIN} (apt-get install keepalived)")]
    NotInstalled,
    #[error("invalid keepalived setting: {0}")]
    Config(String),
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("starting keepalived {name}: {source}")]
    Spawn {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "keepalived {name}: no {state} state within {timeout:?} (last seen: {last}); last lines:\n{tail}"
    )]
    StateTimeout {
        name: String,
        state: String,
        last: String,
        timeout: Duration,
        tail: String,
    },
    #[error("keepalived {name} exited ({status}) while waiting for {state}; last lines:\n{tail}")]
    Exited {
        name: String,
        state: String,
        status: String,
        tail: String,
    },
    #[error("keepalived {name} did not exit within {timeout:?}")]
    ExitTimeout { name: String, timeout: Duration },
    #[error("keepalived {name} is not running")]
    NotRunning { name: String },
    #[error("signal {sig} to keepalived {name}: {source}")]
    Signal {
        name: String,
        sig: Signal,
        #[source]
        source: nix::Error,
    },
}

/// A VRRP state keepalived logs when it enters it.
const STATES: [&str; 3] = ["MASTER", "BACKUP", "FAULT"];

/// The state a log line reports entering, if any
/// (`(VI_LAB) Entering MASTER STATE`, `... Entering BACKUP STATE (init)`).
pub fn state_of_line(line: &str) -> Option<&'static str> {
    let rest = line.split("Entering ").nth(1)?;
    STATES.into_iter().find(|s| {
        rest.strip_prefix(s)
            .is_some_and(|r| r.starts_with(" STATE"))
    })
}

/// `advert_int` in keepalived's notation: whole seconds, or seconds with up to
/// two decimals (VRRPv3 centiseconds), at least 10 ms, at most 40.95 s.
pub fn advert_int(advert: Duration) -> Result<String, Error> {
    let cs = advert.as_nanos() / 10_000_000;
    if !advert.as_nanos().is_multiple_of(10_000_000) || !(1..=4095).contains(&cs) {
        return Err(Error::Config(format!(
            "advert {advert:?}: use a multiple of 10 ms between 10 ms and 40.95 s"
        )));
    }
    Ok(if cs.is_multiple_of(100) {
        (cs / 100).to_string()
    } else {
        format!("{}.{:02}", cs / 100, cs % 100)
            .trim_end_matches('0')
            .to_owned()
    })
}

/// The configuration file for one node.
pub fn config_text(
    name: &str,
    ifname: &str,
    vip: Ipv4Addr,
    priority: u8,
    advert: Duration,
) -> Result<String, Error> {
    if priority == 0 || priority == 255 {
        return Err(Error::Config(format!(
            "priority {priority}: use 1 to 254 (255 is the address owner, 0 means releasing)"
        )));
    }
    if ifname.is_empty() || ifname.contains(|c: char| c.is_whitespace() || c == '{' || c == '}') {
        return Err(Error::Config(format!("interface name {ifname:?}")));
    }
    let advert = advert_int(advert)?;
    let mut s = String::new();
    // Infallible: writing to a String.
    let _ = write!(
        s,
        "# Generated by vip-lab for node {name}.\n\
         global_defs {{\n\
         \x20   router_id {name}\n\
         \x20   vrrp_version 3\n\
         }}\n\
         \n\
         vrrp_instance {INSTANCE} {{\n\
         \x20   state BACKUP\n\
         \x20   nopreempt\n\
         \x20   interface {ifname}\n\
         \x20   virtual_router_id {VIRTUAL_ROUTER_ID}\n\
         \x20   priority {priority}\n\
         \x20   advert_int {advert}\n\
         \x20   virtual_ipaddress {{\n\
         \x20       {vip}/32 dev {ifname}\n\
         \x20   }}\n\
         }}\n"
    );
    Ok(s)
}

/// A running keepalived in a node namespace. Drop kills it (SIGCONT + SIGKILL
/// to its process group), removes the VIP it may have left on the interface
/// and removes its files.
pub struct Keepalived {
    name: String,
    ns_name: String,
    ifname: String,
    vip: Ipv4Addr,
    child: Option<Child>,
    files: Vec<PathBuf>,
    lines: Arc<Mutex<Vec<String>>>,
    rx: mpsc::Receiver<String>,
    /// The last state seen in the lines consumed from `rx`.
    state: Option<&'static str>,
    /// "Entering MASTER STATE" seen, the VIP not configured yet.
    becoming_master: bool,
}

impl std::fmt::Debug for Keepalived {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keepalived")
            .field("name", &self.name)
            .field("ns", &self.ns_name)
            .field("pid", &self.pid())
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn pump(
    stream: impl Read + Send + 'static,
    tag: String,
    store: Arc<Mutex<Vec<String>>>,
    tx: mpsc::Sender<String>,
) {
    let echo = std::env::var_os("VIP_LAB_ECHO").is_some();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if echo {
                eprintln!("[{tag}] {line}");
            }
            lock(&store).push(line.clone());
            // The receiver may be gone (dropped): the line stays stored.
            let _ = tx.send(line);
        }
    });
}

impl Keepalived {
    /// Write the configuration for node `name` into `workdir` and start
    /// keepalived in `ns`, holding `vip` on `ifname`. Returns once the process
    /// runs; use [`Self::wait_for_state`] to wait for BACKUP or MASTER.
    pub fn spawn(
        name: &str,
        ns: &NetNs,
        ifname: &str,
        vip: Ipv4Addr,
        priority: u8,
        advert: Duration,
        workdir: &Path,
    ) -> anyhow::Result<Keepalived> {
        Ok(Self::try_spawn(
            name, ns, ifname, vip, priority, advert, workdir,
        )?)
    }

    fn try_spawn(
        name: &str,
        ns: &NetNs,
        ifname: &str,
        vip: Ipv4Addr,
        priority: u8,
        advert: Duration,
        workdir: &Path,
    ) -> Result<Keepalived, Error> {
        if !Path::new(KEEPALIVED_BIN).is_file() {
            return Err(Error::NotInstalled);
        }
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(Error::Config(format!(
                "node name {name:?}: use [A-Za-z0-9_-]"
            )));
        }
        std::fs::create_dir_all(workdir).map_err(|source| Error::Write {
            path: workdir.to_owned(),
            source,
        })?;
        // Unique per process and node: several labs may share a workdir.
        let stem = format!("keepalived-{}-{name}", std::process::id());
        let file = |ext: &str| workdir.join(format!("{stem}.{ext}"));
        let conf = file("conf");
        let pid = file("pid");
        let vrrp_pid = file("vrrp.pid");
        let check_pid = file("check.pid");
        let bfd_pid = file("bfd.pid");
        let text = config_text(name, ifname, vip, priority, advert)?;
        std::fs::write(&conf, text).map_err(|source| Error::Write {
            path: conf.clone(),
            source,
        })?;
        let files = vec![
            conf.clone(),
            pid.clone(),
            vrrp_pid.clone(),
            check_pid.clone(),
            bfd_pid.clone(),
        ];

        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", ns.path().display()))
            .arg("--")
            .arg(KEEPALIVED_BIN)
            .args([
                "--dont-fork",
                "--log-console",
                "--log-detail",
                "--no-syslog",
            ])
            .args(["--vrrp", "--dont-respawn"])
            .arg(format!("--use-file={}", conf.display()))
            .arg(format!("--pid={}", pid.display()))
            .arg(format!("--vrrp_pid={}", vrrp_pid.display()))
            .arg(format!("--checkers_pid={}", check_pid.display()))
            .arg(format!("--bfd_pid={}", bfd_pid.display()))
            .arg(format!("--config-id={stem}"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: crash and freeze hit the VRRP child too.
            .process_group(0);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(source) => {
                remove_files(&files);
                return Err(Error::Spawn {
                    name: name.to_owned(),
                    source,
                });
            }
        };
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let tag = format!("keepalived {name}");
        if let Some(out) = child.stdout.take() {
            pump(out, tag.clone(), lines.clone(), tx.clone());
        }
        if let Some(err) = child.stderr.take() {
            pump(err, tag, lines.clone(), tx);
        }
        Ok(Keepalived {
            name: name.to_owned(),
            ns_name: ns.name().to_owned(),
            ifname: ifname.to_owned(),
            vip,
            child: Some(child),
            files,
            lines,
            rx,
            state: None,
            becoming_master: false,
        })
    }

    /// The node name given to [`Self::spawn`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Pid of the keepalived parent (also its process group id), while running.
    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().and_then(|c| i32::try_from(c.id()).ok())
    }

    /// The last VRRP state seen in the log lines consumed so far.
    pub fn last_state(&self) -> Option<&'static str> {
        self.state
    }

    /// Send `sig`: SIGSTOP, SIGCONT and SIGKILL to the whole process group,
    /// anything else to the keepalived parent.
    pub fn signal(&self, sig: Signal) -> anyhow::Result<()> {
        Ok(self.try_signal(sig)?)
    }

    fn try_signal(&self, sig: Signal) -> Result<(), Error> {
        let pid = Pid::from_raw(self.pid().ok_or_else(|| Error::NotRunning {
            name: self.name.clone(),
        })?);
        let res = match sig {
            Signal::SIGSTOP | Signal::SIGCONT | Signal::SIGKILL => killpg(pid, sig),
            _ => kill(pid, sig),
        };
        res.map_err(|source| Error::Signal {
            name: self.name.clone(),
            sig,
            source,
        })
    }

    /// SIGTERM (keepalived then sends a priority-0 advertisement and removes
    /// the VIP) and wait for the process to exit.
    pub fn stop(&mut self, timeout: Duration) -> anyhow::Result<()> {
        self.try_signal(Signal::SIGTERM)?;
        self.wait_exit(timeout)?;
        Ok(())
    }

    fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus, Error> {
        let deadline = Instant::now() + timeout;
        let Some(child) = self.child.as_mut() else {
            return Err(Error::NotRunning {
                name: self.name.clone(),
            });
        };
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                // The VRRP child may outlive the parent by a moment: make sure
                // nothing of this group is left.
                return Ok(status);
            }
            if Instant::now() >= deadline {
                return Err(Error::ExitTimeout {
                    name: self.name.clone(),
                    timeout,
                });
            }
            // Polling a child's exit: there is no event to await without a
            // reaper thread, and the wait is bounded by `deadline`.
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGKILL the whole process group and reap the parent. The VIP address
    /// stays on the interface, as after a real crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(pid) = i32::try_from(child.id()) {
                let pid = Pid::from_raw(pid);
                let _ = killpg(pid, Signal::SIGCONT);
                let _ = killpg(pid, Signal::SIGKILL);
            }
            let _ = child.kill();
            let _ = child.wait();
            if let Ok(pgid) = i32::try_from(child.id()) {
                wait_group_gone(pgid, Duration::from_secs(2));
            }
        }
    }

    /// Wait until keepalived's log says it is in `state` ("MASTER", "BACKUP",
    /// "FAULT"): returns at once if the last state logged is already `state`.
    /// MASTER means: entered MASTER state and the VIP is configured (its
    /// "Sending/queueing gratuitous ARPs" line, logged with `--log-detail`,
    /// follows the synchronous netlink request that adds the address).
    pub fn wait_for_state(&mut self, state: &str, timeout: Duration) -> anyhow::Result<()> {
        Ok(self.try_wait_for_state(state, timeout)?)
    }

    fn try_wait_for_state(&mut self, state: &str, timeout: Duration) -> Result<(), Error> {
        if !STATES.contains(&state) {
            return Err(Error::Config(format!(
                "state {state:?}: use one of {STATES:?}"
            )));
        }
        let deadline = Instant::now() + timeout;
        loop {
            // Consume what is already there first.
            while let Ok(line) = self.rx.try_recv() {
                self.observe(&line);
            }
            if self.state == Some(state) {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::StateTimeout {
                    name: self.name.clone(),
                    state: state.to_owned(),
                    last: self.state.unwrap_or("none").to_owned(),
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
                        state: state.to_owned(),
                        status,
                        tail: self.tail(20),
                    });
                }
            }
        }
    }

    /// Track the state from one log line. keepalived logs "Entering MASTER
    /// STATE" before it adds the VIP; the VIP is on the interface once it
    /// logs "Sending/queueing gratuitous ARPs on IF for VIP" (it adds the
    /// addresses with a synchronous netlink request in between), so MASTER
    /// counts from that line on.
    fn observe(&mut self, line: &str) {
        match state_of_line(line) {
            Some("MASTER") => self.becoming_master = true,
            Some(s) => {
                self.becoming_master = false;
                self.state = Some(s);
            }
            None if self.becoming_master && line.contains("gratuitous ARPs on") => {
                self.becoming_master = false;
                self.state = Some("MASTER");
            }
            None => {}
        }
    }

    /// The last `n` lines of its output.
    pub fn tail(&self, n: usize) -> String {
        let lines = lock(&self.lines);
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Every line of its output so far.
    pub fn log(&self) -> Vec<String> {
        lock(&self.lines).clone()
    }

    /// Path of the generated configuration file.
    pub fn config_path(&self) -> &Path {
        &self.files[0]
    }
}

/// Pids of the live (not zombie) processes of process group `pgid`.
pub fn live_group_members(pgid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            // /proc/PID/stat: "pid (comm) state ppid pgrp ..."; comm may hold spaces.
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            let Some((_, rest)) = stat.rsplit_once(") ") else {
                return false;
            };
            let mut f = rest.split_whitespace();
            let state = f.next();
            let pgrp = f.nth(1).and_then(|g| g.parse::<i32>().ok());
            state != Some("Z") && pgrp == Some(pgid)
        })
        .collect()
}

/// Wait (bounded) until no live process is left in group `pgid`: after a
/// SIGKILL of the group, the VRRP child (a grandchild of ours, reparented
/// when the parent dies) takes a moment to die.
fn wait_group_gone(pgid: i32, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while !live_group_members(pgid).is_empty() && Instant::now() < deadline {
        // Not our child: there is no exit event we could await.
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn remove_files(files: &[PathBuf]) {
    for f in files {
        let _ = std::fs::remove_file(f);
    }
}

impl Drop for Keepalived {
    fn drop(&mut self) {
        self.kill();
        // A killed master leaves the VIP configured; the namespace may already
        // be gone, in which case there is nothing to remove.
        let _ = Command::new("ip")
            .args([
                "-n",
                &self.ns_name,
                "addr",
                "del",
                &format!("{}/32", self.vip),
            ])
            .args(["dev", &self.ifname])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        remove_files(&self.files);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advert_int_notation() {
        assert_eq!(advert_int(Duration::from_secs(1)).unwrap(), "1");
        assert_eq!(advert_int(Duration::from_millis(100)).unwrap(), "0.1");
        assert_eq!(advert_int(Duration::from_millis(250)).unwrap(), "0.25");
        assert_eq!(advert_int(Duration::from_millis(1500)).unwrap(), "1.5");
        assert!(advert_int(Duration::from_millis(5)).is_err());
        assert!(advert_int(Duration::from_millis(105)).is_err());
        assert!(advert_int(Duration::from_secs(41)).is_err());
    }

    #[test]
    fn state_lines() {
        assert_eq!(
            state_of_line("Fri Jan 1 (VI_LAB) Entering MASTER STATE"),
            Some("MASTER")
        );
        assert_eq!(
            state_of_line("(VI_LAB) Entering BACKUP STATE (init)"),
            Some("BACKUP")
        );
        assert_eq!(
            state_of_line("(VI_LAB) Entering FAULT STATE"),
            Some("FAULT")
        );
        assert_eq!(state_of_line("(VI_LAB) received lower priority"), None);
        assert_eq!(state_of_line("Entering MASTERFUL STATE"), None);
    }

    #[test]
    fn config_has_the_settings() {
        let c = config_text(
            "n0",
            "eth0",
            Ipv4Addr::new(192, 0, 2, 200),
            100,
            Duration::from_millis(100),
        )
        .unwrap();
        for want in [
            "vrrp_version 3",
            "state BACKUP",
            "nopreempt",
            "interface eth0",
            "virtual_router_id 51",
            "priority 100",
            "advert_int 0.1",
            "192.0.2.200/32 dev eth0",
        ] {
            assert!(c.contains(want), "{want} missing in\n{c}");
        }
        assert!(
            config_text(
                "n0",
                "eth0",
                Ipv4Addr::LOCALHOST,
                255,
                Duration::from_secs(1)
            )
            .is_err()
        );
    }
}
