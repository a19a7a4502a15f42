//! The `native` handler kind: a task type run as a supervised subprocess.
//!
//! ```toml
//! [tasks.calibration-solve]
//! kind = "native"
//! program = "/opt/casa-venv/bin/python"      # a path (relative: to this file) or a name on PATH
//! args = ["-u", "-m", "absurd_native", "calibrate:solve", "{params}"]
//! env = { HOME = "{workdir}", CASA_LOGFILE = "{workdir}/casa.log" }
//! timeout = 1800
//! grace = 10
//! ```
//!
//! Per run the host creates a fresh work directory, writes `params.json` there
//! (`{"params": …, "task": {task_id, run_id, attempt, queue, task_name, headers}}`), runs the
//! program in that directory (stdin null, its own process group, under a per-run reaper that
//! lets no descendant outlive the run or the host: see `reaper`), and
//! reads `result.json` after exit 0. The program may talk to the host meanwhile through its
//! control channel (`control`: checkpointed steps, heartbeats, spawns, events, durable
//! sleeps and event waits, which suspend the run). Everything else (failure classification, logs, limits,
//! what is not supported) is described for operators in `docs/native-tasks.md`.
//!
//! The task's timeout is a hard stop: the group gets SIGTERM `grace` before the deadline
//! (`grace` capped at half the timeout) and SIGKILL at the deadline, and the run fails with
//! `$Timeout`. Any other stop (cancellation, lost lease, shutdown) sends SIGTERM at once and
//! SIGKILL `grace` later, but never later than the deadline.

pub mod cgroup;
pub mod config;
pub mod control;
pub mod lock;
mod logs;
mod outcome;
mod reaper;
mod supervise;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use tracing::{info, warn, Span};

use self::config::{NativeConfig, Vars};
use self::logs::{Drained, Stream};
use self::outcome::{classify, keep_end, read_result, ResultError};
use self::supervise::{Exit, Guard, Spec, StopReport};
use super::grants::Grants;
use super::reported::{bounded, reported_error, reported_failure};
use super::{BoxFuture, Failure, FailureName, Handler, TaskContext, TaskError};
use crate::limits::{ControlLimits, RunLimits, CONTROL_KEYS};

pub use self::lock::{cal_lock_path, CalLock};

/// How long to wait for the output pipes to close once the whole group is gone (a process
/// that escaped the group may still hold them).
const DRAIN_WAIT: Duration = Duration::from_secs(10);

/// A native task type as built from its configuration: the handler, and the limits and grants
/// its program's control requests are held to (the same keys as a wasm task type's).
pub struct Built {
    pub handler: Arc<dyn Handler>,
    pub limits: RunLimits,
    pub grants: Grants,
}

/// Builds the handler of a `kind = "native"` task type from its `[tasks.<name>]` keys and the
/// `[native]` defaults. Besides the keys of [`config::KEYS`], both tables may set the
/// [`RunLimits`] keys and the control channel's ([`ControlLimits`]); the task's table may set
/// the grant keys ([`grants::KEYS`](super::grants::KEYS)).
pub fn build(
    task_name: &str,
    table: &toml::Table,
    defaults: &toml::Table,
    base_dir: &Path,
) -> Result<Built, String> {
    let mut table = table.clone();
    let mut defaults = defaults.clone();
    let grants = Grants::take_from(task_name, &mut table)?;
    let limits = RunLimits::default()
        .take_from(&mut defaults)
        .map_err(|e| format!("[native]: {e}"))?
        .take_from(&mut table)?;
    let control = ControlLimits::for_run(&limits)
        .overridden(&defaults)
        .map_err(|e| format!("[native]: {e}"))?
        .overridden(&table)?;
    for key in CONTROL_KEYS {
        defaults.remove(*key);
        table.remove(*key);
    }
    let config = NativeConfig::from_tables(&table, &defaults, base_dir)?;
    Ok(Built {
        handler: Arc::new(NativeHandler {
            task_name: task_name.to_string(),
            config: Arc::new(config),
            control,
        }),
        limits,
        grants,
    })
}

/// A native task type.
pub struct NativeHandler {
    task_name: String,
    config: Arc<NativeConfig>,
    control: ControlLimits,
}

impl NativeHandler {
    pub fn config(&self) -> &NativeConfig {
        &self.config
    }
    pub fn task_name(&self) -> &str {
        &self.task_name
    }
    /// The bounds of the program's control channel.
    pub fn control_limits(&self) -> &ControlLimits {
        &self.control
    }
}

impl Handler for NativeHandler {
    fn kind(&self) -> crate::execute::HandlerKind {
        crate::execute::HandlerKind::Native
    }

    fn run(&self, ctx: TaskContext) -> BoxFuture<'static, Result<Value, TaskError>> {
        let config = self.config.clone();
        let control = self.control;
        Box::pin(async move { run(&config, control, &ctx).await })
    }
}

/// A file-name-safe form of a task name.
fn safe_name(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if s.is_empty() || s.starts_with('.') {
        format!("task{s}")
    } else {
        s
    }
}

fn create_workdir(root: &Path, task_name: &str, run_id: uuid::Uuid) -> std::io::Result<PathBuf> {
    config::private_dir_builder().recursive(true).create(root)?;
    let base = format!("{}-{}", safe_name(task_name), run_id);
    for n in 1..1000 {
        let p = if n == 1 {
            root.join(&base)
        } else {
            root.join(format!("{base}-{n}"))
        };
        match config::private_dir_builder().create(&p) {
            Ok(()) => return Ok(p),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other(
        "too many work directories for this run",
    ))
}

fn remove_workdir(dir: &Path) {
    if let Err(e) = std::fs::remove_dir_all(dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            warn!(workdir = %dir.display(), error = %e, "cannot remove the work directory");
        }
    }
}

async fn wait_drain(rx: tokio::sync::oneshot::Receiver<Drained>, stream: Stream) -> Drained {
    match tokio::time::timeout(DRAIN_WAIT, rx).await {
        Ok(Ok(d)) => d,
        Ok(Err(_)) => Drained::default(),
        Err(_) => {
            warn!(
                stream = stream.name(),
                "the program's {} is still open after its process group ended (a process left the group?); not waiting for it",
                stream.name()
            );
            Drained::default()
        }
    }
}

/// When the program is warned (SIGTERM) and when it is killed, for a run starting at
/// `started_at` with the task's `deadline`: SIGTERM `grace` before the deadline, with `grace`
/// at most half the time the run has.
fn stop_times(started_at: Instant, deadline: Instant, grace: Duration) -> (Instant, Instant) {
    let grace = grace.min(deadline.saturating_duration_since(started_at) / 2);
    (deadline.checked_sub(grace).unwrap_or(deadline), deadline)
}

async fn run(
    cfg: &NativeConfig,
    control: ControlLimits,
    ctx: &TaskContext,
) -> Result<Value, TaskError> {
    let run = ctx.run();
    let started_at = Instant::now();
    let deadline = ctx.deadline().map(|d| d.into_std());

    let workdir = create_workdir(&cfg.workdir_root, &run.task_name, run.run_id).map_err(|e| {
        Failure::new(
            FailureName::WorkdirError,
            format!(
                "cannot create a work directory under {}: {e}",
                cfg.workdir_root.display()
            ),
        )
    })?;
    let params_path = workdir.join("params.json");
    let result_path = workdir.join("result.json");
    let doc = json!({
        "params": run.params,
        "task": {
            "task_id": run.task_id,
            "run_id": run.run_id,
            "attempt": run.attempt,
            "queue": ctx.queue(),
            "task_name": run.task_name,
            "headers": run.headers.clone().unwrap_or_else(|| json!({})),
        }
    });
    let written = serde_json::to_vec_pretty(&doc)
        .map_err(std::io::Error::other)
        .and_then(|bytes| std::fs::write(&params_path, bytes));
    if let Err(e) = written {
        remove_workdir(&workdir);
        return Err(Failure::new(
            FailureName::WorkdirError,
            format!("cannot write {}: {e}", params_path.display()),
        )
        .into());
    }
    // The control channel, bound before the program starts so that it is there at once.
    let mut channel = match control::Channel::open(&workdir, ctx.clone(), control) {
        Ok(c) => c,
        Err(e) => {
            remove_workdir(&workdir);
            return Err(Failure::new(
                FailureName::WorkdirError,
                format!(
                    "cannot create the control socket in {}: {e}",
                    workdir.display()
                ),
            )
            .into());
        }
    };

    let vars = Vars {
        params: params_path.clone(),
        workdir: workdir.clone(),
        task_id: run.task_id.to_string(),
        run_id: run.run_id.to_string(),
        attempt: run.attempt.to_string(),
        task_name: run.task_name.clone(),
    };
    let mut env: Vec<(String, std::ffi::OsString)> = cfg
        .env
        .iter()
        .map(|(k, t)| (k.clone(), t.expand(&vars)))
        .collect();
    // Host-provided values last, so that they always hold.
    for (k, v) in [
        ("ABSURD_TASK_ID", vars.task_id.clone().into()),
        ("ABSURD_RUN_ID", vars.run_id.clone().into()),
        ("ABSURD_ATTEMPT", vars.attempt.clone().into()),
        ("ABSURD_TASK_NAME", vars.task_name.clone().into()),
        ("ABSURD_QUEUE", ctx.queue().into()),
        ("ABSURD_WORKDIR", workdir.clone().into_os_string()),
        ("ABSURD_PARAMS_FILE", params_path.clone().into_os_string()),
        ("ABSURD_RESULT_FILE", result_path.clone().into_os_string()),
        (
            "ABSURD_CONTROL_SOCKET",
            channel.path().to_path_buf().into_os_string(),
        ),
    ] {
        env.push((k.to_string(), v));
    }
    let spec = Spec {
        program: cfg.program.clone(),
        args: cfg.args.iter().map(|a| a.expand(&vars)).collect(),
        cwd: workdir.clone(),
        env_clear: cfg.env_clear,
        env_remove: cfg.env_remove.clone(),
        env_pass: cfg.env_pass.clone(),
        env,
        limits: cfg.limits,
        grace: cfg.grace,
        deadline,
    };

    let started = match supervise::spawn(spec).await {
        Ok(s) => s,
        Err(e) => {
            let kept = cfg.keep_workdir.keep(true);
            if !kept {
                remove_workdir(&workdir);
            }
            return Err(Failure::new(
                FailureName::SpawnFailed,
                format!("cannot start {}: {e}", cfg.program.display()),
            )
            .with_details(json!({"program": cfg.program, "workdir": workdir, "workdir_kept": kept}))
            .into());
        }
    };
    let pid = started.pid;
    info!(pid, program = %cfg.program.display(), workdir = %workdir.display(), "started the program");
    channel.serve(pid);

    // From here on, dropping this future (timeout, cancellation, lost lease, shutdown) stops
    // the whole process group: SIGTERM, `grace` (never past the deadline), SIGKILL, reap.
    let span = Span::current();
    let guard = {
        let span = span.clone();
        let workdir = workdir.clone();
        let keep = cfg.keep_workdir.keep(true);
        let grace = cfg.grace;
        Guard::new(
            started.group.clone(),
            grace,
            deadline,
            move |report: StopReport| {
                let _entered = span.enter();
                info!(
                pid,
                killed = report.killed,
                "stopped the program's process group: the run was abandoned (timeout, cancellation, lost lease or shutdown)"
            );
                if !keep {
                    remove_workdir(&workdir);
                }
            },
        )
    };

    let drains = logs::drain(
        started.stdout,
        Stream::Stdout,
        workdir.join("stdout.log"),
        cfg.max_log_bytes,
        cfg.log_tail_bytes,
        span.clone(),
    )
    .and_then(|out| {
        logs::drain(
            started.stderr,
            Stream::Stderr,
            workdir.join("stderr.log"),
            cfg.max_log_bytes,
            cfg.log_tail_bytes,
            span.clone(),
        )
        .map(|err| (out, err))
    });
    let (out_rx, err_rx) = match drains {
        Ok(x) => x,
        Err(e) => {
            drop(guard);
            return Err(Failure::new(
                FailureName::HostError,
                format!("cannot start the log drains: {e}"),
            )
            .into());
        }
    };

    let mut exited = started.exited;
    let waited = tokio::select! {
        w = wait_exit(&mut exited, &started.group, pid, started_at, deadline, cfg.grace) => w,
        _ = channel.ended() => {
            // A control request ended the run (a suspension, a failure): the program was told
            // to exit, and gets `grace` to do it before its group is stopped.
            let exit = exit_after_end(&mut exited, &started.group, pid, cfg.grace, deadline).await;
            Waited { exit, timed_out: None }
        }
    };
    let end = channel.close();
    let exit = waited.exit;
    // The program is done: remove what it left in its group, then let it be reaped.
    let report = started
        .group
        .stop(supervise::grace_before(cfg.grace, deadline))
        .await
        .unwrap_or_default();
    drop(guard);
    if report.leftovers > 0 {
        warn!(
            leftovers = report.leftovers,
            killed = report.killed,
            "the program exited but left processes in its group; they were terminated"
        );
    }
    let stdout = wait_drain(out_rx, Stream::Stdout).await;
    let stderr = wait_drain(err_rx, Stream::Stderr).await;
    let elapsed = started_at.elapsed();
    let class = classify(exit);
    info!(
        pid,
        ?exit,
        elapsed_ms = elapsed.as_millis() as u64,
        stdout_bytes = stdout.total_bytes,
        stderr_bytes = stderr.total_bytes,
        "the program exited"
    );

    // Warned of the deadline, the program may still finish in time; anything else is the
    // timeout's doing.
    let outcome = match end {
        // Whatever the program did after it was told the run is suspended or over.
        Some(control::End::Suspended) => {
            if !cfg.keep_workdir.keep(false) {
                remove_workdir(&workdir);
            }
            info!(pid, "the run is suspended; it runs again when it wakes");
            return Err(TaskError::Suspended);
        }
        Some(control::End::Lost(e)) => {
            if !cfg.keep_workdir.keep(true) {
                remove_workdir(&workdir);
            }
            return Err(TaskError::RunLost(e));
        }
        Some(control::End::Failed(f)) => Err(f),
        None => match (decide(cfg, exit, &class, &result_path), &waited.timed_out) {
            (Err(_), Some(t)) => Err(t.failure()),
            (outcome, _) => outcome,
        },
    };
    let failed = outcome.is_err();
    let kept = cfg.keep_workdir.keep(failed);
    let result = match outcome {
        Ok(v) => Ok(v),
        Err(mut f) => {
            let casa_severe = outcome::casa_severe(&workdir, cfg.log_tail_bytes);
            let stderr_tail = stderr.tail_text();
            let stdout_tail = stdout.tail_text();
            let joined = casa_severe.join("\n");
            let hints = outcome::hints(&[&stderr_tail, &stdout_tail, &joined]);
            let mut d = Map::new();
            d.insert("exit_code".into(), json!(class.exit_code));
            d.insert("signal".into(), json!(class.signal));
            d.insert("signal_name".into(), json!(class.signal_name));
            if class.core_dumped {
                d.insert("core_dumped".into(), json!(true));
            }
            d.insert("cause".into(), json!(class.cause));
            d.insert("stderr_tail".into(), json!(stderr_tail));
            d.insert("stdout_tail".into(), json!(stdout_tail));
            d.insert("casa_severe".into(), json!(casa_severe));
            d.insert("hints".into(), json!(hints));
            d.insert("workdir".into(), json!(workdir));
            d.insert("workdir_kept".into(), json!(kept));
            d.insert(
                "elapsed_seconds".into(),
                json!((elapsed.as_secs_f64() * 1000.0).round() / 1000.0),
            );
            d.insert("stdout_bytes".into(), json!(stdout.total_bytes));
            d.insert("stderr_bytes".into(), json!(stderr.total_bytes));
            for (name, dr) in [("stdout", &stdout), ("stderr", &stderr)] {
                if dr.truncated {
                    d.insert(format!("{name}_log_truncated_at"), json!(dr.saved_bytes));
                }
                if dr.suppressed_lines > 0 {
                    d.insert(
                        format!("{name}_lines_not_traced"),
                        json!(dr.suppressed_lines),
                    );
                }
            }
            if report.leftovers > 0 {
                d.insert("leftover_processes_killed".into(), json!(report.leftovers));
            }
            if let Value::Object(extra) = std::mem::take(&mut f.details) {
                d.extend(extra);
            }
            f.details = Value::Object(d);
            Err(f)
        }
    };
    if !kept {
        remove_workdir(&workdir);
    }
    result.map_err(TaskError::Failed)
}

/// Waits for the program to exit after the control channel ended its run: `grace` for it to
/// exit by itself, then SIGTERM and `grace` more, then SIGKILL (never past the deadline).
async fn exit_after_end(
    exited: &mut tokio::sync::oneshot::Receiver<Exit>,
    group: &supervise::Group,
    pid: i32,
    grace: Duration,
    deadline: Option<Instant>,
) -> Exit {
    if let Ok(r) =
        tokio::time::timeout(supervise::grace_before(grace, deadline), &mut *exited).await
    {
        return r.unwrap_or(Exit::Unknown);
    }
    group.terminate_early();
    info!(
        pid,
        "the program did not exit after its run ended; sent SIGTERM to its group"
    );
    if let Ok(r) =
        tokio::time::timeout(supervise::grace_before(grace, deadline), &mut *exited).await
    {
        return r.unwrap_or(Exit::Unknown);
    }
    group.kill_now();
    warn!(pid, "sent SIGKILL to the program's group");
    exited.await.unwrap_or(Exit::Unknown)
}

/// How the wait for the program ended.
struct Waited {
    exit: Exit,
    /// Set once the deadline was near enough for the program to be warned (SIGTERM).
    timed_out: Option<TimedOut>,
}

struct TimedOut {
    /// From the start of the run to its deadline.
    timeout: Duration,
    /// How long before the deadline SIGTERM went out.
    grace: Duration,
    /// The program was still there at the deadline and got SIGKILL.
    killed: bool,
}

impl TimedOut {
    fn failure(&self) -> Failure {
        let how = if self.killed {
            "and SIGKILL at it"
        } else {
            "and ended before it"
        };
        Failure::new(
            FailureName::Timeout,
            format!(
                "Task timed out after {} seconds: the program's group got SIGTERM {} s before the deadline {how}",
                secs(self.timeout),
                secs(self.grace),
            ),
        )
        .with_details(json!({
            "cause": "timeout",
            "timeout_seconds": secs(self.timeout),
            "grace_seconds": secs(self.grace),
        }))
    }
}

/// Seconds, rounded to milliseconds.
fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

/// Waits for the program (the group leader) to exit. With a deadline, that is a hard stop:
/// SIGTERM to the group `grace` before it ([`stop_times`]), SIGKILL at it. If this future is
/// dropped meanwhile, the [`Guard`] stops the group.
async fn wait_exit(
    exited: &mut tokio::sync::oneshot::Receiver<Exit>,
    group: &supervise::Group,
    pid: i32,
    started_at: Instant,
    deadline: Option<Instant>,
    grace: Duration,
) -> Waited {
    let Some(deadline) = deadline else {
        return Waited {
            exit: (&mut *exited).await.unwrap_or(Exit::Unknown),
            timed_out: None,
        };
    };
    let (term_at, kill_at) = stop_times(started_at, deadline, grace);
    tokio::select! {
        r = &mut *exited => return Waited { exit: r.unwrap_or(Exit::Unknown), timed_out: None },
        _ = tokio::time::sleep_until(term_at.into()) => {}
    }
    group.terminate_early();
    info!(
        pid,
        kill_in_ms = kill_at
            .saturating_duration_since(Instant::now())
            .as_millis() as u64,
        "the deadline is near: sent SIGTERM to the program's group"
    );
    let mut timed_out = TimedOut {
        timeout: deadline.saturating_duration_since(started_at),
        grace: deadline.saturating_duration_since(term_at),
        killed: false,
    };
    let exit = tokio::select! {
        r = &mut *exited => r.unwrap_or(Exit::Unknown),
        _ = tokio::time::sleep_until(kill_at.into()) => {
            // The hard stop. The caller's stop of the group makes sure all of it is gone.
            group.kill_now();
            timed_out.killed = true;
            warn!(pid, "the deadline passed: sent SIGKILL to the program's group");
            exited.await.unwrap_or(Exit::Unknown)
        }
    };
    Waited {
        exit,
        timed_out: Some(timed_out),
    }
}

/// The result, or the failure (its details are completed by the caller).
fn decide(
    cfg: &NativeConfig,
    exit: Exit,
    class: &outcome::Classified,
    result_path: &Path,
) -> Result<Value, Failure> {
    let result = read_result(result_path, cfg.max_result_bytes);
    match exit {
        Exit::Code(0) => match result {
            // The DSA-110 convention: `{"status": "error", ...}` is a failure.
            Ok(v) => match reported_failure(&v) {
                None => Ok(v),
                Some(f) => Err(f),
            },
            Err(e @ ResultError::TooLarge { .. }) => Err(Failure::new(
                FailureName::ResultTooLarge,
                format!("the program exited 0 but its {e}"),
            )),
            Err(e) => Err(Failure::new(
                FailureName::NoResult,
                format!("the program exited 0 without writing a valid result.json ({e}); it is not counted as a success"),
            )),
        },
        _ => {
            let how = match (class.exit_code, class.signal_name, class.signal) {
                (Some(c), _, _) => format!("the program exited with code {c}"),
                (_, Some(name), _) => format!("the program was killed by {name}"),
                (_, None, Some(s)) => format!("the program was killed by signal {s}"),
                _ => "the program ended".to_string(),
            };
            let mut message = format!("{how}: {}", class.description);
            let mut details = Map::new();
            if let Ok(v) = &result {
                if let Some(reported) = reported_error(v) {
                    message = format!("{message}; it reported: {}", keep_end(&reported, 2048));
                    details.insert("result".into(), bounded(v));
                }
            }
            let name = if class.signal.is_some() {
                FailureName::ProgramKilled
            } else {
                FailureName::ProgramFailed
            };
            Err(Failure::new(name, message).with_details(Value::Object(details)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigterm_goes_out_grace_before_the_deadline_capped_at_half_the_timeout() {
        let t0 = Instant::now();
        let deadline = t0 + Duration::from_secs(60);
        let (term, kill) = stop_times(t0, deadline, Duration::from_secs(10));
        assert_eq!((term - t0, kill), (Duration::from_secs(50), deadline));
        // A grace longer than half the timeout is cut to half of it.
        let (term, kill) = stop_times(t0, deadline, Duration::from_secs(600));
        assert_eq!((term - t0, kill), (Duration::from_secs(30), deadline));
        let (term, _) = stop_times(t0, deadline, Duration::ZERO);
        assert_eq!(term, deadline);
        // A deadline already passed: both at once.
        let (term, kill) = stop_times(deadline, t0, Duration::from_secs(10));
        assert_eq!((term, kill), (t0, t0));
    }

    #[test]
    fn a_stop_never_waits_past_the_deadline() {
        let grace = Duration::from_secs(10);
        assert_eq!(supervise::grace_before(grace, None), grace);
        let past = Instant::now() - Duration::from_millis(5);
        assert_eq!(supervise::grace_before(grace, Some(past)), Duration::ZERO);
        let soon = Instant::now() + Duration::from_secs(2);
        let g = supervise::grace_before(grace, Some(soon));
        assert!(
            g <= Duration::from_secs(2) && g > Duration::from_secs(1),
            "{g:?}"
        );
    }
}
