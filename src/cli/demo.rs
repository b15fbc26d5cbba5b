//! `mamori demo`: the quick start. Writes the embedded demo config
//! (`examples/quickstart.toml`) into a scratch directory and runs the agent on it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

pub const QUICKSTART: &str = include_str!("../../examples/quickstart.toml");

pub fn prepare(dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join("quickstart.toml");
    std::fs::write(&path, QUICKSTART)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

pub fn banner(path: &Path) {
    let shown = path.display();
    println!(
        "mamori demo: config {shown}\n\
         In another terminal:\n  \
         export MAMORI_CONFIG={shown}\n  \
         mamori status          # the leaker is restarted with reason limit:memory\n  \
         mamori run runaway --wait   # killed by its wall limit\n  \
         mamori logs web\n\
         Ctrl-C stops the agent and every process it started.\n"
    );
}
