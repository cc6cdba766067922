//! Starting the lab, its accessors, and shutting it down.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};

use vip_lease_server::{EventType, LeaseServer, LeaseServerHandle, LeaseServerOptions};

use super::host::{TaskGuard, WorkDir, attach_pass_programs, cleanup_stale, plug_api, with_agent};
use super::lease_watch::LeaseWatch;
use super::probe::{ClientView, Prober, SERVICE_PORT};
use super::record;
use super::service::VipService;
use super::{
    API_HOST, API_PORT, ControlPlaneKind, Implementation, LAB_COUNTER, LEASE_NAME, Lab, LabConfig,
    LeaseChange, Member, Node,
};
use crate::agent::PinDirGuard;
use crate::controlplane::{ControlPlane, Identity, NodeSpec, objects};
use crate::topology::{LAN_IFNAME, Lan};

impl Lab {
    /// Build the topology, start the Lease server, the services, the probes
    /// and the agents (or keepalived); returns once every member runs.
    pub async fn start(cfg: LabConfig) -> anyhow::Result<Lab> {
        Self::start_with_agent_bin(cfg, None).await
    }

    /// [`Lab::start`] with the agents running `bin` (default: [`crate::agent::agent_bin`]).
    pub async fn start_with_agent_bin(cfg: LabConfig, bin: Option<PathBuf>) -> anyhow::Result<Lab> {
        crate::skip::ensure_root()?;
        cleanup_stale()?;
        let tag = LAB_COUNTER.fetch_add(1, Ordering::Relaxed);
        let lan = Lan::new(cfg.nodes).context("building the LAN")?;
        let vip4 = lan.vip_v4(0);
        let vip6 = lan.vip_v6(0);
        let client_ip = lan
            .client()
            .v4()
            .ok_or_else(|| anyhow!("client without IPv4"))?;
        let api_ip = Ipv4Addr::from((u32::from(client_ip) & 0xffff_ff00) | u32::from(API_HOST));
        let api_ns = plug_api(&lan, api_ip).context("plugging the api namespace")?;
        let pass_programs = match &cfg.implementation {
            Implementation::Agent { xdp_mode, .. } if xdp_mode == "native" => {
                attach_pass_programs(&lan)?
            }
            _ => Vec::new(),
        };

        let workdir =
            WorkDir(std::env::temp_dir().join(format!("vip-lab-{}-{tag}", std::process::id())));
        std::fs::create_dir_all(&workdir.0)
            .with_context(|| format!("creating {}", workdir.0.display()))?;
        let kubeconfig = workdir.0.join("kubeconfig");

        let real = cfg.control_plane == ControlPlaneKind::Real;
        if !real && matches!(cfg.implementation, Implementation::KubeVip { .. }) {
            bail!("kube-vip needs the real control plane (it talks to the node's own API server)");
        }
        let cp = if real {
            Some(start_control_plane(&lan, vip4.into()).await?)
        } else {
            None
        };
        let (server, lease_task, lease_log) =
            if !real && matches!(cfg.implementation, Implementation::Agent { .. }) {
                let listener = api_ns
                    .try_run(|| std::net::TcpListener::bind((api_ip, API_PORT)))?
                    .context("binding the Lease server in the api namespace")?;
                let server = LeaseServer::start_with_listener(
                    LeaseServerOptions {
                        advertise: Some(api_ip.into()),
                        ..LeaseServerOptions::default()
                    },
                    listener,
                )
                .await
                .context("starting the Lease server")?;
                server.write_kubeconfig(&kubeconfig)?;
                let log = Arc::new(Mutex::new(Vec::new()));
                let mut rx = server.subscribe();
                let sink = log.clone();
                let task = tokio::spawn(async move {
                    while let Ok(ev) = rx.recv().await {
                        if ev.name != LEASE_NAME {
                            continue;
                        }
                        let holder = ev
                            .object
                            .spec
                            .as_ref()
                            .and_then(|s| s.holder_identity.clone())
                            .filter(|h| !h.is_empty() && ev.kind != EventType::Deleted);
                        sink.lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .push(LeaseChange {
                                at: Instant::now(),
                                holder,
                                kind: ev.kind,
                                members: super::peers::members_of(&ev.object),
                            });
                    }
                });
                (Some(server), Some(TaskGuard(task)), log)
            } else {
                (None, None, Arc::new(Mutex::new(Vec::new())))
            };

        let lease_watch = match &cp {
            Some(cp) => {
                let ips: Vec<Ipv4Addr> = cp.members().iter().map(|m| m.ip).collect();
                Some(LeaseWatch::start(
                    &api_ns,
                    &ips,
                    cp.kubeconfig_as(0, Identity::SuperAdmin),
                    cfg.implementation.lease_name(),
                    lease_log.clone(),
                )?)
            }
            None => None,
        };
        let agent_bin = match cfg.implementation {
            Implementation::Agent { .. } => Some(match bin {
                Some(b) => b,
                None => crate::agent::agent_bin()?,
            }),
            Implementation::Keepalived { .. } | Implementation::KubeVip { .. } => None,
        };
        let v6 = lan.client().v6().map(|c| (c, vip6));
        let prober = Prober::start(
            lan.client().ns(),
            LAN_IFNAME,
            client_ip,
            vip4,
            v6,
            cfg.probe_interval,
            Instant::now(),
        )?;
        let mut nodes = Vec::with_capacity(cfg.nodes);
        for i in 0..cfg.nodes {
            let name = format!("node{i}");
            let service = VipService::start(lan.node(i).ns(), vip4, SERVICE_PORT, &name)?;
            nodes.push(Node {
                pins: PinDirGuard::new(&format!("{tag}-{name}")),
                name,
                member: Mutex::new(Member::Down),
                log_seen: 0,
                _service: service,
            });
        }
        let mut lab = Lab {
            cfg,
            prober,
            nodes,
            _lease_task: lease_task,
            _lease_watch: lease_watch,
            server,
            cp,
            _pass_programs: pass_programs,
            api_ns,
            lan,
            workdir,
            lease_log,
            kubeconfig,
            agent_bin,
            vip4,
            vip6,
            tag,
        };
        for i in 0..lab.nodes.len() {
            lab.spawn_member(i)?;
        }
        for i in 0..lab.nodes.len() {
            lab.wait_member_started(i).await?;
        }
        Ok(lab)
    }

    /// The real control plane, if the lab runs one.
    pub fn control_plane(&self) -> Option<&ControlPlane> {
        self.cp.as_ref()
    }

    /// The lab's configuration.
    pub fn config(&self) -> &LabConfig {
        &self.cfg
    }

    /// The IPv4 VIP.
    pub fn vip_v4(&self) -> Ipv4Addr {
        self.vip4
    }

    /// The IPv6 VIP.
    pub fn vip_v6(&self) -> Ipv6Addr {
        self.vip6
    }

    /// The topology.
    pub fn lan(&self) -> &Lan {
        &self.lan
    }

    /// The Lease server (agents only).
    pub fn lease_server(&self) -> Option<&LeaseServerHandle> {
        self.server.as_ref()
    }

    /// The client's live view (updated after every probe).
    pub fn client_view(&self) -> tokio::sync::watch::Receiver<ClientView> {
        self.prober.view()
    }

    /// Take what the probes recorded since the last take (times since [`Self::probe_time`]'s epoch).
    pub fn take_probes(&self) -> (Vec<record::Probe>, Vec<record::TcpAttempt>) {
        self.prober.take()
    }

    /// `t` on the probes' clock (what [`Self::take_probes`] times are relative to).
    pub fn probe_time(&self, t: Instant) -> Duration {
        t.saturating_duration_since(self.prober.epoch())
    }

    /// Names of every namespace of the lab.
    pub fn namespace_names(&self) -> Vec<String> {
        let mut v = self.lan.namespace_names();
        v.push(self.api_ns.name().to_owned());
        v
    }

    /// Pin directories of the agents.
    pub fn pin_dirs(&self) -> Vec<PathBuf> {
        self.nodes
            .iter()
            .map(|n| n.pins.path().to_owned())
            .collect()
    }

    /// Node names (node0, node1, ...).
    pub fn node_names(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.name.clone()).collect()
    }

    /// Node names with the MAC of their LAN interface.
    pub fn node_macs(&self) -> Vec<(String, [u8; 6])> {
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.clone(), self.lan.node(i).mac()))
            .collect()
    }

    /// Stop everything: probes, members (gracefully, then killed), the Lease
    /// server, the namespaces, the pins and the work directory.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        self.prober.stop();
        let mut errors = Vec::new();
        for i in 0..self.nodes.len() {
            match std::mem::replace(self.slot(i), Member::Down) {
                Member::Agent(agent) => {
                    let (_agent, r) = with_agent(agent, |a| a.stop(Duration::from_secs(5))).await?;
                    if let Err(e) = r {
                        errors.push(e.to_string());
                    }
                }
                Member::Keepalived(k) => {
                    let (_k, r) = tokio::task::spawn_blocking(move || {
                        let mut k = k;
                        let r = k.stop(Duration::from_secs(5));
                        (k, r)
                    })
                    .await?;
                    if let Err(e) = r {
                        errors.push(e.to_string());
                    }
                }
                Member::KubeVip(mut k) => {
                    let (_k, r) = tokio::task::spawn_blocking(move || {
                        let r = k.stop(Duration::from_secs(5));
                        (k, r)
                    })
                    .await?;
                    if let Err(e) = r {
                        errors.push(e.to_string());
                    }
                }
                Member::Down => {}
            }
        }
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
        drop(self);
        if errors.is_empty() {
            Ok(())
        } else {
            bail!("shutdown: {}", errors.join("; "))
        }
    }

    /// The tag of this lab in the names of its pins and work directory.
    pub fn tag(&self) -> u32 {
        self.tag
    }
}

/// Bound on the start of the control plane (every /readyz; a cold start on 2
/// busy cores takes seconds).
const CONTROL_PLANE_READY: Duration = Duration::from_secs(120);

/// Start etcd + kube-apiserver on every node, then do what kubeadm and the
/// operator do: kubeadm's `kubeadm:cluster-admins` binding, and the agent's
/// RBAC from deploy/rbac.yaml (as super-admin, through node 0's API server).
pub async fn start_control_plane(lan: &Lan, vip: std::net::IpAddr) -> anyhow::Result<ControlPlane> {
    let specs = (0..lan.nodes().len())
        .map(|i| {
            let n = lan.node(i);
            let ip = n.v4().ok_or_else(|| anyhow!("node {i} without IPv4"))?;
            Ok((i, ip))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let cp = tokio::task::block_in_place(|| {
        let nodes: Vec<NodeSpec<'_>> = specs
            .iter()
            .map(|(i, ip)| NodeSpec {
                ns: lan.node(*i).ns(),
                ip: *ip,
            })
            .collect();
        ControlPlane::start(&nodes, vip, CONTROL_PLANE_READY)
    })
    .context("starting the control plane (etcd + kube-apiserver per node)")?;
    let rbac = objects::deploy_rbac_yaml().context("reading deploy/rbac.yaml")?;
    let admin = cp.kubeconfig_as(0, Identity::SuperAdmin).to_owned();
    tokio::task::block_in_place(|| {
        objects::in_ns(lan.node(0).ns(), async move {
            let client = objects::client(&admin).await?;
            objects::create_cluster_admins_binding(&client).await?;
            objects::apply_rbac_manifest(&client, &rbac).await
        })
    })
    .context("kubeadm's binding and deploy/rbac.yaml")?;
    Ok(cp)
}
