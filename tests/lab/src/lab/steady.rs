//! `vip-lab steady`: the cost of a quiet cluster. Runs the lab with real
//! agents for a while without faults and reports, per node, API requests per
//! minute (from the Lease server's counters), resident memory and CPU use.
//! Prints a table and writes JSON.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;

use super::{Implementation, Lab, LabConfig};

#[derive(Debug, Serialize)]
pub struct NodeCost {
    pub node: String,
    pub leader: bool,
    pub api_requests_per_minute: f64,
    pub puts_per_minute: f64,
    pub watches_opened: u64,
    pub rss_kib: u64,
    /// CPU time used over the window, as a percentage of one core.
    pub cpu_percent: f64,
}

#[derive(Debug, Serialize)]
pub struct SteadyReport {
    pub implementation: String,
    pub seconds: f64,
    pub agent_binary: String,
    pub nodes: Vec<NodeCost>,
}

/// utime + stime of a process, in clock ticks, and its RSS in KiB.
fn proc_usage(pid: u32) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some((ticks, rss))
}

/// The pid of the agent whose command line names `pin_dir`.
fn agent_pid(pin_dir: &Path) -> Option<u32> {
    let needle = pin_dir.to_string_lossy().into_owned();
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd);
        if cmd.contains("vip-agent") && cmd.contains(&needle) {
            return Some(pid);
        }
    }
    None
}

pub async fn run(seconds: u64, out: Option<PathBuf>) -> anyhow::Result<SteadyReport> {
    let implementation = Implementation::agent_defaults();
    let label = implementation.label();
    // The home-made Lease server attributes every request to its agent (by
    // User-Agent) and counts it by verb: the per-agent costs come from it.
    let lab = Lab::start(LabConfig {
        implementation,
        control_plane: super::ControlPlaneKind::Embedded,
        ..LabConfig::default()
    })
    .await?;
    let result = measure(&lab, seconds, label).await;
    lab.shutdown().await?;
    let report = result?;
    println!(
        "steady state, {} for {:.0} s:",
        report.implementation, report.seconds
    );
    println!(
        "{:<8} {:>6} {:>12} {:>10} {:>8} {:>9} {:>7}",
        "node", "leader", "requests/min", "PUTs/min", "watches", "RSS KiB", "CPU %"
    );
    for n in &report.nodes {
        println!(
            "{:<8} {:>6} {:>12.1} {:>10.1} {:>8} {:>9} {:>7.2}",
            n.node,
            n.leader,
            n.api_requests_per_minute,
            n.puts_per_minute,
            n.watches_opened,
            n.rss_kib,
            n.cpu_percent
        );
    }
    if let Some(path) = out {
        std::fs::write(&path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("written to {}", path.display());
    }
    Ok(report)
}

async fn measure(lab: &Lab, seconds: u64, implementation: String) -> anyhow::Result<SteadyReport> {
    let leader = lab.wait_for_leader(Duration::from_secs(15)).await?;
    let server = lab.lease_server().context("the lab runs no Lease server")?;
    let names = lab.node_names();
    let pids: Vec<Option<u32>> = lab.pin_dirs().iter().map(|d| agent_pid(d)).collect();
    let ticks_per_sec = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    let before: Vec<Option<(u64, u64)>> = pids.iter().map(|p| p.and_then(proc_usage)).collect();
    server.reset_counters();
    let started = Instant::now();
    // The measurement window itself: nothing to wait for but time.
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let elapsed = started.elapsed().as_secs_f64();
    let counters = server.counters();
    let after: Vec<Option<(u64, u64)>> = pids.iter().map(|p| p.and_then(proc_usage)).collect();
    let mut nodes = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let c = counters.get(name).cloned().unwrap_or_default();
        let (cpu, rss) = match (before[i], after[i]) {
            (Some((t0, _)), Some((t1, rss))) => {
                ((t1 - t0) as f64 / ticks_per_sec / elapsed * 100.0, rss)
            }
            _ => (f64::NAN, 0),
        };
        nodes.push(NodeCost {
            node: name.clone(),
            leader: i == leader,
            api_requests_per_minute: c.api_total() as f64 * 60.0 / elapsed,
            puts_per_minute: c.update as f64 * 60.0 / elapsed,
            watches_opened: c.watch,
            rss_kib: rss,
            cpu_percent: cpu,
        });
    }
    Ok(SteadyReport {
        implementation,
        seconds: elapsed,
        agent_binary: crate::agent::agent_bin()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        nodes,
    })
}
