//! The operators' commands to the flow engine (start, rerun, release,
//! hold, unhold): which open run they act on, a dry run on a copy so that a
//! refusal changes nothing, and the event each records.

use super::*;

impl Engine {
    pub(super) async fn command(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Start { flow, by, reply } => {
                let running = self
                    .runs
                    .values()
                    .any(|(f, r)| *f == flow && r.status() == Status::Running);
                let r = if running {
                    Err((409, format!("flow \"{flow}\" is already running")))
                } else if self.holds.contains(&flow) {
                    // Its scheduled times are skipped while held; a run by
                    // hand would stall at once on the hold a person set.
                    Err((
                        409,
                        format!("flow \"{flow}\" is held by hand; `mamori unhold {flow}` first"),
                    ))
                } else {
                    self.new_run(&flow, &format!("manual ({by})"), None).await
                };
                self.answer(reply, r);
            }
            Cmd::Rerun {
                flow,
                how,
                run,
                by,
                comment,
                reply,
            } => {
                if let Rerun::From(j) | Rerun::Only(j) = &how {
                    if !self.defs.get(&flow).is_some_and(|d| d.jobs.contains(j)) {
                        self.answer(
                            reply,
                            Err((404, format!("no job \"{j}\" in flow \"{flow}\""))),
                        );
                        return;
                    }
                }
                let id = match self.open_run(&flow, run, "to rerun") {
                    Ok(id) => id,
                    Err(e) => {
                        self.answer(reply, Err(e));
                        return;
                    }
                };
                let (input, action, target) = match &how {
                    Rerun::FromFailed => {
                        (Input::RerunFromFailed, "rerun --from-failed", flow.clone())
                    }
                    Rerun::From(j) => (
                        Input::RerunFrom { job: j.clone() },
                        "rerun --from",
                        j.clone(),
                    ),
                    Rerun::Only(j) => (
                        Input::RerunOnly { job: j.clone() },
                        "rerun --only",
                        j.clone(),
                    ),
                };
                let r = self.checked(id, input).await;
                if r.is_ok() {
                    self.bus.emit(EventKind::FlowAction {
                        flow,
                        action: action.into(),
                        target,
                        by,
                        comment,
                    });
                }
                self.answer(reply, r.map(|_| id));
            }
            Cmd::Release {
                job,
                run,
                by,
                comment,
                reply,
            } => {
                let Some(flow) = self.job_flow.get(&job).cloned() else {
                    self.answer(reply, Err((404, format!("no job named \"{job}\""))));
                    return;
                };
                let id = match self.open_run(&flow, run, "to release a job in") {
                    Ok(id) => id,
                    Err(e) => {
                        self.answer(reply, Err(e));
                        return;
                    }
                };
                let r = self
                    .checked(
                        id,
                        Input::Release {
                            job: job.clone(),
                            by: by.clone(),
                        },
                    )
                    .await;
                if r.is_ok() {
                    self.bus.emit(EventKind::FlowAction {
                        flow,
                        action: "release".into(),
                        target: job,
                        by,
                        comment,
                    });
                }
                self.answer(reply, r.map(|_| id));
            }
            Cmd::Hold {
                target,
                by,
                comment,
                reply,
            } => {
                let flow = self.flow_for(&target);
                let Some(flow) = flow else {
                    self.answer(
                        reply,
                        Err((404, format!("no job or flow named \"{target}\""))),
                    );
                    return;
                };
                if let Err(e) = self.store.set_hold(&target, &by, &comment, now_ms()) {
                    self.answer(reply, Err((503, format!("store: {e}"))));
                    return;
                }
                self.holds.insert(target.clone());
                let jobs = self.jobs_of(&target);
                let ids = self.open_runs_of(&flow);
                for id in ids {
                    for j in &jobs {
                        self.feed(
                            id,
                            Input::Hold {
                                job: j.clone(),
                                by: by.clone(),
                            },
                        )
                        .await;
                    }
                }
                self.bus.emit(EventKind::FlowAction {
                    flow,
                    action: "hold".into(),
                    target,
                    by,
                    comment,
                });
                self.answer(reply, Ok(()));
            }
            Cmd::Unhold { target, by, reply } => {
                let Some(flow) = self.flow_for(&target) else {
                    self.answer(
                        reply,
                        Err((404, format!("no job or flow named \"{target}\""))),
                    );
                    return;
                };
                match self.store.clear_hold(&target) {
                    Ok(false) => {
                        self.answer(reply, Err((409, format!("\"{target}\" is not held"))));
                        return;
                    }
                    Err(e) => {
                        self.answer(reply, Err((503, format!("store: {e}"))));
                        return;
                    }
                    Ok(true) => {}
                }
                self.holds.remove(&target);
                let jobs = self.jobs_of(&target);
                let ids = self.open_runs_of(&flow);
                for id in ids {
                    for j in &jobs {
                        if !self.holds.contains(j) {
                            self.feed(id, Input::Unhold { job: j.clone() }).await;
                        }
                    }
                }
                self.bus.emit(EventKind::FlowAction {
                    flow,
                    action: "unhold".into(),
                    target,
                    by,
                    comment: String::new(),
                });
                self.answer(reply, Ok(()));
            }
        }
    }

    /// The open flow run a rerun or release acts on: `run` when given, else
    /// the flow's newest run, which must still be open. An older run left
    /// open (stalled) when a newer one has since succeeded is never picked
    /// by default: acting on it would redo an old day's work unasked.
    pub(super) fn open_run(
        &self,
        flow: &str,
        run: Option<i64>,
        what: &str,
    ) -> Result<i64, (u16, String)> {
        let open = self.open_runs_of(flow);
        if let Some(id) = run {
            if open.contains(&id) {
                return Ok(id);
            }
            let stored = self
                .store
                .flow_run_status(id)
                .map_err(|e| (503, format!("store: {e}")))?;
            return Err(match stored {
                Some((f, status)) if f == flow => (
                    409,
                    format!("flow run {id} of \"{flow}\" is not open (it is {status})"),
                ),
                _ => (404, format!("no flow run {id} of \"{flow}\"")),
            });
        }
        let newest_stored = self
            .store
            .flow_runs(flow, 1)
            .map_err(|e| (503, format!("store: {e}")))?
            .first()
            .map(|r| r.id);
        match (open.last(), newest_stored) {
            (Some(&id), stored) if stored.is_none_or(|s| s <= id) => Ok(id),
            (Some(_), Some(newest)) => {
                let ids: Vec<String> = open.iter().map(|i| i.to_string()).collect();
                Err((409, format!(
                    "the newest run of flow \"{flow}\" (flow run {newest}) succeeded; older flow runs are still open: {}; name one with --run ID {what} it",
                    ids.join(", ")
                )))
            }
            _ => Err((409, format!("flow \"{flow}\" has no open run {what} (it has not run, or its last run succeeded)"))),
        }
    }

    /// Answers a person's command once the views show its effect, so that
    /// `mamori flows` right after `mamori run` shows the new run (a refusal
    /// changed nothing to show).
    fn answer<T>(&self, reply: Reply<T>, r: Result<T, (u16, String)>) {
        if r.is_ok() {
            self.publish();
        }
        let _ = reply.send(r);
    }

    /// The flow's runs still in memory (open, or finished but not yet
    /// saved), oldest first.
    fn open_runs_of(&self, flow: &str) -> Vec<i64> {
        self.runs
            .iter()
            .filter(|(_, (f, _))| f == flow)
            .map(|(id, _)| *id)
            .collect()
    }

    pub(super) fn flow_for(&self, target: &str) -> Option<String> {
        if self.defs.contains_key(target) {
            Some(target.to_string())
        } else {
            self.job_flow.get(target).cloned()
        }
    }

    pub(super) fn jobs_of(&self, target: &str) -> Vec<String> {
        match self.defs.get(target) {
            Some(def) => def.jobs.clone(),
            None => vec![target.to_string()],
        }
    }

    /// Feeds a person's command, reporting a refusal to them.
    pub(super) async fn checked(&mut self, id: i64, input: Input) -> Result<(), (u16, String)> {
        let Some((_, run)) = self.runs.get(&id) else {
            return Err((409, "that flow run is finished".into()));
        };
        // Dry run on a copy: a refusal changes nothing.
        let mut probe = run.clone();
        probe
            .handle(input.clone(), &self.holds)
            .map_err(|e| (409, e))?;
        self.feed(id, input).await;
        Ok(())
    }
}
