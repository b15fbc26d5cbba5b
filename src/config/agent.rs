//! The `[agent]` table: where the agent listens and keeps its data, how it
//! enforces limits and logs, and the web rate limits, with the defaults an
//! agent gets when the table is absent.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::walk::Tbl;
use super::{AgentConfig, Enforcement, LogConfig, RateLimit, ReadAuth};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:7878";

pub(super) fn agent_defaults(base: &Path) -> AgentConfig {
    let data_dir = base.join("mamori-data");
    AgentConfig {
        listen: DEFAULT_LISTEN
            .parse()
            .expect("the default listen address parses"),
        token_file: data_dir.join("token"),
        data_dir,
        enforcement: Enforcement::Auto,
        poll_interval: Duration::from_millis(250),
        shutdown_timeout: Duration::from_secs(30),
        sample_interval: Duration::from_secs(1),
        sample_retention: Duration::from_secs(3600),
        rollup_retention: Duration::from_secs(7 * 86_400),
        log: LogConfig::default(),
        read_auth: ReadAuth::Loopback,
        read_token_file: None,
        rate_limit: Some(RateLimit {
            per_sec: 20.0,
            burst: 40,
        }),
        rate_limit_loopback: false,
    }
}

pub(super) fn agent(t: &Tbl, base: &Path) -> AgentConfig {
    let mut a = agent_defaults(base);
    if let Some((s, span)) = t.str("listen") {
        match s.parse::<SocketAddr>() {
            Ok(addr) => a.listen = addr,
            Err(_) => t.reader().error(
                span,
                format!("invalid `listen` in [agent]: \"{s}\"; expected an IP address and a port, e.g. \"{DEFAULT_LISTEN}\" (a host name is not looked up)"),
            ),
        }
    }
    if let Some(d) = t.string("data_dir") {
        a.data_dir = base.join(d);
        a.token_file = a.data_dir.join("token");
    }
    if let Some(f) = t.string("token_file") {
        a.token_file = base.join(f);
    }
    if let Some(e) = t.choice("enforcement", &["auto", "cgroup2", "cgroup1", "poll"]) {
        a.enforcement = match e.as_str() {
            "cgroup2" => Enforcement::Cgroup2,
            "cgroup1" => Enforcement::Cgroup1,
            "poll" => Enforcement::Poll,
            _ => Enforcement::Auto,
        };
    }
    if let Some(d) = t.duration("poll_interval") {
        if d < Duration::from_millis(10) {
            t.reader().error(
                t.key_span("poll_interval"),
                "invalid `poll_interval` in [agent]: must be at least \"10ms\"",
            );
        } else {
            a.poll_interval = d;
        }
    }
    if let Some(d) = t.duration("shutdown_timeout") {
        a.shutdown_timeout = d;
    }
    if let Some(d) = t.duration("sample_interval") {
        if d < Duration::from_millis(100) {
            t.reader().error(
                t.key_span("sample_interval"),
                "invalid `sample_interval` in [agent]: must be at least \"100ms\"",
            );
        } else {
            a.sample_interval = d;
        }
    }
    if let Some(d) = t.duration("sample_retention") {
        a.sample_retention = d;
    }
    if let Some(d) = t.duration("rollup_retention") {
        a.rollup_retention = d;
    }
    if let Some(l) = t.table("log") {
        a.log = log_config(&l, a.log);
    }
    if let Some(m) = t.choice("read_auth", &["loopback", "token", "none"]) {
        a.read_auth = match m.as_str() {
            "token" => ReadAuth::Token,
            "none" => ReadAuth::None,
            _ => ReadAuth::Loopback,
        };
    }
    if let Some(f) = t.string("read_token_file") {
        a.read_token_file = Some(base.join(f));
    }
    let mut burst_set = false;
    if let Some((s, span)) = t.str("rate_limit") {
        match parse_rate(&s) {
            Ok(r) => a.rate_limit = r,
            Err(e) => t
                .reader()
                .error(span, format!("invalid `rate_limit` in [agent]: {e}")),
        }
    }
    if let Some(b) = t.uint("rate_burst") {
        if b == 0 || b > 1_000_000 {
            t.reader().error(
                t.key_span("rate_burst"),
                format!("invalid `rate_burst` in [agent]: {b}; expected 1 to 1000000 requests"),
            );
        } else {
            burst_set = true;
            if let Some(r) = a.rate_limit.as_mut() {
                r.burst = b as u32;
            }
        }
    }
    if !burst_set {
        // Default burst: two seconds' worth, at least one request.
        if let Some(r) = a.rate_limit.as_mut() {
            r.burst = (r.per_sec * 2.0).ceil().clamp(1.0, 1_000_000.0) as u32;
        }
    }
    if let Some(b) = t.bool("rate_limit_loopback") {
        a.rate_limit_loopback = b;
    }
    t.finish();
    a
}

/// `"20/s"`, `"600/m"`, `"1000/h"` or `"off"`.
pub(super) fn parse_rate(s: &str) -> Result<Option<RateLimit>, String> {
    let s = s.trim();
    if s == "off" {
        return Ok(None);
    }
    let expected = "expected requests per time like \"20/s\", \"600/m\", \"1000/h\", or \"off\"";
    let Some((n, per)) = s.split_once('/') else {
        return Err(format!("\"{s}\"; {expected}"));
    };
    let n: f64 = match n.trim().parse::<u32>() {
        Ok(n) if n > 0 => n as f64,
        _ => {
            return Err(format!(
                "\"{s}\": the count must be a whole number above 0; {expected}"
            ))
        }
    };
    let secs = match per.trim() {
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        other => return Err(format!("\"{s}\": unknown period \"{other}\"; {expected}")),
    };
    Ok(Some(RateLimit {
        per_sec: n / secs,
        burst: 1,
    }))
}

pub(super) fn log_config(t: &Tbl, defaults: LogConfig) -> LogConfig {
    let mut l = defaults;
    if let Some(s) = t.size("max_size") {
        if s < 4096 {
            t.reader().error(
                t.key_span("max_size"),
                format!(
                    "invalid `max_size` in {}: must be at least \"4KiB\"",
                    t.what
                ),
            );
        } else {
            l.max_size = s;
        }
    }
    if let Some(k) = t.uint("keep") {
        if k == 0 || k > 1000 {
            t.reader().error(
                t.key_span("keep"),
                format!(
                    "invalid `keep` in {}: {k}; expected 1 to 1000 files",
                    t.what
                ),
            );
        } else {
            l.keep = k as u32;
        }
    }
    t.finish();
    l
}

#[cfg(test)]
mod tests {
    use super::parse_rate;

    #[test]
    fn rates() {
        let r = |s| parse_rate(s).unwrap().unwrap();
        assert_eq!(r("20/s").per_sec, 20.0);
        assert_eq!(r("600/m").per_sec, 10.0);
        assert_eq!(r(" 36/h ").per_sec, 0.01);
        assert_eq!(parse_rate("off").unwrap(), None);
        for bad in ["20", "0/s", "-1/s", "1.5/s", "20/d", "x/s", ""] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }
}
