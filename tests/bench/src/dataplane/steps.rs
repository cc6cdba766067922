//! One flood step (mode, protocol, offered rate), and the per-packet cost of
//! an answered request.

use std::time::Instant;

use anyhow::{Context as _, bail};
use aya::EbpfLoader;
use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray, ProgramArray};
use aya::programs::{Xdp, XdpMode};
use vip_common::maps::{Counter, STATE_ACTIVE};
use vip_common::{VipEntry, VipKey};

use super::counters::{
    clk_tck, cpu_ticks, ethtool_stats, gen_stats, neigh_count, percpu_sum, proc_ticks,
    responder_counters, stat,
};
use super::generator::{Gen, flood, live_run, xdp};
use super::responder::{Responder, settle};
use super::{
    CostRow, DataplaneOptions, GEN_IF, Mode, Proto, RESP_IF, Step, VIP4, bench_object, idx,
};
use vip_lab::agent::Agent;
use vip_lab::topology::Pair;

pub(super) fn flood_step(
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
pub(super) fn measure_cost(
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

pub(super) fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
