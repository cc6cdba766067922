//! Makes the kernel unable to answer for the VIP on the interface, so that
//! the XDP program is the only answerer even when it is gone (detached by
//! someone else, or lost with a private bpffs). See
//! docs/design.md#the-kernel-is-never-an-answerer-invariant-2.
//!
//! The VIP is configured on `lo` ([`crate::addr`]). Then:
//! - IPv6: ndisc answers a neighbour solicitation only for an address of the
//!   receiving device, so never for the VIP on the interface. Nothing to set.
//! - IPv4: with `arp_ignore` 0 (the default) Linux answers ARP on any
//!   interface for any local address, `lo`'s included. With 1 it answers only
//!   for addresses of the receiving interface, with 2 also only from the same
//!   subnet, with 8 never; these three keep the VIP unanswered. The agent
//!   raises `net.ipv4.conf.<interface>.arp_ignore` to 1 when the effective
//!   value (the maximum of `all` and the interface's) is another one.
//! - `arp_announce` 2 on the interface: the kernel never uses the VIP as the
//!   sender address of its own ARP requests (which would teach neighbours the
//!   VIP's MAC from a node that may not lead).
//!
//! kube-proxy in IPVS mode sets the same two values host-wide (its service
//! addresses live on a dummy device); the agent changes only its interface's
//! values and leaves them set on exit (resetting them could make the kernel
//! answer for an address left behind).

use std::path::PathBuf;

use tracing::info;

#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} holds {value:?}, not a number")]
    Parse { path: PathBuf, value: String },
    #[error(
        "setting {path} to {value}: {source} (the agent needs it so that the kernel never answers \
         ARP for the VIP; run it privileged, or set net.ipv4.conf.{ifname}.{key}={value} yourself)"
    )]
    Write {
        path: PathBuf,
        ifname: String,
        key: &'static str,
        value: u32,
        source: std::io::Error,
    },
    #[error(
        "net.ipv4.conf.all.arp_ignore is {0}: with it the kernel answers ARP for the VIP on \
         --interface although the VIP is on lo. Set it to 0, 1, 2 or 8 (sysctl -w \
         net.ipv4.conf.all.arp_ignore=1)"
    )]
    AllArpIgnore(u32),
}

/// What [`ensure`] found and changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Guard {
    pub arp_ignore: u32,
    pub arp_announce: u32,
    /// `(key, old value, new value)` of every sysctl the agent changed.
    pub changed: Vec<(&'static str, u32, u32)>,
}

/// `arp_ignore` values under which the kernel does not answer for an
/// address that is not on the receiving interface.
pub fn arp_ignore_keeps_vip_silent(value: u32) -> bool {
    matches!(value, 1 | 2 | 8)
}

/// The value to write to the interface's `arp_ignore`, if any, given the
/// current `all` and interface values; an error if no interface value helps.
pub fn plan_arp_ignore(all: u32, dev: u32) -> Result<Option<u32>, GuardError> {
    if arp_ignore_keeps_vip_silent(all.max(dev)) {
        return Ok(None);
    }
    if all <= 1 {
        // max(all, 1) == 1.
        return Ok(Some(1));
    }
    Err(GuardError::AllArpIgnore(all))
}

/// The value to write to the interface's `arp_announce`, if any.
pub fn plan_arp_announce(all: u32, dev: u32) -> Option<u32> {
    (all.max(dev) < 2).then_some(2)
}

fn conf_path(ifname: &str, key: &str) -> PathBuf {
    PathBuf::from(format!("/proc/sys/net/ipv4/conf/{ifname}/{key}"))
}

fn read(ifname: &str, key: &str) -> Result<u32, GuardError> {
    let path = conf_path(ifname, key);
    let text = std::fs::read_to_string(&path).map_err(|source| GuardError::Read {
        path: path.clone(),
        source,
    })?;
    text.trim().parse().map_err(|_| GuardError::Parse {
        path,
        value: text.trim().to_owned(),
    })
}

fn write(ifname: &str, key: &'static str, value: u32) -> Result<(), GuardError> {
    let path = conf_path(ifname, key);
    std::fs::write(&path, format!("{value}\n")).map_err(|source| GuardError::Write {
        path,
        ifname: ifname.to_owned(),
        key,
        value,
        source,
    })
}

/// Sets the interface's `arp_ignore` / `arp_announce` where needed (in the
/// agent's network namespace: /proc/sys/net is per namespace).
pub fn ensure(ifname: &str) -> Result<Guard, GuardError> {
    let mut changed = Vec::new();
    let (all_ignore, dev_ignore) = (read("all", "arp_ignore")?, read(ifname, "arp_ignore")?);
    if let Some(v) = plan_arp_ignore(all_ignore, dev_ignore)? {
        write(ifname, "arp_ignore", v)?;
        changed.push(("arp_ignore", dev_ignore, v));
    }
    let (all_announce, dev_announce) =
        (read("all", "arp_announce")?, read(ifname, "arp_announce")?);
    if let Some(v) = plan_arp_announce(all_announce, dev_announce) {
        write(ifname, "arp_announce", v)?;
        changed.push(("arp_announce", dev_announce, v));
    }
    let guard = Guard {
        arp_ignore: read("all", "arp_ignore")?.max(read(ifname, "arp_ignore")?),
        arp_announce: read("all", "arp_announce")?.max(read(ifname, "arp_announce")?),
        changed,
    };
    for (key, old, new) in &guard.changed {
        info!(
            sysctl = %format!("net.ipv4.conf.{ifname}.{key}"),
            old, new, "set so that the kernel never answers ARP for the VIP (it lives on lo)"
        );
    }
    Ok(guard)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arp_ignore_plans() {
        assert_eq!(plan_arp_ignore(0, 0).unwrap(), Some(1));
        assert_eq!(plan_arp_ignore(0, 1).unwrap(), None);
        assert_eq!(plan_arp_ignore(0, 2).unwrap(), None);
        assert_eq!(plan_arp_ignore(0, 3).unwrap(), Some(1));
        assert_eq!(plan_arp_ignore(1, 0).unwrap(), None);
        assert_eq!(plan_arp_ignore(0, 8).unwrap(), None);
        assert_eq!(plan_arp_ignore(8, 0).unwrap(), None);
        assert_eq!(plan_arp_ignore(2, 0).unwrap(), None);
        // all = 3 (answer for any non-host-scope address) cannot be fixed
        // per interface: max(3, x) is 3..8, and only 8 would do; refuse.
        let e = plan_arp_ignore(3, 0).unwrap_err().to_string();
        assert!(e.contains("net.ipv4.conf.all.arp_ignore=1"), "{e}");
        for v in 4..=7 {
            assert!(plan_arp_ignore(v, 0).is_err());
        }
    }

    #[test]
    fn arp_announce_plans() {
        assert_eq!(plan_arp_announce(0, 0), Some(2));
        assert_eq!(plan_arp_announce(1, 0), Some(2));
        assert_eq!(plan_arp_announce(0, 2), None);
        assert_eq!(plan_arp_announce(2, 0), None);
    }
}
