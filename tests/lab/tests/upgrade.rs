//! Rolling upgrade with two builds: the old agent is this repository at
//! `vip_lab::upgrade::OLD_COMMIT` (built once from a git worktree and cached
//! under the target directory; the build is timed), the new one is the
//! current build. Three nodes on the old build elect a leader, then every
//! node is rolled to the new build as a static-pod image bump does (stop the
//! old agent, start the new one with the same flags and pin directory),
//! followers first, the leader last: once all with SIGTERM, once with the
//! leader SIGKILLed (its old-layout pins and its VIP address on the interface
//! left behind), the client probing ARP and NS every 5 ms throughout.
//!
//! Asserts: zero split-brain windows; every new agent started (despite the
//! old pins); the Lease holder answers ARP and NS at the end; the VIP only on
//! the leader's `lo`, on no node's interface (where the old build put it);
//! one XDP program per interface, the same pins on every node, only the new
//! binary running; nothing left after shutdown.
//!
//! Needs root and a built `vip-agent` (skips otherwise); FAILS (not skips)
//! when git or the old commit is unavailable. Run with `--test-threads 1`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use vip_lab::lab::demo::timeline_text;
use vip_lab::lab::storm::agents_using;
use vip_lab::lab::upgrade::LeaderStop;
use vip_lab::lab::{Implementation, Lab, LabConfig};

/// The new build, or `None` (the skip recorded) when the test must skip.
fn new_agent() -> Option<PathBuf> {
    vip_lab::skip::lab().ok()
}

fn old_agent() -> PathBuf {
    let t = Instant::now();
    let bin = vip_lab::upgrade::old_agent_bin()
        .unwrap_or_else(|e| panic!("the upgrade test needs the old agent: {e}"));
    println!(
        "old agent ({}) ready in {:.1} s: {}",
        vip_lab::upgrade::OLD_COMMIT,
        t.elapsed().as_secs_f64(),
        bin.display()
    );
    bin
}

/// The executable of `pid`.
fn exe_of(pid: i32) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/exe")).ok()
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

async fn upgrade(leader_stop: LeaderStop) {
    let Some(new) = new_agent() else {
        return;
    };
    let old = old_agent();
    let mut lab = Lab::start_with_agent_bin(
        LabConfig {
            implementation: Implementation::agent_aggressive(),
            ..LabConfig::default()
        },
        Some(old.clone()),
    )
    .await
    .expect("lab on the old build");
    let mut failures = Vec::new();
    for pid in lab.running_agents() {
        if !exe_of(pid).is_some_and(|e| same_file(&e, &old)) {
            failures.push(format!(
                "agent {pid} is not the old build: {:?}",
                exe_of(pid)
            ));
        }
    }
    match lab.rolling_upgrade(&new, leader_stop).await {
        Ok(r) => {
            let names = lab.node_names();
            println!(
                "upgrade ({leader_stop:?} to the leader): {} led on the old build, {} leads on the new one; \
                 ARP outage {:?}, NS outage {:?}, {} split-brain windows; left by the old leader: pins {:?}, \
                 addresses {:?}; {:.1} s",
                names[r.old_leader],
                names[r.leader],
                r.record.arp_outage(),
                r.record.ns_outage(),
                r.record.split_brain_windows(),
                r.stale_pins,
                r.stale_addresses,
                r.took.as_secs_f64()
            );
            let split = r.record.split_brain_windows();
            if split != 0 {
                failures.push(format!("{split} split-brain windows (ARP+NS)"));
            }
            if leader_stop == LeaderStop::Kill {
                // The premise: the new agent met the old build's leftovers.
                if r.stale_pins.is_empty() {
                    failures.push("the killed old leader left no pins (nothing to adopt)".into());
                }
                if r.stale_addresses.on_interface.is_empty() && r.stale_addresses.on_lo.is_empty() {
                    failures.push("the killed old leader left no VIP address".into());
                }
            }
            failures.extend(lab.check_final_answers(&r.record, r.leader, 40));
            let holder = lab.lease_holder_node();
            if holder != Some(r.leader) {
                failures.push(format!(
                    "{} answers but the Lease holder is {holder:?}",
                    names[r.leader]
                ));
            }
            for (i, name) in names.iter().enumerate() {
                match lab.vip_places(i) {
                    Ok(p) => {
                        if !p.on_interface.is_empty() {
                            failures.push(format!(
                                "{name}: VIP address left on the interface (old build's place): {:?}",
                                p.on_interface
                            ));
                        }
                        if i == r.leader && p.on_lo.is_empty() {
                            failures.push(format!("leader {name}: no VIP address on lo"));
                        }
                    }
                    Err(e) => failures.push(format!("{name}: reading addresses: {e:#}")),
                }
            }
            match lab.leaks(r.leader) {
                Ok(leaks) => failures.extend(leaks),
                Err(e) => failures.push(format!("checking for leaks: {e:#}")),
            }
            for pid in lab.running_agents() {
                if !exe_of(pid).is_some_and(|e| same_file(&e, &new)) {
                    failures.push(format!(
                        "agent {pid} is not the new build: {:?}",
                        exe_of(pid)
                    ));
                }
            }
            if !failures.is_empty() {
                eprintln!("{}", timeline_text(&r.record));
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
        "upgrade ({leader_stop:?} to the leader): {}",
        failures.join("; ")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_with_sigterm() {
    upgrade(LeaderStop::Term).await;
}

/// The old leader SIGKILLed: its old-layout pins (smaller COUNTERS map),
/// link and interface address are left behind for the new agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_with_leader_sigkill() {
    upgrade(LeaderStop::Kill).await;
}
