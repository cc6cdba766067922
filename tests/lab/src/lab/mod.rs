//! The lab: N control-plane nodes and a client in network namespaces on a
//! bridge, an API server, real agents (or keepalived), a TCP service on the
//! VIP in every node, and continuous probes from the client.
//!
//! The API server is, by default ([`ControlPlaneKind::Real`]), a real
//! Kubernetes control plane laid out as kubeadm does: an etcd member and a
//! kube-apiserver in every node namespace, each agent talking to its
//! node-local API server (127.0.0.1:6443) as the user `vip-agent` with the
//! rights of deploy/rbac.yaml; the "api" namespace then only observes the
//! Lease (one watch per API server). [`ControlPlaneKind::Embedded`] puts the
//! home-made Lease server in the "api" namespace instead, for the faults only
//! it can produce (docs/lease-servers.md).
//!
//! Address plan (TestNet1): nodes 192.0.2.11.. / 2001:db8::11.., client
//! 192.0.2.100, "api" namespace 192.0.2.90 (embedded Lease server on :6443),
//! VIP 192.0.2.200 / 2001:db8::200; the stand-in service on VIP:8443 (the real
//! API servers hold VIP:6443 on every node). Agents run with `--xdp-mode skb` by default (generic XDP
//! needs nothing on the veth peer); `xdp_mode: "native"` attaches an
//! `XDP_PASS` program (the agent's own object, whose empty VIP map passes
//! everything) to every node's bridge port, as native `XDP_TX` on veth needs.
//!
//! A scenario run ([`Lab::run_scenario`]): wait for a steady leader (the MAC
//! answering ARP for the VIP, the Lease holder, followers watching), record
//! 300 ms, inject the fault, record until the client sees a new leader answer
//! ARP and TCP (bounded), undo the fault and bring the faulted node back as a
//! healthy member (still recording: a node coming back must not answer
//! twice), record 500 ms more. Events (fault, agent log lines with their own
//! timestamps, Lease changes, leader changes seen by the client) go into
//! [`record::RunRecord::events`].

pub mod cost;
mod cp_faults;
pub mod demo;
mod events;
mod host;
mod lease_watch;
mod members;
pub mod peer_faults;
pub mod peers;
pub mod probe;
pub mod record;
mod scenario;
pub mod service;
mod start;
pub mod steady;
pub mod storm;
mod timeline;
pub mod upgrade;
mod waits;
pub mod window;

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vip_lease_server::{EventType, LeaseServerHandle};

use crate::agent::{Agent, PinDirGuard};
use crate::controlplane::ControlPlane;
use crate::keepalived::Keepalived;
use crate::kube_vip::KubeVip;
use crate::netns::NetNs;
use crate::topology::Lan;
use probe::Prober;
use service::VipService;

pub use host::cleanup_stale;
use host::{TaskGuard, WorkDir};
pub use start::start_control_plane;
use timeline::{Timeline, client_events};

/// What holds the VIP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Implementation {
    /// vip-agent with these timings; `xdp_mode` is "native" or "skb";
    /// `fast_path`: `--fast-path` (peer promises, docs/peer-promises.md).
    Agent {
        lease: Duration,
        renew: Duration,
        retry: Duration,
        xdp_mode: String,
        fast_path: bool,
    },
    /// keepalived (VRRPv3) with this advertisement interval.
    Keepalived { advert: Duration },
    /// kube-vip v1.0.0 as its static pod runs it (ARP, control-plane Lease
    /// `plndr-cp-lock`), timers in whole seconds. Real control plane only.
    KubeVip {
        lease: Duration,
        renew: Duration,
        retry: Duration,
    },
}

impl Implementation {
    /// The agent's defaults: 3 s / 2 s / 500 ms, skb mode.
    pub fn agent_defaults() -> Self {
        Self::Agent {
            lease: Duration::from_secs(3),
            renew: Duration::from_secs(2),
            retry: Duration::from_millis(500),
            xdp_mode: "skb".into(),
            fast_path: false,
        }
    }

    /// Lease 1 s, renew 700 ms, retry 200 ms, skb mode.
    pub fn agent_aggressive() -> Self {
        Self::Agent {
            lease: Duration::from_secs(1),
            renew: Duration::from_millis(700),
            retry: Duration::from_millis(200),
            xdp_mode: "skb".into(),
            fast_path: false,
        }
    }

    /// The fast path (peer promises): lease 3 s, renew 2 s, retry 1 s (its
    /// default: one Lease write per second), skb mode, `--fast-path`.
    pub fn agent_fast_path() -> Self {
        Self::Agent {
            lease: Duration::from_secs(3),
            renew: Duration::from_secs(2),
            retry: Duration::from_secs(1),
            xdp_mode: "skb".into(),
            fast_path: true,
        }
    }

    /// Whether this is vip-agent with `--fast-path`.
    pub fn fast_path(&self) -> bool {
        matches!(
            self,
            Self::Agent {
                fast_path: true,
                ..
            }
        )
    }

    /// kube-vip's defaults: 15 s / 10 s / 2 s.
    pub fn kube_vip_defaults() -> Self {
        Self::kube_vip(crate::kube_vip::Timers::DEFAULTS)
    }

    /// kube-vip's recommended fast settings: 5 s / 3 s / 1 s.
    pub fn kube_vip_fast() -> Self {
        Self::kube_vip(crate::kube_vip::Timers::FAST)
    }

    fn kube_vip(t: crate::kube_vip::Timers) -> Self {
        let s = |n: u32| Duration::from_secs(u64::from(n));
        Self::KubeVip {
            lease: s(t.lease),
            renew: s(t.renew),
            retry: s(t.retry),
        }
    }

    /// The Lease it elects through (keepalived: none; the agent's name).
    pub fn lease_name(&self) -> &'static str {
        match self {
            Self::KubeVip { .. } => crate::kube_vip::LEASE_NAME,
            _ => LEASE_NAME,
        }
    }

    /// e.g. "vip-agent 3s/2s/500ms", "keepalived advert 1s", "kube-vip 15s/10s/2s".
    pub fn label(&self) -> String {
        match self {
            Self::Agent {
                lease,
                renew,
                retry,
                xdp_mode,
                fast_path,
            } => {
                let mode = if xdp_mode == "skb" {
                    String::new()
                } else {
                    format!(" ({xdp_mode})")
                };
                let timers = format!("{}/{}/{}", human(*lease), human(*renew), human(*retry));
                if *fast_path {
                    format!("vip-agent fast path ({timers}){mode}")
                } else {
                    format!("vip-agent {timers}{mode}")
                }
            }
            Self::Keepalived { advert } => format!("keepalived advert {}", human(*advert)),
            Self::KubeVip {
                lease,
                renew,
                retry,
            } => format!(
                "kube-vip {}/{}/{}",
                human(*lease),
                human(*renew),
                human(*retry)
            ),
        }
    }
}

/// `3s`, `700ms`, `1.5s`.
pub fn human(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else if ms < 1000 {
        format!("{ms}ms")
    } else {
        format!("{}s", d.as_secs_f64())
    }
}

/// Which API server the agents elect through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlPlaneKind {
    /// etcd + kube-apiserver in every node namespace (built by `cargo xtask setup`).
    Real,
    /// The home-made Lease server in the "api" namespace.
    Embedded,
}

impl ControlPlaneKind {
    /// "real" or "embedded".
    pub fn name(self) -> &'static str {
        match self {
            ControlPlaneKind::Real => "real",
            ControlPlaneKind::Embedded => "embedded",
        }
    }
}

impl std::str::FromStr for ControlPlaneKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "real" => Ok(ControlPlaneKind::Real),
            "embedded" => Ok(ControlPlaneKind::Embedded),
            other => Err(format!(
                "control plane {other:?}: use \"real\" (etcd + kube-apiserver) or \"embedded\" (the home-made Lease server)"
            )),
        }
    }
}

/// How to build a [`Lab`].
#[derive(Clone, Debug)]
pub struct LabConfig {
    pub nodes: usize,
    pub implementation: Implementation,
    pub probe_interval: Duration,
    /// Print the agents' log lines (prefixed) as the lab reads them.
    pub echo_logs: bool,
    /// The API server (default: the real control plane).
    pub control_plane: ControlPlaneKind,
}

impl Default for LabConfig {
    fn default() -> Self {
        Self {
            nodes: 3,
            implementation: Implementation::agent_defaults(),
            probe_interval: Duration::from_millis(5),
            echo_logs: false,
            control_plane: ControlPlaneKind::Real,
        }
    }
}

/// A fault to inject into the leader (or the whole cluster).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scenario {
    /// SIGTERM to the leader's agent (drain, upgrade); restarted afterwards.
    GracefulStop,
    /// SIGKILL to the leader's agent; the node stays up with the address configured.
    Crash,
    /// SIGSTOP to the leader's agent; SIGCONT after the failover.
    Freeze,
    /// The leader's link cut at the switch (node death); restored afterwards.
    LinkCut,
    /// The leader cut off from the API server only (embedded: Lease server
    /// partition, requests hang; real: the leader's kube-apiserver SIGSTOPped).
    ApiPartition,
    /// The leader's local API server health (`/readyz`) failing (real: its
    /// kube-apiserver SIGTERMed, draining: /readyz fails while it serves for
    /// `--shutdown-delay-duration`, then it exits and is started again).
    HealthFail,
    /// Every agent restarted (SIGTERM + start), followers first, the leader last.
    RollingRestart,
    /// The Lease server restarted (every connection dropped, 300 ms refusing). Embedded only.
    LeaseServerRestart,
    /// The leader's kube-apiserver killed (SIGKILL) and started again. Real only.
    ApiServerRestart,
}

impl Scenario {
    pub const ALL: [Scenario; 9] = [
        Scenario::GracefulStop,
        Scenario::Crash,
        Scenario::Freeze,
        Scenario::LinkCut,
        Scenario::ApiPartition,
        Scenario::HealthFail,
        Scenario::RollingRestart,
        Scenario::LeaseServerRestart,
        Scenario::ApiServerRestart,
    ];

    /// kebab-case name.
    pub fn name(&self) -> &'static str {
        match self {
            Scenario::GracefulStop => "graceful-stop",
            Scenario::Crash => "crash",
            Scenario::Freeze => "freeze",
            Scenario::LinkCut => "link-cut",
            Scenario::ApiPartition => "api-partition",
            Scenario::HealthFail => "health-fail",
            Scenario::RollingRestart => "rolling-restart",
            Scenario::LeaseServerRestart => "lease-server-restart",
            Scenario::ApiServerRestart => "api-server-restart",
        }
    }

    /// Whether the scenario makes sense without a Lease (keepalived).
    pub fn applies_to_keepalived(&self) -> bool {
        matches!(
            self,
            Scenario::GracefulStop | Scenario::Crash | Scenario::Freeze | Scenario::LinkCut
        )
    }

    /// Whether the scenario applies to kube-vip: every one of the real
    /// control plane (kube-vip has no health check: in health-fail its VIP
    /// moves only once the draining API server has exited).
    pub fn applies_to_kube_vip(&self) -> bool {
        self.applies_to(ControlPlaneKind::Real)
    }

    /// Whether the VIP is expected to move to another node.
    pub fn moves_vip(&self) -> bool {
        !matches!(self, Scenario::LeaseServerRestart)
    }

    /// Whether the scenario can run on `kind` of control plane.
    pub fn applies_to(&self, kind: ControlPlaneKind) -> bool {
        match self {
            Scenario::LeaseServerRestart => kind == ControlPlaneKind::Embedded,
            Scenario::ApiServerRestart => kind == ControlPlaneKind::Real,
            _ => true,
        }
    }
}

/// Where the Lease server listens (in the "api" namespace).
const API_HOST: u8 = 90;
/// The API port (embedded Lease server; kube-apiserver's is the same).
const API_PORT: u16 = 6443;
/// Steady recording before the fault.
const STEADY_BEFORE: Duration = Duration::from_millis(300);
/// Steady recording after the faulted node is back.
const STEADY_AFTER: Duration = Duration::from_millis(500);
/// Lease name and namespace used by the agents (their defaults).
const LEASE_NS: &str = "kube-system";
const LEASE_NAME: &str = "vip-control-plane";
/// Health check settings of the lab agents: unhealthy after 3 x 500 ms (short link
/// cuts of the accuracy test must not trip it).
const HEALTH_INTERVAL: &str = "500ms";
const HEALTH_FAILURES: &str = "3";

static LAB_COUNTER: AtomicU32 = AtomicU32::new(0);

/// One committed Lease change, as the lab saw it.
#[derive(Clone, Debug)]
struct LeaseChange {
    at: Instant,
    holder: Option<String>,
    kind: EventType,
    /// Fast-path members in the `vip-agent.io/peers` annotation (`None`:
    /// no annotation).
    members: Option<usize>,
}

/// What runs on a node.
enum Member {
    Agent(Agent),
    Keepalived(Keepalived),
    KubeVip(KubeVip),
    Down,
}

struct Node {
    name: String,
    // Field order is drop order: the process first, then its pins.
    /// In a mutex only so that `Lab` is `Sync` (an agent's log receiver is not).
    member: Mutex<Member>,
    /// Log lines of the current agent already turned into events.
    log_seen: usize,
    pins: PinDirGuard,
    _service: VipService,
}

/// The lab. Everything is torn down on [`Lab::shutdown`] or on drop (so on
/// panic too). Ctrl-C: the caller selects on it and drops the lab (see
/// [`demo::run`]); `netns::install_signal_cleanup` alone would delete the
/// namespaces but leave the agent processes running. Whatever a killed run
/// leaves (namespaces, links, agents, pins) is removed by the next
/// [`Lab::start`] ([`cleanup_stale`]).
pub struct Lab {
    cfg: LabConfig,
    // Field order is drop order: probes, processes, server, namespaces, files.
    prober: Prober,
    nodes: Vec<Node>,
    _lease_task: Option<TaskGuard>,
    _lease_watch: Option<lease_watch::LeaseWatch>,
    server: Option<LeaseServerHandle>,
    /// The real control plane (after the members, before the namespaces).
    cp: Option<ControlPlane>,
    _pass_programs: Vec<aya::Ebpf>,
    api_ns: NetNs,
    lan: Lan,
    workdir: WorkDir,
    lease_log: Arc<Mutex<Vec<LeaseChange>>>,
    kubeconfig: PathBuf,
    agent_bin: Option<PathBuf>,
    vip4: Ipv4Addr,
    vip6: Ipv6Addr,
    tag: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_names() {
        assert_eq!(
            Implementation::agent_defaults().label(),
            "vip-agent 3s/2s/500ms"
        );
        assert_eq!(
            Implementation::agent_aggressive().label(),
            "vip-agent 1s/700ms/200ms"
        );
        assert_eq!(
            Implementation::agent_fast_path().label(),
            "vip-agent fast path (3s/2s/1s)"
        );
        assert!(Implementation::agent_fast_path().fast_path());
        assert!(!Implementation::agent_defaults().fast_path());
        assert_eq!(
            Implementation::Keepalived {
                advert: Duration::from_secs(1)
            }
            .label(),
            "keepalived advert 1s"
        );
        assert_eq!(
            Implementation::kube_vip_defaults().label(),
            "kube-vip 15s/10s/2s"
        );
        assert_eq!(Implementation::kube_vip_fast().label(), "kube-vip 5s/3s/1s");
        let names: Vec<_> = Scenario::ALL.iter().map(Scenario::name).collect();
        assert_eq!(names.len(), 9);
        assert!(
            names
                .iter()
                .all(|n| n.chars().all(|c| c.is_ascii_lowercase() || c == '-'))
        );
        assert_eq!(
            Scenario::ALL
                .iter()
                .filter(|s| s.applies_to_keepalived())
                .count(),
            4
        );
        assert!(!Scenario::LeaseServerRestart.applies_to_kube_vip());
        assert_eq!(
            Scenario::ALL
                .iter()
                .filter(|s| s.applies_to_kube_vip())
                .count(),
            8
        );
    }
}
