//! What an earlier agent left pinned, judged before anything is loaded.
//!
//! - The link: attached to our interface (adopt it: atomic program
//!   replacement), severed (its interface was deleted, or someone detached
//!   it: the kernel reports ifindex 0 and `bpf_link_update` fails with
//!   ENOLINK), attached to another interface (foreign), or not an XDP link at
//!   all. All but the first are replaced by a fresh attach, never fatal.
//! - The maps: aya 0.14's `EbpfLoader::map_pin_path` opens an existing pin
//!   as is, without comparing it with the object's definition
//!   (`MapData::create_pinned_by_name`), so a pin from another version (other
//!   type, key or value size, max_entries, flags) would be handed to the new
//!   program. Each pin is compared with the object's definition first; an
//!   incompatible one is removed so the loader creates and pins a fresh map.

use std::fmt;
use std::path::Path;

use aya::maps::{Map, MapData, MapInfo};
use aya::{Ebpf, EbpfLoader};

use super::sys::{self, BPF_LINK_TYPE_XDP};
use super::{DataplaneError, OBJECT};

/// The state of the pinned link, relative to the interface we serve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkPin {
    Missing,
    /// Attached to our interface: adopt it.
    Attached {
        id: u32,
    },
    /// Its interface is gone or it was detached (ifindex 0).
    Severed {
        id: u32,
    },
    /// Attached to another interface.
    Foreign {
        id: u32,
        ifindex: u32,
    },
    /// Something else is pinned there (or it cannot be opened).
    Invalid(String),
}

impl LinkPin {
    pub fn inspect(path: &Path, ifindex: u32) -> Self {
        if !path.exists() {
            return LinkPin::Missing;
        }
        match sys::pinned_link_info(path) {
            Err(e) => LinkPin::Invalid(format!("cannot open it as a link: {e}")),
            Ok(i) if i.link_type != BPF_LINK_TYPE_XDP => {
                LinkPin::Invalid(format!("link {} of type {}, not XDP", i.id, i.link_type))
            }
            Ok(i) if i.xdp_ifindex == 0 => LinkPin::Severed { id: i.id },
            Ok(i) if i.xdp_ifindex != ifindex => LinkPin::Foreign {
                id: i.id,
                ifindex: i.xdp_ifindex,
            },
            Ok(i) => LinkPin::Attached { id: i.id },
        }
    }

    /// Stale: pinned, but not usable for our interface.
    pub fn is_stale(&self) -> bool {
        !matches!(self, LinkPin::Missing | LinkPin::Attached { .. })
    }
}

impl fmt::Display for LinkPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkPin::Missing => write!(f, "no pinned link"),
            LinkPin::Attached { id } => write!(f, "XDP link {id} attached to the interface"),
            LinkPin::Severed { id } => write!(
                f,
                "XDP link {id} severed (its interface was deleted or it was detached)"
            ),
            LinkPin::Foreign { id, ifindex } => {
                write!(
                    f,
                    "XDP link {id} attached to another interface (ifindex {ifindex})"
                )
            }
            LinkPin::Invalid(why) => write!(f, "not a usable link: {why}"),
        }
    }
}

/// A map's layout as the kernel sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapDef {
    pub name: String,
    pub map_type: String,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub flags: u32,
}

impl MapDef {
    fn from_info(name: &str, info: &MapInfo) -> Self {
        Self {
            name: name.to_owned(),
            map_type: info
                .map_type()
                .map(|t| format!("{t:?}"))
                .unwrap_or_else(|e| format!("unknown ({e})")),
            key_size: info.key_size(),
            value_size: info.value_size(),
            max_entries: info.max_entries(),
            flags: info.map_flags(),
        }
    }

    fn layout(&self) -> String {
        format!(
            "{} key {} value {} max_entries {} flags {:#x}",
            self.map_type, self.key_size, self.value_size, self.max_entries, self.flags
        )
    }
}

/// Whether a map is one the agent pins (not aya's log ring or the object's
/// data sections).
pub fn is_pinned_map(name: &str) -> bool {
    !name.starts_with('.') && !name.starts_with("AYA_")
}

fn map_data(map: &Map) -> &MapData {
    macro_rules! data {
        ($($v:ident),* $(,)?) => {
            match map { $(Map::$v(d) => d,)* }
        };
    }
    data!(
        Array,
        ArrayOfMaps,
        BloomFilter,
        CgroupArray,
        CgroupStorage,
        CgrpStorage,
        CpuMap,
        DevMap,
        DevMapHash,
        HashMap,
        HashOfMaps,
        InodeStorage,
        LpmTrie,
        LruHashMap,
        PerCpuArray,
        PerCpuCgroupStorage,
        PerCpuHashMap,
        PerCpuLruHashMap,
        PerfEventArray,
        ProgramArray,
        Queue,
        ReusePortSockArray,
        RingBuf,
        SockHash,
        SockMap,
        SkStorage,
        Stack,
        StackTraceMap,
        Unsupported,
        XskMap,
    )
}

/// The object's pinned maps as the kernel creates them: loads the object
/// once without pins (maps only, no program is loaded) and reads each map's
/// info, so the comparison sees exactly what a fresh load would pin.
pub fn object_maps() -> Result<Vec<MapDef>, DataplaneError> {
    let probe: Ebpf = EbpfLoader::new().load(OBJECT)?;
    let mut defs = Vec::new();
    for (name, map) in probe.maps() {
        if is_pinned_map(name) {
            defs.push(MapDef::from_info(name, &map_data(map).info()?));
        }
    }
    defs.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(defs)
}

/// A pinned map compared with the object's definition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MapPin {
    Missing,
    Compatible,
    /// What was found, for the log.
    Incompatible(String),
}

pub fn inspect_map(path: &Path, want: &MapDef) -> MapPin {
    if !path.exists() {
        return MapPin::Missing;
    }
    match MapInfo::from_pin(path) {
        Err(e) => MapPin::Incompatible(format!("{}: not a map ({e})", want.name)),
        Ok(info) => {
            let found = MapDef::from_info(&want.name, &info);
            if found == *want {
                MapPin::Compatible
            } else {
                MapPin::Incompatible(format!(
                    "{}: pinned {} (id {}), this version needs {}",
                    want.name,
                    found.layout(),
                    info.id(),
                    want.layout()
                ))
            }
        }
    }
}
