//! Typed async calls for every Absurd 0.5.1 operation.
//!
//! Everything goes through the `absurd.*` SQL functions (so it works the same on a schema
//! installed by `absurd-host migrate` and by `absurdctl init`), except the read-only views
//! that Absurd has no function for (task details, listings, statistics), which read the
//! per-queue tables directly, as `absurdctl` does.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};
use uuid::Uuid;

use crate::claimed::{self, Claimed, ReadLimits};
use crate::vocab::FailureCategory;

/// Errors from the client. The three Absurd SQLSTATEs get variants of their own.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// `AB001`: the task was cancelled; stop working on it and report nothing.
    #[error("task has been cancelled (AB001)")]
    Cancelled,
    /// `AB002`: the run already failed (its lease expired and another claim failed it).
    #[error("run has already failed (AB002): {0}")]
    RunFailed(String),
    /// `AB003`: the retry strategy is invalid.
    #[error("invalid retry_strategy (AB003): {0}")]
    InvalidRetryStrategy(String),
    /// The database refused the request (an Absurd function raised an error).
    #[error("{0}")]
    Rejected(String),
    /// The queue's tables do not exist.
    #[error("queue {0:?} does not exist (create it with `absurd-host queue create {0}`)")]
    QueueNotFound(String),
    /// Bad input caught before reaching the database.
    #[error("{0}")]
    InvalidInput(String),
    /// The database has no `absurd` schema (or a partial one).
    #[error("the database has no absurd schema ({0}); run `absurd-host migrate` first")]
    SchemaMissing(String),
    /// A timed wait ended before its condition held.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The database could not be reached.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Database(sqlx::Error),
}

impl ClientError {
    /// True for the errors that mean "this run is no longer ours": `AB001` and `AB002`.
    pub fn is_run_lost(&self) -> bool {
        matches!(self, ClientError::Cancelled | ClientError::RunFailed(_))
    }

    pub(crate) fn from_sqlx(e: sqlx::Error, queue: Option<&str>) -> ClientError {
        if let sqlx::Error::Database(db) = &e {
            let msg = db.message().to_string();
            match db.code().as_deref() {
                Some("AB001") => return ClientError::Cancelled,
                Some("AB002") => return ClientError::RunFailed(msg),
                Some("AB003") => return ClientError::InvalidRetryStrategy(msg),
                Some("P0001") => return ClientError::Rejected(msg),
                Some("42P01") => {
                    return match queue {
                        Some(q) => ClientError::QueueNotFound(q.to_string()),
                        None => ClientError::Rejected(msg),
                    }
                }
                Some("3F000") | Some("42883") => return ClientError::SchemaMissing(msg),
                // The input was not valid JSON, not a UUID, out of range, …
                Some(c) if c.starts_with("22") => return ClientError::InvalidInput(msg),
                _ => {}
            }
        }
        match e {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Tls(_) => ClientError::Unavailable(e.to_string()),
            other => ClientError::Database(other),
        }
    }
}

pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// The six states shared by tasks and runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Pending,
    Running,
    Sleeping,
    Completed,
    Failed,
    Cancelled,
}

impl State {
    pub const ALL: [State; 6] = [
        State::Pending,
        State::Running,
        State::Sleeping,
        State::Completed,
        State::Failed,
        State::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Running => "running",
            State::Sleeping => "sleeping",
            State::Completed => "completed",
            State::Failed => "failed",
            State::Cancelled => "cancelled",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, State::Completed | State::Failed | State::Cancelled)
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for State {
    type Err = ClientError;
    fn from_str(s: &str) -> Result<State> {
        State::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                ClientError::InvalidInput(format!(
                    "unknown state {s:?} (expected one of pending, running, sleeping, completed, failed, cancelled)"
                ))
            })
    }
}

fn state_col(row: &PgRow, col: &str) -> Result<State> {
    let s: String = row.try_get(col).map_err(ClientError::Database)?;
    s.parse()
}

/// `retry_strategy` JSON: `{"kind": "none"|"fixed"|"exponential", ...}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetryStrategy {
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub factor: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_seconds: Option<f64>,
}

impl RetryStrategy {
    pub fn exponential(base_seconds: f64, factor: f64, max_seconds: f64) -> Self {
        RetryStrategy {
            kind: "exponential".into(),
            base_seconds: Some(base_seconds),
            factor: Some(factor),
            max_seconds: Some(max_seconds),
        }
    }
    pub fn fixed(base_seconds: f64) -> Self {
        RetryStrategy {
            kind: "fixed".into(),
            base_seconds: Some(base_seconds),
            factor: None,
            max_seconds: None,
        }
    }
    pub fn none() -> Self {
        RetryStrategy {
            kind: "none".into(),
            base_seconds: None,
            factor: None,
            max_seconds: None,
        }
    }
}

/// Cancellation policy JSON: `{"max_delay": s, "max_duration": s}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cancellation {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_delay: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_duration: Option<i64>,
}

/// Options of `spawn_task`. Unset fields are left out of the options JSON.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SpawnOptions {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headers: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_strategy: Option<RetryStrategy>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancellation: Option<Cancellation>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// Row returned by `spawn_task` and `retry_task`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spawned {
    pub task_id: Uuid,
    pub run_id: Uuid,
    pub attempt: i32,
    pub created: bool,
}

/// Options of `retry_task`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryOptions {
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub spawn_new: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<i32>,
}

/// A run handed to a worker by `claim_task`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClaimedRun {
    pub run_id: Uuid,
    pub task_id: Uuid,
    pub attempt: i32,
    pub task_name: String,
    pub params: Value,
    pub retry_strategy: Option<Value>,
    pub max_attempts: Option<i32>,
    pub headers: Option<Value>,
    pub wake_event: Option<String>,
    pub event_payload: Option<Value>,
}

impl ClaimedRun {
    /// The run without its params, headers and event payload (which may be large): what the
    /// worker keeps to settle the run while the handler owns the rest.
    pub fn identity(&self) -> ClaimedRun {
        ClaimedRun {
            run_id: self.run_id,
            task_id: self.task_id,
            attempt: self.attempt,
            task_name: self.task_name.clone(),
            params: Value::Null,
            retry_strategy: self.retry_strategy.clone(),
            max_attempts: self.max_attempts,
            headers: None,
            wake_event: self.wake_event.clone(),
            event_payload: None,
        }
    }
}

/// A checkpoint row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub checkpoint_name: String,
    pub state: Value,
    pub status: String,
    pub owner_run_id: Option<Uuid>,
    pub updated_at: Option<DateTime<Utc>>,
}

/// Result of `await_event`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AwaitOutcome {
    /// True: the run is now sleeping on the event; the worker must stop executing it.
    pub should_suspend: bool,
    pub payload: Option<Value>,
}

/// Result of `get_task_result`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskResult {
    pub task_id: Uuid,
    pub state: State,
    pub result: Option<Value>,
    pub failure_reason: Option<Value>,
}

/// One attempt of a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    pub run_id: Uuid,
    pub attempt: i32,
    pub state: State,
    pub claimed_by: Option<String>,
    pub claim_expires_at: Option<DateTime<Utc>>,
    /// `None` when the run waits for an event without a timeout (`'infinity'` in the table).
    pub available_at: Option<DateTime<Utc>>,
    pub wake_event: Option<String>,
    pub event_payload: Option<Value>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub failed_at: Option<DateTime<Utc>>,
    pub result: Option<Value>,
    pub failure_reason: Option<Value>,
    pub created_at: Option<DateTime<Utc>>,
}

/// A task row, as listed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSummary {
    pub queue_name: String,
    pub task_id: Uuid,
    pub task_name: String,
    pub state: State,
    pub attempts: i32,
    pub max_attempts: Option<i32>,
    pub enqueue_at: DateTime<Utc>,
    pub first_started_at: Option<DateTime<Utc>>,
    pub cancelled_at: Option<DateTime<Utc>>,
    pub last_attempt_run: Option<Uuid>,
    pub idempotency_key: Option<String>,
}

/// A task with everything known about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskDetails {
    #[serde(flatten)]
    pub summary: TaskSummary,
    pub params: Value,
    pub headers: Option<Value>,
    pub retry_strategy: Option<Value>,
    pub cancellation: Option<Value>,
    pub completed_payload: Option<Value>,
    pub runs: Vec<RunInfo>,
    pub checkpoints: Vec<Checkpoint>,
    /// Events the task's runs are registered to wait for: `(step_name, event_name, timeout_at)`.
    pub waits: Vec<WaitInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WaitInfo {
    pub run_id: Uuid,
    pub step_name: String,
    pub event_name: String,
    pub timeout_at: Option<DateTime<Utc>>,
}

/// Filters for [`Client::list_tasks`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskFilter {
    /// Only this queue; `None` lists every queue.
    pub queue: Option<String>,
    pub state: Option<State>,
    pub task_name: Option<String>,
    /// Page size (default 50, at most 1000).
    pub limit: Option<i64>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Only tasks enqueued at or after this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enqueued_after: Option<DateTime<Utc>>,
    /// Only tasks enqueued before this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enqueued_before: Option<DateTime<Utc>>,
    /// Only tasks whose params, as JSON text, contain this (case-insensitive; at most
    /// [`MAX_SEARCH_CHARS`] characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search: Option<String>,
}

/// The longest text search accepted by [`Client::list_tasks`].
pub const MAX_SEARCH_CHARS: usize = 200;

/// An `ILIKE` pattern matching `text` anywhere, with `%`, `_` and `\` taken literally.
fn contains_pattern(text: &str) -> String {
    let mut p = String::with_capacity(text.len() + 2);
    p.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

/// A page of tasks, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskPage {
    pub tasks: Vec<TaskSummary>,
    /// How many tasks match the filter in total (over all pages).
    pub total: i64,
    /// Pass as `cursor` to get the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// Per-queue statistics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueStats {
    pub queue_name: String,
    pub pending: i64,
    pub running: i64,
    pub sleeping: i64,
    pub completed: i64,
    pub failed: i64,
    pub cancelled: i64,
    pub total: i64,
    /// Seconds since the oldest still-pending task was enqueued.
    pub oldest_pending_age_secs: Option<f64>,
    /// Runs completed in the last 1, 5 and 15 minutes.
    pub completed_last_1m: i64,
    pub completed_last_5m: i64,
    pub completed_last_15m: i64,
}

/// What a worker did in a time window, from the runs it claimed (see
/// [`Client::worker_activity`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerActivity {
    pub worker_id: String,
    /// The latest start, completion or failure of its runs.
    pub last_seen: Option<DateTime<Utc>>,
    pub running: i64,
    pub completed: i64,
    pub failed: i64,
    /// Failed runs whose failure is the WebAssembly sandbox's ([`FailureCategory::Sandbox`]).
    pub sandbox_failures: i64,
    /// Failed runs whose failure is a native subprocess's ([`FailureCategory::Subprocess`]).
    pub subprocess_failures: i64,
    /// Failed runs that hit the run time limit ([`FailureCategory::Timeout`]).
    pub timeouts: i64,
}

impl WorkerActivity {
    /// Which failure names each count of [`WorkerActivity`] counts, by field name.
    pub fn counted_failures() -> [(&'static str, FailureCategory); 3] {
        [
            ("sandbox_failures", FailureCategory::Sandbox),
            ("subprocess_failures", FailureCategory::Subprocess),
            ("timeouts", FailureCategory::Timeout),
        ]
    }
}

/// Completions and failures of one queue per minute (see [`Client::throughput`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThroughputBucket {
    /// Start of the minute.
    pub minute: DateTime<Utc>,
    pub completed: i64,
    pub failed: i64,
}

/// The longest window of [`Client::worker_activity`] and [`Client::throughput`]: a day.
pub const MAX_WINDOW_MINUTES: i64 = 1440;

fn check_window(minutes: i64) -> Result<()> {
    if !(1..=MAX_WINDOW_MINUTES).contains(&minutes) {
        return Err(ClientError::InvalidInput(format!(
            "minutes must be between 1 and {MAX_WINDOW_MINUTES}, got {minutes}"
        )));
    }
    Ok(())
}

/// Rows deleted by `cleanup_all_queues` for one queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CleanupRow {
    pub queue_name: String,
    pub tasks_deleted: i32,
    pub events_deleted: i32,
}

/// Quotes a queue's table name, `absurd."<prefix>_<queue>"`, the way the schema names them.
pub(crate) fn table(prefix: &str, queue: &str) -> String {
    format!("absurd.\"{prefix}_{}\"", queue.replace('"', "\"\""))
}

fn check_queue_name(queue: &str) -> Result<()> {
    if queue.is_empty() {
        return Err(ClientError::InvalidInput(
            "queue name must not be empty".into(),
        ));
    }
    if queue.len() > 57 {
        return Err(ClientError::InvalidInput(format!(
            "queue name {queue:?} is {} bytes long; the limit is 57",
            queue.len()
        )));
    }
    Ok(())
}

/// A client for one database. Cheap to clone (it shares the pool).
#[derive(Debug, Clone)]
pub struct Client {
    pool: PgPool,
}

const TASK_COLUMNS: &str = "task_id, task_name, state, attempts, max_attempts, enqueue_at, \
     first_started_at, cancelled_at, last_attempt_run, idempotency_key";

fn summary_from_row(queue: &str, row: &PgRow) -> Result<TaskSummary> {
    let g = |e: sqlx::Error| ClientError::Database(e);
    Ok(TaskSummary {
        queue_name: queue.to_string(),
        task_id: row.try_get("task_id").map_err(g)?,
        task_name: row.try_get("task_name").map_err(g)?,
        state: state_col(row, "state")?,
        attempts: row.try_get("attempts").map_err(g)?,
        max_attempts: row.try_get("max_attempts").map_err(g)?,
        enqueue_at: row.try_get("enqueue_at").map_err(g)?,
        first_started_at: row.try_get("first_started_at").map_err(g)?,
        cancelled_at: row.try_get("cancelled_at").map_err(g)?,
        last_attempt_run: row.try_get("last_attempt_run").map_err(g)?,
        idempotency_key: row.try_get("idempotency_key").map_err(g)?,
    })
}

fn checkpoint_from_row(row: &PgRow) -> Result<Checkpoint> {
    let g = |e: sqlx::Error| ClientError::Database(e);
    Ok(Checkpoint {
        checkpoint_name: row.try_get("checkpoint_name").map_err(g)?,
        state: row
            .try_get::<Option<Value>, _>("state")
            .map_err(g)?
            .unwrap_or(Value::Null),
        status: row.try_get("status").map_err(g)?,
        owner_run_id: row.try_get("owner_run_id").map_err(g)?,
        updated_at: row.try_get("updated_at").map_err(g)?,
    })
}

impl Client {
    pub fn new(pool: PgPool) -> Client {
        Client { pool }
    }

    /// Connects with a small pool (for command-line use).
    pub async fn connect(url: &str) -> Result<Client> {
        let pool = crate::db::connect(url, 4).await.map_err(|e| {
            ClientError::Unavailable(format!("{}: {e}", crate::db::redact_url(url)))
        })?;
        Ok(Client { pool })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    // ---- queues -------------------------------------------------------------------------

    pub async fn create_queue(&self, queue: &str) -> Result<()> {
        check_queue_name(queue)?;
        sqlx::query("select absurd.create_queue($1)")
            .bind(queue)
            .execute(&self.pool)
            .await
            .map_err(|e| ClientError::from_sqlx(e, Some(queue)))?;
        Ok(())
    }

    /// Creates the queue only if it is not registered yet. Unlike `create_queue`, which
    /// re-runs its idempotent DDL (and so takes table locks), this is a plain read when the
    /// queue exists, safe to call while other sessions spawn into it.
    pub async fn ensure_queue(&self, queue: &str) -> Result<()> {
        if self.queue_exists(queue).await? {
            return Ok(());
        }
        self.create_queue(queue).await
    }

    pub async fn drop_queue(&self, queue: &str) -> Result<()> {
        sqlx::query("select absurd.drop_queue($1)")
            .bind(queue)
            .execute(&self.pool)
            .await
            .map_err(|e| ClientError::from_sqlx(e, Some(queue)))?;
        Ok(())
    }

    pub async fn list_queues(&self) -> Result<Vec<String>> {
        sqlx::query_scalar("select queue_name from absurd.list_queues()")
            .fetch_all(&self.pool)
            .await
            .map_err(|e| ClientError::from_sqlx(e, None))
    }

    pub async fn queue_exists(&self, queue: &str) -> Result<bool> {
        sqlx::query_scalar("select exists(select 1 from absurd.queues where queue_name = $1)")
            .bind(queue)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| ClientError::from_sqlx(e, None))
    }

    pub async fn queue_stats(&self, queue: &str) -> Result<QueueStats> {
        check_queue_name(queue)?;
        let sql = format!(
            "with now_ as (select absurd.current_time() as now)
             select
               count(*) filter (where t.state = 'pending')   as pending,
               count(*) filter (where t.state = 'running')   as running,
               count(*) filter (where t.state = 'sleeping')  as sleeping,
               count(*) filter (where t.state = 'completed') as completed,
               count(*) filter (where t.state = 'failed')    as failed,
               count(*) filter (where t.state = 'cancelled') as cancelled,
               count(*) as total,
               extract(epoch from (select now from now_) - min(t.enqueue_at) filter (where t.state = 'pending'))::float8 as oldest,
               (select count(*) from {r} r where r.state = 'completed' and r.completed_at > (select now from now_) - interval '1 minute') as c1,
               (select count(*) from {r} r where r.state = 'completed' and r.completed_at > (select now from now_) - interval '5 minutes') as c5,
               (select count(*) from {r} r where r.state = 'completed' and r.completed_at > (select now from now_) - interval '15 minutes') as c15
             from {t} t",
            t = table("t", queue),
            r = table("r", queue)
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_one(&self.pool)
            .await
            .map_err(|e| ClientError::from_sqlx(e, Some(queue)))?;
        let g = |e: sqlx::Error| ClientError::Database(e);
        Ok(QueueStats {
            queue_name: queue.to_string(),
            pending: row.try_get("pending").map_err(g)?,
            running: row.try_get("running").map_err(g)?,
            sleeping: row.try_get("sleeping").map_err(g)?,
            completed: row.try_get("completed").map_err(g)?,
            failed: row.try_get("failed").map_err(g)?,
            cancelled: row.try_get("cancelled").map_err(g)?,
            total: row.try_get("total").map_err(g)?,
            oldest_pending_age_secs: row.try_get("oldest").map_err(g)?,
            completed_last_1m: row.try_get("c1").map_err(g)?,
            completed_last_5m: row.try_get("c5").map_err(g)?,
            completed_last_15m: row.try_get("c15").map_err(g)?,
        })
    }

    /// The registered queues whose tables exist (a queue's tables may have been dropped by
    /// hand; readers that span every queue skip those).
    async fn queues_with_tables(&self) -> Result<Vec<String>> {
        let queues = self.list_queues().await?;
        let tables: Vec<String> = queues.iter().map(|q| table("r", q)).collect();
        let present: Vec<bool> = sqlx::query_scalar(
            "select to_regclass(t) is not null from unnest($1::text[]) with ordinality as x(t, i) order by i",
        )
        .bind(&tables)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| ClientError::from_sqlx(e, None))?;
        Ok(queues
            .into_iter()
            .zip(present)
            .filter_map(|(q, p)| p.then_some(q))
            .collect())
    }

    /// Every worker id seen in the last `minutes` (1 to [`MAX_WINDOW_MINUTES`]) over all
    /// queues: the `claimed_by` of runs started in the window or running now, with counts of
    /// those runs by state and by kind of failure. Most recently seen first.
    pub async fn worker_activity(&self, minutes: i64) -> Result<Vec<WorkerActivity>> {
        check_window(minutes)?;
        let queues = self.queues_with_tables().await?;
        if queues.is_empty() {
            return Ok(vec![]);
        }
        let list = |category: FailureCategory| {
            category
                .names()
                .map(|n| quote_literal(n.as_str()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let runs = queues
            .iter()
            .map(|q| {
                format!(
                    "select claimed_by, state, started_at, completed_at, failed_at,                        failure_reason->>'name' as failure_name                      from {r} where claimed_by is not null                        and (state = 'running' or started_at >= (select since from window_))",
                    r = table("r", q)
                )
            })
            .collect::<Vec<_>>()
            .join(" union all ");
        let sql = format!(
            "with window_ as (select absurd.current_time() - make_interval(mins => $1) as since),
             runs as ({runs})
             select claimed_by as worker_id,
               max(greatest(started_at, completed_at, failed_at)) as last_seen,
               count(*) filter (where state = 'running') as running,
               count(*) filter (where state = 'completed') as completed,
               count(*) filter (where state = 'failed') as failed,
               count(*) filter (where state = 'failed' and failure_name in ({sandbox})) as sandbox_failures,
               count(*) filter (where state = 'failed' and failure_name in ({subprocess})) as subprocess_failures,
               count(*) filter (where state = 'failed' and failure_name in ({timeout})) as timeouts
             from runs group by claimed_by
             order by last_seen desc nulls last, worker_id",
            sandbox = list(FailureCategory::Sandbox),
            subprocess = list(FailureCategory::Subprocess),
            timeout = list(FailureCategory::Timeout),
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(minutes as i32)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| ClientError::from_sqlx(e, None))?;
        let g = |e: sqlx::Error| ClientError::Database(e);
        rows.iter()
            .map(|r| {
                Ok(WorkerActivity {
                    worker_id: r.try_get("worker_id").map_err(g)?,
                    last_seen: r.try_get("last_seen").map_err(g)?,
                    running: r.try_get("running").map_err(g)?,
                    completed: r.try_get("completed").map_err(g)?,
                    failed: r.try_get("failed").map_err(g)?,
                    sandbox_failures: r.try_get("sandbox_failures").map_err(g)?,
                    subprocess_failures: r.try_get("subprocess_failures").map_err(g)?,
                    timeouts: r.try_get("timeouts").map_err(g)?,
                })
            })
            .collect()
    }

    /// A queue's completed and failed runs per minute over the last `minutes` (1 to
    /// [`MAX_WINDOW_MINUTES`]), oldest first, one bucket per minute (zero-filled); the last
    /// bucket is the current, partial minute.
    pub async fn throughput(&self, queue: &str, minutes: i64) -> Result<Vec<ThroughputBucket>> {
        check_queue_name(queue)?;
        check_window(minutes)?;
        let sql = format!(
            "with now_ as (select date_trunc('minute', absurd.current_time()) as m),
             buckets as (
               select generate_series((select m from now_) - make_interval(mins => $1 - 1),
                                      (select m from now_), interval '1 minute') as minute),
             done as (
               select date_trunc('minute', completed_at) as minute, count(*) as n from {r}
               where state = 'completed' and completed_at >= (select min(minute) from buckets)
               group by 1),
             failed as (
               select date_trunc('minute', failed_at) as minute, count(*) as n from {r}
               where state = 'failed' and failed_at >= (select min(minute) from buckets)
               group by 1)
             select b.minute, coalesce(d.n, 0) as completed, coalesce(f.n, 0) as failed
             from buckets b
               left join done d on d.minute = b.minute
               left join failed f on f.minute = b.minute
             order by b.minute",
            r = table("r", queue)
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(minutes as i32)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| ClientError::from_sqlx(e, Some(queue)))?;
        let g = |e: sqlx::Error| ClientError::Database(e);
        rows.iter()
            .map(|r| {
                Ok(ThroughputBucket {
                    minute: r.try_get("minute").map_err(g)?,
                    completed: r.try_get("completed").map_err(g)?,
                    failed: r.try_get("failed").map_err(g)?,
                })
            })
            .collect()
    }

    // ---- spawning and reading tasks ----------------------------------------------------

    pub async fn spawn(
        &self,
        queue: &str,
        task_name: &str,
        params: &Value,
        options: &SpawnOptions,
    ) -> Result<Spawned> {
        check_queue_name(queue)?;
        if task_name.trim().is_empty() {
            return Err(ClientError::InvalidInput(
                "task name must not be empty".into(),
            ));
        }
        if let Some(m) = options.max_attempts {
            if m < 1 {
                return Err(ClientError::InvalidInput(format!(
                    "max_attempts must be >= 1, got {m}"
                )));
            }
        }
        let opts = serde_json::to_value(options).expect("options serialise");
        let row = sqlx::query(
            "select task_id, run_id, attempt, created from absurd.spawn_task($1, $2, $3, $4)",
        )
        .bind(queue)
        .bind(task_name)
        .bind(params)
        .bind(&opts)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| ClientError::from_sqlx(e, Some(queue)))?;
        spawned_from_row(&row)
    }

    /// Spawns many tasks in one statement (one transaction), with the same `options` each;
    /// returns them in the order given.
    pub async fn spawn_batch(
        &self,
        queue: &str,
        tasks: &[(String, Value)],
        options: &SpawnOptions,
    ) -> Result<Vec<Spawned>> {
        check_queue_name(queue)?;
        if let Some(i) = tasks.iter().position(|(name, _)| name.trim().is_empty()) {
            return Err(ClientError::InvalidInput(format!(
                "task name {i} of the batch is empty"
            )));
        }
        let opts = serde_json::to_value(options).expect("options serialise");
        let names: Vec<&str> = tasks.iter().map(|(n, _)| n.as_str()).collect();
        let params: Vec<Value> = tasks.iter().map(|(_, p)| p.clone()).collect();
        let rows = sqlx::query(
            "select s.task_id, s.run_id, s.attempt, s.created \
             from unnest($2::text[], $3::jsonb[]) with ordinality as u (task_name, params, i) \
             cross join lateral absurd.spawn_task($1, u.task_name, u.params, $4) s \
             order by u.i",
        )
        .bind(queue)
        .bind(&names)
        .bind(&params)
        .bind(&opts)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| ClientError::from_sqlx(e, Some(queue)))?;
        rows.iter().map(spawned_from_row).collect()
    }

    /// The task with its runs (oldest first), checkpoints and event waits; `None` if unknown.
    pub async fn get_task(&self, queue: &str, task_id: Uuid) -> Result<Option<TaskDetails>> {
        check_queue_name(queue)?;
        let q = |e| ClientError::from_sqlx(e, Some(queue));
        let sql = format!(
            "select {TASK_COLUMNS}, params, headers, retry_strategy, cancellation, completed_payload \
             from {} where task_id = $1",
            table("t", queue)
        );
        let Some(row) = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(task_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(q)?
        else {
            return Ok(None);
        };
        let g = |e: sqlx::Error| ClientError::Database(e);
        let summary = summary_from_row(queue, &row)?;
        let params: Option<Value> = row.try_get("params").map_err(g)?;
        let sql = format!(
            "select run_id, attempt, state, claimed_by, claim_expires_at, \
               case when available_at = 'infinity' then null else available_at end as available_at, \
               wake_event, event_payload, started_at, completed_at, failed_at, result, \
               failure_reason, created_at \
             from {} where task_id = $1 order by attempt, run_id",
            table("r", queue)
        );
        let runs = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(task_id)
            .fetch_all(&self.pool)
            .await
            .map_err(q)?
            .iter()
            .map(run_from_row)
            .collect::<Result<Vec<_>>>()?;
        let sql = format!(
            "select checkpoint_name, state, status, owner_run_id, updated_at from {} \
             where task_id = $1 order by updated_at, checkpoint_name",
            table("c", queue)
        );
        let checkpoints = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(task_id)
            .fetch_all(&self.pool)
            .await
            .map_err(q)?
            .iter()
            .map(checkpoint_from_row)
            .collect::<Result<Vec<_>>>()?;
        let sql = format!(
            "select run_id, step_name, event_name, \
               case when timeout_at = 'infinity' then null else timeout_at end as timeout_at \
             from {} where task_id = $1 order by created_at",
            table("w", queue)
        );
        let waits = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(task_id)
            .fetch_all(&self.pool)
            .await
            .map_err(q)?
            .iter()
            .map(|r| {
                Ok(WaitInfo {
                    run_id: r.try_get("run_id").map_err(g)?,
                    step_name: r.try_get("step_name").map_err(g)?,
                    event_name: r.try_get("event_name").map_err(g)?,
                    timeout_at: r.try_get("timeout_at").map_err(g)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Some(TaskDetails {
            summary,
            params: params.unwrap_or(Value::Null),
            headers: row.try_get("headers").map_err(g)?,
            retry_strategy: row.try_get("retry_strategy").map_err(g)?,
            cancellation: row.try_get("cancellation").map_err(g)?,
            completed_payload: row.try_get("completed_payload").map_err(g)?,
            runs,
            checkpoints,
            waits,
        }))
    }

    /// Finds which queue holds a task (for commands given only a task id).
    pub async fn find_task_queue(&self, task_id: Uuid) -> Result<Option<String>> {
        for queue in self.list_queues().await? {
            let sql = format!("select 1 from {} where task_id = $1", table("t", &queue));
            let hit = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(task_id)
                .fetch_optional(&self.pool)
                .await;
            match hit {
                Ok(Some(_)) => return Ok(Some(queue)),
                Ok(None) => {}
                // A registered queue whose tables were dropped by hand: skip it.
                Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("42P01") => {}
                Err(e) => return Err(ClientError::from_sqlx(e, Some(&queue))),
            }
        }
        Ok(None)
    }

    /// Lists tasks newest first, with the total number matching the filter.
    pub async fn list_tasks(&self, filter: &TaskFilter) -> Result<TaskPage> {
        let limit = filter.limit.unwrap_or(50);
        if !(1..=1000).contains(&limit) {
            return Err(ClientError::InvalidInput(format!(
                "limit must be between 1 and 1000, got {limit}"
            )));
        }
        let cursor: Option<Uuid> = match &filter.cursor {
            None => None,
            Some(c) => Some(Uuid::parse_str(c).map_err(|_| {
                ClientError::InvalidInput(format!(
                    "cursor {c:?} is not a cursor returned by a listing"
                ))
            })?),
        };
        let pattern = match &filter.search {
            None => None,
            Some(t) if t.is_empty() => None,
            Some(t) => {
                let n = t.chars().count();
                if n > MAX_SEARCH_CHARS {
                    return Err(ClientError::InvalidInput(format!(
                        "search text is {n} characters long; the limit is {MAX_SEARCH_CHARS}"
                    )));
                }
                if t.contains('\0') {
                    return Err(ClientError::InvalidInput(
                        "search text must not contain NUL characters".into(),
                    ));
                }
                Some(contains_pattern(t))
            }
        };
        let queues = match &filter.queue {
            Some(q) => {
                check_queue_name(q)?;
                vec![q.clone()]
            }
            None => self.list_queues().await?,
        };
        if queues.is_empty() {
            return Ok(TaskPage {
                tasks: vec![],
                total: 0,
                next_cursor: None,
            });
        }
        // One union over the selected queues; $1 = state, $2 = task name, $3/$4 = enqueued
        // after/before, $5 = params search pattern; the page adds $6 = cursor, $7 = limit.
        let per_queue: Vec<String> = queues
            .iter()
            .map(|q| {
                format!(
                    "select {lit} as queue_name, {TASK_COLUMNS} from {t} \
                     where ($1::text is null or state = $1) and ($2::text is null or task_name = $2) \
                       and ($3::timestamptz is null or enqueue_at >= $3) \
                       and ($4::timestamptz is null or enqueue_at < $4) \
                       and ($5::text is null or params::text ilike $5 escape '\\')",
                    lit = quote_literal(q),
                    t = table("t", q)
                )
            })
            .collect();
        let union = per_queue.join(" union all ");
        let count_sql = format!("select count(*) from ({union}) x");
        let state = filter.state.map(|s| s.as_str().to_string());
        let qerr = |e| ClientError::from_sqlx(e, filter.queue.as_deref());
        let total: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(count_sql))
            .bind(&state)
            .bind(&filter.task_name)
            .bind(filter.enqueued_after)
            .bind(filter.enqueued_before)
            .bind(&pattern)
            .fetch_one(&self.pool)
            .await
            .map_err(qerr)?;
        let page_sql = format!(
            "select * from ({union}) x where ($6::uuid is null or task_id < $6) \
             order by task_id desc limit $7"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(page_sql))
            .bind(&state)
            .bind(&filter.task_name)
            .bind(filter.enqueued_after)
            .bind(filter.enqueued_before)
            .bind(&pattern)
            .bind(cursor)
            .bind(limit + 1)
            .fetch_all(&self.pool)
            .await
            .map_err(qerr)?;
        let mut tasks = Vec::with_capacity(rows.len());
        for row in rows.iter().take(limit as usize) {
            let q: String = row.try_get("queue_name").map_err(ClientError::Database)?;
            tasks.push(summary_from_row(&q, row)?);
        }
        let next_cursor = if rows.len() as i64 > limit {
            tasks.last().map(|t| t.task_id.to_string())
        } else {
            None
        };
        Ok(TaskPage {
            tasks,
            total,
            next_cursor,
        })
    }

    pub async fn cancel_task(&self, queue: &str, task_id: Uuid) -> Result<()> {
        check_queue_name(queue)?;
        sqlx::query("select absurd.cancel_task($1, $2)")
            .bind(queue)
            .bind(task_id)
            .execute(&self.pool)
            .await
            .map_err(|e| ClientError::from_sqlx(e, Some(queue)))?;
        Ok(())
    }

    pub async fn retry_task(
        &self,
        queue: &str,
        task_id: Uuid,
        options: &RetryOptions,
    ) -> Result<Spawned> {
        check_queue_name(queue)?;
        let opts = serde_json::to_value(options).expect("options serialise");
        let row = sqlx::query(
            "select task_id, run_id, attempt, created from absurd.retry_task($1, $2, $3)",
        )
        .bind(queue)
        .bind(task_id)
        .bind(&opts)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| ClientError::from_sqlx(e, Some(queue)))?;
        spawned_from_row(&row)
    }

    /// `get_task_result`; `None` for an unknown task.
    pub async fn task_result(&self, queue: &str, task_id: Uuid) -> Result<Option<TaskResult>> {
        check_queue_name(queue)?;
        let row = sqlx::query(
            "select task_id, state, result, failure_reason from absurd.get_task_result($1, $2)",
        )
        .bind(queue)
        .bind(task_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| ClientError::from_sqlx(e, Some(queue)))?;
        let Some(row) = row else { return Ok(None) };
        let g = |e: sqlx::Error| ClientError::Database(e);
        Ok(Some(TaskResult {
            task_id: row.try_get("task_id").map_err(g)?,
            state: state_col(&row, "state")?,
            result: row.try_get("result").map_err(g)?,
            failure_reason: row.try_get("failure_reason").map_err(g)?,
        }))
    }

    /// Polls `get_task_result` (25 ms growing to 1 s) until the task is terminal or
    /// `timeout` passes.
    pub async fn await_result(
        &self,
        queue: &str,
        task_id: Uuid,
        timeout: Duration,
    ) -> Result<TaskResult> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut pause = Duration::from_millis(25);
        loop {
            let r = self.task_result(queue, task_id).await?.ok_or_else(|| {
                ClientError::Rejected(format!("Task \"{task_id}\" not found in queue \"{queue}\""))
            })?;
            if r.state.is_terminal() {
                return Ok(r);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(ClientError::Timeout(format!(
                    "task {task_id} is still {} after {:.1?}",
                    r.state, timeout
                )));
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }

    pub async fn emit_event(
        &self,
        queue: &str,
        event_name: &str,
        payload: Option<&Value>,
    ) -> Result<()> {
        check_queue_name(queue)?;
        if event_name.trim().is_empty() {
            return Err(ClientError::InvalidInput(
                "event name must not be empty".into(),
            ));
        }
        sqlx::query("select absurd.emit_event($1, $2, $3)")
            .bind(queue)
            .bind(event_name)
            .bind(payload)
            .execute(&self.pool)
            .await
            .map_err(|e| ClientError::from_sqlx(e, Some(queue)))?;
        Ok(())
    }

    // ---- worker side ---------------------------------------------------------------------

    /// `claim_task`: up to `qty` runs, each leased for `claim_timeout_secs` (0 = no lease).
    /// Fails when any claimed row cannot be read (the runs stay claimed); a worker uses
    /// [`Client::claim_rows`], which fails such a run alone.
    pub async fn claim(
        &self,
        queue: &str,
        worker_id: &str,
        claim_timeout_secs: i32,
        qty: i32,
    ) -> Result<Vec<ClaimedRun>> {
        let rows = self
            .claim_rows(
                queue,
                worker_id,
                claim_timeout_secs,
                qty,
                &ReadLimits::unbounded(),
            )
            .await?;
        let mut runs = Vec::with_capacity(rows.len());
        for c in rows {
            runs.push(self.strict(queue, c).await?.0);
        }
        Ok(runs)
    }

    /// A claimed run whose data all reads, with its deferred parts read (unbounded).
    async fn strict(&self, queue: &str, c: Claimed) -> Result<(ClaimedRun, Vec<(String, Value)>)> {
        let limits = ReadLimits::unbounded();
        let bad = |f: crate::failure::Failure| ClientError::InvalidInput(f.message);
        if let Some(f) = c.defect {
            return Err(bad(f));
        }
        let mut run = c.run;
        if c.payload_deferred {
            run.event_payload = claimed::read_event_payload(self, queue, run.run_id, &limits)
                .await?
                .map_err(bad)?;
        }
        let checkpoints = match c.checkpoints {
            Some(cps) => cps,
            None => claimed::read_checkpoints(self, queue, &run, &limits)
                .await?
                .map_err(bad)?,
        };
        Ok((run, checkpoints))
    }

    /// [`Client::claim`] for a worker: each row is read on its own, and a row that cannot be
    /// read (or whose event payload is over `limits`) comes back with a
    /// [`Claimed::defect`] instead of failing the others. Checkpoints are left to
    /// [`claimed::read_checkpoints`].
    pub async fn claim_rows(
        &self,
        queue: &str,
        worker_id: &str,
        claim_timeout_secs: i32,
        qty: i32,
        limits: &ReadLimits,
    ) -> Result<Vec<Claimed>> {
        let sql = claimed::claim_sql("absurd.claim_task($1, $2, $3, $4)", "", 5);
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(queue)
            .bind(worker_id)
            .bind(claim_timeout_secs)
            .bind(qty)
            .bind(claimed::sql_limit(limits.max_event_payload_bytes))
            .fetch_all(&self.pool)
            .await
            .map_err(|e| ClientError::from_sqlx(e, Some(queue)))?;
        Ok(rows
            .iter()
            .filter_map(|r| claimed::claimed_from_row(r, limits))
            .collect())
    }

    /// Whether the queue has absurd-host's per-queue claim and completion (`lease_<queue>`,
    /// `done_<queue>`, migration 0011): a schema installed by `absurdctl init` does not, nor
    /// does a queue absurd-host cannot name.
    pub async fn has_fast_paths(&self, queue: &str) -> Result<bool> {
        let sig = format!("{}(text,integer,integer)", table("lease", queue));
        sqlx::query_scalar("select to_regprocedure($1) is not null")
            .bind(sig)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| ClientError::from_sqlx(e, Some(queue)))
    }

    /// Claims like [`Client::claim`] through the queue's own claim function (which
    /// `claim_task` also calls), which also returns each run's visible checkpoints (so the
    /// worker need not load them). It sweeps like `claim_task`, on every call. Needs
    /// [`Client::has_fast_paths`].
    pub async fn claim_fast(
        &self,
        queue: &str,
        worker_id: &str,
        claim_timeout_secs: i32,
        qty: i32,
    ) -> Result<Vec<(ClaimedRun, Vec<(String, Value)>)>> {
        let rows = self
            .claim_fast_rows(
                queue,
                worker_id,
                claim_timeout_secs,
                qty,
                &ReadLimits::unbounded(),
            )
            .await?;
        let mut runs = Vec::with_capacity(rows.len());
        for c in rows {
            runs.push(self.strict(queue, c).await?);
        }
        Ok(runs)
    }

    /// [`Client::claim_fast`] for a worker, reading each row on its own like
    /// [`Client::claim_rows`]. A run's checkpoints are `None` when the claim left them for
    /// [`claimed::read_checkpoints`] (large ones, migration 0010).
    pub async fn claim_fast_rows(
        &self,
        queue: &str,
        worker_id: &str,
        claim_timeout_secs: i32,
        qty: i32,
        limits: &ReadLimits,
    ) -> Result<Vec<Claimed>> {
        let source = format!("{}($1, $2, $3)", table("lease", queue));
        let sql = claimed::claim_sql(&source, ", f.checkpoints", 4);
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(worker_id)
            .bind(claim_timeout_secs)
            .bind(qty)
            .bind(claimed::sql_limit(limits.max_event_payload_bytes))
            .fetch_all(&self.pool)
            .await
            .map_err(|e| ClientError::from_sqlx(e, Some(queue)))?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                let mut c = claimed::claimed_from_row(r, limits)?;
                c.checkpoints = claimed::inline_checkpoints(r);
                Some(c)
            })
            .collect())
    }

    /// Completes many runs in one statement through the queue's fast path. Returns, for each
    /// run, its state afterwards: `completed` (by this call, or already), or the state that
    /// kept it from completing (`cancelled`, `failed`, `pending`, ..., `missing`).
    pub async fn complete_runs_fast(
        &self,
        queue: &str,
        runs: &[Uuid],
        results: &[Value],
    ) -> Result<Vec<(Uuid, String)>> {
        let sql = format!("select run_id, state from {}($1, $2)", table("done", queue));
        let rows: Vec<(Uuid, String)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(runs)
            .bind(results)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| ClientError::from_sqlx(e, Some(queue)))?;
        Ok(rows)
    }

    pub async fn complete_run(&self, queue: &str, run_id: Uuid, result: &Value) -> Result<()> {
        sqlx::query("select absurd.complete_run($1, $2, $3)")
            .bind(queue)
            .bind(run_id)
            .bind(result)
            .execute(&self.pool)
            .await
            .map_err(|e| ClientError::from_sqlx(e, Some(queue)))?;
        Ok(())
    }

    pub async fn fail_run(
        &self,
        queue: &str,
        run_id: Uuid,
        reason: &Value,
        retry_at: Option<DateTime<Utc>>,
    ) -> Result<()> {
        sqlx::query("select absurd.fail_run($1, $2, $3, $4)")
            .bind(queue)
            .bind(run_id)
            .bind(reason)
            .bind(retry_at)
            .execute(&self.pool)
            .await
            .map_err(|e| ClientError::from_sqlx(e, Some(queue)))?;
        Ok(())
    }

    /// `schedule_run` at an absolute time.
    pub async fn schedule_run(
        &self,
        queue: &str,
        run_id: Uuid,
        wake_at: DateTime<Utc>,
    ) -> Result<()> {
        sqlx::query("select absurd.schedule_run($1, $2, $3)")
            .bind(queue)
            .bind(run_id)
            .bind(wake_at)
            .execute(&self.pool)
            .await
            .map_err(|e| ClientError::from_sqlx(e, Some(queue)))?;
        Ok(())
    }

    /// `schedule_run` `secs` from now by the database clock (as the SDKs do).
    pub async fn schedule_run_in(&self, queue: &str, run_id: Uuid, secs: f64) -> Result<()> {
        sqlx::query(
            "select absurd.schedule_run($1, $2, absurd.current_time() + make_interval(secs => $3))",
        )
        .bind(queue)
        .bind(run_id)
        .bind(secs)
        .execute(&self.pool)
        .await
        .map_err(|e| ClientError::from_sqlx(e, Some(queue)))?;
        Ok(())
    }

    pub async fn extend_claim(&self, queue: &str, run_id: Uuid, extend_by_secs: i32) -> Result<()> {
        sqlx::query("select absurd.extend_claim($1, $2, $3)")
            .bind(queue)
            .bind(run_id)
            .bind(extend_by_secs)
            .execute(&self.pool)
            .await
            .map_err(|e| ClientError::from_sqlx(e, Some(queue)))?;
        Ok(())
    }

    pub async fn set_checkpoint(
        &self,
        queue: &str,
        task_id: Uuid,
        step_name: &str,
        state: &Value,
        owner_run: Uuid,
        extend_claim_by: Option<i32>,
    ) -> Result<()> {
        sqlx::query("select absurd.set_task_checkpoint_state($1, $2, $3, $4, $5, $6)")
            .bind(queue)
            .bind(task_id)
            .bind(step_name)
            .bind(state)
            .bind(owner_run)
            .bind(extend_claim_by)
            .execute(&self.pool)
            .await
            .map_err(|e| ClientError::from_sqlx(e, Some(queue)))?;
        Ok(())
    }

    pub async fn get_checkpoint(
        &self,
        queue: &str,
        task_id: Uuid,
        step_name: &str,
    ) -> Result<Option<Checkpoint>> {
        let row = sqlx::query(
            "select checkpoint_name, state, status, owner_run_id, updated_at \
             from absurd.get_task_checkpoint_state($1, $2, $3)",
        )
        .bind(queue)
        .bind(task_id)
        .bind(step_name)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| ClientError::from_sqlx(e, Some(queue)))?;
        row.as_ref().map(checkpoint_from_row).transpose()
    }

    /// The committed checkpoints visible to `run_id` (what a replaying worker loads).
    pub async fn get_checkpoints(
        &self,
        queue: &str,
        task_id: Uuid,
        run_id: Uuid,
    ) -> Result<Vec<Checkpoint>> {
        sqlx::query(
            "select checkpoint_name, state, status, owner_run_id, updated_at \
             from absurd.get_task_checkpoint_states($1, $2, $3)",
        )
        .bind(queue)
        .bind(task_id)
        .bind(run_id)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| ClientError::from_sqlx(e, Some(queue)))?
        .iter()
        .map(checkpoint_from_row)
        .collect()
    }

    pub async fn await_event(
        &self,
        queue: &str,
        task_id: Uuid,
        run_id: Uuid,
        step_name: &str,
        event_name: &str,
        timeout_secs: Option<i32>,
    ) -> Result<AwaitOutcome> {
        let row = sqlx::query(
            "select should_suspend, payload from absurd.await_event($1, $2, $3, $4, $5, $6)",
        )
        .bind(queue)
        .bind(task_id)
        .bind(run_id)
        .bind(step_name)
        .bind(event_name)
        .bind(timeout_secs)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| ClientError::from_sqlx(e, Some(queue)))?;
        let g = |e: sqlx::Error| ClientError::Database(e);
        Ok(AwaitOutcome {
            should_suspend: row.try_get("should_suspend").map_err(g)?,
            payload: row.try_get("payload").map_err(g)?,
        })
    }

    /// [`Client::await_event`] for a running task: the payload is measured in SQL and sent
    /// only when within `limits`; one over them, or one that cannot be read (JSON nested too
    /// deep, say), is `Ok((false, Err(failure)))`, to fail the run permanently.
    #[allow(clippy::too_many_arguments)]
    pub async fn await_event_bounded(
        &self,
        queue: &str,
        task_id: Uuid,
        run_id: Uuid,
        step_name: &str,
        event_name: &str,
        timeout_secs: Option<i32>,
        limits: &ReadLimits,
    ) -> Result<(bool, Result<Option<Value>, crate::failure::Failure>)> {
        let row = sqlx::query(
            "select a.should_suspend, s.bytes, \
                    case when s.bytes <= $7::int8 then a.payload end as event_payload \
             from absurd.await_event($1, $2, $3, $4, $5, $6) a \
             cross join lateral (select octet_length(a.payload::text)::int8 as bytes) s",
        )
        .bind(queue)
        .bind(task_id)
        .bind(run_id)
        .bind(step_name)
        .bind(event_name)
        .bind(timeout_secs)
        .bind(claimed::sql_limit(limits.max_event_payload_bytes))
        .fetch_one(&self.pool)
        .await
        .map_err(|e| ClientError::from_sqlx(e, Some(queue)))?;
        let suspend: bool = row
            .try_get("should_suspend")
            .map_err(ClientError::Database)?;
        Ok((suspend, claimed::payload_from_row(&row, limits)?))
    }

    // ---- maintenance ---------------------------------------------------------------------

    pub async fn cleanup_tasks(&self, queue: &str, ttl_secs: i32, limit: i32) -> Result<i32> {
        sqlx::query_scalar("select absurd.cleanup_tasks($1, $2, $3)")
            .bind(queue)
            .bind(ttl_secs)
            .bind(limit)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| ClientError::from_sqlx(e, Some(queue)))
    }

    pub async fn cleanup_events(&self, queue: &str, ttl_secs: i32, limit: i32) -> Result<i32> {
        sqlx::query_scalar("select absurd.cleanup_events($1, $2, $3)")
            .bind(queue)
            .bind(ttl_secs)
            .bind(limit)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| ClientError::from_sqlx(e, Some(queue)))
    }

    pub async fn cleanup_all_queues(&self, queue: Option<&str>) -> Result<Vec<CleanupRow>> {
        let rows = sqlx::query(
            "select queue_name, tasks_deleted, events_deleted from absurd.cleanup_all_queues($1)",
        )
        .bind(queue)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| ClientError::from_sqlx(e, queue))?;
        let g = |e: sqlx::Error| ClientError::Database(e);
        rows.iter()
            .map(|r| {
                Ok(CleanupRow {
                    queue_name: r.try_get("queue_name").map_err(g)?,
                    tasks_deleted: r.try_get("tasks_deleted").map_err(g)?,
                    events_deleted: r.try_get("events_deleted").map_err(g)?,
                })
            })
            .collect()
    }

    pub async fn schema_version(&self) -> Result<Option<String>> {
        crate::db::schema_version(&self.pool)
            .await
            .map_err(|e| ClientError::from_sqlx(e, None))
    }
}

fn spawned_from_row(row: &PgRow) -> Result<Spawned> {
    let g = |e: sqlx::Error| ClientError::Database(e);
    Ok(Spawned {
        task_id: row.try_get("task_id").map_err(g)?,
        run_id: row.try_get("run_id").map_err(g)?,
        attempt: row.try_get("attempt").map_err(g)?,
        created: row.try_get("created").map_err(g)?,
    })
}

fn run_from_row(r: &PgRow) -> Result<RunInfo> {
    let g = |e: sqlx::Error| ClientError::Database(e);
    Ok(RunInfo {
        run_id: r.try_get("run_id").map_err(g)?,
        attempt: r.try_get("attempt").map_err(g)?,
        state: state_col(r, "state")?,
        claimed_by: r.try_get("claimed_by").map_err(g)?,
        claim_expires_at: r.try_get("claim_expires_at").map_err(g)?,
        available_at: r.try_get("available_at").map_err(g)?,
        wake_event: r.try_get("wake_event").map_err(g)?,
        event_payload: r.try_get("event_payload").map_err(g)?,
        started_at: r.try_get("started_at").map_err(g)?,
        completed_at: r.try_get("completed_at").map_err(g)?,
        failed_at: r.try_get("failed_at").map_err(g)?,
        result: r.try_get("result").map_err(g)?,
        failure_reason: r.try_get("failure_reason").map_err(g)?,
        created_at: r.try_get("created_at").map_err(g)?,
    })
}

/// A SQL string literal (for queue names placed in a generated query as a value).
fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_are_quoted_verbatim() {
        assert_eq!(table("t", "q1"), "absurd.\"t_q1\"");
        assert_eq!(table("r", "we\"ird q"), "absurd.\"r_we\"\"ird q\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }

    #[test]
    fn search_patterns_take_wildcards_literally() {
        assert_eq!(contains_pattern("abc"), "%abc%");
        assert_eq!(contains_pattern("50%_a\\b"), "%50\\%\\_a\\\\b%");
        assert_eq!(contains_pattern(""), "%%");
    }

    #[test]
    fn spawn_options_serialise_only_what_is_set() {
        let o = SpawnOptions {
            max_attempts: Some(3),
            retry_strategy: Some(RetryStrategy::exponential(2.0, 2.0, 300.0)),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(&o).unwrap(),
            serde_json::json!({"max_attempts": 3, "retry_strategy": {"kind": "exponential", "base_seconds": 2.0, "factor": 2.0, "max_seconds": 300.0}})
        );
        assert_eq!(
            serde_json::to_value(SpawnOptions::default()).unwrap(),
            serde_json::json!({})
        );
        assert_eq!(
            serde_json::to_value(RetryOptions::default()).unwrap(),
            serde_json::json!({})
        );
    }

    #[test]
    fn states_round_trip() {
        for s in State::ALL {
            assert_eq!(s.as_str().parse::<State>().unwrap(), s);
        }
        assert!("done".parse::<State>().is_err());
    }
}

#[cfg(test)]
mod json_numbers {
    /// PostgreSQL's jsonb prints a number such as 1.7976931348623157e308 in full decimal
    /// notation; reading it back must give the same number, not an "out of range" error.
    #[test]
    fn numbers_near_the_f64_limit_survive_jsonb_output() {
        let text = format!("{{\"x\": 17976931348623157{}}}", "0".repeat(292));
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["x"].as_f64(), Some(f64::MAX));
    }
}
