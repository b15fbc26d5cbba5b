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
//!    to `max_window`, 48 per level, ≈ 16 KiB per detector whatever the
//!    uptime) and sees a window through the minima of its segments.
//! 2. **Every time scale.** Leaks of 10 MiB/s and of 1 MiB/h differ by four
//!    orders of magnitude, so every window length on a √2 ladder from 10 s to
//!    `max_window` (none reaching back into the warm-up) is tested; long ones
//!    are re-tested every 1/16 of their length. A window's buckets are cut
//!    into 8 runs; the floor points are the runs' minima; the line is the
//!    Theil–Sen fit (median of pairwise slopes, robust to an odd point) and
//!    the confidence is Kendall's τ (share of point pairs where the later is
//!    higher, minus the share where it is lower).
//! 3. **A window shows a leak** (`window.rs`) when all of these hold:
//!    - slope ≥ `min_slope_mb_per_hour` and τ ≥ `min_confidence`;
//!    - the rise is spread out: no step between neighbouring points carries
//!      more than half of it, and the later half still rises at ≥ 40 % of
//!      the window's slope (a step after a deploy is not a leak);
//!    - **evidence in proportion to the claim**: the floor has already risen
//!      by `min_rise` (1/8) of the headroom left below the limit. Noise and
//!      slow wander make short steep-looking trends all the time; projecting
//!      them far ahead is what makes `predict_linear` rules misfire. On a real
//!      leak this costs ≈ 1/9 of its time to the limit. (No limit known:
//!      the window must be ≥ 1 h instead.)
//!    - windows whose runs are shorter than `floor_window` cannot see through
//!      a saw-tooth with their minima, so they must show memory *leaving its
//!      known range*: the floor of the last run is above the highest memory of
//!      the 4 floor windows before the window by more than half the window's
//!      rise, and by more than the deepest fall seen there (a saw-tooth that
//!      climbs higher than before still falls back by its amplitude; a fast
//!      leak leaves its range in seconds).
//! 4. **Confirmation.** The steepest window that shows a leak must go on
//!    showing one for `confirm` (cut to 1/20 of the predicted time to the
//!    limit for fast leaks, never below 30 s), and meanwhile the moment its
//!    floor line reaches the limit must not recede by more than 10 % of the
//!    time that was left, comparing windows of the same length: a leak's
//!    exhaustion time stays put, a cache that fills and slows down keeps
//!    pushing it later. Then `Suspected`; `Cleared` once no window has shown
//!    a leak for `max(confirm, floor_window)`, or with the first sample after
//!    a [`Detector::reset`].
//! 5. **Time to the limit** = (limit − highest memory of the last
//!    `floor_window`) / slope: a saw-tooth reaches the limit with its peaks.
//!    For the host, the limit is the memory usable.
//!
//! Samples of the warm-up after a (re)start count only as the "known range"
//! of step 3. Measured on recorded and synthetic traces against the
//! Prometheus rule: `docs/benchmarks-leak.md`.

mod fit;
mod history;
pub mod replay;
mod window;

#[cfg(test)]
mod tests;

use std::time::Duration;

pub use fit::least_squares;
use history::{History, BASE_MS};
use window::{window, Window};

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
    /// The longest saw-tooth period (GC cycle, cache purge) the floor must see
    /// through: shorter windows must also leave the range of the last
    /// `floor_window` before them.
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

/// Shortest window tested.
const MIN_WINDOW_MS: u64 = 10_000;
/// The shortest confirmation, however near the limit.
const MIN_CONFIRM_MS: u64 = 30_000;
/// Confirmation is cut to this share of the predicted time to the limit.
const CONFIRM_SHARE_OF_TTL: f64 = 1.0 / 20.0;
/// During the confirmation, the predicted exhaustion of the floor line may
/// move later by at most this share of the time that was left.
const MAX_RECEDE: f64 = 0.1;

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
    scales: Vec<Scale>,
    /// When the process started (`reset`, or the first sample).
    start_ms: Option<u64>,
    last_ms: Option<u64>,
    /// Lowest and highest memory in the last `floor_window`.
    floor: Option<u64>,
    ceiling: Option<u64>,
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
    /// A suspected leak was forgotten by `reset`: say `Cleared` at the next sample.
    cleared_by_reset: Option<LeakStatus>,
}

fn ms(d: Duration) -> u64 {
    d.as_millis().min(u64::MAX as u128) as u64
}

impl Detector {
    pub fn new(cfg: LeakConfig, limit: Option<u64>) -> Self {
        let max_ms = ms(cfg.max_window).max(MIN_WINDOW_MS);
        let mut scales = Vec::new();
        let mut len = MIN_WINDOW_MS as f64;
        while (len as u64) <= max_ms {
            scales.push(Scale {
                len_ms: len as u64,
                next_ms: 0,
                last: None,
            });
            len *= std::f64::consts::SQRT_2;
        }
        let history = History::new(max_ms + ms(cfg.floor_window));
        Detector {
            cfg,
            limit,
            history,
            scales,
            start_ms: None,
            last_ms: None,
            floor: None,
            ceiling: None,
            suspected: false,
            leak_since: None,
            quiet_since: None,
            best: None,
            trend: None,
            cleared_by_reset: None,
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
        for s in &mut self.scales {
            s.next_ms = 0;
            s.last = None;
        }
        self.start_ms = Some(ms(t));
        self.last_ms = None;
        self.floor = None;
        self.ceiling = None;
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
        let warm_end = self.start_ms.unwrap_or(now) + ms(self.cfg.warmup);
        let available = now.saturating_sub(warm_end);
        let headroom = match (self.limit, self.ceiling) {
            (Some(l), Some(c)) => Some(l.saturating_sub(c) as f64),
            _ => None,
        };
        for s in &mut self.scales {
            if s.len_ms > available {
                s.last = None;
                continue;
            }
            if now >= s.next_ms {
                s.last = window(&self.history, &self.cfg, headroom, now, s.len_ms);
                s.next_ms = now + (s.len_ms / 16).max(BASE_MS);
            }
        }
        let leak = self
            .scales
            .iter()
            .filter_map(|s| s.last)
            .filter(|w| w.leak)
            .max_by(|a, b| a.slope.total_cmp(&b.slope));
        self.trend = self.scales.iter().rev().find_map(|s| s.last);
        if let Some(w) = leak {
            self.best = Some(w);
            self.quiet_since = None;
            if self.suspected {
                return None;
            }
            let eta = self.limit.and_then(|l| w.eta_ms(l));
            let (since, len, eta0) = *self.leak_since.get_or_insert((now, w.len_ms, eta));
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
            if let (Some(limit), Some(e0)) = (self.limit, eta0) {
                let same = self
                    .scales
                    .iter()
                    .find(|s| s.len_ms == len)
                    .and_then(|s| s.last)
                    .and_then(|w| w.eta_ms(limit));
                let receded = same.is_none_or(|e| e - e0 > MAX_RECEDE * (e0 - since as f64));
                if receded {
                    self.leak_since = Some((now, w.len_ms, eta));
                    return None;
                }
            }
            self.suspected = true;
            self.leak_since = None;
            return Some(Verdict::Suspected(self.status()));
        }
        self.leak_since = None;
        if !self.suspected {
            self.best = None;
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
