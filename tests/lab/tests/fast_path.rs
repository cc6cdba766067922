//! The fast path (peer promises, docs/peer-promises.md) on the real control
//! plane, 3 nodes, agents with `--fast-path`:
//! - a crashed, frozen or cut-off leader is replaced fast (well under the
//!   slow path's ~3 s), with zero split-brain windows;
//! - 1 % random loss on the peer channel for 30 s and a 500 ms stall of every
//!   API server change nothing; in steady state the cluster writes the Lease
//!   about once a second;
//! - asymmetric faults (one-way cuts, the leader cut from the API only, a
//!   member cut from the leader only) never split the brain; what each costs
//!   is printed;
//! - forged and replayed peer packets are counted as rejected and change
//!   nothing.
//!
//! Needs root, iptables, the control plane binaries and a built agent with
//! the fast path; skips with a reason otherwise. Run with `--test-threads 1`.

use std::time::Duration;

use vip_lab::lab::demo::timeline_text;
use vip_lab::lab::peer_faults::{PeerRules, forge, replay};
use vip_lab::lab::window::{PEER_REJECTED, Window};
use vip_lab::lab::{Implementation, Lab, LabConfig, Scenario};

/// Bound on the ARP outage of a fast takeover (the slow path takes ~3 s).
const FAST_BOUND: Duration = Duration::from_secs(1);
/// Extra allowance when the cut node also led etcd: etcd elects a new leader
/// (election timeout 1 s) before the takeover's CAS can commit.
const ETCD_ELECTION: Duration = Duration::from_millis(1200);
/// Bound on the wait until every agent is listed in the Lease's annotation.
const MEMBERS_READY: Duration = Duration::from_secs(30);
/// Longest gap between answered ARP probes (5 ms apart) a fault that must
/// change nothing may cause: scheduling on a busy 2-core host alone gives
/// ~80 ms (a leader change is caught by the holder check, not by this).
const MAX_GAP_MS: f64 = 500.0;
/// Steady-state Lease writes per second, whole cluster (1/s expected).
const WRITES_PER_SECOND: f64 = 1.2;

fn cfg() -> LabConfig {
    LabConfig {
        implementation: Implementation::agent_fast_path(),
        ..LabConfig::default()
    }
}

/// A lab whose agents all run the fast path and are all listed as members;
/// `None` when the test must skip.
async fn fast_lab() -> Option<Lab> {
    vip_lab::require_lab!(None);
    vip_lab::require_controlplane!(None);
    vip_lab::require_tool!("iptables", package = "iptables", None);
    let lab = Lab::start(cfg()).await.expect("lab");
    let n = lab.node_names().len();
    lab.wait_for_leader(Duration::from_secs(60))
        .await
        .expect("a leader");
    lab.wait_lease(MEMBERS_READY, |l| {
        l.peers.as_ref().is_some_and(|p| p.members.len() == n)
    })
    .await
    .expect("every agent listed in the peers annotation");
    Some(lab)
}

/// Index of the Lease holder (the node answering ARP, checked against the Lease).
async fn leader(lab: &Lab) -> usize {
    let i = lab
        .wait_for_leader(Duration::from_secs(30))
        .await
        .expect("leader");
    let name = lab.node_names()[i].clone();
    lab.wait_holder(&name, Duration::from_secs(5))
        .await
        .expect("the ARP answerer holds the Lease");
    i
}

async fn failover(scenario: Scenario) {
    let Some(mut lab) = fast_lab().await else {
        return;
    };
    let mark = lab.mark().await.expect("mark");
    let r = lab.run_scenario(scenario, 0).await;
    let w = lab.window_since(&mark).await;
    lab.shutdown().await.expect("shutdown");
    let r = r.expect("scenario");
    let w = w.expect("window");
    eprintln!("{}", timeline_text(&r));
    let outage = r.arp_outage().expect("ARP recovered");
    let etcd_moved = r
        .events
        .iter()
        .any(|e| e.what.contains("the cut node: the others elect"));
    let bound = if etcd_moved {
        FAST_BOUND + ETCD_ELECTION
    } else {
        FAST_BOUND
    };
    eprintln!(
        "fast path {}: ARP outage {outage:?} (bound {bound:?}), TCP outage {:?}, {} split-brain windows; {}",
        scenario.name(),
        r.tcp_outage(),
        r.split_brain_windows(),
        w.summary()
    );
    assert_eq!(r.split_brain_windows(), 0, "split brain");
    assert!(outage < bound, "ARP outage {outage:?} >= {bound:?}");
    assert!(
        w.fast_takeovers >= 1.0,
        "no fast takeover counted: the slow path took over"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_of_the_leader() {
    failover(Scenario::Crash).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freeze_of_the_leader() {
    failover(Scenario::Freeze).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_cut_of_the_leader() {
    failover(Scenario::LinkCut).await;
}

/// No leader change, no split brain, no answering gap worth the name.
fn assert_nothing_changed(what: &str, w: &Window, leader: &str) {
    eprintln!("{what}: {}", w.summary());
    assert_eq!(w.split_brain_windows, 0, "{what}: split brain");
    assert_eq!(w.holders, vec![leader.to_owned()], "{what}: holder changed");
    assert_eq!(w.lease_transitions, 0, "{what}: leaseTransitions grew");
    assert!(
        w.longest_arp_gap_ms < MAX_GAP_MS,
        "{what}: the VIP went unanswered for {:.0} ms",
        w.longest_arp_gap_ms
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_writes_peer_loss_and_api_stall_change_nothing() {
    let Some(mut lab) = fast_lab().await else {
        return;
    };
    let l = leader(&lab).await;
    let name = lab.node_names()[l].clone();

    // Steady state: about one Lease write per second in the whole cluster.
    let mark = lab.mark().await.expect("mark");
    // The measurement window itself.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let steady = lab.window_since(&mark).await.expect("window");
    assert_nothing_changed("steady state, 10 s", &steady, &name);
    eprintln!(
        "steady state: {:.2} Lease writes/s in the cluster (bound {WRITES_PER_SECOND})",
        steady.lease_writes_per_second
    );
    assert!(
        steady.lease_writes_per_second <= WRITES_PER_SECOND,
        "{:.2} Lease writes/s",
        steady.lease_writes_per_second
    );

    // 1 % random loss on the peer channel for 15 s (10 minutes: `cargo
    // xtask bench stability`, docs/bench/stability.md).
    let mark = lab.mark().await.expect("mark");
    let rules = lab.peer_loss(1.0).expect("loss");
    eprintln!("fault: {}", rules.describe());
    // The fault's length.
    tokio::time::sleep(Duration::from_secs(15)).await;
    rules.remove().expect("remove the loss");
    let loss = lab.window_since(&mark).await.expect("window");
    assert_nothing_changed("1 % peer loss, 15 s", &loss, &name);

    // Every kube-apiserver stopped for 500 ms.
    let mark = lab.mark().await.expect("mark");
    lab.api_stall(Duration::from_millis(500))
        .await
        .expect("API stall");
    // Recording after the stall: the renewals that queued must land.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stall = lab.window_since(&mark).await.expect("window");
    lab.shutdown().await.expect("shutdown");
    assert_nothing_changed("500 ms API stall", &stall, &name);
}

/// How long an asymmetric fault is held.
const HOLD: Duration = Duration::from_secs(4);
/// Recording after the fault is removed.
const AFTER: Duration = Duration::from_secs(4);

/// Hold `fault` (made from the leader and another node) for [`HOLD`],
/// record [`AFTER`] more: zero split brain, a leader after; print the cost.
async fn asymmetric(what: &str, fault: impl FnOnce(&Lab, usize, usize) -> PeerRules) {
    let Some(lab) = fast_lab().await else {
        return;
    };
    let l = leader(&lab).await;
    let m = (l + 1) % lab.node_names().len();
    let mark = lab.mark().await.expect("mark");
    let rules = fault(&lab, l, m);
    eprintln!("fault ({what}): {} {:?}", rules.describe(), rules.specs());
    // The fault's length.
    tokio::time::sleep(HOLD).await;
    let during = lab.lease_snapshot().await;
    rules.remove().expect("remove the rules");
    // Recording time after the fault.
    tokio::time::sleep(AFTER).await;
    let w = lab.window_since(&mark).await.expect("window");
    let recovered = lab.wait_for_leader(Duration::from_secs(10)).await;
    lab.shutdown().await.expect("shutdown");
    eprintln!(
        "{what}: cost: longest ARP gap {:.0} ms, {} leadership changes (+{} transitions), \
         {} Lease writes in {:.0} s; members in the annotation during the fault: {:?}",
        w.longest_arp_gap_ms,
        w.leadership_changes,
        w.lease_transitions,
        w.lease_writes,
        w.seconds,
        during.as_ref().map(|d| d.peers.clone())
    );
    eprintln!("{what}: {}", w.summary());
    assert_eq!(w.split_brain_windows, 0, "{what}: split brain");
    recovered.expect("a leader answers after the fault");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_to_member_one_way_cut() {
    // The member hears nothing: a (spurious) fast takeover is allowed.
    asymmetric("leader -> member cut one way", |lab, l, m| {
        lab.peer_cut_one_way(l, m).expect("cut")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_to_leader_one_way_cut() {
    // The member's acks are lost: the leader drops it from the members, the
    // VIP does not move.
    let Some(lab) = fast_lab().await else {
        return;
    };
    let l = leader(&lab).await;
    let m = (l + 1) % lab.node_names().len();
    let (leader_name, member_name) = (lab.node_names()[l].clone(), lab.node_names()[m].clone());
    let mark = lab.mark().await.expect("mark");
    let rules = lab.peer_cut_one_way(m, l).expect("cut");
    eprintln!("fault: {}", rules.describe());
    let removed = lab
        .wait_lease(HOLD, |s| {
            s.peers
                .as_ref()
                .is_some_and(|p| !p.members.contains_key(&member_name))
        })
        .await;
    rules.remove().expect("remove the rules");
    let readded = lab
        .wait_lease(MEMBERS_READY, |s| {
            s.peers
                .as_ref()
                .is_some_and(|p| p.members.contains_key(&member_name))
        })
        .await;
    let w = lab.window_since(&mark).await.expect("window");
    lab.shutdown().await.expect("shutdown");
    eprintln!(
        "member -> leader cut one way: cost: longest ARP gap {:.0} ms, {} leadership changes, \
         {} Lease writes in {:.0} s; removed: {}; added again after the cut: {}",
        w.longest_arp_gap_ms,
        w.leadership_changes,
        w.lease_writes,
        w.seconds,
        removed.is_ok(),
        readded.is_ok()
    );
    eprintln!("{}", w.summary());
    assert_eq!(w.split_brain_windows, 0, "split brain");
    removed.expect("the leader removes the member whose acks are lost");
    assert_eq!(w.holders, vec![leader_name], "the VIP moved");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_cut_from_the_api_but_not_from_its_peers() {
    let Some(mut lab) = fast_lab().await else {
        return;
    };
    let mark = lab.mark().await.expect("mark");
    let r = lab.run_scenario(Scenario::ApiPartition, 0).await;
    let w = lab.window_since(&mark).await;
    lab.shutdown().await.expect("shutdown");
    let r = r.expect("scenario");
    let w = w.expect("window");
    eprintln!("{}", timeline_text(&r));
    eprintln!(
        "leader cut from the API: ARP outage {:?}, {} split-brain windows; {}",
        r.arp_outage(),
        r.split_brain_windows(),
        w.summary()
    );
    assert_eq!(r.split_brain_windows(), 0, "split brain");
    // The leader stops heartbeating at its renew deadline minus a promise:
    // the takeover comes around the renew deadline (2 s), not lease + retry.
    let outage = r.arp_outage().expect("ARP recovered");
    assert!(outage < Duration::from_secs(3), "ARP outage {outage:?}");
    assert!(w.fast_takeovers >= 1.0, "no fast takeover counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_cut_from_the_leader_but_not_from_the_api() {
    asymmetric("member <-> leader cut both ways", |lab, l, m| {
        lab.peer_cut(l, m).expect("cut")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_replayed_peer_packets_are_rejected() {
    let Some(lab) = fast_lab().await else {
        return;
    };
    let l = leader(&lab).await;
    let m = (l + 1) % lab.node_names().len();
    let name = lab.node_names()[l].clone();
    let mark = lab.mark().await.expect("mark");
    let rejected = |lab: &Lab, reason: &str| {
        lab.agent_metric(m, PEER_REJECTED, &[&format!("reason=\"{reason}\"")])
            .expect("member metrics")
    };
    let (mac0, replay0) = (rejected(&lab, "mac"), rejected(&lab, "replay"));
    // A heartbeat as the member received it (AF_PACKET in its namespace).
    let frame =
        tokio::task::block_in_place(|| lab.capture_peer_frame(l, m, Duration::from_secs(2)))
            .expect("capture a heartbeat");
    eprintln!("captured a {}-byte peer frame from the leader", frame.len());
    // Replayed, exactly, from the leader's own port on the LAN; then forged.
    for _ in 0..5 {
        lab.send_frame(l, &replay(&frame)).expect("replay");
        lab.send_frame(l, &forge(&frame)).expect("forge");
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    let (mut mac1, mut replay1) = (mac0, replay0);
    while std::time::Instant::now() < deadline && (mac1 < mac0 + 5.0 || replay1 < replay0 + 5.0) {
        // A bounded poll of the member's counters.
        tokio::time::sleep(Duration::from_millis(100)).await;
        (mac1, replay1) = (rejected(&lab, "mac"), rejected(&lab, "replay"));
    }
    // Recording after the packets, so a late effect would show.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let w = lab.window_since(&mark).await.expect("window");
    lab.shutdown().await.expect("shutdown");
    eprintln!(
        "rejected by the member: mac {mac0} -> {mac1}, replay {replay0} -> {replay1}; {}",
        w.summary()
    );
    assert!(
        mac1 >= mac0 + 5.0,
        "forged packets not counted as reason=mac"
    );
    assert!(
        replay1 >= replay0 + 5.0,
        "replays not counted as reason=replay"
    );
    assert_nothing_changed("forged and replayed packets", &w, &name);
}
