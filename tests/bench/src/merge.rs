//! `vip-lab bench merge`: one report from the `results.json` of several
//! runs of `bench failover` (e.g. the implementations measured in two
//! sittings), with its summary, comparisons, targets, cost table and plots.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;

use crate::report::{BenchMeta, BenchReport};

/// Read every `results.json` of `inputs` and build one report from their
/// runs, failures and API costs (an implementation measured in two inputs
/// keeps the runs of both). Written into a new timestamped folder under
/// `out`; returns the report and the folder.
pub fn merge(inputs: &[PathBuf], out: &Path) -> anyhow::Result<(BenchReport, PathBuf)> {
    anyhow::ensure!(!inputs.is_empty(), "no results.json to merge");
    let mut reports = Vec::new();
    for path in inputs {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let r: BenchReport = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a bench results.json", path.display()))?;
        reports.push(r);
    }
    let first = &reports[0].meta;
    let meta = BenchMeta {
        started: first.started.clone(),
        repeats: reports.iter().map(|r| r.meta.repeats).max().unwrap_or(1),
        nodes: first.nodes,
        probe_interval: first.probe_interval,
        took: reports.iter().map(|r| r.meta.took).sum::<Duration>(),
    };
    anyhow::ensure!(
        reports
            .iter()
            .all(|r| r.meta.nodes == meta.nodes && r.meta.probe_interval == meta.probe_interval),
        "the inputs ran with different node counts or probe intervals: not comparable"
    );
    let mut infos = Vec::new();
    let (mut runs, mut failures, mut costs) = (Vec::new(), Vec::new(), Vec::new());
    for r in reports {
        for i in r.implementations {
            if !infos
                .iter()
                .any(|x: &crate::ImplementationInfo| x.label == i.label)
            {
                infos.push(i);
            }
        }
        runs.extend(r.runs);
        failures.extend(r.failures);
        costs.extend(r.api_costs);
    }
    let mut report = BenchReport::build(meta, infos, runs, failures);
    report.api_costs = costs;
    let (_, stamp) = crate::utc_stamps(SystemTime::now());
    let dir = crate::results_dir(out, &stamp)?;
    crate::write_outputs(&report, &dir)?;
    Ok((report, dir))
}
