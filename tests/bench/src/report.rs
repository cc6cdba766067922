//! Statistics, targets and the Markdown summary of a benchmark, computed from
//! [`RunRecord`]s only (so they are tested on synthetic records).

use std::fmt::Write as _;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use vip_lab::lab::record::RunRecord;
use vip_lab::lab::{Implementation, human};

/// Targets of the benchmark (vip-agent's; keepalived is the reference).
pub mod target {
    use std::time::Duration;

    /// Graceful stop: median outage at most this.
    pub const GRACEFUL_MEDIAN: Duration = Duration::from_millis(50);
    /// Graceful stop: every outage at most this.
    pub const GRACEFUL_MAX: Duration = Duration::from_millis(150);
    /// Crash, freeze, link cut: outage at most lease + retry + this, every run.
    pub const FAILOVER_SLACK: Duration = Duration::from_millis(150);
    /// The fast path (crash, freeze, link cut): outage at most this, every
    /// run. A takeover is ~110 ms; a link cut of etcd's leader adds etcd's
    /// election (~1 s); the slow path takes lease + retry (~4 s).
    pub const FAST_PATH_BOUND: Duration = Duration::from_secs(2);
    /// The fast path's goal (issue 10) for crash, freeze and link cut: ARP
    /// outage median at most this...
    pub const FAST_PATH_MEDIAN: Duration = Duration::from_millis(150);
    /// ...and every run at most this.
    pub const FAST_PATH_MAX: Duration = Duration::from_millis(250);
    /// Scenarios bounded by lease + retry + slack (fast path: its bound).
    pub const FAILOVER_SCENARIOS: [&str; 3] = ["crash", "freeze", "link-cut"];
    /// Scenarios in which vip-agent must beat keepalived at comparable settings.
    pub const FASTER_SCENARIOS: [&str; 2] = ["graceful-stop", "crash"];
}

/// The presets the CLI names, which of them are comparable, and the
/// implementation of each.
pub mod preset;

mod fast_path;

pub use preset::{implementation_of_preset, keepalived_default, keepalived_fast, preset_of};

/// median / p95 / max of a set of durations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub n: usize,
    #[serde(with = "micros", rename = "median_us")]
    pub median: Duration,
    #[serde(with = "micros", rename = "p95_us")]
    pub p95: Duration,
    #[serde(with = "micros", rename = "max_us")]
    pub max: Duration,
}

impl Stats {
    /// `None` for no values. Median: the middle value (the mean of the two
    /// middle ones for an even count). p95: nearest rank (the smallest value
    /// with at least 95 % of the values at or below it).
    pub fn of(values: &[Duration]) -> Option<Stats> {
        let mut v = values.to_vec();
        v.sort();
        let n = v.len();
        let max = *v.last()?;
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2
        };
        // ceil(0.95 n), at least 1.
        let rank = (n * 95).div_ceil(100).max(1);
        Some(Stats {
            n,
            median,
            p95: v[rank - 1],
            max,
        })
    }
}

/// What the report keeps of an [`Implementation`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImplementationInfo {
    /// [`Implementation::label`], as in the run records.
    pub label: String,
    /// The CLI preset it equals, if any (see [`preset`]).
    pub preset: Option<String>,
    /// "vip-agent", "keepalived" or "kube-vip".
    pub kind: String,
    /// The timers in words.
    pub timers: String,
    /// vip-agent only: lease + retry + [`target::FAILOVER_SLACK`]
    /// ([`target::FAST_PATH_BOUND`] with the fast path).
    #[serde(with = "opt_micros", rename = "failover_bound_us")]
    pub failover_bound: Option<Duration>,
}

impl ImplementationInfo {
    pub fn of(implementation: &Implementation) -> Self {
        let preset = preset_of(implementation).map(str::to_owned);
        match implementation {
            Implementation::Agent {
                lease,
                renew,
                retry,
                xdp_mode,
                fast_path,
            } => Self {
                label: implementation.label(),
                preset,
                kind: "vip-agent".into(),
                timers: format!(
                    "lease {} / renew {} / retry {}, XDP {xdp_mode}{}",
                    human(*lease),
                    human(*renew),
                    human(*retry),
                    if *fast_path { ", fast path" } else { "" }
                ),
                failover_bound: Some(if *fast_path {
                    target::FAST_PATH_BOUND
                } else {
                    *lease + *retry + target::FAILOVER_SLACK
                }),
            },
            Implementation::Keepalived { advert } => Self {
                label: implementation.label(),
                preset,
                kind: "keepalived".into(),
                timers: format!(
                    "VRRPv3 advert {}, master down after 3 adverts + skew",
                    human(*advert)
                ),
                failover_bound: None,
            },
            Implementation::KubeVip {
                lease,
                renew,
                retry,
            } => Self {
                label: implementation.label(),
                preset,
                kind: "kube-vip".into(),
                timers: format!(
                    "lease {} / renew {} / retry {}, ARP, static pod settings",
                    human(*lease),
                    human(*renew),
                    human(*retry)
                ),
                failover_bound: None,
            },
        }
    }

    pub fn is_agent(&self) -> bool {
        self.kind == "vip-agent"
    }
}

/// A run that produced no record (the lab gave up on it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunFailure {
    pub implementation: String,
    pub scenario: String,
    pub repeat: u32,
    pub error: String,
}

/// Time from the fault to the first ARP reply from a MAC other than the one
/// that answered last before the fault: when another node took over.
pub fn takeover(r: &RunRecord) -> Option<Duration> {
    let before = r
        .arp
        .iter()
        .filter(|p| p.sent <= r.fault_at)
        .flat_map(|p| p.replies.iter())
        .max_by_key(|x| x.at)?
        .mac;
    r.arp
        .iter()
        .filter(|p| p.sent > r.fault_at)
        .flat_map(|p| p.replies.iter())
        .filter(|x| x.mac != before)
        .map(|x| x.at)
        .min()
        .map(|at| at.saturating_sub(r.fault_at))
}

/// Everything measured for one (implementation, scenario).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScenarioSummary {
    pub implementation: String,
    pub scenario: String,
    /// Runs with a record.
    pub runs: usize,
    /// Runs the lab gave up on (no record).
    pub failed_runs: usize,
    pub arp: Option<Stats>,
    pub tcp: Option<Stats>,
    /// Fault to the first reply of another node.
    pub takeover: Option<Stats>,
    /// Probe windows answered by two MACs, all runs together.
    pub split_brain_windows: usize,
    /// Runs with at least one such window.
    pub split_brain_runs: usize,
    /// Repeats whose ARP or TCP never came back, or that failed.
    pub not_recovered: Vec<u32>,
}

impl ScenarioSummary {
    fn of(
        implementation: &str,
        scenario: &str,
        runs: &[&RunRecord],
        failures: &[&RunFailure],
    ) -> Self {
        let arp: Vec<Duration> = runs.iter().filter_map(|r| r.arp_outage()).collect();
        let tcp: Vec<Duration> = runs.iter().filter_map(|r| r.tcp_outage()).collect();
        let take: Vec<Duration> = runs.iter().filter_map(|r| takeover(r)).collect();
        let windows: Vec<usize> = runs.iter().map(|r| r.split_brain_windows()).collect();
        let mut not_recovered: Vec<u32> = runs
            .iter()
            .filter(|r| r.arp_outage().is_none() || r.tcp_outage().is_none())
            .map(|r| r.repeat)
            .chain(failures.iter().map(|f| f.repeat))
            .collect();
        not_recovered.sort_unstable();
        Self {
            implementation: implementation.to_owned(),
            scenario: scenario.to_owned(),
            runs: runs.len(),
            failed_runs: failures.len(),
            arp: Stats::of(&arp),
            tcp: Stats::of(&tcp),
            takeover: Stats::of(&take),
            split_brain_windows: windows.iter().sum(),
            split_brain_runs: windows.iter().filter(|w| **w > 0).count(),
            not_recovered,
        }
    }

    /// Every run has a record and recovered.
    pub fn all_recovered(&self) -> bool {
        self.not_recovered.is_empty() && self.failed_runs == 0
    }
}

/// vip-agent against keepalived at comparable settings, one scenario.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// "default settings" or "fast settings".
    pub settings: String,
    pub scenario: String,
    pub agent: String,
    pub keepalived: String,
    /// Median ARP outage agent / keepalived (below 1: the agent is faster).
    pub arp_ratio: Option<f64>,
    /// Median TCP outage agent / keepalived.
    pub tcp_ratio: Option<f64>,
    /// Median takeover agent / keepalived.
    pub takeover_ratio: Option<f64>,
}

/// One target, evaluated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetResult {
    pub name: String,
    pub pass: bool,
    pub detail: String,
}

/// How the benchmark ran.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BenchMeta {
    /// UTC, `YYYY-MM-DDTHH:MM:SSZ`.
    pub started: String,
    pub repeats: u32,
    pub nodes: usize,
    #[serde(with = "micros", rename = "probe_interval_us")]
    pub probe_interval: Duration,
    /// Wall time of the whole benchmark.
    #[serde(with = "micros", rename = "took_us")]
    pub took: Duration,
}

/// The whole result: `results.json` is this, serialised. (No `PartialEq`:
/// [`RunRecord`] has none; compare the JSON.)
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BenchReport {
    pub meta: BenchMeta,
    pub implementations: Vec<ImplementationInfo>,
    pub summary: Vec<ScenarioSummary>,
    pub comparisons: Vec<Comparison>,
    pub targets: Vec<TargetResult>,
    pub failures: Vec<RunFailure>,
    pub runs: Vec<RunRecord>,
    /// Steady-state API cost per implementation (real control plane only).
    #[serde(default)]
    pub api_costs: Vec<vip_lab::lab::cost::ApiCost>,
}

fn ratio(a: Option<Stats>, b: Option<Stats>) -> Option<f64> {
    let (a, b) = (a?.median, b?.median);
    (!b.is_zero()).then(|| a.as_secs_f64() / b.as_secs_f64())
}

impl BenchReport {
    /// Summaries, comparisons and targets from the records. Scenarios appear
    /// in the order of [`Scenario::ALL`](vip_lab::lab::Scenario::ALL), unknown
    /// names after them in the order of their first record or failure.
    pub fn build(
        meta: BenchMeta,
        implementations: Vec<ImplementationInfo>,
        runs: Vec<RunRecord>,
        failures: Vec<RunFailure>,
    ) -> Self {
        let mut scenarios: Vec<String> = Vec::new();
        for s in runs
            .iter()
            .map(|r| &r.scenario)
            .chain(failures.iter().map(|f| &f.scenario))
        {
            if !scenarios.contains(s) {
                scenarios.push(s.clone());
            }
        }
        let rank = |name: &String| {
            vip_lab::lab::Scenario::ALL
                .iter()
                .position(|x| x.name() == name)
                .unwrap_or(usize::MAX)
        };
        // Stable: unknown names keep their first-seen order.
        scenarios.sort_by_key(rank);
        let mut summary = Vec::new();
        for scenario in &scenarios {
            for imp in &implementations {
                let rs: Vec<&RunRecord> = runs
                    .iter()
                    .filter(|r| &r.scenario == scenario && r.implementation == imp.label)
                    .collect();
                let fs: Vec<&RunFailure> = failures
                    .iter()
                    .filter(|f| &f.scenario == scenario && f.implementation == imp.label)
                    .collect();
                if !rs.is_empty() || !fs.is_empty() {
                    summary.push(ScenarioSummary::of(&imp.label, scenario, &rs, &fs));
                }
            }
        }
        let mut report = Self {
            meta,
            implementations,
            summary,
            comparisons: Vec::new(),
            targets: Vec::new(),
            failures,
            runs,
            api_costs: Vec::new(),
        };
        report.comparisons = report.compare();
        report.targets = report.evaluate();
        report
    }

    /// The summary of (implementation label, scenario).
    pub fn get(&self, implementation: &str, scenario: &str) -> Option<&ScenarioSummary> {
        self.summary
            .iter()
            .find(|s| s.implementation == implementation && s.scenario == scenario)
    }

    fn by_preset(&self, preset: &str) -> Option<&ImplementationInfo> {
        self.implementations
            .iter()
            .find(|i| i.preset.as_deref() == Some(preset))
    }

    fn compare(&self) -> Vec<Comparison> {
        let mut out = Vec::new();
        for (settings, agent, keepalived) in preset::PAIRS {
            let (Some(agent), Some(ka)) = (self.by_preset(agent), self.by_preset(keepalived))
            else {
                continue;
            };
            for s in self
                .summary
                .iter()
                .filter(|s| s.implementation == agent.label)
            {
                let Some(k) = self.get(&ka.label, &s.scenario) else {
                    continue;
                };
                out.push(Comparison {
                    settings: settings.to_owned(),
                    scenario: s.scenario.clone(),
                    agent: agent.label.clone(),
                    keepalived: ka.label.clone(),
                    arp_ratio: ratio(s.arp, k.arp),
                    tcp_ratio: ratio(s.tcp, k.tcp),
                    takeover_ratio: ratio(s.takeover, k.takeover),
                });
            }
        }
        out
    }

    fn evaluate(&self) -> Vec<TargetResult> {
        let mut out = Vec::new();
        let agents: Vec<&ImplementationInfo> = self
            .implementations
            .iter()
            .filter(|i| i.is_agent())
            .collect();
        for imp in &agents {
            // 1. Graceful stop: median <= 50 ms, max <= 150 ms (ARP and TCP).
            if let Some(s) = self.get(&imp.label, "graceful-stop") {
                let mut problems = Vec::new();
                for (kind, st) in [("ARP", s.arp), ("TCP", s.tcp)] {
                    match st {
                        Some(st) => {
                            if st.median > target::GRACEFUL_MEDIAN {
                                problems.push(format!("{kind} median {}", fmt_ms(st.median)));
                            }
                            if st.max > target::GRACEFUL_MAX {
                                problems.push(format!("{kind} max {}", fmt_ms(st.max)));
                            }
                        }
                        None => problems.push(format!("no {kind} outage measured")),
                    }
                }
                if !s.all_recovered() {
                    problems.push(format!("not recovered: runs {:?}", s.not_recovered));
                }
                out.push(TargetResult {
                    name: format!(
                        "{}: graceful-stop outage median <= {} and max <= {}",
                        imp.label,
                        fmt_ms(target::GRACEFUL_MEDIAN),
                        fmt_ms(target::GRACEFUL_MAX)
                    ),
                    pass: problems.is_empty(),
                    detail: if problems.is_empty() {
                        format!("ARP {}, TCP {}", fmt_stats(s.arp), fmt_stats(s.tcp))
                    } else {
                        problems.join("; ")
                    },
                });
            }
            // 2. Crash, freeze, link cut: every run <= lease + retry + 150 ms.
            if let Some(bound) = imp.failover_bound {
                for scenario in target::FAILOVER_SCENARIOS {
                    let Some(s) = self.get(&imp.label, scenario) else {
                        continue;
                    };
                    let mut problems = Vec::new();
                    for r in self
                        .runs
                        .iter()
                        .filter(|r| r.implementation == imp.label && r.scenario == scenario)
                    {
                        for (kind, o) in [("ARP", r.arp_outage()), ("TCP", r.tcp_outage())] {
                            match o {
                                Some(o) if o > bound => {
                                    problems.push(format!("run {} {kind} {}", r.repeat, fmt_ms(o)));
                                }
                                Some(_) => {}
                                None => problems
                                    .push(format!("run {} {kind} never recovered", r.repeat)),
                            }
                        }
                    }
                    for f in self
                        .failures
                        .iter()
                        .filter(|f| f.implementation == imp.label && f.scenario == scenario)
                    {
                        problems.push(format!("run {} failed: {}", f.repeat, f.error));
                    }
                    out.push(TargetResult {
                        name: format!(
                            "{}: {scenario} outage <= {} in every run",
                            imp.label,
                            fmt_ms(bound)
                        ),
                        pass: problems.is_empty(),
                        detail: if problems.is_empty() {
                            format!("ARP max {}, TCP max {}", fmt_max(s.arp), fmt_max(s.tcp))
                        } else {
                            problems.join("; ")
                        },
                    });
                }
            }
            // 2b. The fast path's goal (issue 10).
            out.extend(fast_path::targets(self, imp));
            // 3. No split brain, in any scenario or run.
            let sums: Vec<&ScenarioSummary> = self
                .summary
                .iter()
                .filter(|s| s.implementation == imp.label)
                .collect();
            if !sums.is_empty() {
                let bad: Vec<String> = sums
                    .iter()
                    .filter(|s| s.split_brain_windows > 0)
                    .map(|s| {
                        format!(
                            "{}: {} windows in {} runs",
                            s.scenario, s.split_brain_windows, s.split_brain_runs
                        )
                    })
                    .collect();
                let runs: usize = sums.iter().map(|s| s.runs).sum();
                out.push(TargetResult {
                    name: format!("{}: zero split-brain in every scenario and run", imp.label),
                    pass: bad.is_empty(),
                    detail: if bad.is_empty() {
                        format!("0 windows in {runs} runs of {} scenarios", sums.len())
                    } else {
                        bad.join("; ")
                    },
                });
            }
        }
        // 4. Faster than keepalived at comparable settings.
        for (settings, agent, keepalived) in preset::PAIRS {
            let (Some(agent), Some(ka)) = (self.by_preset(agent), self.by_preset(keepalived))
            else {
                continue;
            };
            for scenario in target::FASTER_SCENARIOS {
                let (Some(a), Some(k)) = (
                    self.get(&agent.label, scenario),
                    self.get(&ka.label, scenario),
                ) else {
                    continue;
                };
                let mut problems = Vec::new();
                let mut facts = Vec::new();
                for (kind, x, y) in [("ARP", a.arp, k.arp), ("TCP", a.tcp, k.tcp)] {
                    match (x, y) {
                        (Some(x), Some(y)) => {
                            facts.push(format!(
                                "{kind} median {} vs {}",
                                fmt_ms(x.median),
                                fmt_ms(y.median)
                            ));
                            if x.median >= y.median {
                                problems.push(format!(
                                    "{kind} median {} not below keepalived's {}",
                                    fmt_ms(x.median),
                                    fmt_ms(y.median)
                                ));
                            }
                        }
                        (None, _) => problems.push(format!("no vip-agent {kind} outage measured")),
                        (_, None) => problems.push(format!("no keepalived {kind} outage measured")),
                    }
                }
                if !a.all_recovered() {
                    problems.push(format!(
                        "vip-agent not recovered in runs {:?}",
                        a.not_recovered
                    ));
                }
                if k.split_brain_windows > 0 {
                    facts.push(format!(
                        "keepalived had {} split-brain windows (the old master kept answering)",
                        k.split_brain_windows
                    ));
                }
                let detail = if problems.is_empty() {
                    facts.join("; ")
                } else {
                    problems.extend(facts.into_iter().filter(|f| f.contains("split-brain")));
                    problems.join("; ")
                };
                out.push(TargetResult {
                    name: format!(
                        "{scenario}, {settings}: {} faster than {}",
                        agent.label, ka.label
                    ),
                    pass: problems.is_empty(),
                    detail,
                });
            }
        }
        out
    }

    /// Every target passed (and there was at least one).
    pub fn all_pass(&self) -> bool {
        !self.targets.is_empty() && self.targets.iter().all(|t| t.pass)
    }

    /// `summary.md`.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        // Writing to a String cannot fail: the results are ignored below.
        let _ = writeln!(
            s,
            "# Failover benchmark: vip-agent, keepalived and kube-vip\n"
        );
        let _ = writeln!(
            s,
            "Started {}, {} repeats per scenario, {} nodes, probes every {}, took {:.0} s.\n",
            self.meta.started,
            self.meta.repeats,
            self.meta.nodes,
            fmt_ms(self.meta.probe_interval),
            self.meta.took.as_secs_f64()
        );
        let _ = writeln!(s, "## Implementations\n");
        let _ = writeln!(s, "| implementation | preset | timers |");
        let _ = writeln!(s, "|---|---|---|");
        for i in &self.implementations {
            let _ = writeln!(
                s,
                "| {} | {} | {} |",
                i.label,
                i.preset.as_deref().unwrap_or("-"),
                i.timers
            );
        }
        let _ = writeln!(s, "\n## Outages (median / p95 / max)\n");
        let _ = writeln!(
            s,
            "ARP: longest silence of ARP replies for the VIP around the fault; TCP: the same for TCP connects to the VIP; \
             takeover: fault to the first ARP reply from another node. Split brain: probe windows answered by two MACs.\n"
        );
        let _ = writeln!(
            s,
            "| scenario | implementation | runs | ARP outage | TCP outage | takeover | split-brain windows (runs) | not recovered |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|");
        for x in &self.summary {
            let runs = if x.failed_runs > 0 {
                format!("{} (+{} failed)", x.runs, x.failed_runs)
            } else {
                x.runs.to_string()
            };
            let not = if x.not_recovered.is_empty() {
                "0".to_owned()
            } else {
                format!("{} {:?}", x.not_recovered.len(), x.not_recovered)
            };
            let _ = writeln!(
                s,
                "| {} | {} | {runs} | {} | {} | {} | {} ({}) | {not} |",
                x.scenario,
                x.implementation,
                fmt_stats(x.arp),
                fmt_stats(x.tcp),
                fmt_stats(x.takeover),
                x.split_brain_windows,
                x.split_brain_runs,
            );
        }
        if !self.comparisons.is_empty() {
            let _ = writeln!(s, "\n## vip-agent vs keepalived at comparable settings\n");
            let _ = writeln!(
                s,
                "Ratios of medians, agent / keepalived: below 1 means vip-agent is faster.\n"
            );
            let _ = writeln!(
                s,
                "| scenario | settings | vip-agent | keepalived | ARP outage ratio | TCP outage ratio | takeover ratio |"
            );
            let _ = writeln!(s, "|---|---|---|---|---|---|---|");
            for c in &self.comparisons {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {} | {} |",
                    c.scenario,
                    c.settings,
                    c.agent,
                    c.keepalived,
                    fmt_ratio(c.arp_ratio),
                    fmt_ratio(c.tcp_ratio),
                    fmt_ratio(c.takeover_ratio)
                );
            }
        }
        let _ = writeln!(s, "\n## Targets\n");
        for t in &self.targets {
            let _ = writeln!(
                s,
                "- **{}** {}: {}",
                if t.pass { "PASS" } else { "FAIL" },
                t.name,
                t.detail
            );
        }
        if !self.failures.is_empty() {
            let _ = writeln!(s, "\n## Runs without a record\n");
            for f in &self.failures {
                let _ = writeln!(
                    s,
                    "- {} {} #{}: {}",
                    f.implementation,
                    f.scenario,
                    f.repeat,
                    f.error.replace('\n', " ")
                );
            }
        }
        s
    }
}

/// `12.3 ms`, `3.52 s`.
pub fn fmt_ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms >= 1000.0 {
        format!("{:.2} s", ms / 1000.0)
    } else if ms >= 100.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{ms:.1} ms")
    }
}

/// `median / p95 / max` or `-`.
pub fn fmt_stats(s: Option<Stats>) -> String {
    s.map_or_else(
        || "-".to_owned(),
        |s| {
            format!(
                "{} / {} / {}",
                fmt_ms(s.median),
                fmt_ms(s.p95),
                fmt_ms(s.max)
            )
        },
    )
}

fn fmt_max(s: Option<Stats>) -> String {
    s.map_or_else(|| "-".to_owned(), |s| fmt_ms(s.max))
}

/// `0.012` / `1.35` / `-`.
pub fn fmt_ratio(r: Option<f64>) -> String {
    match r {
        Some(r) if r < 0.1 => format!("{r:.3}"),
        Some(r) => format!("{r:.2}"),
        None => "-".to_owned(),
    }
}

/// Durations as integer microseconds in JSON.
mod micros {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_micros(u64::deserialize(d)?))
    }
}

/// Optional durations as integer microseconds (or null) in JSON.
mod opt_micros {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_micros))
    }
}
