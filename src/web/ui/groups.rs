//! The dashboard's "Failover groups" and "Recent drills" sections, shown
//! only when the agent has a `[cluster]` (src/cluster/).
//!
//! Per group: its units, its nodes in priority order with each live
//! member's role, whether it qualifies (and why not) and, on the active
//! node, whether the units are healthy; the active node, its fencing token
//! and since when; preempt and standby mode. Then this agent's last drills
//! (from its own store, like `GET /api/v1/drills`), failed ones in red.
//!
//! The store is read the way `GET /api/v1/groups` reads it, but bounded by
//! the coordinator's request timeout (`cluster::request_timeout`): when the
//! store hangs or is down, the page still renders at once, each group from
//! its config and this node's own view, with the store's error above it.

use std::fmt::Write;

use super::html::{badge, esc, time_ago};
use crate::cluster::node::GroupStatus;
use crate::cluster::GroupView;
use crate::store::DrillRecord;
use crate::web::AppState;

/// How many drills the dashboard lists.
const DRILLS: u32 = 10;

/// What the sections show, read before the page is built.
pub struct Groups {
    /// This agent's node name.
    pub node: String,
    pub groups: Vec<GroupStatus>,
    /// Newest first; the error when the agent's store cannot be read.
    pub drills: Result<Vec<DrillRecord>, String>,
}

/// Reads groups and drills; `None` without `[cluster]`.
pub async fn load(s: &AppState) -> Option<Groups> {
    let c = s.cluster.as_ref()?;
    let bound = crate::cluster::request_timeout(c.inner.cfg.lease_ttl);
    Some(Groups {
        node: c.node().to_string(),
        groups: c.groups_within(bound).await,
        drills: s.store.drills(None, DRILLS).map_err(|e| e.to_string()),
    })
}

/// The colour of a member's role.
fn role_class(role: &str) -> &'static str {
    match role {
        "active" => "ok",
        "verifying" | "campaigning" | "demoting" => "warn",
        "standby" => "info",
        _ => "muted",
    }
}

impl Groups {
    /// The summary box: groups with an active node.
    pub fn summary(&self) -> String {
        let active = self.groups.iter().filter(|g| g.active.is_some()).count();
        let bad = active < self.groups.len() || self.groups.iter().any(|g| g.store_error.is_some());
        format!(
            "<div><b class=\"{}\">{active}/{}</b><a href=\"#groups\">failover groups active</a></div>",
            if bad { "bad" } else { "ok" },
            self.groups.len()
        )
    }

    /// Both sections.
    pub fn render(&self, now: i64) -> String {
        let mut b = String::with_capacity(4096 + self.groups.len() * 1500);
        b.push_str("<section id=\"groups\"><h2>Failover groups</h2>");
        // One store error for all groups (they are read together).
        if let Some(e) = self.groups.iter().find_map(|g| g.store_error.as_ref()) {
            let _ = write!(
                b,
                "<div class=\"flash bad store-error\">Cannot read the coordination store: {}. \
Shown: each group's config and this node's own view; the active node and fencing token are unknown.</div>",
                esc(e)
            );
        }
        if self.groups.is_empty() {
            b.push_str("<p class=\"muted\">No [[group]] in the config.</p>");
        }
        for g in &self.groups {
            self.group(&mut b, g, now);
        }
        b.push_str("</section>");
        drills(&mut b, &self.drills, now);
        b
    }

    fn group(&self, b: &mut String, g: &GroupStatus, now: i64) {
        let head = match (&g.active, g.store_error.is_some()) {
            (Some(n), _) => badge("ok", &format!("active on {n}")),
            (None, true) => badge("muted", "active node unknown"),
            (None, false) => badge("bad", "no active node"),
        };
        let _ = write!(
            b,
            "<div class=\"group\" data-group=\"{}\"><h3>{} {head}</h3>\
<div class=\"small\">units {} · standby {} · preempt {}</div>",
            esc(&g.name),
            esc(&g.name),
            esc(&g.units.join(", ")),
            g.standby,
            if g.preempt { "on" } else { "off" },
        );
        if let (Some(n), Some(t)) = (&g.active, g.token) {
            let _ = write!(
                b,
                "<p>Active node <b class=\"active-node\">{}</b> · fencing token <b class=\"token\">{t}</b>{}</p>",
                esc(n),
                g.active_since
                    .map(|s| format!(" · active since {}", time_ago(s, now)))
                    .unwrap_or_default()
            );
        }
        b.push_str("<table><tr><th>Node</th><th>Role</th><th>Qualified</th><th>Healthy</th></tr>");
        for n in &g.nodes {
            // This node's own view is the freshest; others' come from their
            // records in the store (absent: the node is not live).
            let here = *n == self.node;
            let view: Option<&GroupView> = if here {
                Some(&g.here)
            } else {
                g.members.get(n)
            };
            let _ = write!(
                b,
                "<tr data-node=\"{}\"><td>{}{}</td>",
                esc(n),
                esc(n),
                if here {
                    " <span class=\"small\">(this node)</span>"
                } else {
                    ""
                }
            );
            match view.filter(|v| !v.role.is_empty()) {
                None => b.push_str(&format!(
                    "<td>{}</td><td></td><td></td></tr>",
                    badge(
                        "muted",
                        if g.store_error.is_some() {
                            "unknown"
                        } else {
                            "not live"
                        }
                    )
                )),
                Some(v) => {
                    let _ = write!(
                        b,
                        "<td>{}</td><td>{}</td><td>{}</td></tr>",
                        badge(role_class(&v.role), &v.role),
                        if v.qualified {
                            badge("ok", "qualified")
                        } else {
                            format!(
                                "{}<div class=\"reason\">{}</div>",
                                badge("bad", "not qualified"),
                                esc(v.reason.as_deref().unwrap_or(""))
                            )
                        },
                        match (v.role.as_str(), v.healthy) {
                            ("active", true) => badge("ok", "healthy"),
                            ("active", false) => badge("bad", "unhealthy"),
                            _ => String::new(),
                        }
                    );
                }
            }
        }
        b.push_str("</table></div>");
    }
}

fn drills(b: &mut String, drills: &Result<Vec<DrillRecord>, String>, now: i64) {
    b.push_str("<section id=\"drills\"><h2>Recent drills</h2>");
    let list = match drills {
        Err(e) => {
            let _ = write!(
                b,
                "<div class=\"flash bad\">Cannot read the drills: {}</div></section>",
                esc(e)
            );
            return;
        }
        Ok(l) if l.is_empty() => {
            b.push_str(
                "<p class=\"muted\">No drills yet (<code>mamori drill GROUP</code>).</p></section>",
            );
            return;
        }
        Ok(l) => l,
    };
    b.push_str(
        "<table><tr><th>When</th><th>Group</th><th>From → to</th><th class=\"num\">No active node</th>\
<th>Health checks on the new node</th><th>Outcome</th><th>Trigger</th></tr>",
    );
    for d in list {
        let (class, outcome) = match (d.finished_at, d.ok) {
            (None, _) => ("warn", "running"),
            (Some(_), true) => ("ok", "passed"),
            (Some(_), false) => ("bad", "failed"),
        };
        let gap = match (d.gap_ms, d.back_gap_ms) {
            (Some(g), Some(back)) => format!("{g} ms<div class=\"small\">back {back} ms</div>"),
            (Some(g), None) => format!("{g} ms"),
            _ => "—".to_string(),
        };
        // Only a drill that switched over had health checks to pass.
        let health = match (d.healthy, d.finished_at, d.gap_ms) {
            (true, _, _) => badge("ok", "passed"),
            (false, Some(_), Some(_)) => badge("bad", "not passed"),
            (false, None, _) => String::new(),
            (false, Some(_), None) => "—".to_string(),
        };
        let _ = write!(
            b,
            "<tr class=\"drill {class}\" data-drill=\"{}\"><td>{}</td><td>{}</td><td>{} → {}</td>\
<td class=\"num\">{gap}</td><td>{health}</td><td>{}<div class=\"reason\">{}</div></td><td class=\"small\">{}</td></tr>",
            d.id,
            time_ago(d.started_at, now),
            esc(&d.group),
            if d.from.is_empty() { "—".to_string() } else { esc(&d.from) },
            if d.to.is_empty() { "—".to_string() } else { esc(&d.to) },
            badge(class, outcome),
            esc(&d.reason),
            esc(&d.trigger),
        );
    }
    b.push_str("</table></section>");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn view(role: &str, qualified: bool, reason: Option<&str>) -> GroupView {
        GroupView {
            role: role.into(),
            qualified,
            reason: reason.map(str::to_string),
            healthy: role == "active",
            ..GroupView::default()
        }
    }

    fn status(store_error: Option<&str>) -> GroupStatus {
        let mut members = BTreeMap::new();
        if store_error.is_none() {
            members.insert("b".to_string(), view("active", true, None));
            members.insert(
                "c".to_string(),
                view("standby", false, Some("check <db> is down")),
            );
        }
        GroupStatus {
            name: "pay".into(),
            units: vec!["web".into(), "worker".into()],
            nodes: vec!["a".into(), "b".into(), "c".into(), "d".into()],
            active: store_error.is_none().then(|| "b".to_string()),
            token: store_error.is_none().then_some(42),
            active_since: store_error.is_none().then_some(1_000),
            here: view("standby", true, None),
            members,
            preempt: false,
            standby: "stopped",
            store_error: store_error.map(str::to_string),
        }
    }

    fn drill(id: i64, ok: bool, finished: bool) -> DrillRecord {
        DrillRecord {
            id,
            group: "pay".into(),
            started_at: 1_000,
            finished_at: finished.then_some(2_000),
            from: "b".into(),
            to: if ok { "a".into() } else { String::new() },
            gap_ms: ok.then_some(120),
            back_gap_ms: ok.then_some(95),
            healthy: ok,
            ok,
            reason: if ok {
                "fine".into()
            } else {
                "no standby <qualifies>".into()
            },
            trigger: "manual (api)".into(),
        }
    }

    #[test]
    fn a_group_shows_members_in_priority_order_with_the_active_node_and_token() {
        let g = Groups {
            node: "a".into(),
            groups: vec![status(None)],
            drills: Ok(vec![drill(2, false, true), drill(1, true, true)]),
        };
        let html = g.render(61_000);
        assert!(html.contains("<b class=\"active-node\">b</b> · fencing token <b class=\"token\">42</b> · active since <time"));
        let pos = |n: &str| html.find(&format!("data-node=\"{n}\"")).unwrap();
        assert!(pos("a") < pos("b") && pos("b") < pos("c") && pos("c") < pos("d"));
        assert!(html.contains("a <span class=\"small\">(this node)</span>"));
        assert!(
            html.contains("check &lt;db&gt; is down"),
            "reasons are escaped"
        );
        assert!(html.contains("not live"), "d has no record");
        assert!(html.contains(">healthy<"));
        assert!(html.contains("units web, worker · standby stopped · preempt off"));
        // Drills: the failed one red, with its reason; the passed one with its gaps.
        assert!(html.contains("<tr class=\"drill bad\" data-drill=\"2\">"));
        assert!(html.contains("no standby &lt;qualifies&gt;"));
        assert!(html.contains("<tr class=\"drill ok\" data-drill=\"1\">"));
        assert!(html.contains("120 ms<div class=\"small\">back 95 ms</div>"));
        assert!(g.summary().contains("<b class=\"ok\">1/1</b>"));
    }

    #[test]
    fn a_store_error_is_said_plainly_and_the_local_view_still_shows() {
        let g = Groups {
            node: "a".into(),
            groups: vec![status(Some("coordination store unreachable: timeout"))],
            drills: Ok(vec![drill(3, false, false)]),
        };
        let html = g.render(2_000);
        assert!(html.contains(
            "Cannot read the coordination store: coordination store unreachable: timeout"
        ));
        assert!(html.contains("active node unknown"));
        assert!(!html.contains("class=\"token\""));
        // This node's own role is shown; the others are unknown.
        assert!(html.contains("<tr data-node=\"a\"><td>a <span class=\"small\">(this node)</span></td><td><span class=\"badge info\">standby</span>"));
        assert!(html.contains(
            "<tr data-node=\"b\"><td>b</td><td><span class=\"badge muted\">unknown</span>"
        ));
        assert!(html.contains("<tr class=\"drill warn\" data-drill=\"3\">"));
        assert!(g.summary().contains("<b class=\"bad\">0/1</b>"));
    }
}
