//! Execute: running one claimed task with the handler its name maps to.
//!
//! A [`Handler`] gets a [`TaskContext`] (the claimed run plus the durable operations of
//! Absurd: checkpointed steps, sleep, events, spawn, heartbeat) and returns the task's result
//! or a [`TaskError`]. The worker wraps every handler the same way, so the timeout,
//! cancellation and lease rules hold for every handler kind: in-process builtins, WebAssembly
//! components and native subprocesses.

pub mod builtin;
pub mod native;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::claimed::{self, Claimed, ReadLimits};
use crate::client::{ClaimedRun, Client, ClientError, SpawnOptions, Spawned};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A handler kind's implementation for one task type.
pub trait Handler: Send + Sync {
    /// The handler kind, for logs and metrics (`builtin`, `wasm`, `native`).
    fn kind(&self) -> &'static str;

    /// Runs the task. Dropping the returned future must stop the work (the worker drops it on
    /// timeout, cancellation, lost lease and shutdown).
    fn run(&self, ctx: TaskContext) -> BoxFuture<'static, Result<Value, TaskError>>;
}

/// Why a task did not return a result.
#[derive(Debug)]
pub enum TaskError {
    /// The task failed; the worker reports it with `fail_run`.
    Failed(Failure),
    /// The task suspended itself (sleep, or waiting for an event); nothing more to report.
    Suspended,
    /// The run is no longer ours (`AB001` cancelled or `AB002` lease lost): report nothing.
    RunLost(ClientError),
}

impl From<Failure> for TaskError {
    fn from(f: Failure) -> Self {
        TaskError::Failed(f)
    }
}

/// A task failure, stored by `fail_run` as `{"name", "message", "details"}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub name: String,
    pub message: String,
    pub details: Value,
    /// False for errors that retrying cannot fix (bad params, a guest's permanent error):
    /// the task is failed without further attempts.
    pub retryable: bool,
}

impl Failure {
    pub fn new(name: impl Into<String>, message: impl Into<String>) -> Self {
        Failure {
            name: name.into(),
            message: message.into(),
            details: Value::Null,
            retryable: true,
        }
    }

    pub fn permanent(mut self) -> Self {
        self.retryable = false;
        self
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    /// The JSON stored in `r_<queue>.failure_reason`.
    pub fn to_json(&self) -> Value {
        let mut v = json!({"name": self.name, "message": self.message});
        if !self.details.is_null() {
            v["details"] = self.details.clone();
        }
        if !self.retryable {
            v["retryable"] = Value::Bool(false);
        }
        v
    }
}

/// Maps a client error met inside a task: a lost run stops the task silently; anything else
/// (for example the database going away) fails this attempt so that it is retried.
pub fn client_failure(e: ClientError) -> TaskError {
    if e.is_run_lost() {
        TaskError::RunLost(e)
    } else {
        TaskError::Failed(Failure::new("$HostError", e.to_string()))
    }
}

/// Everything a handler may do while running one claimed run.
#[derive(Clone)]
pub struct TaskContext {
    inner: Arc<Inner>,
}

/// What the worker tells a task context about the run's surroundings.
#[derive(Debug, Clone)]
pub struct ContextSettings {
    pub worker_id: String,
    /// The lease length; checkpoint writes and heartbeats renew the lease by this much.
    pub claim_timeout_secs: i32,
    /// When the run's wall-clock limit ends (the worker also enforces it).
    pub deadline: Option<tokio::time::Instant>,
    /// Options applied to tasks spawned from inside a task when it leaves them unset.
    pub spawn_defaults: SpawnOptions,
}

struct Inner {
    client: Client,
    queue: String,
    run: ClaimedRun,
    worker_id: String,
    claim_timeout_secs: i32,
    deadline: Option<tokio::time::Instant>,
    spawn_defaults: SpawnOptions,
    /// Committed checkpoints visible to this run, by checkpoint name.
    checkpoints: Mutex<HashMap<String, Value>>,
    /// How often each step name was used in this execution (for `name#2`, `name#3`, …).
    step_uses: Mutex<HashMap<String, u32>>,
    /// Bounds on what this run reads back (event payloads received by `await_event`).
    read_limits: ReadLimits,
}

impl TaskContext {
    /// Builds the context of a claimed run, loading the checkpoints it may replay.
    pub async fn load(
        client: Client,
        queue: &str,
        run: ClaimedRun,
        settings: ContextSettings,
    ) -> Result<TaskContext, ClientError> {
        TaskContext::load_with(client, queue, run, settings, None).await
    }

    /// [`TaskContext::load`], with the checkpoints already read (by the fast claim path) when
    /// `preloaded` is `Some`.
    pub async fn load_with(
        client: Client,
        queue: &str,
        run: ClaimedRun,
        settings: ContextSettings,
        preloaded: Option<Vec<(String, Value)>>,
    ) -> Result<TaskContext, ClientError> {
        let checkpoints = match preloaded {
            Some(c) => c.into_iter().collect(),
            None => client
                .get_checkpoints(queue, run.task_id, run.run_id)
                .await?
                .into_iter()
                .map(|c| (c.checkpoint_name, c.state))
                .collect(),
        };
        Ok(TaskContext {
            inner: Arc::new(Inner {
                client,
                queue: queue.to_string(),
                run,
                worker_id: settings.worker_id,
                claim_timeout_secs: settings.claim_timeout_secs,
                deadline: settings.deadline,
                spawn_defaults: settings.spawn_defaults,
                checkpoints: Mutex::new(checkpoints),
                step_uses: Mutex::new(HashMap::new()),
                read_limits: ReadLimits::default(),
            }),
        })
    }

    /// The context of a run as a claim handed it over: fails the run (permanently) when the
    /// claim found its data unusable, and reads what the claim left out (large checkpoints, a
    /// large event payload) within `limits`. See [`crate::claimed`].
    pub async fn load_claimed(
        client: Client,
        queue: &str,
        claimed: Claimed,
        settings: ContextSettings,
        limits: &ReadLimits,
    ) -> Result<TaskContext, TaskError> {
        let Claimed {
            mut run,
            checkpoints,
            payload_deferred,
            defect,
        } = claimed;
        if let Some(f) = defect {
            return Err(f.into());
        }
        if payload_deferred {
            run.event_payload = claimed::read_event_payload(&client, queue, run.run_id, limits)
                .await
                .map_err(client_failure)??;
        }
        let checkpoints = match checkpoints {
            Some(cps) => {
                claimed::check_checkpoints(&cps, limits)?;
                cps
            }
            None => claimed::read_checkpoints(&client, queue, &run, limits)
                .await
                .map_err(client_failure)??,
        };
        let ctx = TaskContext::load_with(client, queue, run, settings, Some(checkpoints))
            .await
            .map_err(client_failure)?;
        Ok(ctx.with_read_limits(*limits))
    }

    /// Sets the bounds on what the run reads back (only while no one else holds the context).
    fn with_read_limits(mut self, limits: ReadLimits) -> TaskContext {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.read_limits = limits;
        }
        self
    }

    /// A context that starts with no checkpoints and does not read the database until the
    /// task makes a durable call (for benchmarks, and for tasks known to be new).
    pub fn detached(
        client: Client,
        queue: &str,
        run: ClaimedRun,
        settings: ContextSettings,
    ) -> TaskContext {
        TaskContext {
            inner: Arc::new(Inner {
                client,
                queue: queue.to_string(),
                run,
                worker_id: settings.worker_id,
                claim_timeout_secs: settings.claim_timeout_secs,
                deadline: settings.deadline,
                spawn_defaults: settings.spawn_defaults,
                checkpoints: Mutex::new(HashMap::new()),
                step_uses: Mutex::new(HashMap::new()),
                read_limits: ReadLimits::default(),
            }),
        }
    }

    pub fn run(&self) -> &ClaimedRun {
        &self.inner.run
    }
    pub fn queue(&self) -> &str {
        &self.inner.queue
    }
    pub fn task_id(&self) -> Uuid {
        self.inner.run.task_id
    }
    pub fn run_id(&self) -> Uuid {
        self.inner.run.run_id
    }
    pub fn params(&self) -> &Value {
        &self.inner.run.params
    }
    pub fn worker_id(&self) -> &str {
        &self.inner.worker_id
    }
    pub fn client(&self) -> &Client {
        &self.inner.client
    }
    /// When the run's wall-clock limit ends.
    pub fn deadline(&self) -> Option<tokio::time::Instant> {
        self.inner.deadline
    }

    /// The checkpoint name for the next use of `step` in this execution, following the SDKs'
    /// convention: `step`, then `step#2`, `step#3`, …
    pub fn next_checkpoint_name(&self, step: &str) -> String {
        let mut uses = self.inner.step_uses.lock().unwrap();
        let n = uses.entry(step.to_string()).or_insert(0);
        *n += 1;
        if *n == 1 {
            step.to_string()
        } else {
            format!("{step}#{n}")
        }
    }

    /// The stored value of a checkpoint, if this run may replay it.
    pub fn checkpoint(&self, checkpoint_name: &str) -> Option<Value> {
        self.inner
            .checkpoints
            .lock()
            .unwrap()
            .get(checkpoint_name)
            .cloned()
    }

    /// Stores a checkpoint (and renews the lease, as the SDKs do).
    pub async fn store_checkpoint(
        &self,
        checkpoint_name: &str,
        value: &Value,
    ) -> Result<(), TaskError> {
        let i = &self.inner;
        i.client
            .set_checkpoint(
                &i.queue,
                i.run.task_id,
                checkpoint_name,
                value,
                i.run.run_id,
                Some(i.claim_timeout_secs),
            )
            .await
            .map_err(client_failure)?;
        i.checkpoints
            .lock()
            .unwrap()
            .insert(checkpoint_name.to_string(), value.clone());
        Ok(())
    }

    /// Suspends the run until `wake_at` (the run is re-executed from the start then, and
    /// completed steps replay from their checkpoints). Returns `Ok(())` once the time has come.
    pub async fn sleep_until(&self, step: &str, wake_at: DateTime<Utc>) -> Result<(), TaskError> {
        self.sleep(step, |_| wake_at).await
    }

    /// Suspends the run for `seconds`, counted on the database clock.
    pub async fn sleep_for(&self, step: &str, seconds: f64) -> Result<(), TaskError> {
        let delta = chrono::Duration::milliseconds((seconds.max(0.0) * 1000.0) as i64);
        self.sleep(step, |now| now + delta).await
    }

    /// The database's clock (`absurd.current_time()`, which honours `absurd.fake_now`). Wake-up
    /// times are compared with it, as `claim_task` compares `available_at` with it: judged by
    /// the host's clock instead, a host running behind the database would find a woken task
    /// "not yet" due and put it back to sleep over and over.
    async fn db_now(&self) -> Result<DateTime<Utc>, TaskError> {
        let i = &self.inner;
        sqlx::query_scalar("select absurd.current_time()")
            .fetch_one(i.client.pool())
            .await
            .map_err(|e| client_failure(ClientError::from_sqlx(e, Some(&i.queue))))
    }

    async fn sleep(
        &self,
        step: &str,
        wake_at: impl FnOnce(DateTime<Utc>) -> DateTime<Utc>,
    ) -> Result<(), TaskError> {
        let name = self.next_checkpoint_name(step);
        let now = self.db_now().await?;
        let wake_at = match self.checkpoint(&name) {
            Some(v) => v
                .as_str()
                .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                .map(|d| d.with_timezone(&Utc))
                .ok_or_else(|| {
                    TaskError::Failed(
                        Failure::new(
                            "$BadCheckpoint",
                            format!("checkpoint {name:?} should hold a wake-up time, found {v}"),
                        )
                        .permanent(),
                    )
                })?,
            None => {
                let wake_at = wake_at(now);
                let stamp =
                    Value::String(wake_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, false));
                self.store_checkpoint(&name, &stamp).await?;
                wake_at
            }
        };
        if wake_at <= now {
            return Ok(());
        }
        let i = &self.inner;
        i.client
            .schedule_run(&i.queue, i.run.run_id, wake_at)
            .await
            .map_err(client_failure)?;
        Err(TaskError::Suspended)
    }

    /// Waits for an event. `Ok(Some(payload))` once emitted, `Ok(None)` when `timeout_secs`
    /// passed first; otherwise the run suspends until the event is emitted.
    pub async fn await_event(
        &self,
        event: &str,
        step: Option<&str>,
        timeout_secs: Option<i32>,
    ) -> Result<Option<Value>, TaskError> {
        let default_step = format!("$awaitEvent:{event}");
        let name = self.next_checkpoint_name(step.unwrap_or(&default_step));
        if let Some(v) = self.checkpoint(&name) {
            return Ok(Some(v));
        }
        let i = &self.inner;
        // Woken by the timeout rather than the event: the SDKs' convention.
        if i.run.wake_event.as_deref() == Some(event) && i.run.event_payload.is_none() {
            return Ok(None);
        }
        let (should_suspend, payload) = i
            .client
            .await_event_bounded(
                &i.queue,
                i.run.task_id,
                i.run.run_id,
                &name,
                event,
                timeout_secs,
                &i.read_limits,
            )
            .await
            .map_err(client_failure)?;
        if should_suspend {
            return Err(TaskError::Suspended);
        }
        // A payload over the limit or unreadable fails the run for good: retrying reads the
        // same payload again.
        let payload = payload?.unwrap_or(Value::Null);
        i.checkpoints.lock().unwrap().insert(name, payload.clone());
        Ok(Some(payload))
    }

    pub async fn emit_event(&self, event: &str, payload: &Value) -> Result<(), TaskError> {
        let i = &self.inner;
        i.client
            .emit_event(&i.queue, event, Some(payload))
            .await
            .map_err(client_failure)
    }

    /// Spawns another task (in `queue`, or this task's queue).
    pub async fn spawn(
        &self,
        queue: Option<&str>,
        task_name: &str,
        params: &Value,
        options: &SpawnOptions,
    ) -> Result<Spawned, TaskError> {
        let i = &self.inner;
        let mut options = options.clone();
        let d = &i.spawn_defaults;
        options.max_attempts = options.max_attempts.or(d.max_attempts);
        options.retry_strategy = options.retry_strategy.or_else(|| d.retry_strategy.clone());
        i.client
            .spawn(queue.unwrap_or(&i.queue), task_name, params, &options)
            .await
            .map_err(|e| match e {
                ClientError::InvalidInput(_)
                | ClientError::InvalidRetryStrategy(_)
                | ClientError::QueueNotFound(_) => {
                    TaskError::Failed(Failure::new("$SpawnError", e.to_string()).permanent())
                }
                other => client_failure(other),
            })
    }

    /// Extends the lease by `seconds` (default: the claim timeout).
    pub async fn heartbeat(&self, seconds: Option<i32>) -> Result<(), TaskError> {
        let i = &self.inner;
        i.client
            .extend_claim(
                &i.queue,
                i.run.run_id,
                seconds.unwrap_or(i.claim_timeout_secs).max(1),
            )
            .await
            .map_err(client_failure)
    }
}
