//! HTML building blocks: escaping, the page shell (CSS and the small script
//! for live refresh), and formatting of times and sizes for people.
//!
//! Escaping is written by hand (`esc`, five characters) rather than with a
//! template crate: pages are built with `format!`/`push_str`, and every
//! interpolated value from outside the code goes through `esc` (text and
//! attribute values alike, always inside double quotes). A template engine
//! would add a dependency and a build-time step for very little here.

use std::fmt::Write;
use std::time::Duration;

/// Escapes text for HTML text and double-quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a path segment or query value.
pub fn url(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

pub fn dur_ms(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0 => format!("{ms} ms"),
        1..=119 => format!("{s} s"),
        120..=7199 => format!("{} min", s / 60),
        7200..=172_799 => format!("{} h", s / 3600),
        _ => format!("{} d", s / 86400),
    }
}

/// "5 min ago" style, from a timestamp in ms.
pub fn ago(ts: i64, now: i64) -> String {
    if ts > now {
        return format!("in {}", dur_ms((ts - now) as u64));
    }
    format!("{} ago", dur_ms((now - ts) as u64))
}

/// `2026-11-23 08:10 UTC`.
pub fn when(ts: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ts)
        .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_default()
}

/// `<time>` with the full timestamp as a tooltip.
pub fn time_ago(ts: i64, now: i64) -> String {
    format!(
        "<time datetime=\"{}\" title=\"{}\">{}</time>",
        crate::util::format_ts(ts),
        when(ts),
        ago(ts, now)
    )
}

pub fn duration(d: Duration) -> String {
    crate::config::units::format_duration(d)
}

/// A coloured badge; `class` picks the colour (ok, warn, bad, info, muted).
pub fn badge(class: &str, text: &str) -> String {
    format!("<span class=\"badge {class}\">{}</span>", esc(text))
}

/// Which badge colour a state word gets.
pub fn state_class(state: &str) -> &'static str {
    match state {
        "running" | "up" | "succeeded" | "operational" | "resolved" | "released" | "exited"
        | "idle" => "ok",
        "backoff" | "stopping" | "retry-wait" | "warning" | "acknowledged" | "degraded"
        | "monitoring" | "identified" | "waiting" | "maintenance" => "warn",
        "failed" | "gave-up" | "down" | "held" | "critical" | "firing" | "stalled"
        | "partial_outage" | "major_outage" | "investigating" => "bad",
        _ => "muted",
    }
}

pub const CSS: &str = r#"
:root{--bg:#f6f7f9;--fg:#1d2329;--mut:#6a737d;--line:#dde1e6;--ok:#1a7f37;--warn:#9a6700;--bad:#cf222e;--info:#0969da;--card:#fff}
*{box-sizing:border-box}body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;background:var(--bg);color:var(--fg)}
header{background:#1d2329;color:#fff;padding:10px 20px;display:flex;gap:20px;align-items:center;flex-wrap:wrap}
header a{color:#cfd6dd;text-decoration:none}header a:hover{color:#fff}header .brand{font-weight:700;color:#fff;font-size:16px}
header .right{margin-left:auto;display:flex;gap:12px;align-items:center}
main{padding:16px 20px;max-width:1400px;margin:0 auto}
section{background:var(--card);border:1px solid var(--line);border-radius:6px;padding:12px 16px;margin:0 0 16px}
h1{font-size:20px;margin:4px 0 12px}h2{font-size:16px;margin:0 0 10px}h3{font-size:14px;margin:10px 0 6px}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:4px 8px;border-bottom:1px solid var(--line);vertical-align:top}
th{font-size:12px;color:var(--mut);font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}
.badge{display:inline-block;padding:0 7px;border-radius:10px;font-size:12px;font-weight:600;border:1px solid currentColor;white-space:nowrap}
.ok{color:var(--ok)}.warn{color:var(--warn)}.bad{color:var(--bad)}.info{color:var(--info)}.muted{color:var(--mut)}
.summary{display:flex;gap:12px;flex-wrap:wrap}.summary div{background:var(--card);border:1px solid var(--line);border-radius:6px;padding:8px 14px;min-width:130px}
.summary b{display:block;font-size:22px}
form.inline{display:inline}button{font:inherit;padding:2px 10px;border:1px solid var(--line);border-radius:4px;background:#f0f2f4;cursor:pointer}
button:hover{background:#e3e7eb}button.primary{background:var(--info);color:#fff;border-color:var(--info)}
input[type=text],input[type=password],textarea,select{font:inherit;padding:4px 6px;border:1px solid var(--line);border-radius:4px}
textarea{width:100%;min-height:54px}.flash{padding:8px 12px;border-radius:6px;margin-bottom:12px;border:1px solid}
.flash.ok{background:#dafbe1}.flash.bad{background:#ffebe9}
pre.log{background:#0d1117;color:#e6edf3;padding:10px;border-radius:6px;overflow:auto;max-height:600px;font-size:12px;white-space:pre-wrap}
.reason{color:var(--mut);font-size:12px}.flowgraph{overflow:auto}.small{font-size:12px;color:var(--mut)}
.grid2{display:grid;grid-template-columns:1fr 1fr;gap:16px}@media(max-width:900px){.grid2{grid-template-columns:1fr}}
.bars{display:flex;gap:1px;height:28px;align-items:stretch}.bars span{flex:1;border-radius:1px;background:#c9d1d9}
.bars .u100{background:#2da44e}.bars .u99{background:#8ccf9a}.bars .u95{background:#d4a72c}.bars .ulow{background:#cf222e}
.timeline{border-left:2px solid var(--line);margin-left:6px;padding-left:12px}.timeline div{margin-bottom:8px}
.scroll{max-height:520px;overflow:auto}
"#;

/// Live refresh: reloads the page's `<main>` every 10 s unless the user is
/// typing or the page was opened with `?live=0`.
pub const JS: &str = r#"
(function(){
 if (new URLSearchParams(location.search).get('live') === '0') return;
 setInterval(function(){
  var a = document.activeElement;
  if (a && (a.tagName === 'INPUT' || a.tagName === 'TEXTAREA' || a.tagName === 'SELECT')) return;
  fetch(location.href, {credentials: 'same-origin'}).then(function(r){ return r.ok ? r.text() : null; }).then(function(t){
   if (!t) return;
   var d = new DOMParser().parseFromString(t, 'text/html');
   var m = d.querySelector('main'); if (m) document.querySelector('main').replaceWith(m);
  }).catch(function(){});
 }, 10000);
})();
"#;

/// The page shell. `nav_right` is trusted HTML (built by the caller).
pub fn page(title: &str, nav_right: &str, body: &str, live: bool) -> String {
    let mut s = String::with_capacity(body.len() + 4096);
    let _ = write!(
        s,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{}</title><style>{CSS}</style></head><body>\
<header><a class=\"brand\" href=\"/\">mamori</a><a href=\"/\">Dashboard</a>\
<a href=\"/ui/incidents\">Incidents</a><a href=\"/status\">Status page</a>\
<span class=\"right\">{nav_right}</span></header><main>{body}</main>",
        esc(title)
    );
    if live {
        let _ = write!(s, "<script>{JS}</script>");
    }
    s.push_str("</body></html>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            esc("<script>alert(\"x\")</script> & 'y'"),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
        assert_eq!(url("a b/ü"), "a%20b%2F%C3%BC");
    }

    #[test]
    fn sizes_and_durations_for_people() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 * 1024 * 1024 / 2), "1.5 MiB");
        assert_eq!(dur_ms(1500), "1 s");
        assert_eq!(dur_ms(3 * 3600 * 1000), "3 h");
    }
}
