//! Faults on the real control plane of a node (the scenarios' API server
//! hang, drain and restart), run off the async threads.

use std::time::Duration;

use anyhow::{Context as _, anyhow};
use nix::sys::signal::Signal;

use super::Lab;
use crate::controlplane::{Component, sum_samples};

/// Bound on an API server's restart until /readyz (cold: seconds).
const RESTART_READY: Duration = Duration::from_secs(60);

impl Lab {
    /// Send `sig` to node `i`'s `c` (real control plane only).
    pub(super) fn cp_signal(&mut self, i: usize, c: Component, sig: Signal) -> anyhow::Result<()> {
        let cp = self
            .cp
            .as_mut()
            .ok_or_else(|| anyhow!("the lab runs no real control plane"))?;
        cp.signal(i, c, sig)
            .with_context(|| format!("{sig} to node{i}'s {c:?}"))
    }

    /// Restart node `i`'s `c` (SIGKILL if it still runs) and, for the API
    /// server, wait until it is ready again.
    pub(super) async fn cp_restart(&mut self, i: usize, c: Component) -> anyhow::Result<()> {
        let cp = self
            .cp
            .as_mut()
            .ok_or_else(|| anyhow!("the lab runs no real control plane"))?;
        let ns = self.lan.node(i).ns();
        tokio::task::block_in_place(|| {
            cp.restart(i, c, ns)?;
            if c == Component::ApiServer {
                cp.wait_ready(i, ns, RESTART_READY)?;
            }
            anyhow::Ok(())
        })
        .with_context(|| format!("restarting node{i}'s {c:?}"))
    }

    /// The node whose etcd member is the Raft leader now (from each member's
    /// `etcd_server_is_leader` metric), if the lab runs a real control plane.
    pub(super) fn etcd_leader(&self) -> Option<usize> {
        self.etcd_leaders().first().copied()
    }

    /// Every node whose etcd member says it is the leader (a member cut off
    /// may still say so until its check-quorum steps it down).
    pub(super) fn etcd_leaders(&self) -> Vec<usize> {
        let Some(cp) = self.cp.as_ref() else {
            return Vec::new();
        };
        (0..self.nodes.len())
            .filter(|i| {
                cp.etcd_metrics(self.lan.node(*i).ns())
                    .is_ok_and(|m| sum_samples(&m, "etcd_server_is_leader", &[]) == 1.0)
            })
            .collect()
    }

    /// Wait (bounded) until node `i`'s `c` has exited by itself.
    pub(super) async fn cp_wait_exit(
        &mut self,
        i: usize,
        c: Component,
        timeout: Duration,
    ) -> anyhow::Result<bool> {
        let cp = self
            .cp
            .as_mut()
            .ok_or_else(|| anyhow!("the lab runs no real control plane"))?;
        Ok(tokio::task::block_in_place(|| cp.wait_exit(i, c, timeout)))
    }
}
