//! What one window of the floor shows: its line, how consistently it rises,
//! and whether that adds up to a leak (step 3 of the module doc of `leak`).

use super::fit::{kendall_tau, theil_sen, Point};
use super::history::{Bucket, History};
use super::{ms, LeakConfig, MB};

/// Segments (floor points) per window, and the fewest that make a fit.
const SEGMENTS: u64 = 8;
const MIN_POINTS: usize = 5;
/// No single segment step may carry more than this share of the rise.
const MAX_STEP_SHARE: f64 = 0.5;
/// The later half of the window must rise at least this fast, relative to the whole.
const MIN_RECENT_SHARE: f64 = 0.4;
/// The reference range of a short window: this many floor windows before it.
const REFERENCE_FLOOR_WINDOWS: u64 = 4;
/// Without a limit, the evidence is a window at least this long.
const NO_LIMIT_MIN_WINDOW_MS: u64 = 3_600_000;

/// The deepest fall from a high of an earlier bucket to the low of a later
/// one (within one bucket the order of its low and high is unknown).
pub(super) fn deepest_fall(buckets: impl Iterator<Item = Bucket>) -> u64 {
    let mut high: Option<u64> = None;
    let mut fall = 0;
    for b in buckets {
        if let Some(h) = high {
            fall = fall.max(h.saturating_sub(b.min));
        }
        high = Some(high.map_or(b.max, |h| h.max(b.max)));
    }
    fall
}

/// A window whose runs are shorter than `floor_window` may be looking at one
/// saw-tooth ramp. It counts only if its runs each hold a fall of at least
/// half the deepest fall of the reference before it (each run spans a whole
/// cycle, so its minimum is a floor), or if it left the known range: the last
/// floor point is above the highest memory of the reference by half the
/// window's rise and by that deepest fall (a ramp that climbs higher than
/// before still falls back by its amplitude; a leak does not).
fn short_window_ok(
    history: &History,
    fw: u64,
    from: u64,
    last: f64,
    rise: f64,
    run_falls: &[u64],
) -> bool {
    let reference = from.saturating_sub(REFERENCE_FLOOR_WINDOWS * fw);
    let Some((high, fall)) = history.high_and_fall(reference, from) else {
        return false;
    };
    let cycles = fall > 0 && run_falls.iter().all(|f| f * 2 >= fall);
    cycles || last - high as f64 >= (rise / 2.0).max(fall as f64)
}

/// What one window showed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Window {
    pub from_ms: u64,
    pub len_ms: u64,
    /// Bytes per second.
    pub slope: f64,
    /// Bytes at `from_ms`.
    pub intercept: f64,
    pub tau: f64,
    pub leak: bool,
}

impl Window {
    /// When the floor line reaches `limit` (ms since the epoch), if it rises.
    pub(super) fn eta_ms(&self, limit: u64) -> Option<f64> {
        let end = (self.from_ms + self.len_ms) as f64;
        let floor_now = self.intercept + self.slope * self.len_ms as f64 / 1000.0;
        (self.slope > 0.0).then(|| end + (limit as f64 - floor_now).max(0.0) / self.slope * 1000.0)
    }
}

/// Tests the window `[now - len, now]` (step 3 of the module doc).
pub(super) fn window(
    history: &History,
    cfg: &LeakConfig,
    headroom: Option<f64>,
    now: u64,
    len: u64,
) -> Option<Window> {
    let from = now.checked_sub(len)?;
    let fw = ms(cfg.floor_window);
    let short = len / SEGMENTS < fw;
    let level = history.level_from(from);
    // The buckets of the window, cut into (at most) SEGMENTS runs of equal
    // count; each run gives one floor point: its minimum, at its mean time.
    let buckets: Vec<_> = level.range(from, u64::MAX).collect();
    let n = buckets.len();
    if n < MIN_POINTS {
        return None;
    }
    let segments = n.min(SEGMENTS as usize);
    let half = level.width_ms as f64 / 2.0;
    let mut points = Vec::with_capacity(segments);
    let mut run_falls = Vec::with_capacity(segments);
    for j in 0..segments {
        let run = &buckets[j * n / segments..(j + 1) * n / segments];
        run_falls.push(deepest_fall(run.iter().map(|b| **b)));
        let t = run.iter().map(|b| b.start_ms as f64 + half).sum::<f64>() / run.len() as f64;
        points.push(Point {
            t: (t - from as f64) / 1000.0,
            v: run.iter().map(|b| b.min).min().unwrap_or(0) as f64,
        });
    }
    if points.len() < MIN_POINTS {
        return None;
    }
    let (intercept, slope) = theil_sen(&points)?;
    let tau = kendall_tau(&points);
    let first = points[0];
    let last = points[points.len() - 1];
    let rise = slope * (last.t - first.t);
    let biggest_step = points
        .windows(2)
        .map(|p| p[1].v - p[0].v)
        .fold(f64::MIN, f64::max);
    let recent = theil_sen(&points[points.len() / 2..]).map_or(0.0, |(_, s)| s);
    let enough = match headroom {
        Some(h) => rise >= cfg.min_rise * h,
        None => len >= NO_LIMIT_MIN_WINDOW_MS,
    };
    let leak = slope * 3600.0 / MB >= cfg.min_slope_mb_per_hour
        && tau >= cfg.min_confidence
        && biggest_step <= MAX_STEP_SHARE * rise
        && recent >= MIN_RECENT_SHARE * slope
        && enough
        && (!short || short_window_ok(history, fw, from, last.v, rise, &run_falls));
    Some(Window {
        from_ms: from,
        len_ms: len,
        slope,
        intercept,
        tau,
        leak,
    })
}
