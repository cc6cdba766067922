//! `vip-lab bench dataplane`: the data plane under an ARP / NS flood.
//!
//! Topology: one veth pair, generator namespace (`vg0`, 192.0.2.1,
//! 2001:db8::1) <-> responder namespace (`vr0`, 192.0.2.2, 2001:db8::2); the
//! VIPs are 192.0.2.200 and 2001:db8::200.
//!
//! * Generator: `bench_gen` (bench-ebpf) run through BPF_PROG_TEST_RUN in
//!   live-frames mode with `vg0` as ingress interface: every frame is a
//!   request for the VIP from a spoofed sender (or, every `legit_every`-th,
//!   from the generator's real MAC and address), sent out of `vg0` with
//!   `XDP_TX`, paced in chunks to an offered rate and bounded by count and time.
//! * Counting: `bench_count` in native mode on `vg0` counts every ARP reply /
//!   neighbour advertisement coming back (legitimate vs spoofed) and drops it.
//! * Responder, one mode after the other: `kernel` (no XDP, VIPs on `vr0`,
//!   arp_ignore=0), `native` and `skb` (a real `vip-agent run --no-election`).
//! * Per step (mode, protocol, offered rate): offered rate, replies/s, lost,
//!   legitimate requests answered, softirq CPU of the machine, the agent's
//!   CPU, neighbour entries of the responder before/after.
//! * Per-packet cost of an ANSWERED request in live-frames mode (see
//!   [`measure_cost`]) next to the empty program.

mod counters;
mod generator;
mod responder;
mod steps;
mod summary;

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use vip_lab::topology::{IfAddr, Pair, PairConfig};

use generator::Gen;
use responder::{start_responder, stop_responder};
use steps::{flood_step, measure_cost};
use summary::{COST_NOTE, row};
pub use summary::{HEADER, cost_estimate, evaluate, markdown, print, write};

pub const VIP4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 200);
pub const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x200);
const GEN_IF: &str = "vg0";
const RESP_IF: &str = "vr0";
/// Live-frames batch (the kernel's maximum is 256).
const LIVE_BATCH: u32 = 64;
/// Frames per BPF_PROG_TEST_RUN call at most (one call is one pacing chunk).
const MAX_CHUNK: u64 = 131_072;
/// The agent counts as "near idle" below this share of one CPU.
pub const AGENT_IDLE_PCT: f64 = 5.0;

/// Mirror of `bench-ebpf`'s `GenConfig` (repr(C), u64 fields, same order).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct GenConfig {
    pub proto: u64,
    pub legit_every: u64,
    pub tail_call: u64,
    pub real_mac: u64,
    pub real_ip4: u64,
    pub real_ip6_hi: u64,
    pub real_ip6_lo: u64,
    pub vip4: u64,
    pub vip6_hi: u64,
    pub vip6_lo: u64,
    pub ns_sum_base: u64,
}

// SAFETY: repr(C), only u64 fields: no padding, every bit pattern valid.
unsafe impl aya::Pod for GenConfig {}

/// Indices of `GEN_STATS` (mirror of `bench-ebpf`'s `idx`).
mod idx {
    pub const SENT: u32 = 1;
    pub const LEGIT_SENT: u32 = 2;
    pub const ARP_REPLY_LEGIT: u32 = 3;
    pub const ARP_REPLY_SPOOFED: u32 = 4;
    pub const NA_LEGIT: u32 = 5;
    pub const NA_SPOOFED: u32 = 6;
    pub const TAIL_CALL_FAILED: u32 = 9;
    pub const LEN: u32 = 10;
}

/// Request kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Arp,
    Ns,
}

impl Proto {
    pub fn name(self) -> &'static str {
        match self {
            Self::Arp => "arp",
            Self::Ns => "ns",
        }
    }
}

/// Who answers on the responder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// No XDP, the VIPs on the interface, arp_ignore=0: the kernel answers.
    Kernel,
    /// `vip-agent --xdp-mode native`.
    Native,
    /// `vip-agent --xdp-mode skb`.
    Skb,
}

impl Mode {
    pub const ALL: [Mode; 3] = [Mode::Kernel, Mode::Native, Mode::Skb];
    pub fn name(self) -> &'static str {
        match self {
            Self::Kernel => "kernel",
            Self::Native => "native",
            Self::Skb => "skb",
        }
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct DataplaneOptions {
    /// Length of each flood step.
    pub step: Duration,
    /// Offered rates (frames/s); 0 = unpaced (as fast as the generator goes).
    pub rates: Vec<u64>,
    pub modes: Vec<Mode>,
    pub protos: Vec<Proto>,
    /// One legitimate request every this many frames.
    pub legit_every: u64,
    /// Frames per per-packet-cost run (0: skip the cost measurement).
    pub cost_frames: u32,
    /// Rounds of the cost measurement (median reported).
    pub cost_rounds: u32,
    /// The agent binary.
    pub agent_bin: PathBuf,
    /// Folder the report goes to (`dataplane.json`, `dataplane.md`).
    pub out: PathBuf,
    /// The command line that reproduces the run (for the Markdown).
    pub command: String,
}

/// One flood step.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Step {
    pub mode: Mode,
    pub proto: Proto,
    /// Requested rate (0 = unpaced).
    pub target_pps: u64,
    /// Frames the generator sent, and in how long.
    pub sent: u64,
    pub seconds: f64,
    /// sent / seconds.
    pub offered_pps: f64,
    /// Replies counted on the generator's veth (legitimate + spoofed).
    pub replies: u64,
    pub replies_pps: f64,
    /// sent - replies.
    pub lost: u64,
    /// replies / sent, in percent.
    pub answered_pct: f64,
    pub legit_sent: u64,
    pub legit_answered: u64,
    /// Requests the responder program saw (XDP modes, from its counters).
    pub responder_seen: Option<u64>,
    /// Frames the generator's veth failed to hand to the responder's
    /// (`tx_queue_0_xdp_xmit_errors` of vg0), and the responder veth's drops.
    pub xmit_errors: u64,
    pub rx_drops: u64,
    /// Softirq / system time of the whole machine, percent of one CPU.
    pub softirq_cpu_pct: f64,
    pub system_cpu_pct: f64,
    /// The agent process (user + system), percent of one CPU (XDP modes).
    pub agent_cpu_pct: Option<f64>,
    /// Responder neighbour entries (IPv4 + IPv6) before and after the step.
    pub neigh_before: u64,
    pub neigh_after: u64,
}

/// One per-packet cost measurement in live-frames mode.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CostRow {
    pub name: String,
    pub what: String,
    pub frames: u64,
    /// Median over rounds: kernel-reported time per frame, and wall clock / frames.
    pub ns_per_frame: f64,
    pub wall_ns_per_frame: f64,
    /// Share of the frames the responder answered (its own counters), if it ran.
    pub answered_pct: Option<f64>,
}

/// A target of the issue and whether it holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Target {
    pub name: String,
    /// "PASS", "FAIL" or "N/A" (cannot be evaluated with what was measured).
    pub status: String,
    pub detail: String,
}

/// The whole report (`dataplane.json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DataplaneReport {
    pub started: String,
    pub command: String,
    pub kernel: String,
    pub cpus: usize,
    pub step_seconds: f64,
    pub legit_every: u64,
    pub steps: Vec<Step>,
    pub cost: Vec<CostRow>,
    pub cost_note: String,
    pub targets: Vec<Target>,
    pub took_seconds: f64,
}

// ---------------------------------------------------------------------------
// Small readers

fn bench_object() -> anyhow::Result<PathBuf> {
    ebpf_build::build_bench(false).map_err(anyhow::Error::msg)
}

/// Run the benchmark, write `dataplane.json` and `dataplane.md` into
/// `opts.out`, and return the report.
pub fn run(opts: &DataplaneOptions) -> anyhow::Result<DataplaneReport> {
    anyhow::ensure!(!opts.rates.is_empty(), "no offered rate given");
    anyhow::ensure!(opts.legit_every > 0, "legit_every must be at least 1");
    let started = Instant::now();
    let (started_at, _) = crate::utc_stamps(SystemTime::now());
    vip_lab::netns::install_signal_cleanup().ok();
    let bench_bytes = std::fs::read(bench_object()?).context("reading the bench-ebpf object")?;
    let responder_object = ebpf_build::build(false).map_err(anyhow::Error::msg)?;
    let responder_bytes = std::fs::read(&responder_object)
        .with_context(|| format!("reading {}", responder_object.display()))?;

    let pair = Pair::with_config(PairConfig {
        a_ifname: GEN_IF.into(),
        b_ifname: RESP_IF.into(),
        a_addrs: vec![
            IfAddr::v4(Ipv4Addr::new(192, 0, 2, 1), 24),
            IfAddr::v6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1), 64),
        ],
        b_addrs: vec![
            IfAddr::v4(Ipv4Addr::new(192, 0, 2, 2), 24),
            IfAddr::v6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2), 64),
        ],
        ..PairConfig::default()
    })
    .context("building the veth pair")?;
    let (g, r) = (pair.a(), pair.b());
    // XDP-transmitted frames need the receiving veth's NAPI: GRO on enables it
    // without an XDP program (kernel and skb modes).
    vip_lab::netns::run_checked(r.ns().command("ethtool").args(["-K", RESP_IF, "gro", "on"]))?;
    let mut generator = Gen::load(&bench_bytes, g)?;

    let mut cost = Vec::new();
    if opts.cost_frames > 0 {
        eprintln!(
            "dataplane: per-packet cost, {} frames x {} rounds",
            opts.cost_frames, opts.cost_rounds
        );
        cost = measure_cost(&mut generator, &pair, &responder_bytes, opts)?;
    }

    let mut steps = Vec::new();
    for &mode in &opts.modes {
        eprintln!("dataplane: responder mode {}", mode.name());
        let responder = start_responder(mode, r, opts)?;
        let mut result = Ok(());
        'outer: for &proto in &opts.protos {
            for &rate in &opts.rates {
                match flood_step(&mut generator, &pair, mode, proto, rate, &responder, opts) {
                    Ok(step) => {
                        eprintln!("{}", row(&step));
                        steps.push(step);
                    }
                    Err(e) => {
                        result = Err(e);
                        break 'outer;
                    }
                }
            }
        }
        stop_responder(mode, responder, r)?;
        result.with_context(|| format!("flood against {}", mode.name()))?;
    }

    let targets = evaluate(&steps, &cost);
    let report = DataplaneReport {
        started: started_at,
        command: opts.command.clone(),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_owned(),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        step_seconds: opts.step.as_secs_f64(),
        legit_every: opts.legit_every,
        steps,
        cost,
        cost_note: COST_NOTE.into(),
        targets,
        took_seconds: started.elapsed().as_secs_f64(),
    };
    write(&report, &opts.out)?;
    Ok(report)
}
