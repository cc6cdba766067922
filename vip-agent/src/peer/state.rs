//! What one agent knows of the peer channel, and rules 1, 2 (its inputs), 6
//! and 7 of docs/peer-promises.md: the promises this agent made, the
//! heartbeats it heard, and, while it leads, the heartbeats it sent and the
//! acks it got. Pure: every method takes `now`; the socket task
//! (`socket.rs`) and the elector call it under one lock.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ring::hmac;

use super::wire::{Body, Kind, Message};
use crate::clock::MonoTime;

/// Heartbeats remembered to match acks against (5 s at 20 ms).
const SENT_WINDOW: usize = 256;
/// A candidate that has not said Hello for this long is no longer heartbeated.
pub const CANDIDATE_TTL: Duration = Duration::from_secs(3);

/// Counters for /metrics (`vip_agent_peer_*`).
#[derive(Debug, Default)]
pub struct PeerStats {
    /// [heartbeat, ack, hello] sent / received (authenticated, accepted).
    pub sent: [AtomicU64; 3],
    pub received: [AtomicU64; 3],
    pub rejected_mac: AtomicU64,
    pub rejected_replay: AtomicU64,
    pub rejected_stale: AtomicU64,
    pub rejected_malformed: AtomicU64,
    /// Datagrams that arrived while this agent had no key.
    pub rejected_no_key: AtomicU64,
    pub fast_takeovers: AtomicU64,
    /// Members in the record this agent last saw (holder included).
    pub members: AtomicU64,
    pub key_ready: AtomicU64,
}

impl PeerStats {
    pub fn count(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

fn idx(k: Kind) -> usize {
    k as usize - 1
}

/// The leader's side.
#[derive(Debug)]
pub struct Leading {
    pub resource_version: String,
    /// When this leadership began: acks of earlier heartbeats do not count.
    pub since: MonoTime,
    /// Who gets heartbeats besides the candidates: the record's members.
    pub targets: BTreeMap<String, SocketAddr>,
    /// Rule 7: no heartbeat from this time on (`S_k + rd - P`).
    pub heartbeat_until: MonoTime,
    /// (n, T_n) of the newest heartbeats sent.
    sent: VecDeque<(u64, u64)>,
    /// Per agent, the send time `T_m` of the newest heartbeat it acked.
    pub acks: HashMap<String, MonoTime>,
}

#[derive(Debug)]
pub struct State {
    pub me: String,
    pub my_addr: SocketAddr,
    pub promise: Duration,
    pub key: Option<hmac::Key>,
    /// Rule 6: `start + P` covers every promise a dead process made.
    floor: MonoTime,
    /// Per leader whose heartbeat this agent acked: `r + P` of the newest.
    promises: HashMap<String, MonoTime>,
    acking: bool,
    /// Per agent that heartbeated as the holder: when the newest arrived.
    heard: HashMap<String, MonoTime>,
    pub leading: Option<Leading>,
    /// Agents that asked to join (Hello): address and when.
    candidates: HashMap<String, (SocketAddr, MonoTime)>,
    /// A follower the record does not list says Hello to this address.
    pub hello_to: Option<SocketAddr>,
    rx_seq: HashMap<(String, Kind), u64>,
    tx_seq: u64,
    /// The resourceVersion of the newest record this agent knows; `None`
    /// before its first read (rule 1: no ack before it).
    known_rv: Option<String>,
}

/// Whether resourceVersion `a` is older than `b`. The API server's are etcd
/// revisions (numbers); anything else is compared for equality only, which
/// refuses more acks, never fewer.
pub fn older(a: &str, b: &str) -> bool {
    match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(a), Ok(b)) => a < b,
        _ => a != b,
    }
}

impl State {
    pub fn new(me: String, my_addr: SocketAddr, promise: Duration, now: MonoTime) -> Self {
        Self {
            me,
            my_addr,
            promise,
            key: None,
            floor: now.saturating_add(promise),
            promises: HashMap::new(),
            acking: true,
            heard: HashMap::new(),
            leading: None,
            candidates: HashMap::new(),
            hello_to: None,
            rx_seq: HashMap::new(),
            tx_seq: 0,
            known_rv: None,
        }
    }

    /// The newest record this agent has read (rule 1).
    pub fn set_known_rv(&mut self, rv: &str) {
        let newer = self
            .known_rv
            .as_deref()
            .is_none_or(|k| older(k, rv) || k == rv);
        if newer || rv.parse::<u64>().is_err() {
            self.known_rv = Some(rv.to_owned());
        }
    }

    /// The latest time this agent promised not to answer before, ignoring
    /// promises made to `released_by` (a leader that closed its fence before
    /// it released the Lease: docs/peer-promises.md, rule 9).
    pub fn promise_until(&self, released_by: Option<&str>) -> MonoTime {
        self.promises
            .iter()
            .filter(|(l, _)| Some(l.as_str()) != released_by)
            .map(|(_, t)| *t)
            .fold(self.floor, MonoTime::max)
    }

    /// Rules 4 and 5: no acks from just before a takeover CAS is sent until
    /// it failed.
    pub fn set_acking(&mut self, on: bool) {
        self.acking = on;
    }

    /// The newest heartbeat `holder` sent as the holder.
    pub fn last_heartbeat(&self, holder: &str) -> Option<MonoTime> {
        self.heard.get(holder).copied()
    }

    /// A strictly increasing sequence number, from the wall clock so that it
    /// keeps increasing across restarts (a replay of an older process's
    /// message is refused too).
    pub fn next_seq(&mut self, wall_ns: u64) -> u64 {
        self.tx_seq = wall_ns.max(self.tx_seq + 1);
        self.tx_seq
    }

    pub fn start_leading(
        &mut self,
        resource_version: String,
        targets: BTreeMap<String, SocketAddr>,
        heartbeat_until: MonoTime,
        now: MonoTime,
    ) {
        self.leading = Some(Leading {
            resource_version,
            since: now,
            targets,
            heartbeat_until,
            sent: VecDeque::with_capacity(SENT_WINDOW),
            acks: HashMap::new(),
        });
    }

    /// Candidates that acked a heartbeat of this leadership and are not
    /// targets yet: who may be added (rule 3).
    pub fn acked_candidates(&self, now: MonoTime) -> Vec<(String, SocketAddr)> {
        let Some(l) = &self.leading else {
            return Vec::new();
        };
        self.candidates
            .iter()
            .filter(|(id, (_, at))| {
                now.saturating_duration_since(*at) < CANDIDATE_TTL
                    && !l.targets.contains_key(*id)
                    && l.acks.contains_key(*id)
            })
            .map(|(id, (a, _))| (id.clone(), *a))
            .collect()
    }

    /// The heartbeats due now (rule 7: none from `heartbeat_until` on).
    pub fn heartbeats(&mut self, now: MonoTime, wall_ns: u64) -> Vec<(SocketAddr, Message)> {
        let Some(l) = &self.leading else {
            return Vec::new();
        };
        if now >= l.heartbeat_until {
            return Vec::new();
        }
        let mut to: BTreeMap<&String, SocketAddr> =
            l.targets.iter().map(|(k, v)| (k, *v)).collect();
        for (id, (a, at)) in &self.candidates {
            if now.saturating_duration_since(*at) < CANDIDATE_TTL {
                to.entry(id).or_insert(*a);
            }
        }
        let to: Vec<SocketAddr> = to
            .into_iter()
            .filter(|(id, _)| **id != self.me)
            .map(|(_, a)| a)
            .collect();
        if to.is_empty() {
            return Vec::new();
        }
        let n = self.next_seq(wall_ns);
        let t_n = now.as_nanos();
        let Some(l) = &mut self.leading else {
            return Vec::new();
        };
        if l.sent.len() == SENT_WINDOW {
            l.sent.pop_front();
        }
        l.sent.push_back((n, t_n));
        let msg = Message {
            seq: n,
            sender: self.me.clone(),
            body: Body::Heartbeat {
                holder: self.me.clone(),
                resource_version: l.resource_version.clone(),
                t_n,
            },
        };
        to.into_iter().map(|a| (a, msg.clone())).collect()
    }

    /// A Hello to the holder, when the record does not list this agent.
    pub fn hello(&mut self, wall_ns: u64) -> Option<(SocketAddr, Message)> {
        let to = self.hello_to?;
        if self.leading.is_some() {
            return None;
        }
        let seq = self.next_seq(wall_ns);
        Some((
            to,
            Message {
                seq,
                sender: self.me.clone(),
                body: Body::Hello {
                    address: self.my_addr,
                },
            },
        ))
    }

    /// An authenticated message from `src`: record it (rules 1 and 2) and say
    /// what to answer. Returns whether the elector should look again (an ack
    /// or a Hello arrived while leading), and the reply.
    pub fn receive(
        &mut self,
        msg: Message,
        src: SocketAddr,
        now: MonoTime,
        wall_ns: u64,
        stats: &PeerStats,
    ) -> (bool, Option<(SocketAddr, Message)>) {
        let kind = msg.kind();
        if msg.sender == self.me {
            PeerStats::count(&stats.rejected_stale);
            return (false, None);
        }
        let last = self.rx_seq.entry((msg.sender.clone(), kind)).or_insert(0);
        if msg.seq <= *last {
            PeerStats::count(&stats.rejected_replay);
            return (false, None);
        }
        *last = msg.seq;
        PeerStats::count(&stats.received[idx(kind)]);
        match msg.body {
            Body::Heartbeat {
                holder,
                resource_version,
                t_n,
            } => {
                if holder == msg.sender {
                    self.heard.insert(msg.sender.clone(), now);
                }
                if !self.acking || self.leading.is_some() {
                    return (false, None);
                }
                // Rule 1: no promise to a leader older than the newest
                // record we know (variant (i)), nor before our first read.
                match &self.known_rv {
                    Some(k) if !older(&resource_version, k) => {}
                    _ => {
                        PeerStats::count(&stats.rejected_stale);
                        return (false, None);
                    }
                }
                // Rule 1: the promise first, then the ack.
                let until = now.saturating_add(self.promise);
                let p = self.promises.entry(msg.sender.clone()).or_insert(until);
                *p = (*p).max(until);
                let seq = self.next_seq(wall_ns);
                let ack = Message {
                    seq,
                    sender: self.me.clone(),
                    body: Body::Ack {
                        holder,
                        resource_version,
                        n: msg.seq,
                        t_n,
                    },
                };
                (false, Some((src, ack)))
            }
            Body::Ack { holder, n, t_n, .. } => {
                let Some(l) = &mut self.leading else {
                    PeerStats::count(&stats.rejected_stale);
                    return (false, None);
                };
                // Only an ack of a heartbeat this leadership sent counts.
                let ours = holder == self.me
                    && t_n >= l.since.as_nanos()
                    && l.sent.iter().any(|&(sn, st)| sn == n && st == t_n);
                if !ours {
                    PeerStats::count(&stats.rejected_stale);
                    return (false, None);
                }
                let t = MonoTime(t_n);
                let e = l.acks.entry(msg.sender).or_insert(t);
                *e = (*e).max(t);
                (true, None)
            }
            Body::Hello { address } => {
                if self.leading.is_none() {
                    return (false, None);
                }
                self.candidates.insert(msg.sender, (address, now));
                (true, None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: Duration = Duration::from_millis(100);

    fn addr(n: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, n], 7473))
    }

    fn hb(seq: u64, from: &str, t_n: u64) -> Message {
        Message {
            seq,
            sender: from.into(),
            body: Body::Heartbeat {
                holder: from.into(),
                resource_version: "1".into(),
                t_n,
            },
        }
    }

    #[test]
    fn a_member_promises_before_it_acks_and_never_while_taking_over() {
        let stats = PeerStats::default();
        let mut m = State::new("b".into(), addr(2), P, MonoTime(0));
        assert_eq!(
            m.promise_until(None),
            MonoTime(0).saturating_add(P),
            "rule 6"
        );
        // Before its first read an agent acks nothing (rule 1).
        let (_, reply) = m.receive(hb(1, "a", 5), addr(1), MonoTime(1), 1, &stats);
        assert!(reply.is_none());
        m.set_known_rv("1");
        let (_, reply) = m.receive(hb(2, "a", 5), addr(1), MonoTime(1_000_000_000), 1, &stats);
        let (to, ack) = reply.expect("acked");
        assert_eq!(to, addr(1));
        assert!(matches!(ack.body, Body::Ack { n: 2, t_n: 5, .. }));
        let promised = MonoTime(1_000_000_000).saturating_add(P);
        assert_eq!(m.promise_until(None), promised);
        assert_eq!(m.last_heartbeat("a"), Some(MonoTime(1_000_000_000)));
        // Rule 9: a leader that released does not hold us back.
        assert_eq!(m.promise_until(Some("a")), MonoTime(0).saturating_add(P));
        // Replayed: refused and counted, no new promise.
        let (_, reply) = m.receive(hb(2, "a", 5), addr(1), MonoTime(2_000_000_000), 2, &stats);
        assert!(reply.is_none());
        assert_eq!(stats.rejected_replay.load(Ordering::Relaxed), 1);
        assert_eq!(m.promise_until(None), promised);
        // A stale leader (its record is older than ours): no ack (variant i).
        m.set_known_rv("9");
        let (_, reply) = m.receive(hb(3, "a", 6), addr(1), MonoTime(2_500_000_000), 3, &stats);
        assert!(reply.is_none());
        assert_eq!(m.promise_until(None), promised);
        m.set_known_rv("1");
        assert_eq!(m.known_rv.as_deref(), Some("9"), "never goes back");
        // Taking over: no acks, no promises.
        m.set_acking(false);
        let (_, reply) = m.receive(hb(4, "a", 7), addr(1), MonoTime(3_000_000_000), 4, &stats);
        assert!(reply.is_none());
        assert_eq!(m.promise_until(None), promised);
        assert_eq!(m.last_heartbeat("a"), Some(MonoTime(3_000_000_000)));
    }

    #[test]
    fn resource_versions_compare_as_numbers_else_by_equality() {
        assert!(older("9", "10"));
        assert!(!older("10", "9"));
        assert!(!older("10", "10"));
        assert!(older("abc", "abd"));
        assert!(!older("abc", "abc"));
    }

    #[test]
    fn a_leader_counts_only_acks_of_its_own_heartbeats_of_this_leadership() {
        let stats = PeerStats::default();
        let mut l = State::new("a".into(), addr(1), P, MonoTime(0));
        let targets = [("b".to_owned(), addr(2))].into_iter().collect();
        l.start_leading("1".into(), targets, MonoTime(10_000), MonoTime(100));
        let out = l.heartbeats(MonoTime(200), 50);
        assert_eq!(out.len(), 1);
        let (_, m) = &out[0];
        let ack = |n: u64, t_n: u64, holder: &str, seq: u64| Message {
            seq,
            sender: "b".into(),
            body: Body::Ack {
                holder: holder.into(),
                resource_version: "1".into(),
                n,
                t_n,
            },
        };
        // An ack echoing something we never sent (or for another holder).
        let (look, _) = l.receive(ack(m.seq, 199, "a", 1), addr(2), MonoTime(210), 60, &stats);
        assert!(!look);
        let (look, _) = l.receive(ack(m.seq, 200, "c", 2), addr(2), MonoTime(210), 61, &stats);
        assert!(!look);
        assert_eq!(stats.rejected_stale.load(Ordering::Relaxed), 2);
        let (look, _) = l.receive(ack(m.seq, 200, "a", 3), addr(2), MonoTime(210), 62, &stats);
        assert!(look);
        assert_eq!(
            l.leading.as_ref().and_then(|x| x.acks.get("b")),
            Some(&MonoTime(200))
        );
        // Rule 7: no heartbeats from heartbeat_until on.
        assert!(l.heartbeats(MonoTime(10_000), 70).is_empty());
    }

    #[test]
    fn candidates_are_heartbeated_and_become_addable_once_they_ack() {
        let stats = PeerStats::default();
        let mut l = State::new("a".into(), addr(1), P, MonoTime(0));
        l.start_leading("1".into(), BTreeMap::new(), MonoTime(u64::MAX), MonoTime(0));
        assert!(
            l.heartbeats(MonoTime(1), 1).is_empty(),
            "nobody to heartbeat"
        );
        let hello = Message {
            seq: 1,
            sender: "c".into(),
            body: Body::Hello { address: addr(3) },
        };
        let (look, _) = l.receive(hello, addr(3), MonoTime(2), 2, &stats);
        assert!(look);
        assert!(l.acked_candidates(MonoTime(3)).is_empty(), "not acked yet");
        let out = l.heartbeats(MonoTime(4), 3);
        assert_eq!(out[0].0, addr(3));
        let ack = Message {
            seq: 2,
            sender: "c".into(),
            body: Body::Ack {
                holder: "a".into(),
                resource_version: "1".into(),
                n: out[0].1.seq,
                t_n: 4,
            },
        };
        l.receive(ack, addr(3), MonoTime(5), 4, &stats);
        assert_eq!(
            l.acked_candidates(MonoTime(6)),
            vec![("c".to_owned(), addr(3))]
        );
    }
}
