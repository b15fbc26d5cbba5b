//! Robust statistics on a handful of floor points: the Theil–Sen line (the
//! median of all pairwise slopes, so one odd point cannot tilt it) and
//! Kendall's τ (how consistently later points are higher than earlier ones).
//! With at most a dozen points, the O(n²) pairs cost nothing.

/// A point of the floor: seconds since the start of the window, bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Point {
    pub t: f64,
    pub v: f64,
}

/// The Theil–Sen line through `points`: (value at t = 0, slope per second).
/// `None` with fewer than two distinct times.
pub(crate) fn theil_sen(points: &[Point]) -> Option<(f64, f64)> {
    let mut slopes = Vec::with_capacity(points.len() * points.len() / 2);
    for (i, a) in points.iter().enumerate() {
        for b in &points[i + 1..] {
            if b.t != a.t {
                slopes.push((b.v - a.v) / (b.t - a.t));
            }
        }
    }
    let slope = median(&mut slopes)?;
    let mut intercepts: Vec<f64> = points.iter().map(|p| p.v - slope * p.t).collect();
    let intercept = median(&mut intercepts)?;
    Some((intercept, slope))
}

/// Kendall's τ-a of value against time: +1 when every point is above every
/// earlier one, −1 when below, about 0 for noise. Ties count as neither.
pub(crate) fn kendall_tau(points: &[Point]) -> f64 {
    let mut score = 0i64;
    let mut pairs = 0i64;
    for (i, a) in points.iter().enumerate() {
        for b in &points[i + 1..] {
            let dt = b.t - a.t;
            let dv = b.v - a.v;
            score += ((dt * dv) > 0.0) as i64 - ((dt * dv) < 0.0) as i64;
            pairs += 1;
        }
    }
    if pairs == 0 {
        0.0
    } else {
        score as f64 / pairs as f64
    }
}

/// Plain least squares (the Prometheus `predict_linear` fit): (value at t = 0, slope).
pub fn least_squares(points: impl Iterator<Item = (f64, f64)> + Clone) -> Option<(f64, f64)> {
    let (mut n, mut st, mut sv) = (0.0, 0.0, 0.0);
    for (t, v) in points.clone() {
        n += 1.0;
        st += t;
        sv += v;
    }
    if n < 2.0 {
        return None;
    }
    let (mt, mv) = (st / n, sv / n);
    let (mut stt, mut stv) = (0.0, 0.0);
    for (t, v) in points {
        stt += (t - mt) * (t - mt);
        stv += (t - mt) * (v - mv);
    }
    if stt == 0.0 {
        return None;
    }
    let slope = stv / stt;
    Some((mv - slope * mt, slope))
}

fn median(xs: &mut [f64]) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    xs.sort_by(|a, b| a.total_cmp(b));
    let n = xs.len();
    Some(if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pts(vs: &[f64]) -> Vec<Point> {
        vs.iter()
            .enumerate()
            .map(|(i, &v)| Point { t: i as f64, v })
            .collect()
    }

    #[test]
    fn theil_sen_ignores_one_outlier_that_tilts_least_squares() {
        let p = pts(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 100.0]);
        let (b, m) = theil_sen(&p).unwrap();
        assert!((m - 1.0).abs() < 1e-9 && b.abs() < 1e-9, "{b} {m}");
        let (_, ls) = least_squares(p.iter().map(|p| (p.t, p.v))).unwrap();
        assert!(ls > 5.0, "least squares is pulled up: {ls}");
    }

    #[test]
    fn kendall_tau_is_one_for_rising_minus_one_for_falling_and_small_for_zigzag() {
        assert_eq!(kendall_tau(&pts(&[1.0, 2.0, 3.0, 4.0])), 1.0);
        assert_eq!(kendall_tau(&pts(&[4.0, 3.0, 2.0, 1.0])), -1.0);
        let zig = kendall_tau(&pts(&[1.0, 3.0, 1.0, 3.0, 1.0, 3.0, 1.0, 3.0]));
        assert!(zig.abs() < 0.3, "{zig}");
        assert_eq!(kendall_tau(&pts(&[5.0])), 0.0);
    }

    #[test]
    fn degenerate_inputs_give_no_line() {
        assert_eq!(theil_sen(&[]), None);
        assert_eq!(theil_sen(&[Point { t: 1.0, v: 2.0 }]), None);
        assert_eq!(least_squares([(1.0, 2.0), (1.0, 3.0)].into_iter()), None);
    }
}
