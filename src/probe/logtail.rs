//! Following a log as it grows: a unit's captured output (by stream offset,
//! across rotations) or a plain file (rotation by rename or truncation is
//! noticed by inode and size). Starts at the end: old lines are not news.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use crate::supervise::logs;

const MAX_READ: usize = 1 << 20;

pub enum Tail {
    Unit {
        dir: PathBuf,
        offset: u64,
        partial: String,
    },
    File {
        path: PathBuf,
        inode: u64,
        offset: u64,
        partial: String,
    },
}

impl Tail {
    pub fn unit(dir: PathBuf) -> Tail {
        let offset = stream_end(&dir).unwrap_or(0);
        Tail::Unit {
            dir,
            offset,
            partial: String::new(),
        }
    }

    pub fn file(path: PathBuf) -> Tail {
        let (inode, offset) = std::fs::metadata(&path)
            .map(|m| (m.ino(), m.len()))
            .unwrap_or((0, 0));
        Tail::File {
            path,
            inode,
            offset,
            partial: String::new(),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Tail::Unit { dir, .. } => format!(
                "unit {}",
                dir.file_name()
                    .map(|n| n.to_string_lossy().to_string())
                    .unwrap_or_default()
            ),
            Tail::File { path, .. } => path.display().to_string(),
        }
    }

    /// Complete new lines since the last call.
    pub fn read_lines(&mut self) -> Vec<String> {
        let (text, partial) = match self {
            Tail::Unit {
                dir,
                offset,
                partial,
            } => {
                let Ok(chunk) = logs::read_range(dir, *offset, None, MAX_READ) else {
                    return Vec::new();
                };
                *offset = chunk.end;
                (chunk.text, partial)
            }
            Tail::File {
                path,
                inode,
                offset,
                partial,
            } => {
                let Ok(mut f) = File::open(&*path) else {
                    return Vec::new();
                };
                let Ok(meta) = f.metadata() else {
                    return Vec::new();
                };
                if meta.ino() != *inode || meta.len() < *offset {
                    // Rotated or truncated: the new file is read from its start.
                    *inode = meta.ino();
                    *offset = 0;
                    partial.clear();
                }
                let mut buf = Vec::new();
                if f.seek(SeekFrom::Start(*offset)).is_err()
                    || f.take(MAX_READ as u64).read_to_end(&mut buf).is_err()
                {
                    return Vec::new();
                }
                *offset += buf.len() as u64;
                (String::from_utf8_lossy(&buf).into_owned(), partial)
            }
        };
        partial.push_str(&text);
        let mut lines: Vec<String> = Vec::new();
        while let Some(pos) = partial.find('\n') {
            lines.push(partial[..pos].trim_end_matches('\r').to_string());
            partial.drain(..=pos);
        }
        if partial.len() > MAX_READ {
            // A "line" this long is not a line; take it as one and move on.
            lines.push(std::mem::take(partial));
        }
        lines
    }
}

/// The offset after the last byte of a unit's stream.
fn stream_end(dir: &std::path::Path) -> Option<u64> {
    let (start, path) = logs::files(dir).pop()?;
    Some(start + std::fs::metadata(path).ok()?.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn file_tail_follows_appends_and_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        std::fs::write(&path, "old line\n").unwrap();
        let mut t = Tail::file(path.clone());
        assert!(t.read_lines().is_empty(), "starts at the end");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        write!(f, "one\ntw").unwrap();
        assert_eq!(t.read_lines(), vec!["one"]);
        writeln!(f, "o").unwrap();
        assert_eq!(t.read_lines(), vec!["two"]);
        // Truncated (copytruncate) to less than was read: read from the start.
        std::fs::write(&path, "new\n").unwrap();
        assert_eq!(t.read_lines(), vec!["new"]);
        // Replaced by a new file (rename rotation): a new inode.
        std::fs::rename(&path, dir.path().join("app.log.1")).unwrap();
        std::fs::write(&path, "fresh file, longer than before\n").unwrap();
        assert_eq!(t.read_lines(), vec!["fresh file, longer than before"]);
    }
}
