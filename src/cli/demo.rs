//! `mamori demo`: the quick start. Writes the embedded demo config
//! (`examples/quickstart.toml`) into a scratch directory and runs the agent on it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

pub const QUICKSTART: &str = include_str!("../../examples/quickstart.toml");

/// Writes the demo config into `dir`, unless the operator changed the copy
/// there: edits are kept (and said so), never overwritten. What was written
/// last is kept beside it (`.quickstart.toml.shipped`), so that an unedited
/// copy from an older mamori is replaced by this one's.
pub fn prepare(dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join("quickstart.toml");
    let shipped = dir.join(".quickstart.toml.shipped");
    let write = || -> Result<()> {
        std::fs::write(&path, QUICKSTART)
            .with_context(|| format!("cannot write {}", path.display()))?;
        std::fs::write(&shipped, QUICKSTART)
            .with_context(|| format!("cannot write {}", shipped.display()))
    };
    match std::fs::read(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => write()?,
        Err(e) => {
            anyhow::bail!("cannot read {}: {e} (it is left as it is)", path.display())
        }
        Ok(now) if now == QUICKSTART.as_bytes() => {}
        Ok(now) if std::fs::read(&shipped).is_ok_and(|last| last == now) => write()?,
        Ok(_) => eprintln!(
            "mamori demo: keeping your edited {} (delete it to get the original demo config back)",
            path.display()
        ),
    }
    Ok(path)
}

pub fn banner(path: &Path) {
    let shown = path
        .canonicalize()
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string();
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "mamori".into());
    if !on_path("python3") {
        eprintln!("mamori demo: python3 is not installed; the demo's web server and leaking service need it (apt-get install python3).");
    }
    println!(
        "mamori demo: config {shown}\n\
         In another terminal:\n  \
         export MAMORI_CONFIG={shown}\n  \
         {exe} status                 # leaker: restarted with reason limit:memory\n  \
         {exe} run runaway --wait     # a runaway job, killed by its 5 s wall limit\n  \
         {exe} runs                   # every run with its reason, peak memory, CPU\n  \
         {exe} logs leaker\n\
         Dashboard: http://127.0.0.1:7878/ (log in with `{exe} dashboard-url`); status page: /status\n\
         Ctrl-C stops the agent and every process it started.\n"
    );
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_config_is_written_once_and_edits_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("mamori-demo");
        let path = prepare(&d).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), QUICKSTART);
        // Unchanged: left as it is.
        assert_eq!(prepare(&d).unwrap(), path);
        // Edited: kept.
        let edited = format!("{QUICKSTART}\n# mine\n");
        std::fs::write(&path, &edited).unwrap();
        prepare(&d).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), edited);
        // Deleted: the original comes back.
        std::fs::remove_file(&path).unwrap();
        prepare(&d).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), QUICKSTART);
        // Written by an older mamori and not edited since: replaced.
        std::fs::write(&path, "# old demo\n").unwrap();
        std::fs::write(d.join(".quickstart.toml.shipped"), "# old demo\n").unwrap();
        prepare(&d).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), QUICKSTART);
        // Unreadable as text (not UTF-8): kept, never overwritten.
        std::fs::write(&path, b"\xff\xfe edited").unwrap();
        prepare(&d).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"\xff\xfe edited");
    }
}
