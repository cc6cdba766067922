//! Running real `vip-agent` processes inside lab namespaces.
//!
//! Agents are started with `nsenter --net=/run/netns/NAME`, not `ip netns
//! exec`: the latter gives the process a private mount namespace with its own
//! /sys, so its bpffs pins would vanish with it and a killed agent could not
//! leave its fence behind, which is exactly what the tests must observe.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use vip_common::maps::PROGRAM_NAME;

use crate::agent_log::{self, AgentEvent};
use crate::netns::NetNs;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "vip-agent binary not found at {0} (build it: cargo build -p vip-agent, or set VIP_AGENT_BIN)"
    )]
    NoBinary(PathBuf),
    #[error("starting {what}: {source}")]
    Spawn {
        what: String,
        source: std::io::Error,
    },
    #[error("agent {name}: no log line with {pattern} within {timeout:?}; last lines:\n{tail}")]
    LogTimeout {
        name: String,
        pattern: String,
        timeout: Duration,
        tail: String,
    },
    #[error("agent {name} did not exit within {timeout:?}")]
    ExitTimeout { name: String, timeout: Duration },
    #[error("signal to agent {name}: {source}")]
    Signal { name: String, source: nix::Error },
    #[error("the XDP_PASS program on ifindex {ifindex} in {ns}: {detail}")]
    PassProgram {
        ns: String,
        ifindex: u32,
        detail: String,
    },
}

/// Whether the agent binary `bin` takes `--log-format json` (every build
/// since the flag came; the upgrade test's old build does not). Asked once
/// per binary, from its `run --help`.
pub fn logs_json(bin: &Path) -> Result<bool, Error> {
    static SEEN: Mutex<Vec<(PathBuf, bool)>> = Mutex::new(Vec::new());
    let mut seen = SEEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((_, json)) = seen.iter().find(|(p, _)| p == bin) {
        return Ok(*json);
    }
    let out = Command::new(bin)
        .args(["run", "--help"])
        .output()
        .map_err(|source| Error::Spawn {
            what: format!("{} run --help", bin.display()),
            source,
        })?;
    let json = String::from_utf8_lossy(&out.stdout).contains("--log-format");
    seen.push((bin.to_owned(), json));
    Ok(json)
}

/// Load `object` (the agent's XDP object) and attach its program ([`PROGRAM_NAME`]) in
/// native mode to `ifindex` in `ns`. Its VIP map is empty, so it passes
/// everything: a veth whose peer sends with native `XDP_TX` needs a program
/// of its own, or those frames are lost (platform notes). Detached on drop.
pub fn attach_pass_program(ns: &NetNs, ifindex: u32, object: &[u8]) -> Result<aya::Ebpf, Error> {
    let failed = |detail: String| Error::PassProgram {
        ns: ns.name().to_owned(),
        ifindex,
        detail,
    };
    ns.try_run(|| -> Result<aya::Ebpf, String> {
        let mut ebpf = aya::EbpfLoader::new()
            .load(object)
            .map_err(|e| format!("loading the object: {e}"))?;
        let p: &mut aya::programs::Xdp = ebpf
            .program_mut(PROGRAM_NAME)
            .ok_or_else(|| format!("no program {PROGRAM_NAME} in the object"))?
            .try_into()
            .map_err(|e| format!("{PROGRAM_NAME}: {e}"))?;
        p.load()
            .map_err(|e| format!("loading {PROGRAM_NAME}: {e}"))?;
        p.attach_to_if_index(ifindex, aya::programs::XdpMode::Driver)
            .map_err(|e| format!("attaching in native mode: {e}"))?;
        Ok(ebpf)
    })
    .map_err(|e| failed(e.to_string()))?
    .map_err(failed)
}

/// The `vip-agent` binary: `$VIP_AGENT_BIN`, else next to the running test
/// or lab binary in the cargo target directory.
pub fn agent_bin() -> Result<PathBuf, Error> {
    if let Some(p) = std::env::var_os("VIP_AGENT_BIN") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(Error::NoBinary(p))
        };
    }
    let exe = std::env::current_exe().map_err(|source| Error::Spawn {
        what: "current_exe".into(),
        source,
    })?;
    // target/<profile>/deps/test-xxxx or target/<profile>/vip-lab
    for dir in exe.ancestors().skip(1).take(2) {
        let candidate = dir.join("vip-agent");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(Error::NoBinary(
        exe.parent().unwrap_or(Path::new(".")).join("vip-agent"),
    ))
}

/// A running agent. Killed (SIGCONT + SIGKILL) on drop if still running.
pub struct Agent {
    name: String,
    child: Option<Child>,
    lines: Arc<Mutex<Vec<String>>>,
    rx: mpsc::Receiver<String>,
    seen: usize,
}

impl Agent {
    /// Starts `bin args...` inside `ns` (network namespace only). stderr is
    /// captured line by line (and echoed with a prefix when `VIP_LAB_ECHO` is set).
    pub fn spawn(name: &str, ns: &NetNs, bin: &Path, args: &[String]) -> Result<Self, Error> {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", ns.path().display()))
            .arg("--")
            .arg(bin)
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("VIP_AGENT_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|source| Error::Spawn {
            what: format!("{cmd:?}"),
            source,
        })?;
        let stderr = child.stderr.take().expect("piped");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let echo = std::env::var_os("VIP_LAB_ECHO").is_some();
        let store = lines.clone();
        let tag = name.to_owned();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if echo {
                    eprintln!("[{tag}] {line}");
                }
                store.lock().expect("log lock").push(line.clone());
                if tx.send(line).is_err() {
                    // Nobody listens any more; keep storing.
                }
            }
        });
        Ok(Self {
            name: name.to_owned(),
            child: Some(child),
            lines,
            rx,
            seen: 0,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> Option<Pid> {
        self.child.as_ref().map(|c| Pid::from_raw(c.id() as i32))
    }

    /// Waits for the next log line (after those already consumed) containing
    /// `pattern`. Returns that line.
    pub fn wait_for_log(&mut self, pattern: &str, timeout: Duration) -> Result<String, Error> {
        self.wait_for(&format!("a line containing {pattern:?}"), timeout, |line| {
            line.contains(pattern).then(|| line.to_owned())
        })
    }

    /// Waits for the next log line (after those already consumed) that is
    /// the event `name` (one of `vip_common::events`; see [`agent_log`]).
    pub fn wait_for_event(&mut self, name: &str, timeout: Duration) -> Result<AgentEvent, Error> {
        self.wait_for(&format!("the event {name:?}"), timeout, |line| {
            agent_log::parse(line).filter(|ev| ev.name == name)
        })
    }

    /// Consumes log lines until `found` returns something, or `timeout`.
    fn wait_for<T>(
        &mut self,
        what: &str,
        timeout: Duration,
        mut found: impl FnMut(&str) -> Option<T>,
    ) -> Result<T, Error> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    self.seen += 1;
                    if let Some(t) = found(&line) {
                        return Ok(t);
                    }
                }
                Err(_) => {
                    return Err(Error::LogTimeout {
                        name: self.name.clone(),
                        pattern: what.to_owned(),
                        timeout,
                        tail: self.tail(20),
                    });
                }
            }
        }
    }

    /// Consumes the log lines queued so far, so that a later wait only sees
    /// new ones.
    pub fn drain_log(&mut self) {
        while self.rx.try_recv().is_ok() {
            self.seen += 1;
        }
    }

    /// The last `n` lines of the agent's log.
    pub fn tail(&self, n: usize) -> String {
        let lines = self.lines.lock().expect("log lock");
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    pub fn log(&self) -> Vec<String> {
        self.lines.lock().expect("log lock").clone()
    }

    pub fn signal(&self, sig: Signal) -> Result<(), Error> {
        let pid = self.pid().ok_or_else(|| Error::Signal {
            name: self.name.clone(),
            source: nix::Error::ESRCH,
        })?;
        kill(pid, sig).map_err(|source| Error::Signal {
            name: self.name.clone(),
            source,
        })
    }

    /// Waits for the process to exit; returns its exit status.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<std::process::ExitStatus, Error> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut().ok_or_else(|| Error::ExitTimeout {
            name: self.name.clone(),
            timeout,
        })?;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Ok(status);
            }
            if Instant::now() >= deadline {
                return Err(Error::ExitTimeout {
                    name: self.name.clone(),
                    timeout,
                });
            }
            // Polling a child's exit: no event to await without a reaper thread.
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self, timeout: Duration) -> Result<std::process::ExitStatus, Error> {
        self.signal(Signal::SIGTERM)?;
        self.wait_exit(timeout)
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = Pid::from_raw(child.id() as i32);
            let _ = kill(pid, Signal::SIGCONT);
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Removes a bpffs pin directory (and what is pinned in it) on drop, for
/// tests that give agents their own `--pin-dir`.
pub struct PinDirGuard(pub PathBuf);

impl PinDirGuard {
    pub fn new(tag: &str) -> Self {
        Self(PathBuf::from(format!(
            "/sys/fs/bpf/vip-lab-{}-{tag}",
            std::process::id()
        )))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for PinDirGuard {
    fn drop(&mut self) {
        if let Ok(entries) = std::fs::read_dir(&self.0) {
            for e in entries.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        let _ = std::fs::remove_dir(&self.0);
    }
}
