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
/// It is raw bytes, not UTF-8: the kernel cuts it at 15 bytes, which can
/// split a character, and a process may set any bytes. Only the numbers
/// around it are read as text.
pub fn parse_stat(raw: &[u8], page: u64) -> Option<ProcStat> {
    let open = raw.iter().position(|&b| b == b'(')?;
    let close = raw.iter().rposition(|&b| b == b')')?;
    let pid: i32 = std::str::from_utf8(raw.get(..open)?)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let after = std::str::from_utf8(raw.get(close + 1..)?).ok()?;
    let rest: Vec<&str> = after.split_whitespace().collect();
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
    let mut buf = [0u8; 1024];
    parse_stat(read_stat(pid, &mut buf)?, page_size())
}

/// `/proc/PID/stat` in one `read`: `fs::read_to_string` would first ask for
/// the size (`statx`, which says 0 for a pseudo-file) and then read in
/// growing steps from 32 bytes, six syscalls where one does (the line is
/// under 400 bytes, and a seq_file fills the buffer it is given).
fn read_stat(pid: i32, buf: &mut [u8; 1024]) -> Option<&[u8]> {
    use std::io::Read;
    let mut f = fs::File::open(format!("/proc/{pid}/stat")).ok()?;
    let n = f.read(buf).ok()?;
    if n == 0 || n == buf.len() {
        return None;
    }
    buf.get(..n)
}

/// A kept `/proc/PID/stat` re-read from offset 0 (None once its process is
/// gone: the file keeps naming the process it was opened for).
fn pread_stat(f: &fs::File, page: u64, buf: &mut [u8; 1024]) -> Option<ProcStat> {
    use std::os::unix::fs::FileExt;
    match f.read_at(buf, 0) {
        Ok(n) if n > 0 && n < buf.len() => parse_stat(buf.get(..n)?, page),
        _ => None,
    }
}

/// This process's pid (`std::process::id()` is a syscall every time).
pub fn my_pid() -> i32 {
    static PID: std::sync::OnceLock<i32> = std::sync::OnceLock::new();
    *PID.get_or_init(|| std::process::id() as i32)
}

/// The /proc files of one run's processes, kept open between samples.
///
/// Opening `/proc/PID/stat` every second costs a path walk, permission
/// checks and a dentry revalidation, which perf showed as most of the
/// sampling cost (docs/benchmarks.md, M1); re-reading an open file from
/// offset 0 makes the kernel render it afresh without any of that. An open
/// stat file also keeps naming the same process: once it has exited, reads
/// fail instead of describing whoever reuses the pid.
///
/// Open descriptors are counted with one `fstat` of an open `/proc/PID/fd`
/// (Linux 6.2 and later report the count as the directory's size); older
/// kernels report 0 there, and then the directory is listed instead. The
/// count is only shown (status, samples), never enforced (`open_files` is
/// an rlimit), so it is refreshed every `FD_EVERY` reads of a process and
/// the last count is reported in between: a fifth of the `statx` calls,
/// which were a sixth of an idle agent's syscalls (docs/benchmarks.md).
#[derive(Default)]
pub struct ProcFiles {
    /// Under a cgroup: its members, read from `cgroup.procs` only when
    /// they may have changed (`members.rs`).
    pub(super) members: super::members::Members,
    open: HashMap<i32, (fs::File, FdCount)>,
    /// Poll mode: just the fd directories, by pid and start time.
    fd_dirs: HashMap<i32, (u64, FdCount)>,
}

/// Reads of a process between two counts of its open descriptors.
pub const FD_EVERY: u32 = 5;

/// A process's kept `/proc/PID/fd` and its last count.
struct FdCount {
    dir: Option<fs::File>,
    last: u64,
    /// Reads since `last` was counted (`FD_EVERY` = count at the next read).
    age: u32,
}

impl FdCount {
    fn open(pid: i32) -> FdCount {
        FdCount {
            dir: fs::File::open(format!("/proc/{pid}/fd")).ok(),
            last: 0,
            age: FD_EVERY,
        }
    }

    fn get(&mut self, pid: i32) -> u64 {
        if self.age >= FD_EVERY {
            self.last = fd_count(self.dir.as_ref(), pid);
            self.age = 0;
        }
        self.age += 1;
        self.last
    }
}

impl ProcFiles {
    /// Stats of `pids` (zombies and vanished processes left out), with their
    /// open descriptors; files of processes no longer listed are closed.
    pub fn read(&mut self, pids: &[i32]) -> Vec<(ProcStat, u64)> {
        let page = page_size();
        self.open.retain(|pid, _| pids.contains(pid));
        let mut out = Vec::with_capacity(pids.len());
        let mut buf = [0u8; 1024];
        for &pid in pids {
            let entry = match self.open.entry(pid) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(v) => {
                    let Ok(f) = fs::File::open(format!("/proc/{pid}/stat")) else {
                        continue;
                    };
                    v.insert((f, FdCount::open(pid)))
                }
            };
            let Some(st) = pread_stat(&entry.0, page, &mut buf) else {
                self.open.remove(&pid);
                continue;
            };
            if st.state == 'Z' {
                continue;
            }
            let fds = entry.1.get(pid);
            out.push((st, fds));
        }
        out
    }
}

impl ProcFiles {
    /// Open descriptors for stats already read (poll mode reads every stat
    /// of the agent's tree in its snapshot, so reading them again here would
    /// double the cost); fd directories of other processes are closed.
    pub fn fds_for(&mut self, stats: Vec<ProcStat>) -> Vec<(ProcStat, u64)> {
        self.fd_dirs.retain(|pid, (start, _)| {
            stats
                .iter()
                .any(|s| s.pid == *pid && s.start_ticks == *start)
        });
        stats
            .into_iter()
            .filter(|s| s.state != 'Z')
            .map(|s| {
                let (_, fds) = self
                    .fd_dirs
                    .entry(s.pid)
                    .or_insert_with(|| (s.start_ticks, FdCount::open(s.pid)));
                (s, fds.get(s.pid))
            })
            .collect()
    }
}

fn fd_count(dir: Option<&fs::File>, pid: i32) -> u64 {
    match dir.map(|d| d.metadata()) {
        Some(Ok(m)) if m.len() > 0 => m.len(),
        Some(_) => count_fds(pid),
        None => 0,
    }
}

/// Open file descriptors of a process by listing `/proc/PID/fd` (0 when it
/// cannot be read).
pub fn count_fds(pid: i32) -> u64 {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count() as u64)
        .unwrap_or(0)
}

/// Every process on the machine at one moment, with the parent → children
/// index built once (every watchdog walks it on every tick in poll mode).
#[derive(Debug, Default)]
pub struct ProcTable {
    procs: HashMap<i32, ProcStat>,
    children: HashMap<i32, Vec<i32>>,
    /// The kernel's last handed-out pid, read before the table was (see
    /// [`last_pid`]); None where it could not be read.
    pub last_pid: Option<i32>,
    /// Per-snapshot memo for the enforcer: orphans re-parented to the agent,
    /// by the run they belong to.
    pub orphans_by_run: std::sync::OnceLock<HashMap<i64, Vec<i32>>>,
}

impl ProcTable {
    pub fn new(procs: HashMap<i32, ProcStat>) -> ProcTable {
        let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
        for s in procs.values() {
            children.entry(s.ppid).or_default().push(s.pid);
        }
        ProcTable {
            procs,
            children,
            last_pid: None,
            orphans_by_run: std::sync::OnceLock::new(),
        }
    }

    /// Direct children of `pid`.
    pub fn children_of(&self, pid: i32) -> &[i32] {
        self.children.get(&pid).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Descendants of `roots` (the roots included).
    pub fn descendants(&self, roots: &[i32]) -> Vec<i32> {
        let mut out = Vec::new();
        let mut done = std::collections::HashSet::new();
        let mut stack: Vec<i32> = roots
            .iter()
            .copied()
            .filter(|p| self.procs.contains_key(p))
            .collect();
        while let Some(p) = stack.pop() {
            if !done.insert(p) {
                continue;
            }
            out.push(p);
            stack.extend(self.children_of(p));
        }
        out
    }
}

impl std::ops::Deref for ProcTable {
    type Target = HashMap<i32, ProcStat>;
    fn deref(&self) -> &Self::Target {
        &self.procs
    }
}

/// Every process on the machine, by pid.
pub fn snapshot() -> ProcTable {
    snapshot_since(None, 0, &mut StatFiles::default())
}

/// `/proc/PID/stat` of `me`'s descendants, kept open between snapshots:
/// re-reading an open file skips the path walk (see [`ProcFiles`]), and a
/// kept file keeps naming its process (a read fails once it is gone, and the
/// pid is then read afresh by path).
#[derive(Default)]
pub struct StatFiles {
    open: HashMap<i32, fs::File>,
}

impl StatFiles {
    /// `pid`'s stat through its kept file (opened now if `keep` and not
    /// kept yet), or by path.
    fn read(&mut self, pid: i32, keep: bool, page: u64, buf: &mut [u8; 1024]) -> Option<ProcStat> {
        if let Some(f) = self.open.get(&pid) {
            match pread_stat(f, page, buf) {
                Some(s) => return Some(s),
                // Gone: the pid, if it exists, is another process now.
                None => {
                    self.open.remove(&pid);
                }
            }
        }
        if keep {
            let f = fs::File::open(format!("/proc/{pid}/stat")).ok()?;
            let st = pread_stat(&f, page, buf)?;
            self.open.insert(pid, f);
            return Some(st);
        }
        read_stat(pid, buf).and_then(|t| parse_stat(t, page))
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.open.len()
    }
}

/// Like [`snapshot`], but re-reading only what can matter to `me`'s trees:
/// processes `prev` did not have (new pids) and `me`'s descendants in `prev`.
/// A process outside `me`'s tree never moves into it (orphans re-parent to
/// the nearest subreaper above them, and `me` is not above them), so its
/// line from `prev` is kept. The one miss is a pid that was reused between
/// two scans by a new descendant; a full scan (`prev = None`) now and then
/// bounds it. On a server with thousands of processes and a few dozen
/// supervised ones this skips most of the reads. `files` keeps the stat
/// files of `me`'s descendants open from one call to the next.
///
/// When no pid was handed out since `prev` was taken ([`last_pid`]
/// unchanged), no process can have started, so the `/proc` listing is
/// skipped as well: `me`'s descendants are re-read (exits drop out, and an
/// orphan's new parent shows), everything else is kept from `prev`. On a
/// quiet host that is most snapshots.
pub fn snapshot_since(prev: Option<&ProcTable>, me: i32, files: &mut StatFiles) -> ProcTable {
    // Read first: a process started during the listing changes it, so the
    // next snapshot lists again.
    snapshot_at(prev, me, files, last_pid())
}

/// [`snapshot_since`] with the kernel's last pid read by the caller (before
/// it decided what to pass as `prev`, so the two agree).
pub fn snapshot_at(
    prev: Option<&ProcTable>,
    me: i32,
    files: &mut StatFiles,
    last: Option<i32>,
) -> ProcTable {
    let page = page_size();
    let ours: std::collections::HashSet<i32> = match prev {
        Some(p) => p.descendants(&[me]).into_iter().collect(),
        None => Default::default(),
    };
    let mut out = HashMap::new();
    let mut buf = [0u8; 1024];
    let quiet = prev.filter(|p| last.is_some() && p.last_pid == last);
    if let Some(prev) = quiet {
        for (pid, old) in &prev.procs {
            if !ours.contains(pid) {
                out.insert(*pid, *old);
            } else if let Some(s) = files.read(*pid, true, page, &mut buf) {
                out.insert(*pid, s);
            }
        }
    } else if let Ok(dir) = fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let name = entry.file_name();
            let Some(pid) = name.to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            if let Some(old) = prev.and_then(|p| p.procs.get(&pid)) {
                if !ours.contains(&pid) {
                    out.insert(pid, *old);
                    continue;
                }
            }
            if let Some(s) = files.read(pid, ours.contains(&pid), page, &mut buf) {
                out.insert(pid, s);
            }
        }
    }
    let mut table = ProcTable::new(out);
    table.last_pid = last;
    if me > 0 {
        let now: std::collections::HashSet<i32> = table.descendants(&[me]).into_iter().collect();
        files.open.retain(|pid, _| now.contains(pid));
    } else {
        files.open.clear();
    }
    table
}

/// The last pid the kernel handed out in our pid namespace
/// (`/proc/sys/kernel/ns_last_pid`), to processes and threads alike: while
/// it stays the same, no process has started. None where it cannot be read.
pub fn last_pid() -> Option<i32> {
    let mut buf = [0u8; 32];
    let n = {
        use std::io::Read;
        fs::File::open("/proc/sys/kernel/ns_last_pid")
            .ok()?
            .read(&mut buf)
            .ok()?
    };
    std::str::from_utf8(&buf[..n]).ok()?.trim().parse().ok()
}

/// The value of `key` in a process's initial environment.
pub fn environ_var(pid: i32, key: &str) -> Option<String> {
    let data = fs::read(format!("/proc/{pid}/environ")).ok()?;
    let prefix = format!("{key}=");
    data.split(|b| *b == 0)
        .find(|kv| kv.starts_with(prefix.as_bytes()))
        .map(|kv| String::from_utf8_lossy(&kv[prefix.len()..]).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A child with no stdio, for reading its /proc files.
    fn spawn_quiet(program: &str, args: &[&str]) -> std::process::Child {
        use std::process::{Command, Stdio};
        Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }

    #[test]
    fn stat_with_odd_command_name() {
        let line = "4343 (my (odd) cmd) S 4340 4340 1033 0 -1 4194304 103 0 0 0 7 3 0 0 20 0 1 0 31145 3133440 381 18446744073709551615 0";
        let s = parse_stat(line.as_bytes(), 4096).unwrap();
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
    fn a_command_name_that_is_not_utf8_still_parses() {
        let mut line =
            b"77 (backup_\xe3\x83) S 1 77 77 0 -1 0 0 0 0 0 5 6 0 0 20 0 3 0 99 0 12".to_vec();
        line.push(b'\n');
        let s = parse_stat(&line, 4096).unwrap();
        assert_eq!((s.pid, s.ppid, s.cpu_ticks, s.threads), (77, 1, 11, 3));
        assert_eq!(s.rss, 12 * 4096);
    }

    #[test]
    fn a_process_whose_name_was_cut_inside_a_character_is_seen() {
        // The kernel keeps 15 bytes of "backup_データ" (16 bytes): the name
        // ends in half a character, as real programs' names do.
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("backup_データ");
        std::os::unix::fs::symlink("/bin/sleep", &link).unwrap();
        let mut child = spawn_quiet(link.to_str().unwrap(), &["30"]);
        let pid = child.id() as i32;
        // The parent can resume before `execve` has renamed the child (it
        // still has this thread's name then): wait for the new name.
        let mut comm = Vec::new();
        for _ in 0..500 {
            comm = std::fs::read(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.starts_with(b"backup_") {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let seen = stat(pid);
        let in_table = ProcFiles::default().read(&[pid]).len();
        let _ = child.kill();
        let _ = child.wait();
        assert!(std::str::from_utf8(&comm).is_err(), "{comm:?}");
        let seen = seen.expect("the process is seen");
        assert_eq!(seen.ppid, my_pid());
        assert_eq!(in_table, 1);
    }

    #[test]
    fn kept_files_follow_the_process_and_count_fds() {
        let mut child = spawn_quiet("sleep", &["30"]);
        let pid = child.id() as i32;
        // Counted once asleep: while `sleep` starts, its loader opens and
        // closes the libraries, and the count moves between two reads.
        for _ in 0..1000 {
            if stat(pid).is_some_and(|s| s.state == 'S')
                && fs::read(format!("/proc/{pid}/comm")).is_ok_and(|c| c == b"sleep\n")
            {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let mut files = ProcFiles::default();
        let first = files.read(&[pid]);
        let listed = count_fds(pid);
        let snap = snapshot();
        let from_snapshot = files.fds_for(snap.get(&pid).copied().into_iter().collect());
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].0.pid, pid);
        // The kept directory's count is the listing's (stdin, stdout,
        // stderr and whatever the test runner let the child inherit).
        assert!(listed >= 3, "{listed}");
        assert_eq!(first[0].1, listed);
        assert_eq!(from_snapshot.len(), 1);
        assert_eq!(from_snapshot[0].1, listed);
        assert_eq!(files.fds_for(Vec::new()).len(), 0);
        assert!(
            files.fd_dirs.is_empty(),
            "fd dirs of unlisted pids are closed"
        );
        // Reaped: the kept stat file now fails, and is closed.
        assert!(files.read(&[pid]).is_empty());
        assert!(files.open.is_empty());
        // Files of pids no longer asked for are closed too.
        let me = std::process::id() as i32;
        assert_eq!(files.read(&[me]).len(), 1);
        assert!(files.read(&[]).is_empty());
        assert!(files.open.is_empty());
    }

    #[test]
    fn open_descriptors_are_recounted_every_few_reads() {
        // Opens two more descriptors on SIGUSR1. (Not on a fifo: while a
        // process is blocked opening one, its fd number is already reserved,
        // and the directory's size counts it while a listing does not.)
        let mut child = spawn_quiet(
            "bash",
            &[
                "-c",
                "trap 'exec 107</dev/null 108</dev/null' USR1; while :; do sleep 0.05; done",
            ],
        );
        let pid = child.id() as i32;
        // The trap is set once the loop has started a sleep.
        for _ in 0..1000 {
            let kids = fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"));
            if kids.is_ok_and(|k| !k.trim().is_empty()) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut files = ProcFiles::default();
        let before = files.read(&[pid]).first().map(|(_, n)| *n);
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGUSR1,
        );
        let mut now = 0;
        for _ in 0..1000 {
            now = count_fds(pid);
            if before.is_some_and(|b| now >= b + 2) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let stale: Vec<Option<u64>> = (1..FD_EVERY)
            .map(|_| files.read(&[pid]).first().map(|(_, n)| *n))
            .collect();
        let fresh = files.read(&[pid]).first().map(|(_, n)| *n);
        let _ = child.kill();
        let _ = child.wait();
        let before = before.unwrap();
        assert_eq!(now, before + 2, "bash opened fds 107 and 108");
        assert!(stale.iter().all(|n| *n == Some(before)), "{stale:?}");
        assert_eq!(fresh, Some(now));
    }

    #[test]
    fn own_process_is_visible() {
        let me = std::process::id() as i32;
        let s = stat(me).unwrap();
        assert_eq!(s.pid, me);
        assert!(s.rss > 0);
        let snap = snapshot();
        assert!(snap.descendants(&[me]).contains(&me));
    }

    #[test]
    fn incremental_snapshot_rereads_new_and_own_processes() {
        use std::process::{Command, Stdio};
        let me = std::process::id() as i32;
        let first = snapshot();
        let mut child = Command::new("sleep")
            .arg("30")
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let mut files = StatFiles::default();
        // A new pid is read even though the earlier snapshot lacked it...
        let second = snapshot_since(Some(&first), me, &mut files);
        // ...and so is everything below `me` (the test process's tree),
        // through a stat file kept open from then on.
        let third = snapshot_since(Some(&second), me, &mut files);
        let kept = files.open.contains_key(&pid);
        let _ = child.kill();
        let _ = child.wait();
        // Reaped: its kept file fails, and is closed.
        let fourth = snapshot_since(Some(&third), me, &mut files);
        assert_eq!(second.get(&pid).map(|s| s.ppid), Some(me));
        assert!(third.descendants(&[me]).contains(&pid));
        assert!(third.get(&pid).is_some());
        assert!(kept, "a descendant's stat file is kept open");
        assert!(fourth.get(&pid).is_none());
        assert!(!files.open.contains_key(&pid));
        assert!(files.len() <= fourth.descendants(&[me]).len());
        // A process outside our tree keeps its earlier line: pid 1 was read
        // in full by `snapshot` and is carried over unchanged.
        assert_eq!(third.get(&1), first.get(&1));
    }

    #[test]
    fn without_a_new_pid_the_listing_is_skipped_and_only_our_tree_is_reread() {
        let me = std::process::id() as i32;
        let mut child = spawn_quiet("sleep", &["30"]);
        let pid = child.id() as i32;
        let mut files = StatFiles::default();
        let real = snapshot_since(None, me, &mut files);
        let Some(mine) = real.get(&pid).copied() else {
            panic!("the child is listed");
        };
        // A made-up earlier table: a process that does not exist (so only a
        // skipped listing keeps it), and our child with a stale line.
        let ghost = ProcStat {
            pid: 999_999_999,
            ppid: 1,
            ..mine
        };
        let stale = ProcStat { rss: 1, ..mine };
        let mut procs: HashMap<i32, ProcStat> = real.procs.iter().map(|(p, s)| (*p, *s)).collect();
        procs.insert(ghost.pid, ghost);
        procs.insert(pid, stale);
        let mut prev = ProcTable::new(procs);
        prev.last_pid = Some(42);

        let quiet = snapshot_at(Some(&prev), me, &mut files, Some(42));
        assert_eq!(quiet.get(&ghost.pid), Some(&ghost), "kept: not listed");
        assert_ne!(quiet.get(&pid).map(|s| s.rss), Some(1), "ours is re-read");
        assert_eq!(quiet.last_pid, Some(42));

        let listed = snapshot_at(Some(&prev), me, &mut files, Some(43));
        assert!(listed.get(&ghost.pid).is_none(), "a listing drops it");
        assert!(listed.get(&pid).is_some());

        let unknown = snapshot_at(Some(&prev), me, &mut files, None);
        assert!(unknown.get(&ghost.pid).is_none(), "no last pid: list");

        // Our child exits without a pid being handed out: it drops out.
        let _ = child.kill();
        let _ = child.wait();
        let after = snapshot_at(Some(&quiet), me, &mut files, Some(42));
        assert!(after.get(&pid).is_none());
        assert!(last_pid().is_some_and(|p| p > 0));
    }
}
