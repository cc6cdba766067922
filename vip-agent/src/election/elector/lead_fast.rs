//! The leader's half with the fast path on (docs/peer-promises.md, rules 2,
//! 3 and 7): heartbeat the members, hold the fence open on their promises,
//! renew once per retry period, add members that acked and remove members
//! whose acks stopped, each by CAS. The write runs beside the fence updates,
//! so a slow API server never starves the fence of promises.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::pin::Pin;

use super::*;
use crate::peer::fence;

/// A candidate removed or added is not added again before this (a member
/// whose acks come and go costs at most 2 writes per period).
const REJOIN_EVERY: Duration = Duration::from_secs(3);
/// After a failed write, the next one: soon, because with the fast path the
/// retry period is half the renew deadline.
const RETRY_FAILED_WRITE: Duration = Duration::from_millis(200);

type Write<'a> = Pin<Box<dyn Future<Output = Result<Lease, StoreError>> + Send + 'a>>;

/// A write in flight: the future, when it was sent, the members it writes.
struct InFlight<'a> {
    fut: Write<'a>,
    sent: MonoTime,
    members: BTreeMap<String, SocketAddr>,
}

async fn in_flight(w: &mut Option<InFlight<'_>>) -> Result<Lease, StoreError> {
    match w {
        Some(w) => (&mut w.fut).await,
        None => std::future::pending().await,
    }
}

fn others(members: &BTreeMap<String, SocketAddr>, me: &str) -> BTreeMap<String, SocketAddr> {
    members
        .iter()
        .filter(|(id, _)| id.as_str() != me)
        .map(|(id, a)| (id.clone(), *a))
        .collect()
}

impl<'a, S: LeaseStore, F: Fence, C: Clock> Elector<'a, S, F, C> {
    pub(super) async fn lead_fast_phase(
        &mut self,
        peers: &Peers,
        mut lease: Lease,
        sent: MonoTime,
        answer_from: MonoTime,
    ) -> Result<Next, ElectionError> {
        self.watch = None;
        let cfg: &'a ElectionConfig = self.cfg;
        let store: &'a S = self.store;
        let timing = peers.timing();
        let me = cfg.identity.clone();
        let promise_less_margin = timing.promise.saturating_sub(timing.margin);
        crate::timing::lease_acquired();
        self.release_not_before = Some(answer_from);
        // The members our successful writes listed, and the ones the fence
        // waits for: those plus any in a write not known to have failed
        // (rule 3: an add counts from its send, a removal from its success).
        let mut members = peer::record::members(&lease).unwrap_or_default();
        let mut waits_for: BTreeMap<String, SocketAddr> = others(&members, &me);
        let mut s_k = sent;
        let rv = |l: &Lease| l.metadata.resource_version.clone().unwrap_or_default();
        let hb_until = |s: MonoTime| {
            s.saturating_add(cfg.renew_deadline)
                .saturating_sub(timing.promise)
        };
        peers.start_leading(rv(&lease), waits_for.clone(), hb_until(s_k), self.now());
        let mut changes = peers.subscribe();
        let mut next_renew = sent.saturating_add(cfg.retry_period);
        let mut write: Option<InFlight<'a>> = None;
        let mut rejoin_at: BTreeMap<String, MonoTime> = BTreeMap::new();
        let mut open_until: Option<MonoTime> = None;
        let mut lapsed_logged = false;
        let mut counted = false;
        info!(
            identity = %me,
            members = ?members.keys().collect::<Vec<_>>(),
            answer_in = ?answer_from.saturating_duration_since(self.now()),
            "leading (fast path)"
        );
        loop {
            let now = self.now();
            let (since, acks) = peers.acks();
            let api_deadline = s_k.saturating_add(cfg.renew_deadline);
            // Rule 3: remove the silent, add those that acked; and renew.
            if write.is_none() {
                let wait_ids: BTreeSet<String> = waits_for.keys().cloned().collect();
                let stale = fence::stale(now, since, &wait_ids, &acks, timing.remove_after());
                let adds: Vec<(String, SocketAddr)> = peers
                    .acked_candidates(now)
                    .into_iter()
                    .filter(|(id, _)| rejoin_at.get(id).is_none_or(|t| now >= *t))
                    .collect();
                if now >= next_renew || !stale.is_empty() || !adds.is_empty() {
                    let mut desired = members.clone();
                    desired.insert(me.clone(), peers.my_addr());
                    for m in &stale {
                        desired.remove(m);
                        rejoin_at.insert(m.clone(), now.saturating_add(REJOIN_EVERY));
                        warn!(identity = %me, member = %m, event = events::PEER_MEMBER_REMOVED, "removing a member whose acks stopped");
                    }
                    for (id, a) in &adds {
                        desired.insert(id.clone(), *a);
                        waits_for.insert(id.clone(), *a);
                        rejoin_at.insert(id.clone(), now.saturating_add(REJOIN_EVERY));
                        info!(identity = %me, member = %id, address = %a, event = events::PEER_MEMBER_ADDED, "adding a member");
                    }
                    peers.set_targets(waits_for.clone());
                    let mut req = lease::renew(&lease, cfg.lease_duration, self.clock.wall());
                    peer::record::write(
                        &mut req,
                        &peer::record::Peers {
                            holder: me.clone(),
                            released_by: None,
                            members: desired.clone(),
                        },
                    );
                    let timeout = cfg
                        .request_timeout()
                        .min(api_deadline.saturating_duration_since(now));
                    let status = self.status.clone();
                    write = Some(InFlight {
                        fut: Box::pin(
                            async move { call(&status, store.replace(&req), timeout).await },
                        ),
                        sent: now,
                        members: desired,
                    });
                    // Not again before this write is answered.
                    next_renew = MonoTime(u64::MAX);
                }
            }
            // Rule 2: the fence (after the adds above, before their write
            // is sent: an added member counts from the send).
            let wait_ids: BTreeSet<String> = waits_for.keys().cloned().collect();
            let computed = fence::deadline(
                now,
                answer_from,
                api_deadline,
                &wait_ids,
                &acks,
                promise_less_margin,
            );
            if computed.is_none() && open_until.is_some_and(|t| t > now) {
                // An added member's older promise: close at once.
                if let Err(e) = self.fence.lead(now).await {
                    error!(identity = %me, error = %format!("{e:#}"), "fence.lead() failed; stepping down");
                    let _ = self.step_down(lease, true, StepDown::FenceFailed).await;
                    self.retry_at = self.now().saturating_add(cfg.lease_duration);
                    return Ok(Next::Follow);
                }
                open_until = None;
            }
            if let Some(d) = computed
                && Some(d) != open_until
            {
                if let Err(e) = self.fence.lead(d).await {
                    error!(identity = %me, error = %format!("{e:#}"), "fence.lead() failed; stepping down");
                    let _ = self.step_down(lease, true, StepDown::FenceFailed).await;
                    self.retry_at = self.now().saturating_add(cfg.lease_duration);
                    return Ok(Next::Follow);
                }
                if !counted {
                    counted = true;
                    self.status.send_modify(|s| s.acquisitions += 1);
                    info!(identity = %me, "leading");
                }
                lapsed_logged = false;
                open_until = Some(d);
                self.publish_leading(d, &lease);
            }
            let lapse = open_until.filter(|t| *t > now).map(|t| self.instant_at(t));
            let opens = (now < answer_from).then(|| self.instant_at(answer_from));
            let heartbeat_tick = self.instant_at(now.saturating_add(timing.heartbeat));
            let api_at = self.instant_at(api_deadline);
            tokio::select! {
                biased;
                () = self.shutdown.cancelled() => {
                    return self.stop_leading(lease).await;
                }
                r = self.health.changed(), if self.health_open => {
                    if r.is_err() {
                        self.health_open = false;
                    } else if !self.healthy() {
                        warn!(identity = %me, "unhealthy while leading");
                        let _ = self.step_down(lease, true, StepDown::Unhealthy).await;
                        return Ok(Next::Follow);
                    }
                }
                () = tokio::time::sleep_until(api_at) => {
                    warn!(
                        identity = %me,
                        last_renew_sent_ago = ?self.now().saturating_duration_since(s_k),
                        event = events::RENEW_DEADLINE_MISSED,
                        "could not renew the lease before the fence deadline"
                    );
                    let _ = self.step_down(lease, false, StepDown::RenewDeadline).await;
                    return Ok(Next::Follow);
                }
                r = in_flight(&mut write) => {
                    let Some(w) = write.take() else { continue };
                    crate::timing::renew_answered(self.now().saturating_duration_since(w.sent));
                    match r {
                        Ok(l) => {
                            s_k = w.sent;
                            members = w.members;
                            waits_for = others(&members, &me);
                            lease = l;
                            next_renew = s_k.saturating_add(cfg.retry_period);
                            peers.update_leading(rv(&lease), waits_for.clone(), hb_until(s_k));
                            self.status.send_modify(|st| st.renewals += 1);
                        }
                        Err(StoreError::Conflict | StoreError::NotFound) => {
                            let timeout = cfg.request_timeout().min(api_deadline.saturating_duration_since(self.now()));
                            match call(&self.status, store.get(), timeout).await {
                                Ok(Some(cur)) if lease::holder(&cur) == Some(me.as_str()) => {
                                    debug!(identity = %me, "renew conflict, lease still ours");
                                    lease = cur;
                                    next_renew = self.now();
                                }
                                Ok(other) => {
                                    warn!(
                                        identity = %me,
                                        holder = other.as_ref().and_then(lease::holder).unwrap_or(""),
                                        event = events::LEASE_LOST,
                                        "lost the lease"
                                    );
                                    let lost = StepDown::Lost {
                                        holder: other.as_ref().and_then(lease::holder).map(str::to_owned),
                                    };
                                    let _ = self.step_down(lease, false, lost).await;
                                    match other {
                                        Some(cur) => self.observe(cur),
                                        None => self.observe_absent(),
                                    }
                                    return Ok(Next::Follow);
                                }
                                Err(StoreError::Forbidden(m)) => {
                                    let _ = self.step_down(lease, false, StepDown::Forbidden).await;
                                    self.forbidden("get", m);
                                    return Ok(Next::Follow);
                                }
                                Err(e) => {
                                    self.status.send_modify(|st| st.renew_failures += 1);
                                    warn!(identity = %me, error = %e, "re-reading after a renew conflict failed");
                                    next_renew = self.now().saturating_add(cfg.retry_period);
                                }
                            }
                        }
                        Err(StoreError::Forbidden(m)) => {
                            let _ = self.step_down(lease, false, StepDown::Forbidden).await;
                            self.forbidden("update", m);
                            return Ok(Next::Follow);
                        }
                        Err(e) => {
                            // The write may or may not have committed: the
                            // fence keeps waiting for every member it named.
                            self.status.send_modify(|st| st.renew_failures += 1);
                            warn!(
                                identity = %me,
                                error = %e,
                                fence_deadline_in = ?api_deadline.saturating_duration_since(self.now()),
                                event = events::RENEW_FAILED,
                                "renew failed"
                            );
                            next_renew = self.now().saturating_add(RETRY_FAILED_WRITE);
                        }
                    }
                }
                // Peers holds the sender: this never ends.
                _ = changes.changed() => {}
                () = sleep_opt(lapse) => {
                    if !lapsed_logged {
                        lapsed_logged = true;
                        warn!(
                            identity = %me,
                            waits_for = ?waits_for.keys().collect::<Vec<_>>(),
                            event = events::FENCE_WAITING_FOR_ACKS,
                            "the fence ran out waiting for a member's ack"
                        );
                    }
                    open_until = None;
                }
                () = sleep_opt(opens) => {}
                () = tokio::time::sleep_until(heartbeat_tick) => {}
            }
        }
    }
}
