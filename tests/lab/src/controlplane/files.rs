//! The control plane's certificates and kubeconfigs on disk, named as kubeadm
//! names them (one folder per node; the CA is shared).

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use vip_lease_server::{CertSpec, ClientCert, Pki};

use super::Error;
use super::args::{APISERVER_PORT, FIRST_SERVICE_IP, Member};

/// The names in every API server serving certificate (kubeadm's).
const APISERVER_NAMES: [&str; 5] = [
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
    "localhost",
];

/// The cluster's CA (with the super-admin client certificate) and its
/// service-account key pair.
pub struct ClusterPki {
    pki: Pki,
    vip: IpAddr,
    sa_key_pem: String,
    sa_pub_pem: String,
    /// The super-admin client certificate and key (O=system:masters).
    pub admin: (String, String),
}

fn write(path: &Path, content: &str) -> Result<(), Error> {
    std::fs::write(path, content).map_err(|source| Error::Io {
        what: format!("writing {}", path.display()),
        source,
    })
}

fn mkdir(path: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(path).map_err(|source| Error::Io {
        what: format!("creating {}", path.display()),
        source,
    })
}

impl ClusterPki {
    /// A CA, the super-admin certificate and a service-account key.
    pub fn generate(node_ips: &[IpAddr], vip: IpAddr) -> Result<Self, Error> {
        let mut ips = node_ips.to_vec();
        ips.push(vip);
        let pki = Pki::generate(&ips, &[])?;
        let sa = rcgen::KeyPair::generate().map_err(|e| Error::Tls(e.to_string()))?;
        Ok(Self {
            admin: (pki.client_cert_pem.clone(), pki.client_key_pem.clone()),
            sa_key_pem: sa.serialize_pem(),
            sa_pub_pem: sa.public_key_pem(),
            vip,
            pki,
        })
    }

    pub fn ca_pem(&self) -> String {
        self.pki.ca_pem.clone()
    }

    /// Writes `home/pki/` for `me`: ca.crt, etcd-server, etcd-peer,
    /// apiserver-etcd-client, apiserver (.crt/.key), sa.key, sa.pub. Returns
    /// the folder.
    pub fn write_node(&self, home: &Path, me: &Member) -> Result<PathBuf, Error> {
        let dir = home.join("pki");
        mkdir(&dir.join("generated"))?;
        let node = IpAddr::V4(me.ip);
        let local = [IpAddr::V4(Ipv4Addr::LOCALHOST), node];
        let certs = [
            (
                "etcd-server",
                CertSpec {
                    cn: &me.name,
                    ips: &local,
                    dns_names: &["localhost", &me.name],
                    server: true,
                    client: true,
                    ..CertSpec::default()
                },
            ),
            (
                "etcd-peer",
                CertSpec {
                    cn: &me.name,
                    ips: &local,
                    dns_names: &["localhost", &me.name],
                    server: true,
                    client: true,
                    ..CertSpec::default()
                },
            ),
            (
                "apiserver-etcd-client",
                CertSpec {
                    cn: "kube-apiserver-etcd-client",
                    client: true,
                    ..CertSpec::default()
                },
            ),
            (
                "apiserver",
                CertSpec {
                    cn: "kube-apiserver",
                    ips: &[
                        node,
                        self.vip,
                        IpAddr::V4(FIRST_SERVICE_IP),
                        IpAddr::V4(Ipv4Addr::LOCALHOST),
                    ],
                    dns_names: &{
                        let mut n = APISERVER_NAMES.to_vec();
                        n.push(&me.name);
                        n
                    },
                    server: true,
                    ..CertSpec::default()
                },
            ),
        ];
        write(&dir.join("ca.crt"), &self.pki.ca_pem)?;
        for (name, spec) in &certs {
            let (cert, key) = self.pki.issue(spec)?;
            write(&dir.join(format!("{name}.crt")), &cert)?;
            write(&dir.join(format!("{name}.key")), &key)?;
        }
        write(&dir.join("sa.key"), &self.sa_key_pem)?;
        write(&dir.join("sa.pub"), &self.sa_pub_pem)?;
        Ok(dir)
    }

    /// Writes this node's kubeconfigs, one per [`Identity`], each naming this
    /// node's API server (`https://127.0.0.1:6443`, as seen inside its namespace).
    pub fn write_kubeconfigs(&self, home: &Path) -> Result<Kubeconfigs, Error> {
        let server = format!("https://127.0.0.1:{APISERVER_PORT}");
        let mut paths = Vec::new();
        for id in Identity::ALL {
            let (cert, key) = self.pki.issue(&CertSpec {
                cn: id.user(),
                org: id.group(),
                client: true,
                ..CertSpec::default()
            })?;
            let yaml = vip_lease_server::kubeconfig_yaml_for(
                &server,
                "default",
                &self.pki.ca_pem,
                &ClientCert {
                    user: id.user(),
                    cert_pem: &cert,
                    key_pem: &key,
                },
            )?;
            let path = home.join(id.file_name());
            write(&path, &yaml)?;
            paths.push(path);
        }
        Ok(Kubeconfigs(paths))
    }
}

/// Who a kubeconfig authenticates as (kubeadm's client certificates, and the agent's own).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Identity {
    /// `super-admin.conf`: O=system:masters, rights that RBAC cannot take away.
    SuperAdmin,
    /// `admin.conf`: O=kubeadm:cluster-admins, rights only once kubeadm's
    /// ClusterRoleBinding `kubeadm:cluster-admins` exists.
    Admin,
    /// `vip-agent.conf`: user `vip-agent`, the rights of deploy/rbac.yaml.
    Agent,
}

impl Identity {
    pub const ALL: [Identity; 3] = [Identity::SuperAdmin, Identity::Admin, Identity::Agent];

    /// The user name (the certificate's CN).
    pub fn user(self) -> &'static str {
        match self {
            Identity::SuperAdmin => "kubernetes-super-admin",
            Identity::Admin => "kubernetes-admin",
            Identity::Agent => "vip-agent",
        }
    }

    /// The group (the certificate's O).
    pub fn group(self) -> Option<&'static str> {
        match self {
            Identity::SuperAdmin => Some("system:masters"),
            Identity::Admin => Some(ADMINS_GROUP),
            Identity::Agent => None,
        }
    }

    /// The kubeconfig's file name, as kubeadm names it.
    pub fn file_name(self) -> &'static str {
        match self {
            Identity::SuperAdmin => "super-admin.conf",
            Identity::Admin => "admin.conf",
            Identity::Agent => "vip-agent.conf",
        }
    }
}

/// kubeadm's group of cluster admins (bound to `cluster-admin` by kubeadm's
/// ClusterRoleBinding of the same name).
pub const ADMINS_GROUP: &str = "kubeadm:cluster-admins";

/// One node's kubeconfig paths, by [`Identity`].
#[derive(Clone, Debug)]
pub struct Kubeconfigs(Vec<PathBuf>);

impl Kubeconfigs {
    pub fn get(&self, id: Identity) -> &Path {
        let i = Identity::ALL
            .iter()
            .position(|x| *x == id)
            .unwrap_or_default();
        &self.0[i]
    }
}
