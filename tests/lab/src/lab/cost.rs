//! What holding the VIP costs the real control plane, in steady state: Lease
//! requests per minute on each node's API server (each agent talks only to
//! its own; kube-vip to the one of its kubeconfig), and etcd writes per
//! minute (every member applies every write: node 0's count is the cluster's).
//!
//! The numbers include what the control plane does by itself (each
//! kube-apiserver renews its own identity Lease in kube-system every 10 s;
//! the lab's observer keeps one watch per API server). keepalived uses no
//! API: its row is that baseline, and `net` columns subtract it.

use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};
use serde::{Deserialize, Serialize};

use super::Lab;
use crate::controlplane::sum_samples;

/// One implementation's steady-state cost.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApiCost {
    /// [`super::Implementation::label`].
    pub implementation: String,
    /// Length of the measurement window.
    pub seconds: f64,
    /// Requests on `leases` per minute, by node (node name, rate), each
    /// node's own API server.
    pub lease_requests_per_minute: Vec<(String, f64)>,
    /// etcd puts per minute (node 0's member).
    pub etcd_writes_per_minute: f64,
}

impl ApiCost {
    /// The sum over the nodes.
    pub fn total_lease_requests_per_minute(&self) -> f64 {
        self.lease_requests_per_minute.iter().map(|(_, r)| r).sum()
    }
}

/// `(lease requests per node, etcd puts)` counters now.
fn counters(lab: &Lab) -> anyhow::Result<(Vec<f64>, f64)> {
    let cp = lab
        .cp
        .as_ref()
        .ok_or_else(|| anyhow!("the API cost needs the real control plane"))?;
    let mut leases = Vec::new();
    for i in 0..lab.nodes.len() {
        let ns = lab.lan.node(i).ns();
        let m = cp
            .apiserver_metrics(ns)
            .with_context(|| format!("node{i}'s kube-apiserver /metrics"))?;
        leases.push(sum_samples(
            &m,
            "apiserver_request_total",
            &["resource=\"leases\""],
        ));
    }
    let etcd = cp
        .etcd_metrics(lab.lan.node(0).ns())
        .context("node0's etcd /metrics")?;
    Ok((leases, sum_samples(&etcd, "etcd_mvcc_put_total", &[])))
}

impl Lab {
    /// Wait for a steady leader, then count for `window`.
    pub async fn api_cost(&self, window: Duration) -> anyhow::Result<ApiCost> {
        self.wait_for_leader(Duration::from_secs(60)).await?;
        let before = tokio::task::block_in_place(|| counters(self))?;
        let started = Instant::now();
        // The measurement window itself: nothing to wait for but time.
        tokio::time::sleep(window).await;
        let after = tokio::task::block_in_place(|| counters(self))?;
        let minutes = started.elapsed().as_secs_f64() / 60.0;
        Ok(ApiCost {
            implementation: self.cfg.implementation.label(),
            seconds: minutes * 60.0,
            lease_requests_per_minute: self
                .node_names()
                .into_iter()
                .zip(before.0.iter().zip(&after.0))
                .map(|(n, (b, a))| (n, (a - b) / minutes))
                .collect(),
            etcd_writes_per_minute: (after.1 - before.1) / minutes,
        })
    }
}

/// The markdown table of `costs`; `net` columns subtract the keepalived
/// row (the control plane alone), when there is one.
pub fn markdown(costs: &[ApiCost]) -> String {
    if costs.is_empty() {
        return String::new();
    }
    let base = costs
        .iter()
        .find(|c| c.implementation.starts_with("keepalived"));
    let mut s = String::from(
        "## Steady-state cost on the real control plane\n\n\
         Lease requests per minute on each node's kube-apiserver, and etcd writes per minute, \
         with a steady leader. Raw numbers include the control plane's own Lease renewals and \
         the lab's watches; keepalived uses no API, so its row is that baseline and `net` \
         subtracts it.\n\n\
         | implementation | window | Lease requests/min per node | total | net | etcd writes/min | net |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for c in costs {
        let per_node: Vec<String> = c
            .lease_requests_per_minute
            .iter()
            .map(|(n, r)| format!("{n} {r:.0}"))
            .collect();
        let net =
            |v: f64, b: Option<f64>| b.map_or_else(|| "-".into(), |b| format!("{:.0}", v - b));
        s.push_str(&format!(
            "| {} | {:.0} s | {} | {:.0} | {} | {:.0} | {} |\n",
            c.implementation,
            c.seconds,
            per_node.join(", "),
            c.total_lease_requests_per_minute(),
            net(
                c.total_lease_requests_per_minute(),
                base.map(ApiCost::total_lease_requests_per_minute)
            ),
            c.etcd_writes_per_minute,
            net(
                c.etcd_writes_per_minute,
                base.map(|b| b.etcd_writes_per_minute)
            ),
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_subtracts_the_keepalived_baseline() {
        let c = |name: &str, per: f64, etcd: f64| ApiCost {
            implementation: name.into(),
            seconds: 30.0,
            lease_requests_per_minute: vec![("node0".into(), per), ("node1".into(), per)],
            etcd_writes_per_minute: etcd,
        };
        let md = markdown(&[
            c("vip-agent 3s/2s/500ms", 70.0, 140.0),
            c("keepalived advert 1s", 10.0, 18.0),
        ]);
        assert!(
            md.contains(
                "| vip-agent 3s/2s/500ms | 30 s | node0 70, node1 70 | 140 | 120 | 140 | 122 |"
            ),
            "{md}"
        );
        assert!(
            md.contains("| keepalived advert 1s | 30 s | node0 10, node1 10 | 20 | 0 | 18 | 0 |")
        );
        assert_eq!(markdown(&[]), "");
    }
}
