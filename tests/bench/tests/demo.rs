//! `vip-lab demo` without a terminal (piped, as in CI or `cargo xtask demo >
//! demo.log 2>&1`): it runs both failovers and prints plain lines only: no
//! carriage return, no escape code, the summary at the end.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn demo_piped_prints_plain_lines() {
    let agent = vip_lab::require_lab!();
    let started = Instant::now();
    // stdout and stderr are pipes here: not a terminal.
    let out = Command::new(env!("CARGO_BIN_EXE_vip-lab"))
        .args(["demo", "--control-plane", "embedded"])
        .env("VIP_AGENT_BIN", &agent)
        .stdin(Stdio::null())
        .output()
        .expect("running vip-lab demo");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed ({}):\n{err}", out.status);
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(180),
        "the demo took {took:?} (a broken failover waits out its timeouts)"
    );
    for (i, line) in err.lines().enumerate() {
        assert!(
            !line.contains('\x1b') && !line.contains('\r'),
            "line {} of the piped demo has a terminal control code: {line:?}",
            i + 1
        );
    }
    // The live status, as plain lines: who answers ARP, and the phases.
    assert!(
        err.lines().any(|l| l.contains("| ARP: node")),
        "no status line naming the node that answers ARP:\n{err}"
    );
    let summary = err
        .split_once("=== summary")
        .unwrap_or_else(|| panic!("no summary:\n{err}"))
        .1;
    for scenario in ["crash", "graceful-stop"] {
        let line = summary
            .lines()
            .find(|l| l.starts_with(scenario))
            .unwrap_or_else(|| panic!("no {scenario} line in the summary:\n{summary}"));
        assert!(
            line.contains("split-brain windows: 0"),
            "{scenario}: {line}"
        );
        assert!(!line.contains("never recovered"), "{scenario}: {line}");
    }
    // Not a flood: the status is printed on changes, not every 100 ms.
    let status_lines = err.lines().filter(|l| l.contains("| ARP: ")).count();
    let bound = took.as_secs() as usize / 5 * 4 + 60;
    assert!(
        status_lines <= bound,
        "{status_lines} status lines in {took:?} (bound {bound})"
    );
}
