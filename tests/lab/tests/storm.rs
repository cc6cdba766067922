//! Restart storm: 50 iterations of SIGKILL + restart of agents (the Lease
//! holder's and followers', sometimes two at once, restarted at once or
//! after a seeded-random pause up to 300 ms) in the 3-node lab at the
//! aggressive timings (1 s / 700 ms / 200 ms), the client probing ARP and NS
//! every 5 ms throughout. Then: zero split-brain windows (ARP and NS), one
//! leader answering ARP and NS and holding the Lease, no VIP address on any
//! other node (`lo` or the lab interface), one XDP program per node
//! interface, one pin directory per node (same pins on every node), no agent
//! process but the lab's; after shutdown no pin and no agent left.
//!
//! Prints the seed (replay with `VIP_STORM_SEED=<seed>`) and the counts.
//! Needs root (namespaces, XDP, bpffs) and a built `vip-agent`; skips with a
//! reason otherwise. Run with `--test-threads 1`.

use std::time::Duration;

use vip_lab::lab::demo::timeline_text;
use vip_lab::lab::storm::{StormConfig, agents_using, seed_from_env};
use vip_lab::lab::{Implementation, Lab, LabConfig};

const ITERATIONS: usize = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_storm() {
    vip_lab::require_lab!();
    let seed = seed_from_env();
    println!("restart storm: seed {seed} (replay with VIP_STORM_SEED={seed})");
    let mut lab = Lab::start(LabConfig {
        implementation: Implementation::agent_aggressive(),
        ..LabConfig::default()
    })
    .await
    .expect("lab");
    let storm = StormConfig {
        iterations: ITERATIONS,
        seed,
        max_pause: Duration::from_millis(300),
    };
    let mut failures = Vec::new();
    match lab.restart_storm(&storm).await {
        Ok(report) => {
            println!("{}", report.summary());
            let split = report.record.split_brain_windows();
            if split != 0 {
                failures.push(format!("{split} split-brain windows (ARP+NS)"));
            }
            failures.extend(lab.check_final_answers(&report.record, report.leader, 40));
            let holder = lab.lease_holder_node();
            if holder != Some(report.leader) {
                failures.push(format!(
                    "node{} answers but the Lease holder is {holder:?}",
                    report.leader
                ));
            }
            match lab.leaks(report.leader) {
                Ok(leaks) => failures.extend(leaks),
                Err(e) => failures.push(format!("checking for leaks: {e:#}")),
            }
            if !failures.is_empty() {
                eprintln!("{}", timeline_text(&report.record));
            }
        }
        Err(e) => failures.push(format!("{e:#}")),
    }
    let pins = lab.pin_dirs();
    if let Err(e) = lab.shutdown().await {
        failures.push(format!("shutdown: {e:#}"));
    }
    for p in &pins {
        if p.exists() {
            failures.push(format!("pin dir {} left after shutdown", p.display()));
        }
    }
    let left = agents_using(&pins);
    if !left.is_empty() {
        failures.push(format!("agent processes left after shutdown: {left:?}"));
    }
    assert!(
        failures.is_empty(),
        "restart storm (seed {seed}): {}",
        failures.join("; ")
    );
}

/// Removes a directory planted in bpffs on drop.
struct Planted(std::path::PathBuf);

impl Drop for Planted {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// The leak checks the storm relies on find what they look for: nothing on
/// a steady lab, then VIP addresses planted on a follower's `lo` and
/// interface, a stray pin directory of the lab and a stray entry in a
/// follower's pin directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leak_checks_see_planted_leaks() {
    vip_lab::require_lab!();
    let lab = Lab::start(LabConfig {
        implementation: Implementation::agent_aggressive(),
        ..LabConfig::default()
    })
    .await
    .expect("lab");
    let leader = lab
        .wait_for_leader(Duration::from_secs(20))
        .await
        .expect("leader");
    let clean = lab.leaks(leader).expect("leak check");
    let follower = (leader + 1) % lab.node_names().len();
    let name = lab.node_names()[follower].clone();
    let ns = lab.lan().node(follower).ns();
    let ifname = lab.lan().node(follower).ifname().to_owned();
    ns.exec_ok(&["addr", "add", &format!("{}/32", lab.vip_v4()), "dev", "lo"])
        .expect("planting on lo");
    ns.exec_ok(&[
        "addr",
        "add",
        &format!("{}/128", lab.vip_v6()),
        "dev",
        &ifname,
        "nodad",
    ])
    .expect("planting on the interface");
    let stray_dir = Planted(lab.pin_dirs()[0].with_file_name(format!(
        "vip-lab-{}-{}-stray",
        std::process::id(),
        lab.tag()
    )));
    std::fs::create_dir(&stray_dir.0).expect("stray pin dir");
    let stray_pin = Planted(lab.pin_dirs()[follower].join("stray"));
    std::fs::create_dir(&stray_pin.0).expect("stray pin");
    let planted = lab.leaks(leader).expect("leak check");
    drop(stray_pin);
    drop(stray_dir);
    let pins = lab.pin_dirs();
    let (vip4, vip6) = (lab.vip_v4().to_string(), lab.vip_v6().to_string());
    lab.shutdown().await.expect("shutdown");
    assert!(agents_using(&pins).is_empty());
    assert!(clean.is_empty(), "steady lab reported leaks: {clean:?}");
    let text = planted.join("\n");
    for want in [
        format!("{name} (not leading): VIP addresses left"),
        vip4,
        vip6,
        "pin directories: have".to_owned(),
        "pins differ".to_owned(),
    ] {
        assert!(
            text.contains(&want),
            "leak check missed {want:?}; it said:\n{text}"
        );
    }
}
