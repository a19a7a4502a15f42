//! The per-run store: what a guest can reach, and the host side of the `task` world's imports.

use std::sync::{Arc, Mutex};

use serde_json::Value;
use tracing::{debug, error, info, trace, warn};
use wasmtime::component::{Linker, ResourceTable, WasmStr};
use wasmtime::ResourceLimiter;
use wasmtime::StoreContextMut;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::absurd::task::{durable, log, types};
use super::bindings_v2::absurd::task::{durable as durable2, log as log2, types as types2};
use crate::execute::{Failure, TaskContext, TaskError, TaskOutcome};
use absurd_client::{Cancellation, RetryStrategy, SpawnOptions};

/// Why the host ended a guest's execution from inside a host call. Carried through the trap
/// as the error value and recovered by the handler.
#[derive(Debug)]
pub enum Stop {
    /// The run is suspended (sleep or event wait); nothing more to report.
    Suspended,
    /// The run was cancelled or lost its lease.
    Lost(absurd_client::ClientError),
    /// A host-side failure while serving the guest (the database was unreachable, …).
    Failed(Failure),
    /// The guest tried to grow its memory beyond its cap.
    MemoryLimit { desired: usize, cap: usize },
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stop::Suspended => write!(f, "run suspended"),
            Stop::Lost(e) => write!(f, "run lost: {e}"),
            Stop::Failed(x) => write!(f, "{}: {}", x.name, x.message),
            Stop::MemoryLimit { desired, cap } => {
                write!(
                    f,
                    "memory limit: the guest asked for {desired} bytes, the cap is {cap}"
                )
            }
        }
    }
}

impl std::error::Error for Stop {}

fn stop(e: TaskError) -> wasmtime::Error {
    wasmtime::Error::new(match e {
        TaskError::Suspended => Stop::Suspended,
        TaskError::RunLost(e) => Stop::Lost(e),
        TaskError::Failed(f) => Stop::Failed(f),
    })
}

/// A bounded capture of guest output (log calls, stdout, stderr): keeps the first
/// `capacity` bytes, counts the rest, and never fails a write (a guest that floods its
/// output loses the excess, not its run).
#[derive(Clone)]
pub struct OutputBudget {
    inner: Arc<Mutex<Captured>>,
}

#[derive(Default)]
pub struct Captured {
    pub bytes: Vec<u8>,
    pub dropped: u64,
    capacity: usize,
}

impl OutputBudget {
    pub fn new(capacity: usize) -> OutputBudget {
        OutputBudget {
            inner: Arc::new(Mutex::new(Captured {
                capacity,
                ..Default::default()
            })),
        }
    }

    /// Takes up to the remaining budget of `data`; returns whether all of it fitted.
    pub fn take(&self, data: &[u8]) -> bool {
        let mut c = self.inner.lock().unwrap();
        let room = c.capacity.saturating_sub(c.bytes.len());
        let n = room.min(data.len());
        c.bytes.extend_from_slice(&data[..n]);
        c.dropped += (data.len() - n) as u64;
        n == data.len()
    }

    pub fn has_room(&self) -> bool {
        let c = self.inner.lock().unwrap();
        c.bytes.len() < c.capacity
    }

    pub fn dropped(&self) -> u64 {
        self.inner.lock().unwrap().dropped
    }
}

/// One of the guest's stdout/stderr streams, writing into the shared budget with a prefix.
#[derive(Clone)]
pub struct GuestStream {
    budget: OutputBudget,
    /// The stream's own copy (for the failure payload's tail), bounded too.
    own: OutputBudget,
}

impl GuestStream {
    pub fn new(budget: OutputBudget, own_capacity: usize) -> GuestStream {
        GuestStream {
            budget,
            own: OutputBudget::new(own_capacity),
        }
    }

    /// The last `n` bytes the guest wrote to this stream (lossy UTF-8).
    pub fn tail(&self, n: usize) -> String {
        let c = self.own.inner.lock().unwrap();
        let start = c.bytes.len().saturating_sub(n);
        String::from_utf8_lossy(&c.bytes[start..]).into_owned()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.own.inner.lock().unwrap().bytes).into_owned()
    }
}

impl IsTerminal for GuestStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestStream {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl tokio::io::AsyncWrite for GuestStream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.budget.take(buf);
        self.own.take(buf);
        // Accept everything: what does not fit is counted and dropped.
        std::task::Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// Caps linear memory (and tables/instances) per run, remembering a refused growth so the
/// trap can be reported as `$MemoryLimit`.
pub struct Limiter {
    pub memory_cap: usize,
    pub table_elements: usize,
    pub instances: usize,
    pub tables: usize,
    pub memories: usize,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_cap {
            return Err(wasmtime::Error::new(Stop::MemoryLimit {
                desired,
                cap: self.memory_cap,
            }));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= self.table_elements)
    }

    fn instances(&self) -> usize {
        self.instances
    }
    fn tables(&self) -> usize {
        self.tables
    }
    fn memories(&self) -> usize {
        self.memories
    }
}

/// Everything one run's store holds.
pub struct RunState {
    pub wasi: WasiCtx,
    pub table: ResourceTable,
    pub limiter: Limiter,
    pub ctx: TaskContext,
    pub log_budget: OutputBudget,
    /// Log lines refused by the budget (reported once).
    pub logs_dropped: u64,
}

impl WasiView for RunState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for RunState {}
impl types2::Host for RunState {}

/// Parses JSON a guest passed, refusing what PostgreSQL's `jsonb` cannot store (so the guest
/// gets the error, not a database exception later).
fn parse_json(what: &str, text: &str) -> Result<Value, String> {
    let v = serde_json::from_str(text).map_err(|e| format!("{what} is not valid JSON: {e}"))?;
    if absurd_client::jsonb::has_nul(&v) {
        return Err(format!(
            "{what} holds a NUL character (\\u0000), which PostgreSQL's jsonb cannot store"
        ));
    }
    Ok(v)
}

/// Refuses a text the guest passed before it is parsed, when it is over the limit `key`.
fn check_text(ctx: &TaskContext, key: &str, what: &str, text: &str) -> wasmtime::Result<()> {
    ctx.limits()
        .check(key, what, text.len() as u64)
        .map_err(|f| stop(TaskError::Failed(f)))
}

impl durable::Host for RunState {
    async fn begin_step(&mut self, name: String) -> wasmtime::Result<durable::Step> {
        let checkpoint_name = self.ctx.next_checkpoint_name(&name).map_err(stop)?;
        let value = self.ctx.checkpoint(&checkpoint_name).map(|v| v.to_string());
        Ok(durable::Step {
            checkpoint_name,
            value,
        })
    }

    async fn complete_step(
        &mut self,
        checkpoint_name: String,
        value: String,
    ) -> wasmtime::Result<Result<(), String>> {
        check_text(
            &self.ctx,
            "max_checkpoint_bytes",
            "the checkpoint's value",
            &value,
        )?;
        let value = match parse_json("the step's value", &value) {
            Ok(v) => v,
            Err(e) => return Ok(Err(e)),
        };
        self.ctx
            .store_checkpoint(&checkpoint_name, &value)
            .await
            .map_err(stop)?;
        Ok(Ok(()))
    }

    async fn sleep_for(&mut self, step_name: String, seconds: f64) -> wasmtime::Result<()> {
        self.ctx.sleep_for(&step_name, seconds).await.map_err(stop)
    }

    async fn sleep_until(&mut self, step_name: String, unix_millis: i64) -> wasmtime::Result<()> {
        let Some(at) = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(unix_millis) else {
            return Err(stop(TaskError::Failed(crate::limits::invalid_call(
                format!(
                    "sleep-until({}, unix-millis = {unix_millis}): out of range",
                    crate::limits::preview(&step_name)
                ),
            ))));
        };
        self.ctx.sleep_until(&step_name, at).await.map_err(stop)
    }

    async fn await_event(
        &mut self,
        event: String,
        step_name: Option<String>,
        timeout_seconds: Option<u32>,
    ) -> wasmtime::Result<Option<String>> {
        let timeout = timeout_seconds.map(|t| t.min(i32::MAX as u32) as i32);
        let r = self
            .ctx
            .await_event(&event, step_name.as_deref(), timeout)
            .await
            .map_err(stop)?;
        Ok(r.map(|v| v.to_string()))
    }

    async fn emit_event(
        &mut self,
        event: String,
        payload: String,
    ) -> wasmtime::Result<Result<(), String>> {
        if event.trim().is_empty() {
            return Ok(Err("event name must not be empty".into()));
        }
        self.ctx.check_name("event name", &event).map_err(stop)?;
        check_text(
            &self.ctx,
            "max_event_payload_bytes",
            "the event payload",
            &payload,
        )?;
        let payload = match parse_json("the event payload", &payload) {
            Ok(v) => v,
            Err(e) => return Ok(Err(e)),
        };
        self.ctx.emit_event(&event, &payload).await.map_err(stop)?;
        Ok(Ok(()))
    }

    async fn spawn(
        &mut self,
        task_name: String,
        params: String,
        options: durable::SpawnOptions,
    ) -> wasmtime::Result<Result<String, String>> {
        let extra = SpawnExtra::default();
        self.spawn_task(task_name, params, options, extra).await
    }

    async fn heartbeat(&mut self, seconds: Option<u32>) -> wasmtime::Result<()> {
        self.ctx
            .heartbeat(seconds.map(i64::from))
            .await
            .map_err(stop)
    }
}

/// What `spawn` of absurd:task@0.2.x adds to 0.1.0's options.
#[derive(Default)]
struct SpawnExtra {
    retry_strategy: Option<RetryStrategy>,
    cancellation: Option<Cancellation>,
}

impl RunState {
    /// `spawn` of either world: 0.2.x's retry strategy and cancellation policy in `extra`. A
    /// spawn with an idempotency key replays from a checkpoint
    /// ([`TaskContext::spawn_replayable`]).
    async fn spawn_task(
        &mut self,
        task_name: String,
        params: String,
        options: durable::SpawnOptions,
        extra: SpawnExtra,
    ) -> wasmtime::Result<Result<String, String>> {
        self.ctx
            .check_name("the spawned task's name", &task_name)
            .map_err(stop)?;
        check_text(
            &self.ctx,
            "max_spawn_params_bytes",
            "the spawned task's params",
            &params,
        )?;
        if let Some(h) = &options.headers {
            check_text(
                &self.ctx,
                "max_spawn_headers_bytes",
                "the spawned task's headers",
                h,
            )?;
        }
        let params = match parse_json("the params", &params) {
            Ok(v) => v,
            Err(e) => return Ok(Err(e)),
        };
        let headers = match options
            .headers
            .as_deref()
            .map(|h| parse_json("the headers", h))
            .transpose()
        {
            Ok(h) => h,
            Err(e) => return Ok(Err(e)),
        };
        let opts = SpawnOptions {
            headers,
            max_attempts: options.max_attempts.map(|m| m.min(i32::MAX as u32) as i32),
            idempotency_key: options.idempotency_key,
            retry_strategy: extra.retry_strategy,
            cancellation: extra.cancellation,
        };
        match self
            .ctx
            .spawn_replayable(options.queue.as_deref(), &task_name, &params, &opts)
            .await
        {
            Ok(id) => Ok(Ok(id.to_string())),
            // A spawn the database refused (no such queue, a bad retry strategy) is the
            // guest's to handle; an exceeded limit or a missing grant ends the run.
            Err(TaskError::Failed(f)) if f.name == crate::execute::FailureName::SpawnError => {
                Ok(Err(f.message))
            }
            Err(e) => Err(stop(e)),
        }
    }
}

impl durable2::Host for RunState {
    async fn begin_step(&mut self, name: String) -> wasmtime::Result<durable2::Step> {
        let s = <Self as durable::Host>::begin_step(self, name).await?;
        Ok(durable2::Step {
            checkpoint_name: s.checkpoint_name,
            value: s.value,
        })
    }

    async fn complete_step(
        &mut self,
        checkpoint_name: String,
        value: String,
    ) -> wasmtime::Result<Result<(), String>> {
        <Self as durable::Host>::complete_step(self, checkpoint_name, value).await
    }

    async fn sleep_for(&mut self, step_name: String, seconds: f64) -> wasmtime::Result<()> {
        <Self as durable::Host>::sleep_for(self, step_name, seconds).await
    }

    async fn sleep_until(&mut self, step_name: String, unix_millis: i64) -> wasmtime::Result<()> {
        <Self as durable::Host>::sleep_until(self, step_name, unix_millis).await
    }

    async fn await_event(
        &mut self,
        event: String,
        step_name: Option<String>,
        timeout_seconds: Option<u32>,
    ) -> wasmtime::Result<Option<String>> {
        <Self as durable::Host>::await_event(self, event, step_name, timeout_seconds).await
    }

    async fn emit_event(
        &mut self,
        event: String,
        payload: String,
    ) -> wasmtime::Result<Result<(), String>> {
        <Self as durable::Host>::emit_event(self, event, payload).await
    }

    async fn spawn(
        &mut self,
        task_name: String,
        params: String,
        options: durable2::SpawnOptions,
    ) -> wasmtime::Result<Result<String, String>> {
        let extra = SpawnExtra {
            retry_strategy: options.retry_strategy.map(|r| RetryStrategy {
                kind: match r.kind {
                    durable2::RetryKind::None => "none",
                    durable2::RetryKind::Fixed => "fixed",
                    durable2::RetryKind::Exponential => "exponential",
                }
                .to_string(),
                base_seconds: r.base_seconds,
                factor: r.factor,
                max_seconds: r.max_seconds,
            }),
            cancellation: options.cancellation.map(|c| Cancellation {
                max_delay: c.max_delay.map(|s| s.min(i64::MAX as u64) as i64),
                max_duration: c.max_duration.map(|s| s.min(i64::MAX as u64) as i64),
            }),
        };
        let base = durable::SpawnOptions {
            queue: options.queue,
            max_attempts: options.max_attempts,
            idempotency_key: options.idempotency_key,
            headers: options.headers,
        };
        self.spawn_task(task_name, params, base, extra).await
    }

    async fn heartbeat(&mut self, seconds: Option<u32>) -> wasmtime::Result<()> {
        <Self as durable::Host>::heartbeat(self, seconds).await
    }

    async fn await_task_result(
        &mut self,
        task_id: String,
        options: durable2::AwaitOptions,
    ) -> wasmtime::Result<Option<durable2::TaskOutcome>> {
        let Ok(id) = uuid::Uuid::parse_str(&task_id) else {
            return Err(stop(TaskError::Failed(crate::limits::invalid_call(
                format!(
                    "await-task-result({}): not a task id (a UUID)",
                    crate::limits::preview(&task_id)
                ),
            ))));
        };
        if let Some(q) = &options.queue {
            self.ctx
                .check_name("the awaited task's queue name", q)
                .map_err(stop)?;
        }
        if let Some(step) = &options.step_name {
            self.ctx.check_name("step name", step).map_err(stop)?;
        }
        let timeout = options
            .timeout_seconds
            .map(|t| t.min(i32::MAX as u32) as i32);
        let outcome = self
            .ctx
            .await_task_result(
                options.queue.as_deref(),
                id,
                options.step_name.as_deref(),
                timeout,
            )
            .await
            .map_err(stop)?;
        Ok(outcome.map(|o| match o {
            TaskOutcome::Completed(v) => durable2::TaskOutcome::Completed(v.to_string()),
            TaskOutcome::Failed(v) => durable2::TaskOutcome::Failed(v.to_string()),
            TaskOutcome::Cancelled => durable2::TaskOutcome::Cancelled,
        }))
    }

    async fn await_any_task_result(
        &mut self,
        tasks: Vec<durable2::AwaitedTask>,
        options: durable2::AwaitAnyOptions,
    ) -> wasmtime::Result<Option<durable2::FirstOutcome>> {
        let mut list = Vec::with_capacity(tasks.len());
        for t in &tasks {
            let Ok(id) = uuid::Uuid::parse_str(&t.task_id) else {
                return Err(stop(TaskError::Failed(crate::limits::invalid_call(
                    format!(
                        "await-any-task-result({}): not a task id (a UUID)",
                        crate::limits::preview(&t.task_id)
                    ),
                ))));
            };
            list.push((t.queue.as_deref(), id));
        }
        if let Some(step) = &options.step_name {
            self.ctx.check_name("step name", step).map_err(stop)?;
        }
        let timeout = options
            .timeout_seconds
            .map(|t| t.min(i32::MAX as u32) as i32);
        let first = self
            .ctx
            .await_any_task_result(&list, options.step_name.as_deref(), timeout)
            .await
            .map_err(stop)?;
        Ok(first.map(|(index, o)| durable2::FirstOutcome {
            index: index as u32,
            outcome: match o {
                TaskOutcome::Completed(v) => durable2::TaskOutcome::Completed(v.to_string()),
                TaskOutcome::Failed(v) => durable2::TaskOutcome::Failed(v.to_string()),
                TaskOutcome::Cancelled => durable2::TaskOutcome::Cancelled,
            },
        }))
    }

    async fn cancel_child(
        &mut self,
        task_id: String,
        queue: Option<String>,
    ) -> wasmtime::Result<Result<bool, String>> {
        let Ok(id) = uuid::Uuid::parse_str(&task_id) else {
            return Ok(Err(format!(
                "cancel-child({}): not a task id (a UUID)",
                crate::limits::preview(&task_id)
            )));
        };
        self.ctx
            .cancel_child(queue.as_deref(), id)
            .await
            .map_err(stop)
    }
}

/// The `log` import of absurd:task@0.2.1 (as [`add_log_to_linker`]), which also serves
/// components of @0.2.0 (the linker resolves semver-compatible names).
pub fn add_log_v2_to_linker(linker: &mut Linker<RunState>) -> wasmtime::Result<()> {
    linker.instance("absurd:task/log@0.2.1")?.func_wrap(
        "log",
        |mut store: StoreContextMut<'_, RunState>, (level, message): (log2::Level, WasmStr)| {
            let level = match level {
                log2::Level::Trace => log::Level::Trace,
                log2::Level::Debug => log::Level::Debug,
                log2::Level::Info => log::Level::Info,
                log2::Level::Warn => log::Level::Warn,
                log2::Level::Error => log::Level::Error,
            };
            log_line(&mut store, level, message)
        },
    )
}

/// One `log` call: the line is checked against `max_log_line_bytes` before it is copied.
fn log_line(
    store: &mut StoreContextMut<'_, RunState>,
    level: log::Level,
    message: WasmStr,
) -> wasmtime::Result<()> {
    let limit = store.data().ctx.limits().max_log_line_bytes;
    let text = message.to_str(&*store)?;
    if text.len() as u64 > limit {
        let f =
            crate::limits::exceeded("max_log_line_bytes", limit, "a log line", text.len() as u64);
        return Err(stop(TaskError::Failed(f)));
    }
    let text = text.into_owned();
    store.data_mut().log(level, &text);
    Ok(())
}

/// The `log` import, linked by hand rather than through bindgen: the message arrives as a
/// [`WasmStr`], a view of guest memory, so an over-long line is refused before a byte of it is
/// copied into the host.
pub fn add_log_to_linker(linker: &mut Linker<RunState>) -> wasmtime::Result<()> {
    linker.instance("absurd:task/log@0.1.0")?.func_wrap(
        "log",
        |mut store: StoreContextMut<'_, RunState>, (level, message): (log::Level, WasmStr)| {
            let limit = store.data().ctx.limits().max_log_line_bytes;
            let text = message.to_str(&store)?;
            if text.len() as u64 > limit {
                let f = crate::limits::exceeded(
                    "max_log_line_bytes",
                    limit,
                    "a log line",
                    text.len() as u64,
                );
                return Err(stop(TaskError::Failed(f)));
            }
            let text = text.into_owned();
            store.data_mut().log(level, &text);
            Ok(())
        },
    )
}

impl RunState {
    fn log(&mut self, level: log::Level, message: &str) {
        if !self.log_budget.take(message.as_bytes()) {
            self.logs_dropped += 1;
            if self.logs_dropped == 1 {
                warn!(
                    guest = true,
                    "guest log budget exhausted; dropping further guest output"
                );
            }
            return;
        }
        match level {
            log::Level::Trace => trace!(guest = true, "{message}"),
            log::Level::Debug => debug!(guest = true, "{message}"),
            log::Level::Info => info!(guest = true, "{message}"),
            log::Level::Warn => warn!(guest = true, "{message}"),
            log::Level::Error => error!(guest = true, "{message}"),
        }
    }
}
