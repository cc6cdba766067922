//! The flood generator: `bench_gen` through BPF_PROG_TEST_RUN in live-frames
//! mode, paced in chunks, and `bench_count` counting the answers.

use std::net::Ipv6Addr;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};
use aya::maps::{Array, MapData, PerCpuArray};
use aya::programs::{TestRun, TestRunAttrs, TestRunOptions, Xdp, XdpMode};
use aya::{Ebpf, EbpfLoader};
use vip_common::frame::craft::{arp_request, neighbour_solicitation};

use super::{GenConfig, LIVE_BATCH, MAX_CHUNK, Proto, VIP4, VIP6};
use vip_lab::netns::NetNs;
use vip_lab::topology::Endpoint;

pub(super) fn mac_u64(m: [u8; 6]) -> u64 {
    m.iter().fold(0, |a, b| (a << 8) | u64::from(*b))
}

pub(super) fn halves(ip: Ipv6Addr) -> (u64, u64) {
    let v = u128::from(ip);
    ((v >> 64) as u64, v as u64)
}

/// Unfolded one's complement sum of the NS checksum words that do not
/// depend on the sender: pseudo header (destination, length 32, next header
/// 58) and the message (type 135, target, option type/len 1/1).
pub(super) fn ns_sum_base(vip: Ipv6Addr) -> u64 {
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

pub(super) fn solicited_node(ip: Ipv6Addr) -> Ipv6Addr {
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

/// `xdp_md` for a live-frames run of `len` bytes entering on `ifindex`.
pub(super) fn xdp_md(len: usize, ifindex: u32) -> [u8; 24] {
    let mut b = [0u8; 24];
    b[4..8].copy_from_slice(&(len as u32).to_ne_bytes());
    b[12..16].copy_from_slice(&ifindex.to_ne_bytes());
    b
}

/// Runs `prog` in live-frames mode on `frame` (entering on `ifindex`) for
/// `count` frames, one BPF_PROG_TEST_RUN call per `chunk`, on one thread.
/// Must run on a thread inside the interface's namespace. Returns (frames,
/// wall time, kernel-reported time per frame).
pub(super) fn live_run(
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
pub(super) fn live_call(prog: &Xdp, frame: &[u8], ctx: &[u8; 24], n: u64) -> anyhow::Result<f64> {
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
pub(super) const WORKERS: usize = 1;
/// Pacing granularity: a paced call sends the frames of this much time.
pub(super) const TICK: Duration = Duration::from_millis(100);

/// The flood: `WORKERS` threads in `ns` claim chunks of frames from a shared
/// counter as they fall due at `rate` frames/s (0 = unpaced), until `count`
/// frames or `limit` of time. Each chunk leaves at the generator's full
/// speed, so a paced flood is bursts of up to rate x TICK frames.
pub(super) fn flood(
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

pub(super) fn xdp<'a>(ebpf: &'a mut Ebpf, name: &str) -> anyhow::Result<&'a mut Xdp> {
    ebpf.program_mut(name)
        .ok_or_else(|| anyhow!("no program {name} in the object"))?
        .try_into()
        .with_context(|| format!("{name} is not an XDP program"))
}

// ---------------------------------------------------------------------------
// The bench

/// The loaded benchmark programs (in the generator's namespace).
pub(super) struct Gen {
    pub(super) ebpf: Ebpf,
    pub(super) stats: PerCpuArray<MapData, u64>,
    pub(super) cfg: Array<MapData, GenConfig>,
    pub(super) base: GenConfig,
    pub(super) ifindex: u32,
}

impl Gen {
    pub(super) fn load(object: &[u8], generator: &Endpoint) -> anyhow::Result<Self> {
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

    pub(super) fn configure(
        &mut self,
        proto: Proto,
        legit_every: u64,
        tail_call: bool,
    ) -> anyhow::Result<()> {
        let c = GenConfig {
            proto: u64::from(proto == Proto::Ns),
            legit_every,
            tail_call: u64::from(tail_call),
            ..self.base
        };
        self.cfg.set(0, c, 0).context("writing GEN_CFG")
    }

    pub(super) fn template(&self, proto: Proto, generator: &Endpoint) -> Vec<u8> {
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
