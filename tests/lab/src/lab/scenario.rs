//! One scenario run ([`Lab::run_scenario`]): steady leader, fault, recovery,
//! restoration; and the Lease changes of the run as events.

use std::sync::PoisonError;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use nix::sys::signal::Signal;

use vip_common::events;
use vip_lease_server::{EventType, Target};

use super::record;
use super::record::RunRecord;
use super::timeline::{Timeline, client_events};
use super::{
    Implementation, LEASE_NAME, LEASE_NS, Lab, Member, STEADY_AFTER, STEADY_BEFORE, Scenario, human,
};
use crate::controlplane::Component;
use crate::controlplane::args::SHUTDOWN_DELAY;

impl Lab {
    /// Run one scenario: steady leader, fault, recovery, restoration.
    pub async fn run_scenario(
        &mut self,
        scenario: Scenario,
        repeat: u32,
    ) -> anyhow::Result<RunRecord> {
        if matches!(self.cfg.implementation, Implementation::Keepalived { .. })
            && !scenario.applies_to_keepalived()
        {
            bail!(
                "scenario {} needs a Lease; keepalived has none",
                scenario.name()
            );
        }
        if matches!(self.cfg.implementation, Implementation::KubeVip { .. })
            && !scenario.applies_to_kube_vip()
        {
            bail!("scenario {} does not apply to kube-vip", scenario.name());
        }
        if !scenario.applies_to(self.cfg.control_plane) {
            bail!(
                "scenario {} does not apply to the {} control plane",
                scenario.name(),
                self.cfg.control_plane.name()
            );
        }
        let leader = self.steady().await.with_context(|| {
            format!("{} #{repeat}: waiting for a steady leader", scenario.name())
        })?;
        let leader_name = self.nodes[leader].name.clone();
        for i in 0..self.nodes.len() {
            self.drain_log(i).await?;
            // Earlier lines are not part of this run.
            let seen = match &*self.slot(i) {
                Member::Agent(a) => a.log().len(),
                Member::Keepalived(k) => k.log().len(),
                Member::KubeVip(k) => k.log().len(),
                Member::Down => 0,
            };
            self.nodes[i].log_seen = seen;
        }
        let lease_seen = self
            .lease_log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        // Discard what the probes gathered while settling; record from now on.
        let _ = self.prober.take();
        let _ = self.prober.take_ns();
        let mut tl = Timeline::new();
        tl.push(format!("steady: {leader_name} leads"));
        // Recording time before the fault, not synchronisation.
        tokio::time::sleep(STEADY_BEFORE).await;

        let bound = self.recovery_bound();
        let fault_at;
        match scenario {
            Scenario::GracefulStop | Scenario::Crash => {
                fault_at = tl.now();
                self.stop_member(leader, &mut tl, scenario == Scenario::GracefulStop)
                    .await?;
                let new = self.wait_new_leader(Some(leader), bound).await?;
                tl.push(format!(
                    "recovered: {} answers ARP and TCP",
                    self.nodes[new].name
                ));
                self.restart_member(leader, &mut tl).await?;
            }
            Scenario::Freeze => {
                fault_at = tl.now();
                tl.push(format!("fault: SIGSTOP to {leader_name}"));
                self.signal_member(leader, Signal::SIGSTOP)?;
                let new = self.wait_new_leader(Some(leader), bound).await;
                tl.push(format!("SIGCONT to {leader_name}"));
                self.signal_member(leader, Signal::SIGCONT)?;
                let new = new?;
                tl.push(format!(
                    "recovered: {} answers ARP and TCP",
                    self.nodes[new].name
                ));
                if matches!(*self.slot(leader), Member::Agent(_)) {
                    self.wait_event(leader, events::STEPPING_DOWN, Duration::from_secs(10))
                        .await?;
                }
            }
            Scenario::LinkCut => {
                fault_at = tl.now();
                if let Some(etcd_leader) = self.etcd_leader() {
                    tl.push(format!(
                        "etcd leader before the cut: {} ({})",
                        self.nodes[etcd_leader].name,
                        if etcd_leader == leader {
                            "the cut node: the others elect a new one before any write commits"
                        } else {
                            "not the cut node"
                        }
                    ));
                }
                tl.push(format!("fault: {leader_name}'s link cut"));
                self.lan.cut(leader)?;
                tl.push(format!("{leader_name}: carrier lost"));
                let new = self.wait_new_leader(Some(leader), bound).await;
                if matches!(*self.slot(leader), Member::Agent(_)) && new.is_ok() {
                    // The cut-off leader steps down by itself (fence deadline).
                    self.wait_event(leader, events::STEPPING_DOWN, bound)
                        .await?;
                }
                if self.cp.is_some() {
                    let names: Vec<&str> = self
                        .etcd_leaders()
                        .into_iter()
                        .map(|i| self.nodes[i].name.as_str())
                        .collect();
                    tl.push(format!(
                        "etcd members claiming leadership during the cut: {}",
                        names.join(", ")
                    ));
                }
                tl.push(format!("{leader_name}'s link restored"));
                self.lan.restore(leader)?;
                let new = new?;
                tl.push(format!(
                    "recovered: {} answers ARP and TCP",
                    self.nodes[new].name
                ));
            }
            Scenario::ApiPartition if self.cp.is_some() => {
                fault_at = tl.now();
                tl.push(format!(
                    "fault: {leader_name}'s kube-apiserver hangs (SIGSTOP)"
                ));
                self.cp_signal(leader, Component::ApiServer, Signal::SIGSTOP)?;
                let new = self.wait_new_leader(Some(leader), bound).await;
                if new.is_ok() {
                    self.wait_event(leader, events::STEPPING_DOWN, bound)
                        .await?;
                }
                tl.push(format!("{leader_name}'s kube-apiserver resumed (SIGCONT)"));
                self.cp_signal(leader, Component::ApiServer, Signal::SIGCONT)?;
                let new = new?;
                tl.push(format!(
                    "recovered: {} answers ARP and TCP",
                    self.nodes[new].name
                ));
            }
            Scenario::ApiPartition => {
                let server = self
                    .server
                    .clone()
                    .ok_or_else(|| anyhow!("no Lease server"))?;
                fault_at = tl.now();
                tl.push(format!(
                    "fault: {leader_name} partitioned from the API server"
                ));
                server.partition(Target::Identity(leader_name.clone()));
                let new = self.wait_new_leader(Some(leader), bound).await;
                if new.is_ok() {
                    self.wait_event(leader, events::STEPPING_DOWN, bound)
                        .await?;
                }
                tl.push("partition healed");
                server.heal();
                let new = new?;
                tl.push(format!(
                    "recovered: {} answers ARP and TCP",
                    self.nodes[new].name
                ));
            }
            Scenario::HealthFail if self.cp.is_some() => {
                fault_at = tl.now();
                tl.push(format!(
                    "fault: {leader_name}'s kube-apiserver drains (SIGTERM: /readyz fails, serves {}s more)",
                    SHUTDOWN_DELAY.as_secs()
                ));
                self.cp_signal(leader, Component::ApiServer, Signal::SIGTERM)?;
                let new = self.wait_new_leader(Some(leader), bound).await;
                // It exits by itself after the delay and its drain; then it is
                // started again, as the kubelet would.
                self.cp_wait_exit(leader, Component::ApiServer, SHUTDOWN_DELAY * 4)
                    .await?;
                tl.push(format!(
                    "{leader_name}'s kube-apiserver exited; started again"
                ));
                self.cp_restart(leader, Component::ApiServer).await?;
                tl.push(format!("{leader_name}'s kube-apiserver ready"));
                let new = new?;
                tl.push(format!(
                    "recovered: {} answers ARP and TCP",
                    self.nodes[new].name
                ));
                self.wait_event(leader, events::HEALTH_PASSING, Duration::from_secs(20))
                    .await?;
            }
            Scenario::HealthFail => {
                let server = self
                    .server
                    .clone()
                    .ok_or_else(|| anyhow!("no Lease server"))?;
                fault_at = tl.now();
                tl.push(format!("fault: {leader_name}'s /readyz fails"));
                server.fail_health(&leader_name);
                let new = self.wait_new_leader(Some(leader), bound).await;
                tl.push(format!("{leader_name}'s /readyz healthy again"));
                server.restore_health(&leader_name);
                let new = new?;
                tl.push(format!(
                    "recovered: {} answers ARP and TCP",
                    self.nodes[new].name
                ));
                self.wait_event(leader, events::HEALTH_PASSING, Duration::from_secs(10))
                    .await?;
            }
            Scenario::RollingRestart => {
                fault_at = tl.now();
                // Followers first (no effect on the VIP), the leader last
                // (one graceful move, to an already restarted node).
                let order: Vec<usize> = (0..self.nodes.len())
                    .filter(|i| *i != leader)
                    .chain([leader])
                    .collect();
                for i in order {
                    self.stop_member(i, &mut tl, true).await?;
                    if i == leader {
                        let new = self.wait_new_leader(Some(leader), bound).await?;
                        tl.push(format!(
                            "recovered: {} answers ARP and TCP",
                            self.nodes[new].name
                        ));
                    }
                    self.restart_member(i, &mut tl).await?;
                    self.wait_watching(None, Duration::from_secs(10)).await.ok();
                }
            }
            Scenario::ApiServerRestart => {
                fault_at = tl.now();
                tl.push(format!(
                    "fault: {leader_name}'s kube-apiserver killed (SIGKILL) and started again"
                ));
                self.cp_restart(leader, Component::ApiServer).await?;
                tl.push(format!("{leader_name}'s kube-apiserver ready"));
                // Whoever holds the VIP now (the old leader if its renew
                // deadline outlasted the restart) answers ARP and TCP.
                let now = self.wait_for_leader(bound).await?;
                tl.push(format!(
                    "recovered: {} answers ARP and TCP",
                    self.nodes[now].name
                ));
                self.wait_watching(Some(now), Duration::from_secs(20))
                    .await?;
            }
            Scenario::LeaseServerRestart => {
                let server = self
                    .server
                    .clone()
                    .ok_or_else(|| anyhow!("no Lease server"))?;
                fault_at = tl.now();
                tl.push("fault: Lease server restarted (connections dropped, 300 ms down)");
                let restarted_at = Instant::now();
                server
                    .restart_with_downtime(Duration::from_millis(300))
                    .await;
                // Recovered: the leader renewed through a new connection.
                let log = self.lease_log.clone();
                let name = leader_name.clone();
                let renewed = server
                    .wait_for_lease(LEASE_NS, LEASE_NAME, bound, move |_| {
                        log.lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .iter()
                            .any(|c| c.at > restarted_at && c.holder.as_deref() == Some(&name))
                    })
                    .await;
                if renewed.is_none() {
                    bail!("{leader_name} did not renew within {bound:?} after the restart");
                }
                tl.push(format!("{leader_name} renewed after the restart"));
                self.wait_watching(None, Duration::from_secs(10)).await?;
                self.wait_for_leader(bound).await?;
            }
        }
        self.restart_exited_members(&mut tl).await?;
        // Recording time after recovery and restoration, not synchronisation.
        tokio::time::sleep(STEADY_AFTER).await;
        self.collect_logs(&mut tl);
        let (arp, tcp) = self.prober.take();
        let ns = self.prober.take_ns();
        let offset = tl.start.duration_since(self.prober.epoch());
        let shift = |probes: Vec<record::Probe>| -> Vec<record::Probe> {
            probes
                .into_iter()
                .filter(|p| p.sent >= offset)
                .map(|mut p| {
                    p.sent -= offset;
                    for r in &mut p.replies {
                        r.at = r.at.saturating_sub(offset);
                    }
                    p
                })
                .collect()
        };
        let arp = shift(arp);
        let ns = shift(ns);
        let tcp: Vec<_> = tcp
            .into_iter()
            .filter(|a| a.started >= offset)
            .map(|mut a| {
                a.started -= offset;
                a
            })
            .collect();
        self.lease_events(&mut tl, lease_seen, &leader_name);
        let mut record = RunRecord {
            implementation: self.cfg.implementation.label(),
            scenario: scenario.name().to_owned(),
            repeat,
            fault_at,
            probe_interval: self.cfg.probe_interval,
            nodes: self.node_macs(),
            arp,
            ns,
            tcp,
            events: tl.events,
        };
        client_events(&mut record);
        record.events.sort_by_key(|e| e.at);
        Ok(record)
    }

    /// Lease changes since `seen` as events, and the old leader's fence expiry
    /// (its last renew committed + renew deadline: an upper bound).
    pub(super) fn lease_events(&self, tl: &mut Timeline, seen: usize, old_leader: &str) {
        let log = self
            .lease_log
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut last_holder: Option<String> = Some(old_leader.to_owned());
        // The old leader's last renew may predate the run (renews are retry periods apart).
        let mut last_old_renew = log[..seen.min(log.len())]
            .iter()
            .rev()
            .find(|c| c.holder.as_deref() == Some(old_leader))
            .map(|c| c.at);
        let mut released = false;
        for c in log.iter().skip(seen) {
            if c.at < tl.start {
                continue;
            }
            if c.holder.is_none() {
                released = true;
            }
            if c.holder != last_holder {
                let what = match &c.holder {
                    Some(h) => format!("Lease: holder is now {h}"),
                    None if c.kind == EventType::Deleted => "Lease: deleted".to_owned(),
                    None => "Lease: released (no holder)".to_owned(),
                };
                tl.push_at(tl.at(c.at), what);
                last_holder.clone_from(&c.holder);
            }
            if c.holder.as_deref() == Some(old_leader) && last_holder.as_deref() == Some(old_leader)
            {
                last_old_renew = Some(c.at);
            }
        }
        // Only meaningful when the old leader lost the Lease without releasing it.
        if let (Some(rd), Some(at)) = (self.renew_deadline(), last_old_renew)
            && last_holder.as_deref() != Some(old_leader)
            && !released
        {
            tl.push_at(
                tl.at(at + rd),
                format!("{old_leader}: fence expires at the latest (last renew committed + renew deadline {})", human(rd)),
            );
        }
    }
}
