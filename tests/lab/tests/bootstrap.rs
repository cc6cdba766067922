//! Bootstrap without hand edits (kubeadm >= 1.29), in kubeadm's order against
//! the real API server's RBAC (`--authorization-mode=Node,RBAC`):
//!
//! 1. the API server is up on the first node; admin.conf (group
//!    `kubeadm:cluster-admins`) is forbidden, kubeadm's binding does not
//!    exist yet; super-admin.conf lies next to admin.conf, as kubeadm writes
//!    them on the `kubeadm init` node;
//! 2. the agent starts with `--kubeconfig <dir>/admin.conf` and
//!    `--super-admin-kubeconfig <dir>/super-admin.conf`: it logs the switch
//!    to super-admin, takes the Lease and answers for the VIP;
//! 3. "kubeadm" creates its `kubeadm:cluster-admins` ClusterRoleBinding
//!    THROUGH THE VIP (a client in the client namespace, server
//!    `https://<VIP>:6443`, super-admin credentials);
//! 4. the agent switches back to admin.conf within a bound, keeps the Lease
//!    (same holder, no transition, renewals go on), and its metric says
//!    admin.
//!
//! Needs root, the agent binary and the control plane binaries (`cargo
//! xtask setup`). Everything (agent, pins, control plane, namespaces, the
//! kubeconfig folder) is removed on drop, also when an assertion fails.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use vip_common::events;
use vip_lab::agent::{Agent, PinDirGuard};
use vip_lab::controlplane::{ControlPlane, Identity, NodeSpec, objects};
use vip_lab::netns::NetNs;
use vip_lab::packet_socket::format_mac;
use vip_lab::topology::{LAN_IFNAME, Lan};

/// Bound on the wait for /readyz (a cold start on 2 cores takes seconds).
const READY: Duration = Duration::from_secs(120);
/// Bound on the agent's start-up to leading (XDP attach, the first requests).
const LEAD: Duration = Duration::from_secs(30);
/// Bound on the switch back after the binding exists: the admin probe runs
/// every retry period (500 ms by default), plus a request and the slack of a
/// loaded 2-core machine.
const SWITCH_BACK: Duration = Duration::from_secs(5);
const LEASE: &str = "vip-control-plane";
const NODE: &str = "cp0";
const METRICS: &str = "127.0.0.1:2112";

/// A folder of kubeadm's kubeconfigs for the agent, removed on drop.
struct KubeconfigDir(PathBuf);

impl KubeconfigDir {
    /// admin.conf and super-admin.conf of node 0, side by side (as in
    /// /etc/kubernetes on the `kubeadm init` node).
    fn new(cp: &ControlPlane) -> Self {
        let dir = std::env::temp_dir().join(format!("vip-lab-bootstrap-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("kubeconfig folder");
        let me = Self(dir);
        for id in [Identity::Admin, Identity::SuperAdmin] {
            std::fs::copy(cp.kubeconfig_as(0, id), me.file(id)).expect("copy kubeconfig");
        }
        me
    }

    fn file(&self, id: Identity) -> PathBuf {
        self.0.join(id.file_name())
    }
}

impl Drop for KubeconfigDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `fut` on a fresh runtime on a thread inside `ns` (every connection
/// it opens is made there).
fn in_ns<T: Send>(ns: &NetNs, fut: impl Future<Output = T> + Send) -> T {
    ns.run(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(fut)
    })
}

/// A client from `kubeconfig`, sent to `server` instead of the kubeconfig's.
async fn client(kubeconfig: &Path, server: Option<&str>) -> Client {
    let kc = Kubeconfig::read_from(kubeconfig).expect("kubeconfig parses");
    let mut cfg = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("config");
    if let Some(s) = server {
        cfg.cluster_url = s.parse().expect("url");
    }
    Client::try_from(cfg).expect("client")
}

/// The agent's Lease, read through node 0's API server with `kubeconfig`.
fn lease(ns: &NetNs, kubeconfig: &Path) -> Lease {
    in_ns(ns, async {
        Api::<Lease>::namespaced(client(kubeconfig, None).await, "kube-system")
            .get(LEASE)
            .await
            .expect("get the Lease")
    })
}

fn holder(l: &Lease) -> Option<&str> {
    l.spec.as_ref()?.holder_identity.as_deref()
}

/// GET /metrics of the agent (inside the node namespace).
fn metrics(ns: &NetNs) -> String {
    ns.run(|| {
        let mut s = TcpStream::connect(METRICS).expect("connect to the metrics port");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .expect("request");
        let mut body = String::new();
        s.read_to_string(&mut body).expect("response");
        body
    })
}

/// The value of the sample `series` (name with labels) in `text`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// The renewals counter, whatever the identity label.
fn renewals(text: &str) -> f64 {
    sample(text, "vip_agent_renewals_total").expect("vip_agent_renewals_total")
}

/// The MAC the client namespace's neighbour table holds for `ip`.
fn neighbour_mac(client: &NetNs, ip: Ipv4Addr) -> Option<String> {
    let out = client
        .exec_ok(&["neigh", "show", &ip.to_string()])
        .expect("ip neigh");
    let mut words = out.split_whitespace();
    words.find(|w| *w == "lladdr")?;
    words.next().map(str::to_owned)
}

#[test]
fn first_node_leads_with_super_admin_until_kubeadm_binds_admin_through_the_vip() {
    let bin = vip_lab::require_lab!();
    vip_lab::require_controlplane!();
    // Drop order (reverse): agent, pins, kubeconfigs, control plane, namespaces.
    let lan = Lan::new(1).expect("lan");
    let node = lan.node(0);
    let vip = lan.vip_v4(0);
    let cp = ControlPlane::start(
        &[NodeSpec {
            ns: node.ns(),
            ip: node.v4().expect("node address"),
        }],
        IpAddr::V4(vip),
        READY,
    )
    .expect("control plane starts");
    println!(
        "control plane ready after {:.1} s",
        cp.ready_after().as_secs_f64()
    );
    let files = KubeconfigDir::new(&cp);
    let (admin, super_admin) = (
        files.file(Identity::Admin),
        files.file(Identity::SuperAdmin),
    );
    let pins = PinDirGuard::new("bootstrap");
    let args: Vec<String> = [
        "run",
        "--interface",
        LAN_IFNAME,
        "--address",
        &vip.to_string(),
        "--node-name",
        NODE,
        "--kubeconfig",
        &admin.display().to_string(),
        "--super-admin-kubeconfig",
        &super_admin.display().to_string(),
        "--xdp-mode",
        "skb",
        "--pin-dir",
        &pins.path().display().to_string(),
        "--metrics-addr",
        METRICS,
        "--log-format",
        "json",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let started = Instant::now();
    let mut agent = Agent::spawn(NODE, node.ns(), &bin, &args).expect("agent starts");

    // 2. Forbidden with admin.conf: super-admin, the Lease, the VIP.
    let fell_back = agent
        .wait_for_event(events::CREDENTIALS_SUPER_ADMIN, LEAD)
        .expect("switch to super-admin logged");
    assert!(
        fell_back
            .field("super_admin_kubeconfig")
            .is_some_and(|p| p == super_admin.display().to_string()),
        "{fell_back:?}"
    );
    agent
        .wait_for_event(events::LEASE_ACQUIRED, LEAD)
        .expect("Lease acquired");
    agent
        .wait_for_event(events::LEADING, LEAD)
        .expect("leading");
    let leading_after = started.elapsed();
    let taken = lease(node.ns(), &super_admin);
    assert_eq!(holder(&taken), Some(NODE));
    let m = metrics(node.ns());
    assert_eq!(
        sample(&m, "vip_agent_credentials{kubeconfig=\"super-admin\"}"),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        sample(&m, "vip_agent_credentials{kubeconfig=\"admin\"}"),
        Some(0.0)
    );
    // admin.conf is still refused: kubeadm's binding does not exist yet.
    let refused = in_ns(node.ns(), async {
        Api::<Lease>::namespaced(client(&admin, None).await, "kube-system")
            .get(LEASE)
            .await
    });
    assert!(
        matches!(&refused, Err(kube::Error::Api(s)) if s.code == 403),
        "admin.conf before the binding: {refused:?}"
    );

    // 3. kubeadm creates its binding through the control-plane endpoint.
    let endpoint = format!("https://{vip}:6443");
    let bound_at = in_ns(lan.client().ns(), async {
        let c = client(&super_admin, Some(&endpoint)).await;
        objects::create_cluster_admins_binding(&c)
            .await
            .expect("kubeadm's binding created through the VIP");
        Instant::now()
    });
    assert_eq!(
        neighbour_mac(lan.client().ns(), vip),
        Some(format_mac(&node.mac())),
        "the client reached the VIP at node 0's MAC"
    );

    // 4. Back to admin.conf, the Lease kept.
    agent
        .wait_for_event(events::CREDENTIALS_ADMIN, SWITCH_BACK)
        .expect("switch back to admin.conf logged");
    let switch_back = bound_at.elapsed();
    assert!(
        switch_back < SWITCH_BACK,
        "switched back {switch_back:?} after the binding"
    );
    let before = renewals(&metrics(node.ns()));
    let first = lease(node.ns(), &admin);
    // Renewals go on with admin.conf: 3 retry periods later the record moved.
    let deadline = Instant::now() + Duration::from_secs(10);
    let second = loop {
        std::thread::sleep(Duration::from_millis(100)); // polling with a deadline
        let l = lease(node.ns(), &admin);
        if l.metadata.resource_version != first.metadata.resource_version
            || Instant::now() > deadline
        {
            break l;
        }
    };
    assert_ne!(
        second.metadata.resource_version, first.metadata.resource_version,
        "renewals went on"
    );
    for l in [&first, &second] {
        assert_eq!(holder(l), Some(NODE));
        assert_eq!(
            l.spec.as_ref().and_then(|s| s.lease_transitions),
            taken.spec.as_ref().and_then(|s| s.lease_transitions),
            "no transition"
        );
        assert_eq!(
            l.spec.as_ref().and_then(|s| s.acquire_time.clone()),
            taken.spec.as_ref().and_then(|s| s.acquire_time.clone()),
            "the same tenure"
        );
    }
    let m = metrics(node.ns());
    assert_eq!(
        sample(&m, "vip_agent_credentials{kubeconfig=\"admin\"}"),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        sample(&m, "vip_agent_credentials{kubeconfig=\"super-admin\"}"),
        Some(0.0)
    );
    assert!(renewals(&m) > before, "renewals counted after the switch");
    assert_eq!(
        sample(&m, &format!("vip_agent_leader{{identity=\"{NODE}\"}}")),
        Some(1.0)
    );
    assert_eq!(sample(&m, "vip_agent_renew_failures_total"), Some(0.0));
    // Never silent, never switched twice.
    for line in agent.log() {
        if let Some(ev) = vip_lab::agent_log::parse(&line) {
            assert!(
                ![
                    events::STEPPING_DOWN,
                    events::RENEW_FAILED,
                    events::RENEW_DEADLINE_MISSED,
                    events::FOLLOWING,
                ]
                .contains(&ev.name.as_str()),
                "{line}"
            );
        }
    }
    let switches = agent
        .log()
        .iter()
        .filter_map(|l| vip_lab::agent_log::parse(l))
        .filter(|e| e.name.starts_with("credentials_"))
        .count();
    assert_eq!(switches, 2, "one switch each way");
    println!(
        "leading with super-admin {:.2} s after start; back on admin.conf {:.0} ms after kubeadm's binding",
        leading_after.as_secs_f64(),
        switch_back.as_secs_f64() * 1000.0
    );
    let status = agent.stop(Duration::from_secs(10)).expect("graceful stop");
    assert!(status.success(), "{status}");
}
