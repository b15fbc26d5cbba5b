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
        let offset = logs::stream_end(&dir).unwrap_or(0);
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
        // Split first, drain once: draining line by line would move the
        // rest of a 1 MiB read once per line.
        let mut lines: Vec<String> = Vec::new();
        let mut consumed = 0;
        while let Some(pos) = partial[consumed..].find('\n') {
            let line = &partial[consumed..consumed + pos];
            lines.push(line.trim_end_matches('\r').to_string());
            consumed += pos + 1;
        }
        partial.drain(..consumed);
        if partial.len() > MAX_READ {
            // A "line" this long is not a line; take it as one and move on.
            lines.push(std::mem::take(partial));
        }
        lines
    }
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

    #[test]
    fn a_full_read_of_short_lines_yields_every_line_and_keeps_the_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("burst.log");
        std::fs::write(&path, "").unwrap();
        let mut t = Tail::file(path.clone());
        assert!(t.read_lines().is_empty());
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        // More than one read's worth, in lines of 16 bytes, with \r\n endings.
        let n = MAX_READ / 16 + 100;
        for i in 0..n {
            write!(f, "line {i:>9}\r\n").unwrap();
        }
        write!(f, "half").unwrap();
        let mut got = t.read_lines();
        assert_eq!(got.len(), MAX_READ / 16, "one read is MAX_READ bytes");
        got.extend(t.read_lines());
        assert_eq!(got.len(), n);
        assert_eq!(got[0], format!("line {:>9}", 0));
        assert_eq!(got[n - 1], format!("line {:>9}", n - 1));
        writeln!(f, " a line").unwrap();
        assert_eq!(t.read_lines(), vec!["half a line"]);
    }
}
