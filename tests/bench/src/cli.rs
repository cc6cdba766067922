//! `vip-lab bench failover [--repeats R] [--out DIR] [--scenario NAME ...]
//! [--implementation agent-default|agent-aggressive|agent-fast-path|keepalived-default|keepalived-fast|kube-vip-default|kube-vip-fast ...]`,
//! `vip-lab bench dataplane [--seconds N] [--out DIR] ...` and
//! `vip-lab bench stability [--seconds N] [--loss PERCENT] ...`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;

use crate::report::{self, preset};
use crate::{BenchOptions, scenario_of_name};
use vip_lab::lab::{ControlPlaneKind, Scenario};

/// `vip-lab bench ...`.
#[derive(clap::Subcommand, Debug)]
pub enum BenchCommand {
    /// Failover benchmark: vip-agent, keepalived and kube-vip in every scenario, R times
    /// each; writes results.json, summary.md and PNG timelines, prints the targets.
    Failover(FailoverArgs),
    /// Data plane under an ARP / NS flood from spoofed senders (XDP live-frames
    /// generator): the XDP responder (native, skb) vs the kernel; per-packet
    /// cost of an answered request; writes dataplane.json and dataplane.md.
    Dataplane(DataplaneArgs),
    /// Soak of the fast path: the lab for --seconds (default 10 min) with
    /// random loss on the peer channel (default 1 %) and no other fault;
    /// prints leadership changes, split-brain windows, fast takeovers and
    /// Lease writes/s per interval; writes stability.json.
    Stability(crate::stability::StabilityArgs),
    /// One report (results.json, summary.md, plots) from the results.json of
    /// several `bench failover` runs (e.g. implementations measured apart).
    Merge {
        /// Parent folder of the merged results [default: results/ in the workspace].
        #[arg(long)]
        out: Option<PathBuf>,
        /// results.json files to merge.
        #[arg(required = true, num_args = 1..)]
        inputs: Vec<PathBuf>,
    },
}

/// Arguments of `bench dataplane`.
#[derive(clap::Args, Debug)]
pub struct DataplaneArgs {
    /// Length of each flood step (mode x request kind x offered rate), in seconds.
    #[arg(long, default_value_t = 2.0)]
    pub seconds: f64,
    /// Folder for dataplane.json and dataplane.md [default: results/dataplane-<UTC stamp>].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Offered rates in frames/s, comma-separated; 0 = unpaced (as fast as the generator goes).
    #[arg(long, value_delimiter = ',', default_values_t = [50_000u64, 200_000, 500_000, 1_000_000, 0])]
    pub rates: Vec<u64>,
    /// Responder modes (kernel, native, skb), comma-separated.
    #[arg(long = "mode", value_delimiter = ',', default_values = ["kernel", "native", "skb"], value_parser = parse_mode)]
    pub modes: Vec<crate::dataplane::Mode>,
    /// Request kinds (arp, ns), comma-separated.
    #[arg(long = "proto", value_delimiter = ',', default_values = ["arp", "ns"], value_parser = parse_proto)]
    pub protos: Vec<crate::dataplane::Proto>,
    /// One legitimate request (the generator's real MAC and address) every N frames.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub legit_every: u64,
    /// Frames per run of the per-packet cost measurement (0: skip it).
    #[arg(long, default_value_t = 1_000_000)]
    pub cost_frames: u32,
    /// Rounds of the per-packet cost measurement (median reported).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub cost_rounds: u32,
}

fn parse_mode(s: &str) -> Result<crate::dataplane::Mode, String> {
    crate::dataplane::Mode::ALL
        .into_iter()
        .find(|m| m.name() == s)
        .ok_or_else(|| format!("unknown mode {s:?}; use kernel, native or skb"))
}

fn parse_proto(s: &str) -> Result<crate::dataplane::Proto, String> {
    match s {
        "arp" => Ok(crate::dataplane::Proto::Arp),
        "ns" => Ok(crate::dataplane::Proto::Ns),
        _ => Err(format!("unknown request kind {s:?}; use arp or ns")),
    }
}

impl DataplaneArgs {
    /// The options these arguments select (`command` is the line that reproduces them).
    pub fn options(&self, command: String) -> anyhow::Result<crate::dataplane::DataplaneOptions> {
        anyhow::ensure!(
            self.seconds > 0.0 && self.seconds <= 600.0,
            "--seconds must be in (0, 600]"
        );
        let out = match &self.out {
            Some(o) => o.clone(),
            None => {
                let (_, stamp) = crate::utc_stamps(std::time::SystemTime::now());
                default_out().join(format!("dataplane-{stamp}"))
            }
        };
        Ok(crate::dataplane::DataplaneOptions {
            step: Duration::from_secs_f64(self.seconds),
            rates: self.rates.clone(),
            modes: self.modes.clone(),
            protos: self.protos.clone(),
            legit_every: self.legit_every,
            cost_frames: self.cost_frames,
            cost_rounds: self.cost_rounds,
            agent_bin: vip_lab::agent::agent_bin()?,
            out,
            command,
        })
    }
}

/// Run `bench dataplane`: print the table and the targets; whether every
/// target passed (N/A counts as not failed).
pub fn run_dataplane(args: &DataplaneArgs) -> anyhow::Result<bool> {
    // `cargo xtask bench` runs the release build; say so when another build ran.
    let mut command = String::from("cargo xtask bench dataplane");
    for a in std::env::args().skip(3) {
        command.push(' ');
        command.push_str(&a);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    if !exe.components().any(|c| c.as_os_str() == "release") {
        command.push_str(&format!("` (this run: `{}`)", exe.display()));
    }
    let opts = args.options(command)?;
    let report = crate::dataplane::run(&opts)?;
    crate::dataplane::print(&report);
    println!("results: {}", opts.out.display());
    Ok(report.targets.iter().all(|t| t.status != "FAIL"))
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
    /// graceful-stop, crash, freeze and link-cut; kube-vip only on the real
    /// control plane.
    #[arg(long = "scenario", value_name = "NAME", value_parser = parse_scenario)]
    pub scenarios: Vec<Scenario>,
    /// Implementation (repeatable; default: all seven presets).
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
    /// The API server: `real` (etcd + kube-apiserver in every node, built by
    /// `cargo xtask setup`) or `embedded` (the home-made Lease server).
    #[arg(long, default_value = "real", value_name = "KIND")]
    pub control_plane: ControlPlaneKind,
    /// Seconds of steady state in which each implementation's API cost (Lease
    /// requests/min per node, etcd writes/min) is counted; 0: skip.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(0..=600))]
    pub cost_seconds: u64,
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
            control_plane: self.control_plane,
            cost_window: Duration::from_secs(self.cost_seconds),
        }
    }
}

/// Run a `bench` command: print the results folder and one PASS/FAIL line
/// per target. Returns whether every target passed. Ctrl-C stops the run,
/// tears the lab down (dropping it) and leaves the partial `results.json`.
pub async fn run(cmd: BenchCommand) -> anyhow::Result<bool> {
    let args = match cmd {
        BenchCommand::Failover(args) => args,
        BenchCommand::Merge { out, inputs } => {
            let (report, dir) = crate::merge::merge(&inputs, &out.unwrap_or_else(default_out))?;
            println!("results: {}", dir.display());
            return Ok(print_targets(&report));
        }
        BenchCommand::Stability(args) => {
            return tokio::select! {
                r = crate::stability::run(args.clone(), args.out.clone().unwrap_or_else(default_out)) => r,
                r = tokio::signal::ctrl_c() => {
                    r.context("waiting for Ctrl-C")?;
                    anyhow::bail!("interrupted: the lab was torn down; stability.json holds the intervals measured");
                }
            };
        }
        BenchCommand::Dataplane(args) => {
            return tokio::task::spawn_blocking(move || run_dataplane(&args))
                .await
                .context("the dataplane bench thread")?;
        }
    };
    let opts = args.options();
    let (report, dir) = tokio::select! {
        r = crate::run_in(opts) => r?,
        r = tokio::signal::ctrl_c() => {
            r.context("waiting for Ctrl-C")?;
            anyhow::bail!("interrupted: the lab was torn down; partial results (if any) are in the newest folder under {}", args.out.clone().unwrap_or_else(default_out).display());
        }
    };
    println!("results: {}", dir.display());
    Ok(print_targets(&report))
}

/// One PASS/FAIL line per target and a count; whether all passed.
fn print_targets(report: &crate::BenchReport) -> bool {
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
    failed == 0
}
