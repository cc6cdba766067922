//! The lab: N control-plane nodes and a client in network namespaces on a
//! bridge, the embedded Lease server in its own "api" namespace on the same
//! bridge, real agents (or keepalived), a TCP service on the VIP in every
//! node, and continuous probes from the client.
//!
//! Address plan (TestNet1): nodes 192.0.2.11.. / 2001:db8::11.., client
//! 192.0.2.100, Lease server 192.0.2.90:6443, VIP 192.0.2.200 /
//! 2001:db8::200. Agents run with `--xdp-mode skb` by default (generic XDP
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

pub mod demo;
pub mod probe;
pub mod record;
pub mod service;
pub mod steady;
pub mod storm;
pub mod upgrade;

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, anyhow, bail};
use nix::sys::signal::Signal;

use crate::agent::{Agent, PinDirGuard};
use crate::keepalived::Keepalived;
use crate::netns::{self, NetNs};
use crate::packet_socket::format_mac;
use crate::topology::{BRIDGE, LAN_IFNAME, Lan};
use probe::{ClientView, Prober, SERVICE_PORT};
use record::{Event, RunRecord};
use service::VipService;
use vip_lease_server::{EventType, LeaseServer, LeaseServerHandle, LeaseServerOptions, Target};

/// What holds the VIP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Implementation {
    /// vip-agent with these timings; `xdp_mode` is "native" or "skb".
    Agent {
        lease: Duration,
        renew: Duration,
        retry: Duration,
        xdp_mode: String,
    },
    /// keepalived (VRRPv3) with this advertisement interval.
    Keepalived { advert: Duration },
}

impl Implementation {
    /// The agent's defaults: 3 s / 2 s / 500 ms, skb mode.
    pub fn agent_defaults() -> Self {
        Self::Agent {
            lease: Duration::from_secs(3),
            renew: Duration::from_secs(2),
            retry: Duration::from_millis(500),
            xdp_mode: "skb".into(),
        }
    }

    /// Lease 1 s, renew 700 ms, retry 200 ms, skb mode.
    pub fn agent_aggressive() -> Self {
        Self::Agent {
            lease: Duration::from_secs(1),
            renew: Duration::from_millis(700),
            retry: Duration::from_millis(200),
            xdp_mode: "skb".into(),
        }
    }

    /// e.g. "vip-agent 3s/2s/500ms", "keepalived advert 1s".
    pub fn label(&self) -> String {
        match self {
            Self::Agent {
                lease,
                renew,
                retry,
                xdp_mode,
            } => {
                let mode = if xdp_mode == "skb" {
                    String::new()
                } else {
                    format!(" ({xdp_mode})")
                };
                format!(
                    "vip-agent {}/{}/{}{mode}",
                    human(*lease),
                    human(*renew),
                    human(*retry)
                )
            }
            Self::Keepalived { advert } => format!("keepalived advert {}", human(*advert)),
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

/// How to build a [`Lab`].
#[derive(Clone, Debug)]
pub struct LabConfig {
    pub nodes: usize,
    pub implementation: Implementation,
    pub probe_interval: Duration,
    /// Print the agents' log lines (prefixed) as the lab reads them.
    pub echo_logs: bool,
}

impl Default for LabConfig {
    fn default() -> Self {
        Self {
            nodes: 3,
            implementation: Implementation::agent_defaults(),
            probe_interval: Duration::from_millis(5),
            echo_logs: false,
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
    /// The leader cut off from the API server only (Lease server partition, hang).
    ApiPartition,
    /// The leader's local API server health (`/readyz`) failing.
    HealthFail,
    /// Every agent restarted (SIGTERM + start), followers first, the leader last.
    RollingRestart,
    /// The Lease server restarted (every connection dropped, 300 ms refusing).
    LeaseServerRestart,
}

impl Scenario {
    pub const ALL: [Scenario; 8] = [
        Scenario::GracefulStop,
        Scenario::Crash,
        Scenario::Freeze,
        Scenario::LinkCut,
        Scenario::ApiPartition,
        Scenario::HealthFail,
        Scenario::RollingRestart,
        Scenario::LeaseServerRestart,
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
        }
    }

    /// Whether the scenario makes sense without a Lease (keepalived).
    pub fn applies_to_keepalived(&self) -> bool {
        matches!(
            self,
            Scenario::GracefulStop | Scenario::Crash | Scenario::Freeze | Scenario::LinkCut
        )
    }

    /// Whether the VIP is expected to move to another node.
    pub fn moves_vip(&self) -> bool {
        !matches!(self, Scenario::LeaseServerRestart)
    }
}

/// Where the Lease server listens (in the "api" namespace).
const API_HOST: u8 = 90;
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
}

/// What runs on a node.
enum Member {
    Agent(Agent),
    Keepalived(Keepalived),
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

/// A temporary directory removed (recursively) on drop.
struct WorkDir(PathBuf);

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Aborts a tokio task on drop.
struct TaskGuard(tokio::task::JoinHandle<()>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
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
    server: Option<LeaseServerHandle>,
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

/// Time of an agent log line (tracing's RFC 3339 prefix) since `wall0`.
fn log_time(line: &str, wall0: SystemTime) -> Option<Duration> {
    let ts: k8s_openapi::jiff::Timestamp = line.split_whitespace().next()?.parse().ok()?;
    let t = ts.as_nanosecond();
    let t0 = i128::try_from(wall0.duration_since(UNIX_EPOCH).ok()?.as_nanos()).ok()?;
    let d = u64::try_from(t - t0).ok()?;
    Some(Duration::from_nanos(d))
}

/// A short description of an interesting agent log line.
fn describe_log(node: &str, line: &str) -> Option<String> {
    let field = |key: &str| {
        line.split_whitespace()
            .find_map(|t| t.strip_prefix(key))
            .map(|v| v.trim_matches('"').to_owned())
    };
    let what = if line.contains("acquired the lease") {
        format!(
            "acquired the Lease (previous holder {:?})",
            field("previous_holder=").unwrap_or_default()
        )
    } else if line.contains("leading: answering for the VIP") {
        "fence active, VIP address added: answering".into()
    } else if line.contains("could not renew the lease before the fence deadline") {
        "fence deadline passed: silent".into()
    } else if line.contains("stepping down") {
        format!(
            "stepping down ({})",
            field("reason=").unwrap_or_else(|| "?".into())
        )
    } else if line.contains("lease released") {
        "Lease released".into()
    } else if line.contains("following: VIP fenced and removed") {
        "VIP fenced, address removed".into()
    } else if line.contains("health check failing") {
        "health check failing: unhealthy".into()
    } else if line.contains("health check passing again") {
        "health check passing again".into()
    } else if line.contains("SIGTERM: stopping") {
        "SIGTERM received".into()
    } else if line.contains("adopted it") {
        "adopted the pinned fence of the earlier agent".into()
    } else if line.contains("removed a stale VIP address") {
        format!(
            "removed the stale VIP address {}",
            field("ip=").unwrap_or_default()
        )
    } else if line.contains("renew failed") {
        "renew failed".into()
    } else if line.contains("lost the lease") {
        "lost the Lease".into()
    } else if line.contains("leader election starting") {
        "started, competing".into()
    } else {
        return None;
    };
    Some(format!("{node}: {what}"))
}

/// Remove the lab's leftovers of earlier runs whose process is gone: agents
/// still running with a pin dir `/sys/fs/bpf/vip-lab-<pid>-...`, then the pin dirs.
fn cleanup_stale_pins_and_agents() {
    let stale = |name: &str| -> bool {
        let Some(rest) = name.strip_prefix("vip-lab-") else {
            return false;
        };
        let Some((pid, _)) = rest.split_once('-') else {
            return false;
        };
        let Ok(pid) = pid.parse::<i32>() else {
            return false;
        };
        pid != std::process::id() as i32 && !Path::new(&format!("/proc/{pid}")).exists()
    };
    if let Ok(procs) = std::fs::read_dir("/proc") {
        for p in procs.flatten() {
            let Ok(pid) = p.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(cmdline) = std::fs::read(p.path().join("cmdline")) else {
                continue;
            };
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let is_agent = args.first().is_some_and(|a| a.ends_with("vip-agent"));
            let stale_pin = args.windows(2).any(|w| {
                w[0] == "--pin-dir" && w[1].strip_prefix("/sys/fs/bpf/").is_some_and(&stale)
            });
            if is_agent && stale_pin {
                eprintln!("vip-lab: killing agent {pid} left by an earlier run");
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGCONT);
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }
    if let Ok(dirs) = std::fs::read_dir("/sys/fs/bpf") {
        for d in dirs.flatten() {
            let name = d.file_name().to_string_lossy().into_owned();
            if stale(&name) {
                eprintln!("vip-lab: removing stale pins {}", d.path().display());
                drop(PinDirGuard(d.path()));
            }
        }
    }
}

/// Remove everything earlier, killed runs left behind (namespaces, links,
/// pins, agents). Safe to call while other labs of this process run.
pub fn cleanup_stale() -> anyhow::Result<()> {
    cleanup_stale_pins_and_agents();
    let report = netns::cleanup_stale().context("removing stale namespaces")?;
    if !report.namespaces.is_empty() || !report.root_links.is_empty() {
        eprintln!(
            "vip-lab: removed leftovers of an earlier run: {:?} {:?}",
            report.namespaces, report.root_links
        );
    }
    Ok(())
}

/// Load the agent's XDP object and attach it (its VIP map empty: XDP_PASS for
/// everything) in native mode to the bridge-side port of every node.
fn attach_pass_programs(lan: &Lan) -> anyhow::Result<Vec<aya::Ebpf>> {
    let object = ebpf_build::build(false).map_err(anyhow::Error::msg)?;
    let bytes = std::fs::read(&object).with_context(|| format!("reading {}", object.display()))?;
    let mut out = Vec::new();
    for i in 0..lan.len() {
        let (ns, port) = lan.node_port(i);
        let ifindex = lan.member(i).port_ifindex();
        let ebpf = ns
            .try_run(|| -> anyhow::Result<aya::Ebpf> {
                let mut ebpf = aya::EbpfLoader::new().load(&bytes)?;
                let p: &mut aya::programs::Xdp = ebpf
                    .program_mut("vip_xdp")
                    .ok_or_else(|| anyhow!("no program vip_xdp in the object"))?
                    .try_into()?;
                p.load()?;
                p.attach_to_if_index(ifindex, aya::programs::XdpMode::Driver)?;
                Ok(ebpf)
            })?
            .with_context(|| format!("attaching the XDP_PASS program to port {port}"))?;
        out.push(ebpf);
    }
    Ok(out)
}

/// Plug the "api" namespace into the LAN's bridge with `ip`/24.
fn plug_api(lan: &Lan, ip: Ipv4Addr) -> anyhow::Result<NetNs> {
    let api = NetNs::new("api")?;
    let sw = lan.switch();
    sw.exec_ok(&[
        "link",
        "add",
        "api",
        "type",
        "veth",
        "peer",
        "name",
        LAN_IFNAME,
        "netns",
        api.name(),
    ])?;
    sw.exec_ok(&["link", "set", "dev", "api", "master", BRIDGE])?;
    sw.exec_ok(&["link", "set", "dev", "api", "up"])?;
    api.exec_ok(&["addr", "add", &format!("{ip}/24"), "dev", LAN_IFNAME])?;
    api.exec_ok(&["link", "set", "dev", LAN_IFNAME, "up"])?;
    let t = Duration::from_secs(5);
    api.wait_oper_up(LAN_IFNAME, t)?;
    sw.wait_oper_up("api", t)?;
    sw.wait_link(
        "api",
        "bridge port forwarding",
        t,
        netns::bridge_port_forwarding,
    )?;
    Ok(api)
}

/// Run a blocking closure on the blocking pool with `agent` moved in and back.
async fn with_agent<T: Send + 'static>(
    agent: Agent,
    f: impl FnOnce(&mut Agent) -> T + Send + 'static,
) -> anyhow::Result<(Agent, T)> {
    tokio::task::spawn_blocking(move || {
        let mut agent = agent;
        let r = f(&mut agent);
        (agent, r)
    })
    .await
    .map_err(|e| anyhow!("agent task: {e}"))
}

/// Events of one run: times since the run started.
struct Timeline {
    start: Instant,
    wall: SystemTime,
    events: Vec<Event>,
}

impl Timeline {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            wall: SystemTime::now(),
            events: Vec::new(),
        }
    }

    fn now(&self) -> Duration {
        self.start.elapsed()
    }

    fn at(&self, t: Instant) -> Duration {
        t.saturating_duration_since(self.start)
    }

    fn push(&mut self, what: impl Into<String>) {
        let at = self.now();
        self.push_at(at, what);
    }

    fn push_at(&mut self, at: Duration, what: impl Into<String>) {
        self.events.push(Event {
            at,
            what: what.into(),
        });
    }
}

impl Lab {
    /// Build the topology, start the Lease server, the services, the probes
    /// and the agents (or keepalived); returns once every member runs.
    pub async fn start(cfg: LabConfig) -> anyhow::Result<Lab> {
        Self::start_with_agent_bin(cfg, None).await
    }

    /// [`Lab::start`] with the agents running `bin` (default: [`crate::agent::agent_bin`]).
    pub async fn start_with_agent_bin(cfg: LabConfig, bin: Option<PathBuf>) -> anyhow::Result<Lab> {
        crate::skip::ensure_root()?;
        cleanup_stale()?;
        let tag = LAB_COUNTER.fetch_add(1, Ordering::Relaxed);
        let lan = Lan::new(cfg.nodes).context("building the LAN")?;
        let vip4 = lan.vip_v4(0);
        let vip6 = lan.vip_v6(0);
        let client_ip = lan
            .client()
            .v4()
            .ok_or_else(|| anyhow!("client without IPv4"))?;
        let api_ip = Ipv4Addr::from((u32::from(client_ip) & 0xffff_ff00) | u32::from(API_HOST));
        let api_ns = plug_api(&lan, api_ip).context("plugging the api namespace")?;
        let pass_programs = match &cfg.implementation {
            Implementation::Agent { xdp_mode, .. } if xdp_mode == "native" => {
                attach_pass_programs(&lan)?
            }
            _ => Vec::new(),
        };

        let workdir =
            WorkDir(std::env::temp_dir().join(format!("vip-lab-{}-{tag}", std::process::id())));
        std::fs::create_dir_all(&workdir.0)
            .with_context(|| format!("creating {}", workdir.0.display()))?;
        let kubeconfig = workdir.0.join("kubeconfig");

        let (server, lease_task, lease_log) =
            if matches!(cfg.implementation, Implementation::Agent { .. }) {
                let listener = api_ns
                    .try_run(|| std::net::TcpListener::bind((api_ip, SERVICE_PORT)))?
                    .context("binding the Lease server in the api namespace")?;
                let server = LeaseServer::start_with_listener(
                    LeaseServerOptions {
                        advertise: Some(api_ip.into()),
                        ..LeaseServerOptions::default()
                    },
                    listener,
                )
                .await
                .context("starting the Lease server")?;
                server.write_kubeconfig(&kubeconfig)?;
                let log = Arc::new(Mutex::new(Vec::new()));
                let mut rx = server.subscribe();
                let sink = log.clone();
                let task = tokio::spawn(async move {
                    while let Ok(ev) = rx.recv().await {
                        if ev.name != LEASE_NAME {
                            continue;
                        }
                        let holder = ev
                            .object
                            .spec
                            .as_ref()
                            .and_then(|s| s.holder_identity.clone())
                            .filter(|h| !h.is_empty() && ev.kind != EventType::Deleted);
                        sink.lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .push(LeaseChange {
                                at: Instant::now(),
                                holder,
                                kind: ev.kind,
                            });
                    }
                });
                (Some(server), Some(TaskGuard(task)), log)
            } else {
                (None, None, Arc::new(Mutex::new(Vec::new())))
            };

        let agent_bin = match cfg.implementation {
            Implementation::Agent { .. } => Some(match bin {
                Some(b) => b,
                None => crate::agent::agent_bin()?,
            }),
            Implementation::Keepalived { .. } => None,
        };
        let v6 = lan.client().v6().map(|c| (c, vip6));
        let prober = Prober::start(
            lan.client().ns(),
            LAN_IFNAME,
            client_ip,
            vip4,
            v6,
            cfg.probe_interval,
            Instant::now(),
        )?;
        let mut nodes = Vec::with_capacity(cfg.nodes);
        for i in 0..cfg.nodes {
            let name = format!("node{i}");
            let service = VipService::start(lan.node(i).ns(), vip4, SERVICE_PORT, &name)?;
            nodes.push(Node {
                pins: PinDirGuard::new(&format!("{tag}-{name}")),
                name,
                member: Mutex::new(Member::Down),
                log_seen: 0,
                _service: service,
            });
        }
        let mut lab = Lab {
            cfg,
            prober,
            nodes,
            _lease_task: lease_task,
            server,
            _pass_programs: pass_programs,
            api_ns,
            lan,
            workdir,
            lease_log,
            kubeconfig,
            agent_bin,
            vip4,
            vip6,
            tag,
        };
        for i in 0..lab.nodes.len() {
            lab.spawn_member(i)?;
        }
        for i in 0..lab.nodes.len() {
            lab.wait_member_started(i).await?;
        }
        Ok(lab)
    }

    /// The lab's configuration.
    pub fn config(&self) -> &LabConfig {
        &self.cfg
    }

    /// The IPv4 VIP.
    pub fn vip_v4(&self) -> Ipv4Addr {
        self.vip4
    }

    /// The IPv6 VIP.
    pub fn vip_v6(&self) -> Ipv6Addr {
        self.vip6
    }

    /// The topology.
    pub fn lan(&self) -> &Lan {
        &self.lan
    }

    /// The Lease server (agents only).
    pub fn lease_server(&self) -> Option<&LeaseServerHandle> {
        self.server.as_ref()
    }

    /// The client's live view (updated after every probe).
    pub fn client_view(&self) -> tokio::sync::watch::Receiver<ClientView> {
        self.prober.view()
    }

    /// Take what the probes recorded since the last take (times since [`Self::probe_time`]'s epoch).
    pub fn take_probes(&self) -> (Vec<record::Probe>, Vec<record::TcpAttempt>) {
        self.prober.take()
    }

    /// `t` on the probes' clock (what [`Self::take_probes`] times are relative to).
    pub fn probe_time(&self, t: Instant) -> Duration {
        t.saturating_duration_since(self.prober.epoch())
    }

    /// Names of every namespace of the lab.
    pub fn namespace_names(&self) -> Vec<String> {
        let mut v = self.lan.namespace_names();
        v.push(self.api_ns.name().to_owned());
        v
    }

    /// Pin directories of the agents.
    pub fn pin_dirs(&self) -> Vec<PathBuf> {
        self.nodes
            .iter()
            .map(|n| n.pins.path().to_owned())
            .collect()
    }

    /// Node names (node0, node1, ...).
    pub fn node_names(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.name.clone()).collect()
    }

    /// Node names with the MAC of their LAN interface.
    pub fn node_macs(&self) -> Vec<(String, [u8; 6])> {
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.clone(), self.lan.node(i).mac()))
            .collect()
    }

    fn slot(&mut self, i: usize) -> &mut Member {
        self.nodes[i]
            .member
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn node_of_mac(&self, mac: [u8; 6]) -> Option<usize> {
        (0..self.nodes.len()).find(|i| self.lan.node(*i).mac() == mac)
    }

    fn agent_args(&self, i: usize) -> Vec<String> {
        let Implementation::Agent {
            lease,
            renew,
            retry,
            xdp_mode,
        } = &self.cfg.implementation
        else {
            return Vec::new();
        };
        let ms = |d: &Duration| format!("{}ms", d.as_millis());
        [
            "run",
            "--interface",
            LAN_IFNAME,
            "--address",
            &self.vip4.to_string(),
            "--address",
            &self.vip6.to_string(),
            "--node-name",
            &self.nodes[i].name,
            "--kubeconfig",
            &self.kubeconfig.display().to_string(),
            "--api-server",
            "",
            "--xdp-mode",
            xdp_mode,
            "--pin-dir",
            &self.nodes[i].pins.path().display().to_string(),
            "--lease-duration",
            &ms(lease),
            "--renew-deadline",
            &ms(renew),
            "--retry-period",
            &ms(retry),
            "--health-check",
            "--health-interval",
            HEALTH_INTERVAL,
            "--health-failures",
            HEALTH_FAILURES,
            "--metrics-addr",
            "127.0.0.1:2112",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
    }

    fn spawn_member(&mut self, i: usize) -> anyhow::Result<()> {
        let member = match &self.cfg.implementation {
            Implementation::Agent { .. } => {
                let bin = self
                    .agent_bin
                    .clone()
                    .ok_or_else(|| anyhow!("no agent binary"))?;
                let args = self.agent_args(i);
                Member::Agent(Agent::spawn(
                    &self.nodes[i].name,
                    self.lan.node(i).ns(),
                    &bin,
                    &args,
                )?)
            }
            Implementation::Keepalived { advert } => Member::Keepalived(Keepalived::spawn(
                &self.nodes[i].name,
                self.lan.node(i).ns(),
                LAN_IFNAME,
                self.vip4,
                100,
                *advert,
                &self.workdir.0,
            )?),
        };
        *self.slot(i) = member;
        self.nodes[i].log_seen = 0;
        Ok(())
    }

    /// Wait until node `i`'s member runs (agent: XDP attached and competing).
    async fn wait_member_started(&mut self, i: usize) -> anyhow::Result<()> {
        match std::mem::replace(self.slot(i), Member::Down) {
            Member::Agent(agent) => {
                let (agent, r) = with_agent(agent, |a| {
                    a.wait_for_log("leader election starting", Duration::from_secs(20))
                })
                .await?;
                *self.slot(i) = Member::Agent(agent);
                r?;
            }
            Member::Keepalived(mut k) => {
                let (k, r) = tokio::task::spawn_blocking(move || {
                    let r = k.wait_for_state("BACKUP", Duration::from_secs(20));
                    (k, r)
                })
                .await?;
                *self.slot(i) = Member::Keepalived(k);
                // A node may go straight to MASTER; only a start-up failure matters.
                if let Err(e) = r
                    && !matches!(&*self.slot(i), Member::Keepalived(k) if k.last_state() == Some("MASTER"))
                {
                    return Err(e);
                }
            }
            Member::Down => bail!("{} is not running", self.nodes[i].name),
        }
        Ok(())
    }

    /// Index of the node whose MAC answers ARP for the VIP, steadily (at
    /// least 5 windows in a row, alone), as the client's probes see it.
    pub async fn wait_for_leader(&self, timeout: Duration) -> anyhow::Result<usize> {
        let macs: Vec<[u8; 6]> = self.node_macs().into_iter().map(|(_, m)| m).collect();
        let mut view = self.prober.view();
        let r = tokio::time::timeout(
            timeout,
            view.wait_for(|v| v.arp_streak >= 5 && v.arp_mac.is_some_and(|m| macs.contains(&m))),
        )
        .await;
        match r {
            Ok(Ok(v)) => {
                let mac = v.arp_mac.expect("checked");
                self.node_of_mac(mac)
                    .ok_or_else(|| anyhow!("unknown MAC {}", format_mac(&mac)))
            }
            Ok(Err(_)) => bail!("the probes stopped"),
            Err(_) => bail!(
                "no node answered ARP for {} steadily within {timeout:?} (client view: {:?})",
                self.vip4,
                *self.prober.view().borrow()
            ),
        }
    }

    /// Wait until the client's TCP connects are answered by `name`.
    async fn wait_tcp_from(&self, name: &str, timeout: Duration) -> anyhow::Result<()> {
        let mut view = self.prober.view();
        tokio::time::timeout(
            timeout,
            view.wait_for(|v| v.tcp_streak >= 2 && v.tcp_node.as_deref() == Some(name)),
        )
        .await
        .map_err(|_| {
            anyhow!(
                "TCP to the VIP not answered by {name} within {timeout:?} (client view: {:?})",
                *self.prober.view().borrow()
            )
        })?
        .map_err(|_| anyhow!("the probes stopped"))?;
        Ok(())
    }

    /// Wait until the Lease holder is `name`.
    async fn wait_holder(&self, name: &str, timeout: Duration) -> anyhow::Result<()> {
        let Some(server) = &self.server else {
            return Ok(());
        };
        server
            .wait_for_lease(LEASE_NS, LEASE_NAME, timeout, |l| {
                l.and_then(|l| l.spec.as_ref())
                    .and_then(|s| s.holder_identity.as_deref())
                    == Some(name)
            })
            .await
            .ok_or_else(|| anyhow!("the Lease holder did not become {name} within {timeout:?}"))?;
        Ok(())
    }

    /// Wait until every agent but `except` holds a watch on the Lease (so a
    /// release is seen at once). Bounded poll of the server's counters: the
    /// server has no event for "a watch was opened".
    async fn wait_watching(&self, except: Option<usize>, timeout: Duration) -> anyhow::Result<()> {
        let Some(server) = &self.server else {
            return Ok(());
        };
        let deadline = Instant::now() + timeout;
        for (i, n) in self.nodes.iter().enumerate() {
            if Some(i) == except {
                continue;
            }
            let open_watches = |s: &LeaseServerHandle| {
                s.requests().iter().rev().take(2000).any(|r| {
                    r.identity.as_deref() == Some(&n.name)
                        && r.verb == vip_lease_server::Verb::Watch
                })
            };
            while !open_watches(server) {
                if Instant::now() >= deadline {
                    bail!("{} opened no watch on the Lease within {timeout:?}", n.name);
                }
                // Bounded poll interval (no event exists for this).
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(())
    }

    /// Wait until the client sees a node other than `old` answer ARP steadily
    /// and TCP; returns its index.
    async fn wait_new_leader(
        &self,
        old: Option<usize>,
        timeout: Duration,
    ) -> anyhow::Result<usize> {
        let old_mac = old.map(|i| self.lan.node(i).mac());
        let macs: Vec<(String, [u8; 6])> = self.node_macs();
        let mut view = self.prober.view();
        let found = tokio::time::timeout(
            timeout,
            view.wait_for(|v| {
                let Some(m) = v.arp_mac else { return false };
                if Some(m) == old_mac || v.arp_streak < 3 {
                    return false;
                }
                let name = macs
                    .iter()
                    .find(|(_, mm)| *mm == m)
                    .map(|(n, _)| n.as_str());
                name.is_some() && v.tcp_node.as_deref() == name
            }),
        )
        .await;
        match found {
            Ok(Ok(v)) => self
                .node_of_mac(v.arp_mac.expect("checked"))
                .ok_or_else(|| anyhow!("unknown MAC")),
            Ok(Err(_)) => bail!("the probes stopped"),
            Err(_) => bail!(
                "no new leader seen by the client within {timeout:?} (client view: {:?})",
                *self.prober.view().borrow()
            ),
        }
    }

    /// Bound on a failover: lease + retry + health detection + slack.
    fn recovery_bound(&self) -> Duration {
        match &self.cfg.implementation {
            Implementation::Agent { lease, retry, .. } => {
                *lease + *retry * 2 + Duration::from_secs(8)
            }
            Implementation::Keepalived { advert } => *advert * 4 + Duration::from_secs(8),
        }
    }

    fn renew_deadline(&self) -> Option<Duration> {
        match &self.cfg.implementation {
            Implementation::Agent { renew, .. } => Some(*renew),
            Implementation::Keepalived { .. } => None,
        }
    }

    /// Steady state: a leader answering ARP and TCP, holding the Lease, the
    /// others watching. Returns the leader's index.
    async fn steady(&self) -> anyhow::Result<usize> {
        let bound = self.recovery_bound() + Duration::from_secs(10);
        let leader = self.wait_for_leader(bound).await?;
        let name = self.nodes[leader].name.clone();
        self.wait_holder(&name, Duration::from_secs(10)).await?;
        self.wait_tcp_from(&name, Duration::from_secs(10)).await?;
        self.wait_watching(Some(leader), Duration::from_secs(10))
            .await?;
        // The leader may have changed meanwhile (e.g. a restarted node): check again.
        let again = self.wait_for_leader(Duration::from_secs(5)).await?;
        if again != leader {
            bail!(
                "leader changed from {name} to {} while settling",
                self.nodes[again].name
            );
        }
        Ok(leader)
    }

    /// Drain the queued log lines of node `i`'s agent (so a later wait_for_log
    /// only sees new lines).
    async fn drain_log(&mut self, i: usize) -> anyhow::Result<()> {
        match std::mem::replace(self.slot(i), Member::Down) {
            Member::Agent(agent) => {
                let (agent, _) = with_agent(agent, |a| {
                    // Times out at once after consuming what is queued.
                    let _ = a.wait_for_log("\u{0}never matches", Duration::ZERO);
                })
                .await?;
                *self.slot(i) = Member::Agent(agent);
            }
            // keepalived (or a node that is down): nothing to drain; put it back.
            other => *self.slot(i) = other,
        }
        Ok(())
    }

    /// Wait for a log line of node `i`'s agent containing `pattern` (after the last drain).
    async fn wait_log(
        &mut self,
        i: usize,
        pattern: &'static str,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        match std::mem::replace(self.slot(i), Member::Down) {
            Member::Agent(agent) => {
                let (agent, r) =
                    with_agent(agent, move |a| a.wait_for_log(pattern, timeout)).await?;
                *self.slot(i) = Member::Agent(agent);
                r?;
                Ok(())
            }
            other => {
                *self.slot(i) = other;
                Ok(())
            }
        }
    }

    /// Move the agent's new log lines into the timeline.
    fn collect_logs(&mut self, tl: &mut Timeline) {
        for n in &mut self.nodes {
            let lines = match n.member.get_mut().unwrap_or_else(PoisonError::into_inner) {
                Member::Agent(a) => a.log(),
                Member::Keepalived(k) => k.log(),
                Member::Down => continue,
            };
            let mut previous: Option<String> = None;
            for line in lines.iter().skip(n.log_seen) {
                if self.cfg.echo_logs {
                    eprintln!("[{}] {line}", n.name);
                }
                let Some(what) = describe_log(&n.name, line) else {
                    continue;
                };
                // The agent logs some steps twice (two layers): keep one.
                if previous.as_ref() == Some(&what) {
                    continue;
                }
                previous = Some(what.clone());
                // keepalived lines carry no parsable timestamp: use "now".
                let at = log_time(line, tl.wall).unwrap_or_else(|| tl.now());
                tl.push_at(at, what);
            }
            n.log_seen = lines.len();
        }
    }

    /// Signal / stop / kill the member of node `i` as the scenario says.
    async fn stop_member(
        &mut self,
        i: usize,
        tl: &mut Timeline,
        graceful: bool,
    ) -> anyhow::Result<()> {
        self.collect_logs(tl);
        let name = self.nodes[i].name.clone();
        match std::mem::replace(self.slot(i), Member::Down) {
            Member::Agent(agent) => {
                if graceful {
                    tl.push(format!("fault: SIGTERM to {name}'s agent"));
                    let (agent, status) =
                        with_agent(agent, |a| a.stop(Duration::from_secs(10))).await?;
                    // Keep the log of the exited agent for the timeline.
                    *self.slot(i) = Member::Agent(agent);
                    self.collect_logs(tl);
                    match status {
                        Ok(s) => tl.push(format!("{name}: agent exited ({s})")),
                        Err(e) => bail!("{name}: {e}"),
                    }
                } else {
                    let mut agent = agent;
                    tl.push(format!(
                        "fault: SIGKILL to {name}'s agent (address stays configured)"
                    ));
                    agent.kill();
                    tl.push(format!("{name}: agent killed"));
                    *self.slot(i) = Member::Agent(agent);
                    self.collect_logs(tl);
                }
                *self.slot(i) = Member::Down;
            }
            Member::Keepalived(mut k) => {
                if graceful {
                    tl.push(format!("fault: SIGTERM to {name}'s keepalived"));
                    let (k, r) = tokio::task::spawn_blocking(move || {
                        let r = k.stop(Duration::from_secs(10));
                        (k, r)
                    })
                    .await?;
                    *self.slot(i) = Member::Keepalived(k);
                    self.collect_logs(tl);
                    r?;
                    tl.push(format!("{name}: keepalived exited"));
                } else {
                    tl.push(format!("fault: SIGKILL to {name}'s keepalived"));
                    k.kill();
                    *self.slot(i) = Member::Keepalived(k);
                    self.collect_logs(tl);
                }
                *self.slot(i) = Member::Down;
            }
            Member::Down => bail!("{name} is not running"),
        }
        Ok(())
    }

    fn signal_member(&self, i: usize, sig: Signal) -> anyhow::Result<()> {
        match &*self.nodes[i]
            .member
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
        {
            Member::Agent(a) => a.signal(sig)?,
            Member::Keepalived(k) => k.signal(sig)?,
            Member::Down => bail!("{} is not running", self.nodes[i].name),
        }
        Ok(())
    }

    /// Start node `i`'s member again and wait until it competes.
    async fn restart_member(&mut self, i: usize, tl: &mut Timeline) -> anyhow::Result<()> {
        self.collect_logs(tl);
        self.spawn_member(i)?;
        tl.push(format!("{}: started again", self.nodes[i].name));
        self.wait_member_started(i).await?;
        self.collect_logs(tl);
        Ok(())
    }

    /// Run one scenario: steady leader, fault, recovery, restoration.
    pub async fn run_scenario(
        &mut self,
        scenario: Scenario,
        repeat: u32,
    ) -> anyhow::Result<RunRecord> {
        if matches!(self.cfg.implementation, Implementation::Keepalived { .. })
            && !scenario.applies_to_keepalived()
        {
            bail!(
                "scenario {} needs a Lease; keepalived has none",
                scenario.name()
            );
        }
        let leader = self.steady().await.with_context(|| {
            format!("{} #{repeat}: waiting for a steady leader", scenario.name())
        })?;
        let leader_name = self.nodes[leader].name.clone();
        for i in 0..self.nodes.len() {
            self.drain_log(i).await?;
            // Earlier lines are not part of this run.
            let seen = match &*self.slot(i) {
                Member::Agent(a) => a.log().len(),
                Member::Keepalived(k) => k.log().len(),
                Member::Down => 0,
            };
            self.nodes[i].log_seen = seen;
        }
        let lease_seen = self
            .lease_log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        // Discard what the probes gathered while settling; record from now on.
        let _ = self.prober.take();
        let _ = self.prober.take_ns();
        let mut tl = Timeline::new();
        tl.push(format!("steady: {leader_name} leads"));
        // Recording time before the fault, not synchronisation.
        tokio::time::sleep(STEADY_BEFORE).await;

        let bound = self.recovery_bound();
        let fault_at;
        match scenario {
            Scenario::GracefulStop | Scenario::Crash => {
                fault_at = tl.now();
                self.stop_member(leader, &mut tl, scenario == Scenario::GracefulStop)
                    .await?;
                let new = self.wait_new_leader(Some(leader), bound).await?;
                tl.push(format!(
                    "recovered: {} answers ARP and TCP",
                    self.nodes[new].name
                ));
                self.restart_member(leader, &mut tl).await?;
            }
            Scenario::Freeze => {
                fault_at = tl.now();
                tl.push(format!("fault: SIGSTOP to {leader_name}"));
                self.signal_member(leader, Signal::SIGSTOP)?;
                let new = self.wait_new_leader(Some(leader), bound).await;
                tl.push(format!("SIGCONT to {leader_name}"));
                self.signal_member(leader, Signal::SIGCONT)?;
                let new = new?;
                tl.push(format!(
                    "recovered: {} answers ARP and TCP",
                    self.nodes[new].name
                ));
                if matches!(*self.slot(leader), Member::Agent(_)) {
                    self.wait_log(leader, "stepping down", Duration::from_secs(10))
                        .await?;
                }
            }
            Scenario::LinkCut => {
                fault_at = tl.now();
                tl.push(format!("fault: {leader_name}'s link cut"));
                self.lan.cut(leader)?;
                tl.push(format!("{leader_name}: carrier lost"));
                let new = self.wait_new_leader(Some(leader), bound).await;
                if matches!(*self.slot(leader), Member::Agent(_)) && new.is_ok() {
                    // The cut-off leader steps down by itself (fence deadline).
                    self.wait_log(leader, "stepping down", bound).await?;
                }
                tl.push(format!("{leader_name}'s link restored"));
                self.lan.restore(leader)?;
                let new = new?;
                tl.push(format!(
                    "recovered: {} answers ARP and TCP",
                    self.nodes[new].name
                ));
            }
            Scenario::ApiPartition => {
                let server = self
                    .server
                    .clone()
                    .ok_or_else(|| anyhow!("no Lease server"))?;
                fault_at = tl.now();
                tl.push(format!(
                    "fault: {leader_name} partitioned from the API server"
                ));
                server.partition(Target::Identity(leader_name.clone()));
                let new = self.wait_new_leader(Some(leader), bound).await;
                if new.is_ok() {
                    self.wait_log(leader, "stepping down", bound).await?;
                }
                tl.push("partition healed");
                server.heal();
                let new = new?;
                tl.push(format!(
                    "recovered: {} answers ARP and TCP",
                    self.nodes[new].name
                ));
            }
            Scenario::HealthFail => {
                let server = self
                    .server
                    .clone()
                    .ok_or_else(|| anyhow!("no Lease server"))?;
                fault_at = tl.now();
                tl.push(format!("fault: {leader_name}'s /readyz fails"));
                server.fail_health(&leader_name);
                let new = self.wait_new_leader(Some(leader), bound).await;
                tl.push(format!("{leader_name}'s /readyz healthy again"));
                server.restore_health(&leader_name);
                let new = new?;
                tl.push(format!(
                    "recovered: {} answers ARP and TCP",
                    self.nodes[new].name
                ));
                self.wait_log(
                    leader,
                    "health check passing again",
                    Duration::from_secs(10),
                )
                .await?;
            }
            Scenario::RollingRestart => {
                fault_at = tl.now();
                // Followers first (no effect on the VIP), the leader last
                // (one graceful move, to an already restarted node).
                let order: Vec<usize> = (0..self.nodes.len())
                    .filter(|i| *i != leader)
                    .chain([leader])
                    .collect();
                for i in order {
                    self.stop_member(i, &mut tl, true).await?;
                    if i == leader {
                        let new = self.wait_new_leader(Some(leader), bound).await?;
                        tl.push(format!(
                            "recovered: {} answers ARP and TCP",
                            self.nodes[new].name
                        ));
                    }
                    self.restart_member(i, &mut tl).await?;
                    self.wait_watching(None, Duration::from_secs(10)).await.ok();
                }
            }
            Scenario::LeaseServerRestart => {
                let server = self
                    .server
                    .clone()
                    .ok_or_else(|| anyhow!("no Lease server"))?;
                fault_at = tl.now();
                tl.push("fault: Lease server restarted (connections dropped, 300 ms down)");
                let restarted_at = Instant::now();
                server
                    .restart_with_downtime(Duration::from_millis(300))
                    .await;
                // Recovered: the leader renewed through a new connection.
                let log = self.lease_log.clone();
                let name = leader_name.clone();
                let renewed = server
                    .wait_for_lease(LEASE_NS, LEASE_NAME, bound, move |_| {
                        log.lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .iter()
                            .any(|c| c.at > restarted_at && c.holder.as_deref() == Some(&name))
                    })
                    .await;
                if renewed.is_none() {
                    bail!("{leader_name} did not renew within {bound:?} after the restart");
                }
                tl.push(format!("{leader_name} renewed after the restart"));
                self.wait_watching(None, Duration::from_secs(10)).await?;
                self.wait_for_leader(bound).await?;
            }
        }
        // Recording time after recovery and restoration, not synchronisation.
        tokio::time::sleep(STEADY_AFTER).await;
        self.collect_logs(&mut tl);
        let (arp, tcp) = self.prober.take();
        let ns = self.prober.take_ns();
        let offset = tl.start.duration_since(self.prober.epoch());
        let shift = |probes: Vec<record::Probe>| -> Vec<record::Probe> {
            probes
                .into_iter()
                .filter(|p| p.sent >= offset)
                .map(|mut p| {
                    p.sent -= offset;
                    for r in &mut p.replies {
                        r.at = r.at.saturating_sub(offset);
                    }
                    p
                })
                .collect()
        };
        let arp = shift(arp);
        let ns = shift(ns);
        let tcp: Vec<_> = tcp
            .into_iter()
            .filter(|a| a.started >= offset)
            .map(|mut a| {
                a.started -= offset;
                a
            })
            .collect();
        self.lease_events(&mut tl, lease_seen, &leader_name);
        let mut record = RunRecord {
            implementation: self.cfg.implementation.label(),
            scenario: scenario.name().to_owned(),
            repeat,
            fault_at,
            probe_interval: self.cfg.probe_interval,
            nodes: self.node_macs(),
            arp,
            ns,
            tcp,
            events: tl.events,
        };
        client_events(&mut record);
        record.events.sort_by_key(|e| e.at);
        Ok(record)
    }

    /// Lease changes since `seen` as events, and the old leader's fence expiry
    /// (its last renew committed + renew deadline: an upper bound).
    fn lease_events(&self, tl: &mut Timeline, seen: usize, old_leader: &str) {
        let log = self
            .lease_log
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut last_holder: Option<String> = Some(old_leader.to_owned());
        // The old leader's last renew may predate the run (renews are retry periods apart).
        let mut last_old_renew = log[..seen.min(log.len())]
            .iter()
            .rev()
            .find(|c| c.holder.as_deref() == Some(old_leader))
            .map(|c| c.at);
        let mut released = false;
        for c in log.iter().skip(seen) {
            if c.at < tl.start {
                continue;
            }
            if c.holder.is_none() {
                released = true;
            }
            if c.holder != last_holder {
                let what = match &c.holder {
                    Some(h) => format!("Lease: holder is now {h}"),
                    None if c.kind == EventType::Deleted => "Lease: deleted".to_owned(),
                    None => "Lease: released (no holder)".to_owned(),
                };
                tl.push_at(tl.at(c.at), what);
                last_holder.clone_from(&c.holder);
            }
            if c.holder.as_deref() == Some(old_leader) && last_holder.as_deref() == Some(old_leader)
            {
                last_old_renew = Some(c.at);
            }
        }
        // Only meaningful when the old leader lost the Lease without releasing it.
        if let (Some(rd), Some(at)) = (self.renew_deadline(), last_old_renew)
            && last_holder.as_deref() != Some(old_leader)
            && !released
        {
            tl.push_at(
                tl.at(at + rd),
                format!("{old_leader}: fence expires at the latest (last renew committed + renew deadline {})", human(rd)),
            );
        }
    }

    /// Stop everything: probes, members (gracefully, then killed), the Lease
    /// server, the namespaces, the pins and the work directory.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        self.prober.stop();
        let mut errors = Vec::new();
        for i in 0..self.nodes.len() {
            match std::mem::replace(self.slot(i), Member::Down) {
                Member::Agent(agent) => {
                    let (_agent, r) = with_agent(agent, |a| a.stop(Duration::from_secs(5))).await?;
                    if let Err(e) = r {
                        errors.push(e.to_string());
                    }
                }
                Member::Keepalived(k) => {
                    let (_k, r) = tokio::task::spawn_blocking(move || {
                        let mut k = k;
                        let r = k.stop(Duration::from_secs(5));
                        (k, r)
                    })
                    .await?;
                    if let Err(e) = r {
                        errors.push(e.to_string());
                    }
                }
                Member::Down => {}
            }
        }
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
        drop(self);
        if errors.is_empty() {
            Ok(())
        } else {
            bail!("shutdown: {}", errors.join("; "))
        }
    }

    /// The tag of this lab in the names of its pins and work directory.
    pub fn tag(&self) -> u32 {
        self.tag
    }
}

/// Add what the client saw: every change of the MAC answering ARP, the
/// first ARP reply and the first TCP success from a new node after the fault.
fn client_events(r: &mut RunRecord) {
    let mut events = Vec::new();
    let mut last: Option<[u8; 6]> = None;
    let mut silent_since: Option<std::time::Duration> = None;
    for p in &r.arp {
        match p.replies.first() {
            Some(reply) => {
                if let Some(s) = silent_since.take()
                    && p.sent >= r.fault_at
                {
                    events.push(Event {
                        at: s,
                        what: "client: ARP for the VIP unanswered from here".into(),
                    });
                }
                if last != Some(reply.mac) {
                    let who = r.node_of(&reply.mac).unwrap_or("unknown").to_owned();
                    events.push(Event {
                        at: reply.at,
                        what: format!("client: ARP answered by {who} ({})", format_mac(&reply.mac)),
                    });
                    last = Some(reply.mac);
                }
                if p.replies.iter().any(|x| x.mac != reply.mac) {
                    events.push(Event {
                        at: reply.at,
                        what: "client: SPLIT BRAIN: two MACs answered one probe".into(),
                    });
                }
            }
            None => {
                if silent_since.is_none() {
                    silent_since = Some(p.sent);
                }
            }
        }
    }
    let mut last_node: Option<String> = None;
    let mut failing_since: Option<Duration> = None;
    for a in &r.tcp {
        match &a.node {
            Some(n) => {
                if let Some(s) = failing_since.take()
                    && a.started >= r.fault_at
                {
                    events.push(Event {
                        at: s,
                        what: "client: TCP to the VIP failing from here".into(),
                    });
                }
                if last_node.as_ref() != Some(n) {
                    events.push(Event {
                        at: a.started + a.took,
                        what: format!("client: TCP answered by {n}"),
                    });
                    last_node = Some(n.clone());
                }
            }
            None => {
                if failing_since.is_none() {
                    failing_since = Some(a.started);
                }
            }
        }
    }
    r.events.extend(events);
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
            Implementation::Keepalived {
                advert: Duration::from_secs(1)
            }
            .label(),
            "keepalived advert 1s"
        );
        let names: Vec<_> = Scenario::ALL.iter().map(Scenario::name).collect();
        assert_eq!(names.len(), 8);
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
    }

    #[test]
    fn parses_log_lines() {
        let wall = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let line = "2023-11-14T22:13:20.250000Z  INFO vip_agent::election: acquired the lease identity=node1 previous_holder=\"node0\"";
        assert_eq!(log_time(line, wall), Some(Duration::from_millis(250)));
        assert_eq!(
            describe_log("node1", line).as_deref(),
            Some("node1: acquired the Lease (previous holder \"node0\")")
        );
        assert_eq!(describe_log("n", "x renewed"), None);
    }
}
