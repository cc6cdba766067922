//! The follower's half of the elector: watch the Lease (reconnecting with
//! backoff, re-listing on 410 Gone) and, when the record allows it, create or
//! acquire it.

use super::*;

/// One fast takeover attempt waits this long for the API, then tries again:
/// when the dead node led etcd, no write commits until etcd has elected
/// another leader (about 1 to 2 s), and short attempts find it sooner.
const FAST_TAKEOVER_TIMEOUT: Duration = Duration::from_millis(300);

impl<S: LeaseStore, F: Fence, C: Clock> Elector<'_, S, F, C> {
    /// Forget the watch and reconnect at `at`.
    fn drop_watch(&mut self, at: MonoTime) {
        self.watch = None;
        self.watch_retry_at = at;
    }

    fn watch_failed(&mut self) {
        let at = self.now().saturating_add(self.watch_backoff);
        self.watch_backoff = (self.watch_backoff * 2).min(WATCH_BACKOFF_MAX);
        self.drop_watch(at);
    }

    /// GET the Lease (re-list). Errors other than 403 just schedule a retry.
    async fn refresh(&mut self) -> Result<bool, ElectionError> {
        match call(&self.status, self.store.get(), self.cfg.request_timeout()).await {
            Ok(Some(l)) => {
                self.observe(l);
                Ok(true)
            }
            Ok(None) => {
                self.observe_absent();
                Ok(true)
            }
            Err(StoreError::Forbidden(m)) => {
                self.forbidden("get", m);
                Ok(false)
            }
            Err(e) => {
                warn!(identity = %self.cfg.identity, error = %e, "reading the lease failed; retrying");
                self.retry_at = self.now().saturating_add(self.cfg.retry_period);
                Ok(false)
            }
        }
    }

    async fn open_watch(&mut self) -> Result<(), ElectionError> {
        let rv = self.watch_rv.clone();
        self.status.send_modify(|s| s.watch_starts += 1);
        match call(
            &self.status,
            self.store.watch(&rv),
            self.cfg.request_timeout(),
        )
        .await
        {
            Ok(stream) => {
                info!(identity = %self.cfg.identity, resource_version = %rv, event = events::WATCH_OPENED, "watch opened");
                self.watch = Some(stream);
                self.watch_opened_at = self.now();
            }
            Err(StoreError::Gone) => self.relist().await?,
            Err(StoreError::Forbidden(m)) => self.forbidden("watch", m),
            Err(e) => {
                debug!(identity = %self.cfg.identity, error = %e, backoff = ?self.watch_backoff, "watch failed to open");
                self.watch_failed();
            }
        }
        Ok(())
    }

    /// 410 Gone: re-read the Lease and watch from its version.
    async fn relist(&mut self) -> Result<(), ElectionError> {
        debug!(identity = %self.cfg.identity, "watch version gone; re-listing");
        self.watch = None;
        if self.refresh().await? {
            self.watch_retry_at = self.now();
        } else {
            self.watch_failed();
        }
        Ok(())
    }

    async fn on_event(
        &mut self,
        ev: Option<Result<WatchEvent<Lease>, StoreError>>,
    ) -> Result<(), ElectionError> {
        match ev {
            Some(Ok(WatchEvent::Added(l) | WatchEvent::Modified(l))) => {
                self.watch_backoff = WATCH_BACKOFF_MIN;
                self.observe(l);
            }
            Some(Ok(WatchEvent::Deleted(l))) => {
                self.watch_backoff = WATCH_BACKOFF_MIN;
                if let Some(rv) = &l.metadata.resource_version {
                    self.watch_rv.clone_from(rv);
                }
                info!(identity = %self.cfg.identity, "lease deleted");
                self.observe_absent();
            }
            Some(Ok(WatchEvent::Bookmark(b))) => {
                self.watch_backoff = WATCH_BACKOFF_MIN;
                self.watch_rv = b.metadata.resource_version;
            }
            Some(Ok(WatchEvent::Error(st))) if st.code == 410 => self.relist().await?,
            Some(Err(StoreError::Gone)) => self.relist().await?,
            Some(Ok(WatchEvent::Error(st))) if st.code == 403 => {
                self.forbidden("watch", st.message.clone());
            }
            Some(Err(StoreError::Forbidden(m))) => self.forbidden("watch", m),
            Some(Ok(WatchEvent::Error(st))) => {
                debug!(identity = %self.cfg.identity, code = st.code, message = %st.message, "watch error event");
                self.watch_failed();
            }
            Some(Err(e)) => {
                debug!(identity = %self.cfg.identity, error = %e, "watch stream error");
                self.watch_failed();
            }
            None => {
                // Normal end (server timeout): reconnect at once, unless the
                // watch died right after opening (then back off).
                let now = self.now();
                if now.saturating_duration_since(self.watch_opened_at) >= WATCH_BACKOFF_MAX {
                    self.watch_backoff = WATCH_BACKOFF_MIN;
                    self.drop_watch(now);
                } else {
                    self.watch_failed();
                }
            }
        }
        Ok(())
    }

    /// When the follower should next act (GET / create / acquire), if at all.
    fn action_at(&self) -> Option<MonoTime> {
        let healthy = self.healthy();
        match &self.known {
            Known::Unknown => Some(self.retry_at),
            Known::Absent { not_before } => healthy.then(|| (*not_before).max(self.retry_at)),
            Known::Present { lease, obs } => healthy.then(|| {
                lease::may_acquire_at(lease, obs.at, self.cfg.lease_duration).max(self.retry_at)
            }),
        }
    }

    pub(super) async fn follow_phase(&mut self) -> Result<Next, ElectionError> {
        loop {
            self.publish_following();
            let action = self.action_at().map(|t| self.instant_at(t));
            let open_watch = (self.watch.is_none() && !matches!(self.known, Known::Unknown))
                .then(|| self.instant_at(self.watch_retry_at));
            let fast = self.fast_takeover_at().map(|t| self.instant_at(t));
            tokio::select! {
                biased;
                () = self.shutdown.cancelled() => return Ok(Next::Shutdown),
                r = self.health.changed(), if self.health_open => {
                    if r.is_err() {
                        self.health_open = false;
                    }
                }
                ev = next_event(&mut self.watch) => self.on_event(ev).await?,
                () = sleep_opt(open_watch) => self.open_watch().await?,
                () = sleep_opt(action) => {
                    if let Some(next) = self.act().await? {
                        return Ok(next);
                    }
                }
                () = sleep_opt(fast) => {
                    if let Some(next) = self.act_fast().await? {
                        return Ok(next);
                    }
                }
            }
        }
    }

    /// The follower's timer fired: GET, create or acquire.
    async fn act(&mut self) -> Result<Option<Next>, ElectionError> {
        if !matches!(self.known, Known::Unknown)
            && let Some(p) = &self.peers
        {
            // Rule 5: no promise from just before the CAS on.
            p.set_acking(false);
        }
        let released_by = match &self.known {
            Known::Present { lease, .. } => peer::record::released_by(lease),
            _ => None,
        };
        let r = self.act_slow().await;
        let won = matches!(r, Ok(Some(Next::Lead { .. })));
        if let Some(p) = &self.peers {
            if won {
                // Rules 5 and 9: answer no earlier than our own promises allow.
                let from = p
                    .promise_until(released_by.as_deref())
                    .saturating_add(p.timing().margin);
                return r.map(|n| n.map(|n| n.answering_from(from)));
            }
            p.set_acking(true);
        }
        r
    }

    async fn act_slow(&mut self) -> Result<Option<Next>, ElectionError> {
        let sent = self.now();
        let wall = self.clock.wall();
        let timeout = self.cfg.request_timeout();
        let cfg = self.cfg;
        let me_only = self.peers.as_ref().map(|p| peer::record::Peers {
            holder: cfg.identity.clone(),
            released_by: None,
            members: [(cfg.identity.clone(), p.my_addr())].into(),
        });
        let (result, verb, prev_holder) = match &self.known {
            Known::Unknown => {
                self.refresh().await?;
                return Ok(None);
            }
            Known::Absent { .. } => {
                let mut l = lease::new_lease(
                    &cfg.lease_name,
                    &cfg.namespace,
                    &cfg.identity,
                    cfg.lease_duration,
                    wall,
                );
                if let Some(p) = &me_only {
                    peer::record::write(&mut l, p);
                }
                (
                    call(&self.status, self.store.create(&l), timeout).await,
                    "create",
                    None,
                )
            }
            Known::Present { lease: cur, .. } => {
                let prev = lease::holder(cur).map(str::to_owned);
                let mut l = lease::acquire(cur, &cfg.identity, cfg.lease_duration, wall);
                // The slow path: nobody else's fence is open (design.md), so
                // the new record lists this agent alone (rule 3 adds the rest).
                if let Some(p) = &me_only {
                    peer::record::write(&mut l, p);
                }
                // The record expired on our clock without any event: the watch
                // may be silently dead, so reopen it after this attempt.
                if prev.is_some() {
                    self.drop_watch(self.watch_retry_at);
                }
                (
                    call(&self.status, self.store.replace(&l), timeout).await,
                    "update",
                    prev,
                )
            }
        };
        match result {
            Ok(l) => {
                let before = match &self.known {
                    Known::Present { lease, .. } => Some(&**lease),
                    _ => None,
                };
                self.narrator.elected(before, &l, wall);
                let deadline = sent.saturating_add(cfg.renew_deadline);
                info!(
                    identity = %cfg.identity,
                    previous_holder = prev_holder.as_deref().unwrap_or(""),
                    transitions = lease::transitions(&l),
                    latency = ?self.now().saturating_duration_since(sent),
                    fence_deadline_in = ?deadline.saturating_duration_since(self.now()),
                    event = events::LEASE_ACQUIRED,
                    "acquired the lease"
                );
                Ok(Some(Next::Lead {
                    lease: Box::new(l),
                    sent,
                    deadline,
                    answer_from: None,
                }))
            }
            Err(StoreError::Forbidden(m)) => {
                self.forbidden(verb, m);
                Ok(None)
            }
            Err(StoreError::AlreadyExists | StoreError::Conflict | StoreError::NotFound) => {
                debug!(identity = %cfg.identity, verb, "lost the race for the lease; re-reading");
                if !self.refresh().await? {
                    self.retry_at = self.now().saturating_add(cfg.retry_period);
                }
                Ok(None)
            }
            Err(e) => {
                warn!(identity = %cfg.identity, verb, error = %e, "taking the lease failed; retrying");
                self.retry_at = self.now().saturating_add(cfg.retry_period);
                Ok(None)
            }
        }
    }

    /// Fast path (rule 4): when this member takes over if no heartbeat from
    /// the holder arrives before, `None` when it may not (no fast path, no
    /// key, unhealthy, not listed, the holder is not a fast-path leader).
    /// Computed from the newest heartbeat, so the timer may fire early;
    /// [`Self::act_fast`] checks again.
    fn fast_takeover_at(&self) -> Option<MonoTime> {
        let p = self.peers.as_ref()?;
        if !self.healthy() || !p.key_ready() {
            return None;
        }
        let Known::Present { lease, obs } = &self.known else {
            return None;
        };
        let holder = lease::holder(lease)?;
        if holder == self.cfg.identity {
            return None;
        }
        let members = peer::record::members(lease)?;
        if !members.contains_key(&self.cfg.identity) {
            return None;
        }
        let heard = p.last_heartbeat(holder).map_or(obs.at, |h| h.max(obs.at));
        Some(heard.saturating_add(p.timing().silence).max(self.retry_at))
    }

    /// Rule 4: stop acking, CAS against the newest record that lists us, and
    /// on success lead from our own last promise + eps.
    async fn act_fast(&mut self) -> Result<Option<Next>, ElectionError> {
        let cfg = self.cfg;
        let (Some(p), Some(due)) = (self.peers.clone(), self.fast_takeover_at()) else {
            return Ok(None);
        };
        if due > self.now() {
            return Ok(None);
        }
        let Known::Present { lease: cur, .. } = &self.known else {
            return Ok(None);
        };
        let Some(holder) = lease::holder(cur).map(str::to_owned) else {
            return Ok(None);
        };
        let mut members = peer::record::members(cur).unwrap_or_default();
        members.remove(&holder);
        let silent_for = p
            .last_heartbeat(&holder)
            .map(|h| self.now().saturating_duration_since(h));
        p.set_acking(false);
        let sent = self.now();
        let wall = self.clock.wall();
        let mut l = lease::acquire(cur, &cfg.identity, cfg.lease_duration, wall);
        peer::record::write(
            &mut l,
            &peer::record::Peers {
                holder: cfg.identity.clone(),
                released_by: None,
                members,
            },
        );
        let timeout = cfg.request_timeout().min(FAST_TAKEOVER_TIMEOUT);
        let res = call(&self.status, self.store.replace(&l), timeout).await;
        match res {
            Ok(l) => {
                let from = p.promise_until(None).saturating_add(p.timing().margin);
                let before = match &self.known {
                    Known::Present { lease, .. } => Some(&**lease),
                    _ => None,
                };
                self.narrator.elected(before, &l, wall);
                PeerStats::count(&p.stats().fast_takeovers);
                info!(
                    identity = %cfg.identity,
                    previous_holder = %holder,
                    transitions = lease::transitions(&l),
                    latency = ?self.now().saturating_duration_since(sent),
                    fast_path = true,
                    event = events::LEASE_ACQUIRED,
                    "acquired the lease"
                );
                info!(
                    identity = %cfg.identity,
                    previous_holder = %holder,
                    silent_for = ?silent_for,
                    transitions = lease::transitions(&l),
                    latency = ?self.now().saturating_duration_since(sent),
                    answer_in = ?from.saturating_duration_since(self.now()),
                    event = events::FAST_TAKEOVER,
                    "took the lease over by the fast path: the holder went silent"
                );
                Ok(Some(Next::Lead {
                    lease: Box::new(l),
                    sent,
                    deadline: sent.saturating_add(cfg.renew_deadline),
                    answer_from: Some(from),
                }))
            }
            Err(e) => {
                p.set_acking(true);
                match e {
                    StoreError::Forbidden(m) => self.forbidden("update", m),
                    StoreError::Conflict | StoreError::NotFound => {
                        debug!(identity = %cfg.identity, "fast takeover lost the race; re-reading");
                        if !self.refresh().await? {
                            self.retry_at = self.now().saturating_add(cfg.retry_period);
                        }
                    }
                    e => {
                        // A timeout is usually etcd electing a leader (the
                        // dead node led it): try again at once. If the
                        // timed-out write did commit, the record names us
                        // and the other members take over from our silence.
                        warn!(identity = %cfg.identity, error = %e, "fast takeover failed; retrying");
                        self.retry_at = if e == StoreError::Timeout {
                            self.now()
                        } else {
                            self.now().saturating_add(cfg.retry_period)
                        };
                    }
                }
                Ok(None)
            }
        }
    }
}

impl Next {
    /// A lead decision that answers no earlier than `from`.
    fn answering_from(self, from: MonoTime) -> Self {
        match self {
            Next::Lead {
                lease,
                sent,
                deadline,
                ..
            } => Next::Lead {
                lease,
                sent,
                deadline,
                answer_from: Some(from),
            },
            n => n,
        }
    }
}
