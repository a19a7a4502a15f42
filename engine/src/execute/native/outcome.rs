//! Turning a finished program into the task's result or failure.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use rustix::process::Signal;
use serde_json::Value;

use super::supervise::Exit;

/// Largest part of a `casa*.log` scanned for SEVERE lines (its end).
const MAX_CASA_LOG_SCAN: u64 = 16 * 1024 * 1024;

/// The SEVERE message (three log lines, all from `MeasTable::dUTC`) CASA prints whenever the
/// system clock is > 180 days past the leap-second table's date; it says nothing about the
/// task (see docs/native-tasks.md).
const BENIGN_SEVERE: &[&str] = &["TAI_UTC", "MeasTable::dUTC"];

/// How the program ended, for people and for the failure details.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classified {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub signal_name: Option<&'static str>,
    pub core_dumped: bool,
    /// A short machine-readable cause: `error`, `oom`, `segfault`, `abort`, …
    pub cause: &'static str,
    /// What it means, in words.
    pub description: String,
}

pub fn signal_name(sig: i32) -> Option<&'static str> {
    Some(match Signal::from_named_raw(sig)? {
        Signal::HUP => "SIGHUP",
        Signal::INT => "SIGINT",
        Signal::QUIT => "SIGQUIT",
        Signal::ILL => "SIGILL",
        Signal::TRAP => "SIGTRAP",
        Signal::ABORT => "SIGABRT",
        Signal::BUS => "SIGBUS",
        Signal::FPE => "SIGFPE",
        Signal::KILL => "SIGKILL",
        Signal::USR1 => "SIGUSR1",
        Signal::SEGV => "SIGSEGV",
        Signal::USR2 => "SIGUSR2",
        Signal::PIPE => "SIGPIPE",
        Signal::ALARM => "SIGALRM",
        Signal::TERM => "SIGTERM",
        Signal::XCPU => "SIGXCPU",
        Signal::XFSZ => "SIGXFSZ",
        Signal::SYS => "SIGSYS",
        _ => return None,
    })
}

/// The cause and meaning of death by `sig`.
fn signal_cause(sig: i32) -> (&'static str, &'static str) {
    match Signal::from_named_raw(sig) {
        Some(Signal::KILL) => (
            "oom",
            "likely OOM-killed (SIGKILL is what the kernel's OOM killer sends; check `dmesg`), or killed by an operator",
        ),
        Some(Signal::SEGV) => ("segfault", "segmentation fault: the program crashed"),
        Some(Signal::BUS) => ("crash", "bus error: the program crashed (often a truncated memory-mapped file)"),
        Some(Signal::ILL | Signal::FPE | Signal::TRAP | Signal::SYS) => ("crash", "the program crashed"),
        Some(Signal::ABORT) => (
            "abort",
            "aborted: an assertion failed or a C++ exception was not caught (CASA: often an AipsError)",
        ),
        Some(Signal::XCPU) => ("cpu_limit", "the CPU time limit (cpu_seconds) was exceeded"),
        Some(Signal::XFSZ) => ("file_size_limit", "the file size limit (file_size_mb) was exceeded"),
        Some(Signal::TERM | Signal::INT | Signal::HUP | Signal::QUIT) => {
            ("terminated", "terminated by a signal from outside the host")
        }
        Some(Signal::PIPE) => ("broken_pipe", "wrote to a closed pipe"),
        _ => ("signal", "killed by a signal"),
    }
}

/// Exit codes 2–10 as the DSA-110 pipeline's `ErrorCode` convention defines them.
fn exit_code_cause(code: i32) -> (&'static str, String) {
    let dsa = |c: &'static str, what: &str| {
        (
            c,
            format!("{what} (exit code {code} in the DSA-110 convention)"),
        )
    };
    match code {
        1 => ("error", "the program reported an error".into()),
        2 => dsa("io", "I/O error"),
        3 => dsa("oom", "out of memory"),
        4 => dsa("timeout", "timed out"),
        5 => dsa("validation", "validation failed"),
        6 => dsa("resource_limit", "a resource limit was hit"),
        7 => dsa("calibration", "calibration failed"),
        8 => dsa("conversion", "conversion failed"),
        9 => dsa("database", "database error"),
        10 => dsa("subprocess_error", "a subprocess of the program failed"),
        124 => (
            "timeout",
            "timed out (exit code 124 is GNU timeout's)".into(),
        ),
        126 => (
            "not_executable",
            "a command could not be executed (exit code 126)".into(),
        ),
        127 => (
            "not_found",
            "a command was not found (exit code 127)".into(),
        ),
        c if (129..=128 + 64).contains(&c) => {
            let sig = c - 128;
            let (cause, what) = signal_cause(sig);
            let name = signal_name(sig)
                .map(str::to_string)
                .unwrap_or_else(|| format!("signal {sig}"));
            (
                cause,
                format!("{what} (exit code {c}: a shell's way of reporting death by {name})"),
            )
        }
        _ => ("error", "the program reported an error".into()),
    }
}

pub fn classify(exit: Exit) -> Classified {
    match exit {
        Exit::Code(code) => {
            let (cause, description) = if code == 0 {
                ("success", "exited 0".to_string())
            } else {
                exit_code_cause(code)
            };
            Classified {
                exit_code: Some(code),
                signal: None,
                signal_name: None,
                core_dumped: false,
                cause,
                description,
            }
        }
        Exit::Signal {
            signal,
            core_dumped,
        } => {
            let (cause, what) = signal_cause(signal);
            Classified {
                exit_code: None,
                signal: Some(signal),
                signal_name: signal_name(signal),
                core_dumped,
                cause,
                description: what.to_string(),
            }
        }
        Exit::Unknown => Classified {
            exit_code: None,
            signal: None,
            signal_name: None,
            core_dumped: false,
            cause: "unknown",
            description: "the exit status could not be read".into(),
        },
    }
}

/// Why a result file could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResultError {
    Missing,
    TooLarge { size: u64, max: u64 },
    Unreadable(String),
    Invalid(String),
}

impl std::fmt::Display for ResultError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ResultError::Missing => write!(f, "no result.json in the work directory"),
            ResultError::TooLarge { size, max } => {
                write!(
                    f,
                    "result.json is {size} bytes, more than max_result_bytes ({max})"
                )
            }
            ResultError::Unreadable(e) => write!(f, "result.json cannot be read: {e}"),
            ResultError::Invalid(e) => write!(f, "result.json is not valid JSON: {e}"),
        }
    }
}

/// Opens a file of the work directory for reading: not through a symbolic link, and without
/// blocking if it is a FIFO.
fn open_no_follow(path: &Path) -> std::io::Result<std::fs::File> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    Ok(rustix::fs::open(path, flags, Mode::empty())?.into())
}

pub fn read_result(path: &Path, max_bytes: u64) -> Result<Value, ResultError> {
    // The program owns the work directory: never follow a symbolic link it put there (it
    // would make any file the host can read the task's result), and never block on a FIFO.
    let file = match open_no_follow(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(ResultError::Missing),
        Err(e) if e.raw_os_error() == Some(Errno::LOOP.raw_os_error()) => {
            return Err(ResultError::Unreadable(
                "it is a symbolic link, which is not followed".into(),
            ))
        }
        Err(e) => return Err(ResultError::Unreadable(e.to_string())),
    };
    let meta = file
        .metadata()
        .map_err(|e| ResultError::Unreadable(e.to_string()))?;
    if !meta.is_file() {
        return Err(ResultError::Unreadable("not a regular file".into()));
    }
    if meta.len() > max_bytes {
        return Err(ResultError::TooLarge {
            size: meta.len(),
            max: max_bytes,
        });
    }
    let mut text = Vec::with_capacity(meta.len() as usize);
    file.take(max_bytes + 1)
        .read_to_end(&mut text)
        .map_err(|e| ResultError::Unreadable(e.to_string()))?;
    if text.len() as u64 > max_bytes {
        return Err(ResultError::TooLarge {
            size: text.len() as u64,
            max: max_bytes,
        });
    }
    serde_json::from_slice(&text).map_err(|e| ResultError::Invalid(e.to_string()))
}

/// Bounds a string to `max` bytes, keeping its end.
pub fn keep_end(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &s[start..])
}

/// SEVERE lines of every `casa*.log` in `dir` (newest last), without the benign leap-second
/// warning, bounded to about `max_bytes` (the last lines are kept).
pub fn casa_severe(dir: &Path, max_bytes: usize) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return vec![];
    };
    let mut logs: Vec<_> = entries
        .flatten()
        .filter(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n.starts_with("casa")
                && n.ends_with(".log")
                && e.file_type().map(|t| t.is_file()).unwrap_or(false)
        })
        .map(|e| {
            let modified = e.metadata().and_then(|m| m.modified()).ok();
            (modified, e.path())
        })
        .collect();
    logs.sort();
    let mut lines = Vec::new();
    for (_, path) in logs {
        let Ok(mut f) = open_no_follow(&path) else {
            continue;
        };
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        if len > MAX_CASA_LOG_SCAN {
            let _ = f.seek(SeekFrom::Start(len - MAX_CASA_LOG_SCAN));
        }
        let mut buf = Vec::new();
        if f.take(MAX_CASA_LOG_SCAN).read_to_end(&mut buf).is_err() {
            continue;
        }
        for line in String::from_utf8_lossy(&buf).lines() {
            if line.contains("SEVERE") && !BENIGN_SEVERE.iter().any(|b| line.contains(b)) {
                lines.push(keep_end(line.trim_end(), 1024));
            }
        }
    }
    // Keep the last lines that fit.
    let mut total = 0;
    let mut keep = 0;
    for l in lines.iter().rev() {
        if total + l.len() > max_bytes && keep > 0 {
            break;
        }
        total += l.len();
        keep += 1;
    }
    lines.split_off(lines.len() - keep)
}

/// Known signs of trouble in the program's output, as the DSA-110 error detector looks for.
pub fn hints(texts: &[&str]) -> Vec<&'static str> {
    const PATTERNS: &[(&str, &str)] = &[
        ("Segmentation fault", "segfault"),
        ("segfault", "segfault"),
        ("Out of memory", "out_of_memory"),
        ("MemoryError", "out_of_memory"),
        ("std::bad_alloc", "out_of_memory"),
        ("Aborted", "abort"),
        ("AipsError", "casa_aips_error"),
        ("Traceback (most recent call last)", "python_traceback"),
        ("FATAL", "fatal"),
    ];
    let mut out = Vec::new();
    for (pat, hint) in PATTERNS {
        if texts.iter().any(|t| t.contains(pat)) && !out.contains(hint) {
            out.push(*hint);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exits_are_classified() {
        let c = classify(Exit::Signal {
            signal: Signal::KILL.as_raw(),
            core_dumped: false,
        });
        assert_eq!((c.cause, c.signal_name), ("oom", Some("SIGKILL")));
        assert!(c.description.contains("likely OOM-killed"));
        let c = classify(Exit::Signal {
            signal: Signal::SEGV.as_raw(),
            core_dumped: true,
        });
        assert_eq!(c.cause, "segfault");
        assert_eq!(
            classify(Exit::Signal {
                signal: Signal::ABORT.as_raw(),
                core_dumped: false
            })
            .cause,
            "abort"
        );
        assert_eq!(classify(Exit::Code(139)).cause, "segfault");
        assert!(classify(Exit::Code(137)).description.contains("SIGKILL"));
        assert_eq!(classify(Exit::Code(3)).cause, "oom");
        assert_eq!(classify(Exit::Code(1)).cause, "error");
        assert_eq!(classify(Exit::Code(42)).exit_code, Some(42));
    }

    #[test]
    fn casa_severe_lines_are_collected_without_the_benign_one() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        std::fs::write(
            dir.join("casa-20251017-101010.log"),
            "2025-10-17 INFO x\n2025-10-17 SEVERE MeasTable::dUTC Leap second table TAI_UTC seems out-of-date\n2025-10-17 SEVERE gaincal::::casa Task gaincal raised an exception\n",
        )
        .unwrap();
        std::fs::write(dir.join("other.log"), "SEVERE not casa\n").unwrap();
        let s = casa_severe(dir, 4096);
        assert_eq!(s.len(), 1, "{s:?}");
        assert!(s[0].contains("Task gaincal raised"));
    }

    #[test]
    fn keep_end_respects_char_boundaries() {
        assert_eq!(keep_end("abc", 5), "abc");
        assert_eq!(keep_end("ééé", 3), "…é");
    }
}
