//! A flow drawn as a graph: jobs in columns by depth (a job's column is one
//! more than its deepest upstream job), edges from upstream to downstream,
//! each box coloured by the latest run's job state. Held jobs stand out
//! (thick dashed border) with their reason. Pure: a `FlowView` in, SVG out.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;

use super::html::esc;
use crate::schedule::flow::JobState;

const BOX_W: f64 = 180.0;
const BOX_H: f64 = 56.0;
const GAP_X: f64 = 56.0;
const GAP_Y: f64 = 14.0;
const PAD: f64 = 8.0;

/// Depth of every job: 0 without upstream, else 1 + the deepest upstream.
/// Bounded: a (rejected at config load) cycle cannot loop forever.
pub fn depths(jobs: &[String], upstream: &BTreeMap<String, Vec<String>>) -> HashMap<String, usize> {
    let mut d: HashMap<String, usize> = jobs.iter().map(|j| (j.clone(), 0)).collect();
    for _ in 0..jobs.len() {
        let mut changed = false;
        for j in jobs {
            let want = upstream
                .get(j)
                .into_iter()
                .flatten()
                .filter_map(|u| d.get(u))
                .map(|x| x + 1)
                .max()
                .unwrap_or(0);
            if d.get(j) != Some(&want) {
                d.insert(j.clone(), want);
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    d
}

/// (state word, reason) of a job state.
pub fn describe(s: Option<&JobState>) -> (&'static str, String) {
    match s {
        None => ("not run", String::new()),
        Some(JobState::Waiting) => ("waiting", String::new()),
        Some(JobState::Running { attempt, .. }) => ("running", format!("attempt {attempt}")),
        Some(JobState::RetryWait { reason, .. }) => ("retry-wait", reason.clone()),
        Some(JobState::Succeeded { .. }) => ("succeeded", String::new()),
        Some(JobState::Failed { reason, .. }) => ("failed", reason.clone()),
        Some(JobState::Held { reason, .. }) => ("held", reason.clone()),
        Some(JobState::Released { by }) => ("released", format!("by {by}")),
    }
}

fn colour(state: &str) -> (&'static str, &'static str) {
    match state {
        "succeeded" | "released" => ("#dafbe1", "#1a7f37"),
        "running" => ("#ddf4ff", "#0969da"),
        "failed" => ("#ffebe9", "#cf222e"),
        "held" => ("#fff1e5", "#cf222e"),
        "retry-wait" | "waiting" => ("#fff8c5", "#9a6700"),
        _ => ("#f6f8fa", "#8c959f"),
    }
}

fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

pub fn svg(
    jobs: &[String],
    upstream: &BTreeMap<String, Vec<String>>,
    states: Option<&BTreeMap<String, JobState>>,
) -> String {
    let depth = depths(jobs, upstream);
    let mut columns: BTreeMap<usize, Vec<&String>> = BTreeMap::new();
    for j in jobs {
        columns.entry(depth[j]).or_default().push(j);
    }
    let mut pos: HashMap<&str, (f64, f64)> = HashMap::new();
    for (c, js) in &columns {
        for (r, j) in js.iter().enumerate() {
            pos.insert(
                j.as_str(),
                (
                    PAD + *c as f64 * (BOX_W + GAP_X),
                    PAD + r as f64 * (BOX_H + GAP_Y),
                ),
            );
        }
    }
    let cols = columns.len().max(1) as f64;
    let rows = columns.values().map(Vec::len).max().unwrap_or(1) as f64;
    let w = 2.0 * PAD + cols * BOX_W + (cols - 1.0) * GAP_X;
    let h = 2.0 * PAD + rows * BOX_H + (rows - 1.0) * GAP_Y;
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg class=\"flow\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" xmlns=\"http://www.w3.org/2000/svg\" style=\"font:12px sans-serif\">"
    );
    for j in jobs {
        let Some(&(x2, y2)) = pos.get(j.as_str()) else {
            continue;
        };
        for u in upstream.get(j).into_iter().flatten() {
            let Some(&(x1, y1)) = pos.get(u.as_str()) else {
                continue;
            };
            let (ax, ay) = (x1 + BOX_W, y1 + BOX_H / 2.0);
            let (bx, by) = (x2, y2 + BOX_H / 2.0);
            let mx = (ax + bx) / 2.0;
            let _ = write!(
                s,
                "<path d=\"M{ax},{ay} C{mx},{ay} {mx},{by} {bx},{by}\" fill=\"none\" stroke=\"#8c959f\" stroke-width=\"1.5\"/>"
            );
        }
    }
    for j in jobs {
        let Some(&(x, y)) = pos.get(j.as_str()) else {
            continue;
        };
        let (state, reason) = describe(states.and_then(|m| m.get(j)));
        let (fill, stroke) = colour(state);
        let held = state == "held";
        let _ = write!(
            s,
            "<g class=\"job {state}\" data-job=\"{}\"><title>{}: {}{}</title><rect x=\"{x}\" y=\"{y}\" width=\"{BOX_W}\" height=\"{BOX_H}\" rx=\"6\" fill=\"{fill}\" stroke=\"{stroke}\" stroke-width=\"{}\"{}/>",
            esc(j),
            esc(j),
            state,
            if reason.is_empty() { String::new() } else { format!(" ({})", esc(&reason)) },
            if held { 3 } else { 1 },
            if held { " stroke-dasharray=\"6 3\"" } else { "" },
        );
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"{}\" font-weight=\"600\">{}</text><text x=\"{}\" y=\"{}\" fill=\"{stroke}\">{}</text>",
            x + 8.0,
            y + 17.0,
            esc(&clip(j, 24)),
            x + 8.0,
            y + 33.0,
            if held { "HELD" } else { state },
        );
        if !reason.is_empty() {
            let _ = write!(
                s,
                "<text x=\"{}\" y=\"{}\" fill=\"#57606a\">{}</text>",
                x + 8.0,
                y + 48.0,
                esc(&clip(&reason, 28))
            );
        }
        s.push_str("</g>");
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_are_laid_out_by_depth_and_held_ones_stand_out() {
        let jobs: Vec<String> = ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect();
        let mut up = BTreeMap::new();
        up.insert("b".to_string(), vec!["a".to_string()]);
        up.insert("c".to_string(), vec!["a".to_string()]);
        up.insert("d".to_string(), vec!["b".to_string(), "c".to_string()]);
        let d = depths(&jobs, &up);
        assert_eq!((d["a"], d["b"], d["c"], d["d"]), (0, 1, 1, 2));
        let mut st = BTreeMap::new();
        st.insert(
            "b".to_string(),
            JobState::Failed {
                run_id: Some(1),
                reason: "exit:1".into(),
            },
        );
        st.insert(
            "d".to_string(),
            JobState::Held {
                reason: "upstream b failed <x>".into(),
                manual: false,
            },
        );
        let svg = svg(&jobs, &up, Some(&st));
        assert!(svg.contains("class=\"job held\""));
        assert!(svg.contains("upstream b failed &lt;x&gt;"));
        assert!(svg.contains("stroke-dasharray=\"6 3\""));
        assert_eq!(svg.matches("<path").count(), 4);
    }
}
