//! A run's watchdog: samples its process tree on a grid shared by all
//! watchdogs, enforces the limits the kernel does not (CPU time always,
//! memory where no cgroup holds it), confirms the kernel's own OOM kills,
//! and records the first breach of a run (only the first one counts).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::enforce::RunGroup;
use super::unit::lock;
use super::Ctx;
use crate::config::Limits;
use crate::event::EventKind;
use crate::util::now_ms;

/// Live figures of a run, written by its watchdog.
#[derive(Debug, Default)]
pub(super) struct Watch {
    pub(super) rss: AtomicU64,
    pub(super) peak: AtomicU64,
    pub(super) cpu_ms: AtomicU64,
    pub(super) breach: Mutex<Option<String>>,
    pub(super) last: Mutex<Option<crate::store::Sample>>,
}

/// Records the first breach of a run and emits its event. False when the run
/// had already breached (only the first one counts).
#[allow(clippy::too_many_arguments)]
pub(super) fn record_breach(
    ctx: &Ctx,
    unit: &str,
    run_id: i64,
    watch: &Watch,
    limit: &str,
    value: u64,
    max: u64,
    enforced_by: &str,
) -> bool {
    if !claim_breach(watch, limit) {
        return false;
    }
    emit_breach(ctx, unit, run_id, limit, value, max, enforced_by);
    true
}

/// Marks the run as ended by `limit`; false when another limit was first.
fn claim_breach(watch: &Watch, limit: &str) -> bool {
    let mut b = lock(&watch.breach);
    if b.is_some() {
        return false;
    }
    *b = Some(limit.to_string());
    true
}

/// Kills the tree for a breach, then records it: the kill must not wait
/// for the store (busy, or a disk stalled by the very job being killed).
/// SIGKILL goes out first; the event follows at once (so it still comes
/// before the run's end, as a rule reading both expects), and then the
/// tree is waited for.
pub(super) async fn kill_for_breach(
    ctx: &Ctx,
    unit: &str,
    run_id: i64,
    (group, root, watch): (&RunGroup, i32, &Watch),
    (limit, value, max, enforced_by): (&str, u64, u64, &str),
) {
    if claim_breach(watch, limit) {
        tracing::warn!(
            unit,
            run_id,
            limit,
            value,
            max,
            enforced_by,
            "Limit breached; killing the tree."
        );
        ctx.enforcer
            .signal_all(group, root, nix::sys::signal::Signal::SIGKILL);
        emit_breach(ctx, unit, run_id, limit, value, max, enforced_by);
        ctx.enforcer.kill_tree(group, root).await;
    }
}

fn emit_breach(
    ctx: &Ctx,
    unit: &str,
    run_id: i64,
    limit: &str,
    value: u64,
    max: u64,
    enforced_by: &str,
) {
    ctx.bus.emit(EventKind::LimitBreached {
        unit: unit.to_string(),
        run_id,
        limit: limit.to_string(),
        value,
        max,
        enforced_by: enforced_by.to_string(),
    });
}

/// Samples a run's tree and enforces the limits the kernel does not.
#[allow(clippy::too_many_arguments)]
pub(super) async fn watchdog(
    ctx: Arc<Ctx>,
    unit: String,
    run_id: i64,
    root: i32,
    group: Arc<RunGroup>,
    watch: Arc<Watch>,
    limits: Limits,
    cancel: CancellationToken,
) {
    // Fast polling only where we enforce: CPU always, memory only when the
    // kernel does not. A kernel OOM kill is noticed by the cgroup v1 OOM
    // notification at once, otherwise (cgroup2, or no notification) at the
    // next 1 s sample; the main process's death is noticed at once.
    let fast =
        limits.cpu.is_some() || (limits.memory.is_some() && !ctx.enforcer.kernel_memory_limit());
    let period = if fast {
        ctx.poll_interval
    } else {
        ctx.sample_interval
    };
    // Every watchdog with the same period ticks at the same instants (a grid
    // from the agent's start): the timer wheel wakes them together, and in
    // poll mode one /proc snapshot serves them all.
    let mut tick = tokio::time::interval_at(aligned_start(ctx.tick_epoch, period), period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut files = super::proc::ProcFiles::default();
    let mut cpu = CpuTally::default();
    // (when, cpu_ms) at the last recorded sample, for CPU %.
    let mut last_sample: Option<(Instant, u64)> = None;
    // The first sample is taken soon (status and /metrics show a new run's
    // memory without waiting for the grid), the rest on the grid. Not at
    // once: right after `exec` the program has faulted in next to nothing
    // (its RSS reads 0–300 KiB for the first millisecond or so).
    let mut first = true;
    tokio::select! {
        _ = cancel.cancelled() => return,
        _ = tokio::time::sleep(FIRST_SAMPLE_AFTER.min(period)) => {}
    }
    let kernel_oom = limits.memory.is_some() && ctx.enforcer.kernel_memory_limit();
    // Whether to wait for the kernel's OOM notification, and whether to read
    // the OOM kill counter at every sample (without a notification, or after
    // one that was not followed by a kill in time).
    let mut notified = kernel_oom && group.oom_notified();
    let mut read_oom_counter = kernel_oom && !notified;
    loop {
        if !first {
            let oom = tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => None,
                r = group.oom_event(), if notified => Some(r),
            };
            match oom {
                None => {}
                Some(Err(e)) => {
                    tracing::warn!(%unit, run_id, error = %e, "OOM notification failed; reading memory.oom_control at every sample.");
                    notified = false;
                    read_oom_counter = true;
                    continue;
                }
                Some(Ok(())) => {
                    match confirm_oom_kill(&group, &cancel).await {
                        OomCheck::Killed => {
                            let max = limits.memory.unwrap_or(0);
                            let peak = group
                                .kernel_peak()
                                .unwrap_or(watch.rss.load(Ordering::Relaxed));
                            let by = ctx.enforcer.mode().as_str();
                            kill_for_breach(
                                &ctx,
                                &unit,
                                run_id,
                                (&group, root, &watch),
                                ("memory", peak, max, by),
                            )
                            .await;
                            return;
                        }
                        // Removed: the run is ending, nothing more will come.
                        OomCheck::Gone => notified = false,
                        // Reclaim may have ended the OOM without a kill, or
                        // the kill is late: watch the counter from now on.
                        OomCheck::NoKill => read_oom_counter = true,
                        OomCheck::Cancelled => return,
                    }
                    continue;
                }
            }
        }
        first = false;
        let stats = ctx.enforcer.sample(&group, root, period / 2, &mut files);
        let rss: u64 = stats.iter().map(|(s, _)| s.rss).sum();
        let ticks = cpu.update(
            stats
                .iter()
                .map(|(s, _)| (s.pid, s.start_ticks, s.cpu_ticks)),
        );
        let cpu_ms = super::proc::ticks_to_duration(ticks).as_millis() as u64;
        watch.rss.store(rss, Ordering::Relaxed);
        watch.peak.fetch_max(rss, Ordering::Relaxed);
        watch.cpu_ms.store(cpu_ms, Ordering::Relaxed);
        let now = Instant::now();
        if last_sample.is_none_or(|(t, _)| now - t + period / 2 >= ctx.sample_interval) {
            let cpu_pct = match last_sample {
                Some((t, c)) if now > t => {
                    cpu_ms.saturating_sub(c) as f64 * 100.0 / (now - t).as_millis().max(1) as f64
                }
                _ => 0.0,
            };
            last_sample = Some((now, cpu_ms));
            let sample = crate::store::Sample {
                ts: now_ms(),
                rss,
                cpu_pct,
                fds: stats.iter().map(|(_, fds)| fds).sum(),
                threads: stats.iter().map(|(s, _)| s.threads).sum(),
                procs: stats.len() as u64,
            };
            *lock(&watch.last) = Some(sample);
            if !stats.is_empty() {
                ctx.sampler.record(&unit, sample);
            }
        }

        let mut breach = None;
        if let Some(max) = limits.memory {
            if kernel_oom {
                if read_oom_counter && group.oom_kills() > 0 {
                    let peak = group.kernel_peak().unwrap_or(rss);
                    breach = Some(("memory", peak, max, ctx.enforcer.mode().as_str()));
                }
            } else if rss > max {
                breach = Some(("memory", rss, max, "poll"));
            }
        }
        if let Some(max) = limits.cpu {
            let max_ms = max.as_millis() as u64;
            if cpu_ms > max_ms && breach.is_none() {
                breach = Some(("cpu", cpu_ms, max_ms, "poll"));
            }
        }
        if let Some(breach) = breach {
            kill_for_breach(&ctx, &unit, run_id, (&group, root, &watch), breach).await;
            return;
        }
    }
}

/// CPU time of a run's tree, in clock ticks: the processes in it now, plus
/// the last figure seen of each process that has left it. A process that
/// leaves is folded into one sum, so the tally holds only the live ones:
/// keyed by every pid ever seen, a service that is a shell loop starting a
/// `sleep` a second would add an entry a second for as long as it runs.
/// A process missing from one sample may still be alive (a read that
/// failed for want of descriptors, a snapshot that missed it): the last
/// `LEFT_KEPT` that left are remembered, and one that comes back (same pid,
/// same start) is taken out of `gone` again instead of counted twice.
#[derive(Debug, Default)]
struct CpuTally {
    /// The tree at the last sample: (pid, start ticks, CPU ticks), by pid.
    live: Vec<(i32, u64, u64)>,
    /// The buffer the next sample is sorted in (kept, not reallocated).
    spare: Vec<(i32, u64, u64)>,
    /// Ticks of the processes that have left the tree.
    gone: u64,
    /// The last processes that left, oldest first, as in `live`.
    left: std::collections::VecDeque<(i32, u64, u64)>,
}

/// Processes that left the tree remembered in case they come back.
const LEFT_KEPT: usize = 64;

impl CpuTally {
    /// Takes the tree now, (pid, start ticks, CPU ticks) per process, and
    /// returns the run's CPU ticks. A pid whose start time changed is
    /// another process (the pid was reused): the first one has left.
    fn update(&mut self, now: impl Iterator<Item = (i32, u64, u64)>) -> u64 {
        let mut next = std::mem::take(&mut self.spare);
        next.clear();
        next.extend(now);
        next.sort_unstable_by_key(|&(pid, _, _)| pid);
        for &(pid, start, ticks) in &self.live {
            let stays = next
                .binary_search_by_key(&pid, |&(p, _, _)| p)
                .is_ok_and(|i| next[i].1 == start);
            if !stays {
                self.gone = self.gone.saturating_add(ticks);
                if self.left.len() == LEFT_KEPT {
                    self.left.pop_front();
                }
                self.left.push_back((pid, start, ticks));
            }
        }
        for &(pid, start, _) in &next {
            let back = self
                .left
                .iter()
                .position(|&(p, s, _)| p == pid && s == start);
            if let Some(i) = back.and_then(|i| self.left.remove(i)) {
                self.gone = self.gone.saturating_sub(i.2);
            }
        }
        self.spare = std::mem::replace(&mut self.live, next);
        self.live
            .iter()
            .fold(self.gone, |sum, &(_, _, t)| sum.saturating_add(t))
    }
}

/// How long after a run's start its first sample is taken.
const FIRST_SAMPLE_AFTER: Duration = Duration::from_millis(50);

/// What followed a cgroup OOM notification.
#[derive(Debug, PartialEq, Eq)]
enum OomCheck {
    /// The kernel killed a process of the tree.
    Killed,
    /// No kill counted within `OOM_CONFIRM_DELAYS_MS`.
    NoKill,
    /// The counter cannot be read: the cgroup was removed (which the
    /// kernel signals too).
    Gone,
    Cancelled,
}

/// When to read the OOM kill counter after a notification (each after the
/// one before): the kernel notifies before it picks and kills a victim, and
/// the counter moves some ms later (about 7 ms, measured here).
const OOM_CONFIRM_DELAYS_MS: [u64; 10] = [0, 2, 5, 10, 20, 50, 100, 200, 500, 1000];

/// Confirms an OOM notification with the kill counter (see `OomCheck`).
async fn confirm_oom_kill(group: &RunGroup, cancel: &CancellationToken) -> OomCheck {
    for ms in OOM_CONFIRM_DELAYS_MS {
        if ms > 0 {
            tokio::select! {
                _ = cancel.cancelled() => return OomCheck::Cancelled,
                _ = tokio::time::sleep(Duration::from_millis(ms)) => {}
            }
        }
        match group.read_oom_kills() {
            None => return OomCheck::Gone,
            Some(0) => {}
            Some(_) => return OomCheck::Killed,
        }
    }
    OomCheck::NoKill
}

/// The first instant of the grid `epoch + k * period` that is not in the past.
fn aligned_start(epoch: Instant, period: Duration) -> Instant {
    let now = Instant::now();
    if now <= epoch || period.is_zero() {
        return epoch.max(now);
    }
    let since = (now - epoch).as_nanos();
    let p = period.as_nanos();
    let steps = since.div_ceil(p);
    epoch + Duration::from_nanos((steps * p).min(u64::MAX as u128) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_of_processes_that_left_is_kept_and_the_tally_holds_only_live_ones() {
        let mut t = CpuTally::default();
        // A shell loop (pid 10) starting a new short process every sample.
        for i in 0..10_000u64 {
            let total = t.update([(10, 1, i), (1000 + i as i32, 5 + i, 2)].into_iter());
            // The loop's own ticks, 2 for each child seen so far.
            assert_eq!(total, i + 2 * (i + 1));
            assert_eq!(t.live.len(), 2);
        }
        // The loop exits too: nothing is live, nothing is lost.
        assert_eq!(t.update(std::iter::empty()), 9_999 + 2 * 10_000);
        assert!(t.live.is_empty());
    }

    #[test]
    fn a_process_missing_from_one_sample_is_not_counted_twice() {
        let mut t = CpuTally::default();
        assert_eq!(t.update([(5, 1, 600), (6, 1, 10)].into_iter()), 610);
        // A sample that missed both (say, its read failed).
        assert_eq!(t.update(std::iter::empty()), 610);
        assert_eq!(t.update([(5, 1, 601)].into_iter()), 611);
        assert_eq!(t.update([(5, 1, 602), (6, 1, 11)].into_iter()), 613);
        assert!(t.left.is_empty());
    }

    #[test]
    fn a_reused_pid_is_another_process() {
        let mut t = CpuTally::default();
        assert_eq!(t.update([(7, 100, 50)].into_iter()), 50);
        // Pid 7 exited and was given to a new process (another start time):
        // the first one's 50 ticks stay counted.
        assert_eq!(t.update([(7, 200, 3)].into_iter()), 53);
        assert_eq!(t.update([(7, 200, 4)].into_iter()), 54);
        // Order of the processes in a sample does not matter.
        assert_eq!(
            t.update([(9, 1, 1), (7, 200, 4), (8, 1, 1)].into_iter()),
            56
        );
        assert_eq!(
            t.update([(8, 1, 2), (9, 1, 1), (7, 200, 4)].into_iter()),
            57
        );
    }

    #[tokio::test(start_paused = true)]
    async fn watchdogs_share_one_tick_grid() {
        let epoch = Instant::now();
        let period = Duration::from_millis(250);
        assert_eq!(aligned_start(epoch, period), epoch);
        tokio::time::advance(Duration::from_millis(10)).await;
        assert_eq!(aligned_start(epoch, period), epoch + period);
        tokio::time::advance(Duration::from_millis(240)).await;
        assert_eq!(aligned_start(epoch, period), epoch + period);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(aligned_start(epoch, period), epoch + 2 * period);
        // Two watchdogs started at different moments tick together.
        let mut a = tokio::time::interval_at(aligned_start(epoch, period), period);
        tokio::time::advance(Duration::from_millis(70)).await;
        let mut b = tokio::time::interval_at(aligned_start(epoch, period), period);
        assert_eq!(a.tick().await, b.tick().await);
        assert_eq!(a.tick().await, b.tick().await);
    }
}
