//! The per-run reaper: a small process between the host and the program that outlives
//! neither of them, and lets nothing the program started outlive the run.
//!
//! ```text
//! host (supervisor thread) ── fork ──> reaper (PR_SET_CHILD_SUBREAPER) ── fork+exec ──> program
//! ```
//!
//! * The reaper is a *child subreaper*: a descendant of the program whose parent dies (a
//!   `setsid` daemon, a double fork) is re-parented to the reaper instead of to init, so every
//!   process the run started stays within reach, whatever process group or session it is in.
//!   The attribute is per process, which is why it lives in a process of its own per run and
//!   not in the worker (whose orphans would mix every run's).
//! * The reaper keeps the exited program as an unreaped zombie until the host releases the
//!   run, so the program's pid, which is its process group id, is never reused while the host
//!   may still signal that group.
//! * The host talks to it over two pipes. Status (reaper to host): fixed 12-byte messages,
//!   "started (pid)", "could not start (errno)", "exited (code, status)". Control (host to
//!   reaper): one byte each, `T` (SIGTERM every process of the run), `K` (SIGKILL them), `R`
//!   (the run is over: kill whatever is left, reap everything, exit). End of file on the
//!   control pipe means the host died, however it died: the reaper SIGKILLs everything and
//!   exits. So it also replaces a separate watchdog.
//! * The reaper is a fork of a multi-threaded process that does not exec: it makes
//!   async-signal-safe system calls only and never allocates. The program's argv, environment
//!   and paths are prepared by the host before the fork. Its calls go through rustix (plain
//!   system calls, paths given as `&CStr` so nothing is allocated), and through `libc` only
//!   where rustix has no safe call: `fork`, `execve`, `_exit`, signal dispositions and masks,
//!   `signalfd`, `close_range`, and a `waitid` that tells which child it found.
//! * Processes of the run are found in `/proc`: the reaper's children (`ppid` = the reaper; the
//!   `/proc/<pid>/task/<tid>/children` file is not in every kernel) and the program's group.
//!   Killing works from the top: a SIGKILLed child's own children are re-parented to the
//!   reaper and found by the next pass, until the reaper has no live child left.

use std::ffi::{c_char, CStr, CString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::fs::{Mode, OFlags, RawDir};
use rustix::io::Errno;
use rustix::process::{Pid, Resource, Rlimit, Signal, WaitOptions};

use super::config::Limits;

const MSG_STARTED: i32 = 1;
const MSG_EXEC_FAILED: i32 = 2;
const MSG_EXITED: i32 = 3;

/// How long the reaper goes on killing processes that survive SIGKILL (uninterruptible
/// sleep) before it gives up on them and exits.
const FINAL_KILL_LIMIT: Duration = Duration::from_secs(60);

/// What the program is: everything the reaper needs, prepared before the fork.
pub struct Prepared {
    program: CString,
    // Kept alive for the pointers below.
    _argv: Vec<CString>,
    _envp: Vec<CString>,
    argv_ptrs: Vec<*const c_char>,
    envp_ptrs: Vec<*const c_char>,
    cwd: CString,
    limits: Limits,
}

// SAFETY: the raw pointers point into the CStrings owned by the same struct.
unsafe impl Send for Prepared {}

fn cstring(what: &str, bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what} contains a NUL byte"),
        )
    })
}

impl Prepared {
    pub fn new(
        program: &std::path::Path,
        args: &[std::ffi::OsString],
        env: &[(std::ffi::OsString, std::ffi::OsString)],
        cwd: &std::path::Path,
        limits: Limits,
    ) -> io::Result<Prepared> {
        let program = cstring("the program path", program.as_os_str().as_bytes())?;
        let mut argv = vec![program.clone()];
        for (i, a) in args.iter().enumerate() {
            argv.push(cstring(&format!("argument {i}"), a.as_bytes())?);
        }
        let mut envp = Vec::with_capacity(env.len());
        for (k, v) in env {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            envp.push(cstring(
                &format!("environment variable {}", k.to_string_lossy()),
                &kv,
            )?);
        }
        let mut argv_ptrs: Vec<_> = argv.iter().map(|c| c.as_ptr()).collect();
        argv_ptrs.push(std::ptr::null());
        let mut envp_ptrs: Vec<_> = envp.iter().map(|c| c.as_ptr()).collect();
        envp_ptrs.push(std::ptr::null());
        Ok(Prepared {
            program,
            _argv: argv,
            _envp: envp,
            argv_ptrs,
            envp_ptrs,
            cwd: cstring("the work directory", cwd.as_os_str().as_bytes())?,
            limits,
        })
    }
}

/// A running reaper and its program.
pub struct Reaper {
    /// The reaper's pid (a child of the host).
    pub pid: i32,
    /// The program's pid, also its process group id.
    pub program_pid: i32,
    pub stdout: File,
    pub stderr: File,
    pub control: Control,
    pub status: Status,
}

/// The host's end of the control pipe.
pub struct Control(Option<File>);

/// The host's end of the status pipe.
pub struct Status(File);

/// A pipe, both ends close-on-exec and numbered 3 or above (so that `dup2` onto 0–2 in the
/// program never clobbers another of these descriptors).
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    // std's pipes are close-on-exec at both ends.
    let (r, w) = io::pipe()?;
    Ok((high(r.into())?, high(w.into())?))
}

fn high(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() >= 3 {
        return Ok(fd);
    }
    Ok(rustix::io::fcntl_dupfd_cloexec(&fd, 3)?)
}

fn read_msg(f: &mut File) -> Option<[i32; 3]> {
    let mut buf = [0u8; 12];
    f.read_exact(&mut buf).ok()?;
    let at = |i: usize| i32::from_ne_bytes(buf[i * 4..i * 4 + 4].try_into().unwrap_or([0; 4]));
    Some([at(0), at(1), at(2)])
}

/// Waits for `pid`, a child of the host.
pub fn reap(pid: i32) {
    let Some(pid) = Pid::from_raw(pid.max(0)) else {
        return;
    };
    let _ = rustix::io::retry_on_intr(|| rustix::process::waitpid(Some(pid), WaitOptions::empty()));
}

impl Reaper {
    /// Forks the reaper, which starts the program. Returns once the program has been
    /// exec'd (or could not be: the error is the program's `errno`).
    pub fn start(p: &Prepared) -> io::Result<Reaper> {
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let (ctl_r, ctl_w) = pipe()?;
        let (st_r, st_w) = pipe()?;
        let (exec_r, exec_w) = pipe()?;
        let devnull = high(OwnedFd::from(
            std::fs::OpenOptions::new().read(true).open("/dev/null")?,
        ))?;
        let fds = ChildFds {
            out_w: out_w.as_fd(),
            err_w: err_w.as_fd(),
            ctl_r: ctl_r.as_fd(),
            ctl_w: ctl_w.as_fd(),
            st_w: st_w.as_fd(),
            exec_r: exec_r.as_fd(),
            exec_w: exec_w.as_fd(),
            devnull: devnull.as_fd(),
        };
        // libc: rustix has no fork outside its runtime module (for libc implementations).
        // SAFETY: after fork the child runs only async-signal-safe code (reaper_main).
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        if pid == 0 {
            // SAFETY: in the child just forked; never returns.
            unsafe { reaper_main(p, fds) }
        }
        // The child's ends, closed here so that end-of-file means what it should.
        drop((out_w, err_w, ctl_r, st_w, exec_r, exec_w, devnull));
        let mut status = File::from(st_r);
        let mut control = File::from(ctl_w);
        match read_msg(&mut status) {
            Some([MSG_STARTED, program_pid, _]) if program_pid > 1 => Ok(Reaper {
                pid,
                program_pid,
                stdout: File::from(out_r),
                stderr: File::from(err_r),
                control: Control(Some(control)),
                status: Status(status),
            }),
            Some([MSG_EXEC_FAILED, errno, _]) => {
                let _ = control.write_all(b"R");
                reap(pid);
                Err(io::Error::from_raw_os_error(errno))
            }
            other => {
                drop(control);
                reap(pid);
                Err(io::Error::other(format!(
                    "the run's reaper process ended before starting the program ({other:?})"
                )))
            }
        }
    }
}

impl Status {
    /// Blocks until the program exits: its `si_code` and `si_status`. `None` if the reaper
    /// died first (it should not: it ignores every signal but SIGKILL).
    pub fn wait_exit(&mut self) -> Option<(i32, i32)> {
        match read_msg(&mut self.0) {
            Some([MSG_EXITED, code, status]) => Some((code, status)),
            _ => None,
        }
    }
}

impl Control {
    /// Asks the reaper to signal every process of the run: SIGTERM or SIGKILL.
    pub fn signal(&mut self, sig: Signal) {
        let command = if sig == Signal::KILL { b'K' } else { b'T' };
        if let Some(c) = self.0.as_mut() {
            let _ = c.write_all(&[command]);
        }
    }

    /// The run is over: the reaper kills whatever is left, reaps everything and exits (the
    /// caller reaps the reaper).
    pub fn release(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.write_all(b"R");
        }
    }
}

#[derive(Clone, Copy)]
struct ChildFds<'a> {
    out_w: BorrowedFd<'a>,
    err_w: BorrowedFd<'a>,
    ctl_r: BorrowedFd<'a>,
    ctl_w: BorrowedFd<'a>,
    st_w: BorrowedFd<'a>,
    exec_r: BorrowedFd<'a>,
    exec_w: BorrowedFd<'a>,
    devnull: BorrowedFd<'a>,
}

/// The `errno` a failed libc call left (read without allocating).
fn errno() -> Errno {
    Errno::from_raw_os_error(io::Error::last_os_error().raw_os_error().unwrap_or(0))
}

/// Ends the forked process at once.
fn exit_now(code: i32) -> ! {
    // libc: neither std nor rustix (outside its runtime module) has `_exit`, and std's `exit`
    // would run the host's atexit handlers in the fork.
    // SAFETY: `_exit` only ends the calling process.
    unsafe { libc::_exit(code) }
}

fn write_msg(fd: BorrowedFd<'_>, msg: [i32; 3]) {
    let mut buf = [0u8; 12];
    for (i, v) in msg.iter().enumerate() {
        buf[i * 4..i * 4 + 4].copy_from_slice(&v.to_ne_bytes());
    }
    let mut off = 0;
    while off < buf.len() {
        match rustix::io::write(fd, &buf[off..]) {
            Err(Errno::INTR) => continue,
            Ok(n) if n > 0 => off += n,
            _ => return,
        }
    }
}

fn set_limit(resource: Resource, soft: u64, hard: u64) -> Result<(), Errno> {
    let cur = rustix::process::getrlimit(resource);
    // `None` is RLIM_INFINITY.
    let hard = hard.min(cur.maximum.unwrap_or(u64::MAX));
    let new = Rlimit {
        current: Some(soft.min(hard)),
        maximum: Some(hard),
    };
    rustix::process::setrlimit(resource, new)
}

/// Reports `e` to the reaper (the program could not be started) and exits.
fn fail(fd: BorrowedFd<'_>, e: Errno) -> ! {
    let _ = rustix::io::write(fd, &e.raw_os_error().to_ne_bytes());
    exit_now(127)
}

/// The program's side of the fork: set up, then exec. On failure, the errno goes to the
/// reaper through the close-on-exec pipe.
///
/// # Safety
///
/// Only in a child just forked by the reaper, which must not return.
unsafe fn program_main(p: &Prepared, fds: ChildFds<'_>, reaper: Pid) -> ! {
    if let Err(e) = rustix::process::setpgid(None, None) {
        fail(fds.exec_w, e);
    }
    if let Err(e) = rustix::process::set_parent_process_death_signal(Some(Signal::KILL)) {
        fail(fds.exec_w, e);
    }
    // The reaper may have died between fork and prctl: then nobody would ever signal us.
    if rustix::process::getppid() != Some(reaper) {
        fail(fds.exec_w, Errno::SRCH);
    }
    if let Err(e) = rustix::stdio::dup2_stdin(fds.devnull)
        .and_then(|()| rustix::stdio::dup2_stdout(fds.out_w))
        .and_then(|()| rustix::stdio::dup2_stderr(fds.err_w))
    {
        fail(fds.exec_w, e);
    }
    // Default dispositions and an empty mask: the host ignores SIGPIPE, and ignored signals
    // would survive exec.
    // libc: rustix sets dispositions and masks only in its runtime module (for libc
    // implementations).
    // SAFETY: SIG_DFL installs no handler; the mask is a local, initialised by sigemptyset.
    unsafe {
        for sig in 1..=64 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
    }
    let l = p.limits;
    let megabytes = |mb: u64| {
        let b = mb.saturating_mul(1024 * 1024);
        (b, b)
    };
    let limits = [
        (
            Resource::Cpu,
            l.cpu_seconds.map(|s| (s, s.saturating_add(5))),
        ),
        (Resource::Nofile, l.open_files.map(|n| (n, n))),
        (Resource::As, l.memory_mb.map(megabytes)),
        (Resource::Nproc, l.processes.map(|n| (n, n))),
        (Resource::Fsize, l.file_size_mb.map(megabytes)),
    ];
    for (resource, limit) in limits {
        if let Some((soft, hard)) = limit {
            if let Err(e) = set_limit(resource, soft, hard) {
                fail(fds.exec_w, e);
            }
        }
    }
    if let Err(e) = rustix::process::chdir(p.cwd.as_c_str()) {
        fail(fds.exec_w, e);
    }
    // libc: rustix's execve is in its runtime module (for libc implementations).
    // SAFETY: the path and both NULL-terminated arrays point into `p`, which outlives the call.
    unsafe {
        libc::execve(
            p.program.as_ptr(),
            p.argv_ptrs.as_ptr(),
            p.envp_ptrs.as_ptr(),
        );
    }
    fail(fds.exec_w, errno())
}

/// The reaper process. Async-signal-safe calls only, no allocation.
///
/// # Safety
///
/// Only in a child just forked by the host, which must not return.
unsafe fn reaper_main(p: &Prepared, fds: ChildFds<'_>) -> ! {
    let me = rustix::process::getpid();
    // The host's end of the control pipe must not stay open here, or its death would go
    // unnoticed.
    // SAFETY: this process's copy of the host's end; nothing here uses it again (the OwnedFd
    // in the forked copy of the host's stack is never dropped: this process never returns).
    unsafe { rustix::io::close(fds.ctl_w.as_raw_fd()) };
    let _ = rustix::process::set_child_subreaper(Some(me));
    // libc: see `Reaper::start`.
    // SAFETY: the child runs program_main, which only sets itself up and execs.
    let program = unsafe { libc::fork() };
    if program == 0 {
        // SAFETY: in the child just forked; never returns.
        unsafe { program_main(p, fds, me) };
    }
    let Some(program) = Pid::from_raw(program.max(0)) else {
        write_msg(fds.st_w, [MSG_EXEC_FAILED, errno().raw_os_error(), 0]);
        exit_now(1);
    };
    // SAFETY: as for `ctl_w` above: the program's end, which only the program uses.
    unsafe { rustix::io::close(fds.exec_w.as_raw_fd()) };
    let mut e = [0u8; 4];
    let n = rustix::io::retry_on_intr(|| rustix::io::read(fds.exec_r, &mut e));
    if let Ok(4) = n {
        let _ = rustix::process::waitpid(Some(program), WaitOptions::empty());
        write_msg(fds.st_w, [MSG_EXEC_FAILED, i32::from_ne_bytes(e), 0]);
        exit_now(0);
    }
    write_msg(fds.st_w, [MSG_STARTED, program.as_raw_pid(), 0]);

    // Keep only the two pipes to the host, as 0 and 1; hold nothing else of the host's
    // (other runs' pipes, sockets, the program's output pipes).
    let _ = rustix::stdio::dup2_stdin(fds.ctl_r);
    let _ = rustix::stdio::dup2_stdout(fds.st_w);
    // From here on `fds` names closed descriptors: only 0 and 1 are used.
    // libc: rustix has no close_range.
    // SAFETY: closes every descriptor from 2 up; none of them is used again in this process.
    unsafe {
        if libc::syscall(
            libc::SYS_close_range,
            2 as libc::c_uint,
            libc::c_uint::MAX,
            0 as libc::c_uint,
        ) != 0
        {
            for fd in 2..65_536 {
                rustix::io::close(fd);
            }
        }
    }
    let control = rustix::stdio::stdin();
    let status = rustix::stdio::stdout();
    // libc: rustix sets dispositions and masks, and has signalfd, only in its runtime module
    // or not at all.
    // SAFETY: SIG_IGN installs no handler; `set` is a local, initialised by sigemptyset, and
    // the descriptor signalfd returns is a new one that nothing else owns.
    let signals = unsafe {
        for sig in [
            libc::SIGINT,
            libc::SIGTERM,
            libc::SIGHUP,
            libc::SIGQUIT,
            libc::SIGPIPE,
            libc::SIGUSR1,
            libc::SIGUSR2,
        ] {
            libc::signal(sig, libc::SIG_IGN);
        }
        // SIGCHLD through a signalfd, so that one poll waits for the program and the host.
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        let sfd = libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC);
        (sfd >= 0).then(|| OwnedFd::from_raw_fd(sfd))
    };
    let _ = rustix::thread::set_name(c"absurd-reaper");
    let signals = signals.as_ref().map(|s| s.as_fd());

    let mut exited = false;
    loop {
        if !exited {
            exited = reap_orphans(program, status);
        }
        let mut pfd = [
            PollFd::from_borrowed_fd(control, PollFlags::IN),
            PollFd::from_borrowed_fd(signals.unwrap_or(control), PollFlags::IN),
        ];
        let n = if signals.is_some() { 2 } else { 1 };
        // The timeout is a safety net only (a missing signalfd).
        let timeout = Timespec {
            tv_sec: 1,
            tv_nsec: 0,
        };
        if poll(&mut pfd[..n], Some(&timeout)).is_err() {
            continue;
        }
        if let Some(sfd) = signals {
            if !pfd[1].revents().is_empty() {
                let mut buf = [0u8; 128];
                while matches!(rustix::io::read(sfd, &mut buf), Ok(n) if n > 0) {}
            }
        }
        if !pfd[0].revents().is_empty() {
            let mut b = [0u8; 1];
            match rustix::io::read(control, &mut b) {
                Err(Errno::INTR) => continue,
                Ok(1) if b[0] == b'T' => {
                    signal_all(me, program, Signal::TERM);
                }
                Ok(1) if b[0] == b'K' => {
                    signal_all(me, program, Signal::KILL);
                }
                // `R`, or the host is gone.
                _ => break,
            }
        }
    }
    kill_all(me, program);
    let _ = rustix::process::waitpid(Some(program), WaitOptions::empty());
    exit_now(0)
}

/// Reaps exited orphans and reports the program's exit (which stays unreaped) on `status`.
/// Returns whether the program has exited. Once it has, it is the first waitable child for
/// good and hides the others; they are reaped at the end.
fn reap_orphans(program: Pid, status: BorrowedFd<'_>) -> bool {
    loop {
        // libc: rustix's waitid does not tell which child it found (`si_pid`).
        // SAFETY: waitid fills a local siginfo_t, zeroed first so that every field read is
        // initialised whatever waitid does.
        let (r, pid, code, st) = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let r = libc::waitid(
                libc::P_ALL,
                0,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            );
            (r, info.si_pid(), info.si_code, info.si_status())
        };
        if r < 0 {
            if errno() == Errno::INTR {
                continue;
            }
            return false;
        }
        let Some(pid) = Pid::from_raw(pid.max(0)) else {
            return false;
        };
        if pid == program {
            write_msg(status, [MSG_EXITED, code, st]);
            return true;
        }
        let _ = rustix::process::waitpid(Some(pid), WaitOptions::NOHANG);
    }
}

/// Signals the program's group and every child of the reaper (each with its own group, if
/// it leads one: a `setsid` daemon's helpers). The reaper reaps only its own children and
/// does nothing else meanwhile, so none of these pids can have been reused.
fn signal_all(me: Pid, program: Pid, sig: Signal) -> usize {
    let _ = rustix::process::kill_process_group(program, sig);
    let mut live = 0;
    for_each_child(me, |pid, zombie| {
        if pid == program {
            live += usize::from(!zombie);
            return;
        }
        if zombie {
            let _ = rustix::process::waitpid(Some(pid), WaitOptions::NOHANG);
        } else {
            live += 1;
            let _ = rustix::process::kill_process(pid, sig);
            let _ = rustix::process::kill_process_group(pid, sig);
        }
    });
    live
}

/// SIGKILLs every process of the run until none is left alive: each pass kills the
/// reaper's live children, whose own children then become the reaper's.
fn kill_all(me: Pid, program: Pid) {
    let limit = Instant::now() + FINAL_KILL_LIMIT;
    while signal_all(me, program, Signal::KILL) > 0 && Instant::now() < limit {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Calls `f(pid, is_zombie)` for each process whose parent is `me`, from `/proc`.
fn for_each_child(me: Pid, mut f: impl FnMut(Pid, bool)) {
    let Ok(dir) = rustix::fs::open(
        c"/proc",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    ) else {
        return;
    };
    let mut buf = [MaybeUninit::<u8>::uninit(); 8192];
    let mut entries = RawDir::new(&dir, &mut buf);
    while let Some(Ok(entry)) = entries.next() {
        let Some(pid) = parse_pid(entry.file_name().to_bytes()).and_then(Pid::from_raw) else {
            continue;
        };
        if let Some((state, ppid)) = stat_of(pid.as_raw_pid()) {
            if ppid == me.as_raw_pid() {
                f(pid, state == b'Z' || state == b'X');
            }
        }
    }
}

fn parse_pid(name: &[u8]) -> Option<i32> {
    let mut v: i64 = 0;
    let mut any = false;
    for &c in name {
        if c == 0 {
            break;
        }
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + i64::from(c - b'0');
        if v > i64::from(i32::MAX) {
            return None;
        }
        any = true;
    }
    (any && v > 0).then_some(v as i32)
}

/// (state, ppid) of `pid` from `/proc/<pid>/stat` (`pid (comm) state ppid …`).
fn stat_of(pid: i32) -> Option<(u8, i32)> {
    let mut path = [0u8; 32];
    let prefix = b"/proc/";
    path[..prefix.len()].copy_from_slice(prefix);
    let mut i = prefix.len();
    let mut digits = [0u8; 12];
    let mut d = 0;
    let mut v = pid as u32;
    loop {
        digits[d] = b'0' + (v % 10) as u8;
        d += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    while d > 0 {
        d -= 1;
        path[i] = digits[d];
        i += 1;
    }
    let suffix = b"/stat\0";
    path[i..i + suffix.len()].copy_from_slice(suffix);
    let path = CStr::from_bytes_until_nul(&path).ok()?;
    let fd = rustix::fs::open(path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()).ok()?;
    // The state and ppid come right after the command name, at most 16 bytes long.
    let mut buf = [0u8; 256];
    let n = rustix::io::read(&fd, &mut buf).ok()?;
    drop(fd);
    if n == 0 {
        return None;
    }
    let text = &buf[..n];
    let close = text.iter().rposition(|&c| c == b')')?;
    let mut rest = text[close + 1..]
        .split(|&c| c == b' ')
        .filter(|s| !s.is_empty());
    let state = *rest.next()?.first()?;
    let ppid = parse_pid(rest.next()?)?;
    Some((state, ppid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pids_parse_from_proc_names() {
        assert_eq!(parse_pid(b"123\0"), Some(123));
        assert_eq!(parse_pid(b"self\0"), None);
        assert_eq!(parse_pid(b"\0"), None);
        assert_eq!(parse_pid(b"99999999999"), None);
    }

    #[test]
    fn our_own_stat_names_our_parent() {
        let me = std::process::id() as i32;
        let (state, ppid) = stat_of(me).expect("our stat");
        assert_eq!(ppid, std::os::unix::process::parent_id() as i32);
        assert_ne!(state, b'Z');
    }
}
