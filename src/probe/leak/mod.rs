//! Memory-leak detector: memory samples in, `suspected` / `cleared` verdicts
//! out. Pure — no tokio, no I/O, no clock: time is a [`Duration`] since any
//! monotonic epoch, passed with every sample, so a day of samples replays in
//! milliseconds ([`replay`], `benches/leak_replay.rs`).
//!
//! # Algorithm
//!
//! 1. **The floor, not the memory.** Garbage-collected and caching programs
//!    saw-tooth: memory climbs, then a collection drops it. What leaks is the
//!    *floor* the drops return to. The detector keeps only the minimum and
//!    maximum of each time bucket (`history.rs`: 2 s, 4 s, 8 s, … buckets up
//!    to `max_window`, 48 shown per level, ≈ 4.4 KiB per detector whatever the
//!    uptime) and sees a window through the minima of its runs of buckets.
//! 2. **Every time scale.** Leaks of 10 MiB/s and of 1 MiB/h differ by four
//!    orders of magnitude, so every window length on a √2 ladder from 10 s to
//!    `max_window` (none reaching back into the warm-up) is tested; long ones
//!    are re-tested every 1/16 of their length. A window's buckets are cut
//!    into up to 8 runs of at least 2 buckets; the floor points are the runs'
//!    minima; the line is the Theil–Sen fit (median of pairwise slopes, robust
//!    to an odd point) and the confidence is Kendall's τ (share of point pairs
//!    where the later is higher, minus the share where it is lower).
//!    **All the evidence there is**: while the limit is predicted within
//!    10 min, the window of everything since the warm-up ended is tested too,
//!    with every 2 s bucket. A fast leak has little time, and the ladder's
//!    longest window may be almost √2 shorter and re-tested only every 1/16
//!    of its length. (It is not used for slower growth: a window that grows
//!    cannot be compared with itself over the confirmation, step 4, and it
//!    starts at the steepest part of a warm-up that outlasts the grace.)
//! 3. **A window shows a leak** (`window.rs`) when all of these hold:
//!    - slope ≥ `min_slope_mb_per_hour` and τ ≥ `min_confidence`;
//!    - the rise comes in several steps (at least 3 steps between
//!      neighbouring points carry 1/8 of it each, none carries more than the
//!      whole rise), and each half of the window rises at ≥ 40 % of the
//!      window's slope: a step after a deploy (flat, a jump, flat) is not a
//!      leak;
//!    - **evidence in proportion to the claim**: the floor has already risen
//!      by `min_rise` (1/8) of the headroom left below the limit. Noise and
//!      slow wander make short steep-looking trends all the time; projecting
//!      them far ahead is what makes `predict_linear` rules misfire. On a real
//!      leak this costs ≈ 1/9 of its time to the limit. (No limit known:
//!      the window must be ≥ 1 h instead.)
//!    - the runs see through the saw-tooth: they are at least `floor_window`
//!      long, or at least as long as the saw-tooth cycle measured on the
//!      samples (the second longest of the last 16 intervals between
//!      *returns*). A return is a fall of a third of the saw-tooth
//!      *amplitude*: the median, over 8 runs of the last `floor_window`, of
//!      the deepest fall within each run. (Not the range of that window: a
//!      leak widens the range, so fewer falls counted as returns and the
//!      cycle looked longer the faster the leak; nor the single deepest fall,
//!      which one odd collection sets.) Otherwise a window may be looking at
//!      one saw-tooth ramp, and counts only if it *left the known range*: its
//!      last floor point is above the highest memory of the 4 floor windows
//!      before it by half its rise and by the deepest fall seen there (a ramp
//!      that climbs higher than before still falls back by its amplitude; a
//!      fast leak leaves its range in seconds).
//!
//!    **Per-cycle floor points.** A short window that fails the above is
//!    tested again on more, shorter runs: as long as the *typical* cycle
//!    (the median interval between returns), up to 16. Then each run holds a
//!    return (its minimum is a floor) more often than not, but not always:
//!    a run that misses one gives a high point, and the floor of a real heap
//!    moves by a good part of its amplitude from one collection to the next
//!    (a G1 heap's by ±80 MiB). So here the rise is judged by its
//!    *significance* instead of a fixed τ: Kendall's S over n points has,
//!    when the points are in random order, variance n(n−1)(2n+5)/18, and the
//!    rise must be 3 standard deviations from that (one-sided p ≈ 0.001;
//!    τ ≥ 0.93 with 8 points, ≥ 0.68 with 12, ≥ 0.56 with 16). The
//!    Theil–Sen line and Kendall's τ ignore the odd high point; the "no step
//!    carries more than the whole rise" test is left out for the same
//!    reason (a step after a deploy still fails the halves test), the other
//!    tests stay. This is what finds a leak under a ragged saw-tooth within a
//!    quarter of its time to the limit: the runs needed to see through the
//!    *longest* cycles would only fit 5 into the window minutes later.
//! 4. **Confirmation.** The steepest window that shows a leak must go on
//!    showing one (gaps of up to 15 s allowed) for `confirm`, cut to 1/20 of
//!    the predicted time to the limit for fast leaks but never below 30 s.
//!    When the limit is more than 10 min away, the moment the floor line
//!    reaches it must meanwhile not recede by more than 10 % of the time that
//!    was left (windows of the same length compared): a leak's exhaustion
//!    time stays put, a cache that fills and slows down keeps pushing it
//!    later. Then `Suspected`; `Cleared` once no window has shown a leak for
//!    `max(confirm, floor_window)`, or with the first sample after a
//!    [`Detector::reset`]. While suspected, a window needs only half the
//!    `min_rise` (hysteresis: a noise burst that lifts the ceiling shrinks
//!    the headroom for a while; it must not clear a slow leak and raise it
//!    again).
//! 5. **Time to the limit** = (limit − highest memory of the last
//!    `floor_window`) / slope: a saw-tooth reaches the limit with its peaks.
//!    For the host, the limit is the memory usable.
//!
//! Samples of the warm-up after a (re)start count only as the "known range"
//! of step 3. Measured on recorded and synthetic traces against the
//! Prometheus rule: `docs/benchmarks.md ("Leak detection")`.

mod fit;
mod history;
pub mod replay;
mod window;

#[cfg(test)]
mod tests;

use std::time::Duration;

pub use fit::least_squares;
use history::{History, BASE_MS};
use window::{window, Cycle, Window};

/// Bytes in the MB of `slope_mb_per_hour` and `min_slope_mb_per_hour` (a MiB).
pub const MB: f64 = 1_048_576.0;

/// What to do when a leak is suspected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnLeak {
    /// Report only.
    None,
    /// Restart the unit gracefully once the predicted exhaustion is nearer
    /// than `restart_before`.
    Restart,
}

/// Tunables of one detector (`[service.leak]`, and the host's).
#[derive(Debug, Clone, PartialEq)]
pub struct LeakConfig {
    pub enabled: bool,
    /// No window starts before this long after a (re)start: start-up and
    /// cache warm-up growth are not leaks.
    pub warmup: Duration,
    /// Floor points over runs this long are trusted to see through any
    /// saw-tooth (GC cycle, cache purge) whatever its measured cycle; it is
    /// also the span of the floor, the ceiling and the recent range.
    pub floor_window: Duration,
    /// Slower growth is never reported (MiB per hour).
    pub min_slope_mb_per_hour: f64,
    /// Minimum Kendall's τ of the floor points (0..1).
    pub min_confidence: f64,
    /// The floor must already have risen by this fraction of the remaining
    /// headroom below the limit.
    pub min_rise: f64,
    /// How long a leak must be seen before it is reported.
    pub confirm: Duration,
    /// The longest window looked at (and the history kept).
    pub max_window: Duration,
    pub on_leak: OnLeak,
    /// With `on_leak = Restart`: restart when the predicted time to the limit
    /// is shorter than this.
    pub restart_before: Duration,
}

impl Default for LeakConfig {
    fn default() -> Self {
        LeakConfig {
            enabled: true,
            warmup: Duration::from_secs(5 * 60),
            floor_window: Duration::from_secs(5 * 60),
            min_slope_mb_per_hour: 0.5,
            min_confidence: 0.7,
            min_rise: 0.125,
            confirm: Duration::from_secs(10 * 60),
            max_window: Duration::from_secs(7 * 24 * 3600),
            on_leak: OnLeak::None,
            restart_before: Duration::from_secs(10 * 60),
        }
    }
}

/// The fitted floor line, for charts: bytes(t) = bytes_at_t0 + bytes_per_sec × (t − t0).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Fit {
    pub t0_ms: u64,
    pub bytes_at_t0: f64,
    pub bytes_per_sec: f64,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LeakStatus {
    pub suspected: bool,
    pub slope_mb_per_hour: f64,
    /// Kendall's τ of the floor points of the reported window, 0..1.
    pub confidence: f64,
    /// Predicted time until `limit` at the fitted slope.
    pub time_to_limit_ms: Option<u64>,
    pub limit: Option<u64>,
    /// Lowest memory in the last `floor_window`, bytes.
    pub floor: Option<u64>,
    pub fit: Option<Fit>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Suspected(LeakStatus),
    Cleared(LeakStatus),
}

/// Shortest window tested, and the ratio between successive lengths.
const MIN_WINDOW_MS: u64 = 10_000;
const SCALE_STEP: f64 = std::f64::consts::SQRT_2;
/// The shortest confirmation, however near the limit.
const MIN_CONFIRM_MS: u64 = 30_000;
/// Confirmation is cut to this share of the predicted time to the limit.
const CONFIRM_SHARE_OF_TTL: f64 = 1.0 / 20.0;
/// A confirmation survives evaluations without a leak window for this long.
const PENDING_GRACE_MS: u64 = 15_000;
/// While a leak is suspected, windows need this share of the rise that
/// raising it took (`min_rise`).
const KEEP_SHARE: f64 = 0.5;
/// During the confirmation, the predicted exhaustion of the floor line may
/// move later by at most this share of the time that was left.
const MAX_RECEDE: f64 = 0.1;
/// The recession test is for slow growth: when the limit is predicted
/// closer than this, even slowing growth is reported.
const RECEDE_MIN_LEFT_MS: f64 = 600_000.0;

/// The length of the `i`th window: `MIN_WINDOW_MS` × √2^i, rounded down.
fn scale_len(i: usize) -> u64 {
    let mut len = MIN_WINDOW_MS as f64;
    for _ in 0..i {
        len *= SCALE_STEP;
    }
    len as u64
}

#[derive(Debug, Clone)]
struct Scale {
    len_ms: u64,
    next_ms: u64,
    last: Option<Window>,
}

pub struct Detector {
    cfg: LeakConfig,
    limit: Option<u64>,
    history: History,
    /// The window lengths looked at, shortest first: each is added once
    /// the history reaches back that far (a week's 32 take 2 KiB).
    scales: Vec<Scale>,
    /// The longest window length (up to `max_window`).
    longest_ms: u64,
    /// The window of everything since the warm-up ended, tested with every
    /// bucket while the limit is near (module doc, step 2).
    since_warmup: Option<Window>,
    /// When the process started (`reset`, or the first sample).
    start_ms: Option<u64>,
    last_ms: Option<u64>,
    /// Lowest and highest memory in the last `floor_window`.
    floor: Option<u64>,
    ceiling: Option<u64>,
    /// The saw-tooth amplitude of the last `floor_window` ([`amplitude`]).
    amplitude: u64,
    suspected: bool,
    /// Since when some window has shown a leak (while not suspected), the
    /// length of that window, and when its floor line was then predicted to
    /// reach the limit.
    leak_since: Option<(u64, u64, Option<f64>)>,
    /// Since when no window has shown a leak (while suspected).
    quiet_since: Option<u64>,
    /// The longest window that showed a leak lately; the longest window at all.
    best: Option<Window>,
    trend: Option<Window>,
    /// Saw-tooth cycles seen lately.
    cycles: Cycles,
    /// When a window last showed a leak.
    leak_seen_ms: u64,
    /// A suspected leak was forgotten by `reset`: say `Cleared` at the next sample.
    cleared_by_reset: Option<LeakStatus>,
}

/// The saw-tooth cycle, measured on the samples as they come: a *return* is
/// memory falling from its high since the previous return by a third of the
/// saw-tooth amplitude ([`amplitude`]; a collection, a purge). Of the last
/// `CYCLES_KEPT` times between returns, the second longest is the cycle runs
/// must span to see through it, the median the typical one.
#[derive(Debug, Clone, Default)]
struct Cycles {
    high: u64,
    last_return_ms: Option<u64>,
    lengths: std::collections::VecDeque<u64>,
}

/// Return-to-return intervals remembered.
const CYCLES_KEPT: usize = 16;
/// Intervals needed before the cycle length is trusted.
const MIN_CYCLES: usize = 3;

impl Cycles {
    fn sample(&mut self, now: u64, v: u64, amplitude: u64) {
        self.high = self.high.max(v);
        let third = amplitude / 3;
        if third > 0 && self.high.saturating_sub(v) >= third {
            self.high = v;
            if let Some(prev) = self.last_return_ms.replace(now) {
                if self.lengths.len() == CYCLES_KEPT {
                    self.lengths.pop_front();
                }
                self.lengths.push_back(now - prev);
            }
        }
    }

    /// The second longest of the intervals kept (one odd long interval, a
    /// missed collection, does not set the cycle).
    fn longest(&self) -> Option<u64> {
        self.sorted().map(|l| l[l.len() - 2])
    }

    /// The median of the intervals kept: how long a cycle usually is.
    fn typical(&self) -> Option<u64> {
        self.sorted().map(|l| l[l.len() / 2])
    }

    fn sorted(&self) -> Option<Vec<u64>> {
        if self.lengths.len() < MIN_CYCLES {
            return None;
        }
        let mut l: Vec<u64> = self.lengths.iter().copied().collect();
        l.sort_unstable();
        Some(l)
    }
}

/// Runs of the recent history whose deepest falls set the amplitude.
const AMPLITUDE_RUNS: usize = 8;

/// The saw-tooth amplitude: the median, over `AMPLITUDE_RUNS` runs of the
/// buckets, of the deepest fall within each run. Unlike the range it does
/// not grow with a trend, and one odd collection does not set it.
fn amplitude(buckets: &[history::Bucket]) -> u64 {
    let n = buckets.len();
    if n < AMPLITUDE_RUNS {
        return window::deepest_fall(buckets.iter().copied());
    }
    let mut falls: Vec<u64> = (0..AMPLITUDE_RUNS)
        .map(|j| {
            let run = &buckets[j * n / AMPLITUDE_RUNS..(j + 1) * n / AMPLITUDE_RUNS];
            window::deepest_fall(run.iter().copied())
        })
        .collect();
    falls.sort_unstable();
    falls[AMPLITUDE_RUNS / 2]
}

fn ms(d: Duration) -> u64 {
    d.as_millis().min(u64::MAX as u128) as u64
}

impl Detector {
    pub fn new(cfg: LeakConfig, limit: Option<u64>) -> Self {
        let max_ms = ms(cfg.max_window).max(MIN_WINDOW_MS);
        let history = History::new(max_ms + ms(cfg.floor_window));
        // √2^128 × 10 s is past any u64 of milliseconds: a bound, not a limit.
        let longest_ms = (0..128)
            .map(scale_len)
            .take_while(|&l| l <= max_ms)
            .last()
            .unwrap_or(MIN_WINDOW_MS);
        Detector {
            cfg,
            limit,
            history,
            scales: Vec::new(),
            longest_ms,
            since_warmup: None,
            start_ms: None,
            last_ms: None,
            floor: None,
            ceiling: None,
            amplitude: 0,
            suspected: false,
            leak_since: None,
            quiet_since: None,
            best: None,
            trend: None,
            cycles: Cycles::default(),
            leak_seen_ms: 0,
            cleared_by_reset: None,
        }
    }

    /// The detector as it was before window lengths were added lazily:
    /// every one from the start. The tests check both give the same verdicts.
    #[cfg(test)]
    pub(super) fn with_every_window(mut self) -> Self {
        self.add_windows_up_to(self.longest_ms);
        self
    }

    /// Adds the window lengths up to `max_ms` not yet looked at, each with
    /// nothing fitted yet (as `reset` leaves the others).
    fn add_windows_up_to(&mut self, max_ms: u64) {
        loop {
            let len = scale_len(self.scales.len());
            if len > max_ms {
                return;
            }
            self.scales.push(Scale {
                len_ms: len,
                next_ms: 0,
                last: None,
            });
        }
    }

    /// The memory limit predictions aim at (for the host: the memory usable).
    pub fn set_limit(&mut self, limit: Option<u64>) {
        self.limit = limit;
    }

    /// The process (re)started at `t`: forget the history and warm up again.
    /// A leak that was suspected is reported `Cleared` with the next sample.
    pub fn reset(&mut self, t: Duration) {
        if self.suspected {
            let mut st = self.status();
            st.suspected = false;
            self.cleared_by_reset = Some(st);
        }
        self.history.clear();
        self.cycles = Cycles::default();
        self.since_warmup = None;
        for s in &mut self.scales {
            s.next_ms = 0;
            s.last = None;
        }
        self.start_ms = Some(ms(t));
        self.last_ms = None;
        self.floor = None;
        self.ceiling = None;
        self.amplitude = 0;
        self.suspected = false;
        self.leak_since = None;
        self.quiet_since = None;
        self.best = None;
        self.trend = None;
    }

    /// Adds a sample (resident memory of the unit's processes, bytes).
    /// Returns a verdict only when the state flips. Samples older than the
    /// previous one, and zero (no process), are ignored.
    pub fn observe(&mut self, t: Duration, rss_bytes: u64) -> Option<Verdict> {
        if !self.cfg.enabled || rss_bytes == 0 {
            return None;
        }
        let now = ms(t);
        if self.last_ms.is_some_and(|last| now < last) {
            return None;
        }
        let first_in_bucket = self.last_ms.is_none_or(|l| l / BASE_MS != now / BASE_MS);
        self.start_ms.get_or_insert(now);
        self.last_ms = Some(now);
        self.history.push(now, rss_bytes);
        self.cycles.sample(now, rss_bytes, self.amplitude);
        if let Some(st) = self.cleared_by_reset.take() {
            return Some(Verdict::Cleared(st));
        }
        if !first_in_bucket {
            return None;
        }
        self.evaluate(now)
    }

    fn evaluate(&mut self, now: u64) -> Option<Verdict> {
        let fw = ms(self.cfg.floor_window);
        if let Some((lo, hi)) = self.history.min_max(now.saturating_sub(fw), u64::MAX) {
            self.floor = Some(lo);
            self.ceiling = Some(hi);
        }
        self.amplitude = amplitude(&self.history.within(now.saturating_sub(fw), u64::MAX));
        let warm_end = self.start_ms.unwrap_or(now) + ms(self.cfg.warmup);
        let available = now.saturating_sub(warm_end);
        // Hysteresis: a suspected leak is kept on half the evidence it took
        // to raise it, so a noise burst that lifts the ceiling (and so
        // shrinks the headroom) does not clear it and raise it again.
        let keep = if self.suspected { KEEP_SHARE } else { 1.0 };
        let headroom = match (self.limit, self.ceiling) {
            (Some(l), Some(c)) => Some(l.saturating_sub(c) as f64 * keep),
            _ => None,
        };
        let cycle = self
            .cycles
            .longest()
            .zip(self.cycles.typical())
            .map(|(l, t)| Cycle {
                longest_ms: l,
                typical_ms: t,
            });
        self.add_windows_up_to(available.min(self.longest_ms));
        for s in &mut self.scales {
            if s.len_ms > available {
                s.last = None;
                continue;
            }
            if now >= s.next_ms {
                s.last = window(&self.history, &self.cfg, headroom, cycle, now, s.len_ms);
                s.next_ms = now + (s.len_ms / 16).max(BASE_MS);
            }
        }
        // The window since the warm-up, only while it predicts the limit
        // within RECEDE_MIN_LEFT_MS (module doc, step 2). Its floor line
        // hardly rises faster than the memory's range since the warm-up over
        // that time (twice that is allowed for, Theil–Sen being a median of
        // pairwise slopes), so most of the time it need not be fitted.
        let left_ms = |slope: f64| match (self.limit, self.ceiling) {
            (Some(l), Some(c)) if slope > 0.0 => l.saturating_sub(c) as f64 / slope * 1000.0,
            _ => f64::INFINITY,
        };
        let longest = self.longest_ms;
        let possible = (MIN_WINDOW_MS..=longest).contains(&available)
            && self
                .history
                .min_max(warm_end, u64::MAX)
                .is_some_and(|(lo, hi)| {
                    left_ms(2.0 * (hi - lo) as f64 / available as f64 * 1000.0) < RECEDE_MIN_LEFT_MS
                });
        self.since_warmup = possible
            .then(|| window(&self.history, &self.cfg, headroom, cycle, now, available))
            .flatten()
            .filter(|w| left_ms(w.slope) < RECEDE_MIN_LEFT_MS);
        let leak = self
            .scales
            .iter()
            .filter_map(|s| s.last)
            .chain(self.since_warmup)
            .filter(|w| w.leak)
            .max_by(|a, b| a.slope.total_cmp(&b.slope));
        self.trend = self.scales.iter().rev().find_map(|s| s.last);
        if let Some(w) = leak {
            self.best = Some(w);
            self.leak_seen_ms = now;
            self.quiet_since = None;
            if self.suspected {
                return None;
            }
            let eta = self.limit.and_then(|l| w.eta_ms(l));
            self.leak_since.get_or_insert((now, w.len_ms, eta));
            return self.confirm(now, headroom, cycle);
        }
        if !self.suspected {
            // A staircase or a noisy floor may miss an evaluation or two; the
            // confirmation starts over only after a real pause (and ends only
            // while a window shows the leak).
            if now.saturating_sub(self.leak_seen_ms) > PENDING_GRACE_MS {
                self.leak_since = None;
                self.best = None;
            }
            return None;
        }
        let since = *self.quiet_since.get_or_insert(now);
        if now - since >= ms(self.cfg.confirm).max(fw) {
            self.suspected = false;
            self.quiet_since = None;
            let st = self.status();
            self.best = None;
            return Some(Verdict::Cleared(st));
        }
        None
    }

    /// A leak is being confirmed: report it once it has been seen for long
    /// enough and its predicted exhaustion did not recede.
    fn confirm(
        &mut self,
        now: u64,
        headroom: Option<f64>,
        cycle: Option<Cycle>,
    ) -> Option<Verdict> {
        let (since, len, eta0) = self.leak_since?;
        let confirm = match self.ttl_ms() {
            Some(ttl) => ((ttl as f64 * CONFIRM_SHARE_OF_TTL) as u64).max(MIN_CONFIRM_MS),
            None => u64::MAX,
        }
        .min(ms(self.cfg.confirm));
        if now - since < confirm {
            return None;
        }
        // A leak's predicted exhaustion stays put; a cache filling up and
        // slowing down pushes it later and later. Compare windows of the
        // same length, now and when the confirmation began.
        let left = eta0.map_or(0.0, |e0| e0 - since as f64);
        let far = self
            .ttl_ms()
            .is_some_and(|t| t as f64 >= RECEDE_MIN_LEFT_MS);
        if let (Some(limit), Some(e0), true) = (self.limit, eta0, far) {
            // The window since the warm-up grows: a window of the length it
            // had when the confirmation began is looked at again.
            let same = match self.scales.iter().find(|s| s.len_ms == len) {
                Some(s) => s.last,
                None => window(&self.history, &self.cfg, headroom, cycle, now, len),
            }
            .and_then(|w| w.eta_ms(limit));
            if same.is_none_or(|e| e - e0 > MAX_RECEDE * left) {
                let best = self.best?;
                self.leak_since = Some((now, best.len_ms, best.eta_ms(limit)));
                return None;
            }
        }
        self.suspected = true;
        self.leak_since = None;
        Some(Verdict::Suspected(self.status()))
    }

    /// Predicted time to the limit at the slope of the reported window.
    fn ttl_ms(&self) -> Option<u64> {
        let w = self.reported()?;
        let (limit, ceiling) = (self.limit?, self.ceiling?);
        if ceiling >= limit {
            return Some(0);
        }
        (w.slope > 0.0).then(|| ((limit - ceiling) as f64 / w.slope * 1000.0) as u64)
    }

    fn reported(&self) -> Option<&Window> {
        self.best.as_ref().or(self.trend.as_ref())
    }

    pub fn status(&self) -> LeakStatus {
        let w = self.reported();
        LeakStatus {
            suspected: self.suspected,
            slope_mb_per_hour: w.map_or(0.0, |w| w.slope * 3600.0 / MB),
            confidence: w.map_or(0.0, |w| w.tau.clamp(0.0, 1.0)),
            time_to_limit_ms: self.ttl_ms(),
            limit: self.limit,
            floor: self.floor,
            fit: w.map(|w| Fit {
                t0_ms: w.from_ms,
                bytes_at_t0: w.intercept,
                bytes_per_sec: w.slope,
            }),
        }
    }

    /// `on_leak = "restart"`, a leak is suspected, and the limit is predicted
    /// nearer than `restart_before`.
    pub fn should_restart(&self) -> bool {
        self.cfg.on_leak == OnLeak::Restart
            && self.suspected
            && self
                .ttl_ms()
                .is_some_and(|t| t < ms(self.cfg.restart_before))
    }
}
