//! One program run as a supervised process group.
//!
//! * A dedicated supervisor thread forks the run's reaper ([`super::reaper`]), a child
//!   subreaper that starts the program and lives until the run is released. The program runs
//!   in its own process group (`setpgid(0, 0)`) with `PR_SET_PDEATHSIG = SIGKILL` (tied to the
//!   reaper). Every descendant that leaves the group (`setsid`, a double fork) is re-parented
//!   to the reaper, so "the run" is the program's group plus the reaper's children.
//! * The reaper reports the program's exit but keeps it an unreaped zombie, which keeps its
//!   pid (= the group id) from being reused, until the run has been cleaned up. Only then is
//!   it reaped, so `kill(-pgid)` never reaches an unrelated group.
//! * When the host dies, however it dies, the reaper's control pipe closes and the reaper
//!   SIGKILLs every process of the run, grandchildren and daemons included.
//! * Stopping (cancellation, lost lease, shutdown: the future is dropped) sends SIGTERM to
//!   every process of the run, waits up to the grace period for all of them to exit, then
//!   sends SIGKILL, and always reaps. That runs on a std thread, never on the async runtime. A task timeout
//!   is a hard stop: the handler sends SIGTERM early ([`Group::terminate_early`]) and stops
//!   the group with no grace left at the deadline, so the program never outlives it.

use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tracing::{debug, warn};

use super::config::{is_secret, Limits, KEPT_WHEN_CLEARED};
use super::reaper::{reap, Control, Prepared, Reaper};

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
    /// Secrets passed on all the same (see [`is_secret`]).
    pub env_pass: Vec<String>,
    pub env: Vec<(String, OsString)>,
    pub limits: Limits,
    pub grace: Duration,
    /// The task's deadline: a stop never lets the program run past it.
    pub deadline: Option<Instant>,
}

/// A started program.
pub struct Started {
    pub pid: i32,
    pub stdout: File,
    pub stderr: File,
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
    reaper_pid: i32,
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
    /// Commands to the run's reaper.
    control: Control,
}

/// Signals every process of the run: the program's group from here, at once, and through its
/// reaper the processes that left the group (the reaper's other children and their groups).
/// Only before the run is released: until then the reaper keeps the program unreaped, so the
/// group id is still ours.
fn signal_run(pgid: i32, st: &mut State, sig: i32) {
    if st.released {
        return;
    }
    // SAFETY: plain syscall; pgid > 1 always (it is a child's pid).
    if pgid > 1 {
        unsafe {
            libc::kill(-pgid, sig);
        }
    }
    st.control.signal(sig);
}

/// The pids of the live (not zombie) processes of a run, from `/proc`: those in the program's
/// process group `pgid` and the children of its reaper (processes that left the group, and the
/// program itself).
pub fn live_members(pgid: i32, reaper: i32) -> Vec<i32> {
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
        let (Some(state), Some(ppid), Some(pgrp)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let ours = pgrp.parse::<i32>() == Ok(pgid) || ppid.parse::<i32>() == Ok(reaper);
        if ours && state != "Z" && state != "X" {
            out.push(pid);
        }
    }
    out
}

/// The program's exit as the reaper reports it (`si_code`, `si_status` of `waitid`).
fn exit_of(report: Option<(i32, i32)>) -> Exit {
    match report {
        Some((libc::CLD_EXITED, status)) => Exit::Code(status),
        Some((libc::CLD_KILLED, signal)) => Exit::Signal {
            signal,
            core_dumped: false,
        },
        Some((libc::CLD_DUMPED, signal)) => Exit::Signal {
            signal,
            core_dumped: true,
        },
        _ => Exit::Unknown,
    }
}

/// The program's environment: the host's (only `PATH`, `HOME` and `LANG` of it with
/// `env_clear`) less `env_remove` and less the secrets ([`is_secret`]) that `env_pass` does not
/// name, then `env` on top.
pub fn environment(spec: &Spec) -> Vec<(OsString, OsString)> {
    let mut vars: Vec<(OsString, OsString)> = if spec.env_clear {
        KEPT_WHEN_CLEARED
            .iter()
            .filter_map(|k| std::env::var_os(k).map(|v| (OsString::from(k), v)))
            .collect()
    } else {
        std::env::vars_os().collect()
    };
    vars.retain(|(k, _)| {
        let name = k.to_string_lossy();
        let removed = spec.env_remove.iter().any(|r| *r == name);
        let hidden = is_secret(&name) && !spec.env_pass.iter().any(|p| *p == name);
        !removed && !hidden
    });
    for (k, v) in &spec.env {
        vars.retain(|(n, _)| n.as_os_str() != std::ffi::OsStr::new(k));
        vars.push((OsString::from(k), v.clone()));
    }
    vars
}

/// Starts the program. The returned [`Group`] must be stopped (directly, or by dropping a
/// [`Guard`]) for the program to be reaped.
pub async fn spawn(spec: Spec) -> io::Result<Started> {
    let prepared = Prepared::new(
        &spec.program,
        &spec.args,
        &environment(&spec),
        &spec.cwd,
        spec.limits,
    )?;
    let (tx, rx) = oneshot::channel();
    std::thread::Builder::new()
        .name("native-supervisor".into())
        .spawn(move || supervise(spec, prepared, tx))?;
    rx.await
        .map_err(|_| io::Error::other("the supervisor thread ended before starting the program"))?
}

fn supervise(spec: Spec, prepared: Prepared, tx: oneshot::Sender<io::Result<Started>>) {
    let started = Reaper::start(&prepared);
    drop(prepared);
    let Reaper {
        pid: reaper_pid,
        program_pid: pid,
        stdout,
        stderr,
        control,
        mut status,
    } = match started {
        Ok(r) => r,
        Err(e) => {
            let _ = tx.send(Err(e));
            return;
        }
    };
    let sup = Arc::new(Sup {
        pgid: pid,
        reaper_pid,
        state: Mutex::new(State {
            exit: None,
            stopping: false,
            term_sent: false,
            released: false,
            control,
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

    let exit = exit_of(status.wait_exit());
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
        st.control.release();
    }
    reap(reaper_pid);
    debug!(pid, ?exit, "the program's reaper is done");
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
        self.exited() && self.live().is_empty()
    }

    fn live(&self) -> Vec<i32> {
        live_members(self.inner.pgid, self.inner.reaper_pid)
    }

    fn signal(&self, sig: i32) {
        let mut st = self.inner.lock();
        signal_run(self.inner.pgid, &mut st, sig);
    }

    /// Waits until the leader exits or `d` passes (the whole of `d` once it has exited:
    /// then only leftovers are waited for, and `/proc` is not scanned in a busy loop).
    fn wait_exit_for(&self, d: Duration) {
        let st = self.inner.lock();
        if st.exit.is_none() {
            let _ = self.inner.cv.wait_timeout(st, d);
        } else {
            drop(st);
            std::thread::sleep(d);
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
        let live = self.live();
        let mut report = StopReport {
            leftovers: live.iter().filter(|p| **p != pgid).count(),
            terminated: term_sent,
            killed: false,
        };
        if leader_running || !live.is_empty() {
            if !term_sent {
                self.signal(libc::SIGTERM);
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
                    self.signal(libc::SIGKILL);
                    if Instant::now() > hard {
                        warn!(pgid, "processes of the run survive SIGKILL (uninterruptible sleep?); giving up on them");
                        break;
                    }
                    self.wait_exit_for(Duration::from_millis(20));
                }
            }
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
        signal_run(self.inner.pgid, &mut st, libc::SIGTERM);
        true
    }

    /// Sends SIGKILL to the group now (the hard stop at a task's deadline). The group still
    /// has to be stopped (which makes sure every member is gone) for the leader to be reaped.
    pub fn kill_now(&self) {
        self.signal(libc::SIGKILL);
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
            self.signal(libc::SIGTERM);
        }
        let group = self.clone();
        let spawned = std::thread::Builder::new()
            .name("native-stop".into())
            .spawn(move || after(group.terminate(grace, term_sent)));
        if let Err(e) = spawned {
            warn!(error = %e, "cannot start a thread to stop the program; killing its group now");
            // The reaper SIGKILLs every process of the run once released.
            self.signal(libc::SIGKILL);
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
