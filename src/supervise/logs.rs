//! Capture of each unit's stdout and stderr into rotated files.
//!
//! A unit's output is one byte stream with a running offset that never goes
//! back. Files are named by the offset of their first byte
//! (`<data_dir>/logs/<unit>/00000000000001048576.log`), so a run records the
//! range it wrote (`log_start..log_end` in the runs table) and
//! `mamori logs --run ID` reads exactly that range, across rotations, for as
//! long as the files are kept. The disk used is at most `max_size × keep`.
//!
//! Memory stays flat whatever the child writes: one 64 KiB buffer per pipe;
//! when the disk is slower than the child, the pipe fills and the child waits.
//! Lines from stdout and stderr are kept whole when they fit in the buffer.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::config::LogConfig;

const CHUNK: usize = 64 * 1024;

pub struct LogSink {
    dir: PathBuf,
    cfg: LogConfig,
    file: Option<File>,
    file_start: u64,
    file_len: u64,
}

fn file_name(start: u64) -> String {
    format!("{start:020}.log")
}

/// The log files of a unit, oldest first, as (start offset, path).
pub fn files(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut out: Vec<(u64, PathBuf)> = fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let name = e.file_name();
                    let start = name.to_str()?.strip_suffix(".log")?.parse::<u64>().ok()?;
                    Some((start, e.path()))
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

impl LogSink {
    /// Opens a unit's log directory, continuing after what is there.
    pub fn open(dir: PathBuf, cfg: LogConfig) -> io::Result<LogSink> {
        fs::create_dir_all(&dir)?;
        let mut sink = LogSink {
            dir,
            cfg,
            file: None,
            file_start: 0,
            file_len: 0,
        };
        if let Some((start, path)) = files(&sink.dir).pop() {
            let file = OpenOptions::new().append(true).open(&path)?;
            sink.file_len = file.metadata()?.len();
            sink.file_start = start;
            sink.file = Some(file);
        }
        Ok(sink)
    }

    /// Offset of the next byte to be written.
    pub fn offset(&self) -> u64 {
        self.file_start + self.file_len
    }

    pub fn write(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            if self.file.is_none() || self.file_len >= self.cfg.max_size {
                self.rotate()?;
            }
            let room = (self.cfg.max_size - self.file_len) as usize;
            let n = data.len().min(room.max(1));
            if let Some(f) = self.file.as_mut() {
                if let Err(e) = f.write_all(&data[..n]) {
                    // Part may have been written (disk full): keep offsets true.
                    self.file_len = f.metadata().map(|m| m.len()).unwrap_or(self.file_len);
                    return Err(e);
                }
            }
            self.file_len += n as u64;
            data = &data[n..];
        }
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        let start = self.offset();
        let path = self.dir.join(file_name(start));
        self.file = Some(OpenOptions::new().create(true).append(true).open(path)?);
        self.file_start = start;
        self.file_len = 0;
        let all = files(&self.dir);
        let excess = all.len().saturating_sub(self.cfg.keep as usize);
        for (_, path) in all.into_iter().take(excess) {
            fs::remove_file(path)?;
        }
        Ok(())
    }
}

/// A part of a unit's log stream.
#[derive(Debug, serde::Serialize)]
pub struct LogChunk {
    /// Offset of the first byte returned (later than asked when older output was rotated away).
    pub start: u64,
    /// Offset after the last byte returned; ask from here to follow.
    pub end: u64,
    /// True when bytes before `start` that were asked for are gone.
    pub truncated: bool,
    pub text: String,
}

/// Reads `[from, to)` of a unit's stream (to: the end when None), at most `max` bytes.
pub fn read_range(dir: &Path, from: u64, to: Option<u64>, max: usize) -> io::Result<LogChunk> {
    let all = files(dir);
    let earliest = all.first().map(|(s, _)| *s).unwrap_or(0);
    let start = from.max(earliest);
    let mut out = Vec::new();
    let mut pos = start;
    for (i, (fstart, path)) in all.iter().enumerate() {
        let fend = match all.get(i + 1) {
            Some((next, _)) => *next,
            None => fstart + fs::metadata(path).map(|m| m.len()).unwrap_or(0),
        };
        let limit = to.unwrap_or(u64::MAX).min(fend);
        if pos >= limit || pos < *fstart {
            continue;
        }
        let want = ((limit - pos) as usize).min(max - out.len());
        let mut f = match File::open(path) {
            Ok(f) => f,
            // Rotated away since we listed it: those bytes are gone.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        f.seek(SeekFrom::Start(pos - fstart))?;
        let got = f.take(want as u64).read_to_end(&mut out)?;
        pos += got as u64;
        if out.len() >= max {
            break;
        }
    }
    // Do not cut a character in two: an incomplete one at the end is left
    // for the next read.
    if let Err(e) = std::str::from_utf8(&out) {
        if e.error_len().is_none() {
            let cut = out.len() - e.valid_up_to();
            out.truncate(e.valid_up_to());
            pos -= cut as u64;
        }
    }
    Ok(LogChunk {
        start,
        end: pos,
        truncated: start > from,
        text: String::from_utf8_lossy(&out).into_owned(),
    })
}

/// The offset after the last byte of a unit's stream (None: no output yet).
pub fn stream_end(dir: &Path) -> Option<u64> {
    let (start, path) = files(dir).pop()?;
    Some(start + fs::metadata(path).ok()?.len())
}

/// The last `lines` lines of `[floor, to)` (to: the stream's end when
/// None), reading at most `max` bytes back from the end: what `tail -n`
/// shows, and where to follow on from (`end`).
pub fn read_last_lines(
    dir: &Path,
    floor: u64,
    to: Option<u64>,
    lines: usize,
    max: usize,
) -> io::Result<LogChunk> {
    let end = match to {
        Some(t) => t,
        None => stream_end(dir).unwrap_or(floor),
    };
    let from = end.saturating_sub(max as u64).max(floor);
    let mut chunk = read_range(dir, from, Some(end), max)?;
    let cut = last_lines_start(&chunk.text, lines);
    chunk.text.drain(..cut);
    chunk.start += cut as u64;
    // Older output was left out on purpose, not lost.
    chunk.truncated = false;
    Ok(chunk)
}

/// Where the last `n` lines of `text` begin (a final line without its
/// newline counts as a line).
fn last_lines_start(text: &str, n: usize) -> usize {
    if n == 0 {
        return text.len();
    }
    let body = text.strip_suffix('\n').unwrap_or(text);
    match body.rmatch_indices('\n').nth(n - 1) {
        Some((i, _)) => i + 1,
        None => 0,
    }
}

/// Copies a run's pipes (stdout and stderr) into the sink until the writer
/// side of each has closed: one task per run, not one per pipe.
///
/// Each pipe's 64 KiB buffer exists only while output is flowing: it is
/// allocated when the pipe becomes readable and given back once a read
/// leaves nothing pending and did not fill it, so a quiet unit costs no
/// buffer (hundreds of units: docs/benchmarks.md, M1). Lines are written
/// whole, each pipe's separately, so stdout and stderr never split each
/// other's lines (only a line longer than the buffer is written in pieces),
/// and a pipe's last line is ended with a newline if it had none.
pub async fn pump(pipes: Vec<tokio::net::unix::pipe::Receiver>, sink: Arc<Mutex<LogSink>>) {
    let mut pipes: Vec<Pipe> = pipes
        .into_iter()
        .map(|rx| Pipe {
            rx,
            buf: Vec::new(),
            pending: 0,
        })
        .collect();
    // Where the next wait starts looking: the pipe after the last one read,
    // so a flooding stdout cannot starve stderr.
    let mut next = 0;
    while !pipes.is_empty() {
        let (i, ready) = std::future::poll_fn(|cx| {
            let n = pipes.len();
            for k in 0..n {
                let i = (next + k) % n;
                if let std::task::Poll::Ready(r) = pipes[i].rx.poll_read_ready(cx) {
                    return std::task::Poll::Ready((i, r));
                }
            }
            std::task::Poll::Pending
        })
        .await;
        next = i + 1;
        if ready.is_err() || !pipes[i].read(&sink) {
            // A last line without its newline gets one: the other pipe's
            // next line, or the next run's first, starts a line of its own.
            let mut done = pipes.swap_remove(i);
            if done.pending > 0 {
                done.buf.truncate(done.pending);
                done.buf.push(b'\n');
                write(&sink, &done.buf);
            }
        }
    }
}

/// One pipe of [`pump`] and its partial line.
struct Pipe {
    rx: tokio::net::unix::pipe::Receiver,
    buf: Vec<u8>,
    pending: usize,
}

impl Pipe {
    /// Reads what the pipe holds and writes the whole lines. False once the
    /// writer side has closed.
    fn read(&mut self, sink: &Mutex<LogSink>) -> bool {
        if self.buf.is_empty() {
            self.buf = vec![0u8; CHUNK];
        }
        let n = match self.rx.try_read(&mut self.buf[self.pending..]) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
            Ok(0) | Err(_) => return false,
            Ok(n) => n,
        };
        self.pending += n;
        // Write whole lines; keep a partial line unless the buffer is full.
        let cut = match self.buf[..self.pending].iter().rposition(|b| *b == b'\n') {
            Some(pos) => pos + 1,
            None if self.pending == self.buf.len() => self.pending,
            None => return true,
        };
        write(sink, &self.buf[..cut]);
        self.buf.copy_within(cut..self.pending, 0);
        self.pending -= cut;
        if self.pending == 0 && n < CHUNK / 2 {
            self.buf = Vec::new();
        }
        true
    }
}

fn write(sink: &Mutex<LogSink>, data: &[u8]) {
    let mut guard = match sink.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    if let Err(e) = guard.write(data) {
        tracing::warn!(dir = %guard.dir.display(), error = %e, "Could not write captured output.");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One task copies both pipes: a flood on one (4 MiB, written in pieces
    /// that cut lines) and a few lines on the other: one written in two
    /// parts with half the flood between them, and a last one without a
    /// newline whose pipe closes while the flood goes on. Everything
    /// arrives, and no line is cut by the other pipe's.
    #[tokio::test]
    async fn one_pump_copies_two_pipes_and_keeps_their_lines_whole() {
        let dir = tempfile::tempdir().unwrap();
        let sink = Arc::new(Mutex::new(
            LogSink::open(dir.path().join("u"), LogConfig::default()).unwrap(),
        ));
        let (out_r, out_w) = crate::util::output_pipe().unwrap();
        let (err_r, err_w) = crate::util::output_pipe().unwrap();
        let pipes = [out_r, err_r]
            .into_iter()
            .map(|fd| tokio::net::unix::pipe::Receiver::from_owned_fd(fd).unwrap())
            .collect();
        let pump = tokio::spawn(pump(pipes, sink.clone()));
        const LINES: usize = 40_000;
        let (half_tx, half_rx) = std::sync::mpsc::channel();
        let (closed_tx, closed_rx) = std::sync::mpsc::channel();
        let flood = std::thread::spawn(move || {
            let mut w = File::from(out_w);
            let text: String = (0..LINES)
                .map(|i| format!("out {i:06} {}\n", "x".repeat(88)))
                .collect();
            let pieces: Vec<&[u8]> = text.as_bytes().chunks(1000).collect();
            let (first, second) = pieces.split_at(pieces.len() / 2);
            for piece in first {
                w.write_all(piece).unwrap();
            }
            half_tx.send(()).unwrap();
            closed_rx.recv().unwrap();
            for piece in second {
                w.write_all(piece).unwrap();
            }
        });
        let few = std::thread::spawn(move || {
            let mut w = File::from(err_w);
            w.write_all(b"err one begins ").unwrap();
            half_rx.recv().unwrap();
            w.write_all(b"and ends\nerr two\nerr tail").unwrap();
            drop(w);
            closed_tx.send(()).unwrap();
        });
        // The writers finish only as the pump reads (a pipe holds 64 KiB).
        tokio::time::timeout(std::time::Duration::from_secs(60), pump)
            .await
            .expect("the pump did not end after both writers closed")
            .unwrap();
        flood.join().unwrap();
        few.join().unwrap();
        let mut text = String::new();
        for (_, path) in files(&dir.path().join("u")) {
            text.push_str(&fs::read_to_string(path).unwrap());
        }
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), LINES + 3);
        assert!(
            lines.contains(&"err one begins and ends"),
            "a line written in two parts"
        );
        assert!(lines.contains(&"err two"));
        assert!(
            lines.contains(&"err tail"),
            "the last line, without its newline"
        );
        let outs: Vec<&str> = lines
            .iter()
            .copied()
            .filter(|l| l.starts_with("out "))
            .collect();
        assert_eq!(outs.len(), LINES);
        for (i, l) in outs.iter().enumerate() {
            assert_eq!(
                *l,
                format!("out {i:06} {}", "x".repeat(88)),
                "line {i} in order and whole"
            );
        }
    }

    #[test]
    fn the_last_lines_of_a_text() {
        let t = "a\nb\nc\n";
        assert_eq!(&t[last_lines_start(t, 2)..], "b\nc\n");
        assert_eq!(&t[last_lines_start(t, 3)..], t);
        assert_eq!(&t[last_lines_start(t, 10)..], t);
        assert_eq!(&t[last_lines_start(t, 0)..], "");
        let partial = "a\nb\nhalf";
        assert_eq!(&partial[last_lines_start(partial, 1)..], "half");
        assert_eq!(&partial[last_lines_start(partial, 2)..], "b\nhalf");
    }

    #[test]
    fn rotation_keeps_offsets_and_disk_cap() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogConfig {
            max_size: 4096,
            keep: 3,
        };
        let mut sink = LogSink::open(dir.path().to_path_buf(), cfg).unwrap();
        let line = [b'x'; 1000];
        for _ in 0..20 {
            sink.write(&line).unwrap();
        }
        assert_eq!(sink.offset(), 20_000);
        let f = files(dir.path());
        assert_eq!(f.len(), 3, "keeps at most `keep` files");
        let total: u64 = f.iter().map(|(_, p)| fs::metadata(p).unwrap().len()).sum();
        assert!(total <= 3 * 4096, "disk use {total} over the cap");
        // The newest bytes are readable by offset; rotated-away ones are reported.
        let chunk = read_range(dir.path(), 0, None, 1 << 20).unwrap();
        assert!(chunk.truncated);
        assert_eq!(chunk.end, 20_000);
        assert_eq!(chunk.text.len() as u64, 20_000 - chunk.start);
        // Reopening continues the stream.
        drop(sink);
        let sink = LogSink::open(dir.path().to_path_buf(), cfg).unwrap();
        assert_eq!(sink.offset(), 20_000);
    }

    #[test]
    fn read_a_range_across_files() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogConfig {
            max_size: 4096,
            keep: 10,
        };
        let mut sink = LogSink::open(dir.path().to_path_buf(), cfg).unwrap();
        sink.write(&[b'a'; 4000]).unwrap();
        let start = sink.offset();
        sink.write(b"hello\n").unwrap();
        sink.write(&[b'b'; 3000]).unwrap();
        let end = sink.offset();
        let chunk = read_range(dir.path(), start, Some(start + 6), 1 << 20).unwrap();
        assert_eq!(chunk.text, "hello\n");
        let chunk = read_range(dir.path(), start, Some(end), 1 << 20).unwrap();
        assert_eq!(chunk.text.len(), 3006);
        assert!(!chunk.truncated);
    }
}
