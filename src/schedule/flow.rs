//! A flow run as a pure state machine. A flow is a connected set of jobs
//! linked by `after`; a run of it starts its root jobs, starts each job when
//! all its upstream jobs succeeded (or were released), retries a failing job
//! as configured, and when a job fails for good **holds everything
//! downstream of it**, visibly and with the reason, until a person reruns or
//! releases. Inputs in, actions out; the engine (`engine/`) does the I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq)]
pub struct JobPolicy {
    /// Extra attempts after a failure before the job counts as failed.
    pub retries: u32,
    pub retry_delay: Duration,
    /// Each further retry waits this many times longer.
    pub retry_backoff: f64,
    /// A recovery job started when this job fails for good.
    pub on_failure: Option<String>,
}

impl Default for JobPolicy {
    fn default() -> Self {
        JobPolicy {
            retries: 0,
            retry_delay: Duration::from_secs(30),
            retry_backoff: 2.0,
            on_failure: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct FlowDef {
    pub name: String,
    /// Jobs in an order where every job comes after its upstream jobs.
    pub jobs: Vec<String>,
    pub upstream: BTreeMap<String, Vec<String>>,
    pub policy: BTreeMap<String, JobPolicy>,
}

impl FlowDef {
    pub fn roots(&self) -> Vec<&String> {
        self.jobs
            .iter()
            .filter(|j| self.upstream.get(*j).is_none_or(|u| u.is_empty()))
            .collect()
    }

    fn downstream(&self, job: &str) -> Vec<&String> {
        self.jobs
            .iter()
            .filter(|j| {
                self.upstream
                    .get(*j)
                    .is_some_and(|u| u.iter().any(|x| x == job))
            })
            .collect()
    }

    /// Every job below `job`, in flow order.
    pub fn descendants(&self, job: &str) -> Vec<String> {
        let mut out: BTreeSet<String> = BTreeSet::new();
        let mut stack = vec![job.to_string()];
        while let Some(j) = stack.pop() {
            for d in self.downstream(&j) {
                if out.insert(d.clone()) {
                    stack.push(d.clone());
                }
            }
        }
        self.jobs
            .iter()
            .filter(|j| out.contains(*j))
            .cloned()
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum JobState {
    /// Not started: its upstream jobs have not all succeeded yet.
    Waiting,
    Running {
        run_id: Option<i64>,
        attempt: u32,
    },
    /// Failed an attempt; waits to retry.
    RetryWait {
        attempt: u32,
        reason: String,
    },
    Succeeded {
        run_id: i64,
    },
    Failed {
        run_id: Option<i64>,
        reason: String,
    },
    /// Will not run until a person acts; `reason` says why.
    Held {
        reason: String,
        manual: bool,
    },
    /// Accepted by a person without (re)running; counts as done downstream.
    Released {
        by: String,
    },
}

impl JobState {
    fn done_ok(&self) -> bool {
        matches!(self, JobState::Succeeded { .. } | JobState::Released { .. })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    Start,
    Started {
        job: String,
        run_id: i64,
    },
    Ended {
        job: String,
        run_id: i64,
        ok: bool,
        reason: String,
    },
    RetryDue {
        job: String,
    },
    RerunFromFailed,
    RerunFrom {
        job: String,
    },
    RerunOnly {
        job: String,
    },
    Release {
        job: String,
        by: String,
    },
    Hold {
        job: String,
        by: String,
    },
    Unhold {
        job: String,
    },
    /// A job due to start was kept waiting (`hold_while`) too long: hold it.
    GiveUpWaiting {
        job: String,
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Start a run of the job now.
    Run {
        job: String,
        attempt: u32,
    },
    RetryAfter {
        job: String,
        delay: Duration,
    },
    /// The job failed for good (retries spent).
    Failed {
        job: String,
        reason: String,
    },
    Held {
        job: String,
        reason: String,
    },
    /// Start the failed job's recovery job (outside the flow).
    Recover {
        job: String,
        failed: String,
    },
    /// Every job succeeded or was released.
    Finished,
    /// Nothing can move until a person acts.
    Stalled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Running,
    Succeeded,
    Stalled,
}

#[derive(Debug, Clone)]
pub struct FlowRun {
    pub def: Arc<FlowDef>,
    pub states: BTreeMap<String, JobState>,
    /// Jobs whose state changed since the engine last saved (`take_dirty`).
    dirty: BTreeSet<String>,
    /// Jobs rerun with `--only`: their success does not start downstream jobs.
    only: BTreeSet<String>,
}

impl FlowRun {
    pub fn new(def: Arc<FlowDef>) -> Self {
        let states = def
            .jobs
            .iter()
            .map(|j| (j.clone(), JobState::Waiting))
            .collect();
        FlowRun {
            def,
            states,
            dirty: BTreeSet::new(),
            only: BTreeSet::new(),
        }
    }

    /// Restores a persisted run (jobs missing from the saved states wait).
    pub fn restore(def: Arc<FlowDef>, saved: BTreeMap<String, JobState>) -> Self {
        let mut run = FlowRun::new(def);
        for (j, s) in saved {
            if run.states.contains_key(&j) {
                run.states.insert(j, s);
            }
        }
        run
    }

    pub fn status(&self) -> Status {
        if self.states.values().all(JobState::done_ok) {
            return Status::Succeeded;
        }
        let moving = self.states.iter().any(|(j, s)| match s {
            JobState::Running { .. } | JobState::RetryWait { .. } => true,
            JobState::Waiting => self.ready(j),
            _ => false,
        });
        if moving {
            Status::Running
        } else {
            Status::Stalled
        }
    }

    fn ready(&self, job: &str) -> bool {
        self.def.upstream.get(job).is_none_or(|ups| {
            ups.iter()
                .all(|u| self.states.get(u).is_some_and(JobState::done_ok))
        })
    }

    fn set(&mut self, job: String, state: JobState) {
        self.dirty.insert(job.clone());
        self.states.insert(job, state);
    }

    /// The jobs whose state changed since the last call, with their state.
    fn take_dirty(&mut self) -> Vec<(String, JobState)> {
        std::mem::take(&mut self.dirty)
            .into_iter()
            .filter_map(|j| self.states.get(&j).map(|s| (j, s.clone())))
            .collect()
    }

    /// Hands the job states that changed since the last save to `write`.
    /// If it fails they stay marked, so the next save writes them again
    /// (with their state by then) instead of leaving the store behind.
    pub fn save_changes<E>(
        &mut self,
        write: impl FnOnce(&[(String, JobState)]) -> Result<(), E>,
    ) -> Result<(), E> {
        let changed = self.take_dirty();
        let r = write(&changed);
        if r.is_err() {
            self.dirty.extend(changed.into_iter().map(|(j, _)| j));
        }
        r
    }

    fn state(&self, job: &str) -> Result<&JobState, String> {
        self.states
            .get(job)
            .ok_or_else(|| format!("job \"{job}\" is not part of flow \"{}\"", self.def.name))
    }

    /// Starts every waiting job whose upstream is done (unless held by hand).
    fn start_ready(&mut self, holds: &BTreeSet<String>, out: &mut Vec<Action>) {
        let jobs = self.def.jobs.clone();
        for j in jobs {
            if self.states.get(&j) == Some(&JobState::Waiting) && self.ready(&j) {
                if holds.contains(&j) {
                    let reason = "held by hand (`mamori unhold` to let it run)".to_string();
                    self.set(
                        j.clone(),
                        JobState::Held {
                            reason: reason.clone(),
                            manual: true,
                        },
                    );
                    out.push(Action::Held { job: j, reason });
                } else {
                    self.set(
                        j.clone(),
                        JobState::Running {
                            run_id: None,
                            attempt: 1,
                        },
                    );
                    out.push(Action::Run { job: j, attempt: 1 });
                }
            }
        }
    }

    fn conclude(&self, out: &mut Vec<Action>) {
        match self.status() {
            Status::Succeeded => out.push(Action::Finished),
            Status::Stalled => out.push(Action::Stalled),
            Status::Running => {}
        }
    }

    /// Handles one input. `holds` are the jobs held by hand right now.
    pub fn handle(
        &mut self,
        input: Input,
        holds: &BTreeSet<String>,
    ) -> Result<Vec<Action>, String> {
        let mut out = Vec::new();
        match input {
            Input::Start => self.start_ready(holds, &mut out),
            Input::Started { job, run_id } => {
                if let Some(JobState::Running { attempt, .. }) = self.states.get(&job).cloned() {
                    self.set(
                        job,
                        JobState::Running {
                            run_id: Some(run_id),
                            attempt,
                        },
                    );
                }
                return Ok(out);
            }
            Input::Ended {
                job,
                run_id,
                ok,
                reason,
            } => {
                let Some(JobState::Running { attempt, .. }) = self.states.get(&job).cloned() else {
                    return Ok(out); // not ours (any more)
                };
                if ok {
                    self.set(job.clone(), JobState::Succeeded { run_id });
                    if !self.only.remove(&job) {
                        self.start_ready(holds, &mut out);
                    }
                } else {
                    let policy = self.def.policy.get(&job).cloned().unwrap_or_default();
                    if attempt <= policy.retries {
                        let delay = policy
                            .retry_delay
                            .mul_f64(policy.retry_backoff.max(1.0).powi(attempt as i32 - 1));
                        self.set(job.clone(), JobState::RetryWait { attempt, reason });
                        out.push(Action::RetryAfter { job, delay });
                        return Ok(out);
                    }
                    self.fail(&job, Some(run_id), reason, &mut out);
                }
            }
            Input::RetryDue { job } => {
                if let Some(JobState::RetryWait { attempt, .. }) = self.states.get(&job).cloned() {
                    self.set(
                        job.clone(),
                        JobState::Running {
                            run_id: None,
                            attempt: attempt + 1,
                        },
                    );
                    out.push(Action::Run {
                        job,
                        attempt: attempt + 1,
                    });
                }
                return Ok(out);
            }
            Input::RerunFromFailed => {
                let failed: Vec<String> = self
                    .states
                    .iter()
                    .filter(|(_, s)| matches!(s, JobState::Failed { .. }))
                    .map(|(j, _)| j.clone())
                    .collect();
                if failed.is_empty() {
                    return Err(format!(
                        "flow \"{}\" has no failed job to rerun",
                        self.def.name
                    ));
                }
                for f in &failed {
                    self.set(f.clone(), JobState::Waiting);
                    self.unhold_below(f);
                }
                self.start_ready(holds, &mut out);
            }
            Input::RerunFrom { job } => {
                self.not_running(&job)?;
                if !self.ready(&job) {
                    return Err(format!(
                        "job \"{job}\" cannot run yet: its upstream jobs have not all succeeded"
                    ));
                }
                self.set(job.clone(), JobState::Waiting);
                for d in self.def.descendants(&job) {
                    self.not_running(&d)?;
                    self.set(d, JobState::Waiting);
                }
                self.start_ready(holds, &mut out);
            }
            Input::RerunOnly { job } => {
                self.not_running(&job)?;
                if !self.ready(&job) {
                    return Err(format!(
                        "job \"{job}\" cannot run yet: its upstream jobs have not all succeeded"
                    ));
                }
                self.set(
                    job.clone(),
                    JobState::Running {
                        run_id: None,
                        attempt: 1,
                    },
                );
                self.only.insert(job.clone());
                out.push(Action::Run { job, attempt: 1 });
            }
            Input::Release { job, by } => {
                match self.state(&job)? {
                    JobState::Failed { .. } | JobState::Held { .. } => {}
                    other => {
                        return Err(format!(
                            "job \"{job}\" is {}; only a failed or held job can be released",
                            state_name(other)
                        ))
                    }
                }
                self.set(job.clone(), JobState::Released { by });
                self.unhold_below(&job);
                self.start_ready(holds, &mut out);
            }
            Input::Hold { job, by } => {
                if self.state(&job)? == &JobState::Waiting {
                    let reason = format!("held by hand by {by}");
                    self.set(
                        job.clone(),
                        JobState::Held {
                            reason: reason.clone(),
                            manual: true,
                        },
                    );
                    out.push(Action::Held { job, reason });
                }
                return Ok(out);
            }
            Input::GiveUpWaiting { job, reason } => {
                if let JobState::Running { run_id: None, .. } = self.state(&job)? {
                    self.set(
                        job.clone(),
                        JobState::Held {
                            reason: reason.clone(),
                            manual: false,
                        },
                    );
                    out.push(Action::Held { job, reason });
                }
            }
            Input::Unhold { job } => {
                if let JobState::Held { manual: true, .. } = self.state(&job)? {
                    self.set(job.clone(), JobState::Waiting);
                    self.start_ready(holds, &mut out);
                }
            }
        }
        self.conclude(&mut out);
        Ok(out)
    }

    fn not_running(&self, job: &str) -> Result<(), String> {
        match self.state(job)? {
            JobState::Running { .. } | JobState::RetryWait { .. } => Err(format!(
                "job \"{job}\" is running; wait for it or stop it first"
            )),
            _ => Ok(()),
        }
    }

    /// The job failed for good: hold everything below it that has not run.
    fn fail(&mut self, job: &str, run_id: Option<i64>, reason: String, out: &mut Vec<Action>) {
        self.set(
            job.to_string(),
            JobState::Failed {
                run_id,
                reason: reason.clone(),
            },
        );
        out.push(Action::Failed {
            job: job.to_string(),
            reason: reason.clone(),
        });
        let why = match run_id {
            Some(r) => format!("upstream job \"{job}\" failed (run {r}: {reason})"),
            None => format!("upstream job \"{job}\" failed ({reason})"),
        };
        for d in self.def.descendants(job) {
            if matches!(self.states.get(&d), Some(JobState::Waiting)) {
                self.set(
                    d.clone(),
                    JobState::Held {
                        reason: why.clone(),
                        manual: false,
                    },
                );
                out.push(Action::Held {
                    job: d,
                    reason: why.clone(),
                });
            }
        }
        if let Some(rec) = self.def.policy.get(job).and_then(|p| p.on_failure.clone()) {
            out.push(Action::Recover {
                job: rec,
                failed: job.to_string(),
            });
        }
    }

    /// Jobs held because something above failed go back to waiting.
    fn unhold_below(&mut self, job: &str) {
        for d in self.def.descendants(job) {
            if let Some(JobState::Held { manual: false, .. }) = self.states.get(&d) {
                self.set(d, JobState::Waiting);
            }
        }
    }

    /// After an agent restart: a job that was running has an unknown end.
    /// It is failed (never run again automatically: no job runs twice for
    /// one trigger) and what is below it is held.
    pub fn interrupted(&mut self) -> Vec<Action> {
        let mut out = Vec::new();
        let running: Vec<(String, Option<i64>)> = self
            .states
            .iter()
            .filter_map(|(j, s)| match s {
                JobState::Running { run_id, .. } => Some((j.clone(), *run_id)),
                _ => None,
            })
            .collect();
        for (j, run_id) in running {
            self.fail(
                &j,
                run_id,
                "interrupted: the agent stopped while it ran".into(),
                &mut out,
            );
        }
        out
    }
}

pub fn state_name(s: &JobState) -> &'static str {
    match s {
        JobState::Waiting => "waiting",
        JobState::Running { .. } => "running",
        JobState::RetryWait { .. } => "waiting to retry",
        JobState::Succeeded { .. } => "succeeded",
        JobState::Failed { .. } => "failed",
        JobState::Held { .. } => "held",
        JobState::Released { .. } => "released",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// extract → transform → load, and extract → report (fan-out); load and
    /// report → publish (fan-in).
    fn def() -> Arc<FlowDef> {
        let mut upstream = BTreeMap::new();
        upstream.insert("transform".to_string(), vec!["extract".to_string()]);
        upstream.insert("load".to_string(), vec!["transform".to_string()]);
        upstream.insert("report".to_string(), vec!["extract".to_string()]);
        upstream.insert(
            "publish".to_string(),
            vec!["load".to_string(), "report".to_string()],
        );
        let mut policy = BTreeMap::new();
        policy.insert(
            "transform".to_string(),
            JobPolicy {
                retries: 1,
                retry_delay: Duration::from_secs(10),
                retry_backoff: 2.0,
                on_failure: Some("cleanup".into()),
            },
        );
        Arc::new(FlowDef {
            name: "nightly".into(),
            jobs: ["extract", "transform", "report", "load", "publish"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            upstream,
            policy,
        })
    }

    fn runs(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Run { job, .. } => Some(job.clone()),
                _ => None,
            })
            .collect()
    }

    fn end(f: &mut FlowRun, job: &str, id: i64, ok: bool) -> Vec<Action> {
        let none = BTreeSet::new();
        f.handle(
            Input::Started {
                job: job.into(),
                run_id: id,
            },
            &none,
        )
        .unwrap();
        f.handle(
            Input::Ended {
                job: job.into(),
                run_id: id,
                ok,
                reason: if ok { "exit:0".into() } else { "exit:3".into() },
            },
            &none,
        )
        .unwrap()
    }

    /// Regression: a job's success and its retry wait were set without being
    /// marked dirty, so the store (and the API and dashboard after the run
    /// finished) kept showing the job as running.
    #[test]
    fn every_state_change_is_marked_for_saving() {
        let none = BTreeSet::new();
        let mut f = FlowRun::new(def());
        f.handle(Input::Start, &none).unwrap();
        f.take_dirty();
        end(&mut f, "extract", 1, true);
        let dirty = f.take_dirty();
        assert!(
            dirty.contains(&("extract".to_string(), JobState::Succeeded { run_id: 1 })),
            "{dirty:?}"
        );
    }

    /// Regression: the changed states were taken before the write, so when
    /// the write failed they were never written and the store kept the old
    /// states for good.
    #[test]
    fn changes_a_failed_save_did_not_write_are_saved_next_time() {
        let none = BTreeSet::new();
        let mut f = FlowRun::new(def());
        f.handle(Input::Start, &none).unwrap();
        let running = (
            "extract".to_string(),
            JobState::Running {
                run_id: None,
                attempt: 1,
            },
        );
        let failed: Result<(), &str> = f.save_changes(|changed| {
            assert_eq!(changed, std::slice::from_ref(&running));
            Err("disk I/O error")
        });
        assert!(failed.is_err());
        // Nothing changed since: the next save still writes it.
        let mut written = Vec::new();
        f.save_changes(|changed| {
            written = changed.to_vec();
            Ok::<(), &str>(())
        })
        .unwrap();
        assert_eq!(written, [running]);
        // Saved: nothing is left to write.
        f.save_changes(|changed| {
            assert!(changed.is_empty(), "{changed:?}");
            Ok::<(), &str>(())
        })
        .unwrap();
    }

    #[test]
    fn fan_out_and_fan_in() {
        let none = BTreeSet::new();
        let mut f = FlowRun::new(def());
        assert_eq!(
            runs(&f.handle(Input::Start, &none).unwrap()),
            vec!["extract"]
        );
        assert_eq!(
            runs(&end(&mut f, "extract", 1, true)),
            vec!["transform", "report"]
        );
        assert_eq!(
            runs(&end(&mut f, "report", 2, true)),
            Vec::<String>::new(),
            "publish waits for load"
        );
        assert_eq!(runs(&end(&mut f, "transform", 3, true)), vec!["load"]);
        let last = end(&mut f, "load", 4, true);
        assert_eq!(runs(&last), vec!["publish"]);
        let done = end(&mut f, "publish", 5, true);
        assert_eq!(done, vec![Action::Finished]);
        assert_eq!(f.status(), Status::Succeeded);
    }

    #[test]
    fn retry_then_fail_holds_downstream_then_rerun_from_failed() {
        let none = BTreeSet::new();
        let mut f = FlowRun::new(def());
        f.handle(Input::Start, &none).unwrap();
        end(&mut f, "extract", 1, true);
        end(&mut f, "report", 2, true);
        let a = end(&mut f, "transform", 3, false);
        assert_eq!(
            a,
            vec![Action::RetryAfter {
                job: "transform".into(),
                delay: Duration::from_secs(10)
            }]
        );
        let a = f
            .handle(
                Input::RetryDue {
                    job: "transform".into(),
                },
                &none,
            )
            .unwrap();
        assert_eq!(
            a,
            vec![Action::Run {
                job: "transform".into(),
                attempt: 2
            }]
        );
        let a = end(&mut f, "transform", 4, false);
        assert!(a.contains(&Action::Failed {
            job: "transform".into(),
            reason: "exit:3".into()
        }));
        let held: Vec<&Action> = a
            .iter()
            .filter(|x| matches!(x, Action::Held { .. }))
            .collect();
        assert_eq!(held.len(), 2, "load and publish are held: {a:?}");
        assert!(a.contains(&Action::Held {
            job: "load".into(),
            reason: "upstream job \"transform\" failed (run 4: exit:3)".into()
        }));
        assert!(a.contains(&Action::Recover {
            job: "cleanup".into(),
            failed: "transform".into()
        }));
        assert_eq!(a.last(), Some(&Action::Stalled));
        assert_eq!(f.status(), Status::Stalled);

        let a = f.handle(Input::RerunFromFailed, &none).unwrap();
        assert_eq!(runs(&a), vec!["transform"]);
        assert_eq!(f.states["load"], JobState::Waiting);
        assert_eq!(runs(&end(&mut f, "transform", 5, true)), vec!["load"]);
        end(&mut f, "load", 6, true);
        assert_eq!(end(&mut f, "publish", 7, true), vec![Action::Finished]);
    }

    #[test]
    fn release_accepts_a_failure_and_continues() {
        let none = BTreeSet::new();
        let mut f = FlowRun::new(def());
        f.handle(Input::Start, &none).unwrap();
        let a = end(&mut f, "extract", 1, false);
        assert_eq!(
            a.iter()
                .filter(|x| matches!(x, Action::Held { .. }))
                .count(),
            4
        );
        assert!(
            f.handle(
                Input::Release {
                    job: "report".into(),
                    by: "ops".into()
                },
                &none
            )
            .is_ok(),
            "a held job can be released"
        );
        let a = f
            .handle(
                Input::Release {
                    job: "extract".into(),
                    by: "ops".into(),
                },
                &none,
            )
            .unwrap();
        assert_eq!(
            runs(&a),
            vec!["transform"],
            "report was released too, so only transform runs"
        );
        assert!(
            f.handle(
                Input::Release {
                    job: "transform".into(),
                    by: "ops".into()
                },
                &none
            )
            .is_err(),
            "a running job cannot be released"
        );
    }

    #[test]
    fn manual_hold_and_only() {
        let mut holds = BTreeSet::new();
        holds.insert("load".to_string());
        let mut f = FlowRun::new(def());
        f.handle(Input::Start, &holds).unwrap();
        f.handle(
            Input::Started {
                job: "extract".into(),
                run_id: 1,
            },
            &holds,
        )
        .unwrap();
        f.handle(
            Input::Ended {
                job: "extract".into(),
                run_id: 1,
                ok: true,
                reason: String::new(),
            },
            &holds,
        )
        .unwrap();
        f.handle(
            Input::Started {
                job: "transform".into(),
                run_id: 2,
            },
            &holds,
        )
        .unwrap();
        let a = f
            .handle(
                Input::Ended {
                    job: "transform".into(),
                    run_id: 2,
                    ok: true,
                    reason: String::new(),
                },
                &holds,
            )
            .unwrap();
        assert!(matches!(&a[0], Action::Held { job, .. } if job == "load"));
        holds.clear();
        let a = f
            .handle(Input::Unhold { job: "load".into() }, &holds)
            .unwrap();
        assert_eq!(runs(&a), vec!["load"]);
        // --only reruns one job without starting what is below it.
        let mut g = FlowRun::new(def());
        g.handle(Input::Start, &holds).unwrap();
        end(&mut g, "extract", 1, true);
        end(&mut g, "report", 2, true);
        end(&mut g, "transform", 3, true);
        end(&mut g, "load", 4, true);
        end(&mut g, "publish", 5, true);
        let a = g
            .handle(
                Input::RerunOnly {
                    job: "transform".into(),
                },
                &holds,
            )
            .unwrap();
        assert_eq!(runs(&a), vec!["transform"]);
        assert_eq!(
            runs(&end(&mut g, "transform", 6, true)),
            Vec::<String>::new()
        );
        let a = g
            .handle(Input::RerunFrom { job: "load".into() }, &holds)
            .unwrap();
        assert_eq!(runs(&a), vec!["load"]);
        assert_eq!(g.states["publish"], JobState::Waiting);
    }

    #[test]
    fn interrupted_runs_fail_and_hold_instead_of_running_twice() {
        let none = BTreeSet::new();
        let mut f = FlowRun::new(def());
        f.handle(Input::Start, &none).unwrap();
        f.handle(
            Input::Started {
                job: "extract".into(),
                run_id: 9,
            },
            &none,
        )
        .unwrap();
        let a = f.interrupted();
        assert!(a.iter().all(|x| !matches!(x, Action::Run { .. })));
        assert!(
            matches!(&f.states["extract"], JobState::Failed { reason, .. } if reason.starts_with("interrupted"))
        );
        assert!(matches!(&f.states["publish"], JobState::Held { .. }));
        let json = serde_json::to_string(&f.states).unwrap();
        let back: BTreeMap<String, JobState> = serde_json::from_str(&json).unwrap();
        assert_eq!(FlowRun::restore(def(), back).states, f.states);
    }
}
