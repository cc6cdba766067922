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

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, anyhow, bail};
use aya::maps::{Array, HashMap as BpfHashMap, Map, MapData, PerCpuArray, ProgramArray};
use aya::programs::{TestRun, TestRunAttrs, TestRunOptions, Xdp, XdpMode};
use aya::{Ebpf, EbpfLoader};
use serde::{Deserialize, Serialize};
use vip_common::frame::craft::{arp_request, neighbour_solicitation};
use vip_common::maps::{COUNTERS_LEN, Counter, STATE_ACTIVE};
use vip_common::{VipEntry, VipKey};

use vip_lab::agent::{Agent, PinDirGuard};
use vip_lab::netns::NetNs;
use vip_lab::topology::{Endpoint, IfAddr, Pair, PairConfig};

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

fn mac_u64(m: [u8; 6]) -> u64 {
    m.iter().fold(0, |a, b| (a << 8) | u64::from(*b))
}

fn halves(ip: Ipv6Addr) -> (u64, u64) {
    let v = u128::from(ip);
    ((v >> 64) as u64, v as u64)
}

/// Unfolded one's complement sum of the NS checksum words that do not
/// depend on the sender: pseudo header (destination, length 32, next header
/// 58) and the message (type 135, target, option type/len 1/1).
fn ns_sum_base(vip: Ipv6Addr) -> u64 {
    let mut s: u64 = 0;
    let sn = solicited_node(vip);
    for w in sn.segments() {
        s += u64::from(w);
    }
    s += 32 + 58;
    s += 0x8700;
    for w in vip.segments() {
        s += u64::from(w);
    }
    s + 0x0101
}

fn solicited_node(ip: Ipv6Addr) -> Ipv6Addr {
    let o = ip.octets();
    Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(o[13]),
        u16::from_be_bytes([o[14], o[15]]),
    )
}

/// `/proc/stat` "cpu" line: (system, softirq) in clock ticks.
fn cpu_ticks() -> anyhow::Result<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    let line = text
        .lines()
        .next()
        .ok_or_else(|| anyhow!("empty /proc/stat"))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    anyhow::ensure!(v.len() >= 7, "short cpu line in /proc/stat: {line}");
    Ok((v[2], v[6]))
}

/// utime + stime of a process, in clock ticks.
fn proc_ticks(pid: i32) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    let after = text
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow!("bad /proc/{pid}/stat"))?;
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields after the comm: state is field 3 (index 0 here); utime 14, stime 15.
    let ut: u64 = f.get(11).and_then(|x| x.parse().ok()).unwrap_or(0);
    let st: u64 = f.get(12).and_then(|x| x.parse().ok()).unwrap_or(0);
    Ok(ut + st)
}

fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// Neighbour entries (IPv4 and IPv6) of a namespace.
fn neigh_count(ns: &NetNs) -> anyhow::Result<u64> {
    let mut n = 0;
    for fam in ["-4", "-6"] {
        let out = ns.exec_ok(&[fam, "neigh", "show"])?;
        n += out.lines().filter(|l| !l.trim().is_empty()).count() as u64;
    }
    Ok(n)
}

/// `ethtool -S IF` of a veth, as (key, value) pairs.
fn ethtool_stats(
    ns: &NetNs,
    ifname: &str,
) -> anyhow::Result<std::collections::HashMap<String, u64>> {
    let out = vip_lab::netns::run_checked(ns.command("ethtool").args(["-S", ifname]))?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim().to_owned(), v.trim().parse().ok()?))
        })
        .collect())
}

fn stat(m: &std::collections::HashMap<String, u64>, k: &str) -> u64 {
    m.get(k).copied().unwrap_or(0)
}

fn percpu_sum(arr: &PerCpuArray<MapData, u64>, i: u32) -> anyhow::Result<u64> {
    Ok(arr
        .get(&i, 0)
        .with_context(|| format!("reading per-CPU slot {i}"))?
        .iter()
        .sum())
}

fn gen_stats(arr: &PerCpuArray<MapData, u64>) -> anyhow::Result<[u64; idx::LEN as usize]> {
    let mut v = [0u64; idx::LEN as usize];
    for (i, c) in v.iter_mut().enumerate() {
        *c = percpu_sum(arr, i as u32)?;
    }
    Ok(v)
}

fn responder_counters(pin_dir: &Path) -> anyhow::Result<[u64; COUNTERS_LEN as usize]> {
    let md = MapData::from_pin(pin_dir.join("COUNTERS")).context("pinned COUNTERS map")?;
    let arr: PerCpuArray<MapData, u64> = PerCpuArray::try_from(Map::PerCpuArray(md))?;
    let mut v = [0u64; COUNTERS_LEN as usize];
    for (i, c) in v.iter_mut().enumerate() {
        *c = percpu_sum(&arr, i as u32)?;
    }
    Ok(v)
}

/// `xdp_md` for a live-frames run of `len` bytes entering on `ifindex`.
fn xdp_md(len: usize, ifindex: u32) -> [u8; 24] {
    let mut b = [0u8; 24];
    b[4..8].copy_from_slice(&(len as u32).to_ne_bytes());
    b[12..16].copy_from_slice(&ifindex.to_ne_bytes());
    b
}

/// Runs `prog` in live-frames mode on `frame` (entering on `ifindex`) for
/// `count` frames, one BPF_PROG_TEST_RUN call per `chunk`, on one thread.
/// Must run on a thread inside the interface's namespace. Returns (frames,
/// wall time, kernel-reported time per frame).
fn live_run(
    prog: &Xdp,
    frame: &[u8],
    ifindex: u32,
    count: u64,
    chunk: u64,
) -> anyhow::Result<(u64, Duration, f64)> {
    let ctx = xdp_md(frame.len(), ifindex);
    let started = Instant::now();
    let mut sent = 0u64;
    let mut kernel_ns = 0f64;
    while sent < count {
        let n = chunk.min(count - sent).min(u64::from(u32::MAX));
        kernel_ns += live_call(prog, frame, &ctx, n)?;
        sent += n;
    }
    let wall = started.elapsed();
    Ok((
        sent,
        wall,
        if sent > 0 {
            kernel_ns / sent as f64
        } else {
            0.0
        },
    ))
}

/// One live-frames call of `n` frames; returns the kernel's total time in ns.
fn live_call(prog: &Xdp, frame: &[u8], ctx: &[u8; 24], n: u64) -> anyhow::Result<f64> {
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(frame);
    opts.ctx_in = Some(ctx);
    opts.repeat = u32::try_from(n)?;
    opts.attrs = TestRunAttrs::new().xdp_live_frames(LIVE_BATCH);
    let r = prog
        .test_run(opts)
        .context("BPF_PROG_TEST_RUN in live-frames mode")?;
    Ok(r.duration.as_nanos() as f64 * n as f64)
}

/// Generator threads. Each live-frames call costs about 25 ms of wall time
/// beyond its frames here (page-pool set-up and teardown, measured), which
/// several threads would overlap; but with 4 concurrent callers up to 25% of
/// the frames vanished between the generator and the responder (neither
/// the veth's xmit errors nor its drops counted them; measured). One thread.
const WORKERS: usize = 1;
/// Pacing granularity: a paced call sends the frames of this much time.
const TICK: Duration = Duration::from_millis(100);

/// The flood: `WORKERS` threads in `ns` claim chunks of frames from a shared
/// counter as they fall due at `rate` frames/s (0 = unpaced), until `count`
/// frames or `limit` of time. Each chunk leaves at the generator's full
/// speed, so a paced flood is bursts of up to rate x TICK frames.
fn flood(
    ns: &NetNs,
    prog: &Xdp,
    frame: &[u8],
    ifindex: u32,
    count: u64,
    rate: u64,
    limit: Duration,
) -> anyhow::Result<(u64, Duration)> {
    use std::sync::atomic::{AtomicU64, Ordering};
    let ctx = xdp_md(frame.len(), ifindex);
    let chunk = if rate == 0 {
        MAX_CHUNK
    } else {
        ((rate as f64 * TICK.as_secs_f64()) as u64).clamp(1, MAX_CHUNK)
    };
    let claimed = AtomicU64::new(0);
    let sent = AtomicU64::new(0);
    let started = Instant::now();
    let worker = || -> anyhow::Result<()> {
        loop {
            let elapsed = started.elapsed();
            if elapsed >= limit {
                return Ok(());
            }
            let due = if rate == 0 {
                u64::MAX
            } else {
                (elapsed.as_secs_f64() * rate as f64) as u64
            };
            let c = claimed.load(Ordering::Relaxed);
            if c >= count {
                return Ok(());
            }
            if c >= due {
                // Pacing: the next chunk is not due yet.
                std::thread::sleep(Duration::from_micros(500));
                continue;
            }
            let n = chunk.min(count - c);
            if claimed
                .compare_exchange(c, c + n, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            live_call(prog, frame, &ctx, n)?;
            sent.fetch_add(n, Ordering::Relaxed);
        }
    };
    let results: Vec<anyhow::Result<()>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..WORKERS)
            .map(|_| scope.spawn(|| ns.try_run(worker).map_err(anyhow::Error::from)?))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow!("a generator thread panicked")))
            })
            .collect()
    });
    let mut wall = started.elapsed();
    if rate > 0 {
        // The last chunk goes out ahead of its time: the step lasts until it is due.
        wall = wall.max(Duration::from_secs_f64(count as f64 / rate as f64));
    }
    for r in results {
        r?;
    }
    Ok((sent.load(Ordering::Relaxed), wall))
}

fn xdp<'a>(ebpf: &'a mut Ebpf, name: &str) -> anyhow::Result<&'a mut Xdp> {
    ebpf.program_mut(name)
        .ok_or_else(|| anyhow!("no program {name} in the object"))?
        .try_into()
        .with_context(|| format!("{name} is not an XDP program"))
}

// ---------------------------------------------------------------------------
// The bench

/// The loaded benchmark programs (in the generator's namespace).
struct Gen {
    ebpf: Ebpf,
    stats: PerCpuArray<MapData, u64>,
    cfg: Array<MapData, GenConfig>,
    base: GenConfig,
    ifindex: u32,
}

impl Gen {
    fn load(object: &[u8], generator: &Endpoint) -> anyhow::Result<Self> {
        let ifindex = generator.ifindex();
        generator.ns().try_run(|| -> anyhow::Result<Gen> {
            let mut ebpf = EbpfLoader::new()
                .load(object)
                .context("loading bench-ebpf")?;
            for name in ["bench_gen", "bench_tx", "bench_count"] {
                xdp(&mut ebpf, name)?
                    .load()
                    .with_context(|| format!("loading {name}"))?;
            }
            xdp(&mut ebpf, "bench_count")?
                .attach_to_if_index(ifindex, XdpMode::Driver)
                .context("attaching bench_count (native) to the generator's veth")?;
            let stats = PerCpuArray::try_from(ebpf.take_map("GEN_STATS").context("GEN_STATS")?)?;
            let cfg = Array::try_from(ebpf.take_map("GEN_CFG").context("GEN_CFG")?)?;
            let (ip6_hi, ip6_lo) = halves(generator.v6().context("generator IPv6")?);
            let (vip6_hi, vip6_lo) = halves(VIP6);
            let base = GenConfig {
                proto: 0,
                legit_every: 0,
                tail_call: 0,
                real_mac: mac_u64(generator.mac()),
                real_ip4: u64::from(u32::from(generator.v4().context("generator IPv4")?)),
                real_ip6_hi: ip6_hi,
                real_ip6_lo: ip6_lo,
                vip4: u64::from(u32::from(VIP4)),
                vip6_hi,
                vip6_lo,
                ns_sum_base: ns_sum_base(VIP6),
            };
            Ok(Gen {
                ebpf,
                stats,
                cfg,
                base,
                ifindex,
            })
        })?
    }

    fn configure(&mut self, proto: Proto, legit_every: u64, tail_call: bool) -> anyhow::Result<()> {
        let c = GenConfig {
            proto: u64::from(proto == Proto::Ns),
            legit_every,
            tail_call: u64::from(tail_call),
            ..self.base
        };
        self.cfg.set(0, c, 0).context("writing GEN_CFG")
    }

    fn template(&self, proto: Proto, generator: &Endpoint) -> Vec<u8> {
        match proto {
            Proto::Arp => {
                let mut f = arp_request(
                    generator.mac(),
                    generator.v4().map_or([0; 4], |a| a.octets()),
                    VIP4.octets(),
                    None,
                );
                f.resize(60, 0);
                f
            }
            Proto::Ns => neighbour_solicitation(
                generator.mac(),
                generator.v6().map_or([0; 16], |a| a.octets()),
                VIP6.octets(),
                true,
                false,
                None,
            ),
        }
    }
}

/// Time the agent gets to attach and lead.
const AGENT_START: Duration = Duration::from_secs(15);

struct Responder {
    agent: Option<Agent>,
    pins: Option<PinDirGuard>,
}

fn start_responder(
    mode: Mode,
    resp: &Endpoint,
    opts: &DataplaneOptions,
) -> anyhow::Result<Responder> {
    let ns = resp.ns();
    match mode {
        Mode::Kernel => {
            for key in ["all", RESP_IF] {
                ns.sysctl(&format!("net/ipv4/conf/{key}/arp_ignore"), "0")?;
            }
            ns.exec_ok(&["addr", "add", &format!("{VIP4}/32"), "dev", RESP_IF])?;
            ns.exec_ok(&[
                "addr",
                "add",
                &format!("{VIP6}/128"),
                "dev",
                RESP_IF,
                "nodad",
            ])?;
            Ok(Responder {
                agent: None,
                pins: None,
            })
        }
        Mode::Native | Mode::Skb => {
            let pins = PinDirGuard::new(&format!("dp-{}", mode.name()));
            let args: Vec<String> = [
                "run",
                "--interface",
                RESP_IF,
                "--address",
                &VIP4.to_string(),
                "--address",
                &VIP6.to_string(),
                "--no-election",
                "--xdp-mode",
                mode.name(),
                "--pin-dir",
                &pins.path().display().to_string(),
                "--metrics-addr",
                "",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            let mut agent = Agent::spawn(
                &format!("agent-{}", mode.name()),
                ns,
                &opts.agent_bin,
                &args,
            )
            .context("starting vip-agent")?;
            let line = agent
                .wait_for_log("XDP responder attached", AGENT_START)
                .context("waiting for the agent to attach")?;
            anyhow::ensure!(
                line.contains(&format!("mode=\"{}\"", mode.name())),
                "agent attached in another mode than {}: {line}",
                mode.name()
            );
            agent
                .wait_for_log("leading", AGENT_START)
                .context("waiting for the agent to lead")?;
            Ok(Responder {
                agent: Some(agent),
                pins: Some(pins),
            })
        }
    }
}

fn stop_responder(mode: Mode, r: Responder, resp: &Endpoint) -> anyhow::Result<()> {
    match mode {
        Mode::Kernel => {
            let ns = resp.ns();
            ns.exec_ok(&["addr", "del", &format!("{VIP4}/32"), "dev", RESP_IF])?;
            ns.exec_ok(&["addr", "del", &format!("{VIP6}/128"), "dev", RESP_IF])?;
        }
        Mode::Native | Mode::Skb => {
            if let Some(mut agent) = r.agent {
                agent
                    .stop(Duration::from_secs(10))
                    .context("stopping the agent")?;
            }
            drop(r.pins);
        }
    }
    Ok(())
}

/// Waits until the reply counters stop moving (50 ms without change), at most 2 s.
fn settle(generator: &Gen) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut last = gen_stats(&generator.stats)?;
    let mut still_since = Instant::now();
    while Instant::now() < deadline {
        // Polling an observable counter with a deadline.
        std::thread::sleep(Duration::from_millis(10));
        let now = gen_stats(&generator.stats)?;
        if now != last {
            last = now;
            still_since = Instant::now();
        } else if still_since.elapsed() >= Duration::from_millis(50) {
            break;
        }
    }
    Ok(())
}

fn flood_step(
    generator: &mut Gen,
    pair: &Pair,
    mode: Mode,
    proto: Proto,
    rate: u64,
    responder: &Responder,
    opts: &DataplaneOptions,
) -> anyhow::Result<Step> {
    let (g, r) = (pair.a(), pair.b());
    generator.configure(proto, opts.legit_every, false)?;
    r.ns().exec_ok(&["neigh", "flush", "all"])?;
    let neigh_before = neigh_count(r.ns())?;
    let frame = generator.template(proto, g);
    let pid = responder
        .agent
        .as_ref()
        .and_then(Agent::pid)
        .map(|p| p.as_raw());
    let seen_idx = match proto {
        Proto::Arp => Counter::ArpRequests,
        Proto::Ns => Counter::NsRequests,
    } as usize;
    let pins = responder.pins.as_ref().map(|p| p.path().to_path_buf());
    let seen0 = pins.as_deref().map(responder_counters).transpose()?;
    let s0 = gen_stats(&generator.stats)?;
    let (e_g0, e_r0) = (
        ethtool_stats(g.ns(), GEN_IF)?,
        ethtool_stats(r.ns(), RESP_IF)?,
    );
    let (sys0, soft0) = cpu_ticks()?;
    let agent0 = pid.map(proc_ticks).transpose()?;
    let t0 = Instant::now();

    let count = if rate == 0 {
        u64::MAX
    } else {
        (rate as f64 * opts.step.as_secs_f64()) as u64
    };
    let ifindex = generator.ifindex;
    let prog: &Xdp = xdp(&mut generator.ebpf, "bench_gen")?;
    let (sent, wall) = flood(g.ns(), prog, &frame, ifindex, count, rate, opts.step)?;
    settle(generator)?;

    let elapsed = t0.elapsed().as_secs_f64();
    let (sys1, soft1) = cpu_ticks()?;
    let agent1 = pid.map(proc_ticks).transpose()?;
    let s1 = gen_stats(&generator.stats)?;
    let (e_g1, e_r1) = (
        ethtool_stats(g.ns(), GEN_IF)?,
        ethtool_stats(r.ns(), RESP_IF)?,
    );
    let seen1 = pins.as_deref().map(responder_counters).transpose()?;
    let neigh_after = neigh_count(r.ns())?;

    let d = |i: u32| s1[i as usize] - s0[i as usize];
    let (legit_answered, spoofed) = match proto {
        Proto::Arp => (d(idx::ARP_REPLY_LEGIT), d(idx::ARP_REPLY_SPOOFED)),
        Proto::Ns => (d(idx::NA_LEGIT), d(idx::NA_SPOOFED)),
    };
    anyhow::ensure!(
        d(idx::SENT) == sent,
        "generator counted {} frames, test runs {sent}",
        d(idx::SENT)
    );
    let replies = legit_answered + spoofed;
    let secs = wall.as_secs_f64();
    let tck = clk_tck();
    let pct = |ticks: u64| ticks as f64 / tck / elapsed * 100.0;
    let ed = |a: &std::collections::HashMap<String, u64>,
              b: &std::collections::HashMap<String, u64>,
              k: &str| { stat(b, k).saturating_sub(stat(a, k)) };
    Ok(Step {
        mode,
        proto,
        target_pps: rate,
        sent,
        seconds: secs,
        offered_pps: sent as f64 / secs,
        replies,
        replies_pps: replies as f64 / secs,
        lost: sent.saturating_sub(replies),
        answered_pct: if sent > 0 {
            replies as f64 * 100.0 / sent as f64
        } else {
            0.0
        },
        legit_sent: d(idx::LEGIT_SENT),
        legit_answered,
        responder_seen: seen0.zip(seen1).map(|(a, b)| b[seen_idx] - a[seen_idx]),
        xmit_errors: ed(&e_g0, &e_g1, "tx_queue_0_xdp_xmit_errors"),
        rx_drops: ed(&e_r0, &e_r1, "rx_queue_0_drops"),
        softirq_cpu_pct: pct(soft1 - soft0),
        system_cpu_pct: pct(sys1 - sys0),
        agent_cpu_pct: agent0.zip(agent1).map(|(a, b)| pct(b - a)),
        neigh_before,
        neigh_after,
    })
}

/// Per-packet cost of an ANSWERED request in live-frames mode.
///
/// Live mode recycles its pages without restoring `data_in`: once the
/// responder has turned a request into a reply in place, the next run of
/// that page sees the reply (and passes it). Run naively, the responder's
/// own counters show how few runs were answered. So the request is rebuilt
/// in every run by `bench_gen` (all fields, fixed legitimate sender), which
/// then tail-calls either the responder or the empty `XDP_TX` program: the
/// difference is the responder's cost. Frames leave through `vg0`; an
/// `XDP_DROP` program (bench_count, which drops ARP) on `vr0` absorbs them.
fn measure_cost(
    generator: &mut Gen,
    pair: &Pair,
    responder_object: &[u8],
    opts: &DataplaneOptions,
) -> anyhow::Result<Vec<CostRow>> {
    let (g, r) = (pair.a(), pair.b());
    let frames = u64::from(opts.cost_frames);
    // The responder program (the agent's object), VIP entry active for an hour.
    let mut vip = EbpfLoader::new()
        .load(responder_object)
        .context("loading the responder object")?;
    g.ns().try_run(|| -> anyhow::Result<()> {
        xdp(&mut vip, vip_common::maps::PROGRAM_NAME)?
            .load()
            .context("loading the responder program")?;
        Ok(())
    })??;
    let mut vips: BpfHashMap<MapData, VipKey, VipEntry> =
        BpfHashMap::try_from(vip.take_map("VIPS").context("VIPS")?)?;
    let counters: PerCpuArray<MapData, u64> =
        PerCpuArray::try_from(vip.take_map("COUNTERS").context("COUNTERS")?)?;
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)?;
    let deadline = u64::try_from(now.tv_sec())? * 1_000_000_000
        + u64::try_from(now.tv_nsec())?
        + 3_600_000_000_000;
    vips.insert(
        VipKey::v4(VIP4.octets()),
        VipEntry::new(r.mac(), STATE_ACTIVE, deadline),
        0,
    )?;
    // A dropping program on the responder's veth, so XDP-sent frames land somewhere cheap.
    let mut sink = EbpfLoader::new().load(&std::fs::read(bench_object()?)?)?;
    let r_ifindex = r.ifindex();
    r.ns().try_run(|| -> anyhow::Result<()> {
        let p = xdp(&mut sink, "bench_count")?;
        p.load()?;
        p.attach_to_if_index(r_ifindex, XdpMode::Driver)
            .context("attaching the sink to the responder's veth")?;
        Ok(())
    })??;

    let frame = generator.template(Proto::Arp, g);
    let ifindex = generator.ifindex;
    let mut jump = ProgramArray::try_from(generator.ebpf.take_map("JUMP").context("JUMP")?)?;
    let answered = |c: &PerCpuArray<MapData, u64>| percpu_sum(c, Counter::ArpAnswered as u32);
    // (name, what, kernel ns per frame, wall ns per frame, answered %) per round.
    type Row = (String, String, Vec<f64>, Vec<f64>, Option<f64>);
    let mut rows: Vec<Row> = vec![
        (
            "empty".into(),
            "bench_tx alone: returns XDP_TX".into(),
            vec![],
            vec![],
            None,
        ),
        (
            "responder-naive".into(),
            "the responder alone on the same request (pages recycled: see answered)".into(),
            vec![],
            vec![],
            None,
        ),
        (
            "gen+empty".into(),
            "bench_gen rebuilds the request, tail-calls bench_tx".into(),
            vec![],
            vec![],
            None,
        ),
        (
            "gen+responder".into(),
            "bench_gen rebuilds the request, tail-calls the responder (VIP active)".into(),
            vec![],
            vec![],
            None,
        ),
    ];
    generator.configure(Proto::Arp, 1, true)?;
    for _round in 0..opts.cost_rounds.max(1) {
        for (i, row) in rows.iter_mut().enumerate() {
            let before = answered(&counters)?;
            let tail_failed0 = percpu_sum(&generator.stats, idx::TAIL_CALL_FAILED)?;
            let prog: &Xdp = match i {
                0 => xdp(&mut generator.ebpf, "bench_tx")?,
                1 => xdp(&mut vip, vip_common::maps::PROGRAM_NAME)?,
                _ => {
                    let target: &Xdp = if i == 2 {
                        xdp(&mut generator.ebpf, "bench_tx")?
                    } else {
                        xdp(&mut vip, vip_common::maps::PROGRAM_NAME)?
                    };
                    jump.set(0, target.fd()?, 0).context("setting JUMP[0]")?;
                    xdp(&mut generator.ebpf, "bench_gen")?
                }
            };
            let (n, wall, kns) = g
                .ns()
                .try_run(|| live_run(prog, &frame, ifindex, frames, frames))??;
            let tail_failed = percpu_sum(&generator.stats, idx::TAIL_CALL_FAILED)? - tail_failed0;
            if tail_failed > 0 {
                bail!("{}: {tail_failed} tail calls failed", row.0);
            }
            row.2.push(kns);
            row.3.push(wall.as_nanos() as f64 / n as f64);
            if i % 2 == 1 {
                let a = answered(&counters)? - before;
                row.4 = Some(a as f64 * 100.0 / n as f64);
            }
        }
    }
    generator.configure(Proto::Arp, opts.legit_every, false)?;
    drop(sink);
    Ok(rows
        .into_iter()
        .map(|(name, what, k, w, a)| CostRow {
            name,
            what,
            frames,
            ns_per_frame: median(k),
            wall_ns_per_frame: median(w),
            answered_pct: a,
        })
        .collect())
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

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

const COST_NOTE: &str = "Live-frames mode recycles its pages without restoring data_in, so a \
responder run alone answers only the first use of each page and then sees its own reply \
(responder-naive: see its answered share). gen+X rebuilds the request in every run and \
tail-calls X; the responder's cost per answered request is estimated as \
(gen+responder) - (gen+empty) + empty. Every run includes the transmit out of vg0 and the \
XDP_DROP on the peer (softirq on the same CPU).";

/// The responder's estimated cost per answered request, and the empty program's.
pub fn cost_estimate(cost: &[CostRow]) -> Option<(f64, f64)> {
    let get = |n: &str| cost.iter().find(|c| c.name == n).map(|c| c.ns_per_frame);
    let (e, ge, gr) = (get("empty")?, get("gen+empty")?, get("gen+responder")?);
    Some((gr - ge + e, e))
}

fn highest(steps: &[Step], mode: Mode, proto: Proto) -> Option<&Step> {
    steps
        .iter()
        .filter(|s| s.mode == mode && s.proto == proto)
        .max_by(|a, b| a.offered_pps.total_cmp(&b.offered_pps))
}

/// The targets, evaluated on what was measured.
pub fn evaluate(steps: &[Step], cost: &[CostRow]) -> Vec<Target> {
    let mut t = Vec::new();
    let status = |ok: bool| if ok { "PASS" } else { "FAIL" }.to_owned();
    let modes: Vec<Mode> = Mode::ALL
        .into_iter()
        .filter(|m| *m != Mode::Kernel && steps.iter().any(|s| s.mode == *m))
        .collect();
    let protos: Vec<Proto> = [Proto::Arp, Proto::Ns]
        .into_iter()
        .filter(|p| steps.iter().any(|s| s.proto == *p))
        .collect();
    for &m in &modes {
        for &p in &protos {
            if let Some(s) = highest(steps, m, p) {
                t.push(Target {
                    name: format!(
                        "{} {}: 100% answered at the highest offered rate",
                        m.name(),
                        p.name()
                    ),
                    status: status(s.replies == s.sent && s.sent > 0),
                    detail: format!(
                        "{:.0} pps offered, {} of {} answered ({:.3}%)",
                        s.offered_pps, s.replies, s.sent, s.answered_pct
                    ),
                });
            }
            // Where the kernel loses, XDP must answer more per second.
            let kernel_losing: Vec<&Step> = steps
                .iter()
                .filter(|s| s.mode == Mode::Kernel && s.proto == p && s.replies < s.sent)
                .collect();
            let mut worse = Vec::new();
            let mut compared = 0;
            for k in &kernel_losing {
                if let Some(x) = steps
                    .iter()
                    .find(|s| s.mode == m && s.proto == p && s.target_pps == k.target_pps)
                {
                    compared += 1;
                    if x.replies_pps <= k.replies_pps {
                        worse.push(format!(
                            "at {} pps: {:.0}/s vs kernel {:.0}/s",
                            k.target_pps, x.replies_pps, k.replies_pps
                        ));
                    }
                }
            }
            t.push(Target {
                name: format!(
                    "{} {}: higher reply rate than the kernel where the kernel loses",
                    m.name(),
                    p.name()
                ),
                status: if compared == 0 {
                    "N/A".into()
                } else {
                    status(worse.is_empty())
                },
                detail: if compared == 0 {
                    "the kernel answered every request at every offered rate (or was not run)"
                        .into()
                } else if worse.is_empty() {
                    format!("higher at all {compared} rates where the kernel lost requests")
                } else {
                    worse.join("; ")
                },
            });
        }
        let grew: Vec<String> = steps
            .iter()
            .filter(|s| s.mode == m && s.neigh_after > s.neigh_before)
            .map(|s| {
                format!(
                    "{} {} pps: {} -> {}",
                    s.proto.name(),
                    s.target_pps,
                    s.neigh_before,
                    s.neigh_after
                )
            })
            .collect();
        t.push(Target {
            name: format!("{}: neighbour table untouched", m.name()),
            status: status(grew.is_empty()),
            detail: if grew.is_empty() {
                "no entry added in any step".into()
            } else {
                grew.join("; ")
            },
        });
        let max_cpu = steps
            .iter()
            .filter(|s| s.mode == m)
            .filter_map(|s| s.agent_cpu_pct)
            .fold(0.0f64, f64::max);
        t.push(Target {
            name: format!(
                "{}: agent CPU near idle (< {AGENT_IDLE_PCT}% of a CPU)",
                m.name()
            ),
            status: status(max_cpu < AGENT_IDLE_PCT),
            detail: format!("highest over the steps: {max_cpu:.2}%"),
        });
        let legit_missed: u64 = steps
            .iter()
            .filter(|s| s.mode == m)
            .map(|s| s.legit_sent.saturating_sub(s.legit_answered))
            .sum();
        let legit_sent: u64 = steps
            .iter()
            .filter(|s| s.mode == m)
            .map(|s| s.legit_sent)
            .sum();
        t.push(Target {
            name: format!("{}: legitimate requests in the flood answered", m.name()),
            status: status(legit_missed == 0 && legit_sent > 0),
            detail: format!("{} of {legit_sent} answered", legit_sent - legit_missed),
        });
    }
    match cost_estimate(cost) {
        Some((r, e)) => t.push(Target {
            name: "answered request <= 2x the empty program (live frames)".into(),
            status: status(r <= 2.0 * e),
            detail: format!("{r:.1} ns vs empty {e:.1} ns: {:.2}x", r / e),
        }),
        None => t.push(Target {
            name: "answered request <= 2x the empty program (live frames)".into(),
            status: "N/A".into(),
            detail: "cost not measured".into(),
        }),
    }
    t
}

fn row(s: &Step) -> String {
    format!(
        "{:<6} {:<3} {:>8} {:>10.0} {:>10.0} {:>9} {:>8.3}% {:>5}/{:<5} {:>7.1}% {:>7} {:>6} -> {:<6}",
        s.mode.name(),
        s.proto.name(),
        if s.target_pps == 0 {
            "max".to_owned()
        } else {
            s.target_pps.to_string()
        },
        s.offered_pps,
        s.replies_pps,
        s.lost,
        s.answered_pct,
        s.legit_answered,
        s.legit_sent,
        s.softirq_cpu_pct,
        s.agent_cpu_pct
            .map_or_else(|| "-".to_owned(), |c| format!("{c:.1}%")),
        s.neigh_before,
        s.neigh_after,
    )
}

/// The table header matching [`row`].
pub const HEADER: &str = "mode   req   target    offered/s  replies/s      lost answered  legit ok  softirq   agent  neigh before -> after";

/// Markdown of the report.
pub fn markdown(r: &DataplaneReport) -> String {
    let mut s = String::new();
    s.push_str("# Data plane under flood\n\n");
    s.push_str(&format!(
        "Reproduce (root): `{}`\n\nRun {} on Linux {} ({} CPUs), {} s per step, one legitimate request every {} frames.\n\n",
        r.command, r.started, r.kernel, r.cpus, r.step_seconds, r.legit_every
    ));
    s.push_str("Generator: `bench_gen` (bench-ebpf) in BPF_PROG_TEST_RUN live-frames mode on a direct veth pair, \
spoofed senders (random locally administered MACs; IPv4 hosts of 192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24; \
IPv6 2001:db8::/64 random interface ids). Replies counted and dropped by `bench_count` on the generator's veth. \
`kernel` = no XDP, VIPs on the responder's interface, arp_ignore=0; `native`/`skb` = `vip-agent run --no-election`.\n\n");
    s.push_str("| mode | req | target pps | offered pps | replies/s | lost | answered | legit answered | softirq CPU | agent CPU | neigh before -> after | XDP/kernel replies |\n");
    s.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for st in &r.steps {
        let ratio = if st.mode == Mode::Kernel {
            "".to_owned()
        } else {
            r.steps
                .iter()
                .find(|k| {
                    k.mode == Mode::Kernel && k.proto == st.proto && k.target_pps == st.target_pps
                })
                .filter(|k| k.replies_pps > 0.0)
                .map_or_else(
                    || "-".to_owned(),
                    |k| format!("{:.2}", st.replies_pps / k.replies_pps),
                )
        };
        s.push_str(&format!(
            "| {} | {} | {} | {:.0} | {:.0} | {} | {:.3}% | {}/{} | {:.1}% | {} | {} -> {} | {} |\n",
            st.mode.name(),
            st.proto.name(),
            if st.target_pps == 0 { "max".to_owned() } else { st.target_pps.to_string() },
            st.offered_pps,
            st.replies_pps,
            st.lost,
            st.answered_pct,
            st.legit_answered,
            st.legit_sent,
            st.softirq_cpu_pct,
            st.agent_cpu_pct.map_or_else(|| "-".to_owned(), |c| format!("{c:.2}%")),
            st.neigh_before,
            st.neigh_after,
            ratio,
        ));
    }
    s.push_str("\nCPU: softirq = softirq time of the whole machine (generator, responder and counter run on the same cores), \
percent of one CPU; agent = the vip-agent process (user + system).\n\n");
    if !r.cost.is_empty() {
        s.push_str("## Per-packet cost in live-frames mode (ARP request, median of rounds)\n\n");
        s.push_str("| run | what | frames | ns/frame (kernel) | ns/frame (wall) | answered |\n|---|---|---:|---:|---:|---:|\n");
        for c in &r.cost {
            s.push_str(&format!(
                "| {} | {} | {} | {:.1} | {:.1} | {} |\n",
                c.name,
                c.what,
                c.frames,
                c.ns_per_frame,
                c.wall_ns_per_frame,
                c.answered_pct
                    .map_or_else(|| "-".to_owned(), |a| format!("{a:.2}%"))
            ));
        }
        if let Some((resp, empty)) = cost_estimate(&r.cost) {
            s.push_str(&format!(
                "\nEstimated answered request: {resp:.1} ns vs empty program {empty:.1} ns ({:.2}x).\n",
                resp / empty
            ));
        }
        s.push_str(&format!("\n{}\n", r.cost_note));
    }
    s.push_str("\n## Targets\n\n");
    for t in &r.targets {
        s.push_str(&format!("- **{}** {}: {}\n", t.status, t.name, t.detail));
    }
    s
}

/// Write `dataplane.json` and `dataplane.md` into `dir`.
pub fn write(r: &DataplaneReport, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let json = dir.join("dataplane.json");
    std::fs::write(&json, serde_json::to_vec_pretty(r)?)
        .with_context(|| format!("writing {}", json.display()))?;
    let md = dir.join("dataplane.md");
    std::fs::write(&md, markdown(r)).with_context(|| format!("writing {}", md.display()))?;
    Ok(())
}

/// Print the table and the targets.
pub fn print(r: &DataplaneReport) {
    println!("{HEADER}");
    for s in &r.steps {
        println!("{}", row(s));
    }
    for c in &r.cost {
        println!(
            "cost {:<14} {:>8.1} ns/frame (wall {:>8.1}){}",
            c.name,
            c.ns_per_frame,
            c.wall_ns_per_frame,
            c.answered_pct
                .map_or_else(String::new, |a| format!(", answered {a:.2}%"))
        );
    }
    for t in &r.targets {
        println!("{} {}: {}", t.status, t.name, t.detail);
    }
}
