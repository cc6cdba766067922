//! The command line (clap): the subcommands and every flag, with their
//! environment twins. Only types and parsing live here, at the bottom of the
//! module graph: [`crate::config`] checks and converts `run`'s flags,
//! [`crate::manifest`] renders the manifests (checking through `config`),
//! and neither is imported from here.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::election;

#[derive(Debug, Parser)]
#[command(
    name = "vip-agent",
    version,
    about = "Control-plane VIP for bare-metal Kubernetes: in-kernel ARP/NS responder fenced by Lease leadership"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent on this node.
    Run(Box<RunArgs>),
    /// Print a manifest: the static pod for /etc/kubernetes/manifests/ (like
    /// `kube-vip manifest pod`, takes every `run` flag) or the Lease RBAC.
    Manifest {
        #[command(subcommand)]
        kind: ManifestKind,
    },
    /// Show what this node's data plane does now, from the pinned maps and
    /// link (no API needed; read-only): per VIP whether this node answers and
    /// the time left on its fence, the XDP mode, the counters, and the Lease
    /// holder when the API answers.
    Status(Box<StatusArgs>),
}

/// `vip-agent status`.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// Interface the agent serves (its --interface).
    #[arg(long, env = "VIP_INTERFACE")]
    pub interface: String,

    /// The agent's pin directory [default: /sys/fs/bpf/vip-agent/netns<inode>-<interface>].
    #[arg(long, env = "VIP_PIN_DIR")]
    pub pin_dir: Option<PathBuf>,

    /// Output: text for people, json for machines.
    #[arg(long, value_enum, default_value = "text")]
    pub output: OutputFormat,

    /// kubeconfig to read the Lease holder with (optional: without a usable
    /// one the holder reads `unknown`).
    #[arg(long, env = "VIP_KUBECONFIG", default_value = election::client::DEFAULT_KUBECONFIG)]
    pub kubeconfig: PathBuf,

    /// API server URL that overrides the kubeconfig's (empty: the kubeconfig's).
    #[arg(long, env = "VIP_API_SERVER", default_value = election::client::DEFAULT_API_SERVER)]
    pub api_server: String,

    /// TLS server name checked on the overridden API server URL.
    #[arg(long, env = "VIP_API_SERVER_TLS_NAME", default_value = election::client::DEFAULT_TLS_SERVER_NAME)]
    pub api_server_tls_name: String,

    /// How long to wait for the API before the holder reads `unknown`.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub api_timeout: Duration,

    /// Name of the Lease (the agent's --lease-name).
    #[arg(long, env = "VIP_LEASE_NAME", default_value = election::DEFAULT_LEASE_NAME)]
    pub lease_name: String,

    /// Namespace of the Lease (the agent's --lease-namespace).
    #[arg(long, env = "VIP_LEASE_NAMESPACE", default_value = election::DEFAULT_NAMESPACE)]
    pub lease_namespace: String,

    /// This node's identity, to mark the holder as this node [default: the host name].
    #[arg(long, env = "VIP_NODE_NAME")]
    pub node_name: Option<String>,
}

/// `status --output`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    #[default]
    Text,
    Json,
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e}; write it like 500ms, 2s or 1m"))
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Interface that carries the VIP (kube-vip: vip_interface).
    #[arg(long, env = "VIP_INTERFACE")]
    pub interface: String,

    /// VIP to answer for; repeat or comma-separate for several (IPv4 and IPv6) (kube-vip: address).
    #[arg(
        long = "address",
        env = "VIP_ADDRESS",
        value_delimiter = ',',
        required = true
    )]
    pub addresses: Vec<IpAddr>,

    /// Answer for the VIPs without leader election (a single node, a lab, a test).
    #[arg(long, env = "VIP_NO_ELECTION")]
    pub no_election: bool,

    /// XDP attach mode; auto tries native and falls back to skb (generic).
    #[arg(long, env = "VIP_XDP_MODE", value_enum, default_value = "auto")]
    pub xdp_mode: XdpModeArg,

    /// bpffs directory for the pinned program maps and link
    /// [default: /sys/fs/bpf/vip-agent/netns<inode>-<interface>].
    #[arg(long, env = "VIP_PIN_DIR")]
    pub pin_dir: Option<PathBuf>,

    /// How long a Lease stays valid without renewal, as seen by followers (kube-vip: vip_leaseduration, whole seconds).
    #[arg(long, env = "VIP_LEASE_DURATION", default_value = "3s", value_parser = parse_duration)]
    pub lease_duration: Duration,

    /// How long after a renew request was sent the leader keeps answering (kube-vip: vip_renewdeadline, whole seconds).
    #[arg(long, env = "VIP_RENEW_DEADLINE", default_value = "2s", value_parser = parse_duration)]
    pub renew_deadline: Duration,

    /// How often the leader renews and followers retry (kube-vip: vip_retryperiod, whole seconds)
    /// [default: 500ms; 1s with --fast-path].
    #[arg(long, env = "VIP_RETRY_PERIOD", value_parser = parse_duration)]
    pub retry_period: Option<Duration>,

    /// The fast path (docs/peer-promises.md): the leader heartbeats the other agents over UDP
    /// (--peer-port) and its fence is held open by their acks, so a dead, frozen or cut-off
    /// leader is replaced in about 110 ms instead of --lease-duration, at one Lease write per
    /// --retry-period (1s). Costs: one UDP port, 1 / --heartbeat-interval heartbeats per
    /// second from the leader to each agent and as many acks back (50 each way at 20ms,
    /// about 100 bytes each). Off: the agent behaves exactly as without it.
    #[arg(long, env = "VIP_FAST_PATH")]
    pub fast_path: bool,

    /// UDP port of the fast path, on --peer-address.
    #[arg(long, env = "VIP_PEER_PORT", default_value_t = 7473)]
    pub peer_port: u16,

    /// Address the other agents reach this one at for the fast path [default: the first IPv4
    /// address of --interface that is not a VIP, else the first IPv6 one].
    #[arg(long, env = "VIP_PEER_ADDRESS")]
    pub peer_address: Option<IpAddr>,

    /// File with the fast path's HMAC key (at least 32 bytes). Without it the agents share the
    /// Secret --peer-key-secret in the Lease namespace (created by the first agent).
    #[arg(long, env = "VIP_PEER_KEY_FILE")]
    pub peer_key_file: Option<PathBuf>,

    /// Secret holding the fast path's key (data.key) when --peer-key-file is not given.
    #[arg(long, env = "VIP_PEER_KEY_SECRET", default_value = crate::peer::key::DEFAULT_SECRET)]
    pub peer_key_secret: String,

    /// Fast path: the leader's heartbeat interval.
    #[arg(long, env = "VIP_HEARTBEAT_INTERVAL", default_value = "20ms", value_parser = parse_duration)]
    pub heartbeat_interval: Duration,

    /// Fast path: a member takes the Lease over after this long without a heartbeat.
    #[arg(long, env = "VIP_TAKEOVER_SILENCE", default_value = "80ms", value_parser = parse_duration)]
    pub takeover_silence: Duration,

    /// Fast path: how long an ack promises not to answer (the outage floor after a crash).
    #[arg(long, env = "VIP_PROMISE", default_value = "100ms", value_parser = parse_duration)]
    pub promise: Duration,

    /// Fast path: margin for clocks running at different rates (at least 10 % of --promise).
    #[arg(long, env = "VIP_PROMISE_MARGIN", default_value = "10ms", value_parser = parse_duration)]
    pub promise_margin: Duration,

    /// This node's identity in the Lease (kube-vip: vip_nodename) [default: the host name].
    #[arg(long, env = "VIP_NODE_NAME")]
    pub node_name: Option<String>,

    /// Name of the Lease the control-plane nodes compete for (kube-vip: vip_leasename).
    #[arg(long, env = "VIP_LEASE_NAME", default_value = election::DEFAULT_LEASE_NAME)]
    pub lease_name: String,

    /// Namespace of that Lease (kube-vip: cp_namespace).
    #[arg(long, env = "VIP_LEASE_NAMESPACE", default_value = election::DEFAULT_NAMESPACE)]
    pub lease_namespace: String,

    /// kubeconfig with the credentials for the Lease (kubeadm: admin.conf).
    #[arg(long, env = "VIP_KUBECONFIG", default_value = election::client::DEFAULT_KUBECONFIG)]
    pub kubeconfig: PathBuf,

    /// kubeconfig the election uses while --kubeconfig is forbidden on the Lease
    /// (kubeadm >= 1.29: on the first control-plane node admin.conf has no rights
    /// until kubeadm creates the kubeadm:cluster-admins binding, through the VIP);
    /// back to --kubeconfig as soon as that is allowed. A missing file is fine
    /// (join nodes have none). Empty: never.
    #[arg(long, env = "VIP_SUPER_ADMIN_KUBECONFIG", default_value = election::client::DEFAULT_SUPER_ADMIN_KUBECONFIG)]
    pub super_admin_kubeconfig: String,

    /// API server URL that overrides the kubeconfig's: the LOCAL API server, so the
    /// agent works during `kubeadm init` before the VIP exists. Empty: use the kubeconfig's server.
    #[arg(long, env = "VIP_API_SERVER", default_value = election::client::DEFAULT_API_SERVER)]
    pub api_server: String,

    /// TLS server name checked on the overridden API server URL (kubeadm's serving
    /// certificate always holds `kubernetes`).
    #[arg(long, env = "VIP_API_SERVER_TLS_NAME", default_value = election::client::DEFAULT_TLS_SERVER_NAME)]
    pub api_server_tls_name: String,

    /// Gate leadership on the local API server's health: a leader whose check fails
    /// --health-failures times in a row gives the VIP up; an unhealthy node never takes it.
    #[arg(long, env = "VIP_HEALTH_CHECK")]
    pub health_check: bool,

    /// Path probed on the API server for --health-check.
    #[arg(long, env = "VIP_HEALTH_PATH", default_value = "/readyz")]
    pub health_path: String,

    /// Interval of the health probe.
    #[arg(long, env = "VIP_HEALTH_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub health_interval: Duration,

    /// Consecutive failed probes that make the node unhealthy.
    #[arg(long, env = "VIP_HEALTH_FAILURES", default_value_t = 3)]
    pub health_failures: u32,

    /// Address for /metrics, /healthz and /readyz (empty: off).
    #[arg(long, env = "VIP_METRICS_ADDR", default_value = "0.0.0.0:2112")]
    pub metrics_addr: String,

    /// Announcement frames per VIP sent at once on takeover.
    #[arg(long, env = "VIP_ANNOUNCE_BURST", default_value_t = 3)]
    pub announce_burst: u32,

    /// Announcements repeated after the burst.
    #[arg(long, env = "VIP_ANNOUNCE_REPEATS", default_value_t = 3)]
    pub announce_repeats: u32,

    /// Interval between those repeats.
    #[arg(long, env = "VIP_ANNOUNCE_INTERVAL", default_value = "200ms", value_parser = parse_duration)]
    pub announce_interval: Duration,

    /// Slow refresh of the announcement while leading (0s: off).
    #[arg(long, env = "VIP_ANNOUNCE_REFRESH", default_value = "10s", value_parser = parse_duration)]
    pub announce_refresh: Duration,

    /// Check the flags and the environment (kube-vip's variables included),
    /// print the settings in force and exit, without reading the kubeconfig
    /// or touching the system.
    #[arg(long)]
    pub check_config: bool,

    /// Log lines on stderr: text for people, json for machines (one object per
    /// line; lifecycle lines carry an `event` field, see vip_common::events).
    #[arg(long, env = "VIP_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

/// `--log-format`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// tracing's human-readable lines.
    #[default]
    Text,
    /// tracing-subscriber's JSON formatter, fields flattened into each object.
    Json,
}

/// `--xdp-mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum XdpModeArg {
    /// Native (driver) mode, falling back to generic (skb) mode.
    Auto,
    Native,
    Skb,
}

/// Default image: what `cargo xtask image` builds. Nodes must have it already
/// (imported or baked into the node image); pass `--image` for a registry.
pub const DEFAULT_IMAGE: &str = concat!("localhost/vip-agent:", env!("CARGO_PKG_VERSION"));
/// User the RBAC binds by default (`kubeadm kubeconfig user --client-name vip-agent`).
pub const DEFAULT_RBAC_USER: &str = "vip-agent";
/// Which manifest to print.
#[derive(Debug, Subcommand)]
pub enum ManifestKind {
    /// The static pod for one control-plane node, for /etc/kubernetes/manifests/
    /// (takes the flags of `run`; --kubeconfig is the path ON THE HOST).
    Pod(Box<ManifestPodArgs>),
    /// Role + RoleBinding for the Lease, for agents with their own credentials.
    Rbac(ManifestRbacArgs),
    /// A DaemonSet on the control-plane nodes (like `kube-vip manifest
    /// daemonset`) with its ServiceAccount, Lease RBAC and in-cluster
    /// kubeconfig: the pod's flags, but the ServiceAccount's token replaces
    /// --kubeconfig and --super-admin-kubeconfig (for a cluster that exists:
    /// a DaemonSet cannot bring up the first API server's VIP).
    Daemonset(Box<ManifestPodArgs>),
}

/// `vip-agent manifest pod`: every `run` flag plus the pod's own.
///
/// `--kubeconfig` names the file on the host; it is mounted read-only at
/// [`CONTAINER_KUBECONFIG`](crate::manifest::CONTAINER_KUBECONFIG).
/// `--super-admin-kubeconfig` names a file on the host too; its directory is
/// mounted read-only (the file exists on the `kubeadm init` node only), so
/// the same manifest serves init and join nodes (deploy/README.md).
#[derive(Debug, Clone, Args)]
pub struct ManifestPodArgs {
    #[command(flatten)]
    pub run: RunArgs,

    /// Container image [default: what `cargo xtask image` builds; pass your registry's].
    #[arg(long, env = "VIP_IMAGE", default_value = DEFAULT_IMAGE)]
    pub image: String,

    /// RUST_LOG of the agent in the pod.
    #[arg(long, env = "VIP_LOG", default_value = "info")]
    pub log: String,
}

/// `vip-agent manifest rbac`.
#[derive(Debug, Clone, Args)]
pub struct ManifestRbacArgs {
    /// Namespace of the Lease (the agent's --lease-namespace).
    #[arg(long, default_value = election::DEFAULT_NAMESPACE)]
    pub lease_namespace: String,

    /// User name the agent's client certificate carries (its CN).
    #[arg(long, default_value = DEFAULT_RBAC_USER)]
    pub user: String,
}
