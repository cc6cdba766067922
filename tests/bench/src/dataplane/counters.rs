//! What is measured around a step: CPU ticks, neighbour entries, ethtool
//! statistics, the generator's and the responder's counters.

use std::path::Path;

use anyhow::{Context as _, anyhow};
use aya::maps::{Map, MapData, PerCpuArray};
use vip_common::maps::COUNTERS_LEN;

use super::idx;
use vip_lab::netns::NetNs;

/// `/proc/stat` "cpu" line: (system, softirq) in clock ticks.
pub(super) fn cpu_ticks() -> anyhow::Result<(u64, u64)> {
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
pub(super) fn proc_ticks(pid: i32) -> anyhow::Result<u64> {
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

pub(super) fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// Neighbour entries (IPv4 and IPv6) of a namespace.
pub(super) fn neigh_count(ns: &NetNs) -> anyhow::Result<u64> {
    let mut n = 0;
    for fam in ["-4", "-6"] {
        let out = ns.exec_ok(&[fam, "neigh", "show"])?;
        n += out.lines().filter(|l| !l.trim().is_empty()).count() as u64;
    }
    Ok(n)
}

/// `ethtool -S IF` of a veth, as (key, value) pairs.
pub(super) fn ethtool_stats(
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

pub(super) fn stat(m: &std::collections::HashMap<String, u64>, k: &str) -> u64 {
    m.get(k).copied().unwrap_or(0)
}

pub(super) fn percpu_sum(arr: &PerCpuArray<MapData, u64>, i: u32) -> anyhow::Result<u64> {
    Ok(arr
        .get(&i, 0)
        .with_context(|| format!("reading per-CPU slot {i}"))?
        .iter()
        .sum())
}

pub(super) fn gen_stats(
    arr: &PerCpuArray<MapData, u64>,
) -> anyhow::Result<[u64; idx::LEN as usize]> {
    let mut v = [0u64; idx::LEN as usize];
    for (i, c) in v.iter_mut().enumerate() {
        *c = percpu_sum(arr, i as u32)?;
    }
    Ok(v)
}

pub(super) fn responder_counters(pin_dir: &Path) -> anyhow::Result<[u64; COUNTERS_LEN as usize]> {
    let md = MapData::from_pin(pin_dir.join("COUNTERS")).context("pinned COUNTERS map")?;
    let arr: PerCpuArray<MapData, u64> = PerCpuArray::try_from(Map::PerCpuArray(md))?;
    let mut v = [0u64; COUNTERS_LEN as usize];
    for (i, c) in v.iter_mut().enumerate() {
        *c = percpu_sum(&arr, i as u32)?;
    }
    Ok(v)
}
