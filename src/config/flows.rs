//! Jobs linked by `after` become flows (connected sets, checked as a whole),
//! and each job's named `calendar` is put into its schedule.

use std::collections::HashMap;
use std::ops::Range;

use super::compile::Parsed;
use super::walk::Reader;
use super::UnitKind;

/// Puts each named calendar into its job's schedule.
pub(super) fn resolve_calendars(
    r: &Reader,
    units: &mut [Parsed],
    calendars: &[(crate::schedule::when::Calendar, Option<Range<usize>>)],
) {
    for p in units.iter_mut() {
        let Some(spec) = p.unit.job.as_mut() else {
            continue;
        };
        let Some((name, span)) = spec.calendar_ref.clone() else {
            continue;
        };
        match calendars.iter().find(|(c, _)| c.name == name) {
            Some((cal, _)) => {
                if let Some(s) = spec.schedule.as_mut() {
                    if let Some((c, _)) = s.calendar.as_mut() {
                        *c = cal.clone();
                    }
                }
            }
            None => r.error(
                span,
                format!("unknown calendar \"{name}\" in [[job]] \"{}\"; define it with [[calendar]] name = \"{name}\"", p.unit.name),
            ),
        }
    }
}

/// Groups jobs linked by `after` into flows (connected sets) and checks the
/// rules that need a whole flow: at most one schedule per flow, and only on a
/// job without `after`; `on_failure` names a job.
pub(super) fn flows(
    r: &Reader,
    units: &[Parsed],
) -> Vec<std::sync::Arc<crate::schedule::flow::FlowDef>> {
    use std::collections::{BTreeMap, BTreeSet};
    let jobs: Vec<&Parsed> = units
        .iter()
        .filter(|p| p.unit.kind == UnitKind::Job)
        .collect();
    let names: BTreeSet<&str> = jobs.iter().map(|p| p.unit.name.as_str()).collect();
    // Union-find over job indices.
    let idx: HashMap<&str, usize> = jobs
        .iter()
        .enumerate()
        .map(|(i, p)| (p.unit.name.as_str(), i))
        .collect();
    let mut parent: Vec<usize> = (0..jobs.len()).collect();
    fn find(parent: &mut [usize], i: usize) -> usize {
        let mut i = i;
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    for (i, p) in jobs.iter().enumerate() {
        for a in &p.unit.after {
            if let Some(&j) = idx.get(a.as_str()) {
                let (ri, rj) = (find(&mut parent, i), find(&mut parent, j));
                parent[ri] = rj;
            }
        }
    }
    let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for i in 0..jobs.len() {
        let root = find(&mut parent, i);
        groups.entry(root).or_default().push(i);
    }
    let mut out = Vec::new();
    for members in groups.values() {
        // Topological order, ties in file order.
        let mut order: Vec<usize> = Vec::new();
        let mut placed: BTreeSet<usize> = BTreeSet::new();
        while order.len() < members.len() {
            let before = order.len();
            for &m in members {
                if placed.contains(&m) {
                    continue;
                }
                let ready = jobs[m]
                    .unit
                    .after
                    .iter()
                    .all(|a| idx.get(a.as_str()).is_none_or(|j| placed.contains(j)));
                if ready {
                    order.push(m);
                    placed.insert(m);
                }
            }
            if order.len() == before {
                break; // a cycle: already reported by cross_check
            }
        }
        let scheduled: Vec<usize> = members
            .iter()
            .copied()
            .filter(|&m| {
                jobs[m]
                    .unit
                    .job
                    .as_ref()
                    .is_some_and(|j| j.schedule.is_some())
            })
            .collect();
        for &m in &scheduled {
            if !jobs[m].unit.after.is_empty() {
                r.error(
                    jobs[m].name_span.clone(),
                    format!("job \"{}\" has both `after` and a schedule; a job with `after` runs when its upstream jobs succeed, so schedule the first job of the flow instead", jobs[m].unit.name),
                );
            }
        }
        if scheduled.len() > 1 {
            r.error(
                jobs[scheduled[1]].name_span.clone(),
                format!(
                    "jobs \"{}\" and \"{}\" are in the same flow and both have a schedule; a flow has one schedule, on its first job",
                    jobs[scheduled[0]].unit.name, jobs[scheduled[1]].unit.name
                ),
            );
        }
        let mut upstream = BTreeMap::new();
        let mut policy = BTreeMap::new();
        for &m in members {
            let u = &jobs[m].unit;
            upstream.insert(u.name.clone(), u.after.clone());
            if let Some(spec) = &u.job {
                if let Some(rec) = &spec.policy.on_failure {
                    if !names.contains(rec.as_str()) {
                        r.error(
                            spec.on_failure_span.clone(),
                            format!(
                                "unknown job \"{rec}\" in `on_failure` of [[job]] \"{}\"",
                                u.name
                            ),
                        );
                    } else if members.iter().any(|&x| &jobs[x].unit.name == rec) {
                        r.error(spec.on_failure_span.clone(), format!("`on_failure` of [[job]] \"{}\" names \"{rec}\", a job of the same flow; a recovery job must stand outside the flow", u.name));
                    }
                }
                policy.insert(u.name.clone(), spec.policy.clone());
            }
        }
        let ordered: Vec<String> = order.iter().map(|&m| jobs[m].unit.name.clone()).collect();
        if let Some(first) = ordered.first().cloned() {
            out.push(std::sync::Arc::new(crate::schedule::flow::FlowDef {
                name: first,
                jobs: ordered,
                upstream,
                policy,
            }));
        }
    }
    out
}
