//! What one lab run records, and how outages and split-brain windows are
//! computed from it. Shared by the lab, the tests, the demo and the benchmark.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One ARP (or NS) probe sent by the client and the replies it got.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Probe {
    /// When the probe was sent, since the run started.
    #[serde(with = "micros")]
    pub sent: Duration,
    /// Replies attributed to this probe (they arrived before the next probe
    /// was sent): arrival time and the MAC that answered.
    pub replies: Vec<Reply>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Reply {
    #[serde(with = "micros")]
    pub at: Duration,
    pub mac: [u8; 6],
}

/// One TCP connect to the VIP service.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TcpAttempt {
    #[serde(with = "micros")]
    pub started: Duration,
    #[serde(with = "micros")]
    pub took: Duration,
    /// The node name the service answered with, if the connect succeeded.
    pub node: Option<String>,
}

/// Something the scenario did or saw (fault injected, leader changed...).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Event {
    #[serde(with = "micros")]
    pub at: Duration,
    pub what: String,
}

/// One run of one scenario with one implementation.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunRecord {
    /// e.g. "vip-agent (lease 3s/2s/500ms)", "keepalived (advert 1s)".
    pub implementation: String,
    /// e.g. "graceful-stop", "agent-crash", "freeze", "link-cut".
    pub scenario: String,
    pub repeat: u32,
    /// When the fault was injected, since the run started.
    #[serde(with = "micros")]
    pub fault_at: Duration,
    #[serde(with = "micros")]
    pub probe_interval: Duration,
    /// node name -> MAC of its interface on the LAN.
    pub nodes: Vec<(String, [u8; 6])>,
    pub arp: Vec<Probe>,
    /// Neighbour solicitations for the IPv6 VIP, same windows as ARP.
    #[serde(default)]
    pub ns: Vec<Probe>,
    pub tcp: Vec<TcpAttempt>,
    pub events: Vec<Event>,
}

/// Outage seen by a probe kind around the fault: from the last success at or
/// before the fault to the first success after it, minus nothing. `None` if
/// no success is seen after the fault (the VIP never came back).
pub fn outage(successes: &[Duration], fault_at: Duration) -> Option<Duration> {
    let before = successes
        .iter()
        .filter(|t| **t <= fault_at)
        .max()
        .copied()
        .unwrap_or(Duration::ZERO);
    // The longest gap between consecutive successes after `before`.
    let mut after: Vec<Duration> = successes.iter().filter(|t| **t > before).copied().collect();
    after.sort();
    let first = *after.first()?;
    let mut worst = first - before;
    for w in after.windows(2) {
        worst = worst.max(w[1] - w[0]);
    }
    Some(worst)
}

impl RunRecord {
    /// Probe send times that got at least one reply.
    pub fn arp_successes(&self) -> Vec<Duration> {
        self.arp
            .iter()
            .filter(|p| !p.replies.is_empty())
            .map(|p| p.sent)
            .collect()
    }

    /// Connect start times that succeeded.
    pub fn tcp_successes(&self) -> Vec<Duration> {
        self.tcp
            .iter()
            .filter(|a| a.node.is_some())
            .map(|a| a.started)
            .collect()
    }

    /// Longest ARP silence around the fault (see [`outage`]).
    pub fn arp_outage(&self) -> Option<Duration> {
        outage(&self.arp_successes(), self.fault_at)
    }

    pub fn tcp_outage(&self) -> Option<Duration> {
        outage(&self.tcp_successes(), self.fault_at)
    }

    /// Probe windows (ARP or NS) in which two different MACs answered: split brain.
    pub fn split_brain_windows(&self) -> usize {
        self.arp
            .iter()
            .chain(&self.ns)
            .filter(|p| p.replies.iter().any(|r| r.mac != p.replies[0].mac))
            .count()
    }

    /// Longest NS silence around the fault (see [`outage`]); `None` when no
    /// NS probes were recorded or the VIP never came back.
    pub fn ns_outage(&self) -> Option<Duration> {
        let ok: Vec<Duration> = self
            .ns
            .iter()
            .filter(|p| !p.replies.is_empty())
            .map(|p| p.sent)
            .collect();
        outage(&ok, self.fault_at)
    }

    /// The node whose MAC answered a reply, if known.
    pub fn node_of(&self, mac: &[u8; 6]) -> Option<&str> {
        self.nodes
            .iter()
            .find(|(_, m)| m == mac)
            .map(|(n, _)| n.as_str())
    }
}

/// Durations as integer microseconds in JSON.
mod micros {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_micros() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_micros(u64::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn outage_is_the_gap_around_the_fault() {
        let s: Vec<_> = (0..100)
            .map(|i| ms(i * 5))
            .filter(|t| *t < ms(200) || *t >= ms(340))
            .collect();
        assert_eq!(outage(&s, ms(198)), Some(ms(145)));
        // No gap at all: one probe interval.
        let s: Vec<_> = (0..100).map(|i| ms(i * 5)).collect();
        assert_eq!(outage(&s, ms(200)), Some(ms(5)));
        // Never back.
        let s: Vec<_> = (0..40).map(|i| ms(i * 5)).collect();
        assert_eq!(outage(&s, ms(200)), None);
    }

    #[test]
    fn two_macs_in_one_window_is_split_brain() {
        let p = |t: u64, macs: &[u8]| Probe {
            sent: ms(t),
            replies: macs
                .iter()
                .map(|m| Reply {
                    at: ms(t + 1),
                    mac: [2, 0, 0, 0, 0, *m],
                })
                .collect(),
        };
        let r = RunRecord {
            implementation: "x".into(),
            scenario: "y".into(),
            repeat: 0,
            fault_at: ms(10),
            probe_interval: ms(5),
            nodes: vec![("n1".into(), [2, 0, 0, 0, 0, 1])],
            arp: vec![
                p(0, &[1]),
                p(5, &[1, 1]),
                p(10, &[]),
                p(15, &[1, 2]),
                p(20, &[2]),
            ],
            ns: vec![p(0, &[1]), p(5, &[2, 1])],
            tcp: vec![],
            events: vec![],
        };
        assert_eq!(
            r.split_brain_windows(),
            2,
            "one ARP window and one NS window"
        );
        assert_eq!(r.node_of(&[2, 0, 0, 0, 0, 1]), Some("n1"));
        assert_eq!(r.arp_outage(), Some(ms(10)));
        let json = serde_json::to_string(&r).unwrap();
        let back: RunRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(back.arp.len(), 5);
    }
}
