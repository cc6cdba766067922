//! The failover benchmark: every implementation (vip-agent with its default
//! and aggressive timers, keepalived with the default and a fast advert,
//! kube-vip v1.0.0 at its defaults and its fast settings) in
//! every scenario that applies to it, R times each, through the lab
//! ([`vip_lab::lab::Lab`]); outage and split-brain statistics per
//! (implementation, scenario) from the run records ([`report`]), one PNG
//! timeline per scenario ([`plot`]), and the targets, evaluated honestly.
//!
//! Output, in `out/<UTC timestamp>/`: `results.json` ([`BenchReport`]: every
//! run record, the summary, comparisons and targets), `summary.md`, and
//! `timeline-<scenario>.png`. `results.json` is also written after each
//! implementation, so an interrupted benchmark leaves what it measured.

pub mod cli;
pub mod dataplane;
pub mod merge;
pub mod plot;
pub mod report;
pub mod stability;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;

pub use report::{BenchMeta, BenchReport, ImplementationInfo, RunFailure};
use vip_lab::lab::record::RunRecord;
use vip_lab::lab::{ControlPlaneKind, Implementation, Lab, LabConfig, Scenario};

/// What to run.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Runs per (implementation, scenario).
    pub repeats: u32,
    /// Parent of the results folder.
    pub out: PathBuf,
    /// Scenarios (those that do not apply to keepalived or kube-vip are skipped for it).
    pub scenarios: Vec<Scenario>,
    pub implementations: Vec<Implementation>,
    /// Client probe interval (ARP and TCP).
    pub probe_interval: Duration,
    /// Nodes in the lab.
    pub nodes: usize,
    /// Print the members' log lines.
    pub echo_logs: bool,
    /// The API server of the lab.
    pub control_plane: ControlPlaneKind,
    /// Steady-state API cost window per implementation (real control plane;
    /// zero: not measured).
    pub cost_window: Duration,
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self {
            repeats: 20,
            out: PathBuf::from("results"),
            scenarios: Scenario::ALL.to_vec(),
            implementations: report::preset::ALL
                .iter()
                .filter_map(|p| report::implementation_of_preset(p))
                .collect(),
            probe_interval: LabConfig::default().probe_interval,
            nodes: LabConfig::default().nodes,
            echo_logs: false,
            control_plane: ControlPlaneKind::Real,
            cost_window: Duration::from_secs(30),
        }
    }
}

/// The scenarios of `scenarios` that `implementation` can run on `kind` of control plane.
pub fn applicable(
    implementation: &Implementation,
    scenarios: &[Scenario],
    kind: ControlPlaneKind,
) -> Vec<Scenario> {
    scenarios
        .iter()
        .copied()
        .filter(|s| s.applies_to(kind))
        .filter(|s| match implementation {
            Implementation::Agent { .. } => true,
            Implementation::Keepalived { .. } => s.applies_to_keepalived(),
            // kube-vip talks to its node's own kube-apiserver: real only.
            Implementation::KubeVip { .. } => {
                kind == ControlPlaneKind::Real && s.applies_to_kube_vip()
            }
        })
        .collect()
}

/// Parse a scenario name (`Scenario::name`).
pub fn scenario_of_name(name: &str) -> Option<Scenario> {
    Scenario::ALL.into_iter().find(|s| s.name() == name)
}

/// `2026-05-26T03:55:00Z` and `20260526-035500` for `t`.
pub fn utc_stamps(t: SystemTime) -> (String, String) {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    (
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}Z"),
        format!("{y:04}{mo:02}{d:02}-{h:02}{m:02}{s:02}"),
    )
}

/// A new folder `out/<stamp>` (`-2`, `-3`... if taken).
pub(crate) fn results_dir(out: &Path, stamp: &str) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    for n in 1..100 {
        let dir = if n == 1 {
            out.join(stamp)
        } else {
            out.join(format!("{stamp}-{n}"))
        };
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
        }
    }
    anyhow::bail!("no free results folder name under {}", out.display())
}

/// Write `results.json`, `summary.md` and one `timeline-<scenario>.png` per
/// scenario into `dir`. Returns the PNG paths.
pub fn write_outputs(report: &BenchReport, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    write_json(report, dir)?;
    let md = dir.join("summary.md");
    let text = format!(
        "{}\n{}",
        report.markdown(),
        vip_lab::lab::cost::markdown(&report.api_costs)
    );
    std::fs::write(&md, text).with_context(|| format!("writing {}", md.display()))?;
    let mut pngs = Vec::new();
    let mut scenarios: Vec<&str> = Vec::new();
    for r in &report.runs {
        if !scenarios.contains(&r.scenario.as_str()) {
            scenarios.push(&r.scenario);
        }
    }
    for scenario in scenarios {
        let panels: Vec<(String, &RunRecord)> = report
            .implementations
            .iter()
            .filter_map(|imp| {
                let runs: Vec<&RunRecord> = report
                    .runs
                    .iter()
                    .filter(|r| r.scenario == scenario && r.implementation == imp.label)
                    .collect();
                plot::representative(&runs).map(|r| (imp.label.clone(), r))
            })
            .collect();
        let path = dir.join(format!("timeline-{scenario}.png"));
        plot::timeline(
            &path,
            &format!("{scenario}: which node answers ARP for the VIP, and TCP to the VIP, around the fault"),
            &panels,
        )
        .with_context(|| format!("plotting {scenario}"))?;
        pngs.push(path);
    }
    Ok(pngs)
}

fn write_json(report: &BenchReport, dir: &Path) -> anyhow::Result<()> {
    let path = dir.join("results.json");
    let json = serde_json::to_vec_pretty(report).context("serialising the results")?;
    std::fs::write(&path, json).with_context(|| format!("writing {}", path.display()))
}

/// Run the benchmark and write its results (see the module notes). Returns
/// the report and the results folder.
pub async fn run(opts: BenchOptions) -> anyhow::Result<BenchReport> {
    let (report, _dir) = run_in(opts).await?;
    Ok(report)
}

/// [`run`], also returning the results folder.
pub async fn run_in(opts: BenchOptions) -> anyhow::Result<(BenchReport, PathBuf)> {
    anyhow::ensure!(opts.repeats > 0, "repeats must be at least 1");
    anyhow::ensure!(
        !opts.implementations.is_empty(),
        "no implementation selected"
    );
    let started = Instant::now();
    let (started_at, stamp) = utc_stamps(SystemTime::now());
    let dir = results_dir(&opts.out, &stamp)?;
    eprintln!("bench: results go to {}", dir.display());
    let infos: Vec<ImplementationInfo> = opts
        .implementations
        .iter()
        .map(ImplementationInfo::of)
        .collect();
    let mut runs = Vec::new();
    let mut failures = Vec::new();
    let mut costs = Vec::new();
    let meta = |took| BenchMeta {
        started: started_at.clone(),
        repeats: opts.repeats,
        nodes: opts.nodes,
        probe_interval: opts.probe_interval,
        took,
    };
    for implementation in &opts.implementations {
        let scenarios = applicable(implementation, &opts.scenarios, opts.control_plane);
        if scenarios.is_empty() {
            continue;
        }
        let label = implementation.label();
        let cfg = LabConfig {
            nodes: opts.nodes,
            implementation: implementation.clone(),
            probe_interval: opts.probe_interval,
            echo_logs: opts.echo_logs,
            control_plane: opts.control_plane,
        };
        eprintln!("bench: {label}: starting the lab");
        let mut lab = Lab::start(cfg.clone())
            .await
            .with_context(|| format!("starting the lab for {label}"))?;
        if lab.control_plane().is_some() && opts.cost_window > Duration::ZERO {
            match lab.api_cost(opts.cost_window).await {
                Ok(c) => {
                    eprintln!(
                        "bench: {label}: {:.0} Lease requests/min on all API servers, {:.0} etcd writes/min",
                        c.total_lease_requests_per_minute(),
                        c.etcd_writes_per_minute
                    );
                    costs.push(c);
                }
                Err(e) => eprintln!("bench: {label}: API cost not measured: {e:#}"),
            }
        }
        for scenario in scenarios {
            for repeat in 0..opts.repeats {
                let t = Instant::now();
                match lab.run_scenario(scenario, repeat).await {
                    Ok(record) => {
                        eprintln!(
                            "bench: {label} {} #{repeat}: ARP outage {}, TCP outage {}, split-brain windows {} ({:.1} s)",
                            scenario.name(),
                            record
                                .arp_outage()
                                .map_or_else(|| "never recovered".into(), report::fmt_ms),
                            record
                                .tcp_outage()
                                .map_or_else(|| "never recovered".into(), report::fmt_ms),
                            record.split_brain_windows(),
                            t.elapsed().as_secs_f64()
                        );
                        runs.push(record);
                    }
                    Err(e) => {
                        eprintln!("bench: {label} {} #{repeat} failed: {e:#}", scenario.name());
                        failures.push(RunFailure {
                            implementation: label.clone(),
                            scenario: scenario.name().to_owned(),
                            repeat,
                            error: format!("{e:#}"),
                        });
                        // The lab may be in any state now: start a fresh one.
                        if let Err(e) = lab.shutdown().await {
                            eprintln!("bench: {label}: lab shutdown: {e:#}");
                        }
                        lab = Lab::start(cfg.clone())
                            .await
                            .with_context(|| format!("restarting the lab for {label}"))?;
                    }
                }
            }
        }
        lab.shutdown()
            .await
            .with_context(|| format!("shutting the lab for {label} down"))?;
        // Partial results, in case a later implementation is interrupted.
        let mut partial = BenchReport::build(
            meta(started.elapsed()),
            infos.clone(),
            runs.clone(),
            failures.clone(),
        );
        partial.api_costs.clone_from(&costs);
        write_json(&partial, &dir)?;
    }
    let mut report = BenchReport::build(meta(started.elapsed()), infos, runs, failures);
    report.api_costs = costs;
    write_outputs(&report, &dir)?;
    Ok((report, dir))
}
