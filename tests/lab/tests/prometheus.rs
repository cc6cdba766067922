//! A real Prometheus scrapes the lab's agents with deploy/prometheus's job
//! and rules (targets rewritten to the lab nodes, `for:` shortened to 3 s,
//! everything every second): exactly one node leads and it is the node that
//! answers ARP for the VIP; after a failover another one does; every panel
//! query of deploy/grafana/vip-agent.json returns data; `vip-agent status` on
//! the leader and a follower agrees; with every agent stopped,
//! VipAgentNoLeader fires.
//!
//! Needs root, a built `vip-agent`, the control plane binaries and
//! /usr/bin/prometheus (Debian package `prometheus`). Run with `--test-threads 1`.
//! `VIP_LAB_CAPTURE_DIR=dir` saves the query results and status outputs there.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::Value;
use tokio::task::block_in_place;
use vip_lab::controlplane::Identity;
use vip_lab::lab::{Lab, LabConfig, Scenario};
use vip_lab::prometheus::{Prometheus, Sample, Target};

const SCRAPE: Duration = Duration::from_secs(1);
const ALERT_FOR: Duration = Duration::from_secs(3);
const WAIT: Duration = Duration::from_secs(30);
const LEADERS: &str = r#"sum(max by (identity) (vip_agent_leader{job="vip-agent"}))"#;
const LEADING: &str = r#"vip_agent_leader{job="vip-agent"} == 1"#;
const NO_LEADER: &str = r#"ALERTS{alertname="VipAgentNoLeader",alertstate="firing"}"#;

fn capture(name: &str, text: &str) {
    if let Some(dir) = std::env::var_os("VIP_LAB_CAPTURE_DIR") {
        let path = Path::new(&dir).join(name);
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        eprintln!("captured {}", path.display());
    }
}

/// The one leading node as Prometheus sees it (sum of leaders == 1 and the
/// `node` label of the sample at 1).
fn wait_sole_leader(prom: &Prometheus, want: &str) -> Vec<Sample> {
    block_in_place(|| {
        prom.wait(LEADING, WAIT, |v| {
            v.len() == 1 && v[0].label("node") == Some(want)
        })
        .and_then(|v| {
            prom.wait(LEADERS, WAIT, |s| s.len() == 1 && s[0].value == 1.0)
                .map(|_| v)
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", prom.log()))
    })
}

fn dashboard() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/grafana/vip-agent.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every panel query (Grafana's interval variables given test values)
/// returns at least one series.
fn every_panel_returns_data(prom: &Prometheus) {
    let dash = dashboard();
    let panels = dash["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10, "{} panels", panels.len());
    let mut checked = 0;
    for panel in panels {
        let title = panel["title"].as_str().unwrap_or("?");
        assert_eq!(
            panel["datasource"]["uid"], "${datasource}",
            "panel {title:?} uses the datasource variable"
        );
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            let promql = expr
                .replace("$__rate_interval", "5s")
                .replace("$__range", "5m");
            let got = block_in_place(|| prom.wait(&promql, WAIT, |v| !v.is_empty()))
                .unwrap_or_else(|e| panic!("panel {title:?}: {e}"));
            eprintln!("panel {title:?}: {} series for {expr}", got.len());
            checked += 1;
        }
    }
    eprintln!("{checked} panel queries returned data");
}

/// `vip-agent status` in node `i`'s namespace, with its Lease credentials.
fn status(lab: &Lab, i: usize, output: &str) -> String {
    let bin = vip_lab::agent::agent_bin().expect("agent binary");
    let node = lab.lan().node(i);
    let cp = lab.control_plane().expect("real control plane");
    let pin_dir: PathBuf = lab.pin_dirs()[i].clone();
    let out = std::process::Command::new("nsenter")
        .arg(format!("--net={}", node.ns().path().display()))
        .arg("--")
        .arg(bin)
        .args(["status", "--interface", node.ifname(), "--output", output])
        .arg(format!("--pin-dir={}", pin_dir.display()))
        .arg(format!(
            "--kubeconfig={}",
            cp.kubeconfig_as(i, Identity::Agent).display()
        ))
        .args(["--api-server", "", "--node-name", &lab.node_names()[i]])
        .output()
        .expect("vip-agent status");
    assert!(
        out.status.success(),
        "status on node {i}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_sees_one_leader_a_failover_and_the_no_leader_alert() {
    vip_lab::require_lab!();
    vip_lab::require_controlplane!();
    vip_lab::require_tool!("prometheus", package = "prometheus");
    let mut lab = Lab::start(LabConfig::default()).await.expect("lab");
    let names = lab.node_names();
    let targets: Vec<Target> = (0..names.len())
        .map(|i| Target {
            address: format!("{}:2112", lab.lan().node(i).v4().expect("node address")),
            node: names[i].clone(),
        })
        .collect();
    // In the client namespace: it reaches every node's address, like a
    // Prometheus outside the control plane.
    let prom = Prometheus::start(
        &lab.lan().client().ns().path(),
        &targets,
        SCRAPE,
        ALERT_FOR,
        WAIT,
    )
    .expect("prometheus starts");
    block_in_place(|| {
        prom.wait(r#"sum(up{job="vip-agent"})"#, WAIT, |v| {
            v.first().is_some_and(|s| s.value == names.len() as f64)
        })
    })
    .unwrap_or_else(|e| panic!("every target up: {e}\n{}", prom.log()));

    // Exactly one leader, and it is the node whose MAC answers ARP.
    let first = lab.wait_for_leader(WAIT).await.expect("a leader");
    let seen = wait_sole_leader(&prom, &names[first]);
    eprintln!("Prometheus: {} leads", names[first]);
    let leading_json = block_in_place(|| prom.api("query", LEADING)).expect("query");
    let leaders_json = block_in_place(|| prom.api("query", LEADERS)).expect("query");
    assert_eq!(seen[0].label("identity"), Some(names[first].as_str()));

    // Failover: the leader's agent stopped (and started again as a follower).
    lab.run_scenario(Scenario::GracefulStop, 0)
        .await
        .expect("graceful-stop failover");
    let second = lab.wait_for_leader(WAIT).await.expect("a new leader");
    assert_ne!(second, first, "the VIP moved");
    wait_sole_leader(&prom, &names[second]);
    eprintln!("Prometheus: {} leads after the failover", names[second]);
    let after_json = block_in_place(|| prom.api("query", LEADING)).expect("query");

    every_panel_returns_data(&prom);

    // `vip-agent status` agrees: the leader answers with time on its fence
    // and the Lease names it; a follower is fenced.
    let leader_status = status(&lab, second, "text");
    eprintln!("--- status on the leader ---\n{leader_status}");
    assert!(leader_status.contains("ANSWERING"), "{leader_status}");
    assert!(
        leader_status.contains(&format!("holder {} (this node)", names[second])),
        "{leader_status}"
    );
    let follower = (second + 1) % names.len();
    let follower_status = status(&lab, follower, "text");
    assert!(
        follower_status.contains("fenced (inactive") && !follower_status.contains("ANSWERING"),
        "{follower_status}"
    );
    assert!(
        follower_status.contains(&format!("holder {}\n", names[second])),
        "{follower_status}"
    );
    let json: Value = serde_json::from_str(&status(&lab, second, "json")).expect("json");
    assert_eq!(json["lease"]["holder"], names[second].as_str());
    assert!(json["vips"].as_array().is_some_and(|v| {
        v.len() == 2
            && v.iter()
                .all(|v| v["answering"] == true && v["fence_left_ms"].as_u64() > Some(0))
    }));
    capture(
        "capture-status.txt",
        &format!(
            "# `vip-agent status` on the lab's leader {} (3 nodes, real control plane, after a \
             graceful-stop failover)\n{leader_status}\n# on the follower {}\n{follower_status}\n\
             # --output json on the leader\n{json:#}\n",
            names[second], names[follower]
        ),
    );

    // Every agent stopped: nobody leads, the alert fires (and not before).
    let before = block_in_place(|| prom.query(NO_LEADER)).expect("query");
    assert!(
        before.is_empty(),
        "VipAgentNoLeader fired with a leader: {before:?}"
    );
    for i in 0..names.len() {
        lab.signal_member(i, Signal::SIGTERM).expect("SIGTERM");
    }
    let firing = block_in_place(|| prom.wait(NO_LEADER, WAIT, |v| !v.is_empty()))
        .unwrap_or_else(|e| panic!("VipAgentNoLeader never fired: {e}"));
    assert_eq!(firing[0].label("severity"), Some("critical"));
    let alert_json = block_in_place(|| prom.api("query", NO_LEADER)).expect("query");
    eprintln!("VipAgentNoLeader firing: {alert_json}");
    capture(
        "capture-prometheus.txt",
        &format!(
            "# Real Prometheus 2.42 (Debian) scraping the lab's 3 agents every 1 s with \
             deploy/prometheus/scrape.yaml's job and alerts.yaml (for: shortened to 3 s)\n\
             # {LEADERS}\n{leaders_json:#}\n# {LEADING}\n{leading_json:#}\n\
             # {LEADING}, after a graceful-stop failover\n{after_json:#}\n\
             # every agent stopped (SIGTERM): {NO_LEADER}\n{alert_json:#}\n"
        ),
    );
    drop(prom);
    drop(lab);
}
