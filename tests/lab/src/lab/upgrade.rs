//! Rolling upgrade with two builds, the way a static-pod image bump does it:
//! every node's agent stopped (SIGTERM) and the new binary started with the
//! same flags and pin directory, followers first, the leader last; or the
//! leader SIGKILLed instead, so the new agent finds the old build's pins
//! (and the old build's VIP address on the interface) left behind.
//! The lab is started on the old build ([`Lab::start_with_agent_bin`]); the
//! old binary comes from [`crate::upgrade::old_agent_bin`].

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::record::RunRecord;
use super::{Lab, Timeline};

/// How the leader's old agent is stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaderStop {
    /// SIGTERM: the old agent releases, unpins and removes its address.
    Term,
    /// SIGKILL: the old agent's pins, link and address stay behind.
    Kill,
}

/// What a rolling upgrade did and saw.
#[derive(Clone, Debug)]
pub struct UpgradeReport {
    /// Index of the leader on the old build.
    pub old_leader: usize,
    /// Index of the leader at the end (new build).
    pub leader: usize,
    /// Names in the old leader's pin directory when its new agent started
    /// (empty after a SIGTERM: the old agent removed its pins).
    pub stale_pins: BTreeSet<String>,
    /// The old leader's VIP addresses still configured when its new agent started.
    pub stale_addresses: super::storm::VipPlaces,
    pub took: Duration,
    /// Probes from the steady old leader to the end.
    pub record: RunRecord,
}

impl Lab {
    /// Roll every agent to `new_bin` (see the module doc) and settle on a
    /// leader. Errors when a new agent does not start or no leader comes.
    pub async fn rolling_upgrade(
        &mut self,
        new_bin: &Path,
        leader_stop: LeaderStop,
    ) -> anyhow::Result<UpgradeReport> {
        let old_leader = self
            .steady()
            .await
            .context("upgrade: waiting for a steady leader on the old build")?;
        let _ = self.prober.take();
        let _ = self.prober.take_ns();
        let started = Instant::now();
        let mut tl = Timeline::new();
        tl.push(format!(
            "steady: {} leads (old build)",
            self.nodes[old_leader].name
        ));
        // Recording time before the upgrade, not synchronisation.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let fault_at = tl.now();
        let bound = self.recovery_bound();
        let order: Vec<usize> = (0..self.nodes.len())
            .filter(|i| *i != old_leader)
            .chain([old_leader])
            .collect();
        let mut stale_pins = BTreeSet::new();
        let mut stale_addresses = super::storm::VipPlaces::default();
        for i in order {
            let name = self.nodes[i].name.clone();
            if i == old_leader && leader_stop == LeaderStop::Kill {
                self.kill_agent(i, &mut tl).await?;
            } else {
                self.stop_member(i, &mut tl, true).await?;
            }
            if i == old_leader {
                let new = self
                    .wait_new_leader(Some(old_leader), bound)
                    .await
                    .context("upgrade: no new leader after the old leader stopped")?;
                tl.push(format!(
                    "{} answers ARP and TCP (new build)",
                    self.nodes[new].name
                ));
                stale_pins = self.pin_names(i);
                stale_addresses = self.vip_places(i)?;
                tl.push(format!(
                    "{name}: left behind: pins {stale_pins:?}, addresses {stale_addresses:?}"
                ));
            }
            self.start_agent(i, Some(new_bin), &mut tl)
                .await
                .with_context(|| format!("upgrade: {name} on the new build"))?;
            // Followers watching before the next stop, so a release is seen at
            // once (as the rolling-restart scenario does; best effort).
            let holder = self.lease_holder_node();
            self.wait_watching(holder, Duration::from_secs(10))
                .await
                .ok();
        }
        let leader = self
            .steady()
            .await
            .context("upgrade: no steady leader on the new build")?;
        tl.push(format!(
            "end: {} leads (new build)",
            self.nodes[leader].name
        ));
        // Recording time at the end (the final answers are checked on it), not synchronisation.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let record = self.take_record(&mut tl, "rolling-upgrade", fault_at);
        Ok(UpgradeReport {
            old_leader,
            leader,
            stale_pins,
            stale_addresses,
            took: started.elapsed(),
            record,
        })
    }
}
