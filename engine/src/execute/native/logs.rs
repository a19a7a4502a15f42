//! Draining a child's stdout and stderr: each on its own thread (so neither pipe can fill up
//! and block the program), each line streamed into tracing within the task's span (rate
//! limited), the bytes saved to a capped file in the work directory, and only a bounded tail
//! kept in memory, whatever the program prints.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::path::PathBuf;
use std::time::Instant;

use tokio::sync::oneshot;
use tracing::{info, warn, Span};

/// Longest line streamed into tracing; longer lines are cut (the file keeps them whole).
const MAX_TRACED_LINE: usize = 2048;
/// Lines traced at once before rate limiting applies.
const TRACE_BURST: f64 = 500.0;
/// Lines per second traced after the burst.
const TRACE_RATE: f64 = 100.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// What a drained stream produced.
#[derive(Debug, Clone, Default)]
pub struct Drained {
    /// Bytes the program wrote.
    pub total_bytes: u64,
    /// Bytes saved in the log file.
    pub saved_bytes: u64,
    /// The file was capped at `max_file_bytes`.
    pub truncated: bool,
    /// The last bytes written (at most the tail size).
    pub tail: Vec<u8>,
    /// Bytes before the tail were dropped.
    pub tail_cut: bool,
    /// Lines not streamed into tracing because of the rate limit.
    pub suppressed_lines: u64,
}

impl Drained {
    /// The tail as text, starting at a line boundary when its beginning was cut.
    pub fn tail_text(&self) -> String {
        let mut bytes = &self.tail[..];
        if self.tail_cut {
            if let Some(i) = bytes.iter().position(|b| *b == b'\n') {
                if i + 1 < bytes.len() {
                    bytes = &bytes[i + 1..];
                }
            }
        }
        let text = String::from_utf8_lossy(bytes);
        if self.tail_cut {
            format!("…{text}")
        } else {
            text.into_owned()
        }
    }
}

/// A fixed-size tail of a byte stream.
struct Ring {
    cap: usize,
    buf: VecDeque<u8>,
    cut: bool,
}

impl Ring {
    fn new(cap: usize) -> Ring {
        Ring {
            cap,
            buf: VecDeque::with_capacity(cap),
            cut: false,
        }
    }

    fn push(&mut self, data: &[u8]) {
        if self.cap == 0 {
            self.cut |= !data.is_empty();
            return;
        }
        let data = if data.len() > self.cap {
            self.cut = true;
            &data[data.len() - self.cap..]
        } else {
            data
        };
        let excess = (self.buf.len() + data.len()).saturating_sub(self.cap);
        if excess > 0 {
            self.cut = true;
            self.buf.drain(..excess);
        }
        self.buf.extend(data);
    }
}

/// A token bucket for traced lines.
struct Limiter {
    tokens: f64,
    last: Instant,
    suppressed: u64,
    suppressed_total: u64,
}

impl Limiter {
    fn refill(&mut self) {
        let now = Instant::now();
        let dt = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * TRACE_RATE).min(TRACE_BURST);
    }

    fn take(&mut self) -> bool {
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            self.suppressed += 1;
            self.suppressed_total += 1;
            false
        }
    }
}

struct Drainer {
    stream: Stream,
    file: Option<File>,
    path: PathBuf,
    max_file_bytes: u64,
    saved: u64,
    truncated: bool,
    total: u64,
    ring: Ring,
    line: Vec<u8>,
    /// The current line is longer than MAX_TRACED_LINE and was already traced (cut).
    line_overflow: bool,
    limiter: Limiter,
}

impl Drainer {
    fn emit(&mut self, line: &[u8]) {
        if !self.limiter.take() {
            return;
        }
        if self.limiter.suppressed > 0 {
            let n = std::mem::take(&mut self.limiter.suppressed);
            warn!(
                stream = self.stream.name(),
                suppressed = n,
                "program output rate-limited in the log (the file keeps it)"
            );
        }
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches('\r');
        match self.stream {
            Stream::Stdout => info!(stream = "stdout", "{text}"),
            Stream::Stderr => warn!(stream = "stderr", "{text}"),
        }
    }

    fn save(&mut self, data: &[u8]) {
        let Some(f) = self.file.as_mut() else { return };
        if self.truncated {
            return;
        }
        let room = self.max_file_bytes.saturating_sub(self.saved);
        let n = (data.len() as u64).min(room) as usize;
        let ok = f.write_all(&data[..n]).is_ok();
        self.saved += n as u64;
        if !ok {
            warn!(stream = self.stream.name(), path = %self.path.display(), "cannot write the log file; no longer saving this stream");
            self.file = None;
            return;
        }
        if n < data.len() {
            self.truncated = true;
            let note = format!(
                "\n[absurd-host: {} truncated at {} bytes (max_log_bytes); further output was discarded]\n",
                self.stream.name(),
                self.max_file_bytes
            );
            let _ = f.write_all(note.as_bytes());
        }
    }

    fn feed(&mut self, data: &[u8]) {
        self.total += data.len() as u64;
        self.save(data);
        self.ring.push(data);
        self.limiter.refill();
        let mut rest = data;
        while let Some(i) = rest.iter().position(|b| *b == b'\n') {
            let piece = &rest[..i];
            rest = &rest[i + 1..];
            if self.line_overflow {
                self.line_overflow = false;
                self.line.clear();
                continue;
            }
            if self.line.is_empty() {
                let cut = &piece[..piece.len().min(MAX_TRACED_LINE)];
                self.emit(cut);
            } else {
                let room = MAX_TRACED_LINE.saturating_sub(self.line.len());
                self.line.extend_from_slice(&piece[..piece.len().min(room)]);
                let line = std::mem::take(&mut self.line);
                self.emit(&line);
                self.line = line;
                self.line.clear();
            }
        }
        if !rest.is_empty() && !self.line_overflow {
            let room = MAX_TRACED_LINE.saturating_sub(self.line.len());
            self.line.extend_from_slice(&rest[..rest.len().min(room)]);
            if self.line.len() >= MAX_TRACED_LINE {
                let line = std::mem::take(&mut self.line);
                self.emit(&line);
                self.line_overflow = true;
            }
        }
    }

    fn finish(mut self) -> Drained {
        if !self.line.is_empty() && !self.line_overflow {
            let line = std::mem::take(&mut self.line);
            self.emit(&line);
        }
        if self.limiter.suppressed > 0 {
            warn!(
                stream = self.stream.name(),
                suppressed = self.limiter.suppressed,
                "program output rate-limited in the log (the file keeps it)"
            );
        }
        if let Some(f) = self.file.as_mut() {
            let _ = f.flush();
        }
        Drained {
            total_bytes: self.total,
            saved_bytes: self.saved,
            truncated: self.truncated,
            tail: self.ring.buf.into_iter().collect(),
            tail_cut: self.ring.cut,
            suppressed_lines: self.limiter.suppressed_total,
        }
    }
}

/// Drains `reader` on a new thread until end of file (every writer of the pipe has exited).
/// Creates a log file in the work directory. The program shares that directory, so the file
/// must be new and is never reached through a symbolic link it planted (`O_EXCL`, `O_NOFOLLOW`).
fn open_log(path: &std::path::Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

pub fn drain(
    reader: impl Read + Send + 'static,
    stream: Stream,
    path: PathBuf,
    max_file_bytes: u64,
    tail_bytes: usize,
    span: Span,
) -> std::io::Result<oneshot::Receiver<Drained>> {
    let (tx, rx) = oneshot::channel();
    std::thread::Builder::new()
        .name(format!("native-{}", stream.name()))
        .spawn(move || {
            let _entered = span.enter();
            let file = match open_log(&path) {
                Ok(f) => Some(f),
                Err(e) => {
                    warn!(path = %path.display(), error = %e, "cannot create the log file");
                    None
                }
            };
            let mut d = Drainer {
                stream,
                file,
                path,
                max_file_bytes,
                saved: 0,
                truncated: false,
                total: 0,
                ring: Ring::new(tail_bytes),
                line: Vec::new(),
                line_overflow: false,
                limiter: Limiter {
                    tokens: TRACE_BURST,
                    last: Instant::now(),
                    suppressed: 0,
                    suppressed_total: 0,
                },
            };
            let mut reader = reader;
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match reader.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => d.feed(&buf[..n]),
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) => {
                        warn!(stream = stream.name(), error = %e, "reading the program's output failed");
                        break;
                    }
                }
            }
            let _ = tx.send(d.finish());
        })?;
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_keeps_the_last_bytes() {
        let mut r = Ring::new(5);
        r.push(b"abc");
        assert!(!r.cut);
        r.push(b"defg");
        assert_eq!(r.buf.iter().copied().collect::<Vec<_>>(), b"cdefg");
        assert!(r.cut);
        r.push(b"0123456789");
        assert_eq!(r.buf.iter().copied().collect::<Vec<_>>(), b"56789");
    }

    #[test]
    fn tail_text_starts_at_a_line() {
        let d = Drained {
            tail: b"ial line\nsecond\nthird\n".to_vec(),
            tail_cut: true,
            ..Default::default()
        };
        assert_eq!(d.tail_text(), "…second\nthird\n");
    }

    #[test]
    fn files_are_capped_and_say_so() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let data: Vec<u8> = b"0123456789\n".repeat(1000);
        let rx = drain(
            std::io::Cursor::new(data),
            Stream::Stdout,
            dir.join("stdout.log"),
            100,
            16,
            Span::none(),
        )
        .unwrap();
        let d = rx.blocking_recv().unwrap();
        assert_eq!(d.total_bytes, 11_000);
        assert_eq!(d.saved_bytes, 100);
        assert!(d.truncated);
        assert_eq!(d.tail.len(), 16);
        let text = std::fs::read_to_string(dir.join("stdout.log")).unwrap();
        assert!(text.contains("truncated at 100 bytes"), "{text}");
    }

    #[test]
    fn a_planted_symlink_is_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let target = dir.join("target.txt");
        std::fs::write(&target, "untouched").unwrap();
        std::os::unix::fs::symlink(&target, dir.join("stdout.log")).unwrap();
        let rx = drain(
            std::io::Cursor::new(b"written through the link?\n".to_vec()),
            Stream::Stdout,
            dir.join("stdout.log"),
            1000,
            64,
            Span::none(),
        )
        .unwrap();
        let d = rx.blocking_recv().unwrap();
        // Drained (the tail is kept), but nothing saved through the link.
        assert_eq!(d.total_bytes, 26);
        assert_eq!(d.saved_bytes, 0);
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "untouched");
    }
}
