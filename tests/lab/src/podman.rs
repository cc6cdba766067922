//! Pods run by Debian's podman from a Kubernetes Pod manifest (`podman kube
//! play`), inside a lab node's network namespace: the image of `cargo xtask
//! image` run from the YAML that `vip-agent manifest pod` prints.
//!
//! What podman needs on these machines (shared/platform-notes.md): the `runc`
//! runtime (crun fails on the hybrid cgroups), cgroupfs as cgroup manager,
//! explicit default ulimits (in a containers.conf named by `CONTAINERS_CONF`),
//! vfs storage (the storage `cargo xtask image` builds into), and podman
//! started with `nsenter --net=NS` rather than `ip netns exec` (which remounts
//! /sys, so podman finds no /sys/fs/cgroup). A `hostNetwork` pod then lives in
//! the node's namespace.
//!
//! Every pod a [`PodSet`] plays is stopped (SIGTERM, as the kubelet does) and
//! removed on drop, panic included; pods an earlier, killed run left are
//! removed by [`PodSet::new`] (their names carry [`POD_PREFIX`]).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::netns::NetNs;

/// Prefix of every pod the lab plays.
pub const POD_PREFIX: &str = "vip-lab-pod-";
/// Env naming the image under test (set by `cargo xtask test` after `cargo xtask image`).
pub const IMAGE_ENV: &str = "VIP_IMAGE_UNDER_TEST";
/// The runtime podman must use here.
pub const RUNC: &str = "/usr/sbin/runc";

const CONTAINERS_CONF: &str = "\
# Written by the vip-lab (tests/lab/src/podman.rs): what podman needs here.
[containers]
default_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]

[engine]
cgroup_manager = \"cgroupfs\"
";

#[derive(Debug, thiserror::Error)]
pub enum PodmanError {
    #[error("running {what}: {source}")]
    Spawn {
        what: String,
        source: std::io::Error,
    },
    #[error("{what} failed ({status}): {stderr}")]
    Failed {
        what: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the manifest has no `metadata.name: {0}` line to give the node's pod its own name")]
    NoName(String),
}

/// Pods played by this lab, stopped and removed on drop.
pub struct PodSet {
    dir: PathBuf,
    conf: PathBuf,
    pods: Vec<String>,
}

impl PodSet {
    /// A set whose files (containers.conf, manifests) live in `dir` (created;
    /// removed on drop). Removes pods an earlier run left behind.
    pub fn new(dir: &Path) -> Result<Self, PodmanError> {
        std::fs::create_dir_all(dir)?;
        let conf = dir.join("containers.conf");
        std::fs::write(&conf, CONTAINERS_CONF)?;
        let set = Self {
            dir: dir.to_owned(),
            conf,
            pods: Vec::new(),
        };
        let stale = set.podman(&[
            "pod",
            "ps",
            "--filter",
            &format!("name=^{POD_PREFIX}"),
            "--format",
            "{{.Name}}",
        ])?;
        for name in String::from_utf8_lossy(&stale.stdout).lines() {
            let name = name.trim();
            if !name.is_empty() {
                eprintln!("vip-lab: removing pod {name} left by an earlier run");
                set.remove(name);
            }
        }
        Ok(set)
    }

    /// A `podman` command with the lab's options (not in any namespace).
    fn command(&self) -> Command {
        let mut c = Command::new("podman");
        c.env("CONTAINERS_CONF", &self.conf)
            .args(["--storage-driver", "vfs", "--runtime", RUNC]);
        c
    }

    fn podman(&self, args: &[&str]) -> Result<Output, PodmanError> {
        let what = format!("podman {}", args.join(" "));
        let out = self
            .command()
            .args(args)
            .output()
            .map_err(|source| PodmanError::Spawn {
                what: what.clone(),
                source,
            })?;
        check(what, out)
    }

    /// Plays `manifest` (a Pod YAML as `vip-agent manifest pod` prints it) in
    /// `ns`, under the pod name `name` (the kubelet, too, names a static
    /// pod's mirror `<name>-<node>`: one podman holds every lab node's pod,
    /// so each needs its own). Returns once podman has started it.
    pub fn play(
        &mut self,
        ns: &NetNs,
        manifest: &str,
        original_name: &str,
        name: &str,
    ) -> Result<(), PodmanError> {
        let from = format!("\n  name: {original_name}\n");
        if !manifest.contains(&from) {
            return Err(PodmanError::NoName(original_name.to_owned()));
        }
        let yaml = manifest.replacen(&from, &format!("\n  name: {POD_PREFIX}{name}\n"), 1);
        let file = self.dir.join(format!("{name}.yaml"));
        std::fs::write(&file, yaml)?;
        let what = format!("podman kube play {} in {}", file.display(), ns.name());
        let out = Command::new("nsenter")
            .arg(format!("--net={}", ns.path().display()))
            .args(["--", "podman"])
            .args(self.command().get_args())
            .args(["kube", "play"])
            .arg(&file)
            .env("CONTAINERS_CONF", &self.conf)
            .output()
            .map_err(|source| PodmanError::Spawn {
                what: what.clone(),
                source,
            })?;
        // Remember it even if play failed half-way: drop removes what exists.
        self.pods.push(format!("{POD_PREFIX}{name}"));
        check(what, out).map(|_| ())
    }

    /// `podman pod stop -t <grace>`: SIGTERM to the pod's containers, SIGKILL
    /// after `grace` (the pod's terminationGracePeriodSeconds, for the kubelet).
    pub fn stop(&self, name: &str, grace: Duration) -> Result<(), PodmanError> {
        self.podman(&[
            "pod",
            "stop",
            "-t",
            &grace.as_secs().to_string(),
            &format!("{POD_PREFIX}{name}"),
        ])
        .map(|_| ())
    }

    /// The logs of the pod's agent container (`<pod>-<container>`).
    pub fn logs(&self, name: &str, container: &str) -> String {
        match self.podman(&["logs", &format!("{POD_PREFIX}{name}-{container}")]) {
            Ok(out) => format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => format!("(no logs: {e})"),
        }
    }

    /// Stops (SIGTERM, 10 s grace) and removes a pod; errors are printed, not returned.
    fn remove(&self, pod: &str) {
        for args in [
            vec!["pod", "stop", "-t", "10", pod],
            vec!["pod", "rm", "-f", pod],
        ] {
            match self.podman(&args) {
                // Never created (its play failed early) or already removed.
                Err(PodmanError::Failed { stderr, .. }) if stderr.contains("no such pod") => return,
                Err(e) => eprintln!("vip-lab: {e}"),
                Ok(_) => {}
            }
        }
    }
}

impl Drop for PodSet {
    fn drop(&mut self) {
        for pod in std::mem::take(&mut self.pods) {
            self.remove(&pod);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn check(what: String, out: Output) -> Result<Output, PodmanError> {
    if out.status.success() {
        Ok(out)
    } else {
        Err(PodmanError::Failed {
            what,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}
