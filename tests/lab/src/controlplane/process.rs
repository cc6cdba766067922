//! A control plane process (etcd, kube-apiserver) running in a lab namespace:
//! started with `nsenter --net=...`, its output in a log file, killed on drop.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::Error;
use crate::netns::NetNs;

/// A running process; SIGKILLed and reaped on drop.
#[derive(Debug)]
pub struct Process {
    name: String,
    child: Child,
    log: PathBuf,
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
        let file = File::create(&log).map_err(|source| Error::Io {
            what: format!("creating {}", log.display()),
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
        let child = cmd.spawn().map_err(|source| Error::Io {
            what: format!("starting {cmd:?}"),
            source,
        })?;
        Ok(Self {
            name: name.to_owned(),
            child,
            log,
        })
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
