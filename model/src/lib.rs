//! A stateright model of the peer-promise fast path (docs/peer-promises.md).
//!
//! Three agents, one Lease store with a linearizable compare-and-swap on a
//! version, and a network that loses, duplicates and reorders every message
//! (heartbeats, acks, API requests and answers). Real time advances in ticks;
//! each node's CLOCK_MONOTONIC advances by its own rate per tick (10 units is
//! nominal, so rates 9 and 11 are a clock-rate drift of rho = 10 %). Processes
//! freeze, thaw, crash and restart; the kernel fence (a deadline on the node's
//! own clock) survives all of them. Any directed link between two agents and
//! either direction between an agent and the API can be cut and healed.
//!
//! The one invariant: never two agents answering at the same real time, where
//! an agent answers while its kernel fence deadline is ahead of its clock.
//!
//! Timers that only serve liveness (the heartbeat timeout `H`, the leader's
//! "this member is silent" threshold, the renew period) are not modelled as
//! timers: a member may start a fast takeover, and a leader may remove a member
//! or renew, at ANY moment. That is a superset of every choice of `H` and
//! thresholds, so safety shown here holds for all of them.

mod agent;
mod types;

pub use types::{
    Action, Agent, CasKind, Lead, Msg, Pending, Proc, Record, State, Via, api_link, peer_link,
};

use stateright::{Model, Property};

/// Number of agents in the model.
pub const N: usize = 3;

/// Clock units per real tick at the nominal rate.
pub const NOMINAL_RATE: u16 = 10;

/// The protocol as specified, or one deliberately broken variant of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Variant {
    /// docs/peer-promises.md as written.
    Correct,
    /// (a) The new leader answers right after its takeover CAS, without waiting
    /// for its own last promise + eps.
    AnswerRightAfterCas,
    /// (b) The leader stops counting a silent member in its fence when it SENDS
    /// the removal CAS, not when that CAS succeeded.
    DropBeforeRemoval,
    /// (c) eps = 0 (with the clock-rate drift of the parameters).
    NoEpsilon,
    /// (d) A restarted agent forgets its promises and does not wait P.
    RestartNoWait,
    /// (e) A member that has not acked yet does not hold the leader's fence
    /// shut (the new leader opens on `S + rd` before its members acked it).
    UnackedMemberIgnored,
    /// (f) Rule 9 without its wait: a leader releases as soon as its fence is
    /// closed, also before its own `answer_from` (e.g. shut down right after
    /// a fast takeover).
    ReleaseBeforeAnswerFrom,
    /// (g) The acquirer of a released record answers at once, ignoring its
    /// promises to every leader (the leader released before `answer_from`).
    IgnoreAllPromisesAfterRelease,
    /// (h) The leader sends the release CAS first and closes its fence only
    /// when the answer arrives.
    ReleaseBeforeFenceClosed,
    /// (i) Rule 1 as first written: an agent acks every heartbeat, also one
    /// older than the newest record it knows (a stale leader's, even after
    /// this agent replaced that leader, and before its first read).
    AckStaleHeartbeats,
}

impl Variant {
    /// Whether a leader may release before its own `answer_from`.
    fn early_release(self) -> bool {
        matches!(
            self,
            Self::ReleaseBeforeAnswerFrom | Self::IgnoreAllPromisesAfterRelease
        )
    }
}

/// Time constants (clock units; 10 units is one real tick at the nominal
/// rate) and the bounds that keep the state space finite.
#[derive(Clone, Debug)]
pub struct Params {
    /// A member's promise: no answer before receive time + `p`.
    pub p: u16,
    /// Clock-rate slack, subtracted by the leader and added by a new leader.
    pub eps: u16,
    /// Renew deadline: a CAS sent at `S` lets the fence run until `S + rd`.
    pub rd: u16,
    /// Lease duration: the slow path acquires only at observed + `ld`.
    pub ld: u16,
    /// Clock rates per agent, one initial state per entry.
    pub rates: Vec<[u16; N]>,
    /// Real time bound (ticks).
    pub max_time: u8,
    /// Bound on faults begun (freeze, crash, link cut); each may end (thaw,
    /// restart, heal) at any time without counting.
    pub max_faults: u8,
    /// Lease writes are bounded: no CAS once the store is at this version
    /// (the initial record is version 1).
    pub max_version: u8,
    /// Which agents may take over (bit set): a test that hunts one bug
    /// scopes the search to the behaviours that bug needs.
    pub takeover_by: u8,
    /// Whether the leader renews and changes the member list.
    pub renew: bool,
    pub member_changes: bool,
    /// Which faults may begin.
    pub faults: Faults,
    /// Messages in flight at most; a send beyond it is a loss.
    pub max_msgs: usize,
    /// Rule 9: leaders may release, and a released record may be acquired
    /// at once. Off, the state is as before rule 9 (one promise slot).
    pub release: bool,
    /// Which leaders may release, and which agents may acquire a released
    /// record (bit sets).
    pub release_by: u8,
    pub acquire_by: u8,
    /// The members of the initial record (agent 0, the holder, always is).
    pub initial_members: u8,
}

impl Params {
    /// The bounded configuration that `cargo test -p vip-model` checks: P is
    /// 2 nominal ticks, eps = rho * P with rho = 10 % (rates 9..11), the slow
    /// path with rd < ld - margin as in docs/design.md.
    pub fn small() -> Self {
        Self {
            p: 20,
            eps: 2,
            rd: 30,
            ld: 40,
            rates: vec![[9, 11, 10]],
            max_time: 5,
            max_faults: 1,
            max_version: 3,
            takeover_by: 0b111,
            renew: true,
            member_changes: true,
            faults: Faults::ALL,
            max_msgs: 3,
            release: false,
            release_by: 0b111,
            acquire_by: 0b111,
            initial_members: 0b111,
        }
    }
}

/// The kinds of fault the checker may begin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Faults {
    pub freeze: bool,
    pub crash: bool,
    /// Cut any directed peer link or either API direction of an agent.
    pub cut: bool,
}

impl Faults {
    pub const ALL: Self = Self {
        freeze: true,
        crash: true,
        cut: true,
    };
    pub const NONE: Self = Self {
        freeze: false,
        crash: false,
        cut: false,
    };
}

/// The model: one protocol variant with its parameters.
#[derive(Clone, Debug)]
pub struct PeerPromises {
    pub variant: Variant,
    pub params: Params,
}

impl PeerPromises {
    pub fn new(variant: Variant, mut params: Params) -> Self {
        if variant == Variant::NoEpsilon {
            params.eps = 0;
        }
        Self { variant, params }
    }

    /// Agent `i`'s CLOCK_MONOTONIC in `state` (all clocks start at 0; offsets
    /// do not matter because no time is ever compared across nodes).
    pub fn clock(&self, state: &State, i: usize) -> u16 {
        self.rate(state, i) * u16::from(state.now)
    }

    fn rate(&self, state: &State, i: usize) -> u16 {
        self.params.rates[usize::from(state.rates)][i]
    }

    /// Whether agent `i`'s kernel fence is open (it answers for the VIP).
    pub fn answering(&self, state: &State, i: usize) -> bool {
        state.agents[i].fence > self.clock(state, i)
    }

    /// Whether an agent that became leader `via` answers.
    pub fn answers_via(&self, state: &State, via: Via) -> bool {
        (0..N).any(|i| {
            self.answering(state, i) && state.agents[i].lead.as_ref().is_some_and(|l| l.via == via)
        })
    }

    /// The agents answering in `state`.
    pub fn answerers(&self, state: &State) -> Vec<usize> {
        (0..N).filter(|&i| self.answering(state, i)).collect()
    }
}

impl Model for PeerPromises {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        (0..self.params.rates.len())
            .map(|r| State::initial(&self.params, u8::try_from(r).unwrap_or(u8::MAX)))
            .collect()
    }

    fn actions(&self, state: &State, actions: &mut Vec<Action>) {
        self.enabled(state, actions);
    }

    fn next_state(&self, state: &State, action: Action) -> Option<State> {
        self.step(state, action)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always("no split brain", |m: &Self, s: &State| {
                m.answerers(s).len() <= 1
            }),
            Property::sometimes("fast takeover answers", |m: &Self, s: &State| {
                m.answers_via(s, Via::Fast)
            }),
            Property::sometimes("released record acquirer answers", |m: &Self, s: &State| {
                m.answers_via(s, Via::Released)
            }),
        ]
    }

    fn within_boundary(&self, state: &State) -> bool {
        state.now <= self.params.max_time
    }
}

impl PeerPromises {
    /// A trace, one line per step: the action, then real time, each agent's
    /// clock / fence / role, and who answers.
    pub fn explain(&self, path: &stateright::Path<State, Action>) -> String {
        let mut out = String::new();
        for (state, action) in path.clone().into_vec() {
            let agents: Vec<String> = (0..N)
                .map(|i| {
                    let a = &state.agents[i];
                    let role = match (&a.lead, a.proc) {
                        (_, Proc::Down) => "down".to_owned(),
                        (Some(l), p) => format!("lead {:?}{}", l.via, frozen(p)),
                        (None, p) if self.params.release => {
                            format!("promise<{:?} floor {}{}", a.promises, a.floor, frozen(p))
                        }
                        (None, p) => format!("promise<{}{}", a.promise_until(None), frozen(p)),
                    };
                    format!(
                        "a{i}[clk {} fence {} {role}]",
                        self.clock(&state, i),
                        a.fence
                    )
                })
                .collect();
            let released = match state.store.released_by {
                Some(l) => format!(" released by {l}"),
                None => String::new(),
            };
            out.push_str(&format!(
                "  t={} v{} holder {:?}{released} members {:03b} | {} | answering {:?}\n",
                state.now,
                state.store.version,
                state.store.holder,
                state.store.members,
                agents.join(" "),
                self.answerers(&state)
            ));
            if let Some(action) = action {
                out.push_str(&format!("    -> {action:?}\n"));
            }
        }
        out
    }
}

fn frozen(p: Proc) -> &'static str {
    if p == Proc::Frozen { " frozen" } else { "" }
}
