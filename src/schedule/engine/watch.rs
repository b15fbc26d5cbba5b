//! What the flow engine watches around a run: `hold_while` gates that keep
//! a job from starting, runs longer than `expected`, and `must_finish_by`
//! deadlines.

use super::*;

impl Engine {
    /// Why `hold_while` keeps the job from starting now, if it does.
    pub(super) fn gate(&self, job: &str) -> Option<String> {
        let spec = self.specs.get(job)?;
        let down: Vec<String> = spec
            .hold_while
            .iter()
            .filter_map(|(name, _)| {
                if let Some(c) = self.checks.status(name) {
                    use crate::probe::health::Status;
                    return match c.status {
                        Status::Down => Some(format!(
                            "check \"{name}\" is down ({})",
                            c.last_reason.unwrap_or_default()
                        )),
                        // What it watches is stopped: nothing to run against.
                        Status::Paused => Some(format!(
                            "check \"{name}\" is paused: its service is stopped"
                        )),
                        Status::Up | Status::Unknown => None,
                    };
                }
                // An alert rule: gated while one of its alerts is active
                // (acknowledged means a person is on it; it still fires).
                use crate::alert::db::AlertStore;
                let active = self.store.active_alerts().ok()?;
                active
                    .into_iter()
                    .find(|a| &a.rule == name)
                    .map(|a| format!("alert \"{}\" is {} ({})", a.key, a.state, a.title))
            })
            .collect();
        (!down.is_empty()).then(|| down.join("; "))
    }

    /// Starts gated jobs whose checks cleared; holds those that waited too long.
    pub(super) async fn check_gates(&mut self) {
        let gated = std::mem::take(&mut self.gated);
        for g in gated {
            let Some(flow) = self.runs.get(&g.flow_run).map(|(f, _)| f.clone()) else {
                continue;
            };
            match self.gate(&g.job) {
                None => {
                    tracing::info!(job = %g.job, flow_run = g.flow_run, "hold_while cleared; starting.");
                    if let Some(input) = self.launch(&flow, g.flow_run, &g.job, g.attempt).await {
                        self.feed(g.flow_run, input).await;
                    }
                }
                Some(why) => {
                    let timeout = self.specs.get(&g.job).and_then(|s| s.hold_timeout);
                    if timeout.is_some_and(|t| g.since.elapsed() >= t) {
                        let reason = format!(
                            "held: hold_while still not clear after {}: {why}",
                            crate::config::units::format_duration(g.since.elapsed())
                        );
                        self.feed(g.flow_run, Input::GiveUpWaiting { job: g.job, reason })
                            .await;
                    } else {
                        self.gated.push(g);
                    }
                }
            }
        }
    }

    /// How long a run of `job` may take before it is reported as long.
    pub(super) fn expected(&self, job: &str) -> Option<Duration> {
        let spec = self.specs.get(job)?;
        let by_history = spec.expected_factor.and_then(|f| {
            let runs = self.store.runs(Some(job), 50).ok()?;
            let mut took: Vec<i64> = runs
                .iter()
                .filter(|r| r.state == crate::store::RunState::Succeeded)
                .filter_map(|r| Some(r.ended_at? - r.started_at))
                .take(20)
                .collect();
            if took.len() < 5 {
                return None;
            }
            took.sort_unstable();
            let p95 = took[(took.len() * 95).div_ceil(100) - 1].max(1) as f64;
            Some(Duration::from_millis((p95 * f) as u64))
        });
        match (spec.expected, by_history) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Reports runs longer than expected and jobs past `must_finish_by`.
    pub(super) fn check_overdue(&mut self) {
        let now_i = Instant::now();
        let due: Vec<(i64, String, u64)> = self
            .long
            .iter()
            .filter(|(t, ..)| *t <= now_i)
            .map(|(_, r, j, e)| (*r, j.clone(), *e))
            .collect();
        self.long.retain(|(t, ..)| *t > now_i);
        for (run_id, job, expected_ms) in due {
            if let Ok(Some(run)) = self.store.run(run_id) {
                if run.state == crate::store::RunState::Running {
                    let running_ms = (now_ms() - run.started_at).max(0) as u64;
                    tracing::warn!(%job, run_id, running_ms, expected_ms, "Job runs longer than expected.");
                    self.bus.emit(EventKind::JobLong {
                        job,
                        run_id,
                        running_ms,
                        expected_ms,
                    });
                }
            }
        }
        let now = Utc::now();
        let late: Vec<(DateTime<Utc>, i64, String)> = self
            .deadlines
            .iter()
            .filter(|(t, ..)| *t <= now)
            .cloned()
            .collect();
        self.deadlines.retain(|(t, ..)| *t > now);
        for (deadline, flow_run, job) in late {
            let Some((flow, run)) = self.runs.get(&flow_run) else {
                continue;
            };
            let st = run.states.get(&job);
            if matches!(
                st,
                Some(JobState::Succeeded { .. } | JobState::Released { .. })
            ) {
                continue;
            }
            let state = st
                .map(crate::schedule::flow::state_name)
                .unwrap_or("unknown");
            tracing::warn!(%job, flow_run, state, "Job has not finished by its deadline.");
            self.bus.emit(EventKind::JobLate {
                job,
                flow: flow.clone(),
                flow_run,
                deadline: deadline.timestamp_millis(),
                state: state.to_string(),
            });
        }
    }

    /// `must_finish_by` deadlines of a new flow run, from its trigger time.
    pub(super) fn plan_deadlines(&mut self, flow: &str, id: i64, trigger_at: DateTime<Utc>) {
        let Some(def) = self.defs.get(flow) else {
            return;
        };
        let mut planned = Vec::new();
        for job in &def.jobs {
            let Some(spec) = self.specs.get(job) else {
                continue;
            };
            let Some(by) = spec.must_finish_by else {
                continue;
            };
            let mut day = trigger_at.with_timezone(&spec.tz).date_naive();
            for _ in 0..2 {
                let at =
                    chrono::TimeZone::from_local_datetime(&spec.tz, &day.and_time(by)).earliest();
                if let Some(t) = at
                    .map(|t| t.with_timezone(&Utc))
                    .filter(|t| *t > trigger_at)
                {
                    planned.push((t, id, job.clone()));
                    break;
                }
                day = day.succ_opt().unwrap_or(day);
            }
        }
        self.deadlines.extend(planned);
    }
}
