//! Faults on the fast path's peer channel (the agents' UDP heartbeats and
//! acks, docs/peer-promises.md) and a short stall of the whole API.
//!
//! The peer faults are iptables rules (`iptables-nft`, package iptables)
//! inside the node namespaces, in the INPUT chain of the receiving node, and
//! they match only UDP whose source or destination port is the peer port
//! (`-m multiport --ports`), so the API, etcd, ARP and the client's probes
//! are untouched. One rule per packet path, so a packet meets at most one
//! random drop. Every rule is removed when its [`PeerRules`] guard drops
//! (and, failing that, with its namespace).

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;

use super::Lab;
use crate::controlplane::Component;
use crate::netns::{self, NetNs};
use crate::packet_socket::EtherType;
use crate::topology::Endpoint;

/// The agents' peer port (`--peer-port` default; the lab does not change it).
pub const PEER_PORT: u16 = 7473;
/// The comment on every rule of the lab (to tell them apart in `iptables -S`).
const COMMENT: &str = "vip-lab-peer-fault";

/// Errors of the peer-channel faults.
#[derive(Debug, thiserror::Error)]
pub enum PeerFaultError {
    #[error("iptables in {ns}: {source}")]
    Iptables { ns: String, source: netns::Error },
    #[error("loss of {0} % is not a percentage in (0, 100]")]
    BadLoss(f64),
    #[error("node {0} has no IPv4 address")]
    NoAddress(usize),
}

/// One rule: its namespace, chain and match/target arguments.
#[derive(Debug, Clone)]
struct Rule {
    ns: String,
    chain: &'static str,
    spec: Vec<String>,
}

impl Rule {
    fn iptables(&self, op: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns, "iptables", "-w", op, self.chain])
            .args(&self.spec);
        cmd
    }
}

/// Rules in force; each is removed on drop (in reverse order).
#[must_use = "the rules are removed when this guard drops"]
#[derive(Debug, Default)]
pub struct PeerRules {
    rules: Vec<Rule>,
    what: Vec<String>,
}

impl PeerRules {
    /// No rules yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Insert, as the first rule of `chain` in `ns`: `pre` matches, the
    /// peer-port match, `post` matches (the random draw goes last, so only
    /// peer packets draw), DROP.
    fn insert(
        &mut self,
        ns: &NetNs,
        chain: &'static str,
        (pre, post): (&[String], &[String]),
        port: u16,
    ) -> Result<(), PeerFaultError> {
        let port = port.to_string();
        let peer = [
            "-p",
            "udp",
            "-m",
            "multiport",
            "--ports",
            &port,
            "-m",
            "comment",
            "--comment",
            COMMENT,
        ];
        let spec: Vec<String> = pre
            .iter()
            .map(String::as_str)
            .chain(peer)
            .chain(post.iter().map(String::as_str))
            .chain(["-j", "DROP"])
            .map(str::to_owned)
            .collect();
        let rule = Rule {
            ns: ns.name().to_owned(),
            chain,
            spec,
        };
        netns::run_checked(&mut rule.iptables("-I")).map_err(|source| {
            PeerFaultError::Iptables {
                ns: rule.ns.clone(),
                source,
            }
        })?;
        self.rules.push(rule);
        Ok(())
    }

    /// Drop `percent` % of the peer packets `ns` receives, at random.
    pub fn add_loss(&mut self, ns: &NetNs, port: u16, percent: f64) -> Result<(), PeerFaultError> {
        if !(percent > 0.0 && percent <= 100.0) {
            return Err(PeerFaultError::BadLoss(percent));
        }
        let p = format!("{:.6}", percent / 100.0);
        let m = ["-m", "statistic", "--mode", "random", "--probability", &p].map(str::to_owned);
        self.insert(ns, "INPUT", (&[], &m), port)?;
        self.what
            .push(format!("{percent} % loss into {}", ns.name()));
        Ok(())
    }

    /// Drop every peer packet from `from` that `ns` receives.
    pub fn add_drop_from(
        &mut self,
        ns: &NetNs,
        from: Ipv4Addr,
        port: u16,
    ) -> Result<(), PeerFaultError> {
        let m = ["-s".to_owned(), format!("{from}/32")];
        self.insert(ns, "INPUT", (&m, &[]), port)?;
        self.what.push(format!("{from} -> {} cut", ns.name()));
        Ok(())
    }

    /// Take over the rules of `other` (removed with these).
    pub fn merge(&mut self, mut other: PeerRules) {
        self.rules.append(&mut other.rules);
        self.what.append(&mut other.what);
    }

    /// The rules' iptables arguments, e.g. for a log line.
    pub fn specs(&self) -> Vec<String> {
        self.rules
            .iter()
            .map(|r| format!("[{}] -A {} {}", r.ns, r.chain, r.spec.join(" ")))
            .collect()
    }

    /// What the rules do, in words.
    pub fn describe(&self) -> String {
        self.what.join(", ")
    }

    /// Remove every rule now, reporting the first failure (a namespace
    /// already gone took its rules with it: not a failure).
    pub fn remove(mut self) -> Result<(), PeerFaultError> {
        self.remove_all()
    }

    fn remove_all(&mut self) -> Result<(), PeerFaultError> {
        let mut first = None;
        while let Some(rule) = self.rules.pop() {
            if !std::path::Path::new("/run/netns").join(&rule.ns).exists() {
                continue;
            }
            if let Err(source) = netns::run_checked(&mut rule.iptables("-D")) {
                first.get_or_insert(PeerFaultError::Iptables {
                    ns: rule.ns.clone(),
                    source,
                });
            }
        }
        first.map_or(Ok(()), Err)
    }
}

impl Drop for PeerRules {
    fn drop(&mut self) {
        if let Err(e) = self.remove_all() {
            eprintln!("vip-lab: removing peer-channel rules: {e}");
        }
    }
}

impl Lab {
    /// Node `i`'s address (its agent's `--peer-address`).
    pub fn node_ip(&self, i: usize) -> Result<Ipv4Addr, PeerFaultError> {
        self.lan.node(i).v4().ok_or(PeerFaultError::NoAddress(i))
    }

    /// `percent` % random loss on every node's peer channel (each packet
    /// dropped at most once, by its receiver).
    pub fn peer_loss(&self, percent: f64) -> Result<PeerRules, PeerFaultError> {
        let mut rules = PeerRules::new();
        for i in 0..self.nodes.len() {
            rules.add_loss(self.lan.node(i).ns(), PEER_PORT, percent)?;
        }
        Ok(rules)
    }

    /// One-way cut: node `from`'s peer packets to node `to` are dropped
    /// (`to` -> `from` still flows).
    pub fn peer_cut_one_way(&self, from: usize, to: usize) -> Result<PeerRules, PeerFaultError> {
        let mut rules = PeerRules::new();
        rules.add_drop_from(self.lan.node(to).ns(), self.node_ip(from)?, PEER_PORT)?;
        Ok(rules)
    }

    /// Two-way cut of the peer channel between nodes `a` and `b`.
    pub fn peer_cut(&self, a: usize, b: usize) -> Result<PeerRules, PeerFaultError> {
        let mut rules = self.peer_cut_one_way(a, b)?;
        rules.merge(self.peer_cut_one_way(b, a)?);
        Ok(rules)
    }

    /// Stall the whole API for `stall`: SIGSTOP every kube-apiserver, then
    /// SIGCONT every one (also when a stop failed). Real control plane only.
    pub async fn api_stall(&mut self, stall: Duration) -> anyhow::Result<()> {
        let n = self.nodes.len();
        let mut stopped = Vec::new();
        let mut result = Ok(());
        for i in 0..n {
            match self.cp_signal(i, Component::ApiServer, Signal::SIGSTOP) {
                Ok(()) => stopped.push(i),
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        if result.is_ok() {
            // The stall's length is the fault itself, not a wait for an event.
            tokio::time::sleep(stall).await;
        }
        for i in stopped {
            let r = self.cp_signal(i, Component::ApiServer, Signal::SIGCONT);
            if result.is_ok() {
                result = r;
            }
        }
        result
    }
}

/// Whether `frame` is IPv4/UDP from `src` to the peer port.
fn is_peer_datagram(frame: &[u8], src: Ipv4Addr) -> bool {
    let Some(ip) = frame.get(14..) else {
        return false;
    };
    if frame.get(12..14) != Some(&[0x08, 0x00]) || ip.len() < 20 || ip[9] != 17 {
        return false;
    }
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    ip[12..16] == src.octets()
        && ip
            .get(ihl + 2..ihl + 4)
            .is_some_and(|p| p == PEER_PORT.to_be_bytes())
}

/// A copy of the peer datagram `frame` to send again: its UDP checksum
/// zeroed ("none", valid for IPv4). A frame captured on a veth may carry a
/// partial checksum (offload) that the receiver would refuse; the payload,
/// what the agent sees, is unchanged.
pub fn replay(frame: &[u8]) -> Vec<u8> {
    let mut f = frame.to_vec();
    let udp = 14 + usize::from(f[14] & 0x0f) * 4;
    f[udp + 6] = 0;
    f[udp + 7] = 0;
    f
}

/// [`replay`] with the last payload byte flipped (a MAC, or a field under
/// it, changed), so that only the peer's authentication can refuse it.
pub fn forge(frame: &[u8]) -> Vec<u8> {
    let mut f = replay(frame);
    let total = usize::from(u16::from_be_bytes([f[16], f[17]]));
    let end = (14 + total).min(f.len());
    f[end - 1] ^= 0x01;
    f
}

/// Capture (AF_PACKET, in `to`'s namespace) the next peer datagram `to`
/// receives from `src`: the whole Ethernet frame.
pub fn capture_peer_frame(
    to: &Endpoint,
    src: Ipv4Addr,
    timeout: Duration,
) -> anyhow::Result<Vec<u8>> {
    let sock = to.packet_socket(EtherType::Ipv4)?;
    sock.recv_matching(std::time::Instant::now() + timeout, |f| {
        is_peer_datagram(f, src)
    })?
    .ok_or_else(|| {
        anyhow::anyhow!(
            "{} received no peer datagram from {src} within {timeout:?}",
            to.ns().name()
        )
    })
}

/// Send `frame` as is out of `from`'s interface.
pub fn send_frame(from: &Endpoint, frame: &[u8]) -> anyhow::Result<()> {
    from.packet_socket(EtherType::Ipv4)?.send(frame)?;
    Ok(())
}

impl Lab {
    /// [`capture_peer_frame`]: what node `to` receives from node `from`.
    pub fn capture_peer_frame(
        &self,
        from: usize,
        to: usize,
        timeout: Duration,
    ) -> anyhow::Result<Vec<u8>> {
        capture_peer_frame(self.lan.node(to), self.node_ip(from)?, timeout)
    }

    /// [`send_frame`] out of node `i`'s LAN interface.
    pub fn send_frame(&self, i: usize, frame: &[u8]) -> anyhow::Result<()> {
        send_frame(self.lan.node(i), frame)
    }
}
