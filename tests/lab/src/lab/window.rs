//! An observation window over a running lab, for faults that must change
//! nothing (or must cost little): from a [`Mark`] to now, what the client
//! saw (ARP windows answered, split-brain windows, the longest gap between
//! answered probes) and what the Lease saw (writes, holders, transitions),
//! and the agents' fast takeovers and rejected peer packets.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use vip_common::events;

use super::Lab;
use super::peers::LeaseSnapshot;
use super::probe::ClientView;
use super::record::Probe;

/// Fast takeovers, summed over the agents.
pub const FAST_TAKEOVERS: &str = "vip_agent_fast_takeovers_total";
/// Rejected peer packets (label `reason`), summed over the agents.
pub const PEER_REJECTED: &str = "vip_agent_peer_rejected_total";

/// The start of a window.
#[derive(Clone, Debug)]
pub struct Mark {
    at: Instant,
    view: ClientView,
    lease: LeaseSnapshot,
    fast_takeovers: f64,
    rejected: f64,
    members_removed: usize,
    members_added: usize,
}

/// What happened in a window.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Window {
    pub seconds: f64,
    /// Committed writes to the Lease (every renew, member change, takeover).
    pub lease_writes: usize,
    pub lease_writes_per_second: f64,
    /// The holder at the mark, then each new holder, in order.
    pub holders: Vec<String>,
    /// Holder changes seen in the window.
    pub leadership_changes: usize,
    /// `leaseTransitions` growth over the window.
    pub lease_transitions: i32,
    /// The fast-path members in the Lease's annotation at the end.
    pub members_at_end: Vec<String>,
    pub arp_windows: u64,
    pub arp_answered: u64,
    /// Probe windows answered by two MACs (ARP or NS).
    pub split_brain_windows: u64,
    /// Longest time between two answered ARP probes (or from the mark to the
    /// first, or from the last to the end), in milliseconds.
    pub longest_arp_gap_ms: f64,
    /// Growth of `vip_agent_fast_takeovers_total`, summed over the agents
    /// (an agent restarted in the window restarts its count).
    pub fast_takeovers: f64,
    /// Growth of `vip_agent_peer_rejected_total`, summed over the agents.
    pub peer_rejected: f64,
    /// `peer_member_removed` / `peer_member_added` events the agents logged
    /// (membership churn: each one is a Lease write's annotation change).
    #[serde(default)]
    pub members_removed: usize,
    #[serde(default)]
    pub members_added: usize,
    /// Seconds in which the peers annotation listed fewer than every node
    /// (the missing ones were on the slow path).
    #[serde(default)]
    pub degraded_seconds: f64,
}

impl Window {
    /// One line for a log or a test's output.
    pub fn summary(&self) -> String {
        format!(
            "{:.0} s: {} Lease writes ({:.2}/s), holders {:?} ({} changes, +{} transitions), \
             {} split-brain windows, ARP {}/{} answered, longest ARP gap {:.0} ms, \
             {} fast takeovers, {} rejected peer packets, members -{} +{} ({:.1} s not all listed), at end {:?}",
            self.seconds,
            self.lease_writes,
            self.lease_writes_per_second,
            self.holders,
            self.leadership_changes,
            self.lease_transitions,
            self.split_brain_windows,
            self.arp_answered,
            self.arp_windows,
            self.longest_arp_gap_ms,
            self.fast_takeovers,
            self.peer_rejected,
            self.members_removed,
            self.members_added,
            self.degraded_seconds,
            self.members_at_end,
        )
    }
}

/// The longest gap between answered probes in `probes`, counting from
/// `from` and up to `to` (probe-clock times).
pub fn longest_gap(probes: &[Probe], from: Duration, to: Duration) -> Duration {
    let mut last = from;
    let mut worst = Duration::ZERO;
    for p in probes.iter().filter(|p| !p.replies.is_empty()) {
        worst = worst.max(p.sent.saturating_sub(last));
        last = last.max(p.sent);
    }
    worst.max(to.saturating_sub(last))
}

impl Lab {
    /// Start a window now (the probes recorded so far are discarded).
    pub async fn mark(&self) -> anyhow::Result<Mark> {
        let lease = self.lease_snapshot().await?;
        let _ = self.take_probes();
        let _ = self.prober.take_ns();
        Ok(Mark {
            at: Instant::now(),
            view: self.client_view().borrow().clone(),
            lease,
            fast_takeovers: self.cluster_metric(FAST_TAKEOVERS, &[]),
            rejected: self.cluster_metric(PEER_REJECTED, &[]),
            members_removed: self.count_events_all(events::PEER_MEMBER_REMOVED),
            members_added: self.count_events_all(events::PEER_MEMBER_ADDED),
        })
    }

    /// What happened from `mark` to now.
    pub async fn window_since(&self, mark: &Mark) -> anyhow::Result<Window> {
        let now = Instant::now();
        let view = self.client_view().borrow().clone();
        let (arp, _tcp) = self.take_probes();
        let _ = self.prober.take_ns();
        let lease = self.lease_snapshot().await?;
        let seconds = now.duration_since(mark.at).as_secs_f64();
        let lease_writes = self.lease_writes_since(mark.at);
        let mut holders: Vec<String> = mark.lease.holder.iter().cloned().collect();
        for h in self.holders_since(mark.at) {
            if holders.last() != Some(&h) {
                holders.push(h);
            }
        }
        let gap = longest_gap(&arp, self.probe_time(mark.at), self.probe_time(now));
        Ok(Window {
            seconds,
            lease_writes,
            lease_writes_per_second: lease_writes as f64 / seconds.max(1e-9),
            leadership_changes: holders.len().saturating_sub(1),
            holders,
            lease_transitions: lease.transitions - mark.lease.transitions,
            members_at_end: lease
                .peers
                .map(|p| p.members.into_keys().collect())
                .unwrap_or_default(),
            arp_windows: view.arp_probes - mark.view.arp_probes,
            arp_answered: view.arp_answered - mark.view.arp_answered,
            split_brain_windows: view.split_brain - mark.view.split_brain,
            longest_arp_gap_ms: gap.as_secs_f64() * 1000.0,
            fast_takeovers: self.cluster_metric(FAST_TAKEOVERS, &[]) - mark.fast_takeovers,
            peer_rejected: self.cluster_metric(PEER_REJECTED, &[]) - mark.rejected,
            degraded_seconds: self
                .fast_path_degraded(
                    mark.at,
                    mark.lease.peers.as_ref().map(|p| p.members.len()),
                    now,
                )
                .as_secs_f64(),
            members_removed: self
                .count_events_all(events::PEER_MEMBER_REMOVED)
                .saturating_sub(mark.members_removed),
            members_added: self
                .count_events_all(events::PEER_MEMBER_ADDED)
                .saturating_sub(mark.members_added),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::record::Reply;

    fn probe(ms: u64, answered: bool) -> Probe {
        Probe {
            sent: Duration::from_millis(ms),
            replies: if answered {
                vec![Reply {
                    at: Duration::from_millis(ms),
                    mac: [2, 0, 0, 0, 0, 1],
                }]
            } else {
                Vec::new()
            },
        }
    }

    #[test]
    fn the_longest_gap_counts_the_edges() {
        let ms = Duration::from_millis;
        let p = [
            probe(10, true),
            probe(20, false),
            probe(50, true),
            probe(60, true),
        ];
        assert_eq!(longest_gap(&p, ms(0), ms(70)), ms(40));
        assert_eq!(longest_gap(&p, ms(0), ms(200)), ms(140));
        assert_eq!(longest_gap(&[], ms(0), ms(30)), ms(30));
    }
}
