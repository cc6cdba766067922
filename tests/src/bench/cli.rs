//! `vip-lab bench failover [--repeats R] [--out DIR] [--scenario NAME ...]
//! [--implementation agent-default|agent-aggressive|keepalived-default|keepalived-fast ...]`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;

use super::report::{self, preset};
use super::{BenchOptions, scenario_of_name};
use crate::lab::Scenario;

/// `vip-lab bench ...`.
#[derive(clap::Subcommand, Debug)]
pub enum BenchCommand {
    /// Failover benchmark: vip-agent and keepalived in every scenario, R times
    /// each; writes results.json, summary.md and PNG timelines, prints the targets.
    Failover(FailoverArgs),
}

fn parse_scenario(s: &str) -> Result<Scenario, String> {
    scenario_of_name(s).ok_or_else(|| {
        let names: Vec<&str> = Scenario::ALL.iter().map(Scenario::name).collect();
        format!("unknown scenario {s:?}; use one of {}", names.join(", "))
    })
}

fn parse_preset(s: &str) -> Result<String, String> {
    if preset::ALL.contains(&s) {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "unknown implementation {s:?}; use one of {}",
            preset::ALL.join(", ")
        ))
    }
}

/// The workspace's git-ignored `results/` folder (this crate lives in `tests/`).
pub fn default_out() -> PathBuf {
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).join("results")
}

/// Arguments of `bench failover`.
#[derive(clap::Args, Debug)]
pub struct FailoverArgs {
    /// Runs per (implementation, scenario).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub repeats: u32,
    /// Parent folder of the results (a timestamped folder is made in it)
    /// [default: results/ in the workspace].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Scenario to run (repeatable; default: all). keepalived runs only
    /// graceful-stop, crash, freeze and link-cut.
    #[arg(long = "scenario", value_name = "NAME", value_parser = parse_scenario)]
    pub scenarios: Vec<Scenario>,
    /// Implementation (repeatable; default: all four presets).
    #[arg(long = "implementation", value_name = "NAME", value_parser = parse_preset)]
    pub implementations: Vec<String>,
    /// Client probe interval (ARP and TCP), in milliseconds.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub probe_interval_ms: u64,
    /// Nodes in the lab.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(2..=10))]
    pub nodes: u64,
    /// Print the agents' and keepalived's log lines.
    #[arg(long)]
    pub echo_logs: bool,
}

impl FailoverArgs {
    /// The options these arguments select.
    pub fn options(&self) -> BenchOptions {
        let defaults = BenchOptions::default();
        BenchOptions {
            repeats: self.repeats,
            out: self.out.clone().unwrap_or_else(default_out),
            scenarios: if self.scenarios.is_empty() {
                defaults.scenarios
            } else {
                self.scenarios.clone()
            },
            implementations: if self.implementations.is_empty() {
                defaults.implementations
            } else {
                self.implementations
                    .iter()
                    .filter_map(|p| report::implementation_of_preset(p))
                    .collect()
            },
            probe_interval: Duration::from_millis(self.probe_interval_ms),
            nodes: usize::try_from(self.nodes).unwrap_or(3),
            echo_logs: self.echo_logs,
        }
    }
}

/// Run a `bench` command: print the results folder and one PASS/FAIL line
/// per target. Returns whether every target passed. Ctrl-C stops the run,
/// tears the lab down (dropping it) and leaves the partial `results.json`.
pub async fn run(cmd: BenchCommand) -> anyhow::Result<bool> {
    let BenchCommand::Failover(args) = cmd;
    let opts = args.options();
    let (report, dir) = tokio::select! {
        r = super::run_in(opts) => r?,
        r = tokio::signal::ctrl_c() => {
            r.context("waiting for Ctrl-C")?;
            anyhow::bail!("interrupted: the lab was torn down; partial results (if any) are in the newest folder under {}", args.out.clone().unwrap_or_else(default_out).display());
        }
    };
    println!("results: {}", dir.display());
    for t in &report.targets {
        println!(
            "{} {}: {}",
            if t.pass { "PASS" } else { "FAIL" },
            t.name,
            t.detail
        );
    }
    let failed = report.targets.iter().filter(|t| !t.pass).count();
    println!(
        "targets: {} passed, {failed} failed",
        report.targets.len() - failed
    );
    Ok(failed == 0)
}
