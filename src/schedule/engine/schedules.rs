//! Schedules of the flow engine: when to wake next, firing due times under
//! the flow's overlap rules (`concurrency`), and the fire times that were
//! missed while the agent was down or blocked (`catch_up`), each recorded so
//! that it never runs twice.

use super::*;

impl Engine {
    pub(super) fn next_wake(&self) -> Option<Instant> {
        let now_i = Instant::now();
        let now_u = Utc::now();
        let sched = self
            .scheduled
            .iter()
            .filter_map(|s| s.next)
            .map(|t| now_i + (t - now_u).to_std().unwrap_or(Duration::ZERO))
            .min();
        let retry = self.retries.iter().map(|(t, _, _)| *t).min();
        let gate = (!self.gated.is_empty()).then(|| now_i + Duration::from_millis(500));
        let save = (!self.unsaved.is_empty()).then(|| now_i + SAVE_RETRY);
        let long = self.long.iter().map(|(t, ..)| *t).min();
        let late = self
            .deadlines
            .iter()
            .map(|(t, ..)| now_i + (*t - now_u).to_std().unwrap_or(Duration::ZERO))
            .min();
        [sched, retry, gate, save, long, late]
            .into_iter()
            .flatten()
            .min()
    }

    pub(super) async fn timers(&mut self) {
        for id in self.unsaved.clone() {
            if self.save(id) {
                self.forget_if_succeeded(id);
            }
        }
        self.check_gates().await;
        self.check_overdue();
        let now_i = Instant::now();
        let due: Vec<(i64, String)> = self
            .retries
            .iter()
            .filter(|(t, _, _)| *t <= now_i)
            .map(|(_, fr, j)| (*fr, j.clone()))
            .collect();
        self.retries.retain(|(t, _, _)| *t > now_i);
        for (fr, job) in due {
            self.feed(fr, Input::RetryDue { job }).await;
        }
        let now = Utc::now();
        for i in 0..self.scheduled.len() {
            let Some(at) = self.scheduled[i].next else {
                continue;
            };
            if at > now {
                continue;
            }
            let s = &self.scheduled[i];
            let plan = plan_due(&s.schedule, s.catch_up, at, now);
            let job = s.job.clone();
            self.scheduled[i].next = plan.next;
            if !plan.skip.is_empty() {
                tracing::warn!(%job, missed = plan.skip.len(), late_ms = (now - at).num_milliseconds(), "Schedule fire times missed (clock stepped, host suspended or agent blocked); catch_up decides.");
            }
            for t in &plan.skip {
                let late = (now - *t).num_seconds();
                self.skip_missed(&job, *t, &format!("missed: {late}s past when the agent got to it (the clock stepped forward, the host was suspended or the agent was blocked; catch_up)"));
            }
            for t in &plan.run {
                let lateness = (now - *t).num_milliseconds();
                tracing::info!(%job, lateness_ms = lateness, "Schedule fired.");
            }
            self.fire_in_order(i, plan.run).await;
        }
    }

    /// Fires due times oldest first. The first goes through the usual
    /// overlap rules; the rest (missed times caught up with `catch_up =
    /// "all"`) wait in the flow's queue, whatever `concurrency` says, so that
    /// each runs, in order, once the one before has finished.
    pub(super) async fn fire_in_order(&mut self, i: usize, times: Vec<DateTime<Utc>>) {
        let mut times = times.into_iter();
        let Some(first) = times.next() else {
            return;
        };
        self.fire(i, first.timestamp_millis()).await;
        let (job, flow) = {
            let s = &self.scheduled[i];
            (s.job.clone(), s.flow.clone())
        };
        for t in times {
            let at = t.timestamp_millis();
            if self.holds.contains(&flow) || self.holds.contains(&job) {
                self.skip_fire(job.clone(), at, "held by hand".into());
                continue;
            }
            self.queued
                .entry(flow.clone())
                .or_default()
                .push_back(("schedule".into(), Some(at)));
        }
        let running = self
            .runs
            .values()
            .any(|(f, r)| *f == flow && r.status() == Status::Running);
        if !running {
            // The first did not start (it could not be created): the queue
            // must not wait for an end that will not come.
            if let Some((trigger, Some(at))) =
                self.queued.get_mut(&flow).and_then(|q| q.pop_front())
            {
                Box::pin(self.start_scheduled(&flow, &trigger, job, at)).await;
            }
        }
    }

    /// After the agent was down: fires missed since the last recorded one.
    pub(super) async fn catch_up(&mut self, i: usize, now: DateTime<Utc>) {
        let s = &self.scheduled[i];
        let Ok(Some(last)) = self.store.last_fire(&s.job) else {
            return;
        };
        let Some(last) = DateTime::from_timestamp_millis(last) else {
            return;
        };
        let missed = due_after(&s.schedule, last, now);
        let (run, skip) = settle(s.catch_up, missed, false);
        let job = s.job.clone();
        for t in skip {
            self.skip_missed(&job, t, "missed while the agent was down (catch_up)");
        }
        self.fire_in_order(i, run).await;
    }

    /// A missed fire time that does not run: recorded as fired (so that it
    /// is not missed again after a restart) and reported.
    pub(super) fn skip_missed(&self, job: &str, t: DateTime<Utc>, reason: &str) {
        if let Err(e) = self.store.record_fire(job, t.timestamp_millis()) {
            tracing::error!(%job, error = %e, "Could not record a skipped fire time; it may be reported again after a restart.");
        }
        self.bus.emit(EventKind::JobSkipped {
            job: job.to_string(),
            scheduled_for: t.timestamp_millis(),
            reason: reason.to_string(),
        });
    }

    /// A fire time that does not run now (held, or the previous run still
    /// running): reported once, even when the store cannot record it.
    pub(super) fn skip_fire(&self, job: String, at: i64, reason: String) {
        match self.store.record_fire(&job, at) {
            Ok(true) => {}
            // This time was already fired or reported.
            Ok(false) => return,
            Err(e) => {
                tracing::error!(%job, error = %e, "Could not record a skipped fire time; it may be reported again after a restart.");
            }
        }
        self.bus.emit(EventKind::JobSkipped {
            job,
            scheduled_for: at,
            reason,
        });
    }

    /// A scheduled fire: overlap rules, then a new flow run.
    pub(super) async fn fire(&mut self, i: usize, at: i64) {
        let (job, flow, concurrency) = {
            let s = &self.scheduled[i];
            (s.job.clone(), s.flow.clone(), s.concurrency)
        };
        if self.holds.contains(&flow) || self.holds.contains(&job) {
            self.skip_fire(job, at, "held by hand".into());
            return;
        }
        let running: Vec<i64> = self
            .runs
            .iter()
            .filter(|(_, (f, r))| *f == flow && r.status() == Status::Running)
            .map(|(id, _)| *id)
            .collect();
        if !running.is_empty() {
            match concurrency {
                Concurrency::Forbid => {
                    let reason = format!("the previous run of flow \"{flow}\" (flow run {}) is still running (concurrency = \"forbid\")", running[0]);
                    self.skip_fire(job, at, reason);
                    return;
                }
                Concurrency::Queue => {
                    self.queued
                        .entry(flow)
                        .or_default()
                        .push_back(("schedule".into(), Some(at)));
                    return;
                }
                Concurrency::Replace => {
                    for id in running {
                        self.cancel_run(id, "replaced by a newer scheduled run")
                            .await;
                    }
                }
            }
        }
        self.start_scheduled(&flow, "schedule", job, at).await;
    }

    /// Starts the flow run of a scheduled fire; a fire that cannot start
    /// one is logged and reported (`job.skipped`), never dropped silently.
    pub(super) async fn start_scheduled(
        &mut self,
        flow: &str,
        trigger: &str,
        job: String,
        at: i64,
    ) {
        match self.new_run(flow, trigger, Some((job.clone(), at))).await {
            Ok(_) => {}
            // Recorded already: that time ran (the one-run-per-time guarantee).
            Err((409, e)) => {
                tracing::info!(%job, %flow, scheduled_for = at, "Not starting a flow run: {e}.")
            }
            Err((_, e)) => {
                tracing::error!(%job, %flow, scheduled_for = at, error = %e, "Could not start a scheduled flow run.");
                self.bus.emit(EventKind::JobSkipped {
                    job,
                    scheduled_for: at,
                    reason: format!("could not start the flow run: {e}"),
                });
            }
        }
    }
}
