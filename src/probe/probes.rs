//! One probe of each kind: a result with a reason, never a bare bool, and
//! never "success" when the probe itself could not run (keepalived counts a
//! script that cannot start as healthy; we count it as down, with why).

use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;

use crate::config::checks::StatusMatch;
use crate::supervise::reaper::Reaper;
use crate::supervise::unit::signal_name;

/// Why a probe failed, for people.
pub type Reason = String;

/// The full chain of an error, e.g. "error sending request: connection refused".
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let c_s = c.to_string();
        if !s.contains(&c_s) {
            s.push_str(": ");
            s.push_str(&c_s);
        }
        src = c.source();
    }
    s
}

pub async fn http(
    client: &reqwest::Client,
    url: &str,
    timeout: Duration,
    expect: &StatusMatch,
    body: Option<&str>,
    body_regex: Option<&regex::Regex>,
) -> Result<(), Reason> {
    let resp = client.get(url).timeout(timeout).send().await.map_err(|e| {
        if e.is_timeout() {
            format!(
                "no answer within {}",
                crate::config::units::format_duration(timeout)
            )
        } else {
            chain(&e)
        }
    })?;
    let status = resp.status().as_u16();
    let ok = match expect {
        StatusMatch::Success => (200..300).contains(&status),
        StatusMatch::Any(list) => list.contains(&status),
    };
    if !ok {
        let want = match expect {
            StatusMatch::Success => "2xx".to_string(),
            StatusMatch::Any(l) => l
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(" or "),
        };
        return Err(format!("HTTP {status} (expected {want})"));
    }
    if body.is_none() && body_regex.is_none() {
        return Ok(());
    }
    let text = read_limited(resp, 1 << 20).await?;
    if let Some(b) = body {
        if !text.contains(b) {
            return Err(format!(
                "HTTP {status} but the body does not contain \"{b}\""
            ));
        }
    }
    if let Some(re) = body_regex {
        if !re.is_match(&text) {
            return Err(format!(
                "HTTP {status} but the body does not match /{}/",
                re.as_str()
            ));
        }
    }
    Ok(())
}

async fn read_limited(mut resp: reqwest::Response, max: usize) -> Result<String, Reason> {
    let mut buf = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| chain(&e))? {
        buf.extend_from_slice(&chunk);
        if buf.len() >= max {
            buf.truncate(max);
            break;
        }
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

pub async fn tcp(address: &str, timeout: Duration) -> Result<(), Reason> {
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(address)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("connect to {address}: {e}")),
        Err(_) => Err(format!(
            "connect to {address}: no answer within {}",
            crate::config::units::format_duration(timeout)
        )),
    }
}

pub fn disk(path: &Path, max_used: Option<f64>, max_inodes: Option<f64>) -> Result<(), Reason> {
    let st = nix::sys::statvfs::statvfs(path)
        .map_err(|e| format!("cannot stat {}: {e}", path.display()))?;
    let blocks = st.blocks() as f64;
    let used = blocks - st.blocks_free() as f64;
    let avail = st.blocks_available() as f64;
    if let Some(max) = max_used {
        let pct = if used + avail > 0.0 {
            used * 100.0 / (used + avail)
        } else {
            0.0
        };
        if pct > max {
            return Err(format!(
                "{} is {pct:.1}% full (limit {max}%)",
                path.display()
            ));
        }
    }
    if let Some(max) = max_inodes {
        let files = st.files() as f64;
        if files > 0.0 {
            let pct = (files - st.files_free() as f64) * 100.0 / files;
            if pct > max {
                return Err(format!(
                    "{} has {pct:.1}% of its inodes used (limit {max}%)",
                    path.display()
                ));
            }
        }
    }
    Ok(())
}

/// Runs a command in its own session with a timeout; exit 0 is healthy.
/// Cannot start, timed out, killed, or non-zero: down, with the output's tail.
pub async fn exec(reaper: &Reaper, argv: &[String], timeout: Duration) -> Result<(), Reason> {
    exec_env(reaper, argv, &[], timeout).await
}

/// `exec` with extra environment variables (group hooks and pre-promote checks).
pub async fn exec_env(
    reaper: &Reaper,
    argv: &[String],
    env: &[(String, String)],
    timeout: Duration,
) -> Result<(), Reason> {
    let (mut cmd, read) = crate::util::short_command(&argv[0], Stdio::null())
        .map_err(|e| format!("cannot create a pipe: {e}"))?;
    cmd.args(&argv[1..]).envs(env.iter().map(|(k, v)| (k, v)));
    let (child, exit) = reaper
        .spawn(&mut cmd)
        .map_err(|e| format!("cannot start {}: {e}", argv[0]))?;
    let mut group = crate::util::GroupGuard::new(child.id() as i32);
    drop(child);
    drop(cmd); // closes our copies of the write ends
    let reader = tokio::spawn(read_tail(read));
    let result = tokio::time::timeout(timeout, exit).await;
    let killed_for_time = result.is_err();
    if killed_for_time {
        group.kill();
    } else {
        group.disarm();
    }
    let tail = tokio::time::timeout(Duration::from_secs(2), reader)
        .await
        .ok()
        .and_then(|r| r.ok())
        .unwrap_or_default();
    let tail = tail.trim();
    let with_tail = |msg: String| {
        if tail.is_empty() {
            msg
        } else {
            format!("{msg}: {tail}")
        }
    };
    if killed_for_time {
        return Err(with_tail(format!(
            "timed out after {}",
            crate::config::units::format_duration(timeout)
        )));
    }
    match result {
        Ok(Ok(info)) if info.code == Some(0) => Ok(()),
        Ok(Ok(info)) => Err(with_tail(match (info.code, info.signal) {
            (Some(c), _) => format!("exit {c}"),
            (_, Some(s)) => format!("killed by {}", signal_name(s)),
            _ => "ended abnormally".to_string(),
        })),
        _ => Err("the agent lost track of the check's process".to_string()),
    }
}

/// The last 512 bytes of everything written to the pipe (also used by the
/// alert command channel).
pub(crate) async fn read_tail(fd: OwnedFd) -> String {
    let Ok(mut rx) = tokio::net::unix::pipe::Receiver::from_owned_fd(fd) else {
        return String::new();
    };
    let mut tail: Vec<u8> = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match rx.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                tail.extend_from_slice(&buf[..n]);
                if tail.len() > 4096 {
                    tail.drain(..tail.len() - 512);
                }
            }
        }
    }
    if tail.len() > 512 {
        tail.drain(..tail.len() - 512);
    }
    String::from_utf8_lossy(&tail).trim().replace('\n', " ⏎ ")
}
