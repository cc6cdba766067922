//! What the fast-path tests read: each agent's metrics, the Lease object
//! (holder, transitions, the `vip-agent.io/peers` annotation), the number of
//! Lease writes in a window, and counts of agent log events.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::PoisonError;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use k8s_openapi::api::coordination::v1::Lease;
use serde::{Deserialize, Serialize};

use super::{LEASE_NAME, LEASE_NS, Lab, Member};
use crate::controlplane::{Identity, sum_samples};

/// The agents' metrics port (`--metrics-addr 0.0.0.0:2112`).
const METRICS_PORT: u16 = 2112;
/// The Lease annotation that lists the fast-path members.
pub const PEERS_ANNOTATION: &str = "vip-agent.io/peers";

/// The `vip-agent.io/peers` annotation: the holder and the members
/// (identity -> `ip:port`), holder included.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeersRecord {
    pub holder: String,
    #[serde(default)]
    pub members: BTreeMap<String, String>,
}

/// The Lease as read from an API server.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseSnapshot {
    pub holder: Option<String>,
    pub transitions: i32,
    pub resource_version: String,
    /// The parsed annotation (`None`: absent).
    pub peers: Option<PeersRecord>,
}

impl LeaseSnapshot {
    fn of(lease: &Lease) -> anyhow::Result<Self> {
        let spec = lease.spec.clone().unwrap_or_default();
        let peers = match lease
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(PEERS_ANNOTATION))
        {
            Some(json) => Some(
                serde_json::from_str(json)
                    .with_context(|| format!("annotation {PEERS_ANNOTATION}: {json}"))?,
            ),
            None => None,
        };
        Ok(Self {
            holder: spec.holder_identity.filter(|h| !h.is_empty()),
            transitions: spec.lease_transitions.unwrap_or(0),
            resource_version: lease.metadata.resource_version.clone().unwrap_or_default(),
            peers,
        })
    }
}

/// The number of members in `lease`'s peers annotation, if it has one.
pub(super) fn members_of(lease: &Lease) -> Option<usize> {
    let json = lease.metadata.annotations.as_ref()?.get(PEERS_ANNOTATION)?;
    serde_json::from_str::<PeersRecord>(json)
        .ok()
        .map(|p| p.members.len())
}

impl Lab {
    /// How long, from `from` to `to`, the Lease's peers annotation listed
    /// fewer than every node (`at_from`: the count at `from`), as the lab's
    /// watches saw the writes. A member out of the annotation is on the slow
    /// path: its takeover after the leader dies takes seconds.
    pub fn fast_path_degraded(
        &self,
        from: Instant,
        at_from: Option<usize>,
        to: Instant,
    ) -> Duration {
        let n = self.nodes.len();
        let log = self
            .lease_log
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (mut cur, mut t, mut degraded) = (at_from, from, Duration::ZERO);
        for c in log.iter().filter(|c| c.at >= from && c.at <= to) {
            if cur.is_some_and(|m| m < n) {
                degraded += c.at - t;
            }
            (cur, t) = (c.members, c.at);
        }
        if cur.is_some_and(|m| m < n) {
            degraded += to.saturating_duration_since(t);
        }
        degraded
    }

    /// GET /metrics of node `i`'s agent (inside its namespace).
    pub fn agent_metrics(&self, i: usize) -> anyhow::Result<String> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, METRICS_PORT));
        let raw = self
            .lan
            .node(i)
            .ns()
            .try_run(|| -> std::io::Result<String> {
                let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
                s.set_read_timeout(Some(Duration::from_secs(5)))?;
                s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
                let mut raw = String::new();
                s.read_to_string(&mut raw)?;
                Ok(raw)
            })?;
        let raw = raw.with_context(|| format!("node{i}'s agent /metrics"))?;
        Ok(raw
            .split_once("\r\n\r\n")
            .map_or(String::new(), |(_, b)| b.to_owned()))
    }

    /// The sum of `metric`'s samples with all of `labels` on node `i`'s agent.
    pub fn agent_metric(&self, i: usize, metric: &str, labels: &[&str]) -> anyhow::Result<f64> {
        Ok(sum_samples(&self.agent_metrics(i)?, metric, labels))
    }

    /// [`Self::agent_metric`] summed over every node whose agent answers.
    pub fn cluster_metric(&self, metric: &str, labels: &[&str]) -> f64 {
        (0..self.nodes.len())
            .filter_map(|i| self.agent_metric(i, metric, labels).ok())
            .sum()
    }

    /// Read the Lease (real control plane: through the first node's API
    /// server that answers, from the "api" namespace; embedded: the server's
    /// object).
    pub async fn lease_snapshot(&self) -> anyhow::Result<LeaseSnapshot> {
        if let Some(server) = &self.server {
            let lease = server
                .lease(LEASE_NS, LEASE_NAME)
                .ok_or_else(|| anyhow!("no Lease {LEASE_NS}/{LEASE_NAME}"))?;
            return LeaseSnapshot::of(&lease);
        }
        let cp = self
            .cp
            .as_ref()
            .ok_or_else(|| anyhow!("the lab runs no API server"))?;
        let kubeconfig = cp.kubeconfig_as(0, Identity::SuperAdmin).to_owned();
        let name = self.cfg.implementation.lease_name();
        let mut last = anyhow!("no API server");
        for m in cp.members() {
            let url = format!("https://{}:6443", m.ip);
            let kc = kubeconfig.clone();
            let got = tokio::task::block_in_place(|| {
                self.api_ns.try_run(|| {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?;
                    rt.block_on(async {
                        let api = super::lease_watch::leases(&url, &kc).await?;
                        tokio::time::timeout(Duration::from_secs(2), api.get(name))
                            .await
                            .map_err(|_| anyhow!("GET the Lease through {url}: timed out"))?
                            .map_err(anyhow::Error::from)
                    })
                })
            });
            match got {
                Ok(Ok(lease)) => return LeaseSnapshot::of(&lease),
                Ok(Err(e)) => last = e,
                Err(e) => last = e.into(),
            }
        }
        Err(last.context("reading the Lease"))
    }

    /// Committed writes to the lab's Lease the lab's watches saw since `t`.
    pub fn lease_writes_since(&self, t: Instant) -> usize {
        self.lease_log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|c| c.at >= t)
            .count()
    }

    /// Distinct holders, in order, of the Lease writes since `t` (changes only).
    pub fn holders_since(&self, t: Instant) -> Vec<String> {
        let log = self
            .lease_log
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut out: Vec<String> = Vec::new();
        for c in log.iter().filter(|c| c.at >= t) {
            let h = c.holder.clone().unwrap_or_default();
            if out.last() != Some(&h) {
                out.push(h);
            }
        }
        out
    }

    /// The index of the node named `name`.
    pub fn node_index(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// How many of node `i`'s agent's log lines (since it started) are the
    /// JSON event `name`.
    pub fn count_events(&self, i: usize, name: &str) -> usize {
        match &*self.nodes[i]
            .member
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
        {
            Member::Agent(a) => a
                .log()
                .iter()
                .filter_map(|l| crate::agent_log::parse(l))
                .filter(|e| e.name == name)
                .count(),
            _ => 0,
        }
    }

    /// [`Self::count_events`] over every node.
    pub fn count_events_all(&self, name: &str) -> usize {
        (0..self.nodes.len())
            .map(|i| self.count_events(i, name))
            .sum()
    }

    /// Poll (every 50 ms, up to `timeout`) until the Lease satisfies `ok`;
    /// the last snapshot read.
    pub async fn wait_lease(
        &self,
        timeout: Duration,
        mut ok: impl FnMut(&LeaseSnapshot) -> bool,
    ) -> anyhow::Result<LeaseSnapshot> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = self.lease_snapshot().await;
            if let Ok(s) = &last
                && ok(s)
            {
                return last;
            }
            if Instant::now() >= deadline {
                bail!("the Lease did not reach the state within {timeout:?}; last: {last:?}");
            }
            // A bounded poll: the Lease is read through the API.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
