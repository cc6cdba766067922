//! The real control plane in the lab (etcd + kube-apiserver built by `cargo
//! xtask setup` from tests/controlplane): it starts in a node namespace, says
//! ready, serves Leases with optimistic concurrency through the super-admin
//! kubeconfig, and leaves nothing behind. Needs root and the binaries.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use vip_lab::controlplane::{ControlPlane, Identity, NodeSpec, objects, readyz};
use vip_lab::netns::NetNs;
use vip_lab::topology::Lan;

/// Bound on the wait for /readyz (a cold start on 2 cores takes seconds).
const READY: Duration = Duration::from_secs(120);

async fn client(kubeconfig: &Path) -> Client {
    let kc = Kubeconfig::read_from(kubeconfig).expect("kubeconfig parses");
    let cfg = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("config from kubeconfig");
    Client::try_from(cfg).expect("client")
}

async fn lease_round_trip(kubeconfig: &Path) {
    let leases = leases(kubeconfig).await;
    let pp = PostParams::default();
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some("vip-lab".into()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some("n0".into()),
            lease_duration_seconds: Some(15),
            ..LeaseSpec::default()
        }),
    };
    let created = leases.create(&pp, &lease).await.expect("create");
    let read = leases.get("vip-lab").await.expect("get");
    assert_eq!(
        read.metadata.resource_version,
        created.metadata.resource_version
    );
    assert_eq!(
        read.spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_deref()),
        Some("n0")
    );

    // An update carrying the current resourceVersion succeeds...
    let mut next = read.clone();
    next.spec.as_mut().expect("spec").holder_identity = Some("n1".into());
    let updated = leases.replace("vip-lab", &pp, &next).await.expect("update");
    assert_ne!(
        updated.metadata.resource_version,
        read.metadata.resource_version
    );
    assert_eq!(
        updated
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_deref()),
        Some("n1")
    );

    // ...and one carrying the old resourceVersion is a conflict.
    let mut stale = read;
    stale.spec.as_mut().expect("spec").holder_identity = Some("n2".into());
    match leases.replace("vip-lab", &pp, &stale).await {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 409, "{status:?}"),
        other => panic!("a stale resourceVersion must get 409, got {other:?}"),
    }
    let after = leases.get("vip-lab").await.expect("get");
    assert_eq!(
        after.metadata.resource_version,
        updated.metadata.resource_version
    );
}

#[test]
fn one_node_control_plane_serves_leases_with_optimistic_concurrency() {
    vip_lab::require_root!();
    vip_lab::require_controlplane!();
    let lan = Lan::new(1).expect("lan");
    let node = lan.node(0);
    let ip = node.v4().expect("node address");
    let vip = IpAddr::V4(lan.vip_v4(0));
    let cp = ControlPlane::start(&[NodeSpec { ns: node.ns(), ip }], vip, READY)
        .expect("control plane starts");
    eprintln!(
        "control plane ready after {:.1} s in {}",
        cp.ready_after().as_secs_f64(),
        cp.dir().display()
    );
    // The client runs inside the node namespace: 127.0.0.1:6443 is its API server.
    in_node(node.ns(), lease_round_trip(cp.kubeconfig(0)));
    in_node(node.ns(), identities_as_kubeadm(&cp));

    // It listens on the node address too, and its certificate names the node
    // address and the VIP: ask from the client namespace (the VIP put on the node).
    node.ns()
        .exec_ok(&["addr", "add", &format!("{vip}/32"), "dev", node.ifname()])
        .expect("VIP on the node");
    let tls = cp.tls_client();
    for (addr, name) in [(IpAddr::V4(ip), ip.to_string()), (vip, vip.to_string())] {
        let reply = lan
            .client()
            .ns()
            .run(|| readyz::get(&tls, SocketAddr::new(addr, 6443), &name, "/readyz"));
        assert_eq!(reply.map(|r| r.0), Ok(200), "/readyz through {name}");
    }

    let pids = cp.pids();
    let dir = cp.dir().to_path_buf();
    drop(cp);
    assert!(!dir.exists(), "{} left behind", dir.display());
    assert_gone(&pids);
}

/// kubeadm's identities against `--authorization-mode=Node,RBAC`: admin.conf
/// (group kubeadm:cluster-admins) is forbidden until kubeadm's binding
/// exists; the agent's own identity can do exactly what deploy/rbac.yaml
/// grants (Leases in kube-system), nothing else.
async fn identities_as_kubeadm(cp: &ControlPlane) {
    let admin = objects::client(cp.kubeconfig_as(0, Identity::Admin))
        .await
        .expect("admin client");
    let agent = objects::client(cp.kubeconfig_as(0, Identity::Agent))
        .await
        .expect("agent client");
    let super_admin = objects::client(cp.kubeconfig_as(0, Identity::SuperAdmin))
        .await
        .expect("super-admin client");
    fn code<T>(r: Result<T, kube::Error>) -> u16 {
        match r {
            Ok(_) => 200,
            Err(kube::Error::Api(s)) => s.code,
            Err(e) => panic!("not an API answer: {e}"),
        }
    }
    let system_leases = |c: &Client| Api::<Lease>::namespaced(c.clone(), "kube-system");
    assert_eq!(
        code(system_leases(&admin).list(&Default::default()).await),
        403
    );
    assert_eq!(
        code(system_leases(&agent).list(&Default::default()).await),
        403
    );

    let applied = objects::apply_rbac_manifest(
        &super_admin,
        &objects::deploy_rbac_yaml().expect("deploy/rbac.yaml"),
    )
    .await
    .expect("deploy/rbac.yaml applies");
    assert_eq!(
        applied,
        ["Role/vip-agent-leases", "RoleBinding/vip-agent-leases"]
    );
    assert_eq!(
        code(system_leases(&agent).list(&Default::default()).await),
        200
    );
    assert_eq!(code(system_leases(&agent).get("vip-lab").await), 200);
    let default_leases = Api::<Lease>::namespaced(agent.clone(), "default");
    assert_eq!(code(default_leases.list(&Default::default()).await), 403);
    assert_eq!(
        code(system_leases(&admin).list(&Default::default()).await),
        403
    );

    objects::create_cluster_admins_binding(&super_admin)
        .await
        .expect("kubeadm's binding");
    assert_eq!(
        code(system_leases(&admin).list(&Default::default()).await),
        200
    );
}

/// No process of `pids` is left (reaped on drop, so /proc has no entry).
fn assert_gone(pids: &[u32]) {
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "process {pid} left behind"
        );
    }
}

#[test]
fn a_panicking_test_leaves_no_control_plane_behind() {
    vip_lab::require_root!();
    vip_lab::require_controlplane!();
    let lan = Lan::new(1).expect("lan");
    let node = lan.node(0);
    let ip = node.v4().expect("node address");
    let vip = IpAddr::V4(lan.vip_v4(0));
    let mut seen = None;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let cp = ControlPlane::start(&[NodeSpec { ns: node.ns(), ip }], vip, READY)
            .expect("control plane starts");
        seen = Some((cp.pids(), cp.dir().to_path_buf()));
        panic!("a test failing with the control plane running");
    }));
    assert!(result.is_err());
    let (pids, dir) = seen.expect("started");
    assert_gone(&pids);
    assert!(!dir.exists(), "{} left behind", dir.display());
}

/// Runs `fut` on a fresh runtime inside `ns` (its 127.0.0.1:6443 is that
/// node's API server).
fn in_node<T: Send>(ns: &NetNs, fut: impl Future<Output = T> + Send) -> T {
    ns.run(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(fut)
    })
}

async fn leases(kubeconfig: &Path) -> Api<Lease> {
    Api::namespaced(client(kubeconfig).await, "kube-system")
}

#[test]
fn three_node_stacked_control_plane_shares_leases_through_etcd() {
    vip_lab::require_root!();
    vip_lab::require_controlplane!();
    let lan = Lan::new(3).expect("lan");
    let specs: Vec<NodeSpec<'_>> = lan
        .nodes()
        .map(|n| NodeSpec {
            ns: n.ns(),
            ip: n.v4().expect("node address"),
        })
        .collect();
    let vip = IpAddr::V4(lan.vip_v4(0));
    let cp = ControlPlane::start(&specs, vip, READY).expect("control plane starts");
    eprintln!(
        "3-member control plane ready after {:.1} s",
        cp.ready_after().as_secs_f64()
    );
    let pp = PostParams::default();
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some("vip-lab-3".into()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some("n0".into()),
            ..LeaseSpec::default()
        }),
    };
    // Written through node 0's API server...
    let created = in_node(lan.node(0).ns(), async {
        let api = leases(cp.kubeconfig(0)).await;
        api.create(&pp, &lease).await.expect("create")
    });
    // ...read through each other node's own.
    for i in 1..3 {
        let read = in_node(lan.node(i).ns(), async {
            leases(cp.kubeconfig(i))
                .await
                .get("vip-lab-3")
                .await
                .expect("get")
        });
        assert_eq!(
            read.metadata.resource_version,
            created.metadata.resource_version
        );
    }
    // Node 2 updates; node 1, still holding the old version, gets 409.
    let mut next = created.clone();
    next.spec.as_mut().expect("spec").holder_identity = Some("n2".into());
    in_node(lan.node(2).ns(), async {
        let api = leases(cp.kubeconfig(2)).await;
        api.replace("vip-lab-3", &pp, &next).await.expect("update")
    });
    let mut stale = created;
    stale.spec.as_mut().expect("spec").holder_identity = Some("n1".into());
    let res = in_node(lan.node(1).ns(), async {
        let api = leases(cp.kubeconfig(1)).await;
        api.replace("vip-lab-3", &pp, &stale).await
    });
    match res {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 409, "{status:?}"),
        other => panic!("a stale resourceVersion must get 409, got {other:?}"),
    }
}
