//! Who is in a run's cgroup, without reading `cgroup.procs` at every sample.
//!
//! A cgroup's members change in three ways only: a member forks (the child
//! joins), a member exits, or someone moves a process in or out by writing
//! `cgroup.procs`. Opening and reading that file was most of what an idle
//! agent did per unit and second (docs/benchmarks.md, eleventh run; v1 cannot
//! keep it open, see docs/architecture.md). So a sample first reads each
//! known member's `/proc/PID/schedstat` (kept open, read with `pread`): how
//! long and how many times it has run. A process that has not run since
//! the last look has not forked. When every member is single-threaded (the
//! file describes one thread) and none has run since a look taken *before*
//! the last read of `cgroup.procs`, that read still holds, less the members
//! that exited, which the sample sees (their stat reads fail, or show
//! zombies) and which make the next sample read the list again. The list is
//! read anyway every `FULL_EVERY` samples, for moves by hand (and for the
//! windows below).
//!
//! Known windows, each closed by that periodic read (review, session 11):
//! the thread count is taken from the sample after the read, so a member's
//! extra thread that forks after the read and exits before the stat read
//! hides the child; a task that stays on a CPU (`nohz_full`, a busy
//! SCHED_FIFO loop) may fork without its run time moving before the next
//! look; a process put into the cgroup by hand has no look. Kernels that
//! print `0 0 0` in schedstat (no schedstats, no delay accounting) give no
//! evidence, and the list is then read at every sample.
//!
//! The order matters: the looks are taken before the list is read, so a
//! fork between the two is in the list, and a fork after it is a run after
//! the look. A list that differs from the last one is read once more before
//! it is trusted: its new members had no look before it.
//!
//! Only the sampler uses this; stopping and killing a tree read the list.
//! Written by hand: no crate does this.

use std::fs;
use std::os::unix::fs::FileExt;

/// Samples between two reads of the list, at most.
pub const FULL_EVERY: u32 = 10;

/// What `/proc/PID/schedstat` says: time on a CPU (ns) and times scheduled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Runs(u64, u64);

struct Member {
    pid: i32,
    schedstat: Option<fs::File>,
    /// The last look, if any.
    runs: Option<Runs>,
}

impl Member {
    fn new(pid: i32) -> Member {
        Member {
            pid,
            schedstat: fs::File::open(format!("/proc/{pid}/schedstat")).ok(),
            runs: None,
        }
    }

    /// Looks again; true when it has not run since the last look.
    fn look(&mut self) -> bool {
        let now = self.schedstat.as_ref().and_then(read_runs);
        let same = now.is_some() && now == self.runs;
        self.runs = now;
        same
    }
}

fn read_runs(f: &fs::File) -> Option<Runs> {
    let mut buf = [0u8; 96];
    let n = f.read_at(&mut buf, 0).ok()?;
    let text = std::str::from_utf8(buf.get(..n)?).ok()?;
    let mut it = text.split_ascii_whitespace();
    let ns: u64 = it.next()?.parse().ok()?;
    let _wait = it.next()?;
    let count = it.next()?.parse().ok()?;
    // Kernels without schedstats or delay accounting print `0 0 0` for
    // every task: no evidence either way. A process that ran has run > 0 ns.
    (ns > 0).then_some(Runs(ns, count))
}

/// A run's members as last read, and the looks that vouch for them.
#[derive(Default)]
pub struct Members {
    /// Sorted by pid.
    known: Vec<Member>,
    /// The list can stand for a read: the looks predate it, it matched the
    /// one before, and the last sample saw every member, single-threaded.
    trusted: bool,
    /// Samples since the list was last read.
    skipped: u32,
    /// Reads of the list (for tests and benchmarks).
    pub reads: u64,
}

impl Members {
    /// The members now: the known ones when nobody has run since the looks
    /// that vouch for them, else `read()`, sorted.
    pub fn current(&mut self, read: impl FnOnce() -> Vec<i32>) -> Vec<i32> {
        // Every look first, before any read (module doc).
        let mut quiet = true;
        for m in &mut self.known {
            quiet &= m.look();
        }
        if self.trusted && quiet && self.skipped + 1 < FULL_EVERY && !self.known.is_empty() {
            self.skipped += 1;
            return self.known.iter().map(|m| m.pid).collect();
        }
        self.skipped = 0;
        self.reads += 1;
        let mut pids = read();
        pids.sort_unstable();
        pids.dedup();
        let same = pids.len() == self.known.len()
            && pids.iter().zip(&self.known).all(|(p, m)| *p == m.pid);
        if same {
            // A member whose look failed (its schedstat could not be opened,
            // or the file kept names an earlier process that had this pid):
            // open it afresh.
            for m in &mut self.known {
                if m.runs.is_none() {
                    *m = Member::new(m.pid);
                }
            }
        } else {
            let mut old = std::mem::take(&mut self.known).into_iter().peekable();
            for &pid in &pids {
                while old.next_if(|m| m.pid < pid).is_some() {}
                match old.next_if(|m| m.pid == pid) {
                    // Its look still predates this read.
                    Some(m) => self.known.push(m),
                    None => self.known.push(Member::new(pid)),
                }
            }
        }
        // A new member's first look comes after the read: not yet.
        self.trusted = same && self.known.iter().all(|m| m.runs.is_some());
        pids
    }

    /// What the sample found of the members: `(pid, threads)` of each live
    /// one. One missing (exited, a zombie) or with threads of its own (the
    /// file describes the first thread only) means the list is read next time.
    pub fn saw(&mut self, live: impl Iterator<Item = (i32, u64)>) {
        let mut n = 0;
        for (pid, threads) in live {
            n += 1;
            if threads != 1 || self.known.binary_search_by_key(&pid, |m| m.pid).is_err() {
                self.trusted = false;
            }
        }
        if n != self.known.len() {
            self.trusted = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::process::{Child, Command, Stdio};

    /// Children killed, with what they forked (each leads its own process
    /// group), and waited for on every path.
    struct Kids(Vec<Child>);

    impl Drop for Kids {
        fn drop(&mut self) {
            for c in &mut self.0 {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(c.id() as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
                let _ = c.wait();
            }
        }
    }

    fn spawn(argv: &[&str]) -> Child {
        use std::os::unix::process::CommandExt;
        Command::new(argv[0])
            .args(&argv[1..])
            .stdin(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap()
    }

    /// Waits (bounded) until `pid` sleeps and stays asleep: its schedstat
    /// stops changing.
    fn settled(pid: i32) {
        let f = fs::File::open(format!("/proc/{pid}/schedstat")).unwrap();
        let mut last = None;
        for _ in 0..200 {
            let now = read_runs(&f);
            if now.is_some() && now == last {
                return;
            }
            last = now;
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        panic!("process {pid} did not settle");
    }

    fn children(pid: i32) -> Vec<i32> {
        fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }

    #[test]
    fn a_quiet_single_threaded_tree_is_read_twice_then_trusted() {
        let kids = Kids(vec![spawn(&["sleep", "1000"])]);
        let pid = kids.0[0].id() as i32;
        settled(pid);
        let mut m = Members::default();
        for _ in 0..2 {
            assert_eq!(m.current(|| vec![pid]), vec![pid]);
            m.saw([(pid, 1)].into_iter());
        }
        assert_eq!(m.reads, 2, "the first read has no look before it");
        for _ in 0..FULL_EVERY - 1 {
            assert_eq!(m.current(|| panic!("read while quiet")), vec![pid]);
            m.saw([(pid, 1)].into_iter());
        }
        // Every FULL_EVERY samples the list is read anyway.
        assert_eq!(m.current(|| vec![pid]), vec![pid]);
        assert_eq!(m.reads, 3);
    }

    #[test]
    fn a_member_that_ran_may_have_forked_so_the_list_is_read() {
        // A shell that forks a sleep when told to (a line on its stdin).
        let mut kids = Kids(vec![spawn(&["sh", "-c", "read a; sleep 1000 & read b"])]);
        let sh = kids.0[0].id() as i32;
        settled(sh);
        let tree = || {
            let mut t = vec![sh];
            t.extend(children(sh));
            t
        };
        let mut m = Members::default();
        m.current(tree);
        m.saw([(sh, 1)].into_iter());
        m.current(tree);
        m.saw([(sh, 1)].into_iter());
        assert_eq!(m.current(|| panic!("read while quiet")), vec![sh]);
        m.saw([(sh, 1)].into_iter());
        let stdin = kids.0[0].stdin.as_mut().unwrap();
        stdin.write_all(b"go\n").unwrap();
        stdin.flush().unwrap();
        let child = (0..200)
            .find_map(|_| {
                std::thread::sleep(std::time::Duration::from_millis(10));
                children(sh).first().copied()
            })
            .expect("the shell forked");
        let now = m.current(tree);
        assert!(now.contains(&child), "{now:?}");
        assert_eq!(m.reads, 3);
    }

    #[test]
    fn a_member_gone_or_with_threads_is_never_vouched_for() {
        let kids = Kids(vec![spawn(&["sleep", "1000"])]);
        let pid = kids.0[0].id() as i32;
        settled(pid);
        let mut m = Members::default();
        // Two threads: its schedstat would tell of one of them only.
        for _ in 0..3 {
            m.current(|| vec![pid]);
            m.saw([(pid, 2)].into_iter());
        }
        assert_eq!(m.reads, 3);
        // Missing from the sample (it exited, or is a zombie).
        for _ in 0..3 {
            m.current(|| vec![pid]);
            m.saw(std::iter::empty());
        }
        assert_eq!(m.reads, 6);
        // Seen whole and single-threaded at the next read (whose looks came
        // before it): trusted from then on.
        m.current(|| vec![pid]);
        m.saw([(pid, 1)].into_iter());
        assert_eq!(m.reads, 7);
        m.current(|| panic!("read while quiet"));
        assert_eq!(m.reads, 7);
    }

    #[test]
    fn a_list_that_changed_is_read_again_before_it_is_trusted() {
        let kids = Kids(vec![spawn(&["sleep", "1000"]), spawn(&["sleep", "1000"])]);
        let (a, b) = (kids.0[0].id() as i32, kids.0[1].id() as i32);
        settled(a);
        settled(b);
        let mut m = Members::default();
        m.current(|| vec![a]);
        m.saw([(a, 1)].into_iter());
        m.current(|| vec![a]);
        m.saw([(a, 1)].into_iter());
        m.current(|| panic!("read while quiet"));
        m.saw([(a, 1)].into_iter());
        // Trusted with a alone; a full read (the FULL_EVERY one) finds b
        // too (say, moved in by hand). b had no look before that read.
        m.skipped = FULL_EVERY;
        assert_eq!(m.current(|| vec![b, a]), {
            let mut v = vec![a, b];
            v.sort_unstable();
            v
        });
        m.saw([(a, 1), (b, 1)].into_iter());
        let reads = m.reads;
        m.current(|| vec![a, b]);
        m.saw([(a, 1), (b, 1)].into_iter());
        assert_eq!(m.reads, reads + 1);
        m.current(|| panic!("read while quiet"));
        assert_eq!(m.reads, reads + 1);
    }
}
