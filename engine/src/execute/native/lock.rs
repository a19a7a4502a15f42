//! The per-Measurement-Set calibration lock shared with the Python pipeline:
//! an advisory `flock` on `.{ms_stem}.cal_lock` next to the MS.
//!
//! The DSA-110 calibration stage takes `Path(ms).parent / f".{ms_stem}.cal_lock"` around
//! solve and apply; `examples/casa/calibrate.py` takes the same lock the same way, and Rust
//! code that touches an MS can take it with [`CalLock::acquire`], so no two workers (Rust or
//! Python, on one host) calibrate the same MS at once. `flock` locks die with their holder, so
//! a killed worker never leaves a stale lock behind (the file itself stays, empty, harmlessly).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// `<dir of the MS>/.<MS name without its extension>.cal_lock`, like Python's
/// `Path(ms).parent / f".{Path(ms).stem}.cal_lock"`.
pub fn cal_lock_path(ms: &Path) -> PathBuf {
    let stem = ms
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    ms.parent()
        .unwrap_or_else(|| Path::new("."))
        .join(format!(".{stem}.cal_lock"))
}

/// A held calibration lock; released when dropped.
#[derive(Debug)]
pub struct CalLock {
    file: File,
    path: PathBuf,
}

impl CalLock {
    /// Takes the lock of `ms`, waiting up to `timeout` (blocking: call it from a blocking
    /// context). Fails with `ErrorKind::TimedOut` if another holder keeps it that long.
    pub fn acquire(ms: &Path, timeout: Duration) -> io::Result<CalLock> {
        let path = cal_lock_path(ms);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)?;
        let deadline = Instant::now() + timeout;
        loop {
            // SAFETY: flock on our own open file.
            let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if r == 0 {
                return Ok(CalLock { file, path });
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EWOULDBLOCK) | Some(libc::EINTR) => {}
                _ => return Err(e),
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "cannot acquire calibration lock {} within {:?}: another worker is calibrating this MS",
                        path.display(),
                        timeout
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for CalLock {
    fn drop(&mut self) {
        // SAFETY: unlocking our own open file (closing it would release it too).
        unsafe {
            libc::flock(self.file.as_raw_fd(), libc::LOCK_UN);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_path_matches_the_python_convention() {
        assert_eq!(
            cal_lock_path(Path::new("/stage/ms/2025-10-17T14:40:09.ms")),
            PathBuf::from("/stage/ms/.2025-10-17T14:40:09.cal_lock")
        );
        assert_eq!(
            cal_lock_path(Path::new("/d/x.ms/")),
            PathBuf::from("/d/.x.cal_lock")
        );
    }

    #[test]
    fn a_second_holder_waits_then_times_out() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let ms = dir.join("sim.ms");
        let first = CalLock::acquire(&ms, Duration::from_secs(1)).unwrap();
        let e = CalLock::acquire(&ms, Duration::from_millis(300)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        drop(first);
        let again = CalLock::acquire(&ms, Duration::from_secs(1)).unwrap();
        assert!(again.path().ends_with(".sim.cal_lock"));
        drop(again);
    }
}
