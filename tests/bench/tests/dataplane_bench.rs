//! `bench dataplane` end to end with tiny counts (a few seconds): the flood
//! generator, the reply counter, the agent in native mode and the kernel
//! baseline, the per-packet cost runs, and the written report. The full
//! benchmark is not run in CI (`cargo xtask bench dataplane`).
//!
//! Needs root (namespaces, XDP, bpffs); skips with a reason otherwise.

use std::time::Duration;

use vip_bench::dataplane::{self, DataplaneOptions, DataplaneReport, Mode, Proto};

#[test]
fn tiny_flood_produces_a_sane_report() {
    vip_lab::require_root!();
    let out = std::env::temp_dir().join(format!("vip-lab-dataplane-{}", std::process::id()));
    let opts = DataplaneOptions {
        step: Duration::from_millis(300),
        rates: vec![20_000],
        modes: vec![Mode::Kernel, Mode::Native],
        protos: vec![Proto::Arp, Proto::Ns],
        legit_every: 50,
        cost_frames: 20_000,
        cost_rounds: 1,
        agent_bin: vip_lab::agent::agent_bin().expect("vip-agent binary"),
        out: out.clone(),
        command: "test".into(),
    };
    let result = dataplane::run(&opts);
    let files = (
        std::fs::read(out.join("dataplane.json")),
        std::fs::read_to_string(out.join("dataplane.md")),
    );
    let _ = std::fs::remove_dir_all(&out);
    let report = result.expect("bench dataplane");
    let (json, md) = (
        files.0.expect("dataplane.json"),
        files.1.expect("dataplane.md"),
    );
    let parsed: DataplaneReport = serde_json::from_slice(&json).expect("report JSON");
    assert_eq!(parsed.steps.len(), 4, "2 modes x 2 request kinds x 1 rate");
    assert!(
        md.contains("| native | arp |") && md.contains("## Targets"),
        "{md}"
    );

    for s in report.steps.iter().filter(|s| s.mode == Mode::Native) {
        assert!(s.sent > 0, "{s:?}");
        // The XDP responder answers every request and never touches the neighbour table.
        assert_eq!(s.replies, s.sent, "{s:?}");
        assert_eq!(s.responder_seen, Some(s.sent), "{s:?}");
        assert!(
            s.legit_sent > 0 && s.legit_answered == s.legit_sent,
            "{s:?}"
        );
        assert_eq!(s.neigh_after, s.neigh_before, "{s:?}");
        assert!(s.agent_cpu_pct.is_some(), "{s:?}");
    }
    let kernel_arp = report
        .steps
        .iter()
        .find(|s| s.mode == Mode::Kernel && s.proto == Proto::Arp)
        .expect("kernel ARP step");
    assert!(
        kernel_arp.replies > 0,
        "the kernel baseline answers: {kernel_arp:?}"
    );
    assert!(
        kernel_arp.neigh_after > kernel_arp.neigh_before,
        "the kernel learns the spoofed senders: {kernel_arp:?}"
    );

    let row = |n: &str| report.cost.iter().find(|c| c.name == n).expect(n);
    assert_eq!(row("gen+responder").answered_pct, Some(100.0));
    for n in ["empty", "gen+empty", "gen+responder"] {
        assert!(row(n).ns_per_frame > 0.0, "{:?}", row(n));
    }
    assert!(dataplane::cost_estimate(&report.cost).is_some());
    assert!(!report.targets.is_empty());
}
