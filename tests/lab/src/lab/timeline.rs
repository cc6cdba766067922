//! A run's timeline of events, and the client's view added to a run record.

use std::time::{Duration, Instant, SystemTime};

use super::record::{Event, RunRecord};
use crate::packet_socket::format_mac;

/// Events of one run: times since the run started.
pub(super) struct Timeline {
    pub(super) start: Instant,
    pub(super) wall: SystemTime,
    pub(super) events: Vec<Event>,
}

impl Timeline {
    pub(super) fn new() -> Self {
        Self {
            start: Instant::now(),
            wall: SystemTime::now(),
            events: Vec::new(),
        }
    }

    pub(super) fn now(&self) -> Duration {
        self.start.elapsed()
    }

    pub(super) fn at(&self, t: Instant) -> Duration {
        t.saturating_duration_since(self.start)
    }

    pub(super) fn push(&mut self, what: impl Into<String>) {
        let at = self.now();
        self.push_at(at, what);
    }

    pub(super) fn push_at(&mut self, at: Duration, what: impl Into<String>) {
        self.events.push(Event {
            at,
            what: what.into(),
        });
    }
}

/// Add what the client saw: every change of the MAC answering ARP, the
/// first ARP reply and the first TCP success from a new node after the fault.
pub(super) fn client_events(r: &mut RunRecord) {
    let mut events = Vec::new();
    let mut last: Option<[u8; 6]> = None;
    let mut silent_since: Option<std::time::Duration> = None;
    for p in &r.arp {
        match p.replies.first() {
            Some(reply) => {
                if let Some(s) = silent_since.take()
                    && p.sent >= r.fault_at
                {
                    events.push(Event {
                        at: s,
                        what: "client: ARP for the VIP unanswered from here".into(),
                    });
                }
                if last != Some(reply.mac) {
                    let who = r.node_of(&reply.mac).unwrap_or("unknown").to_owned();
                    events.push(Event {
                        at: reply.at,
                        what: format!("client: ARP answered by {who} ({})", format_mac(&reply.mac)),
                    });
                    last = Some(reply.mac);
                }
                if p.replies.iter().any(|x| x.mac != reply.mac) {
                    events.push(Event {
                        at: reply.at,
                        what: "client: SPLIT BRAIN: two MACs answered one probe".into(),
                    });
                }
            }
            None => {
                if silent_since.is_none() {
                    silent_since = Some(p.sent);
                }
            }
        }
    }
    let mut last_node: Option<String> = None;
    let mut failing_since: Option<Duration> = None;
    for a in &r.tcp {
        match &a.node {
            Some(n) => {
                if let Some(s) = failing_since.take()
                    && a.started >= r.fault_at
                {
                    events.push(Event {
                        at: s,
                        what: "client: TCP to the VIP failing from here".into(),
                    });
                }
                if last_node.as_ref() != Some(n) {
                    events.push(Event {
                        at: a.started + a.took,
                        what: format!("client: TCP answered by {n}"),
                    });
                    last_node = Some(n.clone());
                }
            }
            None => {
                if failing_since.is_none() {
                    failing_since = Some(a.started);
                }
            }
        }
    }
    r.events.extend(events);
}
