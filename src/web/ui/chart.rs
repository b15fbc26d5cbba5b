//! The memory chart of a service, as inline SVG: the samples (per-minute
//! min–max band and average for long windows, the raw line for short ones),
//! the limit line, and when a leak is suspected the fitted floor trend
//! extended to the predicted time the limit is reached, with a marker there.
//! Pure: data in, markup out.

use std::fmt::Write;

use super::html::{bytes, esc, when};

/// One point: time (ms), low, mean and high memory (equal for raw samples).
#[derive(Debug, Clone, Copy)]
pub struct Point {
    pub ts: i64,
    pub lo: u64,
    pub avg: u64,
    pub hi: u64,
}

/// The fitted floor line: bytes at `t0` (ms since the epoch) and the slope.
#[derive(Debug, Clone, Copy)]
pub struct Trend {
    pub t0: i64,
    pub bytes_at_t0: f64,
    pub bytes_per_sec: f64,
    /// When the line reaches the limit (ms since the epoch).
    pub limit_at: Option<i64>,
}

const W: f64 = 720.0;
const H: f64 = 200.0;
const PAD_L: f64 = 64.0;
const PAD_R: f64 = 12.0;
const PAD_T: f64 = 10.0;
const PAD_B: f64 = 22.0;

pub fn memory_svg(
    points: &[Point],
    from: i64,
    now: i64,
    limit: Option<u64>,
    trend: Option<Trend>,
) -> String {
    // The time axis reaches the predicted exhaustion when it is near enough
    // to matter (within one more window).
    let window = (now - from).max(1);
    // The axis starts at the first sample when the window reaches further
    // back than the data (a service started ten minutes ago, seen over 1 h).
    let from = points
        .first()
        .map_or(from, |p| p.ts.min(now - 60_000).max(from));
    let x_end = match trend.and_then(|t| t.limit_at) {
        Some(at) if at > now && at - now <= window => at,
        _ => now,
    };
    let mut y_max = points.iter().map(|p| p.hi).max().unwrap_or(0) as f64;
    if let Some(l) = limit {
        y_max = y_max.max(l as f64);
    }
    y_max = (y_max * 1.1).max(1024.0 * 1024.0);
    let x = |t: i64| PAD_L + (t - from) as f64 / (x_end - from).max(1) as f64 * (W - PAD_L - PAD_R);
    let y = |b: f64| PAD_T + (1.0 - (b / y_max).clamp(0.0, 1.2)) * (H - PAD_T - PAD_B);

    let mut s = String::with_capacity(4096 + points.len() * 24);
    let _ = write!(
        s,
        "<svg class=\"chart\" viewBox=\"0 0 {W} {H}\" width=\"100%\" role=\"img\" aria-label=\"memory\" xmlns=\"http://www.w3.org/2000/svg\" style=\"max-width:{W}px;font:11px sans-serif\">"
    );
    // Grid and y labels.
    for i in 0..=4 {
        let b = y_max * i as f64 / 4.0;
        let yy = y(b);
        let _ = write!(
            s,
            "<line x1=\"{PAD_L}\" x2=\"{}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\" stroke=\"#e5e8eb\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"#6a737d\">{}</text>",
            W - PAD_R,
            PAD_L - 4.0,
            yy + 4.0,
            esc(&bytes(b as u64))
        );
    }
    let _ = write!(
        s,
        "<text x=\"{PAD_L}\" y=\"{}\" fill=\"#6a737d\">{}</text><text x=\"{}\" y=\"{}\" text-anchor=\"end\" fill=\"#6a737d\">{}</text>",
        H - 6.0,
        esc(&when(from)),
        W - PAD_R,
        H - 6.0,
        esc(&when(x_end))
    );
    if points.is_empty() {
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"#6a737d\">no samples in this window</text>",
            W / 2.0,
            H / 2.0
        );
    }
    // Min–max band (only where it differs from the average).
    if points.iter().any(|p| p.lo != p.hi) {
        s.push_str("<polygon class=\"band\" fill=\"#b6d4fe\" fill-opacity=\"0.6\" points=\"");
        for p in points {
            let _ = write!(s, "{:.1},{:.1} ", x(p.ts), y(p.hi as f64));
        }
        for p in points.iter().rev() {
            let _ = write!(s, "{:.1},{:.1} ", x(p.ts), y(p.lo as f64));
        }
        s.push_str("\"/>");
    }
    if !points.is_empty() {
        s.push_str("<polyline class=\"samples\" fill=\"none\" stroke=\"#0969da\" stroke-width=\"1.5\" points=\"");
        for p in points {
            let _ = write!(s, "{:.1},{:.1} ", x(p.ts), y(p.avg as f64));
        }
        s.push_str("\"/>");
    }
    if let Some(l) = limit {
        let yy = y(l as f64);
        let _ = write!(
            s,
            "<line class=\"limit\" x1=\"{PAD_L}\" x2=\"{}\" y1=\"{yy:.1}\" y2=\"{yy:.1}\" stroke=\"#cf222e\" stroke-dasharray=\"6 4\"/><text x=\"{}\" y=\"{:.1}\" fill=\"#cf222e\">limit {}</text>",
            W - PAD_R,
            PAD_L + 4.0,
            yy - 4.0,
            esc(&bytes(l))
        );
    }
    if let Some(t) = trend {
        let at = |ts: i64| t.bytes_at_t0 + t.bytes_per_sec * (ts - t.t0) as f64 / 1000.0;
        let a = t.t0.max(from);
        let _ = write!(
            s,
            "<line class=\"trend\" x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#9a6700\" stroke-width=\"2\" stroke-dasharray=\"3 3\"/>",
            x(a),
            y(at(a)),
            x(x_end),
            y(at(x_end))
        );
        if let Some(lat) = t.limit_at.filter(|l| *l <= x_end) {
            let xx = x(lat);
            // Below the limit line (whose label is on the left), inside the plot.
            let ly = limit
                .map_or(PAD_T + 12.0, |l| y(l as f64) + 14.0)
                .min(H - PAD_B - 4.0);
            let _ = write!(
                s,
                "<line class=\"exhaustion\" x1=\"{xx:.1}\" x2=\"{xx:.1}\" y1=\"{PAD_T}\" y2=\"{}\" stroke=\"#cf222e\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"#cf222e\">limit reached ≈ {}</text>",
                H - PAD_B,
                xx - 3.0,
                ly,
                esc(&when(lat))
            );
        }
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_samples_limit_trend_and_exhaustion() {
        let now = 1_000_000_000;
        let pts: Vec<Point> = (0..10)
            .map(|i| Point {
                ts: now - 600_000 + i * 60_000,
                lo: 100 << 20,
                avg: (100 + i as u64) << 20,
                hi: (100 + i as u64) << 20,
            })
            .collect();
        let svg = memory_svg(
            &pts,
            now - 600_000,
            now,
            Some(200 << 20),
            Some(Trend {
                t0: now - 600_000,
                bytes_at_t0: (100u64 << 20) as f64,
                bytes_per_sec: 1e5,
                limit_at: Some(now + 300_000),
            }),
        );
        for part in [
            "class=\"samples\"",
            "class=\"limit\"",
            "class=\"trend\"",
            "class=\"exhaustion\"",
            "class=\"band\"",
        ] {
            assert!(svg.contains(part), "missing {part}");
        }
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        // Without a leak: no trend, no marker.
        let svg = memory_svg(&pts, now - 600_000, now, None, None);
        assert!(!svg.contains("trend") && !svg.contains("exhaustion"));
    }
}
