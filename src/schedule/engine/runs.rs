//! Flow runs of the flow engine: creating one, feeding inputs to its pure
//! state machine (`flow.rs`) and carrying out the actions it returns
//! (start a job, retry, recover, announce), saving every change, and
//! loading the unfinished ones after a restart.

use super::*;

impl Engine {
    pub(super) async fn new_run(
        &mut self,
        flow: &str,
        trigger: &str,
        scheduled: Option<(String, i64)>,
    ) -> Result<i64, (u16, String)> {
        let def = self
            .defs
            .get(flow)
            .cloned()
            .ok_or_else(|| (404, format!("no flow named \"{flow}\"")))?;
        let run = FlowRun::new(def);
        // Job states are saved as they change (flow_jobs); all start waiting.
        let states = "{}";
        let id = match self.store.insert_flow_run(
            flow,
            trigger,
            scheduled.as_ref().map(|(j, at)| (j.as_str(), *at)),
            now_ms(),
            states,
        ) {
            Ok(Some(id)) => id,
            Ok(None) => return Err((409, "that scheduled time has already run".into())),
            Err(e) => return Err((503, format!("store: {e}"))),
        };
        self.bus.emit(EventKind::FlowStarted {
            flow: flow.to_string(),
            flow_run: id,
            trigger: trigger.to_string(),
        });
        let at = scheduled
            .as_ref()
            .and_then(|(_, ms)| DateTime::from_timestamp_millis(*ms))
            .unwrap_or_else(Utc::now);
        self.plan_deadlines(flow, id, at);
        self.job_triggers.insert(id, trigger.to_string());
        self.runs.insert(id, (flow.to_string(), run));
        self.feed(id, Input::Start).await;
        Ok(id)
    }

    pub(super) async fn cancel_run(&mut self, id: i64, why: &str) {
        let Some((_, run)) = self.runs.get(&id) else {
            return;
        };
        let running: Vec<String> = run
            .states
            .iter()
            .filter(|(_, s)| matches!(s, JobState::Running { .. }))
            .map(|(j, _)| j.clone())
            .collect();
        for job in running {
            let by = format!("flow run {id}: {why}");
            let _ = self
                .sup
                .ask(&job, |reply| Command::Stop { by, reply })
                .await;
        }
        self.retries.retain(|(_, fr, _)| *fr != id);
        self.run_map.retain(|_, (fr, _)| *fr != id);
        self.unsaved.remove(&id);
        self.job_triggers.remove(&id);
        if let Some((flow, mut run)) = self.runs.remove(&id) {
            let store = &self.store;
            let saved = run.save_changes(|changed| {
                store.save_flow_run(id, "cancelled", &as_json(changed), now_ms())
            });
            if let Err(e) = saved {
                tracing::error!(%flow, flow_run = id, error = %e, "Could not save a cancelled flow run.");
            }
            tracing::warn!(%flow, flow_run = id, why, "Flow run cancelled.");
        }
    }

    /// Feeds one input to a flow run and carries out its actions.
    pub(super) async fn feed(&mut self, id: i64, input: Input) {
        if matches!(
            input,
            Input::RerunFromFailed | Input::RerunFrom { .. } | Input::RerunOnly { .. }
        ) {
            self.job_triggers.insert(id, "rerun".into());
        }
        let mut pending = VecDeque::from([input]);
        while let Some(input) = pending.pop_front() {
            let Some((flow, run)) = self.runs.get_mut(&id) else {
                return;
            };
            let flow = flow.clone();
            let actions = match run.handle(input, &self.holds) {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(%flow, flow_run = id, error = %e, "Flow input refused.");
                    continue;
                }
            };
            for a in actions {
                match a {
                    Action::Run { job, attempt } => {
                        if let Some(why) = self.gate(&job) {
                            let reason = format!("waiting (hold_while): {why}");
                            self.bus.emit(EventKind::JobHeld {
                                job: job.clone(),
                                flow: flow.clone(),
                                flow_run: id,
                                reason,
                            });
                            self.gated.push(Gated {
                                flow_run: id,
                                job,
                                attempt,
                                since: Instant::now(),
                            });
                            continue;
                        }
                        if let Some(input) = self.launch(&flow, id, &job, attempt).await {
                            pending.push_back(input);
                        }
                    }
                    Action::RetryAfter { job, delay } => {
                        tracing::info!(%job, flow_run = id, delay_ms = delay.as_millis() as u64, "Job failed; retrying.");
                        self.retries.push((Instant::now() + delay, id, job));
                    }
                    a @ (Action::Failed { .. } | Action::Held { .. }) => {
                        self.announce(&flow, id, a);
                    }
                    Action::Recover { job, failed } => {
                        let by = format!("on_failure of {failed} (flow {flow} run {id})");
                        if let Err(e) = self
                            .sup
                            .ask(&job, |reply| Command::Run {
                                by,
                                trigger: "on_failure".into(),
                                reply,
                                done: Some(self.ended_tx.clone()),
                            })
                            .await
                        {
                            tracing::error!(%job, error = %e.error, "Could not start the recovery job.");
                        }
                    }
                    Action::Finished => {
                        self.bus.emit(EventKind::FlowFinished {
                            flow: flow.clone(),
                            flow_run: id,
                        });
                    }
                    Action::Stalled => {
                        self.bus.emit(EventKind::FlowStalled {
                            flow: flow.clone(),
                            flow_run: id,
                        });
                    }
                }
            }
        }
        let saved = self.save(id);
        let done = self.runs.get(&id).map(|(f, r)| (f.clone(), r.status()));
        if saved {
            self.forget_if_succeeded(id);
        }
        // A finished run lets a queued trigger go.
        if let Some((flow, status)) = done {
            if status != Status::Running {
                if let Some((trigger, at)) = self.queued.get_mut(&flow).and_then(|q| q.pop_front())
                {
                    let job = self
                        .scheduled
                        .iter()
                        .find(|s| s.flow == flow)
                        .map(|s| s.job.clone());
                    match at.zip(job) {
                        Some((at, job)) => {
                            Box::pin(self.start_scheduled(&flow, &trigger, job, at)).await
                        }
                        None => {
                            if let Err((_, e)) = Box::pin(self.new_run(&flow, &trigger, None)).await
                            {
                                tracing::error!(%flow, %trigger, error = %e, "Could not start a queued flow run.");
                            }
                        }
                    }
                }
            }
        }
    }

    /// A succeeded run whose end is saved leaves memory (the store has it).
    pub(super) fn forget_if_succeeded(&mut self, id: i64) {
        if self
            .runs
            .get(&id)
            .is_some_and(|(_, r)| r.status() == Status::Succeeded)
        {
            self.runs.remove(&id);
            self.job_triggers.remove(&id);
        }
    }

    /// Starts a job's run for a flow run; the input to feed back.
    pub(super) async fn launch(
        &mut self,
        flow: &str,
        id: i64,
        job: &str,
        attempt: u32,
    ) -> Option<Input> {
        let by = format!("flow {flow} run {id} (attempt {attempt})");
        let trigger = if attempt > 1 {
            "retry".to_string()
        } else {
            self.job_triggers
                .get(&id)
                .cloned()
                .unwrap_or_else(|| format!("flow run {id}"))
        };
        match self
            .sup
            .ask(job, |reply| Command::Run {
                by,
                trigger,
                reply,
                done: Some(self.ended_tx.clone()),
            })
            .await
        {
            Ok(run_id) => {
                self.run_map.insert(run_id, (id, job.to_string()));
                if let Some(expected) = self.expected(job) {
                    self.long.push((
                        Instant::now() + expected,
                        run_id,
                        job.to_string(),
                        expected.as_millis() as u64,
                    ));
                }
                Some(Input::Started {
                    job: job.to_string(),
                    run_id,
                })
            }
            Err(e) => Some(Input::Ended {
                job: job.to_string(),
                run_id: 0,
                ok: false,
                reason: e.error,
            }),
        }
    }

    /// Saves the run's status and changed job states; false if the store
    /// failed (the changes stay marked and are saved again, see `unsaved`).
    pub(super) fn save(&mut self, id: i64) -> bool {
        let Some((_, run)) = self.runs.get_mut(&id) else {
            self.unsaved.remove(&id);
            return true;
        };
        let status = match run.status() {
            Status::Running => "running",
            Status::Succeeded => "succeeded",
            Status::Stalled => "stalled",
        };
        let store = &self.store;
        let saved = run
            .save_changes(|changed| store.save_flow_run(id, status, &as_json(changed), now_ms()));
        match saved {
            Ok(()) => {
                if self.unsaved.remove(&id) {
                    tracing::info!(flow_run = id, "Flow run saved again.");
                }
                true
            }
            Err(e) => {
                // Logged once per outage, not at every retry.
                if self.unsaved.insert(id) {
                    tracing::error!(flow_run = id, error = %e, "Could not save a flow run; retrying.");
                }
                false
            }
        }
    }

    /// The event for a job that failed for good or is held.
    pub(super) fn announce(&self, flow: &str, flow_run: i64, action: Action) {
        let flow = flow.to_string();
        match action {
            Action::Failed { job, reason } => {
                self.bus.emit(EventKind::JobFailed {
                    job,
                    flow,
                    flow_run,
                    reason,
                });
            }
            Action::Held { job, reason } => {
                self.bus.emit(EventKind::JobHeld {
                    job,
                    flow,
                    flow_run,
                    reason,
                });
            }
            _ => {}
        }
    }

    /// Loads unfinished flow runs and holds after a restart.
    pub(super) async fn recover(&mut self) {
        if let Ok(holds) = self.store.holds() {
            self.holds = holds.into_iter().map(|h| h.target).collect();
        }
        let Ok(open) = self.store.open_flow_runs() else {
            return;
        };
        for rec in open {
            let Some(def) = self.defs.get(&rec.flow).cloned() else {
                continue;
            };
            let saved: BTreeMap<String, JobState> =
                serde_json::from_value(rec.states).unwrap_or_default();
            let mut run = FlowRun::restore(def, saved);
            let actions = run.interrupted();
            for a in actions {
                self.announce(&rec.flow, rec.id, a);
            }
            // Retries that were pending resume now.
            for (job, s) in &run.states {
                if matches!(s, JobState::RetryWait { .. }) {
                    self.retries.push((Instant::now(), rec.id, job.clone()));
                }
            }
            self.job_triggers.insert(rec.id, rec.trigger.clone());
            self.runs.insert(rec.id, (rec.flow.clone(), run));
            self.save(rec.id);
        }
    }
}
