//! A real Kubernetes control plane in the lab: in each node namespace an etcd
//! member and a kube-apiserver, laid out as kubeadm does (stacked etcd with
//! client and peer TLS; the API server on the node address and 127.0.0.1:6443,
//! `--authorization-mode=Node,RBAC`, service-account keys, a CA and serving
//! certificates with `kubernetes`, the node address and the VIP), plus a
//! super-admin kubeconfig (O=system:masters).
//!
//! The binaries are built by `cargo xtask setup` from `tests/controlplane/`
//! ([`ebpf_build::controlplane`]). Everything (processes, the temporary
//! folder with data, certificates and logs) goes away on drop, also when a
//! test panics; the namespaces belong to the caller's topology. If the test
//! process is killed, the next start's `cleanup_stale` kills the processes
//! left in its namespaces and removes its folder.

pub mod args;
pub mod faults;
mod files;
pub mod objects;
pub mod process;
pub mod readyz;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use args::Member;
pub use faults::{Component, sum_samples};
pub use files::{ADMINS_GROUP, Identity, Kubeconfigs};
use process::Process;

use crate::netns::NetNs;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Binaries(#[from] ebpf_build::controlplane::Error),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("certificates: {0}")]
    Pki(#[from] vip_lease_server::Error),
    #[error("TLS client: {0}")]
    Tls(String),
    #[error("{name} exited ({status}); last lines:\n{tail}")]
    Exited {
        name: String,
        status: std::process::ExitStatus,
        tail: String,
    },
    #[error(
        "https://{addr}/readyz not ready within {timeout:?} (last: {last}); kube-apiserver's last lines:\n{tail}"
    )]
    NotReady {
        addr: SocketAddr,
        timeout: Duration,
        last: String,
        tail: String,
    },
    #[error(transparent)]
    Netns(#[from] crate::netns::Error),
    #[error("{0} nodes: use 1 or more")]
    NoNodes(usize),
}

/// A node to run a control plane member on: its namespace and address.
pub struct NodeSpec<'a> {
    pub ns: &'a NetNs,
    pub ip: Ipv4Addr,
}

/// The processes of one node.
struct NodeProcs {
    // Drop order: the API server before its etcd member.
    apiserver: Process,
    etcd: Process,
}

/// A temporary folder, removed on drop.
#[derive(Debug)]
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<Self, Error> {
        static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = std::env::temp_dir();
        // Folders of killed runs (their pid gone) go first.
        for e in std::fs::read_dir(&tmp).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let pid = name
                .strip_prefix("vip-lab-cp-")
                .and_then(|r| r.split('-').next());
            if pid.is_some_and(|p| !Path::new("/proc").join(p).exists()) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
        let dir = tmp.join(format!("vip-lab-cp-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
            what: format!("creating {}", dir.display()),
            source,
        })?;
        Ok(Self(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("VIP_LAB_KEEP_CONTROLPLANE").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A running control plane (one etcd member and one kube-apiserver per node).
pub struct ControlPlane {
    // Field order is drop order: processes first, then their files.
    nodes: Vec<NodeProcs>,
    members: Vec<Member>,
    kubeconfigs: Vec<Kubeconfigs>,
    client: std::sync::Arc<rustls::ClientConfig>,
    ready_after: Duration,
    dir: TempDir,
}

impl ControlPlane {
    /// Starts etcd on every node, then kube-apiserver on every node, and waits
    /// until each API server's `/readyz` answers 200 (within `timeout` each).
    /// `vip` goes into the serving certificates.
    pub fn start(nodes: &[NodeSpec<'_>], vip: IpAddr, timeout: Duration) -> Result<Self, Error> {
        if nodes.is_empty() {
            return Err(Error::NoNodes(0));
        }
        let started = std::time::Instant::now();
        // A killed earlier run may have left its etcd and kube-apiserver
        // (holding nothing here, but running): cleanup_stale kills them.
        crate::netns::cleanup_stale()?;
        let (etcd_bin, apiserver_bin) = ebpf_build::controlplane::binaries()?;
        let dir = TempDir::new()?;
        let members: Vec<Member> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| Member {
                name: format!("n{i}"),
                ip: n.ip,
            })
            .collect();
        let ips: Vec<IpAddr> = members.iter().map(|m| IpAddr::V4(m.ip)).collect();
        let pki = files::ClusterPki::generate(&ips, vip)?;
        let mut procs = Vec::new();
        let mut kubeconfigs = Vec::new();
        let mut etcds = Vec::new();
        for (node, me) in nodes.iter().zip(&members) {
            let home = dir.0.join(&me.name);
            let pki_dir = pki.write_node(&home, me)?;
            let args = args::etcd(me, &members, &pki_dir, &home.join("etcd"));
            let name = format!("etcd-{}", me.name);
            etcds.push(Process::spawn(
                &name,
                node.ns,
                &etcd_bin,
                &args,
                home.join("etcd.log"),
            )?);
            kubeconfigs.push(pki.write_kubeconfigs(&home)?);
        }
        for ((node, me), etcd) in nodes.iter().zip(&members).zip(etcds) {
            let home = dir.0.join(&me.name);
            let args = args::apiserver(me, &home.join("pki"));
            let name = format!("kube-apiserver-{}", me.name);
            let apiserver = Process::spawn(
                &name,
                node.ns,
                &apiserver_bin,
                &args,
                home.join("kube-apiserver.log"),
            )?;
            procs.push(NodeProcs { apiserver, etcd });
        }
        let client = readyz::client_config(&pki.ca_pem(), &pki.admin.0, &pki.admin.1)?;
        for (node, p) in nodes.iter().zip(procs.iter_mut()) {
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, args::APISERVER_PORT));
            readyz::wait_ready(
                node.ns,
                &client,
                addr,
                &mut [&mut p.etcd, &mut p.apiserver],
                timeout,
            )?;
        }
        Ok(Self {
            nodes: procs,
            members,
            kubeconfigs,
            client,
            ready_after: started.elapsed(),
            dir,
        })
    }

    /// The members (name, address), in node order.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// The super-admin kubeconfig of node `i` (server `https://127.0.0.1:6443`,
    /// that is, the node-local API server when used inside node `i`'s namespace).
    pub fn kubeconfig(&self, i: usize) -> &Path {
        self.kubeconfigs[i].get(Identity::SuperAdmin)
    }

    /// Node `i`'s kubeconfig for `id` (server `https://127.0.0.1:6443`).
    pub fn kubeconfig_as(&self, i: usize, id: Identity) -> &Path {
        self.kubeconfigs[i].get(id)
    }

    /// A TLS client configuration with the super-admin certificate, trusting
    /// the cluster CA (for [`readyz::get`]).
    pub fn tls_client(&self) -> std::sync::Arc<rustls::ClientConfig> {
        self.client.clone()
    }

    /// The process ids of every etcd member and API server.
    pub fn pids(&self) -> Vec<u32> {
        self.nodes
            .iter()
            .flat_map(|p| [p.etcd.pid(), p.apiserver.pid()])
            .collect()
    }

    /// How long `start` took until every `/readyz` said ok.
    pub fn ready_after(&self) -> Duration {
        self.ready_after
    }

    /// The temporary folder (data, certificates, logs).
    pub fn dir(&self) -> &Path {
        &self.dir.0
    }

    /// The last `n` log lines of node `i`'s etcd and kube-apiserver.
    pub fn tail(&self, i: usize, n: usize) -> String {
        let p = &self.nodes[i];
        format!(
            "--- {}:\n{}\n--- {}:\n{}",
            p.etcd.name(),
            p.etcd.tail(n),
            p.apiserver.name(),
            p.apiserver.tail(n)
        )
    }
}
