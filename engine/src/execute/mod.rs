//! Execute: running one claimed task with the handler its name maps to.
//!
//! A [`Handler`] gets a [`TaskContext`] (the claimed run plus the durable operations of
//! Absurd: checkpointed steps, sleep, events, spawn, heartbeat) and returns the task's result
//! or a [`TaskError`]. The worker wraps every handler the same way, so the timeout,
//! cancellation and lease rules hold for every handler kind: in-process builtins, WebAssembly
//! components and native subprocesses.

pub mod builtin;
pub mod grants;
pub mod native;
pub mod reported;
pub mod wasm;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{json, Value};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use absurd_client::claimed::{self, Claimed, LoadedCheckpoints};
pub use absurd_client::failure::Failure;
pub use absurd_client::vocab::FailureName;
use absurd_client::{ClaimedRun, Client, ClientError, SpawnOptions, Spawned};

use crate::claim::Claimant;
use crate::limits::ReadLimits;
use crate::limits::{self, RunLimits};
use grants::Grants;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How a task type runs: the `kind` key of its `[tasks.<name>]` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HandlerKind {
    /// Code compiled into the host (`execute::builtin`).
    Builtin,
    /// A WebAssembly component in the sandbox (`execute::wasm`).
    Wasm,
    /// A supervised native program (`execute::native`).
    Native,
}

impl HandlerKind {
    /// Every kind, in the order the documentation lists them.
    pub const ALL: [HandlerKind; 3] =
        [HandlerKind::Builtin, HandlerKind::Wasm, HandlerKind::Native];

    /// The configuration spelling, also used in logs and as a metrics label.
    pub const fn as_str(self) -> &'static str {
        match self {
            HandlerKind::Builtin => "builtin",
            HandlerKind::Wasm => "wasm",
            HandlerKind::Native => "native",
        }
    }
}

impl std::fmt::Display for HandlerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A handler kind's implementation for one task type.
pub trait Handler: Send + Sync {
    /// The handler kind, for logs and metrics.
    fn kind(&self) -> HandlerKind;

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

/// Runs a future, turning a panic while polling it into `Err(message)`: a panic in host code
/// serving one run (a host import, a handler, a bug) must fail that run, not the worker task
/// that polls it.
pub struct CatchPanic<F: Future + ?Sized>(Pin<Box<F>>);

impl<F: Future + ?Sized> CatchPanic<F> {
    pub fn new(f: Pin<Box<F>>) -> Self {
        CatchPanic(f)
    }
}

impl<F: Future + ?Sized> Future for CatchPanic<F> {
    type Output = Result<F::Output, String>;

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let fut = self.get_mut().0.as_mut();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| fut.poll(cx))) {
            Ok(std::task::Poll::Pending) => std::task::Poll::Pending,
            Ok(std::task::Poll::Ready(v)) => std::task::Poll::Ready(Ok(v)),
            Err(payload) => std::task::Poll::Ready(Err(panic_message(payload.as_ref()))),
        }
    }
}

/// The text of a panic's payload.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-text payload".to_string()
    }
}

/// Maps a client error met inside a task: a lost run stops the task silently; anything else
/// (for example the database going away) fails this attempt so that it is retried.
pub fn client_failure(e: ClientError) -> TaskError {
    if e.is_run_lost() {
        TaskError::RunLost(e)
    } else {
        TaskError::Failed(Failure::new(FailureName::HostError, e.to_string()))
    }
}

/// Everything a handler may do while running one claimed run.
#[derive(Clone)]
pub struct TaskContext {
    inner: Arc<Inner>,
}

/// What the worker tells a task context about the run's surroundings.
#[derive(Debug, Clone, Default)]
pub struct ContextSettings {
    pub worker_id: String,
    /// The lease length; checkpoint writes and heartbeats renew the lease by this much.
    pub claim_timeout_secs: i32,
    /// When the run's wall-clock limit ends (the worker also enforces it).
    pub deadline: Option<tokio::time::Instant>,
    /// Options applied to tasks spawned from inside a task when it leaves them unset.
    pub spawn_defaults: SpawnOptions,
    /// The run's wall-clock limit (a heartbeat may not ask for a longer lease).
    pub timeout: Option<std::time::Duration>,
    /// What the run may make the host hold or the database store.
    pub limits: RunLimits,
    /// What the task type may touch outside its run; `None` grants everything (builtins).
    pub grants: Option<Arc<Grants>>,
    /// The worker's dead-letter queue (never spawned into unless granted by name).
    pub dlq: Option<String>,
    /// Whether the schema has migration 0019 (waits for task results, children), shared by
    /// the worker's runs and asked once; unset, the first run that needs it asks.
    pub task_results: Arc<tokio::sync::OnceCell<bool>>,
    /// Set when the run suspends until a time (a sleep, or a wait with a timeout), so that
    /// the worker has its claimer arm a timer for it. A wait without a timeout is woken by
    /// whatever ends it, and needs no timer (nor the claim that would arm one).
    pub suspended_until_a_time: Arc<AtomicBool>,
    /// The worker's free slots, for spawns that claim what they spawn; `None` outside a
    /// worker.
    pub local_runs: Option<Arc<LocalRuns>>,
}

/// Starts a run claimed outside the worker's claim loops, in the slot the permit holds.
pub type StartRun = Box<dyn Fn(String, Claimed, OwnedSemaphorePermit) + Send + Sync>;

/// What lets a spawn into a queue this worker serves claim a run for one of its free slots, in
/// the spawn's own transaction (migration 0027): the new task then starts here at once,
/// instead of after its wake-up has reached a claim loop and that loop's claim has committed.
/// The claim is the claim loop's own (the oldest ready run, the new one unless older runs wait).
pub struct LocalRuns {
    /// The queues the worker claims from.
    pub queues: HashSet<String>,
    /// The worker's slots (the claim takes one only if one is free now).
    pub slots: Arc<Semaphore>,
    /// Who the claim is for: the worker, as its claim loops claim.
    pub claimant: Arc<Claimant>,
    /// Whether the schema has `absurd.spawn_child_and_claim`; asked at first need.
    pub available: tokio::sync::OnceCell<bool>,
    pub start: StartRun,
    /// Cancelled when the worker stops claiming.
    pub stop: CancellationToken,
}

impl std::fmt::Debug for LocalRuns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalRuns")
            .field("queues", &self.queues)
            .field("worker_id", &self.claimant.worker_id)
            .finish_non_exhaustive()
    }
}

impl LocalRuns {
    /// A free slot for a run of `queue`, when a spawn there may claim one.
    async fn slot(&self, client: &Client, queue: &str) -> Option<OwnedSemaphorePermit> {
        if self.stop.is_cancelled() || !self.queues.contains(queue) {
            return None;
        }
        let available = self
            .available
            .get_or_try_init(|| client.has_spawn_and_claim())
            .await
            .copied()
            .unwrap_or(false);
        if !available {
            return None;
        }
        self.slots.clone().try_acquire_owned().ok()
    }
}

/// What one run has used of its limits so far.
#[derive(Default)]
struct Usage {
    /// Checkpoint names handed out in this execution.
    steps: u64,
    /// Bytes of the checkpoints loaded for this run plus those it wrote.
    checkpoint_bytes: u64,
    spawns: u64,
    emits: u64,
    awaits: u64,
}

struct Inner {
    client: Client,
    queue: String,
    run: ClaimedRun,
    worker_id: String,
    claim_timeout_secs: i32,
    deadline: Option<tokio::time::Instant>,
    spawn_defaults: SpawnOptions,
    timeout: Option<std::time::Duration>,
    limits: RunLimits,
    grants: Option<Arc<Grants>>,
    dlq: Option<String>,
    task_results: Arc<tokio::sync::OnceCell<bool>>,
    suspended_until_a_time: Arc<AtomicBool>,
    local_runs: Option<Arc<LocalRuns>>,
    usage: Mutex<Usage>,
    /// Committed checkpoints visible to this run, by checkpoint name (those it loaded; what
    /// it writes is not read again in the same execution, so it is not kept).
    checkpoints: Mutex<HashMap<String, Value>>,
    /// How often each step name was used in this execution (for `name#2`, `name#3`, …).
    step_uses: Mutex<HashMap<String, u32>>,
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
        let checkpoints: HashMap<String, Value> = match preloaded {
            Some(c) => c.into_iter().collect(),
            None => client
                .get_checkpoints(queue, run.task_id, run.run_id)
                .await?
                .into_iter()
                .map(|c| (c.checkpoint_name, c.state))
                .collect(),
        };
        let loaded = checkpoints
            .values()
            .map(absurd_client::jsonb::text_len)
            .sum();
        Ok(TaskContext::new(
            client,
            queue,
            run,
            settings,
            checkpoints,
            loaded,
        ))
    }

    /// `loaded` is what the checkpoints weigh as JSON text: it counts against the task's
    /// total (the claim has already refused any single one above the limit).
    fn new(
        client: Client,
        queue: &str,
        run: ClaimedRun,
        settings: ContextSettings,
        checkpoints: HashMap<String, Value>,
        loaded: u64,
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
                timeout: settings.timeout,
                limits: settings.limits,
                grants: settings.grants,
                dlq: settings.dlq,
                task_results: settings.task_results,
                suspended_until_a_time: settings.suspended_until_a_time,
                local_runs: settings.local_runs,
                usage: Mutex::new(Usage {
                    checkpoint_bytes: loaded,
                    ..Usage::default()
                }),
                checkpoints: Mutex::new(checkpoints),
                step_uses: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The context of a run as a claim handed it over: fails the run (permanently) when the
    /// claim found its data unusable, and reads what the claim left out (large checkpoints, a
    /// large event payload) within `limits`. See [`absurd_client::claimed`].
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
            Some(values) => {
                let bytes = claimed::check_checkpoints(&values, limits)?;
                LoadedCheckpoints { values, bytes }
            }
            None => claimed::read_checkpoints(&client, queue, &run, limits)
                .await
                .map_err(client_failure)??,
        };
        Ok(TaskContext::new(
            client,
            queue,
            run,
            settings,
            checkpoints.values.into_iter().collect(),
            checkpoints.bytes,
        ))
    }

    /// A context that starts with no checkpoints and does not read the database until the
    /// task makes a durable call (for benchmarks, and for tasks known to be new).
    pub fn detached(
        client: Client,
        queue: &str,
        run: ClaimedRun,
        settings: ContextSettings,
    ) -> TaskContext {
        TaskContext::new(client, queue, run, settings, HashMap::new(), 0)
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
    /// The run's limits.
    pub fn limits(&self) -> &RunLimits {
        &self.inner.limits
    }

    /// Checks a name the task hands the host (step, event, task, queue, failure name): not
    /// empty, no NUL (PostgreSQL's `text` cannot hold one), within `max_name_bytes`.
    pub fn check_name(&self, what: &str, name: &str) -> Result<(), TaskError> {
        if name.is_empty() {
            return Err(TaskError::Failed(limits::invalid_call(format!(
                "{what} must not be empty"
            ))));
        }
        self.check_text(what, name)
    }

    /// [`TaskContext::check_name`] for a text that may be empty (an idempotency key).
    pub fn check_text(&self, what: &str, text: &str) -> Result<(), TaskError> {
        self.inner
            .limits
            .check("max_name_bytes", what, text.len() as u64)
            .map_err(TaskError::Failed)?;
        if text.contains('\0') {
            return Err(TaskError::Failed(limits::invalid_call(format!(
                "{what} {} contains a NUL character, which PostgreSQL cannot store",
                limits::preview(text)
            ))));
        }
        Ok(())
    }

    /// The checkpoint name for the next use of `step` in this execution, following the SDKs'
    /// convention: `step`, then `step#2`, `step#3`, … Refused beyond `max_steps` names per
    /// execution, or for a step name longer than `max_name_bytes` (the host keeps every step
    /// name for the run, so both bound what a run makes it hold).
    pub fn next_checkpoint_name(&self, step: &str) -> Result<String, TaskError> {
        self.check_name("step name", step)?;
        self.count_step(step)
    }

    /// [`TaskContext::next_checkpoint_name`] for a step name the host made from a name it has
    /// checked already (`$awaitEvent:<event>`).
    fn count_step(&self, step: &str) -> Result<String, TaskError> {
        {
            let mut usage = self.inner.usage.lock().unwrap();
            usage.steps += 1;
            self.inner
                .limits
                .check("max_steps", "steps in this execution", usage.steps)
                .map_err(TaskError::Failed)?;
        }
        let mut uses = self.inner.step_uses.lock().unwrap();
        let n = match uses.get_mut(step) {
            Some(n) => {
                *n += 1;
                *n
            }
            None => {
                uses.insert(step.to_string(), 1);
                1
            }
        };
        Ok(if n == 1 {
            step.to_string()
        } else {
            format!("{step}#{n}")
        })
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

    /// Stores a checkpoint (and renews the lease, as the SDKs do). The value counts against
    /// `max_checkpoint_bytes` and, with every other checkpoint of the task, against
    /// `max_checkpoint_total_bytes`.
    pub async fn store_checkpoint(
        &self,
        checkpoint_name: &str,
        value: &Value,
    ) -> Result<(), TaskError> {
        let i = &self.inner;
        if checkpoint_name.is_empty() || checkpoint_name.contains('\0') {
            return Err(TaskError::Failed(limits::invalid_call(format!(
                "checkpoint name {} must be non-empty text without NUL characters",
                limits::preview(checkpoint_name)
            ))));
        }
        // A step name within max_name_bytes, plus the `#<n>` of a repeated step.
        let name_limit = i.limits.max_name_bytes.saturating_add(11);
        if checkpoint_name.len() as u64 > name_limit {
            return Err(TaskError::Failed(limits::exceeded(
                "max_name_bytes",
                i.limits.max_name_bytes,
                "the checkpoint name",
                checkpoint_name.len() as u64,
            )));
        }
        let size = absurd_client::jsonb::text_len(value);
        i.limits
            .check("max_checkpoint_bytes", "the checkpoint's value", size)
            .map_err(TaskError::Failed)?;
        {
            let mut usage = i.usage.lock().unwrap();
            let total = usage.checkpoint_bytes.saturating_add(size);
            i.limits
                .check(
                    "max_checkpoint_total_bytes",
                    "the task's checkpoints together",
                    total,
                )
                .map_err(TaskError::Failed)?;
            usage.checkpoint_bytes = total;
        }
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
        Ok(())
    }

    /// Suspends the run until `wake_at` (the run is re-executed from the start then, and
    /// completed steps replay from their checkpoints). Returns `Ok(())` once the time has come.
    pub async fn sleep_until(&self, step: &str, wake_at: DateTime<Utc>) -> Result<(), TaskError> {
        if wake_at > latest_wake_up() {
            return Err(TaskError::Failed(limits::invalid_call(format!(
                "sleep_until({}, {wake_at}): the wake-up time is after {}",
                limits::preview(step),
                latest_wake_up()
            ))));
        }
        let name = self.next_checkpoint_name(step)?;
        self.sleep(name, |_| Ok(wake_at)).await
    }

    /// Suspends the run for `seconds`, counted on the database clock. A negative number
    /// sleeps not at all; NaN, infinity and a wake-up time past [`latest_wake_up`] fail the run
    /// as `$InvalidCall`.
    pub async fn sleep_for(&self, step: &str, seconds: f64) -> Result<(), TaskError> {
        if !seconds.is_finite() {
            return Err(TaskError::Failed(limits::invalid_call(format!(
                "sleep_for({}, seconds = {seconds}): seconds must be a finite number",
                limits::preview(step)
            ))));
        }
        let too_far = || {
            TaskError::Failed(limits::invalid_call(format!(
                "sleep_for({}, seconds = {seconds}): the wake-up time would be after {}",
                limits::preview(step),
                latest_wake_up()
            )))
        };
        // Whole milliseconds, saturating; a span past the latest wake-up is refused below.
        let millis = (seconds.max(0.0) * 1000.0).min(i64::MAX as f64) as i64;
        let delta = TimeDelta::try_milliseconds(millis).ok_or_else(too_far)?;
        let name = self.next_checkpoint_name(step)?;
        self.sleep(name, |now| {
            now.checked_add_signed(delta)
                .filter(|t| *t <= latest_wake_up())
                .ok_or_else(too_far)
        })
        .await
    }

    /// The error that ends a run the database has just put to sleep; `until_a_time` says
    /// whether it wakes at a time of its own (see [`ContextSettings::suspended_until_a_time`]).
    fn suspend(&self, until_a_time: bool) -> TaskError {
        if until_a_time {
            self.inner
                .suspended_until_a_time
                .store(true, Ordering::Relaxed);
        }
        TaskError::Suspended
    }

    /// The database's clock (`absurd.current_time()`, which honours `absurd.fake_now`). Wake-up
    /// times are compared with it, as `claim_task` compares `available_at` with it: judged by
    /// the host's clock instead, a host running behind the database would find a woken task
    /// "not yet" due and put it back to sleep over and over.
    async fn db_now(&self) -> Result<DateTime<Utc>, TaskError> {
        let i = &self.inner;
        i.client
            .current_time(&i.queue)
            .await
            .map_err(client_failure)
    }

    async fn sleep(
        &self,
        name: String,
        wake_at: impl FnOnce(DateTime<Utc>) -> Result<DateTime<Utc>, TaskError>,
    ) -> Result<(), TaskError> {
        let now = self.db_now().await?;
        let wake_at = match self.checkpoint(&name) {
            Some(v) => v
                .as_str()
                .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                .map(|d| d.with_timezone(&Utc))
                .ok_or_else(|| {
                    TaskError::Failed(
                        Failure::new(
                            FailureName::BadCheckpoint,
                            format!(
                                "checkpoint {} should hold a wake-up time, found {}",
                                limits::preview(&name),
                                limits::preview(&v.to_string())
                            ),
                        )
                        .permanent(),
                    )
                })?,
            None => {
                let wake_at = wake_at(now)?;
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
        Err(self.suspend(true))
    }

    /// Waits for an event. `Ok(Some(payload))` once emitted, `Ok(None)` when `timeout_secs`
    /// passed first; otherwise the run suspends until the event is emitted.
    pub async fn await_event(
        &self,
        event: &str,
        step: Option<&str>,
        timeout_secs: Option<i32>,
    ) -> Result<Option<Value>, TaskError> {
        let i = &self.inner;
        self.check_name("event name", event)?;
        if let Some(g) = &i.grants {
            g.check_await(event).map_err(TaskError::Failed)?;
        }
        if timeout_secs.is_some_and(|t| t < 0) {
            return Err(TaskError::Failed(limits::invalid_call(format!(
                "await_event({}): timeout {} s is negative",
                limits::preview(event),
                timeout_secs.unwrap_or_default()
            ))));
        }
        let name = match step {
            Some(step) => self.next_checkpoint_name(step)?,
            None => self.count_step(&format!("$awaitEvent:{event}"))?,
        };
        if let Some(v) = self.checkpoint(&name) {
            return Ok(Some(v));
        }
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
                &i.limits.read_limits(),
            )
            .await
            .map_err(client_failure)?;
        if should_suspend {
            return Err(self.suspend(timeout_secs.is_some()));
        }
        // A payload over the limit or unreadable fails the run for good: retrying reads the
        // same payload again.
        Ok(Some(payload?.unwrap_or(Value::Null)))
    }

    /// Emits an event into the run's queue: at most `max_emits` per run, names within
    /// `max_name_bytes`, payloads within `max_event_payload_bytes`, names the task type's
    /// `emit_events` grants.
    pub async fn emit_event(&self, event: &str, payload: &Value) -> Result<(), TaskError> {
        let i = &self.inner;
        self.check_name("event name", event)?;
        if let Some(g) = &i.grants {
            g.check_emit(event).map_err(TaskError::Failed)?;
        }
        i.limits
            .check(
                "max_event_payload_bytes",
                "the event payload",
                absurd_client::jsonb::text_len(payload),
            )
            .map_err(TaskError::Failed)?;
        self.count(
            |u| &mut u.emits,
            "max_emits",
            "emit-event calls in this run",
        )?;
        i.client
            .emit_event(&i.queue, event, Some(payload))
            .await
            .map_err(client_failure)
    }

    /// Spawns another task (in `queue`, or this task's queue), within the run's limits
    /// (`max_spawns`, names, params and headers) and the task type's spawn grants.
    pub async fn spawn(
        &self,
        queue: Option<&str>,
        task_name: &str,
        params: &Value,
        options: &SpawnOptions,
    ) -> Result<Spawned, TaskError> {
        let i = &self.inner;
        let queue = queue.unwrap_or(&i.queue);
        let options = self.spawn_checks(queue, task_name, params, options)?;
        // On our schema the new task is recorded as this task's child (cancelled with it).
        let spawned = if self.has_task_results().await? {
            i.client
                .spawn_child(queue, task_name, params, &options, &i.queue, i.run.task_id)
                .await
        } else {
            i.client.spawn(queue, task_name, params, &options).await
        };
        spawned.map_err(spawn_failure)
    }

    /// [`TaskContext::spawn`] returning the new task's id only, for guests that need no more
    /// (the wasm `spawn` import). A spawn with an idempotency key is replayed: on our schema
    /// its task id is written in the same statement as the checkpoint
    /// `$absurd_host.spawn:<queue>:<key>`, and a re-execution that spawns with the same queue
    /// and key again gets the id from that checkpoint without a round trip (the answer the
    /// key would give anyway). The checks and limits apply to a replayed spawn as to any.
    pub async fn spawn_replayable(
        &self,
        queue: Option<&str>,
        task_name: &str,
        params: &Value,
        options: &SpawnOptions,
    ) -> Result<Uuid, TaskError> {
        let i = &self.inner;
        let queue = queue.unwrap_or(&i.queue);
        let Some(key) = options.idempotency_key.clone() else {
            return Ok(self
                .spawn(Some(queue), task_name, params, options)
                .await?
                .task_id);
        };
        let options = self.spawn_checks(queue, task_name, params, options)?;
        if !self.has_task_results().await? {
            return i
                .client
                .spawn(queue, task_name, params, &options)
                .await
                .map(|s| s.task_id)
                .map_err(spawn_failure);
        }
        let name = format!("$absurd_host.spawn:{queue}:{key}");
        if let Some(id) = self
            .checkpoint(&name)
            .as_ref()
            .and_then(Value::as_str)
            .and_then(|s| Uuid::parse_str(s).ok())
        {
            return Ok(id);
        }
        // What the checkpoint weighs: its value, a task id as JSON text.
        let size = 38;
        {
            let mut usage = i.usage.lock().unwrap();
            let total = usage.checkpoint_bytes.saturating_add(size);
            i.limits
                .check(
                    "max_checkpoint_total_bytes",
                    "the task's checkpoints together",
                    total,
                )
                .map_err(TaskError::Failed)?;
            usage.checkpoint_bytes = total;
        }
        if let Some(local) = &i.local_runs {
            if let Some(permit) = local.slot(&i.client, queue).await {
                let claim = local.claimant.claim_for();
                let (spawned, claimed) = i
                    .client
                    .spawn_child_and_claim(
                        queue,
                        task_name,
                        params,
                        &options,
                        &i.queue,
                        i.run.task_id,
                        i.run.run_id,
                        &name,
                        Some(i.claim_timeout_secs),
                        claim,
                    )
                    .await
                    .map_err(spawn_failure)?;
                if let Some(claimed) = claimed {
                    (local.start)(queue.to_string(), claimed, permit);
                }
                return Ok(spawned.task_id);
            }
        }
        i.client
            .spawn_child_checkpointed(
                queue,
                task_name,
                params,
                &options,
                &i.queue,
                i.run.task_id,
                i.run.run_id,
                &name,
                Some(i.claim_timeout_secs),
            )
            .await
            .map(|s| s.task_id)
            .map_err(spawn_failure)
    }

    /// What every spawn checks and counts; returns the options with the worker's defaults.
    fn spawn_checks(
        &self,
        queue: &str,
        task_name: &str,
        params: &Value,
        options: &SpawnOptions,
    ) -> Result<SpawnOptions, TaskError> {
        let i = &self.inner;
        self.check_name("the spawned task's name", task_name)?;
        self.check_name("the spawn's queue name", queue)?;
        if let Some(key) = &options.idempotency_key {
            self.check_text("the spawn's idempotency key", key)?;
        }
        if let Some(g) = &i.grants {
            g.check_spawn(&i.queue, i.dlq.as_deref(), queue, task_name)
                .map_err(TaskError::Failed)?;
        }
        let l = &i.limits;
        l.check(
            "max_spawn_params_bytes",
            "the spawned task's params",
            absurd_client::jsonb::text_len(params),
        )
        .map_err(TaskError::Failed)?;
        if let Some(h) = &options.headers {
            l.check(
                "max_spawn_headers_bytes",
                "the spawned task's headers",
                absurd_client::jsonb::text_len(h),
            )
            .map_err(TaskError::Failed)?;
        }
        self.count(|u| &mut u.spawns, "max_spawns", "spawn calls in this run")?;
        let mut options = options.clone();
        let d = &i.spawn_defaults;
        options.max_attempts = options.max_attempts.or(d.max_attempts);
        options.retry_strategy = options.retry_strategy.or_else(|| d.retry_strategy.clone());
        Ok(options)
    }

    /// Whether the schema has migration 0019 (asked once per worker).
    async fn has_task_results(&self) -> Result<bool, TaskError> {
        self.inner
            .task_results
            .get_or_try_init(|| self.inner.client.has_task_results())
            .await
            .copied()
            .map_err(client_failure)
    }

    /// Waits for the task `task_id` (of `queue`, or this task's queue) to finish. Returns its
    /// outcome once it has, `Ok(None)` when `timeout_secs` passed first; otherwise the run
    /// suspends (holding no worker slot) and is re-executed when the task finishes, the
    /// outcome then replaying from the step's checkpoint (by default
    /// `$awaitTaskResult:<task_id>`). At most `max_awaits` calls per run; the outcome read
    /// back is within `max_checkpoint_bytes`. On a schema without migration 0019 the run polls
    /// the task every [`AWAIT_POLL_SECS`] seconds instead.
    pub async fn await_task_result(
        &self,
        queue: Option<&str>,
        task_id: Uuid,
        step: Option<&str>,
        timeout_secs: Option<i32>,
    ) -> Result<Option<TaskOutcome>, TaskError> {
        let i = &self.inner;
        let queue = queue.unwrap_or(&i.queue);
        self.check_name("the awaited task's queue name", queue)?;
        if let Some(g) = &i.grants {
            g.check_await_task(&i.queue, queue)
                .map_err(TaskError::Failed)?;
        }
        if timeout_secs.is_some_and(|t| t < 0) {
            return Err(TaskError::Failed(limits::invalid_call(format!(
                "await_task_result({task_id}): timeout {} s is negative",
                timeout_secs.unwrap_or_default()
            ))));
        }
        self.count(
            |u| &mut u.awaits,
            "max_awaits",
            "await-task-result calls in this run",
        )?;
        let name = match step {
            Some(step) => self.next_checkpoint_name(step)?,
            None => self.count_step(&absurd_client::children::await_step_name(&task_id))?,
        };
        if let Some(v) = self.checkpoint(&name) {
            // Written by the wake-up (another task's result): within this type's limit too.
            i.limits
                .check(
                    "max_checkpoint_bytes",
                    "the awaited task's outcome",
                    absurd_client::jsonb::text_len(&v),
                )
                .map_err(TaskError::Failed)?;
            return TaskOutcome::from_checkpoint(&name, &v).map(Some);
        }
        let max = i.limits.max_checkpoint_bytes;
        if !self.has_task_results().await? {
            return self
                .poll_task_result(queue, task_id, &name, timeout_secs)
                .await;
        }
        let (suspend, outcome) = i
            .client
            .await_task_result_bounded(
                &i.queue,
                i.run.task_id,
                i.run.run_id,
                &name,
                queue,
                task_id,
                timeout_secs,
                max,
            )
            .await
            .map_err(|e| await_failure(e, queue, task_id))?;
        if suspend {
            return Err(self.suspend(timeout_secs.is_some()));
        }
        match outcome? {
            None => Ok(None),
            Some(v) => {
                let size = absurd_client::jsonb::text_len(&v);
                let mut usage = i.usage.lock().unwrap();
                usage.checkpoint_bytes = usage.checkpoint_bytes.saturating_add(size);
                drop(usage);
                TaskOutcome::from_checkpoint(&name, &v).map(Some)
            }
        }
    }

    /// [`TaskContext::await_task_result`] on a schema without migration 0019: reads the
    /// task's result, and while it has not finished, sleeps [`AWAIT_POLL_SECS`] (the deadline
    /// of a timeout is kept in the checkpoint `<step>:deadline`).
    async fn poll_task_result(
        &self,
        queue: &str,
        task_id: Uuid,
        name: &str,
        timeout_secs: Option<i32>,
    ) -> Result<Option<TaskOutcome>, TaskError> {
        let i = &self.inner;
        let outcome = i
            .client
            .task_outcome_bounded(queue, task_id, i.limits.max_checkpoint_bytes)
            .await
            .map_err(|e| await_failure(e, queue, task_id))??;
        if let Some(v) = outcome {
            let parsed = TaskOutcome::from_checkpoint(name, &v)?;
            self.store_checkpoint(name, &v).await?;
            return Ok(Some(parsed));
        }
        self.poll_again(name, timeout_secs).await
    }

    /// A poll that found nothing yet: `Ok(None)` when the timeout of the step `name` has
    /// passed (its deadline kept in the checkpoint `<name>:deadline`), else the run is
    /// scheduled again in [`AWAIT_POLL_SECS`] (or at the deadline) and suspends.
    async fn poll_again<T>(
        &self,
        name: &str,
        timeout_secs: Option<i32>,
    ) -> Result<Option<T>, TaskError> {
        let i = &self.inner;
        let now = self.db_now().await?;
        let mut wake = now + TimeDelta::seconds(AWAIT_POLL_SECS);
        if let Some(t) = timeout_secs {
            let deadline_name = format!("{name}:deadline");
            let deadline = match self
                .checkpoint(&deadline_name)
                .and_then(|v| v.as_str().map(str::to_string))
                .and_then(|s| DateTime::parse_from_rfc3339(&s).ok())
            {
                Some(d) => d.with_timezone(&Utc),
                None => {
                    let d = now + TimeDelta::seconds(i64::from(t));
                    let stamp =
                        Value::String(d.to_rfc3339_opts(chrono::SecondsFormat::Micros, false));
                    self.store_checkpoint(&deadline_name, &stamp).await?;
                    d
                }
            };
            if deadline <= now {
                return Ok(None);
            }
            wake = wake.min(deadline);
        }
        i.client
            .schedule_run(&i.queue, i.run.run_id, wake)
            .await
            .map_err(client_failure)?;
        Err(self.suspend(true))
    }

    /// Waits until any of `tasks` (`(queue, task id)`, the queue defaulting to this task's) has
    /// ended, and returns the position in `tasks` of the one that ended first with its outcome,
    /// `Ok(None)` when `timeout_secs` passed first. Tasks ended already are looked at in list
    /// order. Until one ends the run suspends (holding no worker slot) and is re-executed when
    /// the first one ends; the answer replays from the step's checkpoint (by default
    /// `$awaitAny`, `$awaitAny#2`, …), and a replay whose list no longer has the recorded task
    /// at the recorded position fails the run (`$BadCheckpoint`). One call counts as one of
    /// `max_awaits`; the list holds 1 to `max_awaits` tasks. On a schema without migrations
    /// 0019 and 0023 the run polls the tasks every [`AWAIT_POLL_SECS`] seconds instead.
    pub async fn await_any_task_result(
        &self,
        tasks: &[(Option<&str>, Uuid)],
        step: Option<&str>,
        timeout_secs: Option<i32>,
    ) -> Result<Option<(usize, TaskOutcome)>, TaskError> {
        let i = &self.inner;
        if tasks.is_empty() {
            return Err(TaskError::Failed(limits::invalid_call(
                "await_any_task_result: the list of tasks is empty".to_string(),
            )));
        }
        i.limits
            .check(
                "max_awaits",
                "the tasks of one await_any_task_result call",
                tasks.len() as u64,
            )
            .map_err(TaskError::Failed)?;
        if timeout_secs.is_some_and(|t| t < 0) {
            return Err(TaskError::Failed(limits::invalid_call(format!(
                "await_any_task_result: timeout {} s is negative",
                timeout_secs.unwrap_or_default()
            ))));
        }
        let mut list: Vec<(String, Uuid)> = Vec::with_capacity(tasks.len());
        for (q, id) in tasks {
            let queue = q.unwrap_or(&i.queue);
            self.check_name("the awaited task's queue name", queue)?;
            if let Some(g) = &i.grants {
                g.check_await_task(&i.queue, queue)
                    .map_err(TaskError::Failed)?;
            }
            list.push((queue.to_string(), *id));
        }
        self.count(
            |u| &mut u.awaits,
            "max_awaits",
            "await-task-result calls in this run",
        )?;
        let name = match step {
            Some(step) => self.next_checkpoint_name(step)?,
            None => self.count_step("$awaitAny")?,
        };
        if let Some(v) = self.checkpoint(&name) {
            i.limits
                .check(
                    "max_checkpoint_bytes",
                    "the awaited task's outcome",
                    absurd_client::jsonb::text_len(&v),
                )
                .map_err(TaskError::Failed)?;
            return first_outcome(&name, &v, &list).map(Some);
        }
        if !self.has_task_results().await? {
            return self.poll_any_task_result(&list, &name, timeout_secs).await;
        }
        let (suspend, outcome) = i
            .client
            .await_any_task_result_bounded(
                &i.queue,
                i.run.task_id,
                i.run.run_id,
                &name,
                &list,
                timeout_secs,
                i.limits.max_checkpoint_bytes,
            )
            .await
            .map_err(|e| await_failure(e, &list[0].0, list[0].1))?;
        if suspend {
            return Err(self.suspend(timeout_secs.is_some()));
        }
        match outcome? {
            None => Ok(None),
            Some(v) => {
                let size = absurd_client::jsonb::text_len(&v);
                let mut usage = i.usage.lock().unwrap();
                usage.checkpoint_bytes = usage.checkpoint_bytes.saturating_add(size);
                drop(usage);
                first_outcome(&name, &v, &list).map(Some)
            }
        }
    }

    /// [`TaskContext::await_any_task_result`] on a schema without migrations 0019 and 0023:
    /// reads the tasks' results in list order, and while none has ended, sleeps
    /// [`AWAIT_POLL_SECS`] (a timeout's deadline is kept in the checkpoint `<step>:deadline`).
    async fn poll_any_task_result(
        &self,
        list: &[(String, Uuid)],
        name: &str,
        timeout_secs: Option<i32>,
    ) -> Result<Option<(usize, TaskOutcome)>, TaskError> {
        let i = &self.inner;
        for (n, (queue, task_id)) in list.iter().enumerate() {
            let outcome = i
                .client
                .task_outcome_bounded(queue, *task_id, i.limits.max_checkpoint_bytes)
                .await
                .map_err(|e| await_failure(e, queue, *task_id))??;
            if let Some(mut v) = outcome {
                if let Some(m) = v.as_object_mut() {
                    m.insert("index".into(), json!(n));
                    m.insert("task_id".into(), json!(task_id.to_string()));
                    m.insert("queue".into(), json!(queue));
                }
                let parsed = first_outcome(name, &v, list)?;
                self.store_checkpoint(name, &v).await?;
                return Ok(Some(parsed));
            }
        }
        self.poll_again(name, timeout_secs).await
    }

    /// Cancels `task_id` (of `queue`, default this task's queue) if it is a child of this task
    /// (spawned from one of its runs): `Ok(Ok(true))` when it was cancelled now, `Ok(Ok(false))`
    /// when it had ended already, `Ok(Err(why))` when it is not this task's child or the schema
    /// records no children (one installed by `absurdctl init`). Cancelling it cancels its own
    /// children too (migration 0019's cascade).
    pub async fn cancel_child(
        &self,
        queue: Option<&str>,
        task_id: Uuid,
    ) -> Result<Result<bool, String>, TaskError> {
        let i = &self.inner;
        let queue = queue.unwrap_or(&i.queue);
        self.check_name("the child's queue name", queue)?;
        if !self.has_task_results().await? {
            return Ok(Err(format!(
                "cannot cancel task {task_id}: this database records no children (a schema \
                 without absurd-host's migration 0019)"
            )));
        }
        match i
            .client
            .cancel_child(&i.queue, i.run.task_id, queue, task_id)
            .await
        {
            Ok(Some(cancelled)) => Ok(Ok(cancelled)),
            Ok(None) => Ok(Err(format!(
                "task {task_id} of queue {queue:?} is not a child of this task"
            ))),
            // A queue that does not exist holds no child of this task: the guest's mistake,
            // answered as such (found by the import fuzzer), not a failure of the host.
            Err(e @ (ClientError::QueueNotFound(_) | ClientError::InvalidInput(_))) => Ok(Err(
                format!("task {task_id} of queue {queue:?} is not a child of this task: {e}"),
            )),
            Err(e) => Err(client_failure(e)),
        }
    }

    /// Extends the lease by `seconds` (default: the claim timeout), at most the run's timeout:
    /// a lease longer than the run may last would only keep a crashed worker's run from
    /// being retried.
    pub async fn heartbeat(&self, seconds: Option<i64>) -> Result<(), TaskError> {
        let i = &self.inner;
        let secs = seconds.unwrap_or(i.claim_timeout_secs as i64).max(1);
        if let Some(t) = i.timeout {
            let limit = t.as_secs_f64().ceil() as i64;
            if secs > limit.max(i.claim_timeout_secs as i64) {
                return Err(TaskError::Failed(
                    Failure::new(
                        FailureName::LimitExceeded,
                        format!(
                            "heartbeat of {secs} s is longer than the task's timeout of {limit} s (timeout)"
                        ),
                    )
                    .with_details(json!({"limit": "timeout", "value": limit, "actual": secs}))
                    .permanent(),
                ));
            }
        }
        let secs = secs.min(i32::MAX as i64) as i32;
        i.client
            .extend_claim(&i.queue, i.run.run_id, secs)
            .await
            .map_err(client_failure)
    }

    /// Counts one use of a per-run allowance, refusing it past its limit.
    fn count(
        &self,
        field: impl FnOnce(&mut Usage) -> &mut u64,
        key: &str,
        what: &str,
    ) -> Result<(), TaskError> {
        let mut usage = self.inner.usage.lock().unwrap();
        let n = field(&mut usage);
        *n += 1;
        self.inner
            .limits
            .check(key, what, *n)
            .map_err(TaskError::Failed)
    }
}

/// How often a run waiting for another task's result polls it, on a schema without migration
/// 0019's wake-ups (one installed by `absurdctl init`).
pub const AWAIT_POLL_SECS: i64 = 2;

/// How an awaited task ended (the checkpoint `{"state", "result" | "failure"}`).
#[derive(Debug, Clone, PartialEq)]
pub enum TaskOutcome {
    Completed(Value),
    Failed(Value),
    Cancelled,
}

impl TaskOutcome {
    /// Reads the outcome stored under the checkpoint `name`.
    pub fn from_checkpoint(name: &str, v: &Value) -> Result<TaskOutcome, TaskError> {
        let field = |k: &str| v.get(k).cloned().unwrap_or(Value::Null);
        match v.get("state").and_then(Value::as_str) {
            Some("completed") => Ok(TaskOutcome::Completed(field("result"))),
            Some("failed") => Ok(TaskOutcome::Failed(field("failure"))),
            Some("cancelled") => Ok(TaskOutcome::Cancelled),
            _ => Err(TaskError::Failed(
                Failure::new(
                    FailureName::BadCheckpoint,
                    format!(
                        "checkpoint {} should hold a task's outcome, found {}",
                        limits::preview(name),
                        limits::preview(&v.to_string())
                    ),
                )
                .permanent(),
            )),
        }
    }
}

/// The answer of an `await_any_task_result` step: the position it names, checked against the
/// list of this call (a replay with another list would otherwise return a different task's
/// outcome), and the outcome.
fn first_outcome(
    name: &str,
    v: &Value,
    list: &[(String, Uuid)],
) -> Result<(usize, TaskOutcome), TaskError> {
    let index = v.get("index").and_then(Value::as_u64).map(|n| n as usize);
    let task = v.get("task_id").and_then(Value::as_str);
    let matches = index
        .and_then(|n| list.get(n))
        .is_some_and(|(_, id)| task.and_then(|t| Uuid::parse_str(t).ok()) == Some(*id));
    if !matches {
        return Err(TaskError::Failed(
            Failure::new(
                FailureName::BadCheckpoint,
                format!(
                    "checkpoint {} records task {} at position {} of the awaited tasks, which \
                     this execution's list ({} tasks) does not have there: the task is not \
                     deterministic",
                    limits::preview(name),
                    task.unwrap_or("(none)"),
                    index.map_or("(none)".to_string(), |n| n.to_string()),
                    list.len()
                ),
            )
            .permanent(),
        ));
    }
    Ok((index.unwrap_or(0), TaskOutcome::from_checkpoint(name, v)?))
}

/// A client error of a spawn: one the database refused (no such queue, bad options) is the
/// task's to handle (`$SpawnError`), anything else is handled as every client error.
fn spawn_failure(e: ClientError) -> TaskError {
    match e {
        ClientError::InvalidInput(_)
        | ClientError::InvalidRetryStrategy(_)
        | ClientError::QueueNotFound(_) => {
            TaskError::Failed(Failure::new(FailureName::SpawnError, e.to_string()).permanent())
        }
        other => client_failure(other),
    }
}

/// A client error while waiting for a task: an unknown task or queue is the caller's mistake
/// (permanent), anything else is handled as every client error inside a task.
fn await_failure(e: ClientError, queue: &str, task_id: Uuid) -> TaskError {
    let unknown = match &e {
        ClientError::Rejected(m) => {
            m.contains("not found in queue") || m.contains("does not exist")
        }
        ClientError::QueueNotFound(_) | ClientError::InvalidInput(_) => true,
        _ => false,
    };
    match e {
        _ if unknown => TaskError::Failed(
            Failure::new(
                FailureName::InvalidCall,
                format!("await_task_result({task_id}, queue {queue:?}): {e}"),
            )
            .permanent(),
        ),
        other => client_failure(other),
    }
}

/// The latest wake-up time a sleep may ask for: far enough for any task, and well inside
/// what both chrono and Postgres' `timestamptz` can hold.
pub fn latest_wake_up() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("9999-12-31T23:59:59Z")
        .expect("a valid timestamp")
        .with_timezone(&Utc)
}
