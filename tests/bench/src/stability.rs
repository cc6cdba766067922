//! `vip-lab bench stability`: a soak of the fast path. The lab (3 nodes, real
//! control plane by default) runs the agents with `--fast-path` for a long
//! while (default 10 minutes) with random loss on the peer channel (default
//! 1 %), and no other fault: every leadership change is spurious. Printed
//! once per interval and at the end: leadership changes, split-brain
//! windows, fast takeovers, Lease writes per second, the longest ARP gap.
//! Writes `stability.json` ([`StabilityReport`], rewritten after every
//! interval so an interrupted soak leaves what it measured).

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::report::{TargetResult, preset};
use vip_lab::lab::window::Window;
use vip_lab::lab::{ControlPlaneKind, Lab, LabConfig};

/// Lease writes per second the soak accepts (the fast path writes 1/s).
pub const WRITES_PER_SECOND: f64 = 1.2;
/// Bound on the wait until every agent is in the peers annotation.
const MEMBERS_READY: Duration = Duration::from_secs(60);

/// Arguments of `bench stability`.
#[derive(clap::Args, Debug, Clone)]
pub struct StabilityArgs {
    /// Length of the soak, in seconds.
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(10..=86_400))]
    pub seconds: u64,
    /// Random loss on the peer channel, in percent (0: none).
    #[arg(long, default_value_t = 1.0)]
    pub loss: f64,
    /// Seconds between progress lines (one window each).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(5..=3600))]
    pub interval: u64,
    /// The implementation preset (see `bench failover --implementation`).
    #[arg(long, default_value = preset::AGENT_FAST_PATH)]
    pub implementation: String,
    /// Nodes in the lab.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(2..=10))]
    pub nodes: u64,
    /// `real` (etcd + kube-apiserver in every node) or `embedded`.
    #[arg(long, default_value = "real", value_name = "KIND")]
    pub control_plane: ControlPlaneKind,
    /// Parent folder of the results [default: results/ in the workspace]
    /// (the caller resolves the default).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print the agents' log lines.
    #[arg(long)]
    pub echo_logs: bool,
}

/// What the soak measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StabilityReport {
    pub command: String,
    pub started_utc: String,
    pub implementation: String,
    pub control_plane: String,
    pub nodes: usize,
    pub loss_percent: f64,
    /// The whole soak (its longest ARP gap is the longest of the intervals').
    pub total: Window,
    pub intervals: Vec<Window>,
    pub targets: Vec<TargetResult>,
}

impl StabilityReport {
    /// The soak's targets from [`Self::total`].
    fn evaluate(&mut self) {
        let t = &self.total;
        let target = |name: &str, pass: bool, detail: String| TargetResult {
            name: name.to_owned(),
            pass,
            detail,
        };
        self.targets = vec![
            target(
                "soak: zero split-brain windows",
                t.split_brain_windows == 0,
                format!(
                    "{} of {} ARP/NS windows",
                    t.split_brain_windows, t.arp_windows
                ),
            ),
            target(
                "soak: no spurious leadership change",
                t.leadership_changes == 0 && t.fast_takeovers == 0.0,
                format!(
                    "{} holder changes ({:?}), {} fast takeovers, +{} leaseTransitions",
                    t.leadership_changes, t.holders, t.fast_takeovers, t.lease_transitions
                ),
            ),
            target(
                &format!("soak: <= {WRITES_PER_SECOND} Lease writes/s"),
                t.lease_writes_per_second <= WRITES_PER_SECOND,
                format!(
                    "{:.3}/s ({} in {:.0} s)",
                    t.lease_writes_per_second, t.lease_writes, t.seconds
                ),
            ),
        ];
    }
}

fn write(report: &StabilityReport, dir: &std::path::Path) -> anyhow::Result<()> {
    let path = dir.join("stability.json");
    let json = serde_json::to_vec_pretty(report).context("serialising the report")?;
    std::fs::write(&path, json).with_context(|| format!("writing {}", path.display()))
}

/// Run the soak (results in a new folder under `out`); print its lines and
/// targets; whether every target passed.
pub async fn run(args: StabilityArgs, out: PathBuf) -> anyhow::Result<bool> {
    anyhow::ensure!(
        (0.0..=100.0).contains(&args.loss),
        "--loss must be a percentage"
    );
    let implementation = crate::report::implementation_of_preset(&args.implementation)
        .with_context(|| format!("unknown implementation {:?}", args.implementation))?;
    let (started_utc, stamp) = crate::utc_stamps(SystemTime::now());
    let dir = crate::results_dir(&out, &format!("stability-{stamp}"))?;
    let mut command = String::from("cargo xtask bench");
    for a in std::env::args().skip(2) {
        command.push(' ');
        command.push_str(&a);
    }
    let cfg = LabConfig {
        nodes: usize::try_from(args.nodes).unwrap_or(3),
        implementation,
        echo_logs: args.echo_logs,
        control_plane: args.control_plane,
        ..LabConfig::default()
    };
    let fast = cfg.implementation.fast_path();
    let lab = Lab::start(cfg).await.context("starting the lab")?;
    let soak = soak(&lab, &args, fast, &dir, command, started_utc).await;
    lab.shutdown().await?;
    let report = soak?;
    println!("results: {}", dir.display());
    for t in &report.targets {
        println!(
            "{} {}: {}",
            if t.pass { "PASS" } else { "FAIL" },
            t.name,
            t.detail
        );
    }
    Ok(report.targets.iter().all(|t| t.pass))
}

async fn soak(
    lab: &Lab,
    args: &StabilityArgs,
    fast: bool,
    dir: &std::path::Path,
    command: String,
    started_utc: String,
) -> anyhow::Result<StabilityReport> {
    lab.wait_for_leader(Duration::from_secs(60)).await?;
    let n = lab.node_names().len();
    if fast {
        lab.wait_lease(MEMBERS_READY, |l| {
            l.peers.as_ref().is_some_and(|p| p.members.len() == n)
        })
        .await
        .context("waiting for every agent in the peers annotation")?;
    }
    let mut report = StabilityReport {
        command,
        started_utc,
        implementation: lab.config().implementation.label(),
        control_plane: lab.config().control_plane.name().to_owned(),
        nodes: n,
        loss_percent: args.loss,
        total: Window::default(),
        intervals: Vec::new(),
        targets: Vec::new(),
    };
    let total_mark = lab.mark().await?;
    let rules = if args.loss > 0.0 {
        let r = lab.peer_loss(args.loss)?;
        println!("fault: {}", r.describe());
        Some(r)
    } else {
        None
    };
    let end = tokio::time::Instant::now() + Duration::from_secs(args.seconds);
    let mut mark = lab.mark().await?;
    let mut longest_gap: f64 = 0.0;
    while tokio::time::Instant::now() < end {
        let next = (tokio::time::Instant::now() + Duration::from_secs(args.interval)).min(end);
        // The soak's length: nothing to wait for but time.
        tokio::time::sleep_until(next).await;
        let w = lab.window_since(&mark).await?;
        mark = lab.mark().await?;
        longest_gap = longest_gap.max(w.longest_arp_gap_ms);
        println!(
            "[{:>4.0} s] {}",
            report.intervals.len() as f64 * args.interval as f64 + w.seconds,
            w.summary()
        );
        report.intervals.push(w);
        write(&report, dir)?;
    }
    if let Some(r) = rules {
        r.remove()?;
    }
    let mut total = lab.window_since(&total_mark).await?;
    // The intervals took the probes: the total's own gap is meaningless.
    total.longest_arp_gap_ms = longest_gap;
    println!("total: {}", total.summary());
    report.total = total;
    report.evaluate();
    write(&report, dir)?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(total: Window) -> StabilityReport {
        let mut r = StabilityReport {
            command: String::new(),
            started_utc: String::new(),
            implementation: "vip-agent fast path (3s/2s/1s)".into(),
            control_plane: "real".into(),
            nodes: 3,
            loss_percent: 1.0,
            total,
            intervals: Vec::new(),
            targets: Vec::new(),
        };
        r.evaluate();
        r
    }

    #[test]
    fn a_quiet_soak_passes_and_any_change_fails() {
        let quiet = Window {
            seconds: 600.0,
            lease_writes: 600,
            lease_writes_per_second: 1.0,
            holders: vec!["node0".into()],
            ..Window::default()
        };
        assert!(report(quiet.clone()).targets.iter().all(|t| t.pass));
        let moved = Window {
            holders: vec!["node0".into(), "node1".into()],
            leadership_changes: 1,
            fast_takeovers: 1.0,
            ..quiet.clone()
        };
        let failed: Vec<String> = report(moved)
            .targets
            .into_iter()
            .filter(|t| !t.pass)
            .map(|t| t.name)
            .collect();
        assert_eq!(failed, ["soak: no spurious leadership change"]);
        let split = Window {
            split_brain_windows: 2,
            lease_writes_per_second: 2.0,
            ..quiet
        };
        assert_eq!(report(split).targets.iter().filter(|t| !t.pass).count(), 2);
    }
}
