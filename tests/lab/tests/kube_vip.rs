//! kube-vip v1.0.0 in the lab, run the way its static pod runs (ARP mode,
//! control-plane Lease election through the node's admin.conf, the same VIP
//! and interface), on a real 3-node stacked control plane: exactly one node
//! holds the VIP and answers ARP for it, the Lease `kube-system/plndr-cp-lock`
//! names it; after a SIGKILL of its kube-vip another node takes over. Needs
//! root, the control plane binaries and the kube-vip build of `cargo xtask
//! setup`; skips otherwise.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use nix::sys::signal::Signal;
use vip_common::frame::craft::arp_request;
use vip_lab::controlplane::{ControlPlane, Identity, NodeSpec, objects};
use vip_lab::kube_vip::{KubeVip, LEASE_NAME, LEASE_NAMESPACE, Timers};
use vip_lab::packet_socket::{EtherType, PacketSocket, parse_arp};
use vip_lab::topology::{Endpoint, LAN_IFNAME, Lan};

/// Bound on the wait for /readyz (a cold start on 2 cores takes seconds).
const READY: Duration = Duration::from_secs(120);
/// Bound on the first election (start-up, API connections, one lease).
const ELECT: Duration = Duration::from_secs(60);
/// Bound on the takeover after a SIGKILL (5 s lease + retries, generous).
const TAKEOVER: Duration = Duration::from_secs(30);

/// The MACs that answer one ARP request for `target` within `wait`.
fn arp_answerers(
    from: &Endpoint,
    sock: &PacketSocket,
    target: Ipv4Addr,
    wait: Duration,
) -> Vec<[u8; 6]> {
    let spa = from.v4().expect("client has IPv4").octets();
    sock.drain().expect("drain");
    sock.send(&arp_request(from.mac(), spa, target.octets(), None))
        .expect("send ARP");
    let deadline = Instant::now() + wait;
    let mut macs = Vec::new();
    while let Some(frame) = sock
        .recv_matching(deadline, |f| {
            parse_arp(f).is_some_and(|a| a.op == 2 && a.sender_ip == target)
        })
        .expect("recv")
    {
        let mac = parse_arp(&frame).expect("parsed above").sender_mac;
        if !macs.contains(&mac) {
            macs.push(mac);
        }
    }
    macs
}

/// Whether `vip` is configured on the node's lab interface.
fn holds_vip(node: &Endpoint, vip: Ipv4Addr) -> bool {
    let out = node
        .ns()
        .exec_ok(&["-4", "-o", "addr", "show", "dev", node.ifname()])
        .expect("ip addr");
    out.contains(&format!(" {vip}/32 "))
}

/// The Lease's holder, read through node 0's API server as super-admin.
fn lease_holder(lan: &Lan, cp: &ControlPlane) -> Option<String> {
    let kubeconfig = cp.kubeconfig_as(0, Identity::SuperAdmin).to_owned();
    objects::in_ns(lan.node(0).ns(), async move {
        let client = objects::client(&kubeconfig).await?;
        let lease = Api::<Lease>::namespaced(client, LEASE_NAMESPACE)
            .get(LEASE_NAME)
            .await?;
        Ok(lease.spec.and_then(|s| s.holder_identity))
    })
    .expect("read the Lease")
}

/// Poll (bounded) until exactly one of `kvs` (other than `except`) says it
/// leads; its index.
fn wait_for_a_leader(kvs: &mut [KubeVip], except: Option<usize>, timeout: Duration) -> usize {
    let deadline = Instant::now() + timeout;
    loop {
        let leading: Vec<usize> = (0..kvs.len())
            .filter(|&i| Some(i) != except && kvs[i].is_leader())
            .collect();
        match leading[..] {
            [one] => return one,
            [] if Instant::now() < deadline => {
                // Several processes' logs, no single event to await.
                std::thread::sleep(Duration::from_millis(10));
            }
            [] => {
                let tails: Vec<String> = kvs
                    .iter()
                    .map(|k| format!("--- {}:\n{}", k.name(), k.tail(15)))
                    .collect();
                panic!("no kube-vip leads within {timeout:?}\n{}", tails.join("\n"));
            }
            _ => panic!("several kube-vip lead at once: {leading:?}"),
        }
    }
}

/// The peers (`ADDR:PORT`) of the established TCP connections of process
/// `pid` in the node's namespace.
fn tcp_peers(node: &Endpoint, pid: i32) -> Vec<String> {
    let out = std::process::Command::new("nsenter")
        .arg(format!("--net={}", node.ns().path().display()))
        .args(["--", "ss", "-Htnp", "state", "established"])
        .output()
        .expect("ss");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(&format!("pid={pid},")))
        .filter_map(|l| l.split_whitespace().nth(3).map(str::to_owned))
        .collect()
}

/// A folder removed on drop (also on panic).
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn kube_vip_elects_one_node_and_fails_over_on_sigkill() {
    vip_lab::require_root!();
    vip_lab::require_controlplane!();
    if vip_lab::kube_vip::require_bin().is_err() {
        return;
    }
    // Drop order (reverse): kube-vip first, then the control plane, the
    // folder and the namespaces.
    let lan = Lan::new(3).expect("lan");
    let vip = lan.vip_v4(0);
    let specs: Vec<NodeSpec<'_>> = lan
        .nodes()
        .map(|n| NodeSpec {
            ns: n.ns(),
            ip: n.v4().expect("node address"),
        })
        .collect();
    let cp = ControlPlane::start(&specs, IpAddr::V4(vip), READY).expect("control plane starts");
    // As kubeadm init does: the binding that gives admin.conf its rights.
    let super_admin = cp.kubeconfig_as(0, Identity::SuperAdmin).to_owned();
    objects::in_ns(lan.node(0).ns(), async move {
        let client = objects::client(&super_admin).await?;
        objects::create_cluster_admins_binding(&client).await
    })
    .expect("kubeadm's kubeadm:cluster-admins binding");
    let workdir =
        TempDir(std::env::temp_dir().join(format!("vip-lab-kube-vip-test-{}", std::process::id())));

    let started = Instant::now();
    let mut kvs: Vec<KubeVip> = lan
        .nodes()
        .enumerate()
        .map(|(i, n)| {
            KubeVip::spawn(
                &format!("n{i}"),
                n.ns(),
                LAN_IFNAME,
                vip,
                Timers::FAST,
                cp.kubeconfig_as(i, Identity::Admin),
                &workdir.0,
            )
            .expect("spawn kube-vip")
        })
        .collect();
    let pids: Vec<i32> = kvs.iter().filter_map(KubeVip::pid).collect();
    let leader = wait_for_a_leader(&mut kvs, None, ELECT);
    eprintln!(
        "kube-vip {} leads {:.1} s after start",
        kvs[leader].name(),
        started.elapsed().as_secs_f64()
    );
    for (i, node) in lan.nodes().enumerate() {
        assert_eq!(holds_vip(node, vip), i == leader, "VIP on n{i}");
    }
    assert_eq!(lease_holder(&lan, &cp).as_deref(), Some(kvs[leader].name()));
    for (i, kv) in kvs.iter().enumerate() {
        let peers = tcp_peers(lan.node(i), kv.pid().expect("running"));
        assert!(
            !peers.is_empty() && peers.iter().all(|p| p == "127.0.0.1:6443"),
            "n{i}: kube-vip talks to its node's own API server (kubernetes:6443 = 127.0.0.1), not the VIP: {peers:?}"
        );
    }
    let client = lan.client();
    let sock = client.packet_socket(EtherType::Arp).expect("client socket");
    assert_eq!(
        arp_answerers(client, &sock, vip, Duration::from_millis(500)),
        vec![lan.node(leader).mac()],
        "only the leader answers ARP for the VIP"
    );

    // Crash the leader's kube-vip: another node takes over.
    let killed_at = Instant::now();
    kvs[leader].signal(Signal::SIGKILL).expect("SIGKILL");
    kvs[leader].kill();
    let next = wait_for_a_leader(&mut kvs, Some(leader), TAKEOVER);
    let took = killed_at.elapsed();
    eprintln!(
        "kube-vip {} took over {:.2} s after SIGKILL of {} (lease/renew/retry {})",
        kvs[next].name(),
        took.as_secs_f64(),
        kvs[leader].name(),
        Timers::FAST
    );
    assert!(holds_vip(lan.node(next), vip), "VIP on the new leader");
    assert_eq!(lease_holder(&lan, &cp).as_deref(), Some(kvs[next].name()));
    let answerers = arp_answerers(client, &sock, vip, Duration::from_millis(500));
    assert!(
        answerers.contains(&lan.node(next).mac()),
        "the new leader answers: {answerers:02x?}"
    );
    // The killed leader's kernel still holds the VIP (kube-vip has no fence).
    if holds_vip(lan.node(leader), vip) {
        eprintln!(
            "note: the killed leader's kernel still holds the VIP: answerers {answerers:02x?}"
        );
    }

    // SIGTERM the new leader: it releases the Lease and deletes the VIP, the
    // third node takes over at its next retry.
    let third = (0..3)
        .find(|&i| i != leader && i != next)
        .expect("a third node");
    let stopped_at = Instant::now();
    let status = kvs[next].stop(TAKEOVER).expect("kube-vip exits on SIGTERM");
    eprintln!(
        "kube-vip {} exited ({status}) {:.2} s after SIGTERM",
        kvs[next].name(),
        stopped_at.elapsed().as_secs_f64()
    );
    assert!(
        !holds_vip(lan.node(next), vip),
        "a stopped leader removes the VIP"
    );
    let last = wait_for_a_leader(&mut kvs, Some(next), TAKEOVER);
    assert_eq!(last, third);
    eprintln!(
        "kube-vip {} took over {:.2} s after SIGTERM of {}",
        kvs[last].name(),
        stopped_at.elapsed().as_secs_f64(),
        kvs[next].name()
    );
    assert_eq!(lease_holder(&lan, &cp).as_deref(), Some(kvs[third].name()));

    // Clean-up: processes, the VIP left by the killed one, the folder.
    drop(kvs);
    for pid in pids {
        assert!(!alive(pid), "kube-vip {pid} left behind");
    }
    assert!(!holds_vip(lan.node(leader), vip), "VIP removed on drop");
    let left: Vec<_> = std::fs::read_dir(&workdir.0)
        .expect("workdir")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "left in the workdir: {left:?}");
}

/// kube-vip's control-plane mode replaces the kubeconfig's server with
/// `kubernetes:6443` (the pod's host alias for 127.0.0.1): with a kubeconfig
/// naming the VIP it still dials the node's own 127.0.0.1:6443. And a test
/// panicking while kube-vip runs leaves no process and no folder.
#[test]
fn kube_vip_dials_kubernetes_6443_and_a_panic_leaves_nothing_behind() {
    vip_lab::require_root!();
    if vip_lab::kube_vip::require_bin().is_err() {
        return;
    }
    let lan = Lan::new(1).expect("lan");
    let workdir = TempDir(
        std::env::temp_dir().join(format!("vip-lab-kube-vip-panic-{}", std::process::id())),
    );
    std::fs::create_dir_all(&workdir.0).expect("workdir");
    // No API server behind it: kube-vip keeps retrying the election.
    let kubeconfig = workdir.0.join("admin.conf");
    std::fs::write(
        &kubeconfig,
        format!("apiVersion: v1\nkind: Config\nclusters:\n- name: lab\n  cluster:\n    server: https://{}:6443\n    insecure-skip-tls-verify: true\ncontexts:\n- name: lab\n  context:\n    cluster: lab\n    user: lab\ncurrent-context: lab\nusers:\n- name: lab\n  user:\n    token: none\n", lan.vip_v4(0)),
    )
    .expect("kubeconfig");
    let mut seen = None;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut kv = KubeVip::spawn(
            "n0",
            lan.node(0).ns(),
            LAN_IFNAME,
            lan.vip_v4(0),
            Timers::FAST,
            &kubeconfig,
            &workdir.0,
        )
        .expect("spawn kube-vip");
        seen = kv.pid();
        kv.wait_for_line("attempting to acquire leader lease", ELECT)
            .expect("kube-vip runs its election");
        kv.wait_for_line(
            "Get \"https://kubernetes:6443/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/plndr-cp-lock",
            ELECT,
        )
        .expect("kube-vip asks kubernetes:6443, not the kubeconfig's server");
        kv.wait_for_line("dial tcp 127.0.0.1:6443", ELECT)
            .expect("kubernetes is 127.0.0.1 in its /etc/hosts");
        panic!("a test failing with kube-vip running");
    }));
    assert!(result.is_err());
    let pid = seen.expect("running");
    assert!(!alive(pid), "kube-vip {pid} left behind");
    let left: Vec<_> = std::fs::read_dir(&workdir.0)
        .expect("workdir")
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n != "admin.conf")
        .collect();
    assert!(left.is_empty(), "left in the workdir: {left:?}");
}

/// The lab's kube-vip member (`Implementation::KubeVip`, its fast settings)
/// on the real control plane: a graceful stop and a crash of the leader's
/// kube-vip move the VIP within lease + retry + 1 s, and the MAC that answers
/// afterwards is the holder of `plndr-cp-lock`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lab_runs_kube_vip_as_a_member() {
    vip_lab::require_root!();
    vip_lab::require_controlplane!();
    if vip_lab::kube_vip::require_bin().is_err() {
        return;
    }
    let implementation = vip_lab::lab::Implementation::kube_vip_fast();
    assert_eq!(implementation.label(), "kube-vip 5s/3s/1s");
    let mut lab = vip_lab::lab::Lab::start(vip_lab::lab::LabConfig {
        implementation,
        ..vip_lab::lab::LabConfig::default()
    })
    .await
    .expect("lab with kube-vip");
    let mut failures = Vec::new();
    for scenario in [
        vip_lab::lab::Scenario::GracefulStop,
        vip_lab::lab::Scenario::Crash,
    ] {
        let r = match lab.run_scenario(scenario, 0).await {
            Ok(r) => r,
            Err(e) => {
                failures.push(format!("{}: {e:#}", scenario.name()));
                continue;
            }
        };
        eprintln!("{}", vip_lab::lab::demo::timeline_text(&r));
        let limit = Duration::from_secs(5 + 1 + 1);
        match r.arp_outage() {
            Some(o) if o <= limit => {}
            other => failures.push(format!("{}: ARP outage {other:?}", scenario.name())),
        }
        if !r
            .events
            .iter()
            .any(|e| e.what.contains("kube-vip: acquired the Lease"))
        {
            failures.push(format!("{}: no takeover on the timeline", scenario.name()));
        }
        let i = lab
            .wait_for_leader(Duration::from_secs(10))
            .await
            .expect("a leader");
        let name = lab.node_names()[i].clone();
        if let Err(e) = lab.wait_holder(&name, Duration::from_secs(2)).await {
            failures.push(format!("{}: {name} answers but {e:#}", scenario.name()));
        }
    }
    lab.shutdown().await.expect("shutdown");
    assert!(failures.is_empty(), "{}", failures.join("; "));
}
