//! The follower's half of the elector: watch the Lease (reconnecting with
//! backoff, re-listing on 410 Gone) and, when the record allows it, create or
//! acquire it.

use super::*;

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
            }
        }
    }

    /// The follower's timer fired: GET, create or acquire.
    async fn act(&mut self) -> Result<Option<Next>, ElectionError> {
        let sent = self.now();
        let wall = self.clock.wall();
        let timeout = self.cfg.request_timeout();
        let cfg = self.cfg;
        let (result, verb, prev_holder) = match &self.known {
            Known::Unknown => {
                self.refresh().await?;
                return Ok(None);
            }
            Known::Absent { .. } => {
                let l = lease::new_lease(
                    &cfg.lease_name,
                    &cfg.namespace,
                    &cfg.identity,
                    cfg.lease_duration,
                    wall,
                );
                (
                    call(&self.status, self.store.create(&l), timeout).await,
                    "create",
                    None,
                )
            }
            Known::Present { lease: cur, .. } => {
                let prev = lease::holder(cur).map(str::to_owned);
                let l = lease::acquire(cur, &cfg.identity, cfg.lease_duration, wall);
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
}
