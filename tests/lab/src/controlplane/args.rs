//! The command lines of etcd and kube-apiserver, as kubeadm writes them into
//! its static pod manifests (stacked etcd: one member per control plane node).

use std::net::Ipv4Addr;
use std::path::Path;

/// etcd's client port (kubeadm's).
pub const ETCD_CLIENT_PORT: u16 = 2379;
/// etcd's peer port.
pub const ETCD_PEER_PORT: u16 = 2380;
/// etcd's plain-HTTP metrics port (on 127.0.0.1, kubeadm's).
pub const ETCD_METRICS_PORT: u16 = 2381;
/// kube-apiserver's secure port.
pub const APISERVER_PORT: u16 = 6443;
/// kube-apiserver's `--shutdown-delay-duration`.
pub const SHUTDOWN_DELAY: std::time::Duration = std::time::Duration::from_secs(5);
/// The service network (kubeadm's default); its first address is in the
/// serving certificate.
pub const SERVICE_CIDR: &str = "10.96.0.0/12";
pub const FIRST_SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);

/// One control plane node: its name and address.
#[derive(Clone, Debug)]
pub struct Member {
    pub name: String,
    pub ip: Ipv4Addr,
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// etcd for `me` in a cluster of `all`; `pki` holds ca.crt and
/// etcd-{server,peer}.{crt,key}, `data` is its data dir.
pub fn etcd(me: &Member, all: &[Member], pki: &Path, data: &Path) -> Vec<String> {
    let ip = me.ip;
    let cluster: Vec<String> = all
        .iter()
        .map(|m| format!("{}=https://{}:{ETCD_PEER_PORT}", m.name, m.ip))
        .collect();
    vec![
        format!("--name={}", me.name),
        format!("--data-dir={}", s(data)),
        format!(
            "--listen-client-urls=https://127.0.0.1:{ETCD_CLIENT_PORT},https://{ip}:{ETCD_CLIENT_PORT}"
        ),
        format!("--advertise-client-urls=https://{ip}:{ETCD_CLIENT_PORT}"),
        format!("--listen-peer-urls=https://{ip}:{ETCD_PEER_PORT}"),
        format!("--initial-advertise-peer-urls=https://{ip}:{ETCD_PEER_PORT}"),
        format!("--initial-cluster={}", cluster.join(",")),
        "--initial-cluster-state=new".into(),
        "--initial-cluster-token=vip-lab".into(),
        format!("--listen-metrics-urls=http://127.0.0.1:{ETCD_METRICS_PORT}"),
        "--snapshot-count=10000".into(),
        "--client-cert-auth=true".into(),
        format!("--trusted-ca-file={}", s(&pki.join("ca.crt"))),
        format!("--cert-file={}", s(&pki.join("etcd-server.crt"))),
        format!("--key-file={}", s(&pki.join("etcd-server.key"))),
        "--peer-client-cert-auth=true".into(),
        format!("--peer-trusted-ca-file={}", s(&pki.join("ca.crt"))),
        format!("--peer-cert-file={}", s(&pki.join("etcd-peer.crt"))),
        format!("--peer-key-file={}", s(&pki.join("etcd-peer.key"))),
    ]
}

/// kube-apiserver for `me`, talking to its node-local etcd member; `pki`
/// holds ca.crt, apiserver.{crt,key}, apiserver-etcd-client.{crt,key} and sa.key.
pub fn apiserver(me: &Member, pki: &Path) -> Vec<String> {
    let f = |name: &str| s(&pki.join(name));
    vec![
        format!("--advertise-address={}", me.ip),
        "--allow-privileged=true".into(),
        "--authorization-mode=Node,RBAC".into(),
        format!("--client-ca-file={}", f("ca.crt")),
        "--enable-admission-plugins=NodeRestriction".into(),
        "--enable-bootstrap-token-auth=true".into(),
        format!("--etcd-cafile={}", f("ca.crt")),
        format!("--etcd-certfile={}", f("apiserver-etcd-client.crt")),
        format!("--etcd-keyfile={}", f("apiserver-etcd-client.key")),
        format!("--etcd-servers=https://127.0.0.1:{ETCD_CLIENT_PORT}"),
        format!("--secure-port={APISERVER_PORT}"),
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
        format!("--service-account-key-file={}", f("sa.pub")),
        format!("--service-account-signing-key-file={}", f("sa.key")),
        format!("--service-cluster-ip-range={SERVICE_CIDR}"),
        format!("--tls-cert-file={}", f("apiserver.crt")),
        format!("--tls-private-key-file={}", f("apiserver.key")),
        // Where it would write self-signed certificates (it has its own).
        format!("--cert-dir={}", f("generated")),
        "--profiling=false".into(),
        // On SIGTERM, /readyz fails at once while the server keeps serving for
        // this long before it closes its listener (kubeadm leaves it at 0; a
        // load-balanced or VIP-fronted API server wants it above the health
        // check's detection time so that a draining node can hand over).
        format!("--shutdown-delay-duration={}s", SHUTDOWN_DELAY.as_secs()),
    ]
}
