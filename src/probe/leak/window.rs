//! What one window of the floor shows: its line, how consistently it rises,
//! and whether that adds up to a leak (step 3 of the module doc of `leak`).

use super::fit::{kendall_tau, theil_sen, Point};
use super::history::{Bucket, History};
use super::{ms, LeakConfig, MB};

/// Segments (floor points) per window, and the fewest that make a fit.
const SEGMENTS: u64 = 8;
const MIN_POINTS: usize = 5;
/// At least `MIN_STEPS` of the steps between neighbouring floor points must
/// each carry `MIN_STEP_SHARE` of the rise, and none more than `MAX_STEP_SHARE`.
const MIN_STEPS: usize = 3;
const MIN_STEP_SHARE: f64 = 1.0 / 8.0;
const MAX_STEP_SHARE: f64 = 1.0;
/// Each half of the window must rise at least this fast, relative to the whole.
const MIN_HALF_SHARE: f64 = 0.4;
/// The reference range of a short window: this many floor windows before it.
const REFERENCE_FLOOR_WINDOWS: u64 = 4;
/// The most runs of the per-cycle route, and the one-sided significance (a
/// z-score of Kendall's S; 3.0 is p ≈ 0.0013) its rise must reach.
const SIGNIFICANT_SEGMENTS: usize = 16;
const MIN_SIGNIFICANCE: f64 = 3.0;
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

/// What the memory did before a short window (its reference range): how
/// high it went, and how deep it fell back from a high (the saw-tooth
/// amplitude, or the noise).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Reference {
    high: u64,
    fall: u64,
}

impl Reference {
    fn of(buckets: &[Bucket]) -> Option<Reference> {
        Some(Reference {
            high: buckets.iter().map(|b| b.max).max()?,
            fall: deepest_fall(buckets.iter().copied()),
        })
    }
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

/// The saw-tooth cycle measured on the samples (see `Cycles` in `mod.rs`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Cycle {
    /// The second longest recent cycle: runs this long nearly all hold a return.
    pub longest_ms: u64,
    /// The median recent cycle: runs this long mostly hold one.
    pub typical_ms: u64,
}

/// The floor points of `buckets` cut into `segments` runs of equal count:
/// each run's minimum at its mean time (seconds since `from`), and the
/// deepest fall inside each run.
fn floor_points(
    buckets: &[Bucket],
    segments: usize,
    from: u64,
    width_ms: u64,
) -> (Vec<Point>, Vec<u64>) {
    let n = buckets.len();
    let half = width_ms as f64 / 2.0;
    let mut points = Vec::with_capacity(segments);
    let mut run_falls = Vec::with_capacity(segments);
    for j in 0..segments {
        let run = &buckets[j * n / segments..(j + 1) * n / segments];
        run_falls.push(deepest_fall(run.iter().copied()));
        let t = run.iter().map(|b| b.start_ms as f64 + half).sum::<f64>() / run.len() as f64;
        points.push(Point {
            t: (t - from as f64) / 1000.0,
            v: run.iter().map(|b| b.min).min().unwrap_or(0) as f64,
        });
    }
    (points, run_falls)
}

/// The line through floor points and the shape tests every leak must pass
/// (all but the consistency of the rise, which depends on the route).
struct Shape {
    intercept: f64,
    slope: f64,
    tau: f64,
    rise: f64,
    last: Point,
    /// Slope, steps, halves and evidence in proportion to the claim.
    ok: bool,
    /// No step between neighbouring points carries more than the rise.
    no_jump: bool,
}

fn shape(points: &[Point], cfg: &LeakConfig, headroom: Option<f64>, len: u64) -> Option<Shape> {
    if points.len() < MIN_POINTS {
        return None;
    }
    let (intercept, slope) = theil_sen(points)?;
    let tau = kendall_tau(points);
    let first = points[0];
    let last = points[points.len() - 1];
    let rise = slope * (last.t - first.t);
    // The rise must come in several steps, not one (a deploy, a reload).
    let gaps: Vec<f64> = points.windows(2).map(|p| p[1].v - p[0].v).collect();
    let steps = gaps.iter().filter(|g| **g >= rise * MIN_STEP_SHARE).count();
    let biggest_step = gaps.iter().copied().fold(f64::MIN, f64::max);
    // Both halves rise: not flat, then a jump, then flat again.
    let half_slope = |p: &[Point]| theil_sen(p).map_or(0.0, |(_, s)| s);
    let early = half_slope(&points[..points.len().div_ceil(2)]);
    let recent = half_slope(&points[points.len() / 2..]);
    let enough = match headroom {
        Some(h) => rise >= cfg.min_rise * h,
        None => len >= NO_LIMIT_MIN_WINDOW_MS,
    };
    let ok = slope * 3600.0 / MB >= cfg.min_slope_mb_per_hour
        && steps >= MIN_STEPS
        && early.min(recent) >= MIN_HALF_SHARE * slope
        && enough;
    Some(Shape {
        intercept,
        slope,
        tau,
        rise,
        last,
        ok,
        no_jump: biggest_step <= MAX_STEP_SHARE * rise,
    })
}

/// One-sided significance of Kendall's τ over `n` points, as a z-score
/// (normal approximation of the score S with continuity correction; S has
/// variance n(n−1)(2n+5)/18 when the points are in random order).
pub(super) fn kendall_z(tau: f64, n: usize) -> f64 {
    let n = n as f64;
    let pairs = n * (n - 1.0) / 2.0;
    let var = n * (n - 1.0) * (2.0 * n + 5.0) / 18.0;
    if var <= 0.0 {
        return 0.0;
    }
    ((tau * pairs).abs() - 1.0).max(0.0).copysign(tau) / var.sqrt()
}

/// Tests the window `[now - len, now]` (step 3 of the module doc).
pub(super) fn window(
    history: &History,
    cfg: &LeakConfig,
    headroom: Option<f64>,
    cycle: Option<Cycle>,
    now: u64,
    len: u64,
) -> Option<Window> {
    let from = now.checked_sub(len)?;
    let fw = ms(cfg.floor_window);
    let short = len / SEGMENTS < fw;
    let level = history.level_from(from);
    let buckets: Vec<_> = level.range(from, u64::MAX).collect();
    // At least two buckets per run, so a floor point is a minimum of
    // something, not one sample (at 10 s sampling, one burst).
    let n = buckets.len();
    if n < 2 * MIN_POINTS {
        return None;
    }
    // A short window (runs shorter than `floor_window`) may be looking at a
    // saw-tooth ramp. It sees through the saw-tooth when its runs are as
    // long as the longest recent cycle (then each run's minimum is a floor).
    let reference = if short {
        let r0 = from.saturating_sub(REFERENCE_FLOOR_WINDOWS * fw);
        Some(Reference::of(&history.within(r0, from))?)
    } else {
        None
    };
    let mut segments = (n / 2).min(SEGMENTS as usize);
    let mut sees_through = !short;
    if let (true, Some(c)) = (short, cycle) {
        let runs = (len / c.longest_ms.max(1)) as usize;
        if runs >= MIN_POINTS {
            segments = segments.min(runs);
            sees_through = true;
        }
    }
    let (points, run_falls) = floor_points(&buckets, segments, from, level.width_ms);
    let sh = shape(&points, cfg, headroom, len)?;
    let mut leak = sh.ok
        && sh.no_jump
        && sh.tau >= cfg.min_confidence
        && (sees_through
            || reference.is_some_and(|r| {
                // Every run holds a fall of half the amplitude (each spans a
                // whole cycle), or the window left the known range: its last
                // floor is above the old high by half its rise and by the
                // amplitude (a ramp that climbs higher than before still
                // falls back by its amplitude; a leak does not).
                (r.fall > 0 && run_falls.iter().all(|f| f * 2 >= r.fall))
                    || sh.last.v - r.high as f64 >= (sh.rise / 2.0).max(r.fall as f64)
            }));
    let mut out = (sh.intercept, sh.slope, sh.tau);
    // The per-cycle route: runs only as long as the typical cycle, up to
    // SIGNIFICANT_SEGMENTS of them. Some runs then miss a return and their
    // minimum is high, so the points are noisier; the rise is judged by its
    // significance, which weighs the number of points, not by a fixed τ.
    if let (false, true, Some(c)) = (leak, short, cycle) {
        let runs = ((len / c.typical_ms.max(1)) as usize)
            .min(n / 2)
            .min(SIGNIFICANT_SEGMENTS);
        if runs > segments {
            let (points, _) = floor_points(&buckets, runs, from, level.width_ms);
            if let Some(sh) = shape(&points, cfg, headroom, len) {
                if sh.ok && kendall_z(sh.tau, points.len()) >= MIN_SIGNIFICANCE {
                    leak = true;
                    out = (sh.intercept, sh.slope, sh.tau);
                }
            }
        }
    }
    Some(Window {
        from_ms: from,
        len_ms: len,
        slope: out.1,
        intercept: out.0,
        tau: out.2,
        leak,
    })
}
