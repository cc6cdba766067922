//! The benchmark's statistics, Markdown, targets, JSON and plots, on
//! synthetic run records (no root, no lab).

use std::time::Duration;

use vip_bench::report::{
    BenchMeta, BenchReport, ImplementationInfo, RunFailure, Stats, keepalived_default,
    keepalived_fast,
};
use vip_bench::{plot, write_outputs};
use vip_lab::lab::Implementation;
use vip_lab::lab::record::{Probe, Reply, RunRecord, TcpAttempt};

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

const MACS: [[u8; 6]; 3] = [[2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 3]];
const FAULT: u64 = 300;

/// A run: n0 answers until the fault, nobody for `outage_ms`, then n1; ARP
/// probes every 5 ms, TCP every 10 ms with the same outage. With
/// `split_brain`, n0 and n1 both answer one probe after the recovery.
fn synth(
    implementation: &str,
    scenario: &str,
    repeat: u32,
    outage_ms: u64,
    split_brain: bool,
) -> RunRecord {
    let end = FAULT + outage_ms + 500;
    let back = FAULT + outage_ms;
    let mut arp = Vec::new();
    for t in (0..end).step_by(5) {
        let mut replies = Vec::new();
        if t <= FAULT {
            replies.push(Reply {
                at: ms(t) + Duration::from_micros(200),
                mac: MACS[0],
            });
        } else if t >= back {
            replies.push(Reply {
                at: ms(t) + Duration::from_micros(200),
                mac: MACS[1],
            });
            if split_brain && t == back + 100 {
                replies.push(Reply {
                    at: ms(t) + Duration::from_micros(300),
                    mac: MACS[0],
                });
            }
        }
        arp.push(Probe {
            sent: ms(t),
            replies,
        });
    }
    let tcp = (0..end)
        .step_by(10)
        .map(|t| TcpAttempt {
            started: ms(t),
            took: Duration::from_micros(300),
            node: if t <= FAULT {
                Some("n0".into())
            } else if t >= back {
                Some("n1".into())
            } else {
                None
            },
        })
        .collect();
    RunRecord {
        implementation: implementation.into(),
        scenario: scenario.into(),
        repeat,
        fault_at: ms(FAULT),
        probe_interval: ms(5),
        nodes: vec![
            ("n0".into(), MACS[0]),
            ("n1".into(), MACS[1]),
            ("n2".into(), MACS[2]),
        ],
        arp,
        ns: Vec::new(),
        tcp,
        events: vec![],
    }
}

fn meta() -> BenchMeta {
    BenchMeta {
        started: "2026-01-01T00:00:00Z".into(),
        repeats: 3,
        nodes: 3,
        probe_interval: ms(5),
        took: Duration::from_secs(60),
    }
}

/// agent defaults and keepalived default, graceful stop and crash, 3 runs each.
fn report(agent_graceful: [u64; 3], agent_crash: [u64; 3], split_brain: bool) -> BenchReport {
    let agent = ImplementationInfo::of(&Implementation::agent_defaults());
    let ka = ImplementationInfo::of(&keepalived_default());
    let mut runs = Vec::new();
    for (i, o) in agent_graceful.into_iter().enumerate() {
        runs.push(synth(&agent.label, "graceful-stop", i as u32, o, false));
    }
    for (i, o) in agent_crash.into_iter().enumerate() {
        runs.push(synth(
            &agent.label,
            "crash",
            i as u32,
            o,
            split_brain && i == 1,
        ));
    }
    for i in 0..3 {
        runs.push(synth(&ka.label, "graceful-stop", i, 400, false));
        runs.push(synth(
            &ka.label,
            "crash",
            i,
            3600 + 100 * u64::from(i),
            false,
        ));
    }
    BenchReport::build(meta(), vec![agent, ka], runs, vec![])
}

#[test]
fn stats_median_p95_max() {
    let v: Vec<Duration> = (1..=20).map(ms).collect();
    let s = Stats::of(&v).unwrap();
    assert_eq!(
        (s.n, s.median, s.p95, s.max),
        (20, Duration::from_micros(10_500), ms(19), ms(20))
    );
    let s = Stats::of(&[ms(5), ms(1), ms(3)]).unwrap();
    assert_eq!((s.median, s.p95, s.max), (ms(3), ms(5), ms(5)));
    let s = Stats::of(&[ms(7)]).unwrap();
    assert_eq!((s.median, s.p95, s.max), (ms(7), ms(7), ms(7)));
    let v: Vec<Duration> = (1..=100).map(ms).collect();
    assert_eq!(Stats::of(&v).unwrap().p95, ms(95));
    assert!(Stats::of(&[]).is_none());
}

#[test]
fn summary_uses_the_record_outages() {
    let r = report([20, 30, 25], [3500, 3400, 3600], false);
    let agent = Implementation::agent_defaults().label();
    let s = r.get(&agent, "graceful-stop").unwrap();
    assert_eq!(s.runs, 3);
    let arp = s.arp.unwrap();
    assert_eq!((arp.median, arp.max), (ms(25), ms(30)));
    // TCP probes every 10 ms: outages rounded up to the next attempt.
    assert_eq!(s.tcp.unwrap().max, ms(30));
    assert_eq!(s.split_brain_windows, 0);
    assert!(s.not_recovered.is_empty());
    let t = s.takeover.unwrap();
    assert!(t.max >= ms(30) && t.max < ms(31), "{t:?}");
}

#[test]
fn markdown_has_rows_and_ratios() {
    let r = report([20, 30, 25], [3500, 3400, 3600], false);
    let md = r.markdown();
    let agent = Implementation::agent_defaults().label();
    let ka = keepalived_default().label();
    for scenario in ["graceful-stop", "crash"] {
        for imp in [&agent, &ka] {
            assert!(
                md.contains(&format!("| {scenario} | {imp} | 3 |")),
                "row {scenario} {imp} missing:\n{md}"
            );
        }
    }
    // graceful: 25 ms / 400 ms = 0.0625; crash: 3.5 s / 3.7 s = 0.95.
    let row = md
        .lines()
        .find(|l| l.starts_with("| graceful-stop | default settings |"))
        .unwrap_or_else(|| panic!("no comparison row:\n{md}"));
    assert!(
        row.contains(&format!("| {agent} | {ka} | 0.062 |")),
        "{row}"
    );
    let row = md
        .lines()
        .find(|l| l.starts_with("| crash | default settings |"))
        .unwrap();
    assert!(row.contains("| 0.95 |"), "{row}");
    assert_eq!(r.comparisons.len(), 2);
    assert!(md.contains("**PASS**"), "{md}");
}

#[test]
fn targets_pass_on_good_runs() {
    let r = report([20, 30, 25], [3500, 3400, 3600], false);
    for t in &r.targets {
        assert!(t.pass, "{t:?}");
    }
    let names: Vec<&str> = r.targets.iter().map(|t| t.name.as_str()).collect();
    assert!(
        names
            .iter()
            .any(|n| n.contains("graceful-stop outage median <= 50.0 ms and max <= 150 ms")),
        "{names:?}"
    );
    assert!(
        names
            .iter()
            .any(|n| n.contains("crash outage <= 3.65 s in every run")),
        "{names:?}"
    );
    assert!(
        names.iter().any(|n| n.contains("zero split-brain")),
        "{names:?}"
    );
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("crash, default settings:")),
        "{names:?}"
    );
    assert!(r.all_pass());
}

#[test]
fn split_brain_fails_the_target() {
    let r = report([20, 30, 25], [3500, 3400, 3600], true);
    let t = r
        .targets
        .iter()
        .find(|t| t.name.contains("zero split-brain"))
        .unwrap();
    assert!(!t.pass, "{t:?}");
    assert!(t.detail.contains("crash: 1 windows in 1 runs"), "{t:?}");
    assert!(!r.all_pass());
    assert!(r.markdown().contains("**FAIL**"));
}

#[test]
fn slow_or_failed_runs_fail_their_targets() {
    // Graceful max 200 ms > 150 ms; crash run over lease + retry + 150 ms.
    let r = report([20, 200, 25], [3500, 3700, 3600], false);
    let fails: Vec<&str> = r
        .targets
        .iter()
        .filter(|t| !t.pass)
        .map(|t| t.name.as_str())
        .collect();
    assert!(
        fails.iter().any(|n| n.contains("graceful-stop outage")),
        "{fails:?}"
    );
    assert!(
        fails.iter().any(|n| n.contains("crash outage")),
        "{fails:?}"
    );
    // A run the lab gave up on counts as not recovered.
    let agent = ImplementationInfo::of(&Implementation::agent_defaults());
    let runs = vec![synth(&agent.label, "freeze", 0, 3000, false)];
    let failures = vec![RunFailure {
        implementation: agent.label.clone(),
        scenario: "freeze".into(),
        repeat: 1,
        error: "no new leader within 10s".into(),
    }];
    let r = BenchReport::build(meta(), vec![agent.clone()], runs, failures);
    let s = r.get(&agent.label, "freeze").unwrap();
    assert_eq!(s.not_recovered, vec![1]);
    let t = r
        .targets
        .iter()
        .find(|t| t.name.contains("freeze"))
        .unwrap();
    assert!(!t.pass && t.detail.contains("run 1 failed"), "{t:?}");
}

#[test]
fn slower_agent_fails_the_comparison() {
    let agent = ImplementationInfo::of(&Implementation::agent_aggressive());
    let ka = ImplementationInfo::of(&keepalived_fast());
    let runs = vec![
        synth(&agent.label, "crash", 0, 1300, false),
        synth(&ka.label, "crash", 0, 400, false),
    ];
    let r = BenchReport::build(meta(), vec![agent, ka], runs, vec![]);
    let t = r
        .targets
        .iter()
        .find(|t| t.name.starts_with("crash, fast settings"))
        .unwrap();
    assert!(!t.pass, "{t:?}");
    assert_eq!(r.comparisons[0].arp_ratio, Some(1300.0 / 400.0));
}

#[test]
fn json_round_trips() {
    let r = report([20, 30, 25], [3500, 3400, 3600], true);
    let json = serde_json::to_string(&r).unwrap();
    let back: BenchReport = serde_json::from_str(&json).unwrap();
    // Compare piecewise: a failure must not print megabytes of JSON, and
    // float ratios may come back one ulp off.
    assert_eq!(back.meta, r.meta);
    assert_eq!(back.failures, r.failures);
    assert_eq!(back.comparisons.len(), r.comparisons.len());
    for (a, b) in back.comparisons.iter().zip(&r.comparisons) {
        assert_eq!(
            (&a.settings, &a.scenario, &a.agent, &a.keepalived),
            (&b.settings, &b.scenario, &b.agent, &b.keepalived)
        );
        for (x, y) in [
            (a.arp_ratio, b.arp_ratio),
            (a.tcp_ratio, b.tcp_ratio),
            (a.takeover_ratio, b.takeover_ratio),
        ] {
            assert!((x.unwrap() - y.unwrap()).abs() < 1e-9, "{x:?} {y:?}");
        }
    }
    for (a, b) in back.runs.iter().zip(&r.runs) {
        assert!(
            serde_json::to_value(a).unwrap() == serde_json::to_value(b).unwrap(),
            "run {} {} #{} differs after the round trip",
            b.implementation,
            b.scenario,
            b.repeat
        );
    }
    assert_eq!(back.summary, r.summary);
    assert_eq!(back.targets, r.targets);
    assert_eq!(back.implementations, r.implementations);
    assert_eq!(back.runs.len(), r.runs.len());
    assert_eq!(back.runs[0].arp_outage(), r.runs[0].arp_outage());
}

#[test]
fn outputs_are_written_and_the_png_decodes() {
    let r = report([20, 30, 25], [3500, 3400, 3600], true);
    let dir = std::env::temp_dir().join(format!("vip-lab-bench-report-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pngs = write_outputs(&r, &dir).unwrap();
    assert_eq!(pngs.len(), 2);
    for png in &pngs {
        let (w, h) =
            image::image_dimensions(png).unwrap_or_else(|e| panic!("{}: {e}", png.display()));
        assert_eq!((w, h), plot::size(2), "{}", png.display());
    }
    assert!(dir.join("results.json").is_file());
    let md = std::fs::read_to_string(dir.join("summary.md")).unwrap();
    assert!(md.starts_with("# Failover benchmark"));
    if std::env::var_os("VIP_LAB_KEEP").is_none() {
        std::fs::remove_dir_all(&dir).unwrap();
    } else {
        eprintln!("kept {}", dir.display());
    }
}
