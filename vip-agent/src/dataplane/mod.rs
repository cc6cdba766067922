//! The XDP data plane: load (or adopt) the responder, pin it, attach it, and
//! own its maps. Only this module touches the VIP map.
//!
//! Pinning: the program's maps and its XDP link are pinned under `pin_dir`, so
//! an agent that dies leaves the fence in place (entries stop answering at
//! their deadline, requests for the VIP keep being dropped) instead of
//! detaching, which would hand the address back to the kernel's ARP/ND
//! (docs/design.md#3-pins-outlive-the-agent).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray};
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::{Xdp, XdpMode};
use aya::{Ebpf, EbpfLoader};
use tracing::{info, warn};
use vip_common::events;
use vip_common::maps::{
    CLAIMS_MAP, COUNTERS_LEN, COUNTERS_MAP, Counter, PROGRAM_NAME, STATE_ACTIVE, STATE_INACTIVE,
    VIPS_MAP,
};
use vip_common::{ClaimRecord, PassReason, RefuseReason, VipEntry, VipKey};

use crate::cli::XdpModeArg;
use crate::clock::MonoTime;

mod bpffs;
pub mod pins;
pub mod repair;
pub mod sys;

pub use bpffs::FIX as BPFFS_FIX;
pub use repair::{Repair, RepairKind};

/// The eBPF object built by `ebpf-build` (see build.rs), 8-byte aligned as the
/// ELF parser wants.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(env!("VIP_EBPF_OBJECT"));

pub const BPFFS: &str = "/sys/fs/bpf";
/// Name of the XDP link's pin in the pin directory.
pub const LINK_PIN: &str = "link";

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("interface {0:?} does not exist (check --interface)")]
    UnknownInterface(String),
    #[error("reading the MAC address of {ifname}: {source}")]
    Mac {
        ifname: String,
        source: std::io::Error,
    },
    #[error(
        "mounting bpffs at {BPFFS}: {0} (run privileged, or mount it: mount -t bpf bpf {BPFFS})"
    )]
    Bpffs(nix::Error),
    #[error("bpffs: {0}")]
    PrivateBpffs(String),
    #[error("creating pin directory {path}: {source}")]
    PinDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("loading the XDP object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("XDP program: {0}")]
    Program(#[from] aya::programs::ProgramError),
    #[error("BPF map: {0}")]
    Map(#[from] aya::maps::MapError),
    #[error("attaching XDP to {ifname} in {mode} mode: {source}")]
    Attach {
        ifname: String,
        mode: &'static str,
        source: aya::programs::ProgramError,
    },
    #[error("pinning: {0}")]
    Pin(String),
    #[error("map {0} missing from the object")]
    MissingMap(&'static str),
    #[error("program {0} missing from the object")]
    MissingProgram(&'static str),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachedMode {
    Native,
    Skb,
}

impl AttachedMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AttachedMode::Native => "native",
            AttachedMode::Skb => "skb",
        }
    }
}

#[derive(Clone, Debug)]
pub struct DataplaneConfig {
    pub ifname: String,
    pub mode: XdpModeArg,
    /// Where maps and link are pinned; unique per (network namespace, interface).
    pub pin_dir: PathBuf,
    pub vips: Vec<IpAddr>,
}

/// What was found pinned from an earlier agent on start-up.
#[derive(Clone, Debug, Default)]
pub struct Adopted {
    /// A link attached to the interface was pinned (the earlier agent did not
    /// stop gracefully) and now runs this agent's program.
    pub link: bool,
    /// VIPs that had entries in the pinned map (they are fenced now).
    pub vips: Vec<IpAddr>,
    /// Stale pins that were replaced (severed or foreign link, maps of
    /// another layout): counted and logged by the caller.
    pub repairs: Vec<Repair>,
}

pub struct Dataplane {
    // Field order matters for drop: maps and logger before the object.
    vips_map: BpfHashMap<MapData, VipKey, VipEntry>,
    counters: PerCpuArray<MapData, u64>,
    claims: BpfHashMap<MapData, VipKey, ClaimRecord>,
    _logger_task: Option<tokio::task::JoinHandle<()>>,
    ebpf: Ebpf,
    ifname: String,
    ifindex: u32,
    mac: [u8; 6],
    mode: AttachedMode,
    pin_dir: PathBuf,
    /// Names of the pinned maps (removed on shutdown).
    map_pins: Vec<String>,
    vips: Vec<IpAddr>,
}

/// Default pin directory: one per network namespace and interface, so several
/// agents on one host (a lab, or several interfaces) never share maps.
pub fn default_pin_dir(ifname: &str) -> PathBuf {
    use std::os::unix::fs::MetadataExt;
    let ns = std::fs::metadata("/proc/self/ns/net")
        .map(|m| m.ino())
        .unwrap_or(0);
    Path::new(BPFFS)
        .join("vip-agent")
        .join(format!("netns{ns}-{ifname}"))
}

pub fn key_of(ip: IpAddr) -> VipKey {
    match ip {
        IpAddr::V4(v4) => VipKey::v4(v4.octets()),
        IpAddr::V6(v6) => VipKey::v6(v6.octets()),
    }
}

fn ip_of(key: &VipKey) -> Option<IpAddr> {
    match key.family {
        vip_common::maps::FAMILY_V4 => Some(IpAddr::from([
            key.addr[0],
            key.addr[1],
            key.addr[2],
            key.addr[3],
        ])),
        vip_common::maps::FAMILY_V6 => Some(IpAddr::from(key.addr)),
        _ => None,
    }
}

pub fn if_index(ifname: &str) -> Result<u32, DataplaneError> {
    nix::net::if_::if_nametoindex(ifname)
        .map_err(|_| DataplaneError::UnknownInterface(ifname.to_owned()))
}

/// The interface's MAC, read through getifaddrs (AF_PACKET entries) so it
/// works in any network namespace, whatever /sys shows.
pub fn if_mac(ifname: &str) -> Result<[u8; 6], DataplaneError> {
    let err = |msg: String| DataplaneError::Mac {
        ifname: ifname.to_owned(),
        source: std::io::Error::other(msg),
    };
    let addrs = nix::ifaddrs::getifaddrs().map_err(|e| err(e.to_string()))?;
    for ifa in addrs {
        if ifa.interface_name != ifname {
            continue;
        }
        if let Some(mac) = ifa
            .address
            .as_ref()
            .and_then(|a| a.as_link_addr())
            .and_then(|l| l.addr())
        {
            return Ok(mac);
        }
    }
    Err(err(
        "no link-layer address (is it an Ethernet interface?)".into()
    ))
}

/// Whether the interface is up with carrier (IFF_UP and IFF_RUNNING), read
/// through getifaddrs; `None` when it does not exist.
pub fn if_running(ifname: &str) -> Option<bool> {
    use nix::net::if_::InterfaceFlags;
    let addrs = nix::ifaddrs::getifaddrs().ok()?;
    for ifa in addrs {
        if ifa.interface_name == ifname {
            let f = ifa.flags;
            return Some(
                f.contains(InterfaceFlags::IFF_UP) && f.contains(InterfaceFlags::IFF_RUNNING),
            );
        }
    }
    None
}

impl Dataplane {
    /// Loads the program (reusing compatible maps pinned by an earlier
    /// agent), fences every VIP entry it finds, and attaches. Returns what was
    /// adopted so the caller can remove stale addresses before competing for
    /// leadership.
    ///
    /// Entries for the configured VIPs exist from here on, inactive: requests
    /// for them are dropped until [`Dataplane::lead`].
    ///
    /// Stale pins never fail the start (see [`pins`]): pinned maps of another
    /// layout are unpinned and fresh ones (all entries fenced) are pinned in
    /// their place before the program in a pinned, attached link is replaced
    /// atomically (`bpf_link_update`): the old program keeps its own maps
    /// until then, so the interface is never without a fence and no entry is
    /// ever active without the Lease. A severed or foreign link is replaced by
    /// a fresh attach, pinned in its place.
    pub fn open(cfg: &DataplaneConfig) -> Result<(Self, Adopted), DataplaneError> {
        let ifindex = if_index(&cfg.ifname)?;
        let mac = if_mac(&cfg.ifname)?;
        bpffs::ensure_bpffs()?;
        std::fs::create_dir_all(&cfg.pin_dir).map_err(|source| DataplaneError::PinDir {
            path: cfg.pin_dir.clone(),
            source,
        })?;
        let link_pin = cfg.pin_dir.join(LINK_PIN);
        let mut adopted = Adopted::default();

        // Judge the pins before anything is loaded.
        let link_state = pins::LinkPin::inspect(&link_pin, ifindex);
        let defs = pins::object_maps()?;
        let mut replaced_maps = Vec::new();
        for def in &defs {
            let pin = cfg.pin_dir.join(&def.name);
            if let pins::MapPin::Incompatible(found) = pins::inspect_map(&pin, def) {
                // The old program (if still attached) keeps its own reference.
                std::fs::remove_file(&pin)
                    .map_err(|e| DataplaneError::Pin(format!("removing {}: {e}", pin.display())))?;
                replaced_maps.push(found);
            }
        }
        if !replaced_maps.is_empty() {
            adopted.repairs.push(Repair {
                kind: RepairKind::StaleMaps,
                detail: format!(
                    "pinned maps from another version: {}; replaced with fresh maps (entries \
                     fenced) before the program is swapped",
                    replaced_maps.join("; ")
                ),
            });
        }

        let mut loader = EbpfLoader::new();
        for def in &defs {
            loader.map_pin_path(def.name.as_str(), cfg.pin_dir.join(&def.name));
        }
        let mut ebpf = loader.load(OBJECT)?;
        let mut vips_map: BpfHashMap<MapData, VipKey, VipEntry> = BpfHashMap::try_from(
            ebpf.take_map(VIPS_MAP)
                .ok_or(DataplaneError::MissingMap(VIPS_MAP))?,
        )?;
        let counters: PerCpuArray<MapData, u64> = PerCpuArray::try_from(
            ebpf.take_map(COUNTERS_MAP)
                .ok_or(DataplaneError::MissingMap(COUNTERS_MAP))?,
        )?;
        let claims: BpfHashMap<MapData, VipKey, ClaimRecord> = BpfHashMap::try_from(
            ebpf.take_map(CLAIMS_MAP)
                .ok_or(DataplaneError::MissingMap(CLAIMS_MAP))?,
        )?;

        // Fence everything an earlier agent left behind, before anything else.
        let stale: Vec<(VipKey, VipEntry)> = vips_map.iter().filter_map(Result::ok).collect();
        for (key, mut entry) in stale {
            entry.state = STATE_INACTIVE;
            entry.deadline_ns = 0;
            vips_map.insert(key, entry, 0)?;
            if let Some(ip) = ip_of(&key) {
                adopted.vips.push(ip);
            }
        }
        for ip in &cfg.vips {
            vips_map.insert(key_of(*ip), VipEntry::new(mac, STATE_INACTIVE, 0), 0)?;
        }

        let program: &mut Xdp = ebpf
            .program_mut(PROGRAM_NAME)
            .ok_or(DataplaneError::MissingProgram(PROGRAM_NAME))?
            .try_into()?;
        program.load()?;

        let mut mode = None;
        if let pins::LinkPin::Attached { id } = link_state {
            // Replace the earlier program atomically in the pinned link: the
            // interface is never without a fence.
            match adopt_link(program, &link_pin) {
                Ok(()) => {
                    info!(ifname = %cfg.ifname, link_id = id, pin = %link_pin.display(), "adopted the pinned XDP link of an earlier agent");
                    adopted.link = true;
                    // The link keeps the mode it was created with.
                    mode = Some(match cfg.mode {
                        XdpModeArg::Skb => AttachedMode::Skb,
                        _ => AttachedMode::Native,
                    });
                }
                // Severed between the inspection and the update (ENOLINK):
                // the same as severed at inspection.
                Err(e) => adopted.repairs.push(Repair {
                    kind: RepairKind::StaleLink,
                    detail: format!(
                        "pinned XDP link {id} could not be updated ({e}); attached a fresh link \
                         and pinned it in its place"
                    ),
                }),
            }
        } else if link_state.is_stale() {
            adopted.repairs.push(Repair {
                kind: RepairKind::StaleLink,
                detail: format!(
                    "pinned link {}: {link_state}; attached a fresh link to {} (ifindex \
                     {ifindex}) and pinned it in its place",
                    link_pin.display(),
                    cfg.ifname
                ),
            });
        }
        let mode = match mode {
            Some(m) => m,
            None => {
                let (link_id, mode) = attach(program, &cfg.ifname, ifindex, cfg.mode)?;
                let link = program.take_link(link_id)?;
                match FdLink::try_from(link) {
                    Ok(fd_link) => replace_link_pin(&link_pin, fd_link)?,
                    Err(e) => {
                        warn!(error = %e, "XDP attached through netlink, not a bpf_link: it cannot be pinned and will detach if the agent dies")
                    }
                }
                mode
            }
        };
        info!(ifname = %cfg.ifname, ifindex, mode = mode.as_str(), pin_dir = %cfg.pin_dir.display(), event = events::XDP_ATTACHED, "XDP responder attached");
        // After program.load(): the kernel holds its own reference to the log
        // map by now, so the reader may own (and later drop) our fd.
        let logger_task = start_logger(&mut ebpf);
        Ok((
            Self {
                vips_map,
                counters,
                claims,
                _logger_task: logger_task,
                ebpf,
                ifname: cfg.ifname.clone(),
                ifindex,
                mac,
                mode,
                pin_dir: cfg.pin_dir.clone(),
                map_pins: defs.into_iter().map(|d| d.name).collect(),
                vips: cfg.vips.clone(),
            },
            adopted,
        ))
    }

    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    pub fn mode(&self) -> AttachedMode {
        self.mode
    }

    /// Answers for every VIP until `deadline` (CLOCK_MONOTONIC).
    pub fn lead(&mut self, deadline: MonoTime) -> Result<(), DataplaneError> {
        for ip in &self.vips {
            self.vips_map.insert(
                key_of(*ip),
                VipEntry::new(self.mac, STATE_ACTIVE, deadline.as_nanos()),
                0,
            )?;
        }
        Ok(())
    }

    /// Stops answering (requests keep being dropped: fenced).
    pub fn fence(&mut self) -> Result<(), DataplaneError> {
        for ip in &self.vips {
            self.vips_map
                .insert(key_of(*ip), VipEntry::new(self.mac, STATE_INACTIVE, 0), 0)?;
        }
        Ok(())
    }

    /// The entry of one VIP as the kernel sees it.
    pub fn entry(&self, ip: IpAddr) -> Option<VipEntry> {
        self.vips_map.get(&key_of(ip), 0).ok()
    }

    /// Removes entries of VIPs that are not configured (after their stale
    /// addresses were removed).
    pub fn forget_unconfigured(&mut self) -> Result<(), DataplaneError> {
        let keys: Vec<VipKey> = self.vips_map.keys().filter_map(Result::ok).collect();
        let configured: Vec<VipKey> = self.vips.iter().map(|ip| key_of(*ip)).collect();
        for key in keys {
            if !configured.contains(&key) {
                self.vips_map.remove(&key)?;
            }
        }
        Ok(())
    }

    /// The last conflicting claim the program recorded per VIP (another MAC
    /// announcing a VIP while this node answered for it).
    pub fn claims(&self) -> Vec<(IpAddr, ClaimRecord)> {
        self.claims
            .iter()
            .filter_map(Result::ok)
            .filter_map(|(k, c)| Some((ip_of(&k)?, c)))
            .collect()
    }

    /// Counters summed over CPUs.
    pub fn counters(&self) -> Result<Counters, DataplaneError> {
        let mut values = [0u64; COUNTERS_LEN as usize];
        for (i, v) in values.iter_mut().enumerate() {
            *v = self.counters.get(&(i as u32), 0)?.iter().sum();
        }
        Ok(Counters(values))
    }

    /// Graceful stop: entries removed, link unpinned and detached, pins removed.
    /// The caller has fenced and removed the addresses before.
    pub fn shutdown(mut self) -> Result<(), DataplaneError> {
        for ip in self.vips.clone() {
            let _ = self.vips_map.remove(&key_of(ip));
        }
        let pin_dir = self.pin_dir.clone();
        let link_pin = pin_dir.join(LINK_PIN);
        if link_pin.exists() {
            let pinned =
                PinnedLink::from_pin(&link_pin).map_err(|e| DataplaneError::Pin(e.to_string()))?;
            // Unpinning drops the last reference once our fds close: detached.
            drop(
                pinned
                    .unpin()
                    .map_err(|e| DataplaneError::Pin(e.to_string()))?,
            );
        }
        for name in &self.map_pins {
            let _ = std::fs::remove_file(pin_dir.join(name));
        }
        drop(self);
        let _ = std::fs::remove_dir(&pin_dir);
        if let Some(parent) = pin_dir.parent() {
            let _ = std::fs::remove_dir(parent); // only if empty
        }
        info!(pin_dir = %pin_dir.display(), "XDP responder detached and unpinned");
        Ok(())
    }
}

/// Puts our (loaded) program into the XDP link pinned at `link_pin`
/// (`bpf_link_update`: atomic, the interface is never without a program).
fn adopt_link(program: &mut Xdp, link_pin: &Path) -> Result<(), DataplaneError> {
    let pinned = PinnedLink::from_pin(link_pin).map_err(|e| DataplaneError::Pin(e.to_string()))?;
    let fd_link: FdLink = pinned.into();
    let xdp_link = aya::programs::xdp::XdpLink::try_from(fd_link)
        .map_err(|e| DataplaneError::Pin(e.to_string()))?;
    program.attach_to_link(xdp_link)?;
    Ok(())
}

/// Pins `link` at `path`, replacing whatever was pinned there (a stale link
/// is released once its last reference goes).
fn replace_link_pin(path: &Path, link: FdLink) -> Result<(), DataplaneError> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(DataplaneError::Pin(format!(
                "removing {}: {e}",
                path.display()
            )));
        }
    }
    link.pin(path)
        .map(drop)
        .map_err(|e| DataplaneError::Pin(e.to_string()))
}

fn attach(
    program: &mut Xdp,
    ifname: &str,
    ifindex: u32,
    mode: XdpModeArg,
) -> Result<(aya::programs::xdp::XdpLinkId, AttachedMode), DataplaneError> {
    let try_mode = |program: &mut Xdp, m: AttachedMode| {
        let flags = match m {
            AttachedMode::Native => XdpMode::Driver,
            AttachedMode::Skb => XdpMode::Skb,
        };
        program
            .attach_to_if_index(ifindex, flags)
            .map(|id| (id, m))
            .map_err(|source| DataplaneError::Attach {
                ifname: ifname.to_owned(),
                mode: m.as_str(),
                source,
            })
    };
    match mode {
        XdpModeArg::Native => try_mode(program, AttachedMode::Native),
        XdpModeArg::Skb => try_mode(program, AttachedMode::Skb),
        XdpModeArg::Auto => match try_mode(program, AttachedMode::Native) {
            Ok(r) => Ok(r),
            Err(e) => {
                warn!(error = %e, "native XDP not available, falling back to skb (generic) mode");
                try_mode(program, AttachedMode::Skb)
            }
        },
    }
}

/// Forwards `aya-log-ebpf` records to tracing (through the `log` bridge).
/// The program logs only on rare paths, so a slow poll is enough.
fn start_logger(ebpf: &mut Ebpf) -> Option<tokio::task::JoinHandle<()>> {
    let mut logger = match aya_log::EbpfLogger::init(ebpf) {
        Ok(l) => l,
        Err(e) => {
            warn!(error = %e, "eBPF logs unavailable");
            return None;
        }
    };
    let handle = tokio::runtime::Handle::try_current().ok()?;
    Some(handle.spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
        loop {
            tick.tick().await;
            logger.flush();
        }
    }))
}

/// A snapshot of the program's counters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counters(pub [u64; COUNTERS_LEN as usize]);

impl Counters {
    pub fn get(&self, c: Counter) -> u64 {
        self.0[c as usize]
    }

    pub fn passed(&self, r: PassReason) -> u64 {
        self.0[r.counter_index() as usize]
    }

    pub fn refused(&self, r: RefuseReason) -> u64 {
        self.0[r.counter_index() as usize]
    }

    pub fn passed_by_reason(&self) -> BTreeMap<&'static str, u64> {
        PassReason::ALL
            .iter()
            .map(|r| (r.label(), self.passed(*r)))
            .collect()
    }
}
