//! The image, run from the manifest itself: in each of three lab nodes,
//! `podman kube play` reads the Pod YAML that the image's own `vip-agent
//! manifest pod` prints (as kubeadm's preKubeadmCommands render it) and runs
//! the image of `cargo xtask image` against the node's real kube-apiserver.
//! The three pods elect one leader, the client sees its MAC answer ARP for
//! the VIP, and when the leader's pod is stopped (SIGTERM, as the kubelet
//! stops a pod) another node answers, never two at once.
//!
//! The only change to the printed YAML is the pod's name (one podman holds
//! all three nodes' pods; the kubelet names a static pod's mirror
//! `<name>-<node>` in the same way). Flags an operator passes on a node are
//! given to `manifest pod`: `--node-name` (the three lab nodes share one host
//! name), the node's kubeconfig, no super-admin fallback (the lab's agent
//! identity has its RBAC already), a pin directory the lab removes.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use vip_lab::agent::PinDirGuard;
use vip_lab::controlplane::{Identity, objects};
use vip_lab::lab::probe::{ClientView, Prober};
use vip_lab::podman::{IMAGE_ENV, PodSet, RUNC};
use vip_lab::skip::{self, Missing};
use vip_lab::topology::{LAN_IFNAME, Lan};

const NODES: usize = 3;
const LEASE: &str = "vip-control-plane";
/// Bound on a broken mechanism, not a measurement (the benchmark measures).
const ELECT: Duration = Duration::from_secs(60);
const HANDOVER: Duration = Duration::from_secs(30);

fn image_under_test() -> Option<String> {
    match std::env::var(IMAGE_ENV) {
        Ok(i) if !i.is_empty() => Some(i),
        _ => {
            skip::skip(
                &skip::test_name(),
                &Missing {
                    reason: format!("no image under test (${IMAGE_ENV} is not set)"),
                    fix: format!(
                        "`cargo xtask image` builds it and prints its name; set {IMAGE_ENV} to \
                         it (`cargo xtask test` does both)"
                    ),
                },
            );
            None
        }
    }
}

/// `vip-agent manifest pod ...` run by the image itself (`podman run IMAGE
/// manifest pod ...`, like kubeadm's `ctr run IMAGE ... manifest pod`).
fn render(image: &str, conf: &std::path::Path, args: &[String]) -> String {
    let out = Command::new("podman")
        .env("CONTAINERS_CONF", conf)
        .args(["--storage-driver", "vfs", "--runtime", RUNC])
        .args(["run", "--rm", "--network", "host", image, "manifest", "pod"])
        .args(args)
        .output()
        .expect("running podman");
    assert!(
        out.status.success(),
        "the image's `manifest pod` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 manifest")
}

async fn holder(kubeconfig: PathBuf, lan: &Lan) -> Option<String> {
    // Ask every node's API server: one of them may be the stopped leader's.
    for i in 0..NODES {
        let kc = kubeconfig.clone();
        let got = tokio::task::block_in_place(|| {
            objects::in_ns(lan.node(i).ns(), async move {
                let client = objects::client(&kc).await?;
                let api: kube::Api<Lease> = kube::Api::namespaced(client, "kube-system");
                Ok(api.get_opt(LEASE).await?)
            })
        });
        if let Ok(lease) = got {
            return lease
                .and_then(|l| l.spec)
                .and_then(|s| s.holder_identity)
                .filter(|h| !h.is_empty());
        }
    }
    None
}

/// Waits until the Lease names a node and that node's MAC answers ARP.
async fn wait_leader(
    lan: &Lan,
    kubeconfig: &std::path::Path,
    view: &tokio::sync::watch::Receiver<ClientView>,
    not: Option<usize>,
    timeout: Duration,
    pods: &PodSet,
) -> usize {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(h) = holder(kubeconfig.to_owned(), lan).await
            && let Some(i) = (0..NODES).find(|i| format!("node{i}") == h)
            && Some(i) != not
            && view.borrow().arp_mac == Some(lan.node(i).mac())
        {
            return i;
        }
        if Instant::now() > deadline {
            let logs: Vec<String> = (0..NODES)
                .map(|i| {
                    format!(
                        "--- node{i}:\n{}",
                        pods.logs(&format!("node{i}"), "vip-agent")
                    )
                })
                .collect();
            panic!(
                "no leader answering within {timeout:?} (holder {:?}, client {:?}):\n{}",
                holder(kubeconfig.to_owned(), lan).await,
                view.borrow(),
                logs.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_pods_from_the_manifest_elect_answer_and_hand_over() {
    vip_lab::require_root!();
    vip_lab::require_controlplane!();
    vip_lab::require_tool!("podman", package = "podman");
    vip_lab::require_tool!(RUNC, package = "runc");
    vip_lab::require_tool!("nsenter", package = "util-linux");
    let Some(image) = image_under_test() else {
        return;
    };
    vip_lab::lab::cleanup_stale().expect("cleaning up after earlier runs");
    let lan = Lan::new(NODES).expect("building the LAN");
    let vip = lan.vip_v4(0);
    let cp = vip_lab::lab::start_control_plane(&lan, vip.into())
        .await
        .expect("starting the control plane");
    let client_ip = lan.client().v4().expect("client IPv4");
    let mut prober = Prober::start(
        lan.client().ns(),
        LAN_IFNAME,
        client_ip,
        vip,
        None,
        Duration::from_millis(5),
        Instant::now(),
    )
    .expect("starting the probes");
    let view = prober.view();
    let work = std::env::temp_dir().join(format!("vip-lab-pods-{}", std::process::id()));
    // Drop order (reverse of declaration): pods first, then their pins.
    let pins: Vec<PinDirGuard> = (0..NODES)
        .map(|i| PinDirGuard::new(&format!("pod-node{i}")))
        .collect();
    let mut pods = PodSet::new(&work).expect("podman set-up");
    let conf = work.join("containers.conf");

    let started = Instant::now();
    for (i, pin) in pins.iter().enumerate() {
        let kubeconfig = cp.kubeconfig_as(i, Identity::Agent);
        let args: Vec<String> = vec![
            format!("--interface={LAN_IFNAME}"),
            format!("--address={}", IpAddr::from(vip)),
            format!("--node-name=node{i}"),
            format!("--kubeconfig={}", kubeconfig.display()),
            "--super-admin-kubeconfig=".into(),
            format!("--pin-dir={}", pin.path().display()),
            "--xdp-mode=skb".into(),
            format!("--image={image}"),
        ];
        let yaml = render(&image, &conf, &args);
        assert!(
            yaml.contains(&format!("image: {image}")),
            "the manifest does not run the image under test:\n{yaml}"
        );
        pods.play(lan.node(i).ns(), &yaml, "vip-agent", &format!("node{i}"))
            .unwrap_or_else(|e| panic!("node{i}: {e}"));
    }
    let super_admin = cp.kubeconfig_as(0, Identity::SuperAdmin).to_owned();
    let first = wait_leader(&lan, &super_admin, &view, None, ELECT, &pods).await;
    eprintln!(
        "pods played, node{first} leads and answers ARP {:.1} s after the first play",
        started.elapsed().as_secs_f64()
    );
    let before = view.borrow().split_brain;

    // The kubelet stops a pod with SIGTERM and the pod's grace period.
    let stopped_at = Instant::now();
    pods.stop(&format!("node{first}"), Duration::from_secs(10))
        .expect("stopping the leader's pod");
    let stop_took = stopped_at.elapsed();
    let second = wait_leader(&lan, &super_admin, &view, Some(first), HANDOVER, &pods).await;
    eprintln!(
        "leader's pod stopped in {:.2} s (SIGTERM), node{second} answers {:.2} s after the stop began",
        stop_took.as_secs_f64(),
        stopped_at.elapsed().as_secs_f64()
    );
    assert!(
        stop_took < Duration::from_secs(9),
        "the agent did not exit on SIGTERM: podman waited {stop_took:?} (grace 10 s, then SIGKILL)"
    );
    let logs = pods.logs(&format!("node{first}"), "vip-agent");
    assert!(
        logs.contains("lease released") || logs.contains("Lease released"),
        "the stopped leader did not release the Lease:\n{logs}"
    );
    // Watch the new leader a moment longer: nobody else answers.
    let until = Instant::now() + Duration::from_secs(1);
    while Instant::now() < until {
        assert_eq!(
            view.borrow().arp_mac,
            Some(lan.node(second).mac()),
            "the VIP moved again after the handover"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let after = view.borrow().split_brain;
    assert_eq!(
        after, before,
        "two MACs answered ARP for the VIP in one probe window"
    );
    assert_eq!(before, 0, "two MACs answered ARP before the handover");
    prober.stop();
    drop(pods);
    drop(pins);
    drop(cp);
}
