//! The leader's half of the elector: renew until the deadline, step down,
//! release.

use super::*;

impl<S: LeaseStore, F: Fence, C: Clock> Elector<'_, S, F, C> {
    pub(super) fn publish_leading(&self, deadline: MonoTime, lease: &Lease) {
        let t = lease::transitions(lease);
        let healthy = self.healthy();
        self.status.send_modify(|s| {
            s.role = Role::Leading;
            s.fence_deadline = Some(deadline);
            s.healthy = healthy;
            s.lease_transitions = t;
        });
    }

    /// Stop answering; then, only if that worked and `release`, give the Lease
    /// back. Afterwards this node is a follower that knows the resulting record.
    pub(super) async fn step_down(
        &mut self,
        lease: Lease,
        release: bool,
        why: StepDown,
    ) -> anyhow::Result<()> {
        let now = self.now();
        let followed = self.fence.follow().await;
        if let Some(p) = &self.peers {
            // Fence closed (or expiring by itself): stop heartbeating, ack again.
            p.stop_leading();
        }
        self.narrator
            .stepped_down(&why, release && followed.is_ok(), &lease, self.clock.wall());
        info!(
            identity = %self.cfg.identity,
            reason = why.log_reason(),
            release,
            follow_took = ?self.now().saturating_duration_since(now),
            event = events::STEPPING_DOWN,
            "stepping down"
        );
        // Whatever we learn below, our own last record starts a fresh
        // lease_duration: we do not re-acquire before it like anyone else.
        let obs = Observation::new(&lease, self.now());
        if let Some(rv) = &lease.metadata.resource_version {
            self.watch_rv.clone_from(rv);
        }
        self.known = Known::Present {
            lease: Box::new(lease.clone()),
            obs,
        };
        self.retry_at = self.now();
        self.watch_retry_at = self.now();
        if let Err(e) = followed {
            error!(identity = %self.cfg.identity, error = %format!("{e:#}"), "fence.follow() failed; NOT releasing the lease (the fence deadline still expires by itself)");
            return Err(e);
        }
        if let (Some(p), Some(rv)) = (&self.peers, &lease.metadata.resource_version) {
            p.set_known_rv(rv);
        }
        if release {
            // Rule 9: not before our own answer_from (until then another
            // fence may still be open on promises; variant (f)). At most
            // P + eps, with our fence closed.
            if let Some(t) = self.release_not_before.take()
                && t > self.now()
            {
                tokio::time::sleep_until(self.instant_at(t)).await;
            }
            self.release(lease, &why).await;
        }
        self.release_not_before = None;
        Ok(())
    }

    /// Clears the holder so watching followers take over at once. A renew
    /// that was in flight when we decided to stop may have committed after
    /// `lease` was read: on a conflict, re-read and release again while the
    /// record still names us. Bounded by [`RELEASE_TIMEOUT`] in total.
    async fn release(&mut self, mut lease: Lease, why: &StepDown) {
        let until = self.now().saturating_add(RELEASE_TIMEOUT);
        loop {
            let left = until.saturating_duration_since(self.now());
            if left.is_zero() {
                warn!(identity = %self.cfg.identity, "releasing the lease timed out; followers will take over after the lease duration");
                return;
            }
            let wall = self.clock.wall();
            let mut released = lease::release(&lease, wall);
            if self.peers.is_some() {
                // Rule 9: our fence is closed, so our members' promises to us
                // need not hold back whoever takes the Lease next.
                let note = peer::record::Peers {
                    holder: String::new(),
                    released_by: Some(self.cfg.identity.clone()),
                    members: Default::default(),
                };
                peer::record::write(&mut released, &note);
            }
            match call(&self.status, self.store.replace(&released), left).await {
                Ok(l) => {
                    info!(identity = %self.cfg.identity, event = events::LEASE_RELEASED, "lease released");
                    self.narrator.released(why, &l, wall);
                    self.observe(l);
                    return;
                }
                Err(StoreError::Conflict) => {
                    let left = until.saturating_duration_since(self.now());
                    match call(&self.status, self.store.get(), left).await {
                        Ok(Some(cur))
                            if lease::holder(&cur) == Some(self.cfg.identity.as_str()) =>
                        {
                            debug!(identity = %self.cfg.identity, "release conflicted with our own last renew; releasing the newer record");
                            lease = cur;
                        }
                        Ok(other) => {
                            debug!(identity = %self.cfg.identity, "lease no longer ours; nothing to release");
                            match other {
                                Some(cur) => self.observe(cur),
                                None => self.observe_absent(),
                            }
                            return;
                        }
                        Err(e) => {
                            warn!(identity = %self.cfg.identity, error = %e, "releasing the lease failed; followers will take over after the lease duration");
                            return;
                        }
                    }
                }
                Err(e) => {
                    warn!(identity = %self.cfg.identity, error = %e, "releasing the lease failed; followers will take over after the lease duration");
                    return;
                }
            }
        }
    }

    pub(super) async fn lead_phase(
        &mut self,
        mut lease: Lease,
        mut sent: MonoTime,
        mut deadline: MonoTime,
    ) -> Result<Next, ElectionError> {
        self.watch = None;
        let cfg = self.cfg;
        crate::timing::lease_acquired();
        if let Err(e) = self.fence.lead(deadline).await {
            error!(identity = %cfg.identity, error = %format!("{e:#}"), "fence.lead() failed after acquiring; stepping down");
            let _ = self.step_down(lease, true, StepDown::FenceFailed).await;
            // Give healthier nodes a chance before trying again.
            self.retry_at = self.now().saturating_add(cfg.lease_duration);
            return Ok(Next::Follow);
        }
        self.status.send_modify(|s| s.acquisitions += 1);
        self.publish_leading(deadline, &lease);
        info!(identity = %cfg.identity, "leading");
        let mut next_renew = sent.saturating_add(cfg.retry_period);
        loop {
            let deadline_at = self.instant_at(deadline);
            let renew_at = self.instant_at(next_renew);
            tokio::select! {
                biased;
                () = self.shutdown.cancelled() => {
                    return self.stop_leading(lease).await;
                }
                r = self.health.changed(), if self.health_open => {
                    if r.is_err() {
                        self.health_open = false;
                    } else if !self.healthy() {
                        warn!(identity = %cfg.identity, "unhealthy while leading");
                        let _ = self.step_down(lease, true, StepDown::Unhealthy).await;
                        return Ok(Next::Follow);
                    }
                }
                () = tokio::time::sleep_until(deadline_at) => {
                    warn!(
                        identity = %cfg.identity,
                        last_renew_sent_ago = ?self.now().saturating_duration_since(sent),
                        event = events::RENEW_DEADLINE_MISSED,
                        "could not renew the lease before the fence deadline"
                    );
                    let _ = self.step_down(lease, false, StepDown::RenewDeadline).await;
                    return Ok(Next::Follow);
                }
                () = tokio::time::sleep_until(renew_at) => {
                    let s = self.now();
                    let req = lease::renew(&lease, cfg.lease_duration, self.clock.wall());
                    let timeout = cfg.request_timeout().min(deadline.saturating_duration_since(s));
                    let res = tokio::select! {
                        biased;
                        () = self.shutdown.cancelled() => {
                            return self.stop_leading(lease).await;
                        }
                        r = call(&self.status, self.store.replace(&req), timeout) => r,
                    };
                    crate::timing::renew_answered(self.now().saturating_duration_since(s));
                    match res {
                        Ok(l) => {
                            let new_deadline = s.saturating_add(cfg.renew_deadline);
                            if let Err(e) = self.fence.lead(new_deadline).await {
                                error!(identity = %cfg.identity, error = %format!("{e:#}"), "fence.lead() failed on renew; stepping down");
                                let _ = self.step_down(l, true, StepDown::FenceFailed).await;
                                self.retry_at = self.now().saturating_add(cfg.lease_duration);
                                return Ok(Next::Follow);
                            }
                            debug!(
                                identity = %cfg.identity,
                                latency = ?self.now().saturating_duration_since(s),
                                fence_deadline_in = ?new_deadline.saturating_duration_since(self.now()),
                                "renewed"
                            );
                            lease = l;
                            sent = s;
                            deadline = new_deadline;
                            next_renew = s.saturating_add(cfg.retry_period);
                            self.status.send_modify(|st| st.renewals += 1);
                            self.publish_leading(deadline, &lease);
                        }
                        Err(StoreError::Conflict | StoreError::NotFound) => {
                            match call(&self.status, self.store.get(), timeout.min(cfg.request_timeout())).await {
                                Ok(Some(cur)) if lease::holder(&cur) == Some(cfg.identity.as_str()) => {
                                    // Still ours (someone touched other fields): renew at once.
                                    debug!(identity = %cfg.identity, "renew conflict, lease still ours");
                                    lease = cur;
                                    next_renew = self.now();
                                }
                                Ok(other) => {
                                    warn!(
                                        identity = %cfg.identity,
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
                                    warn!(identity = %cfg.identity, error = %e, "re-reading after a renew conflict failed");
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
                            self.status.send_modify(|st| st.renew_failures += 1);
                            warn!(
                                identity = %cfg.identity,
                                error = %e,
                                fence_deadline_in = ?deadline.saturating_duration_since(self.now()),
                                event = events::RENEW_FAILED,
                                "renew failed"
                            );
                            next_renew = self.now().saturating_add(cfg.retry_period);
                        }
                    }
                }
            }
        }
    }

    pub(super) async fn stop_leading(&mut self, lease: Lease) -> Result<Next, ElectionError> {
        info!(identity = %self.cfg.identity, "shutdown while leading");
        self.step_down(lease, true, StepDown::Shutdown)
            .await
            .map_err(ElectionError::Fence)?;
        self.publish_following();
        Ok(Next::Shutdown)
    }
}
