//! Run-time repair of the attachment: the pinned XDP link must stay attached
//! to the interface's CURRENT ifindex. Someone running `bpftool link detach`
//! severs it (same ifindex, link reports 0); deleting and recreating the
//! interface severs it too and gives a new ifindex (and maybe a new MAC).
//! Either way a new link is attached and pinned in place of the old one, and
//! the entries keep their state (their MAC follows the interface's).

use std::fmt;

use aya::programs::Xdp;
use aya::programs::links::FdLink;
use vip_common::maps::PROGRAM_NAME;
use vip_common::{VipEntry, VipKey};

use super::sys;
use super::{Dataplane, DataplaneError, LINK_PIN, attach, if_index, if_mac, key_of};
use crate::cli::XdpModeArg;

/// What a repair fixed; the label of `vip_agent_repairs_total{kind}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RepairKind {
    /// The XDP link was detached by someone else (same interface).
    XdpDetached,
    /// The interface was deleted and recreated (new ifindex).
    InterfaceReplaced,
    /// A VIP address vanished while leading.
    AddressMissing,
    /// At start: the pinned link was severed or attached elsewhere.
    StaleLink,
    /// At start: pinned maps from a version with another layout.
    StaleMaps,
}

impl RepairKind {
    pub const ALL: [RepairKind; 5] = [
        RepairKind::XdpDetached,
        RepairKind::InterfaceReplaced,
        RepairKind::AddressMissing,
        RepairKind::StaleLink,
        RepairKind::StaleMaps,
    ];

    pub fn label(self) -> &'static str {
        match self {
            RepairKind::XdpDetached => "xdp_detached",
            RepairKind::InterfaceReplaced => "interface_replaced",
            RepairKind::AddressMissing => "address_missing",
            RepairKind::StaleLink => "stale_link",
            RepairKind::StaleMaps => "stale_maps",
        }
    }
}

/// One repair: its kind, and what was found and done (for the log).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Repair {
    pub kind: RepairKind,
    pub detail: String,
}

impl fmt::Display for Repair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.label(), self.detail)
    }
}

fn mac_str(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

impl Dataplane {
    /// Checks that the pinned link is attached to the interface's current
    /// ifindex and repairs it if not. `Ok(None)`: nothing to do (or the
    /// interface does not exist right now: nothing to attach to; the pinned
    /// fence stays as it is until it comes back).
    pub fn check_attachment(&mut self) -> Result<Option<Repair>, DataplaneError> {
        let Ok(current) = if_index(&self.ifname) else {
            return Ok(None);
        };
        let link_pin = self.pin_dir.join(LINK_PIN);
        let found = sys::pinned_link_info(&link_pin);
        let (old_id, attached_to) = match &found {
            Ok(i) => (Some(i.id), i.xdp_ifindex),
            Err(_) => (None, 0),
        };
        if attached_to == current {
            return Ok(None);
        }
        let what = match (&found, old_id) {
            (Err(e), _) => format!("the link pin {} cannot be opened ({e})", link_pin.display()),
            (Ok(_), Some(id)) if attached_to == 0 => format!("XDP link {id} is severed"),
            (Ok(_), Some(id)) => format!("XDP link {id} is attached to ifindex {attached_to}"),
            (Ok(_), None) => unreachable!("an Ok link info has an id"),
        };
        if current != self.ifindex {
            let old = (self.ifindex, self.mac);
            let mac = if_mac(&self.ifname)?;
            self.retarget_entries(mac)?;
            self.mac = mac;
            self.ifindex = current;
            let new_id = self.reattach(current)?;
            Ok(Some(Repair {
                kind: RepairKind::InterfaceReplaced,
                detail: format!(
                    "interface {} was replaced (ifindex {} -> {current}, MAC {} -> {}) and {what}; \
                     attached XDP link {new_id} to the new interface, re-pinned it, entries keep \
                     their state with the new MAC",
                    self.ifname,
                    old.0,
                    mac_str(old.1),
                    mac_str(mac)
                ),
            }))
        } else {
            let new_id = self.reattach(current)?;
            Ok(Some(Repair {
                kind: RepairKind::XdpDetached,
                detail: format!(
                    "{what} although interface {} (ifindex {current}) still exists (detached by \
                     someone else); attached XDP link {new_id} and re-pinned it",
                    self.ifname
                ),
            }))
        }
    }

    /// Rewrites every entry's MAC, keeping state and deadline.
    fn retarget_entries(&mut self, mac: [u8; 6]) -> Result<(), DataplaneError> {
        let entries: Vec<(VipKey, VipEntry)> =
            self.vips_map.iter().filter_map(Result::ok).collect();
        for (key, e) in entries {
            self.vips_map
                .insert(key, VipEntry::new(mac, e.state, e.deadline_ns), 0)?;
        }
        for ip in &self.vips {
            // Configured VIPs always have an entry (fenced if it was missing).
            if self.vips_map.get(&key_of(*ip), 0).is_err() {
                self.vips_map.insert(
                    key_of(*ip),
                    VipEntry::new(mac, vip_common::maps::STATE_INACTIVE, 0),
                    0,
                )?;
            }
        }
        Ok(())
    }

    /// A fresh link on `ifindex` in the mode attached before, pinned in place
    /// of the old one. Returns the new link's id.
    pub(super) fn reattach(&mut self, ifindex: u32) -> Result<u32, DataplaneError> {
        let mode = match self.mode {
            super::AttachedMode::Native => XdpModeArg::Native,
            super::AttachedMode::Skb => XdpModeArg::Skb,
        };
        let program: &mut Xdp = self
            .ebpf
            .program_mut(PROGRAM_NAME)
            .ok_or(DataplaneError::MissingProgram(PROGRAM_NAME))?
            .try_into()?;
        let (link_id, mode) = attach(program, &self.ifname, ifindex, mode)?;
        self.mode = mode;
        let link = program.take_link(link_id)?;
        let fd_link = FdLink::try_from(link)
            .map_err(|e| DataplaneError::Pin(format!("not a bpf_link: {e}")))?;
        let id = fd_link.info().map(|i| i.id()).unwrap_or(0);
        super::replace_link_pin(&self.pin_dir.join(LINK_PIN), fd_link)?;
        Ok(id)
    }
}
