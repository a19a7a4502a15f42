//! One program run as a supervised process group.
//!
//! * The child is started by a dedicated supervisor thread that lives until the child is
//!   reaped. The child runs in its own process group (`setpgid(0, 0)`) with
//!   `PR_SET_PDEATHSIG = SIGKILL`; the parent-death signal is tied to the thread that forked,
//!   which is why that thread outlives the child.
//! * The supervisor waits for the leader with `waitid(WNOWAIT)`: the exited leader stays a
//!   zombie, which keeps its pid (= the group id) from being reused, until the group has been
//!   cleaned up. Only then is it reaped, so `kill(-pgid)` never reaches an unrelated group.
//! * A watchdog process (a fork of the host that only blocks in `read`) holds the read end of
//!   a pipe; when the host dies, however it dies, the pipe closes and the watchdog SIGKILLs the
//!   whole group, grandchildren included (the parent-death signal only reaches the child).
//! * Stopping (cancellation, lost lease, shutdown: the future is dropped) sends SIGTERM to
//!   the group, waits up to the grace period for every member to exit, then sends SIGKILL,
//!   and always reaps. That runs on a std thread, never on the async runtime. A task timeout
//!   is a hard stop: the handler sends SIGTERM early ([`Group::terminate_early`]) and stops
//!   the group with no grace left at the deadline, so the program never outlives it.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{ChildStderr, ChildStdout, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tracing::{debug, warn};

use super::config::{Limits, KEPT_WHEN_CLEARED};

/// How the program (the group leader) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal {
        signal: i32,
        core_dumped: bool,
    },
    /// `waitid` failed (should not happen): the status is unknown.
    Unknown,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Spec {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub cwd: PathBuf,
    pub env_clear: bool,
    pub env_remove: Vec<String>,
    pub env: Vec<(String, OsString)>,
    pub limits: Limits,
    pub grace: Duration,
    /// The task's deadline: a stop never lets the program run past it.
    pub deadline: Option<Instant>,
}

/// A started program.
pub struct Started {
    pub pid: i32,
    pub stdout: ChildStdout,
    pub stderr: ChildStderr,
    /// Resolves when the leader has exited (it is not reaped until the group is stopped).
    pub exited: oneshot::Receiver<Exit>,
    pub group: Group,
}

/// What stopping the group took.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StopReport {
    /// Live members other than the leader found when stopping began (leftover grandchildren
    /// after a normal exit).
    pub leftovers: usize,
    /// SIGTERM was sent to the group.
    pub terminated: bool,
    /// The grace period was not enough: SIGKILL was sent to the group.
    pub killed: bool,
}

/// The process group of one run; cloning shares it.
#[derive(Clone)]
pub struct Group {
    inner: Arc<Sup>,
}

struct Sup {
    pgid: i32,
    state: Mutex<State>,
    cv: Condvar,
}

struct State {
    exit: Option<Exit>,
    /// Somebody began stopping the group (only one does).
    stopping: bool,
    /// SIGTERM already went out ahead of the stop ([`Group::terminate_early`]).
    term_sent: bool,
    /// The group is gone: the supervisor may reap the leader.
    released: bool,
    watchdog: Option<Watchdog>,
}

fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn signal_group(pgid: i32, sig: i32) {
    // SAFETY: plain syscall; pgid > 1 always (it is a child's pid).
    if pgid > 1 {
        unsafe {
            libc::kill(-pgid, sig);
        }
    }
}

/// The pids of the live (not zombie) processes whose process group is `pgid`, from `/proc`.
pub fn live_members(pgid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // `pid (comm) state ppid pgrp …`; comm may hold spaces and parentheses.
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let mut f = stat[close + 1..].split_whitespace();
        let (Some(state), Some(_ppid), Some(pgrp)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        if pgrp.parse::<i32>() == Ok(pgid) && state != "Z" && state != "X" {
            out.push(pid);
        }
    }
    out
}

fn reap(pid: i32) {
    loop {
        // SAFETY: plain syscall on our own child.
        let r = unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
        if r < 0 && errno() == libc::EINTR {
            continue;
        }
        return;
    }
}

/// Waits for the leader to exit without reaping it.
fn wait_exit_nowait(pid: i32) -> Exit {
    loop {
        // SAFETY: siginfo_t is plain data; waitid fills it.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if r < 0 {
            if errno() == libc::EINTR {
                continue;
            }
            warn!(pid, error = %io::Error::last_os_error(), "waitid failed; the exit status is unknown");
            return Exit::Unknown;
        }
        // SAFETY: filled by a successful waitid for a child (SIGCHLD-style info).
        let status = unsafe { info.si_status() };
        return match info.si_code {
            libc::CLD_EXITED => Exit::Code(status),
            libc::CLD_KILLED => Exit::Signal {
                signal: status,
                core_dumped: false,
            },
            libc::CLD_DUMPED => Exit::Signal {
                signal: status,
                core_dumped: true,
            },
            _ => continue,
        };
    }
}

fn set_limit(resource: libc::__rlimit_resource_t, soft: u64, hard: u64) -> io::Result<()> {
    // SAFETY: plain syscalls on a local struct (async-signal-safe: runs between fork and exec).
    unsafe {
        let mut cur: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(resource, &mut cur) != 0 {
            return Err(io::Error::last_os_error());
        }
        let hard = hard.min(cur.rlim_max as u64);
        let new = libc::rlimit {
            rlim_cur: soft.min(hard) as libc::rlim_t,
            rlim_max: hard as libc::rlim_t,
        };
        if libc::setrlimit(resource, &new) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Runs in the child between `fork` and `exec`: async-signal-safe calls only, no allocation.
fn child_setup(parent: libc::pid_t, limits: Limits) -> io::Result<()> {
    // SAFETY: plain syscalls.
    unsafe {
        if libc::setpgid(0, 0) != 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        ) != 0
        {
            return Err(io::Error::last_os_error());
        }
        // The host may have died between fork and prctl: then nobody would ever signal us.
        if libc::getppid() != parent {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
    }
    if let Some(s) = limits.cpu_seconds {
        set_limit(libc::RLIMIT_CPU, s, s.saturating_add(5))?;
    }
    if let Some(n) = limits.open_files {
        set_limit(libc::RLIMIT_NOFILE, n, n)?;
    }
    if let Some(mb) = limits.memory_mb {
        let bytes = mb.saturating_mul(1024 * 1024);
        set_limit(libc::RLIMIT_AS, bytes, bytes)?;
    }
    Ok(())
}

fn command(spec: &Spec) -> Command {
    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args)
        .current_dir(&spec.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if spec.env_clear {
        let kept: Vec<(&str, OsString)> = KEPT_WHEN_CLEARED
            .iter()
            .filter_map(|k| std::env::var_os(k).map(|v| (*k, v)))
            .collect();
        cmd.env_clear();
        for (k, v) in kept {
            cmd.env(k, v);
        }
    }
    for k in &spec.env_remove {
        cmd.env_remove(k);
    }
    for (k, v) in &spec.env {
        cmd.env(k, v);
    }
    // SAFETY: getpid is always safe.
    let parent = unsafe { libc::getpid() };
    let limits = spec.limits;
    // SAFETY: child_setup only makes async-signal-safe calls and does not allocate.
    unsafe {
        cmd.pre_exec(move || child_setup(parent, limits));
    }
    cmd
}

/// Starts the program. The returned [`Group`] must be stopped (directly, or by dropping a
/// [`Guard`]) for the leader to be reaped.
pub async fn spawn(spec: Spec) -> io::Result<Started> {
    let (tx, rx) = oneshot::channel();
    std::thread::Builder::new()
        .name("native-supervisor".into())
        .spawn(move || supervise(spec, tx))?;
    rx.await
        .map_err(|_| io::Error::other("the supervisor thread ended before starting the program"))?
}

fn supervise(spec: Spec, tx: oneshot::Sender<io::Result<Started>>) {
    let mut child = match command(&spec).spawn() {
        Ok(c) => c,
        Err(e) => {
            let _ = tx.send(Err(e));
            return;
        }
    };
    let pid = child.id() as i32;
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    // std's Child neither kills nor waits when dropped: this thread reaps the pid itself.
    drop(child);
    let watchdog = match Watchdog::fork(pid) {
        Ok(w) => Some(w),
        Err(e) => {
            warn!(pid, error = %e, "could not start the watchdog; grandchildren may outlive a host crash");
            None
        }
    };
    let sup = Arc::new(Sup {
        pgid: pid,
        state: Mutex::new(State {
            exit: None,
            stopping: false,
            term_sent: false,
            released: false,
            watchdog,
        }),
        cv: Condvar::new(),
    });
    let group = Group { inner: sup.clone() };
    let (exit_tx, exit_rx) = oneshot::channel();
    let started = Started {
        pid,
        stdout,
        stderr,
        exited: exit_rx,
        group: group.clone(),
    };
    if let Err(Ok(started)) = tx.send(Ok(started)) {
        // Nobody waits for it any more (the run was stopped while the program started).
        drop(started);
        group.stop_in_background(grace_before(spec.grace, spec.deadline), |_| {});
    }

    let exit = wait_exit_nowait(pid);
    {
        let mut st = sup.lock();
        st.exit = Some(exit);
        sup.cv.notify_all();
    }
    let _ = exit_tx.send(exit);
    {
        let mut st = sup.lock();
        while !st.released {
            st = sup.cv.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }
    reap(pid);
    debug!(pid, ?exit, "reaped the program");
}

impl Sup {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Group {
    fn exited(&self) -> bool {
        self.inner.lock().exit.is_some()
    }

    fn gone(&self) -> bool {
        self.exited() && live_members(self.inner.pgid).is_empty()
    }

    /// Waits until the leader exits or `d` passes.
    fn wait_exit_for(&self, d: Duration) {
        let st = self.inner.lock();
        if st.exit.is_none() {
            let _ = self.inner.cv.wait_timeout(st, d);
        }
    }

    /// Claims the right to stop the group; false when somebody already did.
    fn begin_stop(&self) -> bool {
        let mut st = self.inner.lock();
        !std::mem::replace(&mut st.stopping, true)
    }

    /// Blocking: SIGTERM, grace, SIGKILL, then releases the leader to be reaped.
    fn terminate(&self, grace: Duration, term_sent: bool) -> StopReport {
        let pgid = self.inner.pgid;
        let leader_running = !self.exited();
        let live = live_members(pgid);
        let mut report = StopReport {
            leftovers: live.iter().filter(|p| **p != pgid).count(),
            terminated: term_sent,
            killed: false,
        };
        if leader_running || !live.is_empty() {
            if !term_sent {
                signal_group(pgid, libc::SIGTERM);
                report.terminated = true;
            }
            let deadline = Instant::now() + grace;
            while !self.gone() {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                self.wait_exit_for((deadline - now).min(Duration::from_millis(25)));
            }
            if !self.gone() {
                report.killed = true;
                let hard = Instant::now() + Duration::from_secs(60);
                while !self.gone() {
                    signal_group(pgid, libc::SIGKILL);
                    if Instant::now() > hard {
                        warn!(pgid, "processes of the group survive SIGKILL (uninterruptible sleep?); giving up on them");
                        break;
                    }
                    self.wait_exit_for(Duration::from_millis(20));
                }
            }
        }
        let watchdog = self.inner.lock().watchdog.take();
        if let Some(w) = watchdog {
            w.disarm();
        }
        let mut st = self.inner.lock();
        st.released = true;
        self.inner.cv.notify_all();
        report
    }

    /// Sends SIGTERM to the group now, without stopping it yet: the warning a task timeout
    /// gives `grace` before its deadline. A later stop does not send it again and goes on to
    /// SIGKILL once its grace is over. Does nothing once the program has exited or the group
    /// is being stopped; returns whether the signal went out.
    pub fn terminate_early(&self) -> bool {
        let mut st = self.inner.lock();
        if st.exit.is_some() || st.stopping || st.term_sent {
            return false;
        }
        st.term_sent = true;
        signal_group(self.inner.pgid, libc::SIGTERM);
        true
    }

    /// Sends SIGKILL to the group now (the hard stop at a task's deadline). The group still
    /// has to be stopped (which makes sure every member is gone) for the leader to be reaped.
    pub fn kill_now(&self) {
        let st = self.inner.lock();
        // Not yet released, so the leader is not reaped and the group id is still ours.
        if !st.released {
            signal_group(self.inner.pgid, libc::SIGKILL);
        }
    }

    /// Stops the group on a std thread (SIGTERM now if the program still runs and was not
    /// warned already, SIGKILL after `grace`), then calls `after`. Does nothing and returns
    /// false if the group is already being stopped.
    pub fn stop_in_background(
        &self,
        grace: Duration,
        after: impl FnOnce(StopReport) + Send + 'static,
    ) -> bool {
        if !self.begin_stop() {
            return false;
        }
        let (exited, warned) = {
            let st = self.inner.lock();
            (st.exit.is_some(), st.term_sent)
        };
        let term_sent = warned || !exited;
        if !warned && !exited {
            // At once, so the program hears of it even if the host is about to exit.
            signal_group(self.inner.pgid, libc::SIGTERM);
        }
        let group = self.clone();
        let spawned = std::thread::Builder::new()
            .name("native-stop".into())
            .spawn(move || after(group.terminate(grace, term_sent)));
        if let Err(e) = spawned {
            warn!(error = %e, "cannot start a thread to stop the program; killing its group now");
            signal_group(self.inner.pgid, libc::SIGKILL);
            let watchdog = self.inner.lock().watchdog.take();
            if let Some(mut w) = watchdog {
                // Do not block here: the watchdog exits when its pipe closes; it is left to
                // be reaped by init if the host exits first.
                w.close();
            }
            let mut st = self.inner.lock();
            st.released = true;
            self.inner.cv.notify_all();
        }
        true
    }

    /// Stops the group and waits for it (None if somebody else is already stopping it).
    pub async fn stop(&self, grace: Duration) -> Option<StopReport> {
        let (tx, rx) = oneshot::channel();
        if !self.stop_in_background(grace, move |r| {
            let _ = tx.send(r);
        }) {
            return None;
        }
        rx.await.ok()
    }
}

/// The grace period of a stop beginning now: `grace`, but never past `deadline` (the
/// program must not outlive its task's deadline; at or after it, SIGKILL goes out at once).
pub fn grace_before(grace: Duration, deadline: Option<Instant>) -> Duration {
    match deadline {
        Some(d) => grace.min(d.saturating_duration_since(Instant::now())),
        None => grace,
    }
}

/// Stops the group when dropped (unless it was stopped already), then runs `on_abandon`.
pub struct Guard {
    group: Group,
    grace: Duration,
    deadline: Option<Instant>,
    on_abandon: Option<Box<dyn FnOnce(StopReport) + Send>>,
}

impl Guard {
    /// `grace` is cut short so that SIGKILL goes out no later than `deadline`: dropped at the
    /// deadline (the worker's timeout), the group is killed at once.
    pub fn new(
        group: Group,
        grace: Duration,
        deadline: Option<Instant>,
        on_abandon: impl FnOnce(StopReport) + Send + 'static,
    ) -> Guard {
        Guard {
            group,
            grace,
            deadline,
            on_abandon: Some(Box::new(on_abandon)),
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let after = self.on_abandon.take();
        let grace = grace_before(self.grace, self.deadline);
        self.group.stop_in_background(grace, move |r| {
            if let Some(f) = after {
                f(r)
            }
        });
    }
}

/// A fork of the host that SIGKILLs the group when the host dies (its pipe closes without
/// the "disarm" byte having been written).
struct Watchdog {
    pid: i32,
    write_end: Option<OwnedFd>,
}

impl Watchdog {
    fn fork(pgid: i32) -> io::Result<Watchdog> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: plain syscalls; after fork the child runs only async-signal-safe code.
        unsafe {
            if libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
                return Err(io::Error::last_os_error());
            }
            let pid = libc::fork();
            if pid < 0 {
                let e = io::Error::last_os_error();
                libc::close(fds[0]);
                libc::close(fds[1]);
                return Err(e);
            }
            if pid == 0 {
                watchdog_main(fds[0], pgid);
            }
            libc::close(fds[0]);
            Ok(Watchdog {
                pid,
                write_end: Some(OwnedFd::from_raw_fd(fds[1])),
            })
        }
    }

    fn close(&mut self) {
        if let Some(fd) = self.write_end.take() {
            // SAFETY: writing one byte to our own pipe.
            unsafe {
                libc::write(fd.as_raw_fd(), b"x".as_ptr().cast(), 1);
            }
        }
    }

    /// Tells the watchdog that the group is gone, and reaps it.
    fn disarm(mut self) {
        self.close();
        reap(self.pid);
    }
}

/// The watchdog process: async-signal-safe calls only (it is a fork of a threaded process).
unsafe fn watchdog_main(read_end: libc::c_int, pgid: i32) -> ! {
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
    if read_end != 0 {
        libc::dup2(read_end, 0);
    }
    // Hold nothing else of the host's: other runs' pipes, sockets, the host's stdout.
    if libc::syscall(
        libc::SYS_close_range,
        1 as libc::c_uint,
        libc::c_uint::MAX,
        0 as libc::c_uint,
    ) != 0
    {
        for fd in 1..65_536 {
            libc::close(fd);
        }
    }
    libc::prctl(
        libc::PR_SET_NAME,
        c"absurd-watchdog".as_ptr() as libc::c_ulong,
        0,
        0,
        0,
    );
    let mut byte = 0u8;
    let n = loop {
        let n = libc::read(0, (&mut byte as *mut u8).cast(), 1);
        if n < 0 && *libc::__errno_location() == libc::EINTR {
            continue;
        }
        break n;
    };
    if n <= 0 {
        // The host died (or its end was closed without the byte): kill the whole group.
        libc::kill(-pgid, libc::SIGKILL);
    }
    libc::_exit(0)
}
