//! The Lease contract: one suite (vip_lab::contract) run against the embedded
//! Lease server and against a real 1-node control plane (etcd +
//! kube-apiserver in a lab namespace). Each server must meet every
//! expectation, and the two must observe the same thing in every check:
//! where they differed, the embedded server was fixed (the real one is
//! right). docs/lease-servers.md lists what the suite covers and which lab
//! faults only the embedded server can produce. Needs root and the control
//! plane binaries.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use vip_lab::contract::{self, Report};
use vip_lab::controlplane::{ControlPlane, NodeSpec, objects};
use vip_lab::topology::Lan;
use vip_lease_server::{LeaseServer, LeaseServerOptions};

/// Bound on the wait for /readyz (a cold start on 2 cores takes seconds).
const READY: Duration = Duration::from_secs(120);
/// The namespace of the agent's Lease (it exists in a fresh cluster).
const NS: &str = "kube-system";

/// The suite against the embedded server on the host's loopback, with the
/// real server's bookmark period (about a minute).
fn embedded() -> Report {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let server = LeaseServer::start(LeaseServerOptions {
            bookmark_interval: Duration::from_secs(60),
            ..LeaseServerOptions::default()
        })
        .await
        .expect("embedded Lease server starts");
        let yaml = server.kubeconfig_yaml().expect("kubeconfig");
        let kc = Kubeconfig::from_yaml(&yaml).expect("kubeconfig parses");
        let cfg = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .expect("config");
        let client = Client::try_from(cfg).expect("client");
        let mut report = contract::run("embedded", client.clone(), NS).await;
        server.restart().await;
        contract::after_restart(&mut report, client, NS).await;
        server.shutdown().await;
        report
    })
}

#[test]
fn embedded_and_real_lease_servers_keep_the_same_contract() {
    vip_lab::require_root!();
    vip_lab::require_controlplane!();
    let started = Instant::now();
    let lan = Lan::new(1).expect("lan");
    let node = lan.node(0);
    let ip = node.v4().expect("node address");
    let vip = IpAddr::V4(lan.vip_v4(0));
    let mut cp = ControlPlane::start(&[NodeSpec { ns: node.ns(), ip }], vip, READY)
        .expect("control plane starts");
    // Both at once: the suite mostly waits (watch timeouts).
    let (real, embedded) = std::thread::scope(|s| {
        let embedded = s.spawn(embedded);
        let mut real = objects::in_ns(node.ns(), async {
            let client = objects::client(cp.kubeconfig(0)).await?;
            Ok(contract::run("real", client, NS).await)
        })
        .expect("the suite runs against the real server");
        let took = cp
            .restart_apiserver(0, node.ns(), READY)
            .expect("kube-apiserver restarts");
        eprintln!("kube-apiserver restarted in {:.1} s", took.as_secs_f64());
        objects::in_ns(node.ns(), async {
            let client = objects::client(cp.kubeconfig(0)).await?;
            contract::after_restart(&mut real, client, NS).await;
            Ok(())
        })
        .expect("the suite runs against the restarted real server");
        (real, embedded.join().expect("the embedded run"))
    });
    eprint!("{}{}", real.summary(), embedded.summary());
    eprintln!("both runs took {:.1} s", started.elapsed().as_secs_f64());
    let differences = embedded.differences(&real);
    for d in &differences {
        eprintln!("difference: {d}");
    }

    let real_failures = real.failures();
    assert!(
        real_failures.is_empty(),
        "the real server breaks the suite's expectations (fix the suite):\n{}\n{}",
        real_failures.join("\n"),
        cp.tail(0, 30)
    );
    assert!(
        differences.is_empty(),
        "the embedded server differs from the real one (fix the embedded one):\n{}",
        differences.join("\n")
    );
    assert!(
        embedded.failures().is_empty(),
        "{}",
        embedded.failures().join("\n")
    );
    assert_eq!(real.checks.len(), 25, "checks run");
}
