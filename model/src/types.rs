//! State, messages and actions of the model.

use std::collections::BTreeSet;

use crate::{N, Params};

/// The Lease record: holder, the fast-path member list (a bit set over agent
/// ids) and the resourceVersion that every write bumps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Record {
    pub holder: Option<u8>,
    pub members: u8,
    pub version: u8,
    /// Rule 9: a release by leader `l` writes holder `None`, members 0 and
    /// `released_by: Some(l)`; every other write clears it.
    pub released_by: Option<u8>,
}

impl Record {
    pub fn lists(&self, i: usize) -> bool {
        self.members & (1 << i) != 0
    }
}

/// What the agent's process is doing. The kernel fence runs in all three.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Proc {
    Up,
    Frozen,
    Down,
}

/// How an agent became leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Via {
    /// It held the Lease in the initial state.
    Initial,
    /// Fast takeover: a listed member, CAS against the latest record listing it.
    Fast,
    /// Slow path: CAS at observed + lease duration.
    Slow,
    /// Rule 9: at once, by CAS on a record released by another leader.
    Released,
}

/// Leader-only state.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Lead {
    pub via: Via,
    /// The fence opens no earlier than this (own clock): the agent's last
    /// promise + eps when it took over.
    pub answer_from: u16,
    /// `S_k + rd` of the last successful CAS (sent at `S_k`).
    pub api_deadline: u16,
    /// Per agent, the send time of the latest heartbeat it acked to us.
    pub acks: [Option<u16>; N],
    /// The members the fence waits for (bit set).
    pub fence_members: u8,
    /// Clock of the last heartbeat round (one per tick at most).
    pub last_hb: Option<u16>,
}

/// The one API request an agent may have outstanding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CasKind {
    Renew,
    Remove(u8),
    Add(u8),
    Fast,
    Slow,
    /// Acquire a record released by this leader (rule 9), at once.
    Acquire(u8),
    /// Give the Lease back (rule 9): holder none, released by us.
    Release,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Pending {
    Read {
        sent: u16,
    },
    Cas {
        sent: u16,
        kind: CasKind,
        new: Record,
    },
}

impl Pending {
    pub fn sent(&self) -> u16 {
        match *self {
            Self::Read { sent } | Self::Cas { sent, .. } => sent,
        }
    }

    /// A member that started a takeover stops acking.
    pub fn taking_over(&self) -> bool {
        matches!(
            self,
            Self::Cas {
                kind: CasKind::Fast | CasKind::Slow | CasKind::Acquire(_),
                ..
            }
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Agent {
    pub proc: Proc,
    /// The kernel fence: answers while `fence > clock`. Survives freeze and crash.
    pub fence: u16,
    /// Per leader whose heartbeat this agent acked: receive time + P of the
    /// newest (own clock). Only rule 9 reads one leader's entry; without
    /// releases (`Params::release` off) every promise is kept in slot 0, the
    /// maximum being all that any rule reads (fewer distinct states).
    pub promises: [u16; N],
    /// The restart floor (rule 6): start + P, which counts for every leader.
    pub floor: u16,
    /// The latest record seen and the local time it was first observed.
    pub known: Option<(Record, u16)>,
    pub lead: Option<Lead>,
    pub pending: Option<Pending>,
}

impl Agent {
    /// Rules 5, 6 and 9: no answer before this (own clock), the latest
    /// promise to any leader but `except`, and the restart floor.
    pub fn promise_until(&self, except: Option<u8>) -> u16 {
        (0..N)
            .filter(|&l| except.is_none_or(|x| usize::from(x) != l))
            .map(|l| self.promises[l])
            .fold(self.floor, u16::max)
    }
}

/// Messages. Peer messages are authenticated (the model never forges one) and
/// carry the sender's send time as sequence number; the API answers carry the
/// request's send time so a late answer is matched to its request only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Msg {
    /// `v`: the version of the sender's latest successful write.
    Hb {
        from: u8,
        to: u8,
        t: u16,
        v: u8,
    },
    Ack {
        from: u8,
        to: u8,
        t: u16,
    },
    /// `cas: None` is a read.
    Req {
        from: u8,
        sent: u16,
        cas: Option<(u8, Record)>,
    },
    Resp {
        to: u8,
        sent: u16,
        ok: bool,
        record: Record,
    },
}

/// Link bit for the directed peer link `from -> to`.
pub fn peer_link(from: usize, to: usize) -> u16 {
    1 << (from * N + to)
}

/// Link bit for agent `i` -> API (`to_api`) or API -> agent `i`.
pub fn api_link(i: usize, to_api: bool) -> u16 {
    1 << (N * N + 2 * i + usize::from(!to_api))
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct State {
    /// Real time in ticks.
    pub now: u8,
    /// Index into `Params::rates`.
    pub rates: u8,
    pub faults: u8,
    pub store: Record,
    pub agents: [Agent; N],
    /// Messages in flight: a set, so delivering may keep a copy (duplication)
    /// and any one may go next (reordering) or be dropped (loss).
    pub net: BTreeSet<Msg>,
    /// Cut links (`peer_link`, `api_link` bits).
    pub cut: u16,
}

impl State {
    /// Steady state at time 0: agent 0 holds the Lease (renewed at 0), all
    /// three are members, 1 and 2 acked heartbeat 0 at time 0.
    pub fn initial(params: &Params, rates: u8) -> Self {
        let members = params.initial_members | 1;
        let record = Record {
            holder: Some(0),
            members,
            version: 1,
            released_by: None,
        };
        // A member acked heartbeat 0 (its promise to leader 0 is P); an
        // agent not listed never did.
        let follower = |i: usize| Agent {
            proc: Proc::Up,
            fence: 0,
            promises: if record.lists(i) {
                [params.p, 0, 0]
            } else {
                [0; N]
            },
            floor: 0,
            known: Some((record, 0)),
            lead: None,
            pending: None,
        };
        let acks = [0, 1, 2].map(|i| (i > 0 && record.lists(i)).then_some(0));
        let leader = Agent {
            fence: params.rd.min(params.p - params.eps),
            promises: [0; N],
            lead: Some(Lead {
                via: Via::Initial,
                answer_from: 0,
                api_deadline: params.rd,
                acks,
                fence_members: members & !1,
                last_hb: Some(0),
            }),
            ..follower(0)
        };
        Self {
            now: 0,
            rates,
            faults: 0,
            store: record,
            agents: [leader, follower(1), follower(2)],
            net: BTreeSet::new(),
            cut: 0,
        }
    }
}

/// Everything that can happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Real time advances one tick; every clock by its rate.
    Tick,
    /// Deliver a message; `keep` leaves a copy in flight (duplication).
    Deliver(Msg, bool),
    Drop(Msg),
    /// Leader `i` sends heartbeats to every other agent.
    Heartbeat(u8),
    /// Leader `i` renews (CAS, same holder and members).
    Renew(u8),
    /// Leader removes a member by CAS.
    Remove(u8, u8),
    /// Leader adds an agent that acked by CAS.
    Add(u8, u8),
    /// A non-leader reads the record.
    Read(u8),
    /// An agent whose request and answer are both lost gives up on it.
    GiveUp(u8),
    FastTakeover(u8),
    SlowTakeover(u8),
    /// Rule 9: a leader closes its fence, then CASes holder none, released
    /// by itself, members none.
    Release(u8),
    /// Rule 9: CAS on a known record released by another agent, at once.
    AcquireReleased(u8),
    Freeze(u8),
    Thaw(u8),
    Crash(u8),
    Restart(u8),
    Cut(u16),
    Heal(u16),
}
