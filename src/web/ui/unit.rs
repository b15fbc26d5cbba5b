//! A unit's page (memory chart over a chosen window, leak status, actions,
//! runs) and a run's page (how it ended, its output).

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;

use super::chart::{memory_svg, Point, Trend};
use super::html::{badge, bytes, dur_ms, esc, page, state_class, time_ago, url, when};
use super::{flash, form_fields, here, html, nav, not_found, word};
use crate::web::AppState;

/// At most this many points are drawn; more are merged into min/avg/max buckets.
const MAX_POINTS: usize = 600;
/// Merges points into at most `MAX_POINTS` buckets of equal time.
fn bucket(points: Vec<Point>, from: i64, now: i64) -> Vec<Point> {
    if points.len() <= MAX_POINTS {
        return points;
    }
    let width = ((now - from) / MAX_POINTS as i64).max(1);
    let mut out: Vec<Point> = Vec::with_capacity(MAX_POINTS);
    let mut cur: Option<(i64, Point, u64, u128)> = None;
    for p in points {
        let k = (p.ts - from) / width;
        match cur.as_mut() {
            Some((key, acc, n, sum)) if *key == k => {
                acc.lo = acc.lo.min(p.lo);
                acc.hi = acc.hi.max(p.hi);
                *n += 1;
                *sum += p.avg as u128;
            }
            _ => {
                if let Some((_, mut acc, n, sum)) = cur.take() {
                    acc.avg = (sum / n as u128) as u64;
                    out.push(acc);
                }
                cur = Some((k, p, 1, p.avg as u128));
            }
        }
    }
    if let Some((_, mut acc, n, sum)) = cur {
        acc.avg = (sum / n as u128) as u64;
        out.push(acc);
    }
    out
}

/// A unit's memory chart over the last `window_ms`: raw samples for up to
/// six hours, the per-minute rollups beyond (or when raw ones are gone).
pub fn memory_chart(
    s: &AppState,
    unit: &str,
    limit: Option<u64>,
    window_ms: i64,
    now: i64,
) -> String {
    let from = now - window_ms;
    let mut points: Vec<Point> = Vec::new();
    if window_ms <= 6 * 3600 * 1000 {
        if let Ok(rows) = s.store.samples(unit, from, 200_000) {
            points = rows
                .iter()
                .map(|r| Point {
                    ts: r.ts,
                    lo: r.rss,
                    avg: r.rss,
                    hi: r.rss,
                })
                .collect();
        }
    }
    if points.is_empty() {
        if let Ok(rows) = s.store.rollups(unit, from, 200_000) {
            points = rows
                .iter()
                .map(|r| Point {
                    ts: r.ts,
                    lo: r.rss_min,
                    avg: r.rss_avg,
                    hi: r.rss_max,
                })
                .collect();
        }
    }
    let points = bucket(points, from, now);
    let trend = s
        .sampler
        .leak_status(unit)
        .filter(|l| l.suspected)
        .and_then(|l| {
            let fit = l.fit?;
            Some(Trend {
                t0: s.sampler.epoch_ms() + fit.t0_ms as i64,
                bytes_at_t0: fit.bytes_at_t0,
                bytes_per_sec: fit.bytes_per_sec,
                limit_at: l.time_to_limit_ms.map(|t| now + t as i64),
            })
        });
    memory_svg(&points, from, now, limit, trend)
}

const WINDOWS: &[(&str, i64)] = &[
    ("1h", 3600 * 1000),
    ("6h", 6 * 3600 * 1000),
    ("24h", 24 * 3600 * 1000),
    ("7d", 7 * 24 * 3600 * 1000),
    ("30d", 30 * 24 * 3600 * 1000),
];

/// `/ui/units/{name}?window=1h|6h|24h|7d|30d`
pub async fn unit(
    State(s): State<Arc<AppState>>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let Some(u) = s.sup.status(&name) else {
        return not_found(&s, &headers, &format!("No unit named \"{name}\""));
    };
    let (n, sess) = nav(&s, &headers);
    let now = crate::util::now_ms();
    let back = here(&uri);
    let win = q.get("window").map(String::as_str).unwrap_or("1h");
    let window_ms = WINDOWS
        .iter()
        .find(|(k, _)| *k == win)
        .map(|(_, v)| *v)
        .unwrap_or(3600 * 1000);
    let st = word(&u.state);
    let mut b = flash(&q);
    let _ = write!(
        b,
        "<h1>{} {} <span class=\"small\">{}</span></h1><section><table>\
<tr><th>PID</th><td>{}</td><th>Uptime</th><td>{}</td><th>Restarts</th><td>{}</td></tr>\
<tr><th>Memory</th><td>{}</td><th>CPU</th><td>{}</td><th>Last exit</th><td>{}</td></tr>\
<tr><th>Memory limit</th><td>{}</td><th>Threads / fds</th><td>{} / {}</td><th></th><td></td></tr></table>",
        esc(&u.name),
        badge(state_class(&st), &st),
        u.kind.as_str(),
        u.pid.map(|p| p.to_string()).unwrap_or_default(),
        u.uptime_ms.map(dur_ms).unwrap_or_default(),
        u.restarts,
        u.memory.map(bytes).unwrap_or_default(),
        u.cpu_pct.map(|c| format!("{c:.1}%")).unwrap_or_default(),
        esc(u.last_reason.as_deref().unwrap_or("")),
        u.limits.memory.map(bytes).unwrap_or_else(|| "none".into()),
        u.threads.map(|t| t.to_string()).unwrap_or_default(),
        u.fds.map(|t| t.to_string()).unwrap_or_default(),
    );
    if let Some(sess) = &sess {
        for action in ["start", "stop", "restart"] {
            let _ = write!(
                b,
                "<form class=\"inline\" method=\"post\" action=\"/ui/units/{}/{action}\">{}<button>{action}</button></form> ",
                url(&u.name),
                form_fields(sess, &back)
            );
        }
    }
    b.push_str("</section><section><h2>Memory</h2><p>");
    for (k, _) in WINDOWS {
        if *k == win {
            let _ = write!(b, "<b>{k}</b> ");
        } else {
            let _ = write!(
                b,
                "<a href=\"/ui/units/{}?window={k}\">{k}</a> ",
                url(&u.name)
            );
        }
    }
    b.push_str("</p>");
    b.push_str(&memory_chart(&s, &u.name, u.limits.memory, window_ms, now));
    if let Some(l) = s.sampler.leak_status(&u.name) {
        let _ = write!(
            b,
            "<p>{} floor trend {:.2} MB/h (confidence {:.2}){}{}</p>",
            if l.suspected {
                badge("bad", "leak suspected")
            } else {
                badge("ok", "no leak")
            },
            l.slope_mb_per_hour,
            l.confidence,
            l.floor
                .map(|f| format!(", floor {}", bytes(f)))
                .unwrap_or_default(),
            l.time_to_limit_ms
                .filter(|_| l.suspected)
                .map(|t| format!(
                    ", limit reached in about {} ({})",
                    dur_ms(t),
                    when(now + t as i64)
                ))
                .unwrap_or_default()
        );
    }
    b.push_str("</section><section><h2>Runs</h2><table><tr><th>Run</th><th>State</th><th>Reason</th><th>Started</th><th>Took</th><th class=\"num\">Peak memory</th></tr>");
    for r in s.store.runs(Some(&u.name), 30).unwrap_or_default() {
        let st = r.state.as_str();
        let _ = write!(
            b,
            "<tr><td><a href=\"/ui/runs/{}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td></tr>",
            r.id,
            r.id,
            badge(state_class(st), st),
            esc(r.reason.as_deref().unwrap_or("")),
            time_ago(r.started_at, now),
            r.ended_at.map(|e| dur_ms((e - r.started_at).max(0) as u64)).unwrap_or_default(),
            r.peak_rss.map(bytes).unwrap_or_default()
        );
    }
    b.push_str("</table></section>");
    html(StatusCode::OK, page(&u.name, &n, &b, false))
}

/// `/ui/runs/{id}`: a run and (the last 256 KiB of) its output.
pub async fn run(
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let run = id
        .parse::<i64>()
        .ok()
        .and_then(|id| s.store.run(id).ok().flatten());
    let Some(r) = run else {
        return not_found(&s, &headers, &format!("No run {id}"));
    };
    let (n, _) = nav(&s, &headers);
    let now = crate::util::now_ms();
    let st = r.state.as_str();
    let mut b = String::new();
    let _ = write!(
        b,
        "<h1>Run {} of <a href=\"/ui/units/{}\">{}</a> {}</h1><section><table>\
<tr><th>Trigger</th><td>{}</td><th>Reason</th><td>{}</td><th>Exit code</th><td>{}</td></tr>\
<tr><th>Started</th><td>{} ({})</td><th>Ended</th><td>{}</td><th>Peak memory</th><td>{}</td></tr></table></section>",
        r.id,
        url(&r.unit),
        esc(&r.unit),
        badge(state_class(st), st),
        esc(&r.trigger),
        esc(r.reason.as_deref().unwrap_or("")),
        r.exit_code.map(|c| c.to_string()).unwrap_or_default(),
        when(r.started_at),
        time_ago(r.started_at, now),
        r.ended_at.map(when).unwrap_or_else(|| "running".into()),
        r.peak_rss.map(bytes).unwrap_or_default(),
    );
    const TAIL: u64 = 256 * 1024;
    let end = r.log_end;
    let from = match end {
        Some(e) => e.saturating_sub(TAIL).max(r.log_start),
        None => r.log_start,
    };
    let dir = s.logs_dir.join(&r.unit);
    match crate::supervise::logs::read_range(&dir, from, end, TAIL as usize) {
        Ok(chunk) => {
            let _ = write!(
                b,
                "<section><h2>Output</h2>{}<pre class=\"log\">{}</pre></section>",
                if chunk.start > r.log_start {
                    "<p class=\"small\">Earlier output is not shown (older than the last 256 KiB or rotated away).</p>"
                } else {
                    ""
                },
                esc(&chunk.text)
            );
        }
        Err(e) => {
            let _ = write!(b, "<section><h2>Output</h2><p class=\"muted\">Cannot read the output: {}</p></section>", esc(&e.to_string()));
        }
    }
    html(
        StatusCode::OK,
        page(&format!("run {}", r.id), &n, &b, false),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_windows_are_merged_into_buckets_keeping_min_and_max() {
        let from = 0;
        let now = 30 * 86_400_000;
        let pts: Vec<Point> = (0..43_200)
            .map(|m| Point {
                ts: m * 60_000,
                lo: 10,
                avg: 20 + (m % 7) as u64,
                hi: if m == 1234 { 999 } else { 30 },
            })
            .collect();
        let b = bucket(pts, from, now);
        assert!(b.len() <= MAX_POINTS, "{}", b.len());
        assert!(b.len() >= MAX_POINTS - 1);
        assert_eq!(b.iter().map(|p| p.hi).max(), Some(999), "a spike survives");
        assert!(b.iter().all(|p| p.lo == 10 && (20..=26).contains(&p.avg)));
        let few = vec![Point {
            ts: 1,
            lo: 1,
            avg: 1,
            hi: 1,
        }];
        assert_eq!(bucket(few, 0, 10).len(), 1);
    }
}
