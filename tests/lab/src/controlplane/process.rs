//! A control plane process (etcd, kube-apiserver) running in a lab namespace:
//! started with `nsenter --net=...`, its output in a log file, killed on drop;
//! it can be signalled and restarted with the same command line (the
//! scenarios' API server faults).

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::Error;
use crate::netns::NetNs;

/// A running process; SIGKILLed and reaped on drop.
#[derive(Debug)]
pub struct Process {
    name: String,
    child: Child,
    log: PathBuf,
    bin: PathBuf,
    args: Vec<String>,
}

/// `nsenter --net=NS -- bin args...`, output appended to `log`.
fn start(ns: &NetNs, bin: &Path, args: &[String], log: &Path) -> Result<Child, Error> {
    let file: File = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|source| Error::Io {
            what: format!("opening {}", log.display()),
            source,
        })?;
    let err = file.try_clone().map_err(|source| Error::Io {
        what: format!("duplicating {}", log.display()),
        source,
    })?;
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net={}", ns.path().display()))
        .arg("--")
        .arg(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(err);
    cmd.spawn().map_err(|source| Error::Io {
        what: format!("starting {cmd:?}"),
        source,
    })
}

impl Process {
    /// Starts `bin args...` in `ns` (network namespace only); stdout and stderr
    /// go to `log`.
    pub fn spawn(
        name: &str,
        ns: &NetNs,
        bin: &Path,
        args: &[String],
        log: PathBuf,
    ) -> Result<Self, Error> {
        let _ = std::fs::remove_file(&log);
        let child = start(ns, bin, args, &log)?;
        Ok(Self {
            name: name.to_owned(),
            child,
            log,
            bin: bin.to_owned(),
            args: args.to_vec(),
        })
    }

    /// Kill it if it still runs (SIGKILL), reap it, and start it again in
    /// `ns` with the same command line; the log is appended to.
    pub fn restart(&mut self, ns: &NetNs) -> Result<(), Error> {
        self.kill();
        self.child = start(ns, &self.bin, &self.args, &self.log)?;
        Ok(())
    }

    /// Send `sig` to it (nothing once it has exited).
    pub fn signal(&mut self, sig: Signal) -> Result<(), Error> {
        if self.exited().is_some() {
            return Ok(());
        }
        let pid = nix::unistd::Pid::from_raw(self.child.id().cast_signed());
        nix::sys::signal::kill(pid, sig).map_err(|e| Error::Io {
            what: format!("sending {sig} to {}", self.name),
            source: e.into(),
        })
    }

    /// Wait (bounded) until it has exited.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.exited() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            // Bounded poll: a child's exit gives this thread no event to wait on.
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The name given at start (e.g. `etcd-n0`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its process id (the binary itself: nsenter execs it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its exit status, if it has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The last `n` lines of its log.
    pub fn tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// SIGKILLs it (if still running) and reaps it.
    pub fn kill(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }

    /// Its log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}
