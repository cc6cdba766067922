//! `vip-agent status`: what the data plane of this node does now, read from
//! the PINNED state only (maps and XDP link under the pin directory), so it
//! works without the API and whatever state the agent is in. Read-only: no
//! map entry and no pin is ever written or removed here.
//!
//! The Lease holder is added when the API answers within `--api-timeout`;
//! otherwise it reads `unknown (API: <error>)`.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aya::maps::{HashMap as BpfHashMap, Map, MapData, PerCpuArray};
use futures::TryStreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use rtnetlink::packet_route::link::{LinkAttribute, LinkXdp, XdpAttached};
use serde_json::{Value, json};
use vip_common::maps::{COUNTERS_LEN, COUNTERS_MAP, Counter, VIPS_MAP};
use vip_common::{PassReason, RefuseReason, VipEntry, VipKey};

use crate::cli::{OutputFormat, StatusArgs};
use crate::clock::MonoTime;
use crate::dataplane::{self, Counters, LINK_PIN, sys};
use crate::election::client::{self, ClientOptions};

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error(
        "nothing pinned at {pin_dir}: no vip-agent runs on interface {ifname} in this network \
         namespace. Fix: start the agent (`vip-agent run --interface {ifname} ...` or its static \
         pod), or pass --pin-dir with the directory it pins to (its --pin-dir / VIP_PIN_DIR)"
    )]
    NothingPinned { pin_dir: PathBuf, ifname: String },
    #[error("reading the pinned map {path}: {source}")]
    Map {
        path: PathBuf,
        source: aya::maps::MapError,
    },
}

/// Whether one VIP is answered now, per its pinned entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VipState {
    pub address: IpAddr,
    /// Entry active and deadline in the future on CLOCK_MONOTONIC.
    pub answering: bool,
    pub active: bool,
    /// Time left on the fence (zero once it passed or when inactive).
    pub fence_left: Duration,
    pub deadline_ns: u64,
}

/// The XDP link pinned under the pin directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XdpState {
    pub link_id: Option<u32>,
    pub prog_id: Option<u32>,
    /// native, skb, hw, multi, not attached, or unknown (why).
    pub mode: String,
}

/// The Lease as the API reports it, or why it could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseState {
    Holder(Option<String>),
    Unknown(String),
}

#[derive(Clone, Debug)]
pub struct Report {
    pub interface: String,
    pub pin_dir: PathBuf,
    pub lease_name: String,
    pub lease_namespace: String,
    pub node_name: Option<String>,
    pub xdp: XdpState,
    pub vips: Vec<VipState>,
    pub counters: Counters,
    pub lease: LeaseState,
}

/// Collects the report: pinned state first (fails only when nothing is
/// pinned), the Lease last (never fails).
pub async fn collect(args: &StatusArgs) -> Result<Report, StatusError> {
    let pin_dir = args
        .pin_dir
        .clone()
        .unwrap_or_else(|| dataplane::default_pin_dir(&args.interface));
    let vips_pin = pin_dir.join(VIPS_MAP);
    if !vips_pin.exists() {
        return Err(StatusError::NothingPinned {
            pin_dir,
            ifname: args.interface.clone(),
        });
    }
    let vips = read_vips(&vips_pin, MonoTime::now())?;
    let counters = read_counters(&pin_dir.join(COUNTERS_MAP))?;
    let xdp = read_xdp(&pin_dir.join(LINK_PIN), &args.interface).await;
    let node_name = args.node_name.clone().or_else(|| {
        nix::unistd::gethostname()
            .ok()
            .map(|h| h.to_string_lossy().into_owned())
    });
    let lease = read_lease(args, node_name.as_deref().unwrap_or("vip-agent-status")).await;
    Ok(Report {
        interface: args.interface.clone(),
        pin_dir,
        lease_name: args.lease_name.clone(),
        lease_namespace: args.lease_namespace.clone(),
        node_name,
        xdp,
        vips,
        counters,
        lease,
    })
}

fn ip_of(key: &VipKey) -> Option<IpAddr> {
    match key.family {
        vip_common::maps::FAMILY_V4 => {
            let a = &key.addr;
            Some(IpAddr::from([a[0], a[1], a[2], a[3]]))
        }
        vip_common::maps::FAMILY_V6 => Some(IpAddr::from(key.addr)),
        _ => None,
    }
}

/// One VIP entry judged at `now`.
pub fn judge(address: IpAddr, entry: &VipEntry, now: MonoTime) -> VipState {
    let active = entry.state == vip_common::maps::STATE_ACTIVE;
    VipState {
        address,
        answering: entry.answers_at(now.as_nanos()),
        active,
        fence_left: if active {
            MonoTime(entry.deadline_ns).saturating_duration_since(now)
        } else {
            Duration::ZERO
        },
        deadline_ns: entry.deadline_ns,
    }
}

fn open_pin(path: &Path) -> Result<MapData, StatusError> {
    MapData::from_pin(path).map_err(|source| StatusError::Map {
        path: path.to_owned(),
        source,
    })
}

fn read_vips(path: &Path, now: MonoTime) -> Result<Vec<VipState>, StatusError> {
    let err = |source| StatusError::Map {
        path: path.to_owned(),
        source,
    };
    let map: BpfHashMap<MapData, VipKey, VipEntry> =
        BpfHashMap::try_from(Map::HashMap(open_pin(path)?)).map_err(err)?;
    let mut vips: Vec<VipState> = map
        .iter()
        .filter_map(Result::ok)
        .filter_map(|(k, e)| Some(judge(ip_of(&k)?, &e, now)))
        .collect();
    vips.sort_by_key(|v| v.address);
    Ok(vips)
}

fn read_counters(path: &Path) -> Result<Counters, StatusError> {
    let err = |source| StatusError::Map {
        path: path.to_owned(),
        source,
    };
    let arr: PerCpuArray<MapData, u64> =
        PerCpuArray::try_from(Map::PerCpuArray(open_pin(path)?)).map_err(err)?;
    let mut values = [0u64; COUNTERS_LEN as usize];
    for (i, v) in values.iter_mut().enumerate() {
        *v = arr.get(&(i as u32), 0).map_err(err)?.iter().sum();
    }
    Ok(Counters(values))
}

/// The pinned link's ids from the kernel; its mode from rtnetlink (the
/// kernel's link info has no mode: IFLA_XDP says which slot runs the program).
async fn read_xdp(link_pin: &Path, ifname: &str) -> XdpState {
    let info = match sys::pinned_link_info(link_pin) {
        Ok(i) => i,
        Err(e) => {
            return XdpState {
                link_id: None,
                prog_id: None,
                mode: format!("unknown (no pinned link at {}: {e})", link_pin.display()),
            };
        }
    };
    let mode = if info.xdp_ifindex == 0 {
        "not attached (link severed)".to_owned()
    } else {
        match xdp_mode(info.xdp_ifindex, info.prog_id).await {
            Ok(m) => m,
            Err(e) => format!("unknown (rtnetlink on {ifname}: {e})"),
        }
    };
    XdpState {
        link_id: Some(info.id),
        prog_id: Some(info.prog_id),
        mode,
    }
}

async fn xdp_mode(ifindex: u32, prog_id: u32) -> Result<String, String> {
    let (conn, handle, _) = rtnetlink::new_connection().map_err(|e| e.to_string())?;
    let conn = tokio::spawn(conn);
    let msg = handle
        .link()
        .get()
        .match_index(ifindex)
        .execute()
        .try_next()
        .await;
    conn.abort();
    let msg = msg.map_err(|e| e.to_string())?.ok_or("no such link")?;
    let xdp: Vec<LinkXdp> = msg
        .attributes
        .into_iter()
        .find_map(|a| match a {
            LinkAttribute::Xdp(x) => Some(x),
            _ => None,
        })
        .unwrap_or_default();
    let slot = |want: fn(&LinkXdp) -> Option<u32>| xdp.iter().find_map(want) == Some(prog_id);
    if slot(|x| match x {
        LinkXdp::DrvProgId(id) => Some(*id),
        _ => None,
    }) {
        return Ok("native".into());
    }
    if slot(|x| match x {
        LinkXdp::SkbProgId(id) => Some(*id),
        _ => None,
    }) {
        return Ok("skb".into());
    }
    // A single program reports only IFLA_XDP_ATTACHED and IFLA_XDP_PROG_ID.
    let attached = xdp.iter().find_map(|x| match x {
        LinkXdp::Attached(a) => Some(*a),
        _ => None,
    });
    Ok(match attached {
        Some(XdpAttached::Driver) => "native",
        Some(XdpAttached::SocketBuffer) => "skb",
        Some(XdpAttached::Hardware) => "hw",
        Some(XdpAttached::None) | None => "not attached",
        _ => "multi (another program shares the interface)",
    }
    .into())
}

async fn read_lease(args: &StatusArgs, identity: &str) -> LeaseState {
    let mut o = ClientOptions::new(identity);
    o.kubeconfig = args.kubeconfig.clone();
    o.api_server = (!args.api_server.is_empty()).then(|| args.api_server.clone());
    o.tls_server_name = args.api_server_tls_name.clone();
    o.connect_timeout = args.api_timeout;
    let get = async {
        let client = client::build_client(&o).await.map_err(|e| e.to_string())?;
        let api: kube::Api<Lease> = kube::Api::namespaced(client, &args.lease_namespace);
        api.get_opt(&args.lease_name)
            .await
            .map_err(|e| e.to_string())
    };
    match tokio::time::timeout(args.api_timeout, get).await {
        Err(_) => LeaseState::Unknown(format!(
            "no answer within {}",
            humantime::format_duration(args.api_timeout)
        )),
        Ok(Err(e)) => LeaseState::Unknown(e),
        Ok(Ok(None)) => LeaseState::Unknown(format!(
            "Lease {}/{} does not exist",
            args.lease_namespace, args.lease_name
        )),
        Ok(Ok(Some(l))) => LeaseState::Holder(l.spec.and_then(|s| s.holder_identity)),
    }
}

fn counter_names() -> Vec<(&'static str, Counter)> {
    vec![
        ("arp_requests", Counter::ArpRequests),
        ("arp_answered", Counter::ArpAnswered),
        ("arp_fenced", Counter::ArpFenced),
        ("arp_refused", Counter::ArpRefused),
        ("arp_claims", Counter::ArpClaims),
        ("ns_requests", Counter::NsRequests),
        ("ns_answered", Counter::NsAnswered),
        ("ns_fenced", Counter::NsFenced),
        ("ns_refused", Counter::NsRefused),
        ("ns_claims", Counter::NsClaims),
        ("too_deep", Counter::TooDeep),
    ]
}

fn ms(d: Duration) -> u64 {
    d.as_millis().min(u128::from(u64::MAX)) as u64
}

impl Report {
    pub fn to_json(&self) -> Value {
        let mut counters = serde_json::Map::new();
        for (name, c) in counter_names() {
            counters.insert(name.into(), self.counters.get(c).into());
        }
        let passed: serde_json::Map<String, Value> = PassReason::ALL
            .iter()
            .map(|r| (r.label().to_owned(), self.counters.passed(*r).into()))
            .collect();
        let refused: serde_json::Map<String, Value> = RefuseReason::ALL
            .iter()
            .map(|r| (r.label().to_owned(), self.counters.refused(*r).into()))
            .collect();
        counters.insert("passed".into(), passed.into());
        counters.insert("refused".into(), refused.into());
        let lease = match &self.lease {
            LeaseState::Holder(h) => json!({"holder": h, "error": null}),
            LeaseState::Unknown(e) => json!({"holder": null, "error": e}),
        };
        json!({
            "interface": self.interface,
            "pin_dir": self.pin_dir.display().to_string(),
            "node_name": self.node_name,
            "xdp": {
                "link_id": self.xdp.link_id,
                "prog_id": self.xdp.prog_id,
                "mode": self.xdp.mode,
            },
            "vips": self.vips.iter().map(|v| json!({
                "address": v.address.to_string(),
                "answering": v.answering,
                "active": v.active,
                "fence_left_ms": ms(v.fence_left),
                "deadline_ns": v.deadline_ns,
            })).collect::<Vec<_>>(),
            "counters": counters,
            "lease": {
                "namespace": self.lease_namespace,
                "name": self.lease_name,
                "holder": lease["holder"],
                "error": lease["error"],
            },
        })
    }

    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "interface {}  pin dir {}",
            self.interface,
            self.pin_dir.display()
        );
        let id = |v: Option<u32>| v.map_or("-".to_owned(), |v| v.to_string());
        let _ = writeln!(
            s,
            "xdp       mode {}  link {}  program {}",
            self.xdp.mode,
            id(self.xdp.link_id),
            id(self.xdp.prog_id)
        );
        let lease = format!("{}/{}", self.lease_namespace, self.lease_name);
        let _ = match &self.lease {
            LeaseState::Holder(Some(h)) => {
                let me = self.node_name.as_deref() == Some(h.as_str());
                writeln!(
                    s,
                    "lease     {lease}  holder {h}{}",
                    if me { " (this node)" } else { "" }
                )
            }
            LeaseState::Holder(None) => writeln!(s, "lease     {lease}  holder none"),
            LeaseState::Unknown(e) => writeln!(s, "lease     {lease}  holder unknown (API: {e})"),
        };
        if self.vips.is_empty() {
            let _ = writeln!(s, "vip       none in the pinned map");
        }
        for v in &self.vips {
            let what = if v.answering {
                format!("ANSWERING  fence {:.3}s left", v.fence_left.as_secs_f64())
            } else if v.active {
                "fenced (deadline passed: the agent stopped renewing)".to_owned()
            } else {
                "fenced (inactive: not the leader)".to_owned()
            };
            let _ = writeln!(s, "vip       {:<40} {what}", v.address);
        }
        let c = &self.counters;
        let _ = writeln!(
            s,
            "counters  (summed over CPUs)\n          arp: requests {} answered {} fenced {} refused {} claims {}\n          ns:  requests {} answered {} fenced {} refused {} claims {}\n          too deep {}",
            c.get(Counter::ArpRequests),
            c.get(Counter::ArpAnswered),
            c.get(Counter::ArpFenced),
            c.get(Counter::ArpRefused),
            c.get(Counter::ArpClaims),
            c.get(Counter::NsRequests),
            c.get(Counter::NsAnswered),
            c.get(Counter::NsFenced),
            c.get(Counter::NsRefused),
            c.get(Counter::NsClaims),
            c.get(Counter::TooDeep),
        );
        let passed: Vec<String> = PassReason::ALL
            .iter()
            .map(|r| format!("{} {}", r.label(), c.passed(*r)))
            .collect();
        let _ = writeln!(s, "          passed: {}", passed.join(", "));
        s
    }
}

/// Runs the command: the report on stdout in the chosen format.
pub async fn run(args: &StatusArgs) -> anyhow::Result<String> {
    let report = collect(args).await?;
    Ok(match args.output {
        OutputFormat::Text => report.to_text(),
        OutputFormat::Json => format!("{:#}\n", report.to_json()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn judges_entries_on_the_monotonic_clock() {
        let mac = [2, 0, 0, 0, 0, 1];
        let ip = IpAddr::from([192, 0, 2, 1]);
        let now = MonoTime(10_000_000_000);
        let active = VipEntry::new(mac, vip_common::maps::STATE_ACTIVE, 11_500_000_000);
        let v = judge(ip, &active, now);
        assert!(v.answering && v.active);
        assert_eq!(v.fence_left, Duration::from_millis(1500));
        let expired = VipEntry::new(mac, vip_common::maps::STATE_ACTIVE, 9_000_000_000);
        let v = judge(ip, &expired, now);
        assert!(!v.answering && v.active);
        assert_eq!(v.fence_left, Duration::ZERO);
        let inactive = VipEntry::new(mac, vip_common::maps::STATE_INACTIVE, 0);
        assert!(!judge(ip, &inactive, now).answering);
    }
}
