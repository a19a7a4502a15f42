//! [`Context`]: the durable-execution API a task handler receives.

use std::marker::PhantomData;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::bindings::absurd::task::{durable, log as wit_log};
use crate::error::{
    TaskError, CHECKPOINT_MISMATCH, GUEST_ERROR, HOST_ERROR, INVALID_EVENT_PAYLOAD,
};
use crate::json;

/// The claimed run being executed.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskInfo {
    pub task_id: String,
    pub run_id: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    pub queue: String,
    pub task_name: String,
    /// The task's headers (an empty map when it has none).
    pub headers: serde_json::Map<String, serde_json::Value>,
}

impl TaskInfo {
    /// One header's value.
    pub fn header(&self, name: &str) -> Option<&serde_json::Value> {
        self.headers.get(name)
    }
}

/// Log levels of the host's structured log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// Writes one line to the host's structured log, tagged with the task's ids. Free function
/// so it can be used anywhere (helpers, step closures); see also the [`info!`](crate::info)
/// family of macros and the [`Context`] methods.
pub fn log(level: Level, message: &str) {
    let level = match level {
        Level::Trace => wit_log::Level::Trace,
        Level::Debug => wit_log::Level::Debug,
        Level::Info => wit_log::Level::Info,
        Level::Warn => wit_log::Level::Warn,
        Level::Error => wit_log::Level::Error,
    };
    wit_log::log(level, message);
}

/// Options for [`Context::spawn`]. `SpawnOptions::default()` spawns on this task's queue
/// with the host's default attempts, no idempotency key and no headers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpawnOptions {
    /// Default: this task's queue.
    pub queue: Option<String>,
    /// Default: the host's `ABSURD_MAX_RETRIES + 1`.
    pub max_attempts: Option<u32>,
    /// Spawning twice with the same key yields the same task: use one whenever the spawn
    /// may be replayed (it is not a checkpointed step).
    pub idempotency_key: Option<String>,
    /// A JSON object.
    pub headers: Option<serde_json::Value>,
    /// How failed attempts are retried. Default: the host's.
    #[cfg(not(feature = "wit-0-1"))]
    pub retry_strategy: Option<RetryStrategy>,
    /// When the task is cancelled by itself. Default: never.
    #[cfg(not(feature = "wit-0-1"))]
    pub cancellation: Option<Cancellation>,
}

/// Absurd's retry strategy for a spawned task's failed attempts.
#[cfg(not(feature = "wit-0-1"))]
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RetryStrategy {
    /// Retry at once.
    None,
    /// Wait `base_seconds` between attempts.
    Fixed { base_seconds: f64 },
    /// Wait `base_seconds * factor^(attempt - 1)`, at most `max_seconds`.
    Exponential {
        base_seconds: f64,
        factor: f64,
        max_seconds: f64,
    },
}

/// Absurd's cancellation policy: cancel a task that has not started within `max_delay`
/// seconds of being spawned, or that has run for `max_duration` seconds since it started.
#[cfg(not(feature = "wit-0-1"))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cancellation {
    pub max_delay: Option<u64>,
    pub max_duration: Option<u64>,
}

/// How an awaited task ended.
#[cfg(not(feature = "wit-0-1"))]
#[derive(Debug, Clone, PartialEq)]
pub enum TaskOutcome {
    /// It completed with this result.
    Completed(serde_json::Value),
    /// It failed for good with this failure (`{"name", "message", …}`).
    Failed(serde_json::Value),
    /// It was cancelled.
    Cancelled,
}

#[cfg(not(feature = "wit-0-1"))]
impl TaskOutcome {
    /// The result decoded as `T`; a failed or cancelled task (or a result that is not a `T`)
    /// is a permanent [`TaskError`] naming `what`.
    pub fn into_result<T: DeserializeOwned>(self, what: &str) -> Result<T, TaskError> {
        match self {
            TaskOutcome::Completed(v) => serde_json::from_value(v).map_err(|e| {
                TaskError::permanent(
                    CHILD_FAILED,
                    format!("the result of {what} does not match the expected type: {e}"),
                )
            }),
            TaskOutcome::Failed(f) => {
                let message = f
                    .get("message")
                    .and_then(|m| m.as_str())
                    .unwrap_or("(no message)")
                    .to_string();
                Err(
                    TaskError::permanent(CHILD_FAILED, format!("{what} failed: {message}"))
                        .with_details(serde_json::json!({ "failure": f })),
                )
            }
            TaskOutcome::Cancelled => Err(TaskError::permanent(
                CHILD_FAILED,
                format!("{what} was cancelled"),
            )),
        }
    }

    /// Whether the task completed.
    pub fn is_completed(&self) -> bool {
        matches!(self, TaskOutcome::Completed(_))
    }
}

/// The failure name of [`TaskOutcome::into_result`] and [`Context::spawn_and_wait`] for a
/// child that did not complete.
#[cfg(not(feature = "wit-0-1"))]
pub const CHILD_FAILED: &str = "$ChildFailed";

impl SpawnOptions {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = Some(attempts);
        self
    }
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }
    pub fn headers(mut self, headers: serde_json::Value) -> Self {
        self.headers = Some(headers);
        self
    }
    #[cfg(not(feature = "wit-0-1"))]
    pub fn retry_strategy(mut self, strategy: RetryStrategy) -> Self {
        self.retry_strategy = Some(strategy);
        self
    }
    #[cfg(not(feature = "wit-0-1"))]
    pub fn cancellation(mut self, policy: Cancellation) -> Self {
        self.cancellation = Some(policy);
        self
    }
}

/// What a handler gets besides its params: the run's identity and durable execution.
///
/// A task may be executed several times (after a sleep, an event, a crash or a retry);
/// each execution starts the handler from the top, and steps that already completed return
/// their stored value instead of running again. Keep side effects inside steps.
pub struct Context {
    info: TaskInfo,
    // The host's imports are tied to the one running call: not Send, not Sync.
    _single_threaded: PhantomData<*const ()>,
}

impl Context {
    #[doc(hidden)]
    pub fn new(info: TaskInfo) -> Self {
        Context {
            info,
            _single_threaded: PhantomData,
        }
    }

    /// Task id, run id, attempt, queue, task name and headers.
    pub fn info(&self) -> &TaskInfo {
        &self.info
    }

    /// Runs `f` as the checkpointed step `name`, or returns the value it produced in an
    /// earlier execution without running it. Using the same name several times in one
    /// execution is fine: the host numbers them `name`, `name#2`, … as the Absurd SDKs do.
    ///
    /// The value is stored as JSON, so `T` must round-trip through serde. If `f` fails, the
    /// run fails with that error (nothing is stored; the step runs again on retry).
    pub fn step<T, F>(&self, name: &str, f: F) -> Result<T, TaskError>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Result<T, TaskError>,
    {
        let step = durable::begin_step(name);
        if let Some(stored) = step.value {
            return json::decode(&stored).map_err(|e| {
                TaskError::permanent(
                    CHECKPOINT_MISMATCH,
                    format!(
                        "stored value of step `{}` does not match the step's type: {}",
                        step.checkpoint_name,
                        e.describe()
                    ),
                )
                .with_details(serde_json::json!({
                    "checkpoint": step.checkpoint_name,
                    "decode": e.details(),
                }))
            });
        }
        let value = f()?;
        let text = serde_json::to_string(&value).map_err(|e| {
            TaskError::retryable(
                GUEST_ERROR,
                format!(
                    "step `{}` value cannot be serialised: {e}",
                    step.checkpoint_name
                ),
            )
        })?;
        durable::complete_step(&step.checkpoint_name, &text).map_err(|e| {
            TaskError::retryable(
                HOST_ERROR,
                format!("step `{}` could not be stored: {e}", step.checkpoint_name),
            )
        })?;
        Ok(value)
    }

    /// Sleeps `duration` as the step `name`: the first execution suspends the run (the host
    /// ends it and re-runs the task after the wake-up time); later executions return at once.
    pub fn sleep_for(&self, name: &str, duration: Duration) {
        durable::sleep_for(name, duration.as_secs_f64());
    }

    /// Sleeps until `when`, as the step `name`; see [`Context::sleep_for`].
    pub fn sleep_until(&self, name: &str, when: SystemTime) {
        let millis: i64 = match when.duration_since(UNIX_EPOCH) {
            Ok(after) => i64::try_from(after.as_millis()).unwrap_or(i64::MAX),
            Err(before) => -i64::try_from(before.duration().as_millis()).unwrap_or(i64::MAX),
        };
        durable::sleep_until(name, millis);
    }

    /// Waits for the queue event `event` and returns its payload, or `None` if `timeout`
    /// passed first. Until the event arrives the run is suspended (the host ends it and re-runs
    /// the task when the event is emitted). The step name defaults to `$awaitEvent:<event>`.
    /// Timeouts are whole seconds (rounded up).
    pub fn await_event<T: DeserializeOwned>(
        &self,
        event: &str,
        step_name: Option<&str>,
        timeout: Option<Duration>,
    ) -> Result<Option<T>, TaskError> {
        let timeout_seconds = timeout.map(whole_seconds);
        match durable::await_event(event, step_name, timeout_seconds) {
            None => Ok(None),
            Some(payload) => json::decode(&payload).map(Some).map_err(|e| {
                TaskError::permanent(
                    INVALID_EVENT_PAYLOAD,
                    format!(
                        "payload of event `{event}` does not match the expected type: {}",
                        e.describe()
                    ),
                )
                .with_details(serde_json::json!({ "event": event, "decode": e.details() }))
            }),
        }
    }

    /// Emits the queue event `event` with `payload` (the first emit of a name wins).
    pub fn emit_event<T: Serialize + ?Sized>(
        &self,
        event: &str,
        payload: &T,
    ) -> Result<(), TaskError> {
        let text = serde_json::to_string(payload)?;
        durable::emit_event(event, &text).map_err(|e| {
            TaskError::retryable(HOST_ERROR, format!("emitting event `{event}` failed: {e}"))
        })
    }

    /// Spawns the task `task_name` with `params`; returns the new task's id.
    pub fn spawn<P: Serialize + ?Sized>(
        &self,
        task_name: &str,
        params: &P,
        options: SpawnOptions,
    ) -> Result<String, TaskError> {
        let params = serde_json::to_string(params)?;
        let headers = options.headers.as_ref().map(|h| h.to_string());
        #[cfg(not(feature = "wit-0-1"))]
        let options = durable::SpawnOptions {
            queue: options.queue,
            max_attempts: options.max_attempts,
            idempotency_key: options.idempotency_key,
            headers,
            retry_strategy: options.retry_strategy.map(|r| match r {
                RetryStrategy::None => durable::RetryStrategy {
                    kind: durable::RetryKind::None,
                    base_seconds: None,
                    factor: None,
                    max_seconds: None,
                },
                RetryStrategy::Fixed { base_seconds } => durable::RetryStrategy {
                    kind: durable::RetryKind::Fixed,
                    base_seconds: Some(base_seconds),
                    factor: None,
                    max_seconds: None,
                },
                RetryStrategy::Exponential {
                    base_seconds,
                    factor,
                    max_seconds,
                } => durable::RetryStrategy {
                    kind: durable::RetryKind::Exponential,
                    base_seconds: Some(base_seconds),
                    factor: Some(factor),
                    max_seconds: Some(max_seconds),
                },
            }),
            cancellation: options.cancellation.map(|c| durable::CancellationPolicy {
                max_delay: c.max_delay,
                max_duration: c.max_duration,
            }),
        };
        #[cfg(feature = "wit-0-1")]
        let options = durable::SpawnOptions {
            queue: options.queue,
            max_attempts: options.max_attempts,
            idempotency_key: options.idempotency_key,
            headers,
        };
        durable::spawn(task_name, &params, &options).map_err(|e| {
            TaskError::retryable(HOST_ERROR, format!("spawning `{task_name}` failed: {e}"))
        })
    }

    /// Waits for the task `task_id` (of `queue`, default this task's queue) to end and returns
    /// how it ended, or `None` if `timeout` passed first. Until it ends the run is suspended,
    /// holding no worker slot (so waiting for a task of the same queue is fine), and re-run
    /// when it does; the outcome then replays from the checkpoint
    /// `$awaitTaskResult:<task_id>`. Timeouts are whole seconds (rounded up).
    #[cfg(not(feature = "wit-0-1"))]
    pub fn await_task_result(
        &self,
        task_id: &str,
        queue: Option<&str>,
        timeout: Option<Duration>,
    ) -> Option<TaskOutcome> {
        let options = durable::AwaitOptions {
            queue: queue.map(str::to_string),
            step_name: None,
            timeout_seconds: timeout.map(whole_seconds),
        };
        durable::await_task_result(task_id, &options).map(|o| match o {
            durable::TaskOutcome::Completed(r) => {
                TaskOutcome::Completed(serde_json::from_str(&r).unwrap_or(serde_json::Value::Null))
            }
            durable::TaskOutcome::Failed(f) => {
                TaskOutcome::Failed(serde_json::from_str(&f).unwrap_or(serde_json::Value::Null))
            }
            durable::TaskOutcome::Cancelled => TaskOutcome::Cancelled,
        })
    }

    /// Spawns `task_name` and waits for its result, decoded as `R`. The spawn is replay-safe:
    /// its task id is a checkpointed step (`$spawn:<task_name>`), and without an idempotency
    /// key in `options` one is made from this task's id and that step's checkpoint name. A
    /// child that fails or is cancelled fails this run permanently (`$ChildFailed`).
    #[cfg(not(feature = "wit-0-1"))]
    pub fn spawn_and_wait<P, R>(
        &self,
        task_name: &str,
        params: &P,
        options: SpawnOptions,
    ) -> Result<R, TaskError>
    where
        P: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        let queue = options.queue.clone();
        let task_id = self.spawn_once(task_name, params, options)?;
        let outcome = self
            .await_task_result(&task_id, queue.as_deref(), None)
            .ok_or_else(|| {
                TaskError::retryable(
                    HOST_ERROR,
                    format!("waiting for {task_name} ({task_id}) returned no outcome"),
                )
            })?;
        outcome.into_result(&format!("task {task_name} ({task_id})"))
    }

    /// Spawns `task_name` as the checkpointed step `$spawn:<task_name>` (see
    /// [`Context::spawn_and_wait`]): replays return the same task id, never a second task.
    #[cfg(not(feature = "wit-0-1"))]
    pub fn spawn_once<P: Serialize + ?Sized>(
        &self,
        task_name: &str,
        params: &P,
        mut options: SpawnOptions,
    ) -> Result<String, TaskError> {
        let step = durable::begin_step(&format!("$spawn:{task_name}"));
        if let Some(stored) = step.value {
            return json::decode::<String>(&stored).map_err(|e| {
                TaskError::permanent(
                    CHECKPOINT_MISMATCH,
                    format!(
                        "stored value of step `{}` is not a task id: {}",
                        step.checkpoint_name,
                        e.describe()
                    ),
                )
            });
        }
        if options.idempotency_key.is_none() {
            options.idempotency_key =
                Some(format!("{}:{}", self.info.task_id, step.checkpoint_name));
        }
        let id = self.spawn(task_name, params, options)?;
        let text = serde_json::to_string(&id)?;
        durable::complete_step(&step.checkpoint_name, &text).map_err(|e| {
            TaskError::retryable(
                HOST_ERROR,
                format!("step `{}` could not be stored: {e}", step.checkpoint_name),
            )
        })?;
        Ok(id)
    }

    /// Waits for every task of `task_ids` (all of `queue`, default this task's queue) and
    /// returns their outcomes in the same order: fan-in after a fan-out of spawns. The run is
    /// suspended while any of them is still going, and re-run as they end; outcomes already
    /// known replay from their checkpoints.
    #[cfg(not(feature = "wit-0-1"))]
    pub fn join_all<S: AsRef<str>>(
        &self,
        task_ids: &[S],
        queue: Option<&str>,
    ) -> Result<Vec<TaskOutcome>, TaskError> {
        task_ids
            .iter()
            .map(|id| {
                self.await_task_result(id.as_ref(), queue, None)
                    .ok_or_else(|| {
                        TaskError::retryable(
                            HOST_ERROR,
                            format!("waiting for task {} returned no outcome", id.as_ref()),
                        )
                    })
            })
            .collect()
    }

    /// Waits until any of `tasks` (task id and queue, the queue defaulting to this task's
    /// queue) has ended, and returns the position in `tasks` of the one that ended first with
    /// its outcome, or `None` if `timeout` passed first. Tasks that had ended already when the
    /// call is made are looked at in list order. Until one ends the run is suspended, holding
    /// no worker slot, and re-run when the first one ends. The answer replays from the
    /// checkpoint `$awaitAny` (`$awaitAny#2`, … for later calls of one execution): a replay
    /// returns the same task even if others have ended since, as long as the list has it at
    /// the same position (keep the list's order deterministic). Timeouts are whole seconds
    /// (rounded up). Needs absurd:task@0.2.1.
    #[cfg(not(any(feature = "wit-0-1", feature = "wit-0-2-0")))]
    pub fn await_any<S: AsRef<str>>(
        &self,
        tasks: &[(S, Option<&str>)],
        timeout: Option<Duration>,
    ) -> Option<(usize, TaskOutcome)> {
        let list: Vec<durable::AwaitedTask> = tasks
            .iter()
            .map(|(id, queue)| durable::AwaitedTask {
                task_id: id.as_ref().to_string(),
                queue: queue.map(str::to_string),
            })
            .collect();
        let options = durable::AwaitAnyOptions {
            step_name: None,
            timeout_seconds: timeout.map(whole_seconds),
        };
        durable::await_any_task_result(&list, &options).map(|first| {
            let outcome = match first.outcome {
                durable::TaskOutcome::Completed(r) => TaskOutcome::Completed(
                    serde_json::from_str(&r).unwrap_or(serde_json::Value::Null),
                ),
                durable::TaskOutcome::Failed(f) => {
                    TaskOutcome::Failed(serde_json::from_str(&f).unwrap_or(serde_json::Value::Null))
                }
                durable::TaskOutcome::Cancelled => TaskOutcome::Cancelled,
            };
            (first.index as usize, outcome)
        })
    }

    /// [`Context::await_any`] over tasks of one queue (default this task's queue), without a
    /// timeout: the position of the first of `task_ids` to end, and its outcome. React to
    /// each child as it ends by calling it again over those still running.
    #[cfg(not(any(feature = "wit-0-1", feature = "wit-0-2-0")))]
    pub fn join_any<S: AsRef<str>>(
        &self,
        task_ids: &[S],
        queue: Option<&str>,
    ) -> Result<(usize, TaskOutcome), TaskError> {
        let tasks: Vec<(&str, Option<&str>)> =
            task_ids.iter().map(|id| (id.as_ref(), queue)).collect();
        self.await_any(&tasks, None).ok_or_else(|| {
            TaskError::retryable(
                HOST_ERROR,
                format!(
                    "waiting for any of {} tasks returned no outcome",
                    tasks.len()
                ),
            )
        })
    }

    /// Cancels the task `task_id` (of `queue`, default this task's queue), a child of this
    /// task (one it spawned), and through the cancellation cascade that task's own children.
    /// `Ok(true)` when it was cancelled now, `Ok(false)` when it had ended already; an error
    /// when it is not this task's child. Needs absurd:task@0.2.1.
    #[cfg(not(any(feature = "wit-0-1", feature = "wit-0-2-0")))]
    pub fn cancel_child(&self, task_id: &str, queue: Option<&str>) -> Result<bool, TaskError> {
        durable::cancel_child(task_id, queue).map_err(|e| {
            TaskError::retryable(HOST_ERROR, format!("cancelling task {task_id} failed: {e}"))
        })
    }

    /// Extends the run's lease by `seconds` (default: the claim timeout). The host renews
    /// leases on its own too; call this from long computations between steps if you like.
    pub fn heartbeat(&self, seconds: Option<u32>) {
        durable::heartbeat(seconds);
    }

    /// Writes one line to the host's log; see [`log`] and the [`info!`](crate::info) macros.
    pub fn log(&self, level: Level, message: impl AsRef<str>) {
        log(level, message.as_ref());
    }
}

/// A timeout in whole seconds, rounded up.
fn whole_seconds(t: Duration) -> u32 {
    let secs = t.as_secs() + u64::from(t.subsec_nanos() > 0);
    u32::try_from(secs).unwrap_or(u32::MAX)
}
