//! Issue 10's goal for the fast path, as a report target: in crash, freeze
//! and link cut, ARP outage median <= 150 ms and max <= 250 ms (the
//! takeover, fault to the first answer from another node, is shown beside).

use super::{BenchReport, ImplementationInfo, TargetResult, fmt_ms, fmt_stats, target};

/// The targets of `imp` when it runs the fast path (none otherwise).
pub(super) fn targets(report: &BenchReport, imp: &ImplementationInfo) -> Vec<TargetResult> {
    let mut out = Vec::new();
    if imp.failover_bound == Some(target::FAST_PATH_BOUND) {
        for scenario in target::FAILOVER_SCENARIOS {
            let Some(s) = report.get(&imp.label, scenario) else {
                continue;
            };
            let mut problems = Vec::new();
            match s.arp {
                Some(st) => {
                    if st.median > target::FAST_PATH_MEDIAN {
                        problems.push(format!("ARP median {}", fmt_ms(st.median)));
                    }
                    if st.max > target::FAST_PATH_MAX {
                        problems.push(format!("ARP max {}", fmt_ms(st.max)));
                    }
                }
                None => problems.push("no ARP outage measured".to_owned()),
            }
            let facts = format!(
                "ARP {}, takeover {}",
                fmt_stats(s.arp),
                fmt_stats(s.takeover)
            );
            out.push(TargetResult {
                name: format!(
                    "{}: {scenario} ARP outage median <= {} and max <= {} (issue 10)",
                    imp.label,
                    fmt_ms(target::FAST_PATH_MEDIAN),
                    fmt_ms(target::FAST_PATH_MAX)
                ),
                pass: problems.is_empty(),
                detail: if problems.is_empty() {
                    facts
                } else {
                    format!("{}; {facts}", problems.join("; "))
                },
            });
        }
    }
    out
}
