//! The targets, evaluated, and the report: markdown, JSON, the console table.

use std::path::Path;

use anyhow::Context as _;

use super::{AGENT_IDLE_PCT, CostRow, DataplaneReport, Mode, Proto, Step, Target};

pub(super) const COST_NOTE: &str = "Live-frames mode recycles its pages without restoring data_in, so a \
responder run alone answers only the first use of each page and then sees its own reply \
(responder-naive: see its answered share). gen+X rebuilds the request in every run and \
tail-calls X; the responder's cost per answered request is estimated as \
(gen+responder) - (gen+empty) + empty. Every run includes the transmit out of vg0 and the \
XDP_DROP on the peer (softirq on the same CPU).";

/// The responder's estimated cost per answered request, and the empty program's.
pub fn cost_estimate(cost: &[CostRow]) -> Option<(f64, f64)> {
    let get = |n: &str| cost.iter().find(|c| c.name == n).map(|c| c.ns_per_frame);
    let (e, ge, gr) = (get("empty")?, get("gen+empty")?, get("gen+responder")?);
    Some((gr - ge + e, e))
}

pub(super) fn highest(steps: &[Step], mode: Mode, proto: Proto) -> Option<&Step> {
    steps
        .iter()
        .filter(|s| s.mode == mode && s.proto == proto)
        .max_by(|a, b| a.offered_pps.total_cmp(&b.offered_pps))
}

/// The targets, evaluated on what was measured.
pub fn evaluate(steps: &[Step], cost: &[CostRow]) -> Vec<Target> {
    let mut t = Vec::new();
    let status = |ok: bool| if ok { "PASS" } else { "FAIL" }.to_owned();
    let modes: Vec<Mode> = Mode::ALL
        .into_iter()
        .filter(|m| *m != Mode::Kernel && steps.iter().any(|s| s.mode == *m))
        .collect();
    let protos: Vec<Proto> = [Proto::Arp, Proto::Ns]
        .into_iter()
        .filter(|p| steps.iter().any(|s| s.proto == *p))
        .collect();
    for &m in &modes {
        for &p in &protos {
            if let Some(s) = highest(steps, m, p) {
                t.push(Target {
                    name: format!(
                        "{} {}: 100% answered at the highest offered rate",
                        m.name(),
                        p.name()
                    ),
                    status: status(s.replies == s.sent && s.sent > 0),
                    detail: format!(
                        "{:.0} pps offered, {} of {} answered ({:.3}%)",
                        s.offered_pps, s.replies, s.sent, s.answered_pct
                    ),
                });
            }
            // Where the kernel loses, XDP must answer more per second.
            let kernel_losing: Vec<&Step> = steps
                .iter()
                .filter(|s| s.mode == Mode::Kernel && s.proto == p && s.replies < s.sent)
                .collect();
            let mut worse = Vec::new();
            let mut compared = 0;
            for k in &kernel_losing {
                if let Some(x) = steps
                    .iter()
                    .find(|s| s.mode == m && s.proto == p && s.target_pps == k.target_pps)
                {
                    compared += 1;
                    if x.replies_pps <= k.replies_pps {
                        worse.push(format!(
                            "at {} pps: {:.0}/s vs kernel {:.0}/s",
                            k.target_pps, x.replies_pps, k.replies_pps
                        ));
                    }
                }
            }
            t.push(Target {
                name: format!(
                    "{} {}: higher reply rate than the kernel where the kernel loses",
                    m.name(),
                    p.name()
                ),
                status: if compared == 0 {
                    "N/A".into()
                } else {
                    status(worse.is_empty())
                },
                detail: if compared == 0 {
                    "the kernel answered every request at every offered rate (or was not run)"
                        .into()
                } else if worse.is_empty() {
                    format!("higher at all {compared} rates where the kernel lost requests")
                } else {
                    worse.join("; ")
                },
            });
        }
        let grew: Vec<String> = steps
            .iter()
            .filter(|s| s.mode == m && s.neigh_after > s.neigh_before)
            .map(|s| {
                format!(
                    "{} {} pps: {} -> {}",
                    s.proto.name(),
                    s.target_pps,
                    s.neigh_before,
                    s.neigh_after
                )
            })
            .collect();
        t.push(Target {
            name: format!("{}: neighbour table untouched", m.name()),
            status: status(grew.is_empty()),
            detail: if grew.is_empty() {
                "no entry added in any step".into()
            } else {
                grew.join("; ")
            },
        });
        let max_cpu = steps
            .iter()
            .filter(|s| s.mode == m)
            .filter_map(|s| s.agent_cpu_pct)
            .fold(0.0f64, f64::max);
        t.push(Target {
            name: format!(
                "{}: agent CPU near idle (< {AGENT_IDLE_PCT}% of a CPU)",
                m.name()
            ),
            status: status(max_cpu < AGENT_IDLE_PCT),
            detail: format!("highest over the steps: {max_cpu:.2}%"),
        });
        let legit_missed: u64 = steps
            .iter()
            .filter(|s| s.mode == m)
            .map(|s| s.legit_sent.saturating_sub(s.legit_answered))
            .sum();
        let legit_sent: u64 = steps
            .iter()
            .filter(|s| s.mode == m)
            .map(|s| s.legit_sent)
            .sum();
        t.push(Target {
            name: format!("{}: legitimate requests in the flood answered", m.name()),
            status: status(legit_missed == 0 && legit_sent > 0),
            detail: format!("{} of {legit_sent} answered", legit_sent - legit_missed),
        });
    }
    match cost_estimate(cost) {
        Some((r, e)) => t.push(Target {
            name: "answered request <= 2x the empty program (live frames)".into(),
            status: status(r <= 2.0 * e),
            detail: format!("{r:.1} ns vs empty {e:.1} ns: {:.2}x", r / e),
        }),
        None => t.push(Target {
            name: "answered request <= 2x the empty program (live frames)".into(),
            status: "N/A".into(),
            detail: "cost not measured".into(),
        }),
    }
    t
}

pub(super) fn row(s: &Step) -> String {
    format!(
        "{:<6} {:<3} {:>8} {:>10.0} {:>10.0} {:>9} {:>8.3}% {:>5}/{:<5} {:>7.1}% {:>7} {:>6} -> {:<6}",
        s.mode.name(),
        s.proto.name(),
        if s.target_pps == 0 {
            "max".to_owned()
        } else {
            s.target_pps.to_string()
        },
        s.offered_pps,
        s.replies_pps,
        s.lost,
        s.answered_pct,
        s.legit_answered,
        s.legit_sent,
        s.softirq_cpu_pct,
        s.agent_cpu_pct
            .map_or_else(|| "-".to_owned(), |c| format!("{c:.1}%")),
        s.neigh_before,
        s.neigh_after,
    )
}

/// The table header matching [`row`].
pub const HEADER: &str = "mode   req   target    offered/s  replies/s      lost answered  legit ok  softirq   agent  neigh before -> after";

/// Markdown of the report.
pub fn markdown(r: &DataplaneReport) -> String {
    let mut s = String::new();
    s.push_str("# Data plane under flood\n\n");
    s.push_str(&format!(
        "Reproduce (root): `{}`\n\nRun {} on Linux {} ({} CPUs), {} s per step, one legitimate request every {} frames.\n\n",
        r.command, r.started, r.kernel, r.cpus, r.step_seconds, r.legit_every
    ));
    s.push_str("Generator: `bench_gen` (bench-ebpf) in BPF_PROG_TEST_RUN live-frames mode on a direct veth pair, \
spoofed senders (random locally administered MACs; IPv4 hosts of 192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24; \
IPv6 2001:db8::/64 random interface ids). Replies counted and dropped by `bench_count` on the generator's veth. \
`kernel` = no XDP, VIPs on the responder's interface, arp_ignore=0; `native`/`skb` = `vip-agent run --no-election`.\n\n");
    s.push_str("| mode | req | target pps | offered pps | replies/s | lost | answered | legit answered | softirq CPU | agent CPU | neigh before -> after | XDP/kernel replies |\n");
    s.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for st in &r.steps {
        let ratio = if st.mode == Mode::Kernel {
            "".to_owned()
        } else {
            r.steps
                .iter()
                .find(|k| {
                    k.mode == Mode::Kernel && k.proto == st.proto && k.target_pps == st.target_pps
                })
                .filter(|k| k.replies_pps > 0.0)
                .map_or_else(
                    || "-".to_owned(),
                    |k| format!("{:.2}", st.replies_pps / k.replies_pps),
                )
        };
        s.push_str(&format!(
            "| {} | {} | {} | {:.0} | {:.0} | {} | {:.3}% | {}/{} | {:.1}% | {} | {} -> {} | {} |\n",
            st.mode.name(),
            st.proto.name(),
            if st.target_pps == 0 { "max".to_owned() } else { st.target_pps.to_string() },
            st.offered_pps,
            st.replies_pps,
            st.lost,
            st.answered_pct,
            st.legit_answered,
            st.legit_sent,
            st.softirq_cpu_pct,
            st.agent_cpu_pct.map_or_else(|| "-".to_owned(), |c| format!("{c:.2}%")),
            st.neigh_before,
            st.neigh_after,
            ratio,
        ));
    }
    s.push_str("\nCPU: softirq = softirq time of the whole machine (generator, responder and counter run on the same cores), \
percent of one CPU; agent = the vip-agent process (user + system).\n\n");
    if !r.cost.is_empty() {
        s.push_str("## Per-packet cost in live-frames mode (ARP request, median of rounds)\n\n");
        s.push_str("| run | what | frames | ns/frame (kernel) | ns/frame (wall) | answered |\n|---|---|---:|---:|---:|---:|\n");
        for c in &r.cost {
            s.push_str(&format!(
                "| {} | {} | {} | {:.1} | {:.1} | {} |\n",
                c.name,
                c.what,
                c.frames,
                c.ns_per_frame,
                c.wall_ns_per_frame,
                c.answered_pct
                    .map_or_else(|| "-".to_owned(), |a| format!("{a:.2}%"))
            ));
        }
        if let Some((resp, empty)) = cost_estimate(&r.cost) {
            s.push_str(&format!(
                "\nEstimated answered request: {resp:.1} ns vs empty program {empty:.1} ns ({:.2}x).\n",
                resp / empty
            ));
        }
        s.push_str(&format!("\n{}\n", r.cost_note));
    }
    s.push_str("\n## Targets\n\n");
    for t in &r.targets {
        s.push_str(&format!("- **{}** {}: {}\n", t.status, t.name, t.detail));
    }
    s
}

/// Write `dataplane.json` and `dataplane.md` into `dir`.
pub fn write(r: &DataplaneReport, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let json = dir.join("dataplane.json");
    std::fs::write(&json, serde_json::to_vec_pretty(r)?)
        .with_context(|| format!("writing {}", json.display()))?;
    let md = dir.join("dataplane.md");
    std::fs::write(&md, markdown(r)).with_context(|| format!("writing {}", md.display()))?;
    Ok(())
}

/// Print the table and the targets.
pub fn print(r: &DataplaneReport) {
    println!("{HEADER}");
    for s in &r.steps {
        println!("{}", row(s));
    }
    for c in &r.cost {
        println!(
            "cost {:<14} {:>8.1} ns/frame (wall {:>8.1}){}",
            c.name,
            c.ns_per_frame,
            c.wall_ns_per_frame,
            c.answered_pct
                .map_or_else(String::new, |a| format!(", answered {a:.2}%"))
        );
    }
    for t in &r.targets {
        println!("{} {}: {}", t.status, t.name, t.detail);
    }
}
