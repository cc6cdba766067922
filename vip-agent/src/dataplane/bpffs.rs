//! bpffs that outlives the agent.
//!
//! The pins are what keep the fence in place when the agent dies. A bpffs
//! instance lives as long as some mount namespace has it mounted: one the
//! agent mounts in a private mount namespace (`ip netns exec`, which unshares
//! the mount namespace and remounts /sys; a container without the bpffs
//! hostPath) dies with the agent, and with it the pinned link: the XDP
//! program detaches on SIGKILL and the kernel answers for the address left
//! behind. So:
//!
//! The rule. The *reference* mount namespace is PID 1's (`/proc/1/ns/mnt`),
//! or, when that cannot be read (a sandbox hiding PID 1), the one of the
//! oldest ancestor of this process whose namespace can be read.
//! - /sys/fs/bpf is not a bpffs: mount one only when this process is in the
//!   reference mount namespace; otherwise refuse.
//! - /sys/fs/bpf is a bpffs and this process is in another mount namespace
//!   than the reference: compare the device of our /sys/fs/bpf with the
//!   reference's (`/proc/<pid>/root/sys/fs/bpf`): the same (a hostPath or
//!   shared mount) is fine, a different instance (private) is refused. When
//!   the reference's root cannot be read the check cannot be made: accepted
//!   with a warning.
//!
//! Limits. Inside a PID namespace (a container without hostPID) PID 1 and
//! every visible ancestor may share the container's mount namespace: then a
//! bpffs the container's runtime or this agent mounts privately cannot be told
//! from the host's. The shipped manifest mounts the host's /sys/fs/bpf, which
//! is always right.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use tracing::{info, warn};

use super::{BPFFS, DataplaneError};

/// The fix, as printed in the error.
pub const FIX: &str = "mount the host's /sys/fs/bpf (hostPath volume, as the shipped manifest does) \
     or run the agent in the host's mount namespace (nsenter --net, not ip netns exec)";

/// Mount namespace of a process: (device, inode) of /proc/PID/ns/mnt.
fn mnt_ns(pid: &str) -> Option<(u64, u64)> {
    std::fs::metadata(format!("/proc/{pid}/ns/mnt"))
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

fn parent_of(pid: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let ppid = status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))?
        .trim()
        .to_owned();
    (ppid != "0").then_some(ppid)
}

/// The reference process: PID 1 if its mount namespace is readable, else the
/// oldest readable ancestor. `None` when not even our parent can be read.
fn reference() -> Option<(String, (u64, u64))> {
    if let Some(ns) = mnt_ns("1") {
        return Some(("1".into(), ns));
    }
    let mut best = None;
    let mut pid = parent_of("self");
    // Bounded: process trees are shallow; a cycle is impossible but cheap to guard.
    for _ in 0..64 {
        let Some(p) = pid else { break };
        match mnt_ns(&p) {
            Some(ns) => best = Some((p.clone(), ns)),
            None => break,
        }
        pid = parent_of(&p);
    }
    best
}

fn is_bpffs(path: &Path) -> Result<bool, DataplaneError> {
    let statfs = nix::sys::statfs::statfs(path).map_err(DataplaneError::Bpffs)?;
    Ok(statfs.filesystem_type() == nix::sys::statfs::BPF_FS_MAGIC)
}

fn refuse(detail: String) -> DataplaneError {
    DataplaneError::PrivateBpffs(format!(
        "{detail}: pins there would vanish with this process's mount namespace, and a killed \
         agent would leave the VIP to the kernel. Fix: {FIX}"
    ))
}

/// Makes sure [`BPFFS`] is a bpffs that outlives this process (see the
/// module documentation for the exact rule and its limits).
pub fn ensure_bpffs() -> Result<(), DataplaneError> {
    let ours = mnt_ns("self");
    let reference = reference();
    let same_ns = match (&ours, &reference) {
        (Some(o), Some((_, r))) => Some(o == r),
        _ => None,
    };
    if !is_bpffs(Path::new(BPFFS))? {
        return match same_ns {
            Some(true) => {
                info!(path = BPFFS, "mounting bpffs");
                nix::mount::mount(
                    Some("bpf"),
                    BPFFS,
                    Some("bpf"),
                    nix::mount::MsFlags::empty(),
                    None::<&str>,
                )
                .map_err(DataplaneError::Bpffs)
            }
            Some(false) => Err(refuse(format!(
                "{BPFFS} is not a bpffs and this agent runs in a private mount namespace \
                 (not the one of PID {}, the reference: PID 1, or the oldest ancestor whose \
                 namespace is readable)",
                reference.map(|r| r.0).unwrap_or_default()
            ))),
            None => Err(refuse(format!(
                "{BPFFS} is not a bpffs and this agent cannot tell whether its mount namespace \
                 is the host's"
            ))),
        };
    }
    if same_ns != Some(false) {
        return Ok(());
    }
    let (pid, _) = reference.expect("same_ns is Some");
    let theirs: PathBuf = Path::new("/proc")
        .join(&pid)
        .join("root")
        .join("sys/fs/bpf");
    let ours_dev = std::fs::metadata(BPFFS).map(|m| m.dev());
    match (ours_dev, std::fs::metadata(&theirs).map(|m| m.dev())) {
        (Ok(a), Ok(b)) if a == b => Ok(()),
        (Ok(_), Ok(_)) => Err(refuse(format!(
            "{BPFFS} in this agent's mount namespace is another bpffs instance than the one \
             of PID {pid} ({})",
            theirs.display()
        ))),
        _ => {
            warn!(
                path = BPFFS,
                reference = %theirs.display(),
                "running in a private mount namespace and cannot compare its bpffs with the host's: \
                 if it is not the host's, a killed agent's fence vanishes with it ({FIX})"
            );
            Ok(())
        }
    }
}
