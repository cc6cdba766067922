//! Waiting for the lab's states: a leader answering ARP and TCP, the Lease
//! holder, followers watching, a new leader after a fault.

use std::sync::PoisonError;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};

use vip_lease_server::LeaseServerHandle;

use vip_common::events;

use super::{Implementation, LEASE_NAME, LEASE_NS, Lab, Member};
use crate::packet_socket::format_mac;

impl Lab {
    /// Index of the node whose MAC answers ARP for the VIP, steadily (at
    /// least 5 windows in a row, alone), as the client's probes see it.
    pub async fn wait_for_leader(&self, timeout: Duration) -> anyhow::Result<usize> {
        let macs: Vec<[u8; 6]> = self.node_macs().into_iter().map(|(_, m)| m).collect();
        let mut view = self.prober.view();
        let r = tokio::time::timeout(
            timeout,
            view.wait_for(|v| v.arp_streak >= 5 && v.arp_mac.is_some_and(|m| macs.contains(&m))),
        )
        .await;
        match r {
            Ok(Ok(v)) => {
                let mac = v.arp_mac.expect("checked");
                self.node_of_mac(mac)
                    .ok_or_else(|| anyhow!("unknown MAC {}", format_mac(&mac)))
            }
            Ok(Err(_)) => bail!("the probes stopped"),
            Err(_) => bail!(
                "no node answered ARP for {} steadily within {timeout:?} (client view: {:?})",
                self.vip4,
                *self.prober.view().borrow()
            ),
        }
    }

    /// Wait until the client's TCP connects are answered by `name`.
    pub(super) async fn wait_tcp_from(&self, name: &str, timeout: Duration) -> anyhow::Result<()> {
        let mut view = self.prober.view();
        tokio::time::timeout(
            timeout,
            view.wait_for(|v| v.tcp_streak >= 2 && v.tcp_node.as_deref() == Some(name)),
        )
        .await
        .map_err(|_| {
            anyhow!(
                "TCP to the VIP not answered by {name} within {timeout:?} (client view: {:?})",
                *self.prober.view().borrow()
            )
        })?
        .map_err(|_| anyhow!("the probes stopped"))?;
        Ok(())
    }

    /// The Lease holder as the lab last saw it (embedded: the server's
    /// object; real: the last change the lab's watches reported).
    pub fn lease_holder(&self) -> Option<String> {
        if let Some(server) = &self.server {
            return server
                .lease(LEASE_NS, LEASE_NAME)
                .and_then(|l| l.spec)
                .and_then(|s| s.holder_identity)
                .filter(|h| !h.is_empty());
        }
        self.lease_log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .last()
            .and_then(|c| c.holder.clone())
    }

    /// Wait until the Lease holder is `name`.
    pub async fn wait_holder(&self, name: &str, timeout: Duration) -> anyhow::Result<()> {
        if let Some(server) = &self.server {
            server
                .wait_for_lease(LEASE_NS, LEASE_NAME, timeout, |l| {
                    l.and_then(|l| l.spec.as_ref())
                        .and_then(|s| s.holder_identity.as_deref())
                        == Some(name)
                })
                .await
                .ok_or_else(|| {
                    anyhow!("the Lease holder did not become {name} within {timeout:?}")
                })?;
            return Ok(());
        }
        // No Lease to wait for: keepalived, or no API server at all.
        if self.cp.is_none() || matches!(self.cfg.implementation, Implementation::Keepalived { .. })
        {
            return Ok(());
        }
        let deadline = Instant::now() + timeout;
        while self.lease_holder().as_deref() != Some(name) {
            if Instant::now() >= deadline {
                bail!(
                    "the Lease holder did not become {name} within {timeout:?} (last seen: {:?})",
                    self.lease_holder()
                );
            }
            // Bounded poll of the watches' log (the watch threads have no
            // async notification to await).
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    /// The holder named by the next Lease change (after now) the lab's
    /// watches report, within `timeout`.
    pub(super) async fn next_lease_write(&self, timeout: Duration) -> Option<String> {
        let from = self
            .lease_log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        let deadline = Instant::now() + timeout;
        loop {
            let found = self
                .lease_log
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .skip(from)
                .find_map(|c| c.holder.clone());
            if found.is_some() {
                return found;
            }
            if Instant::now() >= deadline {
                return None;
            }
            // Bounded poll of the watches' log.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Real control plane: whether node `i`'s agent has a watch open now
    /// (its last `watch_opened` comes after its last change of role; an
    /// agent build without JSON events: its API server holds two watches on
    /// Leases, the lab's observer's and the agent's).
    fn agent_watching(&self, i: usize) -> bool {
        let member = self.nodes[i]
            .member
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let Member::Agent(a) = &*member else {
            return true;
        };
        let log = a.log();
        drop(member);
        if !log.iter().any(|l| l.trim_start().starts_with('{')) {
            return self.lease_watches(i) >= 2.0;
        }
        let mut opened = None;
        let mut role = None;
        for (k, line) in log.iter().enumerate() {
            match crate::agent_log::parse(line).map(|e| e.name) {
                Some(n) if n == events::WATCH_OPENED => opened = Some(k),
                Some(n) if n == events::FOLLOWING || n == events::LEASE_ACQUIRED => role = Some(k),
                _ => {}
            }
        }
        opened.is_some() && opened > role
    }

    /// Watches on Leases open on node `i`'s kube-apiserver now (0 if it
    /// cannot be asked).
    fn lease_watches(&self, i: usize) -> f64 {
        self.cp
            .as_ref()
            .and_then(|cp| cp.apiserver_metrics(self.lan.node(i).ns()).ok())
            .map_or(0.0, |m| {
                crate::controlplane::sum_samples(
                    &m,
                    "apiserver_longrunning_requests",
                    &["resource=\"leases\"", "verb=\"WATCH\""],
                )
            })
    }

    /// Wait until every agent but `except` holds a watch on the Lease (so a
    /// release is seen at once). Bounded poll of the server's counters: the
    /// server has no event for "a watch was opened".
    pub(super) async fn wait_watching(
        &self,
        except: Option<usize>,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let Some(server) = &self.server else {
            if self.cp.is_none() {
                return Ok(());
            }
            for i in 0..self.nodes.len() {
                if Some(i) == except {
                    continue;
                }
                while !self.agent_watching(i) {
                    if Instant::now() >= deadline {
                        bail!(
                            "{} opened no watch on the Lease within {timeout:?}",
                            self.nodes[i].name
                        );
                    }
                    // Bounded poll of the agent's log (read by another thread).
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            return Ok(());
        };
        for (i, n) in self.nodes.iter().enumerate() {
            if Some(i) == except {
                continue;
            }
            let open_watches = |s: &LeaseServerHandle| {
                s.requests().iter().rev().take(2000).any(|r| {
                    r.identity.as_deref() == Some(&n.name)
                        && r.verb == vip_lease_server::Verb::Watch
                })
            };
            while !open_watches(server) {
                if Instant::now() >= deadline {
                    bail!("{} opened no watch on the Lease within {timeout:?}", n.name);
                }
                // Bounded poll interval (no event exists for this).
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(())
    }

    /// Wait until the client sees a node other than `old` answer ARP steadily
    /// and TCP; returns its index.
    pub(super) async fn wait_new_leader(
        &self,
        old: Option<usize>,
        timeout: Duration,
    ) -> anyhow::Result<usize> {
        let old_mac = old.map(|i| self.lan.node(i).mac());
        let macs: Vec<(String, [u8; 6])> = self.node_macs();
        let mut view = self.prober.view();
        let found = tokio::time::timeout(
            timeout,
            view.wait_for(|v| {
                let Some(m) = v.arp_mac else { return false };
                if Some(m) == old_mac || v.arp_streak < 3 {
                    return false;
                }
                let name = macs
                    .iter()
                    .find(|(_, mm)| *mm == m)
                    .map(|(n, _)| n.as_str());
                name.is_some() && v.tcp_node.as_deref() == name
            }),
        )
        .await;
        match found {
            Ok(Ok(v)) => self
                .node_of_mac(v.arp_mac.expect("checked"))
                .ok_or_else(|| anyhow!("unknown MAC")),
            Ok(Err(_)) => bail!("the probes stopped"),
            Err(_) => bail!(
                "no new leader seen by the client within {timeout:?} (client view: {:?})",
                *self.prober.view().borrow()
            ),
        }
    }

    /// Bound on a failover: lease + retry + health detection + slack.
    pub(super) fn recovery_bound(&self) -> Duration {
        match &self.cfg.implementation {
            Implementation::Agent { lease, retry, .. } => {
                *lease + *retry * 2 + Duration::from_secs(8)
            }
            Implementation::Keepalived { advert } => *advert * 4 + Duration::from_secs(8),
            Implementation::KubeVip { lease, retry, .. } => {
                *lease + *retry * 2 + Duration::from_secs(8)
            }
        }
    }

    pub(super) fn renew_deadline(&self) -> Option<Duration> {
        match &self.cfg.implementation {
            Implementation::Agent { renew, .. } => Some(*renew),
            // No fence: a crashed or frozen kube-vip leaves the VIP answering.
            Implementation::Keepalived { .. } | Implementation::KubeVip { .. } => None,
        }
    }

    /// Steady state: a leader answering ARP and TCP, holding the Lease, the
    /// others watching. Returns the leader's index.
    pub(super) async fn steady(&self) -> anyhow::Result<usize> {
        let bound = self.recovery_bound() + Duration::from_secs(10);
        let leader = self.wait_for_leader(bound).await?;
        let name = self.nodes[leader].name.clone();
        self.wait_holder(&name, Duration::from_secs(10)).await?;
        self.wait_tcp_from(&name, Duration::from_secs(10)).await?;
        self.wait_watching(Some(leader), Duration::from_secs(10))
            .await?;
        // The leader may have changed meanwhile (e.g. a restarted node): check again.
        let again = self.wait_for_leader(Duration::from_secs(5)).await?;
        if again != leader {
            bail!(
                "leader changed from {name} to {} while settling",
                self.nodes[again].name
            );
        }
        Ok(leader)
    }
}
