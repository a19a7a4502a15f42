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
//!   and paths are prepared by the host before the fork.
//! * Processes of the run are found in `/proc`: the reaper's children (`ppid` = the reaper; the
//!   `/proc/<pid>/task/<tid>/children` file is not in every kernel) and the program's group.
//!   Killing works from the top: a SIGKILLed child's own children are re-parented to the
//!   reaper and found by the next pass, until the reaper has no live child left.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

use super::config::Limits;

const MSG_STARTED: i32 = 1;
const MSG_EXEC_FAILED: i32 = 2;
const MSG_EXITED: i32 = 3;

/// How long the reaper goes on killing processes that survive SIGKILL (uninterruptible
/// sleep) before it gives up on them and exits.
const FINAL_KILL_LIMIT_MS: i64 = 60_000;

/// What the program is: everything the reaper needs, prepared before the fork.
pub struct Prepared {
    program: CString,
    // Kept alive for the pointers below.
    _argv: Vec<CString>,
    _envp: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    envp_ptrs: Vec<*const libc::c_char>,
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
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: plain syscall filling a local array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both are fresh descriptors we own.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((high(r)?, high(w)?))
}

fn high(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() >= 3 {
        return Ok(fd);
    }
    // SAFETY: duplicating a descriptor we own.
    let n = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

fn read_msg(f: &mut File) -> Option<[i32; 3]> {
    let mut buf = [0u8; 12];
    f.read_exact(&mut buf).ok()?;
    let at = |i: usize| i32::from_ne_bytes(buf[i * 4..i * 4 + 4].try_into().unwrap_or([0; 4]));
    Some([at(0), at(1), at(2)])
}

/// Waits for `pid`, a child of the host.
pub fn reap(pid: i32) {
    loop {
        // SAFETY: plain syscall on our own child.
        let r = unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
        if r < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        return;
    }
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
            out_w: out_w.as_raw_fd(),
            err_w: err_w.as_raw_fd(),
            ctl_r: ctl_r.as_raw_fd(),
            ctl_w: ctl_w.as_raw_fd(),
            st_w: st_w.as_raw_fd(),
            exec_r: exec_r.as_raw_fd(),
            exec_w: exec_w.as_raw_fd(),
            devnull: devnull.as_raw_fd(),
        };
        // SAFETY: after fork the child runs only async-signal-safe code (reaper_main).
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        if pid == 0 {
            // SAFETY: in the forked child; never returns.
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
    pub fn signal(&mut self, sig: i32) {
        let command = if sig == libc::SIGKILL { b'K' } else { b'T' };
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
struct ChildFds {
    out_w: RawFd,
    err_w: RawFd,
    ctl_r: RawFd,
    ctl_w: RawFd,
    st_w: RawFd,
    exec_r: RawFd,
    exec_w: RawFd,
    devnull: RawFd,
}

unsafe fn errno() -> i32 {
    *libc::__errno_location()
}

unsafe fn write_msg(fd: RawFd, msg: [i32; 3]) {
    let mut buf = [0u8; 12];
    for (i, v) in msg.iter().enumerate() {
        buf[i * 4..i * 4 + 4].copy_from_slice(&v.to_ne_bytes());
    }
    let mut off = 0;
    while off < buf.len() {
        let n = libc::write(fd, buf[off..].as_ptr().cast(), buf.len() - off);
        if n < 0 && errno() == libc::EINTR {
            continue;
        }
        if n <= 0 {
            return;
        }
        off += n as usize;
    }
}

unsafe fn set_limit(resource: libc::__rlimit_resource_t, soft: u64, hard: u64) -> bool {
    let mut cur: libc::rlimit = std::mem::zeroed();
    if libc::getrlimit(resource, &mut cur) != 0 {
        return false;
    }
    let hard = hard.min(cur.rlim_max as u64);
    let new = libc::rlimit {
        rlim_cur: soft.min(hard) as libc::rlim_t,
        rlim_max: hard as libc::rlim_t,
    };
    libc::setrlimit(resource, &new) == 0
}

/// Reports `errno` to the reaper (the program could not be started) and exits.
unsafe fn fail(fd: RawFd) -> ! {
    let e = errno().to_ne_bytes();
    libc::write(fd, e.as_ptr().cast(), 4);
    libc::_exit(127)
}

/// The program's side of the fork: set up, then exec. On failure, the errno goes to the
/// reaper through the close-on-exec pipe.
unsafe fn program_main(p: &Prepared, fds: ChildFds, reaper: libc::pid_t) -> ! {
    if libc::setpgid(0, 0) != 0 {
        fail(fds.exec_w);
    }
    if libc::prctl(
        libc::PR_SET_PDEATHSIG,
        libc::SIGKILL as libc::c_ulong,
        0,
        0,
        0,
    ) != 0
    {
        fail(fds.exec_w);
    }
    // The reaper may have died between fork and prctl: then nobody would ever signal us.
    if libc::getppid() != reaper {
        *libc::__errno_location() = libc::ESRCH;
        fail(fds.exec_w);
    }
    if libc::dup2(fds.devnull, 0) < 0
        || libc::dup2(fds.out_w, 1) < 0
        || libc::dup2(fds.err_w, 2) < 0
    {
        fail(fds.exec_w);
    }
    // Default dispositions and an empty mask: the host ignores SIGPIPE, and ignored signals
    // would survive exec.
    for sig in 1..=64 {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            libc::signal(sig, libc::SIG_DFL);
        }
    }
    let mut empty: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut empty);
    libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
    let l = p.limits;
    let ok = l
        .cpu_seconds
        .is_none_or(|s| set_limit(libc::RLIMIT_CPU, s, s.saturating_add(5)))
        && l.open_files
            .is_none_or(|n| set_limit(libc::RLIMIT_NOFILE, n, n))
        && l.memory_mb.is_none_or(|mb| {
            let b = mb.saturating_mul(1024 * 1024);
            set_limit(libc::RLIMIT_AS, b, b)
        })
        && l.processes
            .is_none_or(|n| set_limit(libc::RLIMIT_NPROC, n, n))
        && l.file_size_mb.is_none_or(|mb| {
            let b = mb.saturating_mul(1024 * 1024);
            set_limit(libc::RLIMIT_FSIZE, b, b)
        });
    if !ok {
        fail(fds.exec_w);
    }
    if libc::chdir(p.cwd.as_ptr()) != 0 {
        fail(fds.exec_w);
    }
    libc::execve(
        p.program.as_ptr(),
        p.argv_ptrs.as_ptr(),
        p.envp_ptrs.as_ptr(),
    );
    fail(fds.exec_w)
}

/// The reaper process. Async-signal-safe calls only, no allocation.
unsafe fn reaper_main(p: &Prepared, fds: ChildFds) -> ! {
    let me = libc::getpid();
    // The host's end of the control pipe must not stay open here, or its death would go
    // unnoticed.
    libc::close(fds.ctl_w);
    libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    let program = libc::fork();
    if program == 0 {
        program_main(p, fds, me);
    }
    if program < 0 {
        write_msg(fds.st_w, [MSG_EXEC_FAILED, errno(), 0]);
        libc::_exit(1);
    }
    libc::close(fds.exec_w);
    let mut e = [0u8; 4];
    let n = loop {
        let n = libc::read(fds.exec_r, e.as_mut_ptr().cast(), 4);
        if n < 0 && errno() == libc::EINTR {
            continue;
        }
        break n;
    };
    if n == 4 {
        let mut st = 0;
        libc::waitpid(program, &mut st, 0);
        write_msg(fds.st_w, [MSG_EXEC_FAILED, i32::from_ne_bytes(e), 0]);
        libc::_exit(0);
    }
    write_msg(fds.st_w, [MSG_STARTED, program, 0]);

    // Keep only the two pipes to the host, as 0 and 1; hold nothing else of the host's
    // (other runs' pipes, sockets, the program's output pipes).
    libc::dup2(fds.ctl_r, 0);
    libc::dup2(fds.st_w, 1);
    if libc::syscall(
        libc::SYS_close_range,
        2 as libc::c_uint,
        libc::c_uint::MAX,
        0 as libc::c_uint,
    ) != 0
    {
        for fd in 2..65_536 {
            libc::close(fd);
        }
    }
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
    libc::prctl(
        libc::PR_SET_NAME,
        c"absurd-reaper".as_ptr() as libc::c_ulong,
        0,
        0,
        0,
    );
    // SIGCHLD through a signalfd, so that one poll waits for the program and the host.
    let mut set: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut set);
    libc::sigaddset(&mut set, libc::SIGCHLD);
    libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    let sfd = libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC);

    let mut exited = false;
    loop {
        if !exited {
            exited = reap_orphans(program);
        }
        let mut pfd = [
            libc::pollfd {
                fd: 0,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: sfd,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // The timeout is a safety net only (a missing signalfd).
        let n = libc::poll(pfd.as_mut_ptr(), if sfd >= 0 { 2 } else { 1 }, 1000);
        if n < 0 {
            continue;
        }
        if sfd >= 0 && pfd[1].revents != 0 {
            let mut buf = [0u8; 128];
            while libc::read(sfd, buf.as_mut_ptr().cast(), buf.len()) > 0 {}
        }
        if pfd[0].revents != 0 {
            let mut b = 0u8;
            let r = libc::read(0, (&mut b as *mut u8).cast(), 1);
            if r < 0 && errno() == libc::EINTR {
                continue;
            }
            match (r, b) {
                (1, b'T') => {
                    signal_all(me, program, libc::SIGTERM);
                }
                (1, b'K') => {
                    signal_all(me, program, libc::SIGKILL);
                }
                // `R`, or the host is gone.
                _ => break,
            }
        }
    }
    kill_all(me, program);
    let mut st = 0;
    libc::waitpid(program, &mut st, 0);
    libc::_exit(0)
}

/// Reaps exited orphans and reports the program's exit (which stays unreaped). Returns
/// whether the program has exited. Once it has, it is the first waitable child for good and
/// hides the others; they are reaped at the end.
unsafe fn reap_orphans(program: libc::pid_t) -> bool {
    loop {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let r = libc::waitid(
            libc::P_ALL,
            0,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        );
        if r < 0 {
            if errno() == libc::EINTR {
                continue;
            }
            return false;
        }
        let pid = info.si_pid();
        if pid == 0 {
            return false;
        }
        if pid == program {
            write_msg(1, [MSG_EXITED, info.si_code, info.si_status()]);
            return true;
        }
        let mut st = 0;
        libc::waitpid(pid, &mut st, libc::WNOHANG);
    }
}

/// Signals the program's group and every child of the reaper (each with its own group, if
/// it leads one: a `setsid` daemon's helpers). The reaper reaps only its own children and
/// does nothing else meanwhile, so none of these pids can have been reused.
unsafe fn signal_all(me: libc::pid_t, program: libc::pid_t, sig: i32) -> usize {
    libc::kill(-program, sig);
    let mut live = 0;
    for_each_child(me, |pid, zombie| {
        if pid == program {
            live += usize::from(!zombie);
            return;
        }
        if zombie {
            let mut st = 0;
            libc::waitpid(pid, &mut st, libc::WNOHANG);
        } else {
            live += 1;
            libc::kill(pid, sig);
            libc::kill(-pid, sig);
        }
    });
    live
}

fn monotonic_ms() -> i64 {
    // SAFETY: plain syscall on a local struct.
    unsafe {
        let mut ts: libc::timespec = std::mem::zeroed();
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
        ts.tv_sec * 1000 + ts.tv_nsec / 1_000_000
    }
}

/// SIGKILLs every process of the run until none is left alive: each pass kills the
/// reaper's live children, whose own children then become the reaper's.
unsafe fn kill_all(me: libc::pid_t, program: libc::pid_t) {
    let limit = monotonic_ms() + FINAL_KILL_LIMIT_MS;
    while signal_all(me, program, libc::SIGKILL) > 0 && monotonic_ms() < limit {
        libc::poll(std::ptr::null_mut(), 0, 5);
    }
}

/// Calls `f(pid, is_zombie)` for each process whose parent is `me`, from `/proc`.
unsafe fn for_each_child(me: libc::pid_t, mut f: impl FnMut(libc::pid_t, bool)) {
    let dir = libc::open(
        c"/proc".as_ptr(),
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
    );
    if dir < 0 {
        return;
    }
    let mut buf = [0u8; 8192];
    loop {
        let n = libc::syscall(libc::SYS_getdents64, dir, buf.as_mut_ptr(), buf.len());
        if n <= 0 {
            break;
        }
        let n = n as usize;
        let mut off = 0;
        // struct linux_dirent64 { u64 d_ino; i64 d_off; u16 d_reclen; u8 d_type; char d_name[]; }
        while off + 19 < n {
            let reclen = u16::from_ne_bytes([buf[off + 16], buf[off + 17]]) as usize;
            if reclen == 0 {
                break;
            }
            let name = &buf[off + 19..(off + reclen).min(n)];
            if let Some(pid) = parse_pid(name) {
                if let Some((state, ppid)) = stat_of(pid) {
                    if ppid == me {
                        f(pid, state == b'Z' || state == b'X');
                    }
                }
            }
            off += reclen;
        }
    }
    libc::close(dir);
}

fn parse_pid(name: &[u8]) -> Option<libc::pid_t> {
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
    (any && v > 0).then_some(v as libc::pid_t)
}

/// (state, ppid) of `pid` from `/proc/<pid>/stat` (`pid (comm) state ppid …`).
unsafe fn stat_of(pid: libc::pid_t) -> Option<(u8, libc::pid_t)> {
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
    let fd = libc::open(path.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC);
    if fd < 0 {
        return None;
    }
    // The state and ppid come right after the command name, at most 16 bytes long.
    let mut buf = [0u8; 256];
    let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
    libc::close(fd);
    if n <= 0 {
        return None;
    }
    let text = &buf[..n as usize];
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
        // SAFETY: reading /proc.
        let (state, ppid) = unsafe { stat_of(me) }.expect("our stat");
        assert_eq!(ppid, unsafe { libc::getppid() });
        assert_ne!(state, b'Z');
    }
}
