//! The lab itself: everything it creates is gone after `Lab::shutdown` and
//! after a panic, and the client's probes measure a known outage accurately.
//!
//! Needs root (namespaces, XDP, bpffs) and a built `vip-agent` (next to the
//! test binary, or `VIP_AGENT_BIN`); skips with a reason otherwise.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use vip_lab::lab::record::outage;
use vip_lab::lab::{Lab, LabConfig};

fn netns_list() -> String {
    let out = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Agents of this process still running (their pin dir names this pid).
fn our_agents() -> Vec<String> {
    let tag = format!("/sys/fs/bpf/vip-lab-{}-", std::process::id());
    let mut found = Vec::new();
    for p in std::fs::read_dir("/proc").expect("/proc").flatten() {
        if let Ok(cmd) = std::fs::read(p.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains("vip-agent") && cmd.contains(&tag) && !cmd.contains("nsenter") {
                found.push(cmd);
            }
        }
    }
    found
}

fn assert_gone(namespaces: &[String], pins: &[PathBuf]) {
    let list = netns_list();
    for ns in namespaces {
        assert!(
            !list.contains(ns.as_str()),
            "namespace {ns} left behind:\n{list}"
        );
    }
    for p in pins {
        assert!(!p.exists(), "pin dir {} left behind", p.display());
    }
    assert!(
        our_agents().is_empty(),
        "agents left running: {:?}",
        our_agents()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn teardown_after_shutdown_and_after_panic() {
    vip_lab::require_lab!();
    // 1. Orderly shutdown.
    let lab = Lab::start(LabConfig::default()).await.expect("lab");
    let leader = lab
        .wait_for_leader(Duration::from_secs(20))
        .await
        .expect("leader");
    eprintln!("leader: {}", lab.node_names()[leader]);
    let namespaces = lab.namespace_names();
    let pins = lab.pin_dirs();
    assert_eq!(
        namespaces.len(),
        6,
        "3 nodes, client, switch, api: {namespaces:?}"
    );
    assert!(
        pins.iter().all(|p| p.exists()),
        "agents pinned their fences: {pins:?}"
    );
    lab.shutdown().await.expect("shutdown");
    assert_gone(&namespaces, &pins);

    // 2. A panic while the lab runs: the drops clean up.
    let (tx, rx) = std::sync::mpsc::channel();
    let task = tokio::spawn(async move {
        let lab = Lab::start(LabConfig::default()).await.expect("lab");
        lab.wait_for_leader(Duration::from_secs(20))
            .await
            .expect("leader");
        tx.send((lab.namespace_names(), lab.pin_dirs()))
            .expect("send");
        panic!("deliberate panic with a running lab");
    });
    let err = task.await.expect_err("the task panics");
    assert!(err.is_panic());
    let (namespaces, pins) = rx.recv().expect("names");
    assert_gone(&namespaces, &pins);
}

/// Cut the leader's link for a known time, too short for any failover (the
/// fence lasts the renew deadline, followers wait the lease duration): the
/// ARP outage the client measures must match the cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_measure_a_known_outage() {
    vip_lab::require_lab!();
    let cfg = LabConfig::default();
    let interval = cfg.probe_interval;
    let lab = Lab::start(cfg).await.expect("lab");
    let leader = lab
        .wait_for_leader(Duration::from_secs(20))
        .await
        .expect("leader");
    for cut in [Duration::from_millis(300), Duration::from_millis(600)] {
        let _ = lab.take_probes();
        // Recording time before the cut.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let t_cut = Instant::now();
        lab.lan().cut(leader).expect("cut");
        let t_cut_done = Instant::now();
        // The known outage: the link stays down for `cut` after the cut is complete.
        tokio::time::sleep(cut).await;
        let t_restore = Instant::now();
        lab.lan().restore(leader).expect("restore");
        let t_restored = Instant::now();
        let back = lab
            .wait_for_leader(Duration::from_secs(5))
            .await
            .expect("answers again");
        assert_eq!(back, leader, "no failover during a short cut");
        let (arp, _) = lab.take_probes();
        let ok: Vec<Duration> = arp
            .iter()
            .filter(|p| !p.replies.is_empty())
            .map(|p| p.sent)
            .collect();
        let measured = outage(&ok, lab.probe_time(t_cut)).expect("recovered");
        // The link was surely down in [t_cut_done, t_restore] and surely up
        // outside [t_cut, t_restored]: the outage lies between, +- 2 probe
        // intervals and scheduling slack.
        let slack = interval * 2 + Duration::from_millis(15);
        let lower = (t_restore - t_cut_done).saturating_sub(slack);
        let upper = (t_restored - t_cut) + slack;
        eprintln!(
            "cut {cut:?}: measured ARP outage {measured:?}, link down between {:?} and {:?}",
            t_restore - t_cut_done,
            t_restored - t_cut
        );
        assert!(
            measured >= lower && measured <= upper,
            "measured {measured:?} outside [{lower:?}, {upper:?}]"
        );
    }
    lab.shutdown().await.expect("shutdown");
}
