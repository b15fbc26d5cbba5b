//! Reading processes from /proc: one `stat` line per process gives the parent,
//! process group, CPU ticks and resident pages, which is all the polling
//! watchdog needs. `environ` tells which unit run an orphan belongs to (every
//! unit process gets `MAMORI_RUN_ID` and `MAMORI_AGENT_ID` in its
//! environment, and descendants inherit them).

use std::collections::HashMap;
use std::fs;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: i32,
    pub ppid: i32,
    pub pgrp: i32,
    /// utime + stime, clock ticks.
    pub cpu_ticks: u64,
    /// Resident set, bytes.
    pub rss: u64,
    /// `Z` for zombies (their memory is already gone).
    pub state: char,
    pub threads: u64,
    /// When the process started (clock ticks after boot): with the pid, its identity.
    pub start_ticks: u64,
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no memory effects.
    let v = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if v > 0 {
        v as u64
    } else {
        4096
    }
}

pub fn ticks_per_sec() -> u64 {
    // SAFETY: sysconf has no memory effects.
    let v = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if v > 0 {
        v as u64
    } else {
        100
    }
}

pub fn ticks_to_duration(ticks: u64) -> Duration {
    Duration::from_millis(ticks * 1000 / ticks_per_sec())
}

/// Parses `/proc/PID/stat`. The command name is in parentheses and may itself
/// contain spaces and parentheses, so fields are counted after the last `)`.
pub fn parse_stat(text: &str, page: u64) -> Option<ProcStat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let pid: i32 = text[..open].trim().parse().ok()?;
    let rest: Vec<&str> = text[close + 1..].split_whitespace().collect();
    // rest[0] = state (field 3), so field N is rest[N - 3].
    let field = |n: usize| rest.get(n - 3).copied();
    Some(ProcStat {
        pid,
        state: field(3)?.chars().next()?,
        ppid: field(4)?.parse().ok()?,
        pgrp: field(5)?.parse().ok()?,
        cpu_ticks: field(14)?.parse::<u64>().ok()? + field(15)?.parse::<u64>().ok()?,
        rss: field(24)?.parse::<i64>().ok()?.max(0) as u64 * page,
        threads: field(20)?.parse().ok()?,
        start_ticks: field(22)?.parse().ok()?,
    })
}

pub fn stat(pid: i32) -> Option<ProcStat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text, page_size())
}

/// Every process on the machine, by pid.
pub fn snapshot() -> HashMap<i32, ProcStat> {
    let page = page_size();
    let mut out = HashMap::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if let Ok(text) = fs::read_to_string(format!("/proc/{pid}/stat")) {
            if let Some(s) = parse_stat(&text, page) {
                out.insert(pid, s);
            }
        }
    }
    out
}

/// The value of `key` in a process's initial environment.
pub fn environ_var(pid: i32, key: &str) -> Option<String> {
    let data = fs::read(format!("/proc/{pid}/environ")).ok()?;
    let prefix = format!("{key}=");
    data.split(|b| *b == 0)
        .find(|kv| kv.starts_with(prefix.as_bytes()))
        .map(|kv| String::from_utf8_lossy(&kv[prefix.len()..]).into_owned())
}

/// Descendants of `roots` (the roots included), from a snapshot.
pub fn descendants(snap: &HashMap<i32, ProcStat>, roots: &[i32]) -> Vec<i32> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for s in snap.values() {
        children.entry(s.ppid).or_default().push(s.pid);
    }
    let mut out = Vec::new();
    let mut done = std::collections::HashSet::new();
    let mut stack: Vec<i32> = roots
        .iter()
        .copied()
        .filter(|p| snap.contains_key(p))
        .collect();
    while let Some(p) = stack.pop() {
        if !done.insert(p) {
            continue;
        }
        out.push(p);
        if let Some(c) = children.get(&p) {
            stack.extend(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_odd_command_name() {
        let line = "4343 (my (odd) cmd) S 4340 4340 1033 0 -1 4194304 103 0 0 0 7 3 0 0 20 0 1 0 31145 3133440 381 18446744073709551615 0";
        let s = parse_stat(line, 4096).unwrap();
        assert_eq!(s.pid, 4343);
        assert_eq!(s.ppid, 4340);
        assert_eq!(s.pgrp, 4340);
        assert_eq!(s.cpu_ticks, 10);
        assert_eq!(s.rss, 381 * 4096);
        assert_eq!(s.state, 'S');
        assert_eq!(s.threads, 1);
        assert_eq!(s.start_ticks, 31145);
    }

    #[test]
    fn own_process_is_visible() {
        let me = std::process::id() as i32;
        let s = stat(me).unwrap();
        assert_eq!(s.pid, me);
        assert!(s.rss > 0);
        let snap = snapshot();
        assert!(descendants(&snap, &[me]).contains(&me));
    }
}
