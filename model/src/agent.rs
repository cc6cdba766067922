//! The transitions: which actions are enabled, and what each one does.

use crate::types::{
    Action, Agent, CasKind, Lead, Msg, Pending, Proc, Record, State, Via, api_link, peer_link,
};
use crate::{N, PeerPromises, Variant};

fn id(i: usize) -> u8 {
    u8::try_from(i).unwrap_or(u8::MAX)
}

fn bit(i: usize) -> u8 {
    1 << i
}

/// Every link bit (directed peer links, both API directions).
fn links() -> impl Iterator<Item = u16> {
    (0..N * N + 2 * N)
        .filter(|b| b % (N + 1) != 0 || *b >= N * N)
        .map(|b| 1 << b)
}

impl PeerPromises {
    pub(crate) fn enabled(&self, s: &State, actions: &mut Vec<Action>) {
        if s.now < self.params.max_time {
            actions.push(Action::Tick);
        }
        // A peer message that is never delivered is lost: the explicit drop is
        // only needed to free room (the network is full) and for API messages,
        // whose loss lets the sender give up and send another request.
        let full = s.net.len() >= self.params.max_msgs;
        for &msg in &s.net {
            if self.deliverable(s, msg) {
                actions.push(Action::Deliver(msg, false));
                // Duplicating an ack (merged by max) or an answer (matched to
                // its pending request, ignored after) changes nothing; a
                // duplicated CAS fails on the version (see the doc).
                if matches!(msg, Msg::Hb { .. }) {
                    actions.push(Action::Deliver(msg, true));
                }
            }
            if full || matches!(msg, Msg::Req { .. } | Msg::Resp { .. }) {
                actions.push(Action::Drop(msg));
            }
        }
        for (i, a) in s.agents.iter().enumerate() {
            let me = id(i);
            if a.proc != Proc::Up {
                continue;
            }
            let api_idle = a.pending.is_none() && api_quiet(s, i);
            // Bounded number of Lease writes (a CAS bumps the version).
            let may_write = api_idle && s.store.version < self.params.max_version;
            if let Some(lead) = &a.lead {
                if lead.last_hb.is_none_or(|t| t < self.clock(s, i)) {
                    actions.push(Action::Heartbeat(me));
                }
                // Rule 9: only once the fence could have opened (so every
                // stale fence is closed, through our own promises).
                let settled = self.variant.early_release() || self.clock(s, i) >= lead.answer_from;
                let may_release = self.params.release && self.params.release_by & bit(i) != 0;
                if may_write && a.known.is_some() && may_release && settled {
                    actions.push(Action::Release(me));
                }
                if let (true, Some((record, _))) = (may_write, a.known) {
                    if self.params.renew {
                        actions.push(Action::Renew(me));
                    }
                    let changes = self.params.member_changes;
                    for j in (0..N).filter(|&j| changes && j != i) {
                        if record.lists(j) {
                            actions.push(Action::Remove(me, id(j)));
                        } else if lead.acks[j].is_some() {
                            actions.push(Action::Add(me, id(j)));
                        }
                    }
                }
            } else if api_idle {
                // A read that would return the record already known changes
                // nothing but keeps the agent busy (a slower agent): skipped.
                if a.known.is_none_or(|(k, _)| k != s.store) {
                    actions.push(Action::Read(me));
                }
                let may_take = may_write && self.params.takeover_by & bit(i) != 0;
                let may_acquire = may_write && self.params.acquire_by & bit(i) != 0;
                if let (true, Some((record, _))) = (may_acquire && self.params.release, a.known)
                    && record.holder.is_none()
                    && record.released_by.is_some()
                {
                    actions.push(Action::AcquireReleased(me));
                }
                if let (true, Some((record, observed))) = (may_take, a.known) {
                    if record.lists(i) && record.holder.is_some_and(|h| usize::from(h) != i) {
                        actions.push(Action::FastTakeover(me));
                    }
                    if record.holder != Some(me)
                        && self.clock(s, i) >= observed.saturating_add(self.params.ld)
                    {
                        actions.push(Action::SlowTakeover(me));
                    }
                }
            }
            if a.pending.is_some() && api_quiet(s, i) {
                actions.push(Action::GiveUp(me));
            }
        }
        let more = s.faults < self.params.max_faults;
        let f = self.params.faults;
        for (i, a) in s.agents.iter().enumerate() {
            let me = id(i);
            match a.proc {
                Proc::Up | Proc::Frozen if more && f.crash => actions.push(Action::Crash(me)),
                _ => {}
            }
            match a.proc {
                Proc::Up if more && f.freeze => actions.push(Action::Freeze(me)),
                Proc::Up => {}
                Proc::Frozen => actions.push(Action::Thaw(me)),
                Proc::Down => actions.push(Action::Restart(me)),
            }
        }
        for link in links() {
            if s.cut & link != 0 {
                actions.push(Action::Heal(link));
            } else if more && f.cut {
                actions.push(Action::Cut(link));
            }
        }
    }

    fn deliverable(&self, s: &State, msg: Msg) -> bool {
        let up = |i: u8| s.agents[usize::from(i)].proc == Proc::Up;
        let open = |link: u16| s.cut & link == 0;
        match msg {
            Msg::Hb { from, to, .. } | Msg::Ack { from, to, .. } => {
                up(to) && open(peer_link(from.into(), to.into()))
            }
            Msg::Req { from, .. } => open(api_link(from.into(), true)),
            Msg::Resp { to, .. } => up(to) && open(api_link(to.into(), false)),
        }
    }

    fn send(&self, s: &mut State, msg: Msg) {
        let link = match msg {
            Msg::Hb { from, to, .. } | Msg::Ack { from, to, .. } => {
                peer_link(from.into(), to.into())
            }
            Msg::Req { from, .. } => api_link(from.into(), true),
            Msg::Resp { to, .. } => api_link(to.into(), false),
        };
        if s.cut & link == 0 && s.net.len() < self.params.max_msgs {
            s.net.insert(msg);
        }
    }

    pub(crate) fn step(&self, s: &State, action: Action) -> Option<State> {
        let mut s = s.clone();
        match action {
            Action::Tick => {
                s.now += 1;
                for i in 0..N {
                    self.refresh(&mut s, i);
                }
            }
            Action::Deliver(msg, keep) => {
                if !keep {
                    s.net.remove(&msg);
                }
                self.deliver(&mut s, msg);
            }
            Action::Drop(msg) => {
                s.net.remove(&msg);
            }
            Action::Heartbeat(me) => {
                let i = usize::from(me);
                let t = self.clock(&s, i);
                let v = s.agents[i].known?.0.version;
                s.agents[i].lead.as_mut()?.last_hb = Some(t);
                for j in (0..N).filter(|&j| j != i) {
                    self.send(
                        &mut s,
                        Msg::Hb {
                            from: me,
                            to: id(j),
                            t,
                            v,
                        },
                    );
                }
            }
            Action::Renew(me) => {
                let (record, _) = s.agents[usize::from(me)].known?;
                self.cas(&mut s, me, CasKind::Renew, record, record);
            }
            Action::Remove(me, m) => {
                let i = usize::from(me);
                let (record, _) = s.agents[i].known?;
                let new = Record {
                    members: record.members & !bit(m.into()),
                    ..record
                };
                if self.variant == Variant::DropBeforeRemoval {
                    s.agents[i].lead.as_mut()?.fence_members &= !bit(m.into());
                }
                self.cas(&mut s, me, CasKind::Remove(m), record, new);
                self.refresh(&mut s, i);
            }
            Action::Add(me, m) => {
                let i = usize::from(me);
                let (record, _) = s.agents[i].known?;
                let new = Record {
                    members: record.members | bit(m.into()),
                    ..record
                };
                // Counted from the moment the CAS is sent (it acked, so the
                // fence does not close).
                s.agents[i].lead.as_mut()?.fence_members |= bit(m.into());
                self.cas(&mut s, me, CasKind::Add(m), record, new);
                self.refresh(&mut s, i);
            }
            Action::Read(me) => {
                let sent = self.clock(&s, me.into());
                s.agents[usize::from(me)].pending = Some(Pending::Read { sent });
                self.send(
                    &mut s,
                    Msg::Req {
                        from: me,
                        sent,
                        cas: None,
                    },
                );
            }
            Action::GiveUp(me) => s.agents[usize::from(me)].pending = None,
            Action::FastTakeover(me) | Action::SlowTakeover(me) => {
                let (record, _) = s.agents[usize::from(me)].known?;
                let members = match record.holder {
                    Some(h) => record.members & !bit(h.into()),
                    None => record.members,
                };
                let new = Record {
                    holder: Some(me),
                    members,
                    ..record
                };
                let kind = if matches!(action, Action::FastTakeover(_)) {
                    CasKind::Fast
                } else {
                    CasKind::Slow
                };
                self.cas(&mut s, me, kind, record, new);
            }
            Action::Release(me) => {
                let i = usize::from(me);
                let clock = self.clock(&s, i);
                let (record, _) = s.agents[i].known?;
                let a = &mut s.agents[i];
                a.lead.as_ref()?;
                // Stop leading: no more heartbeats or refreshes; ack again.
                a.lead = None;
                if self.variant != Variant::ReleaseBeforeFenceClosed {
                    // The fence is closed before the release is sent.
                    a.fence = a.fence.min(clock);
                }
                let new = Record {
                    holder: None,
                    members: 0,
                    ..record
                };
                self.cas(&mut s, me, CasKind::Release, record, new);
            }
            Action::AcquireReleased(me) => {
                let (record, _) = s.agents[usize::from(me)].known?;
                let by = record.released_by?;
                let new = Record {
                    holder: Some(me),
                    members: bit(me.into()),
                    ..record
                };
                self.cas(&mut s, me, CasKind::Acquire(by), record, new);
            }
            Action::Freeze(me) => self.fault(&mut s, me, |a| a.proc = Proc::Frozen),
            // Thaw, restart and heal end a fault; only its start is counted.
            Action::Thaw(me) => s.agents[usize::from(me)].proc = Proc::Up,
            Action::Crash(me) => self.fault(&mut s, me, |a| {
                a.proc = Proc::Down;
                a.known = None;
                a.lead = None;
                a.pending = None;
            }),
            Action::Restart(me) => {
                let i = usize::from(me);
                let clock = self.clock(&s, i);
                let wait = if self.variant == Variant::RestartNoWait {
                    0
                } else {
                    clock + self.params.p
                };
                let a = &mut s.agents[i];
                a.proc = Proc::Up;
                // Adopt the pins and fence every entry first.
                a.fence = a.fence.min(clock);
                // A new process: no promise remembered, the floor covers them.
                a.promises = [0; N];
                a.floor = wait;
            }
            Action::Cut(link) => {
                s.cut |= link;
                s.faults += 1;
            }
            Action::Heal(link) => s.cut &= !link,
        }
        Some(s)
    }

    fn fault(&self, s: &mut State, me: u8, f: impl FnOnce(&mut Agent)) {
        f(&mut s.agents[usize::from(me)]);
        s.faults += 1;
    }

    /// Send a CAS of `expect` -> `new` (the version bumped).
    fn cas(&self, s: &mut State, me: u8, kind: CasKind, expect: Record, new: Record) {
        let sent = self.clock(s, me.into());
        let new = Record {
            version: expect.version + 1,
            released_by: (kind == CasKind::Release).then_some(me),
            ..new
        };
        s.agents[usize::from(me)].pending = Some(Pending::Cas { sent, kind, new });
        let cas = Some((expect.version, new));
        self.send(
            s,
            Msg::Req {
                from: me,
                sent,
                cas,
            },
        );
    }

    fn deliver(&self, s: &mut State, msg: Msg) {
        match msg {
            Msg::Hb { from, to, t, v } => {
                let i = usize::from(to);
                let clock = self.clock(s, i);
                let a = &mut s.agents[i];
                // Rule 1: no ack for a heartbeat older than the newest record
                // known (a successor never props up the leadership it
                // replaced), nor before the first read after a start.
                let current = self.variant == Variant::AckStaleHeartbeats
                    || a.known.is_some_and(|(k, _)| v >= k.version);
                if current && a.lead.is_none() && !a.pending.is_some_and(|p| p.taking_over()) {
                    // The promise is recorded before the ack leaves, per
                    // leader (one slot when no rule reads them apart).
                    let slot = if self.params.release { from.into() } else { 0 };
                    let promise = &mut a.promises[slot];
                    *promise = (*promise).max(clock + self.params.p);
                    self.send(
                        s,
                        Msg::Ack {
                            from: to,
                            to: from,
                            t,
                        },
                    );
                }
            }
            Msg::Ack { from, to, t } => {
                let i = usize::from(to);
                if let Some(lead) = s.agents[i].lead.as_mut() {
                    let ack = &mut lead.acks[usize::from(from)];
                    *ack = Some(ack.map_or(t, |old| old.max(t)));
                    self.refresh(s, i);
                }
            }
            Msg::Req { from, sent, cas } => {
                let (ok, record) = match cas {
                    None => (true, s.store),
                    Some((expect, new)) if expect == s.store.version => {
                        s.store = new;
                        (true, new)
                    }
                    Some(_) => (false, s.store),
                };
                self.send(
                    s,
                    Msg::Resp {
                        to: from,
                        sent,
                        ok,
                        record,
                    },
                );
            }
            Msg::Resp {
                to,
                sent,
                ok,
                record,
            } => self.answer(s, usize::from(to), sent, ok, record),
        }
    }

    /// An API answer reaches agent `i`.
    fn answer(&self, s: &mut State, i: usize, sent: u16, ok: bool, record: Record) {
        let clock = self.clock(s, i);
        let a = &mut s.agents[i];
        let Some(pending) = a.pending.filter(|p| p.sent() == sent) else {
            return; // a duplicate or an answer to an abandoned request
        };
        a.pending = None;
        if a.known.is_none_or(|(k, _)| record.version > k.version) {
            a.known = Some((record, clock));
        }
        let me = id(i);
        match pending {
            Pending::Read { .. } => {
                if a.lead.is_some() && record.holder != Some(me) {
                    step_down(a);
                }
            }
            Pending::Cas {
                kind: CasKind::Release,
                ..
            } => {
                // Closed already, or (variant h) only now.
                a.fence = a.fence.min(clock);
            }
            Pending::Cas { .. } if !ok => {
                if a.lead.is_some() {
                    step_down(a);
                }
            }
            Pending::Cas { kind, .. } => {
                let deadline = sent + self.params.rd;
                match kind {
                    CasKind::Fast | CasKind::Slow | CasKind::Acquire(_) => {
                        let (via, except) = match kind {
                            CasKind::Fast => (Via::Fast, None),
                            CasKind::Acquire(l) => (Via::Released, Some(l)),
                            _ => (Via::Slow, None),
                        };
                        let ignore_all = self.variant == Variant::AnswerRightAfterCas
                            || (via == Via::Released
                                && self.variant == Variant::IgnoreAllPromisesAfterRelease);
                        a.lead = Some(Lead {
                            via,
                            // Rules 4, 5 and 9: no earlier than our own
                            // promises (but to a leader that released) + eps.
                            answer_from: if ignore_all {
                                0
                            } else {
                                a.promise_until(except) + self.params.eps
                            },
                            api_deadline: deadline,
                            acks: [None; N],
                            fence_members: record.members & !bit(i),
                            last_hb: None,
                        });
                    }
                    CasKind::Release => {}
                    CasKind::Renew | CasKind::Add(_) | CasKind::Remove(_) => {
                        let Some(lead) = a.lead.as_mut() else { return };
                        lead.api_deadline = lead.api_deadline.max(deadline);
                        if let CasKind::Remove(m) = kind {
                            // Only now may the fence stop waiting for m.
                            lead.fence_members &= !bit(m.into());
                        }
                    }
                }
                self.refresh(s, i);
            }
        }
    }

    /// A running leader writes its fence: `min(S_k + rd, min over fence
    /// members of T_m + P - eps)`, closed before `answer_from`.
    fn refresh(&self, s: &mut State, i: usize) {
        let clock = self.clock(s, i);
        let (p, eps) = (self.params.p, self.params.eps);
        let a = &mut s.agents[i];
        if a.proc != Proc::Up {
            return;
        }
        let Some(lead) = &a.lead else { return };
        if clock < lead.answer_from {
            a.fence = a.fence.min(clock);
            return;
        }
        let unacked = if self.variant == Variant::UnackedMemberIgnored {
            u16::MAX
        } else {
            0
        };
        let mut deadline = lead.api_deadline;
        for m in (0..N).filter(|&m| lead.fence_members & bit(m) != 0) {
            let promised = lead.acks[m].map_or(unacked, |t| (t + p).saturating_sub(eps));
            deadline = deadline.min(promised);
        }
        a.fence = deadline;
    }
}

/// No request of agent `i` and no answer to it in flight.
fn api_quiet(s: &State, i: usize) -> bool {
    !s.net.iter().any(|m| match *m {
        Msg::Req { from, .. } => usize::from(from) == i,
        Msg::Resp { to, .. } => usize::from(to) == i,
        _ => false,
    })
}

/// A leader that learns it no longer holds the Lease closes its fence.
fn step_down(a: &mut Agent) {
    a.lead = None;
    a.fence = 0;
}
