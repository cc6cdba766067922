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
//! - In the reference mount namespace: /sys/fs/bpf is used, mounted first if
//!   it is not a bpffs.
//! - In another mount namespace (a container, `ip netns exec`): if /sys/fs/bpf
//!   is not a bpffs, one is mounted; then the device of our /sys/fs/bpf is
//!   compared with the reference's (`/proc/<pid>/root/sys/fs/bpf`). The same
//!   (a hostPath bind, or our mount propagated through a Bidirectional
//!   hostPath) is fine; a different instance (private) is refused, and a
//!   mount we made is undone. When the reference's root cannot be read, a
//!   bpffs that was already there is accepted with a warning, and one we
//!   would have to mount is refused.
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

fn mount_bpffs() -> Result<(), DataplaneError> {
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

/// Device of /sys/fs/bpf as the reference process sees it.
fn reference_dev(pid: &str) -> (PathBuf, std::io::Result<u64>) {
    let theirs = Path::new("/proc").join(pid).join("root/sys/fs/bpf");
    let dev = std::fs::metadata(&theirs).map(|m| m.dev());
    (theirs, dev)
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
    let mounted = is_bpffs(Path::new(BPFFS))?;
    if same_ns == Some(true) {
        return if mounted { Ok(()) } else { mount_bpffs() };
    }
    let Some((pid, _)) = reference else {
        return if mounted {
            Ok(())
        } else {
            Err(refuse(format!(
                "{BPFFS} is not a bpffs and this agent cannot tell whether its mount namespace \
                 is the host's"
            )))
        };
    };
    // A private mount namespace: the bpffs must be (or, mounted now, reach)
    // the reference's: a hostPath with Bidirectional propagation does.
    if !mounted {
        mount_bpffs()?;
    }
    let ours_dev = std::fs::metadata(BPFFS).map(|m| m.dev());
    let (theirs, their_dev) = reference_dev(&pid);
    let verdict = match (&ours_dev, &their_dev) {
        (Ok(a), Ok(b)) if a == b => Ok(()),
        (Ok(_), Ok(_)) => Err(refuse(format!(
            "{BPFFS} in this agent's private mount namespace{} is another bpffs instance than the \
             one of PID {pid} ({}, the reference: PID 1, or the oldest ancestor whose \
             namespace is readable)",
            if mounted { "" } else { " (mounted just now)" },
            theirs.display()
        ))),
        _ if !mounted => Err(refuse(format!(
            "{BPFFS} was not a bpffs in this agent's private mount namespace and whether a \
             bpffs mounted there reaches the host cannot be checked ({} unreadable)",
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
    };
    if verdict.is_err() && !mounted {
        // Leave nothing behind: our mount is private anyway, but be tidy.
        let _ = nix::mount::umount2(BPFFS, nix::mount::MntFlags::MNT_DETACH);
    }
    verdict
}
