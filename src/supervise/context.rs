//! The execution context of a run, recorded with it so that "why did it fail
//! here and not there" has an answer: host, user, working directory, the
//! filesystem type of the working directory and of the program (network
//! filesystems such as NFS are flagged), the environment the unit sets that
//! differs from the agent's, and for scripts the `#!` interpreter, resolved,
//! with its version.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::UnitConfig;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Context {
    pub host: String,
    pub user: String,
    pub working_dir: String,
    pub working_dir_fs: Option<FsInfo>,
    /// The program or script that runs (resolved through PATH).
    pub program: Option<String>,
    pub program_fs: Option<FsInfo>,
    /// For a script: its `#!` line, and the interpreter it resolves to.
    pub shebang: Option<String>,
    pub interpreter: Option<String>,
    pub interpreter_version: Option<String>,
    /// Variables the unit sets whose value differs from the agent's.
    pub env_diff: Vec<(String, String)>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FsInfo {
    pub mount_point: String,
    pub fs_type: String,
    pub source: String,
    /// NFS, CIFS/SMB, Ceph, GlusterFS, 9p, sshfs…: where "works in dev, fails in prod" often lives.
    pub network: bool,
}

const NETWORK_FS: &[&str] = &[
    "nfs",
    "nfs4",
    "cifs",
    "smb3",
    "smbfs",
    "ceph",
    "fuse.glusterfs",
    "glusterfs",
    "9p",
    "fuse.sshfs",
    "afs",
    "lustre",
    "gpfs",
    "fuse.s3fs",
    "davfs",
    "fuse.rclone",
];

/// The mount holding `path` (longest mount point that is a prefix), from /proc/self/mountinfo.
pub fn fs_of(path: &Path) -> Option<FsInfo> {
    let path = path.canonicalize().ok()?;
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mut best: Option<FsInfo> = None;
    for line in text.lines() {
        let (left, right) = line.split_once(" - ")?;
        let mount_point = unescape(left.split_whitespace().nth(4)?);
        let mut r = right.split_whitespace();
        let fs_type = r.next()?.to_string();
        let source = r.next().unwrap_or("").to_string();
        if path.starts_with(&mount_point)
            && best
                .as_ref()
                .is_none_or(|b| mount_point.len() >= b.mount_point.len())
        {
            let network = NETWORK_FS.contains(&fs_type.as_str());
            best = Some(FsInfo {
                mount_point,
                fs_type,
                source,
                network,
            });
        }
    }
    best
}

/// mountinfo escapes spaces and friends as octal (`\040`).
fn unescape(s: &str) -> String {
    let mut out = String::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8) {
                out.push(v as char);
                i += 4;
                continue;
            }
        }
        out.push(b[i] as char);
        i += 1;
    }
    out
}

/// The first bytes of a file, enough for a `#!` line: never the whole file
/// (a unit's program may be a binary of hundreds of megabytes).
fn read_head(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut head = Vec::with_capacity(SHEBANG_MAX);
    std::fs::File::open(path)?
        .take(SHEBANG_MAX as u64)
        .read_to_end(&mut head)?;
    Ok(head)
}

/// How much of a program is read to find its `#!` line.
const SHEBANG_MAX: usize = 256;

fn which(program: &str, cwd: &Path) -> Option<PathBuf> {
    if program.contains('/') {
        let p = cwd.join(program);
        return p.exists().then(|| real(p));
    }
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .map(real)
}

/// The file a path names, without `./`, `..` or links in the way.
fn real(p: PathBuf) -> PathBuf {
    p.canonicalize().unwrap_or(p)
}

/// A shell command that is more than one simple command (a list, a
/// pipeline, a subshell, a substitution): the shell itself is what runs.
fn is_compound(script: &str) -> bool {
    script.contains([';', '|', '&', '\n', '`', '(', ')'])
}

const SHELLS_AND_INTERPRETERS: &[&str] = &[
    "sh", "bash", "dash", "zsh", "ksh", "perl", "python", "python3", "ruby", "php", "node",
];

/// The program a unit really runs: argv[0], or for `/bin/sh -c "…"` the first
/// word of the command (and for `sh script.sh` / `perl x.pl`, the script).
fn program_of(argv: &[String], cwd: &Path) -> Option<PathBuf> {
    let words: Vec<String> = if argv.len() == 3 && argv[0] == "/bin/sh" && argv[1] == "-c" {
        if is_compound(&argv[2]) {
            return which("/bin/sh", cwd);
        }
        argv[2]
            .split_whitespace()
            .take(2)
            .map(str::to_string)
            .collect()
    } else {
        argv.iter().take(2).cloned().collect()
    };
    let first = words.first()?;
    let base = Path::new(first).file_name()?.to_string_lossy().to_string();
    if SHELLS_AND_INTERPRETERS.contains(&base.as_str()) {
        if let Some(script) = words.get(1).filter(|w| !w.starts_with('-')) {
            let p = cwd.join(script);
            if p.is_file() {
                return Some(real(p));
            }
        }
    }
    which(first, cwd)
}

/// Everything that can be learned without running anything.
pub fn collect(unit: &UnitConfig) -> Context {
    let cwd = unit
        .working_dir
        .clone()
        .or_else(|| std::env::current_dir().ok())
        .unwrap_or_else(|| PathBuf::from("/"));
    let program = program_of(&unit.command, &cwd);
    let mut shebang = None;
    let mut interpreter = None;
    if let Some(p) = &program {
        if let Ok(head) = read_head(p) {
            if head.starts_with(b"#!") {
                let line = String::from_utf8_lossy(&head[2..]);
                let line = line.lines().next().unwrap_or("").trim().to_string();
                let mut parts = line.split_whitespace();
                let interp = parts.next().unwrap_or("");
                let resolved = if interp.ends_with("/env") {
                    parts
                        .find(|w| !w.starts_with('-'))
                        .and_then(|w| which(w, &cwd))
                } else {
                    Some(PathBuf::from(interp))
                };
                interpreter = resolved
                    .map(|r| r.canonicalize().unwrap_or(r))
                    .map(|r| r.display().to_string());
                shebang = Some(format!("#!{line}"));
            }
        }
    }
    let env_diff = unit
        .env
        .iter()
        .filter(|(k, v)| std::env::var(k).ok().as_deref() != Some(v.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Context {
        host: nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().to_string())
            .unwrap_or_default(),
        user: nix::unistd::User::from_uid(nix::unistd::getuid())
            .ok()
            .flatten()
            .map(|u| u.name)
            .unwrap_or_else(|| nix::unistd::getuid().to_string()),
        working_dir: cwd.display().to_string(),
        working_dir_fs: fs_of(&cwd),
        program_fs: program.as_deref().and_then(fs_of),
        program: program.map(|p| p.display().to_string()),
        shebang,
        interpreter,
        interpreter_version: None,
        env_diff,
    }
}

/// `INTERPRETER --version` (first line), run through the reaper with a
/// 2 s timeout; None when it says nothing useful.
pub async fn interpreter_version(
    reaper: &super::reaper::Reaper,
    interpreter: &str,
) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let (mut cmd, read) =
        crate::util::short_command(interpreter, std::process::Stdio::null()).ok()?;
    cmd.arg("--version");
    let (child, exit) = reaper.spawn(&mut cmd).ok()?;
    let mut group = crate::util::GroupGuard::new(child.id() as i32);
    drop(child);
    drop(cmd);
    let mut rx = tokio::net::unix::pipe::Receiver::from_owned_fd(read).ok()?;
    let mut out = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        while let Ok(n) = rx.read(&mut buf).await {
            if n == 0 || out.len() > 64 * 1024 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
    };
    if tokio::time::timeout(std::time::Duration::from_secs(2), read)
        .await
        .is_err()
    {
        group.kill();
    }
    let ended = tokio::time::timeout(std::time::Duration::from_secs(2), exit).await;
    if ended.is_ok() {
        group.disarm();
    }
    let succeeded = matches!(ended, Ok(Ok(ref info)) if info.code == Some(0));
    version_line(&out, succeeded)
}

/// The version an interpreter printed: its first non-empty line, if it
/// succeeded. An interpreter without `--version` (dash) says so and fails;
/// that complaint is no version.
fn version_line(out: &[u8], succeeded: bool) -> Option<String> {
    if !succeeded {
        return None;
    }
    String::from_utf8_lossy(out)
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(|l| l.chars().take(200).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_script_and_its_interpreter() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("import.sh");
        std::fs::write(&script, "#!/usr/bin/env sh\necho hi\n").unwrap();
        let argv = vec![
            "/bin/sh".to_string(),
            "-c".to_string(),
            "sh ./import.sh --all".to_string(),
        ];
        let p = program_of(&argv, dir.path()).unwrap();
        assert_eq!(p, dir.path().canonicalize().unwrap().join("import.sh"));
        // A list of commands: the shell runs it, not its first word.
        let list = |script: &str| {
            let argv = ["/bin/sh", "-c", script].map(String::from);
            program_of(&argv, dir.path())
        };
        let sh = Path::new("/bin/sh").canonicalize().unwrap();
        assert_eq!(list("echo starting; while :; do :; done"), Some(sh.clone()));
        assert_eq!(list("gzip -dc a.gz | ./load"), Some(sh.clone()));
        assert_eq!(list("cd /srv && ./run"), Some(sh));
        let echo = Path::new("/bin/echo").canonicalize().unwrap();
        assert_eq!(list("echo hello > out.txt"), Some(echo));
        let fs = fs_of(dir.path()).unwrap();
        assert!(!fs.fs_type.is_empty());
        assert!(!fs.network);
        assert_eq!(unescape("/mnt/my\\040share"), "/mnt/my share");
    }

    #[test]
    fn a_failed_version_probe_is_no_version() {
        let dash = b"/usr/bin/dash: 0: Illegal option --\n";
        assert_eq!(version_line(dash, false), None);
        let python = b"\nPython 3.11.2\n";
        assert_eq!(version_line(python, true).as_deref(), Some("Python 3.11.2"));
        assert_eq!(version_line(b"", true), None);
    }

    #[test]
    fn a_large_program_is_read_only_as_far_as_its_shebang_line() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.sh");
        let mut body = b"#!/bin/sh -e\n".to_vec();
        body.resize(8 << 20, b'#');
        std::fs::write(&big, &body).unwrap();
        let head = read_head(&big).unwrap();
        assert_eq!(head.len(), SHEBANG_MAX);
        assert!(head.starts_with(b"#!/bin/sh -e\n"));
        let text = format!(
            "[[service]]\nname = \"big\"\ncommand = [\"{}\"]\n",
            big.display()
        );
        let config = crate::config::load_str(&dir.path().join("m.toml"), text).unwrap();
        let ctx = collect(&config.units[0]);
        let big = big.canonicalize().unwrap();
        assert_eq!(ctx.program.as_deref(), Some(big.to_str().unwrap()));
        assert_eq!(ctx.shebang.as_deref(), Some("#!/bin/sh -e"));
        let sh = Path::new("/bin/sh").canonicalize().unwrap();
        assert_eq!(ctx.interpreter, Some(sh.display().to_string()));
    }
}
