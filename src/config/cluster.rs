//! `[cluster]` and `[[group]]`: compiled into [`ClusterConfig`]
//! (docs/config.md, "Cluster"; docs/cluster.md for the operator's view).

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::walk::Tbl;
use super::{AgentConfig, UnitConfig, UnitKind};

#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// This node's name (default: the host name).
    pub node: String,
    pub backend: Backend,
    pub lease_ttl: Duration,
    /// How often each group polls the store.
    pub poll_interval: Duration,
    /// Key prefix in the store, ending in `/`.
    pub prefix: String,
    pub on_store_loss: OnStoreLoss,
    /// Standbys delete a dead active's leader key themselves a lease after
    /// its last beat, instead of waiting for the store's expiry sweep.
    pub fast_takeover: bool,
    pub groups: Vec<GroupConfig>,
}

#[derive(Debug, Clone)]
pub enum Backend {
    Embedded { path: PathBuf },
    Etcd(EtcdConfig),
}

impl Backend {
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Embedded { .. } => "embedded",
            Backend::Etcd(_) => "etcd",
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct EtcdConfig {
    pub endpoints: Vec<String>,
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnStoreLoss {
    Demote,
    KeepIfAllPeersAgree,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StandbyMode {
    /// Standbys keep the group's units stopped.
    Stopped,
    /// Standbys run them too (promotion only runs hooks and hands out the token).
    Warm,
}

#[derive(Debug, Clone)]
pub struct GroupConfig {
    pub name: String,
    pub units: Vec<String>,
    /// Priority order.
    pub nodes: Vec<String>,
    pub standby: StandbyMode,
    pub preempt: bool,
    /// Checks that must be up on this node for it to qualify.
    pub checks: Vec<String>,
    pub pre_promote: Option<Vec<String>>,
    pub pre_promote_timeout: Duration,
    /// How often a standby re-verifies itself (and publishes whether it qualifies).
    pub verify_every: Duration,
    pub on_promote: Option<Vec<String>>,
    pub on_demote: Option<Vec<String>>,
    pub on_fault: Option<Vec<String>>,
    pub hook_timeout: Duration,
    pub drill_every: Option<Duration>,
    /// Scheduled drills only start inside this daily window (local time,
    /// minutes since midnight; may wrap past midnight).
    pub drill_window: Option<(u32, u32)>,
}

fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".to_string())
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

/// Reads `[cluster]` and `[[group]]`; `None` when neither is present.
/// Group members in `standby = "stopped"` mode lose `autostart` (the group
/// starts them where it is active).
pub fn compile(
    root: &Tbl,
    base: &Path,
    agent: &AgentConfig,
    units: &mut [&mut UnitConfig],
    check_names: &[String],
) -> Option<ClusterConfig> {
    let r = root.reader();
    let cluster_tbl = root.table_named("cluster", "[cluster]".to_string());
    let group_tbls = root.tables("group");
    if cluster_tbl.is_none() && group_tbls.is_empty() {
        return None;
    }
    let mut c = ClusterConfig {
        node: hostname(),
        backend: Backend::Embedded {
            path: agent.data_dir.join("cluster.db"),
        },
        lease_ttl: Duration::from_secs(2),
        poll_interval: Duration::from_millis(100),
        prefix: "/mamori/".to_string(),
        on_store_loss: OnStoreLoss::Demote,
        fast_takeover: false,
        groups: Vec::new(),
    };
    if let Some(t) = &cluster_tbl {
        if let Some((n, span)) = t.str("node") {
            if valid_name(&n) {
                c.node = n;
            } else {
                r.error(span, format!("invalid `node` in [cluster]: \"{n}\"; use letters, digits, '-', '_' and '.'"));
            }
        }
        if let Some(d) = t.duration("lease_ttl") {
            if d < Duration::from_secs(1) {
                r.error(
                    t.key_span("lease_ttl"),
                    "invalid `lease_ttl` in [cluster]: must be at least \"1s\"",
                );
            } else {
                c.lease_ttl = d;
            }
        }
        if let Some(d) = t.duration("poll_interval") {
            if d < Duration::from_millis(10) || d > c.lease_ttl / 2 {
                r.error(t.key_span("poll_interval"), "invalid `poll_interval` in [cluster]: must be from \"10ms\" to half of `lease_ttl`");
            } else {
                c.poll_interval = d;
            }
        }
        if let Some((p, span)) = t.str("prefix") {
            if !p.starts_with('/') || !p.ends_with('/') {
                r.error(span, format!("invalid `prefix` in [cluster]: \"{p}\"; expected a key prefix that starts and ends with '/', e.g. \"/mamori/prod/\""));
            } else {
                c.prefix = p;
            }
        }
        if let Some(o) = t.choice("on_store_loss", &["demote", "keep-if-all-peers-agree"]) {
            if o == "keep-if-all-peers-agree" {
                c.on_store_loss = OnStoreLoss::KeepIfAllPeersAgree;
            }
        }
        if let Some(b) = t.bool("fast_takeover") {
            c.fast_takeover = b;
        }
        let backend = t.choice("backend", &["embedded", "etcd"]);
        let path = t.string("path");
        let mut e = EtcdConfig {
            endpoints: t
                .str_list("endpoints")
                .unwrap_or_default()
                .into_iter()
                .map(|(s, _)| s)
                .collect(),
            ca_file: t.file_to_read("ca_file", base),
            cert_file: t.file_to_read("cert_file", base),
            key_file: t.file_to_read("key_file", base),
            username: t.string("username"),
            password_file: t.file_to_read("password_file", base),
        };
        if backend.as_deref() == Some("etcd") {
            if e.endpoints.is_empty() {
                r.error(t.key_span("backend"), "[cluster] backend = \"etcd\" needs `endpoints`, e.g. endpoints = [\"http://10.0.0.1:2379\"]");
            }
            for ep in &e.endpoints {
                if !ep.starts_with("http://") && !ep.starts_with("https://") {
                    r.error(t.key_span("endpoints"), format!("invalid endpoint \"{ep}\" in [cluster]: expected http://HOST:PORT or https://HOST:PORT"));
                }
            }
            if e.cert_file.is_some() != e.key_file.is_some() {
                r.error(
                    t.key_span("cert_file").or(t.key_span("key_file")),
                    "[cluster] needs both `cert_file` and `key_file` for a client certificate",
                );
            }
            if e.username.is_some() != e.password_file.is_some() {
                r.error(
                    t.key_span("username").or(t.key_span("password_file")),
                    "[cluster] needs both `username` and `password_file` for etcd authentication",
                );
            }
            if c.lease_ttl.subsec_nanos() != 0 {
                r.error(
                    t.key_span("lease_ttl"),
                    "invalid `lease_ttl` in [cluster]: etcd leases are whole seconds",
                );
            }
            e.endpoints.dedup();
            c.backend = Backend::Etcd(e);
        } else {
            if !e.endpoints.is_empty() {
                r.error(
                    t.key_span("endpoints"),
                    "`endpoints` in [cluster] needs backend = \"etcd\"",
                );
            }
            if let Some(p) = path {
                c.backend = Backend::Embedded { path: base.join(p) };
            }
        }
        t.finish();
    }
    let mut seen: Vec<String> = Vec::new();
    for (i, gt) in group_tbls.into_iter().enumerate() {
        let mut t = r.table_of(gt, format!("[[group]] #{}", i + 1));
        if let Some(n) = t.peek_str("name") {
            t.what = format!("[[group]] \"{n}\"");
        }
        if let Some(g) = group(&t, c.lease_ttl, units, check_names) {
            if seen.contains(&g.name) {
                r.error(
                    t.key_span("name"),
                    format!("duplicate group name \"{}\"", g.name),
                );
                continue;
            }
            seen.push(g.name.clone());
            c.groups.push(g);
        }
    }
    // A unit in two groups would be started by both.
    let mut owner: Vec<(&str, &str)> = Vec::new();
    for g in &c.groups {
        for u in &g.units {
            if let Some((_, other)) = owner.iter().find(|(x, _)| x == u) {
                r.error(None, format!("unit \"{u}\" is in groups \"{other}\" and \"{}\"; a unit belongs to at most one group", g.name));
            }
            owner.push((u, &g.name));
        }
    }
    Some(c)
}

fn group(
    t: &Tbl,
    ttl: Duration,
    units: &mut [&mut UnitConfig],
    check_names: &[String],
) -> Option<GroupConfig> {
    let r = t.reader();
    let name = t.str("name");
    let list = |key: &'static str| -> Vec<(String, Option<Range<usize>>)> {
        t.str_list(key).unwrap_or_default()
    };
    let members = list("units");
    let nodes = list("nodes");
    let checks = list("checks");
    let standby = match t.choice("standby", &["stopped", "warm"]).as_deref() {
        Some("warm") => StandbyMode::Warm,
        _ => StandbyMode::Stopped,
    };
    let mut g = GroupConfig {
        name: String::new(),
        units: Vec::new(),
        nodes: Vec::new(),
        standby,
        preempt: t.bool("preempt").unwrap_or(false),
        checks: Vec::new(),
        pre_promote: t.command("pre_promote"),
        pre_promote_timeout: t
            .duration("pre_promote_timeout")
            .unwrap_or(Duration::from_secs(5)),
        verify_every: t.duration("verify_every").unwrap_or(Duration::from_secs(5)),
        on_promote: t.command("on_promote"),
        on_demote: t.command("on_demote"),
        on_fault: t.command("on_fault"),
        hook_timeout: t
            .duration("hook_timeout")
            .unwrap_or(Duration::from_secs(30)),
        drill_every: t.duration("drill_every"),
        drill_window: None,
    };
    if let Some((w, span)) = t.str("drill_window") {
        match parse_window(&w) {
            Some(win) => g.drill_window = Some(win),
            None => r.error(span, format!("invalid `drill_window` in {}: \"{w}\"; expected \"HH:MM-HH:MM\" (local time), e.g. \"02:00-04:00\"", t.what)),
        }
    }
    if g.verify_every < Duration::from_millis(100) {
        r.error(
            t.key_span("verify_every"),
            format!(
                "invalid `verify_every` in {}: must be at least \"100ms\"",
                t.what
            ),
        );
    }
    if members.is_empty() {
        t.missing(
            "units",
            "the services the group runs on its active node, e.g. units = [\"db\"]",
        );
    }
    if nodes.is_empty() {
        t.missing(
            "nodes",
            "the nodes that may run the group, in priority order, e.g. nodes = [\"a\", \"b\"]",
        );
    }
    for (n, span) in &nodes {
        if !valid_name(n) {
            r.error(
                span.clone(),
                format!("invalid node name \"{n}\" in `nodes` of {}", t.what),
            );
        }
        if nodes.iter().filter(|(m, _)| m == n).count() > 1 {
            r.error(
                span.clone(),
                format!("node \"{n}\" is listed twice in `nodes` of {}", t.what),
            );
        }
    }
    for (u, span) in &members {
        match units.iter_mut().find(|x| &x.name == u) {
            None => r.error(
                span.clone(),
                format!(
                    "unknown unit \"{u}\" in `units` of {}; it names services",
                    t.what
                ),
            ),
            Some(x) if x.kind != UnitKind::Service => r.error(
                span.clone(),
                format!(
                    "\"{u}\" in `units` of {} is a job; a group runs services",
                    t.what
                ),
            ),
            Some(x) => {
                // Units must stop within the fencing budget: half the lease.
                // Slower ones are killed at that point (see docs/cluster.md).
                if standby == StandbyMode::Stopped {
                    x.autostart = false;
                }
            }
        }
    }
    for (c, span) in &checks {
        if !check_names.contains(c) {
            r.error(
                span.clone(),
                format!("unknown check \"{c}\" in `checks` of {}", t.what),
            );
        } else if members.iter().any(|(u, _)| u == c) {
            // A unit's `health` check takes its name, and pauses while the
            // unit is stopped, as it is on every standby.
            r.error(
                span.clone(),
                format!(
                    "check \"{c}\" in `checks` of {} is the health check of the group's own unit \"{c}\": a standby does not run the unit, so the check is never up there and no node would qualify; list checks of what the group needs around it (`standby = \"warm\"` checks the units' own health)",
                    t.what
                ),
            );
        }
    }
    let _ = ttl;
    t.finish();
    let (name, span) = name.or_else(|| {
        t.missing("name", "every group needs a name, e.g. name = \"db\"");
        None
    })?;
    if !valid_name(&name) {
        r.error(
            span,
            format!("invalid group name \"{name}\": use letters, digits, '-', '_' and '.'"),
        );
        return None;
    }
    g.name = name;
    g.units = members.into_iter().map(|(u, _)| u).collect();
    g.nodes = nodes.into_iter().map(|(n, _)| n).collect();
    g.checks = checks.into_iter().map(|(c, _)| c).collect();
    Some(g)
}

/// "HH:MM-HH:MM" → minutes since midnight.
fn parse_window(s: &str) -> Option<(u32, u32)> {
    let (a, b) = s.split_once('-')?;
    let hm = |x: &str| -> Option<u32> {
        let (h, m) = x.trim().split_once(':')?;
        let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
        (h < 24 && m < 60).then_some(h * 60 + m)
    };
    Some((hm(a)?, hm(b)?))
}

impl GroupConfig {
    /// Whether `minute` (since local midnight) is inside the drill window.
    pub fn in_drill_window(&self, minute: u32) -> bool {
        match self.drill_window {
            None => true,
            Some((a, b)) if a <= b => (a..b).contains(&minute),
            Some((a, b)) => minute >= a || minute < b,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    fn load(text: &str) -> Result<crate::config::Config, String> {
        crate::config::load_str(Path::new("/etc/mamori/m.toml"), text.to_string())
            .map_err(|e| e.to_string())
    }

    const UNITS: &str = r#"
[[service]]
name = "db"
command = "sleep 1000"
[[check]]
name = "disk"
kind = "disk"
path = "/"
max_used = "99%"
"#;

    #[test]
    fn a_group_with_etcd_compiles_and_its_units_do_not_autostart() {
        let c = load(&format!(
            r#"
[cluster]
node = "a"
backend = "etcd"
endpoints = ["http://127.0.0.1:2379"]
lease_ttl = "2s"
[[group]]
name = "g"
units = ["db"]
nodes = ["a", "b"]
checks = ["disk"]
pre_promote = "test -w /"
on_promote = ["/bin/echo", "promoted"]
drill_every = "7d"
drill_window = "23:00-01:00"
{UNITS}"#
        ))
        .unwrap();
        let cl = c.cluster.unwrap();
        assert_eq!(cl.node, "a");
        assert!(matches!(cl.backend, super::Backend::Etcd(_)));
        let g = &cl.groups[0];
        assert_eq!(g.nodes, vec!["a", "b"]);
        assert!(
            !c.units[0].autostart,
            "the group starts it where it is active"
        );
        assert!(
            g.in_drill_window(23 * 60 + 30) && g.in_drill_window(30) && !g.in_drill_window(120)
        );
    }

    #[test]
    fn no_cluster_section_means_no_cluster() {
        let c = load(UNITS).unwrap();
        assert!(c.cluster.is_none());
        assert!(c.units[0].autostart);
    }

    #[test]
    fn errors_name_file_line_and_column() {
        let e = load(&format!(
            r#"
[cluster]
backend = "etcd"
lease_ttl = "1500ms"
[[group]]
name = "g"
units = ["dbx", "disk"]
nodes = ["a", "a"]
checks = ["nope"]
drill_window = "25:00-01:00"
stanby = "warm"
{UNITS}"#
        ))
        .unwrap_err();
        for want in [
            "m.toml:3:1: [cluster] backend = \"etcd\" needs `endpoints`",
            "m.toml:4:1: invalid `lease_ttl` in [cluster]: etcd leases are whole seconds",
            "m.toml:7:10: unknown unit \"dbx\" in `units` of [[group]] \"g\"",
            "unknown unit \"disk\"",
            "m.toml:8:10: node \"a\" is listed twice",
            "m.toml:9:11: unknown check \"nope\"",
            "m.toml:10:16: invalid `drill_window`",
            "m.toml:11:1: unknown key `stanby` in [[group]] \"g\"; did you mean `standby`?",
        ] {
            assert!(e.contains(want), "missing {want:?} in:\n{e}");
        }
    }

    #[test]
    fn a_group_cannot_wait_for_its_own_units_health_check() {
        let e = load(
            r#"
[[service]]
name = "web"
command = "sleep 1000"
health = { kind = "exec", command = "true" }
[[group]]
name = "g"
units = ["web"]
nodes = ["a", "b"]
checks = ["web"]
"#,
        )
        .unwrap_err();
        assert!(
            e.contains("m.toml:10:11: check \"web\" in `checks` of [[group]] \"g\" is the health check of the group's own unit \"web\": a standby does not run the unit"),
            "{e}"
        );
    }
}
